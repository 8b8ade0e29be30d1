"""Precision viability: pure rules, first from the hardware's peaks, then from the model.

A reduced precision exists to be faster (and smaller). It is ruled out in two steps:

1. Cheaply, before any model run (:func:`hardware_verdict`): the device lacks the dtype,
   or the dtype's measured matmul peak is far below fp32's (fp16 on most CPUs runs
   8-40x slower: running the model in it would only burn probe time; an Intel Xeon with
   AVX512-FP16 measured it at 1.0x fp32's, so there it goes on to step 2).
2. On the model (:func:`speed_verdict`): its measured samples/s against 32-true at the
   same batch sizes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from autotune.config import Precision
from autotune.hardware import HardwareInfo, peak_key

__all__ = [
    "MIN_PEAK_RATIO",
    "MIN_SPEED_RATIO",
    "REFERENCE_PRECISION",
    "Verdict",
    "hardware_verdict",
    "speed_ratio",
    "speed_ratios",
    "speed_verdict",
]

REFERENCE_PRECISION: Precision = "32-true"
# Below half of fp32's samples/s at every probed batch a precision cannot win the throughput
# search: the memory it saves buys a larger batch, and a larger batch does not double
# samples/s. Slower variants within 2x stay in, for the search to weigh memory. The floor
# is held against the best batch, not the median: a reduced precision's per-op cast cost
# weighs most at small batches, so its ratio moves with batch. mlp_digits' bf16-mixed
# measured 0.49-0.72x (median over batches 8-32) in five probes on one host, and 0.98x at
# batch 8 in the probe whose median ruled it out, yet it ran at 1.18x fp32 at micro 256
# and won the search.
MIN_SPEED_RATIO = 0.5
# A dtype whose matmul peak is under a quarter of fp32's is not even run on the model:
# matmuls dominate a training step, so it would land far under MIN_SPEED_RATIO (fp16 on
# CPU measures 0.02-0.1x). A quarter, not a half, leaves a margin for models that are not
# matmul-bound, whose speed the peak does not predict; the model run decides those.
MIN_PEAK_RATIO = 0.25

_DTYPE_OF: dict[str, str] = {"bf16-mixed": "bf16", "bf16-true": "bf16", "16-mixed": "fp16"}


@dataclass(frozen=True)
class Verdict:
    """Whether a precision is viable, and why (a sentence with the numbers)."""

    viable: bool
    reason: str


def hardware_verdict(precision: Precision, hardware: HardwareInfo) -> Verdict:
    """Rule out ``precision`` from the hardware alone: no dtype, or a far-too-slow peak.

    A viable verdict here is provisional: :func:`speed_verdict` confirms it on the model.
    """
    if precision == REFERENCE_PRECISION:
        return Verdict(True, "32-true is the reference precision every other is compared to")
    dtype = _DTYPE_OF[precision]
    supported = hardware.bf16_supported if dtype == "bf16" else hardware.fp16_supported
    key = peak_key(precision, hardware.device.kind)
    peak = hardware.peak_flops.get(key)
    if not supported or peak is None:
        return Verdict(False, f"{hardware.device.name} has no {dtype} matmul")
    reference = hardware.peak_flops[peak_key(REFERENCE_PRECISION, hardware.device.kind)]
    ratio = peak / reference
    summary = (
        f"{key} matmul peak {_gflops(peak)} is {ratio:.2g}x {_gflops(reference)} of "
        f"{REFERENCE_PRECISION}"
    )
    if ratio < MIN_PEAK_RATIO:
        return Verdict(False, f"{summary}, below {MIN_PEAK_RATIO}x: not run on the model")
    return Verdict(True, f"{summary}; to be confirmed on the model")


def failure_verdict(precision: Precision, error: Exception) -> Verdict:
    """Rule out ``precision`` where the model's run raised in it but not in the reference:
    a kernel this device lacks for its dtype (oneDNN's LSTM in fp16, on a CPU whose fp16
    matmul is fast), not an error in the task, which the reference run would have raised."""
    return Verdict(
        False,
        f"the model does not run in {precision} here, where {REFERENCE_PRECISION} does: {error}",
    )


def speed_ratios(
    samples_per_s: dict[int, float], reference_samples_per_s: dict[int, float]
) -> dict[int, float]:
    """Samples/s over the reference's at each batch size both were measured at.

    Raises ``ValueError`` when they share no batch size.
    """
    common = sorted(set(samples_per_s) & set(reference_samples_per_s))
    if not common:
        raise ValueError(
            f"speed ratios need a batch size measured in both, but got batches "
            f"{sorted(samples_per_s)} and {sorted(reference_samples_per_s)}."
        )
    return {b: samples_per_s[b] / reference_samples_per_s[b] for b in common}


def speed_ratio(
    samples_per_s: dict[int, float], reference_samples_per_s: dict[int, float]
) -> float:
    """Median over the batch sizes both were measured at of samples/s over the reference's:
    the typical ratio, which shrugs off one batch disturbed by other load.

    Raises ``ValueError`` when they share no batch size.
    """
    return statistics.median(speed_ratios(samples_per_s, reference_samples_per_s).values())


def speed_verdict(precision: Precision, ratios: dict[int, float]) -> Verdict:
    """Viable when ``precision`` reached MIN_SPEED_RATIO of 32-true's samples/s at one
    batch size or more of ``ratios`` (see MIN_SPEED_RATIO's note on why not the median).

    Raises ``ValueError`` when ``ratios`` is empty.
    """
    if not ratios:
        raise ValueError("a speed verdict needs the ratio at one batch size or more.")
    best = max(ratios, key=lambda b: ratios[b])
    ran = (
        f"{precision} ran at {statistics.median(ratios.values()):.2f}x the samples/s of "
        f"{REFERENCE_PRECISION} on this model (median over batches "
        f"{', '.join(map(str, ratios))}; best {ratios[best]:.2f}x at batch {best})"
    )
    if ratios[best] < MIN_SPEED_RATIO:
        return Verdict(False, f"{ran}, below the {MIN_SPEED_RATIO}x floor at every batch")
    return Verdict(True, ran)


def _gflops(flops: float) -> str:
    return f"{flops / 1e9:.3g} GFLOP/s"
