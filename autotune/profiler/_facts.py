"""Model facts: parameters, forward+backward FLOPs per sample, the 6NT rule, blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import IterableDataset
from torch.utils.flop_counter import FlopCounterMode

from autotune.errors import TaskError
from autotune.profiler._schema import ModelFacts
from autotune.runtime import find_blocks
from autotune.runtime._data import to_device
from autotune.runtime._ddp import SCAN_BATCHES, gradless, unused_parameters
from autotune.task import Task, first_samples

__all__ = ["FLOPS_BATCH", "PROBE_SEED", "model_facts", "sample_batch", "seeded"]

PROBE_SEED = 0  # one seed for every probe run: the same initial weights and data order

# Two samples: the fewest with which BatchNorm trains (one sample has no batch variance)
# and FLOPs are linear in batch size, so counting more only costs time.
FLOPS_BATCH = 2
# Eight samples per batch of the unused-parameter scan: small batches miss a data-dependent
# branch (an expert, a rare input's layer) more often than training batches do, which errs
# towards DDP looking for such parameters, a cost, over a user's DDP failing, an outage.
SCAN_SAMPLES = 8
_DENSE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def model_facts(
    task: Task,
    device: torch.device | str = "cpu",
    *,
    seed: int = PROBE_SEED,
    batch_size: int = FLOPS_BATCH,
) -> ModelFacts:
    """Count ``task``'s parameters and per-sample training FLOPs on a fresh model.

    The model is built under ``seed`` (the global RNG is restored afterwards), and one
    batch of the first ``batch_size`` samples goes forward (``task.compute_loss``) and
    backward under :class:`~torch.utils.flop_counter.FlopCounterMode` in fp32. Attention
    runs on the math SDPA backend, whose matmuls the counter sees (CPU fused kernels are
    not counted). ``matmul_params`` and ``tokens_per_sample`` come from hooks on the
    Linear and Conv layers, giving the 6NT rule to compare against.
    """
    with seeded(seed, device):
        model = task.build_model()
    blocks = [name for name, _ in find_blocks(model, task.blocks)]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    batch, count = sample_batch(task, batch_size)
    # fp32, as the runtime's reference precision casts the model and float inputs
    model = model.to(device=torch.device(device), dtype=torch.float32)
    flops, tally = _count(task, model, batch, torch.device(device))
    unused = _unused(task, model, torch.device(device))
    per_sample = flops / count
    tokens = tally.tokens_per_sample(count)
    rule = 6.0 * tally.params * tokens
    return ModelFacts(
        total_params=total,
        trainable_params=trainable,
        flops_per_sample=per_sample,
        flops_batch_size=count,
        matmul_params=tally.params,
        tokens_per_sample=tokens,
        rule_flops_per_sample=rule,
        flops_vs_rule=per_sample / rule if rule > 0 else None,
        blocks=blocks,
        unused_params=unused,
        find_unused_parameters=(
            bool(unused) if task.find_unused_parameters is None else task.find_unused_parameters
        ),
    )


def _unused(task: Task, model: nn.Module, device: torch.device) -> list[str]:
    """Trainable parameters that the counted backward (whose gradients ``model`` still
    holds) or a backward of one of :data:`SCAN_BATCHES` batches spread over the dataset
    leaves without a gradient, in model order: DDP must look for these every step."""
    missed = set(gradless(model))
    model.zero_grad(set_to_none=True)

    def loss_of(batch: Any) -> Callable[[nn.Module], torch.Tensor]:
        return lambda m: task.compute_loss(m, to_device(batch, device, torch.float32))

    batches = scan_batches(task, SCAN_BATCHES, SCAN_SAMPLES)
    missed.update(unused_parameters(model, [loss_of(b) for b in batches]))
    return [name for name, _ in model.named_parameters() if name in missed]


def scan_batches(task: Task, count: int, size: int) -> list[Any]:
    """Up to ``count`` collated batches of ``size`` samples, drawn over the whole dataset
    (a seeded shuffle; an IterableDataset's first samples), none with fewer than two."""
    dataset = task.build_dataset()
    if isinstance(dataset, IterableDataset):
        samples = first_samples(dataset, count * size)
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(PROBE_SEED))  # type: ignore[arg-type]
        samples = [dataset[int(i)] for i in order[: count * size]]
    chunks = [samples[i : i + size] for i in range(0, len(samples), size)]
    return [task.collate(chunk) for chunk in chunks if len(chunk) >= 2]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's RNGs for the block, and restore the caller's RNG state afterwards."""
    target = torch.device(device)
    cuda = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def sample_batch(task: Task, size: int) -> tuple[Any, int]:
    """The first ``size`` samples of the task's dataset (fewer if it has fewer), collated.

    Returns the batch and how many samples it holds; raises :class:`TaskError` for an
    IterableDataset that yields nothing (an empty map-style one the Task rejects itself).
    """
    samples = first_samples(task.build_dataset(), size)
    if not samples:
        raise TaskError(
            f"{task.where()}: the dataset yielded no samples; make it yield at least one batch."
        )
    return task.collate(samples), len(samples)


def _count(
    task: Task, model: nn.Module, batch: Any, device: torch.device
) -> tuple[int, _DenseTally]:
    """FLOPs of one forward+backward of ``batch``, and what the dense layers saw."""
    counter = FlopCounterMode(display=False)
    with _DenseTally(model) as tally, sdpa_kernel(SDPBackend.MATH), counter:
        loss = task.compute_loss(model, to_device(batch, device, torch.float32))
        loss.backward()  # type: ignore[no-untyped-call]
    return int(counter.get_total_flops()), tally


class _DenseTally(contextlib.AbstractContextManager["_DenseTally"]):
    """Forward hooks on Linear/Conv layers: distinct weights and weight-applications.

    A Linear layer applies its weight once per output row, a convolution once per output
    position; ``weight.numel() * applications`` is the layer's multiply-accumulates.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.weights: dict[int, int] = {}  # id(weight) -> numel, tied weights once
        self.macs = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _DenseTally:
        for module in self.model.modules():
            if isinstance(module, _DENSE):
                self._handles.append(module.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        weight = module.weight
        if not isinstance(weight, torch.Tensor) or not isinstance(output, torch.Tensor):
            return
        # Linear: features last. Conv: channels at dim 1 (dim 0 for an unbatched input).
        channel_dim = -1 if isinstance(module, nn.Linear) else output.ndim - weight.ndim + 1
        width = output.shape[channel_dim]
        self.weights[id(weight)] = weight.numel()
        self.macs += weight.numel() * (output.numel() // max(1, int(width)))

    @property
    def params(self) -> int:
        """N: distinct dense weights that ran."""
        return sum(self.weights.values())

    def tokens_per_sample(self, batch_size: int) -> float:
        """T: applications per sample, weighted by weight count (MACs per sample / N)."""
        return self.macs / batch_size / self.params if self.params else 0.0
