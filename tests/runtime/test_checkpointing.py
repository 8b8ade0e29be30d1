"""Finding blocks and checkpointing them: same gradients, less activation memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autotune.config import EveryK
from autotune.errors import ConfigError, TaskError
from autotune.runtime import apply_checkpointing, find_blocks


class Block(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Net(nn.Module):
    def __init__(self, depth: int = 4, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h).mean()


class ResNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(Block(), Block())
        self.layer2 = nn.Sequential(Block(), Block(), Block())


def test_finds_repeated_blocks_not_their_parts() -> None:
    names = [name for name, _ in find_blocks(Net())]
    assert names == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]


def test_finds_blocks_in_every_stage() -> None:
    names = [name for name, _ in find_blocks(ResNetLike())]
    assert names == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer2.2"]


def test_plain_mlp_has_no_blocks() -> None:
    assert find_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))) == []


def test_blocks_by_pattern_and_by_function() -> None:
    net = Net()
    assert [n for n, _ in find_blocks(net, ["blocks.1", "blocks.3"])] == ["blocks.1", "blocks.3"]
    picked = find_blocks(net, lambda m: [m.blocks[0]])  # type: ignore[index]
    assert [n for n, _ in picked] == ["blocks.0"]
    with pytest.raises(TaskError, match="pattern 'layers.\\*' matches no module"):
        find_blocks(net, ["layers.*"])


def test_every_k_selects_every_kth_block() -> None:
    assert apply_checkpointing(Net(depth=5), EveryK(every_k=2)) == [
        "blocks.0",
        "blocks.2",
        "blocks.4",
    ]
    assert apply_checkpointing(Net(), "none") == []


def test_a_star_stays_within_one_name_segment() -> None:
    net = Net()
    assert [n for n, _ in find_blocks(net, ["blocks.*"])] == [f"blocks.{k}" for k in range(4)]
    inner = [n for n, _ in find_blocks(net, ["blocks.*.*"])]
    assert inner and all(n.count(".") == 2 for n in inner)


def test_checkpointing_without_blocks_names_the_fix() -> None:
    with pytest.raises(
        ConfigError, match=r"Task\(blocks=\[.*\]\) or use activation_checkpointing: none"
    ):
        apply_checkpointing(nn.Sequential(nn.Linear(2, 2)), "full")


def _grads(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    net(x).backward()
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


def test_checkpointed_model_has_identical_gradients_and_state_dict() -> None:
    torch.manual_seed(0)
    plain = Net()
    wrapped = Net()
    wrapped.load_state_dict(plain.state_dict())
    apply_checkpointing(wrapped, "full")
    assert wrapped.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(16, 8)
    for a, b in zip(_grads(plain, x), _grads(wrapped, x), strict=True):
        torch.testing.assert_close(a, b)


def _saved_bytes(net: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward during one forward pass."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return sum(saved.values())


def test_checkpointing_saves_less_for_backward() -> None:
    x = torch.randn(64, 8)
    plain, wrapped = Net(), Net()
    apply_checkpointing(wrapped, "full")
    assert _saved_bytes(wrapped, x) < 0.5 * _saved_bytes(plain, x)


class ConvBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.norm = nn.BatchNorm2d(4, momentum=None)  # a cumulative average: counts batches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(torch.relu(self.bn(self.conv(x))))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(ConvBlock(), ConvBlock())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean()


def test_the_recompute_leaves_batchnorm_running_statistics_as_the_forward_did() -> None:
    """A ResNet's checkpointed blocks ran their BatchNorms twice per step (the recompute is
    a training-mode forward): num_batches_tracked counted 2 a step, running means moved
    twice, and the trained model's eval outputs differed from an unchecked run's."""
    torch.manual_seed(0)
    plain = ConvNet()
    wrapped = ConvNet()
    wrapped.load_state_dict(plain.state_dict())
    apply_checkpointing(wrapped, "full")
    for step in range(3):
        x = torch.randn(8, 4, 6, 6, generator=torch.Generator().manual_seed(step))
        for a, b in zip(_grads(plain, x), _grads(wrapped, x), strict=True):
            torch.testing.assert_close(a, b)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(wrapped.state_dict()[name], value, msg=name)
    assert int(wrapped.blocks[0].bn.num_batches_tracked) == 3
    x = torch.randn(8, 4, 6, 6)
    plain.eval()
    wrapped.eval()
    torch.testing.assert_close(wrapped(x), plain(x))
