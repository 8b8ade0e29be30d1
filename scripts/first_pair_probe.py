"""Is the first run of a confirmation slow, and is it the memory run before it?

    python scripts/first_pair_probe.py TASK.py TUNED.yaml [--rounds 3] [--runs 5]

Each round starts a fresh fork server (as ``autotune check`` does) and runs tuned.yaml's
config to its target ``--runs`` times in a row, as the confirmation's tuned runs do. Rounds
alternate between two openings: ``memory``, a 3-step memory-measuring run first (what
``_confirm._peak_memory`` does before pair 1), and ``plain``, none. Prints each position's
median time to the target over the rounds, per opening, and the first run over the median
of the later ones: a first run slow only after the memory run blames the profiler; slow
after both blames the fresh server (or the machine's state after a pause).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from autotune._hugepages import restart_for_measuring
from autotune.config import TrainConfig, load_tuned_config
from autotune.search._measure import TargetWatch, Trialist, measured

_MEMORY_STEPS = 3  # as autotune.search._confirm's memory run
_CAP_S = 600.0  # a run's time cap: the target, not the clock, is meant to end it


def main() -> int:
    args = _arguments()
    tuned = load_tuned_config(args.tuned)
    if tuned.measured is None or tuned.measured.target_loss is None:
        print("the tuned.yaml has no measured target loss (a searched one has)")
        return 2
    target = tuned.measured.target_loss
    times: dict[str, list[list[float]]] = {"memory": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="first-pair-") as scratch:
        for round_ in range(2 * args.rounds):
            opening = "memory" if round_ % 2 == 0 else "plain"
            workdir = Path(scratch) / f"round{round_}"
            with Trialist(args.task, workdir, seed=0) as trials:
                if opening == "memory":
                    trials.run(tuned.train, _MEMORY_STEPS, measure_memory=True)
                row = [
                    _to_target(trials, tuned.train, target, args.steps) for _ in range(args.runs)
                ]
            times[opening].append(row)
            print(f"round {round_} ({opening}): " + " ".join(f"{t:.3f}" for t in row))
    for opening, rows in times.items():
        medians = [statistics.median(col) for col in zip(*rows, strict=True)]
        ratios = [row[0] / statistics.median(row[1:]) for row in rows]
        print(
            f"{opening}: median s by position "
            + " ".join(f"{m:.3f}" for m in medians)
            + "; first / later, per round: "
            + " ".join(f"{r:.2f}" for r in ratios)
        )
    return 0


def _to_target(trials: Trialist, train: TrainConfig, target: float, steps: int) -> float:
    result = trials.run(train, steps, watch=TargetWatch(target, _CAP_S), time_cap_s=_CAP_S)
    run = measured(result, train, target)
    if run is None or run.time_to_target_s is None:
        raise SystemExit(f"a run did not reach the target: {result.reason}")
    return run.time_to_target_s


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("task", type=Path)
    parser.add_argument("tuned", type=Path)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per opening")
    parser.add_argument("--runs", type=int, default=5, help="runs to the target per round")
    parser.add_argument("--steps", type=int, default=400, help="most steps per run")
    return parser.parse_args()


if __name__ == "__main__":
    restart_for_measuring()  # measure under the allocator the CLI trains with
    sys.exit(main())
