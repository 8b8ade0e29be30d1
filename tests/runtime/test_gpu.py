"""CUDA paths: run only where a GPU is present (marked ``gpu``; skipped otherwise)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from autotune.config import TrainConfig
from autotune.runtime import RunOptions, train
from autotune.task import load_task
from tests.conftest import TINY_TASK

pytestmark = pytest.mark.gpu


def _config(precision: str) -> TrainConfig:
    return TrainConfig.model_validate(
        {"micro_batch_size": 64, "precision": precision, "optimizer": {"lr": 1e-2}}
    )


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_cuda_run_uses_cuda_memory_stats(write_task: Callable[[str], Path], precision: str) -> None:
    task = load_task(write_task(TINY_TASK))
    summary = train(task, _config(precision), RunOptions(steps=20, device="cuda")).summary
    assert summary.device.startswith("cuda")
    assert summary.memory_source == "torch.cuda.max_memory_allocated"
    assert summary.peak_memory_bytes == torch.cuda.max_memory_allocated()
    assert summary.loss_finite
    assert (summary.grad_scaler_overflow_steps is not None) == (precision == "16-mixed")
