"""``transformers.TrainingArguments`` keyword arguments (JSON).

``TrainingArguments(output_dir=..., **kwargs)`` gets the batch, accumulation, precision,
checkpointing, optimizer, schedule and clipping. HF's own defaults are overridden where
they differ from the config's meaning: it clips at 1.0 unless told ``max_grad_norm=0``.
Names are transformers 5's (``activation_checkpointing``, ``every_n_layers``); a note
gives the older name when checkpointing is on.
"""

from __future__ import annotations

import json
from typing import Any

from autotune.config import EveryK, TrainConfig, TunedConfig
from autotune.export._base import ExportContext, Exported, Exporter, unused_parameters

__all__ = ["HfExporter"]

_OPTIM = {"adamw": "adamw_torch_fused", "adam": "adamw_torch_fused", "sgd": "sgd"}
_OPTIM |= {"adagrad": "adagrad", "rmsprop": "rmsprop"}


class HfExporter(Exporter):
    """TrainingArguments kwargs; what HF cannot express comes back as notes."""

    name = "hf"
    description = "transformers.TrainingArguments keyword arguments as JSON"

    def export(self, tuned: TunedConfig, ctx: ExportContext) -> Exported:
        train = tuned.train
        notes: list[str] = []
        kwargs: dict[str, Any] = {
            "per_device_train_batch_size": train.micro_batch_size,
            "gradient_accumulation_steps": train.grad_accum_steps,
            "bf16": train.precision == "bf16-mixed",
            "fp16": train.precision == "16-mixed",
            "torch_compile": train.compile,
            "max_grad_norm": train.gradient_clip_val or 0.0,  # 0 disables HF's default clip
        }
        if ctx.device == "cpu":
            kwargs["use_cpu"] = True
        unused, _ = unused_parameters(tuned)
        if unused is not None:  # HF's default (None) guesses; the probe measured it
            kwargs["ddp_find_unused_parameters"] = unused
        kwargs |= _checkpointing(train, notes)
        kwargs |= _optimizer(train, notes)
        kwargs |= _schedule(train, self.steps(tuned, ctx), notes)
        notes += _other_notes(train, ctx)
        return Exported(json.dumps(kwargs, indent=2) + "\n", notes)


def _checkpointing(train: TrainConfig, notes: list[str]) -> dict[str, Any]:
    mode = train.activation_checkpointing
    if mode == "none":
        return {"activation_checkpointing": False}
    kwargs: dict[str, Any] = {"activation_checkpointing": True}
    every = mode.every_k if isinstance(mode, EveryK) else 1
    if every > 1:
        kwargs["activation_checkpointing_kwargs"] = {"every_n_layers": every}
    notes.append(
        "transformers < 5 names activation_checkpointing gradient_checkpointing and cannot "
        "checkpoint every n-th layer; rename it there."
    )
    return kwargs


def _optimizer(train: TrainConfig, notes: list[str]) -> dict[str, Any]:
    opt = train.optimizer
    kwargs: dict[str, Any] = {"learning_rate": opt.lr, "weight_decay": opt.weight_decay}
    if opt.name == "custom":
        notes.append(
            "optimizer custom (the Task's own function) has no TrainingArguments name: pass it "
            "as Trainer(optimizers=(optimizer, None)); HF's default AdamW is used otherwise."
        )
        return kwargs
    kwargs["optim"] = _OPTIM[opt.name]
    if opt.name == "adam" and opt.weight_decay > 0:
        notes.append(
            f"optimizer adam with L2 weight_decay {opt.weight_decay:g} has no HF name: exported "
            f"as AdamW, whose decay is decoupled (pass your own optimizer to keep L2)."
        )
    if opt.name in ("sgd", "rmsprop") and opt.momentum > 0:
        kwargs["optim_args"] = f"momentum={opt.momentum:g}"
    return kwargs


def _schedule(train: TrainConfig, steps: int | None, notes: list[str]) -> dict[str, Any]:
    sched = train.schedule
    kwargs: dict[str, Any] = {"warmup_steps": sched.warmup_steps}
    if steps is not None:
        kwargs["max_steps"] = steps
        if sched.total_steps is not None and sched.total_steps != steps:
            notes.append(
                f"the schedule spans {sched.total_steps} steps but max_steps is {steps}: HF's "
                f"schedule spans max_steps."
            )
    if sched.name == "constant":
        kwargs["lr_scheduler_type"] = "constant_with_warmup" if sched.warmup_steps else "constant"
        return kwargs
    if sched.name == "linear":
        kwargs["lr_scheduler_type"] = "linear"
        if sched.min_lr_ratio > 0:
            notes.append(
                f"schedule linear with min_lr_ratio {sched.min_lr_ratio:g}: HF's linear decays "
                f"to 0; pass your own scheduler (autotune.apply(...).scheduler) to keep the floor."
            )
        return kwargs
    if sched.name == "onecycle":
        notes.append(
            "schedule onecycle has no HF equivalent: exported as warmup then cosine to "
            f"min_lr_ratio {sched.min_lr_ratio:g} (OneCycle starts at lr/25, not 0)."
        )
        if not sched.warmup_steps and steps is not None:
            kwargs["warmup_steps"] = max(1, round(0.3 * steps))
    if sched.min_lr_ratio > 0:
        kwargs["lr_scheduler_type"] = "cosine_with_min_lr"
        kwargs["lr_scheduler_kwargs"] = {"min_lr_rate": sched.min_lr_ratio}
    else:
        kwargs["lr_scheduler_type"] = "cosine"
    return kwargs


def _other_notes(train: TrainConfig, ctx: ExportContext) -> list[str]:
    notes = []
    if train.world_size > 1:
        notes.append(
            f"world_size {train.world_size} is not a TrainingArguments field: launch with "
            f"torchrun --nproc-per-node {train.world_size} your_script.py."
        )
    if train.precision == "bf16-true":
        notes.append(
            "precision bf16-true (bf16 weights) is not a TrainingArguments flag: load the "
            "model in bfloat16 (model.to(torch.bfloat16)); bf16 autocast is left off."
        )
    if train.precision == "16-mixed" and ctx.device == "cpu":
        notes.append("fp16 on CPU: HF may refuse fp16=True without a GPU; train on a GPU.")
    return notes
