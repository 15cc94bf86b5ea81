"""Activations, as plain functions (``fnn.nn.relu``) and as layers (``fnn.nn.ReLU()``).

The functions are the plain math: each calls the ``torch.nn.functional`` op its ``torch.nn`` twin
uses (so values and gradients are torch's), never works in place, and validates nothing torch
does not. Use them directly in ``forward`` or as entries of :class:`fnn.nn.Sequential`.

The layers are the same functions as modules, for code ported from ``torch.nn`` and for options
held as configuration (``nn.LeakyReLU(0.2)``). They have no parameters (``init`` gives
``({}, {})``) except :class:`PReLU`, whose ``weight`` is learned as in torch. Defaults are
torch's; ``inplace`` flags are not offered (``apply`` never mutates its inputs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F

from fnn._src.initializers import Initializer, constant
from fnn.nn._module import Module, Scope, _where

__all__ = [
    "CELU",
    "ELU",
    "GELU",
    "GLU",
    "SELU",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "LeakyReLU",
    "LogSoftmax",
    "Mish",
    "PReLU",
    "ReLU",
    "ReLU6",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Softsign",
    "Tanh",
    "celu",
    "elu",
    "gelu",
    "glu",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "leaky_relu",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "tanh",
]

Tensor = torch.Tensor
_F = TypeVar("_F", bound=Callable[..., Tensor])
_META = torch.device("meta")


def _shape_preserving(fn: _F) -> _F:
    """On meta tensors (``init`` runs forward on them) return an empty result of ``x``'s shape.

    torch computes most meta results with Python reference kernels (~0.5 ms per op); this
    keeps a ResNet-50 ``init`` from spending most of its shape pass in activations.
    """

    @functools.wraps(fn)
    def wrapper(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if x.is_meta and x.dtype.is_floating_point:
            return torch.empty(x.shape, dtype=x.dtype, device=_META)
        return fn(x, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------


@_shape_preserving
def relu(x: Tensor) -> Tensor:
    """``max(x, 0)``, elementwise (``torch.nn.functional.relu``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.relu(torch.tensor([-1.0, 0.0, 2.0]))
        tensor([0., 0., 2.])
    """
    return F.relu(x)


@_shape_preserving
def relu6(x: Tensor) -> Tensor:
    """``min(max(x, 0), 6)``, elementwise (``torch.nn.functional.relu6``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.relu6(torch.tensor([-1.0, 3.0, 8.0]))
        tensor([0., 3., 6.])
    """
    return F.relu6(x)


@_shape_preserving
def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """``x`` where ``x >= 0``, else ``negative_slope * x`` (``torch.nn.functional.leaky_relu``).

    Args:
        x: the input.
        negative_slope: the slope for negative inputs.

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.leaky_relu(torch.tensor([-2.0, 3.0]), 0.1)
        tensor([-0.2000,  3.0000])
    """
    return F.leaky_relu(x, negative_slope)


@_shape_preserving
def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (``torch.nn.functional.elu``).

    Args:
        x: the input.
        alpha: the saturation value for large negative inputs is ``-alpha``.

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.elu(torch.tensor([-1.0, 2.0]))
        tensor([-0.6321,  2.0000])
    """
    return F.elu(x, alpha)


@_shape_preserving
def selu(x: Tensor) -> Tensor:
    """``scale * elu(x, alpha)`` with the self-normalising constants (``F.selu``).

    ``alpha = 1.6732632423543772`` and ``scale = 1.0507009873554805`` (Klambauer et al., 2017).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.selu(torch.tensor([-1.0, 2.0]))
        tensor([-1.1113,  2.1014])
    """
    return F.selu(x)


@_shape_preserving
def celu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`` (``torch.nn.functional.celu``).

    Args:
        x: the input.
        alpha: the scale of the negative part (must not be 0).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.celu(torch.tensor([-1.0, 2.0]), alpha=2.0)
        tensor([-0.7869,  2.0000])
    """
    return F.celu(x, alpha)


@_shape_preserving
def gelu(x: Tensor, approximate: Literal["none", "tanh"] = "none") -> Tensor:
    """``x * Phi(x)``, ``Phi`` the standard normal CDF (``torch.nn.functional.gelu``).

    Args:
        x: the input.
        approximate: ``"none"`` (exact, with ``erf``) or ``"tanh"``
            (``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``). Note that torch's default
            is the exact form, while ``jax.nn.gelu`` defaults to the tanh approximation.

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.gelu(torch.tensor([-1.0, 1.0]))
        tensor([-0.1587,  0.8413])
    """
    return F.gelu(x, approximate=approximate)


@_shape_preserving
def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)``, also called swish (``torch.nn.functional.silu``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.silu(torch.tensor([-1.0, 1.0]))
        tensor([-0.2689,  0.7311])
    """
    return F.silu(x)


@_shape_preserving
def mish(x: Tensor) -> Tensor:
    """``x * tanh(softplus(x))`` (``torch.nn.functional.mish``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.mish(torch.tensor([-1.0, 1.0]))
        tensor([-0.3034,  0.8651])
    """
    return F.mish(x)


@_shape_preserving
def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta * x)) / beta``, and ``x`` where ``beta * x > threshold`` (``F.softplus``).

    Args:
        x: the input.
        beta: the sharpness.
        threshold: above ``beta * x > threshold`` the function is the identity (for stability).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.softplus(torch.tensor([-1.0, 0.0, 30.0]))
        tensor([ 0.3133,  0.6931, 30.0000])
    """
    return F.softplus(x, beta, threshold)


@_shape_preserving
def softsign(x: Tensor) -> Tensor:
    """``x / (1 + |x|)`` (``torch.nn.functional.softsign``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.softsign(torch.tensor([-1.0, 3.0]))
        tensor([-0.5000,  0.7500])
    """
    return F.softsign(x)


@_shape_preserving
def hardtanh(x: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """``x`` clipped to ``[min_val, max_val]`` (``torch.nn.functional.hardtanh``).

    Args:
        x: the input.
        min_val, max_val: the bounds.

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.hardtanh(torch.tensor([-2.0, 0.5, 2.0]))
        tensor([-1.0000,  0.5000,  1.0000])
    """
    return F.hardtanh(x, min_val, max_val)


@_shape_preserving
def hardswish(x: Tensor) -> Tensor:
    """``x * relu6(x + 3) / 6`` (``torch.nn.functional.hardswish``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.hardswish(torch.tensor([-4.0, 1.0, 4.0]))
        tensor([-0.0000,  0.6667,  4.0000])
    """
    return F.hardswish(x)


@_shape_preserving
def hardsigmoid(x: Tensor) -> Tensor:
    """``relu6(x + 3) / 6`` (``torch.nn.functional.hardsigmoid``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.hardsigmoid(torch.tensor([-4.0, 0.0, 4.0]))
        tensor([0.0000, 0.5000, 1.0000])
    """
    return F.hardsigmoid(x)


@_shape_preserving
def sigmoid(x: Tensor) -> Tensor:
    """``1 / (1 + exp(-x))`` (``torch.sigmoid``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.sigmoid(torch.tensor([0.0, 2.0]))
        tensor([0.5000, 0.8808])
    """
    return torch.sigmoid(x)


@_shape_preserving
def tanh(x: Tensor) -> Tensor:
    """The hyperbolic tangent (``torch.tanh``).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.tanh(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 0.7616])
    """
    return torch.tanh(x)


@_shape_preserving
def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim`` (``torch.nn.functional.softmax``).

    Args:
        x: the input.
        dim: the dim to normalise over (default the last; torch's implicit-dim legacy default
            is not offered).

    Shapes:
        input ``(*)``, output ``(*)``, summing to 1 along ``dim``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.softmax(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[0.0900, 0.2447, 0.6652]])
    """
    return F.softmax(x, dim)


@_shape_preserving
def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``dim`` (``torch.nn.functional.log_softmax``).

    Args:
        x: the input.
        dim: the dim to normalise over (default the last).

    Shapes:
        input ``(*)``, output ``(*)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.log_softmax(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[-2.4076, -1.4076, -0.4076]])
    """
    return F.log_softmax(x, dim)


def glu(x: Tensor, dim: int = -1) -> Tensor:
    """The gated linear unit: ``a * sigmoid(b)``, ``a, b`` the halves of ``x`` along ``dim``.

    As ``torch.nn.functional.glu``; the size of ``dim`` must be even.

    Args:
        x: the input.
        dim: the dim to split in half (default the last).

    Shapes:
        input ``(*, 2 * n, *)``, output ``(*, n, *)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.glu(torch.tensor([[1.0, 2.0, 0.0, 100.0]]))
        tensor([[0.5000, 2.0000]])
    """
    return F.glu(x, dim)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


class ReLU(Module):
    """:func:`relu` as a layer, the twin of ``torch.nn.ReLU``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.ReLU().init(fnn.random.key(0), torch.zeros(2))
        ({}, {})
        >>> fnn.nn.ReLU().apply({}, torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return relu(x)


class ReLU6(Module):
    """:func:`relu6` as a layer, the twin of ``torch.nn.ReLU6``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.ReLU6().apply({}, torch.tensor([-1.0, 8.0]))
        tensor([0., 6.])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return relu6(x)


class LeakyReLU(Module):
    """:func:`leaky_relu` as a layer, the twin of ``torch.nn.LeakyReLU``.

    Args:
        negative_slope: the slope for negative inputs.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.LeakyReLU(0.1).apply({}, torch.tensor([-2.0, 3.0]))
        tensor([-0.2000,  3.0000])
    """

    negative_slope: float = 0.01

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return leaky_relu(x, self.negative_slope)


class ELU(Module):
    """:func:`elu` as a layer, the twin of ``torch.nn.ELU``.

    Args:
        alpha: the negative saturation value is ``-alpha``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.ELU(alpha=2.0).apply({}, torch.tensor([-1.0, 2.0]))
        tensor([-1.2642,  2.0000])
    """

    alpha: float = 1.0

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return elu(x, self.alpha)


class SELU(Module):
    """:func:`selu` as a layer, the twin of ``torch.nn.SELU``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.SELU().apply({}, torch.tensor([-1.0, 2.0]))
        tensor([-1.1113,  2.1014])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return selu(x)


class CELU(Module):
    """:func:`celu` as a layer, the twin of ``torch.nn.CELU``.

    Args:
        alpha: the scale of the negative part (must not be 0).

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.CELU(2.0).apply({}, torch.tensor([-1.0, 2.0]))
        tensor([-0.7869,  2.0000])
    """

    alpha: float = 1.0

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return celu(x, self.alpha)


class GELU(Module):
    """:func:`gelu` as a layer, the twin of ``torch.nn.GELU``.

    Args:
        approximate: ``"none"`` (exact, torch's default) or ``"tanh"``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.GELU(approximate="tanh").apply({}, torch.tensor([-1.0, 1.0]))
        tensor([-0.1588,  0.8412])
    """

    approximate: Literal["none", "tanh"] = "none"

    def __post_init__(self) -> None:
        if self.approximate not in ("none", "tanh"):
            raise ValueError(
                f"fnn.nn.GELU: approximate must be 'none' or 'tanh', got {self.approximate!r}."
            )

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return gelu(x, approximate=self.approximate)


class SiLU(Module):
    """:func:`silu` (swish) as a layer, the twin of ``torch.nn.SiLU``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.SiLU().apply({}, torch.tensor([-1.0, 1.0]))
        tensor([-0.2689,  0.7311])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return silu(x)


class Mish(Module):
    """:func:`mish` as a layer, the twin of ``torch.nn.Mish``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Mish().apply({}, torch.tensor([-1.0, 1.0]))
        tensor([-0.3034,  0.8651])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return mish(x)


class Softplus(Module):
    """:func:`softplus` as a layer, the twin of ``torch.nn.Softplus``.

    Args:
        beta: the sharpness.
        threshold: above ``beta * x > threshold`` the function is the identity.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Softplus(beta=2.0).apply({}, torch.tensor([-1.0, 0.0]))
        tensor([0.0635, 0.3466])
    """

    beta: float = 1.0
    threshold: float = 20.0

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return softplus(x, self.beta, self.threshold)


class Softsign(Module):
    """:func:`softsign` as a layer, the twin of ``torch.nn.Softsign``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Softsign().apply({}, torch.tensor([-1.0, 3.0]))
        tensor([-0.5000,  0.7500])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return softsign(x)


class Hardtanh(Module):
    """:func:`hardtanh` as a layer, the twin of ``torch.nn.Hardtanh``.

    Args:
        min_val, max_val: the bounds (``max_val > min_val``, as torch requires).

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Hardtanh(-2.0, 2.0).apply({}, torch.tensor([-3.0, 0.5, 3.0]))
        tensor([-2.0000,  0.5000,  2.0000])
    """

    min_val: float = -1.0
    max_val: float = 1.0

    def __post_init__(self) -> None:
        if not self.max_val > self.min_val:
            raise ValueError(
                f"fnn.nn.Hardtanh: expected max_val > min_val, got min_val={self.min_val!r}, "
                f"max_val={self.max_val!r}."
            )

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return hardtanh(x, self.min_val, self.max_val)


class Hardswish(Module):
    """:func:`hardswish` as a layer, the twin of ``torch.nn.Hardswish``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Hardswish().apply({}, torch.tensor([1.0, 4.0]))
        tensor([0.6667, 4.0000])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return hardswish(x)


class Hardsigmoid(Module):
    """:func:`hardsigmoid` as a layer, the twin of ``torch.nn.Hardsigmoid``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Hardsigmoid().apply({}, torch.tensor([0.0, 4.0]))
        tensor([0.5000, 1.0000])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return hardsigmoid(x)


class Sigmoid(Module):
    """:func:`sigmoid` as a layer, the twin of ``torch.nn.Sigmoid``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Sigmoid().apply({}, torch.tensor([0.0, 2.0]))
        tensor([0.5000, 0.8808])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return sigmoid(x)


class Tanh(Module):
    """:func:`tanh` as a layer, the twin of ``torch.nn.Tanh``.

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Tanh().apply({}, torch.tensor([0.0, 1.0]))
        tensor([0.0000, 0.7616])
    """

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return tanh(x)


class Softmax(Module):
    """:func:`softmax` along ``dim`` as a layer, the twin of ``torch.nn.Softmax``.

    Args:
        dim: the dim to normalise over. Default -1 (torch's default ``None`` picks a dim from
            the input's rank with a deprecation warning; fnn does not offer that).

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Softmax().apply({}, torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[0.0900, 0.2447, 0.6652]])
    """

    dim: int = -1

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return softmax(x, self.dim)


class LogSoftmax(Module):
    """:func:`log_softmax` along ``dim`` as a layer, the twin of ``torch.nn.LogSoftmax``.

    Args:
        dim: the dim to normalise over. Default -1 (torch's default ``None`` is not offered).

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.LogSoftmax(dim=0).apply({}, torch.tensor([1.0, 2.0, 3.0]))
        tensor([-2.4076, -1.4076, -0.4076])
    """

    dim: int = -1

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return log_softmax(x, self.dim)


class GLU(Module):
    """:func:`glu` along ``dim`` as a layer, the twin of ``torch.nn.GLU``.

    Args:
        dim: the dim to split in half (its size must be even).

    Shapes:
        input ``(*, 2 * n, *)``, output ``(*, n, *)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.GLU().apply({}, torch.zeros(2, 6)).shape
        torch.Size([2, 3])
    """

    dim: int = -1

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        return glu(x, self.dim)


class PReLU(Module):
    """``x`` where ``x >= 0``, else ``weight * x`` with a learned slope (``torch.nn.PReLU``).

    With ``num_parameters = C > 1`` each channel (dim 1 of the input) has its own slope, so
    the input's dim 1 must have size ``C``; with 1, one slope is shared by every element.

    Args:
        num_parameters: the number of slopes: 1 or the number of input channels.
        init_value: the initial slope (torch's ``init``; ``init=`` is accepted too, but the
            field is named ``init_value`` since ``init`` is the method that makes parameters).
        weight_init: initializer of ``weight``; default ``constant(init_value)``, as torch.

    Shapes:
        input ``(*)`` with one slope, ``(N, C, *)`` with ``C = num_parameters > 1`` slopes;
        output: the input's shape. ``weight (num_parameters,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.PReLU(3)
        >>> params, state = model.init(fnn.random.key(0), torch.zeros(2, 3, 5))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params), state
        ({'weight': (3,)}, {})
        >>> model.apply(params, torch.full((1, 3, 1), -2.0)).flatten()
        tensor([-0.5000, -0.5000, -0.5000])
    """

    num_parameters: int = 1
    init_value: float = 0.25
    weight_init: Initializer | None = None

    def __init__(
        self,
        num_parameters: int = 1,
        init_value: float = 0.25,
        weight_init: Initializer | None = None,
        *,
        init: float | None = None,
    ) -> None:
        if init is not None:
            init_value = init
        if not (isinstance(num_parameters, int) and num_parameters >= 1):
            raise ValueError(
                f"fnn.nn.PReLU: num_parameters must be a positive int, got {num_parameters!r}."
            )
        self.num_parameters = num_parameters
        self.init_value = init_value
        self.weight_init = weight_init

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        n = self.num_parameters
        if n != 1:
            channels = x.shape[1] if x.ndim >= 2 else 1
            if channels != n:
                raise ValueError(
                    f"{_where(self, scope.path)}: expected an input whose dim 1 has size "
                    f"num_parameters={n}, i.e. of shape (N, {n}, *), got shape {tuple(x.shape)}."
                )
        w = scope.param("weight", (n,), self.weight_init or constant(self.init_value))
        return F.prelu(x, w)
