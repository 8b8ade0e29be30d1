"""Precision plans: what each Lightning-style precision name does to a training step."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from autotune.config import Precision
from autotune.errors import ConfigError


@dataclass(frozen=True)
class PrecisionPlan:
    """How to apply one precision: autocast dtype, parameter dtype, loss scaling."""

    name: Precision
    autocast_dtype: torch.dtype | None
    param_dtype: torch.dtype
    use_grad_scaler: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The autocast context for a forward pass (a no-op without autocast)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 autocast (CPU included); ``None`` otherwise."""
        return torch.amp.GradScaler(device.type) if self.use_grad_scaler else None


_PLANS: dict[str, PrecisionPlan] = {
    "32-true": PrecisionPlan("32-true", None, torch.float32, False),
    "bf16-mixed": PrecisionPlan("bf16-mixed", torch.bfloat16, torch.float32, False),
    "16-mixed": PrecisionPlan("16-mixed", torch.float16, torch.float32, True),
    "bf16-true": PrecisionPlan("bf16-true", None, torch.bfloat16, False),
}


def precision_plan(name: Precision, device: torch.device) -> PrecisionPlan:
    """The plan for ``name`` on ``device``; an error when the device lacks the dtype."""
    plan = _PLANS[name]
    bf16 = torch.bfloat16 in (plan.autocast_dtype, plan.param_dtype)
    if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision {name!r} needs bfloat16, which {torch.cuda.get_device_name(device)} "
            f"does not support; use '16-mixed' or '32-true'."
        )
    return plan
