"""The one training runtime: applies a :class:`~autotune.config.TrainConfig` to a Task.

Probes, every search trial and ``autotune run`` train through :func:`train`, so what the
search measures is what the user gets (DESIGN.md, invariant 1).
"""

from autotune.runtime._checkpointing import apply_checkpointing, find_blocks
from autotune.runtime._data import BatchStream, to_device
from autotune.runtime._launch import threads_per_rank, train
from autotune.runtime._loop import DistContext, StepCallback, resolve_device, run_rank
from autotune.runtime._optim import LRMultiplier, build_optimizer, build_scheduler
from autotune.runtime._precision import PrecisionPlan, precision_plan
from autotune.runtime._state import CHECKPOINT_NAME
from autotune.runtime._types import RunOptions, RunResult, RunSummary, StepRecord

__all__ = [
    "CHECKPOINT_NAME",
    "BatchStream",
    "DistContext",
    "LRMultiplier",
    "PrecisionPlan",
    "RunOptions",
    "RunResult",
    "RunSummary",
    "StepCallback",
    "StepRecord",
    "apply_checkpointing",
    "build_optimizer",
    "build_scheduler",
    "find_blocks",
    "precision_plan",
    "resolve_device",
    "run_rank",
    "threads_per_rank",
    "to_device",
    "train",
]
