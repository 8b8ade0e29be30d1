"""A realistic TunedConfig built in Python, as the search's confirmation builds one."""

from __future__ import annotations

from typing import Any

from autotune.config import (
    BaselineMeasured,
    DeviceInfo,
    Measured,
    Provenance,
    Spread,
    TrainConfig,
    TunedConfig,
    train_digest,
)

BASELINE = TrainConfig.model_validate(
    {"micro_batch_size": 16, "optimizer": {"name": "adamw", "lr": 1e-3}}
)


def make_train(**overrides: Any) -> TrainConfig:
    """The tuned side: bf16, 2-way accumulation, checkpointing, a cosine schedule."""
    data: dict[str, Any] = {
        "micro_batch_size": 32,
        "grad_accum_steps": 2,
        "world_size": 1,
        "precision": "bf16-mixed",
        "activation_checkpointing": "full",
        "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.1},
        "schedule": {"name": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.1},
        "gradient_clip_val": 1.0,
    }
    data.update(overrides)
    return TrainConfig.model_validate(data)


def make_tuned(task: str | None = "model.py", **overrides: Any) -> TunedConfig:
    """A tuned config with the evidence a finished search writes."""
    train = make_train(**overrides)
    return TunedConfig(
        task=task,
        train=train,
        measured=Measured(
            train_digest=train_digest(train),
            device=DeviceInfo(kind="cpu", name="x86_64 [2 cores]", count=1, memory_bytes=8 << 30),
            throughput_samples_per_s=812.5,
            throughput_spread=Spread(median=812.5, low=790.0, high=830.1, n=3),
            peak_memory_bytes=123_456_789,
            mfu=0.231,
            target_loss=0.4321,
            time_to_target_s=4.2,
            time_to_target_spread=Spread(median=4.2, low=4.0, high=4.9, n=3),
            baseline=BaselineMeasured(
                train=BASELINE, throughput_samples_per_s=400.0, time_to_target_s=9.1
            ),
            speedup_vs_baseline=2.17,
            speedup_spread=Spread(median=2.17, low=1.9, high=2.3, n=3),
            throughput_speedup=Spread(median=2.03, low=1.95, high=2.1, n=3),
        ),
        provenance=Provenance(
            autotune_version="0.1.0",
            torch_version="2.13.0",
            study="postgresql://user:secret@db/autotune",
            study_name="model [bold]x[/]",
            trial=17,
            hardware="1x cpu x86_64",
        ),
    )
