"""An Accelerate config file (``accelerate launch --config_file FILE``), as YAML.

The keys are the ones ``accelerate config`` writes for a local machine, and the file
parses with ``accelerate.commands.config.config_args.ClusterConfig.from_yaml_file``,
which rejects unknown keys: gradient accumulation, the batch size, the optimizer and
checkpointing belong in the training script, so they come back as notes.
"""

from __future__ import annotations

from typing import Any

import yaml

from autotune.config import TunedConfig
from autotune.export._base import (
    ExportContext,
    Exported,
    Exporter,
    checkpointing_text,
    unused_parameters,
)

__all__ = ["AccelerateExporter"]

_MIXED = {"32-true": "no", "bf16-mixed": "bf16", "16-mixed": "fp16", "bf16-true": "no"}


class AccelerateExporter(Exporter):
    """A LOCAL_MACHINE ClusterConfig: processes, device, mixed precision, dynamo."""

    name = "accelerate"
    description = "an Accelerate config YAML (accelerate launch --config_file)"

    def export(self, tuned: TunedConfig, ctx: ExportContext) -> Exported:
        train = tuned.train
        cpu = ctx.device == "cpu"
        multi = "MULTI_CPU" if cpu else "MULTI_GPU"
        config: dict[str, Any] = {
            "compute_environment": "LOCAL_MACHINE",
            "debug": False,
            "distributed_type": multi if train.world_size > 1 else "NO",
            "downcast_bf16": "no",
            "enable_cpu_affinity": False,
            "machine_rank": 0,
            "main_training_function": "main",
            "mixed_precision": _MIXED[train.precision],
            "num_machines": 1,
            "num_processes": train.world_size,
            "rdzv_backend": "static",
            "same_network": True,
            "use_cpu": cpu,
        }
        if not cpu:
            config["gpu_ids"] = "all"
        if train.compile:
            config["dynamo_config"] = {"dynamo_backend": "INDUCTOR"}
        return Exported(yaml.safe_dump(config, sort_keys=False), self._notes(tuned))

    @staticmethod
    def _notes(tuned: TunedConfig) -> list[str]:
        train, opt, sched = tuned.train, tuned.train.optimizer, tuned.train.schedule
        notes = [
            f"grad_accum_steps {train.grad_accum_steps} has no key in an Accelerate config: "
            f"pass Accelerator(gradient_accumulation_steps={train.grad_accum_steps}) or set "
            f"ACCELERATE_GRADIENT_ACCUMULATION_STEPS={train.grad_accum_steps}.",
            f"micro_batch_size {train.micro_batch_size} has no key in an Accelerate config: "
            f"set DataLoader(batch_size={train.micro_batch_size}) (per process).",
            f"optimizer {opt.name} lr {opt.lr:g} weight_decay {opt.weight_decay:g} and schedule "
            f"{sched.name} (warmup {sched.warmup_steps} steps) have no key in an Accelerate "
            f"config: build them in your script (autotune.apply(...).optimizer / .scheduler).",
        ]
        if train.precision == "bf16-true":
            notes.append(
                "precision bf16-true (bf16 weights) is not an Accelerate mixed_precision: "
                "cast the model with model.to(torch.bfloat16) before accelerator.prepare."
            )
        if train.activation_checkpointing != "none":
            notes.append(
                f"activation_checkpointing {checkpointing_text(train)} has no key in an "
                f"Accelerate config: wrap the blocks in your script (autotune.apply does it)."
            )
        unused, which = unused_parameters(tuned)
        if unused:
            notes.append(
                f"{which}: DDP fails on a later step without find_unused_parameters: pass "
                f"Accelerator(kwargs_handlers=[DistributedDataParallelKwargs("
                f"find_unused_parameters=True)])."
            )
        if train.gradient_clip_val is not None:
            notes.append(
                f"gradient_clip_val {train.gradient_clip_val:g} has no key in an Accelerate "
                f"config: call accelerator.clip_grad_norm_(model.parameters(), "
                f"{train.gradient_clip_val:g}) before optimizer.step()."
            )
        return notes
