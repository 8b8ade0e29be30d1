"""The convergence phase's median rule, on curves re-timed at the pooled pace of now.

A running trial is stopped when its best smoothed loss so far is behind the median of the
completed trials' smoothed losses at the same second (Optuna's MedianPruner rule). The
seconds are every run's steps at its step's pooled head and pace (:meth:`Pace.clock`), as
the trial's value is. Optuna's own MedianPruner cannot do that: it compares the values each
trial *reported*, frozen at the seconds of the pace pooled while it ran, and that pace
moves as runs are pooled. In a tiny_gpt search (AVX2 host, fp32), micro 4 at lr 1.2e-3 was
stopped at "second 5", its step 52 (smoothed 3.05), against micro 4 at 3e-4 and 6e-4, whose
"second 5" had been their step ~60 (2.93, 2.96) on the pace of three runs before; the same
config crossed the target at step 50, the best's step, in an earlier search. Re-timed, all
three are compared at the same step, where their losses are within 0.05 of each other.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from autotune import stability
from autotune.search._pace import Pace
from autotune.search._types import Measured

__all__ = ["Curve", "MedianRule"]

# Completed runs needed before any is judged: one curve is a single run's luck, not a median.
_STARTUP_TRIALS = 2
# No judgement in a run's first seconds: its first steps hold the warm-up, and a larger LR or
# batch often starts slower and overtakes (Optuna's n_warmup_steps, in seconds).
_WARMUP_S = 3.0


@dataclass(frozen=True)
class Curve:
    """A run's smoothed losses, each at the second its step ends on a common clock."""

    seconds: Sequence[float]
    smoothed: Sequence[float]

    @classmethod
    def of(cls, run: Measured, pace: Pace) -> Curve:
        """``run``'s curve on its step's pooled clock (its own wall clock where its step has
        no pooled run)."""
        clock = pace.clock(run.train)
        steps = range(1, len(run.losses) + 1)
        seconds = run.elapsed_s if clock is None else [clock(k) for k in steps]
        return cls(list(seconds), stability.smooth(run.losses))

    def at(self, second: float) -> float | None:
        """The smoothed loss of the last step ended by ``second``; None before the first
        step's end or after the last one (the run had stopped: Optuna's "no value at that
        step")."""
        if not self.seconds or second > self.seconds[-1]:
            return None
        last = bisect.bisect_right(self.seconds, second) - 1
        return None if last < 0 else self.smoothed[last]


@dataclass(frozen=True)
class MedianRule:
    """The median of the completed trials' curves, asked at a running trial's second."""

    curves: Sequence[Curve]

    @classmethod
    def of(cls, completed: Sequence[Measured], pace: Pace) -> MedianRule:
        return cls([Curve.of(run, pace) for run in completed])

    def median_at(self, second: float) -> float | None:
        """The median smoothed loss at ``second`` of the curves still running there; None
        while fewer than _STARTUP_TRIALS trials completed, in the warm-up, or where none
        ran that long."""
        if len(self.curves) < _STARTUP_TRIALS or second < _WARMUP_S:
            return None
        found = [value for curve in self.curves if (value := curve.at(second)) is not None]
        return statistics.median(found) if found else None
