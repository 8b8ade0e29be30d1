"""The trial fork server: ``python -m autotune._trial_zygote TASK.py``.

Started by :class:`autotune.trial.ForkServer`, never by hand. It pays once, per search,
what every trial worker would otherwise pay at its start: importing torch, autotune and
what the task file imports (scikit-learn, transformers). Then, for each trial, it forks a
child that becomes an ordinary trial worker (:func:`autotune._trial_worker.main`) in its
own session, with its own log, environment and temp dir. The child re-imports the task
file itself (its module-level code runs fresh each trial); only the imports and the
dataset (built once here, see :meth:`autotune.task.Task.build_dataset`) are shared.

Protocol, one JSON object per line. In on stdin:
``{"spec": ..., "result": ..., "progress": ..., "log": ..., "env": {...}}``.
Out on the reply pipe (the original stdout; fd 1 itself is pointed at stderr, so that
nothing the task prints can corrupt the protocol): ``{"ready": true}`` or
``{"ready": false, "reason": ...}`` once, then ``{"pid": N}`` per fork and
``{"exit": N, "status": S}`` when that child ends (S as ``Popen.returncode``: the exit
status, or minus the signal). End of stdin (the supervisor closed it, or died) kills
every child's group and ends the server.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import IO, Any

import torch

from autotune import _trial_worker
from autotune.trial._process import PARENT_ENV

__all__ = ["main"]

# How soon a child's exit is seen where there are no pidfds. With pidfds the server sleeps
# until a request or an exit: waking 50 times a second beside a 2-thread trial on 2 cores
# preempts one of its OpenMP threads, and the whole parallel region waits for it.
_CHILD_POLL_S = 0.02
_FORK_FAILED = 70  # a child's exit status when it could not become a worker (EX_SOFTWARE)
_USAGE = "usage: python -m autotune._trial_zygote [--no-task] TASK.py"
# --no-task: fork before the task file's imports (each child imports them), for
# benchmarks.fork_bench to tell what preloading them changes in a worker's samples/s.
_NO_TASK = "--no-task"
# What torch imports lazily inside every trial, so imported once here: torch.optim's
# Optimizer.__init__ imports torch._dynamo, 2-2.5 s on 2 cores, which was 90% of a forked
# cnn_digits trial's start-up (launch to its first step) before it was warmed.
LAZY_IMPORTS = ("torch._dynamo",)


def main(argv: Sequence[str]) -> int:
    """Serve forks until stdin ends; the exit status is 2 for wrong arguments, else 0."""
    warm_task = _NO_TASK not in argv
    paths = [arg for arg in argv if arg != _NO_TASK]
    if len(paths) != 1 or len(argv) - len(paths) > 1:
        print(_USAGE, file=sys.stderr)
        return 2
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the task's prints go to the server's log, never into the protocol
    threads = torch.get_num_threads()
    # One thread until the fork: GNU OpenMP's thread pool does not survive fork(), and a
    # child of a process that ran a parallel region hangs in its first parallel op.
    torch.set_num_threads(1)
    _warm(paths[0] if warm_task else None)
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        _send(reply, ready=False, reason="the task file initialised CUDA when imported")
        return 0
    _send(reply, ready=True)
    _serve(reply, threads)
    return 0


def _warm(task_path: str | None) -> None:
    """Import the task file once (unless None) and build its dataset, so that what it
    imports and the dataset are there before any fork, and what torch itself imports on a
    trial's way to its first step (LAZY_IMPORTS).

    Failures are left for the children: each imports the file again and reports them as
    a trial's structured error, as a plain worker would.
    """
    from autotune.task import load_task

    for name in LAZY_IMPORTS:  # none starts a thread or a parallel region: fork stays safe
        importlib.import_module(name)
    if task_path is None:
        return
    with contextlib.suppress(BaseException):
        load_task(task_path).build_dataset()  # every fork shares it (Task.build_dataset)


def _serve(reply: IO[str], threads: int) -> None:
    children: dict[int, int | None] = {}  # pid -> its pidfd (None: polled for its exit)
    pending = b""
    stdin = sys.stdin.fileno()
    while True:
        readable = _wait(stdin, children)
        for pid, status in _reap(children):
            _send(reply, exit=pid, status=status)
        if stdin not in readable:
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:
            _kill_all(children)
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                pid = _fork(json.loads(line), threads, reply, children)
                children[pid] = _pidfd(pid)
                _send(reply, pid=pid)


def _wait(stdin: int, children: dict[int, int | None]) -> list[int]:
    """Block until a request comes or a child ends. Children are watched through their
    pidfds; without those (not Linux >= 5.3) they are polled every _CHILD_POLL_S."""
    pidfds = [fd for fd in children.values() if fd is not None]
    polled = len(pidfds) < len(children)
    readable, _, _ = select.select([stdin, *pidfds], [], [], _CHILD_POLL_S if polled else None)
    return readable


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when ``pid`` exits, where the kernel has them."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _reap(children: dict[int, int | None]) -> list[tuple[int, int]]:
    ended = []
    for pid, pidfd in list(children.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            del children[pid]
            if pidfd is not None:
                os.close(pidfd)
            ended.append((pid, os.waitstatus_to_exitcode(status)))
    return ended


def _kill_all(children: dict[int, int | None]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _fork(
    request: dict[str, Any], threads: int, reply: IO[str], children: dict[int, int | None]
) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    status = _FORK_FAILED
    try:
        reply.close()
        for pidfd in children.values():  # its siblings' exits are the server's to watch
            if pidfd is not None:
                os.close(pidfd)
        status = _become_worker(request, threads)
    except BaseException:  # a child must never return into the server's loop
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)  # no interpreter shutdown, as the plain worker: the result is on disk


def _become_worker(request: dict[str, Any], threads: int) -> int:
    """In the child: take a session, files and environment as a fresh worker has them."""
    os.setsid()  # its own group, so that the supervisor can stop it and its ranks whole
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[PARENT_ENV] = str(os.getppid())  # the server: it dies with the supervisor
    tempfile.tempdir = None  # read TMPDIR again: the trial's own
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", threads)))
    return _trial_worker.main([request["spec"], request["result"], request["progress"]])


def _send(reply: IO[str], **fields: Any) -> None:
    reply.write(json.dumps(fields) + "\n")
    reply.flush()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
