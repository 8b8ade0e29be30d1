"""Phase 1: the fastest step. Predict every systems config from the probe, prune what
cannot fit before any process starts, measure the best-predicted few for real.

Strategy (not a generic sampler): the systems dimensions are few and discrete, and the
probe's fitted time and memory models predict each combination for free, so enumerating
and ranking by prediction beats sampling; only the top few pay for a real run.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, NamedTuple

import optuna

from autotune import space as spaces
from autotune.config import TrainConfig
from autotune.profiler import ProbeReport, VariantReport
from autotune.runtime import StepRecord
from autotune.search._measure import Trialist, measured, ok
from autotune.search._types import Measured, same_kind, small_batch_size, trial_run
from autotune.trial import TrialStatus

__all__ = [
    "DOMINATED_SHARE",
    "Candidate",
    "Dominated",
    "Prediction",
    "Pruned",
    "beyond_saturation",
    "measure_systems",
    "nothing_fits",
    "precision_free_step",
    "precision_twins",
    "predict_systems",
]

_NOMINAL_STEPS = 100  # schedule length for building configs; the systems phase ignores LR
_EXTRA_RANK_COST = 0.95  # on CPU an extra rank shares the same cores, plus gloo traffic
_COMPILE_PRIOR = 0.8  # torch.compile: 10-15 s to compile that short runs rarely win back
MEASURE_STEPS = 12  # most steps of a systems measurement: a third burn-in, the rest timed
_MIN_MEASURE_STEPS = 4
_MEASURE_SECONDS = 5.0  # wall time one measurement should take at the predicted speed
_MEASURE_SLACK = 10.0  # the probe's step-time model is rarely off by more than 2x
_MIN_MEASURE_CAP_S = 60.0  # first steps of a compiled or cold model can take tens of seconds
# A batch larger than one already measured, at under this share of its samples/s, loses on
# both counts (fewer samples and fewer steps per second): its measurement stops once judged.
# 0.8 leaves room for one step's noise (10-20% on 2 cores). Measured on tiny_gpt on an AVX2
# CPU: micro 512 ran at 39 samples/s against 71 at micro 16 (the probe's 8-32 fit had
# predicted it fastest), and its 4 steps of 13 s took a third of the budget.
DOMINATED_SHARE = 0.8
# Judged on the median of its timed steps once there are this many, or once they took
# _JUDGE_S: a step of seconds is judged alone (the 13 s above), a step of milliseconds is
# not. One hiccup of 0.3 s in cnn_digits' micro-64 measurement (25 ms steps, AVX2 host) had
# stopped it at that step and stored 199 samples/s against the 2,700-3,600 it runs at, so
# the search never tried the grid's best micro-batch.
_JUDGED_STEPS = 3
_JUDGE_S = 1.0
# A batch must run this many times the samples/s of the best smaller one of its kind for
# a larger one still to be measured: past it, the gain is within one measurement's noise.
_RISING = 1.05
# ... unless measuring it is cheap: under this many seconds for its fewest steps at the
# samples/s its kind last reached. A stall between few-millisecond steps is as likely
# timer noise: on mlp_digits (AVX2 CPU) micro 128 measured 0.97x micro 64, and the grid
# then ran micro 256 at 1.9x micro 64's samples/s. The stall rule is for slow steps, where
# one measurement costs a sizeable share of the budget.
_CHEAP_MEASURE_S = 2.0


@dataclass(frozen=True)
class Candidate:
    """A systems config with its predictions from the probe."""

    config: TrainConfig
    values: dict[str, Any]
    samples_per_s: float
    peak_bytes: int | None


Pruned = list[tuple[dict[str, Any], str]]  # a systems config's values, and why it was not run


class Prediction(NamedTuple):
    """What :func:`predict_systems` returns."""

    fitting: list[Candidate]  # the configs to measure, the fastest predicted first
    over_memory: Pruned  # over the memory budget, the closest to fitting first
    short_of_data: Pruned  # an epoch holds no micro-batch for each rank

    @property
    def pruned(self) -> Pruned:
        """Every config not run, with its reason: the study records them all."""
        return [*self.over_memory, *self.short_of_data]


def predict_systems(
    space: spaces.SearchSpace,
    report: ProbeReport,
    base: TrainConfig,
    dataset_size: int | None = None,
) -> Prediction:
    """Every systems combination: the ones that fit ranked fastest first, and the pruned
    ones with the reason: predicted bytes over the budget, the closest to fitting first,
    or a micro-batch per rank larger than ``dataset_size`` allows (None: unknown)."""
    fitting: list[Candidate] = []
    pruned: Pruned = []
    short: Pruned = []
    over: list[float] = []  # each pruned one's predicted bytes, to order them
    budget = report.memory_budget.budget_bytes
    cpu = report.hardware.device.kind == "cpu"
    for values in _combinations(space):
        config = spaces.to_train_config(values, base, _NOMINAL_STEPS)
        variant = _variant(report, config)
        if variant is None:
            continue
        too_few = spaces.short_dataset(config, dataset_size)
        if too_few is not None:  # the run would stop before its first step
            short.append((values, too_few))
            continue
        verdict = spaces.check_memory(
            config, variant.predict_peak_bytes, budget, ranks_share_memory=cpu
        )
        if not verdict.fits:
            pruned.append((values, verdict.reason))
            over.append(verdict.predicted_bytes or 0.0)
            continue
        rate = _predicted_rate(variant, config, cpu)
        predicted = None if verdict.predicted_bytes is None else int(verdict.predicted_bytes)
        fitting.append(Candidate(config, values, rate, predicted))
    fitting = _without_needless_checkpointing(fitting)
    fitting.sort(key=lambda c: -c.samples_per_s)
    order = sorted(range(len(pruned)), key=over.__getitem__)
    return Prediction(fitting, [pruned[k] for k in order], short)


def nothing_fits(predicted: Prediction, report: ProbeReport) -> str:
    """Why a search stops before its baseline when no systems config is left to run (the
    memory model prunes them, the closest first, or the dataset is too small), and the fix."""
    pruned = predicted.over_memory
    if not pruned and predicted.short_of_data:
        return (
            f"no config in the search space can start: {predicted.short_of_data[0][1]}. Give "
            "a --space with smaller micro_batch_size and world_size values, or a larger dataset."
        )
    budget = report.memory_budget
    given = budget.source == "memory_limit"
    where = "--memory-limit" if given else "the share of the device's memory a search budgets"
    fix = "raise --memory-limit" if given else "give a larger --memory-limit"
    closest = f"; the closest: {pruned[0][1]}" if pruned else ""
    return (
        f"no config in the search space fits the memory budget ({where}): the memory model "
        f"prunes all {len(pruned)}{closest}. {fix.capitalize()}, or give a --space with "
        "smaller micro_batch_size values or activation checkpointing (Task(blocks=[...]))."
    )


def _without_needless_checkpointing(fitting: list[Candidate]) -> list[Candidate]:
    """Drop checkpointed candidates whose unchecked twin fits: recomputing the forward
    trades time for memory and cannot make a step faster, so a prediction that says so is
    the probe's timing noise; checkpointing stays where it lets a larger batch fit."""
    plain = {_twin_key(c.config) for c in fitting if c.config.activation_checkpointing == "none"}
    return [
        c
        for c in fitting
        if c.config.activation_checkpointing == "none" or _twin_key(c.config) not in plain
    ]


def _twin_key(config: TrainConfig) -> tuple[Any, ...]:
    return (
        config.micro_batch_size,
        config.precision,
        config.world_size,
        config.compile,
        config.grad_accum_steps,
    )


def _combinations(space: spaces.SearchSpace) -> list[dict[str, Any]]:
    dims = {
        name: spaces.choices(spec)
        for name in spaces.SystemsSpace.model_fields
        if (spec := getattr(space.systems, name)) is not None
    }
    names = list(dims)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*dims.values())]


def _variant(report: ProbeReport, config: TrainConfig) -> VariantReport | None:
    """The probed variant; every_k uses 'full', a conservative bound on memory and speed."""
    mode = "none" if config.activation_checkpointing == "none" else "full"
    try:
        variant = report.variant(config.precision, mode)  # type: ignore[arg-type]
    except KeyError:
        return None
    return variant if variant.viable else None


def _predicted_rate(variant: VariantReport, config: TrainConfig, cpu: bool) -> float:
    rate = variant.predict_samples_per_s(config.micro_batch_size)
    if config.world_size > 1:
        rate *= _EXTRA_RANK_COST if cpu else config.world_size * _EXTRA_RANK_COST
    if config.compile:
        rate *= _COMPILE_PRIOR
    return rate


def measure_systems(
    candidates: list[Candidate],
    pruned: list[tuple[dict[str, Any], str]],
    study: optuna.Study,
    trials: Trialist,
    how_many: int,
    grid: dict[str, list[Any]],
    anchor: int | None = None,
) -> list[Measured]:
    """Measure the candidates :func:`_diverse` picks (``how_many`` of them, plus cheap
    and small ones) and their cheap :func:`precision_twins`, or reuse a resumed study's;
    record everything in ``study``, and return the measured ones, fastest first."""
    # Resuming (a killed search, or another worker's phase): what is recorded stays as is.
    recorded = {_key(t.params): t for t in study.trials}
    for values, reason in pruned:
        if _key(spaces.encode_params(values)) not in recorded:
            _record(study, grid, values, None, {"status": "PRUNED", "reason": reason})
    runs = [
        trial_run(t.user_attrs["run"])
        for t in recorded.values()
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    picked = _diverse(candidates, how_many, anchor)
    # Smallest batch first: each larger one is then judged against every smaller one.
    chosen = sorted(
        [*picked, *precision_twins(candidates, picked)], key=lambda c: c.config.global_batch
    )
    for candidate in chosen:
        if _key(spaces.encode_params(candidate.values)) in recorded:
            continue
        attrs: dict[str, Any] = {
            "predicted_samples_per_s": candidate.samples_per_s,
            "predicted_peak_bytes": candidate.peak_bytes,
        }
        skip = beyond_saturation(candidate.config, runs)
        if skip is not None:
            _record(study, grid, candidate.values, None, {**attrs, "status": "PRUNED", **skip})
            continue
        run, found = _measured(candidate, runs, trials)
        if run is not None:
            runs.append(run)
        _record(study, grid, candidate.values, run.samples_per_s if run else None, attrs | found)
    return sorted(runs, key=lambda m: -m.samples_per_s)


def _measured(
    candidate: Candidate, runs: list[Measured], trials: Trialist
) -> tuple[Measured | None, dict[str, Any]]:
    """:func:`_measure_one`, twice where that is cheap (_cheap), the faster one kept: a whole
    process can run slow, and a slow measurement now decides which precision a size gets.
    On cnn_digits (AVX512-BF16 CPU) bf16 micro 64 measured 6,870 samples/s in one search
    and 14,185 in the one before, fp32 micro 64 8,364 and 11,356: the slow process handed
    micro 64 to fp32, whose pick then ran at 0.63x the grid's best's samples/s. A stall
    only ever slows a run, so the faster of two is the nearer to the config's speed."""
    run, found = _measure_one(candidate, runs, trials)
    if not _cheap(candidate):
        return run, found
    again, found_again = _measure_one(candidate, runs, trials)
    if again is not None and (run is None or again.samples_per_s > run.samples_per_s):
        return again, found_again
    return run, found


def _measure_one(
    candidate: Candidate, runs: list[Measured], trials: Trialist
) -> tuple[Measured | None, dict[str, Any]]:
    """One systems measurement, stopped early when a smaller batch is clearly faster
    (:class:`Dominated`); the run (None if it failed) and the attrs that tell how it went."""
    steps = _measure_steps(candidate)
    watch = Dominated(candidate.config, runs, burn_in=steps // 3)
    result = trials.run(
        candidate.config,
        steps,
        warmup_steps=steps // 3,
        time_cap_s=_measure_cap_s(candidate, steps),
        watch=watch,
    )
    run = measured(result, candidate.config, None) if ok(result) else None
    attrs: dict[str, Any] = {
        # stopped by the watch, it was still measured: a healthy config, not a pruned one
        "status": TrialStatus.OK.value if watch.reason else result.status.value,
        "reason": watch.reason or result.reason,
    }
    if run is not None:
        attrs["run"] = run.model_dump_json()
    return run, attrs


def beyond_saturation(config: TrainConfig, runs: list[Measured]) -> dict[str, str] | None:
    """Attrs that skip ``config`` when the samples/s of its kind (precision,
    checkpointing, ranks, compile) stopped rising with the batch: the largest measured
    smaller batch of the kind runs under _RISING x the best of the ones below it. Samples/s
    over batch size rises, then flattens or falls once a batch fills the device or spills
    the caches, and does not rise again (tiny_gpt on an AVX2 CPU: 50, 73, 71, 54 and 39
    samples/s at 4, 16, 64, 128 and 512; the 512 measurement alone took 30 s of a 300 s
    budget). A larger global batch is still tried, by accumulation. A batch that is cheap
    to measure (_CHEAP_MEASURE_S) is measured all the same. None: measure it."""
    kind = sorted(
        (
            r
            for r in runs
            if same_kind(r.train, config) and r.train.global_batch < config.global_batch
        ),
        key=lambda r: r.train.global_batch,
    )
    if len(kind) < 2:
        return None
    last, before = kind[-1], max(kind[:-1], key=lambda r: r.samples_per_s)
    if last.samples_per_s >= _RISING * before.samples_per_s:
        return None
    cost_s = _MIN_MEASURE_STEPS * config.global_batch / max(last.samples_per_s, 1e-9)
    if cost_s < _CHEAP_MEASURE_S:
        return None
    return {
        "reason": (
            f"not measured: samples/s stopped rising with the batch ({before.train.global_batch}: "
            f"{before.samples_per_s:,.1f}, {last.train.global_batch}: {last.samples_per_s:,.1f}); "
            "a larger batch of this kind is no faster"
        )
    }


class Dominated:
    """A systems measurement's watch: stops it once the median samples/s of its timed steps
    (_JUDGED_STEPS of them, or fewer that took _JUDGE_S) is under DOMINATED_SHARE of a
    measured config with a smaller global batch (see there); ``reason`` then says so. Steps
    up to ``burn_in`` are never timed (allocator, caches)."""

    def __init__(self, config: TrainConfig, measured_runs: list[Measured], burn_in: int) -> None:
        smaller = [r for r in measured_runs if r.train.global_batch < config.global_batch]
        self.best = max(smaller, key=lambda r: r.samples_per_s, default=None)
        self.burn_in = burn_in
        self.rates: list[float] = []
        self.timed_s = 0.0
        self.reason: str | None = None

    def __call__(self, record: StepRecord) -> bool:
        if self.best is None or record.step <= self.burn_in:
            return False
        self.rates.append(record.samples_per_s)
        self.timed_s += record.step_time_s
        if len(self.rates) < _JUDGED_STEPS and self.timed_s < _JUDGE_S:
            return False
        rate = statistics.median(self.rates)
        if rate >= DOMINATED_SHARE * self.best.samples_per_s:
            return False
        self.reason = (
            f"stopped at step {record.step}: {rate:,.1f} samples/s is under "
            f"{DOMINATED_SHARE:g}x the {self.best.samples_per_s:,.1f} of the smaller batch "
            f"{self.best.train.global_batch}: slower in samples and in steps per second"
        )
        return True


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _diverse(
    candidates: list[Candidate], how_many: int, anchor: int | None = None
) -> list[Candidate]:
    """The best-predicted candidate of ``how_many`` micro-batch sizes, the one nearest
    ``anchor`` (the baseline's), the fastest and sizes spread geometrically between them;
    plus, beyond ``how_many``, the sizes those skipped above the anchor's that are cheap
    to measure (:func:`_cheap_between`) and a small one (:func:`small_batch_size` of the
    anchor's).

    Throughput favours the largest batch, time to target often a middle one (more updates
    per second at a still-efficient size) or one below the baseline's (fewer samples per
    update, see SMALL_BATCH_FACTOR), so the convergence phase needs a spread of batch
    sizes, not the few fastest ones: measured on cnn_digits and mlp_digits, the grid's best
    was micro-batch 64 while only 16, 128, 256 and 512 were measured. The small one comes
    on top: in place of a size between, it cost mlp_digits its best batch (128)."""
    best: dict[int, Candidate] = {}
    for candidate in candidates:  # fastest first
        best.setdefault(candidate.config.micro_batch_size, candidate)
    ranked = list(best.values())
    if anchor is None:
        return ranked[:how_many]
    near = min(ranked, key=lambda c: abs(c.config.micro_batch_size - anchor))
    small = small_batch_size(best, near.config.micro_batch_size)
    extra = [] if small is None or best[small] is ranked[0] else [best[small]]
    pool = [c for c in ranked if c not in extra]
    ends = [pool[0]] if pool[0] is near else [pool[0], near]
    between = _geometric_between(pool, ends, how_many - len(ends))
    rest = [c for c in pool if c not in ends and c not in between]
    chosen = [*ends, *between, *rest][:how_many]
    return [*chosen, *_cheap_between(pool, chosen, near), *extra]


def _cheap_between(
    pool: list[Candidate], chosen: list[Candidate], near: Candidate
) -> list[Candidate]:
    """The sizes of ``pool`` between ``near`` (the baseline's) and the largest ``chosen``
    one that ``chosen`` skipped, where measuring them is cheap (_CHEAP_MEASURE_S): the
    batch climb steps to measured sizes only, and on mlp_digits the grid's best, micro 256,
    lay between the measured 128 and 512 (12 steps: 0.1 s)."""
    low = near.config.micro_batch_size
    high = max(c.config.micro_batch_size for c in chosen)
    return [
        c for c in pool if c not in chosen and low < c.config.micro_batch_size < high and _cheap(c)
    ]


def precision_twins(candidates: list[Candidate], chosen: list[Candidate]) -> list[Candidate]:
    """For each ``chosen`` candidate, the fastest-predicted one of every other precision with
    the same micro-batch, accumulation, checkpointing, ranks and compile, where measuring it
    is cheap (_CHEAP_MEASURE_S). :func:`_diverse` keeps one precision per size, the one the
    probe predicts fastest, but the probe fits each precision's step time over batches of
    8-32, and a reduced precision's gain grows with the batch: on mlp_digits (AVX512-BF16
    CPU) the fit ranked fp32 first at every size, while bf16 autocast ran micro 256 at
    1.18x fp32's samples/s, and that was the grid's best (autotune at 86% of it)."""
    twins: list[Candidate] = []
    for one in chosen:
        seen = {one.config.precision}
        for other in candidates:  # fastest-predicted first
            if other.config.precision in seen or not _twins(one.config, other.config):
                continue
            seen.add(other.config.precision)
            if other not in chosen and other not in twins and _cheap(other):
                twins.append(other)
    return twins


def _twins(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether ``a`` and ``b`` differ in nothing the systems phase measures but precision."""
    return precision_free_step(a) == precision_free_step(b)


def precision_free_step(config: TrainConfig) -> tuple[Any, ...]:
    """What a step computes, but the precision it computes it in: micro-batch,
    accumulation, checkpointing, ranks and compile."""
    keys = ("micro_batch_size", "grad_accum_steps", "activation_checkpointing")
    return (*(getattr(config, k) for k in keys), config.world_size, config.compile)


def _cheap(candidate: Candidate) -> bool:
    """Whether measuring ``candidate`` takes under _CHEAP_MEASURE_S at its predicted speed."""
    step_s = candidate.config.global_batch / max(candidate.samples_per_s, 1e-9)
    return _measure_steps(candidate) * step_s < _CHEAP_MEASURE_S


def _geometric_between(
    ranked: list[Candidate], ends: list[Candidate], count: int
) -> list[Candidate]:
    """``count`` candidates whose sizes lie nearest (in log) to evenly spaced points
    between the two ends' micro-batch sizes."""
    sizes = [c.config.micro_batch_size for c in ends]
    low, high = math.log2(min(sizes)), math.log2(max(sizes))
    pool = [
        c for c in ranked if c not in ends and low < math.log2(c.config.micro_batch_size) < high
    ]
    picked: list[Candidate] = []
    for k in range(1, count + 1):
        if not pool:
            break
        point = low + (high - low) * k / (count + 1)
        # On a tie, the smaller size: time to target tends to favour it.
        nearest = min(pool, key=lambda c: (_log_distance(c, point), c.config.micro_batch_size))
        picked.append(nearest)
        pool.remove(nearest)
    return picked


def _log_distance(candidate: Candidate, point: float) -> float:
    return abs(math.log2(candidate.config.micro_batch_size) - point)


def _measure_cap_s(candidate: Candidate, steps: int) -> float:
    """A systems measurement may take _MEASURE_SLACK x its predicted time (at least
    _MIN_MEASURE_CAP_S): a hanging config is recorded TIMEOUT in a minute, not ten."""
    predicted = steps * candidate.config.global_batch / max(candidate.samples_per_s, 1e-9)
    return max(_MIN_MEASURE_CAP_S, _MEASURE_SLACK * predicted)


def _measure_steps(candidate: Candidate) -> int:
    step_s = candidate.config.global_batch / max(candidate.samples_per_s, 1e-9)
    return max(_MIN_MEASURE_STEPS, min(MEASURE_STEPS, int(_MEASURE_SECONDS / step_s)))


def _record(
    study: optuna.Study,
    grid: dict[str, list[Any]],
    values: dict[str, Any],
    value: float | None,
    attrs: dict[str, Any],
) -> None:
    """Store one systems trial: its params over the whole grid's choices, as Optuna needs."""
    params = spaces.encode_params(values)
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        name: optuna.distributions.CategoricalDistribution(grid[name]) for name in params
    }
    state = optuna.trial.TrialState.PRUNED if value is None else optuna.trial.TrialState.COMPLETE
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=distributions, value=value, state=state, user_attrs=attrs
        )
    )
