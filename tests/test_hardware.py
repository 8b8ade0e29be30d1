"""hardware.py: device facts, measured peaks, the per-machine cache and MFU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from autotune import hardware
from autotune.config import DeviceInfo
from autotune.errors import ConfigError
from autotune.hardware import (
    HardwareInfo,
    cache_path,
    cached_hardware,
    describe_device,
    instruction_set,
    measure_bandwidth,
    measure_matmul_flops,
    mfu,
    peak_key,
    probe_hardware,
)

CPU = torch.device("cpu")
# Small budgets: the tests check contracts, not speed (that is a benchmark's job).
PROBE_BUDGET_S = 0.8


def make_info(
    kind: str = "cpu", peaks: dict[str, float] | None = None, **fields: Any
) -> HardwareInfo:
    """A hand-built HardwareInfo for the running process (so the cache accepts it)."""
    device = (
        describe_device(CPU)
        if kind == "cpu"
        else DeviceInfo(kind="cuda", name="GPU X", count=8, memory_bytes=80 * 2**30)
    )
    values: dict[str, Any] = {
        "device": device,
        "cpu_cores": 2,
        "cpu_threads": torch.get_num_threads(),
        "instruction_set": instruction_set(CPU),
        "torch_version": torch.__version__,
        "peak_flops": peaks or {"fp32": 1e11, "bf16": 2e11, "fp16": 4e9},
        "bf16_supported": True,
        "fp16_supported": True,
        "memory_bandwidth_bytes_per_s": 2e10,
        "measured_at": datetime.now(timezone.utc),
        "measure_seconds": 0.5,
    }
    values.update(fields)
    return HardwareInfo(**values)


class FakeMeasure:
    """Stands in for measure_hardware: counts calls, returns a fresh hand-built info."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, device: torch.device | str | None = None, **_: Any) -> HardwareInfo:
        self.calls += 1
        return make_info(measure_seconds=float(self.calls))


@pytest.fixture
def fake_measure(monkeypatch: pytest.MonkeyPatch) -> FakeMeasure:
    fake = FakeMeasure()
    monkeypatch.setattr(hardware, "measure_hardware", fake)
    return fake


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> tuple[HardwareInfo, Path]:
    """One real CPU probe, shared by the tests that read its numbers or its cache file."""
    cache = tmp_path_factory.mktemp("hardware-cache")
    return probe_hardware(CPU, cache_dir=cache, budget_s=PROBE_BUDGET_S), cache


# --- the real measurement on CPU -------------------------------------------------------------


def test_probe_measures_positive_peaks_and_bandwidth(probed: tuple[HardwareInfo, Path]) -> None:
    info, _ = probed
    assert info.peak_flops["fp32"] > 0
    assert info.bf16_supported and info.peak_flops["bf16"] > 0
    assert info.fp16_supported == ("fp16" in info.peak_flops)
    assert "tf32" not in info.peak_flops  # TF32 is a CUDA matmul mode
    assert info.memory_bandwidth_bytes_per_s > 0
    assert info.measure_seconds > 0
    assert info.measured_at.tzinfo is not None


def test_probe_device_facts_are_sane(probed: tuple[HardwareInfo, Path]) -> None:
    info, _ = probed
    assert info.device.kind == "cpu"
    assert info.device.count == 1
    assert info.device.name.strip()
    assert info.device.memory_bytes is not None and info.device.memory_bytes > 2**28
    assert 1 <= info.cpu_cores <= (os.cpu_count() or 1)
    assert info.cpu_threads == torch.get_num_threads()
    assert info.torch_version == torch.__version__


def test_measuring_leaves_the_global_rng_alone() -> None:
    before = torch.get_rng_state()
    measure_matmul_flops(torch.float32, CPU, budget_s=0.05)
    assert torch.equal(torch.get_rng_state(), before)


def test_slow_dtype_stays_within_its_budget() -> None:
    """fp16 matmul is 8-40x slower than fp32 on CPU; the budget still bounds it."""
    start = time.perf_counter()
    flops = measure_matmul_flops(torch.float16, CPU, budget_s=0.3)
    assert flops > 0
    assert time.perf_counter() - start < 3.0  # generous: CPU shared with other jobs


def test_bandwidth_counts_read_and_write() -> None:
    assert measure_bandwidth(CPU, budget_s=0.2) > 0


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan"), float("inf")])
def test_budget_must_be_positive(budget: float) -> None:
    with pytest.raises(ValueError, match=r"budget_s must be a positive number of seconds"):
        measure_matmul_flops(torch.float32, CPU, budget_s=budget)
    with pytest.raises(ValueError, match=r"budget_s must be a positive number of seconds"):
        measure_bandwidth(CPU, budget_s=budget)


def test_tf32_is_refused_off_cuda() -> None:
    with pytest.raises(ValueError, match=r"tf32 applies to float32 matmuls on CUDA only"):
        measure_matmul_flops(torch.float32, CPU, budget_s=0.05, tf32=True)


def test_unsupported_device_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"supports devices 'cpu' and 'cuda', but got 'meta'"):
        probe_hardware(torch.device("meta"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"torch sees no CUDA device; probe on 'cpu'"):
        probe_hardware("cuda")


# --- the cache -------------------------------------------------------------------------------


def test_second_probe_reads_the_cache_without_measuring(
    probed: tuple[HardwareInfo, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    info, cache = probed

    def refuse(*args: object, **kwargs: object) -> HardwareInfo:
        raise AssertionError("measured again although the cache holds the result")

    monkeypatch.setattr(hardware, "measure_hardware", refuse)
    monkeypatch.setattr(hardware, "measure_matmul_flops", refuse)
    assert probe_hardware(CPU, cache_dir=cache) == info
    assert cache_path(info.device, cache).is_file()


def test_refresh_measures_again(tmp_path: Path, fake_measure: FakeMeasure) -> None:
    first = probe_hardware(CPU, cache_dir=tmp_path)
    assert probe_hardware(CPU, cache_dir=tmp_path) == first
    assert fake_measure.calls == 1
    refreshed = probe_hardware(CPU, cache_dir=tmp_path, refresh=True)
    assert fake_measure.calls == 2
    assert refreshed != first
    assert probe_hardware(CPU, cache_dir=tmp_path) == refreshed  # the cache holds the new one


def test_cached_hardware_reads_the_cache_and_never_measures(
    tmp_path: Path, fake_measure: FakeMeasure
) -> None:
    assert cached_hardware(CPU, cache_dir=tmp_path) is None
    assert fake_measure.calls == 0
    info = probe_hardware(CPU, cache_dir=tmp_path)
    assert cached_hardware(CPU, cache_dir=tmp_path) == info and fake_measure.calls == 1


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        '{"schema_version": 2}',
        "[1, 2, 3]",
    ],
    ids=["corrupt", "empty", "other-schema", "not-an-object"],
)
def test_bad_cache_file_is_replaced(
    tmp_path: Path, fake_measure: FakeMeasure, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = cache_path(describe_device(CPU), tmp_path)
    path.write_text(content)
    info = probe_hardware(CPU, cache_dir=tmp_path)
    assert fake_measure.calls == 1
    assert HardwareInfo.model_validate_json(path.read_text()) == info
    assert "Ignoring unreadable hardware cache" in caplog.text


def test_cache_file_of_another_schema_version_is_replaced(
    tmp_path: Path, fake_measure: FakeMeasure
) -> None:
    path = cache_path(describe_device(CPU), tmp_path)
    stale = make_info().model_dump(mode="json")
    stale["schema_version"] = 2
    path.write_text(json.dumps(stale))
    probe_hardware(CPU, cache_dir=tmp_path)
    assert fake_measure.calls == 1
    assert HardwareInfo.model_validate_json(path.read_text()).schema_version == 1


def test_cache_file_of_another_machine_is_ignored(
    tmp_path: Path, fake_measure: FakeMeasure
) -> None:
    path = cache_path(describe_device(CPU), tmp_path)
    foreign = make_info(device=DeviceInfo(kind="cpu", name="Other CPU", count=1, memory_bytes=None))
    path.write_text(foreign.model_dump_json())
    info = probe_hardware(CPU, cache_dir=tmp_path)
    assert fake_measure.calls == 1
    assert info.device == describe_device(CPU)


def test_cache_of_another_instruction_set_is_ignored(
    tmp_path: Path, fake_measure: FakeMeasure
) -> None:
    """A VM names its CPU "AMD EPYC" on hosts with and without AVX512-BF16; a peak measured
    on one (bf16 2-3x fp32) must not be read on the other (bf16 0.012x fp32)."""
    path = cache_path(describe_device(CPU), tmp_path)
    foreign = make_info(instruction_set="AVX512 bf16=yes fp16=yes" + " (another host)")
    path.write_text(foreign.model_dump_json())
    info = probe_hardware(CPU, cache_dir=tmp_path)
    assert fake_measure.calls == 1
    assert info.instruction_set == instruction_set(CPU)


def test_instruction_set_names_the_dispatch_level_and_onednn_dtypes() -> None:
    isa = instruction_set(CPU)
    assert isa.startswith(torch.backends.cpu.get_cpu_capability() + " ")
    assert re.fullmatch(r"\S+ bf16=(yes|no|unknown) fp16=(yes|no|unknown)", isa)


def test_cache_key_changes_with_torch_version_and_threads(tmp_path: Path) -> None:
    device = describe_device(CPU)
    isa = "AVX2 bf16=no fp16=no"  # pinned, not this host's: the test holds on any host
    here = cache_path(device, tmp_path, isa=isa)
    assert cache_path(device, tmp_path, isa="AVX512 bf16=yes fp16=yes") != here
    assert cache_path(device, tmp_path, isa=isa, torch_version="0.0.1") != here
    assert cache_path(device, tmp_path, isa=isa, threads=torch.get_num_threads() + 1) != here
    other = DeviceInfo(kind="cpu", name=device.name + " v2", count=1, memory_bytes=None)
    assert cache_path(other, tmp_path, isa=isa) != here
    assert here.parent == tmp_path and here.suffix == ".json"


def test_new_thread_count_or_torch_version_measures_again(
    tmp_path: Path, fake_measure: FakeMeasure, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe_hardware(CPU, cache_dir=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        probe_hardware(CPU, cache_dir=tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert fake_measure.calls == 2
    monkeypatch.setattr(torch, "__version__", "0.0.1+test")
    probe_hardware(CPU, cache_dir=tmp_path)
    assert fake_measure.calls == 3
    assert len(list(tmp_path.glob("hardware-cpu-*.json"))) == 3


def test_default_cache_dir_honours_the_environment(
    tmp_path: Path, fake_measure: FakeMeasure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    info = probe_hardware(CPU)
    assert cache_path(info.device).parent == tmp_path / "cache"
    assert cache_path(info.device).is_file()


def test_unwritable_cache_still_returns_the_result(
    tmp_path: Path, fake_measure: FakeMeasure, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    info = probe_hardware(CPU, cache_dir=blocker)
    assert info.peak_flops["fp32"] > 0
    assert "Could not write the hardware cache" in caplog.text


# --- the schema ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peaks", "message"),
    [
        ({"fp32": 1.0, "fp8": 2.0}, r"peak_flops keys must be among .* but got \['fp8'\]"),
        ({"bf16": 1.0}, r"peak_flops must hold an 'fp32' peak"),
        ({"fp32": 0.0}, r"positive and finite, but got \{'fp32': 0.0\}"),
        ({"fp32": float("inf")}, r"positive and finite"),
    ],
)
def test_peak_flops_are_validated(peaks: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_info(peaks=peaks)


def test_hardware_info_is_closed_and_frozen() -> None:
    info = make_info()
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        HardwareInfo.model_validate({**info.model_dump(), "gpu_cores": 1})
    with pytest.raises(ValidationError, match="frozen"):
        info.cpu_cores = 4
    assert HardwareInfo.model_json_schema()["properties"]["peak_flops"]["description"]


# --- MFU -------------------------------------------------------------------------------------

GPU_PEAKS = {"fp32": 50e12, "tf32": 400e12, "bf16": 800e12, "fp16": 800e12}


@pytest.mark.parametrize(
    ("precision", "tf32", "peak"),
    [
        ("32-true", False, "fp32"),
        ("32-true", True, "tf32"),
        ("bf16-mixed", True, "bf16"),
        ("bf16-true", False, "bf16"),
        ("16-mixed", False, "fp16"),
    ],
)
def test_mfu_on_cuda_uses_the_precisions_peak(precision: Any, tf32: bool, peak: str) -> None:
    info = make_info("cuda", GPU_PEAKS)
    assert peak_key(precision, "cuda", tf32=tf32) == peak
    assert mfu(GPU_PEAKS[peak] / 4, info, precision, tf32=tf32) == pytest.approx(0.25)


def test_mfu_on_cpu_ignores_tf32() -> None:
    info = make_info("cpu", {"fp32": 1e11, "bf16": 2e11})
    assert mfu(5e10, info, "32-true", tf32=True) == pytest.approx(0.5)
    assert mfu(5e10, info, "bf16-mixed") == pytest.approx(0.25)


def test_mfu_reads_the_process_tf32_setting_by_default() -> None:
    info = make_info("cuda", GPU_PEAKS)
    expected = "tf32" if hardware.tf32_enabled() else "fp32"
    assert mfu(1e12, info, "32-true") == pytest.approx(1e12 / GPU_PEAKS[expected])


def test_mfu_without_a_peak_for_the_precision_is_a_clear_error() -> None:
    info = make_info("cpu", {"fp32": 1e11}, fp16_supported=False)
    with pytest.raises(ConfigError, match=r"precision '16-mixed' needs the measured fp16 peak"):
        mfu(1e9, info, "16-mixed")


@pytest.mark.parametrize("achieved", [-1.0, float("nan"), float("inf")])
def test_mfu_rejects_nonsense_rates(achieved: float) -> None:
    with pytest.raises(ValueError, match=r"achieved_flops_per_s must be a finite number >= 0"):
        mfu(achieved, make_info(), "32-true")


def test_unknown_precision_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"precision must be one of .* but got 'fp8'"):
        peak_key("fp8", "cpu")  # type: ignore[arg-type]


# --- TF32 switching --------------------------------------------------------------------------


def test_tf32_switch_restores_the_flags_under_either_api() -> None:
    """Measuring tf32 flips cuBLAS flags and must leave them as found, in the API in use.

    Runs in a subprocess: once torch's new TF32 API is used the legacy flag can no longer
    be read in that process, which must not leak into this test session.
    """
    script = textwrap.dedent(
        """
        import torch
        from autotune.hardware import _tf32_for, tf32_enabled
        cuda = torch.device("cuda")
        m = torch.backends.cuda.matmul
        with _tf32_for(cuda, True):
            assert tf32_enabled()
        assert not tf32_enabled() and m.allow_tf32 is False
        with _tf32_for(torch.device("cpu"), True):
            assert not tf32_enabled()
        if hasattr(m, "fp32_precision"):
            m.fp32_precision = "tf32"  # the user speaks the new API
            with _tf32_for(cuda, False):
                assert not tf32_enabled()
            assert tf32_enabled() and m.fp32_precision == "tf32"
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- CUDA ------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_probe_measures_tf32_and_fast_fp16(tmp_path: Path) -> None:
    tf32_before = hardware.tf32_enabled()
    info = probe_hardware("cuda", cache_dir=tmp_path, budget_s=3.0)
    assert info.device.kind == "cuda"
    assert info.device.count == torch.cuda.device_count()
    assert info.device.memory_bytes is not None and info.device.memory_bytes > 0
    assert set(info.peak_flops) >= {"fp32", "tf32", "fp16"}
    assert info.fp16_supported
    assert info.bf16_supported == torch.cuda.is_bf16_supported()
    assert info.bf16_supported == ("bf16" in info.peak_flops)
    assert info.peak_flops["fp16"] > info.peak_flops["fp32"]
    assert info.memory_bandwidth_bytes_per_s > 1e11  # any CUDA GPU beats 100 GB/s
    assert hardware.tf32_enabled() == tf32_before
