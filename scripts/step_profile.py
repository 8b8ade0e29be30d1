"""How fast does the pick's step run in each phase of a search, and in `autotune run` after it?

    python scripts/step_profile.py examples/mlp_digits.py [--runs 4] [--steps 250] [--micro 64]

Runs the default search with its trial files kept, then ``autotune run -c tuned.yaml`` in
``--runs`` fresh processes. For every run of the pick's step (the systems phase's short
measurements, the trials, the confirmation pairs, then the ``autotune run`` processes) it
prints the median step time in windows of steps (3-30, 30-60, ...) and the samples/s of
the run's steps after its third, with tuned.yaml's recorded samples/s above them. A
fresh process's first dozen steps are slower than its later ones, and a run that stops
there (the systems phase's) measures mostly that. ``--micro N`` profiles the search's runs
of that micro-batch (no accumulation, the pick's precision) instead of the pick's step.
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from search_then_check import kept_search  # beside this file

from autotune.config import TrainConfig, load_tuned_config
from autotune.search._confirm import same_step

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, for benchmarks/
from benchmarks.reproduce import run_json

_WINDOWS = ((3, 30), (30, 60), (60, 100), (100, 150), (150, 250))
_SKIPPED = 3  # steps before a run's samples/s is read: the first holds the start-up


def _profile(times: list[float], batch: int) -> str:
    """Median ms per step in each window with enough steps, and the run's samples/s."""
    shown = [
        f"{a}-{b}: {statistics.median(times[a:b]) * 1e3:.2f}"
        for a, b in _WINDOWS
        if len(times) >= a + 3
    ]
    rate = batch / statistics.median(times[_SKIPPED:]) if len(times) > _SKIPPED else float("nan")
    return f"n={len(times):4d} {rate / 1e3:6.1f}k samples/s | ms/step " + ", ".join(shown)


def _search_runs(where: Path, train: TrainConfig) -> None:
    for run in sorted(where.glob("run*")):
        spec = json.loads((run / "spec.json").read_text())
        if not same_step(TrainConfig.model_validate(spec["train"]), train):
            continue
        lines = (run / "progress.jsonl").read_text().splitlines()
        times = [json.loads(line)["step_time_s"] for line in lines if line.strip()]
        if times:
            label = f"{run.name} (seed {spec['seed']}, at most {spec['steps']} steps)"
            print(f"  {label:38s} {_profile(times, train.global_batch)}")


def _cli_runs(task: Path, tuned: Path, runs: int, steps: int, root: Path) -> None:
    batch = load_tuned_config(tuned).train.global_batch
    for k in range(runs):
        record = run_json(task, ["-c", str(tuned)], steps, root / f"run-{k}.json", root)
        times = [step["step_time_s"] for step in record["steps"]]
        print(f"  {f'autotune run -c, process {k + 1}':38s} {_profile(times, batch)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("task", type=Path)
    parser.add_argument("--runs", type=int, default=4, help="`autotune run` processes after")
    parser.add_argument("--steps", type=int, default=250, help="steps of each of them")
    parser.add_argument("--micro", type=int, help="profile this micro-batch's search runs")
    args = parser.parse_args()
    task = args.task.resolve()
    with tempfile.TemporaryDirectory(prefix="step-profile-") as scratch:
        root = Path(scratch)
        tuned = kept_search(task, root)
        recorded = tuned.measured.throughput_samples_per_s if tuned.measured else float("nan")
        print(f"pick: {tuned.train.global_batch} samples a step; tuned.yaml: {recorded:,.0f}/s")
        step = tuned.train
        if args.micro is not None:
            fields = {"micro_batch_size": args.micro, "grad_accum_steps": 1}
            step = TrainConfig.model_validate(
                {**step.model_dump(), **fields, "global_batch_size": None}
            )
            print(f"the search's runs of micro {args.micro}:")
        _search_runs(root / "search", step)
        _cli_runs(task, root / "t.yaml", args.runs, args.steps, root)


if __name__ == "__main__":
    main()
