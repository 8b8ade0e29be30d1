"""The search's inputs, its running state, and what one measured run gives back."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from autotune.config import TrainConfig
from autotune.errors import AutotuneError

__all__ = [
    "PATIENCE",
    "REAL_GAIN",
    "REAL_GAIN_FLOOR_S",
    "RUNOFF_ROUNDS",
    "SMALL_BATCH_FACTOR",
    "BaselineRun",
    "Budget",
    "Measured",
    "SearchOptions",
    "same_kind",
    "small_batch_size",
    "trial_run",
]


# Patience: a budget-bound search stops once this many finished trials in a row have not
# beaten the best time to target by REAL_GAIN. A gain under the 6-25% run-to-run noise of
# one fresh process is not a real one, and on a fast workload the rest of the budget would
# only re-draw the same answer (the grid benchmark's cost goal). 8 = TPE's 4 random startup
# trials plus 4 guided ones past the last real gain.
PATIENCE = 8
REAL_GAIN = 0.05
# ... and by this many seconds: where the target is reached in 0.1 s (mlp_digits), 5% is
# 5 ms, under the +-10 ms that one config's time to target spans over interleaved repeats
# (0.09-0.11 s in 5), so a "gain" at trial 11 restarted the count and the search ran 20
# trials where 12 would have found as good a point (17.1% of the grid's cost, goal 15%).
REAL_GAIN_FLOOR_S = 0.02

# The search also tries the baseline's batch divided by this. Far below the critical batch
# size a step's progress hardly depends on the batch, so fewer samples per step reach the
# target in about as many steps, and a small step costs much less than a large one.
# Measured on tiny_gpt in bf16 at AdamW 3e-4 (2 seeds, the search's smoothed crossing): the
# target in 10.9-12.2 s at batch 16, 8.5-9.1 s at 8 and 5.3-6.7 s at 4. Throughput alone
# favours large batches, and scaling up (accumulation) is the convergence phase's other way.
SMALL_BATCH_FACTOR = 4


def small_batch_size(sizes: Iterable[int], anchor: int) -> int | None:
    """Of ``sizes``, the one below ``anchor`` nearest (in log) to ``anchor /
    SMALL_BATCH_FACTOR``, the larger on a tie; None when no size is below ``anchor``."""
    below = sorted({s for s in sizes if s < anchor}, reverse=True)
    if not below:
        return None
    goal = math.log2(anchor / SMALL_BATCH_FACTOR)
    return min(below, key=lambda s: abs(math.log2(s) - goal))


CONFIRM_PAIRS = 3  # winner/baseline pairs always re-run interleaved for the spread (issue 5)
CONFIRM_MAX_PAIRS = 8  # ... and at most, while the speed-up is unsettled and the budget has room
# Repeats of each close candidate before the winner is chosen (search/_runoff.py): with its
# trial's own run, a median of 3, which one lucky dip cannot move.
RUNOFF_ROUNDS = 2


@dataclass(frozen=True)
class SearchOptions:
    """What ``autotune search`` was asked for."""

    task_path: Path
    space: str = "default"
    budget_s: float = 300.0  # five minutes: the bound for tiny_gpt on 2 CPU cores
    trials: int | None = None  # convergence trials; None: as many as the budget allows
    storage: str = "sqlite:///autotune.db"
    study_name: str | None = None  # None: the task file's stem
    target_loss: float | None = None  # None: the Task's, else the loss the baseline reaches
    memory_limit_bytes: int | None = None
    output: Path = Path("tuned.yaml")
    seed: int = 0
    patience: int | None = PATIENCE  # None: spend the whole budget
    confirm_pairs: int = CONFIRM_PAIRS
    confirm_max_pairs: int = CONFIRM_MAX_PAIRS
    runoff_rounds: int = RUNOFF_ROUNDS  # 0: the fastest single trial run wins
    systems_measured: int = 4  # best-predicted systems configs measured for real
    workdir: Path | None = None  # trial files; None: a temp dir removed afterwards


@dataclass
class Budget:
    """Wall-clock budget of the whole search."""

    total_s: float
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def left_s(self) -> float:
        return max(0.0, self.total_s - self.elapsed_s)


class _Record(BaseModel):
    # NaN/inf losses (a diverged trial) round-trip through the study's JSON attrs as
    # NaN/Infinity, not as null.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class Measured(_Record):
    """One run of a config, reduced to what the search compares."""

    train: TrainConfig
    losses: list[float]
    elapsed_s: list[float] = Field(description="Wall seconds since training began, per step.")
    samples_per_s: float
    time_to_target_s: float | None = None
    peak_memory_bytes: int | None = None


# Parsed trial runs kept: more than a search's trials (tens), so a search never parses a
# finished trial's run twice; a bound, as one run holds a loss and a time per step.
_PARSED_RUNS = 512


@functools.lru_cache(maxsize=_PARSED_RUNS)
def trial_run(stored: str) -> Measured:
    """A trial's stored ``run`` user attribute, parsed. Every tell re-reads all the
    study's runs (the pooled pace, the runoff's entries, the climbs), and a finished
    trial's run never changes, so each is parsed once: shared, so never modified."""
    return Measured.model_validate_json(stored)


class BaselineRun(_Record):
    """The Task's baseline, run once per study: its curve sets the target."""

    run: Measured
    steps: int
    target_loss: float
    target_from: str = Field(
        description="'user', 'task', or the baseline's steps and where their number came from."
    )


def same_kind(a: TrainConfig, b: TrainConfig) -> bool:
    """Same step apart from the batch: precision, checkpointing, ranks and compile."""
    keys = ("precision", "activation_checkpointing", "world_size", "compile")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


class SearchError(AutotuneError):
    """The search could not produce a config; the message says what to change."""

    exit_code = 1


Events = Callable[[str], None]
"""Where the search says what it does: one line per event (phase, trial outcome)."""
