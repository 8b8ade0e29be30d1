"""The report's plots, as plotly figures built from :class:`ReportData` (no I/O).

Each function returns a figure, or ``None`` when the study holds nothing to plot; the page
then says why in words instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]

from autotune._units import format_bytes
from autotune.report._data import ConvergenceTrial, ReportData, SystemsTrial

__all__ = ["history", "importances", "pareto", "pareto_optimal", "status_counts"]

_LOG_SPREAD = 20.0  # times further apart than this get a log axis
_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "height": 420,
    "margin": {"l": 70, "r": 30, "t": 50, "b": 60},
    "legend": {"orientation": "h", "y": -0.2},
}


def _describe(params: dict[str, Any]) -> str:
    return "<br>".join(f"{k}: {v}" for k, v in params.items())


def history(data: ReportData) -> go.Figure | None:
    """Time to target per completed convergence trial, and the best so far."""
    done = [t for t in data.convergence if t.value is not None]
    if not done:
        return None
    fig = go.Figure(layout=_LAYOUT)
    for reached, name, symbol in ((True, "reached target", "circle"), (False, "missed", "x")):
        group = [t for t in done if t.reached == reached]
        if group:
            fig.add_trace(_trial_scatter(group, name, symbol))
    best = _best_so_far(done)
    if best:
        xs, ys = zip(*best, strict=True)
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", name="best so far", line={"shape": "hv"})
        )
    if data.baseline_time_to_target_s is not None:  # a trace, not a shape: right on log axes
        numbers = [t.number for t in done]
        fig.add_trace(
            go.Scatter(
                x=[min(numbers), max(numbers)],
                y=[data.baseline_time_to_target_s] * 2,
                mode="lines",
                name="baseline",
                line={"dash": "dash", "color": "#52606d"},
                hovertemplate="baseline: %{y:.2f} s<extra></extra>",
            )
        )
    values = [t.value for t in done if t.value is not None]
    spread = max(values) / min(values) if min(values) > 0 else 1.0
    fig.update_layout(
        title="Time to target loss per trial (lower is better)",
        xaxis_title="trial",
        yaxis_title="seconds to target" + (" (log scale)" if spread > _LOG_SPREAD else ""),
        yaxis_type="log" if spread > _LOG_SPREAD else "linear",
    )
    return fig


def _trial_scatter(trials: list[ConvergenceTrial], name: str, symbol: str) -> go.Scatter:
    return go.Scatter(
        x=[t.number for t in trials],
        y=[t.value for t in trials],
        mode="markers",
        name=name,
        marker={"symbol": symbol, "size": 10},
        text=[f"trial {t.number}<br>{_describe(t.params)}" for t in trials],
        hovertemplate="%{text}<br>%{y:.2f} s<extra></extra>",
    )


def _best_so_far(trials: list[ConvergenceTrial]) -> list[tuple[int, float]]:
    """(trial number, best time so far) from the first trial that reached the target on."""
    points: list[tuple[int, float]] = []
    best: float | None = None
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.reached and trial.value is not None:
            best = trial.value if best is None else min(best, trial.value)
        if best is not None:
            points.append((trial.number, best))
    return points


def pareto_optimal(trials: list[SystemsTrial]) -> list[SystemsTrial]:
    """Trials no other trial beats on both axes (more samples/s and no more memory, or the
    same samples/s and less memory); input trials must have both numbers."""

    def dominates(a: SystemsTrial, b: SystemsTrial) -> bool:
        ra, rb = a.samples_per_s or 0.0, b.samples_per_s or 0.0
        ma, mb = a.peak_memory_bytes or 0, b.peak_memory_bytes or 0
        return ra >= rb and ma <= mb and (ra > rb or ma < mb)

    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


def pareto(data: ReportData) -> go.Figure | None:
    """Samples/s against peak memory of the measured systems configs; the front marked."""
    points = [
        t for t in data.systems if t.samples_per_s is not None and t.peak_memory_bytes is not None
    ]
    if not points:
        return None
    front = pareto_optimal(points)
    rest = [t for t in points if t not in front]
    fig = go.Figure(layout=_LAYOUT)
    if rest:
        fig.add_trace(_systems_scatter(rest, "dominated", {"size": 10, "color": "#9aa5b1"}))
    front.sort(key=lambda t: t.peak_memory_bytes or 0)
    fig.add_trace(
        _systems_scatter(front, "Pareto-optimal", {"size": 13, "color": "#d62728"}, "lines+markers")
    )
    fig.update_layout(
        title="Throughput vs peak memory (systems phase; Pareto front in red)",
        xaxis_title="peak memory (MiB)",
        yaxis_title="samples/s (higher is better)",
    )
    return fig


def _systems_scatter(
    trials: list[SystemsTrial], name: str, marker: dict[str, Any], mode: str = "markers"
) -> go.Scatter:
    def text(t: SystemsTrial) -> str:
        how = "measured" if t.memory_measured else "predicted by the probe"
        return (
            f"trial {t.number}<br>{_describe(t.params)}<br>"
            f"peak {format_bytes(t.peak_memory_bytes)} ({how})"
        )

    return go.Scatter(
        x=[(t.peak_memory_bytes or 0) / 2**20 for t in trials],
        y=[t.samples_per_s for t in trials],
        mode=mode,
        name=name,
        marker=marker,
        text=[text(t) for t in trials],
        hovertemplate="%{text}<br>%{y:,.1f} samples/s<extra></extra>",
    )


def importances(data: ReportData) -> go.Figure | None:
    """fANOVA importance per convergence parameter, most important on top."""
    values = data.importances.values
    if not values:
        return None
    names = sorted(values, key=lambda k: values[k])
    fig = go.Figure(
        go.Bar(
            x=[values[n] for n in names],
            y=names,
            orientation="h",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        ),
        layout=_LAYOUT,
    )
    fig.update_layout(
        title="Parameter importance for time to target (fANOVA)",
        xaxis_title="importance (sums to 1)",
        yaxis_automargin=True,
        height=max(300, 60 * len(names) + 120),
    )
    return fig


def status_counts(data: ReportData) -> go.Figure | None:
    """Trials per outcome, one bar group per study."""
    studies = {
        "convergence": Counter(t.outcome for t in data.convergence),
        "systems": Counter(t.outcome for t in data.systems),
    }
    outcomes = sorted({o for counts in studies.values() for o in counts})
    if not outcomes:
        return None
    fig = go.Figure(layout=_LAYOUT)
    for study, counts in studies.items():
        fig.add_trace(go.Bar(name=study, x=outcomes, y=[counts.get(o, 0) for o in outcomes]))
    fig.update_layout(
        title="Trials per status", barmode="group", xaxis_title="status", yaxis_title="trials"
    )
    return fig
