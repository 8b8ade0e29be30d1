"""What this machine is and how fast it is: device facts plus *measured* peaks.

Peak FLOP/s per dtype and memory bandwidth are timed on the machine itself (DESIGN.md,
invariant 6), never read from a datasheet: a datasheet knows neither the clocks, the
thread count, the kernels this torch build ships, nor a slow software path such as fp16
matmul on most CPUs. Measuring costs seconds, so :func:`probe_hardware` caches the result
per machine as JSON and a repeated probe reads it back without measuring.

Every measurement follows the same recipe (as nanoGPT's benchmark does): allocate, run a
burn-in call that is discarded (kernel selection, page faults, cuBLAS handles), then keep
the best of a few timed samples, synchronising the device before each clock read. Each
measurement stops at its time budget, so a slow dtype can never stretch the probe.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autotune._io import write_text_atomic
from autotune.config import DeviceInfo, Precision
from autotune.errors import ConfigError

__all__ = [
    "DEFAULT_PROBE_BUDGET_S",
    "PEAK_KEYS",
    "HardwareInfo",
    "cache_path",
    "cached_hardware",
    "default_cache_dir",
    "describe_device",
    "instruction_set",
    "measure_bandwidth",
    "measure_hardware",
    "measure_matmul_flops",
    "mfu",
    "peak_key",
    "probe_hardware",
    "tf32_enabled",
]

log = logging.getLogger(__name__)

PEAK_KEYS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")
_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
_PRECISION_PEAKS: dict[str, str] = {
    "32-true": "fp32",
    "bf16-mixed": "bf16",
    "bf16-true": "bf16",
    "16-mixed": "fp16",
}

# Whole probe: 3 matmul dtypes + bandwidth at ~1 s each keeps a 2-core CPU under ~6 s.
DEFAULT_PROBE_BUDGET_S = 4.0
# Best of up to 10 samples: enough for a stable max, few enough to fit a 1 s budget.
_MAX_SAMPLES = 10
# Square sizes tried in turn on CPU: 1024 reaches fp32/bf16 peak (~40 ms on 2 cores);
# starting at 256 keeps fp16, 8-40x slower on CPU, to ~10 ms per call.
_CPU_SIZES = (256, 512, 1024)
# On CUDA 8192 (~1.1 TFLOP per matmul) saturates an H100; smaller rungs guard slow GPUs.
_CUDA_SIZES = (1024, 2048, 4096, 8192)
# Doubling n costs 8x the FLOPs: grow only while the next size fits the time left.
_GROWTH = 8
# 256 MiB per buffer is 8x a large (32 MiB) L3: the copy measures DRAM, not cache.
_CPU_COPY_BYTES = 256 * 2**20
# 1 GiB per buffer is ~20x an H100's 50 MiB L2 and still ~0.6 ms per copy.
_CUDA_COPY_BYTES = 2**30
# Never hold more than 1/16 of RAM (or 1/4 of free GPU memory) per copy buffer.
_CPU_MEMORY_SHARE = 16
_CUDA_FREE_SHARE = 4


class HardwareInfo(BaseModel):
    """The machine as measured by :func:`probe_hardware`; cached as JSON per machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = Field(
        default=1,
        description="Version of this schema; a cache file of another version is re-measured.",
    )
    device: DeviceInfo = Field(
        description="The accelerator (or the CPU): kind, model name, count, memory in bytes."
    )
    cpu_cores: int = Field(ge=1, description="CPU cores this process may run on (affinity).")
    cpu_threads: int = Field(ge=1, description="torch intra-op threads used while measuring.")
    instruction_set: str = Field(
        default="unknown",
        description=(
            "What the device's kernels can use (see :func:`instruction_set`); part of the "
            "cache key: one model name can hide hosts 100x apart in bf16 matmul."
        ),
    )
    torch_version: str = Field(description="torch.__version__ of the measuring process.")
    peak_flops: dict[str, float] = Field(
        description=(
            "Measured peak matmul FLOP/s per dtype: fp32, bf16, fp16 (absent when the dtype's "
            "matmul does not run) and on CUDA tf32."
        )
    )
    bf16_supported: bool = Field(description="bfloat16 matmul runs on this device.")
    fp16_supported: bool = Field(description="float16 matmul runs on this device.")
    memory_bandwidth_bytes_per_s: float = Field(
        gt=0, description="Measured device-memory bandwidth: bytes read + written per second."
    )
    measured_at: datetime = Field(description="When the measurement finished (UTC, ISO 8601).")
    measure_seconds: float = Field(ge=0, description="Wall time the measurement took.")

    @field_validator("peak_flops")
    @classmethod
    def _known_positive_peaks(cls, peaks: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(peaks) - set(PEAK_KEYS))
        if unknown:
            raise ValueError(f"peak_flops keys must be among {list(PEAK_KEYS)}, but got {unknown}")
        if "fp32" not in peaks:
            raise ValueError("peak_flops must hold an 'fp32' peak")
        bad = {key: value for key, value in peaks.items() if not 0 < value < math.inf}
        if bad:
            raise ValueError(f"peak_flops values must be positive and finite, but got {bad}")
        return peaks


# --- device facts (cheap, no measuring) ----------------------------------------------------


def describe_device(device: torch.device | str | None = None) -> DeviceInfo:
    """Kind, model name, count and memory of ``device`` (default: CUDA if present, else CPU).

    CPU: the model name from /proc/cpuinfo (else :mod:`platform`), count 1 and total RAM.
    CUDA: the name and total memory of the device, and how many devices this process sees.
    """
    target = _resolve_device(device)
    if target.type == "cuda":
        index = _cuda_index(target)
        return DeviceInfo(
            kind="cuda",
            name=torch.cuda.get_device_name(index),
            count=torch.cuda.device_count(),
            memory_bytes=torch.cuda.get_device_properties(index).total_memory,
        )
    return DeviceInfo(kind="cpu", name=_cpu_name(), count=1, memory_bytes=_total_ram())


def instruction_set(device: torch.device | str | None = None) -> str:
    """What ``device``'s kernels can use: on CPU torch's vector dispatch level and whether
    oneDNN has native bf16 and fp16 kernels (e.g. ``"AVX2 bf16=no fp16=no"``); on CUDA the
    compute capability. A VM reports one model name ("AMD EPYC") for hosts with and without
    AVX512-BF16, where bf16 matmul measured 2-3x fp32 on one and 0.012x on the other: a
    cached peak is only valid on the same instruction set."""
    target = _resolve_device(device)
    if target.type == "cuda":
        major, minor = torch.cuda.get_device_capability(_cuda_index(target))
        return f"sm_{major}{minor}"
    return (
        f"{torch.backends.cpu.get_cpu_capability()} "
        f"bf16={_onednn_has('bf16')} fp16={_onednn_has('fp16')}"
    )


def _onednn_has(dtype: Literal["bf16", "fp16"]) -> str:
    """'yes'/'no' from oneDNN's own CPU check, 'unknown' where this torch build has none."""
    try:
        check = getattr(torch.ops.mkldnn, f"_is_mkldnn_{dtype}_supported")
        return "yes" if check() else "no"
    except (AttributeError, RuntimeError):
        return "unknown"


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = torch.device(device)
    if target.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"hardware probing supports devices 'cpu' and 'cuda', but got '{target}'; "
            f"probe on one of those."
        )
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device '{target}' was asked for, but torch sees no CUDA device; "
            f"probe on 'cpu' or install a CUDA build of torch."
        )
    return target


def _cuda_index(device: torch.device) -> int:
    return torch.cuda.current_device() if device.index is None else device.index


def _cpu_name() -> str:
    """The CPU model: /proc/cpuinfo's ``model name`` on Linux, else what platform says."""
    with contextlib.suppress(OSError):
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def _total_ram() -> int | None:
    """Total physical memory in bytes; None where the OS does not tell (no sysconf)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _cpu_cores() -> int:
    """Cores this process may run on (its affinity mask), not all cores of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- measuring ------------------------------------------------------------------------------


def measure_matmul_flops(
    dtype: torch.dtype,
    device: torch.device | str,
    budget_s: float = 1.0,
    *,
    tf32: bool = False,
) -> float:
    """Peak FLOP/s of square ``dtype`` matmuls on ``device``, spending about ``budget_s``.

    Tries growing sizes (CPU 256 up to 1024, CUDA 1024 up to 8192) and stops growing once
    the next size (8x the work) would not fit in half the budget left, so a slow dtype is
    timed on small matrices. Each size gets a discarded burn-in call; the result is the best rate
    (2*n^3 FLOP per matmul) over up to 10 timed samples, stopping at the budget. ``tf32``
    (CUDA, float32 only) turns cuBLAS TF32 on for the measurement; without it float32 is
    measured in full IEEE precision. The process's TF32 setting is restored afterwards.
    Raises ``RuntimeError`` (from torch) when the dtype's matmul does not run at all, and
    :class:`ConfigError` for a device other than CPU or an available CUDA device.
    """
    target = _resolve_device(device)
    _check_budget(budget_s)
    if tf32 and (target.type != "cuda" or dtype != torch.float32):
        raise ValueError(
            f"tf32 applies to float32 matmuls on CUDA only, but got dtype={dtype}, "
            f"device='{target}'; drop tf32=True."
        )
    _tiny_matmul(dtype, target)  # CUDA context and cuBLAS start-up: not the budget's time
    deadline = time.perf_counter() + budget_s
    with torch.inference_mode(), _tf32_for(target, tf32):
        work, n, call_s = _sized_matmul(dtype, target, deadline)
        return _best_rate(work, 2.0 * n**3, target, deadline, call_s)


def _sized_matmul(
    dtype: torch.dtype, device: torch.device, deadline: float
) -> tuple[Callable[[], object], int, float]:
    """A warmed-up ``a @ b``, growing n along the device's sizes while the next size fits.

    The next size (burn-in + one warm call, each predicted at 8x the current call, an
    upper bound since larger matmuls run no less efficiently) must fit in half the time
    left before ``deadline``, so the other half remains for timed samples. Returns the
    call, its size n and the seconds one warm call took.
    """
    sizes = _CUDA_SIZES if device.type == "cuda" else _CPU_SIZES
    generator = torch.Generator(device=device).manual_seed(0)  # never touch the global RNG
    for n in sizes:
        a, b = (torch.randn(n, n, generator=generator, device=device, dtype=dtype) for _ in "ab")
        work = functools.partial(torch.matmul, a, b, out=torch.empty_like(a))
        call_s = _warm(work, device)
        if 2 * _GROWTH * call_s > (deadline - time.perf_counter()) / 2:
            break
    return work, n, call_s


def measure_bandwidth(device: torch.device | str, budget_s: float = 1.0) -> float:
    """Memory bandwidth of ``device`` in bytes/s: ``dst.copy_(src)`` counts read + write.

    Buffers are far larger than the last-level cache (CPU 256 MiB, CUDA 1 GiB, capped by
    memory), and ``src`` is filled so no page is the shared zero page. Best of up to 10
    timed samples after a burn-in copy, stopping at ``budget_s``.
    """
    target = _resolve_device(device)
    _check_budget(budget_s)
    deadline = time.perf_counter() + budget_s
    with torch.inference_mode():
        elements = _copy_bytes(target) // 4
        src = torch.ones(elements, device=target, dtype=torch.float32)
        dst = torch.empty_like(src)
        work = functools.partial(dst.copy_, src)
        call_s = _warm(work, target)
        return _best_rate(work, 2.0 * elements * 4, target, deadline, call_s)


def _copy_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return min(_CUDA_COPY_BYTES, free // _CUDA_FREE_SHARE)
    ram = _total_ram()
    return _CPU_COPY_BYTES if ram is None else min(_CPU_COPY_BYTES, ram // _CPU_MEMORY_SHARE)


def _check_budget(budget_s: float) -> None:
    if not 0 < budget_s < math.inf:
        raise ValueError(f"budget_s must be a positive number of seconds, but got {budget_s}.")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(work: Callable[[], object], calls: int, device: torch.device) -> float:
    """Seconds for ``calls`` calls of ``work``, the device synchronised at both clock reads."""
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        work()
    _synchronize(device)
    return max(time.perf_counter() - start, 1e-9)  # at least a clock tick: rates stay finite


def _warm(work: Callable[[], object], device: torch.device) -> float:
    """Run a discarded burn-in call, then return the seconds of one warm call."""
    _timed(work, 1, device)
    return _timed(work, 1, device)


def _best_rate(
    work: Callable[[], object],
    units_per_call: float,
    device: torch.device,
    deadline: float,
    call_s: float,
) -> float:
    """Best units/s over up to ``_MAX_SAMPLES`` timed samples, the last one ending past
    ``deadline`` at most by one sample. Calls are batched per sample so the samples share
    the time left (short calls would otherwise be dominated by synchronisation); the warm
    call that sized them (``call_s``) counts as a first sample.
    """
    best = units_per_call / call_s
    left = deadline - time.perf_counter()
    calls = max(1, int(left / _MAX_SAMPLES / call_s))
    for _ in range(_MAX_SAMPLES):
        if time.perf_counter() >= deadline:
            break
        best = max(best, units_per_call * calls / _timed(work, calls, device))
    return best


# --- TF32 -----------------------------------------------------------------------------------


def tf32_enabled() -> bool:
    """Whether float32 CUDA matmuls in this process may use TF32 (either torch API)."""
    matmul = torch.backends.cuda.matmul
    # torch >= 2.9 resolves both APIs here; reading the legacy flag raises once the new
    # API was used, so prefer the new one where it exists.
    precision = getattr(matmul, "fp32_precision", None)
    if precision is not None:
        return bool(precision == "tf32")
    return bool(matmul.allow_tf32)


@contextlib.contextmanager
def _tf32_for(device: torch.device, enabled: bool) -> Iterator[None]:
    """cuBLAS TF32 on (``enabled``) or off for a CUDA block, then back as it was.

    Uses whichever API the process already speaks: torch >= 2.9 raises on reading the
    legacy ``allow_tf32`` once the new ``fp32_precision`` was set, and mixing them makes
    later reads raise, so a measurement must not switch the process to the other API.
    """
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    try:
        legacy_before = bool(matmul.allow_tf32)
    except RuntimeError:  # the new API is in use
        before = matmul.fp32_precision
        matmul.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = before
        return
    matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32 = legacy_before


# --- the probe ------------------------------------------------------------------------------


def measure_hardware(
    device: torch.device | str | None = None, *, budget_s: float = DEFAULT_PROBE_BUDGET_S
) -> HardwareInfo:
    """Measure ``device`` now (no cache): facts, peak FLOP/s per dtype and bandwidth.

    ``budget_s`` is shared equally by the matmul dtypes and the bandwidth measurement;
    allocation and burn-in add a little on top. A dtype whose matmul does not run is
    flagged unsupported and gets no peak.
    """
    _check_budget(budget_s)
    target = _resolve_device(device)
    start = time.perf_counter()
    support = _dtype_support(target)
    keys = [key for key in _peak_keys(target) if support[key]]
    share = budget_s / (len(keys) + 1)
    peaks = {key: _measure_peak(key, target, share) for key in keys}
    bandwidth = measure_bandwidth(target, share)
    return HardwareInfo(
        device=describe_device(target),
        cpu_cores=_cpu_cores(),
        cpu_threads=torch.get_num_threads(),
        instruction_set=instruction_set(target),
        torch_version=torch.__version__,
        peak_flops=peaks,
        bf16_supported=support["bf16"],
        fp16_supported=support["fp16"],
        memory_bandwidth_bytes_per_s=bandwidth,
        measured_at=datetime.now(timezone.utc),
        measure_seconds=time.perf_counter() - start,
    )


def _peak_keys(device: torch.device) -> tuple[str, ...]:
    return PEAK_KEYS if device.type == "cuda" else ("fp32", "bf16", "fp16")


def _measure_peak(key: str, device: torch.device, budget_s: float) -> float:
    return measure_matmul_flops(_DTYPES[key], device, budget_s, tf32=key == "tf32")


def _dtype_support(device: torch.device) -> dict[str, bool]:
    """Which peak keys can be measured: CUDA asks torch; CPU tries a tiny matmul."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return {"fp32": True, "tf32": True, "bf16": bf16, "fp16": True}
    return {key: _matmul_runs(_DTYPES[key], device) for key in _peak_keys(device)}


def _matmul_runs(dtype: torch.dtype, device: torch.device) -> bool:
    try:
        _tiny_matmul(dtype, device)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return True


def _tiny_matmul(dtype: torch.dtype, device: torch.device) -> None:
    """An 8x8 matmul, synchronised: raises where the dtype's matmul does not run."""
    with torch.inference_mode():
        ones = torch.ones(8, 8, dtype=dtype, device=device)
        torch.matmul(ones, ones)
        _synchronize(device)


def probe_hardware(
    device: torch.device | str | None = None,
    *,
    refresh: bool = False,
    cache_dir: Path | None = None,
    budget_s: float = DEFAULT_PROBE_BUDGET_S,
) -> HardwareInfo:
    """This machine's :class:`HardwareInfo`, measured once and cached per machine.

    The cache key is the device kind, name and count, its :func:`instruction_set`, the
    torch version and the torch thread count (each changes the peaks). A cached result is
    returned at once without measuring unless ``refresh`` is set; an unreadable, corrupt,
    schema-mismatched or foreign cache file is ignored, re-measured and rewritten
    (atomically). Failing to write the cache only logs a warning. ``cache_dir`` defaults
    to :func:`default_cache_dir`; ``budget_s`` bounds the measuring (see
    :func:`measure_hardware`).
    """
    cache = _Cache.of(_resolve_device(device), cache_dir)
    cached = None if refresh else cache.read()
    if cached is not None:
        return cached
    info = measure_hardware(cache.device, budget_s=budget_s)
    _write_cache(cache.path, info)
    return info


def cached_hardware(
    device: torch.device | str | None = None, *, cache_dir: Path | None = None
) -> HardwareInfo | None:
    """This machine's cached :class:`HardwareInfo` if :func:`probe_hardware` has a valid
    one, else None; never measures (so the caller knows whether peaks are yet to be
    timed, which nothing else should run beside)."""
    return _Cache.of(_resolve_device(device), cache_dir).read()


@dataclass(frozen=True)
class _Cache:
    """Where one device's peaks are cached, and the facts a cached file must match."""

    device: torch.device
    facts: DeviceInfo
    isa: str
    path: Path

    @classmethod
    def of(cls, device: torch.device, cache_dir: Path | None) -> _Cache:
        facts, isa = describe_device(device), instruction_set(device)
        return cls(device, facts, isa, cache_path(facts, cache_dir, isa=isa))

    def read(self) -> HardwareInfo | None:
        return _read_cache(self.path, self.facts, self.isa)


def default_cache_dir() -> Path:
    """``$AUTOTUNE_CACHE_DIR`` if set, else ``~/.cache/autotune``."""
    configured = os.environ.get("AUTOTUNE_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "autotune"


def cache_path(
    device: DeviceInfo,
    cache_dir: Path | None = None,
    *,
    torch_version: str | None = None,
    threads: int | None = None,
    isa: str | None = None,
) -> Path:
    """The cache file for ``device`` under this torch version, thread count and
    instruction set.

    ``torch_version``, ``threads`` and ``isa`` default to the running process's
    (``isa``: :func:`instruction_set` of a device of ``device.kind``).
    """
    key = _cache_key(
        device,
        torch.__version__ if torch_version is None else torch_version,
        torch.get_num_threads() if threads is None else threads,
        instruction_set(device.kind) if isa is None else isa,
    )
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (cache_dir or default_cache_dir()) / f"hardware-{device.kind}-{digest}.json"


def _cache_key(device: DeviceInfo, torch_version: str, threads: int, isa: str) -> dict[str, object]:
    return {
        "schema_version": 1,
        "kind": device.kind,
        "name": device.name,
        "count": device.count,
        "instruction_set": isa,
        "torch_version": torch_version,
        "threads": threads,
    }


def _read_cache(path: Path, device: DeviceInfo, isa: str) -> HardwareInfo | None:
    """The cached info at ``path`` if it is valid and for this machine, else None."""
    try:
        info = HardwareInfo.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        log.warning("Ignoring unreadable hardware cache %s (%s); re-measuring.", path, exc)
        return None
    expected = _cache_key(device, torch.__version__, torch.get_num_threads(), isa)
    found = _cache_key(info.device, info.torch_version, info.cpu_threads, info.instruction_set)
    if found != expected:
        log.warning("Ignoring hardware cache %s: it is for another machine.", path)
        return None
    return info


def _write_cache(path: Path, info: HardwareInfo) -> None:
    try:
        write_text_atomic(path, info.model_dump_json(indent=2) + "\n")
    except OSError as exc:
        log.warning(
            "Could not write the hardware cache %s (%s); results are not cached.", path, exc
        )


# --- MFU ------------------------------------------------------------------------------------


def peak_key(precision: Precision, device_kind: str, *, tf32: bool | None = None) -> str:
    """The ``peak_flops`` key a run in Lightning ``precision`` is bounded by.

    '32-true' -> 'fp32', or 'tf32' on CUDA while TF32 matmuls are on (``tf32``; None reads
    the process's setting); 'bf16-mixed'/'bf16-true' -> 'bf16'; '16-mixed' -> 'fp16'.
    """
    key = _PRECISION_PEAKS.get(precision)
    if key is None:
        raise ConfigError(
            f"precision must be one of {sorted(_PRECISION_PEAKS)}, but got {precision!r}."
        )
    on_tf32 = tf32_enabled() if tf32 is None else tf32
    return "tf32" if key == "fp32" and device_kind == "cuda" and on_tf32 else key


def mfu(
    achieved_flops_per_s: float,
    info: HardwareInfo,
    precision: Precision,
    *,
    tf32: bool | None = None,
) -> float:
    """Model FLOP/s utilisation: achieved FLOP/s over the measured peak for ``precision``.

    The peak is per device; pass the FLOP/s of one device. Not clamped: a value above 1
    means the achieved FLOP/s were over-counted or the peak under-measured. Raises
    :class:`ConfigError` when the hardware has no peak for that precision (dtype
    unsupported) and ``ValueError`` for a negative or non-finite achieved rate.
    """
    if not 0 <= achieved_flops_per_s < math.inf:
        raise ValueError(
            f"achieved_flops_per_s must be a finite number >= 0, but got {achieved_flops_per_s}."
        )
    key = peak_key(precision, info.device.kind, tf32=tf32)
    peak = info.peak_flops.get(key)
    if peak is None:
        raise ConfigError(
            f"precision '{precision}' needs the measured {key} peak, but {info.device.name} "
            f"has none ({key} matmul does not run there); choose a supported precision."
        )
    return achieved_flops_per_s / peak
