"""Forked trial workers against fresh interpreters: start-up saved, throughput unchanged.

    python -m benchmarks.fork_bench [--task examples/tiny_gpt.py] [--tuned tuned.yaml]
        [--rounds 4] [--steps 80]

Runs one config (the tuned.yaml's, else the Task's baseline) as supervised trials,
alternately forked from a :class:`~autotune.trial.ForkServer` and started as a fresh
interpreter, ``--rounds`` times each, in alternating order (machine drift hits both
alike). Prints each launcher's start-up (launch to first step, less that step) and
samples/s, median and range. A forked worker must start sooner and measure the same
samples/s: a throughput a trial records is one `autotune run` must reproduce.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autotune.config import TrainConfig, load_tuned_config
from autotune.search._measure import Trialist
from autotune.task import load_task
from autotune.trial import PLAIN, TrialResult

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def main() -> int:
    args = _arguments()
    config = _config(args)
    with tempfile.TemporaryDirectory(prefix="fork-bench-") as scratch:
        forked = Trialist(args.task, Path(scratch) / "forked", seed=0)
        fresh = Trialist(args.task, Path(scratch) / "fresh", seed=0)
        fresh.close()
        fresh.launcher = PLAIN
        with forked:
            runs = _interleaved({"forked": forked, "fresh": fresh}, config, args)
    console.print(_table(runs))
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, default=ROOT / "examples" / "tiny_gpt.py")
    parser.add_argument("--tuned", type=Path, help="tuned.yaml whose config to run")
    parser.add_argument("--rounds", type=int, default=4, help="runs per launcher")
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per run")
    return parser.parse_args()


def _config(args: argparse.Namespace) -> TrainConfig:
    if args.tuned is not None:
        return load_tuned_config(args.tuned).train
    return TrainConfig.model_validate(load_task(args.task).baseline_config())


def _interleaved(
    launchers: dict[str, Trialist], config: TrainConfig, args: argparse.Namespace
) -> dict[str, list[TrialResult]]:
    runs: dict[str, list[TrialResult]] = {name: [] for name in launchers}
    names = list(launchers)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            result = launchers[name].run(config, args.steps, measure_memory=False)
            if result.summary is None:
                raise SystemExit(f"{name} run {round_} did not finish: {result.reason}")
            runs[name].append(result)
            console.print(f"round {round_}: {name} {result.summary.samples_per_s:.1f} samples/s")
    return runs


def _startup_s(result: TrialResult) -> float:
    first = result.first_step_s or 0.0
    return first - result.steps[0].elapsed_s if result.steps else first


def _shown(values: list[float], digits: int) -> str:
    median, low, high = (f"{v:.{digits}f}" for v in (statistics.median(values), *_ends(values)))
    return f"{median} ({low}-{high})"


def _ends(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def _table(runs: dict[str, list[TrialResult]]) -> Table:
    table = Table(title="the same config, forked and fresh, interleaved (median, range)")
    for col in ("worker", "runs", "start-up s", "samples/s"):
        table.add_column(col)
    for name, results in runs.items():
        rates = [r.summary.samples_per_s for r in results if r.summary is not None]
        starts = [_startup_s(r) for r in results]
        table.add_row(name, str(len(results)), _shown(starts, 2), _shown(rates, 1))
    return table


if __name__ == "__main__":
    sys.exit(main())
