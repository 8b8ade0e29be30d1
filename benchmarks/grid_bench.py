"""Search efficiency: autotune's search beside an exhaustive grid over the same space.

    python -m benchmarks.grid_bench [--task examples/mlp_digits.py] [--budget 90]
        [--lr-points 4] [--pairs 3]

1. ``autotune search`` runs over ``benchmarks/spaces/grid_small.yaml`` with ``--budget``.
2. The grid runs *every* point of the same space to the same target loss, with the same
   supervised trials and the same time cap (twice the baseline's time to target), in a
   seeded shuffle (:func:`benchmarks._grid.run_order`); the LR range is cut into
   ``--lr-points`` log-spaced multipliers.
3. The grid's best is its fastest point that passes the search's stability check (a bf16
   point must agree with its fp32 run, else that fp32 run stands in for it), so both sides
   answer the same question. Fastest by paced time, as the search ranks its trials: each
   point's steps to the target (the same in every process) at the pace of all the grid's
   runs of its step, so the grid's best is its truly fastest point, not its luckiest run.
4. The grid's best and the search's winner are re-run interleaved ``--pairs`` times. The
   search's best as a fraction of the grid's is the ratio of their paced times to the
   target, each config's steps to it at its step's pace pooled over the baseline, the
   grid's points and these re-runs (:class:`Reading`: why); the ratio of the re-runs'
   median wall times is printed beside it.

Cost, the same for both sides. Each pays the probe and the baseline: the grid needs the
baseline's target as much as the search does. Neither pays a confirmation: the grid's best
from one run each is as unproven as the search's pick until step 4 re-runs both alike. So
the search's cost is its wall time up to its confirmation (probe, baseline, systems phase,
trials, fp32 check), and the grid's is the probe and baseline plus its points and its own
stability check (step 3). The search's whole wall time, its own 3-pair confirmation
included, is printed beside it.

Goal (issue 5): the search's best >= 95% of the grid's, in <= 15% of the grid's cost.
Run it on a quiet machine: other processes on the cores slow 2-thread torch 10-20x.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

from autotune import stability
from autotune._hugepages import restart_for_measuring
from autotune._search_view import phase_line
from autotune.config import TrainConfig
from autotune.profiler import ProbeReport
from autotune.search import SearchError, SearchOptions, run_search
from autotune.search._measure import Trialist
from autotune.search._pace import Pace
from autotune.search._progress import describe
from autotune.search._types import BaselineRun, Measured
from autotune.task import load_task
from benchmarks import _grid as _grid_runs

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "benchmarks" / "spaces" / "grid_small.yaml"
QUALITY_GOAL = 0.95  # issue 5: the search's best >= 95% of the grid's best
COST_GOAL = 0.15  # ... in <= 15% of the grid's wall time
console = Console()


def main() -> int:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="grid-bench-") as scratch:
        os.environ["TMPDIR"] = scratch
        storage = f"sqlite:///{scratch}/bench.db"
        started = time.perf_counter()
        try:
            outcome = run_search(_options(args, storage, Path(scratch)), _say)
        except SearchError as err:
            console.print(f"the search found no winner, so there is nothing to compare: {err}")
            return 1
        costs = _Costs(outcome.phases, time.perf_counter() - started)
        study = outcome.studies.convergence
        baseline = BaselineRun.model_validate_json(study.user_attrs["baseline"])
        report = ProbeReport.model_validate_json(study.user_attrs["probe"])
        trials = Trialist(args.task, Path(scratch) / "grid", seed=0)
        grid = _grid(args, baseline, report, trials)
        checked = time.perf_counter()  # the grid pays its stability check, as the search does
        best = _grid_runs.stable_best(grid, trials, baseline.target_loss, [baseline.run], _say_grid)
        costs.grid_points_s = sum(run.wall_s for run in grid) + time.perf_counter() - checked
        if best is None:
            console.print("no grid point reached the target and passed the stability check")
            return 1
        timed = _interleaved([best.train, outcome.tuned.train], baseline, trials, args)
        console.print(_grid_table(grid, baseline))
        reading = Reading.of(timed, grid, baseline)
        return _summary(outcome.tuned.train, best, reading, costs, len(grid), study)


@dataclass
class _Costs:
    """Wall seconds of both sides; see the module docstring for what each pays."""

    phases: dict[str, float]  # the search's, by phase
    search_wall_s: float  # all of it, the search's own confirmation included
    grid_points_s: float = 0.0

    @property
    def shared_s(self) -> float:
        """The probe and the baseline: both sides need the target."""
        return self.phases.get("probe", 0.0) + self.phases.get("baseline", 0.0)

    @property
    def search_s(self) -> float:
        return self.search_wall_s - self.phases.get("confirmation", 0.0)

    @property
    def grid_s(self) -> float:
        return self.shared_s + self.grid_points_s


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, default=ROOT / "examples" / "mlp_digits.py")
    parser.add_argument("--space", type=Path, default=SPACE)
    parser.add_argument("--budget", type=float, default=90.0, help="search budget, seconds")
    parser.add_argument("--lr-points", type=int, default=4, help="grid points on the LR range")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved re-runs of the bests")
    return parser.parse_args()


def _options(args: argparse.Namespace, storage: str, scratch: Path) -> SearchOptions:
    return SearchOptions(
        task_path=args.task,
        space=str(args.space),
        budget_s=args.budget,
        # the issue's 3 pairs and no more: step 3 re-runs both sides' bests alike anyway
        confirm_max_pairs=3,
        storage=storage,
        output=scratch / "tuned.yaml",
        workdir=scratch / "search",
    )


def _say(line: str) -> None:
    console.print(f"  search: {line}", highlight=False, markup=False)


def _grid(
    args: argparse.Namespace, baseline: BaselineRun, report: ProbeReport, trials: Trialist
) -> list[_grid_runs.GridRun]:
    """Every point of the space once, each stopped at twice the baseline's time."""
    points = _grid_runs.runnable_points(str(args.space), args.lr_points, report, _say_grid)
    cap = 2.0 * (baseline.run.time_to_target_s or baseline.run.elapsed_s[-1])
    base = load_task(args.task).baseline_config()
    return _grid_runs.run_grid(
        points, base, report, trials, baseline.target_loss, cap, say=_say_grid
    )


def _say_grid(line: str) -> None:
    console.print(f"  {line}", highlight=False, markup=False)


def _grid_table(grid: list[_grid_runs.GridRun], baseline: BaselineRun, shown: int = 10) -> Table:
    """The grid's fastest points to the target by paced time (:func:`paced_order`), each
    beside its one run's wall time (noisy, hence pacing and the re-runs)."""
    table = Table(title=f"Grid: the {shown} fastest of {len(grid)} points (one run each)")
    for col in ("config", "paced time to target s", "its run's wall time to target s"):
        table.add_column(col)
    target, known = baseline.target_loss, [baseline.run]
    pace = Pace.of([*known, *(r.run for r in grid if r.run is not None)])
    for run in _grid_runs.paced_order(grid, target, known)[:shown]:
        paced, wall = pace.time_to_target(run, target), run.time_to_target_s
        table.add_row(describe(run.train), f"{paced or math.nan:.2f}", f"{wall or math.nan:.2f}")
    return table


def _interleaved(
    configs: list[TrainConfig], baseline: BaselineRun, trials: Trialist, args: argparse.Namespace
) -> list[_grid_runs.Timed]:
    """Each config run to the target in turn, ``args.pairs`` times."""
    cap = 3.0 * (baseline.run.time_to_target_s or baseline.run.elapsed_s[-1])
    return _grid_runs.interleaved(configs, trials, baseline.target_loss, cap, args.pairs)


@dataclass(frozen=True)
class Reading:
    """The grid's best and the search's pick (in that order), each read two ways.

    ``walls``: the re-runs' wall times to the target. ``paced``: the config's steps to the
    target (the same in every process: one seed, one data order) at its step's head and pace
    pooled over every run of that step (:class:`~autotune.search._pace.Pace`): the
    baseline's, the grid's points' and the re-runs'. The steps come from the config's
    first re-run that reached the target (a run stopped by the time cap has too few). The
    goal is judged on ``paced``, the measure the grid's best was chosen by.

    Why: on mlp_digits (AVX2 host, ``scripts/same_step_noise.py``,
    ``same_step_noise_mlp_digits_avx2{,_b}.txt``) five configs differing only in their LR
    (the same step, so the same work per step) ran at medians over 9 runs of 4.10-4.30 ms
    and, in a second set, 3.43-3.65 ms per step (single runs 3.3-5.0 ms): 5-6% apart, as
    far as most of their steps to the target (50-54), which never changed. On cnn_digits
    the grid's best and the search's pick were the same point twice, and re-ran at 94.8%
    and 93.8% of itself by median wall time
    (``grid_bench_cnn_digits_avx2_96_{paced,shuffled}_a.txt``).
    """

    walls: tuple[list[float], list[float]]
    paced: tuple[float | None, float | None]
    steps: tuple[int | None, int | None]

    @classmethod
    def of(
        cls, timed: list[_grid_runs.Timed], grid: list[_grid_runs.GridRun], baseline: BaselineRun
    ) -> Reading:
        grid_runs = [r.run for r in grid if r.run is not None]
        pace = Pace.of([baseline.run, *grid_runs, *(run for t in timed for run in t.runs)])
        target = baseline.target_loss
        best, pick = ([t for t in side.times_to_target_s if t is not None] for side in timed)
        first = [next((r for r in side.runs if r.time_to_target_s), None) for side in timed]
        paced = [None if r is None else pace.time_to_target(r, target) for r in first]
        steps = [None if r is None else stability.steps_to_target(r.losses, target) for r in first]
        return cls((best, pick), (paced[0], paced[1]), (steps[0], steps[1]))

    @property
    def wall_quality(self) -> float:
        """The grid's best over the search's pick, by median wall time (0 where either never
        reached the target)."""
        grid, search = (statistics.median(t) if t else math.inf for t in self.walls)
        return 0.0 if math.isinf(grid) else grid / search

    @property
    def quality(self) -> float:
        """The grid's best over the search's pick, by paced time (0 as above)."""
        grid, search = self.paced
        return 0.0 if grid is None or search is None else grid / search


def _summary(
    winner: TrainConfig,
    best: Measured,
    reading: Reading,
    costs: _Costs,
    points: int,
    study: optuna.Study,
) -> int:
    cost = costs.search_s / costs.grid_s
    console.print(_versus_table(winner, best, reading, costs, points, len(study.trials)))
    console.print(f"load average at the end: {os.getloadavg()[0]:.2f} (quiet: < 0.5)")
    console.print(
        f"search's phases: {phase_line(costs.phases)}; the grid's points {costs.grid_points_s:.0f}"
        f" s, plus the shared probe and baseline {costs.shared_s:.0f} s"
    )
    console.print(
        f"search's best / grid's best (speed): {reading.quality:.1%} by paced time (goal >= "
        f"{QUALITY_GOAL:.0%}), {reading.wall_quality:.1%} by the re-runs' median wall time; "
        f"search's cost / grid's: {cost:.1%} (goal <= {COST_GOAL:.0%}); with the search's own "
        f"confirmation: {costs.search_wall_s / costs.grid_s:.1%}"
    )
    return 0 if reading.quality >= QUALITY_GOAL and cost <= COST_GOAL else 1


def _versus_table(
    winner: TrainConfig, best: Measured, reading: Reading, costs: _Costs, points: int, trials: int
) -> Table:
    table = Table(title="Search vs exhaustive grid (same space, same target)")
    columns = ("", "configs run", "cost s", "best config", "steps to target")
    for col in (*columns, "paced time to target s", "re-runs' time to target s (median, range)"):
        table.add_column(col)
    for k, (name, runs, wall, config) in enumerate(
        (("grid", points, costs.grid_s, best.train), ("search", trials, costs.search_s, winner))
    ):
        tts, paced, steps = reading.walls[k], reading.paced[k], reading.steps[k]
        shown = f"{statistics.median(tts):.2f} ({min(tts):.2f}-{max(tts):.2f})" if tts else "-"
        cells = (f"{wall:.0f}", describe(config), "-" if steps is None else str(steps))
        table.add_row(name, str(runs), *cells, f"{paced or math.nan:.3f}", shown)
    return table


if __name__ == "__main__":
    restart_for_measuring()  # measure under the allocator the CLI trains with
    sys.exit(main())
