"""The grid benchmark's verdict: the search's best against the grid's, read by paced time
(steps to the target at the pooled pace), with the re-runs' wall times beside it."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from autotune import stability
from autotune.config import TrainConfig
from autotune.search._types import BaselineRun, Measured
from benchmarks import _grid
from benchmarks.grid_bench import Reading, _Costs, _summary

_TARGET = 0.5


def _run(lr: float, drop_at: int, step_s: float, micro: int = 256) -> Measured:
    """A run of micro ``micro`` whose loss falls from 2.0 to 0.1 at step ``drop_at``, each
    step taking ``step_s`` (the machine's speed in that process)."""
    losses = [2.0] * drop_at + [0.1] * 40
    elapsed = [step_s * (k + 1) for k in range(len(losses))]
    crossing = stability.steps_to_target(losses, _TARGET)
    train = TrainConfig(micro_batch_size=micro, optimizer={"lr": lr})
    tt = None if crossing is None else elapsed[crossing]
    return Measured(
        train=train, losses=losses, elapsed_s=elapsed, samples_per_s=1.0, time_to_target_s=tt
    )


def _timed(runs: list[Measured]) -> _grid.Timed:
    timed = _grid.Timed(runs[0].train)
    for run in runs:
        timed.add(run)
    return timed


def _baseline() -> BaselineRun:
    run = _run(1e-3, 200, 0.004, micro=16)
    return BaselineRun(run=run, steps=240, target_loss=_TARGET, target_from="task")


def test_same_step_configs_are_compared_by_their_steps_not_their_luck() -> None:
    """The search's pick needs 6 steps more than the grid's best, but its re-runs landed in
    fast processes (3.5 ms a step against 5): by wall time it looks 1.2x ahead, by its
    steps at the one pooled pace of their step it is behind."""
    grid_best = _timed([_run(1.45e-2, 50, 0.005) for _ in range(3)])
    pick = _timed([_run(1.7e-2, 56, 0.0035) for _ in range(3)])
    others = [_grid.GridRun(r.train, 1.0, "OK", r) for r in (_run(3e-2, 60, 0.0045),)]
    reading = Reading.of([grid_best, pick], others, _baseline())
    assert reading.wall_quality > 1.15
    head_and_pace = 0.0045  # the median of 5, 3.5 and 4.5 ms, for head and pace alike
    assert reading.paced[0] == pytest.approx(head_and_pace * (1 + reading.steps[0]))
    assert reading.quality == pytest.approx((1 + reading.steps[0]) / (1 + reading.steps[1]))
    assert reading.steps[1] - reading.steps[0] == 6  # type: ignore[operator]
    assert reading.quality < 0.95


def test_a_side_that_never_reached_the_target_reads_as_zero() -> None:
    grid_best = _timed([_run(1.45e-2, 50, 0.005)])
    never = _grid.Timed(grid_best.config)
    never.add(None)
    assert Reading.of([grid_best, never], [], _baseline()).quality == 0.0
    assert Reading.of([never, grid_best], [], _baseline()).wall_quality == 0.0


def test_a_re_run_stopped_by_the_time_cap_does_not_count_the_steps() -> None:
    """A first re-run cut off by the cap (a slow process) has no crossing; the steps come
    from a re-run that reached the target."""
    capped = _run(1.45e-2, 50, 0.005)
    capped = capped.model_copy(
        update={
            "losses": capped.losses[:30],
            "elapsed_s": capped.elapsed_s[:30],
            "time_to_target_s": None,
        }
    )
    grid_best = _timed([capped, _run(1.45e-2, 50, 0.005)])
    pick = _timed([_run(1.7e-2, 50, 0.005)])
    reading = Reading.of([grid_best, pick], [], _baseline())
    assert reading.steps[0] == reading.steps[1] is not None
    assert reading.quality == pytest.approx(1.0)
    assert grid_best.times_to_target_s == [None, reading.walls[0][0]]


@pytest.mark.parametrize(
    ("drop_at", "cost_s", "code"), [(50, 10.0, 0), (56, 10.0, 1), (50, 20.0, 1)]
)
def test_the_verdict_needs_the_paced_quality_and_the_cost(
    drop_at: int, cost_s: float, code: int
) -> None:
    grid_best = _timed([_run(1.45e-2, 50, 0.005)])
    pick = _timed([_run(1.7e-2, drop_at, 0.004)])
    reading = Reading.of([grid_best, pick], [], _baseline())
    costs = _Costs({"probe": 1.0, "baseline": 1.0, "confirmation": 2.0}, cost_s + 2.0)
    costs.grid_points_s = 98.0  # the grid's cost is 100 s: 10 s is 10%, 20 s is 20%
    best = grid_best.runs[0]
    study: Any = SimpleNamespace(trials=[1] * 12)
    assert _summary(pick.config, best, reading, costs, 96, study) == code


def test_the_grid_runs_its_points_in_one_seeded_shuffle_not_step_by_step() -> None:
    """In product order the 8 LRs of a micro-batch run back to back, so one slow spell
    would pace that micro-batch alone; the shuffle spreads them, the same way every run."""
    points = [{"micro_batch_size": m, "lr": k} for m in (16, 64, 256) for k in range(8)]
    order = _grid.run_order(points)
    assert sorted(order, key=points.index) == points  # every point, once
    assert order == _grid.run_order(points)  # the same shuffle each time
    micros = [p["micro_batch_size"] for p in order]
    longest = max(len(list(g)) for _, g in itertools.groupby(micros))
    assert longest < 4  # product order runs each micro-batch 8 in a row
    firsts = {m: micros.index(m) for m in (16, 64, 256)}
    lasts = {m: len(micros) - 1 - micros[::-1].index(m) for m in (16, 64, 256)}
    assert all(firsts[m] < 6 and lasts[m] > 17 for m in firsts)  # each spans the grid
