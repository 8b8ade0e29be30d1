"""The probe: hardware, model facts, every variant's memory and speed, the noise scale."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from autotune.config import PRECISIONS, Precision
from autotune.errors import ConfigError, TaskError, allocation_failure
from autotune.hardware import HardwareInfo, probe_hardware
from autotune.profiler._facts import PROBE_SEED, model_facts
from autotune.profiler._noise import measure_noise_scale, noise_batch_count
from autotune.profiler._runs import (
    RUN_STEPS,
    fit_variant,
    frozen_heap,
    measure_batch,
    probe_config,
    run_options,
)
from autotune.profiler._schema import (
    BatchProbe,
    Checkpointing,
    MemoryBudget,
    ModelFacts,
    ProbeReport,
    VariantReport,
)
from autotune.profiler._viability import (
    REFERENCE_PRECISION,
    Verdict,
    failure_verdict,
    hardware_verdict,
    speed_ratio,
    speed_ratios,
    speed_verdict,
)
from autotune.runtime import RunOptions
from autotune.task import Task

__all__ = [
    "DEFAULT_BATCHES",
    "DEVICE_MEMORY_SHARE",
    "PROBE_SEED",
    "Neighbor",
    "ProbeProgress",
    "ProgressCallback",
    "memory_budget",
    "probe",
]

# Batches 8, 16, 32: below 8 kernels pick other algorithms and workspaces (cnn_digits'
# conv memory per sample settles only from batch 8 in fp32, and jumps between 8 and 12
# in bf16), which bends the line; 32 on top keeps every variant of tiny_gpt inside the
# 30 s probe budget on two cores (a run costs about its batch size); three points let
# the fit's residual show whether memory is linear.
DEFAULT_BATCHES: tuple[int, ...] = (8, 16, 32)
# Budget 90% of the device's memory: the CUDA context, allocator fragmentation (reserved
# beyond allocated) and, on CPU, the OS and other processes need the rest.
DEVICE_MEMORY_SHARE = 0.9


class Neighbor(Protocol):
    """Work of the caller's that may share the machine while the probe times nothing:
    :func:`probe` calls :meth:`prepare` once the hardware's peaks are known (measured alone,
    or cached) and :meth:`await_ready` before its first timed model run. A search starts
    its trials' fork server this way: its imports (2.5 s for mlp_digits on 2 cores) overlap
    the probe's FLOP count, whose first dispatch imports torch._dynamo (1.3 s)."""

    def prepare(self) -> None: ...

    def await_ready(self) -> None: ...


@dataclass(frozen=True)
class ProbeProgress:
    """Where the probe stands: ``done`` of ``total`` units; ``message`` names the next.

    A unit is the hardware probe, the FLOP count, one run (variant x batch) or the noise
    scale. ``total`` may shrink when a precision is ruled out and its runs are skipped.
    The last report has ``done == total``.
    """

    done: int
    total: int
    message: str


ProgressCallback = Callable[[ProbeProgress], None]


def probe(
    task: Task,
    *,
    memory_limit_bytes: int | None = None,
    batches: Sequence[int] = DEFAULT_BATCHES,
    hardware: HardwareInfo | None = None,
    on_progress: ProgressCallback | None = None,
    seed: int = PROBE_SEED,
    steps: int = RUN_STEPS,
    neighbor: Neighbor | None = None,
) -> ProbeReport:
    """Probe ``task`` on this machine and return the full :class:`ProbeReport`.

    ``hardware`` defaults to :func:`autotune.hardware.probe_hardware` (cached per machine);
    runs go to its device. ``memory_limit_bytes`` overrides the device-memory budget that
    ``max_batch_size`` is computed for. Each viable (precision, checkpointing) variant
    trains ``steps`` steps at every batch size in ``batches`` (at least two distinct).
    Errors in the task surface as :class:`~autotune.errors.TaskError`; a probe batch
    too large for the device raises ``torch.OutOfMemoryError`` (probe smaller batches).
    A ``neighbor`` runs beside the untimed stages only (see :class:`Neighbor`).
    """
    sizes = _check_inputs(batches, memory_limit_bytes, steps)
    started = time.perf_counter()
    stages: dict[str, float] = {}
    progress = _Progress(on_progress, total=3)
    with _timed(stages, "hardware"), progress.unit("measuring the hardware (cached per machine)"):
        info = hardware or probe_hardware()
    device = info.device.kind
    if neighbor is not None:
        neighbor.prepare()
    with _timed(stages, "model_facts"), progress.unit("counting parameters and FLOPs"):
        facts = model_facts(task, device, seed=seed)
    if neighbor is not None:
        with _timed(stages, "neighbor"):
            neighbor.await_ready()
    budget = memory_budget(info, memory_limit_bytes)
    with frozen_heap():  # model_facts imported torch._dynamo; runs collect only their own
        with _timed(stages, "variants"):
            options = run_options(info, seed, steps)
            variants = _Variants(task, info, facts, budget, sizes, options, progress).probe_all()
        with _timed(stages, "noise_scale"), progress.unit("estimating the gradient noise scale"):
            count = noise_batch_count(facts.flops_per_sample)
            noise = measure_noise_scale(task, big_batches=count, device=device, seed=seed)
    progress.finish()
    return ProbeReport(
        task=task.display_name,
        task_file=task.source,
        autotune_version=_version(),
        hardware=info,
        model=facts,
        memory_budget=budget,
        probe_batches=list(sizes),
        steps_per_run=steps,
        seed=seed,
        variants=variants,
        noise_scale=noise,
        probe_seconds=time.perf_counter() - started,
        stage_seconds=stages,
    )


def memory_budget(hardware: HardwareInfo, memory_limit_bytes: int | None = None) -> MemoryBudget:
    """The budget a step's peak may reach: the user's limit, else a share of the device's."""
    device_bytes = hardware.device.memory_bytes
    source: Literal["memory_limit", "device_memory", "unknown"] = "unknown"
    budget: int | None = None
    if memory_limit_bytes is not None:
        budget, source = memory_limit_bytes, "memory_limit"
    elif device_bytes:
        budget, source = int(device_bytes * DEVICE_MEMORY_SHARE), "device_memory"
    return MemoryBudget(
        budget_bytes=budget,
        source=source,
        device_memory_bytes=device_bytes,
        device_share=DEVICE_MEMORY_SHARE,
    )


def _check_inputs(
    batches: Sequence[int], memory_limit_bytes: int | None, steps: int
) -> tuple[int, ...]:
    sizes = tuple(sorted(set(batches)))
    if len(sizes) < 2 or sizes[0] < 1:
        raise ConfigError(
            f"probe batches must be at least two distinct sizes >= 1 (a line needs two "
            f"points), but got {list(batches)}; e.g. 4 8 16."
        )
    if memory_limit_bytes is not None and memory_limit_bytes < 1:
        raise ConfigError(
            f"memory limit must be a positive number of bytes, but got {memory_limit_bytes}."
        )
    if steps < 3:
        raise ConfigError(
            f"probe runs need at least 3 steps (burn-in, profiled, timed), but got {steps}."
        )
    return sizes


@contextlib.contextmanager
def _timed(stages: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = time.perf_counter() - start


def _version() -> str:
    from autotune import __version__

    return __version__


class _Progress:
    """Counts units and reports each to the callback before it starts."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    @contextlib.contextmanager
    def unit(self, message: str) -> Iterator[None]:
        self._report(message)
        yield
        self.done += 1

    def add(self, units: int) -> None:
        self.total += units

    def finish(self) -> None:
        self._report("done")

    def _report(self, message: str) -> None:
        if self.callback is not None:
            self.callback(ProbeProgress(done=self.done, total=self.total, message=message))


class _Variants:
    """Runs every (precision, checkpointing) variant, ruling precisions out as it goes.

    First the hardware rules out precisions without running them. Then every remaining
    precision runs without checkpointing, interleaved batch by batch with 32-true, the
    reference: each speed ratio compares runs seconds apart, so a burst of load from
    other processes cannot make one precision look slow. Precisions below the speed floor
    are ruled out; the rest then run with full checkpointing, interleaved the same way.
    A variant whose run raises (a :class:`~autotune.errors.TaskError`, or a RuntimeError
    from its backward) where the reference's at the same batch did not is ruled out with
    that error (:func:`failure_verdict`) and not run again; an error in the reference
    itself is the task's, and propagates, as does running out of memory.
    """

    def __init__(
        self,
        task: Task,
        hardware: HardwareInfo,
        facts: ModelFacts,
        budget: MemoryBudget,
        batches: tuple[int, ...],
        options: RunOptions,
        progress: _Progress,
    ) -> None:
        self.task, self.hardware, self.facts, self.budget = task, hardware, facts, budget
        self.batches, self.options, self.progress = batches, options, progress
        self.modes: tuple[Checkpointing, ...] = ("none", "full") if facts.blocks else ("none",)
        self.measured: dict[tuple[Precision, Checkpointing], list[BatchProbe]] = {}
        self.failed: dict[tuple[Precision, Checkpointing], Verdict] = {}

    def probe_all(self) -> list[VariantReport]:
        """Measure, decide and fit; one report per precision x mode, in PRECISIONS order."""
        verdicts = {p: hardware_verdict(p, self.hardware) for p in PRECISIONS}
        running = [p for p in _reference_first(PRECISIONS) if verdicts[p].viable]
        self.progress.add(len(running) * len(self.modes) * len(self.batches))
        self._measure_interleaved(running, "none")
        verdicts.update({p: self._speed_verdict(p) for p in running[1:]})
        fast = [p for p in running if verdicts[p].viable]
        self.progress.add(-(len(running) - len(fast)) * (len(self.modes) - 1) * len(self.batches))
        for mode in self.modes[1:]:
            self._measure_interleaved(fast, mode)
        return [
            self._report(p, mode, self.failed.get((p, mode), verdicts[p]))
            for p in PRECISIONS
            for mode in self.modes
        ]

    def _measure_interleaved(self, precisions: list[Precision], mode: Checkpointing) -> None:
        for left, batch in zip(range(len(self.batches), 0, -1), self.batches, strict=True):
            for precision in precisions:
                if (precision, mode) not in self.failed:
                    self._measure_or_rule_out(precision, mode, batch, left)

    def _measure_or_rule_out(
        self, precision: Precision, mode: Checkpointing, batch: int, left: int
    ) -> None:
        """Measure one run; a reduced precision whose run raises is ruled out instead
        (``left``: this batch's unit and those after it, taken off the progress count)."""
        try:
            probe = self._measure(precision, mode, batch)
        except (TaskError, RuntimeError) as error:  # RuntimeError: from backward
            if precision == REFERENCE_PRECISION or allocation_failure(error) is not None:
                raise
            self.failed[(precision, mode)] = failure_verdict(precision, error)
            self.progress.add(-left)
            return
        self.measured.setdefault((precision, mode), []).append(probe)

    def _measure(self, precision: Precision, mode: Checkpointing, batch: int) -> BatchProbe:
        with self.progress.unit(f"{precision} / checkpointing {mode} / batch {batch}"):
            config = probe_config(self.task, precision, mode, batch)
            flops = self.facts.flops_per_sample
            return measure_batch(self.task, config, self.options, self.hardware, flops)

    def _speed_verdict(self, precision: Precision) -> Verdict:
        failed = self.failed.get((precision, "none"))
        if failed is not None:
            return failed
        return speed_verdict(precision, speed_ratios(*self._rates(precision, "none")))

    def _speed_vs_fp32(self, precision: Precision, mode: Checkpointing) -> float:
        return speed_ratio(*self._rates(precision, mode))

    def _rates(
        self, precision: Precision, mode: Checkpointing
    ) -> tuple[dict[int, float], dict[int, float]]:
        """Samples/s per batch of ``precision`` and of the reference, both in ``mode``."""

        def rates(p: Precision) -> dict[int, float]:
            return {b.batch_size: b.samples_per_s for b in self.measured[(p, mode)]}

        return rates(precision), rates(REFERENCE_PRECISION)

    def _report(self, precision: Precision, mode: Checkpointing, verdict: Verdict) -> VariantReport:
        probes = self.measured.get((precision, mode), [])
        ratio = self._speed_vs_fp32(precision, mode) if probes else None
        if not verdict.viable:  # measured evidence of a slow precision is kept, unfitted
            return VariantReport(
                precision=precision,
                activation_checkpointing=mode,
                viable=False,
                reason=verdict.reason,
                probes=probes,
                speed_vs_fp32=ratio,
            )
        return fit_variant(
            precision,
            mode,
            probes,
            reason=verdict.reason,
            budget_bytes=self.budget.budget_bytes,
            speed_vs_fp32=ratio,
        )


def _reference_first(precisions: Sequence[Precision]) -> list[Precision]:
    return sorted(precisions, key=lambda p: p != REFERENCE_PRECISION)
