"""A rank's model in DistributedDataParallel, told whether some parameters get no gradient.

DDP by default expects every trainable parameter to receive a gradient in every backward;
a model with one that does not (an auxiliary head the loss never uses, a pooler a
classifier skips, an expert no sample was routed to) fails on its next step with
"Expected to have finished reduction in the prior iteration", or, where only some ranks
skipped it, in a collective whose sizes do not match. The fix that message names,
``find_unused_parameters=True``, is an argument of the wrapper autotune builds, not of
the user's code. So the runtime looks before it wraps: a forward and backward of each of
the rank's first :data:`SCAN_BATCHES` micro-batches on the bare model, and the flag only
where some parameter, on any rank, got no gradient in one of them (it costs a walk of the
autograd graph every step, so it stays off where nothing needs it). A model whose data
decides which parameters it uses can still skip one later; :func:`check_reduced` turns
that into one error that names the fix (``Task(find_unused_parameters=True)``), before the
ranks' next collective can abort on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from autotune._units import format_names
from autotune.errors import TaskError

__all__ = ["SCAN_BATCHES", "check_reduced", "gradless", "unused_parameters", "wrap_ddp"]

log = logging.getLogger(__name__)

# Eight micro-batches per rank: a branch that a batch skips with probability p shows up
# with probability 1 - (1 - p)^(8 x world), e.g. 80% at p = 0.1 on 2 ranks; each costs one
# forward and backward before the run's clock starts.
SCAN_BATCHES = 8

LossOf = Callable[[nn.Module], torch.Tensor]


def unused_parameters(model: nn.Module, losses: Iterable[LossOf]) -> list[str]:
    """Names of ``model``'s trainable parameters that a backward of one of ``losses``
    (each ``model -> loss`` of one batch) leaves without a gradient, in model order.

    ``model`` comes back as it was: its buffers (BatchNorm's running statistics) restored,
    every gradient cleared, and the random state (dropout's) untouched.
    """
    return list(_misses(model, losses)[0])


def _misses(model: nn.Module, losses: Iterable[LossOf]) -> tuple[dict[str, int], int]:
    """How many of ``losses``' backwards left each gradless parameter without a gradient
    (model order), and how many backwards ran; ``model`` as in :func:`unused_parameters`."""
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    cuda = [p.device.index for p in model.parameters() if p.device.type == "cuda"][:1]
    missed = dict.fromkeys((name for name, _ in model.named_parameters()), 0)
    runs = 0
    with torch.random.fork_rng(devices=[i for i in cuda if i is not None]):
        for loss_of in losses:
            loss_of(model).float().backward()  # type: ignore[no-untyped-call]
            runs += 1
            for name in gradless(model):
                missed[name] += 1
            for param in model.parameters():
                param.grad = None
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)
    return {name: count for name, count in missed.items() if count}, runs


def gradless(model: nn.Module) -> list[str]:
    """Names of ``model``'s trainable parameters that have no gradient after a backward."""
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def wrap_ddp(
    model: nn.Module, device: torch.device, losses: Sequence[LossOf], declared: bool | None
) -> DistributedDataParallel:
    """``model`` in DDP, with ``find_unused_parameters`` as the Task ``declared`` it, or,
    where it declared nothing, on only if one of this or another rank's first micro-batches
    (``losses``) leaves a trainable parameter without a gradient."""
    unused = declared
    if unused is None:
        never, sometimes = _on_every_rank(*_misses(model, losses))
        unused = bool(never or sometimes)
        if unused and dist.get_rank() == 0:
            log.warning("%s", _found(never, sometimes, len(losses)))
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def _found(never: list[str], sometimes: list[str], scanned: int) -> str:
    """The warning for parameters some first micro-batches left without a gradient."""
    cost = "DDP runs with find_unused_parameters=True (a walk of the autograd graph every step)"
    if sometimes:
        return (
            f"{_listed(sometimes)} get a gradient in some of each rank's first {scanned} "
            f"micro-batches and not in others: {cost}, which a model whose data decides "
            f"which parameters it uses needs; Task(find_unused_parameters=True) says so and "
            f"skips this look"
        )
    return (
        f"{_listed(never)} get no gradient in any of each rank's first {scanned} "
        f"micro-batches: {cost}; drop them from the model if they are never used"
    )


def check_reduced(
    ddp: DistributedDataParallel, step: int, where: str, declared: bool | None
) -> None:
    """Raise :class:`TaskError` if the backward just run left DDP's reduction unfinished
    (a parameter got no gradient while ``find_unused_parameters`` is off: the Task
    ``declared`` it off, or, declaring nothing, no rank's first batches showed one).

    A local check, no collective: the rank that skipped a parameter stops here, before its
    next collective would meet a peer's gradient all-reduce and abort the process.
    """
    if ddp.find_unused_parameters:
        return
    try:
        ddp.reducer._check_reducer_finalized()
    except RuntimeError:
        names = gradless(ddp.module)
        which = _listed(names) if names else "some parameters"
        seen = (
            "with Task(find_unused_parameters=False)"
            if declared is False
            else f"though every parameter got one in each rank's first {SCAN_BATCHES} micro-batches"
        )
        raise TaskError(
            f"{where}: {which} got no gradient at step {step} on rank {dist.get_rank()}, "
            f"{seen}: the model's data decides which parameters it uses (experts a router "
            f"skips, a branch for some inputs), so DDP must look for them every step; set "
            f"Task(find_unused_parameters=True)."
        ) from None


def _on_every_rank(missed: dict[str, int], runs: int) -> tuple[list[str], list[str]]:
    """Every rank's gradless parameters (one gather, at start): those no rank's batch gave
    a gradient, and those only some did, each in rank 0's parameter order."""
    gathered: list[tuple[dict[str, int], int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (missed, runs))
    total = sum(entry[1] for entry in gathered if entry is not None)
    counts: dict[str, int] = {}
    for entry in gathered:
        for name, count in (entry[0] if entry is not None else {}).items():
            counts[name] = counts.get(name, 0) + count
    never = [name for name, count in counts.items() if count == total]
    return never, [name for name in counts if name not in never]


def _listed(names: list[str]) -> str:
    return f"{len(names)} parameter{'s' if len(names) > 1 else ''} ({format_names(names)})"
