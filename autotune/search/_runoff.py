"""The runoff: the trials whose times to target lie within run-to-run noise of the best one
are re-run, interleaved, and ranked by their median time.

Times are paced (:mod:`._pace`): a config's steps to the target are the same in every
run, and only its step's wall pace varies, 6-25% between fresh processes. Candidates of
one step are therefore ordered exactly by their steps, and nothing is re-run for them.
Where the close candidates differ in step (a micro-batch, an accumulation, a precision),
each is re-run, interleaved (a, b, c, a, b, c, so that machine drift hits every candidate
alike), and they are ranked by their median time at the pace of their own runs (see
:func:`runoff`); a repeat that misses the target counts as missed. The convergence
phase stops its trials early enough to leave the runoff its :func:`needed_s` (a search
that spends its whole budget on trials would otherwise rank on single runs); it never
spends the confirmation's reserve.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from autotune import stability
from autotune._units import format_seconds
from autotune.search._confirm import (
    _STEP_MARGIN,  # a repeat runs as a confirmation's
    same_step,
)
from autotune.search._measure import TargetWatch, Trialist, measured, ok
from autotune.search._pace import Pace, paced_s
from autotune.search._progress import describe
from autotune.search._types import Measured

__all__ = ["RUNOFF_MARGIN", "Entry", "needed_s", "runoff"]

# Candidates up to this factor slower than the best trial: within the 6-25% run-to-run
# noise of one fresh process, so their order is not yet known.
RUNOFF_MARGIN = 1.3
_SIZE = 3  # the fastest this many close candidates: each round costs one run of each
_CAP_FACTOR = 2.0  # a repeat this many times slower than the best trial is stopped, a miss
_ROUND_MARGIN = 1.25  # a round starts only if this many times its estimated cost fits


@dataclass
class Entry:
    """A convergence trial that reached the target, and its times to it."""

    trial: int  # its number in the study
    run: Measured  # the trial's run
    times: list[float]  # paced seconds to the target: its trial's, then each repeat's (inf: missed)
    repeats: list[Measured | None] = field(default_factory=list)  # None: failed or missed

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)


def runoff(
    entries: list[Entry],
    target: float,
    trials: Trialist,
    rounds: int,
    room: Callable[[], float],
    say: Callable[[str], None],
) -> list[Entry]:
    """``entries`` (fastest paced time first) re-ranked. The close ones (:func:`_close`: the
    best of each step near the fastest) are re-run ``rounds`` times, interleaved, while
    ``room()`` seconds hold a round with a margin, and ordered by their median paced time
    at the pace of their own runs (a tie keeps the trials' order); the rest follow
    unchanged. Fewer than two close steps: the order is known, nothing runs.

    Own runs, not the search's pool: the machine's speed drifts over seconds, and a step
    tried in many trials has its pace pooled over the whole search while a step tried once
    would have it from the runoff's minutes alone. Interleaved, every candidate's repeats
    share their windows (cnn_digits, AVX2 host: a micro-16 x 2 candidate paced from its
    runoff repeats at 1.04 s beat micro 16 x 1 pooled over the search at 1.29 s, and the
    benchmark's interleaved re-runs then put it 28% behind)."""
    close = _close(entries)
    if len(close) < 2 or rounds < 1:
        near = len(_within(entries))
        if rounds >= 1 and near >= 2:
            say(
                f"runoff: {near} candidates within {RUNOFF_MARGIN - 1:.0%} of the best share one "
                "step: ordered by their steps to the target (the same in every run), none re-run"
            )
        return entries
    cap = _CAP_FACTOR * close[0].times[0]
    cost = _round_s(close, trials.startup_s)
    ran = 0
    while ran < rounds and room() >= _ROUND_MARGIN * cost:
        for entry in close:
            entry.repeats.append(_repeat(entry.run, target, trials, cap))
        ran += 1
    if ran == 0:
        return entries
    for entry in close:
        own = Pace.of([entry.run, *(r for r in entry.repeats if r is not None)])
        entry.times = [paced_s(own, run, target) for run in [entry.run, *entry.repeats]]
    ranked = sorted(close, key=lambda e: e.median_s)
    say(
        f"runoff: {len(close)} candidates within {RUNOFF_MARGIN - 1:.0%} of the best, "
        f"{ran} repeats each"
    )
    for entry in ranked:
        say(f"  trial {entry.trial} {describe(entry.run.train)}: {_result(entry, target)}")
    return [*ranked, *[e for e in entries if all(e is not c for c in close)]]


def _result(entry: Entry, target: float) -> str:
    """An entry's runoff outcome: its median paced time, its crossing step and the wall
    times of its runs (the trial's, then each repeat's)."""
    if not math.isfinite(entry.median_s):
        return "missed the target in most of its runs"
    walls = [
        entry.run.time_to_target_s,
        *(r.time_to_target_s if r else None for r in entry.repeats),
    ]
    shown = ", ".join("missed" if t is None else format_seconds(t, unit="") for t in walls)
    step = stability.steps_to_target(entry.run.losses, target)
    return (
        f"{format_seconds(entry.median_s)} at its runs' pace (step {step}; wall clocks {shown} s)"
    )


def needed_s(entries: list[Entry], rounds: int, startup_s: float, joining: int = 0) -> float:
    """Budget the runoff of ``entries`` (fastest trial first) needs for all its ``rounds``:
    every round but the last costs one run of each close candidate, the last must find that
    with its margin to start. ``joining`` more trials may still become close candidates
    (while the slate has room), each costed at the slowest a close one can be; the loop
    passes the trial it is about to start, whose win would otherwise raise the need after
    its last check. 0 when there is nothing to decide (under two close ones)."""
    close = _close(entries)
    if not close or rounds < 1:
        return 0.0
    more = min(joining, _SIZE - len(close))
    if len(close) + more < 2:
        return 0.0
    joiner_s = RUNOFF_MARGIN * close[0].times[0] + startup_s
    return (rounds - 1 + _ROUND_MARGIN) * (_round_s(close, startup_s) + more * joiner_s)


def _round_s(close: list[Entry], startup_s: float) -> float:
    """Estimated seconds of one round: each close candidate's trial time (all within
    RUNOFF_MARGIN of the best, below a repeat's cap) and a process start-up."""
    return sum(e.times[0] + startup_s for e in close)


def _close(entries: list[Entry]) -> list[Entry]:
    """The fastest entry of each step (:func:`same_step`) within RUNOFF_MARGIN of the fastest,
    at most _SIZE of them: the entries of one step are already in their true order (their
    steps to the target), so only the best of each has anything to decide."""
    chosen: list[Entry] = []
    for entry in _within(entries):
        if len(chosen) == _SIZE:
            break
        if all(not same_step(entry.run.train, other.run.train) for other in chosen):
            chosen.append(entry)
    return chosen


def _within(entries: list[Entry]) -> list[Entry]:
    """The leading entries within RUNOFF_MARGIN of the fastest one's time."""
    if not entries:
        return []
    best = entries[0].times[0]
    return [e for e in entries if e.times[0] <= RUNOFF_MARGIN * best]


def _repeat(run: Measured, target: float, trials: Trialist, cap: float) -> Measured | None:
    """``run``'s config again in a fresh process, stopped at the target; None if it failed
    or did not reach the target within ``cap`` seconds."""
    steps = max(len(run.losses), int(len(run.losses) * _STEP_MARGIN))
    result = trials.run(run.train, steps, watch=TargetWatch(target, cap), time_cap_s=cap)
    again = measured(result, run.train, target) if ok(result) else None
    if again is None or again.time_to_target_s is None:
        return None
    return again
