"""Pure verdicts on a loss curve: finite, decreasing, not diverging, agreeing with fp32.

DESIGN.md invariant 4: a configuration wins only if its loss curve is finite, decreasing
and, for reduced precision, agrees with the fp32 curve within a stated tolerance. Every
function here takes a list of per-step training losses (floats, one per optimizer step,
``losses[k]`` measured during step ``k``) and returns a value; no torch, no I/O.

Per-step training losses are noisy (each is one mini-batch), so every verdict looks at a
smoothed curve or at window means, never at a single step: one lucky or unlucky batch must
not decide. The thresholds are named constants below, each with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DECREASE_WINDOW_FRACTION",
    "DIVERGENCE_FLOOR_FRACTION",
    "DIVERGENCE_RISE",
    "MAX_OVERFLOW_RATE",
    "MIN_RELATIVE_DECREASE",
    "OVERFLOW_CALIBRATION_STEPS",
    "REFERENCE_FLOOR_FRACTION",
    "REFERENCE_FROM_FRACTION",
    "REFERENCE_TOLERANCE",
    "SETTLED_FRACTION",
    "SMOOTHING_ALPHA",
    "TARGET_BAND",
    "RunningEMA",
    "StabilityVerdict",
    "TargetBasis",
    "TargetCrossing",
    "agrees_with_reference",
    "baseline_target",
    "compared_steps",
    "diverged",
    "is_decreasing",
    "is_finite",
    "late_gain",
    "lowest_reached",
    "overflow_rate",
    "reference_gap",
    "settled",
    "smooth",
    "steps_to_target",
    "target_basis",
    "verdict",
]

# EMA weight of the newest loss. The EMA averages over ~2/alpha - 1 = 19 steps: enough to
# damp the batch-to-batch noise of small batches (noise std / ~4.4), short enough to follow
# a trial of a few dozen to a few hundred steps.
SMOOTHING_ALPHA = 0.1

# is_decreasing compares the mean of the first and of the last fifth of the curve: a window
# of n/5 steps cuts per-step noise by sqrt(n/5) (4.5x at 100 steps) while both windows stay
# clearly apart in time, so a real trend dominates.
DECREASE_WINDOW_FRACTION = 0.2
# ... and the last window's mean must be at least 1% below the first's: a curve that moves
# less than that over a whole trial is not training (LR far too small, or stuck), and a flat
# noisy curve's window means differ by less.
MIN_RELATIVE_DECREASE = 0.01

# diverged: the smoothed loss climbed more than 50% above its running minimum. Healthy
# runs wobble a few percent after smoothing (and LR warmup bumps are smaller); a rise of
# half the best loss is a run going the wrong way, as when the LR is too large. (LR range
# tests stop at 4x the minimum; during training we want to catch it much earlier.)
DIVERGENCE_RISE = 0.5
# ... measured against max(|running min|, 10% of the first smoothed loss), so a loss
# converging towards 0 (a memorised tiny dataset) does not turn its noise into a "rise":
# mlp_digits at lr 1e-3 wobbles from 0.13 to 0.20 near the end of a 220-step run (CI saw
# its baseline called diverged with a 1% floor), while a real divergence at that level
# climbs back by a large part of the starting loss.
DIVERGENCE_FLOOR_FRACTION = 0.1
# ... and against DIVERGENCE_NOISE per-step loss deviations (step_noise) of the curve up to
# its minimum, so a loss near zero with heavy-tailed batches does not turn one stretch of
# hard batches into a "rise" (a TransformerEncoder classifier's baseline near 0.05 was
# refused as diverged that way; tests/test_stability.py's curves of that shape: 11 of 40
# under the 50% rule alone). On flat noise the zero-lag curve climbs above its running
# minimum by up to 1.5 deviations (white) and 2.1 (heavy-tailed) over 3,000 steps
# (`python scripts/divergence_noise.py`); a climb back toward the start is many more.
DIVERGENCE_NOISE = 2.0
# ... measured over the NOISE_WINDOW steps up to the minimum (five times the smoothing's
# reach: the noise at the minimum's loss level, not the steep start's, where a loss far
# above it scatters more), and only where they are at least MIN_NOISE_STEPS: fewer say
# little about the batches' noise (and a run unstable from its first step has no calm part).
NOISE_WINDOW = 50
MIN_NOISE_STEPS = 20

# agrees_with_reference: the mean relative gap between the smoothed reduced-precision
# curve and the smoothed fp32 curve may be at most 5%. Mixed-precision runs track fp32
# within about run-to-run noise (1-2% after smoothing; Micikevicius et al. 2018), while a
# precision that stalls (fp16 underflow, bf16 weights rounding away small updates) falls
# behind by far more than 5% over a trial.
REFERENCE_TOLERANCE = 0.05
# ... over the second half of the steps both curves share. Early on the loss falls steeply,
# where a shift of a step or two (fp16's GradScaler skips its first steps while it
# calibrates) is a large relative gap that says nothing about the precision; the second half
# is where a precision that stalls separates from fp32.
REFERENCE_FROM_FRACTION = 0.5
# ... each step's gap relative to |fp32's smoothed loss|, but never to less than this share
# of fp32's smoothed drop (its start less its minimum): a loss that falls through zero (a
# Gaussian NLL from 0.6 to -2) or ends near it makes |loss| tiny, and any gap a huge
# "disagreement". 5% of the drop binds only there: cross-entropy falling from 2.3 is
# compared relative to itself down to a loss of about 0.1.
REFERENCE_FLOOR_FRACTION = 0.05
# ... and, given the target, only over the steps up to where the reduced-precision curve
# reached it: those are the steps its time to target rests on. Past the target the loss is
# below anything the baseline reached and the curves are two runs' batch noise, where any
# numerical difference separates them: cnn_digits' bf16 micro 64 (lr 1.4-1.6e-2, AVX512-BF16
# CPU) agreed with fp32 within 0.8-2.8% up to its crossing (step 58-60), then 3.5-10% by 15
# steps past it with bf16 ahead as often as behind, and an fp32 run with its LR changed by
# 0.1% was 2.5-9.6% from fp32 there; the search's verdict on the same config flipped with
# how far past the target its trial had run. A precision that stalls above the target is
# still caught: its curve flattens before it gets there (or never does).

# fp16: GradScaler starts at scale 2**16 and halves it on each overflow, skipping that step;
# up to 16 halvings (2**16 -> 1) are calibration, not instability, and are not counted ...
OVERFLOW_CALIBRATION_STEPS = 16
# ... beyond them at most 5% of the steps may be skipped: a healthy run overflows about once
# per growth_interval (2000 steps); skipping 1 step in 20 loses more updates than separates
# close configurations, and means the gradients keep hitting fp16's range (65504).
MAX_OVERFLOW_RATE = 0.05

# baseline_target: the loss the baseline reaches in its run (MLPerf's quality target) plus
# a band of 2% of its improvement, or two noise deviations of the smoothed curve when those
# are wider. Without a band the baseline's own time to target would be set by the lucky
# dip of its last steps; with it, a curve that went flat early (a plateau) gets its target
# where the plateau begins, not at a level only noise reaches. Much more than 2% would put
# the target on the curve's steep start, where time to target measures step time alone.
TARGET_BAND = 0.02

# steps_to_target: a crossing counts only once this many steps follow it. Near a curve's
# end the backward pass of the zero-lag smoothing has no data, so the smoothed value is
# the forward EMA of the last few losses, and one lucky dip there crosses the target. A
# run stopped at that crossing keeps the dip: measured on tiny_gpt at batch 4, a trial
# "reached" its target at step 58 of 59 on two low batches, and the same config re-run
# longer never crossed there. 10 = 1/SMOOTHING_ALPHA, the backward EMA's reach.
TARGET_SUPPORT_STEPS = 10

# settled: a curve whose second half took its smoothed loss lower than its first half had
# by less than this share of its whole drop has levelled off. Training on moves the target
# (its lowest plus TARGET_BAND of its drop) by about as little: half the band. mlp_digits'
# baseline crossed its target at step 753 of the 5000 steps it ran, at 1 ms a step.
SETTLED_FRACTION = TARGET_BAND / 2


# drop_in_noise: a target less than this many per-step loss deviations below the start of
# a curve's trend is a level that a lucky stretch of batches reaches: on a GRU text
# classifier whose baseline barely fell in its budget's share, a batch-8 trial crossed its
# target in a few lucky batches and its curve rose after, and every confirmation pair (the
# same seed, the same batches) "confirmed" it. The trials of tasks that train (the
# examples, and the dogfood tasks that trained) sit well above 1.
MIN_DROP_IN_NOISE = 1.0


class StabilityVerdict(BaseModel):
    """Whether a loss curve is stable, and why: the failed checks (or, when stable, the
    evidence of each passed check), each a sentence with its numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stable: bool
    reasons: list[str] = Field(min_length=1)


class RunningEMA:
    """:func:`smooth` one value at a time: ``update(x)`` returns the smoothed value at x."""

    def __init__(self, alpha: float = SMOOTHING_ALPHA) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], but got {alpha}.")
        self.alpha, self.ema, self.keep = alpha, 0.0, 1.0

    def update(self, x: float) -> float:
        self.ema = (1 - self.alpha) * self.ema + self.alpha * x
        self.keep *= 1 - self.alpha
        return self.ema / (1 - self.keep)


def smooth(losses: Sequence[float], alpha: float = SMOOTHING_ALPHA) -> list[float]:
    """The bias-corrected exponential moving average of ``losses`` (as Adam's moments).

    ``ema_k = (1 - alpha) ema_{k-1} + alpha x_k`` from ``ema_{-1} = 0``, divided by
    ``1 - (1 - alpha)^(k+1)``: the first value is ``losses[0]`` itself, not dragged towards
    zero. A NaN or inf propagates to every later value.
    """
    ema = RunningEMA(alpha)
    return [ema.update(x) for x in losses]


def _zero_lag(losses: Sequence[float], alpha: float) -> list[float]:
    """The EMA run forward then backward (scipy's filtfilt idea): no lag on a trend."""
    return smooth(smooth(losses, alpha)[::-1], alpha)[::-1]


def is_finite(losses: Sequence[float]) -> bool:
    """Whether every loss is a finite number (no NaN, no inf)."""
    return all(math.isfinite(x) for x in losses)


def _first_non_finite(losses: Sequence[float]) -> int | None:
    return next((k for k, x in enumerate(losses) if not math.isfinite(x)), None)


def _window_means(losses: Sequence[float], window_fraction: float) -> tuple[int, float, float]:
    window = max(1, round(len(losses) * window_fraction))
    first = math.fsum(losses[:window]) / window
    last = math.fsum(losses[-window:]) / window
    return window, first, last


def _relative_drop(first: float, last: float) -> float:
    if first == 0:
        return 0.0 if last == 0 else -math.copysign(math.inf, last)
    return (first - last) / abs(first)


def is_decreasing(
    losses: Sequence[float],
    window_fraction: float = DECREASE_WINDOW_FRACTION,
    min_decrease: float = MIN_RELATIVE_DECREASE,
) -> bool:
    """Whether the mean of the last window is at least ``min_decrease`` below the first's.

    Windows are ``window_fraction`` of the curve (at least one step). Window means, not
    single steps, so noise cannot fake or hide a trend. False for fewer than 2 losses
    (no trend to see) and for a non-finite curve.
    """
    if len(losses) < 2 or not is_finite(losses):
        return False
    _, first, last = _window_means(losses, window_fraction)
    return _relative_drop(first, last) >= min_decrease


def _divergence(
    losses: Sequence[float], alpha: float, rise: float
) -> tuple[int, float, int, float] | None:
    """The first (step, smoothed loss, step of running min, running min) that rose too far.

    Smoothed forward and backward (the zero-lag EMA that steps_to_target uses), not forward
    only: a bias-corrected forward EMA averages just k+1 losses at step k, so a lucky first
    batch sets a running minimum that ordinary batches then "rise" far above. A streaming
    regression task's own baseline config (batch 32, AdamW at 1e-3) was called diverged at
    step 1 that way: losses 16.5, 35.5, 39.9, 31.4, ... around a mean of 32, forward EMA
    16.5 then 26.5 (+60%); the zero-lag curve starts near that mean, its backward pass
    averaging the first loss with those after it (tests/test_stability.py has the run). At
    the curve's end the backward pass has nothing to add, so a run that climbs away in its
    last steps is judged there exactly as before.
    """
    smoothed = _zero_lag(losses, alpha)
    if not smoothed:
        return None
    floor = DIVERGENCE_FLOOR_FRACTION * abs(smoothed[0])
    best, best_at = smoothed[0], 0
    for k, value in enumerate(smoothed):
        if value < best:
            best, best_at = value, k
        elif value - best > rise * max(abs(best), floor) and value - best > _noise_allowance(
            losses, best_at, alpha
        ):
            return k, value, best_at, best
    return None


def _noise_allowance(losses: Sequence[float], best_at: int, alpha: float) -> float:
    """How far noise alone lifts the smoothed curve above its minimum at ``best_at``:
    DIVERGENCE_NOISE step deviations of the NOISE_WINDOW steps up to it (the batches' noise
    at that loss, not the steep start's); 0 with fewer than MIN_NOISE_STEPS there."""
    calm = losses[max(0, best_at + 1 - NOISE_WINDOW) : best_at + 1]
    return DIVERGENCE_NOISE * step_noise(calm, alpha) if len(calm) >= MIN_NOISE_STEPS else 0.0


def diverged(
    losses: Sequence[float], alpha: float = SMOOTHING_ALPHA, rise: float = DIVERGENCE_RISE
) -> bool:
    """Whether the curve diverged: a NaN/inf, or the smoothed loss rose more than ``rise``
    (a fraction, default 50%) above its running minimum at any step.

    Smoothed (zero-lag, see :func:`_divergence`), so one noisy batch is not a divergence,
    not even the first; against the running minimum, so a curve that first dips and then
    climbs away is caught, not only one that never fell.
    """
    if not is_finite(losses):
        return True
    return _divergence(losses, alpha, rise) is not None


def reference_gap(
    losses: Sequence[float], reference: Sequence[float], alpha: float = SMOOTHING_ALPHA
) -> float:
    """Mean relative gap ``|s - r| / max(|r|, floor)`` of the smoothed curves over the
    second half of their common steps (REFERENCE_FROM_FRACTION); ``floor`` is
    REFERENCE_FLOOR_FRACTION of the reference's smoothed drop. ``inf`` when either curve
    is not finite or they share no step.
    """
    common = min(len(losses), len(reference))
    if common == 0 or not (is_finite(losses[:common]) and is_finite(reference[:common])):
        return math.inf
    ours = smooth(losses[:common], alpha)
    theirs = smooth(reference[:common], alpha)
    start = min(int(common * REFERENCE_FROM_FRACTION), common - 1)
    floor = REFERENCE_FLOOR_FRACTION * max(theirs[0] - min(theirs), 0.0)
    gaps = [
        abs(s - r) / scale if (scale := max(abs(r), floor)) > 0 else (0.0 if s == r else math.inf)
        for s, r in zip(ours[start:], theirs[start:], strict=True)
    ]
    return math.fsum(gaps) / len(gaps)


def agrees_with_reference(
    losses: Sequence[float],
    reference: Sequence[float],
    tolerance: float = REFERENCE_TOLERANCE,
    alpha: float = SMOOTHING_ALPHA,
) -> bool:
    """Whether a reduced-precision curve tracks the fp32 ``reference`` within ``tolerance``.

    Both curves are smoothed and compared step by step over the steps they share (the
    second half of them, see REFERENCE_FROM_FRACTION); their mean relative gap must be at
    most ``tolerance`` (default 5%: REFERENCE_TOLERANCE).
    """
    return reference_gap(losses, reference, alpha) <= tolerance


def overflow_rate(skipped_steps: int, steps: int) -> float:
    """The share of optimizer steps fp16's GradScaler skipped for inf/NaN gradients."""
    if steps < 1 or not 0 <= skipped_steps <= steps:
        raise ValueError(
            f"overflow_rate needs steps >= 1 and 0 <= skipped_steps <= steps, but got "
            f"skipped_steps={skipped_steps}, steps={steps}."
        )
    return skipped_steps / steps


def steps_to_target(
    losses: Sequence[float],
    target: float,
    alpha: float = SMOOTHING_ALPHA,
    support: int = TARGET_SUPPORT_STEPS,
) -> int | None:
    """The first step (index into ``losses``) at which the smoothed loss is <= ``target``.

    Time to target must not be won by one lucky batch: a noisy curve dips below the target
    long before its trend gets there, and the raw minimum would reward the noisiest
    configuration (small batches, high LR). So the curve is smoothed first, and one dip of
    depth ``d`` moves it by only about ``alpha/2 x d``.

    The smoothing is the bias-corrected EMA (:func:`smooth`) run forward and then backward:
    a forward-only EMA lags a falling curve by ``(1 - alpha)/alpha`` = 9 steps, which would
    charge every configuration 9 steps of its own step time and so penalise the ones with
    few, slow steps (large global batches). The two passes cancel the lag on a trend. At the
    very end of the curve only the forward pass has data, and a dip in the last few losses
    moves it: so the first crossing counts only when ``support`` steps follow it, and until
    they have run the target is not reached yet (:data:`TARGET_SUPPORT_STEPS`). ``None``:
    not reached (or a non-finite curve).
    """
    if not losses or not is_finite(losses):
        return None
    for k, value in enumerate(_zero_lag(losses, alpha)):
        if value <= target:
            return k if len(losses) - 1 - k >= support else None
    return None


def step_noise(losses: Sequence[float], alpha: float = SMOOTHING_ALPHA) -> float:
    """The per-step deviation of ``losses`` around their zero-lag trend (the RMS residual):
    how far one batch's loss scatters from where training is. 0 for an empty curve."""
    if not losses:
        return 0.0
    residuals = [x - t for x, t in zip(losses, _zero_lag(losses, alpha), strict=True)]
    return math.sqrt(math.fsum(r * r for r in residuals) / len(losses))


def drop_in_noise(losses: Sequence[float], target: float, alpha: float = SMOOTHING_ALPHA) -> float:
    """How far ``target`` lies below the start of the curve's trend, in :func:`step_noise`
    units; ``inf`` for a noiseless curve. Below :data:`MIN_DROP_IN_NOISE`, reaching
    ``target`` says more about a lucky stretch of batches than about training."""
    noise = step_noise(losses, alpha)
    drop = _zero_lag(losses, alpha)[0] - target
    return drop / noise if noise > 0 else math.inf


def lowest_reached(
    losses: Sequence[float], alpha: float = SMOOTHING_ALPHA, support: int = TARGET_SUPPORT_STEPS
) -> float | None:
    """The lowest target ``losses`` reach: :func:`steps_to_target` finds a crossing exactly
    for the targets at or above it (the zero-lag smoothed curve's minimum over the steps
    with ``support`` steps after them). None for a curve too short or not finite."""
    if len(losses) <= support or not is_finite(losses):
        return None
    return min(_zero_lag(losses, alpha)[: len(losses) - support])


class TargetCrossing:
    """:func:`steps_to_target` on a curve that grows one loss at a time, cheaply.

    :meth:`update` appends a loss and says whether the curve so far has reached the target
    (its zero-lag smoothed loss at it, with TARGET_SUPPORT_STEPS after the crossing). That
    smoothing costs a pass over every loss, so it is only evaluated where it can have
    crossed: while the forward EMA (which must have been at the target somewhere after the
    crossing) was at the target in the last ``NEAR_STEPS`` steps, and every ``NEAR_STEPS``
    steps otherwise once it ever was. The search's watch and the trial worker both run one,
    so a worker that ends its own run at the target ends it where the search would stop it.
    """

    NEAR_STEPS = 2 * TARGET_SUPPORT_STEPS

    def __init__(self, target: float) -> None:
        self.target = target
        self.losses: list[float] = []
        self.smoothed = math.nan  # the forward EMA at the latest loss
        self._ema = RunningEMA()
        self._last_below: int | None = None  # the latest step the forward EMA was at the target

    def update(self, loss: float) -> bool:
        """Append ``loss``; True where the curve so far has reached the target."""
        self.losses.append(loss)
        self.smoothed = self._ema.update(loss)
        if self.smoothed <= self.target:
            self._last_below = len(self.losses)
        return self._worth_checking() and steps_to_target(self.losses, self.target) is not None

    def _worth_checking(self) -> bool:
        if self._last_below is None:
            return False
        since = len(self.losses) - self._last_below
        return since <= self.NEAR_STEPS or since % self.NEAR_STEPS == 0


class TargetBasis(NamedTuple):
    """What a baseline's target is made of (:func:`target_basis`)."""

    start: float  # the zero-lag smoothed curve's first value
    lowest: float  # its lowest supported value
    band: float  # the target's height above ``lowest``
    by_noise: bool  # the band is two noise deviations, not TARGET_BAND x the drop

    @property
    def target(self) -> float:
        return self.lowest + self.band


def baseline_target(losses: Sequence[float], alpha: float = SMOOTHING_ALPHA) -> float:
    """The target loss a baseline run sets: the lowest level of its zero-lag smoothed
    curve plus the larger of ``TARGET_BAND`` x its improvement and two standard deviations
    of the smoothed curve's noise. The baseline itself reaches it (a curve longer than
    TARGET_SUPPORT_STEPS).

    Raises ValueError for an empty or non-finite curve: it sets no target.
    """
    return target_basis(losses, alpha).target


def target_basis(losses: Sequence[float], alpha: float = SMOOTHING_ALPHA) -> TargetBasis:
    """:func:`baseline_target`'s parts, to say where the target lies on the curve.

    Raises ValueError for an empty or non-finite curve: it sets no target.
    """
    if not losses or not is_finite(losses):
        raise ValueError("a target needs a finite, non-empty baseline loss curve.")
    trend = _zero_lag(losses, alpha)
    # the lowest level where steps_to_target has support: so the baseline reaches it
    supported = len(losses) - TARGET_SUPPORT_STEPS
    lowest = min(trend[:supported] if supported > 0 else trend)
    improvement = max(0.0, trend[0] - lowest)
    tail = range(len(losses) // 2, len(losses))
    residual = [losses[k] - trend[k] for k in tail]
    spread = math.sqrt(sum(r * r for r in residual) / max(1, len(residual)))
    noise = spread * math.sqrt(alpha / (2 - alpha))  # std of an EMA over white noise
    by_drop = TARGET_BAND * improvement
    return TargetBasis(trend[0], lowest, max(by_drop, 2 * noise), 2 * noise > by_drop)


def late_gain(losses: Sequence[float], alpha: float = SMOOTHING_ALPHA) -> float:
    """How far a curve is from bending: its zero-lag smoothed improvement over its second
    half as a fraction of that over its first half (inf when the first half gained
    nothing). A curve past its first drop gains far less late than early: baselines of
    tiny_gpt (43-71 steps), mlp_digits and cnn_digits measured 0.00-0.29, hf_gpt2's 50
    steps 0.27 and lstm_text's 84 steps 0.11 (their suite baselines); a straight line
    about 1 (0.86 over 40 steps, the smoothing rounds its ends), and mlp_digits cut to 30
    steps by a busy host 1.18."""
    trend = _zero_lag(losses, alpha)
    half = len(trend) // 2
    early, late = trend[0] - trend[half], trend[half] - trend[-1]
    return late / early if early > 0 else math.inf


def settled(losses: Sequence[float], alpha: float = SMOOTHING_ALPHA) -> bool:
    """Whether a curve has levelled off: the target it sets (:func:`target_basis`) is
    reached within its first half, and its second half lowered its smoothed loss below the
    first half's lowest by at most SETTLED_FRACTION of its whole drop. A baseline that
    settled sets about the target it would set trained on. False for a non-finite curve;
    a flat one has settled too (a baseline that does not train is refused after)."""
    if len(losses) < 2 * TARGET_SUPPORT_STEPS or not is_finite(losses):
        return False
    trend, half = _zero_lag(losses, alpha), len(losses) // 2
    whole = trend[0] - min(trend)
    late = min(trend[:half]) - min(trend[half:])
    if late > SETTLED_FRACTION * whole:
        return False
    crossed = steps_to_target(losses, target_basis(losses, alpha).target, alpha)
    return crossed is not None and crossed < half


# One check's outcome: whether it passed, and the evidence either way.
_Check = tuple[bool, str]


def verdict(
    losses: Sequence[float],
    reference: Sequence[float] | None = None,
    overflow_steps: int | None = None,
    target: float | None = None,
) -> StabilityVerdict:
    """The stability verdict on one run: finite, not diverged, decreasing, and when given,
    within REFERENCE_TOLERANCE of the fp32 ``reference`` curve and under MAX_OVERFLOW_RATE
    of skipped fp16 steps (``overflow_steps`` of ``len(losses)``). With a ``target`` loss,
    the curves are compared up to the step at which ``losses`` reached it (all its steps
    where it did not; see REFERENCE_FROM_FRACTION's note).

    ``reasons`` holds the failed checks when unstable, else the evidence of each check.
    """
    n = len(losses)
    if n == 0:
        return StabilityVerdict(stable=False, reasons=["no losses were recorded"])
    bad = _first_non_finite(losses)
    if bad is not None:
        return StabilityVerdict(
            stable=False,
            reasons=[f"loss is {losses[bad]} at step {bad} of {n}: the run is not finite"],
        )
    checks: list[_Check] = [(True, f"all {n} losses are finite")]
    checks += [_divergence_check(losses), _decrease_check(losses)]
    if reference is not None:
        checks.append(_reference_check(losses, reference, target))
    if overflow_steps is not None:
        checks.append(_overflow_check(overflow_steps, n))
    failed = [reason for ok, reason in checks if not ok]
    if failed:
        return StabilityVerdict(stable=False, reasons=failed)
    return StabilityVerdict(stable=True, reasons=[reason for _, reason in checks])


def _divergence_check(losses: Sequence[float]) -> _Check:
    found = _divergence(losses, SMOOTHING_ALPHA, DIVERGENCE_RISE)
    if found is None:
        return True, (
            f"no divergence: smoothed loss never rose {DIVERGENCE_RISE:.0%} above its minimum "
            f"and {DIVERGENCE_NOISE:g} deviations of its batches' noise"
        )
    step, value, best_at, best = found
    return False, (
        f"diverged: smoothed loss rose to {value:.4g} at step {step}, "
        f"{_pct((value - best) / abs(best)) if best else 'far'} above its minimum "
        f"{best:.4g} at step {best_at} (limit {DIVERGENCE_RISE:.0%})"
    )


def _decrease_check(losses: Sequence[float]) -> _Check:
    if len(losses) < 2:
        return False, "only 1 loss recorded: cannot tell whether it decreases"
    window, first, last = _window_means(losses, DECREASE_WINDOW_FRACTION)
    drop = _relative_drop(first, last)
    # A percentage of a loss at or below zero (a Gaussian NLL) reads as nonsense: -1281%.
    change = _pct(0.0 - drop) if first > 0 and last >= 0 else f"{last - first:+.4g}"
    trend = (
        f"mean loss of the first {window} steps {first:.4g}, of the last {window} "
        f"{last:.4g} ({change})"
    )
    if drop >= MIN_RELATIVE_DECREASE:
        return True, f"decreasing: {trend}"
    return False, f"not decreasing: {trend}; needs a drop of at least {MIN_RELATIVE_DECREASE:.0%}"


def compared_steps(losses: Sequence[float], target: float | None) -> int:
    """How many of ``losses`` the fp32 comparison covers: up to where they reached
    ``target``, or all of them where they did not (or no target is given)."""
    reached = None if target is None else steps_to_target(losses, target)
    return len(losses) if reached is None else reached + 1


def _compared_steps(losses: Sequence[float], target: float | None) -> tuple[int, str]:
    """:func:`compared_steps`, and why that many."""
    steps = compared_steps(losses, target)
    return steps, "" if steps == len(
        losses
    ) else f", up to where it reached the target {target:.4g}"


def _reference_check(
    losses: Sequence[float], reference: Sequence[float], target: float | None
) -> _Check:
    steps, why = _compared_steps(losses, target)
    common = min(steps, len(reference))
    if common == 0:
        return False, "the fp32 reference curve is empty: cannot compare"
    if not is_finite(reference[:common]):
        return False, "the fp32 reference curve is not finite: cannot compare"
    gap = reference_gap(losses[:steps], reference)
    start = min(int(common * REFERENCE_FROM_FRACTION), common - 1)
    compared = f"over steps {start}-{common - 1}{why}"
    if gap <= REFERENCE_TOLERANCE:
        return True, (
            f"agrees with fp32: mean gap {gap:.2%} {compared} (tolerance {REFERENCE_TOLERANCE:.0%})"
        )
    return False, (
        f"disagrees with fp32: smoothed loss is {gap:.2%} away on average {compared}, "
        f"above the {REFERENCE_TOLERANCE:.0%} tolerance"
    )


def _overflow_check(skipped: int, steps: int) -> _Check:
    rate = overflow_rate(skipped, steps)
    excess = overflow_rate(max(0, skipped - OVERFLOW_CALIBRATION_STEPS), steps)
    summary = f"GradScaler skipped {skipped} of {steps} steps ({rate:.1%})"
    if excess <= MAX_OVERFLOW_RATE:
        return True, f"fp16 overflow rate ok: {summary}"
    return False, (
        f"fp16 overflows: {summary}; {excess:.1%} beyond the first "
        f"{OVERFLOW_CALIBRATION_STEPS} calibration skips, above the "
        f"{MAX_OVERFLOW_RATE:.0%} limit"
    )


def _pct(fraction: float) -> str:
    return f"{fraction:+.1%}" if math.isfinite(fraction) else "inf"
