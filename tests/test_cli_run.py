"""`autotune run`: configs, the public --json format, checkpoints and resume after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autotune import cli
from autotune._host import CpuShare
from autotune.cli import app
from autotune.config import save_tuned_config
from autotune.runtime import CHECKPOINT_NAME
from tests._tuned import make_tuned
from tests.conftest import TINY_TASK

runner = CliRunner()

SLOW_TASK = TINY_TASK.replace(
    "def loss_fn(model, batch):",
    "import time\n\ndef loss_fn(model, batch):\n    time.sleep(0.02)",
)


def _run(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output
    return result


def test_json_output_is_the_public_format(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    out = tmp_path / "run.json"
    _run(str(write_task(TINY_TASK)), "--steps", "6", "--json", str(out))
    data = json.loads(out.read_text())
    assert set(data) == {"summary", "steps"}
    assert [s["step"] for s in data["steps"]] == [1, 2, 3, 4, 5, 6]
    for record in data["steps"]:
        assert isinstance(record["step"], int) and isinstance(record["samples"], int)
        assert isinstance(record["loss"], float) and isinstance(record["elapsed_s"], float)
    assert [s["samples"] for s in data["steps"]] == [16 * i for i in range(1, 7)]  # baseline 16
    assert data["summary"]["steps_completed"] == 6 and data["summary"]["loss_finite"] is True


def test_the_baseline_trains_for_the_tasks_steps_and_a_tuned_config_for_100(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    task = write_task(TINY_TASK.replace("lr=1e-2)", "lr=1e-2, steps=32)"))
    out = tmp_path / "run.json"
    _run(str(task), "--json", str(out))
    assert json.loads(out.read_text())["summary"]["steps_completed"] == 32
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"train": {"micro_batch_size": 8, "optimizer": {"lr": 0.01}}}))
    _run(str(task), "-c", str(config), "--json", str(out))
    assert json.loads(out.read_text())["summary"]["steps_completed"] == 100
    _run(str(task), "--steps", "5", "--json", str(out))
    assert json.loads(out.read_text())["summary"]["steps_completed"] == 5


def test_config_with_only_train_section(write_task: Callable[[str], Path], tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    train = {"micro_batch_size": 8, "grad_accum_steps": 2, "optimizer": {"lr": 0.01}}
    config.write_text(yaml.safe_dump({"train": train}))
    out = tmp_path / "run.json"
    _run(str(write_task(TINY_TASK)), "-c", str(config), "--steps", "3", "--json", str(out))
    assert json.loads(out.read_text())["summary"]["global_batch_size"] == 16


def test_full_tuned_config(write_task: Callable[[str], Path], tmp_path: Path) -> None:
    config = tmp_path / "tuned.yaml"
    tuned = {
        "schema_version": 1,
        "task": "model.py",
        "train": {"micro_batch_size": 32, "precision": "bf16-mixed", "optimizer": {"lr": 0.01}},
        "provenance": {"autotune_version": "0.1.0", "torch_version": "2.13.0"},
    }
    config.write_text(yaml.safe_dump(tuned))
    out = tmp_path / "run.json"
    _run(str(write_task(TINY_TASK)), "-c", str(config), "--steps", "3", "--json", str(out))
    summary = json.loads(out.read_text())["summary"]
    assert summary["precision"] == "bf16-mixed" and summary["global_batch_size"] == 32


def test_a_run_of_a_tuned_yaml_says_whether_it_reproduced_the_recorded_throughput(
    write_task: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tuned.yaml measured at an impossible 1e12 samples/s is not reproduced by any
    machine: the run still succeeds, and stderr says so with the fix. On a quiet machine:
    where other processes took the cores (a test suite's leftovers), the sentence names
    them instead of the search (was: flaky in a fresh clone's `make test`)."""
    monkeypatch.setattr(cli, "_contention", lambda watch: None)
    tuned = make_tuned(
        micro_batch_size=8, grad_accum_steps=1, precision="32-true", activation_checkpointing="none"
    )
    tuned = tuned.model_copy(
        update={"measured": tuned.measured.model_copy(update={"throughput_samples_per_s": 1e12})}
    )
    config = tmp_path / "tuned.yaml"
    save_tuned_config(tuned, config)
    result = _run(str(write_task(TINY_TASK)), "-c", str(config), "--steps", "12")
    said = " ".join(result.output.split())  # as one line, wherever the terminal wrapped it
    assert "vs tuned.yaml:" in said and "not reproduced" in said
    assert "`autotune check` re-runs it beside the baseline" in said
    assert "Run `autotune search` here if the speed-up is gone" in said


def test_a_run_of_an_edited_tuned_yaml_compares_nothing(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    """The user changed the LR after the search: the recorded numbers are of the config
    before, so the run says so instead of 'not reproduced'."""
    tuned = make_tuned(
        micro_batch_size=8, grad_accum_steps=1, precision="32-true", activation_checkpointing="none"
    )
    faster = tuned.train.optimizer.model_copy(update={"lr": 1e-2})
    edited = tuned.model_copy(
        update={"train": tuned.train.model_copy(update={"optimizer": faster})}
    )
    config = tmp_path / "tuned.yaml"
    save_tuned_config(edited, config)
    result = _run(str(write_task(TINY_TASK)), "-c", str(config), "--steps", "12")
    said = " ".join(result.output.split())
    assert "the train section was edited after the search measured it" in said
    assert "samples/s not compared" in said and "reproduced" not in said


def test_a_run_of_another_task_file_compares_nothing(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    """One task's tuned.yaml run on another task file read "not reproduced. Is this
    machine busy?", which blamed the machine for a different model."""
    from autotune.config import file_sha256

    task = write_task(TINY_TASK)
    other = write_task(
        TINY_TASK.replace(
            "nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)",
            "nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2)",
        ),
        "other.py",
    )
    tuned = make_tuned(
        micro_batch_size=8, grad_accum_steps=1, precision="32-true", activation_checkpointing="none"
    )
    assert tuned.measured is not None
    measured = tuned.measured.model_copy(update={"task_sha256": file_sha256(task)})
    config = tmp_path / "tuned.yaml"
    save_tuned_config(tuned.model_copy(update={"measured": measured}), config)

    said = " ".join(_run(str(other), "-c", str(config), "--steps", "12").output.split())
    assert "the task file is not the one the search measured" in said
    assert "samples/s not compared" in said and "reproduced" not in said
    same = " ".join(_run(str(task), "-c", str(config), "--steps", "12").output.split())
    assert "vs tuned.yaml:" in same and "not the one the search measured" not in same


def test_a_config_whose_step_takes_more_than_an_epoch_is_noted(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    """TINY_TASK has 256 samples: 64 x 2 is half an epoch, 64 x 8 takes some twice."""
    config = tmp_path / "train.yaml"
    task = str(write_task(TINY_TASK))
    for accum, noted in ((2, False), (8, True)):
        train = {"micro_batch_size": 64, "grad_accum_steps": accum, "optimizer": {"lr": 0.01}}
        config.write_text(yaml.safe_dump({"train": train}))
        said = " ".join(_run(task, "-c", str(config), "--steps", "2").output.split())
        expected = (
            "note: a global batch of 512 is more than an epoch: the dataset's 256 samples give "
            "4 micro-batches of 64, fewer than grad_accum_steps=8, so every step would take "
            "some samples twice; lower grad_accum_steps or micro_batch_size."
        )
        assert (expected in said) == noted, said


def test_a_run_longer_than_the_tuned_schedule_stretches_it_over_the_run(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    """A tuned cosine to 0 over 10 steps, run for 20: was lr 0 from step 10 on."""
    config = tmp_path / "train.yaml"
    schedule = {"name": "cosine", "total_steps": 10}
    train = {"micro_batch_size": 16, "optimizer": {"lr": 0.01}, "schedule": schedule}
    config.write_text(yaml.safe_dump({"train": train}))
    task, out = str(write_task(TINY_TASK)), tmp_path / "run.json"

    def lrs(steps: int) -> tuple[str, list[float]]:
        result = _run(task, "-c", str(config), "--steps", str(steps), "--json", str(out))
        records = json.loads(out.read_text())["steps"]
        return " ".join(result.output.split()), [record["lr"] for record in records]

    def cosine(step: int, span: int) -> float:  # a record holds the next step's lr
        return 0.01 * (1 + math.cos(math.pi * min(1.0, step / (span - 1)))) / 2

    said, long = lrs(20)
    assert "note: the cosine schedule spans 10 steps (the tuned horizon), the run 20" in said
    assert long[9] == pytest.approx(cosine(10, 20)) and long[17] > 0  # was 0 from step 10
    said, short = lrs(8)
    assert "schedule spans" not in said  # within its span: as tuned
    assert short[6] == pytest.approx(cosine(7, 10))


def test_summary_table_is_printed(write_task: Callable[[str], Path]) -> None:
    result = _run(str(write_task(TINY_TASK)), "--steps", "3")
    assert "final loss" in result.output and "samples/s" in result.output


class _Busy:
    """A CpuWatch that saw others keep 1.2 of 2 cores busy."""

    others = 1.2

    def share(self) -> CpuShare:
        return CpuShare(cores=2, others_cores=self.others, seconds=3.0)


class _Quiet(_Busy):
    others = 0.1


def test_a_run_beside_other_work_says_so(
    write_task: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = str(write_task(TINY_TASK))
    monkeypatch.setattr(cli, "CpuWatch", _Quiet)
    assert "other processes kept" not in _run(task, "--steps", "3").output
    monkeypatch.setattr(cli, "CpuWatch", _Busy)
    note = " ".join(_run(task, "--steps", "3").output.split())
    assert "note: other processes kept 1.2 of this process's 2 CPU cores busy over 3 s" in note
    assert "lower and noisier than this machine's own" in note


def test_diverging_run_exits_1(write_task: Callable[[str], Path]) -> None:
    task = write_task(
        TINY_TASK.replace("return nn.functional", "return float('nan') * nn.functional")
    )
    result = runner.invoke(app, ["run", str(task), "--steps", "5"])
    assert result.exit_code == 1
    assert "non-finite loss (nan) at step 1" in result.output


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autotune", "run", *args]


def _final_loss(path: Path) -> float:
    return float(json.loads(path.read_text())["summary"]["final_loss"])


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_loss(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    task = str(write_task(SLOW_TASK))
    whole, resumed, save = tmp_path / "whole.json", tmp_path / "resumed.json", tmp_path / "ckpt"
    common = ["--steps", "120", "--save-every", "10"]
    subprocess.run(
        _cli(task, *common, "--json", str(whole)), check=True, timeout=300, capture_output=True
    )
    proc = subprocess.Popen(
        _cli(task, *common, "--save-dir", str(save)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (save / CHECKPOINT_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # kill somewhere between checkpoints
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(
        _cli(task, *common, "--save-dir", str(save), "--resume", "--json", str(resumed)),
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(resumed.read_text())["summary"]
    assert summary["resumed_from_step"] in range(10, 120, 10)
    assert _final_loss(resumed) == _final_loss(whole)
