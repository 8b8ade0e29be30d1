"""Peak memory of a training step, measured the way each device allows.

CUDA: ``torch.cuda.max_memory_allocated`` over the whole run. CPU: torch has no memory
statistics and RSS is wrong (glibc keeps freed pages), so one steady-state step runs under
``torch.profiler(profile_memory=True)``; its allocation and free events, summed in time
order on top of the bytes already held (parameters, buffers, optimizer state), give the
peak. The same events inside the first forward pass give the activation memory.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile, record_function

__all__ = ["MemoryReading", "StepMemoryMeter", "held_bytes"]

_FORWARD = "autotune::forward"


@dataclass(frozen=True)
class MemoryReading:
    """Bytes of one measured step. ``activation_bytes``: held after the first forward."""

    peak_bytes: int
    persistent_bytes: int
    activation_bytes: int
    source: str


def held_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storage counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        for storage in _storages(tensor):
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _storages(tensor: torch.Tensor) -> list[torch.UntypedStorage]:
    """The storages behind ``tensor``: a sparse COO tensor (an SGD momentum buffer of a sparse
    embedding's gradient) has none of its own, only its indices' and values'."""
    if tensor.layout == torch.sparse_coo:
        return [tensor._indices().untyped_storage(), tensor._values().untyped_storage()]
    return [tensor.untyped_storage()]


class StepMemoryMeter:
    """Measures one step: wrap it in :meth:`step` and its first forward in :meth:`forward`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reading: MemoryReading | None = None
        self._cuda_forward: list[int] = []

    @contextlib.contextmanager
    def step(self, persistent_bytes: int) -> Iterator[None]:
        """Measure the step run inside; the result lands in :attr:`reading`."""
        if self.device.type == "cuda":
            yield from self._cuda_step()
            return
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():
            prof.start()
        try:
            yield
        finally:
            with _quiet_stderr():
                prof.stop()
        self.reading = _reading_from_events(prof, persistent_bytes)

    def _cuda_step(self) -> Iterator[None]:
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self._cuda_forward = []
        yield
        torch.cuda.synchronize(self.device)
        activation = self._cuda_forward[1] - self._cuda_forward[0] if self._cuda_forward else 0
        self.reading = MemoryReading(
            peak_bytes=torch.cuda.max_memory_allocated(self.device),
            persistent_bytes=before,
            activation_bytes=max(0, activation),
            source="torch.cuda.max_memory_allocated",
        )

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """Mark the first forward pass of the measured step."""
        if self.device.type == "cuda":
            self._cuda_forward.append(torch.cuda.memory_allocated(self.device))
            yield
            self._cuda_forward.append(torch.cuda.memory_allocated(self.device))
            return
        with record_function(_FORWARD):
            yield


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: kineto logs every profiler start/stop from C++."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _reading_from_events(prof: profile, persistent: int) -> MemoryReading:
    """Sum the profiler's raw allocation/free events (exact timestamps) in time order."""
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    memory = sorted(
        ((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"),  # type: ignore[union-attr]
        key=lambda item: item[0],
    )
    span = next(((e.start_ns(), e.end_ns()) for e in events if e.name() == _FORWARD), None)
    current = peak = activation = 0
    for stamp, delta in memory:
        current += delta
        peak = max(peak, current)
        if span is not None and span[0] <= stamp <= span[1]:
            activation += delta
    return MemoryReading(
        peak_bytes=persistent + peak,
        persistent_bytes=persistent,
        activation_bytes=max(0, activation),
        source="torch.profiler memory events",
    )
