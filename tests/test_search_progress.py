"""The search's pure parts: the target a baseline sets, the systems the convergence phase
starts from, the standing line and the top-configs table, the confirmation reserve."""

from __future__ import annotations

import dataclasses
import io
import math
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from rich.console import Console
from rich.table import Table

from autotune import stability
from autotune._search_view import top_table
from autotune.config import TrainConfig
from autotune.runtime import StepRecord
from autotune.search._convergence import (
    ConvergencePlan,
    baseline_repeat,
    best_time,
    climbed,
    decayed,
    earned_precisions,
    fastest_realisation,
    plateaued,
    refined,
    smaller,
    step_rate_gain,
    systems_choices,
    systems_values,
)
from autotune.search._measure import time_to_target
from autotune.search._progress import standing, status_of, top_configs
from autotune.search._systems import Dominated, beyond_saturation
from autotune.search._types import BaselineRun, Measured, small_batch_size, trial_run
from autotune.space import load_space, to_train_config
from autotune.trial import TrialResult, TrialStatus


def _curve(n: int, floor: float, noise: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [floor + 3.0 * math.exp(-k / 30) + rng.gauss(0, noise) for k in range(n)]


def test_baseline_target_is_near_the_end_of_a_still_falling_curve() -> None:
    losses = [5.0 - 0.02 * k + random.Random(k).gauss(0, 0.05) for k in range(150)]
    target = stability.baseline_target(losses)
    reached = stability.steps_to_target(losses, target)
    assert reached is not None and reached >= 130  # not on the steep start
    assert target < 5.0 - 0.02 * 125


def test_baseline_target_on_a_plateau_is_where_the_plateau_begins() -> None:
    losses = _curve(400, floor=0.5, noise=0.01)  # flat from ~step 150
    target = stability.baseline_target(losses)
    reached = stability.steps_to_target(losses, target)
    assert reached is not None and 60 <= reached <= 200
    assert 0.5 < target < 0.5 + 0.1 * 3.0


def test_baseline_target_band_widens_with_noise() -> None:
    quiet = stability.baseline_target(_curve(200, 1.0, 0.001))
    noisy = stability.baseline_target(_curve(200, 1.0, 0.5))
    assert noisy - 1.0 > quiet - 1.0


@pytest.mark.parametrize("losses", [[], [1.0, float("nan")]])
def test_baseline_target_needs_a_finite_curve(losses: list[float]) -> None:
    with pytest.raises(ValueError, match="finite"):
        stability.baseline_target(losses)


def _measured(micro: int, rate: float, precision: str = "bf16-mixed", accum: int = 1) -> Measured:
    train = TrainConfig(
        micro_batch_size=micro,
        grad_accum_steps=accum,
        precision=precision,
        optimizer={"lr": 1e-3},
    )
    return Measured(train=train, losses=[2.0, 1.0], elapsed_s=[0.1, 0.2], samples_per_s=rate)


def test_systems_choices_start_at_the_baseline_batch_one_per_size() -> None:
    fastest_first = [
        _measured(256, 331),
        _measured(256, 300, "32-true"),
        _measured(128, 290),
        _measured(128, 280, "32-true"),
        _measured(16, 200),
        _measured(512, 150),
    ]
    chosen = systems_choices(fastest_first, anchor=16)
    assert [m.train.micro_batch_size for m in chosen] == [16, 256, 128, 512]
    assert chosen[1].train.precision == "bf16-mixed"  # 1.10x fp32's samples/s: it earned it
    assert chosen[2].train.precision == "32-true"  # 1.04x: within one measurement's noise


def test_a_reduced_precision_stands_in_for_32_true_only_when_measurably_faster() -> None:
    systems = [
        _measured(512, 165_758),  # the AMX host's mlp_digits: 1.05x its fp32 twin
        _measured(512, 157_784, "32-true"),
        _measured(256, 118_556, "32-true"),
        _measured(256, 118_491),  # 1.00x
        _measured(64, 11_939),  # cnn_digits there: 1.39x
        _measured(64, 8_566, "32-true"),
        _measured(16, 5_000),  # no fp32 twin measured: nothing to yield to
    ]
    kept = earned_precisions(systems)
    assert [(m.train.micro_batch_size, m.train.precision) for m in kept] == [
        (512, "32-true"),
        (256, "32-true"),
        (64, "bf16-mixed"),
        (64, "32-true"),
        (16, "bf16-mixed"),
    ]
    earned = earned_precisions([_measured(64, 111), _measured(64, 100, "32-true")])
    assert [m.train.precision for m in earned] == ["bf16-mixed", "32-true"]
    other_step = [_measured(64, 101), _measured(64, 100, "32-true", accum=2)]
    assert earned_precisions(other_step) == other_step  # not twins: another accumulation
    # The realised micro-batch follows the same rule: fp32 micro 256 computes 64 x 4.
    values = {"micro_batch_size": 64, "precision": "32-true", "grad_accum_steps": 4}
    realised, run = fastest_realisation(values, _measured(64, 8_566, "32-true"), systems)
    assert (realised["micro_batch_size"], realised["precision"], run.samples_per_s) == (
        256,
        "32-true",
        118_556,
    )


def test_accumulation_is_realised_on_the_fastest_micro_batch_that_divides_it() -> None:
    systems = [_measured(128, 900), _measured(64, 700), _measured(256, 1000, "32-true")]
    chosen = _measured(16, 200)
    values = {"micro_batch_size": 16, "precision": "bf16-mixed", "grad_accum_steps": 8}
    realised, run = fastest_realisation(values, chosen, systems)
    assert (realised["micro_batch_size"], realised["grad_accum_steps"]) == (128, 1)
    assert run.samples_per_s == 900  # 256 is faster but too big for a global batch of 128
    # A faster larger micro-batch of another precision computes it (mlp_digits: fp32 micro
    # 64 x 4 ran as fp32 micro 256 at 141k samples/s where bf16 micro 256 ran 166k).
    other, run = fastest_realisation({**values, "grad_accum_steps": 16}, chosen, systems)
    assert (other["micro_batch_size"], other["precision"], other["grad_accum_steps"]) == (
        256,
        "32-true",
        1,
    )
    assert run.samples_per_s == 1000
    kept, same = fastest_realisation({**values, "grad_accum_steps": 1}, chosen, systems)
    assert kept["micro_batch_size"] == 16 and same is chosen  # nothing else divides 16
    # A smaller micro-batch measured faster is not taken: more accumulation, and BatchNorm
    # statistics over fewer samples (cnn_digits: micro 16 at 2,162 against 64 at 2,152).
    small = [_measured(16, 2162), _measured(8, 3000)]
    chosen = _measured(64, 2152)
    values = {"micro_batch_size": 64, "precision": "bf16-mixed", "grad_accum_steps": 1}
    kept, same = fastest_realisation(values, chosen, small)
    assert (kept["micro_batch_size"], kept.get("grad_accum_steps")) == (64, 1) and same is chosen
    doubled, _ = fastest_realisation({**values, "grad_accum_steps": 2}, chosen, small)
    assert (doubled["micro_batch_size"], doubled["grad_accum_steps"]) == (64, 2)


def _study_with(
    trials: list[tuple[str, float | None, bool]],
    lrs: list[float] | None = None,
    micros: list[int] | None = None,
) -> optuna.Study:
    """Trials of (state, value, reached); all of one config, or of ``lrs``' LRs (and
    ``micros``' micro-batches), one each."""
    study = optuna.create_study(direction="minimize")
    for i, (state, value, reached) in enumerate(trials):
        micro = micros[i] if micros else 8
        config = TrainConfig(micro_batch_size=micro, optimizer={"lr": lrs[i] if lrs else 1e-3})
        run = Measured(
            train=config,
            losses=[1.0],
            elapsed_s=[0.5],
            samples_per_s=10.0,
            time_to_target_s=value if reached else None,
        )
        attrs = {
            "train": config.model_dump_json(),
            "run": run.model_dump_json(),
            "reached": reached,
            "status": "crash" if state == "FAIL" else "ok",
        }
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[state],
                value=value if state == "COMPLETE" else None,
                user_attrs=attrs,
            )
        )
    return study


def test_the_second_seed_is_the_first_at_a_decayed_higher_lr() -> None:
    space = load_space("default")
    first = {"lr_multiplier": 1.0, "schedule": "constant", "grad_accum_steps": 1, "systems": 0}
    second = decayed(space, first)
    assert second == {**first, "lr_multiplier": 4.0, "schedule": "cosine"}
    assert decayed(space, {**first, "lr_multiplier": 3.0}) == {**second, "lr_multiplier": 8.0}
    assert decayed(space, {**first, "lr_multiplier": 8.0}) is None  # no room above
    no_cosine = space.model_copy(
        update={"convergence": space.convergence.model_copy(update={"schedule": ["constant"]})}
    )
    assert decayed(no_cosine, first) is None


def _winner(micro: int, accum: int, lr: float) -> tuple[optuna.trial.FrozenTrial, Measured]:
    """A trial (params as the convergence phase suggests them) that reached the target."""
    params = {"systems": 0, "grad_accum_steps": accum, "lr_multiplier": 1.0, "schedule": "cosine"}
    dists = {
        "systems": optuna.distributions.CategoricalDistribution([0, 1, 2]),
        "grad_accum_steps": optuna.distributions.CategoricalDistribution([1, 2, 4]),
        "lr_multiplier": optuna.distributions.FloatDistribution(0.25, 8.0, log=True),
        "schedule": optuna.distributions.CategoricalDistribution(["constant", "cosine"]),
    }
    trial = optuna.trial.create_trial(value=1.0, params=params, distributions=dists)
    train = TrainConfig(micro_batch_size=micro, grad_accum_steps=accum, optimizer={"lr": lr})
    run = Measured(train=train, losses=[2.0, 1.0], elapsed_s=[0.1, 0.2], samples_per_s=90.0)
    return trial, run


def test_the_larger_batch_seed_scales_the_best_trials_lr_linearly() -> None:
    """cnn_digits on an AVX512-BF16 host: the best trial ran micro 16 at 4e-3, micro 64
    ran 1.9x its samples/s, and the grid's best was micro 64 at 1.6e-2, a matched LR the
    search's sampler never drew. The seed tries the best trial's params there."""
    from autotune.search._convergence import larger

    plan = _plan_with_baseline_at(20.0)  # the default space: a relative LR range
    top = [_measured(16, 9_250), _measured(256, 20_600), _measured(64, 17_400)]

    def lr_at_64(seed: dict[str, object] | None) -> float:
        assert seed is not None
        values = {k: v for k, v in seed.items() if k != "systems"}
        values |= {**systems_values(top[2].train), "lr_scaling": "auto"}
        return to_train_config(values, plan.base, 100).optimizer.lr

    seed = larger(plan, top, _winner(16, 1, 4e-3))
    assert seed is not None
    assert seed["systems"] == 2  # micro 64: the smallest larger batch that runs faster
    assert lr_at_64(seed) == pytest.approx(1.6e-2)  # 4e-3 x 64/16
    assert (seed["schedule"], seed["grad_accum_steps"]) == ("cosine", 1)
    assert lr_at_64(larger(plan, top, _winner(16, 2, 8e-3))) == pytest.approx(1.6e-2)  # from 32
    flat = [_measured(16, 9_250), _measured(64, 10_000)]  # 8% more samples/s: not worth it
    assert larger(plan, flat, _winner(16, 1, 4e-3)) is None


def test_the_larger_batch_seed_steps_up_to_the_next_batch_whatever_its_noisy_gain() -> None:
    """cnn_digits' grid benchmark (AVX2 host): the systems phase measured micro 64 at 1.04x
    micro 16 and micro 256 at 1.71x; the seed went to micro 256 and lost, and the search
    reached 76.6% of the grid's best, micro 64. The same pair measured 1.0x-2.5x in fresh
    processes: the seed steps up to micro 64 once a larger batch gains enough."""
    from autotune.search._convergence import larger

    plan = _plan_with_baseline_at(20.0)
    top = [_measured(16, 1_278), _measured(256, 2_186), _measured(64, 1_333)]
    seed = larger(plan, top, _winner(16, 1, 4e-3))
    assert seed is not None and seed["systems"] == 2  # micro 64, not 256
    slower = [_measured(16, 1_278), _measured(256, 2_186), _measured(64, 900)]  # 0.70x
    seed = larger(plan, slower, _winner(16, 1, 4e-3))
    assert seed is not None and seed["systems"] == 1  # measured slower beyond the noise


def test_the_larger_batch_seed_steps_at_least_4x_where_a_batch_that_large_was_measured() -> None:
    """mlp_digits (AVX2 host): micro 64 reached the target at 0.68 s, the grid's micro 256
    at 0.45 s (medians of 9 re-runs). A doubling moves the time by less than one run's
    noise; the step is to the smallest measured batch at least 4x, else the largest."""
    from autotune.search._convergence import larger

    plan = _plan_with_baseline_at(20.0)
    top = [_measured(64, 25_000), _measured(128, 33_000), _measured(256, 38_000)]
    top += [_measured(512, 42_000), _measured(32, 14_000)]
    seed = larger(plan, top, _winner(64, 1, 5e-3))
    assert seed is not None and seed["systems"] == 2  # micro 256, not 128
    from_16 = [_measured(16, 9_250), _measured(32, 12_000), _measured(64, 17_400)]
    seed = larger(plan, from_16, _winner(16, 1, 4e-3))
    assert seed is not None and seed["systems"] == 2  # micro 64, not 32
    short = [_measured(16, 9_250), _measured(32, 12_000)]  # nothing 4x larger measured
    seed = larger(plan, short, _winner(16, 1, 4e-3))
    assert seed is not None and seed["systems"] == 1


def test_the_batch_climb_steps_from_the_best_trial_while_each_step_wins() -> None:
    from autotune.search._convergence import batch_climbed

    plan = _plan_with_baseline_at(20.0)
    top = [_measured(8, 10.0), _measured(64, 30.0)]
    study = _study_of_winners({1e-3: 5.0, 2e-3: 6.0})  # trial 0 (micro 8) is the best
    best = study.trials[0]
    seed = batch_climbed(plan, top, study, best, number=2, first=True)
    assert seed is not None and seed["systems"] == 1  # micro 64: 8x trial 0's batch
    assert batch_climbed(plan, top, study, best, number=3, first=False) is None  # 2 lost
    wide = optuna.distributions.FloatDistribution(1e-9, 1e9, log=True)
    dists = {"systems": optuna.distributions.CategoricalDistribution([0, 1])}
    dists |= {k: wide for k in seed if k != "systems"}
    study.add_trial(optuna.trial.create_trial(value=7.0, params=seed, distributions=dists))
    assert batch_climbed(plan, top, study, best, number=3, first=True) is None  # ran already


def test_a_batch_climb_step_that_a_trial_measured_already_is_climbed_on_from() -> None:
    """mlp_digits (AVX2 host): the larger-batch seed had run micro 64 at 1.6e-2 and lost;
    the climb from the best micro-16 trial came to the same params and ended, and the
    search confirmed micro 64 at 2.31x where searches that reached micro 256 confirmed
    3.6-3.9x. The climb steps on from the trial that ran that step."""
    from autotune.search._convergence import batch_climbed, larger

    plan = _plan_with_baseline_at(20.0)
    top = [_measured(8, 10.0), _measured(64, 30.0), _measured(512, 90.0)]
    study = _study_of_winners({1e-3: 5.0})  # trial 0, micro 8: the best
    best = study.trials[0]
    step = batch_climbed(plan, top, study, best, number=1, first=True)
    assert step is not None and step["systems"] == 1  # micro 64: 8x trial 0's batch
    train = TrainConfig(micro_batch_size=64, optimizer={"lr": 4e-3})
    lost = Measured(
        train=train, losses=[1.0], elapsed_s=[0.5], samples_per_s=30.0, time_to_target_s=6.0
    )
    wide = optuna.distributions.FloatDistribution(1e-9, 1e9, log=True)
    dists = {"systems": optuna.distributions.CategoricalDistribution([0, 1, 2])}
    dists |= {k: wide for k in step if k != "systems"}
    attrs = {"run": lost.model_dump_json(), "reached": True}
    study.add_trial(
        optuna.trial.create_trial(value=6.0, params=step, distributions=dists, user_attrs=attrs)
    )
    taken = study.trials[1]
    on = batch_climbed(plan, top, study, best, number=2, first=True)
    assert on is not None and on["systems"] == 2  # micro 512: 8x the measured step's batch
    assert on == larger(plan, top, (taken, lost))  # from that trial's LR, not trial 0's
    study.add_trial(optuna.trial.create_trial(value=7.0, params=on, distributions=dists))
    assert batch_climbed(plan, top, study, best, number=3, first=True) is None  # both ran


def test_a_batch_climb_step_whose_lr_stalled_the_network_is_taken_again_at_half_its_lr() -> None:
    """A dogfood transformer trained by SGD: micro 32 at 0.2 scaled to micro 128 at 0.8
    stayed at chance level (2.31; the baseline started at 2.30), was pruned, and the climb
    stepped on from it to micro 512 at 3.2, which diverged. A run that got under a tenth of
    the way to the target took too high an LR, as a diverged one did: the step is taken
    again at half it. A run that made headway is still stepped on from."""
    from autotune.search._convergence import batch_climbed, larger

    falling = [0.06 + 2.24 * math.exp(-k / 40) for k in range(300)]
    baseline = BaselineRun(
        run=_measured(16, 100).model_copy(update={"losses": falling}),
        steps=300,
        target_loss=0.1,
        target_from="baseline",
    )
    plan = dataclasses.replace(_plan_with_baseline_at(20.0), baseline=baseline)
    top = [_measured(8, 10.0), _measured(64, 30.0), _measured(512, 90.0)]
    study = _study_of_winners({1e-3: 5.0})  # trial 0, micro 8: the best
    best = study.trials[0]
    step = batch_climbed(plan, top, study, best, number=1, first=True)
    assert step is not None and step["systems"] == 1

    def ran(study: optuna.Study, params: dict[str, Any], losses: list[float]) -> None:
        train = TrainConfig(micro_batch_size=64, optimizer={"lr": 4e-3})
        elapsed = [0.1 * (k + 1) for k in range(len(losses))]
        run = Measured(train=train, losses=losses, elapsed_s=elapsed, samples_per_s=30.0)
        wide = optuna.distributions.FloatDistribution(1e-9, 1e9, log=True)
        dists = {"systems": optuna.distributions.CategoricalDistribution([0, 1, 2])}
        dists |= {k: wide for k in params if k != "systems"}
        attrs = {"run": run.model_dump_json(), "status": "PRUNED"}
        state = optuna.trial.TrialState.PRUNED
        study.add_trial(
            optuna.trial.create_trial(
                state=state, params=params, distributions=dists, user_attrs=attrs
            )
        )

    stalled = [2.31 + 0.03 * math.sin(k) for k in range(40)]  # never left chance level
    ran(study, step, stalled)
    again = batch_climbed(plan, top, study, best, number=2, first=True)
    assert again == {**step, "lr_multiplier": step["lr_multiplier"] * 0.5}
    ran(study, again, stalled)  # stalled at half the LR too: the climb ends, not steps on
    assert batch_climbed(plan, top, study, best, number=3, first=True) is None

    study = _study_of_winners({1e-3: 5.0})
    ran(study, step, [2.3 - 0.03 * k for k in range(40)])  # half the way, then pruned
    on = batch_climbed(plan, top, study, study.trials[0], number=2, first=True)
    taken = study.trials[1]
    assert on is not None and on["systems"] == 2  # micro 512, from the step taken
    assert on == larger(plan, top, (taken, trial_run(taken.user_attrs["run"])))


def test_a_batch_climb_step_that_diverged_is_taken_again_at_half_its_lr() -> None:
    """mlp_digits' demo search: the best trial, micro 16 at 4e-3 (at the edge of
    divergence), scaled linearly to micro 64 at 1.6e-2, which diverged; the climb then had
    no step left, and the search confirmed 1.76x against 3.3-3.8x where it climbed. The
    step is taken again at the square-root rule's LR, half the linear one for 4x."""
    from autotune.search._convergence import batch_climbed

    plan = _plan_with_baseline_at(20.0)
    top = [_measured(8, 10.0), _measured(64, 30.0)]
    study = _study_of_winners({1e-3: 5.0, 2e-3: 6.0})
    best = study.trials[0]
    step = batch_climbed(plan, top, study, best, number=2, first=True)
    assert step is not None
    wide = optuna.distributions.FloatDistribution(1e-9, 1e9, log=True)
    dists = {"systems": optuna.distributions.CategoricalDistribution([0, 1])}
    dists |= {k: wide for k in step if k != "systems"}
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params=step,
            distributions=dists,
            user_attrs={"status": "UNSTABLE"},
        )
    )
    again = batch_climbed(plan, top, study, best, number=3, first=True)
    assert again is not None
    assert again == {**step, "lr_multiplier": step["lr_multiplier"] * 0.5}
    at_floor = {**step, "lr_multiplier": plan.space.convergence.lr.low}  # type: ignore[union-attr]
    from autotune.search._convergence import _below_failed

    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params=at_floor,
            distributions=dists,
            user_attrs={"status": "unstable"},  # the runtime's own NaN stop
        )
    )
    assert _below_failed(plan.space.convergence.lr, study, at_floor, plan.baseline) is None


def test_the_larger_batch_seed_comes_once_right_after_the_fixed_seeds() -> None:
    """Seeded from the best trial when the next trial is the first after the fixed seeds;
    at any other number (a resumed study, another worker's trial) it is not queued."""
    from autotune.search._convergence import _seeding

    plan = _plan_with_baseline_at(20.0)
    top = [_measured(8, 10), _measured(64, 300)]  # the study's trials ran micro 8
    study = _study_of_winners({1e-3: 5.0, 2e-3: 6.0})
    fixed = [{"lr_multiplier": 1.0}, {"lr_multiplier": 4.0}]
    seed_at = _seeding(plan, top, fixed, study)
    assert [seed_at(0), seed_at(1)] == fixed
    seed = seed_at(2)
    assert seed is not None and seed["systems"] == 1  # from trial 0 (5 s), the best
    assert seed_at(2 + 2 + 2 + 1) is None  # past the LR and batch climbs: the sampler's


def _climbing_study(values: list[float]) -> optuna.Study:
    """Trials at LR multipliers 1, 2, 4... (each the last doubled) that reached the target
    in ``values`` seconds."""
    dists = {
        "lr_multiplier": optuna.distributions.FloatDistribution(0.25, 8.0, log=True),
        "schedule": optuna.distributions.CategoricalDistribution(["constant", "cosine"]),
    }
    study = optuna.create_study()
    for k, value in enumerate(values):
        params = {"lr_multiplier": 2.0**k, "schedule": "constant"}
        run = _measured(8, 10.0).model_copy(update={"time_to_target_s": value})
        attrs = {"reached": True, "run": run.model_dump_json()}
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params=params, distributions=dists, user_attrs=attrs
            )
        )
    return study


def _rival_study(trials: list[tuple[int, float, float]]) -> optuna.Study:
    """Trials of (micro-batch, LR multiplier, seconds to the target), all at the target."""
    dists = {
        "systems": optuna.distributions.CategoricalDistribution([0, 1, 2]),
        "lr_multiplier": optuna.distributions.FloatDistribution(0.25, 8.0, log=True),
    }
    study = optuna.create_study()
    for micro, multiplier, value in trials:
        params = {"systems": {4: 0, 16: 1, 64: 2}[micro], "lr_multiplier": multiplier}
        run = _measured(micro, 10.0).model_copy(update={"time_to_target_s": value})
        attrs = {"reached": True, "run": run.model_dump_json()}
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params=params, distributions=dists, user_attrs=attrs
            )
        )
    return study


def test_a_close_rival_steps_best_trial_gets_one_lr_doubling_of_its_own() -> None:
    """lstm_text (AVX2 host): micro 16 at 4e-3 led micro 4 at 1e-3 by 2% (6.49 s against
    6.63 s), the LR climbs went from micro 16 only, the runoff then put micro 4 first, and
    the pick kept 1e-3 (2.01x) where micro 4 at 4e-3 had confirmed 3.81x."""
    from autotune.search._convergence import rival_climbed

    plan = _plan_with_baseline_at(20.0)
    study = _rival_study([(16, 4.0, 6.49), (4, 1.0, 6.63), (16, 8.0, 7.5), (4, 0.5, 9.0)])
    assert rival_climbed(plan, study) == {"systems": 0, "lr_multiplier": 2.0}
    far = _rival_study([(16, 4.0, 6.49), (4, 1.0, 6.49 * 1.31)])  # past the runoff's margin
    assert rival_climbed(plan, far) is None
    alone = _rival_study([(16, 4.0, 6.49), (16, 2.0, 6.6)])  # one step: nothing to rival
    assert rival_climbed(plan, alone) is None
    climbed_already = _rival_study([(16, 4.0, 6.49), (4, 1.0, 6.63), (4, 2.0, 7.0)])
    assert rival_climbed(plan, climbed_already) is None


def test_the_lr_climb_doubles_the_best_lr_while_each_doubling_wins() -> None:
    """tiny_gpt, AVX2 host: the searches' best was the baseline's LR (3e-4, 2.0-2.4x the
    baseline's speed); twice it (6.9e-4), drawn by TPE in one search of several, 3.35x."""
    space = load_space("default")

    def climb(study: optuna.Study, number: int, first: bool) -> dict[str, object] | None:
        best = min(study.trials, key=lambda t: t.value if t.value is not None else math.inf)
        return climbed(space, study, best, number, first)

    one = _climbing_study([5.0])
    assert climb(one, 1, first=True) == {"lr_multiplier": 2.0, "schedule": "constant"}
    won = _climbing_study([5.0, 4.0])  # trial 1, the doubling, is the best: climb on
    assert climb(won, 2, first=False) == {"lr_multiplier": 4.0, "schedule": "constant"}
    lost = _climbing_study([5.0, 6.0])  # the doubling lost: no second climb
    assert climb(lost, 2, first=False) is None
    assert climb(lost, 2, first=True) is None  # 2x the best (trial 0) already ran
    top = _climbing_study([5.0, 4.0, 3.0, 2.0])  # the best at 8, the space's top
    assert climb(top, 4, first=False) is None


def _lr_study(points: list[tuple[float, str, float]]) -> optuna.Study:
    """Trials of (LR multiplier, schedule, seconds to the target)."""
    dists = {
        "lr_multiplier": optuna.distributions.FloatDistribution(0.25, 8.0, log=True),
        "schedule": optuna.distributions.CategoricalDistribution(["constant", "cosine"]),
    }
    study = optuna.create_study()
    for multiplier, schedule, value in points:
        params = {"lr_multiplier": multiplier, "schedule": schedule}
        study.add_trial(optuna.trial.create_trial(value=value, params=params, distributions=dists))
    return study


def test_the_lr_refinement_steps_up_then_down_around_the_best_where_untried() -> None:
    """mlp_digits, AMX host: the best at micro 256 appeared after the climbs, at 1.2e-2, and
    TPE drew 1.07e-2 and 2.6-3.1e-2 there; the grid's 1.45e-2 was 11% faster to the target."""
    space = load_space("default")

    def refine(points: list[tuple[float, str, float]]) -> object:
        study = _lr_study(points)
        best = min(study.trials, key=lambda t: t.value if t.value is not None else math.inf)
        return refined(space, study, best)

    up = 2.0**0.5
    assert refine([(1.0, "cosine", 5.0)]) == {"lr_multiplier": up, "schedule": "cosine"}
    # up won: up again from it
    assert refine([(1.0, "cosine", 5.0), (up, "cosine", 4.0)]) == {
        "lr_multiplier": pytest.approx(2.0),
        "schedule": "cosine",
    }
    # up lost: down from the best
    assert refine([(1.0, "cosine", 5.0), (up, "cosine", 6.0)]) == {
        "lr_multiplier": pytest.approx(1.0 / up),
        "schedule": "cosine",
    }
    both = [(1.0, "cosine", 5.0), (1.5, "cosine", 6.0), (0.65, "cosine", 6.0)]
    assert refine(both) is None  # both steps ran, near enough (within 2**0.25)
    other_schedule = [(1.0, "cosine", 5.0), (up, "constant", 6.0)]
    assert refine(other_schedule) == {"lr_multiplier": up, "schedule": "cosine"}
    assert refine([(8.0, "cosine", 5.0)]) == {"lr_multiplier": 8.0 / up, "schedule": "cosine"}


def test_the_climb_starts_from_the_fastest_trial_at_the_current_pace() -> None:
    """A trial's value is paced with the runs pooled when it was told: tiny_gpt's climb
    crossed at step 46 and was valued 4.35 s, behind 4.33 s for step 50 told earlier at
    a faster pool. Of one step, the fewer steps are the faster now."""
    from autotune.search._convergence import _fastest

    plan = _plan_with_baseline_at(20.0)
    target = plan.baseline.target_loss
    slow = [3.0] * 40 + [target / 2] * 40  # crosses later
    fast = [3.0] * 30 + [target / 2] * 50  # crosses 10 steps earlier
    study = optuna.create_study()
    for value, losses in ((4.33, slow), (4.35, fast)):  # the stale values invert the order
        run = Measured(
            train=TrainConfig(micro_batch_size=4, optimizer={"lr": 3e-4}),
            losses=losses,
            elapsed_s=[0.5 + 0.05 * k for k in range(len(losses))],  # one step: one pace
            samples_per_s=40.0,
        )
        attrs = {"reached": True, "run": run.model_dump_json()}
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=attrs))
    fastest = _fastest(plan, study)
    assert fastest is not None and fastest.number == 1


def test_patience_counts_trials_since_the_last_real_gain() -> None:
    missed = [("PRUNED", None, False), ("COMPLETE", 20.0, False), ("FAIL", None, False)]
    assert not plateaued(_study_with(missed * 4), patience=8)  # nothing reached: never
    gains = [("COMPLETE", 10.0, True), ("COMPLETE", 9.0, True), ("COMPLETE", 8.0, True)]
    assert not plateaued(_study_with(gains + missed[:2]), patience=3)  # 8.0 gained 11%
    assert plateaued(_study_with(gains + missed), patience=3)
    tail = [("COMPLETE", 7.9, True), ("COMPLETE", 7.8, True), *missed[:1]]  # < 5% each
    assert plateaued(_study_with(gains + tail), patience=3)
    assert not plateaued(_study_with(gains + tail + [("COMPLETE", 7.0, True)]), patience=3)
    assert plateaued(_study_with(gains + missed + missed), patience=6)


def test_a_gain_within_the_timing_noise_of_a_fast_target_is_no_real_gain() -> None:
    """mlp_digits reaches the target in 0.1 s: 0.100 -> 0.090 s is 10%, but 10 ms is
    inside the +-10 ms one config spans over repeats, so it does not restart patience."""
    missed = [("PRUNED", None, False)] * 2
    fast = [("COMPLETE", 0.100, True), *missed, ("COMPLETE", 0.090, True)]
    assert plateaued(_study_with(fast), patience=3)
    assert not plateaued(_study_with([*fast[:3], ("COMPLETE", 0.070, True)]), patience=3)


def test_standing_counts_statuses_and_knows_the_best() -> None:
    study = _study_with(
        [
            ("COMPLETE", 9.0, True),
            ("COMPLETE", 20.0, False),
            ("PRUNED", None, False),
            ("FAIL", None, False),
            ("COMPLETE", 7.5, True),
        ]
    )
    now = standing(study, max_trials=10, left_s=100.0, reserve_s=30.0)
    assert now.counts == {"OK": 3, "PRUNED": 1, "CRASH": 1}
    assert (now.best_s, now.best_trial, now.finished, now.total) == (7.5, 4, 5, 10)
    assert "trial 5/10" in now.line() and "best 7.50 s (trial 4)" in now.line()
    assert best_time(study) == 7.5
    assert [status_of(t) for t in study.trials] == ["OK", "OK", "PRUNED", "CRASH", "OK"]


def test_top_configs_rank_reached_first_then_the_rest() -> None:
    study = _study_with(
        [
            ("FAIL", None, False),
            ("COMPLETE", 20.0, False),
            ("COMPLETE", 9.0, True),
            ("COMPLETE", 7.5, True),
        ]
    )
    rows = top_configs(study, {}, k=3)
    assert [r.trial for r in rows] == [3, 2, 1]
    assert rows[0].time_to_target_s == 7.5 and rows[2].time_to_target_s is None


def test_top_configs_rank_as_the_search_does_at_its_end_and_mark_the_pick() -> None:
    """Two trials of one step: trial 0's run was the faster by its own wall clock (a fast
    spell of the machine), trial 1 crossed the target in fewer steps, so the search, pacing
    both at one pooled pace, ranked it first and picked it. The table lists them so, with
    the times the search compared, not the wall clocks (found on a 5-step regression task:
    the table had the pick second)."""
    study = _study_with([("COMPLETE", 0.030, True), ("COMPLETE", 0.035, True)])
    rows = top_configs(study, {0: 0.041, 1: 0.032}, picked=1)
    assert [(r.trial, r.time_to_target_s, r.picked) for r in rows] == [
        (1, 0.032, True),
        (0, 0.041, False),
    ]
    table = _rendered(top_table(rows))
    assert "1 *" in table and "0.032 s" in table and "0.041 s" in table
    assert "* the pick" in table
    unpicked = _rendered(top_table([row.model_copy(update={"picked": False}) for row in rows]))
    assert "runs of its step" in unpicked and "* the pick" not in unpicked
    # a tie (one step, one crossing step, one pace) keeps the search's order
    tied = top_configs(study, {1: 0.032, 0: 0.032}, picked=1)
    assert [r.trial for r in tied] == [1, 0]


def _rendered(table: Table) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def _plan_with_baseline_at(time_to_target_s: float) -> ConvergencePlan:
    """A plan whose baseline reaches the target in ``time_to_target_s``; 500 s reserve."""
    run = _measured(16, 100).model_copy(update={"time_to_target_s": time_to_target_s})
    baseline = BaselineRun(run=run, steps=2, target_loss=1.0, target_from="baseline")
    return ConvergencePlan(
        load_space("default"), run.train, [], baseline, None, reserve_s=500.0, confirm_pairs=3
    )


def test_reserve_follows_the_best_time_once_there_is_one() -> None:
    plan = _plan_with_baseline_at(20.0)
    assert plan.reserve_now(None) == 500.0
    fast, slow = plan.reserve_now(5.0), plan.reserve_now(15.0)
    assert fast < slow < 500.0
    assert fast > 3 * 20.0  # three baseline runs at least


def test_checkpointing_is_only_kept_where_it_lets_a_batch_fit() -> None:
    from autotune.search._systems import Candidate, _without_needless_checkpointing

    def cand(micro: int, ckpt: str, rate: float) -> Candidate:
        config = TrainConfig(
            micro_batch_size=micro, activation_checkpointing=ckpt, optimizer={"lr": 1e-3}
        )
        return Candidate(config, {}, rate, None)

    # At 16 both fit: the (noisily) faster-predicted checkpointed twin goes. At 512 only the
    # checkpointed config fits: it stays.
    kept = _without_needless_checkpointing(
        [cand(16, "full", 150.0), cand(16, "none", 140.0), cand(512, "full", 120.0)]
    )
    assert [(c.config.micro_batch_size, c.config.activation_checkpointing) for c in kept] == [
        (16, "none"),
        (512, "full"),
    ]


def test_a_systems_measurement_is_capped_so_a_hang_costs_a_minute() -> None:
    from autotune.search._systems import Candidate, _measure_cap_s

    config = TrainConfig(micro_batch_size=32, optimizer={"lr": 1e-3})
    fast = Candidate(config, {}, samples_per_s=320.0, peak_bytes=None)  # 0.1 s per step
    slow = Candidate(config, {}, samples_per_s=3.2, peak_bytes=None)  # 10 s per step
    assert _measure_cap_s(fast, 12) == 60.0
    assert _measure_cap_s(slow, 12) == pytest.approx(1200.0)


def test_no_reserve_for_an_fp32_check_the_baseline_already_ran() -> None:
    plan = _plan_with_baseline_at(20.0)
    from autotune.search._convergence import _CANNOT_WIN_MARGIN

    saved = plan.reserve_now(5.0) - plan.reserve_now(5.0, check_free=True)
    assert saved == pytest.approx(_CANNOT_WIN_MARGIN * 5.0 + plan.startup_s)  # one winner run


def test_the_reserve_counts_the_measured_start_up_of_every_confirmation_run() -> None:
    plan = _plan_with_baseline_at(20.0)
    slow_starts = dataclasses.replace(plan, startup_s=plan.startup_s + 2.0)
    # 3 pairs of two runs each, and the winner's fp32 check: 7 start-ups
    assert slow_starts.reserve_now(5.0) - plan.reserve_now(5.0) == pytest.approx(7 * 2.0)


def test_a_trialists_start_up_is_the_median_of_its_latest_measured(tmp_path: Path) -> None:
    from autotune.search._measure import STARTUP_PRIOR_S, Trialist

    trials = Trialist(tmp_path / "model.py", tmp_path, seed=0)
    assert trials.startup_s == STARTUP_PRIOR_S  # nothing measured yet
    trials.startups.extend([6.0, 1.0, 1.2, 0.9])  # the first paid the fork server's start
    assert trials.startup_s == pytest.approx(1.1)
    trials.startups.extend([1.0] * 8)
    assert trials.startup_s == 1.0  # only the latest count
    trials.close()


def test_the_small_batch_is_a_quarter_of_the_baseline_or_the_nearest_below_it() -> None:
    assert small_batch_size([4, 8, 16, 64], anchor=16) == 4
    assert small_batch_size([8, 16, 64], anchor=16) == 8  # the only one below
    assert small_batch_size([2, 8, 16], anchor=16) == 8  # 2 and 8 tie around 4: the larger
    assert small_batch_size([16, 64], anchor=16) is None


def test_the_small_batch_seed_keeps_the_baseline_lr_on_the_measured_small_config() -> None:
    plan = _plan_with_baseline_at(20.0)  # baseline: micro 16, AdamW at 1e-3
    top = [_measured(16, 200), _measured(128, 300), _measured(4, 120), _measured(8, 150)]
    seed = smaller(plan, top, steps=100)
    assert seed is not None and seed["systems"] == 2 and seed["grad_accum_steps"] == 1
    # The sqrt rule would scale 1e-3 down by 2 at a quarter of the batch: x2 undoes it.
    assert seed["lr_multiplier"] == pytest.approx(2.0)
    values = {**systems_values(top[2].train), **seed, "lr_scaling": "auto"}
    values.pop("systems")
    assert to_train_config(values, plan.base, 100).optimizer.lr == pytest.approx(1e-3)
    assert smaller(plan, top[:2], steps=100) is None  # nothing below the baseline's batch


def test_the_small_batch_seed_runs_second_only_where_its_steps_are_cheap() -> None:
    from autotune.search._convergence import _seeds

    plan = _plan_with_baseline_at(20.0)  # baseline: micro 16
    # Measured samples/s at micro 16 and 4 (systems phase): tiny_gpt's steps at 4 run 2.8x
    # as fast as at 16; mlp_digits' only 1.2x (fixed per-step costs dominate).
    gpt_like = [_measured(16, 218.6), _measured(128, 246.5), _measured(4, 152.4)]
    mlp_like = [_measured(16, 23321.0), _measured(128, 81979.0), _measured(4, 7098.0)]
    assert step_rate_gain(gpt_like, 2) == pytest.approx(2.79, abs=0.01)
    gpt_order = [(s["systems"], s["schedule"]) for s in _seeds(plan, gpt_like)]
    mlp_order = [(s["systems"], s["schedule"]) for s in _seeds(plan, mlp_like)]
    assert gpt_order == [(0, "constant"), (2, "constant"), (0, "cosine")]
    assert mlp_order == [(0, "constant"), (0, "cosine"), (2, "constant")]


def test_no_smaller_batch_is_seeded_where_the_noise_scale_is_well_above_the_baselines() -> None:
    """The probe's noise scale at init: mlp_digits 128 and cnn_digits 95 samples against a
    baseline batch of 16 (their micro-4 seeds never won); tiny_gpt 1.02 (micro 4 wins)."""
    import dataclasses

    from autotune.search._convergence import _seeds

    top = [_measured(16, 218.6), _measured(128, 246.5), _measured(4, 152.4)]
    plan = _plan_with_baseline_at(20.0)  # baseline: micro 16
    order = {}
    for noise in (None, 1.02, 31.9, 32.0, 128.0):
        noisy = dataclasses.replace(plan, noise_scale=noise)
        order[noise] = [(s["systems"], s["schedule"]) for s in _seeds(noisy, top)]
    kept = [(0, "constant"), (2, "constant"), (0, "cosine")]
    assert order[None] == order[1.02] == order[31.9] == kept
    assert order[32.0] == order[128.0] == [(0, "constant"), (0, "cosine")]
    said = dataclasses.replace(plan, noise_scale=128.0).no_smaller_batch()
    assert said is not None and said.startswith("no smaller-batch seed: the probe's gradient")
    assert "128 samples at init (where it is lowest), is 8.0x the baseline's batch of 16" in said
    assert dataclasses.replace(plan, noise_scale=31.9).no_smaller_batch() is None


def test_the_baseline_run_is_the_trial_of_a_config_that_repeats_it() -> None:
    """Same seed and data order: the seed that is the baseline's own config (fp32 where the
    probe ruled bf16 out) takes the baseline's run instead of re-running it."""
    plan = _plan_with_baseline_at(20.0)
    base = plan.baseline.run.train
    spanned = base.model_copy(
        update={"schedule": base.schedule.model_copy(update={"total_steps": 200})}
    )
    repeat = baseline_repeat(plan.baseline, spanned)  # a constant LR's span changes nothing
    assert repeat is not None and repeat.time_to_target_s == 20.0 and repeat.train == spanned
    faster_lr = base.model_copy(
        update={"optimizer": base.optimizer.model_copy(update={"lr": 2e-3})}
    )
    assert baseline_repeat(plan.baseline, faster_lr) is None
    cosine = spanned.model_copy(
        update={"schedule": spanned.schedule.model_copy(update={"name": "cosine"})}
    )
    assert baseline_repeat(plan.baseline, cosine) is None
    missed = plan.baseline.model_copy(
        update={"run": plan.baseline.run.model_copy(update={"time_to_target_s": None})}
    )
    assert baseline_repeat(missed, spanned) is None  # nothing to reuse: it must run


def _step(step: int, rate: float) -> StepRecord:
    return StepRecord(
        step=step,
        loss=2.0,
        elapsed_s=float(step),
        samples=step,
        step_time_s=1.0,
        samples_per_s=rate,
        lr=1e-3,
    )


def test_a_larger_batch_slower_than_a_smaller_one_stops_at_its_first_timed_step() -> None:
    """tiny_gpt on an AVX2 CPU: micro 16 ran at 71 samples/s, micro 512 at 39 (4 steps of
    13 s): slower in samples and in steps per second, it cannot win either phase; a step
    of a second or more is judged alone."""
    measured_runs = [_measured(16, 71.2, "32-true"), _measured(4, 44.0, "32-true")]
    big = TrainConfig(micro_batch_size=512, optimizer={"lr": 1e-3})
    watch = Dominated(big, measured_runs, burn_in=1)
    assert not watch(_step(1, 10.0))  # burn-in: never judged
    assert watch(_step(2, 39.4))
    assert watch.reason is not None and "the 71.2 of the smaller batch 16" in watch.reason
    close = Dominated(big, measured_runs, burn_in=1)
    assert not close(_step(2, 60.0))  # within 0.8x: one step's noise, measured whole
    small = Dominated(TrainConfig(micro_batch_size=8, optimizer={"lr": 1e-3}), measured_runs, 1)
    assert not small(_step(2, 40.0))  # judged against batch 4's 44 alone (16 is larger)
    first = Dominated(TrainConfig(micro_batch_size=4, optimizer={"lr": 1e-3}), measured_runs, 1)
    assert first.best is None and not first(_step(2, 0.1))  # nothing smaller measured


def test_one_hiccup_of_a_fast_step_does_not_stop_its_measurement() -> None:
    """cnn_digits on an AVX2 CPU: micro 64 runs 25 ms steps at 2,700-3,600 samples/s, and
    one 0.3 s hiccup (199 samples/s) had stopped its measurement against micro 16's 3,006.
    Fast steps are judged on the median of three."""
    measured_runs = [_measured(16, 3006.0, "32-true")]
    big = TrainConfig(micro_batch_size=64, optimizer={"lr": 1e-3})

    def fast(step: int, rate: float) -> StepRecord:
        return _step(step, rate).model_copy(update={"step_time_s": 64 / rate})

    watch = Dominated(big, measured_runs, burn_in=1)
    assert not any(watch(fast(k, r)) for k, r in ((2, 199.0), (3, 2900.0), (4, 3100.0)))
    assert watch.reason is None
    slow = Dominated(big, measured_runs, burn_in=1)
    assert [slow(fast(k, 1000.0)) for k in (2, 3, 4)] == [False, False, True]


def _study_with_best(run: Measured) -> optuna.Study:
    study = optuna.create_study()
    attrs = {"reached": True, "run": run.model_dump_json()}
    study.add_trial(optuna.trial.create_trial(value=5.0, user_attrs=attrs))
    return study


def test_an_fp32_best_reserves_no_fp32_check() -> None:
    """fp32 is its own reference: the reserve for its confirmation holds no extra run (on
    a CPU without fast bf16 that run kept tiny_gpt's search from its small-batch seed)."""
    plan = _plan_with_baseline_at(20.0)
    fp32 = _measured(4, 50.0, "32-true").model_copy(update={"time_to_target_s": 5.0})
    bf16 = _measured(4, 50.0, "bf16-mixed").model_copy(update={"time_to_target_s": 5.0})
    assert plan.reserve_for(_study_with_best(fp32)) == plan.reserve_now(5.0, check_free=True)
    assert plan.reserve_for(_study_with_best(bf16)) == plan.reserve_now(5.0)


def _study_of_winners(times: dict[float, float]) -> optuna.Study:
    """Trials of distinct LRs (the keys) and micro-batches (so of different steps, which
    the runoff compares), each reaching the target in its value's seconds."""
    trials = [("COMPLETE", s, True) for s in times.values()]
    return _study_with(trials, lrs=list(times), micros=[8 * (k + 1) for k in range(len(times))])


def test_the_trials_keep_the_budget_the_runoff_of_close_winners_needs() -> None:
    """Trials that spend the budget down to the confirmation's reserve leave the runoff
    nothing, and the fastest single run (perhaps a lucky dip) wins unrepeated: the
    convergence phase stops early enough for the runoff of the close winners so far."""
    from autotune.search._convergence import _SAFETY_S, _may_continue
    from autotune.search._types import Budget

    plan = dataclasses.replace(_plan_with_baseline_at(20.0), runoff_rounds=2)
    close, apart = (
        _study_of_winners({1e-3: 5.0, 2e-3: 6.0}),
        _study_of_winners({1e-3: 5.0, 2e-3: 9.0}),
    )
    close.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))  # 3 done
    runoff_s = (2 - 1 + 1.25) * (5.0 + 6.0 + 2 * plan.startup_s)  # two rounds, the last with margin
    assert plan.kept_s(close) - plan.reserve_for(close) == pytest.approx(runoff_s)
    assert plan.kept_s(apart) == plan.reserve_for(apart)  # 9 s is not within noise of 5 s
    assert dataclasses.replace(plan, runoff_rounds=0).kept_s(close) == plan.reserve_for(close)

    next_trial_s = 1.3 * 5.0 + plan.startup_s  # a trial that could still win
    left = plan.reserve_for(close) + next_trial_s + _SAFETY_S + runoff_s / 2
    budget = Budget(total_s=left)
    assert not _may_continue(plan, close, budget, time_cap=40.0)
    no_runoff = dataclasses.replace(plan, runoff_rounds=0)
    assert _may_continue(no_runoff, close, budget, time_cap=40.0)


def test_the_next_trial_starts_only_if_the_runoff_it_may_join_still_fits() -> None:
    """One winner so far: nothing to decide yet, but the trial about to start may come
    within noise of it, and then the runoff needs repeats of both. The loop keeps that
    budget, so a late close winner is not crowned on one unrepeated run."""
    from autotune.search._convergence import _SAFETY_S, _may_continue
    from autotune.search._types import Budget

    plan = dataclasses.replace(_plan_with_baseline_at(20.0), runoff_rounds=2)
    one = _study_of_winners({1e-3: 5.0})
    for _ in range(2):  # two trials that missed: three finished, a runoff is due
        one.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    assert plan.kept_s(one) == plan.reserve_for(one)  # alone: no runoff
    joiner_s = 1.3 * 5.0 + plan.startup_s  # the slowest a close candidate can be
    pair_s = (2 - 1 + 1.25) * (5.0 + plan.startup_s + joiner_s)
    assert plan.kept_s(one, joining=1) - plan.reserve_for(one) == pytest.approx(pair_s)
    next_trial_s = 1.3 * 5.0 + plan.startup_s
    enough = plan.reserve_for(one) + next_trial_s + _SAFETY_S
    assert not _may_continue(plan, one, Budget(total_s=enough + pair_s / 2), time_cap=40.0)
    assert _may_continue(plan, one, Budget(total_s=enough + pair_s + 1.0), time_cap=40.0)


def test_no_batch_is_measured_past_where_samples_per_s_stopped_rising() -> None:
    """tiny_gpt on an AVX2 CPU: 50, 73 and 71 samples/s at 4, 16 and 64: 128 and 512
    (54 and 39 when measured, 30 s for 512 alone) are not measured."""
    runs = [_measured(4, 50.1, "32-true"), _measured(16, 73.3, "32-true")]
    flat = [*runs, _measured(64, 71.3, "32-true")]
    big = TrainConfig(micro_batch_size=512, precision="32-true", optimizer={"lr": 1e-3})
    skip = beyond_saturation(big, flat)
    assert skip is not None and "(16: 73.3, 64: 71.3)" in skip["reason"]
    assert beyond_saturation(big, runs) is None  # still rising from 4 to 16
    rising = [*runs, _measured(64, 80.0, "32-true")]  # 1.09x: measure on
    assert beyond_saturation(big, rising) is None
    assert beyond_saturation(big.model_copy(update={"precision": "bf16-mixed"}), flat) is None
    assert beyond_saturation(flat[2].train, flat[:2]) is None  # 64 itself is judged by 4, 16


def test_a_batch_cheap_to_measure_is_measured_past_a_stall() -> None:
    """mlp_digits on an AVX2 CPU: micro 128 measured 0.97x micro 64 (2 ms steps, timer
    noise), and the grid's micro 256 then ran at 1.9x micro 64's samples/s."""
    runs = [_measured(16, 7_679.0, "32-true"), _measured(64, 30_508.0, "32-true")]
    stalled = [*runs, _measured(128, 29_639.0, "32-true")]
    cheap = TrainConfig(micro_batch_size=256, precision="32-true", optimizer={"lr": 1e-3})
    assert beyond_saturation(cheap, stalled) is None  # 4 steps of ~9 ms: measure it
    slow = [_measured(16, 7.7, "32-true"), _measured(64, 30.5, "32-true")]
    slow.append(_measured(128, 29.6, "32-true"))  # the same shape, 1000x slower steps
    assert beyond_saturation(cheap, slow) is not None


def test_the_baseline_is_as_long_as_lets_the_confirmation_fit_in_forty_percent() -> None:
    from autotune.search import baseline_seconds

    assert baseline_seconds(3600, pairs=3) < 0.08 * 3600
    five_minutes = baseline_seconds(300, pairs=3)
    assert five_minutes == pytest.approx((0.4 * 300 / 3 - 6.0) / 2.3)  # 14.8 s, not 24
    # the confirmation of a winner as slow as 1.3x the baseline: 3 pairs in 40% of 300 s
    assert 3 * (five_minutes * 2.3 + 6.0) == pytest.approx(0.4 * 300)
    assert baseline_seconds(30, pairs=3) == 3.0  # never under one process start-up
    assert baseline_seconds(3600, pairs=1) == pytest.approx(0.08 * 3600)  # 8% binds
    # slower trial start-ups leave less of the confirmation's share to the baseline
    assert baseline_seconds(300, pairs=3, startup_s=6.0) == pytest.approx((40 - 12.0) / 2.3)


class _Machine:
    """A probe report and a Trialist at once: the probe predicts ``predicted_s`` per step,
    and runs take ``step_s`` per step along one loss curve, stopped where the watch says."""

    def __init__(self, predicted_s: float, step_s: float) -> None:
        self.predicted_s, self.step_s = predicted_s, step_s
        self.asked: list[int] = []

    def variant(self, precision: str, checkpointing: str) -> _Machine:
        return self

    def predict_step_time_s(self, batch: int) -> float:
        return self.predicted_s

    def run(self, config: TrainConfig, steps: int, **kwargs: Any) -> TrialResult:
        self.asked.append(steps)
        watch, records = kwargs.get("watch"), []
        for k, loss in enumerate(_curve(steps, floor=1.0, noise=0.02)):
            elapsed = self.step_s * (k + 1)
            step = dict(step=k + 1, loss=loss, elapsed_s=elapsed, lr=3e-4, samples=16 * (k + 1))
            records.append(StepRecord(**step, step_time_s=self.step_s, samples_per_s=16.0))
            if watch is not None and watch(records[-1]):
                break
        return TrialResult(status=TrialStatus.OK, reason="ok", steps=records, pid=1, wall_s=1.0)


def _baseline_on(
    machine: _Machine, baseline: dict[str, Any], budget_s: float = 300.0
) -> tuple[BaselineRun, list[str]]:
    from autotune.search._baseline import run_baseline
    from autotune.search._types import SearchOptions
    from autotune.task import Task

    task = Task(model=lambda: None, dataset=list, loss=lambda m, b: b, baseline=baseline)
    options, notes = SearchOptions(task_path=Path("t.py"), budget_s=budget_s), []
    run = run_baseline(task, task.baseline_config(), machine, options, machine, notes.append)  # type: ignore[arg-type]
    return run, notes


def test_the_tasks_baseline_steps_set_one_target_however_fast_the_machine_ran() -> None:
    """tiny_gpt's baseline ran 43 to 71 steps on one host as the probe's predicted step
    time swung (0.207 to 0.345 s): targets 3.18 to 2.86, speed-ups 3.35x to 1.94x. With
    the steps the Task's own, neither the prediction nor the step time moves the target."""
    gpt = {"batch_size": 16, "lr": 3e-4, "steps": 60}
    fast, _ = _baseline_on(_Machine(predicted_s=0.207, step_s=0.20), gpt)
    slow, notes = _baseline_on(_Machine(predicted_s=0.345, step_s=0.27), gpt)
    assert fast.steps == slow.steps == 60 and not notes
    assert fast.target_loss == slow.target_loss
    assert fast.target_from.endswith(" of its 60 steps; Task.baseline steps")
    # without them, as many as run in the budget's share (14.8 s): the machine's speed sets
    # the length, and with it the target, but the probe's guess does not
    default = {"batch_size": 16, "lr": 3e-4}
    fast, _ = _baseline_on(_Machine(0.207, 0.20), default)
    assert fast.steps == 74 == _baseline_on(_Machine(0.5, 0.20), default)[0].steps
    assert fast.target_from.endswith(" of its 74 steps; as many as ran in the budget's share")
    assert _baseline_on(_Machine(0.345, 0.27), default)[0].steps == 55
    # a schedule spanning the run's length needs the length first: the probe's guess sets it
    cosine = {**default, "schedule": {"name": "cosine"}}
    assert _baseline_on(_Machine(0.207, 0.20), cosine)[0].steps == 71
    assert _baseline_on(_Machine(0.345, 0.27), cosine)[0].steps == 43


def test_a_baseline_free_of_steps_stops_once_its_loss_has_levelled_off() -> None:
    """mlp_digits' baseline ran 5000 steps (its cap, 5.8 s) to set a target it crossed at
    step 753; it levels off by about step 2200 (a search since stopped at 2237, in 2.6 s,
    the target 0.0471 against 0.0446). Millisecond steps now stop there; the target
    barely moves."""
    from autotune.search._baseline import MAX_BASELINE_STEPS

    default = {"batch_size": 16, "lr": 3e-4}
    run, _ = _baseline_on(_Machine(predicted_s=0.001, step_s=0.001), default)
    assert 100 <= run.steps < 1000  # the curve's time constant is 30 steps
    assert run.target_from.endswith(
        f" of its {run.steps} steps; until it levelled off: its second half lowered it by at "
        "most 1% of its whole drop"
    )
    full = _curve(MAX_BASELINE_STEPS, floor=1.0, noise=0.02)
    drop = full[0] - 1.0
    assert abs(run.target_loss - stability.baseline_target(full)) < stability.TARGET_BAND * drop
    # a schedule spanning the run's length, or the Task's steps, are run in full
    cosine = {**default, "schedule": {"name": "cosine"}}
    assert _baseline_on(_Machine(0.001, 0.001), cosine)[0].steps == MAX_BASELINE_STEPS
    assert _baseline_on(_Machine(0.001, 0.001), {**default, "steps": 3000})[0].steps == 3000


def test_a_baseline_with_a_given_target_stops_at_twice_the_steps_it_took_to_reach_it() -> None:
    """A dogfood GRU with Task(target_loss=0.35) trained its baseline for the budget's
    whole share (8 s) where it reached that target in about 2.2 s: its curve sets nothing
    then. It stops at twice the steps it took, the margin the pairs' other seeds get."""
    from autotune.search._baseline import run_baseline
    from autotune.search._types import SearchOptions
    from autotune.task import Task

    said: list[str] = []

    def baseline(target: float | None) -> BaselineRun:
        machine = _Machine(predicted_s=0.01, step_s=0.01)  # the share's 14.8 s: 1480 steps
        task = Task(model=lambda: None, dataset=list, loss=lambda m, b: b, target_loss=target)
        options = SearchOptions(task_path=Path("t.py"), budget_s=300.0)
        return run_baseline(task, task.baseline_config(), machine, options, machine, said.append)  # type: ignore[arg-type]

    given = baseline(1.5)  # the curve, 1 + 3 exp(-k/30), crosses 1.5 near step 54
    crossed = stability.steps_to_target(given.run.losses, 1.5)
    # twice the crossing step as it stood when first seen (the smoothing moves it a little
    # as later losses come in)
    support = stability.TARGET_SUPPORT_STEPS
    assert crossed is not None and 2 * (crossed + 1) <= given.steps <= 2 * (crossed + support)
    assert given.target_from == "task" and given.run.time_to_target_s is not None
    assert said == [
        f"baseline: at the given target by step {given.steps // 2}; stopped at step "
        f"{given.steps}, the margin the confirmation's other seeds get"
    ]
    # never reached: as long as without a given target (here until it levelled off)
    assert baseline(0.5).steps == baseline(None).steps > 2 * given.steps


def test_the_budget_cuts_the_tasks_baseline_steps_by_the_clock_and_says_what_keeps_them() -> None:
    from autotune.search import task_horizon_s

    room = task_horizon_s(300, pairs=3)
    # the confirmation's reserve: 3 pairs of 1.5 baseline runs (the baseline and a winner at
    # half its time) and two start-ups each, in 40% of the budget
    assert room == pytest.approx((0.4 * 300 / 3 - 6.0) / 1.5)
    machine = _Machine(predicted_s=0.1, step_s=0.2)  # the probe's guess is not the cut
    run, notes = _baseline_on(machine, {"batch_size": 16, "lr": 3e-4, "steps": 400})
    assert machine.asked == [400] and run.steps == 114  # the first step past 22.7 s ends it
    assert run.target_from.endswith(" of its 114 steps; Task.baseline steps=400, cut by the budget")
    (note,) = notes
    assert "reached step 114 in the 23 s" in note and "give --budget 945s or more" in note
    # that budget does keep them, and a little less does not
    asked = {"batch_size": 16, "lr": 3e-4, "steps": 400}
    assert _baseline_on(_Machine(0.1, 0.2), asked, budget_s=945.0)[0].steps == 400
    assert _baseline_on(_Machine(0.1, 0.2), asked, budget_s=900.0)[0].steps < 400
    # a budget too small for even 30 steps still trains 30: fewer set no target
    assert _baseline_on(_Machine(0.1, 0.2), asked, budget_s=30.0)[0].steps == 30


def test_a_reused_baseline_run_reports_its_curve_to_the_pruner() -> None:
    """A reused run records its curve per second as a running trial does: the study's
    intermediate values show every trial's, the baseline's too (the median rule re-times
    the completed runs themselves: tests/test_pruner.py)."""
    from autotune.search._convergence import _report_curve

    run = Measured(
        train=TrainConfig(micro_batch_size=16, optimizer={"lr": 1e-3}),
        losses=[3.0, 2.8, 2.6, 2.5, 2.4],
        elapsed_s=[0.4, 0.9, 1.3, 2.2, 2.7],
        samples_per_s=60.0,
    )
    study = optuna.create_study()
    trial = study.ask()
    _report_curve(trial, run)
    study.tell(trial, 2.7)
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == [0, 1, 2]  # the first step of each wall second
    assert reported[0] == pytest.approx(3.0)
    assert reported[2] == pytest.approx(stability.smooth(run.losses)[3])
    # on its step's pooled clock, as a running trial is judged: 0.5 s a step from 0.4 s
    trial = study.ask()
    _report_curve(trial, run, clock=lambda step: 0.4 + 0.5 * (step - 1))
    study.tell(trial, 2.7)
    assert sorted(study.trials[1].intermediate_values) == [0, 1, 2]  # steps 1, 3 and 5
    assert study.trials[1].intermediate_values[1] == pytest.approx(stability.smooth(run.losses)[2])


def _linear_run(step_s: float, lr: float = 1e-3, steps: int = 120) -> Measured:
    """A micro-16 fp32 run whose loss falls 0.02 a step (the target 1.5 near step 75), its
    first step and every later one ``step_s`` long."""
    train = TrainConfig(micro_batch_size=16, optimizer={"lr": lr})
    losses = [3.0 - 0.02 * k for k in range(steps)]
    elapsed = [step_s * (k + 1) for k in range(steps)]
    return Measured(
        train=train,
        losses=losses,
        elapsed_s=elapsed,
        samples_per_s=16 / step_s,
        time_to_target_s=time_to_target(losses, elapsed, 1.5),
    )


def test_a_trial_is_told_its_paced_time_and_keeps_its_own_wall_time() -> None:
    """The systems phase and the baseline ran this step at 10 ms; a trial of the same step
    in a slow spell (14 ms) is valued at its crossing step x the pooled 10 ms, the median of
    the three, and its own slower wall time is kept beside it."""
    from autotune.search._convergence import _tell
    from autotune.search._progress import trial_line

    baseline = BaselineRun(run=_linear_run(0.010), steps=120, target_loss=1.5, target_from="task")
    plan = ConvergencePlan(
        load_space("default"), baseline.run.train, [_linear_run(0.010)], baseline, None, 100.0
    )
    study = optuna.create_study()
    trial = study.ask()
    slow = _linear_run(0.014, lr=2e-3)
    trial.set_user_attr("train", slow.train.model_dump_json())
    frozen = _tell(trial, slow, False, 10.0, plan, [])
    step = stability.steps_to_target(slow.losses, 1.5)
    assert step is not None and frozen.value == pytest.approx(0.010 * (step + 1))
    assert frozen.user_attrs["wall_to_target_s"] == pytest.approx(0.014 * (step + 1))
    assert trial_line(frozen).endswith(
        f"reached the target in {0.010 * (step + 1):.2f} s at the pooled pace (step {step}; "
        f"this run's wall clock {0.014 * (step + 1):.2f} s)"
    )


def test_the_first_trials_keep_no_budget_for_a_runoff() -> None:
    """cnn_digits on an AVX2 CPU: the baseline's own run was trial 0, and the budget kept
    for a runoff with a trial that might join it stopped the search after that one trial.
    Under three finished trials only the confirmation's reserve is kept."""
    from autotune.search._convergence import _SAFETY_S, _may_continue
    from autotune.search._types import Budget

    plan = dataclasses.replace(_plan_with_baseline_at(20.0), runoff_rounds=2)
    one = _study_of_winners({1e-3: 5.0})
    next_trial_s = 1.3 * 5.0 + plan.startup_s
    enough = plan.reserve_for(one) + next_trial_s + _SAFETY_S + 1.0
    assert plan.kept_s(one, joining=1) > plan.reserve_for(one)
    assert _may_continue(plan, one, Budget(total_s=enough), time_cap=40.0)
    for _ in range(2):
        one.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    assert not _may_continue(plan, one, Budget(total_s=enough), time_cap=40.0)


def test_the_target_says_where_on_the_baselines_curve_it_lies() -> None:
    """Was "the baseline's loss after 400 steps" for a regression onto targets near 300
    (MSE 9e4 at the start, ~1.1e3 at step 400): 2% of that drop put the target at 2,810,
    which the baseline crossed at step 105, 2.5x the loss it ended at."""
    from autotune.search import target_text

    rng = random.Random(0)
    losses = [
        8.9e4 * math.exp(-k / 25) + 1e3 + 900 * math.exp(-k / 150) + rng.gauss(0, 150)
        for k in range(400)
    ]
    basis = stability.target_basis(losses)
    assert basis.target == stability.baseline_target(losses) and not basis.by_noise
    crossed = stability.steps_to_target(losses, basis.target)
    assert crossed is not None and crossed < 200 and basis.target > 1.5 * basis.lowest
    text = target_text(basis, losses, "Task.baseline steps")
    assert text == (
        f"where the baseline's smoothed loss came within 2% of its whole drop, "
        f"{basis.start:.4g} to {basis.lowest:.4g}: at step {crossed} of its 400 steps; "
        "Task.baseline steps"
    )
    flat = [1.0 + rng.gauss(0, 0.2) for _ in range(100)]  # noise, not a drop, sets its band
    noisy = stability.target_basis(flat)
    assert noisy.by_noise
    assert target_text(noisy, flat, "h").startswith(
        f"the baseline's lowest smoothed loss, {noisy.lowest:.4g}, plus twice its noise: at step"
    )
