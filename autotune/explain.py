"""Why a tuned config reaches the target sooner than its baseline, from tuned.yaml alone.

Time to a target loss is samples to the target divided by samples per second, so a
time-to-target speed-up is exactly the product of two factors::

    speed-up (time to target)  =  throughput ratio  x  sample ratio
      baseline s / tuned s        tuned / baseline     baseline / tuned samples
                                   samples per second   to reach the target

Both speed-ups are measured, in the search's interleaved confirmation pairs, so the split
between the factors is evidence: the throughput factor is what the systems settings
(precision, micro-batch, checkpointing, ranks, compile) changed in how fast a sample is
computed; the sample factor is what the optimisation settings (global batch, LR, schedule,
warmup) changed in how many samples the model needs. Which setting *within* a group did
most is not measured, and the levers below say what each change does, not how much of the
factor it bought.

Pure: takes a :class:`~autotune.config.TunedConfig`, returns values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.config import Measured, TrainConfig, TunedConfig, checkpointing_label

__all__ = [
    "NOISE_FAR",
    "Explanation",
    "Lever",
    "batch_against_noise",
    "explain",
    "far_below_noise",
    "fewer_or_more",
    "sample_ratio",
]

# A batch this many times below (or above) the noise scale is far below (or above) it: the
# probe's line and the search's smaller-batch seed rule (autotune.search) read it alike.
# mlp_digits (128 samples) and cnn_digits (95) are far above their baseline batch of 16;
# tiny_gpt, hf_gpt2 and lstm_text (0.5-1.1) far below it.
NOISE_FAR = 2.0


def far_below_noise(batch: int, noise_scale: float) -> bool:
    """Whether ``batch`` is NOISE_FAR x below the gradient noise scale or more."""
    return noise_scale >= NOISE_FAR * batch


@dataclass(frozen=True)
class Lever:
    """One setting the tuned config changed, and what that change does."""

    setting: str
    before: str
    after: str
    effect: str

    def line(self) -> str:
        return f"{self.setting} {self.before} -> {self.after}: {self.effect}"


@dataclass(frozen=True)
class Explanation:
    """A measured time-to-target speed-up split into its two factors, with the settings
    behind each. ``samples`` is ``speedup / throughput``: the quotient of the two measured
    medians (tuned.yaml keeps no per-pair samples to target)."""

    speedup: float  # time to the target: the baseline's over the tuned config's
    throughput: float  # samples/s: the tuned config's over the baseline's
    samples: float  # samples to the target: the baseline's over the tuned config's
    batches: tuple[int, int]  # global batch: the baseline's, the tuned config's
    target_loss: float | None
    systems: tuple[Lever, ...]  # the settings behind ``throughput``
    optimisation: tuple[Lever, ...]  # the settings behind ``samples``

    def headline(self) -> str:
        """``2.62x sooner to loss 2.9703 = 0.76x the samples/s x 3.45x fewer samples``."""
        to = f" to loss {self.target_loss:.4f}" if self.target_loss is not None else ""
        return (
            f"{self.speedup:.2f}x sooner{to} = {self.throughput:.2f}x the samples/s "
            f"x {_fewer(self.samples, 'samples')} to get there"
        )

    def source(self) -> str:
        """Which factor the speed-up came from, in one sentence."""
        if self.speedup <= 1.0:
            return "The tuned config is not faster to the target than the baseline."
        if self.throughput < 1.0 <= self.samples:
            return (
                f"All of it comes from needing fewer samples (batch and LR): the tuned config "
                f"gives up {1 - self.throughput:.0%} of the samples/s to get there in "
                f"{_fewer(self.samples, 'samples')}."
            )
        if self.samples < 1.0 <= self.throughput:
            return (
                f"All of it comes from more samples per second (the systems settings): the "
                f"tuned config needs "
                f"{1 / self.samples:.2f}x the samples but computes them "
                f"{self.throughput:.2f}x as fast."
            )
        share = math.log(self.throughput) / math.log(self.speedup)
        return (
            f"{share:.0%} of it (on a log scale) comes from more samples/s, "
            f"{1 - share:.0%} from fewer samples to the target."
        )

    @property
    def steps(self) -> float:
        """Optimizer steps to the target: the baseline's over the tuned config's."""
        before, after = self.batches
        return self.samples * after / before

    def step_line(self) -> str:
        """The sample factor in optimizer steps: steps to the target, and each one's size."""
        before, after = self.batches
        size = f"of {after} samples" + (f", not {before}" if after != before else "")
        if math.isclose(self.steps, 1.0, rel_tol=0.02):
            return f"about as many optimizer steps as the baseline ({size})"
        if self.steps > 1.0:
            return f"{self.steps:.2f}x fewer optimizer steps ({size})"
        return f"{1 / self.steps:.2f}x as many optimizer steps ({size})"


def explain(tuned: TunedConfig) -> Explanation | None:
    """The two factors of ``tuned``'s time-to-target speed-up and the settings behind each;
    None when the file cannot say: no measured baseline, no speed-up to the target, or a
    pick the confirmation rejected (the file then recommends the baseline itself)."""
    measured = tuned.measured
    if measured is None or measured.baseline is None or measured.rejected is not None:
        return None
    speedup, throughput = _median_speedup(measured), _throughput_ratio(measured)
    if speedup is None or throughput is None:
        return None
    base = measured.baseline.train
    return Explanation(
        speedup=speedup,
        throughput=throughput,
        samples=speedup / throughput,
        batches=(base.global_batch, tuned.train.global_batch),
        target_loss=measured.target_loss,
        systems=tuple(_systems_levers(base, tuned.train)),
        optimisation=tuple(_optimisation_levers(base, tuned.train, measured.gradient_noise_scale)),
    )


def sample_ratio(measured: Measured) -> float | None:
    """The baseline's samples to the target over the tuned config's, as tuned.yaml records
    it: the median time-to-target speed-up over the median throughput speed-up; None where
    either is missing."""
    speedup, throughput = _median_speedup(measured), _throughput_ratio(measured)
    if speedup is None or throughput is None:
        return None
    return speedup / throughput


def _median_speedup(measured: Measured) -> float | None:
    if measured.speedup_spread is not None:
        return measured.speedup_spread.median
    return measured.speedup_vs_baseline


def _throughput_ratio(measured: Measured) -> float | None:
    """The interleaved pairs' median ratio; a file without it (written before the pairs
    recorded one) falls back to the two recorded samples/s."""
    if measured.throughput_speedup is not None:
        return measured.throughput_speedup.median
    if measured.baseline is None:
        return None
    return measured.throughput_samples_per_s / measured.baseline.throughput_samples_per_s


def fewer_or_more(ratio: float) -> str:
    """``3.45x fewer`` for a ratio of 3.45, ``1.20x more`` for one of 1/1.20."""
    return f"{ratio:.2f}x fewer" if ratio >= 1.0 else f"{1 / ratio:.2f}x more"


def _fewer(ratio: float, what: str) -> str:
    return f"{fewer_or_more(ratio)} {what}"


def _systems_levers(base: TrainConfig, tuned: TrainConfig) -> list[Lever]:
    """How a sample is computed: the settings behind the throughput factor."""
    levers = []
    if base.precision != tuned.precision:
        levers.append(Lever("precision", base.precision, tuned.precision, _precision(tuned)))
    if base.micro_batch_size != tuned.micro_batch_size:
        bigger = tuned.micro_batch_size > base.micro_batch_size
        effect = (
            "more samples per kernel call: the fixed cost of a step is shared by more samples"
            if bigger
            else "less work per forward/backward; per-step overheads weigh more per sample"
        )
        levers.append(
            Lever("micro-batch", str(base.micro_batch_size), str(tuned.micro_batch_size), effect)
        )
    if base.activation_checkpointing != tuned.activation_checkpointing:
        levers.append(_checkpointing(base, tuned))
    if base.world_size != tuned.world_size:
        effect = f"{tuned.world_size} data-parallel ranks share each global batch"
        levers.append(Lever("world size", str(base.world_size), str(tuned.world_size), effect))
    if base.compile != tuned.compile:
        effect = "torch.compile fuses kernels" if tuned.compile else "eager, no compile warm-up"
        levers.append(Lever("compile", _yes(base.compile), _yes(tuned.compile), effect))
    return levers


def _precision(tuned: TrainConfig) -> str:
    if tuned.precision == "32-true":
        return "full-precision matmuls (the reduced precision was slower or unstable here)"
    if tuned.precision == "16-mixed":
        return "fp16 autocast with a GradScaler: half-width matmuls and activations"
    if tuned.precision == "bf16-true":
        return "bf16 weights, matmuls and activations"
    return "bf16 autocast: half-width matmuls and activations, fp32 weights"


def _checkpointing(base: TrainConfig, tuned: TrainConfig) -> Lever:
    mode = tuned.activation_checkpointing
    effect = (
        "activations recomputed in the backward: less memory, more compute per step"
        if mode != "none"
        else "no recomputation in the backward"
    )
    before = checkpointing_label(base.activation_checkpointing)
    return Lever("activation checkpointing", before, checkpointing_label(mode), effect)


def _optimisation_levers(
    base: TrainConfig, tuned: TrainConfig, noise_scale: float | None
) -> list[Lever]:
    """How the samples are used: the settings behind the sample factor."""
    levers = []
    if base.global_batch != tuned.global_batch:
        levers.append(_global_batch(base.global_batch, tuned.global_batch, noise_scale))
    b_lr, t_lr = base.optimizer.lr, tuned.optimizer.lr
    if not math.isclose(b_lr, t_lr, rel_tol=1e-6):
        how = "larger" if t_lr > b_lr else "smaller"
        effect = f"{max(t_lr, b_lr) / min(t_lr, b_lr):.2f}x {how} steps"
        levers.append(Lever("lr", f"{b_lr:.3g}", f"{t_lr:.3g}", effect))
    b_s, t_s = base.schedule, tuned.schedule
    if b_s.name != t_s.name:
        levers.append(Lever("schedule", b_s.name, t_s.name, _schedule(t_s.name)))
    if b_s.warmup_steps != t_s.warmup_steps:
        effect = "a linear LR ramp shields the first updates" if t_s.warmup_steps else "no ramp"
        levers.append(Lever("warmup steps", str(b_s.warmup_steps), str(t_s.warmup_steps), effect))
    return levers


def _global_batch(before: int, after: int, noise_scale: float | None) -> Lever:
    if after < before:
        effect = (
            f"{before / after:.2f}x more optimizer updates per sample: while a batch is above "
            "the gradient's noise scale, a smaller one makes more progress per sample"
        )
    else:
        effect = (
            f"{after / before:.2f}x fewer optimizer updates per sample, each from a "
            "less noisy gradient"
        )
    if noise_scale is not None:
        effect += f"; {_noise_note(before, after, noise_scale)}"
    return Lever("global batch", str(before), str(after), effect)


def _noise_note(before: int, after: int, noise_scale: float) -> str:
    """Where the two batches sit against the probe's noise scale, read through its model
    (McCandlish et al. 2018): far below it, the samples to a loss hardly depend on the
    batch and the steps fall as it grows; far above it, the steps hardly depend on it and
    the samples grow with it."""
    scale = (
        f"the probe's gradient noise scale ({noise_scale:.3g} samples at init; it grows as "
        "the loss falls)"
    )
    if max(before, after) <= noise_scale:
        return f"both are below {scale}, where a batch's size moves the steps more than the samples"
    if min(before, after) >= noise_scale:
        return f"both are above {scale}, where a batch's size moves the samples more than the steps"
    return f"{scale} lies between them"


def _schedule(name: str) -> str:
    if name == "constant":
        return "the peak LR throughout"
    return f"{name} decay: large steps early, small steps to settle near the end"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def batch_against_noise(batch: int, noise_scale: float) -> str:
    """Where the baseline's global ``batch`` sits against the probe's gradient noise scale
    (measured at init, where it is lowest), and what the noise-scale model expects of a
    batch change from there: what ``autotune probe`` prints before any search."""
    if far_below_noise(batch, noise_scale):
        return (
            f"the baseline's batch of {batch} is {noise_scale / batch:.1f}x below it: a larger "
            "batch should need about as many samples, in fewer steps"
        )
    if batch >= NOISE_FAR * noise_scale:
        return (
            f"the baseline's batch of {batch} is {batch / noise_scale:.1f}x above it at init: "
            "a smaller batch should need fewer samples, in more steps, at least early on"
        )
    return (
        f"the baseline's batch of {batch} is near it: a batch change moves both the steps "
        "and the samples to a loss"
    )
