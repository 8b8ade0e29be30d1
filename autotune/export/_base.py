"""The exporter contract: a :class:`TunedConfig` in, text and notes out, nothing touched.

Every format says what it can express in its own vocabulary and, for everything it cannot,
one note naming the setting and where to apply it by hand. A setting is never silently
dropped: the CLI prints the text on stdout and each note on stderr.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal

from autotune._units import format_names
from autotune.config import EveryK, TrainConfig, TunedConfig

__all__ = ["ExportContext", "Exported", "Exporter", "checkpointing_text", "unused_parameters"]

DeviceKind = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class ExportContext:
    """What a format may need beyond the config; the CLI fills it from its options.

    ``config_path`` is the tuned config as the user named it (torchrun's ``-c``);
    ``task`` the task file (default: the config's own ``task``); ``steps`` the run's
    optimizer steps (default: the schedule's ``total_steps``); ``device`` where training
    runs; ``threads_per_rank`` the CPU threads each rank gets (``OMP_NUM_THREADS``).
    """

    config_path: str = "tuned.yaml"
    task: str | None = None
    steps: int | None = None
    device: DeviceKind = "cpu"
    threads_per_rank: int = 1


@dataclass(frozen=True)
class Exported:
    """The machine-readable ``text`` (stdout) and one ``note`` per unexpressed setting."""

    text: str
    notes: list[str] = field(default_factory=list)


class Exporter(abc.ABC):
    """One output format. Subclasses are pure: values in, values out."""

    name: str
    description: str
    carries_environment = False
    """Whether what this format starts keeps the process environment the search measured
    under (a command running ``autotune run``, or the config file itself); for the others,
    :func:`autotune.export.export` adds a note naming it."""

    @abc.abstractmethod
    def export(self, tuned: TunedConfig, ctx: ExportContext) -> Exported:
        """``tuned`` in this format, with a note for each setting the format cannot hold."""

    @staticmethod
    def steps(tuned: TunedConfig, ctx: ExportContext) -> int | None:
        """The run's optimizer steps: the option, else the schedule's span, else unknown."""
        return ctx.steps or tuned.train.schedule.total_steps


def checkpointing_text(train: TrainConfig) -> str:
    """``none``, ``full`` or ``every_k: k``, as the config file spells it."""
    mode = train.activation_checkpointing
    return f"every_k: {mode.every_k}" if isinstance(mode, EveryK) else mode


def unused_parameters(tuned: TunedConfig) -> tuple[bool | None, str]:
    """Whether DDP must look for parameters without a gradient every step (None: the file
    does not say, e.g. a hand-written one), and a phrase saying why."""
    if tuned.measured is None:
        return None, ""
    names = tuned.measured.unused_parameters
    declared = tuned.measured.find_unused_parameters
    needed = bool(names) if declared is None else declared
    if not names:
        return needed, "the task declares Task(find_unused_parameters=True)"
    return needed, f"{len(names)} trainable parameter(s) get no gradient ({format_names(names)})"
