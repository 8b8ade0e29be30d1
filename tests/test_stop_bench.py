"""benchmarks/stop_bench.py: one way tells the worker the target, the other hides it."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from autotune.config import TrainConfig
from autotune.runtime import StepRecord
from autotune.search._measure import StopsAtTarget
from autotune.trial import TrialResult, TrialStatus
from benchmarks import stop_bench


class _Trials:
    """Feeds a falling curve to the watch until it stops the run, like the runner."""

    def __init__(self) -> None:
        self.told: list[bool] = []

    def run(self, config: TrainConfig, steps: int, **kwargs: Any) -> TrialResult:
        watch = kwargs["watch"]
        self.told.append(isinstance(watch, StopsAtTarget))
        records: list[StepRecord] = []
        for k in range(steps):
            records.append(
                StepRecord(
                    step=k + 1,
                    loss=2.0 * 0.95**k,
                    elapsed_s=0.01 * (k + 1),
                    lr=1e-3,
                    samples=16 * (k + 1),
                    step_time_s=0.01,
                    samples_per_s=1600.0,
                )
            )
            if watch(records[-1]):
                break
        return TrialResult(status=TrialStatus.PRUNED, reason="r", steps=records, pid=1, wall_s=1)


def test_only_the_told_way_hands_the_worker_its_target_and_both_record_the_same_run() -> None:
    trials = _Trials()
    config = TrainConfig.model_validate({"micro_batch_size": 16, "optimizer": {"lr": 1e-3}})
    told = stop_bench._run(trials, config, 0.5, told=True)  # type: ignore[arg-type]
    hidden = stop_bench._run(trials, config, 0.5, told=False)  # type: ignore[arg-type]
    assert trials.told == [True, False]
    assert (told.steps, told.time_to_target_s) == (hidden.steps, hidden.time_to_target_s)
    console = Console(width=120, record=True)
    ways = {"worker ends it": [told], "supervisor ends it": [hidden]}
    console.print(stop_bench._table(ways, 0.5))
    text = console.export_text()
    assert f"│ {told.steps} ({told.steps}-{told.steps})" in text
    assert "supervisor ends it" in text
