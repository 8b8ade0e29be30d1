"""How far one systems-phase measurement can rank two micro-batches wrongly.

    python -m benchmarks.systems_noise [--task examples/cnn_digits.py] [--small 16]
        [--large 64] [--rounds 12] [--steps 12 45] [--precisions 32-true bf16-mixed]

Runs the Task's baseline at micro-batch ``--small`` and ``--large`` as the systems phase
does (one supervised trial each, a third of the steps burn-in), in pairs of fresh forked
workers with the order alternating, ``--rounds`` times for each ``--steps`` length. Prints
each pair's samples/s gain of the large batch over the small one, then its median, range
and how many pairs fell under the larger-batch seed's threshold
(:data:`autotune.search._convergence._LARGER_GAIN`). A spread that crosses it is why the
seed steps up to the next batch instead of the smallest one that clears it.

With ``--precisions A B`` it compares two precisions at micro-batch ``--large`` instead:
each pair's samples/s of B over A, and how many fell under the margin a reduced precision
must clear (:data:`autotune.search._precision.PRECISION_MARGIN`). A spread that crosses it
is why the search fits the ratio over every micro-batch
(:func:`~autotune.search._precision.settled`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from rich.console import Console

from autotune._hugepages import restart_for_measuring
from autotune.config import TrainConfig, train_config_from_baseline
from autotune.search._convergence import _LARGER_GAIN
from autotune.search._measure import Trialist, measured
from autotune.search._precision import PRECISION_MARGIN
from autotune.task import load_task

console = Console()


def main() -> int:
    args = _arguments()
    base = train_config_from_baseline(load_task(args.task))
    with (
        tempfile.TemporaryDirectory(prefix="systems-noise-") as scratch,
        Trialist(args.task, Path(scratch), seed=0) as trials,
    ):
        first, second = _compared(args, base)
        gains = _pairs(trials, args, first, second)
    bar = PRECISION_MARGIN if args.precisions else _LARGER_GAIN
    for steps, found in gains.items():
        under = sum(g < bar for g in found)
        console.print(
            f"{steps} steps: {_label(second, args)} / {_label(first, args)} = "
            f"{statistics.median(found):.2f}x median ({min(found):.2f}-{max(found):.2f}); "
            f"under {bar:g}x in {under} of {len(found)}",
            highlight=False,
        )
    return 0


def _compared(args: argparse.Namespace, base: TrainConfig) -> tuple[TrainConfig, TrainConfig]:
    """The two configs whose samples/s are compared: micro-batches ``--small`` and
    ``--large``, or ``--precisions``' two at ``--large``."""
    if not args.precisions:
        return _at(base, args.small), _at(base, args.large)
    a, b = (_at(base, args.large).model_copy(update={"precision": p}) for p in args.precisions)
    return a, b


def _label(config: TrainConfig, args: argparse.Namespace) -> str:
    if args.precisions:
        return f"{config.precision} micro {config.micro_batch_size}"
    return f"micro {config.micro_batch_size}"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--task", type=Path, default=Path("examples/cnn_digits.py"))
    parser.add_argument("--small", type=int, default=16, help="the smaller micro-batch")
    parser.add_argument("--large", type=int, default=64, help="the larger micro-batch")
    parser.add_argument("--rounds", type=int, default=12, help="pairs per length")
    parser.add_argument("--steps", type=int, nargs="+", default=[12, 45], help="run lengths")
    parser.add_argument(
        "--precisions",
        nargs=2,
        metavar=("A", "B"),
        help="compare precision B over A at micro-batch --large instead of two sizes",
    )
    return parser.parse_args()


def _pairs(
    trials: Trialist, args: argparse.Namespace, first: TrainConfig, second: TrainConfig
) -> dict[int, list[float]]:
    """``second``'s samples/s over ``first``'s, per pair (the order alternating), per run
    length."""
    gains: dict[int, list[float]] = {steps: [] for steps in args.steps}
    for k in range(args.rounds):
        for steps in args.steps:
            order = (first, second) if k % 2 else (second, first)
            rates = [_rate(trials, c, steps) for c in order]
            ratio = rates[1] / rates[0] if k % 2 else rates[0] / rates[1]
            gains[steps].append(ratio)
        console.print(f"pair {k + 1}: " + ", ".join(_last(gains)), highlight=False)
    return gains


def _at(base: TrainConfig, micro: int) -> TrainConfig:
    return base.model_copy(update={"micro_batch_size": micro, "global_batch_size": micro})


def _rate(trials: Trialist, config: TrainConfig, steps: int) -> float:
    run = measured(trials.run(config, steps, time_cap_s=60, warmup_steps=steps // 3), config, None)
    if run is None:
        raise RuntimeError(f"micro {config.micro_batch_size} recorded no step")
    return run.samples_per_s


def _last(gains: dict[int, list[float]]) -> list[str]:
    return [f"{steps} steps {found[-1]:.2f}x" for steps, found in gains.items()]


if __name__ == "__main__":
    restart_for_measuring()  # measure under the allocator the CLI trains with
    raise SystemExit(main())
