"""BENCHMARKS.md from the suite's result files (``benchmarks/results/suite/*.json``)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["render"]

_COLUMNS = (
    "contender",
    "config",
    "time to target: speed-up (median, range, n)",
    "throughput ratio",
    "fewer samples to target",
    "peak memory",
    "MFU",
    "search wall",
    "trials run",
    "pruned before running",
)


def render(
    results: Sequence[dict[str, Any]],
    command: str,
    findings: str = "",
    gpu_sections: Sequence[str] = (),
) -> str:
    """The whole page: how it was made, the hand-written ``findings`` (what the numbers
    mean; kept beside the result files), one section per workload, then the GPU sections
    (``benchmarks/gpu_section.py``, each naming its GPU)."""
    lines = ["# Benchmarks", ""]
    lines += _preamble(results, command)
    lines += _at_a_glance(results)
    if findings.strip():
        lines += [findings.strip(), ""]
    for result in results:
        lines += _workload(result)
    for text in gpu_sections:
        lines += [text.strip(), ""]
    return "\n".join(lines) + "\n"


def _preamble(results: Sequence[dict[str, Any]], command: str) -> list[str]:
    if not results:
        return ["No results yet: run `python -m benchmarks.suite`.", ""]
    machine = results[0]["machine"]
    devices = "; ".join(sorted({r["machine"]["device"] for r in results}))
    dates = sorted({r["date"] for r in results})
    return [
        f"Produced by `{command}` (then `python -m benchmarks.suite --markdown-only`), "
        f"{dates[0]} to {dates[-1]}.",
        "",
        f"- **Machine:** {devices}, {machine['cores']} cores; no GPU (each workload's "
        "section names the one it ran on).",
        f"- **Versions:** Python {machine['python']}, torch {machine['torch']}, "
        f"optuna {machine['optuna']}, pytorch-lightning {machine['lightning']}.",
        "- **Target:** the loss the Task's baseline reaches (set by autotune's baseline run); "
        "every contender is timed to the same target, through the same runtime and "
        "supervised trial processes.",
        "- **Ratios** are per round against the baseline run in the same round, then the "
        "median over the interleaved rounds, with the range. A run still short of the "
        "target at 2x the baseline's time (and at 10 s) counts as missed.",
        "- **Why:** time to target = samples to target / samples per second, so each round's "
        "speed-up is its throughput ratio times *fewer samples to target* (the baseline's "
        "samples to the target over the contender's; below 1x it needed more): the first "
        "factor is what the systems settings bought, the second what the batch and LR did.",
        "- **Contenders:** *baseline* = the Task's own setup; *autotune* = `autotune search` "
        "with the default space and budget; *grid* = the fastest point of an exhaustive grid "
        "over `benchmarks/spaces/suite_grid.yaml` that passes the search's stability check "
        "(from 2026-12-01: a bf16 point must agree with its fp32 run); *lightning* = Lightning's "
        "`Tuner.scale_batch_size` + `Tuner.lr_find` pick (batch scaling bounded by the default "
        "space's largest micro-batch, since a CPU never raises out-of-memory), precision left "
        "as the baseline's; its trials are the batch sizes it tried plus the LR range test.",
        "",
    ]


_GLANCE = (
    "workload",
    "machine",
    "autotune",
    "grid's best",
    "Lightning's pick",
    "autotune vs grid",
    "autotune vs Lightning",
)


def _at_a_glance(results: Sequence[dict[str, Any]]) -> list[str]:
    """One row per section: each contender's time-to-target speed-up over the baseline
    (median over the rounds), then autotune's standing against the grid and Lightning,
    so the claim "ahead of Lightning's tuner on every workload" is checkable in one look."""
    if not results:
        return []
    lines = [
        "## At a glance",
        "",
        "Time-to-target speed-up over the Task's baseline (median of the interleaved "
        "rounds); the last two columns compare median times to the target. Each row's "
        "section below has the range, throughput, memory, MFU and cost.",
        "",
        "| " + " | ".join(_GLANCE) + " |",
        "|" + "---|" * len(_GLANCE),
    ]
    for result in results:
        by_name = {row["contender"]: row for row in result["rows"]}
        auto, grid, light = by_name["autotune"], by_name["grid"], by_name["lightning"]
        cells = [
            result["workload"],
            result["machine"]["device"],
            *(_median_ratio(row) for row in (auto, grid, light)),
            _SHARE.of(auto, grid),
            _LEAD.of(auto, light),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _median_ratio(row: dict[str, Any]) -> str:
    return "never reached" if row["speedup"] is None else f"{row['speedup'][0]:.2f}x"


def _workload(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    by_name = {row["contender"]: row for row in rows}
    base_tt = result["baseline_time_to_target_s"]
    lines = [
        # the machine in the heading: one workload may have sections from two hosts
        f"## {result['workload']} (`{result['task']}`), {result['machine']['device']}",
        "",
        f"{result['parameters']:,} parameters, {result['flops_per_sample'] / 1e6:.1f} MFLOP "
        f"per sample; target loss {result['target_loss']:.4f}, which the baseline reached "
        f"in {base_tt:.1f} s on this machine ({result['machine']['device']}). "
        f"Measured {result['date']} at commit `{result.get('commit', '?')}`.",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += ["| " + " | ".join(_cells(row, by_name["baseline"])) + " |" for row in rows]
    lines += ["", *_comparisons(result, by_name), ""]
    return lines


def _cells(row: dict[str, Any], base: dict[str, Any]) -> list[str]:
    cost = row["cost"] or {}
    missed = sum(1 for t in row["times_to_target_s"] if t is None)
    speed = _ratio(row["speedup"])
    if missed:
        speed += f"; missed {missed}/{len(row['times_to_target_s'])}"
    return [
        row["contender"],
        f"`{row['config']}`",
        speed,
        _ratio(row["throughput_ratio"]),
        _sample_factor(row, base),
        _bytes(row["peak_memory_bytes"]),
        "-" if row["mfu"] is None else f"{row['mfu']:.1%}",
        "-" if cost.get("wall_s") is None else f"{cost['wall_s']:.0f} s",
        "-" if cost.get("trials_run") is None else str(cost["trials_run"]),
        "-" if cost.get("pruned") is None else str(cost["pruned"]),
    ]


def _sample_factor(row: dict[str, Any], base: dict[str, Any]) -> str:
    """Per round, the baseline's samples to the target over ``row``'s (time to target x
    samples/s on each side), as a spread. A round without both runs at the target is left
    out; a file whose samples/s list skips a failed run cannot be paired by round: "-"."""
    sides = (row, base)
    if not any(row["times_to_target_s"]):
        return "never reached"
    if any(len(s["samples_per_s"]) != len(s["times_to_target_s"]) for s in sides):
        return "-"
    factors = [
        (b_tt * b_rate) / (tt * rate)
        for tt, rate, b_tt, b_rate in zip(
            row["times_to_target_s"],
            row["samples_per_s"],
            base["times_to_target_s"],
            base["samples_per_s"],
            strict=True,
        )
        if tt and b_tt
    ]
    if not factors:
        return "never reached"
    return _ratio([statistics.median(factors), min(factors), max(factors), len(factors)])


def _ratio(spread: list[float] | None) -> str:
    if spread is None:
        return "never reached"
    median, low, high, n = spread
    return f"**{median:.2f}x** ({low:.2f}-{high:.2f}, n={int(n)})"


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def _comparisons(result: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> list[str]:
    auto, grid, light = by_name["autotune"], by_name["grid"], by_name["lightning"]
    lines = [
        f"- autotune vs grid: {_AGAINST_GRID.of(auto, grid)}, found in "
        f"{_cost_fraction(auto, grid)} of the grid's wall time ({result['grid_points']} grid "
        "points).",
        f"- autotune vs Lightning's tuner: {_VERSUS.of(auto, light)}.",
    ]
    if result.get("lightning_reused_from"):
        lines.append(
            "- Lightning's pick and its tuner's wall time are those of the run at commit "
            f"`{result['lightning_reused_from']}` (`--reuse-lightning`); its re-runs are "
            "this run's."
        )
    measured = result.get("tuned_measured_samples_per_s")
    if measured and auto["samples_per_s"]:
        rate = statistics.median(auto["samples_per_s"])
        lines.append(
            f"- tuned.yaml reproduction: the re-runs of autotune's pick measured "
            f"{rate / measured:.0%} of the throughput its tuned.yaml records."
        )
    return lines


def _median_time(row: dict[str, Any]) -> float | None:
    times = [t for t in row["times_to_target_s"] if t is not None]
    return statistics.median(times) if times else None


def _cost_fraction(auto: dict[str, Any], grid: dict[str, Any]) -> str:
    return f"**{auto['cost']['wall_s'] / grid['cost']['wall_s']:.0%}**"


@dataclass(frozen=True)
class _Standing:
    """How one sentence or cell words autotune's pick against another contender's, by
    median time to the target: when autotune's missed, when the other's missed, and from
    the ratio (their time / autotune's) when both reached it."""

    mine_missed: str
    theirs_missed: str
    ratio: Callable[[float], str]

    def of(self, auto: dict[str, Any], other: dict[str, Any]) -> str:
        mine, theirs = _median_time(auto), _median_time(other)
        if mine is None:
            return self.mine_missed
        if theirs is None:
            return self.theirs_missed
        return self.ratio(theirs / mine)


def _verdict(ratio: float) -> str:
    return "ahead" if ratio > 1 else "**behind**"


_SHARE = _Standing("autotune missed", "grid missed", lambda r: f"{r:.0%}")
_LEAD = _Standing(
    "**behind** (autotune missed)",
    "ahead (Lightning never reached)",
    lambda r: f"{_verdict(r)}, {r:.2f}x",
)
_AGAINST_GRID = _Standing(
    "autotune's pick missed the target in its re-runs",
    "no grid point reached the target, autotune's pick did",
    lambda r: f"autotune's best is **{r:.0%}** of the grid's best (time to target)",
)
_VERSUS = _Standing(
    "autotune's pick missed the target",
    "Lightning's pick never reached the target within 2x the baseline's time",
    lambda r: f"autotune is {_verdict(r)}: {r:.2f}x Lightning's time to target",
)
