"""Training checkpoints: everything needed to resume a run bit-for-bit on the same machine."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from autotune._io import atomic_open
from autotune.config import TrainConfig
from autotune.errors import TrainingError

__all__ = ["CHECKPOINT_NAME", "load", "rng_state", "save", "set_rng_state"]

CHECKPOINT_NAME = "last.pt"
_FORMAT = 1


def save(save_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``save_dir/last.pt`` atomically (temp file, fsync, rename)."""
    save_dir.mkdir(parents=True, exist_ok=True)
    target = save_dir / CHECKPOINT_NAME
    with atomic_open(target, "wb") as handle:
        torch.save({"format": _FORMAT, **state}, handle)
    return target


def load(save_dir: Path, config: TrainConfig, seed: int) -> dict[str, Any] | None:
    """The checkpoint in ``save_dir``, or ``None`` when there is none yet.

    Raises:
        TrainingError: it is unreadable, or was written by a different config or seed.
    """
    path = save_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it or use "
            f"another --save-dir."
        ) from exc
    if state.get("format") != _FORMAT:
        raise TrainingError(f"checkpoint {path} has an unknown format; use another --save-dir.")
    if state["config"] != config.model_dump(mode="json") or state["seed"] != seed:
        raise TrainingError(
            f"checkpoint {path} was written by a run with another config or seed; resume with "
            f"the same -c and --seed, or use a fresh --save-dir."
        )
    return state


def rng_state() -> dict[str, Any]:
    """This process's random generators (torch CPU and CUDA, Python)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": list(random.getstate()[1])}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((3, tuple(state["python"]), None))
