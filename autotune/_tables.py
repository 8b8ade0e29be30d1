"""Rich table shapes shared by the CLI's views."""

from __future__ import annotations

from rich.table import Table

from autotune.config import Measured

__all__ = ["key_value_table", "speedup_text"]


def key_value_table(title: str) -> Table:
    """A headerless two-column table: bold keys on the left, values on the right."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    return table


def speedup_text(measured: Measured, count: str = "{} pairs") -> str | None:
    """The time-to-target speed-up with its range and ``count`` of pairs, or its lower
    bound where the baseline never reached the target (``speedup_at_least``); None where
    neither is known."""
    if measured.speedup_spread is not None:
        s = measured.speedup_spread
        return f"{s.median:.2f}x (range {s.low:.2f}-{s.high:.2f}, {count.format(s.n)})"
    if measured.speedup_at_least is not None:
        s = measured.speedup_at_least
        return (
            f"at least {s.median:.2f}x (range {s.low:.2f}-{s.high:.2f}, {count.format(s.n)}; "
            f"the baseline never reached the target)"
        )
    if measured.speedup_vs_baseline is not None:
        return f"{measured.speedup_vs_baseline:.2f}x"
    return None
