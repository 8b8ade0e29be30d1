"""Measuring the gradient noise scale: squared gradient norms at two batch sizes."""

from __future__ import annotations

import math
import statistics

import torch
from torch import nn

from autotune.profiler._facts import PROBE_SEED, seeded
from autotune.profiler._fit import simple_noise_scale
from autotune.profiler._schema import NoiseScale
from autotune.runtime._data import BatchStream, to_device
from autotune.task import Task

__all__ = [
    "NOISE_BIG_BATCH",
    "NOISE_FLOP_BUDGET",
    "NOISE_MAX_BIG_BATCHES",
    "NOISE_MIN_BIG_BATCHES",
    "NOISE_SMALL_BATCH",
    "measure_noise_scale",
    "noise_batch_count",
]

# B_small = 4: small enough that the noise term tr(Sigma)/B_small stands well above |G|^2
# whenever B_simple is above a few samples, so the two norms differ clearly.
NOISE_SMALL_BATCH = 4
# B_big = 32: 8x B_small (the estimator's variance falls as the ratio grows) and the
# probe's largest batch, so the estimate is read where the probe's predictions are.
NOISE_BIG_BATCH = 32
# At least four B_big batches (128 samples: 32 small gradients, 4 big): fewer leave one
# batch's luck in the average; four cost ~1.5 s for tiny_gpt on two cores.
NOISE_MIN_BIG_BATCHES = 4
# At most sixteen: beyond that, the spread between seeds (different initial weights,
# 80-140 on cnn_digits) dominates what more batches would remove.
NOISE_MAX_BIG_BATCHES = 16
# 2e11 FLOPs of forward+backward: about 2 s at the ~100 GFLOP/s two CPU cores reach on
# small batches, so a cheap model is averaged over more batches for the same time.
NOISE_FLOP_BUDGET = 2e11


def noise_batch_count(flops_per_sample: float, big_batch: int = NOISE_BIG_BATCH) -> int:
    """How many B_big batches :data:`NOISE_FLOP_BUDGET` buys, within the min and max."""
    if not (flops_per_sample >= 0 and math.isfinite(flops_per_sample)):
        raise ValueError(f"flops_per_sample must be finite and >= 0, but got {flops_per_sample}.")
    affordable = NOISE_FLOP_BUDGET / max(flops_per_sample * big_batch, 1.0)
    return int(min(NOISE_MAX_BIG_BATCHES, max(NOISE_MIN_BIG_BATCHES, affordable)))


def measure_noise_scale(
    task: Task,
    *,
    small_batch: int = NOISE_SMALL_BATCH,
    big_batch: int = NOISE_BIG_BATCH,
    big_batches: int = NOISE_MIN_BIG_BATCHES,
    device: torch.device | str = "cpu",
    seed: int = PROBE_SEED,
) -> NoiseScale:
    """Estimate B_simple on the freshly initialised fp32 model (seeded, no training).

    Why at init: it is reproducible, costs no training and is the same for every config
    compared. The noise scale grows as the loss falls, so this is a lower bound; a few
    steps would not change that (tiny_gpt: 1.1 at init, 1.9 after 10 AdamW steps, 37 after
    100), and the hundreds needed would cost more than the rest of the probe.
    Each B_big batch is ``big_batch / small_batch`` B_small micro-batches: each one's
    gradient gives a |G_B_small|^2 sample, and their mean (the gradient accumulation of
    the runtime computes the same) gives a |G_B_big|^2 sample. Data comes in the
    runtime's seeded order. Assumes the task's loss is a mean over the batch.
    """
    if big_batch % small_batch != 0:
        raise ValueError(
            f"big_batch must be a multiple of small_batch (it is made of small batches), but "
            f"got small_batch={small_batch}, big_batch={big_batch}."
        )
    if big_batches < 1:
        raise ValueError(f"big_batches must be >= 1, but got {big_batches}.")
    target = torch.device(device)
    with seeded(seed, target):
        model = task.build_model().to(target, torch.float32).train()  # as the runtime's
        stream = BatchStream(task, task.build_dataset(), small_batch, 0, 1, seed)
        small_sq, big_sq = _squared_norms(
            task, model, stream, big_batch // small_batch, big_batches, target
        )
    return simple_noise_scale(
        small_batch, big_batch, statistics.fmean(small_sq), statistics.fmean(big_sq), big_batches
    )


def _squared_norms(
    task: Task,
    model: nn.Module,
    stream: BatchStream,
    chunks: int,
    big_batches: int,
    device: torch.device,
) -> tuple[list[float], list[float]]:
    """|g|^2 of every small batch, and of every big batch (the mean of its small ones)."""
    params = [p for p in model.parameters() if p.requires_grad]
    small_sq: list[float] = []
    big_sq: list[float] = []
    for _ in range(big_batches):
        total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        for _ in range(chunks):
            batch = to_device(next(stream), device, torch.float32)
            grads = _gradient(task, model, params, batch)
            small_sq.append(_squared_norm(grads))
            for acc, grad in zip(total, grads, strict=True):
                acc.add_(grad)
        big_sq.append(_squared_norm([acc / chunks for acc in total]))
    return small_sq, big_sq


def _gradient(
    task: Task, model: nn.Module, params: list[nn.Parameter], batch: object
) -> list[torch.Tensor]:
    """The loss gradient of one batch, in float64, zeros for parameters it does not reach."""
    model.zero_grad(set_to_none=True)
    task.compute_loss(model, batch).backward()  # type: ignore[no-untyped-call]
    return [
        torch.zeros_like(p, dtype=torch.float64) if p.grad is None else p.grad.double()
        for p in params
    ]


def _squared_norm(tensors: list[torch.Tensor]) -> float:
    return float(sum(float(t.pow(2).sum()) for t in tensors))
