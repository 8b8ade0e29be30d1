"""What the search tells its user while it runs and when it ends: the standing after each
trial (k/N, status counts, best so far, time left) and the table of the top configs.

Pure reads of the convergence study; no I/O. The CLI renders them (a rich live line and
a final table); tests read the same objects.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import optuna
from pydantic import BaseModel, ConfigDict

from autotune._units import format_seconds
from autotune.config import TrainConfig
from autotune.search._types import trial_run

__all__ = ["Standing", "TopConfig", "describe", "standing", "top_configs", "trial_line"]


@dataclass(frozen=True)
class Standing:
    """The convergence phase after a trial: ``finished`` of ``total`` trials (None: bound
    by the budget), trials per status, the best time to target so far (None: no trial
    reached it yet) and an estimate of the seconds until the search ends."""

    finished: int
    total: int | None
    counts: dict[str, int]
    best_s: float | None
    best_trial: int | None
    eta_s: float

    def line(self) -> str:
        total = self.total if self.total is not None else "budget"
        statuses = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "none yet"
        best = (
            f"best {format_seconds(self.best_s)} (trial {self.best_trial})"
            if self.best_s is not None
            else "none reached the target yet"
        )
        return f"trial {self.finished}/{total}: {statuses}; {best}; ETA {self.eta_s:.0f} s"


class TopConfig(BaseModel):
    """One row of the final table: a convergence trial and what it measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial: int
    status: str
    config: str
    # its steps to the target at its step's pace pooled over the whole search: the time the
    # search ranks it by at its end (None: it did not reach the target)
    time_to_target_s: float | None
    target_step: int | None  # the step at which its smoothed loss crossed the target
    samples_per_s: float | None
    picked: bool = False  # the trial tuned.yaml applies (after the runoff and the fp32 check)


def status_of(trial: optuna.trial.FrozenTrial) -> str:
    """The trial's autotune status: OK (finished, whether or not it reached the target),
    PRUNED (stopped by the pruner), else what failed it (OOM/TIMEOUT/CRASH/UNSTABLE)."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return "OK"
    if trial.state == optuna.trial.TrialState.PRUNED:
        return "PRUNED"
    return str(trial.user_attrs.get("status", trial.state.name)).upper()


def standing(
    study: optuna.Study, max_trials: int | None, left_s: float, reserve_s: float
) -> Standing:
    """The standing of ``study``; the ETA is the budget left, or sooner when ``max_trials``
    bounds the search: the mean trial so far times the trials still to run, plus the
    ``reserve_s`` the confirmation needs."""
    finished = [t for t in study.trials if t.state.is_finished()]
    reached = [t for t in finished if t.user_attrs.get("reached") and t.value is not None]
    best = min(reached, key=lambda t: t.value or math.inf) if reached else None
    eta = left_s
    if max_trials is not None and finished:
        each = [t.duration.total_seconds() for t in finished if t.duration is not None]
        mean = sum(each) / len(each) if each else 0.0
        eta = min(left_s, max(0, max_trials - len(finished)) * mean + reserve_s)
    return Standing(
        finished=len(finished),
        total=max_trials,
        counts=dict(Counter(status_of(t) for t in finished)),
        best_s=best.value if best else None,
        best_trial=best.number if best else None,
        eta_s=eta,
    )


def top_configs(
    study: optuna.Study, paced: Mapping[int, float], picked: int | None = None, k: int = 5
) -> list[TopConfig]:
    """The ``k`` best convergence trials: reached the target first (fastest first), then
    those that did not, then the failed; each with its config and measurements.

    ``paced`` holds each reached trial's time to the target as the search ranks it at its
    end (its steps at its step's pace pooled over every run: ``runoff_entries``), in that
    order, fastest first; not the run's own wall clock, which a spell of the machine moves:
    ranked by that, two trials of one step could list in the opposite order to the one the
    search chose between them. Ties keep ``paced``'s order (the search's). A reached trial
    missing from it keeps its value. ``picked``: the trial tuned.yaml applies.
    """
    order = {trial: k for k, trial in enumerate(paced)}
    rows = [
        _row(t, paced.get(t.number, t.value), t.number == picked)
        for t in study.trials
        if t.state.is_finished()
    ]
    rows.sort(key=lambda row: _rank(row, order.get(row.trial, len(order))))
    return rows[:k]


def _row(trial: optuna.trial.FrozenTrial, paced: float | None, picked: bool) -> TopConfig:
    attrs = trial.user_attrs
    run = trial_run(attrs["run"]) if "run" in attrs else None
    config = TrainConfig.model_validate_json(attrs["train"]) if "train" in attrs else None
    reached = bool(attrs.get("reached")) and run is not None
    step = attrs.get("target_step")
    return TopConfig(
        trial=trial.number,
        status=status_of(trial),
        config=describe(config) if config else "-",
        time_to_target_s=paced if reached else None,
        target_step=step if reached and isinstance(step, int) else None,
        samples_per_s=run.samples_per_s if run else None,
        picked=picked,
    )


def _rank(row: TopConfig, place: int) -> tuple[int, float, int]:
    if row.time_to_target_s is not None:
        return 0, row.time_to_target_s, place
    if row.status == "OK":
        return 1, -(row.samples_per_s or 0.0), place
    return 2, float(row.trial), place


def describe(config: TrainConfig) -> str:
    """One line with every tuned dimension of ``config``."""
    ckpt = config.activation_checkpointing
    ckpt_text = ckpt if isinstance(ckpt, str) else f"every_k={ckpt.every_k}"
    return (
        f"{config.precision} micro={config.micro_batch_size} accum={config.grad_accum_steps} "
        f"world={config.world_size} ckpt={ckpt_text} lr={config.optimizer.lr:.2e} "
        f"{config.schedule.name}"
    )


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """What one finished convergence trial did, in a sentence."""
    attrs = trial.user_attrs
    if trial.state == optuna.trial.TrialState.COMPLETE and attrs.get("reached"):
        outcome = f"reached the target in {_seconds(trial.value)}{_paced_note(attrs)}"
    elif trial.state == optuna.trial.TrialState.COMPLETE:
        outcome = "did not reach the target in time"
    elif trial.state == optuna.trial.TrialState.PRUNED:
        outcome = f"pruned: {attrs.get('pruned_by', 'behind the median')}"
    else:
        outcome = (
            f"{attrs.get('status', 'FAIL')}: {attrs.get('stability') or attrs.get('reason', '')}"
        )
    config = TrainConfig.model_validate_json(attrs["train"]) if "train" in attrs else None
    return f"trial {trial.number} ({describe(config) if config else '-'}): {outcome}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else format_seconds(value)


def _paced_note(attrs: dict[str, object]) -> str:
    """Where the trial's value is paced (:mod:`._pace`): the crossing step, and the run's
    own wall time beside it; nothing for a trial stored before pacing."""
    step, wall = attrs.get("target_step"), attrs.get("wall_to_target_s")
    if not isinstance(step, int) or not isinstance(wall, float):
        return ""
    return f" at the pooled pace (step {step}; this run's wall clock {_seconds(wall)})"
