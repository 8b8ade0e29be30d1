"""Phase 2: the shortest time to the target loss, over batch (accumulation), LR, schedule
and warmup, on the fastest measured systems configs.

Sampler: TPE (multivariate): a handful of trials over a mixed space (log-uniform LR,
categorical schedule and accumulation, conditional min-LR), where TPE is sample-efficient
and Gaussian processes would not handle the categoricals; the first trial is seeded with
the known scaling rules (sqrt/linear LR with batch, warmup for large batches), and once a
trial reached the target, one seed carries its params to a larger, faster batch with the
LR scaled linearly (:func:`larger`).
Pruner: the median rule on the smoothed loss per second, the objective being time: "behind
the median at the same second" is exactly "losing", so hopeless runs stop early. Judged by
:class:`~._pruner.MedianRule`, on every curve re-timed at the pace pooled now, not by
Optuna's MedianPruner on values frozen at the pace of the moment each was reported (the
study's pruner is Optuna's NopPruner; the values are still reported, for the dashboard).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from autotune import space as spaces
from autotune import stability
from autotune.config import TrainConfig
from autotune.explain import far_below_noise
from autotune.runtime import StepRecord
from autotune.search._confirm import known_reference, same_step
from autotune.search._measure import STARTUP_PRIOR_S, TargetWatch, Trialist, measured, ok
from autotune.search._pace import Pace, paced_s
from autotune.search._precision import PRECISION_MARGIN, earned_precisions, settled
from autotune.search._pruner import MedianRule
from autotune.search._runoff import RUNOFF_MARGIN, Entry, needed_s
from autotune.search._study import NOT_RUN, Studies, counted, tracked
from autotune.search._systems import DOMINATED_SHARE
from autotune.search._types import (
    REAL_GAIN,
    REAL_GAIN_FLOOR_S,
    BaselineRun,
    Budget,
    Measured,
    small_batch_size,
    trial_run,
)

__all__ = [
    "PRECISION_MARGIN",
    "ConvergencePlan",
    "baseline_repeat",
    "batch_climbed",
    "completed_runs",
    "decayed",
    "earned_precisions",
    "fastest_realisation",
    "larger",
    "make_pruner",
    "make_sampler",
    "plateaued",
    "recorded_runs",
    "refined",
    "run_convergence",
    "runoff_entries",
    "same_config",
    "small_batch_first",
    "smaller",
    "step_rate_gain",
    "stored_runs",
    "winners",
    "winning_trials",
]

_MIN_STEPS = 20  # a shorter run cannot show a smoothed loss trend
_MIN_CAP_S = 2.0
_MIN_TRIALS = 3  # trials run past the budget while none has reached the target yet
# The runoff's budget is kept from the trials only once this many have finished: a runoff
# decides between candidates, and a search of one trial has none to decide between. On
# cnn_digits (AVX2 host, a 120 s grid-benchmark budget) the runoff kept for a trial that
# might join the baseline's own run (trial 0) stopped the search after that one trial.
_TRIALS_BEFORE_RUNOFF = 3
_NOT_REACHED_PENALTY = 2.0  # a run that never reached the target ranks behind every one that did
# A run still short of the target this many times the best time to target so far cannot
# win: it stops there. The margin covers the 6-25% run-to-run noise of one fresh process.
_CANNOT_WIN_MARGIN = 1.3
# The second seeded trial: the first's batch at 4x its LR, decayed by a cosine schedule.
# A baseline keeps one constant LR that is safe for the whole run; a schedule that decays
# lets the peak go several times higher (one-cycle's peak is ~3-10x the best constant LR,
# Smith 2018). In the benchmark suite's grids, 4x with cosine was the best LR on the MLP,
# the CNN and the LSTM; the search tried it on none of them within its first trials.
_DECAYED_LR_FACTOR = 4.0
# The small-batch seed runs before the decayed-LR one when a step at the small batch is at
# least this many times faster than one at the baseline's batch: far below the noise scale
# a step's progress hardly depends on the batch, so time to target falls with step time.
# Measured (systems phase, batch 4 against 16): tiny_gpt 2.8x and hf_gpt2 3.0x, where
# batch 4 won (tiny_gpt) and the decayed LR was pruned on every language-model search;
# mlp_digits 1.2x and cnn_digits 1.5x, where fixed per-step costs dominate, batch 4 lost
# and the decayed LR won.
_SMALL_FIRST_STEP_GAIN = 2.0
# Once a trial reached the target, one seed tries its params on the next measured
# micro-batch that runs at least this many times its samples/s, the LR scaled linearly
# with the global batch (Goyal et al. 2017). TPE's start-up trials draw batch and LR
# independently, so a larger batch meets a matched LR only by chance: on cnn_digits (an
# AVX512-BF16 host) a search tried micro 64 at 1.7e-3 and 5.9e-3 only and reached 59% of
# the grid's best, micro 64 at 1.6e-2 (its best trial: micro 16 at 4e-3). Below this gain
# a larger batch's extra samples per step are unlikely to pay for its fewer steps.
_LARGER_GAIN = 1.25
# ...on a batch at least this many times the best trial's, where one was measured (else the
# largest one): the step that won on cnn_digits (micro 16 -> 64, the grid's best) and on
# mlp_digits (16 -> 64, then 256, the grid's best at 16x the baseline's batch). A doubling
# changes the time to target by less than one run's noise, so it cannot show a trend.
_LARGER_STEP = 4
# ...and the seed steps up to the *smallest* larger micro-batch the systems phase would not
# call dominated (DOMINATED_SHARE of ``best``'s samples/s or more: within one measurement's
# noise), not the smallest one that clears _LARGER_GAIN: one systems measurement is too
# noisy to rank neighbours. cnn_digits (AVX2 host), micro 64 against micro 16 in 12
# interleaved pairs of forked workers (benchmarks/systems_noise.py), two runs: 1.0-2.5x and
# 1.11-1.93x at the systems phase's 12 steps, 0.91-1.68x and 1.09-1.92x at 45, under 1.25x
# in 5 and 4 of the 12 at 12 steps, 4 and 7 at 45. Three
# searches (j, k and a grid benchmark) measured micro 64 under 1.25x and seeded micro 128,
# 256 or 512, which lost; the grid's best was micro 64, and the two searches that seeded it
# found it at their fourth trial.
# After that seed, the best trial's params at twice its LR, and again from that trial while
# each doubling became the best: time to target falls with the LR up to the edge of
# stability, and TPE, drawing LR log-uniformly over the space's decades, lands within 2x of
# the best one only by chance in a search's dozen trials. tiny_gpt on an AVX2 host (fp32):
# the searches' best, micro 4 at the baseline's 3e-4, reached the target 2.0-2.4x faster
# than the baseline; the one search whose TPE drew 6.9e-4 confirmed 3.35x.
_CLIMB_FACTOR = 2.0
_CLIMBS = 2  # doublings in a row at most: each costs a trial, and 4x is a decayed seed's reach
# After the LR climbs, one doubling of the fastest trial of another step within the runoff's
# margin of the best trial's time: steps that close are a draw the runoff settles later, and
# the LR climbs went from one of them only. lstm_text (AVX2 host, suite at 7190561): micro
# 16 at 4e-3 (6.49 s) led micro 4 at 1e-3 (6.63 s), the climbs from micro 16 were pruned,
# the runoff then put micro 4 first (5.53 s against 6.06 s) and the pick kept its 1e-3:
# 2.01x, where micro 4 at 4e-3 had confirmed 3.81x on that host at 8372162.
_RIVAL_CLIMBS = 1
# After the LR climb, the batch climb: the best trial's params on the next larger batch
# (:func:`larger`, from whichever trial is best by then), and again from that trial while
# each step became the best. Time to target falls with the batch, the LR scaled with it, up
# to the critical batch size, and the larger-batch seed takes only the first step: on
# mlp_digits (AVX2 host) the search stopped at micro 64 (0.68 s to the target, median of 9
# re-runs) where the grid's micro 256 at 16x the baseline's LR took 0.45 s; with the climb
# it went on from micro 64 to micro 256 (3.58x over the baseline, 107% of the grid's best).
_BATCH_CLIMBS = 2
# A batch-climb step whose linearly scaled LR diverged is taken again at this times that
# LR: for the 4x batch a step spans (_LARGER_STEP) it is the square-root rule's LR, the
# rule for Adam-type optimizers (Malladi et al., 2022). mlp_digits (AVX512-BF16 host, a
# demo search): micro 16 at 4e-3, at the edge of divergence, scaled to micro 64 at 1.6e-2,
# which diverged; the climb stopped there and the search confirmed 1.76x, where searches
# that climbed to micro 256 confirmed 3.3-3.8x.
_DIVERGED_LR_FACTOR = 0.5
# ... and so is one whose run got under this share of the way from the baseline's smoothed
# start to the target before it stopped: an LR that stalls a network (at chance level, its
# units dead) is too high as surely as one that diverges. A dogfood transformer trained by
# SGD (scripts/dogfood/digit_rows.py, AVX2 host): micro 32 at 0.2 scaled to micro 128 at
# 0.8 stayed at 2.31 where the baseline started at 2.30, and the climb stepped on from it
# to micro 512 at 3.2, which diverged: micro 128 at 0.4 was never run.
_STUCK_SHARE = 0.1
# After the climbs, the best trial's LR at this factor up, then down, where no trial ran
# its params within _REFINE_NEAR of that LR. The doublings step over the best LR, and the
# climbs take their turn at fixed trial numbers: on mlp_digits (AMX host, grid_bench) the
# best trial appeared at micro 256 after them, at 1.2e-2 (54 steps to the target), and
# TPE's later draws at micro 256 were 1.07e-2 and 2.6-3.1e-2 (57-60 steps): the search
# confirmed 0.20 s where the grid's 1.45e-2 took 0.18 s (89.6%).
_REFINE_FACTOR = 2.0**0.5
_REFINES = 2  # up, then up again (it won) or down (it lost): a line search in log-LR
_REFINE_NEAR = 2.0**0.25  # an LR within this factor of a tried one was tried
_SAFETY_S = 15.0  # budget never planned: the confirmation's runs vary by 10-25% each


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)


def make_pruner() -> optuna.pruners.BasePruner:
    # Intermediate values are only recorded: _pruning judges runs by MedianRule instead.
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class ConvergencePlan:
    """What every convergence trial shares."""

    space: spaces.SearchSpace
    base: TrainConfig
    systems: list[Measured]
    baseline: BaselineRun
    max_trials: int | None
    reserve_s: float  # budget kept for the confirmation, before any trial reached the target
    confirm_pairs: int = 3
    patience: int | None = None  # None: spend the whole budget (always with max_trials)
    startup_s: float = STARTUP_PRIOR_S  # per trial, on top of its training: Trialist.startup_s
    runoff_rounds: int = 0  # repeats of each close candidate the trials leave budget for
    noise_scale: float | None = None  # the probe's gradient noise scale at init, in samples
    dataset_size: int | None = None  # None: an IterableDataset, whose epochs are unknown

    def no_smaller_batch(self) -> str | None:
        """Why no batch below the baseline's can win, when the probe's gradient noise
        scale says so; else None. Measured at init, where it is lowest (it grows as the
        loss falls), the baseline's global batch is already far below it
        (:func:`~autotune.explain.far_below_noise`). Below the noise scale a smaller batch
        needs about as many samples to a loss (McCandlish et al. 2018), in more steps that
        each run fewer samples per second. mlp_digits and cnn_digits, whose micro-4 seed was
        pruned or diverged in every committed search (`searches/*_avx2_*_q*`, `_r*`), a
        trial spent (3.4 s of cnn_digits' search); the language models keep it and win
        with it."""
        batch, noise = self.base.global_batch, self.noise_scale
        if noise is None or not far_below_noise(batch, noise):
            return None
        return (
            f"no smaller-batch seed: the probe's gradient noise scale, {noise:.3g} samples "
            f"at init (where it is lowest), is {noise / batch:.1f}x the baseline's batch of "
            f"{batch}: a smaller batch would need as many samples, in slower steps"
        )

    @functools.cached_property
    def settled_systems(self) -> list[Measured]:
        """:attr:`systems` with each precision's ratio fitted over every size
        (:func:`settled`), once per plan: what the trials choose and realise from."""
        return settled(self.systems)

    def choices(self) -> list[Measured]:
        """The systems configs the trials choose from (:func:`systems_choices`), each
        size's precision decided by the ratios fitted over every size (:func:`settled`)."""
        return systems_choices(self.settled_systems, self.base.micro_batch_size)

    def reserve_now(self, best_s: float | None, check_free: bool = False) -> float:
        """Budget the fp32 check and the confirmation need, once a trial has reached the
        target in ``best_s``: each pair runs the winner (~_CANNOT_WIN_MARGIN x best_s) and
        the baseline (its time to target), plus the fp32 run of the winner unless
        ``check_free`` (the baseline is that run: :func:`known_reference`)."""
        if best_s is None:
            return self.reserve_s
        base = self.baseline.run.time_to_target_s or self.baseline.run.elapsed_s[-1]
        winner = _CANNOT_WIN_MARGIN * best_s + self.startup_s
        pairs = self.confirm_pairs * (winner + base + self.startup_s)
        return pairs + (0.0 if check_free else winner)

    def reserve_for(self, study: optuna.Study) -> float:
        """:meth:`reserve_now` for the study's best trial so far."""
        top = winners(study)
        return self.reserve_now(best_time(study), check_free=bool(top) and self._free(top[0]))

    def kept_s(self, study: optuna.Study, joining: int = 0) -> float:
        """Budget no further trial may spend: the confirmation's reserve (:meth:`reserve_for`)
        and the runoff the trials that reached the target so far, and ``joining`` more,
        need (:func:`needed_s`)."""
        entries = runoff_entries(study, self.pace(study), self.baseline.target_loss)
        runoff = needed_s(entries, self.runoff_rounds, self.startup_s, joining)
        return self.reserve_for(study) + runoff

    def held_back_s(self, study: optuna.Study) -> float:
        """Budget nothing before the confirmation may spend (the runoff): its reserve for
        the study's best so far, and the safety margin."""
        return self.reserve_for(study) + _SAFETY_S

    def pace(self, study: optuna.Study) -> Pace:
        """Every run measured so far, pooled per step (:mod:`._pace`): the systems phase's,
        the baseline's and the study's trials' (the one being told is recorded already)."""
        return self.pace_of(recorded_runs(study))

    def pace_of(self, runs: Sequence[Measured]) -> Pace:
        """:meth:`pace` over the study's ``runs`` already read (:func:`stored_runs`)."""
        return Pace.of([*self.systems, self.baseline.run, *runs])

    def _free(self, winner: Measured) -> bool:
        """Whether ``winner``'s stability check runs nothing: fp32 is its own reference,
        and the baseline is the fp32 run of the baseline's config in reduced precision."""
        if winner.train.precision == "32-true":
            return True
        known = [self.baseline.run]
        return known_reference(winner, known, self.baseline.target_loss) is not None


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
    studies: Studies,
    trials: Trialist,
    budget: Budget,
    on_trial: Callable[[optuna.trial.FrozenTrial], None],
) -> None:
    """Run trials until ``max_trials`` have finished or the budget (less the reserve) is
    spent; the study's first trial, by whichever worker, is the seed (:func:`_seed`)."""
    study = studies.convergence
    top = plan.choices()
    seeds = _seeds(plan, top)
    # A run may take twice the baseline's time to target (slower cannot win, but it is
    # measured), and never less than _MIN_CAP_S: step times of short runs are noise.
    baseline_tt = plan.baseline.run.time_to_target_s or plan.baseline.run.elapsed_s[-1]
    time_cap = max(2.0 * baseline_tt, _MIN_CAP_S)
    while _may_continue(plan, study, budget, time_cap):
        # None: other workers took the last ones
        trial = studies.next_convergence_trial(plan.max_trials, _seeding(plan, top, seeds, study))
        if trial is None:
            break
        with tracked(study, trial):  # killed or interrupted: recorded, not left RUNNING
            choice = trial.suggest_categorical("systems", list(range(len(top))))
            frozen = _run_one(plan, trial, top[choice], trials, time_cap)
        on_trial(frozen)


def systems_choices(systems: list[Measured], anchor: int) -> list[Measured]:
    """The systems configs the convergence phase chooses from: the fastest measured one
    per micro-batch size of those whose precision earned its place (:func:`earned_precisions`),
    every size measured (a cheap size the systems phase added
    between two others must not displace one of them), the one nearest the baseline's
    micro-batch (``anchor``) first. Throughput alone favours the
    largest batch, but a large batch can need many more samples to reach the target; the
    baseline's batch is known to reach it, so the seeded first trial is the baseline made
    faster, and TPE explores the others. ``systems`` comes fastest first (and is stored),
    so the order survives a resume."""
    best: dict[int, Measured] = {}
    for run in earned_precisions(systems):
        best.setdefault(run.train.micro_batch_size, run)
    ranked = list(best.values())
    near = min(ranked, key=lambda r: abs(r.train.micro_batch_size - anchor))
    return [near, *(r for r in ranked if r is not near)]


def _seeds(plan: ConvergencePlan, top: list[Measured]) -> list[dict[str, Any]]:
    """The study's first trials: the scaling rules' guess on ``top[0]`` (the systems config
    at the baseline's micro-batch), then that guess with a decayed higher LR
    (:func:`decayed`) when the space has a cosine schedule and room above the LR, and a
    smaller batch (:func:`smaller`) when one was measured and the noise scale does not rule
    it out (:meth:`ConvergencePlan.no_smaller_batch`); the smaller batch goes before
    the decayed LR when its steps are cheap (:func:`small_batch_first`)."""
    steps = 100  # only sets the warmup fraction of the seed
    rule = spaces.convergence_seed(plan.space, plan.base, systems_values(top[0].train), 1, steps)
    first = {**rule, "systems": 0}
    high = decayed(plan.space, first)
    small = None if plan.no_smaller_batch() else smaller(plan, top, steps)
    more = [small, high] if small is not None and small_batch_first(top, small) else [high, small]
    return [first, *(seed for seed in more if seed is not None)]


def _seeding(
    plan: ConvergencePlan, top: list[Measured], seeds: list[dict[str, Any]], study: optuna.Study
) -> Callable[[int], dict[str, Any] | None]:
    """The params of the study's trial k, or None for the sampler's: the fixed ``seeds``
    first, then the larger-batch seed (:func:`larger`) from the best trial by then, then
    up to _CLIMBS LR doublings (:func:`climbed`), then one doubling of a close rival
    step's best trial (:func:`rival_climbed`), then up to _BATCH_CLIMBS larger batches
    (:func:`batch_climbed`), then _REFINES LR steps around the best (:func:`refined`).
    Each is queued only at its own number,
    so a resumed study or another worker's trial never repeats it."""

    Climb = Callable[[optuna.trial.FrozenTrial, int, bool], dict[str, Any] | None]
    climbs: list[tuple[int, Climb]] = [
        (_CLIMBS, lambda best, k, first: climbed(plan.space, study, best, k, first)),
        (_RIVAL_CLIMBS, lambda _best, _k, _first: rival_climbed(plan, study)),
        (_BATCH_CLIMBS, lambda best, k, first: batch_climbed(plan, top, study, best, k, first)),
        (_REFINES, lambda best, _k, _first: refined(plan.space, study, best)),
    ]

    def seed_at(number: int) -> dict[str, Any] | None:
        if number < len(seeds):
            return seeds[number]
        if number == len(seeds):
            found = winning_trials(study)
            return larger(plan, top, found[0]) if found else None
        start = len(seeds) + 1
        for count, climb in climbs:
            if number < start + count:
                best = _fastest(plan, study)
                return None if best is None else climb(best, number, number == start)
            start += count
        return None

    return seed_at


def _fastest(plan: ConvergencePlan, study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The trial that reached the target fastest at the current pooled pace: a trial's
    value was paced with the runs pooled when it was told, so two trials of one step told
    minutes apart can rank against their steps (tiny_gpt: a climb that crossed at step 46
    was valued 4.35 s, behind 4.33 s for step 50 told earlier)."""
    entries = runoff_entries(study, plan.pace(study), plan.baseline.target_loss)
    return study.get_trials(deepcopy=False)[entries[0].trial] if entries else None


def climbed(
    space: spaces.SearchSpace,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    number: int,
    first: bool,
) -> dict[str, Any] | None:
    """The params of ``best`` (the study's fastest trial, :func:`_fastest`) at
    _CLIMB_FACTOR x its LR (clipped to the space), as trial ``number`` (:func:`_climb`).
    None when the space has no LR range or no room above."""
    section = space.convergence.lr
    if section is None:
        return None
    raised = functools.partial(_lr_scaled, section, best.params, _CLIMB_FACTOR)
    return _climb(study, best, number, first, raised)


def rival_climbed(plan: ConvergencePlan, study: optuna.Study) -> dict[str, Any] | None:
    """The params of the fastest trial of another step than the fastest trial's (both at
    the current pooled pace, :func:`runoff_entries`), within the runoff's margin of its
    time, at _CLIMB_FACTOR x its LR; None where there is no such trial, the space has no
    LR range or no room above, or a trial ran those params already."""
    section = plan.space.convergence.lr
    entries = runoff_entries(study, plan.pace(study), plan.baseline.target_loss)
    if section is None or not entries:
        return None
    lead = entries[0]
    rival = next((e for e in entries if not same_step(e.run.train, lead.run.train)), None)
    if rival is None or rival.times[0] > RUNOFF_MARGIN * lead.times[0]:
        return None
    trial = study.get_trials(deepcopy=False)[rival.trial]
    raised = functools.partial(_lr_scaled, section, trial.params, _CLIMB_FACTOR)
    return _climb(study, trial, trial.number, True, raised)


def refined(
    space: spaces.SearchSpace, study: optuna.Study, best: optuna.trial.FrozenTrial
) -> dict[str, Any] | None:
    """The params of ``best`` (the study's fastest trial, :func:`_fastest`) at
    _REFINE_FACTOR x its LR, else at 1/_REFINE_FACTOR x, whichever no trial ran yet within
    _REFINE_NEAR (:func:`_lr_tried`); None when both were, or the space has no LR range."""
    section = space.convergence.lr
    if section is None:
        return None
    for factor in (_REFINE_FACTOR, 1.0 / _REFINE_FACTOR):
        params = _lr_scaled(section, best.params, factor)
        if params is not None and not _lr_tried(study, params, section):
            return params
    return None


def _lr_tried(study: optuna.Study, params: dict[str, Any], section: spaces.LrRange) -> bool:
    """Whether a trial ran ``params`` but for an LR within _REFINE_NEAR of theirs."""
    key = section.param
    rest = {k: v for k, v in params.items() if k != key}
    for trial in study.get_trials(deepcopy=False):
        other = trial.params
        if key not in other or {k: v for k, v in other.items() if k != key} != rest:
            continue
        if max(other[key], params[key]) / min(other[key], params[key]) < _REFINE_NEAR:
            return True
    return False


def batch_climbed(
    plan: ConvergencePlan,
    top: list[Measured],
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    number: int,
    first: bool,
) -> dict[str, Any] | None:
    """:func:`larger` from ``best`` (the study's fastest trial, :func:`_fastest`) as trial
    ``number`` (:func:`_climb`), at _DIVERGED_LR_FACTOR x its LR where a trial ran it and
    its LR failed (:func:`lr_failed`); None where :func:`larger` has none.

    Where a trial ran that step already and measured it (the larger-batch seed, mostly),
    the climb steps on from that trial instead, unless that trial's LR failed too (the
    climb ends there): a step taken tells nothing new, and the batch after it may. On
    mlp_digits (AVX2 host, ``searches/mlp_digits_avx2_search_w.txt``) the seed had run
    micro 64 at 1.6e-2 and lost to micro 16 (0.62 s against 0.49 s); the climb from that
    best micro-16 trial (4e-3, x4) came out at the same params, found them run, and ended
    there, so micro 256 was never tried; the search confirmed 2.31x
    where searches that reached micro 256 confirmed 3.6-3.9x (``_x`` to ``_z3``)."""
    lr = plan.space.convergence.lr

    def step_from(trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
        run = trial_run(trial.user_attrs["run"])
        return _below_failed(lr, study, larger(plan, top, (trial, run)), plan.baseline)

    def step() -> dict[str, Any] | None:
        params = step_from(best)
        taken = _measured_trial(study, params)
        if taken is None:
            return params
        return None if lr_failed(taken, plan.baseline) else step_from(taken)

    return _climb(study, best, number, first, step)


def _measured_trial(
    study: optuna.Study, params: dict[str, Any] | None
) -> optuna.trial.FrozenTrial | None:
    """The trial that ran ``params`` and stored its run; None where none did."""
    if params is None:
        return None
    return next(
        (
            t
            for t in study.get_trials(deepcopy=False)
            if t.params == params and "run" in t.user_attrs
        ),
        None,
    )


def _below_failed(
    section: spaces.LrRange | None,
    study: optuna.Study,
    params: dict[str, Any] | None,
    baseline: BaselineRun,
) -> dict[str, Any] | None:
    """``params``, or where a trial ran them and its LR failed (:func:`lr_failed`), the
    same at _DIVERGED_LR_FACTOR x their LR, clipped to the space (None where no lower LR
    is left)."""
    if params is None or section is None:
        return params
    failed = any(
        t.params == params and lr_failed(t, baseline) for t in study.get_trials(deepcopy=False)
    )
    return _lr_scaled(section, params, _DIVERGED_LR_FACTOR) if failed else params


def lr_failed(trial: optuna.trial.FrozenTrial, baseline: BaselineRun) -> bool:
    """Whether ``trial`` shows its LR too high: it diverged (UNSTABLE), or its stored run's
    lowest smoothed loss (:func:`stability.lowest_reached`) came under _STUCK_SHARE of the
    way from where the ``baseline``'s smoothed loss started to the target. A run too short
    to smooth tells nothing, and is not taken as failed."""
    if str(trial.user_attrs.get("status", "")).upper() == "UNSTABLE":
        return True
    stored = trial.user_attrs.get("run")
    if stored is None:
        return False
    lowest = stability.lowest_reached(trial_run(stored).losses)
    start = stability.target_basis(baseline.run.losses).start
    drop = start - baseline.target_loss
    return lowest is not None and drop > 0 and start - lowest < _STUCK_SHARE * drop


def _climb(
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    number: int,
    first: bool,
    step: Callable[[], dict[str, Any] | None],
) -> dict[str, Any] | None:
    """A climb's trial ``number``: ``step()``'s params from ``best``, the ``first`` one
    from whichever trial is best, a later one only when ``best`` is the trial just before
    it (the last step won); None when it has none, or a trial already ran them."""
    if not first and best.number != number - 1:
        return None
    params = step()
    if params is None or any(t.params == params for t in study.trials):
        return None
    return params


def _lr_scaled(
    section: spaces.LrRange, params: dict[str, Any], factor: float
) -> dict[str, Any] | None:
    """``params`` with their LR (or LR multiplier) times ``factor``, clipped to the space;
    None when they hold no LR or the clip leaves it where it was."""
    key = section.param
    if key not in params:
        return None
    lr = min(max(params[key] * factor, section.low), section.high)
    return {**params, key: lr} if lr != params[key] else None


def larger(
    plan: ConvergencePlan, top: list[Measured], best: tuple[optuna.trial.FrozenTrial, Measured]
) -> dict[str, Any] | None:
    """``best``'s params on a larger batch, where some systems config in ``top`` with a
    larger global batch runs at least _LARGER_GAIN x the samples/s of ``best``'s
    micro-batch: on the smallest one of at least _LARGER_STEP x its batch (else the
    largest) among those measured at DOMINATED_SHARE x its samples/s or more, at the
    fewest accumulation steps the space allows (none in the bundled spaces), at ``best``'s
    LR scaled linearly with the global batch (clipped to the space); None when no larger
    config gains that much or the space has no LR range."""
    trial, run = best
    lr = plan.space.convergence.lr
    own = next((r for r in top if r.train.micro_batch_size == run.train.micro_batch_size), None)
    if lr is None or own is None:
        return None
    batch = run.train.global_batch
    bigger = [(k, r) for k, r in enumerate(top) if r.train.global_batch > batch]
    if not any(r.samples_per_s >= _LARGER_GAIN * own.samples_per_s for _, r in bigger):
        return None
    near = [(k, r) for k, r in bigger if r.samples_per_s >= DOMINATED_SHARE * own.samples_per_s]
    far = [(k, r) for k, r in near if r.train.global_batch >= _LARGER_STEP * batch]
    if far:
        index, chosen = min(far, key=lambda kr: kr[1].train.global_batch)
    else:
        index, chosen = max(near, key=lambda kr: kr[1].train.global_batch)
    accum = spaces.allowed_accum(plan.space, 1)  # the fewest steps the space allows
    new_batch = chosen.train.micro_batch_size * chosen.train.world_size * accum
    params = {**trial.params, "systems": index}
    if "grad_accum_steps" in params:
        params["grad_accum_steps"] = accum
    value = run.train.optimizer.lr * new_batch / batch
    params[lr.param] = spaces.lr_seed_value(lr, plan.base, new_batch, value)
    return params


def step_rate_gain(top: list[Measured], index: int) -> float:
    """How many more optimizer steps per second ``top[index]`` runs than ``top[0]`` (the
    baseline's micro-batch), from their measured samples/s."""

    def steps_per_s(run: Measured) -> float:
        return run.samples_per_s / (run.train.micro_batch_size * run.train.world_size)

    return steps_per_s(top[index]) / steps_per_s(top[0])


def small_batch_first(top: list[Measured], seed: dict[str, Any]) -> bool:
    """Whether the small-batch ``seed`` should run before the decayed-LR one: when its
    steps run at least _SMALL_FIRST_STEP_GAIN x as fast as the baseline batch's. The search
    may afford only two seeded trials (hf_gpt2: start-up and the confirmation's reserve
    left room for two), so the likelier winner goes first."""
    return step_rate_gain(top, seed["systems"]) >= _SMALL_FIRST_STEP_GAIN


def smaller(plan: ConvergencePlan, top: list[Measured], steps: int) -> dict[str, Any] | None:
    """A seed on the systems config of :func:`small_batch_size` below ``top[0]``'s batch,
    without accumulation, at the baseline's own LR (clipped to the space): the scaling
    rules would lower it with the batch, but they describe batches far above the noise
    scale; measured on tiny_gpt at batch 4, the sqrt-scaled 1.5e-4 reached the target
    later than the baseline's 3e-4 (5.7-9.4 s against 5.3-6.7 s). None when nothing
    smaller was measured."""
    sizes = {run.train.micro_batch_size: k for k, run in enumerate(top)}
    small = small_batch_size(sizes, top[0].train.micro_batch_size)
    if small is None:
        return None
    index = sizes[small]
    seed = spaces.convergence_seed(
        plan.space, plan.base, systems_values(top[index].train), 1, steps
    )
    lr = plan.space.convergence.lr
    if lr is not None:
        batch = top[index].train.micro_batch_size * top[index].train.world_size
        seed[lr.param] = spaces.lr_seed_value(lr, plan.base, batch, plan.base.optimizer.lr)
    return {**seed, "systems": index}


def decayed(space: spaces.SearchSpace, seed: dict[str, Any]) -> dict[str, Any] | None:
    """``seed`` at _DECAYED_LR_FACTOR x its LR (clipped to the space), on a cosine schedule;
    None when the space has no LR range, no cosine, or no room above the seed's LR."""
    section = space.convergence
    if section.lr is None or section.schedule is None or "cosine" not in section.schedule:
        return None
    raised = _lr_scaled(section.lr, seed, _DECAYED_LR_FACTOR)
    return None if raised is None else {**raised, "schedule": "cosine"}


def _may_continue(
    plan: ConvergencePlan, study: optuna.Study, budget: Budget, time_cap: float
) -> bool:
    done = [t for t in study.trials if t.state.is_finished()]
    if plan.max_trials is not None and len(counted(study)) >= plan.max_trials:
        return False
    if plan.max_trials is None and plan.patience and plateaued(study, plan.patience):
        return False
    best = best_time(study)
    beat_s = max(_CANNOT_WIN_MARGIN * best, _MIN_CAP_S) if best is not None else time_cap
    next_trial_s = min(time_cap, beat_s) + plan.startup_s
    # The trial about to start may join the runoff's candidates: keep its repeats too,
    # once there are trials enough for a runoff (_TRIALS_BEFORE_RUNOFF).
    runoff_due = len(done) >= _TRIALS_BEFORE_RUNOFF
    kept = plan.kept_s(study, joining=1) if runoff_due else plan.reserve_for(study)
    if budget.left_s > kept + next_trial_s + _SAFETY_S:
        return True
    return best is None and len(done) < _MIN_TRIALS  # an answer needs a run that reached it


def plateaued(study: optuna.Study, patience: int) -> bool:
    """Whether the last ``patience`` finished trials (in number order) all failed to beat
    the best time to target before them by more than REAL_GAIN and REAL_GAIN_FLOOR_S;
    False until one reached the target. Smaller gains still lower the best, but do not
    restart the count."""
    best, since = math.inf, 0
    for t in counted(study):
        if not t.state.is_finished():
            continue
        value = t.value if t.user_attrs.get("reached") and t.value is not None else math.inf
        real = value < best * (1 - REAL_GAIN) and value < best - REAL_GAIN_FLOOR_S
        since = 0 if real else since + 1
        best = min(best, value)
    return math.isfinite(best) and since >= patience


def _run_one(
    plan: ConvergencePlan,
    trial: optuna.Trial,
    systems: Measured,
    trials: Trialist,
    time_cap: float,
) -> optuna.trial.FrozenTrial:
    fixed = systems_values(systems.train)
    values = {**fixed, **spaces.suggest_convergence(trial, plan.space, fixed)}
    values, systems = fastest_realisation(values, systems, plan.settled_systems)
    steps = _planned_steps(plan, values, systems, time_cap)
    config = spaces.to_train_config(values, plan.base, steps)
    trial.set_user_attr("train", config.model_dump_json())
    overrun = spaces.epoch_overrun(config, plan.dataset_size)
    if overrun is not None:  # pruned before paying: a step would repeat samples
        trial.set_user_attr("status", "PRUNED")
        trial.set_user_attr("pruned_by", f"not run ({overrun})")
        trial.set_user_attr(NOT_RUN, True)
        return trial.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    repeat = baseline_repeat(plan.baseline, config)
    stored = stored_runs(trial.study)  # read once: the pace, the median rule and the tell
    earlier = [run for _, run in stored]
    pace = plan.pace_of(earlier)
    clock = pace.clock(config)
    if repeat is not None:  # the first seed, where no faster precision is left
        trial.set_user_attr("status", "OK")
        trial.set_user_attr("reason", "not run: the baseline's run is this config's run")
        _report_curve(trial, repeat, clock)
        return _tell(trial, repeat, False, time_cap, plan, earlier)
    best = best_time(trial.study)
    # Never under _MIN_CAP_S: the first second of a run is warm-up noise, not a verdict.
    beat_s = max(_CANNOT_WIN_MARGIN * best, _MIN_CAP_S) if best is not None else None
    rule = MedianRule.of(completed_runs(stored), pace)
    judge = _pruning(trial, beat_s, clock, rule)
    watch = TargetWatch(plan.baseline.target_loss, time_cap, judge)
    result = trials.run(config, steps, watch=watch, time_cap_s=time_cap * 1.2)
    run = measured(result, config, plan.baseline.target_loss) if ok(result) else None
    trial.set_user_attr("status", result.status.value)
    trial.set_user_attr("reason", result.reason)
    return _tell(trial, run, watch.gave_up, time_cap, plan, earlier)


def baseline_repeat(baseline: BaselineRun, config: TrainConfig) -> Measured | None:
    """The baseline's run as ``config``'s, when ``config`` is the baseline's (a constant
    schedule's span aside: it changes no LR) and that run reached the target; else None.
    Every run shares the seed and the data order, so running it again would only re-time
    the same loss curve. The first seed is the baseline itself wherever no faster precision
    survived the probe (a CPU without AVX512-BF16): tiny_gpt's takes 27 s of 300."""
    run = baseline.run
    if run.time_to_target_s is None or not same_config(config, run.train):
        return None
    return run.model_copy(update={"train": config})


def same_config(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether ``a`` and ``b`` train alike: equal but for a constant schedule's span,
    which changes no LR."""
    return _spanless(a) == _spanless(b)


def _report_curve(
    trial: optuna.Trial, run: Measured, clock: Callable[[int], float] | None = None
) -> None:
    """Report ``run``'s smoothed loss at each second, as a running trial's watch does
    (:func:`_pruning`, on the same ``clock``), so the median pruner weighs a reused run
    like any other."""
    seconds: set[int] = set()
    smoothed_curve = stability.smooth(run.losses)
    for step, (smoothed, elapsed) in enumerate(zip(smoothed_curve, run.elapsed_s, strict=True)):
        second = int(elapsed if clock is None else clock(step + 1))
        if second not in seconds and math.isfinite(smoothed):
            seconds.add(second)
            trial.report(smoothed, second)


def _spanless(config: TrainConfig) -> TrainConfig:
    schedule = config.schedule
    if schedule.name != "constant" or schedule.warmup_steps:
        return config
    return config.model_copy(update={"schedule": schedule.model_copy(update={"total_steps": None})})


def fastest_realisation(
    values: dict[str, Any], chosen: Measured, measured_systems: list[Measured]
) -> tuple[dict[str, Any], Measured]:
    """The same global batch on the fastest measured micro-batch that divides it, no
    smaller than the chosen one, in a precision that earned its place
    (:func:`earned_precisions`).

    Accumulating ``a`` micro-batches of ``m`` computes the same update as one micro-batch
    of ``m x a`` (BatchNorm statistics aside), so when the systems phase measured a larger
    micro-batch (same world size and compile; measured, hence fitting in memory) that runs
    faster, the trial uses it with less accumulation: the convergence phase chooses the
    global batch, the systems phase how to compute it. LR and schedule are unchanged. Its
    precision may differ, as :func:`systems_choices` gives each size its fastest one, and
    the stability check holds a reduced precision to fp32: on mlp_digits (AVX512-BF16 CPU)
    fp32 micro 64 x 4 ran as fp32 micro 256 at 141k samples/s, where bf16 micro 256 ran
    166k, and the search's pick was that fp32 trial, 2.01x over the baseline.
    Never a smaller micro-batch with more accumulation: on cnn_digits (search s, AVX2) micro
    16 measured 0.4% faster than micro 64 (2,162 against 2,152 samples/s, within one
    measurement's noise), and every trial at a global batch of 32 or 64 ran as micro 16
    with accumulation: 79 steps to the target where micro 64 took 63 (its BatchNorm
    statistics over 16 samples, not 64), and a 2.12x search where the next one found 3.05x.
    """
    accum = int(values.get("grad_accum_steps", 1))
    per_rank = chosen.train.micro_batch_size * accum
    best = chosen
    for run in earned_precisions(measured_systems):
        cfg = run.train
        same = (cfg.world_size, cfg.compile) == (chosen.train.world_size, chosen.train.compile)
        larger = cfg.micro_batch_size > chosen.train.micro_batch_size
        divides = per_rank % cfg.micro_batch_size == 0
        if same and larger and divides and run.samples_per_s > best.samples_per_s:
            best = run
    if best is chosen:
        return values, chosen
    realised = {**values, **systems_values(best.train)}
    realised["grad_accum_steps"] = per_rank // best.train.micro_batch_size
    return realised, best


def _planned_steps(
    plan: ConvergencePlan, values: dict[str, Any], systems: Measured, time_cap: float
) -> int:
    accum = int(values.get("grad_accum_steps", plan.base.grad_accum_steps))
    global_batch = systems.train.micro_batch_size * systems.train.world_size * accum
    step_s = global_batch / systems.samples_per_s
    return max(_MIN_STEPS, math.ceil(time_cap / step_s))


def best_time(study: optuna.Study) -> float | None:
    """The best time to target so far (None: no trial reached it)."""
    reached = [
        t.value
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("reached") and t.value is not None
    ]
    return min(reached) if reached else None


def _pruning(
    trial: optuna.Trial,
    beat_s: float | None,
    clock: Callable[[int], float] | None = None,
    rule: MedianRule | None = None,
) -> Callable[[StepRecord, float], bool]:
    """Stop a run once it cannot win (still short of the target at ``beat_s``) or, at the
    first step of each second, when its best smoothed loss so far is behind ``rule``'s
    median of the completed trials there (none without a ``rule``).

    Seconds are the ``clock``'s, the pooled pace of the run's step (:meth:`Pace.clock`),
    where one is known: every run of a step crosses the target at the same step, so only
    its steps can tell it from the best; the run's own wall clock is the machine's speed
    at that moment as well. Without a ``clock``, the wall clock.
    """
    reported: set[int] = set()
    best = math.inf

    def judge(record: StepRecord, smoothed: float) -> bool:
        nonlocal best
        elapsed_s = record.elapsed_s if clock is None else clock(record.step)
        if beat_s is not None and elapsed_s > beat_s:
            trial.set_user_attr("pruned_by", f"not at the target after {beat_s:.1f} s")
            return True
        second = int(elapsed_s)
        if second in reported or not math.isfinite(smoothed):
            return False
        reported.add(second)
        best = min(best, smoothed)
        trial.report(smoothed, second)
        median = None if rule is None else rule.median_at(elapsed_s)
        if median is None or best <= median:
            return False
        behind = f"{best:.4g} against {median:.4g}"
        trial.set_user_attr("pruned_by", f"behind the median at {elapsed_s:.1f} s ({behind})")
        return True

    return judge


def completed_runs(stored: Sequence[tuple[optuna.trial.FrozenTrial, Measured]]) -> list[Measured]:
    """The runs of COMPLETE trials among ``stored``: the curves the median rule weighs."""
    complete = optuna.trial.TrialState.COMPLETE
    return [run for trial, run in stored if trial.state == complete]


def _tell(
    trial: optuna.Trial,
    run: Measured | None,
    gave_up: bool,
    time_cap: float,
    plan: ConvergencePlan,
    earlier: Sequence[Measured],
) -> optuna.trial.FrozenTrial:
    """Record ``run`` and end the trial: FAIL (no run, or unstable), PRUNED, or its value,
    the time to target at its step's pooled pace (:mod:`._pace`) over ``earlier`` (the
    study's runs as read when the trial began) and ``run``, its own wall time kept as the
    ``wall_to_target_s`` attr; a run that missed the target counts as twice the cap."""
    study = trial.study
    if run is None:
        return study.tell(trial, state=optuna.trial.TrialState.FAIL)
    trial.set_user_attr("run", run.model_dump_json())
    if gave_up:
        return study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    verdict = stability.verdict(run.losses)
    trial.set_user_attr("stability", "; ".join(verdict.reasons))
    if not verdict.stable:
        trial.set_user_attr("status", "UNSTABLE")
        return study.tell(trial, state=optuna.trial.TrialState.FAIL)
    reached = run.time_to_target_s is not None
    trial.set_user_attr("reached", reached)
    trial.set_user_attr("wall_to_target_s", run.time_to_target_s)
    trial.set_user_attr(
        "target_step", stability.steps_to_target(run.losses, plan.baseline.target_loss)
    )
    pace = plan.pace_of([*earlier, run])
    paced = pace.time_to_target(run, plan.baseline.target_loss) if reached else None
    value = paced if paced is not None else _NOT_REACHED_PENALTY * time_cap
    return study.tell(trial, value)


def winners(study: optuna.Study) -> list[Measured]:
    """Stable runs that reached the target, fastest to it first."""
    return [run for _, run in winning_trials(study)]


def winning_trials(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, Measured]]:
    """:func:`winners`, each with its trial."""
    good = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("reached")
    ]
    good.sort(key=lambda t: t.value if t.value is not None else math.inf)
    return [(t, trial_run(t.user_attrs["run"])) for t in good]


def runoff_entries(study: optuna.Study, pace: Pace, target: float) -> list[Entry]:
    """:func:`winning_trials` as the runoff's entries, fastest first, each timed at
    ``pace`` (the pool may have grown since its trial was told); a run whose losses show
    no crossing (a stored run from an older version) keeps its trial's value."""
    entries = [
        Entry(t.number, run, [_paced(pace, run, target, t)]) for t, run in winning_trials(study)
    ]
    return sorted(entries, key=lambda e: e.times[0])


def _paced(pace: Pace, run: Measured, target: float, trial: optuna.trial.FrozenTrial) -> float:
    found = paced_s(pace, run, target)
    if math.isinf(found) and trial.value is not None:
        return trial.value
    return found


def recorded_runs(study: optuna.Study) -> list[Measured]:
    """Every trial's measured run, in trial order: pruned and unstable ones too (each ran
    its config's step in a fresh process, whatever its loss did)."""
    return [run for _, run in stored_runs(study)]


def stored_runs(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, Measured]]:
    """:func:`recorded_runs`, each with its trial."""
    return [
        (t, trial_run(t.user_attrs["run"]))
        for t in study.get_trials(deepcopy=False)
        if "run" in t.user_attrs
    ]
