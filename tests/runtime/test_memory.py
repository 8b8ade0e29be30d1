"""CPU memory from profiler events: exact on a model whose allocations are known."""

from __future__ import annotations

import torch
from torch import nn

from autotune.runtime._memory import StepMemoryMeter, held_bytes


def test_activation_and_peak_bytes_are_exact_for_a_known_model() -> None:
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256))
    x = torch.randn(512, 256)
    meter = StepMemoryMeter(torch.device("cpu"))
    params = held_bytes(model.parameters())
    with meter.step(params):
        with meter.forward():
            loss = model(x).pow(2).mean()
        loss.backward()  # type: ignore[no-untyped-call]
    reading = meter.reading
    assert reading is not None
    # Kept for backward: ReLU's output (512x1024), the second Linear's output (512x256)
    # that pow saves, and the 4-byte loss itself; the first Linear's output is freed.
    assert reading.activation_bytes == 512 * 1024 * 4 + 512 * 256 * 4 + 4
    assert reading.peak_bytes > params + reading.activation_bytes  # plus gradients, temps
    assert reading.persistent_bytes == params


def test_shared_storage_is_counted_once() -> None:
    weight = torch.zeros(10, 10)
    assert held_bytes([weight, weight.view(100), weight[0]]) == 400


def test_held_bytes_counts_a_sparse_tensors_indices_and_values() -> None:
    # An SGD momentum buffer of a sparse embedding's gradient is a sparse COO tensor.
    indices = torch.tensor([[0, 3, 7]])
    values = torch.ones(3, 16)
    sparse = torch.sparse_coo_tensor(indices, values, (10, 16))
    assert held_bytes([sparse]) == 3 * 8 + 3 * 16 * 4  # int64 indices, fp32 rows
    assert held_bytes([sparse, torch.zeros(5)]) == 3 * 8 + 3 * 16 * 4 + 20
