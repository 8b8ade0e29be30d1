"""The "Lightning's Tuner" benchmark contender picks a bounded batch and a usable lr."""

from __future__ import annotations

import math

import pytest

from autotune.config import TrainConfig
from autotune.task import load_task
from benchmarks.lightning_tuner import lightning_pick, power_trials
from tests.conftest import EXAMPLES

MLP = EXAMPLES / "mlp_digits.py"


def test_power_trials_keep_the_batch_within_the_bound() -> None:
    assert power_trials(16, 16) == 1  # only the baseline batch
    assert power_trials(16, 256) == 5  # 16, 32, 64, 128, 256
    assert power_trials(16, 100) == 3  # 16, 32, 64: 128 would exceed 100
    with pytest.raises(ValueError, match="below the baseline batch"):
        power_trials(16, 8)


def test_pick_on_mlp_digits_changes_only_batch_and_lr() -> None:
    max_batch = 64  # small: three batch trials, and lr_find's 100 steps stay cheap
    pick = lightning_pick(MLP, max_batch_size=max_batch, seed=0)
    baseline = load_task(MLP).baseline_config()
    ratio = pick.batch_size // baseline.micro_batch_size
    assert pick.batch_size % baseline.micro_batch_size == 0
    assert ratio & (ratio - 1) == 0, f"{pick.batch_size} is not a power-of-two multiple"
    assert pick.batch_size <= max_batch
    # On a CPU nothing stops the doubling but the bound: it is reached.
    assert pick.batch_size == max_batch
    assert math.isfinite(pick.lr) and pick.lr > 0
    assert pick.tuner_wall_s > 0
    assert TrainConfig.model_validate(pick.config.model_dump()) == pick.config
    assert pick.config.micro_batch_size == pick.batch_size
    assert pick.config.optimizer.lr == pick.lr
    assert pick.config.global_batch == pick.batch_size
    changed = {"micro_batch_size", "global_batch_size", "optimizer"}
    assert pick.config.model_dump(exclude=changed) == baseline.model_dump(exclude=changed)
    assert pick.config.optimizer.model_dump(exclude={"lr"}) == baseline.optimizer.model_dump(
        exclude={"lr"}
    )
