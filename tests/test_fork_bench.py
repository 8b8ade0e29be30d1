"""benchmarks/fork_bench.py: its launchers take turns, and its table says what it knows."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from autotune.config import TrainConfig
from autotune.runtime import StepRecord
from autotune.search._measure import TargetWatch
from autotune.trial import TrialResult, TrialStatus
from benchmarks import fork_bench
from tests._tuned import make_tuned


def test_launchers_take_turns_and_autotune_run_shows_no_start_up() -> None:
    order: list[str] = []

    def launcher(name: str, startup: float | None, rate: float) -> Callable[[], fork_bench.Sample]:
        def run() -> fork_bench.Sample:
            order.append(name)
            return startup, rate

        return run

    launchers = {
        "forked": launcher("forked", 0.2, 100.0),
        "fresh": launcher("fresh", 6.0, 90.0),
        "autotune run": launcher("autotune run", None, 95.0),
    }
    runs = fork_bench._interleaved(launchers, rounds=3)
    assert order == [
        *("forked", "fresh", "autotune run"),
        *("fresh", "autotune run", "forked"),
        *("autotune run", "forked", "fresh"),
    ]
    console = Console(width=120, record=True)
    console.print(fork_bench._table(runs))
    text = console.export_text()
    assert "│ forked       │ 3    │ 0.20 (0.20-0.20) │ 100.0 (100.0-100.0) │" in text
    assert "│ autotune run │ 3    │ -                │ 95.0 (95.0-95.0)    │" in text


def _args(tuned: Path | None) -> argparse.Namespace:
    return argparse.Namespace(tuned=tuned, steps=50)


def test_watched_runs_need_a_searched_tuned_yaml() -> None:
    with pytest.raises(SystemExit, match="--watched needs --tuned"):
        fork_bench._target(None)
    assert fork_bench._target(make_tuned()) == 0.4321  # the searched target, read once


class _Trials:
    """Stands in for a Trialist: a run whose loss falls 1/step and ends at the target."""

    def __init__(self) -> None:
        self.watches: list[object] = []

    def run(self, config: TrainConfig, steps: int, *, watch: Any = None) -> TrialResult:
        self.watches.append(watch)
        records = []
        for step in range(1, steps + 1):
            rate = 100.0 if step > 3 else 10.0  # burn-in steps are slow and left out
            record = StepRecord(step=step, loss=20.0 - step, elapsed_s=0.1 * step,
                                samples=16 * step, step_time_s=0.1, samples_per_s=rate,
                                lr=1e-3)  # fmt: skip
            records.append(record)
            if watch(record):
                break
        return TrialResult(status=TrialStatus.PRUNED, reason="ended at the target",
                           steps=records, pid=1, wall_s=1.0, first_step_s=0.5)  # fmt: skip


def test_a_watched_run_ends_at_the_target_and_reads_its_rate_past_the_burn_in() -> None:
    trials = _Trials()
    config = TrainConfig(micro_batch_size=16, optimizer={"lr": 1e-3})
    run = fork_bench._watched(trials, config, 10.0, _args(Path("t.yaml")))  # type: ignore[arg-type]
    startup, rate = run()
    assert isinstance(trials.watches[0], TargetWatch)
    assert rate == 100.0 and startup == pytest.approx(0.4)
