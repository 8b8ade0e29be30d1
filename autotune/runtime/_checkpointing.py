"""Activation checkpointing: find the model's repeated blocks and recompute them in backward."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from autotune.config import ActivationCheckpointing, EveryK
from autotune.errors import ConfigError, TaskError
from autotune.task import BlocksSpec

__all__ = ["apply_checkpointing", "find_blocks"]

Block = tuple[str, nn.Module]


def find_blocks(model: nn.Module, spec: BlocksSpec | None = None) -> list[Block]:
    """The modules to checkpoint, as ``(qualified name, module)`` in forward order.

    With no ``spec`` they are found: the composite children (modules with submodules)
    that repeat by class inside an ``nn.ModuleList`` or ``nn.Sequential`` - transformer
    layers, ResNet stages' blocks. Groups nested inside an already chosen block are
    skipped, so a block's own repeated parts are not checkpointed twice.
    """
    if spec is None:
        return _auto_blocks(model)
    if callable(spec):
        return _blocks_from_modules(model, spec(model))
    return _blocks_from_patterns(model, spec)


def _auto_blocks(model: nn.Module) -> list[Block]:
    chosen: list[Block] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        if any(_inside(name, block_name) for block_name, _ in chosen):
            continue
        by_class: dict[type, list[Block]] = defaultdict(list)
        for child_name, child in module.named_children():
            if next(child.children(), None) is not None:
                by_class[type(child)].append((_join(name, child_name), child))
        for group in by_class.values():
            if len(group) >= 2:
                chosen.extend(group)
    return chosen


def _blocks_from_patterns(model: nn.Module, patterns: Any) -> list[Block]:
    named = [(n, m) for n, m in model.named_modules() if n]
    blocks: list[Block] = []
    for pattern in patterns:
        hits = [(n, m) for n, m in named if _matches(n, pattern)]
        if not hits:
            examples = ", ".join(n for n, _ in named[:4])
            raise TaskError(
                f"Task.blocks pattern {pattern!r} matches no module of the model; module "
                f"names look like {examples}."
            )
        blocks.extend(hit for hit in hits if all(hit[0] != b[0] for b in blocks))
    return blocks


def _matches(name: str, pattern: str) -> bool:
    """Glob ``pattern`` against a qualified module name one dotted segment at a time, as a
    path glob is matched per directory: ``"transformer.h.*"`` is the blocks themselves,
    not every module inside them (plain fnmatch's ``*`` would cross the dots)."""
    names, globs = name.split("."), pattern.split(".")
    return len(names) == len(globs) and all(
        fnmatch.fnmatchcase(n, g) for n, g in zip(names, globs, strict=True)
    )


def _blocks_from_modules(model: nn.Module, modules: Any) -> list[Block]:
    names = {id(m): n for n, m in model.named_modules()}
    blocks: list[Block] = []
    for module in modules:
        if id(module) not in names:
            raise TaskError(
                f"Task.blocks returned {type(module).__name__}, which is not a submodule of "
                f"the model; return modules of the model passed in."
            )
        blocks.append((names[id(module)], module))
    return blocks


def apply_checkpointing(
    model: nn.Module, mode: ActivationCheckpointing, spec: BlocksSpec | None = None
) -> list[str]:
    """Make the selected blocks recompute their activations in backward; return their names.

    Uses non-reentrant ``torch.utils.checkpoint`` by replacing each block's ``forward`` on
    the instance, so ``state_dict`` keys stay unchanged and checkpoints stay portable.
    """
    if mode == "none":
        return []
    blocks = find_blocks(model, spec)
    if not blocks:
        raise ConfigError(
            f"activation_checkpointing={_mode_text(mode)} needs repeated blocks, but none were "
            f"found in {type(model).__name__}; name them with Task(blocks=['layers.*']) or "
            f"use activation_checkpointing: none."
        )
    every = mode.every_k if isinstance(mode, EveryK) else 1
    selected = [(name, block) for i, (name, block) in enumerate(blocks) if i % every == 0]
    for _, block in selected:
        block.forward = _checkpointed(block.forward, _running_stats(block))
    return [name for name, _ in selected]


def _checkpointed(forward: Callable[..., Any], stats: list[torch.Tensor]) -> Callable[..., Any]:
    """``forward`` under non-reentrant checkpointing; its recompute in backward leaves
    ``stats`` (the block's normalization running statistics) as the forward left them."""

    def contexts() -> tuple[
        contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]
    ]:  # (forward, recompute)
        return contextlib.nullcontext(), _restored(stats)

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():  # evaluation: nothing to save, nothing to recompute
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)

    return run


def _running_stats(block: nn.Module) -> list[torch.Tensor]:
    """The running mean, variance and batch count of every BatchNorm (and InstanceNorm
    that tracks them) in ``block``: what a forward in training mode updates in place."""
    return [
        buffer
        for module in block.modules()
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats
        for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
        if buffer is not None
    ]


@contextlib.contextmanager
def _restored(stats: list[torch.Tensor]) -> Iterator[None]:
    """Put ``stats`` back as they were on entry: the recompute of a checkpointed block runs
    its BatchNorms in training mode again, which would move their running statistics a
    second time per step (num_batches_tracked counted 2 per step on a ResNet's blocks, and
    eval-mode outputs drifted from an unchecked run's)."""
    kept = [t.clone() for t in stats]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(stats, kept, strict=True):
                tensor.copy_(value)


def _mode_text(mode: ActivationCheckpointing) -> str:
    return f"every_k: {mode.every_k}" if isinstance(mode, EveryK) else repr(mode)


def _inside(name: str, parent: str) -> bool:
    return name.startswith(parent + ".")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
