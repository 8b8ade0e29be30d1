"""A candidate whose crossing lies within its batch noise must cross again on another seed."""

from __future__ import annotations

from typing import Any

import pytest

from autotune import stability
from autotune.config import TrainConfig
from autotune.search._confirm import stable_winner
from autotune.search._reseed import reseed_check
from autotune.search._types import Measured
from tests.test_confirm import _followed

# A batch-8 trial of a GRU text classifier (outside the repo): its zero-lag curve crosses
# 0.5588 at step 9 on the dips at steps 12 and 14, and rises again after.
LUCKY = [0.64, 0.7, 0.83, 0.61, 0.5, 0.51, 0.79, 0.49, 0.63, 0.43, 0.52, 0.22, 0.46, 0.17]
LUCKY += [0.68, 0.68, 0.87, 0.74, 0.4]
TARGET = 0.5588
FLAT = [0.62 + 0.08 * (-1) ** k for k in range(60)]  # the same level, no lucky stretch


def _measured(losses: list[float], lr: float = 3e-3, micro: int = 8) -> Measured:
    train = TrainConfig(micro_batch_size=micro, optimizer={"lr": lr})
    elapsed = [0.03 * (k + 1) for k in range(len(losses))]
    tt = stability.steps_to_target(losses, TARGET)
    return Measured(
        train=train,
        losses=losses,
        elapsed_s=elapsed,
        samples_per_s=micro / 0.03,
        time_to_target_s=None if tt is None else elapsed[tt],
    )


class _Seeded:
    """A Trialist whose runs on seed 1 follow ``again``; any other run fails the test."""

    seed, startup_s = 0, 0.1

    def __init__(self, again: list[float]) -> None:
        self.again, self.asked = again, []  # type: ignore[var-annotated]

    def run(self, config: TrainConfig, steps: int, **kwargs: Any) -> Any:
        if kwargs.get("seed") != 1:
            pytest.fail(f"a run on seed {kwargs.get('seed')}, not the next seed")
        self.asked.append(steps)
        return _followed(self.again[:steps], kwargs.get("watch"), config.optimizer.lr, 0.03)


def test_the_lucky_curve_is_within_its_noise() -> None:
    assert stability.steps_to_target(LUCKY, TARGET) == 8
    assert stability.drop_in_noise(LUCKY, TARGET) < stability.MIN_DROP_IN_NOISE


def test_a_crossing_within_the_noise_that_does_not_come_again_is_luck() -> None:
    trials = _Seeded(FLAT)
    found = reseed_check(_measured(LUCKY), trials, TARGET)  # type: ignore[arg-type]
    assert found.passed is False and found.why is not None
    assert "did not reach the target again within 28 steps on seed 1" in found.why
    assert "at step 9 on seed 0" in found.why and "lucky stretch of batches" in found.why
    assert trials.asked == [28]  # 2 x 9 steps + the 10 a crossing needs after it


def test_a_crossing_that_comes_again_on_the_next_seed_stands() -> None:
    found = reseed_check(_measured(LUCKY), _Seeded(LUCKY), TARGET)  # type: ignore[arg-type]
    assert found.passed is True
    assert found.why == "reached the target again on seed 1, at step 9 (step 9 on seed 0)"


def test_a_crossing_far_beyond_the_noise_runs_nothing() -> None:
    falling = [0.9 - 0.01 * k for k in range(60)]
    found = reseed_check(_measured(falling), _Seeded([]), TARGET)  # type: ignore[arg-type]
    assert found.passed is None and found.why is None


def test_no_room_in_the_budget_runs_nothing_and_says_so() -> None:
    found = reseed_check(_measured(LUCKY), _Seeded(FLAT), TARGET, lambda: 0.5)  # type: ignore[arg-type]
    assert found.passed is None and found.why is not None and "no room in the budget" in found.why


def test_a_lucky_winner_leaves_the_baseline_it_was_measured_beside() -> None:
    """Every candidate's crossing luck: the search keeps the baseline, the run it measured
    them against, rather than pass a lucky one on to the same-seed confirmation."""
    baseline = _measured([0.7 - 0.004 * k for k in range(60)], lr=1e-3, micro=32)
    assert baseline.time_to_target_s is not None
    notes: list[str] = []
    found = stable_winner([_measured(LUCKY)], _Seeded(FLAT), TARGET, notes.append, [baseline])  # type: ignore[arg-type]
    assert found is baseline, notes
    assert any(n.startswith("seed check of 32-true micro=8") for n in notes), notes
    lucky_again = stable_winner(
        [_measured(LUCKY)], _Seeded(LUCKY), TARGET, notes.append, [baseline]
    )  # type: ignore[arg-type]
    assert lucky_again is not None and lucky_again.train.micro_batch_size == 8
