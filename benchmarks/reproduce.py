"""Does ``autotune run -c tuned.yaml`` reproduce the throughput tuned.yaml records?

    python -m benchmarks.reproduce TASK TUNED_YAML [--runs 3] [--most 9] [--steps 60]

Runs the real command line, ``autotune run TASK -c TUNED_YAML --steps N --json F``,
interleaved with the Task's baseline (``autotune run TASK --steps N --json F``), ``--runs``
times each, each in a fresh process, and more pairs (up to ``--most``) while the tuned
runs' samples/s is unsettled, by the rule the search's confirmation uses
(:data:`~autotune.search._confirm.RATE_SETTLED_ERROR`): this machine's speed drifts over
seconds, so three runs can all land in one slow or fast spell. Compares:

1. the tuned runs' median samples/s (the runtime's median after burn-in, as the search's
   confirmation measures it) with ``measured.throughput_samples_per_s``;
2. the baseline's median samples/s with the one tuned.yaml records for it: the same config
   then and now, so its ratio is the machine's own change since the search;
3. the re-measured throughput speed-up over the baseline (per interleaved pair) with the
   one tuned.yaml records (``measured.throughput_speedup``): a ratio of two runs minutes
   apart, so it holds even when the machine as a whole got faster or slower since the
   search, which (1) cannot tell from a regression (``autotune check`` does the same for
   the time-to-target speed-up).

Goal (issue 5): within +-10%. Exit code 0 when (1) is met, 1 when it is not. Run it on a
quiet machine: another process on the cores slows 2-thread torch by far more than 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autotune._tuned_view import REPRODUCTION_TOLERANCE
from autotune.config import TunedConfig, load_tuned_config
from autotune.search._confirm import RATE_SETTLED_ERROR, settled

TOLERANCE = REPRODUCTION_TOLERANCE  # the bound `autotune run -c` itself reports against
RUN_TIMEOUT_S = 600.0  # one `autotune run`; a hung one must not hang the benchmark
console = Console()


@dataclass(frozen=True)
class Reproduced:
    """samples/s of each fresh-process run, tuned and baseline in pairs."""

    tuned: list[float]
    baseline: list[float]

    @property
    def pair_speedups(self) -> list[float]:
        return [t / b for t, b in zip(self.tuned, self.baseline, strict=True)]


def main() -> int:
    args = _arguments()
    tuned = load_tuned_config(args.tuned)
    if tuned.measured is None:
        console.print(f"{args.tuned} records no measurement: run `autotune search` to get one.")
        return 2
    with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
        found = reproduce(args.task, args.tuned, (args.runs, args.most), args.steps, Path(scratch))
    console.print(_table(tuned, found))
    return (
        0 if within(statistics.median(found.tuned), tuned.measured.throughput_samples_per_s) else 1
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("task", type=Path, help="the task file the config was tuned for")
    parser.add_argument("tuned", type=Path, help="the tuned.yaml to check")
    parser.add_argument("--runs", type=int, default=3, help="interleaved pairs, at least")
    parser.add_argument("--most", type=int, default=9, help="pairs at most, while unsettled")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    return parser.parse_args()


def within(value: float, recorded: float, tolerance: float = TOLERANCE) -> bool:
    """Whether ``value`` is within ``tolerance`` (a fraction) of ``recorded``."""
    return abs(value / recorded - 1.0) <= tolerance


def reproduce(
    task: Path, tuned: Path, runs: tuple[int, int], steps: int, scratch: Path
) -> Reproduced:
    """Interleaved (tuned, baseline) pairs of ``autotune run``: ``runs[0]`` at least, then
    more up to ``runs[1]`` while the tuned samples/s is unsettled. Tuned first in even pairs
    and baseline first in odd ones, so neither always runs on a warmer machine."""
    least, most = runs
    rates: dict[str, list[float]] = {"tuned": [], "baseline": []}
    for k in range(max(least, most)):
        if k >= least and settled(rates["tuned"], RATE_SETTLED_ERROR):
            break
        order = ("tuned", "baseline") if k % 2 == 0 else ("baseline", "tuned")
        for which in order:
            config = ["-c", str(tuned)] if which == "tuned" else []
            rate = run_once(task, config, steps, scratch / f"{which}-{k}.json", scratch)
            rates[which].append(rate)
            console.print(f"pair {k + 1}: {which} {rate:,.1f} samples/s")
    return Reproduced(rates["tuned"], rates["baseline"])


def run_once(task: Path, config: list[str], steps: int, out: Path, scratch: Path) -> float:
    """One ``autotune run`` in a fresh process; its median samples/s from ``--json``."""
    return float(run_json(task, config, steps, out, scratch)["summary"]["samples_per_s"])


def run_json(task: Path, config: list[str], steps: int, out: Path, scratch: Path) -> dict[str, Any]:
    """One ``autotune run`` in a fresh process (scratch files in ``scratch``); its
    ``--json`` record, ``{summary, steps}``. Raises RuntimeError, with its stderr's end,
    where it fails."""
    command = [sys.executable, "-m", "autotune", "run", str(task), *config]
    command += ["--steps", str(steps), "--json", str(out)]
    env = {**os.environ, "TMPDIR": str(scratch), "TORCHINDUCTOR_CACHE_DIR": str(scratch)}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    record: dict[str, Any] = json.loads(out.read_text())
    return record


def _table(tuned: TunedConfig, found: Reproduced) -> Table:
    measured = tuned.measured
    if measured is None:  # main() checked; keeps the type checker honest
        raise ValueError("tuned.yaml records no measurement")
    table = Table(title="autotune run -c tuned.yaml against what tuned.yaml records")
    for column in (
        "",
        "tuned.yaml",
        "re-measured: median (range)",
        "ratio",
        f"within {TOLERANCE:.0%}",
    ):
        table.add_column(column)
    rate = statistics.median(found.tuned)
    table.add_row(
        "samples/s",
        f"{measured.throughput_samples_per_s:,.1f}",
        _spread(found.tuned, ",.1f"),
        f"{rate / measured.throughput_samples_per_s:.0%}",
        _yes(within(rate, measured.throughput_samples_per_s)),
    )
    if measured.baseline is not None:  # the same config then and now: the machine's change
        base, then = statistics.median(found.baseline), measured.baseline.throughput_samples_per_s
        table.add_row(
            "baseline samples/s",
            f"{then:,.1f}",
            _spread(found.baseline, ",.1f"),
            f"{base / then:.0%}",
            _yes(within(base, then)),
        )
    recorded = measured.throughput_speedup
    speedup = statistics.median(found.pair_speedups)
    table.add_row(
        "throughput speed-up vs baseline",
        "-" if recorded is None else f"{recorded.median:.2f}x",
        _spread(found.pair_speedups, ".2f", "x"),
        "-" if recorded is None else f"{speedup / recorded.median:.0%}",
        "-" if recorded is None else _yes(within(speedup, recorded.median)),
    )
    return table


def _spread(values: list[float], fmt: str, unit: str = "") -> str:
    median = statistics.median(values)
    return f"{median:{fmt}}{unit} ({min(values):{fmt}}-{max(values):{fmt}}, n={len(values)})"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


if __name__ == "__main__":
    sys.exit(main())
