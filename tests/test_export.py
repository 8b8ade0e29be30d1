"""`autotune export`: each format builds the real object it is for, and nothing is dropped."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from autotune.config import TunedConfig, load_tuned_config, save_tuned_config
from autotune.export import EXPORTERS, ExportContext, export
from tests._tuned import make_tuned
from tests.conftest import TINY_TASK
from tests.test_cli_errors import error_line

runner = CliRunner()
VENV_BIN = Path(sys.executable).parent


def invoke(*args: str) -> Result:
    from autotune.cli import app

    return runner.invoke(app, ["export", *args])


def write(tuned: TunedConfig, tmp_path: Path, name: str = "tuned.yaml") -> Path:
    path = tmp_path / name
    save_tuned_config(tuned, path)
    return path


def notes_of(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# -- yaml / json -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_data_formats_load_back_unchanged(fmt: str, tmp_path: Path) -> None:
    tuned = make_tuned()
    result = invoke(str(write(tuned, tmp_path)), "--to", fmt)
    assert result.exit_code == 0, result.output
    out = tmp_path / f"again.{fmt}"
    out.write_text(result.stdout)
    assert load_tuned_config(out) == tuned
    assert result.stderr == ""  # the whole config: nothing to note


# -- lightning ---------------------------------------------------------------------------


def _trainer(kwargs: dict[str, Any]) -> Any:
    import pytorch_lightning as pl

    return pl.Trainer(logger=False, enable_checkpointing=False, **kwargs)


def test_lightning_kwargs_build_the_trainer(tmp_path: Path) -> None:
    result = invoke(str(write(make_tuned(), tmp_path)), "--to", "lightning", "--steps", "40")
    assert result.exit_code == 0, result.output
    kwargs = json.loads(result.stdout)
    assert set(kwargs) == {
        "accelerator",
        "devices",
        "strategy",
        "precision",
        "accumulate_grad_batches",
        "gradient_clip_val",
        "max_steps",
    }
    trainer = _trainer(kwargs)
    assert trainer.precision == "bf16-mixed"
    assert trainer.accumulate_grad_batches == 2
    assert trainer.gradient_clip_val == 1.0
    assert trainer.max_steps == 40
    notes = "\n".join(notes_of(result))
    for what in ("micro_batch_size 32", "optimizer adamw lr 0.003", "schedule cosine"):
        assert what in notes
    assert "activation_checkpointing full" in notes
    assert all(line.startswith("note: ") for line in notes_of(result))


def test_lightning_ddp_and_true_bf16() -> None:
    tuned = make_tuned(world_size=2, precision="bf16-true", gradient_clip_val=None)
    kwargs = json.loads(export(tuned, "lightning", ExportContext(device="cpu")).text)
    assert kwargs["strategy"] == "ddp" and kwargs["devices"] == 2
    assert "gradient_clip_val" not in kwargs and "max_steps" not in kwargs
    trainer = _trainer(kwargs)
    assert trainer.precision == "bf16-true"
    assert trainer.num_devices == 2
    assert type(trainer.strategy).__name__ == "DDPStrategy"


def _with_unused(tuned: TunedConfig, names: list[str], declared: bool | None = None) -> TunedConfig:
    assert tuned.measured is not None
    update = {"unused_parameters": names, "find_unused_parameters": declared}
    measured = tuned.measured.model_copy(update=update)
    return tuned.model_copy(update={"measured": measured})


def test_parameters_without_a_gradient_get_the_ddp_that_looks_for_them() -> None:
    """A model with an auxiliary head the loss never uses: plain DDP fails on its second
    step ("Expected to have finished reduction in the prior iteration")."""
    cpu = ExportContext(device="cpu")
    two = _with_unused(make_tuned(world_size=2, gradient_clip_val=None), ["aux.weight"])
    kwargs = json.loads(export(two, "lightning", cpu).text)
    assert kwargs["strategy"] == "ddp_find_unused_parameters_true"
    assert _trainer(kwargs).strategy._ddp_kwargs["find_unused_parameters"] is True
    one = export(_with_unused(make_tuned(), ["aux.weight", "aux.bias"]), "lightning", cpu)
    assert json.loads(one.text)["strategy"] == "auto"
    assert any(
        "2 trainable parameter(s) get no gradient (aux.weight, aux.bias)" in n for n in one.notes
    )
    hf = json.loads(export(_with_unused(make_tuned(), ["aux.weight"]), "hf", cpu).text)
    assert hf["ddp_find_unused_parameters"] is True
    assert json.loads(export(make_tuned(), "hf", cpu).text)["ddp_find_unused_parameters"] is False
    bare = TunedConfig(train=make_tuned().train)  # a hand-written file: nothing measured
    assert "ddp_find_unused_parameters" not in json.loads(export(bare, "hf", cpu).text)
    notes = export(_with_unused(two, ["aux.weight"]), "accelerate", cpu).notes
    assert any("DistributedDataParallelKwargs(find_unused_parameters=True)" in n for n in notes)
    assert not any("find_unused" in n for n in export(make_tuned(), "accelerate", cpu).notes)


def test_a_task_s_declaration_outranks_the_names_the_probe_found() -> None:
    """Task(find_unused_parameters=True): a model whose data decides which parameters it
    uses, where the probe's batches may have reached them all."""
    cpu = ExportContext(device="cpu")
    two = make_tuned(world_size=2, gradient_clip_val=None)
    declared = export(_with_unused(two, [], declared=True), "lightning", cpu)
    assert json.loads(declared.text)["strategy"] == "ddp_find_unused_parameters_true"
    hf = json.loads(export(_with_unused(make_tuned(), [], declared=True), "hf", cpu).text)
    assert hf["ddp_find_unused_parameters"] is True
    notes = export(_with_unused(two, [], declared=True), "accelerate", cpu).notes
    assert any(n.startswith("the task declares Task(find_unused_parameters=True)") for n in notes)
    declined = _with_unused(two, ["bright.weight"], declared=False)
    assert json.loads(export(declined, "lightning", cpu).text)["strategy"] == "ddp"


def test_lightning_notes_fp16_on_cpu() -> None:
    exported = export(make_tuned(precision="16-mixed"), "lightning", ExportContext(device="cpu"))
    assert any("16-mixed on CPU" in note for note in exported.notes)


# -- hf ----------------------------------------------------------------------------------


def _training_args(kwargs: dict[str, Any], tmp_path: Path) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path / "hf"), **kwargs)


def test_hf_kwargs_build_training_arguments(tmp_path: Path) -> None:
    result = invoke(str(write(make_tuned(), tmp_path)), "--to", "hf", "--steps", "100")
    assert result.exit_code == 0, result.output
    args = _training_args(json.loads(result.stdout), tmp_path)
    assert args.per_device_train_batch_size == 32
    assert args.gradient_accumulation_steps == 2
    assert args.bf16 is True and args.fp16 is False
    assert args.activation_checkpointing is True
    assert args.activation_checkpointing_kwargs is None  # full: every layer
    assert args.learning_rate == pytest.approx(3e-3)
    assert args.weight_decay == pytest.approx(0.1)
    assert args.lr_scheduler_type == "cosine_with_min_lr"
    assert args.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert args.warmup_steps == 10 and args.max_steps == 100
    assert args.max_grad_norm == 1.0
    assert args.optim == "adamw_torch_fused"
    assert args.use_cpu is True


def test_hf_schedule_matches_ours_at_the_ends(tmp_path: Path) -> None:
    import torch
    from transformers import get_scheduler

    from autotune.runtime import build_scheduler

    tuned = make_tuned()
    kwargs = json.loads(export(tuned, "hf", ExportContext(steps=50)).text)
    args = _training_args(kwargs, tmp_path)
    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    mine = build_scheduler(ours, tuned.train.schedule, 50)
    hf = get_scheduler(
        args.lr_scheduler_type,
        theirs,
        num_warmup_steps=args.warmup_steps,
        num_training_steps=args.max_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    lrs = []
    for _ in range(50):
        lrs.append((mine.get_last_lr()[0], hf.get_last_lr()[0]))
        ours.step()
        theirs.step()
        mine.step()
        hf.step()
    peak = max(lr for lr, _ in lrs)
    assert max(lr for _, lr in lrs) == pytest.approx(peak)  # same peak after the warmup
    assert lrs[-1][0] == pytest.approx(lrs[-1][1], rel=0.05)  # same floor: 0.1 x peak


def test_hf_without_clipping_turns_hf_clipping_off(tmp_path: Path) -> None:
    tuned = make_tuned(
        gradient_clip_val=None,
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
        schedule={"name": "constant", "warmup_steps": 5},
        precision="32-true",
        activation_checkpointing="none",
    )
    exported = export(tuned, "hf", ExportContext())
    args = _training_args(json.loads(exported.text), tmp_path)
    assert args.max_grad_norm == 0.0  # HF clips at 1.0 unless told otherwise
    assert args.optim == "sgd" and args.optim_args == "momentum=0.9"
    assert args.lr_scheduler_type == "constant_with_warmup"
    assert args.bf16 is False and args.activation_checkpointing is False


def test_hf_notes_what_it_cannot_hold(tmp_path: Path) -> None:
    tuned = make_tuned(
        world_size=2,
        precision="bf16-true",
        activation_checkpointing={"every_k": 2},
        schedule={"name": "linear", "min_lr_ratio": 0.2},
    )
    exported = export(tuned, "hf", ExportContext())
    notes = "\n".join(exported.notes)
    assert "world_size 2" in notes and "torchrun --nproc-per-node 2" in notes
    assert "bf16-true" in notes and "min_lr_ratio 0.2" in notes
    assert "gradient_checkpointing" in notes  # the transformers 4 name
    args = _training_args(json.loads(exported.text), tmp_path)
    assert args.activation_checkpointing_kwargs == {"every_n_layers": 2}


# -- accelerate --------------------------------------------------------------------------


def _cluster_config(text: str, tmp_path: Path) -> Any:
    from accelerate.commands.config.config_args import ClusterConfig

    path = tmp_path / "accelerate.yaml"
    path.write_text(text)
    return ClusterConfig.from_yaml_file(str(path))


def test_accelerate_yaml_parses_with_accelerates_own_class(tmp_path: Path) -> None:
    from accelerate.utils import DistributedType

    tuned = make_tuned(world_size=2, compile=True)
    result = invoke(str(write(tuned, tmp_path)), "--to", "accelerate")
    assert result.exit_code == 0, result.output
    config = _cluster_config(result.stdout, tmp_path)
    assert config.distributed_type == DistributedType.MULTI_CPU
    assert config.mixed_precision == "bf16"
    assert config.num_processes == 2 and config.num_machines == 1
    assert config.use_cpu is True
    assert config.dynamo_config == {"dynamo_backend": "INDUCTOR"}
    notes = "\n".join(notes_of(result))
    assert "gradient_accumulation_steps=2" in notes
    assert "activation_checkpointing full" in notes
    assert "clip_grad_norm_" in notes and "DataLoader(batch_size=32)" in notes


def test_accelerate_single_gpu_fp16(tmp_path: Path) -> None:
    from accelerate.utils import DistributedType

    tuned = make_tuned(precision="16-mixed")
    exported = export(tuned, "accelerate", ExportContext(device="cuda"))
    config = _cluster_config(exported.text, tmp_path)
    assert config.distributed_type == DistributedType.NO
    assert config.mixed_precision == "fp16" and config.use_cpu is False
    multi = export(make_tuned(world_size=4), "accelerate", ExportContext(device="cuda"))
    assert _cluster_config(multi.text, tmp_path).distributed_type == DistributedType.MULTI_GPU


def test_accelerate_plain_fp32_says_no(tmp_path: Path) -> None:
    tuned = make_tuned(precision="32-true")
    text = export(tuned, "accelerate", ExportContext()).text
    assert yaml.safe_load(text)["mixed_precision"] == "no"  # the string, not YAML's false
    assert _cluster_config(text, tmp_path).mixed_precision == "no"


# -- torchrun ----------------------------------------------------------------------------


def test_torchrun_command_line(tmp_path: Path) -> None:
    path = write(make_tuned(task="my model.py", world_size=2), tmp_path)
    result = invoke(str(path), "--to", "torchrun", "--steps", "7")
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.stdout)
    assert argv[0] == f"OMP_NUM_THREADS={max(1, len(os.sched_getaffinity(0)) // 2)}"
    assert argv[1:] == [
        "torchrun",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "autotune",
        "run",
        "my model.py",
        "-c",
        str(path),
        "--steps",
        "7",
    ]


def test_torchrun_without_steps_notes_the_default() -> None:
    exported = export(make_tuned(), "torchrun", ExportContext())
    assert "--steps" not in exported.text
    assert any("default 100 steps" in note for note in exported.notes)


def test_torchrun_needs_a_task(tmp_path: Path) -> None:
    result = invoke(str(write(make_tuned(task=None), tmp_path)), "--to", "torchrun")
    assert result.exit_code == 2
    assert "pass --task model.py" in error_line(result)


@pytest.mark.slow
def test_torchrun_command_trains_with_two_ranks(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    task = write_task(TINY_TASK)
    tuned = make_tuned(
        task=str(task),
        world_size=2,
        micro_batch_size=8,
        grad_accum_steps=1,
        activation_checkpointing="none",
        precision="32-true",
        schedule={"name": "cosine", "warmup_steps": 1},
    )
    config = write(tuned, tmp_path)
    result = invoke(str(config), "--to", "torchrun", "--steps", "3")
    assert result.exit_code == 0, result.output
    out = tmp_path / "run.json"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        f"{result.stdout.strip()} --json {shlex.quote(str(out))}",
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["world_size"] == 2 and summary["steps_completed"] == 3
    assert summary["global_batch_size"] == 16 and summary["threads_per_rank"] >= 1


# -- bad input ---------------------------------------------------------------------------


def test_unknown_format_is_one_line(tmp_path: Path) -> None:
    result = invoke(str(write(make_tuned(), tmp_path)), "--to", "deepspeed")
    assert result.exit_code == 2
    line = error_line(result)
    assert "'deepspeed'" in line
    for name in EXPORTERS:
        assert name in line


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope.yaml"), "--to", "json")
    assert result.exit_code == 2
    assert "does not exist; check the path" in error_line(result)


def test_malformed_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    path.write_text("train: {micro_batch_size: 8\n")
    result = invoke(str(path), "--to", "hf")
    assert result.exit_code == 2
    assert "malformed YAML" in error_line(result)


def test_invalid_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    path.write_text("train: {micro_batch_size: 8, optimizer: {lr: 0.1}, warp: 9}\n")
    result = invoke(str(path), "--to", "lightning")
    assert result.exit_code == 2
    assert "warp: unknown key" in error_line(result)


# -- the allocator the search measured under -----------------------------------------------


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_a_format_that_loses_the_measured_allocator_says_so(fmt: str) -> None:
    plain = make_tuned()
    assert plain.provenance is not None
    provenance = plain.provenance.model_copy(update={"glibc_tunables": "glibc.malloc.hugetlb=1"})
    tuned = plain.model_copy(update={"provenance": provenance})
    notes = export(tuned, fmt, ExportContext(steps=100)).notes
    named = [n for n in notes if "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in n]
    # torchrun runs `autotune run`, which restarts itself so; yaml/json carry the provenance
    assert len(named) == int(fmt not in ("torchrun", "yaml", "json")), notes
    unnamed = export(plain, fmt, ExportContext(steps=100)).notes
    assert not any("GLIBC_TUNABLES" in n for n in unnamed)
