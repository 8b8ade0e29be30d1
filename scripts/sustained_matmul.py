"""Does this machine slow down under sustained load (a power or heat limit)?

    python scripts/sustained_matmul.py [--seconds 100] [--size 512]

Multiplies two fp32 matrices on all cores without a pause and prints matmuls/s every
5 s. A power or heat limit shows as a step down after some seconds of load. On the 2-core
AVX512-BF16 host (2026-12-05) it held 809-866 matmuls/s (512x512) for 100 s, so the two
speed levels single runs of the examples land on (benchmarks/results/
fork_bench_cnn_digits_bf16_z3_watched.txt) are not brought on by sustained load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

_WINDOW_S = 5.0  # long enough to average out one scheduler hiccup, short enough to see a step


def main() -> int:
    args = _arguments()
    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(args.size, args.size), torch.randn(args.size, args.size)
    start = last = time.monotonic()
    count = 0
    while time.monotonic() - start < args.seconds:
        a @ b
        count += 1
        now = time.monotonic()
        if now - last >= _WINDOW_S:
            print(f"{now - start:5.0f} s  {count / (now - last):8.0f} matmuls/s", flush=True)
            count, last = 0, now
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=100.0, help="how long to load it")
    parser.add_argument("--size", type=int, default=512, help="the square matrices' side")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
