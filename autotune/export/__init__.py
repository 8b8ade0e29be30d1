"""Export a tuned config to other tools' formats, and log runs and studies to TensorBoard.

``export(tuned, "lightning", ctx)`` returns the text for stdout and one note per setting
the format cannot express (the CLI prints them on stderr: nothing is dropped silently).
Formats: ``yaml``, ``json``, ``torchrun``, ``lightning``, ``accelerate``, ``hf``.
"""

from __future__ import annotations

from autotune.config import TunedConfig
from autotune.errors import ConfigError
from autotune.export._accelerate import AccelerateExporter
from autotune.export._base import ExportContext, Exported, Exporter
from autotune.export._data import JsonExporter, YamlExporter
from autotune.export._hf import HfExporter
from autotune.export._lightning import LightningExporter
from autotune.export._tensorboard import (
    StepLogger,
    open_writer,
    require_tensorboard,
    write_study_summaries,
)
from autotune.export._torchrun import TorchrunExporter

__all__ = [
    "EXPORTERS",
    "AccelerateExporter",
    "ExportContext",
    "Exported",
    "Exporter",
    "HfExporter",
    "JsonExporter",
    "LightningExporter",
    "StepLogger",
    "TorchrunExporter",
    "YamlExporter",
    "export",
    "open_writer",
    "require_tensorboard",
    "write_study_summaries",
]

EXPORTERS: dict[str, Exporter] = {
    e.name: e
    for e in (
        YamlExporter(),
        JsonExporter(),
        TorchrunExporter(),
        LightningExporter(),
        AccelerateExporter(),
        HfExporter(),
    )
}
"""Every format by its ``--to`` name."""


def export(tuned: TunedConfig, to: str, ctx: ExportContext | None = None) -> Exported:
    """``tuned`` in format ``to``; a ConfigError naming the formats when ``to`` is unknown."""
    exporter = EXPORTERS.get(to)
    if exporter is None:
        raise ConfigError(
            f"--to must be one of {', '.join(EXPORTERS)}, but got {to!r}; pick one of those."
        )
    exported = exporter.export(tuned, ctx or ExportContext())
    tunables = tuned.provenance.glibc_tunables if tuned.provenance else None
    if tunables and not exporter.carries_environment:
        exported.notes.append(
            f"the search measured with GLIBC_TUNABLES={tunables} (huge-page malloc): start "
            f"training with `export GLIBC_TUNABLES={tunables}` for the same speed on a CPU."
        )
    return exported
