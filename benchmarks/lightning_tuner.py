"""The "Lightning's Tuner" contender: what ``Tuner.scale_batch_size`` + ``Tuner.lr_find`` pick.

    python benchmarks/lightning_tuner.py examples/mlp_digits.py --max-batch-size 256 [--seed 0]

A Task's model, data, loss and optimizer kind are wrapped in a ``LightningModule`` exactly as
a Lightning user would (a ``batch_size`` and an ``lr`` attribute, a shuffled
``train_dataloader``, ``configure_optimizers`` building the Task's optimizer), then Lightning's
tuner runs as documented: ``scale_batch_size(mode="power")`` first, ``lr_find()`` (its
defaults: ``min_lr=1e-8``, ``max_lr=1``, ``num_training=100``) at the batch it found, and
``.suggestion()``. The pick is the Task's baseline :class:`~autotune.config.TrainConfig` with
``micro_batch_size`` and ``optimizer.lr`` replaced; precision and everything else stay the
baseline's, because Lightning's tuner does not choose them.

Bounding the batch search fairly: ``scale_batch_size`` doubles the batch until a CUDA
out-of-memory error. On a CPU there is none, so it would double until its ``max_trials``
(25) or ``max_val`` (8192) and pick a batch autotune's search space could never hold. Here it
starts at the baseline batch (``init_val``) and gets ``max_trials`` so that the largest batch
it tries is the largest power-of-two multiple of the baseline batch that is at most
``max_batch_size`` (the largest micro-batch in autotune's search space). ``max_val`` is set
above that batch on purpose: Lightning returns a batch that reaches ``max_val`` without
running it, while the last of ``max_trials`` batches is run. Lightning itself also stops
doubling once the batch reaches a map-style dataset's length.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.warnings import PossibleUserWarning
from pytorch_lightning.tuner.tuning import Tuner
from torch.utils.data import DataLoader, IterableDataset

from autotune._hugepages import restart_for_measuring
from autotune.config import TrainConfig, validate_train_config
from autotune.runtime import build_optimizer
from autotune.task import Task, load_task

__all__ = ["LightningPick", "TaskModule", "lightning_pick", "power_trials"]

_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")


@dataclass(frozen=True)
class LightningPick:
    """What Lightning's tuner picked for a Task.

    Attributes:
        batch_size: ``scale_batch_size``'s batch (a power-of-two multiple of the baseline's).
        lr: ``lr_find().suggestion()``, or the baseline lr when it suggested none.
        tuner_wall_s: wall seconds both tuner calls took together (no model or data setup).
        config: the baseline config with ``micro_batch_size`` and ``optimizer.lr`` replaced.
        lr_fallback: True when ``lr_find`` suggested nothing and ``lr`` is the baseline's.
    """

    batch_size: int
    lr: float
    tuner_wall_s: float
    config: TrainConfig
    lr_fallback: bool = False


class TaskModule(pl.LightningModule):
    """A Task as a Lightning user would write it: ``batch_size`` and ``lr`` are attributes."""

    def __init__(self, task: Task, baseline: TrainConfig, seed: int) -> None:
        super().__init__()
        self.task = task
        self.baseline = baseline
        self.seed = seed
        self.model = task.build_model()
        self.batch_size = baseline.micro_batch_size
        self.lr = baseline.optimizer.lr
        self._dataset = task.build_dataset()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The Task's loss on one batch."""
        return self.task.compute_loss(self.model, batch)

    def train_dataloader(self) -> DataLoader[Any]:
        """Batches of ``self.batch_size``, shuffled by a generator seeded with ``seed``."""
        iterable = isinstance(self._dataset, IterableDataset)
        return DataLoader(
            self._dataset,
            batch_size=self.batch_size,
            shuffle=not iterable,
            generator=None if iterable else torch.Generator().manual_seed(self.seed),
            collate_fn=self.task.collate,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The Task's optimizer (by name or its own factory) at ``self.lr``."""
        config = self.baseline.optimizer.model_copy(update={"lr": self.lr})
        return build_optimizer(self.model, config, self.task)


def power_trials(init_val: int, max_batch_size: int) -> int:
    """``max_trials`` for power mode so the batch never exceeds ``max_batch_size``.

    Power mode tries ``init_val * 2**i`` for ``i < max_trials``.

    Raises:
        ValueError: ``max_batch_size`` is below ``init_val``.
    """
    if max_batch_size < init_val:
        raise ValueError(
            f"max_batch_size {max_batch_size} is below the baseline batch {init_val}; "
            f"pass the largest micro-batch of the search space."
        )
    return (max_batch_size // init_val).bit_length()


def lightning_pick(task_path: Path, *, max_batch_size: int, seed: int = 0) -> LightningPick:
    """Run Lightning's ``scale_batch_size`` then ``lr_find`` on a task file; return the pick.

    The batch search starts at the baseline batch and is bounded by ``max_batch_size``
    (see :func:`power_trials` and the module docstring: on a CPU nothing else stops it).
    Torch uses every core this process may run on; Lightning's info logs are silenced;
    its checkpoints and any temp files go to a temp dir that is removed afterwards.
    """
    task = load_task(task_path)
    baseline = task.baseline_config()
    trials = power_trials(baseline.micro_batch_size, max_batch_size)
    with (
        _quiet_lightning(),
        _all_cores(),
        tempfile.TemporaryDirectory(prefix="lightning-tuner-") as scratch,
        _tmpdir(scratch),
    ):
        pl.seed_everything(seed, verbose=False)
        module = TaskModule(task, baseline, seed)
        tuner = Tuner(_trainer(scratch))
        start = time.perf_counter()
        batch = _scale_batch(tuner, module, trials)
        finder = tuner.lr_find(module)
        wall = time.perf_counter() - start
    suggested = None if finder is None else finder.suggestion()
    lr = _usable_lr(suggested)
    return LightningPick(
        batch_size=batch,
        lr=lr if lr is not None else baseline.optimizer.lr,
        tuner_wall_s=wall,
        config=_with_picks(baseline, batch, lr if lr is not None else baseline.optimizer.lr),
        lr_fallback=lr is None,
    )


def _scale_batch(tuner: Tuner, module: TaskModule, trials: int) -> int:
    """``scale_batch_size`` in power mode from the baseline batch for ``trials`` trials."""
    init_val = module.batch_size
    found = tuner.scale_batch_size(
        module,
        mode="power",
        init_val=init_val,
        max_trials=trials,
        max_val=init_val * 2**trials,  # never reached: max_trials stops first (see above)
    )
    # None only under fast_dev_run, which this Trainer does not set.
    return int(found) if found is not None else init_val


def _usable_lr(suggested: float | None) -> float | None:
    """The suggestion when it is a finite positive number, else None (use the baseline's)."""
    if suggested is None or not math.isfinite(suggested) or suggested <= 0:
        return None
    return float(suggested)


def _trainer(root: str) -> pl.Trainer:
    """A plain single-CPU Trainer with nothing but training: no logger, checkpoints or bars."""
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )


def _with_picks(baseline: TrainConfig, batch: int, lr: float) -> TrainConfig:
    """``baseline`` with Lightning's batch and lr; the global batch is recomputed."""
    data = baseline.model_dump()
    data.update(micro_batch_size=batch, global_batch_size=None)
    data["optimizer"] = {**data["optimizer"], "lr": lr}
    return validate_train_config(data, "Lightning's pick")


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's loggers at WARNING and its hints that do not apply off, restored afterwards."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # "The 'train_dataloader' does not have many workers": in-memory data needs none.
            warnings.filterwarnings("ignore", ".*does not have many workers.*", PossibleUserWarning)
            # The tuner sets max_steps itself; the max_epochs default of 1000 never binds.
            warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
            # A torch deprecation inside Lightning's own pytree helper, not in the Task.
            warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


@contextlib.contextmanager
def _all_cores() -> Iterator[None]:
    """Torch threads = the cores this process may run on, restored afterwards."""
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _tmpdir(path: str) -> Iterator[None]:
    """``TMPDIR`` (and :mod:`tempfile`'s default) point at ``path``, restored afterwards."""
    before_env, before_default = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = path, path
    try:
        yield
    finally:
        tempfile.tempdir = before_default
        if before_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before_env


def main(argv: list[str] | None = None) -> int:
    """CLI: print Lightning's pick for a task file and how long the tuner took."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("task", type=Path, help="task file, e.g. examples/mlp_digits.py")
    parser.add_argument(
        "--max-batch-size", type=int, required=True, help="largest micro-batch of the space"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pick = lightning_pick(args.task, max_batch_size=args.max_batch_size, seed=args.seed)
    baseline = load_task(args.task).baseline_config()
    note = " (lr_find suggested none: baseline lr)" if pick.lr_fallback else ""
    print(f"task:       {args.task}")
    print(f"baseline:   batch {baseline.micro_batch_size}, lr {baseline.optimizer.lr:.3g}")
    print(f"lightning:  batch {pick.batch_size}, lr {pick.lr:.3g}{note}")
    print(f"tuner wall: {pick.tuner_wall_s:.1f} s")
    return 0


if __name__ == "__main__":
    restart_for_measuring()  # measure under the allocator the CLI trains with
    sys.exit(main())
