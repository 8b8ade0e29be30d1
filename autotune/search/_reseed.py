"""A candidate whose crossing of the target may be luck runs again on another seed.

Every trial of a search trains on its seed (0 by default): the same initial weights and
the same batches in the same order, so configs differ only in what they do with them. That
makes a lucky stretch of batches part of a config: a small-batch trial whose noisy curve
dips across the target repeats the dip in every trial of it. The confirmation's pairs train
on later seeds and would find such a pick out, but only after it has won, with the
budget spent on its pairs; this check is the cheap gate before that, and leaves the
baseline it was measured beside as an alternative (:func:`~._confirm.stable_winner`). Where the
target lies within the candidate's own batch-to-batch noise of its start
(:func:`~autotune.stability.drop_in_noise` below
:data:`~autotune.stability.MIN_DROP_IN_NOISE`), its crossing says little; the candidate then
trains once more on the next seed and must reach the target again within
:data:`RESEED_MARGIN` x its steps. Elsewhere (the examples' trials: their drops are many
deviations) nothing runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from autotune import stability
from autotune.search._measure import TargetWatch, Trialist, measured, ok
from autotune.search._types import Measured

__all__ = ["RESEED_MARGIN", "Reseeded", "reseed_check"]

# A trend crosses again within noise of its own steps; twice them (plus the support a
# crossing needs) leaves a real config room for a slower seed and a lucky one little.
RESEED_MARGIN = 2.0
_CAP_MARGIN = 2.0  # the re-run's wall-clock cap, x its steps at the candidate's step time


@dataclass(frozen=True)
class Reseeded:
    """What the check found: ``passed`` (None: no re-run), and ``why`` (None: nothing worth
    telling, the crossing lies beyond the candidate's noise)."""

    passed: bool | None
    why: str | None


def reseed_check(
    candidate: Measured,
    trials: Trialist,
    target: float,
    spare_s: Callable[[], float] | None = None,
) -> Reseeded:
    """Re-run ``candidate`` on ``trials.seed + 1`` where its crossing lies within its noise
    (see the module), if ``spare_s`` (the budget's seconds beyond the confirmation) has room;
    ``passed`` is None where it is not run."""
    reached = stability.steps_to_target(candidate.losses, target)
    drop = stability.drop_in_noise(candidate.losses, target)
    if reached is None or drop >= stability.MIN_DROP_IN_NOISE:
        return Reseeded(None, None)
    limit = math.ceil(RESEED_MARGIN * (reached + 1)) + stability.TARGET_SUPPORT_STEPS
    step_s = candidate.elapsed_s[-1] / len(candidate.elapsed_s)
    cap = _CAP_MARGIN * limit * step_s + trials.startup_s
    if spare_s is not None and cap > spare_s():
        return Reseeded(None, f"no room in the budget for a {cap:.1f} s re-run on a new seed")
    seed = trials.seed + 1
    result = trials.run(
        candidate.train, limit, watch=TargetWatch(target, cap), time_cap_s=cap, seed=seed
    )
    again = measured(result, candidate.train, target) if ok(result) else None
    steps = None if again is None else stability.steps_to_target(again.losses, target)
    first = f"step {reached + 1} on seed {trials.seed}"
    if steps is not None:
        again_at = f"step {steps + 1}"
        return Reseeded(True, f"reached the target again on seed {seed}, at {again_at} ({first})")
    return Reseeded(
        False,
        f"did not reach the target again within {limit} steps on seed {seed}: its crossing "
        f"at {first} lies within its own batch noise of its start ({drop:.2f} deviations), "
        "a lucky stretch of batches",
    )
