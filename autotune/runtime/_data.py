"""Micro-batches for one rank in a fixed, seed-determined order, resumable by position.

The order depends only on (seed, epoch, rank, world size), never on timing, so two
configs see the same data, and a resumed run sees exactly what the killed one would have.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

from autotune.errors import ConfigError, TaskError
from autotune.task import Task

__all__ = ["BatchStream", "to_device"]


class BatchStream:
    """An endless iterator of collated micro-batches for ``rank`` of ``world`` ranks.

    Map-style datasets are reshuffled every epoch with ``seed + epoch`` and sharded
    ``rank::world`` (a DistributedSampler's contract, padded by dropping the remainder);
    incomplete last batches are dropped so every step has the same size.
    IterableDatasets are sharded by taking every ``world``-th sample.
    """

    def __init__(
        self, task: Task, dataset: Dataset[Any], micro_batch: int, rank: int, world: int, seed: int
    ) -> None:
        self.task, self.dataset = task, dataset
        self.micro_batch, self.rank, self.world, self.seed = micro_batch, rank, world, seed
        self.consumed = 0  # micro-batches handed out so far by this rank
        self._pending: list[Any] = []  # batches :meth:`peek_ahead` read ahead, in order
        self._iterable = isinstance(dataset, IterableDataset)
        self._batches = self._epoch_batches() if self._iterable else self._map_batches()

    @property
    def batches_per_epoch(self) -> int | None:
        """Micro-batches per epoch for this rank; ``None`` for an IterableDataset."""
        if self._iterable:
            return None
        return (len(self.dataset) // self.world) // self.micro_batch  # type: ignore[arg-type]

    def skip(self, count: int) -> None:
        """Advance by ``count`` micro-batches (resume); cheap for map-style datasets."""
        if self._iterable:
            for _ in range(count):
                next(self)
            return
        self._pending.clear()  # read ahead from the old position; regenerated below
        self.consumed += count
        self._batches = self._map_batches()

    def peek(self) -> Any:
        """The next micro-batch, without handing it out: the next ``next()`` returns it."""
        return self.peek_ahead(1)[0]

    def peek_ahead(self, count: int) -> list[Any]:
        """The next ``count`` micro-batches, without handing them out: the next ``count``
        calls of ``next()`` return them, in this order."""
        while len(self._pending) < count:
            self._pending.append(next(self._batches))
        return self._pending[:count]

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        batch = self._pending.pop(0) if self._pending else next(self._batches)
        self.consumed += 1
        return batch

    def _map_batches(self) -> Iterator[Any]:
        per_epoch = self.batches_per_epoch or 0
        if per_epoch == 0:
            size = len(self.dataset)  # type: ignore[arg-type]
            raise ConfigError(
                f"{self.task.where()}: the dataset has {size} samples, fewer than one "
                f"micro-batch per rank (micro_batch_size={self.micro_batch} x "
                f"world_size={self.world}); lower micro_batch_size."
            )
        epoch, offset = divmod(self.consumed, per_epoch)
        while True:
            order = self._epoch_order(epoch)
            for b in range(offset, per_epoch):
                indices = order[b * self.micro_batch : (b + 1) * self.micro_batch]
                yield self.task.collate(_fetch(self.dataset, indices))
            epoch, offset = epoch + 1, 0

    def _epoch_order(self, epoch: int) -> list[int]:
        size = len(self.dataset)  # type: ignore[arg-type]
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        usable = size - size % self.world
        return order[self.rank : usable : self.world]

    def _epoch_batches(self) -> Iterator[Any]:
        while True:
            samples: list[Any] = []
            seen = 0
            stream: Iterable[Any] = self.dataset  # type: ignore[assignment]
            for i, sample in enumerate(stream):
                seen += 1
                if i % self.world != self.rank:
                    continue
                samples.append(sample)
                if len(samples) == self.micro_batch:
                    yield self.task.collate(samples)
                    samples = []
            if seen < self.micro_batch * self.world:
                raise TaskError(
                    f"{self.task.where()}: the IterableDataset yielded {seen} samples, fewer "
                    f"than one step needs ({self.micro_batch} x {self.world} ranks); make it "
                    f"yield more or lower micro_batch_size."
                )


def _fetch(dataset: Dataset[Any], indices: list[int]) -> list[Any]:
    getitems = getattr(dataset, "__getitems__", None)
    if getitems is not None:
        return list(getitems(indices))
    return [dataset[i] for i in indices]


def to_device(batch: Any, device: torch.device, float_dtype: torch.dtype | None = None) -> Any:
    """Move every tensor in a nested batch to ``device``; cast floats to ``float_dtype``."""
    if isinstance(batch, torch.Tensor):
        if float_dtype is not None and batch.is_floating_point():
            return batch.to(device=device, dtype=float_dtype, non_blocking=True)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device, float_dtype) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device, float_dtype) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, float_dtype) for v in batch)
    return batch
