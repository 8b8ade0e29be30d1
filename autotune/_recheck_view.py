"""Rich output of ``autotune check``: tuned.yaml's numbers beside the re-measured ones
(:class:`~autotune.search.Recheck`)."""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table

from autotune._units import format_bytes, format_seeds
from autotune.search import CHECK_TOLERANCE, Recheck, Remeasured

__all__ = ["recheck_table"]

_NONE = "[dim]-[/]"


def recheck_table(check: Recheck, source: str) -> Table:
    """tuned.yaml's numbers against the re-measured medians, ranges and ratios."""
    table = Table(title=f"autotune check {source}: now against tuned.yaml", title_justify="left")
    for name in ("", "tuned.yaml", "now: median (range, n)", "ratio", "within 10%"):
        table.add_column(name, style="bold" if not name else None)
    for row in check.rows():
        show = _FORMATS[row.unit]
        what = f"{row.what} {row.unit}" if row.unit == "samples/s" else row.what
        table.add_row(what, _value(row.recorded, show), *_now(row, show))
    changed = "; ".join(check.changed()) or "the same torch and autotune versions"
    on = f" on {format_seeds(check.found.seeds)}" if check.found.seeds else ""
    table.caption = f"{check.found.pairs} interleaved pairs{on} ({changed}); {check.verdict()}"
    return table


def _now(row: Remeasured, show: Callable[[float], str]) -> tuple[str, str, str]:
    if row.now is None:
        return _NONE, _NONE, _NONE
    spread = row.now
    measured = show(spread.median)
    if spread.n > 1:
        measured += f" ({show(spread.low)}-{show(spread.high)}, n={spread.n})"
    ratio = row.ratio
    within = row.within(CHECK_TOLERANCE)
    verdict = _NONE if within is None else ("yes" if within else "[bold]no[/]")
    return measured, _NONE if ratio is None else f"{ratio:.0%}", verdict


def _value(value: float | None, show: Callable[[float], str]) -> str:
    return _NONE if value is None else show(value)


def _times(value: float) -> str:
    return f"{value:.2f}x"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"  # 49.8, not 50


_FORMATS: dict[str, Callable[[float], str]] = {
    "x": _times,
    "samples/s": _rate,
    "bytes": format_bytes,
}
