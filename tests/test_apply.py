"""`autotune.apply`: the tuned config in a user's own loop, through the runtime's own code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import autotune
from autotune.config import TrainConfig, TunedConfig, save_tuned_config
from autotune.errors import ConfigError
from autotune.runtime import RunOptions, train
from autotune.task import Task
from tests._tuned import make_train, make_tuned
from tests.conftest import ROOT

README = ROOT / "README.md"


def readme_example() -> str:
    """The first python block of the README's "Use the tuned config in your own loop"."""
    text = README.read_text()
    section = text.split("## Use the tuned config in your own loop", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README section has no python example"
    return match.group(1)


def test_readme_example_trains_and_the_loss_falls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tuned_config(make_tuned(), tmp_path / "tuned.yaml")  # bf16, accum 2, full ckpt, cosine
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    losses = namespace["losses"]
    setup = namespace["setup"]
    assert isinstance(losses, list) and isinstance(setup, autotune.TunedSetup)
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert setup.checkpointed_blocks == [f"blocks.{i}" for i in range(4)]
    assert setup.optimizer.state_dict()["state"], "the optimizer stepped"
    assert setup.scheduler.last_epoch == 60  # one LR step per optimizer step, not per micro


class Blocks(nn.Module):
    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(n))
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for layer in self.layers:
            x = layer(x)
        return self.out(x)


def test_bf16_autocast_gives_bf16_matmuls() -> None:
    setup = autotune.apply(
        make_train(precision="bf16-mixed"), Blocks(), device="cpu", total_steps=20
    )
    with setup.autocast():
        out = setup.model(torch.randn(4, 8))
    assert out.dtype == torch.bfloat16
    assert next(setup.module.parameters()).dtype == torch.float32  # mixed: fp32 weights
    assert not setup.scaler.is_enabled()


def test_fp32_autocast_is_a_no_op() -> None:
    setup = autotune.apply(make_train(precision="32-true"), Blocks(), device="cpu", total_steps=20)
    with setup.autocast():
        assert setup.model(torch.randn(4, 8)).dtype == torch.float32


def test_fp16_mixed_enables_the_grad_scaler() -> None:
    setup = autotune.apply(make_train(precision="16-mixed"), Blocks(), device="cpu", total_steps=20)
    assert setup.scaler.is_enabled()
    with setup.autocast():
        assert setup.model(torch.randn(4, 8)).dtype == torch.float16


def test_bf16_true_casts_weights_and_inputs() -> None:
    setup = autotune.apply(
        make_train(precision="bf16-true"), Blocks(), device="cpu", total_steps=20
    )
    assert {p.dtype for p in setup.module.parameters()} == {torch.bfloat16}
    x, y = setup.to_device((torch.randn(4, 8), torch.tensor([0, 1, 0, 1])))
    assert x.dtype == torch.bfloat16 and y.dtype == torch.int64
    assert setup.model(x).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("full", ["layers.0", "layers.1", "layers.2", "layers.3"]),
        ({"every_k": 2}, ["layers.0", "layers.2"]),
        ("none", []),
    ],
)
def test_checkpointing_wraps_the_expected_blocks(mode: object, expected: list[str]) -> None:
    model = Blocks()
    setup = autotune.apply(
        make_train(activation_checkpointing=mode), model, device="cpu", total_steps=20
    )
    assert setup.checkpointed_blocks == expected
    wrapped = [name for name, m in model.named_modules() if "forward" in vars(m)]
    assert wrapped == expected  # forward replaced on exactly those instances
    keys = set(Blocks().state_dict())
    assert set(model.state_dict()) == keys  # state_dict keys unchanged


def test_checkpointing_names_blocks_when_told() -> None:
    setup = autotune.apply(
        make_train(activation_checkpointing="full"),
        Blocks(),
        device="cpu",
        total_steps=20,
        blocks=["layers.1"],
    )
    assert setup.checkpointed_blocks == ["layers.1"]


def test_step_accumulates_then_steps_once() -> None:
    setup = autotune.apply(make_train(grad_accum_steps=3), Blocks(), device="cpu", total_steps=20)
    stepped = []
    for _ in range(6):
        with setup.autocast():
            loss = setup.model(torch.randn(4, 8)).float().pow(2).mean()
        stepped.append(setup.step(loss))
    assert stepped == [False, False, True, False, False, True]
    assert [setup.is_boundary(i) for i in range(6)] == stepped
    assert setup.scheduler.last_epoch == 2
    assert all(p.grad is None for p in setup.module.parameters())  # zeroed after the step


def _lr_task() -> Task:
    def build_model() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def build_dataset() -> torch.utils.data.Dataset[torch.Tensor]:
        return torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    return Task(model=build_model, dataset=build_dataset, loss=loss)


@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "cosine", "warmup_steps": 3, "min_lr_ratio": 0.1},
        {"name": "linear", "warmup_steps": 2},
        {"name": "onecycle", "min_lr_ratio": 0.05},
        {"name": "constant", "warmup_steps": 4},
    ],
)
def test_scheduler_lrs_match_the_runtime(schedule: dict[str, object]) -> None:
    config = TrainConfig.model_validate(
        {"micro_batch_size": 8, "optimizer": {"name": "adamw", "lr": 0.01}, "schedule": schedule}
    )
    steps = 12
    run = train(_lr_task(), config, RunOptions(steps=steps, measure_memory=False, device="cpu"))
    setup = autotune.apply(config, _lr_task().build_model(), device="cpu", total_steps=steps)
    mine = []
    for _ in range(steps):
        setup.optimizer.step()
        setup.scheduler.step()
        mine.append(setup.scheduler.get_last_lr()[0])
    assert mine == pytest.approx([record.lr for record in run.steps])


def test_the_runs_total_steps_outrank_the_tuned_horizon() -> None:
    """A tuned cosine to 0 over 10 steps applied to a 40-step run: its LR was 0 from step
    10 on, as the config's span was taken over the one the caller gave."""
    config = TrainConfig.model_validate(
        {
            "micro_batch_size": 8,
            "optimizer": {"lr": 0.01},
            "schedule": {"name": "cosine", "total_steps": 10},
        }
    )
    setup = autotune.apply(config, _lr_task().build_model(), device="cpu", total_steps=40)
    lrs = []
    for _ in range(40):
        setup.optimizer.step()
        setup.scheduler.step()
        lrs.append(setup.scheduler.get_last_lr()[0])
    assert lrs[18] == pytest.approx(0.005, rel=0.05) and lrs[37] > 0  # half way at step 20
    tuned = autotune.apply(config, _lr_task().build_model(), device="cpu")
    for _ in range(10):
        tuned.optimizer.step()
        tuned.scheduler.step()
    assert tuned.scheduler.get_last_lr()[0] == 0.0  # no run length given: the tuned span


def test_builds_the_configs_optimizer_or_keeps_yours() -> None:
    setup = autotune.apply(make_train(), Blocks(), device="cpu", total_steps=20)
    assert isinstance(setup.optimizer, torch.optim.AdamW)
    decays = sorted(g["weight_decay"] for g in setup.optimizer.param_groups)
    assert decays == [0.0, 0.1]  # matrices decay, biases do not: the runtime's groups
    model = Blocks()
    mine = torch.optim.SGD(model.parameters(), lr=0.5)
    setup = autotune.apply(make_train(), model, mine, device="cpu", total_steps=20)
    assert setup.optimizer is mine


def test_accepts_a_path_and_a_tuned_config(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    tuned: TunedConfig = make_tuned()
    save_tuned_config(tuned, path)
    from_path = autotune.apply(path, Blocks(), device="cpu", total_steps=20)
    from_str = autotune.apply(str(path), Blocks(), device="cpu", total_steps=20)
    from_obj = autotune.apply(tuned, Blocks(), device="cpu", total_steps=20)
    assert from_path.config == from_str.config == from_obj.config == tuned.train


def test_schedule_without_a_length_says_how_to_give_one() -> None:
    with pytest.raises(ConfigError, match=r"schedule cosine needs .* total_steps=N"):
        autotune.apply(make_train(), Blocks(), device="cpu")


def test_custom_optimizer_needs_yours() -> None:
    config = make_train(optimizer={"name": "custom", "lr": 0.1})
    with pytest.raises(ConfigError, match=r"pass yours: autotune.apply\(config, model, optimizer"):
        autotune.apply(config, Blocks(), device="cpu", total_steps=10)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; check the path"):
        autotune.apply(tmp_path / "nope.yaml", Blocks())
