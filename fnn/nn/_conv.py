"""``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``, the twins of torch.nn's convolutions.

One private base holds what the six share (option checks, the weight and bias, input checks);
each public class only says how many spatial dims it has. Input channels are inferred from the
input at ``init``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from fnn._src.initializers import Initializer
from fnn.nn._defaults import fan_in_bias_init, torch_weight_init
from fnn.nn._module import Module, Scope, _where

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}

Size = int | tuple[int, ...]


def _ntuple(module: Module, name: str, value: Any, n: int, minimum: int) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``n`` ints, each ``>= minimum``) as an ``n``-tuple."""
    where = f"fnn.nn.{type(module).__name__}"
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value,) * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        out = tuple(value)
    else:
        out = None
    if (
        out is None
        or len(out) != n
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in out)
    ):
        raise TypeError(f"{where}: expected {name} to be an int or {n} ints, got {value!r}.")
    if any(v < minimum for v in out):
        raise ValueError(f"{where}: every entry of {name} must be >= {minimum}, got {value!r}.")
    return out


def _check_input(module: Module, scope: Scope, x: Any, n: int) -> int:
    """Check ``x`` is ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``; return ``C``."""
    if not isinstance(x, torch.Tensor) or x.ndim not in (n + 1, n + 2):
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{_where(module, scope.path)}: expected an input of shape (N, C, {_SPATIAL[n]}) "
            f"or unbatched (C, {_SPATIAL[n]}), i.e. {n + 2}-D or {n + 1}-D, got {got}."
        )
    return x.shape[-n - 1]


def _reversed_padding_repeated_twice(
    padding: str | tuple[int, ...], kernel_size: tuple[int, ...], dilation: tuple[int, ...]
) -> list[int]:
    """The ``F.pad`` argument torch's ``_ConvNd`` uses for non-zeros padding modes.

    ``F.pad`` lists the last dim first, ``(left, right)`` per dim; ``"same"`` puts the odd
    extra pixel on the right, as torch does.
    """
    out: list[int] = []
    for i in reversed(range(len(kernel_size))):
        if padding == "valid":
            out += [0, 0]
        elif padding == "same":
            total = dilation[i] * (kernel_size[i] - 1)
            out += [total // 2, total - total // 2]
        else:
            out += [padding[i], padding[i]]
    return out


class _ConvNd(Module):
    """What Conv and ConvTranspose share; subclasses set ``_ndim`` and ``_transposed``."""

    _ndim = 0
    _transposed = False

    def __post_init__(self) -> None:
        n, where = self._ndim, f"fnn.nn.{type(self).__name__}"
        if not isinstance(self.features, int) or isinstance(self.features, bool):
            raise TypeError(f"{where}: expected features to be an int, got {self.features!r}.")
        self.kernel_size = _ntuple(self, "kernel_size", self.kernel_size, n, 1)
        self.stride = _ntuple(self, "stride", self.stride, n, 1)
        self.dilation = _ntuple(self, "dilation", self.dilation, n, 1)
        if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1:
            raise ValueError(f"{where}: groups must be a positive int, got {self.groups!r}.")
        if self.features % self.groups:
            raise ValueError(
                f"{where}: features (out_channels) = {self.features} must be divisible by "
                f"groups = {self.groups}."
            )
        self.bias = bool(self.bias)
        if self.padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"{where}: padding_mode must be one of {_PADDING_MODES}, got {self.padding_mode!r}."
            )
        if self._transposed:
            if self.padding_mode != "zeros":
                raise ValueError(
                    f"{where}: only padding_mode='zeros' is supported (as in torch), "
                    f"got {self.padding_mode!r}."
                )
            self.padding = _ntuple(self, "padding", self.padding, n, 0)
            self.output_padding = _ntuple(self, "output_padding", self.output_padding, n, 0)
            limit = tuple(max(s, d) for s, d in zip(self.stride, self.dilation, strict=True))
            if any(op >= m for op, m in zip(self.output_padding, limit, strict=True)):
                raise ValueError(
                    f"{where}: output_padding must be smaller than stride or dilation in every "
                    f"dim, got output_padding={self.output_padding}, stride={self.stride}, "
                    f"dilation={self.dilation}."
                )
        elif isinstance(self.padding, str):
            if self.padding not in ("same", "valid"):
                raise ValueError(
                    f"{where}: padding must be an int, {n} ints, 'same' or 'valid', "
                    f"got {self.padding!r}."
                )
            if self.padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(
                    f"{where}: padding='same' is not supported for strided convolutions "
                    f"(stride={self.stride}), as in torch; give the padding as ints."
                )
        else:
            self.padding = _ntuple(self, "padding", self.padding, n, 0)

    def _params(self, scope: Scope, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check ``x`` and declare ``weight`` and ``bias`` for its channel count."""
        n = self._ndim
        in_channels = _check_input(self, scope, x, n)
        if in_channels % self.groups:
            raise ValueError(
                f"{_where(self, scope.path)}: the input's channels (dim {-n - 1} of shape "
                f"{tuple(x.shape)}) must be divisible by groups = {self.groups}, "
                f"got {in_channels} channels."
            )
        self._check_spatial(scope, x)
        if self._transposed:
            shape = (in_channels, self.features // self.groups, *self.kernel_size)
        else:
            shape = (self.features, in_channels // self.groups, *self.kernel_size)
        # torch's fan_in is weight.shape[1] * prod(kernel) for both layouts (for a transposed
        # conv that is out_channels / groups * prod(kernel)).
        fan_in = shape[1] * math.prod(self.kernel_size)
        w = scope.param("weight", shape, self.weight_init or torch_weight_init)
        b = None
        if self.bias:
            b = scope.param("bias", (self.features,), self.bias_init or fan_in_bias_init(fan_in))
        return w, b

    def _check_spatial(self, scope: Scope, x: torch.Tensor) -> None:
        k, s, d = self.kernel_size, self.stride, self.dilation
        output_padding = self.output_padding if self._transposed else None
        spatial = tuple(x.shape[-self._ndim :])
        # Symbolic sizes (dynamic shapes) are not hashable, and dynamo warns about caches.
        cached = not torch.compiler.is_compiling() and all(type(v) is int for v in spatial)
        check = _spatial_problem if cached else _spatial_problem_uncached
        problem = check(spatial, k, s, d, self.padding, output_padding)
        if problem is not None:
            raise ValueError(
                f"{_where(self, scope.path)}: the input of shape {tuple(x.shape)} is too small: "
                f"{problem} (kernel_size={k}, stride={s}, padding={self.padding!r}, "
                f"dilation={d})."
            )


def _spatial_problem_uncached(
    spatial: tuple[int, ...],
    k: tuple[int, ...],
    s: tuple[int, ...],
    d: tuple[int, ...],
    padding: Any,
    output_padding: tuple[int, ...] | None,
) -> str | None:
    """Why an input of spatial size ``spatial`` is too small for the convolution (None when it
    is not). Eager calls go through the cached :data:`_spatial_problem`: a network's forward
    checks the same sizes every call (7.7 µs a check uncached, 53 of them in a ResNet-50
    forward)."""
    reach = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d, strict=True))
    if output_padding is not None:  # transposed
        out = tuple(
            (size - 1) * si - 2 * p + r + op
            for size, si, p, r, op in zip(spatial, s, padding, reach, output_padding, strict=True)
        )
        return (
            None if all(o >= 1 for o in out) else f"it would give an output of spatial size {out}"
        )
    if padding == "same":
        return None
    pads = _reversed_padding_repeated_twice(padding, k, d)  # last dim first
    n = len(spatial)
    totals = [pads[2 * j] + pads[2 * j + 1] for j in range(n)][::-1]
    padded = tuple(size + t for size, t in zip(spatial, totals, strict=True))
    if all(p >= r for p, r in zip(padded, reach, strict=True)):
        return None
    return (
        f"its spatial size {spatial}, padded to {padded}, is smaller than the dilated kernel "
        f"{reach}"
    )


_spatial_problem = functools.lru_cache(maxsize=4096)(_spatial_problem_uncached)


class _Conv(_ConvNd):
    """The fields of ``Conv{1,2,3}d`` (in torch's order, without ``in_channels``)."""

    features: int
    kernel_size: Size
    stride: Size = 1
    padding: Size | str = 0
    dilation: Size = 1
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        w, b = self._params(scope, x)
        conv = _CONV[self._ndim]
        if self.padding_mode == "zeros":
            return conv(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        # As torch's _conv_forward: pad with the mode, then convolve without padding.
        pad = _reversed_padding_repeated_twice(self.padding, self.kernel_size, self.dilation)
        x = F.pad(x, pad, mode=self.padding_mode)
        return conv(x, w, b, self.stride, (0,) * self._ndim, self.dilation, self.groups)


class _ConvTranspose(_ConvNd):
    """The fields of ``ConvTranspose{1,2,3}d`` (in torch's order, without ``in_channels``)."""

    _transposed = True

    features: int
    kernel_size: Size
    stride: Size = 1
    padding: Size = 0
    output_padding: Size = 0
    groups: int = 1
    bias: bool = True
    dilation: Size = 1
    padding_mode: str = "zeros"
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        w, b = self._params(scope, x)
        return _CONV_T[self._ndim](
            x, w, b, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )


class Conv2d(_Conv):
    """A 2-D convolution over ``(N, C, H, W)`` inputs, the twin of ``torch.nn.Conv2d``.

    The input channel count ``C`` is inferred from the input at ``init``. Everything else is
    as in torch, in torch's order: ``Conv2d(32, 3)`` is ``torch.nn.Conv2d(C, 32, 3)``.

    Args:
        features: the number of output channels (torch's ``out_channels``).
        kernel_size: an int or ``(kh, kw)``.
        stride: an int or ``(sh, sw)``.
        padding: an int or ``(ph, pw)`` added on both sides of each spatial dim, or
            ``"valid"`` (none) or ``"same"`` (output as large as the input; only for stride 1;
            an odd total goes on the right, as torch).
        dilation: an int or ``(dh, dw)``, the spacing of the kernel's taps.
        groups: split the channels into ``groups`` independent convolutions; ``C`` and
            ``features`` must both be divisible by it.
        bias: whether to add a learned bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``; other than
            ``"zeros"`` the input is padded with ``F.pad`` in that mode and then convolved
            without padding, as torch does.
        weight_init: initializer of ``weight``; default torch's
            ``kaiming_uniform(a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
            ``fan_in = C / groups * kh * kw``.
        bias_init: initializer of ``bias``; default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    Shapes:
        input ``(N, C, H, W)`` or unbatched ``(C, H, W)``; output ``(N, features, H', W')``
        (or ``(features, H', W')``) with
        ``H' = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1`` and likewise ``W'``;
        ``weight (features, C / groups, kh, kw)``, ``bias (features,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.Conv2d(8, 3, padding=1)
        >>> x = torch.zeros(2, 3, 16, 16)
        >>> params, state = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (8, 3, 3, 3), 'bias': (8,)}
        >>> model.apply(params, x).shape
        torch.Size([2, 8, 16, 16])
    """

    _ndim = 2


class Conv1d(_Conv):
    """A 1-D convolution over ``(N, C, L)`` inputs, the twin of ``torch.nn.Conv1d``.

    Args:
        features, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
        weight_init, bias_init: as :class:`Conv2d`, with ints or 1-tuples for the sizes.

    Shapes:
        input ``(N, C, L)`` or unbatched ``(C, L)``; output ``(N, features, L')`` with
        ``L' = (L + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1``;
        ``weight (features, C / groups, kernel_size)``, ``bias (features,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.Conv1d(4, 5, stride=2, padding_mode="circular", padding=2)
        >>> x = torch.zeros(2, 3, 20)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (4, 3, 5), 'bias': (4,)}
        >>> model.apply(params, x).shape
        torch.Size([2, 4, 10])
    """

    _ndim = 1


class Conv3d(_Conv):
    """A 3-D convolution over ``(N, C, D, H, W)`` inputs, the twin of ``torch.nn.Conv3d``.

    Args:
        features, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
        weight_init, bias_init: as :class:`Conv2d`, with ints or 3-tuples for the sizes.

    Shapes:
        input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``; output
        ``(N, features, D', H', W')``, each spatial size as in :class:`Conv2d`;
        ``weight (features, C / groups, kd, kh, kw)``, ``bias (features,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.Conv3d(4, (1, 3, 3), padding="same", bias=False)
        >>> x = torch.zeros(2, 3, 5, 8, 8)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (4, 3, 1, 3, 3)}
        >>> model.apply(params, x).shape
        torch.Size([2, 4, 5, 8, 8])
    """

    _ndim = 3


class ConvTranspose2d(_ConvTranspose):
    """A 2-D transposed convolution, the twin of ``torch.nn.ConvTranspose2d``.

    The gradient of :class:`Conv2d` with respect to its input (a "fractionally strided" conv,
    used to upsample). The input channel count ``C`` is inferred at ``init``; the other
    arguments are torch's, in torch's order.

    Args:
        features: the number of output channels (torch's ``out_channels``).
        kernel_size: an int or ``(kh, kw)``.
        stride: an int or ``(sh, sw)``.
        padding: an int or ``(ph, pw)``: ``dilation * (kernel_size - 1) - padding`` zeros are
            added on both sides of the input (so it undoes a :class:`Conv2d` ``padding``).
        output_padding: an int or ``(oh, ow)`` added to one side of the output, to pick among
            the output sizes a strided :class:`Conv2d` maps to the same size; each must be
            smaller than the stride or the dilation in its dim.
        groups: as :class:`Conv2d`.
        bias: whether to add a learned bias.
        dilation: an int or ``(dh, dw)``.
        padding_mode: only ``"zeros"`` (as torch).
        weight_init: initializer of ``weight``; default torch's ``kaiming_uniform(a=sqrt(5))``
            on the ``(C, features / groups, kh, kw)`` layout, i.e. bound
            ``1 / sqrt(fan_in)`` with ``fan_in = features / groups * kh * kw`` (torch computes
            the fan from ``weight.shape[1]``).
        bias_init: initializer of ``bias``; default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
            with the same ``fan_in``.

    Shapes:
        input ``(N, C, H, W)`` or unbatched ``(C, H, W)``; output ``(N, features, H', W')``
        with ``H' = (H - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1`` and likewise ``W'``;
        ``weight (C, features / groups, kh, kw)``, ``bias (features,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.ConvTranspose2d(4, 3, stride=2, padding=1, output_padding=1)
        >>> x = torch.zeros(2, 8, 5, 5)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (8, 4, 3, 3), 'bias': (4,)}
        >>> model.apply(params, x).shape
        torch.Size([2, 4, 10, 10])
    """

    _ndim = 2


class ConvTranspose1d(_ConvTranspose):
    """A 1-D transposed convolution, the twin of ``torch.nn.ConvTranspose1d``.

    Args:
        features, kernel_size, stride, padding, output_padding, groups, bias, dilation,
        padding_mode, weight_init, bias_init: as :class:`ConvTranspose2d`, with ints or
        1-tuples for the sizes.

    Shapes:
        input ``(N, C, L)`` or unbatched ``(C, L)``; output ``(N, features, L')`` with
        ``L' = (L - 1) * stride - 2 * padding + dilation * (kernel_size - 1)
        + output_padding + 1``; ``weight (C, features / groups, kernel_size)``,
        ``bias (features,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.ConvTranspose1d(2, 4, stride=2)
        >>> x = torch.zeros(3, 6, 10)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (6, 2, 4), 'bias': (2,)}
        >>> model.apply(params, x).shape
        torch.Size([3, 2, 22])
    """

    _ndim = 1


class ConvTranspose3d(_ConvTranspose):
    """A 3-D transposed convolution, the twin of ``torch.nn.ConvTranspose3d``.

    Args:
        features, kernel_size, stride, padding, output_padding, groups, bias, dilation,
        padding_mode, weight_init, bias_init: as :class:`ConvTranspose2d`, with ints or
        3-tuples for the sizes.

    Shapes:
        input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``; output
        ``(N, features, D', H', W')``, each spatial size as in :class:`ConvTranspose2d`;
        ``weight (C, features / groups, kd, kh, kw)``, ``bias (features,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.ConvTranspose3d(4, 2, stride=2, groups=2)
        >>> x = torch.zeros(1, 6, 2, 3, 4)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (6, 2, 2, 2, 2), 'bias': (4,)}
        >>> model.apply(params, x).shape
        torch.Size([1, 4, 4, 6, 8])
    """

    _ndim = 3
