"""Phase 2: the shortest time to the target loss, over batch (accumulation), LR, schedule
and warmup, on the fastest measured systems configs.

Sampler: TPE (multivariate): a handful of trials over a mixed space (log-uniform LR,
categorical schedule and accumulation, conditional min-LR), where TPE is sample-efficient
and Gaussian processes would not handle the categoricals; the first trial is seeded with
the known scaling rules (sqrt/linear LR with batch, warmup for large batches).
Pruner: median, on the smoothed loss reported per *wall second*: the objective is time,
so "behind the median at the same second" is exactly "losing"; hopeless runs stop early.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from autotune import space as spaces
from autotune import stability
from autotune.config import TrainConfig
from autotune.search._measure import TargetWatch, Trialist, measured, ok
from autotune.search._types import BaselineRun, Budget, Measured

__all__ = ["ConvergencePlan", "make_pruner", "make_sampler", "run_convergence", "winners"]

_TOP_SYSTEMS = 3  # fastest measured systems configs the convergence phase may choose from
_MIN_STEPS = 20  # a shorter run cannot show a smoothed loss trend
_MIN_CAP_S = 2.0
_MIN_TRIALS = 3  # trials run past the budget while none has reached the target yet
_NOT_REACHED_PENALTY = 2.0  # a run that never reached the target ranks behind every one that did


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)


def make_pruner() -> optuna.pruners.BasePruner:
    # 2 finished trials before pruning anyone; no judgement in a run's first 3 seconds.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3)


@dataclass(frozen=True)
class ConvergencePlan:
    """What every convergence trial shares."""

    space: spaces.SearchSpace
    base: TrainConfig
    systems: list[Measured]
    baseline: BaselineRun
    max_trials: int | None
    reserve_s: float  # budget kept for the confirmation


def systems_values(config: TrainConfig) -> dict[str, Any]:
    """The phase-1 dimensions of ``config``, as ``to_train_config`` takes them."""
    return {
        "micro_batch_size": config.micro_batch_size,
        "precision": config.precision,
        "activation_checkpointing": config.activation_checkpointing,
        "world_size": config.world_size,
        "compile": config.compile,
    }


def run_convergence(
    plan: ConvergencePlan,
    study: optuna.Study,
    trials: Trialist,
    budget: Budget,
    on_trial: Callable[[optuna.trial.FrozenTrial], None],
) -> None:
    """Run trials until ``max_trials`` have finished or the budget (less the reserve) is spent."""
    top = plan.systems[:_TOP_SYSTEMS]
    if not study.trials:
        study.enqueue_trial(_seed(plan, top[0]))
    # A run may take twice the baseline's time to target (slower cannot win, but it is
    # measured), and never less than _MIN_CAP_S: step times of short runs are noise.
    baseline_tt = plan.baseline.run.time_to_target_s or plan.baseline.run.elapsed_s[-1]
    time_cap = max(2.0 * baseline_tt, _MIN_CAP_S)
    while _may_continue(plan, study, budget, time_cap):
        trial = study.ask()
        choice = trial.suggest_categorical("systems", list(range(len(top))))
        frozen = _run_one(plan, trial, top[choice], trials, time_cap)
        on_trial(frozen)


def _seed(plan: ConvergencePlan, fastest: Measured) -> dict[str, Any]:
    steps = 100  # only sets the warmup fraction of the seed
    seed = spaces.convergence_seed(plan.space, plan.base, systems_values(fastest.train), 1, steps)
    return {**seed, "systems": 0}


def _may_continue(
    plan: ConvergencePlan, study: optuna.Study, budget: Budget, time_cap: float
) -> bool:
    done = [t for t in study.trials if t.state.is_finished()]
    if plan.max_trials is not None and len(done) >= plan.max_trials:
        return False
    if budget.left_s > plan.reserve_s + time_cap + 5.0:
        return True
    reached = any(t.user_attrs.get("reached") for t in done)
    return not reached and len(done) < _MIN_TRIALS  # an answer needs a run that reached it


def _run_one(
    plan: ConvergencePlan,
    trial: optuna.Trial,
    systems: Measured,
    trials: Trialist,
    time_cap: float,
) -> optuna.trial.FrozenTrial:
    fixed = systems_values(systems.train)
    values = {**fixed, **spaces.suggest_convergence(trial, plan.space, fixed)}
    steps = _planned_steps(plan, values, systems, time_cap)
    config = spaces.to_train_config(values, plan.base, steps)
    watch = TargetWatch(plan.baseline.target_loss, time_cap, _pruning(trial))
    result = trials.run(config, steps, watch=watch, time_cap_s=time_cap * 1.2)
    run = measured(result, config, plan.baseline.target_loss) if ok(result) else None
    trial.set_user_attr("status", result.status.value)
    trial.set_user_attr("reason", result.reason)
    trial.set_user_attr("train", config.model_dump_json())
    return _tell(trial, run, watch, time_cap)


def _planned_steps(
    plan: ConvergencePlan, values: dict[str, Any], systems: Measured, time_cap: float
) -> int:
    accum = int(values.get("grad_accum_steps", plan.base.grad_accum_steps))
    global_batch = systems.train.micro_batch_size * systems.train.world_size * accum
    step_s = global_batch / systems.samples_per_s
    return max(_MIN_STEPS, math.ceil(time_cap / step_s))


def _pruning(trial: optuna.Trial) -> Callable[[float, float], bool]:
    reported: set[int] = set()

    def judge(elapsed_s: float, smoothed: float) -> bool:
        second = int(elapsed_s)
        if second in reported or not math.isfinite(smoothed):
            return False
        reported.add(second)
        trial.report(smoothed, second)
        return trial.should_prune()

    return judge


def _tell(
    trial: optuna.Trial, run: Measured | None, watch: TargetWatch, time_cap: float
) -> optuna.trial.FrozenTrial:
    study = trial.study
    if run is None:
        return study.tell(trial, state=optuna.trial.TrialState.FAIL)
    trial.set_user_attr("run", run.model_dump_json())
    if watch.gave_up:
        return study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    verdict = stability.verdict(run.losses)
    trial.set_user_attr("stability", "; ".join(verdict.reasons))
    if not verdict.stable:
        trial.set_user_attr("status", "UNSTABLE")
        return study.tell(trial, state=optuna.trial.TrialState.FAIL)
    reached = run.time_to_target_s is not None
    trial.set_user_attr("reached", reached)
    value = run.time_to_target_s if reached else _NOT_REACHED_PENALTY * time_cap
    return study.tell(trial, value)


def winners(study: optuna.Study) -> list[Measured]:
    """Stable runs that reached the target, fastest to it first."""
    good = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("reached")
    ]
    good.sort(key=lambda t: t.value if t.value is not None else math.inf)
    return [Measured.model_validate_json(t.user_attrs["run"]) for t in good]
