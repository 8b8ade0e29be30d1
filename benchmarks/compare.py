"""Hand-picked configs of one task, timed to the baseline's target loss, interleaved.

    python -m benchmarks.compare examples/tiny_gpt.py --config micro=4 --config micro=2

For a question the search's own runs cannot settle (is a batch outside the space faster?):
the baseline runs ``--baseline-steps`` steps and sets the target as the search does
(:func:`autotune.stability.baseline_target`), unless ``--target`` gives one. Then the
baseline and every ``--config`` run to that target once per round, in a rotating order
(:func:`benchmarks._grid.interleaved`), and each config's speed-up is the median over the
rounds of the baseline's time in that round over the config's.

A config is ``key=value`` pairs over the Task's baseline: ``micro``, ``accum``, ``lr``,
``schedule``, ``warmup`` (steps), ``steps`` (the schedule's length), ``precision``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autotune import stability
from autotune._hugepages import restart_for_measuring
from autotune.config import TrainConfig
from autotune.search._measure import Trialist, measured, ok
from autotune.search._progress import describe
from autotune.task import load_task
from benchmarks._grid import Timed, interleaved, spread

console = Console()

_FIELDS = ("micro", "accum", "lr", "schedule", "warmup", "steps", "precision")
_CAP_FACTOR = 2.0  # a run still short of the target at this many baseline times is a miss


class CompareError(Exception):
    """A config or a baseline this benchmark cannot use; the message says what to change."""


def main() -> int:
    args = _arguments()
    try:
        console.print(_table(compare(args)))
    except CompareError as error:
        console.print(f"error: {error}")
        return 2
    return 0


def compare(args: argparse.Namespace) -> list[Timed]:
    """The baseline's target, then every config's interleaved runs to it (baseline first)."""
    task = load_task(args.task)
    base = task.baseline_config()
    configs = [base, *(parse_config(text, base) for text in args.config)]
    with (
        tempfile.TemporaryDirectory(prefix="autotune-compare-") as scratch,
        Trialist(Path(args.task), Path(scratch), args.seed) as trials,
    ):
        target, base_s = _target(base, trials, args)
        console.print(f"target loss {target:.4f} (baseline: {base_s:.1f} s to it)")
        timed = interleaved(
            configs, trials, target, _CAP_FACTOR * base_s, args.rounds, console.print
        )
    return timed


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", type=Path)
    parser.add_argument("--config", action="append", default=[], help="key=value ...")
    parser.add_argument("--target", type=float, help="default: the baseline's, as the search")
    parser.add_argument("--baseline-steps", type=int, default=60, help="sets the target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def parse_config(text: str, base: TrainConfig) -> TrainConfig:
    """``text``'s ``key=value`` pairs applied to ``base``; an unknown key raises with the
    keys there are."""
    pairs = [item.partition("=") for item in text.split()]
    bare = [key for key, equals, _ in pairs if not equals]
    if bare:
        raise CompareError(f"config items need key=value, not {bare}: e.g. 'micro=4 lr=1e-3'")
    values = {key: value for key, _, value in pairs}
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise CompareError(f"unknown config keys {unknown}; use {', '.join(_FIELDS)}")
    update: dict[str, Any] = {}
    if "micro" in values:
        update["micro_batch_size"] = int(values["micro"])
    if "accum" in values:
        update["grad_accum_steps"] = int(values["accum"])
    if "precision" in values:
        update["precision"] = values["precision"]
    if "lr" in values:
        update["optimizer"] = base.optimizer.model_copy(update={"lr": float(values["lr"])})
    schedule = {
        name: cast(values[key])
        for key, name, cast in (
            ("schedule", "name", str),
            ("warmup", "warmup_steps", int),
            ("steps", "total_steps", int),
        )
        if key in values
    }
    if schedule:
        update["schedule"] = base.schedule.model_copy(update=schedule)
    kept = base.model_dump(exclude={"global_batch_size"})  # derived: follows the batch
    return TrainConfig.model_validate({**kept, **_dumped(update)})


def _dumped(update: dict[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in update.items()}


def _target(base: TrainConfig, trials: Trialist, args: argparse.Namespace) -> tuple[float, float]:
    """The target loss and the baseline's seconds to it, from one baseline run."""
    result = trials.run(base, args.baseline_steps)
    run = measured(result, base, None) if ok(result) else None
    if run is None:
        raise CompareError(f"the baseline did not train: {result.status.value}: {result.reason}")
    target = args.target if args.target is not None else stability.baseline_target(run.losses)
    reached = stability.steps_to_target(run.losses, target)
    if reached is None:
        raise CompareError(f"the baseline never reached {target}; give a higher --target")
    return target, run.elapsed_s[reached]


def _table(timed: list[Timed]) -> Table:
    table = Table("config", "time to target (median, range)", "speed-up (median, range)")
    base = timed[0].times_to_target_s
    for entry in timed:
        times = [t for t in entry.times_to_target_s if t is not None]
        ratios = [b / t for b, t in zip(base, entry.times_to_target_s, strict=True) if b and t]
        table.add_row(describe(entry.config), _shown(times, "s"), _shown(ratios, "x"))
    return table


def _shown(values: list[float], unit: str) -> str:
    found = spread(values)
    if found is None:
        return "missed"
    median, low, high, n = found
    return f"{median:.2f}{unit} ({low:.2f}-{high:.2f}, n={n})"


if __name__ == "__main__":
    restart_for_measuring()  # measure under the allocator the CLI trains with
    raise SystemExit(main())
