"""What a run to the target costs when the worker ends it there, against when the
supervisor does.

    python -m benchmarks.stop_bench [--task examples/mlp_digits.py]
        [--tuned benchmarks/results/searches/mlp_digits_bf16_tuned_z.yaml] [--rounds 10]

Runs one config (the tuned.yaml's; with ``--tuned ''``, the Task's baseline) to the target
loss (the tuned.yaml's, else the one the baseline reaches in its steps) as trials, two
ways in alternating order: with a :class:`~autotune.search._measure.TargetWatch`, whose
target the worker is told (``TrialSpec.stop_at``) so that it ends the run at the step the
watch stops it; and with the same watch hidden behind a plain function, so that the run
goes on until the supervisor next reads its progress (``POLL_S``) and stops it. Prints
each way's wall clock per run (launch to reaped), time to the target (the run's own clock)
and steps recorded, median and range. The steps and the time to the target must not
change; only the wall clock may.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autotune import stability
from autotune._hugepages import restart_for_measuring
from autotune.config import TrainConfig, load_tuned_config, train_config_from_baseline
from autotune.runtime import StepRecord
from autotune.search._measure import TargetWatch, Trialist, measured
from autotune.task import load_task

console = Console()
CAP_S = 60.0  # one run's time cap: every run here reaches its target in seconds
MAX_STEPS = 20_000  # the run's step limit; the target stops it long before


class BenchError(Exception):
    """What stops the benchmark, said in one line."""


@dataclass(frozen=True)
class Sample:
    wall_s: float
    time_to_target_s: float
    steps: int


def main() -> int:
    args = _arguments()
    try:
        config, target = _config_and_target(args)
        samples = _interleaved(args, config, target)
    except BenchError as exc:
        console.print(f"stop_bench: {exc}", highlight=False)
        return 2
    console.print(_table(samples, target))
    return 0


def _interleaved(
    args: argparse.Namespace, config: TrainConfig, target: float
) -> dict[str, list[Sample]]:
    """``args.rounds`` runs each way, the order alternating (drift hits both alike)."""
    samples: dict[str, list[Sample]] = {"worker ends it": [], "supervisor ends it": []}
    with (
        tempfile.TemporaryDirectory(prefix="stop-bench-") as scratch,
        Trialist(args.task, Path(scratch), seed=0) as trials,
    ):
        trials.run(config, 5)  # starts the fork server: no run below pays for it
        for k in range(args.rounds):
            order = list(samples) if k % 2 == 0 else list(reversed(samples))
            for way in order:
                samples[way].append(_run(trials, config, target, told=way == "worker ends it"))
                console.print(f"round {k + 1}: {way} {samples[way][-1]}", highlight=False)
    return samples


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--task", type=Path, default=Path("examples/mlp_digits.py"))
    parser.add_argument(
        "--tuned",
        default="benchmarks/results/searches/mlp_digits_bf16_tuned_z.yaml",
        help="its config and target ('': the baseline's config and target)",
    )
    parser.add_argument("--rounds", type=int, default=10, help="runs of each way")
    return parser.parse_args()


def _config_and_target(args: argparse.Namespace) -> tuple[TrainConfig, float]:
    """The tuned.yaml's config and target, or the baseline's config and the loss its own
    steps reach (run once, here)."""
    if args.tuned:
        tuned = load_tuned_config(Path(args.tuned))
        if tuned.measured is None or tuned.measured.target_loss is None:
            raise BenchError(f"{args.tuned} records no target loss: give one from a search")
        return tuned.train, tuned.measured.target_loss
    task = load_task(args.task)
    base = train_config_from_baseline(task)
    with (
        tempfile.TemporaryDirectory(prefix="stop-bench-") as scratch,
        Trialist(args.task, Path(scratch), seed=0) as trials,
    ):
        run = measured(trials.run(base, task.baseline_steps() or 100), base, None)
    if run is None:
        raise BenchError("the baseline did not train")
    return base, stability.baseline_target(run.losses)


def _run(trials: Trialist, config: TrainConfig, target: float, told: bool) -> Sample:
    watch = TargetWatch(target, CAP_S)
    judge: Callable[[StepRecord], bool] = watch if told else lambda record: watch(record)
    start = time.perf_counter()
    result = trials.run(config, MAX_STEPS, watch=judge, time_cap_s=CAP_S)
    wall = time.perf_counter() - start
    run = measured(result, config, target)
    if run is None or run.time_to_target_s is None:
        raise BenchError(f"the run did not reach the target {target:.4g}: {result.reason}")
    return Sample(wall, run.time_to_target_s, len(run.losses))


def _table(samples: dict[str, list[Sample]], target: float) -> Table:
    table = Table(title=f"runs to the target {target:.4g} (median, range)")
    for name in ("who ends the run", "runs", "wall clock s", "time to target s", "steps"):
        table.add_column(name)
    for way, found in samples.items():
        table.add_row(
            way,
            str(len(found)),
            _spread([s.wall_s for s in found], "{:.3f}"),
            _spread([s.time_to_target_s for s in found], "{:.3f}"),
            _spread([float(s.steps) for s in found], "{:.0f}"),
        )
    return table


def _spread(values: list[float], form: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{form.format(mid)} ({form.format(low)}-{form.format(high)})"


if __name__ == "__main__":
    restart_for_measuring()  # measure under the allocator the CLI trains with
    raise SystemExit(main())
