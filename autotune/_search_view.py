"""The terminal side of ``autotune search``: a live status line over the event log while
it runs (trial k/N, status counts, best so far, ETA), then the result and the top configs.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from autotune._tables import key_value_table, speedup_text
from autotune._units import format_bytes, format_seconds
from autotune.config import Rejected
from autotune.explain import explain
from autotune.search import SearchOutcome, Standing, TopConfig, describe

__all__ = ["SearchView", "phase_line", "rejected_line", "result_table", "top_table"]


class SearchView:
    """A context manager: ``note`` prints an event line above a live status line that
    ``progress`` updates. On a non-terminal console (CI logs, tests) there is no live line:
    each trial's event line already carries the same standing."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()
        self.status = Text("starting", style="bold")
        self.live = Live(self.status, console=console, auto_refresh=False, transient=True)

    def __enter__(self) -> SearchView:
        if self.console.is_terminal:
            self.live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.live.is_started:
            self.live.stop()

    def note(self, line: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:6.1f}s[/] {escape(line)}", highlight=False)

    def progress(self, standing: Standing) -> None:
        self.status = Text(f"search {standing.line()}", style="bold")
        if self.live.is_started:
            self.live.update(self.status, refresh=True)


def result_table(outcome: SearchOutcome, output: str) -> Table:
    """The recommendation and its confirmed speed-ups."""
    tuned = outcome.tuned
    table = key_value_table(f"autotune search -> {escape(output)}")
    train, measured = tuned.train, tuned.measured
    table.add_row("precision", train.precision)
    table.add_row(
        "batch",
        f"{train.micro_batch_size} micro x {train.grad_accum_steps} accum x "
        f"{train.world_size} ranks = {train.global_batch}",
    )
    table.add_row("checkpointing", str(train.activation_checkpointing))
    table.add_row(
        "optimizer",
        f"{train.optimizer.name} lr {train.optimizer.lr:.3g}, {train.schedule.name} "
        f"schedule, warmup {train.schedule.warmup_steps} steps",
    )
    if outcome.phases:
        table.add_row("search time", phase_line(outcome.phases))
    if measured is None:
        return table
    speedup = speedup_text(measured)
    if speedup is not None:
        table.add_row("time-to-target speed-up", speedup)
    if measured.throughput_speedup is not None:
        s = measured.throughput_speedup
        table.add_row("throughput speed-up", f"{s.median:.2f}x (range {s.low:.2f}-{s.high:.2f})")
    table.add_row("samples/s", f"{measured.throughput_samples_per_s:,.1f}")
    table.add_row("peak memory", format_bytes(measured.peak_memory_bytes))
    table.add_row("target loss", f"{measured.target_loss:.4f}" if measured.target_loss else "-")
    why = explain(tuned)
    if why is not None:
        table.add_row("why", escape(f"{why.headline()}. {why.source()}"))
    if measured.rejected is not None:
        table.add_row("[bold yellow]rejected pick[/]", rejected_line(measured.rejected))
    for warning in measured.warnings:
        table.add_row("[bold yellow]warning[/]", escape(warning))
    return table


def rejected_line(rejected: Rejected) -> str:
    """The pick the confirmation measured no faster than the baseline, and by how much."""
    if rejected.speedup is not None:
        s = rejected.speedup
        how = f"{s.median:.2f}x (range {s.low:.2f}-{s.high:.2f}, {s.n} pairs)"
    else:
        how = "never at the target in the confirmation"
    return escape(f"{describe(rejected.train)}: {how}; the baseline is kept")


def phase_line(phases: dict[str, float]) -> str:
    """Where the search's wall time went, e.g. ``probe 4 s, baseline 3 s, ... (total 88 s)``."""
    parts = [f"{name} {seconds:.0f} s" for name, seconds in phases.items()]
    return f"{', '.join(parts)} (total {sum(phases.values()):.0f} s)"


def top_table(rows: list[TopConfig]) -> Table:
    """The best convergence trials, fastest to the target first, as the search ranked them
    at its end; the one tuned.yaml applies is marked."""
    caption = (
        "time to target: the trial's steps to it at the pace of all the search's runs of its step"
    )
    if any(row.picked for row in rows):
        caption += "; * the pick (after the runoff and the fp32 check)"
    table = Table(
        title="top configurations", title_justify="left", caption=caption, caption_justify="left"
    )
    for name in ("trial", "status", "config", "time to target", "step", "samples/s"):
        table.add_column(name, justify="right" if name != "config" else "left")
    for row in rows:
        table.add_row(
            f"{row.trial}{' *' if row.picked else ''}",
            row.status,
            escape(row.config),
            format_seconds(row.time_to_target_s) if row.time_to_target_s is not None else "-",
            str(row.target_step) if row.target_step is not None else "-",
            f"{row.samples_per_s:,.1f}" if row.samples_per_s is not None else "-",
        )
    return table
