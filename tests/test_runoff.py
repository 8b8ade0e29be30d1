"""The runoff re-runs the candidates within noise of the best, interleaved, and ranks them
by their median paced time to target: a lucky dip in one trial does not win; candidates of
one step are ordered by their steps to the target, and nothing runs."""

from __future__ import annotations

import math
from typing import Any

import pytest

from autotune.config import TrainConfig
from autotune.runtime import StepRecord
from autotune.search._measure import time_to_target
from autotune.search._runoff import Entry, needed_s, runoff
from autotune.search._types import Measured
from autotune.trial import TrialResult, TrialStatus

_TARGET = 1.5
_CURVE = [3.0 - 0.02 * k for k in range(120)]  # the smoothed curve crosses 1.5 near step 80


def _train(lr: float, micro: int) -> TrainConfig:
    return TrainConfig(micro_batch_size=micro, optimizer={"lr": lr})


def _elapsed(step_s: float, steps: int) -> list[float]:
    return [step_s * (k + 1) for k in range(steps)]


def _crossing(step_s: float) -> float:
    """The time to target of the curve at ``step_s`` seconds a step."""
    found = time_to_target(_CURVE, _elapsed(step_s, len(_CURVE)), _TARGET)
    assert found is not None
    return found


def _entry(trial: int, lr: float, step_s: float, micro: int | None = None) -> Entry:
    """A trial of ``lr`` that reached the target at ``step_s`` seconds a step; its step is
    its own (a micro-batch of its trial number) unless ``micro`` is given."""
    elapsed = _elapsed(step_s, len(_CURVE))
    train = _train(lr, micro if micro is not None else 8 + trial)
    run = Measured(
        train=train,
        losses=_CURVE,
        elapsed_s=elapsed,
        samples_per_s=100.0,
        time_to_target_s=_crossing(step_s),
    )
    return Entry(trial, run, [_crossing(step_s)])


class _Trials:
    """A Trialist whose every run of a config takes that config's ``step_s`` a step (None:
    the run's loss never falls); records the order of the runs."""

    startup_s = 0.5

    def __init__(self, step_s: dict[float, float | None]) -> None:
        self.step_s, self.order = step_s, []  # type: list[float]

    def run(self, config: TrainConfig, steps: int, **_: Any) -> TrialResult:
        lr = config.optimizer.lr
        self.order.append(lr)
        step_s = self.step_s[lr]
        losses = [3.0] * steps if step_s is None else _CURVE[:steps]
        records = [
            StepRecord(
                step=k + 1,
                loss=loss,
                elapsed_s=(step_s or 0.1) * (k + 1),
                samples=16 * (k + 1),
                step_time_s=step_s or 0.1,
                samples_per_s=100.0,
                lr=lr,
            )
            for k, loss in enumerate(losses)
        ]
        return TrialResult(status=TrialStatus.OK, reason="ok", steps=records, pid=1, wall_s=1.0)


def _run(
    entries: list[Entry], trials: _Trials, room: float = 1e6, notes: list[str] | None = None
) -> list[Entry]:
    say = (notes if notes is not None else []).append
    return runoff(entries, _TARGET, trials, 2, lambda: room, say)  # type: ignore[arg-type]


def test_a_lucky_dip_loses_to_the_candidate_that_is_faster_again() -> None:
    lucky = _entry(1, 1e-3, 0.010)  # its trial was fast, its repeats are not
    steady = _entry(2, 2e-3, 0.011)
    trials = _Trials({1e-3: 0.014, 2e-3: 0.011})
    notes: list[str] = []
    ranked = _run([lucky, steady], trials, notes=notes)
    assert [e.trial for e in ranked] == [2, 1]
    assert notes[0] == "runoff: 2 candidates within 30% of the best, 2 repeats each"
    step = 76  # where _CURVE's smoothed loss crosses 1.5, in every run
    assert notes[1].endswith(
        f"{77 * 0.011:.2f} s at its runs' pace (step {step}; wall clocks "
        f"{77 * 0.011:.2f}, {77 * 0.011:.2f}, {77 * 0.011:.2f} s)"
    )
    assert trials.order == [1e-3, 2e-3, 1e-3, 2e-3]  # interleaved
    assert len(lucky.times) == 3 and lucky.median_s > steady.median_s


def test_only_the_best_close_candidate_of_each_step_runs_and_the_rest_keep_their_order() -> None:
    entries = [
        _entry(0, 1e-3, 0.010),
        _entry(3, 1.5e-3, 0.0105, micro=8),  # trial 0's step: ordered by its steps already
        _entry(4, 2e-3, 0.011),
        _entry(5, 3e-3, 0.012),
        _entry(6, 4e-3, 0.0125),  # close, but past the first three
        _entry(7, 5e-3, 0.020),  # twice as slow: not close
    ]
    trials = _Trials({1e-3: 0.010, 2e-3: 0.011, 3e-3: 0.012})
    ranked = _run(entries, trials)
    assert sorted(trials.order) == [1e-3, 1e-3, 2e-3, 2e-3, 3e-3, 3e-3]
    assert [e.trial for e in ranked] == [0, 4, 5, 3, 6, 7]


def test_a_repeat_that_misses_the_target_counts_as_missed() -> None:
    fast = _entry(1, 1e-3, 0.010)
    trials = _Trials({1e-3: None, 2e-3: 0.011})
    ranked = _run([fast, _entry(2, 2e-3, 0.011)], trials)
    assert [e.trial for e in ranked] == [2, 1]
    assert fast.times[1:] == [math.inf, math.inf]


def test_no_room_runs_nothing_and_a_single_candidate_needs_no_runoff() -> None:
    entries = [_entry(1, 1e-3, 0.010), _entry(2, 2e-3, 0.011)]
    trials = _Trials({1e-3: 0.014, 2e-3: 0.011})
    assert _run(entries, trials, room=0.5) == entries and trials.order == []
    alone = [_entry(1, 1e-3, 0.010), _entry(2, 2e-3, 0.030)]
    assert _run(alone, trials) == alone and trials.order == []


def test_the_budget_needed_s_names_runs_every_round_and_less_does_not() -> None:
    """needed_s is what the convergence phase leaves the runoff: with it, all rounds run
    when each repeat costs what its trial took; with a tenth less, the last round does not."""
    entries = [_entry(1, 1e-3, 0.010), _entry(2, 2e-3, 0.011)]
    step_s = {1e-3: 0.010, 2e-3: 0.011}
    need = needed_s(entries, 2, _Trials.startup_s)
    for given, rounds in ((need, 2), (0.9 * need, 1)):
        fresh = [_entry(1, 1e-3, 0.010), _entry(2, 2e-3, 0.011)]
        trials = _Trials(dict(step_s))

        def room(given: float = given, trials: _Trials = trials) -> float:
            spent = sum(_crossing(step_s[lr]) + trials.startup_s for lr in trials.order)
            return given - spent

        runoff(fresh, _TARGET, trials, 2, room, lambda _: None)  # type: ignore[arg-type]
        assert len(trials.order) == 2 * rounds
    assert needed_s(entries[:1], 2, _Trials.startup_s) == 0.0  # nothing to decide


def test_needed_s_costs_joining_trials_only_while_the_slate_has_room() -> None:
    """A trial that may still join is costed at the slowest a close one can be (1.3x the
    best); the slate holds three, so a fourth joiner adds nothing."""
    one, three = [_entry(1, 1e-3, 0.010)], [_entry(i, i * 1e-3, 0.010) for i in (1, 2, 3)]
    best, start = one[0].times[0], _Trials.startup_s
    per_round = best + start + (1.3 * best + start)
    assert needed_s(one, 2, start, joining=1) == pytest.approx((1 + 1.25) * per_round)
    assert needed_s(one, 0, start, joining=1) == 0.0  # no rounds: no runoff
    assert needed_s(three, 2, start, joining=1) == needed_s(three, 2, start)
    assert needed_s([], 2, start, joining=1) == 0.0  # no winner yet: nothing to compare


def test_candidates_of_one_step_are_ordered_by_their_steps_and_none_re_runs() -> None:
    """Same micro-batch, different LRs: each one's steps to the target are the same in
    every run, so the pace decides nothing between them and no repeat is worth its cost."""
    entries = [_entry(1, 1e-3, 0.010, micro=16), _entry(2, 2e-3, 0.011, micro=16)]
    trials = _Trials({1e-3: 0.014, 2e-3: 0.011})
    notes: list[str] = []
    assert _run(entries, trials, notes=notes) == entries and trials.order == []
    assert notes == [
        "runoff: 2 candidates within 30% of the best share one step: ordered by their steps "
        "to the target (the same in every run), none re-run"
    ]
