"""Real text for examples and tests, with nothing downloaded: the interpreter's own stdlib.

The Python standard library's top-level ``*.py`` files are present wherever Python is, so
a byte-level language model can train on real text on any machine, offline, and every
machine reads the same bytes for the same Python version (files in name order).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

__all__ = ["ByteWindows", "stdlib_bytes"]


@functools.lru_cache(maxsize=4)
def stdlib_bytes(max_bytes: int) -> torch.Tensor:
    """The first ``max_bytes`` bytes of the standard library's top-level ``*.py`` sources,
    read in name order, as a uint8 tensor (cached: every dataset built in one process
    shares it). Raises ValueError if ``max_bytes`` is not positive."""
    if max_bytes < 1:
        raise ValueError(f"stdlib_bytes needs max_bytes >= 1, got {max_bytes}.")
    text = bytearray()
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        text += path.read_bytes()
        if len(text) >= max_bytes:
            break
    del text[max_bytes:]
    return torch.frombuffer(text, dtype=torch.uint8)


class ByteWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Non-overlapping windows of ``block_size + 1`` bytes of ``data``, split into the
    input (the first ``block_size``) and the next-byte target (the last ``block_size``)."""

    def __init__(self, data: torch.Tensor, block_size: int) -> None:
        if block_size < 1 or len(data) <= block_size:
            raise ValueError(
                f"ByteWindows needs 1 <= block_size < len(data), got block_size={block_size} "
                f"for {len(data)} bytes; pass more bytes or a shorter block."
            )
        self.data = data
        self.block_size = block_size

    def __len__(self) -> int:
        return (len(self.data) - 1) // self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.block_size
        window = self.data[i * n : (i + 1) * n + 1].long()
        return window[:-1], window[1:]
