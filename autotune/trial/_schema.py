"""What a trial takes (:class:`TrialSpec`), what it records (:class:`TrialResult`), and the
structured file the worker leaves behind (:class:`WorkerError` or a ``RunResult``)."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune.config import TrainConfig
from autotune.runtime import RunSummary, StepRecord
from autotune.stability import TargetCrossing

__all__ = ["ErrorKind", "TargetStop", "TrialResult", "TrialSpec", "TrialStatus", "WorkerError"]

ErrorKind = Literal["oom", "task", "config", "exception", "exit"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetStop(_Closed):
    """Where a worker ends its own run: once its smoothed loss has reached ``loss``
    (:class:`~autotune.stability.TargetCrossing`, the support after the crossing included)
    and ``min_steps`` have run. The supervisor's ``on_step`` would stop the run at that
    step anyway, but only when it next looks (``POLL_S``), which can be longer than a small
    model's whole run; ended by the worker, the run costs no step past it. The worker
    writes no result file then: its streamed steps are the record, as for a pruned run.
    """

    loss: float = Field(description="The target loss (the smoothed curve's).")
    min_steps: int = Field(0, ge=0, description="The fewest steps it runs, at the target or not.")

    def tracker(self) -> Callable[[float], bool]:
        """A fresh check of this stop, asked at each next loss in order: True at the loss
        where the worker ends its run. The worker and its supervisor each run one, so the
        supervisor knows when the worker is already ending its run by itself."""
        crossing = TargetCrossing(self.loss)
        return lambda loss: crossing.update(loss) and len(crossing.losses) >= self.min_steps


class TrialSpec(_Closed):
    """One candidate to measure: the task file, the config, and the limits of its process.

    ``memory_limit_bytes`` caps the worker's *address space* (``RLIMIT_AS``, Linux, CPU
    trials only). It bounds everything the process maps, torch included: importing torch
    and running one step of a tiny model already maps about 1 GiB of virtual memory, and
    every CPU thread adds its stack (the worker caps glibc's malloc arenas at 2 when a
    limit is set, as each reserves 64 MiB). Give the model's expected peak plus at least
    1.5 GiB: measured here, the tiny test model trains under 1 GiB and fails under 0.75 GiB.
    A limit below what torch maps before the task loads is reported as a config error, not
    as an OOM of the candidate.
    """

    task_path: Path = Field(description="The task file (model.py), as the user named it.")
    train: TrainConfig
    steps: int = Field(ge=1, description="Optimizer steps to run.")
    seed: int = 0  # the same seed for every candidate: same init and data order, fair comparison
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present, as `autotune run`
    timeout_s: float = Field(
        600.0,  # generous for a short trial; the search passes its own from the time budget
        gt=0,
        description="Wall-clock limit from process start (torch import included).",
    )
    memory_limit_bytes: int | None = Field(
        None,  # no limit: on CUDA the allocator reports OOM itself, RLIMIT_AS would break it
        gt=0,
        description="RLIMIT_AS of the worker (Linux, CPU); see the class docstring for margins.",
    )
    measure_memory: bool = True  # the search's memory model needs the measured peak
    warmup_steps: int | None = Field(
        None,  # None: the runtime's own burn-in rule, as `autotune run` uses
        ge=0,
        description="Steps excluded from the throughput median.",
    )
    stop_at: TargetStop | None = Field(
        None,  # None: run all ``steps`` unless the supervisor stops it
        description="End the run at this target; only where on_step would stop it there too.",
    )


class TrialStatus(str, enum.Enum):
    """How a trial ended. Only ``OK`` carries a complete, finite run."""

    OK = "ok"
    OOM = "oom"
    TIMEOUT = "timeout"
    CRASH = "crash"
    UNSTABLE = "unstable"
    PRUNED = "pruned"


class WorkerError(_Closed):
    """The structured error a worker writes to its result file instead of a RunResult.

    ``kind``: ``oom`` (torch or Python could not allocate), ``task`` (a TaskError: the task
    file breaks its contract), ``config`` (a ConfigError: the config cannot run here),
    ``exit`` (user code raised SystemExit), ``exception`` (anything else).
    """

    error: ErrorKind
    type: str = Field(description="The exception's class name.")
    message: str = Field(description="One line; for 'exit', which sys.exit was called.")


class TrialResult(_Closed):
    """The record of one trial: always complete, whatever the process did.

    ``steps`` holds every step the trial finished (from the result file, or as streamed
    while it ran when it did not finish; a pruned trial's end at the pruning step), so the
    loss curve and time-to-target are available for every status. ``summary`` is present
    when the worker finished training: always for ``OK`` and ``UNSTABLE``, for ``PRUNED``
    only if it finished before the stop reached it.
    """

    status: TrialStatus
    reason: str = Field(description="One line: what happened and why.")
    summary: RunSummary | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    error: WorkerError | None = Field(None, description="The worker's structured error.")
    pid: int = Field(description="The worker's process id (its process group id too).")
    exit_code: int | None = Field(None, description="The exit status; None if a signal.")
    signal: str | None = Field(None, description="The signal that ended it, e.g. SIGABRT.")
    wall_s: float = Field(description="Process start to process end.")
    first_step_s: float | None = Field(
        None,
        description="Process start until the worker wrote its first step (startup overhead), "
        "dated by the progress file's write, not by the poll that saw it.",
    )
    output_tail: str = Field("", description="The last lines of the worker's stdout+stderr.")

    def to_json(self) -> str:
        """JSON that :meth:`model_validate_json` reads back, NaN losses included.

        Use it rather than ``model_dump_json``, which writes a diverged run's NaN as
        ``null`` (pydantic's default for the nested runtime records) and cannot be read back.
        """
        return json.dumps(self.model_dump(mode="json"))
