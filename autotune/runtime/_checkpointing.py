"""Activation checkpointing: find the model's repeated blocks and recompute them in backward."""

from __future__ import annotations

import fnmatch
import functools
from collections import defaultdict
from collections.abc import Callable
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
        block.forward = _checkpointed(block.forward)
    return [name for name, _ in selected]


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():  # evaluation: nothing to save, nothing to recompute
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def _mode_text(mode: ActivationCheckpointing) -> str:
    return f"every_k: {mode.every_k}" if isinstance(mode, EveryK) else repr(mode)


def _inside(name: str, parent: str) -> bool:
    return name.startswith(parent + ".")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
