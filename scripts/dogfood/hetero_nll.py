"""Dogfood task: a heteroscedastic regression whose GaussianNLL loss goes below zero.

Written as a user would (README: "Task files written as users write them"). The model
predicts a mean and a variance.
"""

import torch
from torch import nn
from torch.utils.data import TensorDataset

from autotune.task import Task


class MeanVar(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU())
        self.mean = nn.Linear(256, 1)
        self.logvar = nn.Linear(256, 1)

    def forward(self, x):
        h = self.body(x)
        return self.mean(h), self.logvar(h).clamp(-10, 5).exp()


def build_dataset():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6000, 8, generator=g) * 2 - 1
    noise = 0.02 + 0.2 * x[:, :1].abs()
    y = torch.sin(3 * x[:, :1]) + x[:, 1:2] ** 2 + noise * torch.randn(6000, 1, generator=g)
    return TensorDataset(x, y)


nll = nn.GaussianNLLLoss()


def loss_fn(model, batch):
    x, y = batch
    mean, var = model(x)
    return nll(mean.float(), y, var.float())


task = Task(
    model=MeanVar,
    dataset=build_dataset,
    loss=loss_fn,
    optimizer="adamw",
    baseline=dict(batch_size=32, lr=1e-3, steps=500),
    name="hetero",
)
