"""A small CNN with BatchNorm that classifies scikit-learn's digits as 1x8x8 images.

Its three ``ConvBlock`` stages sit in ``self.stages`` so that tools can find the repeated
blocks (to checkpoint them, for instance). The data ships inside scikit-learn, so nothing
is downloaded. The baseline is a conservative everyday setup: AdamW at its textbook
learning rate with small batches.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from autotune.task import Task


class ConvBlock(nn.Module):
    """3x3 convolution (size-preserving), BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        # No conv bias: BatchNorm's shift makes it redundant.
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.Sequential(ConvBlock(1, 32), ConvBlock(32, 64), ConvBlock(64, 64))
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Global average pooling: the 8x8 maps are too small to need strided pooling first.
        return self.head(self.stages(x).mean(dim=(2, 3)))


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    # Pixels are 0..16; scale them to [0, 1] and shape them as one-channel images.
    images = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return images, torch.tensor(y, dtype=torch.int64)


def build_model() -> nn.Module:
    return DigitsCNN()


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
    baseline=dict(batch_size=16, lr=1e-3, steps=1200),  # a cautious user's default: small
    # batch, AdamW's lr; 1200 steps (10 s on 2 AVX2 cores): one target on every machine, where a
    # budget's share gave 1167-1587 steps on one host and 5000 on another
    name="cnn_digits",
)
