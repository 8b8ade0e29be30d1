"""The paced time to target: a run's steps to the target (the same in every process) at
its step's head and pace, pooled over every run of that step."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autotune import stability
from autotune.config import TrainConfig, train_config_from_baseline
from autotune.runtime import StepRecord
from autotune.search._confirm import STEADY_STEPS, steady_runs, step_rates
from autotune.search._convergence import _pruning
from autotune.search._measure import Trialist, measured
from autotune.search._pace import Pace
from autotune.search._systems import MEASURE_STEPS
from autotune.search._types import Measured
from autotune.task import load_task
from tests.conftest import EXAMPLES

_TARGET = 1.5
_CURVE = [3.0 - 0.02 * k for k in range(120)]  # the smoothed curve crosses 1.5 near step 75
_CROSSING = stability.steps_to_target(_CURVE, _TARGET)


def _run(step_s: float, head_s: float | None = None, micro: int = 16, lr: float = 1e-3) -> Measured:
    """A run of ``_CURVE`` whose first step took ``head_s`` (default: ``step_s``) and every
    later one ``step_s``."""
    first = step_s if head_s is None else head_s
    elapsed = [first + step_s * k for k in range(len(_CURVE))]
    train = TrainConfig(micro_batch_size=micro, optimizer={"lr": lr})
    return Measured(train=train, losses=_CURVE, elapsed_s=elapsed, samples_per_s=100.0)


def test_a_lone_run_is_timed_at_its_own_head_and_pace() -> None:
    run = _run(0.01, head_s=0.2)
    assert _CROSSING is not None
    assert Pace.of([]).time_to_target(run, _TARGET) == pytest.approx(0.2 + _CROSSING * 0.01)
    assert Pace.of([run]).time_to_target(run, _TARGET) == pytest.approx(run.elapsed_s[_CROSSING])


def test_runs_of_the_same_step_pool_their_medians_and_other_steps_do_not_count() -> None:
    """Three runs of micro 16 at paces 10, 12 and 30 ms (a slow spell) give the median 12 ms
    to every config of that step, whatever its LR; a micro-32 run at 50 ms is not pooled."""
    pooled = [_run(0.010, lr=1e-3), _run(0.012, lr=2e-3), _run(0.030, lr=3e-3)]
    pace = Pace.of([*pooled, _run(0.050, micro=32)])
    assert _CROSSING is not None
    for run in pooled:
        assert pace.time_to_target(run, _TARGET) == pytest.approx(0.012 * (1 + _CROSSING))
    assert pace.time_to_target(_run(0.050, micro=32), _TARGET) == pytest.approx(
        0.050 * (1 + _CROSSING)
    )


def test_a_run_that_missed_the_target_has_no_time_and_a_short_run_adds_no_pace() -> None:
    assert Pace.of([]).time_to_target(_run(0.01), 0.1) is None
    short = Measured(
        train=TrainConfig(micro_batch_size=16, optimizer={"lr": 1e-3}),
        losses=[3.0, 2.9],
        elapsed_s=[5.0, 9.0],
        samples_per_s=1.0,
    )
    run = _run(0.01)
    assert Pace.of([short, run]).time_to_target(run, _TARGET) == pytest.approx(
        run.elapsed_s[_CROSSING or 0]
    )


def _measurement(step_s: float, steps: int = MEASURE_STEPS) -> Measured:
    """A systems-phase measurement of micro 16: ``steps`` steps of ``step_s``."""
    return Measured(
        train=TrainConfig(micro_batch_size=16, optimizer={"lr": 1e-3}),
        losses=_CURVE[:steps],
        elapsed_s=[step_s * (k + 1) for k in range(steps)],
        samples_per_s=16 / step_s,
    )


def test_a_systems_measurement_paces_its_step_only_where_no_longer_run_of_it_exists() -> None:
    """Two 12-step measurements at 25 ms a step (a fresh process's warm-up) and one trial
    at 10 ms: the step is paced at 10 ms, not at the measurements' median; alone, the
    measurements pace it."""
    run = _run(0.010)
    slow = [_measurement(0.025), _measurement(0.025)]
    assert _CROSSING is not None
    assert Pace.of([*slow, run]).time_to_target(run, _TARGET) == pytest.approx(
        0.010 * (1 + _CROSSING)
    )
    assert Pace.of(slow).time_to_target(run, _TARGET) == pytest.approx(0.025 * (1 + _CROSSING))
    longer = _measurement(0.025, steps=STEADY_STEPS + 1)
    assert Pace.of([*slow, longer, run]).time_to_target(run, _TARGET) == pytest.approx(
        0.0175 * (1 + _CROSSING)
    )


def test_the_recorded_samples_per_second_leave_out_the_systems_measurements() -> None:
    """tuned.yaml's samples/s is the median over the winner's step's runs: a 12-step
    measurement joins them only where it is all there is."""
    trials = [_run(0.002).model_copy(update={"samples_per_s": 16 / s}) for s in (0.002, 0.0022)]
    measurements = [_measurement(0.004), _measurement(0.0041)]
    runs = [measurements[0], *trials, measurements[1]]
    assert step_rates(runs, trials[0].train) == pytest.approx([8000.0, 16 / 0.0022])
    assert step_rates(measurements, trials[0].train) == pytest.approx([4000.0, 16 / 0.0041])
    other = TrainConfig(micro_batch_size=32, optimizer={"lr": 1e-3})
    assert step_rates(runs, other) == []
    assert steady_runs([]) == []


@pytest.mark.slow
def test_the_same_config_in_two_fresh_processes_gives_the_same_losses(tmp_path: Path) -> None:
    """The premise of pacing: with one seed and one data order, a config's losses (so its
    steps to the target) do not depend on the process; only the wall clock does."""
    path = EXAMPLES / "cnn_digits.py"
    config = train_config_from_baseline(load_task(path))
    with Trialist(path, tmp_path, seed=0) as trials:
        runs = [measured(trials.run(config, 40), config, None) for _ in range(2)]
    first, second = (run.losses for run in runs if run is not None)
    assert len(first) == 40 and first == second


def test_the_grid_ranks_its_points_by_paced_time_not_by_their_luckiest_run() -> None:
    """Two points of one step: A crossed at step 75 in a quick spell (10 ms a step), B at
    step 50 in a slow one (16 ms). A's wall time is shorter, but B needs fewer steps of the
    same step, so at their shared pace B is the faster point."""
    from benchmarks import _grid

    def point(step_s: float, drop: float, lr: float) -> _grid.GridRun:
        losses = [3.0 - drop * k for k in range(120)]
        elapsed = [step_s * (k + 1) for k in range(120)]
        train = TrainConfig(micro_batch_size=16, optimizer={"lr": lr})
        tt = stability.steps_to_target(losses, _TARGET)
        run = Measured(
            train=train,
            losses=losses,
            elapsed_s=elapsed,
            samples_per_s=16 / step_s,
            time_to_target_s=None if tt is None else elapsed[tt],
        )
        return _grid.GridRun(train, 1.0, "ok", run)

    a, b = point(0.010, 0.02, 1e-3), point(0.016, 0.03, 2e-3)
    assert a.time_to_target_s is not None and b.time_to_target_s is not None
    assert a.time_to_target_s < b.time_to_target_s
    assert [run.train.optimizer.lr for run in _grid.paced_order([a, b], _TARGET)] == [2e-3, 1e-3]


def test_the_clock_of_a_step_is_its_pooled_head_and_pace_and_none_for_an_unmeasured_step() -> None:
    pace = Pace.of([_run(0.010, head_s=0.3), _run(0.012, head_s=0.2), _run(0.030, head_s=0.4)])
    clock = pace.clock(TrainConfig(micro_batch_size=16, optimizer={"lr": 5e-3}))
    assert clock is not None
    assert clock(1) == pytest.approx(0.3)  # the median head: step 1's end
    assert clock(101) == pytest.approx(0.3 + 100 * 0.012)
    assert pace.clock(TrainConfig(micro_batch_size=32, optimizer={"lr": 1e-3})) is None


def _record(step: int, elapsed_s: float) -> StepRecord:
    return StepRecord(
        step=step, loss=2.0, elapsed_s=elapsed_s, lr=1e-3, samples=16 * step,
        step_time_s=0.01, samples_per_s=1600.0,
    )  # fmt: skip


def test_a_trial_slowed_by_the_machine_is_not_given_up_while_its_steps_can_still_win() -> None:
    """cnn_digits, micro 16 at lr 8e-3: one search's run reached the target at step 269 in
    2.0 s; the next search stopped the same config as "not at the target after 3.1 s" in a
    slow spell. On its step's pooled clock (a 0.3-s head, then 11 ms a step) a run is given
    up by its steps, whatever the machine's speed while it runs."""
    study = optuna.create_study()
    clock = Pace.of([_run(0.010, head_s=0.3), _run(0.012, head_s=0.3)]).clock(
        TrainConfig(micro_batch_size=16, optimizer={"lr": 8e-3})
    )
    beat_s = 3.1
    by_steps = _pruning(study.ask(), beat_s, clock)
    assert not by_steps(_record(200, elapsed_s=4.0), 2.0)  # 2.49 s on the clock: a slow spell
    assert by_steps(_record(260, elapsed_s=2.9), 2.0)  # 3.15 s on the clock: cannot win
    by_wall = _pruning(study.ask(), beat_s)  # no clock: a step never measured
    assert by_wall(_record(200, elapsed_s=4.0), 2.0)
