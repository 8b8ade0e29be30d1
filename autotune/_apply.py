"""The tuned config in the user's own training loop: :func:`apply` and :class:`TunedSetup`.

``autotune run`` trains a Task with the one runtime; users with their own loop get the
same pieces from the same code (:mod:`autotune.runtime`): the precision plan's autocast
and GradScaler, the checkpointed blocks, the optimizer with its weight-decay groups, and
the LR schedule (:class:`~autotune.runtime.LRMultiplier`). The loop stays theirs.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autotune.config import TrainConfig, TunedConfig, load_tuned_config
from autotune.errors import ConfigError
from autotune.runtime._checkpointing import apply_checkpointing
from autotune.runtime._data import to_device
from autotune.runtime._loop import resolve_device
from autotune.runtime._optim import build_optimizer, build_scheduler, clip_gradients
from autotune.runtime._precision import PrecisionPlan, precision_plan
from autotune.task import BlocksSpec

__all__ = ["TunedSetup", "apply"]

ConfigSource = TunedConfig | TrainConfig | str | os.PathLike[str]


@dataclass
class TunedSetup:
    """Everything a loop needs to train as the tuned config says.

    Call ``model`` (checkpointed, cast for ``bf16-true``, compiled when the config says
    so); ``module`` is the same network unwrapped (for ``state_dict``). One optimizer step
    takes :attr:`micro_batches` micro-batches: pass each micro-batch's loss to
    :meth:`step`, which scales, accumulates, clips, steps the optimizer, the GradScaler
    and the scheduler on the boundary, and zeroes the gradients.
    """

    config: TrainConfig
    model: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: PrecisionPlan
    checkpointed_blocks: list[str] = field(default_factory=list)
    micro_step: int = 0  # micro-batches passed to step() so far

    @property
    def micro_batches(self) -> int:
        """Micro-batches per optimizer step (``grad_accum_steps``)."""
        return self.config.grad_accum_steps

    @property
    def micro_batch_size(self) -> int:
        """Samples per micro-batch: the ``batch_size`` of your DataLoader."""
        return self.config.micro_batch_size

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's autocast context (a no-op for ``32-true`` and ``bf16-true``)."""
        return self.precision.autocast(self.device)

    def to_device(self, batch: Any) -> Any:
        """Move a (nested) batch to the device; floats become the parameters' dtype (bf16
        under ``bf16-true``, else float32, float64 data included), as the model was cast."""
        return to_device(batch, self.device, self.precision.param_dtype)

    def is_boundary(self, micro_step: int) -> bool:
        """Whether micro-batch ``micro_step`` (counted from 0) ends an optimizer step."""
        return (micro_step + 1) % self.micro_batches == 0

    def step(self, loss: torch.Tensor) -> bool:
        """Backward one micro-batch's loss; on a boundary, take the optimizer step.

        Returns whether the optimizer stepped. The loss is divided by
        :attr:`micro_batches` (the gradient is the global batch's mean) and scaled by the
        GradScaler under ``16-mixed``.
        """
        scaled = self.scaler.scale(loss.float() / self.micro_batches)
        scaled.backward()  # type: ignore[no-untyped-call]
        boundary = self.is_boundary(self.micro_step)
        self.micro_step += 1
        if boundary:
            self._optimizer_step()
        return boundary

    def _optimizer_step(self) -> None:
        clip = self.config.gradient_clip_val
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.module.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():
            # A step the GradScaler skipped makes torch warn about the call order; harmless.
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


def apply(
    config: ConfigSource,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    total_steps: int | None = None,
    device: str | torch.device | None = None,
    blocks: BlocksSpec | None = None,
) -> TunedSetup:
    """Apply a tuned config (a ``TunedConfig``, a ``TrainConfig`` or a tuned.yaml path).

    Args:
        model: your fp32 model; it is modified in place (blocks checkpointed, moved to
            ``device``, cast to bf16 under ``bf16-true``) and returned as ``setup.model``.
        optimizer: your own optimizer, used as is (its learning rates are the schedule's
            peak); ``None`` builds the config's (``name``, ``lr``, ``weight_decay``).
        total_steps: the optimizer steps your run trains; the schedule spans them (default:
            the config's ``schedule.total_steps``, the horizon the search tuned: a longer
            run past it would train on at the schedule's final LR, 0 for most). Needed for
            linear, cosine and onecycle where the config has no span.
        device: ``None`` is CUDA when present (this process's ``LOCAL_RANK``), else CPU.
        blocks: which modules to checkpoint, as ``Task(blocks=...)``; ``None`` finds them.

    ``world_size > 1``: start the script with torchrun and wrap ``setup.model`` in
    ``DistributedDataParallel`` yourself; ``is_boundary`` says when gradients must sync.
    Pass ``find_unused_parameters=True`` where tuned.yaml's
    ``measured.find_unused_parameters`` is true (some parameters get no gradient on some
    batches: plain DDP fails on a later step; ``autotune show`` names them).
    """
    train = _train_config(config)
    where = _resolve(device)
    plan = precision_plan(train.precision, where)
    names = apply_checkpointing(model, train.activation_checkpointing, blocks)
    model.to(device=where, dtype=plan.param_dtype)
    if optimizer is None:
        if train.optimizer.name == "custom":
            raise ConfigError(
                "the config's optimizer is 'custom' (the Task's own function); pass yours: "
                "autotune.apply(config, model, optimizer=...)."
            )
        optimizer = build_optimizer(model, train.optimizer)
    span = _span(train, total_steps)
    spanning = train.schedule.model_copy(update={"total_steps": span})  # the run's, if given
    scheduler = build_scheduler(optimizer, spanning, span)
    scaler = plan.grad_scaler(where) or torch.amp.GradScaler(where.type, enabled=False)
    net: nn.Module = torch.compile(model) if train.compile else model  # type: ignore[assignment]
    return TunedSetup(train, net, model, optimizer, scheduler, scaler, where, plan, names)


def _train_config(config: ConfigSource) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, TunedConfig):
        return config.train
    if isinstance(config, (str, Path, os.PathLike)):
        return load_tuned_config(Path(config)).train
    raise ConfigError(
        f"autotune.apply takes a TunedConfig, a TrainConfig or a tuned.yaml path, but got "
        f"{type(config).__name__}."
    )


def _resolve(device: str | torch.device | None) -> torch.device:
    if device is None:
        return resolve_device("auto", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def _span(train: TrainConfig, total_steps: int | None) -> int:
    schedule = train.schedule
    if total_steps is not None:  # the run's own length: the schedule spans it
        return total_steps
    if schedule.total_steps is not None:
        return schedule.total_steps
    if schedule.name == "constant":
        return schedule.warmup_steps + 1  # flat after warmup: the span does not matter
    raise ConfigError(
        f"schedule {schedule.name} needs the number of optimizer steps it spans, and the "
        f"config has no schedule.total_steps; pass autotune.apply(..., total_steps=N)."
    )
