"""``pytorch_lightning.Trainer`` keyword arguments (JSON): ``Trainer(**kwargs)``.

The Trainer holds precision, accumulation, devices, strategy, clipping and the step
count; the batch size, optimizer and schedule live in the user's DataLoader and
``configure_optimizers``, so they come back as notes.
"""

from __future__ import annotations

import json
from typing import Any

from autotune.config import TunedConfig
from autotune.export._base import (
    ExportContext,
    Exported,
    Exporter,
    checkpointing_text,
    unused_parameters,
)

__all__ = ["LightningExporter"]


class LightningExporter(Exporter):
    """Exactly the ``Trainer`` kwargs the config determines; the rest as notes."""

    name = "lightning"
    description = "pytorch_lightning.Trainer keyword arguments as JSON"

    def export(self, tuned: TunedConfig, ctx: ExportContext) -> Exported:
        train = tuned.train
        kwargs: dict[str, Any] = {
            "accelerator": "gpu" if ctx.device == "cuda" else "cpu",
            "devices": train.world_size,
            "strategy": _strategy(tuned),
            "precision": train.precision,
            "accumulate_grad_batches": train.grad_accum_steps,
        }
        if train.gradient_clip_val is not None:
            kwargs["gradient_clip_val"] = train.gradient_clip_val
        steps = self.steps(tuned, ctx)
        if steps is not None:
            kwargs["max_steps"] = steps
        return Exported(json.dumps(kwargs, indent=2) + "\n", self._notes(tuned, ctx))

    @staticmethod
    def _notes(tuned: TunedConfig, ctx: ExportContext) -> list[str]:
        train, opt, sched = tuned.train, tuned.train.optimizer, tuned.train.schedule
        notes = [
            f"micro_batch_size {train.micro_batch_size} is not a Trainer argument: set "
            f"DataLoader(batch_size={train.micro_batch_size}) (per device).",
            f"optimizer {opt.name} lr {opt.lr:g} weight_decay {opt.weight_decay:g} is not a "
            f"Trainer argument: build it in configure_optimizers (autotune.apply(...).optimizer).",
            f"schedule {sched.name} (warmup {sched.warmup_steps} steps, min_lr_ratio "
            f"{sched.min_lr_ratio:g}) is not a Trainer argument: return it from "
            f"configure_optimizers with interval 'step' (autotune.apply(...).scheduler).",
        ]
        if train.activation_checkpointing != "none":
            notes.append(
                f"activation_checkpointing {checkpointing_text(train)} is not a Trainer "
                f"argument: wrap the blocks in your LightningModule (autotune.apply does it)."
            )
        if train.compile:
            notes.append("compile: true is not a Trainer argument: pass torch.compile(model).")
        unused, which = unused_parameters(tuned)
        if unused and train.world_size == 1:
            notes.append(
                f"{which}: on more than one device use strategy="
                f"'ddp_find_unused_parameters_true', or plain 'ddp' fails on a later step."
            )
        if train.precision == "16-mixed" and ctx.device == "cpu":
            notes.append(
                "Lightning runs precision 16-mixed on CPU as bf16-mixed; train on a GPU for fp16."
            )
        return notes


def _strategy(tuned: TunedConfig) -> str:
    """``auto`` on one device; ``ddp``, or the DDP that looks for parameters without a
    gradient every step where the probe found some or the task declares it (plain DDP fails
    on them)."""
    if tuned.train.world_size == 1:
        return "auto"
    unused, _ = unused_parameters(tuned)
    return "ddp_find_unused_parameters_true" if unused else "ddp"
