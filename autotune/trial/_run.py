"""Supervising one trial: launch the worker, follow its progress, stop it, record it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from subprocess import TimeoutExpired

from autotune._io import write_text_atomic
from autotune.runtime import RunResult, StepRecord
from autotune.trial import _process
from autotune.trial._launchers import PLAIN, Launcher
from autotune.trial._process import ProgressReader, TrialFiles, WorkerProcess
from autotune.trial._schema import TrialResult, TrialSpec
from autotune.trial._verdict import Ending, Stop, decide, read_outcome, signal_name

__all__ = ["StepJudge", "run_trial"]

StepJudge = Callable[[StepRecord], bool]
"""Called with each step as it arrives; returning True stops (prunes) the trial."""

# Progress latency for on_step: rarer wake-ups steal less from a 2-thread trial (a run to
# a target is ended by the worker itself, TrialSpec.stop_at, without this latency).
POLL_S = 0.25


def run_trial(
    spec: TrialSpec,
    *,
    workdir: Path | str,
    on_step: StepJudge | None = None,
    grace_s: float = 3.0,  # SIGTERM -> SIGKILL: a worker not gone by then is hung
    launcher: Launcher = PLAIN,
) -> TrialResult:
    """Run ``spec`` in a supervised subprocess and return its record; never raises for
    anything the trial does.

    The worker (``python -m autotune._trial_worker``) runs in its own session with
    ``TMPDIR`` and the inductor cache inside ``workdir``, where it leaves ``spec.json``,
    ``progress.jsonl`` (one step record per line), ``result.json`` (the RunResult or a
    structured error) and ``output.log`` (its stdout and stderr). Files an earlier trial
    left in ``workdir`` are removed first.

    ``on_step`` sees every step in order while the trial runs; when it returns True the
    trial is stopped and recorded PRUNED. Past ``spec.timeout_s`` (counted from process
    start, so torch's import is included) it is stopped and recorded TIMEOUT. Stopping
    sends SIGTERM to the worker's process group, then SIGKILL after ``grace_s``; a worker
    already ending its own run at ``spec.stop_at`` (its streamed steps meet it) is first
    given ``grace_s`` to exit by itself, as a SIGTERM would cut its clean exit short.

    Whatever happens in the caller too (an exception from ``on_step``, KeyboardInterrupt),
    the worker's process group is killed before this returns or raises: no orphan is left.
    If the caller's process dies outright (SIGKILL), the worker notices within a second and
    kills its own group. ``launcher`` starts the worker: a fresh interpreter by default, or
    forked from a warm :class:`~autotune.trial.ForkServer`. Afterwards the worker's scratch
    (``tmp/``, ``inductor/``) is removed; the four record files stay.

    Raises:
        OSError: ``workdir`` cannot be written, or the worker cannot be started.
    """
    files = TrialFiles(Path(workdir))
    files.reset()
    write_text_atomic(files.spec, spec.model_dump_json(indent=1) + "\n")
    with open(files.log, "wb") as log:
        started = time.monotonic()
        proc = launcher.launch(files, log, spec.memory_limit_bytes is not None)
        try:
            watch = _Watch(proc, files, spec, on_step, started)
            stopped = watch.follow()
            if stopped == "pruned" and _worker_ending(spec, watch.steps):
                watch.wait(grace_s)  # a SIGTERM now would cut its own clean exit short
        finally:
            _process.stop_group(proc, grace_s)
            files.clear_scratch()
        ended = time.monotonic()
    return _record(proc, files, spec, watch, stopped, ended - started)


class _Watch:
    """Polls the worker: relays progress to ``on_step``, enforces the timeout."""

    def __init__(
        self,
        proc: WorkerProcess,
        files: TrialFiles,
        spec: TrialSpec,
        on_step: StepJudge | None,
        started: float,
    ) -> None:
        self.proc, self.spec, self.on_step, self.started = proc, spec, on_step, started
        self.reader = ProgressReader(files.progress)
        self.steps: list[StepRecord] = []
        self.first_step_s: float | None = None

    def follow(self) -> Stop | None:
        """Return once the worker has exited (None) or was to be stopped (why)."""
        deadline = self.started + self.spec.timeout_s
        while True:
            exited = self.wait(min(POLL_S, max(0.0, deadline - time.monotonic())))
            if self._take_progress():
                return "pruned"
            if exited:
                return None
            if time.monotonic() >= deadline:
                return "timeout"

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the worker to exit; True once it has."""
        try:
            self.proc.wait(timeout=seconds)
        except TimeoutExpired:
            return False
        return True

    def _take_progress(self) -> bool:
        """Take new step records; True when ``on_step`` asked to prune at one of them."""
        records = self.reader.read()
        if records and self.first_step_s is None:
            seen = time.monotonic() - self.started
            written = self.reader.written_at
            wall_started = time.time() - seen
            self.first_step_s = (
                seen if written is None else first_written_s(records, written - wall_started, seen)
            )
        for record in records:
            self.steps.append(record)
            if self.on_step is not None and self.on_step(record):
                return True
        return False


def _worker_ending(spec: TrialSpec, steps: list[StepRecord]) -> bool:
    """Whether the worker's own stop (``spec.stop_at``) is met within ``steps``: it is then
    ending its run by itself (with ranks, tearing them down), and exits 0 if left to.
    Asked once, when the trial is stopped, not at every step."""
    if spec.stop_at is None:
        return False
    reached = spec.stop_at.tracker()
    return any(reached(record.loss) for record in steps)


def first_written_s(records: list[StepRecord], written_s: float, seen_s: float) -> float:
    """When the first of ``records`` was written, in seconds from launch: the progress
    file's last write (``written_s``, from launch) less the steps written after it in the
    same read. Not when a poll first saw it (``seen_s``), which is up to POLL_S later and
    would make every start-up look about POLL_S long; ``seen_s`` bounds it (clocks that
    disagree, a line half-written after the last record)."""
    after = records[-1].elapsed_s - records[0].elapsed_s
    return min(seen_s, max(0.0, written_s - after))


def _record(
    proc: WorkerProcess,
    files: TrialFiles,
    spec: TrialSpec,
    watch: _Watch,
    stopped: Stop | None,
    wall_s: float,
) -> TrialResult:
    returncode = proc.returncode
    outcome = read_outcome(files.result)
    verdict = decide(Ending(returncode, stopped, watch.steps, outcome), spec)
    # A finished run's own records are complete; a pruned one's end where it was pruned.
    steps = outcome.steps if isinstance(outcome, RunResult) and stopped != "pruned" else watch.steps
    return TrialResult(
        status=verdict.status,
        reason=verdict.reason,
        summary=verdict.summary,
        steps=steps,
        error=verdict.error,
        pid=proc.pid,
        exit_code=returncode if returncode is not None and returncode >= 0 else None,
        signal=signal_name(-returncode) if returncode is not None and returncode < 0 else None,
        wall_s=wall_s,
        first_step_s=watch.first_step_s,
        output_tail=_process.output_tail(files.log),
    )
