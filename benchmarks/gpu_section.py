"""The GPU section of BENCHMARKS.md, from the folder ``scripts/gpu_check.sh`` fills.

    python -m benchmarks.gpu_section OUT_DIR          # writes benchmarks/results/gpu/<task>.md

``OUT_DIR`` holds ``probe.json`` (``autotune probe --json``), ``tuned.yaml`` (``autotune
search -o``) and ``search_s.txt`` (the search's wall seconds). The section names the GPU
and its measured matmul peaks, the model's size, the search's pick and its confirmed
speed-ups with their spreads, its peak memory, and its MFU against the measured bf16 peak
(issue 7) beside the MFU against its own precision's peak. ``python -m benchmarks.suite
--markdown-only`` puts every file in ``benchmarks/results/gpu/`` on the page.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autotune.config import Measured, Spread, TrainConfig, TunedConfig, load_tuned_config
from autotune.profiler import ProbeReport
from autotune.search._progress import describe

__all__ = ["GPU_RESULTS", "section"]

GPU_RESULTS = Path(__file__).resolve().parent / "results" / "gpu"


class SectionError(Exception):
    """The folder lacks what a section needs; the message says what to run."""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder scripts/gpu_check.sh wrote")
    parser.add_argument("--into", type=Path, default=GPU_RESULTS)
    args = parser.parse_args()
    try:
        text, name = _from_folder(args.out)
    except SectionError as error:
        print(f"error: {error}")
        return 2
    args.into.mkdir(parents=True, exist_ok=True)
    (args.into / f"{name}.md").write_text(text)
    print(text)
    return 0


def _from_folder(out: Path) -> tuple[str, str]:
    needed = [out / "probe.json", out / "tuned.yaml", out / "search_s.txt"]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise SectionError(f"{out} has no {', '.join(missing)}; run scripts/gpu_check.sh")
    report = ProbeReport.model_validate_json(needed[0].read_text())
    tuned = load_tuned_config(needed[1])
    search_s = float(needed[2].read_text())
    return section(report, tuned, search_s), report.task


def section(report: ProbeReport, tuned: TunedConfig, search_s: float) -> str:
    """The markdown section for one GPU search."""
    measured = tuned.measured
    if measured is None:
        raise SectionError("tuned.yaml has no measured section; it did not come from a search")
    peaks = report.hardware.peak_flops
    achieved = report.model.flops_per_sample * measured.throughput_samples_per_s
    bf16 = peaks.get("bf16")
    device = report.hardware.device
    lines = [
        f"## GPU: {report.task} on {device.count}x {device.name}",
        "",
        f"{report.model.total_params / 1e6:.1f}M parameters, "
        f"{_flop(report.model.flops_per_sample)} per sample. Measured matmul peaks: "
        + ", ".join(f"{key} {_flop(value)}/s" for key, value in sorted(peaks.items()))
        + f". Search: {search_s:.0f} s wall (`scripts/gpu_check.sh`).",
        "",
        "| | config | time to target | speed-up (median, range, n) | throughput ratio "
        "| samples/s | peak memory | MFU (own precision) | MFU vs bf16 peak |",
        "|---|---|---|---|---|---|---|---|---|",
        _row("autotune", tuned.train, measured, achieved, bf16),
    ]
    if measured.baseline is not None:
        base = measured.baseline
        lines.append(
            f"| baseline | `{describe(base.train)}` | {_seconds(base.time_to_target_s)} | 1.00x "
            f"| 1.00x | {base.throughput_samples_per_s:,.1f} | - | - | - |"
        )
    target = "-" if measured.target_loss is None else f"{measured.target_loss:.4f}"
    lines += ["", f"Target loss {target}: the baseline's, as the search set it.", ""]
    return "\n".join(lines)


def _row(
    name: str, train: TrainConfig, measured: Measured, achieved: float, bf16: float | None
) -> str:
    memory = measured.peak_memory_bytes
    shown_memory = "-" if memory is None else f"{memory / 2**20:,.0f} MiB"
    own = f"{measured.mfu:.1%}" if measured.mfu is not None else "-"
    vs_bf16 = f"{achieved / bf16:.1%}" if bf16 else "no bf16 peak"
    return (
        f"| {name} | `{describe(train)}` | {_seconds(measured.time_to_target_s)} "
        f"| {_spread(measured.speedup_spread)} | {_spread(measured.throughput_speedup)} "
        f"| {measured.throughput_samples_per_s:,.1f} | {shown_memory} | {own} | {vs_bf16} |"
    )


def _spread(spread: Spread | None) -> str:
    if spread is None:
        return "-"
    return f"**{spread.median:.2f}x** ({spread.low:.2f}-{spread.high:.2f}, n={spread.n})"


def _flop(value: float) -> str:
    """FLOP in the unit that keeps three digits: 790 TFLOP, 121.0 GFLOP, 0.5 MFLOP."""
    for scale, unit in ((1e12, "TFLOP"), (1e9, "GFLOP")):
        if value >= scale:
            return (
                f"{value / scale:.0f} {unit}"
                if value >= 100 * scale
                else f"{value / scale:.1f} {unit}"
            )
    return f"{value / 1e6:.1f} MFLOP"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    raise SystemExit(main())
