"""Keep this machine busy, as a test suite beside a search does: the busy-host check.

    python scripts/busy_host.py --seconds 300 --workers 2 &
    autotune search examples/mlp_digits.py --budget 2m

Each worker multiplies 1024x1024 matrices on ``--threads`` threads until ``--seconds``
have passed. On the 2-core host two workers slowed mlp_digits' baseline from 5000 steps
in its share of the budget to 30, the failure a demo met with the test suite running
beside it; the search must then warn that its target is on the loss's first drop
(``measured.warnings`` in tuned.yaml), not present its speed-up as found.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time


def _spin(seconds: float, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(1024, 1024)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        a = (a @ a).tanh_()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="How long to stay busy.")
    parser.add_argument("--workers", type=int, default=2, help="Busy processes.")
    parser.add_argument("--threads", type=int, default=2, help="Threads per process.")
    args = parser.parse_args()
    workers = [
        multiprocessing.Process(target=_spin, args=(args.seconds, args.threads))
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=args.seconds + 60)  # each stops itself at --seconds


if __name__ == "__main__":
    main()
