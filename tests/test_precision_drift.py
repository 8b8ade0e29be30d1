"""benchmarks/precision_drift.py: what it reads off three curves, and what it cannot."""

from __future__ import annotations

from rich.console import Console

from autotune import stability
from benchmarks import precision_drift

TARGET = 0.06


def _curve(rate: float, after: int = 10_000, offset: float = 0.0) -> list[float]:
    """An exponential decay, ``offset`` higher (relatively) from step ``after`` on."""
    return [rate**k * (1 + (offset if k >= after else 0.0)) for k in range(140)]


def test_a_curve_that_leaves_fp32_only_past_the_target_is_judged_agreeing_and_behind() -> None:
    fp32 = _curve(0.95)
    crossing = stability.steps_to_target(fp32, TARGET)
    assert crossing is not None
    bf16 = _curve(0.95, after=crossing + 1, offset=0.2)
    found = precision_drift.drift(precision_drift.Curves(bf16, fp32, control=fp32), TARGET)
    assert found.judged_gap < 0.01
    assert found.stable
    assert found.steps[1] == found.steps[2] == crossing
    # the smoothed gap grows toward the 20% offset past the crossing, bf16 behind
    gaps = [g for g in found.bf16_past if g is not None]
    assert len(gaps) == 3
    assert 0.03 < gaps[0] < gaps[1] < gaps[2] < 0.2
    assert found.control_past == (0.0, 0.0, 0.0)


def test_a_curve_that_never_reaches_the_target_has_no_drift_past_it_and_fails() -> None:
    fp32 = _curve(0.95)
    stalled = [max(v, 0.2) for v in fp32]
    found = precision_drift.drift(precision_drift.Curves(stalled, fp32, control=fp32), TARGET)
    assert found.steps[0] is None
    assert found.bf16_past == (None, None, None)
    assert not found.stable
    rows = [(1e-2, 0, found)]
    assert precision_drift._summary(rows) == "too few curves reached the target to compare"
    console = Console(width=160, record=True)
    console.print(precision_drift._table(rows, TARGET, 1e-2))
    text = console.export_text()
    assert "not reached" in text
    assert "FAIL" in text
