"""Runtime benchmark: what precision and checkpointing buy on tiny_gpt, measured in one run.

    python benchmarks/runtime_bench.py [--task examples/tiny_gpt.py] [--batch 32] [--repeats 3]

Throughput: fp32 and bf16-mixed runs are interleaved ``--repeats`` times (fresh model each,
same seed and data); each run's figure is the median step after burn-in, and the table
shows the median over repeats with its range. Memory: one profiled step per variant;
activation memory is what the first forward pass leaves allocated for backward.
Exits 1 when a claim of issue 3 does not hold (bf16 >= 1.8x fp32, checkpointing >= 40%).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from autotune._hugepages import restart_for_measuring
from autotune.config import TrainConfig
from autotune.runtime import RunOptions, RunSummary, train
from autotune.task import Task, load_task

ROOT = Path(__file__).resolve().parents[1]
BF16_SPEEDUP_GOAL = 1.8  # issue 3: bf16-mixed samples/s >= 1.8x fp32 on tiny_gpt
CHECKPOINT_CUT_GOAL = 0.40  # issue 3: checkpointing cuts activation memory by >= 40%


def _config(batch: int, **values: Any) -> TrainConfig:
    return TrainConfig.model_validate(
        {"micro_batch_size": batch, "optimizer": {"name": "adamw", "lr": 3e-4}, **values}
    )


def _throughput(task: Task, config: TrainConfig, steps: int) -> RunSummary:
    options = RunOptions(steps=steps, warmup_steps=5, measure_memory=False)  # 5: burn-in
    return train(task, config, options).summary


def _memory(task: Task, config: TrainConfig) -> RunSummary:
    return train(task, config, RunOptions(steps=3, warmup_steps=1)).summary


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def bench_precision(task: Task, batch: int, repeats: int, steps: int) -> float:
    variants = {"32-true": _config(batch), "bf16-mixed": _config(batch, precision="bf16-mixed")}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved: drift in machine speed hits both alike
        for name, config in variants.items():
            rates[name].append(_throughput(task, config, steps).samples_per_s)
    table = Table(title=f"Precision on {task.display_name}, micro-batch {batch}")
    for column in ("precision", "samples/s median (range)", "vs 32-true"):
        table.add_column(column)
    base = statistics.median(rates["32-true"])
    for name, values in rates.items():
        table.add_row(name, _spread(values), f"{statistics.median(values) / base:.2f}x")
    Console().print(table)
    return statistics.median(rates["bf16-mixed"]) / base


def bench_checkpointing(task: Task, batch: int) -> float:
    table = Table(title=f"Activation checkpointing on {task.display_name}, micro-batch {batch}")
    for column in ("checkpointing", "activation MiB", "peak MiB", "samples/s", "blocks"):
        table.add_column(column)
    activation: dict[str, int] = {}
    for mode in ("none", "full"):
        summary = _memory(task, _config(batch, activation_checkpointing=mode))
        rate = _throughput(task, _config(batch, activation_checkpointing=mode), 15).samples_per_s
        activation[mode] = summary.activation_memory_bytes or 0
        table.add_row(
            mode,
            f"{activation[mode] / 2**20:,.1f}",
            f"{(summary.peak_memory_bytes or 0) / 2**20:,.1f}",
            f"{rate:,.1f}",
            str(len(summary.checkpointed_blocks)),
        )
    Console().print(table)
    return 1 - activation["full"] / activation["none"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=str(ROOT / "examples" / "tiny_gpt.py"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="autotune-bench-")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(scratch, "inductor"))
    try:
        task = load_task(args.task)
        Console().print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, threads {torch.get_num_threads()}"
        )
        speedup = bench_precision(task, args.batch, args.repeats, args.steps)
        cut = bench_checkpointing(task, args.batch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = [
        (
            f"bf16-mixed / 32-true samples/s >= {BF16_SPEEDUP_GOAL}",
            f"{speedup:.2f}x",
            speedup >= BF16_SPEEDUP_GOAL,
        ),
        (
            f"checkpointing cuts activation memory >= {CHECKPOINT_CUT_GOAL:.0%}",
            f"{cut:.0%}",
            cut >= CHECKPOINT_CUT_GOAL,
        ),
    ]
    table = Table(title="Claims")
    for column in ("claim", "measured", "holds"):
        table.add_column(column)
    for claim, value, ok in results:
        table.add_row(claim, value, "yes" if ok else "[red]NO[/]")
    Console().print(table)
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    restart_for_measuring()  # measure under the allocator the CLI trains with
    sys.exit(main())
