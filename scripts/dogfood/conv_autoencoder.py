"""Dogfood task: a convolutional autoencoder that reconstructs the digits (MSE), with the
baseline's LR on a cosine schedule after a warmup, as a user copying a recipe writes it.

A schedule that spans the run needs the baseline's length before it starts, so this task
takes the search's other baseline path: its step count from the probe's step time.
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from autotune.task import Task


def build_dataset():
    x, _ = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8))


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(16, 8, 3, stride=2, padding=1),  # 4x4 code
        nn.GELU(),
        nn.ConvTranspose2d(8, 16, 4, stride=2, padding=1),
        nn.GELU(),
        nn.Conv2d(16, 1, 3, padding=1),
    )


def loss_fn(model, batch):
    (x,) = batch
    return F.mse_loss(model(x).float(), x)


task = Task(
    model=build_model,
    dataset=build_dataset,
    loss=loss_fn,
    optimizer="adam",
    baseline=dict(batch_size=32, lr=1e-3, schedule={"name": "cosine", "warmup_steps": 20}),
    name="conv_autoencoder",
)
