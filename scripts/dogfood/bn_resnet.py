"""Dogfood task: a small residual CNN with BatchNorm, trained by Nesterov SGD with weight
decay, the optimizer given as a function, as users of torchvision-style recipes write it.

The digits are upsampled to 16x16 so the network has some spatial depth to work through.
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from autotune.task import Task


def build_dataset():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    return TensorDataset(x, torch.tensor(y))


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        Block(32),
        nn.MaxPool2d(2),
        Block(32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def sgd(params, lr):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x).float(), y)


task = Task(
    model=build_model,
    dataset=build_dataset,
    loss=loss_fn,
    optimizer=sgd,
    baseline=dict(batch_size=32, lr=0.01),
    name="bn_resnet",
)
