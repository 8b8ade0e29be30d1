"""DDP and models whose parameters do not all get a gradient."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from autotune.config import TrainConfig
from autotune.runtime import RunOptions, train
from autotune.runtime._data import BatchStream
from autotune.runtime._ddp import unused_parameters
from autotune.task import load_task
from tests.conftest import TINY_TASK

# TINY_TASK with an auxiliary head that forward never calls: DDP's classic failure.
UNUSED_HEAD_TASK = TINY_TASK.replace(
    "def build_model():\n    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))",
    """class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Linear(32, 2)
        self.aux = nn.Linear(32, 3)  # used at evaluation only, in the user's own code

    def forward(self, x):
        return self.head(self.body(x))

def build_model():
    return Net()""",
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.Dropout(0.5))
    return nn.ModuleDict({"body": body, "aux": nn.Linear(32, 3)})


def test_unused_parameters_names_those_without_a_gradient() -> None:
    net = _net()
    net["aux"].bias.requires_grad_(False)  # frozen: not "unused", it needs no gradient

    names = unused_parameters(net, lambda m: m["body"](torch.randn(4, 8)).sum())

    assert names == ["aux.weight"]


def test_unused_parameters_leaves_the_model_and_the_rng_as_they_were() -> None:
    net = _net()
    norm = net["body"][1]
    before = norm.running_mean.clone(), int(norm.num_batches_tracked)
    rng = torch.get_rng_state()

    unused_parameters(net, lambda m: m["body"](torch.randn(4, 8) + 5).sum())

    assert torch.equal(norm.running_mean, before[0])
    assert int(norm.num_batches_tracked) == before[1]
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_peeked_batch_is_the_next_one_handed_out(
    write_task: Callable[[str], Path],
) -> None:
    task = load_task(write_task(TINY_TASK))
    stream = BatchStream(task, task.build_dataset(), 16, rank=0, world=1, seed=0)
    other = BatchStream(task, task.build_dataset(), 16, rank=0, world=1, seed=0)

    peeked = stream.peek()

    assert stream.consumed == 0 and stream.peek() is peeked
    assert next(stream) is peeked and stream.consumed == 1
    assert torch.equal(peeked[0], next(other)[0])
    assert torch.equal(next(stream)[0], next(other)[0])


@pytest.mark.slow
def test_world_size_two_trains_a_model_with_an_unused_head(
    write_task: Callable[[str], Path],
) -> None:
    task = load_task(write_task(UNUSED_HEAD_TASK))
    config = TrainConfig.model_validate(
        {"micro_batch_size": 8, "world_size": 2, "optimizer": {"name": "adamw", "lr": 1e-2}}
    )

    result = train(task, config, RunOptions(steps=6, device="cpu"))

    assert len(result.steps) == 6 and result.summary.loss_finite
