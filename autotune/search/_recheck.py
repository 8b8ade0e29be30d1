"""Re-measuring a tuned.yaml here and now: does its speed-up over the baseline still hold?

A tuned.yaml is evidence from one machine at one time. Its absolute samples/s moves with the
machine (a 2-core VM here ran the same baseline config at 6.3k-14.5k samples/s in nine
fresh processes minutes apart), so a tuned config is judged the way the search
confirmed it: interleaved pairs of it and the baseline to the recorded target loss, whose
*ratios* are immune to the machine as a whole getting faster or slower. The absolute numbers
are re-measured too, and the baseline's own change says how much of theirs is the machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch

from autotune import __version__
from autotune._units import format_seeds
from autotune.config import EDITED, OTHER_TASK, Spread, TrainConfig, TunedConfig
from autotune.config import Measured as MeasuredSection
from autotune.errors import ConfigError
from autotune.explain import sample_ratio as recorded_sample_ratio
from autotune.search._confirm import Confirmation, Pairing, run_pairs, spread_of
from autotune.search._measure import Trialist

__all__ = [
    "CHECK_TOLERANCE",
    "DEFAULT_SEED",
    "Recheck",
    "Remeasured",
    "pairing_of",
    "recheck",
    "recorded_seeds",
]

DEFAULT_SEED = 0  # `autotune search --seed`'s default, for files that do not record theirs
# Issue 5's bound on re-measured throughput; the same config in fresh processes varies
# 6-25% on a 2-core CPU, so a wider gap is a change, not noise.
CHECK_TOLERANCE = 0.10
# Each run's time cap and step bound, as a multiple of its recorded time to the target: a
# machine 3x slower than the search's is another machine, and its run would say so anyway.
_CAP_FACTOR = 3.0


@dataclass(frozen=True)
class Remeasured:
    """One number tuned.yaml records, beside its re-measured median and range."""

    what: str
    unit: Literal["x", "samples/s", "bytes"]
    recorded: float | None
    now: Spread | None

    @property
    def ratio(self) -> float | None:
        """Re-measured median / recorded; None where either is missing."""
        if self.recorded is None or self.now is None or self.recorded <= 0:
            return None
        return self.now.median / self.recorded

    def within(self, tolerance: float = CHECK_TOLERANCE) -> bool | None:
        """Whether the ratio is within ``tolerance`` of 1; None where there is none."""
        ratio = self.ratio
        return None if ratio is None else abs(ratio - 1.0) <= tolerance


@dataclass(frozen=True)
class Recheck:
    """The pairs run now, and what they say of the tuned.yaml's claims."""

    tuned: TunedConfig
    found: Confirmation  # its ``seeds``: those the pairs ran on now

    def __post_init__(self) -> None:
        if self.tuned.measured is None:  # pairing_of refuses such a file before any run
            raise ValueError("a recheck needs a tuned config with its measured evidence")

    @property
    def measured(self) -> MeasuredSection:
        """tuned.yaml's evidence (present: see ``__post_init__``)."""
        return cast(MeasuredSection, self.tuned.measured)

    @property
    def speedup(self) -> Remeasured:
        """Time-to-target speed-up over the baseline, per pair: the claim."""
        claimed = self.measured.speedup_vs_baseline
        now = spread_of(self.found.pair_speedups)
        return Remeasured("time-to-target speed-up", "x", claimed, now)

    @property
    def throughput_speedup(self) -> Remeasured:
        claimed = self.measured.throughput_speedup
        recorded = claimed.median if claimed else None
        return Remeasured("throughput speed-up", "x", recorded, spread_of(self.found.rate_ratios))

    @property
    def sample_ratio(self) -> Remeasured:
        """The baseline's samples to the target over the tuned config's, per pair: the
        speed-up's other factor (:mod:`autotune.explain`)."""
        recorded = recorded_sample_ratio(self.measured)
        now = spread_of(self.found.sample_ratios)
        return Remeasured("fewer samples to target", "x", recorded, now)

    @property
    def samples_per_s(self) -> Remeasured:
        recorded = self.measured.throughput_samples_per_s
        rates = [run.samples_per_s for run in self.found.winner]
        return Remeasured("tuned", "samples/s", recorded, spread_of(rates))

    @property
    def baseline_samples_per_s(self) -> Remeasured:
        """The machine's own change: the baseline is the same config then and now."""
        base = self.measured.baseline
        recorded = base.throughput_samples_per_s if base else None
        rates = [run.samples_per_s for run in self.found.baseline]
        return Remeasured("baseline", "samples/s", recorded, spread_of(rates))

    @property
    def peak_memory(self) -> Remeasured:
        recorded = self.measured.peak_memory_bytes
        peak = self.found.peak_memory_bytes
        now = Spread(median=peak, low=peak, high=peak, n=1) if peak is not None else None
        then = None if recorded is None else float(recorded)
        return Remeasured("tuned peak memory", "bytes", then, now)

    def rows(self) -> list[Remeasured]:
        return [
            self.speedup,
            self.throughput_speedup,
            self.sample_ratio,
            self.samples_per_s,
            self.baseline_samples_per_s,
            self.peak_memory,
        ]

    def changed(self) -> list[str]:
        """What differs from when tuned.yaml was measured, of what it records: the torch
        and autotune versions (a library upgrade is the usual reason to check)."""
        then = self.tuned.provenance
        if then is None:
            return []
        now = {"torch": torch.__version__, "autotune": __version__}
        was = {"torch": then.torch_version, "autotune": then.autotune_version}
        return [f"{name} {was[name]} -> {now[name]}" for name in now if was[name] != now[name]]

    def summary(self) -> dict[str, Any]:
        """What ``autotune check --json`` writes: the verdict, and each row's numbers."""
        rows = [
            {
                "what": row.what,
                "unit": row.unit,
                "recorded": row.recorded,
                "now": None if row.now is None else row.now.model_dump(),
                "ratio": row.ratio,
            }
            for row in self.rows()
        ]
        return {
            "holds": self.holds(),
            "verdict": self.verdict(),
            "pairs": self.found.pairs,
            "seeds": self.found.seeds,
            "recorded_seeds": recorded_seeds(self.tuned),
            "changed": self.changed(),
            "rows": rows,
        }

    def holds(self) -> bool:
        """Whether the speed-up still holds: its re-measured median is no lower than the
        lower of the recorded range's low end and the recorded median less
        CHECK_TOLERANCE. Higher is no failure: the claim is "at least this much faster"."""
        now = self.speedup.now
        spread = self.measured.speedup_spread
        claimed = self.speedup.recorded
        if now is None or claimed is None:
            return False
        floor = (1.0 - CHECK_TOLERANCE) * claimed
        if spread is not None:
            floor = min(floor, spread.low)
        return now.median >= floor

    def verdict(self) -> str:
        """One sentence: whether the claim holds, and what moved if the numbers did."""
        now = self.speedup.now
        if now is None:
            return (
                "not checked: no pair had both runs at the target loss; see the runs above, "
                "then run `autotune search` on this machine"
            )
        claimed = self.speedup.recorded or math.nan
        said = f"{now.median:.2f}x now against {claimed:.2f}x recorded"
        if not self.holds():
            slower = " (slower than the baseline here)" if now.median < 1.0 else ""
            return f"does not hold: {said}{slower}{self._which_factor()}; {self._fix()}"
        return f"holds: {said}{self._machine_note()}"

    def _which_factor(self) -> str:
        """Of a speed-up that no longer holds, which factor lost it: the samples/s edge
        (how this machine or torch runs the tuned settings) or the samples to the target
        (the training itself: a kernel's numerics, the data, the seed)."""
        rate, samples = self.throughput_speedup, self.sample_ratio
        rate_ok, samples_ok = rate.within(), samples.within()
        if rate_ok is None or samples_ok is None or rate_ok == samples_ok:
            moved = [r for r in (rate, samples) if r.ratio is not None]
            parts = [f"{r.what} {r.ratio:.0%} of tuned.yaml's" for r in moved]
            return f" ({', '.join(parts)})" if parts else ""
        lost, kept = (samples, rate) if rate_ok else (rate, samples)
        cause = (
            "the training itself changed (a kernel's numerics, the data or the seed)"
            if lost is samples
            else "this machine or torch runs the tuned settings differently"
        )
        return (
            f" ({lost.what} {lost.ratio:.0%} of tuned.yaml's, {kept.what} {kept.ratio:.0%}: "
            f"{cause})"
        )

    def _fix(self) -> str:
        """What to do about a speed-up that does not hold. On other seeds than the
        search's confirmation ran, with the samples to the target what moved (not the
        samples/s), the pick reached the target sooner only on those seeds' data order and
        initial weights, and a search on this machine would not find that out."""
        samples_lost = self.sample_ratio.within() is False and self.throughput_speedup.within()
        recorded = recorded_seeds(self.tuned)
        if samples_lost and set(self.found.seeds) - set(recorded):
            return (
                f"on {format_seeds(self.found.seeds)} the tuned config needed more samples "
                f"to the target than the search's confirmation measured on "
                f"{format_seeds(recorded)}: its speed-up depends on the data order and "
                "initial weights; check more seeds before relying on it"
            )
        return "run `autotune search` on this machine"

    def _machine_note(self) -> str:
        """Where the tuned samples/s missed tuned.yaml's: whether the baseline's moved
        alike (the machine changed, not the config), or not."""
        tuned, base = self.samples_per_s.ratio, self.baseline_samples_per_s.ratio
        if tuned is None or base is None or self.samples_per_s.within() is not False:
            return ""
        if abs(tuned / base - 1.0) <= CHECK_TOLERANCE:
            return (
                f"; samples/s moved with the machine: the tuned config's is {tuned:.0%} of "
                f"tuned.yaml's, the baseline's {base:.0%}"
            )
        return (
            f"; but the tuned config's samples/s is {tuned:.0%} of tuned.yaml's while the "
            f"baseline's is {base:.0%}"
        )


def recorded_seeds(tuned: TunedConfig) -> list[int]:
    """The seeds tuned.yaml's confirmation pairs ran on; for a file that does not record
    them, the search's seed (every pair ran on it then)."""
    measured, where = tuned.measured, tuned.provenance
    if measured is not None and measured.confirmation_seeds:
        return list(measured.confirmation_seeds)
    search_seed = where.seed if where is not None else None
    return [DEFAULT_SEED if search_seed is None else search_seed]


def pairing_of(tuned: TunedConfig, first_seed: int | None = None) -> Pairing:
    """The pairs to run for ``tuned``: its config and its baseline's, each to the recorded
    target loss, bounded at _CAP_FACTOR x its recorded time to the target, pair k on seed
    ``first_seed + k`` (None: the first seed its confirmation ran on, so the check repeats
    the pairs the search measured, seeds and all).

    Raises:
        ConfigError: the file has no evidence to re-measure (no target loss, no baseline
            time to it, no speed-up), it recommends the baseline itself, or its train section
            was edited since the search measured it.
    """
    if tuned.edited():
        raise ConfigError(
            f"{EDITED}, and there is nothing to check this one against: run `autotune "
            f"search` for its numbers, or restore the train section."
        )
    measured = tuned.measured
    base = measured.baseline if measured else None
    if measured is None or measured.target_loss is None or measured.time_to_target_s is None:
        raise ConfigError(
            "the tuned config records no time to a target loss, so there is no speed-up to "
            "check; write one with `autotune search`."
        )
    if base is None or base.time_to_target_s is None or measured.speedup_vs_baseline is None:
        raise ConfigError(
            "the tuned config records no baseline time to its target, so there is no "
            "speed-up to check" + _why_unchecked(measured)
        )
    # The schedule's length where it has one (the run as `autotune run` would train it), but
    # never far past the target.
    steps = _steps(tuned.train, measured.time_to_target_s, measured.throughput_samples_per_s)
    winner_steps = min(tuned.train.schedule.total_steps or steps, steps)
    return Pairing(
        winner=tuned.train,
        winner_steps=winner_steps,
        baseline=base.train,
        baseline_steps=_steps(base.train, base.time_to_target_s, base.throughput_samples_per_s),
        target=measured.target_loss,
        cap_s=_CAP_FACTOR * max(base.time_to_target_s, measured.time_to_target_s),
        first_seed=recorded_seeds(tuned)[0] if first_seed is None else first_seed,
    )


def recheck(
    tuned: TunedConfig,
    task_path: Path,
    workdir: Path,
    *,
    pairs: int = 3,
    most: int | None = None,
    seed: int | None = None,
    after_pair: Callable[[Confirmation], None] | None = None,
) -> Recheck:
    """Run ``pairs`` interleaved pairs of ``tuned``'s config and its baseline to its target
    loss (more, up to ``most``, while the speed-up or the samples/s is unsettled), as
    supervised trials of ``task_path`` in ``workdir``, pair k on seed ``seed + k`` (None:
    on the seeds the search's confirmation ran, :func:`pairing_of`).

    Raises:
        ConfigError: see :func:`pairing_of`; or ``task_path`` is not the task file the
            search measured.
    """
    if tuned.other_task(task_path):
        raise ConfigError(
            f"{OTHER_TASK}, and there is nothing to check it against: run `autotune search "
            f"{task_path}` for its numbers, or give the task file the search measured."
        )
    pairing = pairing_of(tuned, seed)
    device = _device_of(tuned)
    with Trialist(task_path, workdir, seed=pairing.first_seed, device=device) as trials:
        found = run_pairs(
            pairing, trials, pairs, most=most, time_left=lambda: math.inf, after_pair=after_pair
        )
    return Recheck(tuned=tuned, found=found)


def _device_of(tuned: TunedConfig) -> str:
    """The device kind tuned.yaml was measured on, which the pairs must run on too: a CPU
    config on a machine with a GPU would otherwise be checked on the GPU.

    Raises:
        ConfigError: it was measured on CUDA, and this machine has none.
    """
    device = tuned.measured.device if tuned.measured else None
    if device is None:
        return "auto"
    if device.kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"the tuned config was measured on CUDA ({device.count} x {device.name}), and this "
            "machine has no CUDA device; check it on the machine it was tuned on."
        )
    return device.kind


def _steps(train: TrainConfig, time_to_target_s: float, samples_per_s: float) -> int:
    """_CAP_FACTOR x the steps ``train`` took to the target at the recorded pace."""
    return max(1, math.ceil(_CAP_FACTOR * time_to_target_s * samples_per_s / train.global_batch))


def _why_unchecked(measured: MeasuredSection) -> str:
    """Why a tuned config has no speed-up to check, and what to do about it."""
    if measured.rejected is not None:
        return " (the search measured its pick slower and kept the baseline: see `autotune show`)"
    bound = measured.speedup_at_least
    if bound is not None:
        return (
            f": the baseline never reached the target loss {measured.target_loss:.4g} in the "
            f"search's confirmation, which bounded the speed-up at {bound.median:.2f}x or more. "
            f"Search again with a --target-loss the baseline reaches."
        )
    return "; write one with `autotune search`."
