"""Is a run's speed set per process on this host, or does it drift within a process?

    python scripts/speed_levels.py [TASK] [--processes 8] [--seconds 5] [--batch 64]
        [--threads 2] [--precision bf16|fp32] [--env NAME=VALUE ...]

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

With ``--env``, the processes alternate between this environment as it is and with those
variables set, so the two are compared interleaved, each at its own per-process levels.
On the 2-core AMX host (2026-12-06), ``--env GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
(glibc backs its heap and mmap'd chunks with transparent huge pages) raised the median
process by 6% on cnn_digits, its processes within 5% of each other against 12%, and by 5%
on tiny_gpt (benchmarks/results/speed_levels_*_amx_hugetlb.txt); autotune's CLI therefore
starts its training commands that way (autotune/_hugepages.py).
"""

from __future__ import annotations

import argparse
import os
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
    extra = dict(_assignment(text) for text in args.env)
    conditions = ["as is", " ".join(args.env)] if extra else ["as is"]
    medians: dict[str, list[float]] = {name: [] for name in conditions}
    for k in range(args.processes * len(conditions)):
        name = conditions[k % len(conditions)]
        windows = _one_process(args, extra if name != "as is" else {})
        settled = windows[int(_SETTLE_S / _WINDOW_S) :] or windows
        medians[name].append(statistics.median(settled))
        spread = (max(settled) - min(settled)) / medians[name][-1]
        shown = " ".join(f"{w:.4g}" for w in windows)
        print(f"process {k} ({name}): {shown}  (samples/s; spread {spread:.0%})", flush=True)
    for name, values in medians.items():
        low, high, mid = min(values), max(values), statistics.median(values)
        print(
            f"{name}: between processes, medians {low:.4g}-{high:.4g} samples/s "
            f"({(high - low) / mid:.0%} of their median, {mid:.4g})"
        )
    if extra:
        ratio = statistics.median(medians[conditions[1]]) / statistics.median(medians["as is"])
        print(f"{conditions[1]} against as is: {ratio:.2f}x (median process against median)")
    return 0


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--env takes NAME=VALUE, but got {text!r}.")
    return name, value


def _one_process(args: argparse.Namespace, extra: dict[str, str]) -> list[float]:
    command = [sys.executable, __file__, args.task, "--child", *_passed(args)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=args.seconds + 120,
        check=True,
        env={**os.environ, **extra},
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
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Alternate the processes between the environment as is and with this set.",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
