"""Every file in examples/ is a real task whose loss falls on a CPU within seconds."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from autotune.config import TrainConfig
from autotune.runtime import RunOptions, RunResult, apply_checkpointing, find_blocks, train
from autotune.task import load_task
from tests.conftest import EXAMPLES

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.py"))


def _falls(result: RunResult, by: float = 0.9) -> bool:
    losses = [r.loss for r in result.steps]
    window = max(3, len(losses) // 5)
    return statistics.fmean(losses[-window:]) < by * statistics.fmean(losses[:window])


def test_every_example_is_covered() -> None:
    assert {p.name for p in EXAMPLE_FILES} >= {
        "mlp_digits.py",
        "cnn_digits.py",
        "tiny_gpt.py",
        "hf_gpt2.py",
        "lstm_text.py",
    }


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_baseline_loss_falls(path: Path) -> None:
    task = load_task(path)
    result = train(task, task.baseline_config(), RunOptions(steps=30, device="cpu"))
    assert result.summary.loss_finite and _falls(result), [r.loss for r in result.steps]


def test_hf_gpt2_blocks_are_checkpointed_with_the_same_gradients() -> None:
    task = load_task(EXAMPLES / "hf_gpt2.py")
    plain, checkpointed = task.model(), task.model()
    checkpointed.load_state_dict(plain.state_dict())
    blocks = [f"transformer.h.{i}" for i in range(4)]
    # The Task's pattern and the automatic finder agree on the four GPT2Blocks.
    assert [name for name, _ in find_blocks(plain)] == blocks
    assert apply_checkpointing(checkpointed, "full", task.blocks) == blocks
    x, y = task.dataset()[0]
    batch = [x[None, :16], y[None, :16]]  # one short window: a forward and backward in ms
    for model in (plain, checkpointed):
        task.loss(model, batch).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def _tiny_gpt(**values: Any) -> RunResult:
    task = load_task(EXAMPLES / "tiny_gpt.py")
    config = TrainConfig.model_validate({"optimizer": {"name": "adamw", "lr": 1e-3}, **values})
    return train(task, config, RunOptions(steps=30, device="cpu"))


@pytest.mark.slow
def test_tiny_gpt_bf16_checkpointed_accumulated_cosine() -> None:
    result = _tiny_gpt(
        micro_batch_size=8,
        grad_accum_steps=2,
        precision="bf16-mixed",
        activation_checkpointing="full",
        schedule={"name": "cosine", "warmup_steps": 5, "min_lr_ratio": 0.1},
    )
    assert len(result.summary.checkpointed_blocks) == 4
    assert _falls(result)


@pytest.mark.slow
def test_tiny_gpt_world_size_two() -> None:
    result = _tiny_gpt(micro_batch_size=8, world_size=2)
    assert result.summary.world_size == 2 and _falls(result)
