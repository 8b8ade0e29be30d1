"""What the search picks, not just that it runs: it never picks a diverging config."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from autotune.cli import app
from autotune.config import load_tuned_config
from autotune.search import SearchOptions, run_search

# Least squares on 16 standard-normal features with plain SGD: the loss is a quadratic
# whose curvature is ~2 (the Hessian of the MSE is 2 E[x x^T]), so SGD converges for
# lr below ~1 and diverges exponentially above it, minibatch noise lowering that edge.
# The baseline LR 0.01 is cautious: 50x faster LRs exist, and so do 1000x ones that blow up.
DIVERGING_TASK = """
import torch
from torch import nn
from torch.utils.data import TensorDataset
from autotune import Task

def build_model():
    return nn.Linear(16, 1)

def build_dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 16, generator=g)
    w = torch.randn(16, 1, generator=g)
    return TensorDataset(x, x @ w + 0.1 * torch.randn(4096, 1, generator=g))

def loss_fn(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x).float(), y)

task = Task(model=build_model, dataset=build_dataset, loss=loss_fn, optimizer="sgd",
            baseline=dict(batch_size=32, lr=0.01))
"""

# Only the LR varies: multiples 3x..1000x of the baseline's, so about half the range
# (lr above ~1) diverges.
DIVERGING_SPACE = """
schema_version: 1
systems:
  micro_batch_size: [32]
  precision: [32-true]
  activation_checkpointing: [none]
  world_size: [1]
  compile: [false]
convergence:
  grad_accum_steps: [1]
  lr: {low: 3, high: 1000, log: true, relative: true, scaling: linear}
  schedule: [constant]
  warmup_fraction: {low: 0.0, high: 0.0}
"""

DIVERGES_ABOVE_LR = 1.0  # the quadratic's edge of stability for SGD (see DIVERGING_TASK)


@pytest.mark.slow
def test_search_never_picks_a_diverging_lr_and_its_winner_stays_finite_5x_longer(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(DIVERGING_SPACE))
    storage = f"sqlite:///{tmp_path / 'autotune.db'}"
    task = write_task(DIVERGING_TASK)
    options = SearchOptions(
        task_path=task,
        space=str(space),
        budget_s=90,
        trials=8,
        storage=storage,
        output=tmp_path / "tuned.yaml",
        confirm_pairs=2,
        confirm_max_pairs=2,
        systems_measured=1,
        workdir=tmp_path / "trials",
    )
    run_search(options)
    tuned = load_tuned_config(options.output)
    study = optuna.load_study(study_name="model", storage=storage)
    lrs = {t.number: json.loads(t.user_attrs["train"])["optimizer"]["lr"] for t in study.trials}
    unstable = [t for t in study.trials if t.user_attrs.get("status") == "UNSTABLE"]
    # The search did meet divergence (so the test tests something) and did not pick it.
    assert unstable, f"no trial diverged; LRs tried: {lrs}"
    assert all(lrs[t.number] > DIVERGES_ABOVE_LR / 4 for t in unstable)
    assert tuned.train.optimizer.lr < DIVERGES_ABOVE_LR
    assert tuned.train.optimizer.lr > 0.01  # and it did beat the cautious baseline LR
    # The winner stays finite (and keeps training) over a run 5x longer than its trial.
    winner = study.best_trial
    trial_steps = len(json.loads(winner.user_attrs["run"])["losses"])
    steps = 5 * max(trial_steps, tuned.train.schedule.total_steps or 0)
    report = tmp_path / "long.json"
    result = CliRunner().invoke(
        app,
        ["run", str(task), "-c", str(options.output), "--steps", str(steps), "--json", str(report)],
    )
    assert result.exit_code == 0, result.output
    long_run = json.loads(report.read_text())
    assert long_run["summary"]["steps_completed"] == steps
    assert long_run["summary"]["loss_finite"]
    first = long_run["steps"][0]["loss"]
    assert long_run["summary"]["smoothed_final_loss"] < 0.1 * first
