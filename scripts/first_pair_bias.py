"""Was the first confirmation pair's tuned run slower than the others? From search logs.

    python scripts/first_pair_bias.py [--exclude-letter v ...] [LOG ...]

Reads the ``pair N: tuned X s, baseline Y s`` lines of ``autotune search`` logs (default:
every ``benchmarks/results/searches/*_search_*.txt``) and prints, per log with at least 4
pairs, the first pair's tuned time over the median of the other pairs' tuned times, then
the median of those ratios, and how often a fair coin puts as many of them above 1 (a
one-sided sign test). Until be17d47 the first pair's tuned run also measured peak memory,
inside the run, with the CPU profiler; ``--exclude-letter v`` leaves out the logs
written after that change (the letter is the file name's last ``_`` part).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIR = re.compile(r"pair \d+: tuned ([0-9.]+) s")
MIN_PAIRS = 4  # the first pair against a median of at least three others


def main() -> int:
    args = _arguments()
    logs = args.logs or sorted((ROOT / "benchmarks/results/searches").glob("*_search_*.txt"))
    ratios: list[float] = []
    for log in logs:
        if log.stem.rsplit("_", 1)[-1] in args.exclude_letter:
            continue
        times = [float(t) for t in PAIR.findall(log.read_text())]
        if len(times) >= MIN_PAIRS:
            ratios.append(times[0] / statistics.median(times[1:]))
            print(f"{log.name}: {ratios[-1]:.2f}")
    if not ratios:
        print("no log with enough pairs")
        return 1
    print(f"{len(ratios)} logs; median first-pair ratio {statistics.median(ratios):.3f}")
    above = sum(ratio > 1.0 for ratio in ratios)
    chance = _tail(above, len(ratios))
    print(f"{above} of {len(ratios)} above 1; a fair coin gives as many or more {chance:.0%}")
    return 0


def _tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the one-sided sign test."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("logs", nargs="*", type=Path, help="search logs (default: all)")
    parser.add_argument(
        "--exclude-letter", action="append", default=[], help="leave out logs of this letter"
    )
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
