"""Rich table shapes shared by the CLI's views."""

from __future__ import annotations

from rich.table import Table

__all__ = ["key_value_table"]


def key_value_table(title: str) -> Table:
    """A headerless two-column table: bold keys on the left, values on the right."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    return table
