"""Time to target from a run's *steps* to the target and its step's pooled wall pace.

Every run shares the seed and the data order, so a config's losses, and the step at which
its smoothed loss crosses the target, are the same in every process. Measured on an AVX2
host: cnn_digits fp32 micro 64 at lr 1e-2 in 4 fresh processes gave bit-identical losses
and the crossing at step 69 each time, while the wall time to it spanned 1.52-1.92 s. All
of one run's noise is in its step time, and the search's candidates mostly share one step
(the best micro-batch, at different LRs and schedules): ranking them by single wall times
ranked them by the machine's drift. cnn_digits' grid benchmark (AVX512-BF16 host) showed
it: trial 13 (lr 1.12e-2, constant, next to the grid's best) missed the runoff's three
slots by a few milliseconds of one run, and the search's pick re-ran at 78.8% of the grid's.

So the search times a run that reached the target as: the head (its first step, which
holds the warm-up) plus its crossing step's index times the pace (wall seconds per step
after the first), each the median over every run of the same step (:func:`same_step`):
the baseline's, every trial's (pruned ones too) and the runoff's repeats, and the
systems phase's 12-step measurements only for a step that nothing longer ran
(:func:`~autotune.search._confirm.steady_runs`: those are timed in their process's
warm-up). Candidates of one step are then ordered exactly by their steps to the target,
and candidates of different steps by a pace pooled over many runs instead of one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from autotune import stability
from autotune.config import TrainConfig
from autotune.search._confirm import same_step, steady_runs
from autotune.search._types import Measured

__all__ = ["Pace", "paced_s"]

_MIN_STEPS = 3  # a run with fewer steps has no pace after its first step


@dataclass
class Pace:
    """The wall head and pace of the runs added, pooled per step (:func:`same_step`)."""

    runs: list[Measured] = field(default_factory=list)

    @classmethod
    def of(cls, runs: Iterable[Measured]) -> Pace:
        pace = cls()
        for run in runs:
            pace.add(run)
        return pace

    def add(self, run: Measured) -> None:
        """Pool ``run``'s head and pace (a run under _MIN_STEPS steps adds nothing)."""
        if len(run.elapsed_s) >= _MIN_STEPS:
            self.runs.append(run)

    def _head_and_pace(self, run: Measured) -> tuple[float, float]:
        """(head, pace) of ``run``'s step: the medians over the pooled runs of that step,
        ``run`` itself where none is pooled."""
        return _medians(self._same(run.train) or [run])

    def _same(self, train: TrainConfig) -> list[Measured]:
        """The pooled runs of ``train``'s step, its :func:`steady_runs` where it has some: a
        systems measurement's dozen steps are paced by its process's warm-up."""
        return steady_runs(r for r in self.runs if same_step(r.train, train))

    def clock(self, train: TrainConfig) -> Callable[[int], float] | None:
        """Seconds from training's start to the end of step ``k`` (1-based) of ``train``'s
        step at its pooled head and pace; None where no run of that step is pooled. A
        running trial judged by it is judged by its steps, not the machine's momentary
        speed: a cnn_digits trial whose earlier run reached the target at step 269 in 2.0 s
        was stopped, in a later search, as "not at the target after 3.1 s"."""
        same = self._same(train)
        if not same:
            return None
        head, pace = _medians(same)
        return lambda k: head + (k - 1) * pace

    def time_to_target(self, run: Measured, target: float) -> float | None:
        """Seconds ``run``'s config takes to ``target`` at its step's pooled head and pace;
        None when its smoothed loss never reached the target."""
        crossing = stability.steps_to_target(run.losses, target)
        if crossing is None:
            return None
        head, pace = self._head_and_pace(run)
        return head + crossing * pace


def _medians(runs: list[Measured]) -> tuple[float, float]:
    """The median head (first step's wall seconds) and pace (seconds a step after it)."""
    heads = [r.elapsed_s[0] for r in runs]
    paces = [(r.elapsed_s[-1] - r.elapsed_s[0]) / (len(r.elapsed_s) - 1) for r in runs]
    return statistics.median(heads), statistics.median(paces)


def paced_s(pace: Pace, run: Measured | None, target: float) -> float:
    """:meth:`Pace.time_to_target` of ``run`` as a sort key: inf for no run or no crossing."""
    found = None if run is None else pace.time_to_target(run, target)
    return math.inf if found is None else found
