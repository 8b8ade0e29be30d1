"""benchmarks/gpu_section.py and the GPU workload: what a lent GPU's run turns into.

The CUDA run itself is scripts/gpu_check.sh on a GPU machine; these run on any CPU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from autotune.config import DeviceInfo, save_tuned_config
from benchmarks import gpu_section
from benchmarks._markdown import render
from tests._tuned import make_tuned

_ROOT = Path(__file__).resolve().parents[1]


def _report() -> SimpleNamespace:
    device = DeviceInfo(kind="cuda", name="NVIDIA H200", count=1, memory_bytes=141 << 30)
    hardware = SimpleNamespace(device=device, peak_flops={"bf16": 7.9e14, "tf32": 3.9e14})
    model = SimpleNamespace(total_params=116_000_000, flops_per_sample=1.0e12)
    return SimpleNamespace(task="gpt2_116m", hardware=hardware, model=model)


def test_the_section_names_the_gpu_and_gives_mfu_against_the_bf16_peak() -> None:
    text = gpu_section.section(_report(), make_tuned(), 251.0)  # type: ignore[arg-type]
    assert text.startswith("## GPU: gpt2_116m on 1x NVIDIA H200")
    assert "116.0M parameters" in text and "bf16 790 TFLOP/s" in text and "251 s wall" in text
    assert "**2.17x** (1.90-2.30, n=3)" in text  # the confirmed time-to-target speed-up
    # 1e12 FLOP/sample x 812.5 samples/s over the 7.9e14 bf16 peak
    assert f"{1e12 * 812.5 / 7.9e14:.1%}" in text
    assert "| 23.1% |" in text  # the MFU tuned.yaml records, against its own precision's peak
    assert "| baseline |" in text and "9.1 s" in text


def test_a_folder_without_the_search_says_what_to_run(tmp_path: Path) -> None:
    save_tuned_config(make_tuned(), tmp_path / "tuned.yaml")
    with pytest.raises(gpu_section.SectionError, match="no probe.json, search_s.txt; run scripts"):
        gpu_section._from_folder(tmp_path)


def test_the_page_puts_gpu_sections_after_the_workloads() -> None:
    page = render([], "cmd", "", ["## GPU: gpt2_116m on 1x NVIDIA H200\n\ntable"])
    assert page.rstrip().endswith("## GPU: gpt2_116m on 1x NVIDIA H200\n\ntable")


def test_the_gpu_workload_has_over_100m_parameters() -> None:
    from autotune.task import load_task

    task = load_task(_ROOT / "benchmarks" / "workloads" / "gpt2_116m.py")
    with torch.device("meta"):  # no memory: only the shapes are counted
        model = task.build_model()
    params = {id(p): p.numel() for p in model.parameters()}  # tied weights once
    assert sum(params.values()) > 100_000_000
