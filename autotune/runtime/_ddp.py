"""A rank's model in DistributedDataParallel, told whether some parameters get no gradient.

DDP by default expects every trainable parameter to receive a gradient in every backward;
a model with one that does not (an auxiliary head the loss never uses, a pooler a
classifier skips) fails on its second step with "Expected to have finished reduction in
the prior iteration", and the fix that message names, ``find_unused_parameters=True``, is
an argument of the wrapper autotune builds, not of the user's code. So the runtime looks
before it wraps: one forward and backward of the first micro-batch on the bare model, and
the flag only where some parameter, on any rank, got no gradient (it costs a walk of the
autograd graph every step, so it stays off where nothing needs it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from autotune._units import format_names

__all__ = ["gradless", "unused_parameters", "wrap_ddp"]

log = logging.getLogger(__name__)


def unused_parameters(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor]) -> list[str]:
    """Names of ``model``'s trainable parameters that one backward of ``loss_of(model)``
    leaves without a gradient.

    ``model`` comes back as it was: its buffers (BatchNorm's running statistics) restored,
    every gradient cleared, and the random state (dropout's) untouched.
    """
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    cuda = [p.device.index for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=[i for i in cuda if i is not None]):
        loss_of(model).float().backward()  # type: ignore[no-untyped-call]
    names = gradless(model)
    for param in model.parameters():
        param.grad = None
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)
    return names


def gradless(model: nn.Module) -> list[str]:
    """Names of ``model``'s trainable parameters that have no gradient after a backward."""
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def wrap_ddp(
    model: nn.Module, device: torch.device, loss_of: Callable[[nn.Module], torch.Tensor]
) -> DistributedDataParallel:
    """``model`` in DDP, with ``find_unused_parameters`` on only if some rank's first
    micro-batch (``loss_of``) leaves a trainable parameter without a gradient."""
    names = unused_parameters(model, loss_of)
    flag = torch.tensor([int(bool(names))], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    unused = bool(flag.item())
    if names and dist.get_rank() == 0:
        log.warning(
            "%s get no gradient: DDP runs with find_unused_parameters=True (a walk of the "
            "autograd graph every step); drop them from the model if they are never used",
            _listed(names),
        )
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def _listed(names: list[str]) -> str:
    return f"{len(names)} parameter{'s' if len(names) > 1 else ''} ({format_names(names)})"
