"""Measuring a variant: real runs of the one runtime at a few batch sizes, then the fits.

Every run goes through :func:`autotune.runtime.train`, so what the probe measures is what
a trial applies (DESIGN.md, invariant 1). The runtime profiles the second step (the
optimizer state exists by then) for the peak and times the steps after burn-in.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from autotune.config import Precision, TrainConfig, validate_train_config
from autotune.errors import AutotuneError
from autotune.hardware import HardwareInfo, mfu, peak_key
from autotune.profiler._fit import fit_line
from autotune.profiler._schema import BatchProbe, Checkpointing, StepTimeModel, VariantReport
from autotune.runtime import RunOptions, RunSummary, train
from autotune.task import Task

__all__ = [
    "RUN_STEPS",
    "RUN_WARMUP_STEPS",
    "ProbeError",
    "fit_variant",
    "frozen_heap",
    "measure_batch",
    "probe_config",
    "run_options",
]

# Four steps: step 1 is burn-in (allocations, kernel selection), step 2 is profiled for
# memory and not timed, steps 3-4 are timed. Two timed steps is what the 30 s budget
# for tiny_gpt's whole probe allows at batches 8-32; the search re-times what it picks.
RUN_STEPS = 4
RUN_WARMUP_STEPS = 1  # only step 1: from step 2 on, the optimizer state exists


class ProbeError(AutotuneError):
    """A probe measurement came out unusable (e.g. memory that does not grow with batch)."""

    exit_code = 1


def probe_config(
    task: Task, precision: Precision, checkpointing: Checkpointing, batch: int
) -> TrainConfig:
    """The task's baseline config at micro-batch ``batch`` in one variant, on one rank.

    The baseline's optimizer (its state is part of the fixed bytes) and gradient clipping
    are kept; accumulation, world size and compile are dropped: the probe measures one
    micro-batch step of eager code on one device. So is its schedule, for a constant LR at
    its peak: a step's time and memory do not depend on it, and a warmup longer than the
    probe's few steps could not run in them (a Task's cosine after 20 warmup steps stopped
    the probe at its first 4-step run).
    """
    values: dict[str, Any] = task.baseline_config().model_dump()
    values.update(
        schedule={"name": "constant"},
        micro_batch_size=batch,
        grad_accum_steps=1,
        world_size=1,
        global_batch_size=None,
        precision=precision,
        activation_checkpointing=checkpointing,
        compile=False,
    )
    return validate_train_config(values, f"{task.where()}: probe config")


def run_options(hardware: HardwareInfo, seed: int, steps: int = RUN_STEPS) -> RunOptions:
    """Options of a probing run: few steps, memory measured, on the hardware's device."""
    return RunOptions(
        steps=steps, seed=seed, warmup_steps=RUN_WARMUP_STEPS, device=hardware.device.kind
    )


def measure_batch(
    task: Task,
    config: TrainConfig,
    options: RunOptions,
    hardware: HardwareInfo,
    flops_per_sample: float,
) -> BatchProbe:
    """Train ``config`` for ``options.steps`` steps and read peak memory and speed."""
    _release_memory()
    start = time.perf_counter()
    summary = train(task, config, options).summary
    wall = time.perf_counter() - start
    if summary.peak_memory_bytes is None or summary.timed_steps < 1:
        raise ProbeError(
            f"a probing run of {config.precision} at batch {config.micro_batch_size} gave no "
            f"peak memory or no timed step ({summary.timed_steps}); run at least 3 steps "
            f"with memory measurement on."
        )
    return BatchProbe(
        batch_size=config.micro_batch_size,
        peak_memory_bytes=summary.peak_memory_bytes,
        activation_memory_bytes=summary.activation_memory_bytes,
        memory_source=summary.memory_source or "unknown",
        samples_per_s=summary.samples_per_s,
        step_time_s=config.micro_batch_size / summary.samples_per_s,
        timed_steps=summary.timed_steps,
        mfu=_mfu(summary, flops_per_sample, hardware, config.precision),
        wall_s=wall,
    )


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Within: :func:`measure_batch`'s collection scans only what was built since entry.

    That collection frees the earlier runs' models and tensors, and a full one walks every
    object the process tracks, and torch._dynamo, which the first optimizer imports, brings
    a great many: ``autotune probe examples/mlp_digits.py`` took 3.5-3.7 s with a full one
    before each run and 1.7-1.8 s within this (2-core AMX host, 2026-12-06). What survives
    one collection at entry (the imports, the task, its data) lives as long as the caller,
    so it is frozen (``gc.freeze``) and thawed on exit.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _release_memory() -> None:
    """Free what earlier runs left behind, so a CUDA peak counts this run only."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _mfu(
    summary: RunSummary, flops_per_sample: float, hardware: HardwareInfo, precision: Precision
) -> float | None:
    if peak_key(precision, hardware.device.kind) not in hardware.peak_flops:
        return None
    return mfu(flops_per_sample * summary.samples_per_s, hardware, precision)


def fit_variant(
    precision: Precision,
    checkpointing: Checkpointing,
    probes: Sequence[BatchProbe],
    *,
    reason: str,
    budget_bytes: int | None,
    speed_vs_fp32: float | None,
) -> VariantReport:
    """A viable variant: memory and step-time lines fitted to ``probes``.

    Raises :class:`ProbeError` when peak memory does not grow with batch size, since
    such a fit cannot bound a batch size.
    """
    batches = [p.batch_size for p in probes]
    memory = fit_line(batches, [p.peak_memory_bytes for p in probes])
    if memory.slope <= 0:
        peaks = ", ".join(f"{p.batch_size}: {p.peak_memory_bytes}" for p in probes)
        raise ProbeError(
            f"peak memory of {precision}/{checkpointing} did not grow with batch size "
            f"(batch: bytes {peaks}); probe batch sizes further apart."
        )
    time_fit = fit_line(batches, [p.step_time_s for p in probes])
    largest = max(probes, key=lambda p: p.batch_size)
    variant = VariantReport(
        precision=precision,
        activation_checkpointing=checkpointing,
        viable=True,
        reason=reason,
        probes=list(probes),
        fixed_bytes=round(memory.intercept),
        bytes_per_sample=memory.slope,
        memory_fit_error=memory.max_relative_error,
        step_time=StepTimeModel(
            fixed_s=time_fit.intercept,
            per_sample_s=time_fit.slope,
            max_relative_error=time_fit.max_relative_error,
        ),
        speed_vs_fp32=speed_vs_fp32,
        mfu=largest.mfu,
    )
    if budget_bytes is None:
        return variant
    return variant.model_copy(update={"max_batch_size": variant.max_batch(budget_bytes)})
