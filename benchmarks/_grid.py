"""Shared by the benchmarks: an exhaustive grid over a search space, and interleaved
re-runs of several configs to one target loss.

Both run configs as the search's own supervised trials (:class:`Trialist`), so every
contender pays the same process start-up and is timed by the same runtime.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autotune import space as spaces
from autotune.config import TrainConfig
from autotune.profiler import ProbeReport
from autotune.runtime import StepRecord
from autotune.search._confirm import stable_winner
from autotune.search._measure import TargetWatch, Trialist, measured, ok
from autotune.search._pace import Pace, paced_s
from autotune.search._progress import describe
from autotune.search._types import Measured

__all__ = [
    "GridRun",
    "Missed",
    "Timed",
    "grid_points",
    "interleaved",
    "paced_order",
    "run_grid",
    "run_order",
    "runnable",
    "runnable_points",
    "spread",
    "stable_best",
]

_CONTINUOUS = ("lr", "warmup_fraction", "min_lr_ratio", "weight_decay")
_OPEN_ENDED_STEPS = 1_000_000  # a constant-schedule run is stopped by its watch, not its length
_ORDER_SEED = 0  # one fixed shuffle: every grid run of a space goes in the same order


@dataclass
class GridRun:
    """One grid point, run once to the target (or stopped)."""

    config: TrainConfig
    wall_s: float
    status: str
    run: Measured | None = None  # the measured run (its losses), when the point ran to the end

    @property
    def time_to_target_s(self) -> float | None:
        return self.run.time_to_target_s if self.run is not None else None


@dataclass(frozen=True)
class Missed:
    """A contender with no config that reached the target (``config``: one it tried)."""

    config: TrainConfig


@dataclass
class Timed:
    """A config's interleaved runs: one entry per round (None: it missed the target)."""

    config: TrainConfig
    times_to_target_s: list[float | None] = field(default_factory=list)
    samples_per_s: list[float] = field(default_factory=list)
    runs: list[Measured] = field(default_factory=list)  # the rounds that ran to the end

    def add(self, run: Measured | None) -> None:
        """One round: ``run``, or None where it stopped (missed) before the end."""
        self.times_to_target_s.append(None if run is None else run.time_to_target_s)
        if run is not None:
            self.samples_per_s.append(run.samples_per_s)
            self.runs.append(run)


def grid_points(space: spaces.SearchSpace, lr_points: int) -> list[dict[str, Any]]:
    """Every combination of the space's choices; the LR range cut into ``lr_points``
    log-even values (continuous dimensions other than the LR keep their low end)."""
    axes: dict[str, list[Any]] = {}
    for section in (space.systems, space.convergence):
        for name in type(section).model_fields:
            spec = getattr(section, name)
            if spec is None or name in _CONTINUOUS:
                continue
            axes[name] = spaces.choices(spec)
    lr = space.convergence.lr
    if lr is not None:
        axes["lr_multiplier" if lr.relative else "lr"] = _log_even(lr.low, lr.high, lr_points)
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def runnable(
    points: Sequence[dict[str, Any]], report: ProbeReport
) -> tuple[list[dict[str, Any]], list[str]]:
    """The points whose precision and checkpointing the probe kept, and one line per
    variant it ruled out (with its reason): the search's space loses them the same way, so
    the grid stays over the same space (bf16 on a CPU without AVX512-BF16 runs at 0.01x
    fp32's matmul peak: every such point would only burn its time cap)."""
    kept: list[dict[str, Any]] = []
    removed: dict[str, str] = {}
    for values in points:
        mode = values.get("activation_checkpointing", "none")
        variant = report.variant(values["precision"], "none" if mode == "none" else "full")
        if variant.viable:
            kept.append(values)
        else:
            removed[variant.name] = f"{variant.name} removed: {variant.reason}"
    return kept, list(removed.values())


def runnable_points(
    space_file: str, lr_points: int, report: ProbeReport, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The grid over ``space_file`` less what the probe ruled out (:func:`runnable`),
    saying each removal."""
    points, removed = runnable(grid_points(spaces.load_space(space_file), lr_points), report)
    for line in removed:
        say(line)
    return points


def _log_even(low: float, high: float, points: int) -> list[float]:
    """``points`` log-even values from ``low`` to ``high``; one point is their geometric
    middle (the low end alone is the smallest LR, which may never reach a target)."""
    if points == 1:
        return [math.sqrt(low * high)]
    return [low * (high / low) ** (k / (points - 1)) for k in range(points)]


def grid_config(
    values: dict[str, Any], base: TrainConfig, report: ProbeReport, cap_s: float
) -> TrainConfig:
    """The grid point as a TrainConfig whose schedule spans the time cap (as a trial's)."""
    decoded = {**values, "lr_scaling": "auto"}
    variant = report.variant(decoded["precision"], decoded.get("activation_checkpointing", "none"))
    step_s = variant.predict_step_time_s(decoded["micro_batch_size"])
    steps = max(20, math.ceil(cap_s / (step_s * decoded.get("grad_accum_steps", 1))))
    return spaces.to_train_config(decoded, base, steps)


def stable_best(
    grid: Sequence[GridRun],
    trials: Trialist,
    target: float,
    known: Sequence[Measured],
    say: Callable[[str], None],
) -> Measured | None:
    """The grid's fastest point that trains stably by the search's own rule
    (:func:`stable_winner`: finite, decreasing, and a reduced precision within tolerance of
    its fp32 run, else that fp32 run), so that both sides answer the same question: a
    bf16 point 6% off its fp32 curve is no more a valid best for the grid than for the
    search. ``known``: fp32 runs to reuse as references (the baseline's). Points are ranked
    by :func:`paced_order`, as the search ranks its trials. None when no point reached the
    target, or none passed."""
    return stable_winner(paced_order(grid, target, known), trials, target, say, known)


def paced_order(
    grid: Sequence[GridRun], target: float, known: Sequence[Measured] = ()
) -> list[Measured]:
    """The grid's runs that reached ``target``, fastest first by their paced time
    (:mod:`autotune.search._pace`: steps to the target, the same in every process, at the
    head and pace of every grid run of that step, and ``known``'s). One run per point
    leaves each single wall time 6-25% noisy, but every point of a step shares its pace:
    the grid's best is its truly fastest point, not its luckiest run."""
    reached = [r.run for r in grid if r.run is not None and r.time_to_target_s is not None]
    if not reached:
        return []
    pace = Pace.of([*known, *(r.run for r in grid if r.run is not None)])
    return sorted(reached, key=lambda run: paced_s(pace, run, target))


def run_grid(
    points: Sequence[dict[str, Any]],
    base: TrainConfig,
    report: ProbeReport,
    trials: Trialist,
    target: float,
    cap_s: float,
    *,
    give_up_ratio: float | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> list[GridRun]:
    """Run every point once to ``target``, each stopped at ``cap_s``, in a seeded shuffle
    of ``points`` (:func:`run_order`). With ``give_up_ratio``, a point still short of the
    target at that multiple of the best time so far stops early (it cannot be the grid's
    best), as the search's trials do. The runs come back in the order they ran."""
    runs: list[GridRun] = []
    best = math.inf
    for k, values in enumerate(run_order(points)):
        config = grid_config(values, base, report, cap_s)
        limit = math.inf if give_up_ratio is None else give_up_ratio * best
        started = time.perf_counter()
        result = trials.run(
            config,
            config.schedule.total_steps or 1,
            watch=TargetWatch(target, cap_s, give_up=_later_than(limit)),
            time_cap_s=cap_s * 1.2,
        )
        run = measured(result, config, target) if ok(result) else None
        tt = run.time_to_target_s if run is not None else None
        runs.append(GridRun(config, time.perf_counter() - started, result.status.value, run))
        best = min(best, tt if tt is not None else math.inf)
        shown = f"{tt:.2f} s" if tt is not None else result.status.value
        say(f"grid {k + 1}/{len(points)}: {describe(config)} -> {shown}")
    return runs


def run_order(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``points`` in a seeded shuffle. In product order every point of one step (precision,
    micro-batch, accumulation) runs back to back, so a slow or fast spell of the host lands
    on that step's whole pool, and the pooled pace that ranks the grid (:func:`paced_order`)
    moves with it: on mlp_digits (AVX2 host, ``grid_bench_mlp_digits_avx2_96_paced_a.txt``)
    the 16 runs of micro 256 paced 5% slower, and those of micro 64 5% faster, than once
    the 10 re-runs joined the pools, and the grid's best became a micro-64 point. Shuffled,
    each step's runs spread over the grid's whole span."""
    order = list(points)
    random.Random(_ORDER_SEED).shuffle(order)
    return order


def _later_than(limit_s: float) -> Callable[[StepRecord, float], bool]:
    return lambda record, _loss: record.elapsed_s > limit_s


def interleaved(
    configs: Sequence[TrainConfig],
    trials: Trialist,
    target: float,
    cap_s: float,
    rounds: int,
    say: Callable[[str], None] = lambda _: None,
    more: Callable[[Sequence[Timed]], bool] | None = None,
) -> list[Timed]:
    """Each config run to ``target`` once per round; the order rotates every round so no
    config always runs first (or right after the slowest one). After ``rounds``, another
    round runs while ``more(timed)`` says so (``more`` bounds them itself)."""
    timed = [Timed(config) for config in configs]
    r = 0
    while r < rounds or (more is not None and more(timed)):
        order = list(range(len(configs)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for k in order:
            timed[k].add(_to_target(configs[k], trials, target, cap_s))
            tt = timed[k].times_to_target_s[-1]
            shown = f"{tt:.2f} s" if tt is not None else "missed"
            of = f"/{rounds}" if r < rounds else " (more: unsettled)"
            say(f"round {r + 1}{of}: {describe(configs[k])} -> {shown}")
        r += 1
    return timed


def _to_target(
    config: TrainConfig, trials: Trialist, target: float, cap_s: float
) -> Measured | None:
    """``config`` run until it reaches ``target`` (or ``cap_s`` passes); None when the
    run did not end well."""
    steps = config.schedule.total_steps or _OPEN_ENDED_STEPS
    result = trials.run(config, steps, watch=TargetWatch(target, cap_s), time_cap_s=cap_s * 1.2)
    return measured(result, config, target) if ok(result) else None


def spread(values: Sequence[float]) -> tuple[float, float, float, int] | None:
    """(median, low, high, n) of ``values``; None when there are none."""
    if not values:
        return None
    return statistics.median(values), min(values), max(values), len(values)
