"""The training loop applies every TrainConfig dimension for real."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from autotune.config import TrainConfig
from autotune.errors import ConfigError, TaskError
from autotune.runtime import RunOptions, RunResult, StepRecord, train
from autotune.task import Task, load_task
from tests.conftest import TINY_TASK


@pytest.fixture
def tiny(write_task: Callable[[str], Path]) -> Task:
    return load_task(write_task(TINY_TASK))


def _config(**values: Any) -> TrainConfig:
    values.setdefault("micro_batch_size", 16)
    values.setdefault("optimizer", {"name": "adamw", "lr": 1e-2})
    return TrainConfig.model_validate(values)


def _run(task: Task, steps: int = 20, **values: Any) -> RunResult:
    return train(task, _config(**values), RunOptions(steps=steps, device="cpu"))


def _falls(result: RunResult) -> bool:
    losses = [r.loss for r in result.steps]
    return sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "bf16-true"])
def test_every_precision_trains(tiny: Task, precision: str) -> None:
    result = _run(tiny, steps=30, precision=precision)
    assert result.summary.loss_finite and _falls(result)
    assert result.summary.precision == precision
    overflow = result.summary.grad_scaler_overflow_steps
    assert (overflow is not None) == (precision == "16-mixed")


def test_bf16_true_trains_bf16_parameters(tiny: Task) -> None:
    seen: list[torch.dtype] = []
    inner = tiny.loss

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        seen.append(next(model.parameters()).dtype)
        seen.append(batch[0].dtype)
        return inner(model, batch)

    task = Task(model=tiny.model, dataset=tiny.dataset, loss=loss)
    train(task, _config(precision="bf16-true"), RunOptions(steps=2, device="cpu"))
    assert set(seen) == {torch.bfloat16}


def test_bf16_mixed_runs_the_forward_under_autocast(tiny: Task) -> None:
    dtypes: list[torch.dtype] = []

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        out = model(batch[0])
        dtypes.append(out.dtype)
        return torch.nn.functional.cross_entropy(out.float(), batch[1])

    task = Task(model=tiny.model, dataset=tiny.dataset, loss=loss)
    train(task, _config(precision="bf16-mixed"), RunOptions(steps=2, device="cpu"))
    assert dtypes == [torch.bfloat16] * 2


def test_accumulation_matches_one_big_batch(tiny: Task) -> None:
    big = _run(tiny, steps=8, micro_batch_size=32)
    accumulated = _run(tiny, steps=8, micro_batch_size=8, grad_accum_steps=4)
    assert accumulated.summary.global_batch_size == 32
    for a, b in zip(big.steps, accumulated.steps, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
        assert a.samples == b.samples


def test_schedule_is_applied_per_optimizer_step(tiny: Task) -> None:
    result = _run(
        tiny, steps=10, schedule={"name": "linear", "warmup_steps": 4, "min_lr_ratio": 0.0}
    )
    lrs = [r.lr for r in result.steps]
    assert lrs[3] == pytest.approx(1e-2)  # after 4 warmup steps the peak is reached
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_step_records_are_cumulative(tiny: Task) -> None:
    result = _run(tiny, steps=6, micro_batch_size=8, grad_accum_steps=2)
    assert [r.step for r in result.steps] == list(range(1, 7))
    assert [r.samples for r in result.steps] == [16 * i for i in range(1, 7)]
    elapsed = [r.elapsed_s for r in result.steps]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


def test_summary_has_throughput_and_profiled_memory(tiny: Task) -> None:
    summary = _run(tiny, steps=12).summary
    assert summary.timed_steps == 12 - 3  # burn-in excluded (the profiled step 2 is inside it)
    assert summary.samples_per_s_p10 <= summary.samples_per_s <= summary.samples_per_s_p90
    assert summary.memory_source == "torch.profiler memory events"
    assert summary.peak_memory_bytes is not None and summary.persistent_memory_bytes is not None
    assert summary.peak_memory_bytes > summary.persistent_memory_bytes > 0


def test_peak_memory_grows_with_batch(tiny: Task) -> None:
    small = _run(tiny, steps=3, micro_batch_size=8).summary.peak_memory_bytes
    large = _run(tiny, steps=3, micro_batch_size=128).summary.peak_memory_bytes
    assert small is not None and large is not None and large > small


def test_non_finite_loss_stops_the_run(tiny: Task) -> None:
    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return model(batch[0]).sum() * float("nan")

    task = Task(model=tiny.model, dataset=tiny.dataset, loss=loss)
    summary = train(task, _config(), RunOptions(steps=10, device="cpu")).summary
    assert not summary.loss_finite
    assert summary.steps_completed == 1
    assert summary.stopped_reason == "non-finite loss (nan) at step 1"


def _first_weight_trace(tiny: Task, **values: Any) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    inner = tiny.loss

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        seen.append(next(model.parameters()).detach().clone())
        return inner(model, batch)

    task = Task(model=tiny.model, dataset=tiny.dataset, loss=loss)
    train(task, _config(**values), RunOptions(steps=3, device="cpu"))
    return seen


def test_gradient_clipping_bounds_the_update(tiny: Task) -> None:
    sgd = {"name": "sgd", "lr": 1.0}
    clipped = _first_weight_trace(tiny, gradient_clip_val=1e-6, optimizer=sgd)
    free = _first_weight_trace(tiny, optimizer=sgd)
    assert (clipped[1] - clipped[0]).norm() <= 1e-6 + 1e-9
    assert (free[1] - free[0]).norm() > 1e-3


SPARSE_TASK = """
import torch
from torch import nn
from torch.utils.data import TensorDataset
from autotune import Task

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.EmbeddingBag(64, 8, sparse=True)
        self.head = nn.Linear(8, 2)

    def forward(self, ids):
        return self.head(self.emb(ids))

def build_dataset():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (512, 6), generator=g)
    return TensorDataset(ids, (ids < 32).sum(1).gt(3).long())

def loss_fn(model, batch):
    ids, y = batch
    return nn.functional.cross_entropy(model(ids), y)

task = Task(model=Net, dataset=build_dataset, loss=loss_fn, optimizer="sgd")
"""


@pytest.mark.parametrize("world_size", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sparse_embeddings_train_with_momentum_weight_decay_and_clipping(
    write_task: Callable[[str], Path], world_size: int
) -> None:
    task = load_task(write_task(SPARSE_TASK))
    sgd = {"name": "sgd", "lr": 1.0, "momentum": 0.9, "weight_decay": 1e-4}
    config = {"micro_batch_size": 32, "gradient_clip_val": 1.0, "world_size": world_size}
    result = _run(task, steps=40, optimizer=sgd, **config)
    assert result.summary.loss_finite and _falls(result)


FLOAT64_TASK = """
import torch
from torch import nn
from torch.utils.data import TensorDataset
from autotune import Task

def build_dataset():  # float64, as numpy arrays turn into tensors
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g, dtype=torch.float64)
    return TensorDataset(x, x[:, :4].sum(1, keepdim=True))

def loss_fn(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)

task = Task(model=lambda: nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)){cast},
            dataset=build_dataset, loss=loss_fn)
"""


@pytest.mark.parametrize("cast", ["", ".double()"])
def test_float64_data_and_models_train_in_the_configs_precision(
    write_task: Callable[[str], Path], cast: str
) -> None:
    """float64 data met float32 weights in the user's loss ("mat1 and mat2 must have the
    same dtype"), and a float64 model was cast to float32 under its float64 inputs."""
    task = load_task(write_task(FLOAT64_TASK.replace("{cast}", cast)))
    result = _run(task, steps=30)
    assert result.summary.loss_finite and _falls(result)


def test_dataset_smaller_than_a_batch_is_a_config_error(tiny: Task) -> None:
    with pytest.raises(
        ConfigError, match="fewer than one micro-batch per rank.*lower micro_batch_size"
    ):
        _run(tiny, steps=1, micro_batch_size=1024)


def test_loss_errors_surface_on_the_first_step(tiny: Task) -> None:
    task = Task(model=tiny.model, dataset=tiny.dataset, loss=lambda m, b: 1.0)  # type: ignore[arg-type,return-value]
    with pytest.raises(TaskError, match="returned float"):
        train(task, _config(), RunOptions(steps=1, device="cpu"))


class _Killed(Exception):
    pass


def test_resume_continues_exactly(tiny: Task, tmp_path: Path) -> None:
    config = _config(schedule={"name": "cosine", "warmup_steps": 2})
    whole = train(tiny, config, RunOptions(steps=12, device="cpu"))
    options = RunOptions(steps=12, device="cpu", save_dir=tmp_path, save_every=5)

    def crash_at_step_7(record: StepRecord) -> None:
        if record.step == 7:
            raise _Killed

    with pytest.raises(_Killed):
        train(tiny, config, options, crash_at_step_7)
    resumed = train(tiny, config, RunOptions(**{**options.__dict__, "resume": True}))
    assert resumed.summary.resumed_from_step == 5
    assert [r.loss for r in resumed.steps] == [r.loss for r in whole.steps]
    assert resumed.summary.final_loss == whole.summary.final_loss


def test_resume_with_another_config_is_refused(tiny: Task, tmp_path: Path) -> None:
    train(tiny, _config(), RunOptions(steps=2, device="cpu", save_dir=tmp_path))
    with pytest.raises(Exception, match="another config or seed"):
        train(
            tiny,
            _config(micro_batch_size=8),
            RunOptions(steps=4, device="cpu", save_dir=tmp_path, resume=True),
        )


@pytest.mark.slow
def test_compile_flag_compiles(tiny: Task) -> None:
    result = _run(tiny, steps=6, compile=True)
    assert result.summary.loss_finite


@pytest.mark.slow
def test_world_size_two_runs_ddp(tiny: Task) -> None:
    result = _run(tiny, steps=20, micro_batch_size=8, world_size=2)
    summary = result.summary
    assert summary.world_size == 2 and summary.threads_per_rank >= 1
    assert summary.global_batch_size == 16 and _falls(result)
    single = _run(tiny, steps=20, micro_batch_size=16)
    # Same global batch, same data per step (sharded), same init: the same trajectory.
    assert summary.final_loss == pytest.approx(single.summary.final_loss, rel=0.05)
