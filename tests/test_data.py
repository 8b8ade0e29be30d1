"""autotune.data: the offline text corpus and its windows."""

from __future__ import annotations

import pytest
import torch

from autotune.data import ByteWindows, stdlib_bytes


def test_stdlib_bytes_are_real_source_cut_at_the_limit() -> None:
    text = stdlib_bytes(50_000)
    assert text.dtype == torch.uint8 and len(text) == 50_000
    assert b"import" in bytes(text.tolist())
    assert torch.equal(stdlib_bytes(1_000), text[:1_000])  # the same files, the same order


def test_windows_are_next_byte_pairs_without_overlap() -> None:
    data = torch.arange(23, dtype=torch.uint8)
    windows = ByteWindows(data, block_size=5)
    assert len(windows) == 4  # (23 - 1) // 5
    x, y = windows[1]
    assert x.tolist() == [5, 6, 7, 8, 9] and y.tolist() == [6, 7, 8, 9, 10]
    assert x.dtype == torch.long
    _, last_y = windows[3]
    assert last_y.tolist()[-1] == 20


@pytest.mark.parametrize("block_size", [0, 23])
def test_windows_need_a_block_shorter_than_the_data(block_size: int) -> None:
    with pytest.raises(ValueError, match="block_size"):
        ByteWindows(torch.zeros(23, dtype=torch.uint8), block_size)
    with pytest.raises(ValueError, match="max_bytes"):
        stdlib_bytes(0)
