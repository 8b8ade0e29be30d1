"""A small byte-level GPT trained on the Python standard library's own source code.

The text is the top-level ``*.py`` files of the running interpreter's standard library,
read in name order and cut at ``TEXT_BYTES``, so nothing is downloaded. The model is wide
enough (``D_MODEL``) for bf16 autocast to pay off on a CPU with bf16 instructions, yet an
fp32 step at batch 32 stays well under half a second on two cores. The baseline is the
cautious setup of many GPT recipes: AdamW at 3e-4 with small batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autotune.data import ByteWindows, stdlib_bytes
from autotune.task import Task

BLOCK_SIZE = 64  # bytes of context; short enough that a step is matmul-bound, not attention-bound
D_MODEL = 256  # wide enough for bf16 matmuls to pay off; fp32 steps stay ~0.3 s at batch 32
N_LAYER = 4  # four blocks: a real stack to checkpoint, still fast on two cores
N_HEAD = 4  # 64-dim heads, the usual GPT head size
VOCAB = 256  # one token per byte
TEXT_BYTES = 1_500_000  # ~23k training windows: many steps before an epoch ends


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention written as matmuls.

    Not ``F.scaled_dot_product_attention``: on CPU its bf16 backward is about 2x slower than
    fp32 for 64-wide heads, which would hide what bf16 autocast buys everywhere else.
    """

    def __init__(self) -> None:
        super().__init__()
        # No Linear biases anywhere, as in recent GPTs: fewer small non-matmul ops per step.
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL, bias=False)
        self.proj = nn.Linear(D_MODEL, D_MODEL, bias=False)
        future = torch.ones(BLOCK_SIZE, BLOCK_SIZE, dtype=torch.bool).triu(1)
        self.register_buffer("future", future, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, N_HEAD, c // N_HEAD).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * (c // N_HEAD) ** -0.5
        weights = scores.masked_fill(self.future[:t, :t], float("-inf")).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention, then a 4x MLP, each residual."""

    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.attn = CausalSelfAttention()
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.mlp = nn.Sequential(
            nn.Linear(D_MODEL, 4 * D_MODEL, bias=False),
            nn.GELU(),
            nn.Linear(4 * D_MODEL, D_MODEL, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, D_MODEL)
        self.pos_emb = nn.Embedding(BLOCK_SIZE, D_MODEL)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, VOCAB, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: the byte embedding is also the readout
        self.apply(_init_weights)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def _init_weights(module: nn.Module) -> None:
    # GPT-2's init: with the default N(0, 1) embedding, the tied readout starts with huge logits.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)


def build_model() -> nn.Module:
    return TinyGPT()


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
    baseline=dict(batch_size=16, lr=3e-4, steps=60),  # the cautious GPT recipe: small batch,
    # AdamW at 3e-4; 60 steps (12-16 s fp32 on 2 cores) take the loss from 5.6 to ~3.0: the
    # same target on every machine, where a budget's share gave 43-71 steps on one host
    name="tiny_gpt",
)
