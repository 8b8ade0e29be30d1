"""Entering the loop: alone, as a rank under torchrun, or by launching ``world_size`` ranks.

A launch is torchrun-style: each rank is a fresh process with ``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set, joining an ``env://``
process group (gloo on CPU, NCCL on CUDA), with ``cores / world_size`` threads. Rank 0
streams its step records to the parent over a queue; the parent watches every rank and
stops them all, with a clear message, when one dies.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import signal
import socket
import time
import traceback
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from autotune.config import TrainConfig
from autotune.errors import AutotuneError, ConfigError, TaskError, TrainingError
from autotune.runtime._loop import DistContext, StepCallback, run_rank
from autotune.runtime._state import CHECKPOINT_NAME
from autotune.runtime._types import RunOptions, RunResult, StepRecord
from autotune.task import Task, load_task

__all__ = ["train"]

_POLL_S = 0.2  # how often the parent checks on its ranks
_GRACE_S = 10.0  # how long ranks get to exit on their own before they are killed
_ECHO_WAIT_S = 2.0  # after a rank's error, how long to look for a peer that died silently


def train(
    task: Task,
    config: TrainConfig,
    options: RunOptions,
    on_step: StepCallback | None = None,
) -> RunResult:
    """Train ``task`` with ``config``; the one loop behind probes, trials and ``autotune run``.

    With ``world_size > 1`` outside torchrun, this launches the ranks itself (the task must
    come from a file, so that each rank can import it) and returns rank 0's result.
    Inside torchrun (``WORLD_SIZE`` set), it runs this process's rank and returns its result.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world > 1:
        return _run_as_launched_rank(task, config, options, on_step, env_world)
    if config.world_size == 1:
        return run_rank(task, config, options, DistContext(), on_step)
    return _launch(task, config, options, on_step)


def threads_per_rank(world: int) -> int:
    """CPU threads per rank: the cores split evenly (oversubscribing halves throughput)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // world)


def _run_as_launched_rank(
    task: Task, config: TrainConfig, options: RunOptions, on_step: StepCallback | None, world: int
) -> RunResult:
    if config.world_size != world:
        raise ConfigError(
            f"world_size in the config must match the launcher's, but got world_size="
            f"{config.world_size} with WORLD_SIZE={world}; set --nproc-per-node "
            f"{config.world_size} or change the config."
        )
    ctx = DistContext(
        rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", 0))
    )
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(
            backend=_backend(options),
            timeout=datetime.timedelta(seconds=options.dist_timeout_s),
        )
    try:
        result = run_rank(task, config, options, ctx, on_step)
        if owns_group:
            dist.barrier()  # no rank tears gloo down while a peer still talks to it
        return result
    finally:
        if owns_group:
            dist.destroy_process_group()


def _backend(options: RunOptions) -> str:
    return "nccl" if options.device != "cpu" and torch.cuda.is_available() else "gloo"


# -- launching ranks ---------------------------------------------------------------------


def _launch(
    task: Task, config: TrainConfig, options: RunOptions, on_step: StepCallback | None
) -> RunResult:
    if task.source is None:
        raise ConfigError(
            f"world_size={config.world_size} needs a task loaded from a file, so that every "
            f"rank can import it; use autotune.load_task('model.py')."
        )
    context = mp.get_context("spawn")
    messages = context.Queue()
    env = _rank_env(config.world_size)
    procs = [
        context.Process(
            target=_rank_main,
            args=(rank, env, task.source, config.model_dump(mode="json"), options, messages),
            name=f"autotune-rank{rank}",
        )
        for rank in range(config.world_size)
    ]
    for proc in procs:
        proc.start()
    try:
        return _Supervisor(procs, messages, on_step, options).wait()
    finally:
        _stop(procs)


def _rank_env(world: int) -> dict[str, str]:
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "OMP_NUM_THREADS": str(threads_per_rank(world)),
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_main(
    rank: int,
    env: dict[str, str],
    source: str,
    config: dict[str, Any],
    options: RunOptions,
    messages: Any,
) -> None:
    """A launched rank: join the group, train, send rank 0's records and result home."""
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    try:
        task = load_task(source)
        send: StepCallback = lambda record: messages.put(("step", record.model_dump()))  # noqa: E731
        result = train(task, TrainConfig.model_validate(config), options, send)
        if rank == 0:
            messages.put(("result", result.model_dump()))
    except AutotuneError as exc:
        messages.put(("error", rank, type(exc).__name__, str(exc)))
        raise SystemExit(1) from None
    except BaseException as exc:
        summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
        messages.put(("error", rank, "crash", summary))
        raise SystemExit(1) from None


class _Supervisor:
    """Relays rank 0's progress and turns any rank's failure into one clear error."""

    def __init__(
        self,
        procs: Sequence[BaseProcess],
        messages: Any,
        on_step: StepCallback | None,
        options: RunOptions,
    ) -> None:
        self.procs, self.messages, self.on_step, self.options = procs, messages, on_step, options
        self.result: RunResult | None = None
        self.error: tuple[int, str, str] | None = None
        self.reported: set[int] = set()  # ranks that sent an error before exiting
        self.last_step = 0

    def wait(self) -> RunResult:
        while True:
            self._drain(timeout=_POLL_S)
            if self.error is not None:
                raise self._root_cause(self.error)
            dead = [p for p in self.procs if p.exitcode not in (None, 0)]
            if dead and self.result is not None and self.result.summary.steps_completed:
                return self.result  # training finished; a rank died in teardown, after it
            if dead:
                self._drain(timeout=1.0)  # its own error message may still be in flight
                if self.error is not None:
                    raise self._root_cause(self.error)
                raise self._died(dead[0])
            if all(p.exitcode == 0 for p in self.procs):
                self._drain(timeout=1.0)
                if self.result is None:
                    raise TrainingError("every rank exited but rank 0 sent no result.")
                return self.result

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "step":
            record = StepRecord.model_validate(message[1])
            self.last_step = record.step
            if self.on_step is not None:
                self.on_step(record)
        elif kind == "result":
            self.result = RunResult.model_validate(message[1])
        elif kind == "error":
            self.reported.add(message[1])
            if self.error is None or (self.error[1] == "crash" and message[2] != "crash"):
                # A named error (TaskError: a parameter DDP missed) is the cause; a crash
                # that came first is its echo in a peer's collective ("connection closed").
                self.error = (message[1], message[2], message[3])

    def _root_cause(self, first: tuple[int, str, str]) -> AutotuneError:
        """The error to report for ``rank``'s: when another rank died without a word (a
        signal, ``os._exit``), ``rank``'s is only the echo of that death in a collective
        (gloo: "connection closed by peer"), so the death is reported, naming that rank;
        when another rank's named error arrives meanwhile, that one is reported."""
        deadline = time.monotonic() + _ECHO_WAIT_S
        while True:
            rank, kind, text = self.error or first
            if kind in ("TaskError", "ConfigError"):
                return self._error_from_rank(rank, kind, text)
            silent = [
                p
                for i, p in enumerate(self.procs)
                if i not in self.reported and p.exitcode not in (None, 0)
            ]
            if silent:
                return self._died(silent[0])
            if time.monotonic() >= deadline:
                return self._error_from_rank(rank, kind, text)
            self._drain(timeout=_POLL_S / 4)

    def _error_from_rank(self, rank: int, kind: str, text: str) -> AutotuneError:
        if kind == "TaskError":
            return TaskError(text)
        if kind == "ConfigError":
            return ConfigError(text)
        return TrainingError(f"rank {rank} failed at step {self.last_step + 1}: {text}")

    def _died(self, proc: BaseProcess) -> TrainingError:
        code = proc.exitcode or 0
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        rank = self.procs.index(proc)
        return TrainingError(
            f"rank {rank} {how} after step {self.last_step}; the other ranks were stopped. "
            f"{self._checkpoint_note()}"
        )

    def _checkpoint_note(self) -> str:
        save_dir = self.options.save_dir
        if save_dir is None or not (save_dir / CHECKPOINT_NAME).exists():
            return "No checkpoint was written; use --save-dir to be able to resume."
        return f"The last checkpoint in {save_dir} is intact; rerun with --resume to continue."


def _stop(procs: Sequence[BaseProcess]) -> None:
    """Terminate ranks still alive, killing those that ignore SIGTERM."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + _GRACE_S
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=_GRACE_S)
    with contextlib.suppress(Exception):
        for proc in procs:
            proc.close()
