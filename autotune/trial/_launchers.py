"""Starting trial workers: a fresh interpreter each (:data:`PLAIN`), or forked from a
server that imported torch and the task once (:class:`ForkServer`).

A trial worker spends most of a short trial importing: torch (about 2 s on a 2-core CPU),
then what the task imports (scikit-learn, another 2 s). A search runs dozens of trials of
one task, so the fork server pays that once and forks each worker from the warm image.
The child is the same worker, in its own session, with its own environment, log and temp
dir; what it measures is measured by the same code. Where forking cannot be trusted,
the worker is a fresh interpreter instead, and :attr:`ForkServer.fallback` says why:

- a trial with a memory limit: ``RLIMIT_AS`` must bound a fresh address space, and glibc's
  arena cap (``MALLOC_ARENA_MAX``) only takes effect when a process starts;
- a task file that initialises CUDA when imported (a forked child cannot use CUDA then);
- a server that died, could not start, or stopped answering.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO, Any

from autotune.trial import _process
from autotune.trial._process import TrialFiles, WorkerProcess

__all__ = ["PLAIN", "ForkServer", "Launcher"]

SERVER_MODULE = "autotune._trial_zygote"
_READY_TIMEOUT_S = 300.0  # torch + the task's imports: seconds, minutes only on a cold disk
_FORK_TIMEOUT_S = 30.0  # a fork is milliseconds; a server this slow is stuck
_CLOSE_TIMEOUT_S = 5.0  # the server exits at once when its stdin ends
log = logging.getLogger(__name__)


class Launcher(ABC):
    """Starts a trial's worker, given its files, its log and whether memory is limited."""

    @abstractmethod
    def launch(self, files: TrialFiles, log: IO[bytes], memory_limited: bool) -> WorkerProcess:
        """Start the worker of ``files`` in a new session, writing its output to ``log``."""

    def prepare(self) -> None:
        """Begin what the first launch would otherwise start itself, without waiting for
        it (:meth:`await_ready` waits); nothing for a launcher that needs nothing."""
        return None

    def await_ready(self) -> None:
        """Wait until what :meth:`prepare` began is ready (or has failed, in which case
        launches fall back as they would have)."""
        return None


class _Plain(Launcher):
    def launch(self, files: TrialFiles, log: IO[bytes], memory_limited: bool) -> WorkerProcess:
        return _process.launch(files, log, memory_limited)


PLAIN: Launcher = _Plain()
"""Every worker a fresh interpreter (``python -m autotune._trial_worker``)."""


class _Forked(WorkerProcess):
    """A worker forked by the server: the server reports its exit status."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid
        self.status: int | None = None

    @property
    def returncode(self) -> int | None:
        return self.status

    def poll(self) -> int | None:
        if self.status is None:
            self.server.collect(0.0)
        return self.status

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"trial worker {self.pid}", timeout or 0.0)
            self.server.collect(left)
        return self.status


class ForkServer(Launcher):
    """Forks the trial workers of one task file from a warm server process.

    The server starts at the first launch (which pays torch's and the task's imports, once)
    and ends with :meth:`close`, when this object is collected, or when this process dies
    (its stdin ends; it then kills its workers' groups). Memory-limited trials, and every
    trial once :attr:`fallback` is set, start as fresh interpreters (:data:`PLAIN`).
    """

    def __init__(
        self, task_path: Path | str, log_path: Path | str, *, warm_task: bool = True
    ) -> None:
        self.task_path, self.log_path = str(task_path), Path(log_path)
        # False: the server forks before the task's imports (benchmarks.fork_bench)
        self.warm_task = warm_task
        self.fallback: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self._replies: collections.deque[dict[str, Any]] = collections.deque()
        self._children: dict[int, _Forked] = {}
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._ready = threading.Event()  # the server said ready: it may have workers now

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (it leads its own process group)."""
        running = self._proc is not None and self._proc.poll() is None
        return self._proc.pid if running and self._proc is not None else None

    def launch(self, files: TrialFiles, log: IO[bytes], memory_limited: bool) -> WorkerProcess:
        if not memory_limited and self.fallback is None:
            self.prepare()
            self.await_ready()
            worker = self._fork(files)
            if worker is not None:
                return worker
        return PLAIN.launch(files, log, memory_limited)

    def close(self) -> None:
        """End the server and any worker it still runs; later launches are plain."""
        if self.fallback is None:
            self.fallback = "the fork server was closed"
        self._shut()

    def collect(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for the server's replies; record the exits."""
        self._read(timeout)
        while self._replies and "exit" in self._replies[0]:
            self._exited(self._replies.popleft())

    def prepare(self) -> None:
        """Start the server process (its imports take seconds) unless it runs or retired."""
        if self._proc is not None or self.fallback is not None:
            return
        env = {k: v for k, v in os.environ.items() if k not in _process.DIST_ENV}
        env.update(PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as server_log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    SERVER_MODULE,
                    *([] if self.warm_task else ["--no-task"]),
                    self.task_path,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=server_log,
                env=env,
                start_new_session=True,  # the terminal's Ctrl-C is the supervisor's to handle
            )
        self._finalizer = weakref.finalize(self, _shut_server, self._proc, self._ready)

    def await_ready(self) -> None:
        """Read the started server's ready line once; a server that fails to start is
        retired (later launches are plain)."""
        if self._proc is None or self._ready.is_set() or self.fallback is not None:
            return
        ready = self._reply(_READY_TIMEOUT_S)
        if ready is not None and ready.get("ready"):
            self._ready.set()
        elif ready is not None:
            self._broken(str(ready.get("reason", "the fork server did not start")))

    def _fork(self, files: TrialFiles) -> WorkerProcess | None:
        """The forked worker, or None when the server cannot fork (it is then retired)."""
        request = {
            "spec": str(files.spec),
            "result": str(files.result),
            "progress": str(files.progress),
            "log": str(files.log),
            "env": _process.worker_env(files, memory_limited=False),
        }
        if not self._write(request):
            return None
        reply = self._reply(_FORK_TIMEOUT_S)
        if reply is None or "pid" not in reply:
            self._broken(f"the fork server answered {reply!r} to a fork")
            return None
        worker = _Forked(self, int(reply["pid"]))
        self._children[worker.pid] = worker
        return worker

    def _write(self, request: dict[str, Any]) -> bool:
        if self.fallback is not None or self._proc is None or self._proc.stdin is None:
            return False
        try:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError as exc:
            self._broken(f"the fork server stopped taking requests ({exc})")
            return False
        return True

    def _reply(self, timeout: float) -> dict[str, Any] | None:
        """The server's next reply that is not an exit (exits are recorded on the way);
        None when it has none in ``timeout`` seconds or is gone (then it is retired)."""
        deadline = time.monotonic() + timeout
        while self.fallback is None:
            self.collect(max(0.0, deadline - time.monotonic()) if not self._replies else 0.0)
            if self._replies:
                return self._replies.popleft()
            if time.monotonic() >= deadline:
                self._broken(f"the fork server did not answer in {timeout:.0f} s")
        return None

    def _read(self, timeout: float | None) -> None:
        if self._proc is None or self._proc.stdout is None or self.fallback is not None:
            self._orphan_all()
            return
        fd = self._proc.stdout.fileno()
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            self._broken("the fork server exited")
            return
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        self._replies.extend(json.loads(line) for line in lines if line.strip())

    def _exited(self, reply: dict[str, Any]) -> None:
        worker = self._children.pop(int(reply["exit"]), None)
        if worker is not None:
            worker.status = int(reply["status"])

    def _broken(self, reason: str) -> None:
        self.fallback = f"{reason}; trials start as fresh processes (server log: {self.log_path})"
        log.warning("%s", self.fallback)
        self._shut()

    def _shut(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._orphan_all()

    def _orphan_all(self) -> None:
        """Workers whose server is gone are killed by their own parent watch (within a
        second), and the supervisor kills their groups too: count them killed."""
        for worker in self._children.values():
            worker.status = -signal.SIGKILL
        self._children.clear()


def _shut_server(proc: subprocess.Popen[bytes], ready: threading.Event) -> None:
    """Close the server's stdin (it then kills its workers and exits), and reap it. A
    server still importing (not yet ready) reads no stdin and has no workers: it is
    killed at once, so that a search stopped in its first trial does not wait for torch."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=_CLOSE_TIMEOUT_S if ready.is_set() else 0.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_CLOSE_TIMEOUT_S)
    with contextlib.suppress(OSError):
        if proc.stdout is not None:
            proc.stdout.close()
