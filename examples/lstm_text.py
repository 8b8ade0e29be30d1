"""A byte-level two-layer LSTM language model trained on the Python standard library's source.

The text is the top-level ``*.py`` files of the running interpreter's standard library,
read in name order and cut at ``TEXT_BYTES``, as in ``tiny_gpt.py``, so nothing is
downloaded. The recurrence is one ``nn.LSTM`` with ``num_layers=2``, the usual way to stack
LSTMs (and the one cuDNN fuses), so there are no repeated blocks for activation
checkpointing: ``blocks`` stays ``None`` and the finder rightly finds none. Unlike the
transformers, each step is a chain of ``BLOCK_SIZE`` small sequential matmuls, a different
shape of work for the tuner. The baseline is a cautious user's default: AdamW at its
textbook learning rate with small batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autotune.data import ByteWindows, stdlib_bytes
from autotune.task import Task

BLOCK_SIZE = 64  # bytes per sequence, and time steps per forward: the unroll length
EMBED = 128  # byte embedding width; 256 symbols need no more
HIDDEN = 384  # wide enough that the gate matmuls dominate a step, not per-time-step overhead
N_LAYER = 2  # two stacked LSTMs, the classic char-RNN depth
VOCAB = 256  # one token per byte
TEXT_BYTES = 1_500_000  # ~23k training windows: many steps before an epoch ends


class ByteLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=N_LAYER, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # Each window starts from a zero state: windows are shuffled, so no state carries over.
        out, _ = self.lstm(self.embed(idx))
        return self.head(out)


def build_model() -> nn.Module:
    return ByteLSTM()


def build_dataset() -> ByteWindows:
    return ByteWindows(stdlib_bytes(TEXT_BYTES), BLOCK_SIZE)


def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    x, y = batch
    # float() keeps the softmax in fp32 when the model runs in bf16.
    return F.cross_entropy(model(x).float().view(-1, VOCAB), y.view(-1))


task = Task(
    model=build_model,
    dataset=build_dataset,
    loss=loss_fn,
    optimizer="adamw",
    baseline=dict(batch_size=16, lr=1e-3),  # a cautious user's default: small batch, AdamW's lr
    name="lstm_text",
)
