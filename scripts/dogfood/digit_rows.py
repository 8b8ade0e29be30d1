"""Dogfood task: a small transformer encoder that reads a digit image row by row.

Written as a user would: each 8x8 digit is a sequence of 8 row tokens, the batch is a
dict, blocks are ``nn.TransformerEncoderLayer`` (checkpointable), and the optimizer is
SGD with momentum, whose LR scales linearly with the batch.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset

from autotune.task import Task


class Rows(Dataset):
    def __init__(self):
        x, y = load_digits(return_X_y=True)
        self.x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 8, 8)
        self.y = torch.tensor(y)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"rows": self.x[i], "label": self.y[i]}


class RowReader(nn.Module):
    def __init__(self, width=64, depth=3):
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.pos = nn.Parameter(torch.zeros(8, width))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
            for _ in range(depth)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, rows):
        h = self.embed(rows) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))


def loss_fn(model, batch):
    logits = model(batch["rows"])
    return nn.functional.cross_entropy(logits.float(), batch["label"])


task = Task(
    model=RowReader,
    dataset=Rows,
    loss=loss_fn,
    optimizer="sgd",
    baseline=dict(batch_size=32, lr=0.05),
    name="digit_rows",
)
