"""The tuned config itself, as YAML (the ``tuned.yaml`` format) or JSON."""

from __future__ import annotations

import json

import yaml

from autotune.config import TunedConfig
from autotune.export._base import ExportContext, Exported, Exporter

__all__ = ["JsonExporter", "YamlExporter"]


def _data(tuned: TunedConfig) -> dict[str, object]:
    return tuned.model_dump(mode="json", exclude_none=True)


class YamlExporter(Exporter):
    """The TunedConfig as ``tuned.yaml`` holds it (loads back with ``load_tuned_config``)."""

    name = "yaml"
    description = "the tuned config as YAML"
    carries_environment = True  # its provenance names the environment

    def export(self, tuned: TunedConfig, ctx: ExportContext) -> Exported:
        return Exported(yaml.safe_dump(_data(tuned), sort_keys=False))


class JsonExporter(Exporter):
    """The TunedConfig as JSON (the same document; ``autotune schema`` describes it)."""

    name = "json"
    description = "the tuned config as JSON"
    carries_environment = True  # its provenance names the environment

    def export(self, tuned: TunedConfig, ctx: ExportContext) -> Exported:
        return Exported(json.dumps(_data(tuned), indent=2) + "\n")
