"""autotune: the fastest *stable* way to train your PyTorch model on the hardware at hand."""

from autotune._apply import TunedSetup, apply
from autotune.config import TrainConfig, TunedConfig, load_tuned_config, save_tuned_config
from autotune.errors import AutotuneError, ConfigError, TaskError, TrainingError
from autotune.task import Task, load_task

__version__ = "0.1.0"

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
