"""Pure math of the probe: straight-line fits and the simple noise scale estimator."""

from __future__ import annotations

import math
from collections.abc import Sequence

from autotune.profiler._schema import LinearFit, NoiseScale

__all__ = ["fit_line", "simple_noise_scale"]


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> LinearFit:
    """Least-squares ``y = intercept + slope * x`` with both coefficients kept >= 0.

    Memory and step time cannot shrink with batch size nor be negative at batch 0, so a
    negative coefficient (timing noise) is clamped to 0 and the other refitted alone:
    a line through the origin when the intercept would be negative, the mean when the
    slope would be. Needs at least two distinct ``xs`` and finite ``ys`` >= 0.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys must have the same length, but got {len(xs)} and {len(ys)}.")
    if len(set(xs)) < 2:
        raise ValueError(f"a line needs at least two distinct x values, but got {list(xs)}.")
    if not all(math.isfinite(y) and y >= 0 for y in ys):
        raise ValueError(f"ys must be finite and >= 0, but got {list(ys)}.")
    intercept, slope = _least_squares(xs, ys)
    if intercept < 0:  # through the origin
        sxy = sum(x * y for x, y in zip(xs, ys, strict=True))
        intercept, slope = 0.0, sxy / sum(x * x for x in xs)
    if slope < 0:
        intercept, slope = sum(ys) / len(ys), 0.0
    errors = [abs(intercept + slope * x - y) / y for x, y in zip(xs, ys, strict=True) if y > 0]
    return LinearFit(intercept=intercept, slope=slope, max_relative_error=max(errors, default=0.0))


def _least_squares(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    return mean_y - slope * mean_x, slope


def simple_noise_scale(
    small_batch: int,
    big_batch: int,
    grad_sq_small: float,
    grad_sq_big: float,
    big_batches: int = 1,
) -> NoiseScale:
    """B_simple = tr(Sigma) / |G|^2 from mean squared gradient norms at two batch sizes.

    McCandlish et al. 2018, appendix A.1: with E|G_B|^2 = |G|^2 + tr(Sigma)/B,

        |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
        tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

    Both are unbiased but noisy. When the |G|^2 estimate is <= 0 (noise swamps the
    signal: B_simple is far above B_big) or tr(Sigma) <= 0 (no measurable noise: bigger
    batches do not help past B_small), ``b_simple`` is None and ``reason`` says which.
    ``big_batches`` (how many B_big batches were averaged) is recorded, not used.
    """
    _check_noise_inputs(small_batch, big_batch, grad_sq_small, grad_sq_big, big_batches)
    true_sq = (big_batch * grad_sq_big - small_batch * grad_sq_small) / (big_batch - small_batch)
    trace = (grad_sq_small - grad_sq_big) / (1 / small_batch - 1 / big_batch)
    b_simple, reason = _interpret(true_sq, trace, small_batch, big_batch)
    return NoiseScale(
        b_simple=b_simple,
        reason=reason,
        small_batch=small_batch,
        big_batch=big_batch,
        big_batches=big_batches,
        grad_sq_small=grad_sq_small,
        grad_sq_big=grad_sq_big,
        true_grad_sq=true_sq,
        trace_sigma=trace,
    )


def _check_noise_inputs(
    small_batch: int, big_batch: int, grad_sq_small: float, grad_sq_big: float, big_batches: int
) -> None:
    if not 1 <= small_batch < big_batch:
        raise ValueError(
            f"the noise scale needs 1 <= small_batch < big_batch, but got "
            f"small_batch={small_batch}, big_batch={big_batch}."
        )
    for name, value in (("grad_sq_small", grad_sq_small), ("grad_sq_big", grad_sq_big)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite squared norm >= 0, but got {value}.")
    if big_batches < 1:
        raise ValueError(f"big_batches must be >= 1, but got {big_batches}.")


def _interpret(
    true_sq: float, trace: float, small_batch: int, big_batch: int
) -> tuple[float | None, str]:
    if true_sq <= 0:
        return None, (
            f"degenerate: the |G|^2 estimate is {true_sq:.3g} <= 0, so gradient noise swamps "
            f"the signal at batches {small_batch} and {big_batch}; B_simple is likely far "
            f"above {big_batch}: estimate it with a larger big batch or more batches."
        )
    if trace <= 0:
        return None, (
            f"degenerate: the tr(Sigma) estimate is {trace:.3g} <= 0, so batch-{small_batch} "
            f"gradients are no noisier than batch-{big_batch} ones; bigger batches are "
            f"unlikely to pay off past {small_batch}."
        )
    b_simple = trace / true_sq
    return b_simple, (
        f"bigger batches stop paying off beyond about {b_simple:.3g} samples per step "
        f"(estimated from batches {small_batch} and {big_batch}; a lower bound when measured "
        f"at init, since it grows as the loss falls)."
    )
