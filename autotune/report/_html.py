"""One self-contained HTML page from :class:`ReportData`: plotly.js inlined, no CDN, no
network access when opened; every string from the study is HTML-escaped."""

from __future__ import annotations

import datetime
import shlex
from collections import Counter
from collections.abc import Callable
from html import escape
from typing import Any

import plotly.offline  # type: ignore[import-untyped]

from autotune import __version__
from autotune._units import format_bytes
from autotune.config import checkpointing_label
from autotune.explain import Explanation, Lever
from autotune.report import _figures
from autotune.report._data import Comparison, ReportData, Side

__all__ = ["SECTIONS", "render"]

# (id, heading) of every section, in page order; the tests look for each id.
SECTIONS = (
    ("comparison", "Baseline vs tuned"),
    ("history", "Optimisation history"),
    ("pareto", "Throughput vs peak memory"),
    ("importance", "Parameter importances"),
    ("status", "Trials per status"),
    ("config", "Tuned config"),
)

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #1f2933;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #d9e2ec; padding-bottom: 0.2em; margin-top: 2em; }
.meta, .note { color: #52606d; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #d9e2ec; padding: 0.3em 0.8em; text-align: left; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f5f7fa; border: 1px solid #d9e2ec; padding: 1em; overflow-x: auto; }
code { background: #f5f7fa; padding: 0 0.2em; }
"""


def render(data: ReportData) -> str:
    """The whole page. Safe for any study content: names, reasons and YAML are escaped."""
    body = "\n".join(
        [
            _header(data),
            _section("comparison", _comparison(data.comparison)),
            _section("history", _figure_or_note(_figures.history, data, _history_note(data))),
            _section("pareto", _figure_or_note(_figures.pareto, data, _pareto_note(data))),
            _section("importance", _importance(data)),
            _section("status", _status(data)),
            _section("config", _config(data)),
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>autotune report: {escape(data.study_name)}</title>\n"
        f"<style>{_CSS}</style>\n"
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>\n"
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _header(data: ReportData) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    target = (
        f"target loss {data.target_loss:.4f} ({escape(data.target_from or '?')})"
        if data.target_loss is not None
        else "no baseline run stored yet"
    )
    return (
        f"<h1>autotune report: {escape(data.study_name)}</h1>\n"
        f"<p class='meta'>storage <code>{escape(data.storage)}</code> &middot; {target} &middot; "
        f"{len(data.convergence)} convergence and {len(data.systems)} systems trials &middot; "
        f"autotune {escape(__version__)}, {now}</p>\n"
        f"<p class='meta'>Explore the study live: "
        f"<code>optuna-dashboard {escape(shlex.quote(data.storage))}</code></p>"
    )


def _section(section_id: str, content: str) -> str:
    heading = dict(SECTIONS)[section_id]
    return f"<section id='{section_id}'>\n<h2>{escape(heading)}</h2>\n{content}\n</section>"


def _figure_or_note(build: Callable[[ReportData], Any], data: ReportData, note: str) -> str:
    """The figure ``build`` makes, under ``note`` (HTML); the note alone when there is none."""
    fig = build(data)
    text = f"<p class='note'>{note}</p>" if note else ""
    if fig is None:
        return text
    plot = fig.to_html(full_html=False, include_plotlyjs=False, config=_PLOT_CONFIG)
    return f"{text}\n{plot}"


def _history_note(data: ReportData) -> str:
    shown = sum(1 for t in data.convergence if t.value is not None)
    hidden = len(data.convergence) - shown
    if not shown:
        return "No convergence trial has completed yet: nothing to plot."
    missed = (
        " A run that missed the target is plotted at its penalty value."
        if any(not t.reached for t in data.convergence if t.value is not None)
        else ""
    )
    rest = (
        f" {hidden} trial(s) without a time (pruned or failed) are counted below." if hidden else ""
    )
    return f"Completed trials of the convergence study.{missed}{rest}"


def _pareto_note(data: ReportData) -> str:
    if not any(t.samples_per_s is not None for t in data.systems):
        return "No systems trial was measured: nothing to plot."
    predicted = any(not t.memory_measured for t in data.systems if t.samples_per_s is not None)
    return (
        "Measured systems configs. Peak memory is the probe's memory-model prediction where the "
        "measurement did not record one (on CPU, short systems runs are not memory-profiled); "
        "hover a point for which."
        if predicted
        else "Measured systems configs: samples/s and profiled peak memory."
    )


def _importance(data: ReportData) -> str:
    note = escape(data.importances.note)
    return _figure_or_note(_figures.importances, data, note)


def _status(data: ReportData) -> str:
    conv = Counter(t.outcome for t in data.convergence)
    systems = Counter(t.outcome for t in data.systems)
    rows = "".join(
        f"<tr><td>{escape(o)}</td><td class='num'>{conv.get(o, 0)}</td>"
        f"<td class='num'>{systems.get(o, 0)}</td></tr>"
        for o in sorted(set(conv) | set(systems))
    )
    table = (
        "<table><tr><th>status</th><th>convergence</th><th>systems</th></tr>"
        f"{rows}<tr><th>total</th><td class='num'>{len(data.convergence)}</td>"
        f"<td class='num'>{len(data.systems)}</td></tr></table>"
    )
    return table + _figure_or_note(_figures.status_counts, data, "") + _failures(data)


_MAX_LISTED = 30  # failed trials listed with their reason; the counts cover the rest


def _failures(data: ReportData) -> str:
    """Why each trial that did not finish OK stopped, in the search's own words."""
    failed = [
        (f"convergence #{t.number}", t.outcome, t.reason)
        for t in data.convergence
        if not t.outcome.startswith("OK")
    ] + [(f"systems #{t.number}", t.outcome, t.reason) for t in data.systems if t.outcome != "OK"]
    if not failed:
        return ""
    items = "".join(
        f"<li><b>{escape(where)}</b> {escape(outcome)}: {escape(reason or 'no reason stored')}</li>"
        for where, outcome, reason in failed[:_MAX_LISTED]
    )
    more = (
        f"<p class='note'>and {len(failed) - _MAX_LISTED} more.</p>"
        if len(failed) > _MAX_LISTED
        else ""
    )
    summary = f"<summary>Why trials stopped ({len(failed)})</summary>"
    return (
        f"<details{' open' if len(failed) <= 10 else ''}>{summary}<ul>{items}</ul>{more}</details>"
    )


def _config(data: ReportData) -> str:
    source = f"<p class='note'>From {escape(data.tuned_yaml_source)}</p>"
    if data.tuned_yaml is None:
        return source
    return f"{source}\n<pre>{escape(data.tuned_yaml)}</pre>"


def _comparison(comparison: Comparison) -> str:
    note = f"<p class='note'>From {escape(comparison.source)}</p>"
    sides = [s for s in (comparison.baseline, comparison.tuned) if s is not None]
    if not sides:
        return note + "<p class='note'>The study holds no baseline run yet.</p>"
    header = "".join(f"<th>{escape(s.label)}</th>" for s in sides)
    rows = "".join(
        f"<tr><th>{escape(name)}</th>"
        + "".join(f"<td class='num'>{escape(cell(s))}</td>" for s in sides)
        + "</tr>"
        for name, cell in _ROWS
    )
    table = f"<table><tr><th></th>{header}</tr>{rows}</table>"
    warnings = "".join(
        f"<p class='note'><b>Warning:</b> {escape(text)}</p>" for text in comparison.warnings
    )
    return f"{note}\n{table}\n{_speedups(comparison)}{_why(comparison.why)}{warnings}"


def _why(why: Explanation | None) -> str:
    """The speed-up's two measured factors and the settings behind each, as a list."""
    if why is None:
        return ""
    factors = [
        f"samples/s {why.throughput:.2f}x: " + _lever_list(why.systems),
        f"samples to the target: {why.step_line()}; " + _lever_list(why.optimisation),
    ]
    items = "".join(f"<li>{escape(text)}</li>" for text in factors)
    return (
        f"<p><b>Why:</b> {escape(why.headline())}. {escape(why.source())}</p>\n"
        f"<ul>{items}</ul>\n<p class='note'>Both factors are measured; which setting within "
        "a factor did most is not.</p>\n"
    )


def _lever_list(levers: tuple[Lever, ...]) -> str:
    return "; ".join(lever.line() for lever in levers) or "none of its settings changed"


def _speedups(comparison: Comparison) -> str:
    parts = []
    if comparison.speedup is not None:
        parts.append(f"time to target: <b>{comparison.speedup:.2f}x</b> the baseline's speed")
    elif comparison.speedup_at_least is not None:
        parts.append(
            f"time to target: at least <b>{comparison.speedup_at_least:.2f}x</b> the baseline's "
            f"speed (the baseline never reached the target)"
        )
    if comparison.throughput_speedup is not None:
        parts.append(f"throughput: <b>{comparison.throughput_speedup:.2f}x</b> the baseline's")
    return f"<p>Speed-up: {'; '.join(parts)}.</p>" if parts else ""


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


_ROWS: tuple[tuple[str, Callable[[Side], str]], ...] = (
    ("samples/s", lambda s: _num(s.samples_per_s, ",.1f")),
    ("time to target (s)", lambda s: _num(s.time_to_target_s, ".2f")),
    ("peak memory", lambda s: format_bytes(s.peak_memory_bytes)),
    (
        "batch (micro x accum x ranks)",
        lambda s: (
            f"{s.train.micro_batch_size} x {s.train.grad_accum_steps} x "
            f"{s.train.world_size} = {s.train.global_batch}"
        ),
    ),
    ("precision", lambda s: s.train.precision),
    ("activation checkpointing", lambda s: checkpointing_label(s.train.activation_checkpointing)),
    ("compile", lambda s: "yes" if s.train.compile else "no"),
    ("optimizer", lambda s: f"{s.train.optimizer.name}, lr {s.train.optimizer.lr:.3g}"),
    (
        "schedule",
        lambda s: f"{s.train.schedule.name}, warmup {s.train.schedule.warmup_steps} steps",
    ),
)
