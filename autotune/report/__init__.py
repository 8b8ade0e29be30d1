"""``autotune report``: one self-contained HTML page of a search's studies.

It shows the optimisation history (time to target per trial, best so far), the systems
phase's throughput-vs-peak-memory Pareto front, fANOVA parameter importances, trial counts
per status, baseline vs tuned, and the tuned config. plotly.js is inlined: the file opens
offline and loads nothing from the network. The same study opens live in optuna-dashboard
(``optuna-dashboard sqlite:///autotune.db``).
"""

from __future__ import annotations

from pathlib import Path

from autotune._io import write_text_atomic
from autotune.errors import ConfigError
from autotune.report._data import ReportData, load_report_data
from autotune.report._html import SECTIONS, render

__all__ = ["SECTIONS", "ReportData", "load_report_data", "render", "write_report"]


def write_report(
    storage: str, output: Path, study: str | None = None, tuned: Path | None = None
) -> ReportData:
    """Read the study (see :func:`load_report_data`), write the page to ``output``
    atomically and return what it shows. Raises :class:`ConfigError` for bad input."""
    data = load_report_data(storage, study, tuned)
    page = render(data)
    try:
        write_text_atomic(output, page)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {output} ({exc.strerror or exc}); pass -o with a path in an "
            f"existing, writable directory."
        ) from None
    return data
