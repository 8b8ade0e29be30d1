"""How far apart the wall times to a target of configs with the same step can land.

    python scripts/same_step_noise.py examples/mlp_digits.py --micro 256 --rounds 9 \
        --lrs 1.2e-2 1.45e-2 1.7e-2 2e-2 2.4e-2

The configs differ only in their LR (cosine schedule), so every step does the same work;
their steps to the target are the same in every process (one seed, one data order). Each
is run to the target once per round, in a rotating order, and the script prints its steps
to the target (every distinct count seen: one, if the steps are deterministic) and its
median wall time per step. The spread of those medians is the noise a ratio of median wall
times carries between configs that only differ in their steps, which is why
``benchmarks.grid_bench`` reads its verdict off paced times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from autotune._hugepages import restart_for_measuring

ROOT = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:  # imported after the restart: torch comes with it
    from autotune.config import TrainConfig


def main() -> None:
    args = _arguments()
    restart_for_measuring()
    sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed
    from autotune import stability
    from autotune.search._measure import Trialist
    from autotune.task import load_task
    from benchmarks import _grid

    base = load_task(args.task).baseline_config()
    configs = [_config(base, args.micro, lr, args.steps) for lr in args.lrs]
    with tempfile.TemporaryDirectory() as scratch:
        trials = Trialist(args.task, Path(scratch), seed=0)
        timed = _grid.interleaved(configs, trials, args.target, args.cap, args.rounds, print)
    for lr, side in zip(args.lrs, timed, strict=True):
        crossings = [stability.steps_to_target(run.losses, args.target) for run in side.runs]
        reached = [(r, k) for r, k in zip(side.runs, crossings, strict=True) if k is not None]
        walls = [run.elapsed_s[k] / (k + 1) for run, k in reached]
        if walls:
            print(
                f"lr {lr:.3g}: steps to the target {sorted({k for _, k in reached})}, wall per "
                f"step median {statistics.median(walls) * 1e3:.2f} ms "
                f"({min(walls) * 1e3:.2f}-{max(walls) * 1e3:.2f}, n={len(walls)})"
            )


def _config(base: TrainConfig, micro: int, lr: float, steps: int) -> TrainConfig:
    raw = base.model_dump()
    raw.update(micro_batch_size=micro, global_batch_size=micro)
    raw["optimizer"]["lr"] = lr
    raw["schedule"] = {
        "name": "cosine",
        "warmup_steps": 0,
        "min_lr_ratio": 0.0,
        "total_steps": steps,
    }
    return type(base).model_validate(raw)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", type=Path)
    parser.add_argument("--micro", type=int, default=256, help="the one micro-batch size")
    parser.add_argument("--lrs", type=float, nargs="+", required=True)
    parser.add_argument("--target", type=float, required=True, help="the target loss")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=1200, help="the cosine schedule's length")
    parser.add_argument("--cap", type=float, default=3.0, help="seconds before a run gives up")
    return parser.parse_args()


if __name__ == "__main__":
    main()
