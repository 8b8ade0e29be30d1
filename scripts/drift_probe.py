"""How much does this machine's speed drift within one process?

    python scripts/drift_probe.py [--task examples/cnn_digits.py] [--batch 64] [--windows 30]

Trains the task's model with AdamW at ``--batch`` in one process, in windows of
``--steps`` steps, and prints each window's median step time (ms) after the first 10 steps
of the window. A steady machine prints one number ``--windows`` times; this 2-core host
printed 7.4-10.3 ms for cnn_digits at micro 64 (30 windows), while fresh processes each
held steady at 5.0 or 6.8 ms. That spread is why the confirmation adds pairs until the
winner's samples/s settles (autotune.search._confirm.RATE_SETTLED_ERROR).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from autotune.task import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--task", type=Path, default=Path("examples/cnn_digits.py"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1.6e-2)
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--steps", type=int, default=150, help="steps per window")
    args = parser.parse_args()
    torch.manual_seed(0)
    task = load_task(args.task)
    model, data = task.model(), task.dataset()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True)
    batches: Iterator[Any] = iter(())
    medians: list[float] = []
    for _ in range(args.windows):
        times: list[float] = []
        for _ in range(args.steps):
            batch = next(batches, None)
            if batch is None:
                batches = iter(loader)
                batch = next(batches)
            started = time.perf_counter()
            loss = task.loss(model, batch)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            times.append(time.perf_counter() - started)
        medians.append(statistics.median(times[10:]) * 1e3)
    print(" ".join(f"{m:.2f}" for m in medians))
    print(f"median step ms per window: {min(medians):.2f}-{max(medians):.2f}")


if __name__ == "__main__":
    main()
