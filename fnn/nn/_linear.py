"""``Linear``, ``Bilinear`` and ``Identity``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fnn._src.initializers import Initializer
from fnn.nn._defaults import fan_in_bias_init, symmetric_uniform, torch_weight_init
from fnn.nn._module import Module, Scope, _where

__all__ = ["Bilinear", "Identity", "Linear"]


def _check_features(module: Module, scope: Scope, x: torch.Tensor, name: str = "x") -> int:
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{_where(module, scope.path)}: expected `{name}` of shape (..., in_features), "
            f"got {got}."
        )
    return x.shape[-1]


class Linear(Module):
    """``y = x @ weight.T + bias``, the twin of ``torch.nn.Linear`` (input size inferred).

    Args:
        features: the output size ``out_features``.
        bias: whether to add a bias.
        weight_init: initializer of ``weight`` (shape ``(out, in)``); default torch's
            ``kaiming_uniform(a=sqrt(5))``, i.e. ``U(-1/sqrt(in), 1/sqrt(in))``.
        bias_init: initializer of ``bias`` (shape ``(out,)``); default
            ``U(-1/sqrt(in), 1/sqrt(in))``, as torch.

    Shapes:
        input ``(*, in)``, output ``(*, features)``; ``weight (features, in)``,
        ``bias (features,)``.

    Example:
        >>> import fnn, torch
        >>> params, _ = fnn.nn.Linear(4).init(fnn.random.key(0), torch.zeros(2, 3))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (4, 3), 'bias': (4,)}
        >>> fnn.nn.Linear(4).apply(params, torch.zeros(2, 3)).shape
        torch.Size([2, 4])
    """

    features: int
    bias: bool = True
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        fan_in = _check_features(self, scope, x)
        w = scope.param("weight", (self.features, fan_in), self.weight_init or torch_weight_init)
        b = None
        if self.bias:
            b = scope.param("bias", (self.features,), self.bias_init or fan_in_bias_init(fan_in))
        return F.linear(x, w, b)


class Bilinear(Module):
    """``y = x1^T A x2 + b``, the twin of ``torch.nn.Bilinear`` (input sizes inferred).

    Args:
        features: the output size ``out_features``.
        bias: whether to add a bias.
        weight_init, bias_init: initializers; default ``U(-1/sqrt(in1), 1/sqrt(in1))`` for
            both, as torch.

    Shapes:
        inputs ``(*, in1)`` and ``(*, in2)``, output ``(*, features)``;
        ``weight (features, in1, in2)``, ``bias (features,)``.

    Example:
        >>> import fnn, torch
        >>> x1, x2 = torch.zeros(2, 3), torch.zeros(2, 5)
        >>> params, _ = fnn.nn.Bilinear(4).init(fnn.random.key(0), x1, x2)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (4, 3, 5), 'bias': (4,)}
    """

    features: int
    bias: bool = True
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def forward(self, scope: Scope, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        in1 = _check_features(self, scope, x1, "x1")
        in2 = _check_features(self, scope, x2, "x2")
        default = symmetric_uniform(in1**-0.5)
        w = scope.param("weight", (self.features, in1, in2), self.weight_init or default)
        b = scope.param("bias", (self.features,), self.bias_init or default) if self.bias else None
        return F.bilinear(x1, x2, w, b)


class Identity(Module):
    """Returns its input unchanged, the twin of ``torch.nn.Identity``.

    Shapes:
        input ``(*)``, output ``(*)``, no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Identity().init(fnn.random.key(0), torch.zeros(2))
        ({}, {})
    """

    def forward(self, scope: Scope, x):
        return x
