"""The fp32 check of a reduced-precision winner reuses the baseline when the baseline is
that check's run: the same config but the precision, over the steps to the target."""

from __future__ import annotations

from typing import Any

import pytest

from autotune.config import TrainConfig
from autotune.search._confirm import known_reference, stable_winner
from autotune.search._types import Measured

_CURVE = [3.0 - 0.02 * k for k in range(100)]  # reaches 1.5 around step 75


def _run(precision: str, lr: float = 1e-3, steps: int = 100) -> Measured:
    train = TrainConfig(micro_batch_size=16, precision=precision, optimizer={"lr": lr})
    elapsed = [0.1 * (k + 1) for k in range(steps)]
    return Measured(train=train, losses=_CURVE[:steps], elapsed_s=elapsed, samples_per_s=160.0)


class _NoRuns:
    """A Trialist that fails the test if the check starts a run."""

    def run(self, *args: Any, **kwargs: Any) -> None:
        pytest.fail("the fp32 check ran a trial although the baseline is its reference")


def test_the_baseline_is_the_reference_of_the_same_config_in_bf16() -> None:
    baseline = _run("32-true")
    assert known_reference(_run("bf16-mixed"), [baseline], target=1.5) is baseline


def test_another_config_or_a_short_baseline_is_not_the_reference() -> None:
    assert known_reference(_run("bf16-mixed", lr=4e-3), [_run("32-true")], target=1.5) is None
    short = _run("32-true", steps=40)  # stops before the winner reaches the target
    assert known_reference(_run("bf16-mixed"), [short], target=1.5) is None
    assert known_reference(_run("32-true"), [_run("32-true")], target=1.5) is None


def test_a_winner_checked_against_the_baseline_runs_no_fp32_trial() -> None:
    notes: list[str] = []
    winner = _run("bf16-mixed")
    found = stable_winner([winner], _NoRuns(), 1.5, notes.append, [_run("32-true")])  # type: ignore[arg-type]
    assert found is winner
    assert any("agrees with fp32" in note for note in notes), notes
