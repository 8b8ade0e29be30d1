"""A rank that dies mid-run (world size 2): `autotune run` stops with one line naming the
rank, exit status 1, and the last checkpoint stays intact - loadable, and `--resume`
from it finishes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.config import TrainConfig
from autotune.runtime import CHECKPOINT_NAME
from autotune.runtime import _state as state
from tests.conftest import TINY_TASK

# Rank 1 exits abruptly (no exception, no cleanup: as a killed or crashing process does) at
# its DIE_AT-th micro-batch, unless AUTOTUNE_TEST_HEALTHY is set.
DYING_TASK = TINY_TASK.replace(
    "def loss_fn(model, batch):\n",
    """import os
_calls = [0]
DIE_AT = 23

def loss_fn(model, batch):
    _calls[0] += 1
    if os.environ.get("RANK") == "1" and _calls[0] == DIE_AT and not os.environ.get(
        "AUTOTUNE_TEST_HEALTHY"
    ):
        os._exit(3)
""",
)
TRAIN = {"micro_batch_size": 8, "world_size": 2, "optimizer": {"lr": 0.01}}


def _autotune_run(*args: str, healthy: bool = False) -> subprocess.CompletedProcess[str]:
    env = {"AUTOTUNE_TEST_HEALTHY": "1"} if healthy else {}
    return subprocess.run(
        [sys.executable, "-m", "autotune", "run", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        check=False,
    )


@pytest.mark.slow
def test_a_dying_rank_stops_the_run_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    task = tmp_path / "model.py"
    task.write_text(DYING_TASK)
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"train": TRAIN}))
    save = tmp_path / "ckpt"
    common = [str(task), "-c", str(config), "--steps", "40", "--save-dir", str(save)]
    died = _autotune_run(*common, "--save-every", "5")
    assert died.returncode == 1, died.stderr
    assert "Traceback" not in died.stderr + died.stdout
    errors = [line for line in died.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, died.stderr
    assert "rank 1 exited with 3 after step" in errors[0]
    assert f"The last checkpoint in {save} is intact; rerun with --resume" in errors[0]
    # Intact: it loads, for this config and seed, at a step written before the death.
    checkpoint = state.load(save, TrainConfig.model_validate(TRAIN), seed=0)
    assert checkpoint is not None
    saved_step = len(checkpoint["records"])
    assert saved_step in (5, 10, 15, 20)
    assert not [p.name for p in save.iterdir() if p.name != CHECKPOINT_NAME]  # no temp left
    resumed = _autotune_run(*common, "--resume", "--json", str(tmp_path / "r.json"), healthy=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["resumed_from_step"] == saved_step
    assert summary["steps_completed"] == 40 and summary["loss_finite"]
