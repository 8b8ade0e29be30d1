"""Forked trial workers against fresh interpreters: start-up saved, throughput unchanged.

    python -m benchmarks.fork_bench [--task examples/tiny_gpt.py] [--tuned tuned.yaml]
        [--rounds 4] [--steps 80] [--cli] [--cold-fork] [--watched]

Runs one config (the tuned.yaml's, else the Task's baseline) as supervised trials,
alternately forked from a :class:`~autotune.trial.ForkServer` and started as a fresh
interpreter, ``--rounds`` times each, in rotating order (machine drift hits all alike);
with ``--cli``, also as ``autotune run TASK [-c TUNED] --steps N --json F`` itself, the
command a user reproduces a tuned.yaml with; with ``--cold-fork``, also forked from a
server that did not import the task file (each child imports it): what preloading the
task's imports (scikit-learn, numpy's BLAS) changes; with ``--watched`` (needs ``--tuned``),
also forked and told tuned.yaml's target loss, ending at it as the search's confirmation
runs do, samples/s read from its streamed steps as the search reads them. Prints each
launcher's start-up (launch to first step, less that step; not known for ``autotune run``)
and samples/s, median and range. A forked worker must start sooner and measure the same
samples/s: a throughput a trial records is one `autotune run` must reproduce.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autotune._hugepages import restart_for_measuring
from autotune.config import TrainConfig, TunedConfig, load_tuned_config
from autotune.search._measure import TargetWatch, Trialist, measured
from autotune.task import load_task
from autotune.trial import PLAIN, ForkServer, TrialResult
from benchmarks.reproduce import run_once

ROOT = Path(__file__).resolve().parents[1]
console = Console()
_WATCH_CAP_S = 600.0  # a watched run's time cap: --steps, not the clock, is meant to end it
# One run's (start-up seconds, or None where unknown; samples/s).
Sample = tuple[float | None, float]


def main() -> int:
    args = _arguments()
    tuned = None if args.tuned is None else load_tuned_config(args.tuned)  # read once
    config = tuned.train if tuned is not None else _baseline(args.task)
    with tempfile.TemporaryDirectory(prefix="fork-bench-") as scratch:
        forked = Trialist(args.task, Path(scratch) / "forked", seed=0)
        fresh = Trialist(args.task, Path(scratch) / "fresh", seed=0)
        fresh.close()
        fresh.launcher = PLAIN
        launchers = {"forked": _trial(forked, config, args), "fresh": _trial(fresh, config, args)}
        cold = _cold(args.task, Path(scratch)) if args.cold_fork else None
        if cold is not None:
            launchers["forked, task not preloaded"] = _trial(cold, config, args)
        if args.cli:
            launchers["autotune run"] = _cli(args, Path(scratch))
        if args.watched:
            launchers["forked, told the target"] = _watched(forked, config, _target(tuned), args)
        with forked, cold or contextlib.nullcontext():
            runs = _interleaved(launchers, args.rounds)
    console.print(_table(runs))
    return 0


def _trial(trials: Trialist, config: TrainConfig, args: argparse.Namespace) -> Callable[[], Sample]:
    def run() -> Sample:
        result = trials.run(config, args.steps, measure_memory=False)
        if result.summary is None:
            raise SystemExit(f"a trial did not finish: {result.reason}")
        return _startup_s(result), result.summary.samples_per_s

    return run


def _watched(
    trials: Trialist, config: TrainConfig, target: float, args: argparse.Namespace
) -> Callable[[], Sample]:
    """Runs to tuned.yaml's ``target`` as the search's confirmation does (``--steps``
    bounds it)."""

    def run() -> Sample:
        result = trials.run(config, args.steps, watch=TargetWatch(target, _WATCH_CAP_S))
        found = measured(result, config, target)
        if found is None or found.time_to_target_s is None:
            raise SystemExit(f"a run told the target did not reach it: {result.reason}")
        return _startup_s(result), found.samples_per_s

    return run


def _target(tuned: TunedConfig | None) -> float:
    measured_section = None if tuned is None else tuned.measured
    if measured_section is None or measured_section.target_loss is None:
        raise SystemExit("--watched needs --tuned with a measured target loss (a searched one)")
    return measured_section.target_loss


def _cli(args: argparse.Namespace, scratch: Path) -> Callable[[], Sample]:
    config = [] if args.tuned is None else ["-c", str(args.tuned)]
    count = itertools.count()

    def run() -> Sample:
        out = scratch / f"cli-{next(count)}.json"
        return None, run_once(args.task, config, args.steps, out, scratch)

    return run


def _cold(task: Path, scratch: Path) -> Trialist:
    """Trials forked from a server that did not import the task file (``--cold-fork``)."""
    cold = Trialist(task, scratch / "cold", seed=0)
    cold.close()
    cold.launcher = ForkServer(task, scratch / "cold-server.log", warm_task=False)
    return cold


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, default=ROOT / "examples" / "tiny_gpt.py")
    parser.add_argument("--tuned", type=Path, help="tuned.yaml whose config to run")
    parser.add_argument("--rounds", type=int, default=4, help="runs per launcher")
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per run")
    parser.add_argument("--cli", action="store_true", help="also run `autotune run` itself")
    parser.add_argument(
        "--cold-fork",
        action="store_true",
        help="also fork from a server that did not import the task file",
    )
    parser.add_argument(
        "--watched",
        action="store_true",
        help="also fork runs told the tuned.yaml's target, as the search's confirmation does",
    )
    return parser.parse_args()


def _baseline(task: Path) -> TrainConfig:
    return TrainConfig.model_validate(load_task(task).baseline_config())


def _interleaved(
    launchers: dict[str, Callable[[], Sample]], rounds: int
) -> dict[str, list[Sample]]:
    runs: dict[str, list[Sample]] = {name: [] for name in launchers}
    names = list(launchers)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            sample = launchers[name]()
            runs[name].append(sample)
            console.print(f"round {round_}: {name} {sample[1]:.1f} samples/s")
    return runs


def _startup_s(result: TrialResult) -> float:
    first = result.first_step_s or 0.0
    return first - result.steps[0].elapsed_s if result.steps else first


def _shown(values: list[float], digits: int) -> str:
    median, low, high = (f"{v:.{digits}f}" for v in (statistics.median(values), *_ends(values)))
    return f"{median} ({low}-{high})"


def _ends(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def _table(runs: dict[str, list[Sample]]) -> Table:
    table = Table(title="the same config, launched each way, interleaved (median, range)")
    for col in ("worker", "runs", "start-up s", "samples/s"):
        table.add_column(col)
    for name, samples in runs.items():
        starts = [s for s, _ in samples if s is not None]
        rates = [rate for _, rate in samples]
        shown = _shown(starts, 2) if starts else "-"
        table.add_row(name, str(len(samples)), shown, _shown(rates, 1))
    return table


if __name__ == "__main__":
    restart_for_measuring()  # measure under the allocator the CLI trains with
    sys.exit(main())
