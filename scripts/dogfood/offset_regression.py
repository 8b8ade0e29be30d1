"""Dogfood task: a regression onto targets near 300 (a large offset, a small signal).

Written as a user would. Its MSE starts near 9e4 and the baseline ends near 1e3, so 2% of
its whole drop puts the search's target where the baseline is a quarter of the way in:
`autotune search scripts/dogfood/offset_regression.py --budget 1m` says so in its target
line.
"""

import torch
from torch import nn
from torch.utils.data import TensorDataset

from autotune.task import Task


def build_model():
    return nn.Sequential(
        nn.Linear(16, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 1)
    )


def build_dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 16, generator=g)
    w = torch.randn(16, 1, generator=g)
    y = 300.0 + 3.0 * torch.sin(x @ w) + 0.05 * torch.randn(4096, 1, generator=g)
    return TensorDataset(x, y)


def loss_fn(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


task = Task(
    model=build_model,
    dataset=build_dataset,
    loss=loss_fn,
    optimizer="adam",
    baseline=dict(batch_size=32, lr=3e-3, steps=400),
    name="offset_regression",
)
