"""What a run takes (:class:`RunOptions`) and what it gives back (:class:`RunResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RunOptions", "RunResult", "RunSummary", "StepRecord"]

DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class RunOptions:
    """How long and how to run; the *what* is the :class:`~autotune.config.TrainConfig`."""

    steps: int
    seed: int = 0  # same seed -> same init and data order for every config compared
    warmup_steps: int | None = None  # timing burn-in; None: min(5, steps // 4), at least 1
    measure_memory: bool = True  # profile one steady-state step (excluded from timing)
    device: DeviceChoice = "auto"  # auto: CUDA when present, else CPU
    save_dir: Path | None = None
    save_every: int = 0  # optimizer steps between checkpoints; 0: only at the end
    resume: bool = False
    dist_timeout_s: float = 300.0  # a collective blocked this long means a peer is gone

    def burn_in(self) -> int:
        """Steps excluded from the throughput median."""
        if self.warmup_steps is not None:
            return min(self.warmup_steps, max(0, self.steps - 1))
        return max(1, min(5, self.steps // 4)) if self.steps > 1 else 0


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class StepRecord(_Record):
    """One optimizer step. ``elapsed_s`` is wall time since training started."""

    step: int = Field(ge=1)
    loss: float
    elapsed_s: float
    samples: int = Field(description="Cumulative global samples after this step.")
    step_time_s: float
    samples_per_s: float
    lr: float


class RunSummary(_Record):
    """The outcome of a run; ``samples_per_s`` is the median after burn-in."""

    steps_completed: int
    steps_requested: int
    final_loss: float
    smoothed_final_loss: float = Field(description="Mean loss of the last 10% of steps.")
    loss_finite: bool
    stopped_reason: str | None
    samples_per_s: float
    samples_per_s_p10: float
    samples_per_s_p90: float
    timed_steps: int
    peak_memory_bytes: int | None
    persistent_memory_bytes: int | None
    activation_memory_bytes: int | None
    memory_source: str | None
    grad_scaler_overflow_steps: int | None
    checkpointed_blocks: list[str]
    device: str
    world_size: int
    threads_per_rank: int
    precision: str
    global_batch_size: int
    train_time_s: float
    resumed_from_step: int | None


class RunResult(_Record):
    """The public result: ``{"summary": {...}, "steps": [...]}`` (``autotune run --json``)."""

    summary: RunSummary
    steps: list[StepRecord]
