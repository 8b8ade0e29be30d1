"""How far does noise alone lift a smoothed loss above its running minimum? (DIVERGENCE_NOISE)

    python scripts/divergence_noise.py [--curves 300] [--steps 3000]

On flat seeded noise (white, and heavy-tailed: lognormal batch losses with a few hard
samples), the largest climb of the zero-lag smoothed curve above its running minimum, in
:func:`autotune.stability.step_noise` units: the median, 99th percentile and maximum over
``--curves`` curves of ``--steps`` steps. A rise must clear DIVERGENCE_NOISE of these to
count as divergence. Then the 40 curves of ``tests/test_stability.py`` (a loss falling to
0.055 under heavy-tailed batch noise): how many the 50% rule alone calls diverged.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable

from autotune import stability


def _climb(losses: list[float]) -> float:
    """The largest climb of the zero-lag curve above its running minimum, in step noise."""
    trend = stability._zero_lag(losses, stability.SMOOTHING_ALPHA)
    best, climb = trend[0], 0.0
    for value in trend:
        best = min(best, value)
        climb = max(climb, value - best)
    return climb / stability.step_noise(losses)


def _white(rng: random.Random) -> float:
    return rng.gauss(0.0, 1.0)


def _heavy(rng: random.Random) -> float:
    return 0.05 * rng.expovariate(1.0) + (rng.random() < 0.05) * 0.5 * rng.expovariate(1.0)


def _spread(noise: Callable[[random.Random], float], curves: int, steps: int) -> str:
    climbs = []
    for seed in range(curves):
        rng = random.Random(seed)
        climbs.append(_climb([noise(rng) for _ in range(steps)]))
    climbs.sort()
    p99 = climbs[min(len(climbs) - 1, math.ceil(0.99 * len(climbs)) - 1)]
    return f"median {statistics.median(climbs):.2f}, p99 {p99:.2f}, max {climbs[-1]:.2f}"


def _test_curve(seed: int) -> list[float]:
    """tests/test_stability.py's _hard_batches(seed)."""
    rng = random.Random(seed)
    return [
        (0.055 + 0.4 * math.exp(-0.03 * k)) * math.exp(rng.gauss(0, 0.8) - 0.32) for k in range(250)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=int, default=300)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    for name, noise in (("white", _white), ("heavy-tailed", _heavy)):
        print(
            f"{name} noise, {args.curves} x {args.steps} steps: climb in step noise: "
            f"{_spread(noise, args.curves, args.steps)}"
        )
    curves = [_test_curve(seed) for seed in range(40)]
    allowed = stability.DIVERGENCE_NOISE
    stability.DIVERGENCE_NOISE = 0.0  # the 50% rule alone, as before the allowance
    try:
        before = sum(stability.diverged(curve) for curve in curves)
    finally:
        stability.DIVERGENCE_NOISE = allowed
    after = sum(stability.diverged(curve) for curve in curves)
    print(
        f"test curves called diverged: {before} of 40 by the 50% rule alone, {after} with "
        f"the allowance of {allowed:g} step deviations"
    )


if __name__ == "__main__":
    main()
