"""The worker process: its files, its launch, reading its progress, and stopping its group."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from autotune.runtime import StepRecord

__all__ = [
    "DIST_ENV",
    "PARENT_ENV",
    "ProgressReader",
    "TrialFiles",
    "WorkerProcess",
    "launch",
    "output_tail",
    "stop_group",
    "worker_env",
]

WORKER_MODULE = "autotune._trial_worker"
PARENT_ENV = "AUTOTUNE_TRIAL_PARENT"
"""The supervisor's pid, for the worker: it kills its own group when that process is gone."""
_TAIL_LINES = 20  # enough for a traceback's last frames, short enough to store per trial
_TAIL_BYTES = 16_384  # read at most this much from the log's end to find those lines
# A trial's ranks read these; inherited from a parent under torchrun they would make the
# trial join the parent's process group instead of running its own config.
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class TrialFiles:
    """The files of one trial, all inside its work directory."""

    workdir: Path

    @property
    def spec(self) -> Path:
        return self.workdir / "spec.json"

    @property
    def result(self) -> Path:
        return self.workdir / "result.json"

    @property
    def progress(self) -> Path:
        return self.workdir / "progress.jsonl"

    @property
    def log(self) -> Path:
        return self.workdir / "output.log"

    @property
    def tmp(self) -> Path:
        return self.workdir / "tmp"

    @property
    def inductor(self) -> Path:
        return self.workdir / "inductor"

    def reset(self) -> None:
        """Create the work directory and remove what an earlier trial there left."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        for path in (self.spec, self.result, self.progress, self.log):
            path.unlink(missing_ok=True)

    def clear_scratch(self) -> None:
        """Remove the worker's temp files and compile cache (the record files stay)."""
        for folder in (self.tmp, self.inductor):
            shutil.rmtree(folder, ignore_errors=True)


class WorkerProcess(ABC):
    """What the supervisor needs of a running worker (``subprocess.Popen``'s subset).

    The worker leads its own process group: ``pid`` is also its group's id.
    """

    pid: int

    @property
    @abstractmethod
    def returncode(self) -> int | None:
        """The exit status, or minus the signal that killed it; None while it runs."""

    @abstractmethod
    def poll(self) -> int | None:
        """Check without blocking; returns :attr:`returncode`."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int:
        """Block until the worker ends; ``subprocess.TimeoutExpired`` after ``timeout``."""


class _Popened(WorkerProcess):
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.pid = proc, proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout=timeout)


def launch(files: TrialFiles, log: IO[bytes], memory_limited: bool) -> WorkerProcess:
    """Start the worker, a fresh interpreter, in a new session (its own process group)
    writing to ``log``."""
    command = [
        sys.executable,
        "-m",
        WORKER_MODULE,
        str(files.spec),
        str(files.result),
        str(files.progress),
    ]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=worker_env(files, memory_limited),
        start_new_session=True,  # a group to kill whole; the terminal's Ctrl-C goes to us only
    )
    return _Popened(proc)


def worker_env(files: TrialFiles, memory_limited: bool) -> dict[str, str]:
    """The worker's environment: ours, less a parent torchrun's, with its own temp dirs."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    if memory_limited:
        # glibc reserves 64 MiB of address space per malloc arena, up to 8 per core: on a
        # many-core machine that alone can exhaust RLIMIT_AS and fake an OOM.
        env.setdefault("MALLOC_ARENA_MAX", "2")
    env[PARENT_ENV] = str(os.getpid())
    env["TMPDIR"] = str(files.tmp)
    env["TORCHINDUCTOR_CACHE_DIR"] = str(files.inductor)
    env["PYTHONUNBUFFERED"] = "1"  # the output tail is current even when the worker is killed
    env["PYTHONFAULTHANDLER"] = "1"  # a segfault/abort leaves its Python stack in the log
    return env


def stop_group(proc: WorkerProcess, grace_s: float) -> None:
    """SIGTERM the worker's group, SIGKILL it after ``grace_s``, and reap the worker.

    The group is signalled even when the worker itself has exited: ranks or helpers it
    started may still be alive in it. SIGKILL is sent even if the grace period is cut
    short (a second Ctrl-C).
    """
    try:
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        # Only a process stuck in the kernel outlives SIGKILL; the search goes on regardless.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProgressReader:
    """Reads the complete lines the worker appended to ``progress.jsonl`` since last time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.written_at: float | None = None
        """The file's last modification (``time.time()``'s clock) as of the last read."""

    def read(self) -> list[StepRecord]:
        """New step records; a line still being written is left for the next call."""
        try:
            with open(self.path, "rb") as handle:
                self.written_at = os.fstat(handle.fileno()).st_mtime
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        lines = chunk[:end].decode("utf-8").splitlines()
        return [StepRecord.model_validate(json.loads(line)) for line in lines if line]


def output_tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of the worker's log (undecodable bytes replaced)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _TAIL_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])
