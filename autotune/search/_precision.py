"""Which precision each measured step runs in.

A systems measurement is one short run in one process, so a reduced precision's speed-up
over 32-true at one micro-batch is a ratio of two noisy numbers. That ratio is not free to
jump from size to size, though: with the step-time model the probe fits in each precision,
``time = fixed + per_sample x batch``, the ratio of two such lines is monotone in the batch
(the derivative of ``time_a / time_b`` has the sign of ``per_sample_a x fixed_b - fixed_a x
per_sample_b`` at every batch): a reduced precision's cast cost weighs most at small
batches and its faster arithmetic at large ones. :func:`settled` fits the measured ratios
of each precision over the micro-batches with a monotone (isotonic) regression in log
space and hands each pair of twins the fitted ratio, so one slow run cannot take a
precision away from one size (or give it one) against what its neighbours show.

Measured on cnn_digits (an AVX512-BF16 AMD host, grid_bench at c7bffff): bf16 over fp32
came out 1.33x at micro 16, 0.98x at 64 and 1.69x at 256, and micro 64 went to fp32,
whose pick reached 69% of the grid's best (bf16 micro 64). Ten interleaved pairs at micro
64 on that host (``python -m benchmarks.systems_noise --large 64 --precisions 32-true
bf16-mixed --rounds 10 --steps 12``, ``systems_noise_cnn_digits_bf16_precisions.txt``) gave
1.18-1.61x, median 1.44x: the 0.98x was one slow spell, which the fit outvotes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autotune.search._systems import precision_free_step
from autotune.search._types import Measured

__all__ = ["PRECISION_MARGIN", "earned_precisions", "monotone_fit", "settled"]

# A reduced precision stands in for 32-true at the same step (micro-batch, accumulation,
# checkpointing, ranks, compile) only when it runs this much faster. A systems measurement
# is one short run in one process, and processes run at levels 5-12% apart
# (scripts/speed_levels.py, AMX host); within that, the precision with no numerical risk
# is the better advice. On mlp_digits (AMX host, 2026-12-06) bf16 micro 256 measured 1.00x
# fp32's samples/s in one search and 1.06x in the next, whose bf16 pick then took 0.17 s
# to the target against the grid's fp32 micro 256, 0.16 s (94%).
PRECISION_MARGIN = 1.10
_FULL = "32-true"


def earned_precisions(systems: Sequence[Measured]) -> list[Measured]:
    """``systems`` (order kept) without each reduced-precision run under PRECISION_MARGIN x
    the samples/s of its 32-true twin (the same step in 32-true); one whose twin was not
    measured stays. Judges the rates as given: pass :func:`settled` runs to judge the
    fitted ratios."""
    full = {precision_free_step(r.train): r.samples_per_s for r in systems if _is_full(r)}

    def earned(run: Measured) -> bool:
        reference = full.get(precision_free_step(run.train))
        if _is_full(run) or reference is None:
            return True
        return run.samples_per_s >= PRECISION_MARGIN * reference

    return [run for run in systems if earned(run)]


def settled(systems: Sequence[Measured]) -> list[Measured]:
    """``systems`` with each reduced-precision run and its 32-true twin re-rated to the
    ratio fitted over every micro-batch where that precision has a twin (:func:`monotone_fit`),
    their geometric mean kept (the fit knows the ratio is off, not which run is); fastest
    first. Runs without a twin keep their rate. Two or fewer sizes are always monotone, so
    nothing changes there."""
    rates = [run.samples_per_s for run in systems]
    proposed: dict[int, list[float]] = {}  # log rates; a 32-true run may twin two precisions
    for pairs in _twin_groups(systems).values():
        pairs.sort(key=lambda p: systems[p[0]].train.micro_batch_size)
        logs = [math.log(rates[r] / rates[f]) for r, f in pairs]
        for (reduced, full), fitted in zip(pairs, monotone_fit(logs), strict=True):
            middle = (math.log(rates[reduced]) + math.log(rates[full])) / 2
            proposed.setdefault(reduced, []).append(middle + fitted / 2)
            proposed.setdefault(full, []).append(middle - fitted / 2)
    for k, logs in proposed.items():
        rates[k] = math.exp(sum(logs) / len(logs))
    copies = [
        run
        if math.isclose(rate, run.samples_per_s, rel_tol=1e-9)
        else run.model_copy(update={"samples_per_s": rate})
        for run, rate in zip(systems, rates, strict=True)
    ]
    return sorted(copies, key=lambda run: -run.samples_per_s)


def monotone_fit(values: Sequence[float]) -> list[float]:
    """The least-squares monotone sequence nearest ``values``: non-decreasing or
    non-increasing, whichever fits closer (pool-adjacent-violators for each)."""
    rising = _pool_adjacent(list(values))
    falling = [-v for v in _pool_adjacent([-v for v in values])]

    def error(fit: list[float]) -> float:
        return sum((f - v) ** 2 for f, v in zip(fit, values, strict=True))

    return rising if error(rising) <= error(falling) else falling


def _pool_adjacent(values: list[float]) -> list[float]:
    """The non-decreasing least-squares fit: adjacent blocks that fall are merged into
    their mean until none does."""
    blocks: list[tuple[float, int]] = []  # (mean, size)
    for value in values:
        blocks.append((value, 1))
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (a, m), (b, n) = blocks[-2], blocks[-1]
            blocks[-2:] = [((a * m + b * n) / (m + n), m + n)]
    return [mean for mean, size in blocks for _ in range(size)]


def _twin_groups(systems: Sequence[Measured]) -> dict[tuple[Any, ...], list[tuple[int, int]]]:
    """Index pairs (reduced run, its 32-true twin), grouped by the reduced precision and
    the step but its micro-batch: each group is one ratio curve over the micro-batches."""
    full = {precision_free_step(r.train): k for k, r in enumerate(systems) if _is_full(r)}
    groups: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for k, run in enumerate(systems):
        twin = full.get(precision_free_step(run.train))
        if _is_full(run) or twin is None:
            continue
        step = precision_free_step(run.train)[1:]  # all but the micro-batch
        groups.setdefault((run.train.precision, *step), []).append((k, twin))
    return groups


def _is_full(run: Measured) -> bool:
    return run.train.precision == _FULL
