"""The trial worker: ``python -m autotune._trial_worker SPEC RESULT PROGRESS``.

Started by :func:`autotune.trial.run_trial`, never by hand. It reads the
:class:`~autotune.trial.TrialSpec` in SPEC, applies its memory limit, loads the task and
trains through :func:`autotune.runtime.train`, appending each step record to PROGRESS as
one JSON line (flushed at once, so the supervisor can follow and prune). At the end it
writes RESULT atomically: the ``RunResult`` (exit status 0), or a structured error
``{"error": kind, "type": ..., "message": ...}`` (exit status 1) - see
:class:`~autotune.trial.WorkerError`. Exit status 2: wrong arguments. A worker that dies
without writing RESULT (a signal, ``os._exit``) is judged by its exit status alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import torch

from autotune._io import write_text_atomic
from autotune.errors import AutotuneError, ConfigError, TaskError, allocation_failure
from autotune.runtime import RunOptions, RunResult, StepRecord, train
from autotune.task import load_task
from autotune.trial import TargetStop, TrialSpec, WorkerError
from autotune.trial._process import PARENT_ENV

__all__ = ["classify", "main"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PARENT_POLL_S = 0.5  # how soon an orphaned worker notices; a getppid() call is cheap
_USAGE = "usage: python -m autotune._trial_worker SPEC.json RESULT.json PROGRESS.jsonl"


def main(argv: Sequence[str]) -> int:
    """Run the trial described by ``argv``; the exit status is as in the module docstring."""
    if len(argv) != 3:
        print(_USAGE, file=sys.stderr)
        return 2
    # A crash's stack in the log, this thread's only: the parent-watch thread's would push
    # the task's frames out of the output tail.
    faulthandler.enable(all_threads=False)
    _die_with_parent()
    spec_path, result_path, progress_path = (Path(arg) for arg in argv)
    try:
        result = _run(spec_path, progress_path)
    except _TargetReached:
        return 0  # its streamed steps are the record: the supervisor stops the run there
    except BaseException as exc:  # every ending becomes a record; nothing escapes unrecorded
        # The record first: printing a traceback allocates, and memory may be short.
        write_text_atomic(result_path, json.dumps(classify(exc).model_dump()) + "\n")
        traceback.print_exc()
        return 1
    # json.dumps, not pydantic's JSON: a diverged run's NaN losses must survive as NaN.
    write_text_atomic(result_path, json.dumps(result.model_dump()) + "\n")
    return 0


def _die_with_parent() -> None:
    """Kill this worker's group when the supervisor dies (even by SIGKILL, where its own
    cleanup cannot run): nothing else would ever stop a hung or long trial then.

    Two lines of defence: the kernel's parent-death signal for this process (Linux), and a
    thread that polls the parent pid and kills the whole group, ranks included.
    """
    parent = int(os.environ.get(PARENT_ENV, "0")) or os.getppid()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):  # no usable libc: the thread stays
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above took effect
        _kill_own_group()
    watch = threading.Thread(target=_watch_parent, args=(parent,), name="autotune-parent-watch")
    watch.daemon = True
    watch.start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    _kill_own_group()


def _kill_own_group() -> None:
    # Only when this process leads its group (as run_trial starts it): a worker started
    # by hand shares its shell's group, which is not ours to kill.
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _run(spec_path: Path, progress_path: Path) -> RunResult:
    spec = TrialSpec.model_validate_json(spec_path.read_text(encoding="utf-8"))
    _limit_memory(spec)  # before the task is imported: everything it does is bounded
    task = load_task(spec.task_path)
    options = RunOptions(
        steps=spec.steps,
        seed=spec.seed,
        warmup_steps=spec.warmup_steps,
        measure_memory=spec.measure_memory,
        device=spec.device,
    )
    with open(progress_path, "w", encoding="utf-8") as progress:
        return train(task, spec.train, options, _streamer(progress, spec.stop_at))


class _TargetReached(Exception):
    """Raised by the step callback at the spec's :class:`~autotune.trial.TargetStop`: it
    unwinds the training loop (and, with ranks, stops them) straight to :func:`main`."""


def _streamer(progress: IO[str], stop: TargetStop | None) -> Callable[[StepRecord], None]:
    """Append each record to the progress file, flushed; then end the run if ``stop`` is
    met at it (the record is written first: the supervisor stops the run at it)."""
    reached = (lambda loss: False) if stop is None else stop.tracker()

    def send(record: StepRecord) -> None:
        progress.write(json.dumps(record.model_dump()) + "\n")
        progress.flush()
        if reached(record.loss):
            raise _TargetReached

    return send


def _limit_memory(spec: TrialSpec) -> None:
    """Apply ``RLIMIT_AS`` (soft limit) for ``spec.memory_limit_bytes``, if given."""
    limit = spec.memory_limit_bytes
    if limit is None:
        return
    if sys.platform != "linux":
        raise ConfigError(
            f"memory_limit_bytes needs Linux (RLIMIT_AS), but this is {sys.platform}; drop it."
        )
    if spec.device != "cpu" and torch.cuda.is_available():
        raise ConfigError(
            "memory_limit_bytes applies to CPU trials only (RLIMIT_AS also bounds the CUDA "
            "driver's address-space reservations); set device='cpu' or drop the limit."
        )
    mapped = _mapped_bytes()
    if mapped >= limit:
        raise ConfigError(
            f"memory_limit_bytes must exceed what the worker maps before loading the task "
            f"(Python and torch: {mapped:,} bytes), but got {limit:,}; allow the model's "
            f"peak plus at least 1.5 GiB."
        )
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _mapped_bytes() -> int:
    """This process's virtual memory size (``VmSize``), the quantity RLIMIT_AS bounds."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def classify(exc: BaseException) -> WorkerError:
    """The structured record of why training ended with ``exc``."""
    oom = allocation_failure(exc)
    if oom is not None:
        message = _first_line(oom) or "the allocation failed"
        return WorkerError(error="oom", type=type(oom).__name__, message=message)
    if isinstance(exc, SystemExit):
        call = "sys.exit()" if exc.code is None else f"sys.exit({exc.code!r})"
        return WorkerError(
            error="exit", type="SystemExit", message=f"the task called {call}{_where(exc)}"
        )
    if isinstance(exc, TaskError):  # already one line naming the file, the line and the fix
        return WorkerError(error="task", type=type(exc).__name__, message=_first_line(exc))
    if isinstance(exc, ConfigError):
        return WorkerError(error="config", type=type(exc).__name__, message=_first_line(exc))
    if isinstance(exc, AutotuneError):  # e.g. TrainingError: a rank died; says what and where
        return WorkerError(error="exception", type=type(exc).__name__, message=_first_line(exc))
    message = f"{_first_line(exc) or '(no message)'}{_where(exc)}"
    return WorkerError(error="exception", type=type(exc).__name__, message=message)


def _where(exc: BaseException) -> str:
    """`` at file:line`` of the innermost Python frame that raised ``exc``."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split()) if lines else ""


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's shutdown (about 0.5 s with torch loaded, every trial): the
    # result is on disk already, and the supervisor kills whatever is left in the group.
    os._exit(status)
