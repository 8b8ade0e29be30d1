"""Dogfood task: an MLP with an auxiliary head that only some batches use, trained with
RMSprop from a user's narrow search space that includes two DDP ranks.

The auxiliary head runs only when the batch holds a digit 9, so DDP must be told to look
for parameters that got no gradient (autotune finds that out from the first batches).
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from autotune.task import Task


def build_dataset():
    x, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(128, 10)
        self.nine = nn.Linear(128, 1)  # is-it-a-nine, only where the batch has one

    def forward(self, x, y=None):
        h = self.body(x)
        logits = self.head(h)
        if y is None or not bool((y == 9).any()):
            return logits, None
        return logits, self.nine(h).squeeze(-1)


def loss_fn(model, batch):
    x, y = batch
    logits, nine = model(x, y)
    loss = F.cross_entropy(logits.float(), y)
    if nine is not None:
        loss = loss + 0.1 * F.binary_cross_entropy_with_logits(nine.float(), (y == 9).float())
    return loss


task = Task(
    model=Branchy,
    dataset=build_dataset,
    loss=loss_fn,
    optimizer="rmsprop",
    baseline=dict(batch_size=16, lr=1e-3),
    name="branchy_mlp",
)
