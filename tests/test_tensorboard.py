"""TensorBoard: `autotune run --tensorboard`, study summaries, `autotune search --tensorboard`.

Event files are read back with TensorBoard's own EventAccumulator.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from typer.testing import CliRunner

from autotune.cli import app
from autotune.export import write_study_summaries
from tests._tuned import make_tuned
from tests.conftest import TINY_TASK
from tests.test_cli_errors import error_line

runner = CliRunner()
FIX = "pip install 'autotune[tensorboard]'"


def events(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_run_logs_every_step(write_task: Callable[[str], Path], tmp_path: Path) -> None:
    logdir, out = tmp_path / "tb", tmp_path / "run.json"
    args = ["run", str(write_task(TINY_TASK)), "--steps", "5", "--json", str(out)]
    result = runner.invoke(app, [*args, "--tensorboard", str(logdir)])
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())["steps"]
    acc = events(logdir)
    assert {"train/loss", "train/lr", "train/samples_per_s", "train/peak_memory_bytes"} <= set(
        acc.Tags()["scalars"]
    )
    assert [s for s, _ in scalars(acc, "train/loss")] == [1, 2, 3, 4, 5]
    for key in ("loss", "lr", "samples_per_s"):
        logged = [v for _, v in scalars(acc, f"train/{key}")]
        assert logged == pytest.approx([r[key] for r in records], rel=1e-5)
    [(step, peak)] = scalars(acc, "train/peak_memory_bytes")
    summary = json.loads(out.read_text())["summary"]
    assert step == 5 and peak == pytest.approx(summary["peak_memory_bytes"], rel=1e-6)


def _no_tensorboard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails


def test_run_without_tensorboard_says_how_to_install(
    write_task: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_tensorboard(monkeypatch)
    task = str(write_task(TINY_TASK))
    result = runner.invoke(app, ["run", task, "--steps", "2", "--tensorboard", str(tmp_path)])
    assert result.exit_code == 2
    assert FIX in error_line(result)


def _study(storage: str) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name="tiny", direction="minimize")
    dists: dict[str, Any] = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "precision": optuna.distributions.CategoricalDistribution(["32-true", "bf16-mixed"]),
    }
    for number, (value, state) in enumerate([(3.5, "COMPLETE"), (2.0, "COMPLETE"), (None, "FAIL")]):
        run = {"samples_per_s": 100.0 * (number + 1), "time_to_target_s": value, "losses": [1.0]}
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 10.0 ** -(number + 2), "precision": "bf16-mixed"},
                distributions=dists,
                value=value,
                state=optuna.trial.TrialState[state],
                user_attrs={"run": json.dumps(run), "status": "OK" if value else "CRASH"},
            )
        )
    return study


def test_study_summaries_one_point_per_trial_and_hparams(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _study(storage)
    logdir = tmp_path / "tb"
    assert write_study_summaries(storage, "tiny", logdir) == 3
    acc = events(logdir)
    assert scalars(acc, "trial/value") == [(0, 3.5), (1, 2.0)]  # the failed trial has none
    assert scalars(acc, "trial/samples_per_s") == [(0, 100.0), (1, 200.0), (2, 300.0)]
    assert [s for s, _ in scalars(acc, "trial/time_to_target_s")] == [0, 1]
    runs = sorted(p.name for p in logdir.iterdir() if p.is_dir())
    assert runs == ["trial-0000", "trial-0001", "trial-0002"]
    hparams = _hparams(logdir / "trial-0001")
    assert hparams["lr"] == pytest.approx(1e-3)
    assert hparams["precision"] == "bf16-mixed" and hparams["state"] == "COMPLETE"


def _hparams(run_dir: Path) -> dict[str, Any]:
    acc = events(run_dir)
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    found: dict[str, Any] = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        found[key] = getattr(value, kind)
    return found


def test_study_summaries_unknown_study(tmp_path: Path) -> None:
    from autotune.errors import ConfigError

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _study(storage)
    with pytest.raises(ConfigError, match="no study named 'other'"):
        write_study_summaries(storage, "other", tmp_path / "tb")


def test_search_writes_study_summaries(
    write_task: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _study(f"sqlite:///{tmp_path / 'study.db'}")
    systems = _study(f"sqlite:///{tmp_path / 'systems.db'}")
    studies = SimpleNamespace(convergence=study, systems=systems)
    outcome = SimpleNamespace(tuned=make_tuned(), removals=[], studies=studies)
    monkeypatch.setattr("autotune.cli.run_search", lambda *args, **kwargs: outcome)
    logdir = tmp_path / "tb"
    task = str(write_task(TINY_TASK))
    runner.invoke(app, ["search", task, "--tensorboard", str(logdir), "-o", str(tmp_path / "t.y")])
    assert [s for s, _ in scalars(events(logdir), "trial/samples_per_s")] == [0, 1, 2]
    assert [s for s, _ in scalars(events(logdir / "systems"), "trial/value")] == [0, 1]


def test_search_without_tensorboard_stops_before_searching(
    write_task: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_tensorboard(monkeypatch)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the search ran")

    monkeypatch.setattr("autotune.cli.run_search", never)
    task = str(write_task(TINY_TASK))
    result = runner.invoke(app, ["search", task, "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 2
    assert FIX in error_line(result)


@pytest.mark.slow
def test_two_ranks_write_one_log(write_task: Callable[[str], Path], tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("train: {micro_batch_size: 8, world_size: 2, optimizer: {lr: 0.01}}\n")
    logdir = tmp_path / "tb"
    args = ["run", str(write_task(TINY_TASK)), "-c", str(config), "--steps", "3"]
    result = runner.invoke(app, [*args, "--tensorboard", str(logdir)])
    assert result.exit_code == 0, result.output
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1  # rank 0 alone writes
    assert [s for s, _ in scalars(events(logdir), "train/loss")] == [1, 2, 3]
