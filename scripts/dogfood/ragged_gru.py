"""Dogfood task: a GRU that classifies variable-length sequences, padded by a custom
collate_fn and packed, on a small dataset (600 sequences), with a user-given target loss
and gradient clipping, as a user with ragged data writes it.

Each sequence is a noisy sine wave of 8-40 steps; its class is which of 4 frequencies.
"""

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from autotune.task import Task


def build_dataset():
    g = torch.Generator().manual_seed(3)
    samples = []
    for k in range(600):
        label = k % 4
        length = int(torch.randint(8, 41, (1,), generator=g))
        t = torch.arange(length, dtype=torch.float32)
        phase = float(torch.rand(1, generator=g)) * 2 * math.pi
        wave = torch.sin(t * (0.3 + 0.25 * label) + phase)
        samples.append((wave + 0.3 * torch.randn(length, generator=g), label))
    return samples


def collate(samples):
    waves = [w for w, _ in samples]
    lengths = torch.tensor([len(w) for w in waves])
    padded = pad_sequence(waves, batch_first=True).unsqueeze(-1)
    return padded, lengths, torch.tensor([y for _, y in samples])


class Reader(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1, 48, batch_first=True)
        self.head = nn.Linear(48, 4)

    def forward(self, padded, lengths):
        packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(h[-1])


def loss_fn(model, batch):
    padded, lengths, labels = batch
    return nn.functional.cross_entropy(model(padded, lengths.cpu()).float(), labels)


task = Task(
    model=Reader,
    dataset=build_dataset,
    loss=loss_fn,
    collate_fn=collate,
    optimizer="adam",
    baseline=dict(batch_size=16, lr=2e-3, gradient_clip_val=1.0),
    target_loss=0.35,
    name="ragged_gru",
)
