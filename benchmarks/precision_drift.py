"""How far a bf16 loss curve strays from fp32's, before and after it reaches the target.

    python -m benchmarks.precision_drift [--task examples/cnn_digits.py]
        [--tuned benchmarks/results/searches/cnn_digits_bf16_tuned_w.yaml]
        [--lrs 8e-3 1.4e-2 1.6e-2 2e-2] [--seeds 0 1 2] [--steps 140] [--nudge 1e-2]

The evidence behind :func:`autotune.stability.verdict`'s ``target=``: a reduced precision's
fp32 agreement is judged over the steps up to where its curve reached the target loss, not
over whatever steps the trial ran past it. For each LR and seed it runs the tuned config
(same seed, so the same initial weights and data order) three ways as supervised trials:
``bf16-mixed``, ``32-true``, and ``32-true`` at the LR times ``1 + --nudge`` (the control).
It prints, per run:

1. each curve's steps to the target (tuned.yaml's ``measured.target_loss``);
2. the gap the verdict judges (bf16 vs fp32 up to bf16's crossing) and its pass/fail at
   :data:`~autotune.stability.REFERENCE_TOLERANCE`;
3. the smoothed bf16 vs fp32 gap 5, 10 and 15 steps past bf16's crossing;
4. the same for the control against fp32, past fp32's crossing: how far two fp32 curves
   that differ by a 1% LR drift there.

Signed gaps are positive where the curve is behind fp32 (a higher loss). Where (3) is no
larger than (4) and its sign is a coin toss, the drift past the target is the chaos of
training (any perturbation, bf16 rounding or an LR too small for a search to resolve,
sends the trajectory elsewhere), not a precision that trains worse.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autotune import stability
from autotune.config import TrainConfig, load_tuned_config
from autotune.search._measure import Trialist, measured

console = Console()
PAST_TARGET = (5, 10, 15)  # steps past a crossing; the old window reached ~15 steps past it
RUN_CAP_S = 120.0  # one trial's time cap: a 140-step cnn_digits run takes ~1 s


@dataclass(frozen=True)
class Curves:
    """The three loss curves of one LR and seed."""

    bf16: list[float]
    fp32: list[float]
    control: list[float]


@dataclass(frozen=True)
class Drift:
    """What one :class:`Curves` says, against one target loss."""

    steps: tuple[int | None, int | None, int | None]  # bf16, fp32, control to the target
    judged_gap: float  # what the verdict compares: bf16 vs fp32 up to bf16's crossing
    stable: bool  # the verdict's fp32 check at REFERENCE_TOLERANCE
    bf16_past: tuple[float | None, ...]  # (bf16 - fp32) / fp32, PAST_TARGET after bf16's
    control_past: tuple[float | None, ...]  # (control - fp32) / fp32, after fp32's


def drift(curves: Curves, target: float) -> Drift:
    """The judged gap and the pointwise gaps past the crossings, from the smoothed curves."""
    reached = tuple(
        stability.steps_to_target(c, target) for c in (curves.bf16, curves.fp32, curves.control)
    )
    judged = stability.compared_steps(curves.bf16, target)
    verdict = stability.verdict(curves.bf16, curves.fp32, target=target)
    return Drift(
        steps=(reached[0], reached[1], reached[2]),
        judged_gap=stability.reference_gap(curves.bf16[:judged], curves.fp32),
        stable=verdict.stable,
        bf16_past=_past(curves.bf16, curves.fp32, reached[0]),
        control_past=_past(curves.control, curves.fp32, reached[1]),
    )


def _past(
    ours: Sequence[float], reference: Sequence[float], crossing: int | None
) -> tuple[float | None, ...]:
    """(ours - reference) / |reference| of the smoothed curves PAST_TARGET steps after
    ``crossing`` (positive: ours is behind); None where the crossing is unknown or the
    curves end before it."""
    if crossing is None:
        return tuple(None for _ in PAST_TARGET)
    a, b = stability.smooth(ours), stability.smooth(reference)
    common = min(len(a), len(b))
    return tuple(
        (a[k] - b[k]) / abs(b[k]) if k < common and b[k] != 0 else None
        for k in (crossing + d for d in PAST_TARGET)
    )


def main() -> int:
    args = _arguments()
    tuned = load_tuned_config(args.tuned)
    if tuned.measured is None or tuned.measured.target_loss is None:
        console.print(f"{args.tuned} records no target loss: give a tuned.yaml from a search")
        return 2
    target = tuned.measured.target_loss
    rows: list[tuple[float, int, Drift]] = []
    for seed in args.seeds:
        with (
            tempfile.TemporaryDirectory(prefix="precision-drift-") as scratch,
            Trialist(args.task, Path(scratch), seed=seed) as trials,
        ):
            for lr in args.lrs:
                curves = _curves(trials, tuned.train, lr, args.steps, args.nudge)
                rows.append((lr, seed, drift(curves, target)))
                console.print(_line(lr, seed, rows[-1][2]), highlight=False)
    console.print(_table(rows, target, args.nudge))
    console.print(_summary(rows), highlight=False)
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--task", type=Path, default=Path("examples/cnn_digits.py"))
    parser.add_argument(
        "--tuned",
        type=Path,
        default=Path("benchmarks/results/searches/cnn_digits_bf16_tuned_w.yaml"),
        help="a tuned.yaml of --task: its train config and target loss",
    )
    parser.add_argument("--lrs", type=float, nargs="+", default=[8e-3, 1.4e-2, 1.6e-2, 2e-2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=140, help="steps per run")
    # 1%: far finer than any LR search resolves, so a drift it causes is not a lesser config
    parser.add_argument("--nudge", type=float, default=1e-2, help="the control's LR change")
    return parser.parse_args()


def _curves(trials: Trialist, train: TrainConfig, lr: float, steps: int, nudge: float) -> Curves:
    return Curves(
        bf16=_losses(trials, _at(train, "bf16-mixed", lr), steps),
        fp32=_losses(trials, _at(train, "32-true", lr), steps),
        control=_losses(trials, _at(train, "32-true", lr * (1 + nudge)), steps),
    )


def _at(train: TrainConfig, precision: str, lr: float) -> TrainConfig:
    optimizer = train.optimizer.model_copy(update={"lr": lr})
    return train.model_copy(update={"precision": precision, "optimizer": optimizer})


def _losses(trials: Trialist, config: TrainConfig, steps: int) -> list[float]:
    run = measured(trials.run(config, steps, time_cap_s=RUN_CAP_S), config, None)
    if run is None or len(run.losses) < steps:
        raise RuntimeError(f"{config.precision} at lr {config.optimizer.lr:.3g} did not finish")
    return run.losses


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _steps(value: int | None) -> str:
    return "not reached" if value is None else str(value)


def _line(lr: float, seed: int, row: Drift) -> str:
    return (
        f"lr {lr:.3g} seed {seed}: steps to target {'/'.join(map(_steps, row.steps))} "
        f"(bf16/fp32/control); judged gap {row.judged_gap:.2%}; past the target "
        f"{' '.join(map(_signed, row.bf16_past))} vs control "
        f"{' '.join(map(_signed, row.control_past))}"
    )


def _table(rows: Sequence[tuple[float, int, Drift]], target: float, nudge: float) -> Table:
    past = "/".join(f"+{d}" for d in PAST_TARGET)
    table = Table(title=f"bf16 vs fp32 loss curves, to the target {target:.4g} and past it")
    for name in (
        "lr",
        "seed",
        "steps to target bf16 / fp32 / control",
        f"judged gap (<= {stability.REFERENCE_TOLERANCE:.0%})",
        f"bf16 vs fp32 at {past}",
        f"control (lr x {1 + nudge:g}) vs fp32 at {past}",
    ):
        table.add_column(name)
    for lr, seed, row in rows:
        table.add_row(
            f"{lr:.3g}",
            str(seed),
            " / ".join(map(_steps, row.steps)),
            f"{row.judged_gap:.2%} {'pass' if row.stable else 'FAIL'}",
            " ".join(map(_signed, row.bf16_past)),
            " ".join(map(_signed, row.control_past)),
        )
    return table


def _summary(rows: Sequence[tuple[float, int, Drift]]) -> str:
    """The medians the conclusion rests on: the judged gap, both drifts past the target
    (absolute), and how often bf16 was behind fp32 there (a bias, or a coin toss)."""
    judged = [row.judged_gap for _, _, row in rows if row.steps[0] is not None]
    bf16 = [g for _, _, row in rows for g in row.bf16_past if g is not None]
    control = [abs(g) for _, _, row in rows for g in row.control_past if g is not None]
    if not (judged and bf16 and control):
        return "too few curves reached the target to compare"
    behind = sum(g > 0 for g in bf16)
    return (
        f"where bf16 reached the target ({len(judged)} runs): judged gap {_spread(judged)}; "
        f"past the target |bf16 - fp32| {_spread([abs(g) for g in bf16])}, bf16 behind in "
        f"{behind} of {len(bf16)}; |control - fp32| {_spread(control)}"
    )


def _spread(values: Sequence[float]) -> str:
    return f"median {statistics.median(values):.1%} ({min(values):.1%}-{max(values):.1%})"


if __name__ == "__main__":
    raise SystemExit(main())
