"""Shared fixtures: repository paths, a private temp dir for everything a test starts."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def _private_tmp(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """torchrun, inductor and spawned ranks write temp files: keep them in pytest's tmp."""
    scratch = tmp_path_factory.mktemp("scratch")
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(scratch / "inductor"))
    yield


@pytest.fixture
def write_task(tmp_path: Path) -> Callable[[str], Path]:
    """Write a task file from source text (dedented) and return its path."""

    def write(source: str, name: str = "model.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY_TASK = """
import torch
from torch import nn
from torch.utils.data import TensorDataset
from autotune import Task

def build_model():
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))

def build_dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorDataset(x, y)

def loss_fn(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x).float(), y)

task = Task(model=build_model, dataset=build_dataset, loss=loss_fn,
            baseline=dict(batch_size=16, lr=1e-2))
"""
"""A task that trains in milliseconds: for tests of the plumbing, not of speed."""
