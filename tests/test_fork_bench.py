"""benchmarks/fork_bench.py: its launchers take turns, and its table says what it knows."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from benchmarks import fork_bench


def test_launchers_take_turns_and_autotune_run_shows_no_start_up() -> None:
    order: list[str] = []

    def launcher(name: str, startup: float | None, rate: float) -> Callable[[], fork_bench.Sample]:
        def run() -> fork_bench.Sample:
            order.append(name)
            return startup, rate

        return run

    launchers = {
        "forked": launcher("forked", 0.2, 100.0),
        "fresh": launcher("fresh", 6.0, 90.0),
        "autotune run": launcher("autotune run", None, 95.0),
    }
    runs = fork_bench._interleaved(launchers, rounds=3)
    assert order == [
        *("forked", "fresh", "autotune run"),
        *("fresh", "autotune run", "forked"),
        *("autotune run", "forked", "fresh"),
    ]
    console = Console(width=120, record=True)
    console.print(fork_bench._table(runs))
    text = console.export_text()
    assert "│ forked       │ 3    │ 0.20 (0.20-0.20) │ 100.0 (100.0-100.0) │" in text
    assert "│ autotune run │ 3    │ -                │ 95.0 (95.0-95.0)    │" in text
