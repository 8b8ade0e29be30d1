"""Running one config through a supervised trial and reading time to target from it."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from autotune import stability
from autotune.config import TrainConfig
from autotune.runtime import StepRecord
from autotune.search._types import Measured
from autotune.trial import (
    PLAIN,
    ForkServer,
    Launcher,
    TargetStop,
    TrialResult,
    TrialSpec,
    TrialStatus,
    run_trial,
)

__all__ = [
    "FORK_SERVER_ENV",
    "STARTUP_PRIOR_S",
    "StopsAtTarget",
    "TargetWatch",
    "Trialist",
    "time_to_target",
]

FORK_SERVER_ENV = "AUTOTUNE_FORK_SERVER"
"""Set to ``0`` to start every trial as a fresh interpreter (to compare, or to debug)."""
_START_ALLOWANCE_S = 30.0  # the timeout's room for torch import, model build, first steps
# A trial's start-up before one is measured: the first trial starts the fork server (7-8 s
# on 2 cores: torch, torch._dynamo, the task's imports), every later one forks in 0.2-0.3 s.
STARTUP_PRIOR_S = 3.0
_STARTUPS_KEPT = 8  # the median of the latest start-ups: the server's own start drops out


def time_to_target(losses: list[float], elapsed: list[float], target: float) -> float | None:
    """Wall seconds until the *smoothed* loss reaches ``target`` (one lucky dip cannot)."""
    step = stability.steps_to_target(losses, target)
    return None if step is None else elapsed[step]


@runtime_checkable
class StopsAtTarget(Protocol):
    """A watch that stops its run at a target the worker can see too (:attr:`stop_at`):
    :meth:`Trialist.run` hands it to the worker, which ends the run there itself."""

    @property
    def stop_at(self) -> TargetStop: ...


class TargetWatch:
    """Follows a trial's steps: stops it once :func:`time_to_target` sees the crossing (the
    smoothed loss at the target, with the support after it that steps_to_target asks,
    :class:`~autotune.stability.TargetCrossing`), at a non-finite loss, when ``give_up``
    says so, or when it runs out of time. The worker is told the crossing too
    (:attr:`stop_at`), and ends the run there itself, where this watch would stop it.
    """

    def __init__(
        self,
        target: float,
        time_cap_s: float,
        give_up: Callable[[StepRecord, float], bool] | None = None,
    ) -> None:
        self.target, self.time_cap_s, self.give_up = target, time_cap_s, give_up
        self.crossing = stability.TargetCrossing(target)
        self.gave_up = False

    @property
    def losses(self) -> list[float]:
        return self.crossing.losses

    @property
    def stop_at(self) -> TargetStop:
        return TargetStop(loss=self.target)

    def __call__(self, record: StepRecord) -> bool:
        reached = self.crossing.update(record.loss)
        if reached or not math.isfinite(record.loss):
            return True
        if self.give_up is not None and self.give_up(record, self.crossing.smoothed):
            self.gave_up = True
            return True
        return record.elapsed_s > self.time_cap_s


@dataclass
class Trialist:
    """Runs configs of one task as supervised trials in ``workdir``.

    Workers are forked from a :class:`~autotune.trial.ForkServer` that imported torch and
    the task once (unless ``AUTOTUNE_FORK_SERVER=0``); use the Trialist as a context
    manager, or call :meth:`close`, to end that server.
    """

    task_path: Path
    workdir: Path
    seed: int
    device: str = "auto"
    count: int = 0
    launcher: Launcher = field(init=False)
    startups: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        forking = os.environ.get(FORK_SERVER_ENV, "1") != "0"
        log = self.workdir / "fork-server.log"
        self.launcher = ForkServer(self.task_path, log) if forking else PLAIN

    def __enter__(self) -> Trialist:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the fork server, if there is one (its workers have ended already)."""
        if isinstance(self.launcher, ForkServer):
            self.launcher.close()

    @property
    def startup_s(self) -> float:
        """A trial's start-up cost on top of its training: the median of the latest
        measured (launch to the first step, less that step's own time), or the prior."""
        if not self.startups:
            return STARTUP_PRIOR_S
        return statistics.median(self.startups[-_STARTUPS_KEPT:])

    def run(
        self,
        config: TrainConfig,
        steps: int,
        *,
        watch: Callable[[StepRecord], bool] | None = None,
        time_cap_s: float | None = None,
        measure_memory: bool = False,
        warmup_steps: int | None = None,
        seed: int | None = None,
    ) -> TrialResult:
        """One supervised run; never raises for what the trial does. A ``watch`` that
        :class:`StopsAtTarget` has the worker end the run at its target itself. ``seed``:
        another than the search's (:attr:`seed`), for a re-run that must not share its
        initial weights and batches."""
        self.count += 1
        spec = TrialSpec(
            task_path=self.task_path,
            train=config,
            steps=steps,
            seed=self.seed if seed is None else seed,
            device=self.device,
            timeout_s=(time_cap_s or 600.0) + _START_ALLOWANCE_S,
            measure_memory=measure_memory,
            warmup_steps=warmup_steps,
            stop_at=watch.stop_at if isinstance(watch, StopsAtTarget) else None,
        )
        workdir = self.workdir / f"run{self.count:04d}"
        result = run_trial(spec, workdir=workdir, on_step=watch, launcher=self.launcher)
        if result.first_step_s is not None and result.steps:
            self.startups.append(max(0.0, result.first_step_s - result.steps[0].elapsed_s))
        return result


def measured(result: TrialResult, config: TrainConfig, target: float | None) -> Measured | None:
    """What a finished (or target-stopped) trial tells the search; None if it has no steps."""
    if not result.steps:
        return None
    losses = [r.loss for r in result.steps]
    elapsed = [r.elapsed_s for r in result.steps]
    rates = sorted(r.samples_per_s for r in result.steps[min(3, len(result.steps) - 1) :])
    rate = result.summary.samples_per_s if result.summary else rates[len(rates) // 2]
    return Measured(
        train=config,
        losses=losses,
        elapsed_s=elapsed,
        samples_per_s=rate,
        time_to_target_s=None if target is None else time_to_target(losses, elapsed, target),
        peak_memory_bytes=result.summary.peak_memory_bytes if result.summary else None,
    )


def ok(result: TrialResult) -> bool:
    """Finished, or stopped by the search itself (target reached / gave up)."""
    return result.status in (TrialStatus.OK, TrialStatus.PRUNED)
