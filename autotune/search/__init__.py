"""``autotune search``: the fastest *stable* config, found by measurement and proven.

Outline (DESIGN.md, "Search, in outline"): probe -> baseline (sets the target) ->
systems phase (samples/s; predicted from the probe, pruned by its memory model, the best
few measured) -> convergence phase (time to target; TPE + median pruner) -> stability
check against fp32 -> confirmation (winner and baseline interleaved) -> ``tuned.yaml``.
Every trial runs in a supervised subprocess (:mod:`autotune.trial`) and is stored in the
Optuna storage before the next starts; running the same command again resumes.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna

from autotune import profiler, stability
from autotune import space as spaces
from autotune._host import CpuWatch
from autotune._units import format_seconds, format_seeds
from autotune.config import Provenance, TrainConfig, TunedConfig, save_tuned_config
from autotune.hardware import HardwareInfo, cached_hardware
from autotune.profiler import ProbeReport
from autotune.search._baseline import (
    PAIR_BASELINES,
    baseline_seconds,
    noisy_target,
    run_baseline,
    target_text,
    task_horizon_s,
    unbent_baseline,
    unstable_baseline,
)
from autotune.search._confirm import (
    Confirmation,
    Pairing,
    baseline_kept,
    provenance,
    run_pairs,
    stable_winner,
    step_rates,
    tuned_config,
)
from autotune.search._convergence import (
    ConvergencePlan,
    make_pruner,
    make_sampler,
    plateaued,
    recorded_runs,
    run_convergence,
    runoff_entries,
    same_config,
    stored_runs,
)
from autotune.search._identity import Resolved, StudyIdentity, resolve_study
from autotune.search._measure import Trialist
from autotune.search._progress import (
    Standing,
    TopConfig,
    describe,
    standing,
    top_configs,
    trial_line,
)
from autotune.search._recheck import CHECK_TOLERANCE, Recheck, Remeasured, recheck
from autotune.search._runoff import Entry, runoff
from autotune.search._study import NOT_RUN, SearchInterrupted, Studies, redact, study_summary
from autotune.search._systems import Prediction, measure_systems, nothing_fits, predict_systems
from autotune.search._types import (
    CONFIRM_MAX_PAIRS,
    CONFIRM_PAIRS,
    PATIENCE,
    REAL_GAIN,
    REAL_GAIN_FLOOR_S,
    RUNOFF_ROUNDS,
    BaselineRun,
    Budget,
    Events,
    Measured,
    SearchError,
    SearchOptions,
)
from autotune.task import Task, load_task

__all__ = [
    "CHECK_TOLERANCE",
    "CONFIRM_MAX_PAIRS",
    "CONFIRM_PAIRS",
    "PATIENCE",
    "RUNOFF_ROUNDS",
    "Recheck",
    "Remeasured",
    "Resolved",
    "SearchError",
    "SearchInterrupted",
    "SearchOptions",
    "SearchOutcome",
    "Standing",
    "StudyIdentity",
    "TopConfig",
    "baseline_seconds",
    "bounded_speedup",
    "describe",
    "early_target",
    "noisy_target",
    "recheck",
    "redact",
    "resolve_study",
    "run_search",
    "seed_dependent",
    "study_summary",
    "target_text",
    "task_horizon_s",
    "unbent_baseline",
    "unstable_baseline",
]

# A winner at the target within this many steps: the target sits on the loss's first
# drop, where time to it measures the first steps, not training.
_FEW_TARGET_STEPS = 5


@dataclass(frozen=True)
class SearchOutcome:
    tuned: TunedConfig
    removals: list[spaces.Removal]
    studies: Studies
    top: list[TopConfig]
    # wall seconds per phase (probe, baseline, systems, trials, runoff, stability, confirmation):
    # where the budget went; a phase a resume read back from the study costs ~0
    phases: dict[str, float]


Progress = Callable[[Standing], None]


def run_search(
    options: SearchOptions, note: Events | None = None, progress: Progress | None = None
) -> SearchOutcome:
    """Run (or resume) the search and write ``options.output``; see the module docstring.

    ``note`` receives one line per event (phase, trial outcome); ``progress`` the standing
    after each convergence trial, for a live display.
    """
    resolved = resolve_study(options)
    say = note or (lambda _: None)
    if resolved.note is not None:
        say(resolved.note)
    options = resolved.options
    with (
        _workdir(options) as workdir,
        Trialist(Path(options.task_path), workdir, options.seed) as trials,
    ):
        hardware = cached_hardware()
        if hardware is not None:  # no peaks to time: its imports overlap ours
            trials.launcher.prepare()
        search = _Search(options, say, progress or (lambda _: None), resolved.identity.task_sha256)
        search.studies.identify(resolved.identity.model_dump_json())
        setup = search.setup(trials, hardware)
        plan = search.plan(setup, trials)
        search.converge(plan, trials)
        tuned = search.finish(setup, plan, trials)
        top = search.top(plan, tuned)
    return SearchOutcome(tuned, setup.removals, search.studies, top, dict(search.phases))


@dataclass(frozen=True)
class _Setup:
    """What the probe, the baseline and the systems phase established."""

    report: ProbeReport
    space: spaces.SearchSpace
    removals: list[spaces.Removal]
    base: TrainConfig
    baseline: BaselineRun
    systems: list[Measured]
    dataset_size: int | None  # None: an IterableDataset


class _Search:
    """The phases of one search, sharing its options, studies, budget and event sinks."""

    def __init__(
        self, options: SearchOptions, say: Events, show: Progress, task_sha256: str | None = None
    ) -> None:
        self.options, self.say, self.show = options, say, show
        self.task_sha256 = task_sha256  # the task file's, recorded beside the numbers
        self.budget = Budget(options.budget_s)
        self.task = load_task(options.task_path)
        self.space = spaces.load_space(options.space)  # a bad file fails before any work
        self.name = options.study_name or Path(options.task_path).stem
        sampler, pruner = make_sampler(options.seed), make_pruner()
        self.studies = Studies(options.storage, self.name, sampler, pruner)
        self.convergence = self.studies.convergence
        self.phases: dict[str, float] = {}
        self.warnings: list[str] = []  # what weakens the numbers: told now, kept in tuned.yaml
        self.watch = CpuWatch()  # other processes on these cores: the timings' hidden cause
        self.told_contention = False

    def _warn_if(self, text: str | None) -> None:
        if text is not None:
            self.warnings.append(text)
            self.say(f"warning: {text}")

    def _contention(self, over: str) -> str | None:
        """A warning, once per search, when other processes kept enough of this machine's
        cores busy since the search began to slow and scatter its timings."""
        share = None if self.told_contention else self.watch.share()
        if share is None or not share.busy:
            return None
        self.told_contention = True
        return (
            f"{share.sentence()} ({over}), so the search's timings are slower and noisier than "
            "this machine's own, and its pick and speed-up may not hold on it idle; stop the "
            "other work and search again, or `autotune check` the result then."
        )

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Adds the wall time of the ``with`` body to ``self.phases[name]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.phases[name] = self.phases.get(name, 0.0) + spent

    def setup(self, trials: Trialist, hardware: HardwareInfo | None) -> _Setup:
        """Probe, restrict the space, run the baseline (the target) and the systems phase;
        one worker at a time, and once per study (resumes read them back). ``hardware``:
        the cached peaks, or None for the probe to measure them."""
        options, say = self.options, self.say
        self.studies.hold("setup", say)
        say("probing the hardware and the model")
        with self._phase("probe"):
            report = self.studies.cached(
                "probe",
                ProbeReport,
                lambda: profiler.probe(
                    self.task,
                    memory_limit_bytes=options.memory_limit_bytes,
                    hardware=hardware,
                    neighbor=trials.launcher,  # the trials' fork server starts beside it
                ),
            )
        facts = _facts(report, self.task)
        space, removals = spaces.restrict(self.space, facts)
        for removal in removals:
            say(str(removal))
        base = self.task.baseline_config()
        predicted = predict_systems(space, report, base, facts.dataset_size)
        if not predicted.fitting:  # before the baseline: nothing it would set a target for fits
            raise SearchError(nothing_fits(predicted, report))
        say("running the baseline")
        with self._phase("baseline"):
            baseline = self.studies.cached(
                "baseline",
                BaselineRun,
                lambda: run_baseline(self.task, base, report, options, trials, say),
            )
        say(f"target loss {baseline.target_loss:.4f} ({baseline.target_from})")
        self._warn_if(self._contention("the probe and the baseline"))  # before what it explains
        if baseline.target_from not in ("user", "task"):  # the target is off its curve
            self._warn_if(unbent_baseline(baseline))
        else:  # a curve that sets no target may still fail to train
            self._warn_if(unstable_baseline(baseline))
            self._warn_if(noisy_target(baseline.run, baseline.target_loss))
        with self._phase("systems"):
            systems = _systems(space, predicted, base, self.studies, trials, options, say)
        self.studies.release("setup")
        return _Setup(report, space, removals, base, baseline, systems, facts.dataset_size)

    def plan(self, setup: _Setup, trials: Trialist) -> ConvergencePlan:
        """What every convergence trial shares, and what the confirmation holds back."""
        options = self.options
        plan = ConvergencePlan(
            setup.space,
            setup.base,
            setup.systems,
            setup.baseline,
            options.trials,
            _reserve(setup.baseline, options, trials.startup_s),
            options.confirm_pairs,
            options.patience,
            trials.startup_s,
            options.runoff_rounds,
            setup.report.noise_scale.b_simple,
            setup.dataset_size,
        )
        ruled_out = plan.no_smaller_batch()
        if ruled_out is not None:
            self.say(ruled_out)
        return plan

    def converge(self, plan: ConvergencePlan, trials: Trialist) -> None:
        """The convergence phase, reporting the standing after every trial."""
        options = self.options

        def now() -> Standing:
            reserve = plan.kept_s(self.convergence)
            return standing(self.convergence, options.trials, self.budget.left_s, reserve)

        def on_trial(trial: optuna.trial.FrozenTrial) -> None:
            current = now()
            self.say(f"{trial_line(trial)} ({current.line()})")
            self.show(current)

        self.show(now())
        with self._phase("trials"):
            run_convergence(plan, self.studies, trials, self.budget, on_trial)
        if (
            options.trials is None
            and options.patience
            and plateaued(self.convergence, options.patience)
        ):
            self.say(
                f"stopped early: the last {options.patience} trials did not beat the best time "
                f"to target by {REAL_GAIN:.0%} and {REAL_GAIN_FLOOR_S} s "
                f"({self.budget.left_s:.0f} s of the budget left)"
            )

    def finish(self, setup: _Setup, plan: ConvergencePlan, trials: Trialist) -> TunedConfig:
        """The stable winner, confirmed against the baseline, written to the output; once
        per study: a worker that finds it confirmed (by another, or before a kill) reuses it."""
        key, tuned = self.studies.confirmation(TunedConfig, self.say)  # waits for other workers
        if tuned is None:
            tuned = self._confirmed(setup, plan, trials)
            self.studies.store(key, tuned)
        save_tuned_config(tuned, self.options.output)
        self.studies.release(key)
        return tuned

    def top(self, plan: ConvergencePlan, tuned: TunedConfig) -> list[TopConfig]:
        """The final table's rows: the trials as the search ranks them at its end (each at
        its step's pace pooled over every run), ``tuned``'s own trial marked."""
        study = self.convergence
        entries = runoff_entries(study, plan.pace(study), plan.baseline.target_loss)
        picked = tuned.provenance.trial if tuned.provenance else None
        return top_configs(study, {e.trial: e.times[0] for e in entries}, picked)

    def _confirmed(self, setup: _Setup, plan: ConvergencePlan, trials: Trialist) -> TunedConfig:
        entries = self._ranked(trials, plan)
        candidates = [entry.run for entry in entries]
        if not candidates:
            raise SearchError(missed_target(self.convergence, setup.baseline))
        with self._phase("stability"):
            spare = self._spare(plan, trials)
            winner = _stable_winner(candidates, trials, setup.baseline, self.say, spare)
        found = self._confirm(setup, winner, trials)
        chosen = next((e.trial for e in entries if e.run is winner), None)  # None: fp32 fallback
        where = provenance(
            redact(self.options.storage), self.name, chosen, setup.report, self.options.seed
        )
        return self._written(found, winner, setup, where)

    def _spare(self, plan: ConvergencePlan, trials: Trialist) -> Callable[[Measured], float]:
        """Training seconds the budget has for two more runs (a failed candidate's retry
        and its fp32 run) beyond the confirmation's reserve for that candidate."""

        def spare(candidate: Measured) -> float:
            kept = plan.reserve_now(candidate.time_to_target_s)
            return self.budget.left_s - kept - 2 * trials.startup_s

        return spare

    def _confirm(self, setup: _Setup, winner: Measured, trials: Trialist) -> Confirmation:
        """Winner/baseline pairs, interleaved (:func:`._confirm.run_pairs`), each said."""
        options = self.options
        self.say(f"confirming: {options.confirm_pairs} interleaved winner/baseline pairs")
        earlier = [*setup.systems, *recorded_runs(self.convergence)]
        with self._phase("confirmation"):
            found = run_pairs(
                Pairing.of(winner, setup.baseline, options.seed),
                trials,
                options.confirm_pairs,
                most=options.confirm_max_pairs,
                time_left=lambda: self.budget.left_s,
                earlier_rates=step_rates(earlier, winner.train),
                after_pair=lambda done: self.say(f"  {done.last_pair()}"),
            )
        if found.pairs > options.confirm_pairs:
            self.say(
                f"confirmed with {found.pairs} pairs: after {options.confirm_pairs} the "
                "speed-up's or the throughput's spread was still wide, and the budget had "
                "room for more"
            )
        if not found.winner or not found.baseline:
            raise SearchError("the confirmation runs failed; see the study's trials for why.")
        return found

    def _written(
        self, found: Confirmation, winner: Measured, setup: _Setup, where: Provenance
    ) -> TunedConfig:
        """What tuned.yaml says of the confirmation: the winner, or the baseline where the
        pairs measured the winner slower (:meth:`~._confirm.Confirmation.lost`), with the
        warnings the search gathered."""
        baseline, report = setup.baseline, setup.report
        self._warn_if(self._contention("the whole search"))
        self._warn_if(early_target(found, baseline, self.task.baseline_steps()))
        self._warn_if(bounded_speedup(found, baseline))
        self._warn_if(seed_dependent(found))
        if same_config(winner.train, baseline.run.train):
            self._warn_if(_NOTHING_FASTER)
        elif found.lost():
            self._warn_if(_lost_text(found, winner, baseline.run))
            return baseline_kept(found, baseline, report, where, self.warnings, self.task_sha256)
        return tuned_config(found, baseline, report, where, self.warnings, self.task_sha256)

    def _ranked(self, trials: Trialist, plan: ConvergencePlan) -> list[Entry]:
        """The trials that reached the target, fastest first, after the runoff among the
        close ones (:mod:`._runoff`), on the budget the confirmation's reserve leaves."""
        pace = plan.pace(self.convergence)  # the order of the trials; the runoff re-times
        entries = runoff_entries(self.convergence, pace, plan.baseline.target_loss)
        held = plan.held_back_s(self.convergence)
        with self._phase("runoff"):
            return runoff(
                entries,
                plan.baseline.target_loss,
                trials,
                self.options.runoff_rounds,
                room=lambda: self.budget.left_s - held,
                say=self.say,
            )


@contextlib.contextmanager
def _workdir(options: SearchOptions) -> Iterator[Path]:
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
        yield options.workdir
        return
    path = Path(tempfile.mkdtemp(prefix="autotune-search-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _facts(report: ProbeReport, task: Task) -> spaces.Facts:
    precisions = {}
    for variant in report.variants:
        if variant.activation_checkpointing == "none" or variant.precision not in precisions:
            precisions[variant.precision] = spaces.Viability(
                viable=variant.viable, reason=variant.reason
            )
    dataset = task.build_dataset()
    size = len(dataset) if hasattr(dataset, "__len__") else None
    return spaces.Facts(
        device_kind=report.hardware.device.kind,
        device_count=report.hardware.device.count,
        cpu_cores=report.hardware.cpu_cores,
        precisions=precisions,
        checkpoint_blocks=bool(report.model.blocks),
        dataset_size=size,
    )


def _systems(
    space: spaces.SearchSpace,
    predicted: Prediction,
    base: TrainConfig,
    studies: Studies,
    trials: Trialist,
    options: SearchOptions,
    say: Events,
) -> list[Measured]:
    candidates = predicted.fitting
    fit = "1 config fits" if len(candidates) == 1 else f"{len(candidates)} configs fit"
    said = f"systems: {fit}, {len(predicted.over_memory)} pruned by the memory model"
    short = len(predicted.short_of_data)
    say(f"{said}, {short} by the dataset's size" if short else said)
    runs = measure_systems(
        candidates,
        predicted.pruned,
        studies.systems,
        trials,
        options.systems_measured,
        spaces.systems_grid(space),
        anchor=base.micro_batch_size,
    )
    if not runs:
        raise SearchError(
            "no systems config could be measured; see `autotune probe` and the study's trials."
        )
    for run in runs:
        say(f"systems: {describe(run.train)} -> {run.samples_per_s:,.1f} samples/s")
    return runs


def _reserve(baseline: BaselineRun, options: SearchOptions, startup_s: float) -> float:
    per_pair = baseline.run.elapsed_s[-1] * PAIR_BASELINES + 2 * startup_s
    return options.confirm_pairs * per_pair + baseline.run.elapsed_s[-1] + startup_s


def missed_target(study: optuna.Study, baseline: BaselineRun) -> str:
    """Why there is no winner when no trial reached the target, with how close the closest
    run came: the lowest target it would have reached (:func:`stability.lowest_reached`).
    Failed trials (unstable, crashed) are no guide to what is reachable, and a baseline
    that reached the target (the one it set) says nothing about a lower one."""
    target = baseline.target_loss
    unrun = _all_unrun(study)
    if unrun is not None:
        return unrun
    runs = [
        (f"trial {t.number}", run)
        for t, run in stored_runs(study)
        if t.state != optuna.trial.TrialState.FAIL
    ]
    runs.append(("the baseline", baseline.run))
    reached = [(stability.lowest_reached(run.losses), who, run) for who, run in runs]
    lows = [(low, who, run) for low, who, run in reached if low is not None and low > target]
    text = f"no trial reached the target loss {target:.4g}"
    if not lows:
        return f"{text}; give a larger --budget or a higher --target-loss."
    low, who, run = min(lows, key=lambda entry: entry[0])
    return (
        f"{text}; the closest run, {who} ({describe(run.train)}), would have reached "
        f"{low:.4g} (its smoothed loss's lowest point). Give a larger --budget, or a "
        f"--target-loss of {low:.4g} or more."
    )


def _all_unrun(study: optuna.Study) -> str | None:
    """Why no trial ran, where every finished one was pruned unrun (:data:`NOT_RUN`: its
    step takes more than an epoch); else None."""
    finished = [t for t in study.trials if t.state.is_finished()]
    if not finished or not all(t.user_attrs.get(NOT_RUN) for t in finished):
        return None
    first = str(finished[0].user_attrs.get("pruned_by", ""))
    why = first.removeprefix("not run (").removesuffix(")")
    return (
        f"no trial could run: each one's step took more than an epoch (trial "
        f"{finished[0].number}: {why}). Give a --space with smaller grad_accum_steps (or "
        "micro_batch_size) values, or a larger dataset."
    )


def early_target(found: Confirmation, baseline: BaselineRun, task_steps: int | None) -> str | None:
    """A warning when the confirmed winner reaches the baseline's target within its first
    few steps, with the fix for where that target came from (``task_steps``: the Task's
    baseline steps, if it gives them); None when it takes more."""
    target = baseline.target_loss
    steps = found.winner_steps(target)
    if steps is None or steps > _FEW_TARGET_STEPS:
        return None
    plural = "s" if steps > 1 else ""
    return (
        f"the winner reaches the target loss {target:.4f} in {steps} step{plural}: that near "
        f"the start, time to target measures the first steps, not training. "
        f"{_later_target(baseline, task_steps)}"
    )


def bounded_speedup(found: Confirmation, baseline: BaselineRun) -> str | None:
    """A warning when the baseline reached the target in no confirmation pair, so only a
    lower bound on the speed-up is known, with a target it does reach; None otherwise."""
    bound = found.speedup_bound()
    if bound is None:
        return None
    target, runs = baseline.target_loss, len(found.baseline)
    longest = max(run.elapsed_s[-1] for run in found.baseline)
    lowest = stability.lowest_reached(baseline.run.losses)
    reaches = f" (its smoothed loss got to {lowest:.4g})" if lowest is not None else ""
    task = ", or raise Task(target_loss=...)" if baseline.target_from == "task" else ""
    return (
        f"the baseline reached the target loss {target:.4g} in none of its {runs} "
        f"confirmation runs (up to {format_seconds(longest)} each), so the time-to-target "
        f"speed-up is only bounded: at least {bound.median:.2f}x. For a "
        f"measured one, give a --target-loss the baseline reaches{reaches}{task}."
    )


def seed_dependent(found: Confirmation) -> str | None:
    """A warning when the confirmation measured a speed-up over 1 but some pair, on its own
    seed, reached the target later than the baseline: how much faster the pick is depends
    on the initial weights and data order. None where no pair was slower, or the median
    itself is under 1 (then the baseline is kept: :meth:`Confirmation.lost`)."""
    slower = found.slower_seeds()
    if not slower or found.lost():
        return None
    seeds = [seed for seed, _ in slower]
    worst = min(speedup for _, speedup in slower)
    median = statistics.median(found.pair_speedups)
    after = found.seeds[-1] + 1
    missed = " or not at all" if found.ceilings else ""
    return (
        f"on {format_seeds(seeds)} the tuned config reached the target later than the "
        f"baseline{missed} (down to {worst:.2f}x), against {median:.2f}x over the "
        f"{len(found.pair_speedups)} pairs on {format_seeds(sorted(found.pair_seeds))}: its "
        f"speed-up depends on the initial weights and data order. Check more seeds before "
        f"relying on it: `autotune check tuned.yaml --seed {after} --pairs 5`."
    )


def _later_target(baseline: BaselineRun, task_steps: int | None) -> str:
    """How to move a target that a winner reaches in its first steps further on."""
    if baseline.target_from == "user":
        return "Give a lower --target-loss."
    if baseline.target_from == "task":
        return "Give a lower --target-loss, or lower Task(target_loss=...)."
    if task_steps is not None and baseline.steps >= task_steps:  # it ran all it was given
        return (
            f"Give a lower --target-loss, or more than the {task_steps} Task.baseline steps "
            f"for a longer baseline."
        )
    return "Give a lower --target-loss, or a larger --budget for a longer baseline."


_NOTHING_FASTER = (
    "no config the search ran reached the target faster than the baseline's own and passed "
    "the stability and seed checks, so tuned.yaml is the baseline's config, and its "
    "speed-up is the noise between runs of one config. Give a larger --budget for more "
    "trials, or a --space with other values."
)


def _lost_text(found: Confirmation, winner: Measured, baseline: Measured) -> str:
    """What the confirmation measured of a winner no faster than the baseline, and why:
    its own trial already slower than the baseline's run (nothing in the space beat it),
    or else luck or the machine."""
    if found.pair_speedups:
        median, both = statistics.median(found.pair_speedups), len(found.pair_speedups)
        missed = len(found.ceilings)
        never = f", {missed} of them with the pick never at it" if missed else ""
        measured_as = (
            f"{median:.2f}x the baseline's speed to the target in the {both} of "
            f"{found.pairs} interleaved confirmation pairs where the baseline reached "
            f"it{never}"
        )
    else:
        measured_as = (
            f"never at the target in {found.pairs} interleaved confirmation pairs where "
            f"the baseline got there"
        )
    return (
        f"the search's pick ({describe(winner.train)}) measured {measured_as}, so "
        f"tuned.yaml keeps the baseline's config and records the pick under "
        f"measured.rejected. {_why_lost(winner, baseline, found)}"
    )


def _why_lost(winner: Measured, baseline: Measured, found: Confirmation) -> str:
    """Nothing in the space beat the baseline where the pick's own run took longer to the
    target than the baseline's (a --space without the baseline's setup: a world-2 space
    on a task whose baseline was faster); the seed where the pick kept its samples/s edge
    in the pairs but needed more samples to the target there; else luck or the machine."""
    mine, theirs = winner.time_to_target_s, baseline.time_to_target_s
    if mine is not None and theirs is not None and mine > theirs:
        return (
            f"No config the search ran beat the baseline: the pick's own run took "
            f"{format_seconds(mine)} to the target, the baseline's {format_seconds(theirs)}; "
            "give a --space with other values (the baseline's batch and world size?) or a "
            "larger --budget."
        )
    seed_text = _lost_on_seeds(found)
    if seed_text is not None:
        return seed_text
    return (
        "Its trials were lucky runs or this machine changed speed; run the search again on "
        "a quiet machine."
    )


def _lost_on_seeds(found: Confirmation) -> str | None:
    """Why a pick lost where its samples/s edge held in the pairs and its samples to the
    target did not: the pairs train on seeds the search's trials did not; None otherwise."""
    if not found.sample_ratios or not found.rate_ratios:
        return None
    samples, rate = statistics.median(found.sample_ratios), statistics.median(found.rate_ratios)
    if samples >= 1.0 or rate < 1.0:
        return None
    return (
        f"It kept its samples/s edge in the pairs ({rate:.2f}x the baseline's), but on "
        f"their {format_seeds(found.seeds)} it needed more samples to the target than the "
        f"baseline ({1 / samples:.2f}x as many): it won the search on the search's own seed "
        "by that seed's initial weights and data order, not by its settings."
    )


def _stable_winner(
    candidates: list[Measured],
    trials: Trialist,
    baseline: BaselineRun,
    say: Events,
    spare: Callable[[Measured], float],
) -> Measured:
    winner = stable_winner(candidates, trials, baseline.target_loss, say, [baseline.run], spare)
    if winner is None:
        raise SearchError(
            "no candidate agreed with its fp32 run; see the stability notes above, or "
            "restrict --space to precision [32-true]."
        )
    return winner
