"""Is a run's speed set per process on this host, or does it drift within a process?

    python scripts/speed_levels.py [TASK] [--processes 8] [--seconds 5] [--batch 64]
        [--threads 2] [--precision bf16|fp32]

Trains the Task's model in ``--processes`` fresh processes, one after another, each for
``--seconds`` at one micro-batch, and prints each process's samples/s in 0.5 s windows.
The summary sets the spread within a process (its windows after the first second) beside
the spread between processes (their medians).

On the 2-core AVX512-BF16 host (2026-12-05), cnn_digits in bf16 at micro 64 held most
processes within 5-12% across their windows, while the medians of 10 processes ranged
11.4-16.3k samples/s (36% of their median), and 12.0-15.4k (25%) with
OMP_PROC_BIND=close OMP_PLACES=cores (benchmarks/results/speed_levels_cnn_digits_bf16.txt);
`setarch -R` (no address randomization) and one thread (9.1-11.6k) left it as wide. So a
single `autotune run -c` lands on one of these levels, and matches the search's median
within +-10% only when the level allows it; `autotune check`'s interleaved ratios do not
depend on the level.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

_WINDOW_S = 0.5  # short enough to see a level change, long enough for dozens of steps
_SETTLE_S = 1.0  # the first windows hold first-touch allocation and thread start-up


def main() -> int:
    args = _arguments()
    if args.child:
        _child(args)
        return 0
    medians = []
    for k in range(args.processes):
        windows = _one_process(args)
        settled = windows[int(_SETTLE_S / _WINDOW_S) :] or windows
        medians.append(statistics.median(settled))
        spread = (max(settled) - min(settled)) / medians[-1]
        shown = " ".join(f"{w / 1000:.1f}" for w in windows)
        print(f"process {k}: {shown}  (k samples/s; settled spread {spread:.0%})", flush=True)
    low, high = min(medians), max(medians)
    print(
        f"between processes: medians {low / 1000:.1f}-{high / 1000:.1f}k samples/s "
        f"({(high - low) / statistics.median(medians):.0%} of their median)"
    )
    return 0


def _one_process(args: argparse.Namespace) -> list[float]:
    command = [sys.executable, __file__, args.task, "--child", *_passed(args)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=args.seconds + 120, check=True
    )
    return [float(v) for v in done.stdout.split()]


def _passed(args: argparse.Namespace) -> list[str]:
    return [
        f"--seconds={args.seconds}",
        f"--batch={args.batch}",
        f"--threads={args.threads}",
        f"--precision={args.precision}",
    ]


def _child(args: argparse.Namespace) -> None:
    import torch

    from autotune.task import load_task

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    task = load_task(args.task)
    model, dataset = task.build_model(), task.build_dataset()
    size = len(dataset)  # type: ignore[arg-type]  # the examples' datasets are sized
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    windows: list[float] = []
    start = last = time.perf_counter()
    samples = 0
    while time.perf_counter() - start < args.seconds:
        picks = torch.randint(0, size, (args.batch,), generator=order).tolist()
        batch = task.collate([dataset[i] for i in picks])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = task.compute_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        samples += args.batch
        now = time.perf_counter()
        if now - last >= _WINDOW_S:
            windows.append(samples / (now - last))
            samples, last = 0, now
    print(" ".join(f"{w:.1f}" for w in windows))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="?", default="examples/cnn_digits.py")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
