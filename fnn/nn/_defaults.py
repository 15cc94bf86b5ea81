"""Torch's default initialisations, shared by the layers (private)."""

from __future__ import annotations

import math

import torch

from fnn._src.initializers import Initializer, kaiming_uniform
from fnn._src.samplers import uniform as _uniform

#: ``nn.Linear`` / ``nn.Conv*d`` default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_weight_init: Initializer = kaiming_uniform(a=math.sqrt(5))


def symmetric_uniform(bound: float) -> Initializer:
    """``U[-bound, bound)`` (torch's default bias init uses ``bound = 1 / sqrt(fan_in)``)."""

    def init(key: torch.Tensor, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return _uniform(key, shape, dtype, -bound, bound)

    return init


def fan_in_bias_init(fan_in: int) -> Initializer:
    """Torch's default bias init for a layer with ``fan_in`` inputs per output."""
    return symmetric_uniform(1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)
