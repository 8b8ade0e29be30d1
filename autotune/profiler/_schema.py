"""The probe's document, :class:`ProbeReport`, and the pieces it is made of.

Every model is closed (``extra="forbid"``) and frozen, and every field says what it means,
so ``ProbeReport.model_json_schema()`` documents the ``autotune probe --json`` format.
Predictions are methods of :class:`VariantReport`: whoever holds a report (the search,
a user with the JSON) computes them the same way, from ``fixed_bytes``,
``bytes_per_sample`` and the step-time model.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autotune.config import Precision
from autotune.hardware import HardwareInfo

__all__ = [
    "BatchProbe",
    "Checkpointing",
    "LinearFit",
    "MemoryBudget",
    "ModelFacts",
    "NoiseScale",
    "ProbeReport",
    "StepTimeModel",
    "VariantReport",
]

Checkpointing = Literal["none", "full"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinearFit(_Closed):
    """``y = intercept + slope * x``, least squares with both coefficients >= 0."""

    intercept: float = Field(ge=0, description="Value at x = 0.")
    slope: float = Field(ge=0, description="Increase of y per unit of x.")
    max_relative_error: float = Field(
        ge=0, description="Largest |fit - measured| / measured over the fitted points."
    )

    def at(self, x: float) -> float:
        """The fitted value at ``x``."""
        return self.intercept + self.slope * x


class ModelFacts(_Closed):
    """What the model is and what one training sample costs, counted, not measured."""

    total_params: int = Field(ge=0, description="Parameters of the model (shared ones once).")
    trainable_params: int = Field(ge=0, description="Parameters with requires_grad.")
    flops_per_sample: float = Field(
        ge=0,
        description=(
            "Forward + backward FLOPs per sample, counted by torch.utils.flop_counter over "
            "one batch under the math SDPA backend (so attention is counted), divided by "
            "the batch size. Model FLOPs: activation recomputation is not included."
        ),
    )
    flops_batch_size: int = Field(
        ge=1, description="Samples in the batch the FLOPs were counted on."
    )
    matmul_params: int = Field(
        ge=0, description="N of the 6NT rule: weights of the Linear and Conv layers that ran."
    )
    tokens_per_sample: float = Field(
        ge=0,
        description=(
            "T of the 6NT rule: how many positions (tokens, pixels) per sample each dense "
            "weight is applied to, weighted by weight count; a transformer's sequence length."
        ),
    )
    rule_flops_per_sample: float = Field(ge=0, description="6 * matmul_params * tokens_per_sample.")
    flops_vs_rule: float | None = Field(
        description=(
            "flops_per_sample / rule_flops_per_sample: above 1 by attention (matmuls "
            "outside Linear/Conv layers), below 1 by the first layer's input gradient, "
            "which autograd skips (2 x its weights x T fewer). None when no Linear or Conv "
            "layer ran."
        )
    )
    blocks: list[str] = Field(
        description="Qualified names of the blocks activation checkpointing would recompute."
    )
    unused_params: list[str] = Field(
        default_factory=list,
        description="Trainable parameters that the counted backward, or a backward of one of "
        "a few small batches spread over the dataset, left without a gradient (an auxiliary "
        "head the loss never uses, an expert no sample was routed to): DDP must look for "
        "them every step (find_unused_parameters=True), or it fails on a later step.",
    )
    find_unused_parameters: bool | None = Field(
        None,
        description="Whether DDP must look for parameters without a gradient every step: "
        "Task.find_unused_parameters where the task declares it, else whether unused_params "
        "names any. None: a report from before autotune recorded it (read unused_params).",
    )


class MemoryBudget(_Closed):
    """The memory a training step may use: the budget ``max_batch_size`` is computed for."""

    budget_bytes: int | None = Field(
        ge=1, description="Bytes a step's peak may reach; None when neither limit is known."
    )
    source: Literal["memory_limit", "device_memory", "unknown"] = Field(
        description="memory_limit: given by the user; device_memory: a share of the device's."
    )
    device_memory_bytes: int | None = Field(
        ge=0, description="Memory of one device (GPU memory, or RAM on CPU); None if unknown."
    )
    device_share: float = Field(
        gt=0, le=1, description="Share of device memory budgeted when no limit is given."
    )


class BatchProbe(_Closed):
    """One real training run of a variant at one batch size (``autotune.runtime.train``)."""

    batch_size: int = Field(ge=1, description="Micro-batch size (one rank, no accumulation).")
    peak_memory_bytes: int = Field(
        ge=0, description="Peak bytes of a steady-state step (optimizer state included)."
    )
    activation_memory_bytes: int | None = Field(
        ge=0, description="Bytes the first forward pass left for backward."
    )
    memory_source: str = Field(description="How the peak was measured (profiler or torch.cuda).")
    samples_per_s: float = Field(gt=0, description="Median samples/s of the timed steps.")
    step_time_s: float = Field(gt=0, description="batch_size / samples_per_s.")
    timed_steps: int = Field(ge=1, description="Steps after burn-in, the profiled one excluded.")
    mfu: float | None = Field(
        ge=0, description="flops_per_sample * samples_per_s / measured peak for the precision."
    )
    wall_s: float = Field(ge=0, description="Wall seconds of the whole run (model build included).")


class StepTimeModel(_Closed):
    """Seconds per optimizer step as ``fixed_s + per_sample_s * batch``."""

    fixed_s: float = Field(ge=0, description="Per-step cost independent of batch size.")
    per_sample_s: float = Field(ge=0, description="Seconds each sample adds to a step.")
    max_relative_error: float = Field(ge=0, description="Worst fit error over the probed batches.")

    def step_time_s(self, batch: int) -> float:
        """Predicted seconds of one step at ``batch``."""
        return self.fixed_s + self.per_sample_s * batch


class VariantReport(_Closed):
    """One (precision, activation checkpointing) variant: viability, memory and speed models.

    A viable variant carries ``fixed_bytes``, ``bytes_per_sample`` and ``step_time``; a
    non-viable one carries none of them (``reason`` says why, with numbers), and its
    prediction methods raise ``ValueError``.
    """

    precision: Precision = Field(description="Lightning precision name.")
    activation_checkpointing: Checkpointing = Field(description="'none' or 'full' (every block).")
    viable: bool = Field(description="Whether the search should consider this variant.")
    reason: str = Field(min_length=1, description="Why it is (not) viable, with the numbers.")
    probes: list[BatchProbe] = Field(
        default_factory=list, description="The measured runs (also kept for a slow variant)."
    )
    fixed_bytes: int | None = Field(
        default=None, ge=0, description="Peak bytes at batch 0: weights, grads, optimizer state."
    )
    bytes_per_sample: float | None = Field(
        default=None, gt=0, description="Peak bytes each sample adds (activations, inputs)."
    )
    memory_fit_error: float | None = Field(
        default=None, ge=0, description="Worst relative error of the memory fit on the probes."
    )
    step_time: StepTimeModel | None = Field(default=None, description="Fitted step time.")
    speed_vs_fp32: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Median over probed batches of samples/s relative to 32-true with the same "
            "checkpointing."
        ),
    )
    mfu: float | None = Field(default=None, ge=0, description="MFU at the largest probed batch.")
    max_batch_size: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Largest batch predicted to fit the report's memory budget (0: not even one "
            "sample); None when not viable or no budget is known."
        ),
    )

    @model_validator(mode="after")
    def _models_iff_viable(self) -> VariantReport:
        models = (self.fixed_bytes, self.bytes_per_sample, self.step_time)
        if self.viable and any(m is None for m in models):
            raise ValueError(
                f"a viable variant needs fixed_bytes, bytes_per_sample and step_time, but "
                f"{self.name} lacks some; probe it or mark it not viable."
            )
        if not self.viable and any(m is not None for m in (*models, self.max_batch_size)):
            raise ValueError(
                f"a non-viable variant carries no memory or time model, but {self.name} has "
                f"one; drop fixed_bytes, bytes_per_sample, step_time and max_batch_size."
            )
        return self

    @property
    def name(self) -> str:
        """``precision/checkpointing``, e.g. ``bf16-mixed/full``."""
        return f"{self.precision}/{self.activation_checkpointing}"

    def predict_peak_bytes(self, batch: int) -> int:
        """Predicted peak bytes of a training step at micro-batch ``batch`` (>= 1)."""
        fixed, per_sample = self._memory_model()
        _check_batch(batch)
        return math.ceil(fixed + per_sample * batch)

    def max_batch(self, budget_bytes: int) -> int:
        """Largest batch whose predicted peak is <= ``budget_bytes``; 0 when none fits.

        Inverts :meth:`predict_peak_bytes` exactly: ``predict_peak_bytes(b) <= budget``
        for ``b = max_batch(budget)`` (when b >= 1) and ``> budget`` for ``b + 1``.
        """
        fixed, per_sample = self._memory_model()
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, but got {budget_bytes}.")
        batch = max(0, math.floor((budget_bytes - fixed) / per_sample))
        while batch > 0 and self.predict_peak_bytes(batch) > budget_bytes:
            batch -= 1  # float rounding at the boundary: step back to a batch that fits
        while self.predict_peak_bytes(batch + 1) <= budget_bytes:
            batch += 1
        return batch

    def predict_step_time_s(self, batch: int) -> float:
        """Predicted seconds per optimizer step at micro-batch ``batch`` (>= 1)."""
        _check_batch(batch)
        return self._time_model().step_time_s(batch)

    def predict_samples_per_s(self, batch: int) -> float:
        """Predicted samples/s at micro-batch ``batch`` (>= 1), from the step-time model."""
        return batch / self.predict_step_time_s(batch)

    def _memory_model(self) -> tuple[int, float]:
        if self.fixed_bytes is None or self.bytes_per_sample is None:
            raise ValueError(f"{self.name} is not viable ({self.reason}); it has no memory model.")
        return self.fixed_bytes, self.bytes_per_sample

    def _time_model(self) -> StepTimeModel:
        if self.step_time is None:
            raise ValueError(f"{self.name} is not viable ({self.reason}); it has no time model.")
        return self.step_time


def _check_batch(batch: int) -> None:
    if batch < 1:
        raise ValueError(f"batch must be >= 1, but got {batch}.")


class NoiseScale(_Closed):
    """The simple gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018).

    Estimated from mean squared gradient norms at two batch sizes (their appendix A.1).
    ``b_simple`` is the batch size beyond which bigger batches stop paying off: below it,
    doubling the batch nearly halves the steps needed; far above it, it barely helps.
    """

    b_simple: float | None = Field(
        gt=0, description="The noise scale in samples; None when the estimate is degenerate."
    )
    reason: str = Field(min_length=1, description="How to read the value, or why there is none.")
    small_batch: int = Field(ge=1, description="B_small of the estimator.")
    big_batch: int = Field(ge=2, description="B_big of the estimator.")
    big_batches: int = Field(
        ge=1, description="B_big batches the squared norms were averaged over."
    )
    grad_sq_small: float = Field(ge=0, description="Mean |G_B_small|^2.")
    grad_sq_big: float = Field(ge=0, description="Mean |G_B_big|^2.")
    true_grad_sq: float = Field(description="Estimate of |G|^2 (may be <= 0: degenerate).")
    trace_sigma: float = Field(description="Estimate of tr(Sigma), per-sample gradient variance.")
    measured_at: Literal["init"] = Field(
        default="init",
        description="init: the freshly built model (seeded); the noise scale grows as loss "
        "falls, so this is a lower bound for later training.",
    )


class ProbeReport(_Closed):
    """Everything ``autotune probe`` measured and predicted, as one versioned document."""

    schema_version: Literal[1] = Field(default=1, description="Version of this document.")
    task: str = Field(description="The task's display name.")
    task_file: str | None = Field(description="The task file, when it was loaded from one.")
    autotune_version: str = Field(description="autotune.__version__ of the probing process.")
    hardware: HardwareInfo = Field(description="The machine, with measured peaks.")
    model: ModelFacts = Field(description="Parameters, FLOPs per sample and blocks.")
    memory_budget: MemoryBudget = Field(description="What max_batch_size is computed against.")
    probe_batches: list[int] = Field(min_length=2, description="Batch sizes each variant ran at.")
    steps_per_run: int = Field(ge=1, description="Optimizer steps of each probing run.")
    seed: int = Field(description="Seed of every run: same initial weights and data order.")
    variants: list[VariantReport] = Field(
        min_length=1, description="Every precision x checkpointing variant, viable or not."
    )
    noise_scale: NoiseScale = Field(description="The simple gradient noise scale.")
    probe_seconds: float = Field(ge=0, description="Wall seconds of the whole probe.")
    stage_seconds: dict[str, float] = Field(
        description="Wall seconds per stage: hardware, model_facts, neighbor (waiting for the "
        "caller's work beside the probe, when it gave one), variants, noise_scale."
    )

    def variant(self, precision: Precision, checkpointing: Checkpointing) -> VariantReport:
        """The variant for ``precision`` and ``checkpointing``; ``KeyError`` if absent."""
        for variant in self.variants:
            if (variant.precision, variant.activation_checkpointing) == (precision, checkpointing):
                return variant
        names = ", ".join(v.name for v in self.variants)
        raise KeyError(f"no variant {precision}/{checkpointing} in this report; it has {names}.")

    def viable_variants(self) -> list[VariantReport]:
        """The variants the search should consider, in report order."""
        return [variant for variant in self.variants if variant.viable]
