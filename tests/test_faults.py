"""Fault injection at the search level: a space where some configs abort, segfault, raise,
call sys.exit, run out of memory or diverge. Each is recorded with its status and reason,
and the search still finishes and picks a healthy config (DESIGN.md, invariant 2)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from autotune.config import load_tuned_config
from autotune.search import SearchOptions, run_search
from tests.conftest import TINY_TASK

# The micro-batch size picks the fault, in trial workers only (the probe runs the model in
# the search's own process, at other batch sizes, and must stay healthy).
FAULTY_TASK = TINY_TASK.replace(
    "def loss_fn(model, batch):\n",
    """import ctypes, os, resource, sys

_IN_TRIAL = "AUTOTUNE_TRIAL_PARENT" in os.environ

def _exhaust_memory():
    # RLIMIT_AS a little above what is mapped now, then ask for 2 GiB: a real ENOMEM.
    with open("/proc/self/status") as status:
        mapped = next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (64 << 20), resource.RLIM_INFINITY))
    return torch.empty(2 << 30, dtype=torch.uint8).sum()

def loss_fn(model, batch):
    size = batch[0].shape[0]
    if _IN_TRIAL and size == 24:
        os.abort()
    if _IN_TRIAL and size == 40:
        raise ValueError("injected fault")
    if _IN_TRIAL and size == 48:
        sys.exit(3)
    if _IN_TRIAL and size == 56:
        return model(batch[0]).sum() * float("nan")
    if _IN_TRIAL and size == 64:
        _exhaust_memory()
    if _IN_TRIAL and size == 72:
        ctypes.string_at(0)
""",
)
SPACE = """
systems:
  micro_batch_size: [16, 24, 32, 40, 48, 56, 64, 72]
  precision: [32-true]
convergence:
  lr: {low: 0.5, high: 2, log: true, relative: true, scaling: none}
"""
FAULTS = {  # micro-batch size -> (status, reason pattern)
    24: ("crash", r"^killed by SIGABRT without writing a result"),
    40: ("crash", r"^task error: .*ValueError: injected fault"),
    48: ("crash", r"^the task called sys\.exit\(3\)"),
    56: ("unstable", r"^training diverged: non-finite loss"),
    64: ("oom", r"^out of memory: RuntimeError: .*can't allocate memory"),
    72: ("crash", r"^killed by SIGSEGV without writing a result"),
}


@pytest.mark.slow
def test_search_over_faulty_configs_records_each_and_picks_a_healthy_one(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'faults.db'}"
    options = SearchOptions(
        task_path=write_task(FAULTY_TASK),
        space=str(space),
        budget_s=600,
        trials=2,
        target_loss=0.5,
        storage=storage,
        output=tmp_path / "tuned.yaml",
        confirm_pairs=1,
        confirm_max_pairs=1,
        systems_measured=8,  # every size: the faulty ones too
        workdir=tmp_path / "trials",
    )
    outcome = run_search(options)
    tuned = load_tuned_config(tmp_path / "tuned.yaml")
    assert tuned == outcome.tuned
    assert tuned.train.micro_batch_size in (16, 32)  # a healthy one
    systems = optuna.load_study(study_name="model/systems", storage=storage).trials
    by_size = {t.params["micro_batch_size"]: t for t in systems}
    assert sorted(by_size) == [16, 24, 32, 40, 48, 56, 64, 72]
    for size, (status, reason) in FAULTS.items():
        trial = by_size[size]
        assert trial.state == optuna.trial.TrialState.PRUNED  # measured nothing
        assert trial.user_attrs["status"] == status, (size, trial.user_attrs)
        assert re.search(reason, trial.user_attrs["reason"]), (size, trial.user_attrs)
    for size in (16, 32):
        assert by_size[size].user_attrs["status"] == "ok"
        assert by_size[size].state == optuna.trial.TrialState.COMPLETE
