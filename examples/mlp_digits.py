"""An MLP that classifies scikit-learn's 8x8 handwritten digits (1,797 samples, 10 classes).

The data ships inside scikit-learn, so nothing is downloaded. The baseline is a
conservative everyday setup: AdamW at its textbook learning rate with small batches,
which trains reliably but leaves most of the hardware idle.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from autotune.task import Task

HIDDEN = 256  # wide enough to fit the 64 pixels easily, small enough for a CPU step in ~1 ms


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    # Pixels are 0..16; scale them to [0, 1].
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, 10),
    )


def build_dataset() -> TensorDataset:
    x, y = _digits()
    return TensorDataset(x, y)


def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    x, y = batch
    # float() keeps the softmax in fp32 when the model runs in bf16.
    return F.cross_entropy(model(x).float(), y)


task = Task(
    model=build_model,
    dataset=build_dataset,
    loss=loss_fn,
    optimizer="adamw",
    baseline=dict(batch_size=16, lr=1e-3),  # a cautious user's default: small batch, AdamW's lr
    name="mlp_digits",
)
