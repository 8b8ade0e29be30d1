"""Confirmation: the winner and the baseline re-run interleaved, and the tuned config."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autotune import __version__, hardware, stability
from autotune._units import format_seconds
from autotune.config import (
    BaselineMeasured,
    Provenance,
    Rejected,
    Spread,
    TrainConfig,
    TunedConfig,
    train_digest,
)
from autotune.config import (
    Measured as MeasuredSection,
)
from autotune.profiler import ProbeReport
from autotune.runtime import StepRecord
from autotune.search._measure import TargetWatch, Trialist, measured, ok
from autotune.search._progress import describe
from autotune.search._reseed import reseed_check
from autotune.search._systems import MEASURE_STEPS
from autotune.search._types import BaselineRun, Measured, same_kind
from autotune.trial import TargetStop

__all__ = [
    "RATE_SETTLED_ERROR",
    "SETTLED_ERROR",
    "Confirmation",
    "Pairing",
    "baseline_kept",
    "known_reference",
    "reference_check",
    "run_pairs",
    "same_step",
    "settled",
    "spread_of",
    "stable_winner",
    "steady_runs",
    "step_rates",
    "tuned_config",
]

# A run of at most this many steps (twice a systems measurement's most) is paced by its
# process's warm-up: it speaks for its step only where no longer run does (:func:`steady_runs`).
STEADY_STEPS = 2 * MEASURE_STEPS
_STABILITY_TRIES = 4  # fp32 checks before giving up: each is one run of the candidate's length
# A failed candidate's retry LR: the gap to fp32 grows with the LR (cnn_digits, bf16 micro 64,
# cosine: 5.5-9.3% at 1.6e-2, 2.9% at 1.08e-2), and the grid's best was that config at 8e-3.
_DERATE = 0.5
_DERATE_STEPS = 3  # the retry's most steps and seconds, x the failed run's: a lower LR needs more
# A candidate's fp32 check may take this many times its trial's steps; its confirmation
# runs that many times the steps the pairs' cap holds at its trial's pace (a run seldom
# gets 1.5x faster than its trial)
_STEP_MARGIN = 1.5
_MEMORY_STEPS = 3  # the runtime measures memory at the second step; one more ends it cleanly
# More pairs stop once the mean log speed-up's standard error is this small: the reported
# median is then within about +-10% (two errors) of where further pairs would move it.
SETTLED_ERROR = 0.05
# ... and once that of the winner's mean log samples/s is this small: tuned.yaml's samples/s
# is what `autotune run -c` is held to (+-10%), and this machine's speed drifts over seconds
# (cnn_digits at micro 64: 7.4-10.3 ms per step in 1.2-s windows of one process), so a
# median of 3 runs a few seconds apart can sit at a slow spell: 8.7k recorded, 10.9k later.
RATE_SETTLED_ERROR = 0.03
_PAIR_MARGIN = 1.25  # another pair starts only if this many times the slowest pair fits


@dataclass
class Confirmation:
    """Interleaved repeats of the winner and the baseline."""

    winner: list[Measured] = field(default_factory=list)
    baseline: list[Measured] = field(default_factory=list)
    # baseline time / winner time of each pair in which both reached the target
    speedups: list[float] = field(default_factory=list)
    # winner samples/s / baseline samples/s of each pair in which both ran: a pair's two
    # runs share the machine's state, so a failed run never pairs runs of different pairs
    rate_ratios: list[float] = field(default_factory=list)
    # baseline samples to the target / winner's (time to it x samples/s), per pair in which
    # both reached it: the speed-up over the throughput ratio, pair by pair
    sample_ratios: list[float] = field(default_factory=list)
    # per pair in which the winner reached the target and the baseline never did: the
    # baseline run's length over the winner's time, a lower bound on that pair's speed-up
    bounds: list[float] = field(default_factory=list)
    # per pair in which the baseline reached the target and the winner never did: the
    # baseline's time over the winner run's length (or the cap, if longer), an upper bound
    # on that pair's speed-up, under 1 (the cap is longer than any baseline time to it)
    ceilings: list[float] = field(default_factory=list)
    pairs: int = 0  # pairs run
    peak_memory_bytes: int | None = None
    # samples/s of the search's earlier fresh processes that ran the winner's step (its
    # trial, trials at other LRs, its systems measurement): see :func:`same_step`
    earlier_rates: list[float] = field(default_factory=list)
    # the latest pair's winner and baseline runs; None for a run that failed
    latest: tuple[Measured | None, Measured | None] = (None, None)
    # each pair's seed, in order (both runs of a pair share it: :class:`Pairing`)
    seeds: list[int] = field(default_factory=list)
    # the seeds of the pairs in :attr:`speedups` and in :attr:`ceilings`, in their order
    speedup_seeds: list[int] = field(default_factory=list)
    ceiling_seeds: list[int] = field(default_factory=list)

    @property
    def pair_speedups(self) -> list[float]:
        """The speed-up of every pair in which the baseline reached the target: measured
        (:attr:`speedups`), or bounded above where the winner did not get there
        (:attr:`ceilings`). Their median is at least the true one's: a pick that reaches
        the target on some seeds only is not judged by those alone (a small transformer's
        lr-4e-3 pick missed it on 3 seeds of 8, and 1.24x over the other 5 hid that)."""
        return self.speedups + self.ceilings

    @property
    def pair_seeds(self) -> list[int]:
        """The seeds of :attr:`pair_speedups`, in the same order."""
        return self.speedup_seeds + self.ceiling_seeds

    @property
    def rates(self) -> list[float]:
        """samples/s of every fresh process that ran the winner's step."""
        return [run.samples_per_s for run in self.winner] + self.earlier_rates

    def settled(self) -> bool:
        """Whether both the speed-up and the winner's samples/s are settled. A speed-up
        only ever bounded (the baseline at the target in no pair of at least 3) counts as
        settled: more pairs of a baseline that stops short cannot measure it."""
        unmeasurable = not self.pair_speedups and len(self.bounds) >= 3
        speedup = unmeasurable or settled(self.pair_speedups)
        return speedup and settled(self.rates, RATE_SETTLED_ERROR)

    def speedup_bound(self) -> Spread | None:
        """The speed-up's lower bounds (:attr:`bounds`), where the baseline reached the
        target in no pair: None where some pair measured the speed-up itself."""
        return None if self.pair_speedups else spread_of(self.bounds)

    def lost(self) -> bool:
        """Whether the pairs measured the winner no faster than the baseline: a median
        time-to-target speed-up under 1 over the pairs in which the baseline reached the
        target (:attr:`pair_speedups`), or no winner run at the target where a baseline
        run reached it. The search's trials said otherwise, so the pick won on its seed's
        data order, or one of them was a lucky run, or the machine changed speed; the
        baseline is the safer recommendation."""
        if self.pair_speedups:
            return statistics.median(self.pair_speedups) < 1.0
        reached = any(run.time_to_target_s is not None for run in self.baseline)
        return reached and all(run.time_to_target_s is None for run in self.winner)

    def last_pair(self) -> str:
        """What the latest pair measured: each side's time to the target, and the speed-up
        (the run of a side that failed or never got there says so)."""
        won, base = (run.time_to_target_s if run else None for run in self.latest)
        speedup = f", {base / won:.2f}x" if won and base else ""
        tuned, short = self.latest
        if base and tuned is not None and won is None:
            ran = tuned.elapsed_s[-1]
            return (
                f"pair {self.pairs}: tuned not at the target after {format_seconds(ran)}, "
                f"baseline {_seconds(base)} to it, <= {self.ceilings[-1]:.2f}x"
            )
        if won and short is not None and base is None:
            ran = short.elapsed_s[-1]
            return (
                f"pair {self.pairs}: tuned {_seconds(won)} to the target, baseline not at "
                f"it after {format_seconds(ran)}, >= {ran / won:.2f}x"
            )
        return (
            f"pair {self.pairs}: tuned {_seconds(won)}, baseline {_seconds(base)} "
            f"to the target{speedup}"
        )

    def slower_seeds(self) -> list[tuple[int, float]]:
        """The pairs whose winner reached the target later than the baseline, or not at
        all where the baseline did: (seed, speed-up or its ceiling) each. Under a median
        over 1 they say the speed-up depends on the data order and initial weights."""
        pairs = zip(self.pair_seeds, self.pair_speedups, strict=True)
        return [(seed, speedup) for seed, speedup in pairs if speedup < 1.0]

    def winner_steps(self, target: float) -> int | None:
        """The median number of steps the winner's runs took to the target; None if none
        reached it."""
        steps = [stability.steps_to_target(run.losses, target) for run in self.winner]
        reached = [step + 1 for step in steps if step is not None]
        return int(statistics.median(reached)) if reached else None


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else format_seconds(value)


def same_step(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether ``a`` and ``b`` compute the same step, so run at the same samples/s: equal
    batch, precision, checkpointing, ranks and compile (LR and schedule change no cost)."""
    batch = ("micro_batch_size", "grad_accum_steps")
    return same_kind(a, b) and all(getattr(a, k) == getattr(b, k) for k in batch)


def step_rates(runs: Sequence[Measured], train: TrainConfig) -> list[float]:
    """samples/s of those ``runs`` that computed ``train``'s step (:func:`same_step`), the
    :func:`steady_runs` among them."""
    return [run.samples_per_s for run in steady_runs(r for r in runs if same_step(r.train, train))]


def steady_runs(runs: Iterable[Measured]) -> list[Measured]:
    """The ``runs`` of more than STEADY_STEPS steps; all of them where none is that long.

    A shorter run (the systems phase's measurements) is timed while its fresh process
    warms up, and a millisecond step runs slower for its first few dozen: on mlp_digits (AVX2
    host, ``python scripts/step_profile.py examples/mlp_digits.py --micro 64``) the systems
    phase measured micro 64 at 41-42k samples/s where its trial ran 46.6k, that trial's
    steps 3-30 at 1.55 ms and those after step 60 at 1.32-1.39 ms. Such a measurement
    ranks the systems phase's sizes against each other, all taken alike; it does not
    speak for the step's pace in a run to the target, nor for the samples/s that
    ``autotune run -c`` is held to. Where only short runs of a step exist, they are what
    is known of it."""
    given = list(runs)
    steady = [run for run in given if len(run.losses) > STEADY_STEPS]
    return steady or given


@dataclass(frozen=True)
class Pairing:
    """What each winner/baseline pair runs: the winner for at most ``winner_steps`` and the
    baseline for at most ``baseline_steps``, each stopped at the target and at ``cap_s``.

    Pair k (from 0) trains both its runs on seed ``first_seed + k``: the two runs of a pair
    share their initial weights and batches, as every run of the search does, so the pair
    compares configs; the pairs differ in them, so the speed-up's spread holds the seed's
    share too. The search's pairs start at the seed after its own (:meth:`of`): its trials
    chose the winner on its seed, and a pick that was faster only on that seed's data order
    is found out there, not confirmed by repeating it (a small transformer's pick measured
    1.50x on seed 0, 1.44x on seed 1 and 0.48x on seed 2:
    benchmarks/results/dogfood/)."""

    winner: TrainConfig
    winner_steps: int
    baseline: TrainConfig
    baseline_steps: int
    target: float
    cap_s: float
    first_seed: int = 0

    @classmethod
    def of(cls, winner: Measured, baseline: BaselineRun, search_seed: int) -> Pairing:
        """The search's pairs: a cap of 1.5 x the baseline's run, on the seeds after
        ``search_seed``. The winner's steps are bounded by that cap, at its trial's pace
        with a margin, not by its trial's steps: on another seed it may need more, and a
        run stopped short of the target by a step count would bound its speed-up above
        by more than 1, telling nothing (:attr:`Confirmation.ceilings`)."""
        trial_steps = len(winner.losses)
        cap = baseline.run.elapsed_s[-1] * 1.5
        step_s = winner.elapsed_s[-1] / trial_steps
        in_cap = math.ceil(_STEP_MARGIN * cap / step_s) if step_s > 0 else 0
        steps = max(trial_steps, int(trial_steps * _STEP_MARGIN), in_cap)
        return cls(
            winner.train,
            steps,
            baseline.run.train,
            baseline.steps,
            baseline.target_loss,
            cap,
            first_seed=search_seed + 1,
        )

    def seed(self, pair: int) -> int:
        """The seed of pair ``pair`` (from 0)."""
        return self.first_seed + pair


def run_pairs(
    pairing: Pairing,
    trials: Trialist,
    pairs: int,
    *,
    most: int | None = None,
    time_left: Callable[[], float] = lambda: 0.0,
    earlier_rates: Sequence[float] = (),
    after_pair: Callable[[Confirmation], None] | None = None,
) -> Confirmation:
    """Run winner, baseline, winner, baseline, ...: machine drift hits both alike.

    ``pairs`` always run. Up to ``most`` in all run while the speed-up or the winner's
    samples/s (its runs here and ``earlier_rates``) is unsettled (:func:`settled`), and
    ``time_left()`` seconds hold the slowest pair so far with a margin: a search that
    stopped early spends its unused budget on tighter numbers, not on nothing (3 pairs of
    one config measured 2.23x in one search and 2.79x in the next). ``after_pair`` sees
    the confirmation so far after each pair.
    """
    found = Confirmation(earlier_rates=list(earlier_rates))
    slowest = 0.0
    for pair in range(max(pairs, most or pairs)):
        more = pair < pairs or (not found.settled() and time_left() >= _PAIR_MARGIN * slowest)
        if not more:
            break
        started = time.perf_counter()
        _run_pair(found, pairing, trials)
        slowest = max(slowest, time.perf_counter() - started)
        if after_pair is not None:
            after_pair(found)
    return found


def settled(values: Sequence[float], error: float = SETTLED_ERROR) -> bool:
    """Whether the standard error of the mean log of ``values`` (speed-ups, or samples/s)
    is under ``error`` (at least 3 values: two agree by chance too often)."""
    if len(values) < 3:
        return False
    logs = [math.log(v) for v in values]
    return statistics.stdev(logs) / math.sqrt(len(logs)) <= error


def _peak_memory(winner: TrainConfig, trials: Trialist) -> int | None:
    """The winner's peak memory, from a run of its own that stops after the measured step.

    Not from a pair's run: the profiler that measures a CPU step (and its first start in a
    process) is wall time inside that run, so a pair that measured memory ran slower to the
    target than the rest. In 23 searches' logs (benchmarks/results/searches, before letter
    v) the first pair's tuned run, which did, took a median 1.067x the others' median time
    (scripts/first_pair_bias.py);
    on mlp_digits (AVX2 host, 0.25 s to the target) 1.43x, 1.92x and 5.64x, which put 0.68x
    into a confirmation of 3.52x."""
    result = trials.run(winner, _MEMORY_STEPS, measure_memory=True)
    run = measured(result, winner, None) if ok(result) else None
    return run.peak_memory_bytes if run is not None else None


def _run_pair(found: Confirmation, pairing: Pairing, trials: Trialist) -> None:
    """One winner run and one baseline run (:class:`Pairing`), appended to ``found``; the
    first pair measures the winner's peak memory before it (:func:`_peak_memory`)."""
    if found.pairs == 0:
        found.peak_memory_bytes = _peak_memory(pairing.winner, trials)
    seed = pairing.seed(found.pairs)
    found.pairs += 1
    found.seeds.append(seed)
    run = _paired_run(pairing.winner, pairing.winner_steps, pairing, trials, seed)
    if run is not None:
        found.winner.append(run)
    base = _paired_run(pairing.baseline, pairing.baseline_steps, pairing, trials, seed)
    if base is not None:
        found.baseline.append(base)
    found.latest = (run, base)
    if run and base and base.samples_per_s > 0:
        found.rate_ratios.append(run.samples_per_s / base.samples_per_s)
    if run and base and run.time_to_target_s and base.time_to_target_s is None:
        found.bounds.append(base.elapsed_s[-1] / run.time_to_target_s)
    if run and base and run.time_to_target_s is None and base.time_to_target_s:
        found.ceilings.append(base.time_to_target_s / max(run.elapsed_s[-1], pairing.cap_s))
        found.ceiling_seeds.append(seed)
    if run and base and run.time_to_target_s and base.time_to_target_s:
        found.speedups.append(base.time_to_target_s / run.time_to_target_s)
        found.speedup_seeds.append(seed)
        if base.samples_per_s > 0 and run.samples_per_s > 0:
            samples = base.time_to_target_s * base.samples_per_s
            found.sample_ratios.append(samples / (run.time_to_target_s * run.samples_per_s))


def _paired_run(
    config: TrainConfig, steps: int, pairing: Pairing, trials: Trialist, seed: int
) -> Measured | None:
    """One side of a pair: ``config`` for at most ``steps`` on ``seed``, stopped at the
    pairing's target and cap; None where the run failed."""
    target, cap = pairing.target, pairing.cap_s
    watch = TargetWatch(target, cap)
    result = trials.run(config, steps, watch=watch, time_cap_s=cap, seed=seed)
    return measured(result, config, target) if ok(result) else None


def known_reference(
    candidate: Measured, known: Sequence[Measured], target: float
) -> Measured | None:
    """An fp32 run in ``known`` of exactly ``candidate``'s config but its precision that
    covers the candidate's steps up to the target; None if there is none. The usual case
    is the baseline when the winner is the baseline in bf16: every run shares the seed and
    the data order, so the baseline *is* the winner's fp32 run, and the check costs no run
    (one baseline's length, 20 s on lstm_text, for more trials in a tight budget)."""
    if candidate.train.precision == "32-true":
        return None
    fp32 = candidate.train.model_copy(update={"precision": "32-true"})
    needed = _compared(candidate, target)
    for run in known:
        if run.train == fp32 and len(run.losses) >= needed:
            return run
    return None


def _compared(candidate: Measured, target: float) -> int:
    """The steps of ``candidate`` its fp32 check compares: up to where it reached the
    target, or all where it did not (:func:`autotune.stability.verdict`)."""
    return stability.compared_steps(candidate.losses, target)


class _CoverWatch:
    """Stops an fp32 reference run once it has run the candidate's ``steps`` (the steps
    the check compares) and reached the target, so that when the candidate disagrees the
    reference is a measured fallback: an fp32 curve a few percent behind a bf16 one may
    cross the target only after the candidate's last step (cnn_digits: 6.7% apart, and
    the search ended with no winner). Never later than the runner's step limit."""

    def __init__(self, target: float, steps: int) -> None:
        self.steps = steps
        self.watch = TargetWatch(target, math.inf)  # True once at the target (or not finite)

    @property
    def stop_at(self) -> TargetStop:
        return TargetStop(loss=self.watch.target, min_steps=self.steps)

    def __call__(self, record: StepRecord) -> bool:
        stop = self.watch(record)
        return stop and (len(self.watch.losses) >= self.steps or not math.isfinite(record.loss))


def reference_check(
    winner: Measured, trials: Trialist, target: float, known: Sequence[Measured] = ()
) -> tuple[stability.StabilityVerdict, Measured | None]:
    """For reduced precision: the same config in fp32 must agree over the steps up to
    where ``winner`` reached the target (all its steps where it did not). The fp32 run
    is taken from ``known`` when one matches (:func:`known_reference`), else run.

    Returns the verdict and the fp32 run (None for an fp32 winner, or when it failed).
    """
    if winner.train.precision == "32-true":
        return stability.verdict(winner.losses), None
    reference = known_reference(winner, known, target)
    if reference is None:
        fp32 = winner.train.model_copy(update={"precision": "32-true"})
        watch = _CoverWatch(target, _compared(winner, target))
        result = trials.run(fp32, int(len(winner.losses) * _STEP_MARGIN), watch=watch)
        reference = measured(result, fp32, target) if ok(result) else None
    losses = reference.losses if reference else None
    return stability.verdict(winner.losses, reference=losses, target=target), reference


def stable_winner(
    candidates: list[Measured],
    trials: Trialist,
    target: float,
    say: Callable[[str], None],
    known: Sequence[Measured] = (),
    spare: Callable[[Measured], float] | None = None,
) -> Measured | None:
    """The fastest candidate that passes the stability check (and, where its crossing of
    ``target`` lies within its batch noise, the seed check of :mod:`._reseed`), trying at most
    ``_STABILITY_TRIES`` and, after a candidate fails (a reduced precision disagreeing
    with fp32, or any curve diverging), only candidates in its precision at a lower LR:
    both grow with the LR, the gap to fp32 too
    (cnn_digits, bf16 micro 64 on a cosine schedule: 9.3% off at lr 1.6e-2, 2.9% at
    1.08e-2), and each check costs a run.

    A failure also leaves alternatives (:func:`_alternatives`): its fp32 reference run,
    which only needs to be finite and decreasing (fp32 is the reference), and, at the
    first failure in each precision, the same config at _DERATE x its LR, checked in turn.
    A passing candidate wins unless an alternative reached the target sooner
    (:func:`_sooner`); if none passes, the fastest alternative wins. ``known``: fp32 runs
    already measured (the baseline), reused as references where they match. ``spare``:
    the training seconds the budget has beyond the confirmation of a given candidate; the
    retry and the seed check run only where they fit (None: always). A candidate that fails
    the seed check leaves ``known`` (the baseline it was measured beside) as an alternative.
    None: no candidate, and no alternative."""
    failed_at: dict[str, float] = {}  # precision -> the lowest LR at which it failed
    alternatives: list[Measured] = []
    tries = 0
    for candidate in candidates:
        if tries >= _STABILITY_TRIES:
            break
        lr, precision = candidate.train.optimizer.lr, candidate.train.precision
        if lr >= failed_at.get(precision, math.inf):
            continue
        tries += 1
        verdict, reference = reference_check(candidate, trials, target, known)
        say(f"stability of {describe(candidate.train)}: {'; '.join(verdict.reasons)}")
        if verdict.stable and _not_luck(candidate, trials, target, say, spare):
            return _sooner(candidate, _soonest(alternatives), say)
        if verdict.stable:  # its crossing was luck: the runs it was measured beside stand
            alternatives += [run for run in known if run.time_to_target_s is not None]
            continue
        derate = precision not in failed_at and _fits(candidate, reference, spare, say)
        failed_at[precision] = lr
        alternatives += _alternatives(candidate, reference, derate, trials, target, say)
    fallback = _soonest(alternatives)
    if fallback is not None:
        say(f"falling back to {describe(fallback.train)}: no candidate passed")
    return fallback


def _not_luck(
    candidate: Measured,
    trials: Trialist,
    target: float,
    say: Callable[[str], None],
    spare: Callable[[Measured], float] | None,
) -> bool:
    """False where ``candidate``'s crossing lies within its batch noise and a re-run on
    another seed did not cross again (:func:`._reseed.reseed_check`), said either way."""
    room = None if spare is None else (lambda: spare(candidate))
    found = reseed_check(candidate, trials, target, room)
    if found.why is not None:
        say(f"seed check of {describe(candidate.train)}: {found.why}")
    return found.passed is not False


def _fits(
    failed: Measured,
    reference: Measured | None,
    spare: Callable[[Measured], float] | None,
    say: Callable[[str], None],
) -> bool:
    """Whether ``failed``'s retry at a lower LR and its fp32 run fit in the budget's
    ``spare`` seconds: the search reserves budget for one fp32 check and the confirmation,
    not for these (hf_gpt2's runs take seconds each, not tenths)."""
    if spare is None:
        return True
    needed, left = _retry_s(failed, reference), spare(failed)
    if needed <= left:
        return True
    say(
        f"no retry of {describe(failed.train)} at a lower LR: it and its fp32 run may take "
        f"{needed:.1f} s, and the budget has {max(left, 0.0):.1f} s beyond the confirmation"
    )
    return False


def _retry_s(failed: Measured, reference: Measured | None) -> float:
    """The most training seconds a retry and its fp32 run take. The retry is capped at
    _DERATE_STEPS x the failed run's seconds and steps (:func:`_derated`); its fp32 run at
    _STEP_MARGIN x the retry's steps (:func:`reference_check`), each at the step time of
    ``failed``'s fp32 ``reference`` (the same batch): an fp32 step can take several times a
    bf16 one (tiny_gpt on an AVX512-BF16 CPU: 3.8x), so the retry's own cap does not
    bound it. Where no fp32 run was measured, at ``failed``'s own step time, the only one
    known."""
    steps = _DERATE_STEPS * len(failed.losses)
    fp32 = reference if reference is not None and reference.losses else failed
    return _DERATE_STEPS * _trained_s(failed) + _STEP_MARGIN * steps * _step_s(fp32)


def _trained_s(run: Measured) -> float:
    """``run``'s training clock at its last step (never 0: a cap and a rate divide by it)."""
    return max(run.elapsed_s[-1], 1e-3)


def _step_s(run: Measured) -> float:
    """Seconds per step of ``run`` (its training clock over its steps)."""
    return _trained_s(run) / len(run.losses)


def _alternatives(
    failed: Measured,
    reference: Measured | None,
    derate: bool,
    trials: Trialist,
    target: float,
    say: Callable[[str], None],
) -> list[Measured]:
    """What a ``failed`` candidate leaves to choose from: its fp32 ``reference`` where that
    reached the target and passes on its own, and, if ``derate``, the candidate's config at
    _DERATE x its LR where that reaches the target and passes its own check."""
    found = []
    if (
        reference is not None
        and reference.time_to_target_s is not None
        and stability.verdict(reference.losses).stable
    ):
        found.append(reference)
    if derate:
        lower = _derated(failed, trials, target)
        if lower is not None:
            verdict, _ = reference_check(lower, trials, target)
            reasons = "; ".join(verdict.reasons)
            say(f"stability of {describe(lower.train)} (at a lower LR): {reasons}")
            if verdict.stable:
                found.append(lower)
    return found


def _derated(failed: Measured, trials: Trialist, target: float) -> Measured | None:
    """``failed``'s config at _DERATE x its LR, run to the target (up to _DERATE_STEPS x its
    steps, and as many times its run's seconds); None where it did not get there."""
    optimizer = failed.train.optimizer
    config = failed.train.model_copy(
        update={"optimizer": optimizer.model_copy(update={"lr": optimizer.lr * _DERATE})}
    )
    cap = _DERATE_STEPS * _trained_s(failed)
    steps = _DERATE_STEPS * len(failed.losses)
    result = trials.run(config, steps, watch=TargetWatch(target, cap), time_cap_s=cap)
    run = measured(result, config, target) if ok(result) else None
    return run if run is not None and run.time_to_target_s is not None else None


def _soonest(runs: list[Measured]) -> Measured | None:
    """The run of ``runs`` that reached the target soonest; None when there is none."""
    return min(runs, key=lambda r: r.time_to_target_s or math.inf, default=None)


def _sooner(candidate: Measured, other: Measured | None, say: Callable[[str], None]) -> Measured:
    """``candidate`` (it passed the check), or ``other``, an alternative a faster candidate
    left when it failed, where that reached the target sooner: cnn_digits (AVX512-BF16
    CPU), bf16 micro 64 at lr 1.6e-2 was 5.46% from fp32 (tolerance 5%), and the search
    took the next candidate, micro 16 at 0.55 s (2.47x over the baseline); the search
    before had picked the same bf16 config, at 4.36x, and the grid's best is it at 8e-3."""
    ours = candidate.time_to_target_s
    theirs = None if other is None else other.time_to_target_s
    if other is None or ours is None or theirs is None or theirs >= ours:
        return candidate
    say(
        f"taking {describe(other.train)} instead: it reached the target in "
        f"{format_seconds(theirs)}, before this candidate's {format_seconds(ours)}"
    )
    return other


def spread_of(values: Sequence[float]) -> Spread | None:
    """The median and range of ``values``; None where there are none."""
    if not values:
        return None
    return Spread(
        median=statistics.median(values), low=min(values), high=max(values), n=len(values)
    )


def tuned_config(
    found: Confirmation,
    baseline: BaselineRun,
    report: ProbeReport,
    provenance: Provenance,
    warnings: Sequence[str] = (),
    task_sha256: str | None = None,
) -> TunedConfig:
    """The tuned config, with the confirmation's medians and spreads as evidence."""
    winner_cfg: TrainConfig = found.winner[0].train
    tt_w = [r.time_to_target_s for r in found.winner if r.time_to_target_s is not None]
    tt_b = [r.time_to_target_s for r in found.baseline if r.time_to_target_s is not None]
    rate_b = [r.samples_per_s for r in found.baseline]
    speedups, rate_ratios = found.pair_speedups, found.rate_ratios
    # Every fresh process of the winner's step (its :func:`steady_runs`), not the
    # confirmation's three alone: this machine's speed drifts between two levels ~20% apart
    # over minutes (tiny_gpt at batch 4: ~120 or ~143 samples/s), and runs spread over the
    # whole search sample both.
    measured_section = _evidence(
        report,
        winner_cfg,
        found.rates,
        peak_memory_bytes=found.peak_memory_bytes,
        target_loss=baseline.target_loss,
        time_to_target_s=statistics.median(tt_w) if tt_w else None,
        time_to_target_spread=spread_of(tt_w),
        baseline=BaselineMeasured(
            train=baseline.run.train,
            throughput_samples_per_s=statistics.median(rate_b),
            time_to_target_s=statistics.median(tt_b) if tt_b else None,
        ),
        speedup_vs_baseline=statistics.median(speedups) if speedups else None,
        speedup_spread=spread_of(speedups),
        speedup_at_least=found.speedup_bound(),
        throughput_speedup=spread_of(rate_ratios),
        confirmation_seeds=found.seeds,
        warnings=list(warnings),
        task_sha256=task_sha256,
    )
    return TunedConfig(
        task=report.task_file,
        train=winner_cfg,
        measured=measured_section,
        provenance=provenance,
    )


def baseline_kept(
    found: Confirmation,
    baseline: BaselineRun,
    report: ProbeReport,
    provenance: Provenance,
    warnings: Sequence[str] = (),
    task_sha256: str | None = None,
) -> TunedConfig:
    """The tuned config when the confirmation :meth:`~Confirmation.lost`: the baseline's
    own config, its runs (the one that set the target and the confirmation's) as the
    evidence, and the rejected pick with its measured speed-up beside it, not applied."""
    train = baseline.run.train
    runs = [baseline.run, *found.baseline]
    rates = [run.samples_per_s for run in runs]
    times = [run.time_to_target_s for run in runs if run.time_to_target_s is not None]
    rejected = Rejected(
        train=found.winner[0].train if found.winner else train,
        trial=provenance.trial,
        # a pick never at the target has no speed-up to show, only ceilings: None says so
        speedup=spread_of(found.pair_speedups) if found.speedups else None,
    )
    time_to_target = statistics.median(times) if times else None
    measured_section = _evidence(
        report,
        train,
        rates,
        peak_memory_bytes=baseline.run.peak_memory_bytes,
        target_loss=baseline.target_loss,
        time_to_target_s=time_to_target,
        time_to_target_spread=spread_of(times),
        baseline=BaselineMeasured(
            train=train,
            throughput_samples_per_s=statistics.median(rates),
            time_to_target_s=time_to_target,
        ),
        rejected=rejected,
        confirmation_seeds=found.seeds,
        warnings=list(warnings),
        task_sha256=task_sha256,
    )
    where = provenance.model_copy(update={"trial": None})
    return TunedConfig(
        task=report.task_file, train=train, measured=measured_section, provenance=where
    )


def _evidence(
    report: ProbeReport, train: TrainConfig, rates: list[float], **fields: Any
) -> MeasuredSection:
    """The measured section of ``train`` run at ``rates`` samples/s on the probed device:
    their median and spread, the MFU at the median, the probe's gradient noise scale and
    ``train``'s digest (so an edited train section is not held to them); ``fields`` the rest."""
    throughput = statistics.median(rates)
    achieved = report.model.flops_per_sample * throughput
    return MeasuredSection(
        device=report.hardware.device,
        train_digest=train_digest(train),
        throughput_samples_per_s=throughput,
        throughput_spread=spread_of(rates),
        mfu=hardware.mfu(achieved, report.hardware, train.precision),
        gradient_noise_scale=report.noise_scale.b_simple,
        unused_parameters=report.model.unused_params,
        find_unused_parameters=report.model.find_unused_parameters,
        **fields,
    )


def provenance(
    storage: str, study_name: str, trial: int | None, report: ProbeReport, seed: int
) -> Provenance:
    device = report.hardware.device
    return Provenance(
        autotune_version=__version__,
        torch_version=torch.__version__,
        study=storage,
        study_name=study_name,
        trial=trial,
        seed=seed,
        hardware=f"{device.count}x {device.kind} {device.name}",
        glibc_tunables=os.environ.get("GLIBC_TUNABLES"),
    )
