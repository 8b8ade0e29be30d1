"""Deciding a trial's status from facts only: what the supervisor did, the worker's
structured result file, and how the process ended. Never from the text of its output."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from autotune.runtime import RunResult, RunSummary, StepRecord
from autotune.trial._schema import TargetStop, TrialSpec, TrialStatus, WorkerError

__all__ = ["Ending", "Verdict", "decide", "read_outcome"]

Outcome = RunResult | WorkerError | str  # str: the result file exists but is unreadable
Stop = Literal["pruned", "timeout"]


@dataclass(frozen=True)
class Ending:
    """How the worker's run ended, as the supervisor saw it."""

    returncode: int | None  # None: still not reaped after SIGKILL (stuck in the kernel)
    stopped: Stop | None  # what the supervisor stopped it for, if it did
    steps: list[StepRecord]  # streamed progress (ends at the pruning step when pruned)
    outcome: Outcome | None  # the result file, None when there is none


@dataclass(frozen=True)
class Verdict:
    status: TrialStatus
    reason: str
    summary: RunSummary | None = None
    error: WorkerError | None = None


def read_outcome(path: Path) -> Outcome | None:
    """The worker's result file: a RunResult, a WorkerError, or why it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)  # json, not pydantic: NaN losses are written as NaN
        if isinstance(data, dict) and "error" in data:
            return WorkerError.model_validate(data)
        return RunResult.model_validate(data)
    except (ValueError, ValidationError) as exc:
        return f"the result file {path} cannot be read ({type(exc).__name__})"


def decide(ending: Ending, spec: TrialSpec) -> Verdict:
    """The trial's status and one-line reason."""
    outcome = ending.outcome
    if ending.stopped == "pruned":
        return _pruned(ending, outcome)
    if isinstance(outcome, RunResult):
        return _finished(outcome.summary)
    if isinstance(outcome, WorkerError):
        return _failed(outcome, spec)
    if isinstance(outcome, str):
        return Verdict(TrialStatus.CRASH, outcome)
    if ending.returncode == 0 and spec.stop_at is not None:
        return _ended_at_target(ending, spec.stop_at)
    if ending.stopped == "timeout":
        return Verdict(
            TrialStatus.TIMEOUT,
            f"no result within timeout_s={spec.timeout_s:g} s ({_progress(ending, spec)}); "
            f"its process group was killed",
        )
    return Verdict(TrialStatus.CRASH, _died(ending, spec))


def _pruned(ending: Ending, outcome: Outcome | None) -> Verdict:
    last = ending.steps[-1] if ending.steps else None
    where = f"at step {last.step} (loss {last.loss:.4g})" if last else "before its first step"
    summary = outcome.summary if isinstance(outcome, RunResult) else None
    return Verdict(TrialStatus.PRUNED, f"pruned {where} by on_step", summary)


def _ended_at_target(ending: Ending, stop: TargetStop) -> Verdict:
    """The worker ended its own run at ``stop`` (exit 0, no result file), where ``on_step``
    did not stop it: its streamed steps are the record, as for a pruned run."""
    where = f"at step {ending.steps[-1].step}" if ending.steps else "before its first step"
    reason = f"ended by the worker {where}, at its target {stop.loss:.4g}"
    return Verdict(TrialStatus.PRUNED, reason)


def _finished(summary: RunSummary) -> Verdict:
    if not summary.loss_finite:
        why = summary.stopped_reason or "a non-finite loss"
        return Verdict(TrialStatus.UNSTABLE, f"training diverged: {why}", summary)
    return Verdict(
        TrialStatus.OK,
        f"trained {summary.steps_completed} steps: final loss {summary.final_loss:.4g}, "
        f"{summary.samples_per_s:,.1f} samples/s",
        summary,
    )


def _failed(error: WorkerError, spec: TrialSpec) -> Verdict:
    if error.error == "oom":
        limit = spec.memory_limit_bytes
        under = f" under memory_limit_bytes={limit:,}" if limit is not None else ""
        reason = f"out of memory{under}: {error.type}: {error.message}"
        return Verdict(TrialStatus.OOM, _one_line(reason), error=error)
    reason = {
        "task": f"task error: {error.message}",
        "config": f"config error: {error.message}",
        "exit": error.message,
        "exception": f"{error.type}: {error.message}",
    }[error.error]
    return Verdict(TrialStatus.CRASH, _one_line(reason), error=error)


def _died(ending: Ending, spec: TrialSpec) -> str:
    progress = _progress(ending, spec)
    code = ending.returncode
    if code is None:
        return f"did not exit even after SIGKILL ({progress}); it is stuck in the kernel"
    if code >= 0:
        return f"exited with status {code} without writing a result ({progress})"
    name = signal_name(-code)
    reason = f"killed by {name} without writing a result ({progress})"
    if name == "SIGKILL":
        # No exception was recorded, so this is not a known OOM; the usual sender is the
        # kernel's OOM killer, which is worth saying, but not as a fact.
        reason += "; autotune did not send it: the kernel's OOM killer is the usual cause"
    return reason


def _progress(ending: Ending, spec: TrialSpec) -> str:
    done = ending.steps[-1].step if ending.steps else 0
    return f"after step {done} of {spec.steps}"


def signal_name(number: int) -> str:
    """``SIGABRT`` for 6; ``signal 77`` for a number with no name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
