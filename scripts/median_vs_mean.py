"""Does a run's median step rate say how fast it trains? Median against mean samples/s.

    python scripts/median_vs_mean.py examples/mlp_digits.py --micro 64 256 512 [--world 1]

Trains the Task's baseline config (its LR, schedule and optimizer) at each ``--micro``
batch (and ``--world`` ranks) for ``--steps`` steps through ``autotune run``, in fresh
processes, ``--runs`` times each, and prints per run: the median of its steps' samples/s
after ``--skip`` steps (what ``RunSummary.samples_per_s`` and tuned.yaml record), the mean
rate over those steps (their samples over their wall time: what a run to a target pays,
epoch boundaries included), and the slowest step over the median step. The search's pace
(time to target) is taken from wall time, so it pays the slow steps; the median does not,
and on a small dataset a large batch meets an epoch boundary every few steps. Run it on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from autotune.task import load_task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, for benchmarks/
from benchmarks.reproduce import run_json


def _run(task: Path, micro: int, world: int, steps: int, scratch: Path) -> list[dict[str, float]]:
    """The step records of one ``autotune run`` of the baseline at ``micro`` x ``world``."""
    base = load_task(task).baseline_config().model_dump(mode="json")
    base.update(micro_batch_size=micro, world_size=world, global_batch_size=None)
    config = scratch / "train.yaml"
    config.write_text(json.dumps({"train": base}))  # JSON is YAML
    record = run_json(task, ["-c", str(config)], steps, scratch / "run.json", scratch)
    records: list[dict[str, float]] = record["steps"]
    return records


def _line(records: list[dict[str, float]], skip: int, batch: int) -> str:
    kept = records[skip:]
    median = statistics.median(r["samples_per_s"] for r in kept)
    wall = kept[-1]["elapsed_s"] - records[skip - 1]["elapsed_s"]
    mean = batch * len(kept) / wall
    times = [r["step_time_s"] for r in kept]
    spike = max(times) / statistics.median(times)
    return (
        f"median {median:>10,.0f}  mean {mean:>10,.0f}  median/mean {median / mean:.2f}  "
        f"slowest/median step {spike:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", type=Path)
    parser.add_argument("--micro", type=int, nargs="+", required=True)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip", type=int, default=50, help="steps left out: the warm-up")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    if args.skip < 1 or args.steps <= args.skip + 1:
        parser.error("--steps must exceed --skip + 1, and --skip must be at least 1")
    with tempfile.TemporaryDirectory(prefix="median-vs-mean-") as scratch:
        for micro in args.micro:
            for k in range(args.runs):
                records = _run(args.task, micro, args.world, args.steps, Path(scratch))
                batch = micro * args.world
                print(
                    f"micro {micro} x world {args.world}, run {k + 1}: "
                    + _line(records, args.skip, batch)
                )


if __name__ == "__main__":
    main()
