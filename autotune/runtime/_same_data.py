"""Every rank of a distributed run must train on one dataset.

Ranks are separate processes, and each builds the Task's dataset itself. A ``build_dataset``
that is not deterministic across processes builds a different one in each: Python's
``hash()`` of a ``str`` is salted per process (``PYTHONHASHSEED``), so a vocabulary of
``hash(token) % V`` ids differs between ranks, as does an unseeded random split. DDP then
averages gradients of different tasks without a word, and ``autotune check`` measures
another dataset than the search did. So before training, the ranks compare a fingerprint
of their dataset's first samples, and differing ones stop the run with the fix. Samples
that differ from one read to the next (random augmentation in ``__getitem__``, which may
rightly differ between ranks) tell nothing, and are not compared.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from autotune.errors import TaskError
from autotune.task import Task, first_samples

__all__ = ["FINGERPRINT_SAMPLES", "check_same_data", "fingerprint"]

# The first samples hashed: a different vocabulary or split shows in any of them, and 16
# cost nothing next to a training step, whatever a sample holds.
FINGERPRINT_SAMPLES = 16


def fingerprint(dataset: Dataset[Any], samples: int = FINGERPRINT_SAMPLES) -> str:
    """A sha256 of the dataset's first ``samples`` samples: their tensors' dtypes, shapes
    and bytes, numpy arrays alike, and every other leaf's ``repr``."""
    digest = hashlib.sha256()
    for sample in first_samples(dataset, samples):
        _feed(digest, sample)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{flat.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())


def _steady(dataset: Dataset[Any]) -> str | None:
    """The fingerprint where two reads agree; None where the samples change from one read
    to the next. The random generators are as before (augmentation draws nothing extra)."""
    with _generators_kept():
        first, second = fingerprint(dataset), fingerprint(dataset)
    return first if first == second else None


@contextlib.contextmanager
def _generators_kept() -> Iterator[None]:
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def check_same_data(task: Task, dataset: Dataset[Any]) -> None:
    """Raise :class:`TaskError` on every rank where the ranks' datasets differ in their
    first samples, each rank's read the same twice (one gather of a short string)."""
    gathered: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, _steady(dataset))
    if None in gathered or len(set(gathered)) == 1:
        return
    differ = [rank for rank, theirs in enumerate(gathered) if theirs != gathered[0]]
    raise TaskError(
        f"{task.where()}: build_dataset built different data on different ranks (rank 0's "
        f"first {FINGERPRINT_SAMPLES} samples differ from rank {differ[0]}'s), so the ranks "
        "would not train one dataset. Make build_dataset the same in every process: "
        "Python's hash() of a str differs per process (use zlib.crc32 or hashlib), and "
        "seed any random split or sample."
    )
