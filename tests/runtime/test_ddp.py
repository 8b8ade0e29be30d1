"""DDP and models whose parameters do not all get a gradient."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autotune.config import TrainConfig
from autotune.errors import TaskError
from autotune.runtime import RunOptions, train
from autotune.runtime._data import BatchStream
from autotune.runtime._ddp import SCAN_BATCHES, _found, unused_parameters
from autotune.runtime._same_data import fingerprint
from autotune.task import Task, load_task
from tests.conftest import TINY_TASK

# Two ranks of 8-sample micro-batches: every world-2 test's config.
_WORLD_2 = TrainConfig.model_validate(
    {"micro_batch_size": 8, "world_size": 2, "optimizer": {"name": "adamw", "lr": 1e-2}}
)

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

# TINY_TASK with a layer that every forward uses but one: the call right after the runtime's
# look at the first batches, on rank SKIP_RANK only (a router that sent rank 1's batch
# elsewhere). DDP without find_unused_parameters then meets mismatched collectives.
LATE_SKIP_TASK = TINY_TASK.replace(
    "def build_model():\n    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))",
    f"""import os

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.extra = nn.Linear(32, 32)
        self.head = nn.Linear(32, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.body(x)
        if self.calls != {SCAN_BATCHES} + 2 or os.environ["RANK"] != os.environ["SKIP_RANK"]:
            h = self.extra(h)
        return self.head(h)

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

    names = unused_parameters(net, [lambda m: m["body"](torch.randn(4, 8)).sum()])

    assert names == ["aux.weight"]


def test_unused_parameters_lists_those_any_batch_leaves_without_a_gradient() -> None:
    net = _net()
    through_aux = lambda m: m["aux"](m["body"](torch.randn(4, 8))).sum()  # noqa: E731
    body_only = lambda m: m["body"](torch.randn(4, 8)).sum()  # noqa: E731

    assert unused_parameters(net, [through_aux, through_aux]) == []
    assert unused_parameters(net, [through_aux, body_only]) == ["aux.weight", "aux.bias"]


def test_the_warning_tells_a_data_dependent_parameter_from_a_dead_one() -> None:
    dead = _found(["aux.weight"], [], scanned=8)
    routed = _found([], ["experts.1.weight"], scanned=8)

    assert "any of each rank's first 8" in dead and "drop them" in dead
    assert "some of each rank's first 8" in routed and "drop" not in routed
    assert "Task(find_unused_parameters=True)" in routed


def test_unused_parameters_leaves_the_model_and_the_rng_as_they_were() -> None:
    net = _net()
    norm = net["body"][1]
    before = norm.running_mean.clone(), int(norm.num_batches_tracked)
    rng = torch.get_rng_state()

    unused_parameters(net, [lambda m: m["body"](torch.randn(4, 8) + 5).sum()])

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

    result = train(task, _WORLD_2, RunOptions(steps=6, device="cpu"))

    assert len(result.steps) == 6 and result.summary.loss_finite


def test_batches_read_ahead_are_handed_out_in_order(write_task: Callable[[str], Path]) -> None:
    task = load_task(write_task(TINY_TASK))
    stream = BatchStream(task, task.build_dataset(), 16, rank=0, world=1, seed=0)
    other = BatchStream(task, task.build_dataset(), 16, rank=0, world=1, seed=0)

    ahead = stream.peek_ahead(3)

    assert stream.consumed == 0 and stream.peek() is ahead[0]
    for batch in ahead:
        assert torch.equal(next(stream)[0], next(other)[0]) and batch is not None
    assert stream.consumed == 3 and torch.equal(next(stream)[0], next(other)[0])


def test_find_unused_parameters_must_be_a_bool_or_none() -> None:
    with pytest.raises(TaskError, match="must be True, False or None, but got int 1"):
        Task(model=nn.Linear, dataset=list, loss=torch.sum, find_unused_parameters=1)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_parameter_skipped_after_the_first_batches_is_one_error_naming_the_fix(
    write_task: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIP_RANK", "1")
    task = load_task(write_task(LATE_SKIP_TASK))

    with pytest.raises(TaskError) as raised:
        train(task, _WORLD_2, RunOptions(steps=6, device="cpu"))

    message = str(raised.value)
    assert "2 parameters (extra.weight, extra.bias) got no gradient at step 2 on rank 1" in message
    assert message.endswith("set Task(find_unused_parameters=True).")


@pytest.mark.slow
def test_a_task_that_declares_unused_parameters_trains_through_the_skip(
    write_task: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIP_RANK", "1")
    source = LATE_SKIP_TASK.replace("baseline=dict(", "find_unused_parameters=True, baseline=dict(")
    task = load_task(write_task(source))

    result = train(task, _WORLD_2, RunOptions(steps=6, device="cpu"))

    assert len(result.steps) == 6 and result.summary.loss_finite


# TINY_TASK whose data is shuffled by Python's own RNG, unseeded: seeded from the OS in each
# process, as a vocabulary of hash(str) ids is salted in each, so every rank builds its own.
PER_PROCESS_DATA_TASK = TINY_TASK.replace(
    "    return TensorDataset(x, y)",
    "    import random\n    order = torch.tensor(random.sample(range(256), 256))\n"
    "    return TensorDataset(x[order], y[order])",
)


@pytest.mark.slow
def test_ranks_that_built_different_data_stop_with_the_fix(
    write_task: Callable[[str], Path],
) -> None:
    task = load_task(write_task(PER_PROCESS_DATA_TASK))
    with pytest.raises(TaskError) as raised:
        train(task, _WORLD_2, RunOptions(steps=3, device="cpu"))
    message = str(raised.value)
    assert "build_dataset built different data on different ranks" in message
    assert "Python's hash() of a str differs per process" in message
    train(load_task(write_task(TINY_TASK, "same.py")), _WORLD_2, RunOptions(steps=3, device="cpu"))


def test_the_fingerprint_reads_tensors_arrays_and_containers() -> None:
    def data(scale: float) -> list[object]:
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        return [{"x": torch.ones(3) * scale, "tokens": [1, 2], "a": x, "name": "s"}] * 3

    assert fingerprint(data(1.0)) == fingerprint(data(1.0))  # type: ignore[arg-type]
    assert fingerprint(data(1.0)) != fingerprint(data(2.0))  # type: ignore[arg-type]
    as_bf16 = [torch.ones(3, dtype=torch.bfloat16)]  # no numpy dtype: read as bytes
    assert fingerprint(as_bf16) != fingerprint([torch.ones(3)])  # type: ignore[arg-type]
    assert fingerprint(list(range(40))) == fingerprint([*range(16), 99])  # type: ignore[arg-type]


# PER_PROCESS_DATA_TASK's differing order, plus noise drawn from Python's RNG at every read:
# augmentation, which may differ between ranks, so the ranks' samples are not compared.
AUGMENTED_TASK = PER_PROCESS_DATA_TASK.replace(
    "    return TensorDataset(x[order], y[order])",
    """    base = TensorDataset(x[order], y[order])

    class Augmented(torch.utils.data.Dataset):
        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            x, y = base[i]
            return x + 0.01 * random.random(), y

    return Augmented()""",
)


@pytest.mark.slow
def test_samples_that_change_per_read_are_not_compared(write_task: Callable[[str], Path]) -> None:
    task = load_task(write_task(AUGMENTED_TASK))
    assert len(train(task, _WORLD_2, RunOptions(steps=3, device="cpu")).steps) == 3
