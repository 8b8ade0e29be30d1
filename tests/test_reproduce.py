"""benchmarks/reproduce.py: `autotune run -c tuned.yaml` against what tuned.yaml records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import reproduce
from tests.conftest import TINY_TASK
from tests.test_show import row


def test_within_is_a_two_sided_relative_bound() -> None:
    assert reproduce.within(109.0, 100.0) and reproduce.within(91.0, 100.0)
    assert not reproduce.within(111.0, 100.0) and not reproduce.within(89.0, 100.0)


def test_pairs_alternate_which_runs_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, ...]] = []

    def fake(task: Path, config: list[str], *_: Any) -> float:
        calls.append(tuple(config))
        return 200.0 if config else 100.0

    monkeypatch.setattr(reproduce, "run_once", fake)
    found = reproduce.reproduce(Path("t.py"), Path("tuned.yaml"), (3, 9), 10, tmp_path)
    tuned, base = ("-c", "tuned.yaml"), ()
    assert calls == [tuned, base, base, tuned, tuned, base]
    assert found.pair_speedups == [2.0, 2.0, 2.0]


def test_unsettled_tuned_runs_get_more_pairs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Three runs spread 8.8k-13.3k (cnn_digits, 400 steps) say little about the median:
    pairs go on until the tuned samples/s settles, or to the most."""
    drifting = iter([9900.0, 13300.0, 8800.0, 10900.0, 10100.0, 10300.0, 10000.0] + [10000.0] * 9)

    def fake(task: Path, config: list[str], *_: Any) -> float:
        return next(drifting) if config else 8400.0

    monkeypatch.setattr(reproduce, "run_once", fake)
    found = reproduce.reproduce(Path("t.py"), Path("tuned.yaml"), (3, 9), 10, tmp_path)
    assert 3 < len(found.tuned) <= 9 and len(found.baseline) == len(found.tuned)
    monkeypatch.setattr(reproduce, "run_once", lambda _t, config, *_: 9000.0)
    steady = reproduce.reproduce(Path("t.py"), Path("tuned.yaml"), (3, 9), 10, tmp_path)
    assert len(steady.tuned) == 3


def test_run_once_reads_the_real_commands_json(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    task = write_task(TINY_TASK)
    rate = reproduce.run_once(task, [], 12, tmp_path / "out.json", tmp_path)
    assert rate > 0


def test_a_failing_run_is_an_error_with_its_output(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    task = write_task("raise SystemExit('no task here')")
    with pytest.raises(RuntimeError, match="exited"):
        reproduce.run_once(task, [], 12, tmp_path / "out.json", tmp_path)


def test_the_table_puts_the_baselines_own_change_beside_the_tuned_one() -> None:
    from rich.console import Console

    from tests._tuned import make_tuned

    found = reproduce.Reproduced(tuned=[1000.0, 1100.0, 1050.0], baseline=[500.0, 520.0, 480.0])
    console = Console(width=200, record=True)
    console.print(reproduce._table(make_tuned(), found))  # records 812.5, baseline 400.0
    text = console.export_text()
    assert row(text, "samples/s")[1:4] == ["812.5", "1,050.0 (1,000.0-1,100.0, n=3)", "129%"]
    # the same config then and now: the machine's own change, 500 / 400
    assert row(text, "baseline samples/s")[1:4] == ["400.0", "500.0 (480.0-520.0, n=3)", "125%"]
