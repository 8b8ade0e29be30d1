"""autotune: the fastest *stable* way to train your PyTorch model on the hardware at hand.

The public names below are imported on first use (PEP 562), so ``import autotune`` costs
nothing until one is touched: the CLI's launcher (``autotune/__main__.py``) restarts itself
under huge-page malloc before it imports torch, and a restart that came after torch's import
would pay it twice (1.1 s on the 2-core hosts).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from autotune._apply import TunedSetup, apply
    from autotune.config import TrainConfig, TunedConfig, load_tuned_config, save_tuned_config
    from autotune.errors import AutotuneError, ConfigError, TaskError, TrainingError
    from autotune.task import Task, load_task

__version__ = "0.1.0"

_HOMES = {  # public name -> the module that defines it
    "TunedSetup": "autotune._apply",
    "apply": "autotune._apply",
    "TrainConfig": "autotune.config",
    "TunedConfig": "autotune.config",
    "load_tuned_config": "autotune.config",
    "save_tuned_config": "autotune.config",
    "AutotuneError": "autotune.errors",
    "ConfigError": "autotune.errors",
    "TaskError": "autotune.errors",
    "TrainingError": "autotune.errors",
    "Task": "autotune.task",
    "load_task": "autotune.task",
}

__all__ = [
    "AutotuneError",
    "ConfigError",
    "Task",
    "TaskError",
    "TrainConfig",
    "TrainingError",
    "TunedConfig",
    "TunedSetup",
    "__version__",
    "apply",
    "load_task",
    "load_tuned_config",
    "save_tuned_config",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used, and keep the name."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'autotune' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
