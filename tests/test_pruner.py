"""The convergence phase's median rule: completed curves re-timed at the pace pooled now."""

from __future__ import annotations

import optuna
import pytest

from autotune import stability
from autotune.config import TrainConfig
from autotune.runtime import StepRecord
from autotune.search._convergence import _pruning, completed_runs, stored_runs
from autotune.search._pace import Pace
from autotune.search._pruner import Curve, MedianRule
from autotune.search._types import Measured, trial_run

_MICRO_4 = TrainConfig(micro_batch_size=4, optimizer={"lr": 3e-4})


def _run(losses: list[float], step_s: float, lr: float = 3e-4) -> Measured:
    train = _MICRO_4.model_copy(
        update={"optimizer": _MICRO_4.optimizer.model_copy(update={"lr": lr})}
    )
    elapsed = [step_s * k for k in range(1, len(losses) + 1)]
    return Measured(train=train, losses=losses, elapsed_s=elapsed, samples_per_s=4 / step_s)


def _falling(start: float, per_step: float, steps: int = 60) -> list[float]:
    return [start - per_step * k for k in range(steps)]


def _record(step: int, loss: float) -> StepRecord:
    return StepRecord(
        step=step, loss=loss, elapsed_s=0.0, lr=3e-4, samples=4 * step,
        step_time_s=0.1, samples_per_s=40.0,
    )  # fmt: skip


def test_a_curve_gives_the_loss_of_the_last_step_ended_and_nothing_outside_its_run() -> None:
    curve = Curve(seconds=[1.0, 2.0, 3.0], smoothed=[3.0, 2.5, 2.2])
    assert curve.at(0.5) is None  # before its first step ended
    assert curve.at(1.0) == 3.0
    assert curve.at(2.9) == 2.5
    assert curve.at(3.0) == 2.2
    assert curve.at(3.1) is None  # it had stopped: no value, as Optuna's median has none


def test_a_curve_is_timed_at_its_steps_pooled_pace_not_the_wall_clock_it_ran_at() -> None:
    fast = _run(_falling(4.0, 0.02), step_s=0.08)
    pace = Pace.of([fast, _run(_falling(4.0, 0.02), 0.1), _run(_falling(4.0, 0.02), 0.1)])
    curve = Curve.of(fast, pace)
    assert curve.seconds[9] == pytest.approx(0.1 + 9 * 0.1)  # the pooled head and pace
    assert curve.smoothed == pytest.approx(stability.smooth(fast.losses))
    alone = Curve.of(fast, Pace())  # no pooled run of its step: its own wall clock
    assert alone.seconds == fast.elapsed_s


def test_the_median_waits_for_two_completed_trials_and_the_warm_up() -> None:
    one = Curve(seconds=[float(s) for s in range(1, 11)], smoothed=[3.0] * 10)
    two = Curve(seconds=[float(s) for s in range(1, 6)], smoothed=[2.0] * 5)
    assert MedianRule([one]).median_at(4.0) is None  # one curve is a run's luck
    assert MedianRule([one, two]).median_at(2.0) is None  # the warm-up's seconds
    assert MedianRule([one, two]).median_at(4.0) == pytest.approx(2.5)
    assert MedianRule([one, two]).median_at(8.0) == pytest.approx(3.0)  # only `one` ran on
    assert MedianRule([one, two]).median_at(11.0) is None


def test_an_equal_candidate_is_not_pruned_against_curves_that_ran_in_a_faster_spell() -> None:
    """tiny_gpt, micro 4 (AVX2 host): lr 1.2e-3 crossed the target at step 50 like 6e-4,
    but was pruned at "second 5", its step 52, against 3e-4's and 6e-4's values reported
    at *their* "second 5", step ~60, on the pace pooled while they ran. Re-timed at one
    pace, the same step is the same second, and an equal candidate is never behind."""
    earlier = [_run(_falling(4.0, 0.018), 0.08), _run(_falling(4.0, 0.02), 0.08, lr=6e-4)]
    pace = Pace.of([*earlier, *(_run(_falling(4.0, 0.02), 0.1) for _ in range(3))])
    clock = pace.clock(_MICRO_4)
    assert clock is not None
    equal = _curve(_falling(4.0, 0.02))  # lr 1.2e-3: the same curve as 6e-4
    study = optuna.create_study()
    retimed = _pruning(study.ask(), None, clock, MedianRule.of(earlier, pace))
    assert not any(retimed(_record(k, x), s) for k, (x, s) in equal)
    # the curves on the clock they ran at: the same second was a later step for them
    frozen = _pruning(study.ask(), None, clock, MedianRule.of(earlier, Pace()))
    assert any(frozen(_record(k, x), s) for k, (x, s) in equal)
    worse = study.ask()
    judge = _pruning(worse, None, clock, MedianRule.of(earlier, pace))
    assert any(judge(_record(k, x), s) for k, (x, s) in _curve(_falling(4.3, 0.02)))
    assert worse.user_attrs["pruned_by"].startswith("behind the median at 3.0 s (")


def _curve(losses: list[float]) -> list[tuple[int, tuple[float, float]]]:
    return list(enumerate(zip(losses, stability.smooth(losses), strict=True), start=1))


def test_the_median_weighs_the_runs_of_completed_trials_only() -> None:
    study = optuna.create_study()
    for state, lr in (
        (optuna.trial.TrialState.COMPLETE, 3e-4),
        (optuna.trial.TrialState.PRUNED, 6e-4),
    ):
        trial = study.ask()
        trial.set_user_attr("run", _run(_falling(4.0, 0.02), 0.1, lr=lr).model_dump_json())
        study.tell(trial, 5.0 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)  # no run recorded
    assert [run.train.optimizer.lr for run in completed_runs(stored_runs(study))] == [3e-4]


def test_a_finished_trials_run_is_parsed_once_however_often_the_study_is_read() -> None:
    study = optuna.create_study()  # a tell re-reads every run: pace, runoff, climbs
    for lr in (1e-4, 2e-4, 3e-4):
        trial = study.ask()
        trial.set_user_attr("run", _run(_falling(4.0, 0.02), 0.1, lr=lr).model_dump_json())
        study.tell(trial, 5.0)
    trial_run.cache_clear()
    first = stored_runs(study)
    again = stored_runs(study)
    assert trial_run.cache_info().misses == 3  # parsed on the first read only
    assert [run for _, run in again] == [run for _, run in first]
    assert all(a is b for (_, a), (_, b) in zip(first, again, strict=True))
