"""The search's baseline: the Task's own setup, run first; its loss curve sets the target.

How long it runs (the Task's ``steps``, the budget's share, or until its loss levelled
off), where on its curve the target lies, and the checks that refuse a curve that sets
no useful target (it diverged, did not fall, or its target is within its batches' noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from autotune import stability
from autotune.config import TrainConfig
from autotune.profiler import ProbeReport
from autotune.runtime import StepRecord
from autotune.search._convergence import _CANNOT_WIN_MARGIN as _WINNER_MARGIN
from autotune.search._measure import STARTUP_PRIOR_S, Trialist, measured, ok
from autotune.search._progress import describe
from autotune.search._types import BaselineRun, Events, Measured, SearchError, SearchOptions
from autotune.task import MIN_BASELINE_STEPS, Task

__all__ = [
    "MAX_BASELINE_STEPS",
    "PAIR_BASELINES",
    "baseline_seconds",
    "noisy_target",
    "require_training",
    "run_baseline",
    "target_text",
    "task_horizon_s",
    "unbent_baseline",
    "unstable_baseline",
]

_BLOW_UP = 10.0  # a loss this many times its first is no batch's noise: the run blew up
_BASELINE_SHARE = 0.08  # of the budget: long enough for a target off the loss's steep start
# ... but no longer than lets the confirmation fit in this share of the budget: each of its
# pairs re-runs the baseline to the target and the winner (planned at up to 1.3x the best,
# which starts as the baseline's time). On a CPU without fast bf16, tiny_gpt's 8% baseline
# (22 s to the target) left a 178 s confirmation reserve: not one trial beyond the seed fit.
_CONFIRM_SHARE = 0.4
# a confirmation pair in baseline runs, as the reserve plans it: the baseline to its target
# and a winner that must beat it, at half its time (one at 2.5x would take 0.4)
PAIR_BASELINES = 1.5
MAX_BASELINE_STEPS = 5000  # bounds a tiny task's baseline; its plateau start sets the target
# A length-free baseline is asked whether it has settled once it ran this many steps (fewer
# make halves too short to tell a plateau from noise) ...
_SETTLE_FIRST_CHECK = 100
# ... and again each time it ran this much longer: each ask costs O(steps) (8 ms at 5000
# steps, measured beside a test run), and asks this far apart cost 6x the last in all.
_SETTLE_CHECK_GROWTH = 1.2
# A baseline with a given target runs this many times the steps it took to reach it: the
# confirmation's pairs re-run it on other seeds, to at most the steps it ran, and another
# seed may need more steps than seed 0 did; twice as many is the margin the settled
# baseline keeps too (it crossed its target in its first half).
_GIVEN_TARGET_REACH = 2
# A baseline whose second half gained this much of what its first half did has not bent:
# its target sits on the loss's first drop, where time to it measures the first steps, not
# training. A demo on a host slowed 80x by a test suite cut mlp_digits' baseline to 30
# steps (5000 when quiet; stability.late_gain 1.18 against 0.00-0.29 in quiet baselines of
# all five workloads, 50-5000 steps), and its "winner" confirmed at 0.57x.
_UNBENT_GAIN = 0.5


def run_baseline(
    task: Task,
    base: TrainConfig,
    report: ProbeReport,
    options: SearchOptions,
    trials: Trialist,
    say: Events,
) -> BaselineRun:
    """Train the baseline, the Task's ``steps`` or the budget's share of them; its loss
    curve sets the target unless the user or the Task gave one.

    Both are timed by the run's own clock, not the probe's predicted step time (a few
    timed steps of another batch: on one host it put tiny_gpt's step at 0.345 s where the
    baseline's own took 0.27 s). Only a schedule that spans the run's length (cosine or
    linear without ``total_steps``) needs its step count fixed in advance, from the probe.
    """
    asked, pairs = task.baseline_steps(), options.confirm_pairs
    if asked is not None:  # cut by the clock only if the budget must
        watch = _stop_after(task_horizon_s(options.budget_s, pairs))
        result, horizon = trials.run(base, asked, watch=watch), "Task.baseline steps"
    elif _length_free(base):
        given = options.target_loss if options.target_loss is not None else task.target_loss
        settling = _Settling(baseline_seconds(options.budget_s, pairs), given)
        result = trials.run(base, MAX_BASELINE_STEPS, watch=settling)
        horizon = settling.horizon()
        if settling.reach is not None:
            say(
                f"baseline: at the given target by step {settling.reach // _GIVEN_TARGET_REACH}"
                f"; stopped at step {settling.reach}, the margin the confirmation's other "
                "seeds get"
            )
    else:
        result = trials.run(base, _budgeted_steps(base, report, options))
        horizon = "as many as the probe's step time fits in the budget's share"
    run = measured(result, base, None) if ok(result) else None
    if run is None or not stability.is_finite(run.losses):
        raise SearchError(
            f"the Task's baseline did not train ({result.status.value}: {result.reason}); "
            f"fix Task.baseline so that `autotune run` trains it."
        )
    if asked is not None and len(run.losses) < asked:
        horizon = _cut(asked, run, options, say)
    target, source = _target(run, task, options, horizon)
    if source not in ("user", "task"):  # a target off a curve that does not train is none
        require_training(run, base, target)
    tt = Measured.model_validate({**run.model_dump(), "time_to_target_s": _tt(run, target)})
    return BaselineRun(run=tt, steps=len(run.losses), target_loss=target, target_from=source)


def require_training(run: Measured, base: TrainConfig, target: float) -> None:
    """Raise :class:`SearchError` where the baseline's curve diverged, did not fall, or
    ends at a ``target`` no lower than its first loss: every config reaches such a target
    at its first step (Adam at lr 50 on a small tabular task blew up at its second step
    and ended far above its first loss; the curve's shape is in the test)."""
    found = stability.verdict(run.losses)
    if not found.stable:
        why = "; ".join(found.reasons)
    elif _blew_up(run.losses, target):
        why = (
            f"its loss blew up from {run.losses[0]:.4g} at step 1 to {max(run.losses):.4g}, "
            f"and after {len(run.losses)} steps, {target:.4g}, it is still above its start"
        )
    else:
        noisy = noisy_target(run, target)
        if noisy is not None:
            raise SearchError(
                f"{noisy}. Train the baseline longer (Task.baseline steps, or a larger "
                "--budget), or give a --target-loss further down."
            )
        return
    raise SearchError(
        f"the Task's baseline ({describe(base)}) does not train: {why}. A target loss taken "
        f"from its curve is one any config reaches at its first step: fix Task.baseline (a "
        f"lower lr?) so that `autotune run` trains it, or give --target-loss."
    )


def _blew_up(losses: Sequence[float], target: float) -> bool:
    """Whether a curve that starts positive ends no lower (``target``) and rose to
    _BLOW_UP x its first loss on the way. Ending above the first loss alone is no sign:
    a stream's first batch came out at 16.5 against a mean near 32."""
    first = losses[0]
    return first > 0 and target >= first and max(losses) >= _BLOW_UP * first


def noisy_target(run: Measured, target: float) -> str | None:
    """Why ``target`` ranks luck where it lies within the baseline ``run``'s batch-to-batch
    noise of its start (:func:`stability.drop_in_noise`); None where it lies further down."""
    drop = stability.drop_in_noise(run.losses, target)
    if drop >= stability.MIN_DROP_IN_NOISE:
        return None
    noise = stability.step_noise(run.losses)
    start = target + drop * noise  # the trend's first value
    return (
        f"the target loss {target:.4g} is {max(0.0, start - target):.3g} below where the "
        f"baseline's loss started ({start:.4g}), less than its single batches scatter by "
        f"({noise:.3g}): a few lucky batches reach it, so time to it ranks luck, not configs"
    )


def unstable_baseline(baseline: BaselineRun) -> str | None:
    """A warning where the baseline's curve diverged or did not fall but the target is the
    user's or the Task's (a target from the curve itself is refused instead); None when it
    trains."""
    found = stability.verdict(baseline.run.losses)
    if found.stable:
        return None
    return (
        f"the Task's baseline does not train ({'; '.join(found.reasons)}): the speed-up is "
        f"over a setup that fails, not over a working one. Fix Task.baseline."
    )


def _stop_after(cap_s: float) -> Callable[[StepRecord], bool]:
    """A trial watch that stops the run at its first step past ``cap_s`` wall seconds, but
    not before MIN_BASELINE_STEPS: fewer set no target off the loss's first steps."""
    return lambda record: record.step >= MIN_BASELINE_STEPS and record.elapsed_s > cap_s


class _Settling:
    """The watch of a baseline free to run as long as it likes: it stops the run at its
    first step past ``cap_s`` wall seconds (not before MIN_BASELINE_STEPS, as
    :func:`_stop_after`), or sooner once its loss has levelled off
    (:func:`stability.settled`): training on would barely move the target it sets, and a
    millisecond step reaches its plateau long before the budget's share is spent. With a
    ``given`` target (the user's or the Task's), sooner still once it ran _GIVEN_TARGET_REACH
    x the steps it took to reach that target: its curve sets nothing then."""

    def __init__(self, cap_s: float, given: float | None = None) -> None:
        self.cap_s, self.settled, self.check_at = cap_s, False, _SETTLE_FIRST_CHECK
        self.losses: list[float] = []
        self.crossing = None if given is None else stability.TargetCrossing(given)
        self.reach: int | None = None  # the steps to run, once the given target is reached

    def __call__(self, record: StepRecord) -> bool:
        self.losses.append(record.loss)
        self._follow_target()
        if record.step < MIN_BASELINE_STEPS:
            return False
        if record.elapsed_s > self.cap_s or len(self.losses) >= (self.reach or math.inf):
            return True
        if len(self.losses) < self.check_at:
            return False
        self.check_at = math.ceil(len(self.losses) * _SETTLE_CHECK_GROWTH)
        self.settled = stability.settled(self.losses)
        return self.settled

    def _follow_target(self) -> None:
        if self.crossing is None or self.reach is not None:
            return
        if self.crossing.update(self.losses[-1]):
            crossed = stability.steps_to_target(self.losses, self.crossing.target)
            self.reach = None if crossed is None else _GIVEN_TARGET_REACH * (crossed + 1)

    def horizon(self) -> str:
        """How the run's length was set, for ``target_from``."""
        if not self.settled:
            return "as many as ran in the budget's share"
        return (
            f"until it levelled off: its second half lowered it by at most "
            f"{stability.SETTLED_FRACTION:.0%} of its whole drop"
        )


def _length_free(config: TrainConfig) -> bool:
    """Whether the config's LR path is the same however many steps the run takes."""
    return config.schedule.name == "constant" or config.schedule.total_steps is not None


def _budgeted_steps(base: TrainConfig, report: ProbeReport, options: SearchOptions) -> int:
    """As many baseline steps as the probe's predicted step time fits in
    :func:`baseline_seconds`, within [MIN_BASELINE_STEPS, MAX_BASELINE_STEPS]."""
    variant = report.variant(base.precision, "none")
    step_s = variant.predict_step_time_s(base.micro_batch_size) * base.grad_accum_steps
    steps = round(baseline_seconds(options.budget_s, options.confirm_pairs) / step_s)
    return min(MAX_BASELINE_STEPS, max(MIN_BASELINE_STEPS, steps))


def _cut(asked: int, run: Measured, options: SearchOptions, say: Events) -> str:
    """Say that the budget cut the Task's ``asked`` baseline steps, and which budget keeps
    them; the horizon for ``target_from``."""
    done, pairs = len(run.losses), options.confirm_pairs
    need_s = _budget_for(asked * run.elapsed_s[-1] / done, pairs)
    say(
        f"baseline: Task.baseline steps={asked}, but it reached step {done} in the "
        f"{task_horizon_s(options.budget_s, pairs):.0f} s this budget's {pairs} "
        f"confirmation pairs leave room for; its target is its loss there (give --budget "
        f"{math.ceil(need_s)}s or more to train all {asked})"
    )
    return f"Task.baseline steps={asked}, cut by the budget"


def baseline_seconds(budget_s: float, pairs: int, startup_s: float = STARTUP_PRIOR_S) -> float:
    """How long the baseline trains without the Task's ``steps``: _BASELINE_SHARE of the
    budget, or less where the confirmation's ``pairs`` (each a baseline run and a winner
    run as slow as the trials' cap, plus two start-ups of ``startup_s``) would not fit in
    _CONFIRM_SHARE of it; never under one start-up's worth."""
    per_pair = _CONFIRM_SHARE * budget_s / pairs - 2 * startup_s
    return max(startup_s, min(_BASELINE_SHARE * budget_s, per_pair / (1 + _WINNER_MARGIN)))


def task_horizon_s(budget_s: float, pairs: int, startup_s: float = STARTUP_PRIOR_S) -> float:
    """The longest the baseline trains with the Task's ``steps``: as long as lets the
    confirmation's reserve (``pairs`` of PAIR_BASELINES baseline runs and two start-ups)
    fit in _CONFIRM_SHARE of the budget. The user chose the horizon, so neither the 8%
    share nor room for a winner slower than the baseline applies; never under one
    start-up's worth."""
    per_pair = _CONFIRM_SHARE * budget_s / pairs - 2 * startup_s
    return max(startup_s, per_pair / PAIR_BASELINES)


def _budget_for(baseline_s: float, pairs: int, startup_s: float = STARTUP_PRIOR_S) -> float:
    """The smallest budget whose :func:`task_horizon_s` is ``baseline_s``."""
    return pairs * (PAIR_BASELINES * baseline_s + 2 * startup_s) / _CONFIRM_SHARE


def _target(run: Measured, task: Task, options: SearchOptions, horizon: str) -> tuple[float, str]:
    if options.target_loss is not None:
        return options.target_loss, "user"
    if task.target_loss is not None:
        return float(task.target_loss), "task"
    basis = stability.target_basis(run.losses)
    return basis.target, target_text(basis, run.losses, horizon)


def target_text(basis: stability.TargetBasis, losses: Sequence[float], horizon: str) -> str:
    """Where a target from the baseline's curve lies on it: the level its smoothed loss
    came within TARGET_BAND of its whole drop (or of its noise), and the step it got there
    of all it ran. "Its loss after N steps" it is not: a curve whose first drop dwarfs its
    tail (a regression's offset learnt first) crosses it long before its end."""
    steps = len(losses)
    crossed = stability.steps_to_target(losses, basis.target)  # numbered as trials' steps
    if basis.by_noise:
        where = f"the baseline's lowest smoothed loss, {basis.lowest:.4g}, plus twice its noise"
    else:
        where = (
            f"where the baseline's smoothed loss came within {stability.TARGET_BAND:.0%} of "
            f"its whole drop, {basis.start:.4g} to {basis.lowest:.4g}"
        )
    at = f"at step {crossed} of its {steps}" if crossed is not None else f"over its {steps}"
    return f"{where}: {at} steps; {horizon}"


def _tt(run: Measured, target: float) -> float | None:
    from autotune.search._measure import time_to_target

    return time_to_target(run.losses, run.elapsed_s, target)


def unbent_baseline(baseline: BaselineRun) -> str | None:
    """A warning when the baseline's curve had not bent by its end (stability.late_gain at
    least _UNBENT_GAIN), so the target it sets is on the loss's first drop; else None."""
    gain = stability.late_gain(baseline.run.losses)
    if gain < _UNBENT_GAIN:
        return None
    seconds = baseline.run.elapsed_s[-1]
    return (
        f"the baseline's loss was still falling as fast as it started after its "
        f"{baseline.steps} steps in {seconds:.1f} s (its second half gained {gain:.2f}x "
        f"what its first did), so the target is on the loss's first drop, and time to it "
        f"measures the first steps, not training. Is something else running on this "
        f"machine? Give a larger --budget, Task.baseline steps past the drop, or "
        f"--target-loss."
    )
