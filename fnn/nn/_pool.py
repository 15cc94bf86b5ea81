"""Pooling layers, the twins of torch.nn's: max, average and adaptive pooling in 1, 2 and 3-D.

None of them has parameters or state (``init`` gives ``({}, {})``). One private base per kind
holds the options and the math; each public class only says how many spatial dims it has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fnn.nn._conv import Size, _check_input, _ntuple
from fnn.nn._module import Module, Scope, _where

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
]

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def _pool_sizes(module: Module) -> None:
    """Normalise ``kernel_size``, ``stride`` (default: the kernel size) and ``padding``."""
    n, where = module._ndim, f"fnn.nn.{type(module).__name__}"
    module.kernel_size = _ntuple(module, "kernel_size", module.kernel_size, n, 1)
    stride = module.kernel_size if module.stride is None else module.stride
    module.stride = _ntuple(module, "stride", stride, n, 1)
    module.padding = _ntuple(module, "padding", module.padding, n, 0)
    if any(p > k // 2 for p, k in zip(module.padding, module.kernel_size, strict=True)):
        raise ValueError(
            f"{where}: padding must be at most half the kernel size in every dim (as in torch), "
            f"got padding={module.padding}, kernel_size={module.kernel_size}."
        )
    module.ceil_mode = bool(module.ceil_mode)


def _padding_only_dim(
    spatial: tuple[int, ...],
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    ceil_mode: bool,
) -> int | None:
    """The first spatial dim where a max-pool window's taps all miss the input, else ``None``.

    Only dilation can cause it (``padding <= kernel_size // 2`` rules it out otherwise). The
    output sizes are torch's (``pooling_output_shape``); one below 1 is left to torch's error.
    """
    if all(d == 1 for d in dilation):
        return None
    dims = list(zip(spatial, kernel_size, stride, padding, dilation, strict=True))
    outs = []
    for size, k, s, p, d in dims:
        out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        outs.append(out)
    if min(outs) < 1:
        return None
    for i, ((size, k, s, p, d), out) in enumerate(zip(dims, outs, strict=True)):
        if d == 1:
            continue
        for o in range(out):
            start = o * s - p
            if 0 <= start < size:
                continue
            first = 0 if start >= 0 else (-start + d - 1) // d  # the first tap at index >= 0
            if first >= k or start + first * d >= size:
                return i
    return None


class _MaxPool(Module):
    """The fields and math of ``MaxPool{1,2,3}d``."""

    _ndim = 0

    kernel_size: Size
    stride: Size | None = None
    padding: Size = 0
    dilation: Size = 1
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        _pool_sizes(self)
        self.dilation = _ntuple(self, "dilation", self.dilation, self._ndim, 1)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        n = self._ndim
        _check_input(self, scope, x, n)
        options = (self.kernel_size, self.stride, self.padding, self.dilation)
        dim = _padding_only_dim(tuple(x.shape[-n:]), *options, self.ceil_mode)
        if dim is not None:
            raise ValueError(
                f"{_where(self, scope.path)}: with the input of shape {tuple(x.shape)}, some "
                f"windows along spatial dim {dim} (of size {x.shape[dim - n]}) hold only padding "
                f"(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}); torch returns -inf there "
                "and its backward writes out of bounds. Use a larger input or less dilation."
            )
        return _MAX[n](
            x, self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode
        )


class MaxPool2d(_MaxPool):
    """2-D max pooling over ``(N, C, H, W)`` inputs, the twin of ``torch.nn.MaxPool2d``.

    Args:
        kernel_size: the window, an int or ``(kh, kw)``.
        stride: the step, an int or ``(sh, sw)``; default ``kernel_size``.
        padding: an int or ``(ph, pw)`` of implicit ``-inf`` padding on both sides; at most
            half the kernel size.
        dilation: an int or ``(dh, dw)``, the spacing of the window's taps.
        ceil_mode: round the output size up instead of down (a last, partial window is kept
            if it starts inside the input or the left padding).

    With ``dilation > 1`` a window can skip over a small input and hold only padding; torch
    then returns ``-inf`` and its CPU backward writes out of bounds (a crash). fnn raises a
    ``ValueError`` for such inputs instead; everything else is exactly torch's.

    Shapes:
        input ``(N, C, H, W)`` or unbatched ``(C, H, W)``; output ``(N, C, H', W')`` with
        ``H' = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1`` (rounded up with ``ceil_mode``).
        No parameters.

    Example:
        >>> import fnn, torch
        >>> pool = fnn.nn.MaxPool2d(2)
        >>> pool.init(fnn.random.key(0), torch.zeros(1, 3, 8, 8))
        ({}, {})
        >>> pool.apply({}, torch.arange(16.0).reshape(1, 1, 4, 4))
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """

    _ndim = 2


class MaxPool1d(_MaxPool):
    """1-D max pooling over ``(N, C, L)`` inputs, the twin of ``torch.nn.MaxPool1d``.

    Args:
        kernel_size, stride, padding, dilation, ceil_mode: as :class:`MaxPool2d`, with ints or
        1-tuples.

    Shapes:
        input ``(N, C, L)`` or unbatched ``(C, L)``; output ``(N, C, L')`` with
        ``L' = (L + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.MaxPool1d(3, stride=2).apply({}, torch.zeros(4, 2, 9)).shape
        torch.Size([4, 2, 4])
    """

    _ndim = 1


class MaxPool3d(_MaxPool):
    """3-D max pooling over ``(N, C, D, H, W)`` inputs, the twin of ``torch.nn.MaxPool3d``.

    Args:
        kernel_size, stride, padding, dilation, ceil_mode: as :class:`MaxPool2d`, with ints or
        3-tuples.

    Shapes:
        input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``; output
        ``(N, C, D', H', W')``, each spatial size as in :class:`MaxPool2d`.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.MaxPool3d(2, ceil_mode=True).apply({}, torch.zeros(1, 2, 5, 4, 3)).shape
        torch.Size([1, 2, 3, 2, 2])
    """

    _ndim = 3


class _AvgPool(Module):
    """The fields and math of ``AvgPool1d`` (2-D and 3-D add ``divisor_override``)."""

    _ndim = 0

    kernel_size: Size
    stride: Size | None = None
    padding: Size = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    def __post_init__(self) -> None:
        _pool_sizes(self)
        self.count_include_pad = bool(self.count_include_pad)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, scope, x, self._ndim)
        args = (x, self.kernel_size, self.stride, self.padding)
        args += (self.ceil_mode, self.count_include_pad)
        if self._ndim == 1:  # torch's avg_pool1d has no divisor_override
            return F.avg_pool1d(*args)
        return _AVG[self._ndim](*args, self.divisor_override)


class _AvgPoolDivisor(_AvgPool):
    """``_AvgPool`` with ``divisor_override`` (the fields of ``AvgPool2d``/``AvgPool3d``)."""

    divisor_override: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.divisor_override
        if d is not None and (not isinstance(d, int) or isinstance(d, bool) or d == 0):
            raise ValueError(
                f"fnn.nn.{type(self).__name__}: divisor_override must be None or a non-zero "
                f"int, got {d!r}."
            )


class AvgPool1d(_AvgPool):
    """1-D average pooling over ``(N, C, L)`` inputs, the twin of ``torch.nn.AvgPool1d``.

    Args:
        kernel_size, stride, padding, ceil_mode, count_include_pad: as :class:`AvgPool2d`,
        with ints or 1-tuples (torch's ``AvgPool1d`` has no ``divisor_override``).

    Shapes:
        input ``(N, C, L)`` or unbatched ``(C, L)``; output ``(N, C, L')`` with
        ``L' = (L + 2 * padding - kernel_size) // stride + 1``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.AvgPool1d(2).apply({}, torch.tensor([[[1.0, 3.0, 5.0, 7.0]]]))
        tensor([[[2., 6.]]])
    """

    _ndim = 1


class AvgPool2d(_AvgPoolDivisor):
    """2-D average pooling over ``(N, C, H, W)`` inputs, the twin of ``torch.nn.AvgPool2d``.

    Args:
        kernel_size: the window, an int or ``(kh, kw)``.
        stride: the step, an int or ``(sh, sw)``; default ``kernel_size``.
        padding: an int or ``(ph, pw)`` of implicit zero padding on both sides; at most half
            the kernel size.
        ceil_mode: round the output size up instead of down.
        count_include_pad: whether the zero padding counts in the averages' denominators.
        divisor_override: if given, divide every window's sum by this instead.

    Shapes:
        input ``(N, C, H, W)`` or unbatched ``(C, H, W)``; output ``(N, C, H', W')`` with
        ``H' = (H + 2 * ph - kh) // sh + 1`` (rounded up with ``ceil_mode``). No parameters.

    Example:
        >>> import fnn, torch
        >>> pool = fnn.nn.AvgPool2d(2)
        >>> pool.init(fnn.random.key(0), torch.zeros(1, 3, 8, 8))
        ({}, {})
        >>> pool.apply({}, torch.arange(16.0).reshape(1, 1, 4, 4))
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """

    _ndim = 2


class AvgPool3d(_AvgPoolDivisor):
    """3-D average pooling over ``(N, C, D, H, W)`` inputs, the twin of ``torch.nn.AvgPool3d``.

    Args:
        kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override: as
        :class:`AvgPool2d`, with ints or 3-tuples.

    Shapes:
        input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``; output
        ``(N, C, D', H', W')``, each spatial size as in :class:`AvgPool2d`.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.AvgPool3d(2, stride=1, padding=1).apply({}, torch.zeros(1, 2, 3, 3, 3)).shape
        torch.Size([1, 2, 4, 4, 4])
    """

    _ndim = 3


class _Adaptive(Module):
    """The field and math of the adaptive pools; subclasses set ``_ndim`` and ``_max``."""

    _ndim = 0
    _max = False

    output_size: int | tuple[int | None, ...]

    def __post_init__(self) -> None:
        n, size = self._ndim, self.output_size
        entries = (size,) * n if isinstance(size, int) else size
        ok = isinstance(entries, tuple | list) and len(entries) == n
        if ok:
            entries = tuple(entries)
            allowed = (int,) if n == 1 else (int, type(None))  # as torch: None keeps the size
            ok = all(
                isinstance(v, allowed) and not isinstance(v, bool) and (v is None or v >= 0)
                for v in entries
            )
        if not ok:
            what = "an int >= 0" if n == 1 else f"an int >= 0 or {n} entries each an int or None"
            raise ValueError(
                f"fnn.nn.{type(self).__name__}: expected output_size to be {what}, got {size!r}."
            )
        self.output_size = entries

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, scope, x, self._ndim)
        pool = (_ADAPTIVE_MAX if self._max else _ADAPTIVE_AVG)[self._ndim]
        return pool(x, self.output_size)


class _AdaptiveAvg(_Adaptive):
    """The adaptive average pools."""


class _AdaptiveMax(_Adaptive):
    """The adaptive max pools."""

    _max = True


class AdaptiveAvgPool2d(_AdaptiveAvg):
    """Average pooling to a fixed output size, the twin of ``torch.nn.AdaptiveAvgPool2d``.

    Output cell ``(i, j)`` averages input rows ``floor(i * H / oh)`` to
    ``ceil((i + 1) * H / oh)`` (exclusive), and likewise for columns.

    Args:
        output_size: ``oh`` (square) or ``(oh, ow)``; an entry ``None`` keeps that input size.

    Shapes:
        input ``(N, C, H, W)`` or unbatched ``(C, H, W)``; output ``(N, C, oh, ow)``.
        No parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.AdaptiveAvgPool2d(1).apply({}, torch.zeros(2, 8, 7, 5)).shape
        torch.Size([2, 8, 1, 1])
        >>> fnn.nn.AdaptiveAvgPool2d((None, 2)).apply({}, torch.zeros(2, 8, 7, 5)).shape
        torch.Size([2, 8, 7, 2])
    """

    _ndim = 2


class AdaptiveAvgPool1d(_AdaptiveAvg):
    """Average pooling to a fixed output length, the twin of ``torch.nn.AdaptiveAvgPool1d``.

    Args:
        output_size: the output length ``ol`` (an int or a 1-tuple; torch allows no ``None``
            here).

    Shapes:
        input ``(N, C, L)`` or unbatched ``(C, L)``; output ``(N, C, ol)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.AdaptiveAvgPool1d(2).apply({}, torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]))
        tensor([[[1.5000, 3.5000]]])
    """

    _ndim = 1


class AdaptiveAvgPool3d(_AdaptiveAvg):
    """Average pooling to a fixed output size, the twin of ``torch.nn.AdaptiveAvgPool3d``.

    Args:
        output_size: ``o`` (a cube) or ``(od, oh, ow)``; an entry ``None`` keeps that input
            size.

    Shapes:
        input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``; output ``(N, C, od, oh, ow)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.AdaptiveAvgPool3d((1, None, 2)).apply({}, torch.zeros(2, 3, 4, 5, 6)).shape
        torch.Size([2, 3, 1, 5, 2])
    """

    _ndim = 3


class AdaptiveMaxPool2d(_AdaptiveMax):
    """Max pooling to a fixed output size, the twin of ``torch.nn.AdaptiveMaxPool2d``.

    The windows are those of :class:`AdaptiveAvgPool2d`; each output is its window's maximum.

    Args:
        output_size: ``oh`` (square) or ``(oh, ow)``; an entry ``None`` keeps that input size.

    Shapes:
        input ``(N, C, H, W)`` or unbatched ``(C, H, W)``; output ``(N, C, oh, ow)``.
        No parameters.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.AdaptiveMaxPool2d(2).apply({}, torch.arange(16.0).reshape(1, 1, 4, 4))
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """

    _ndim = 2


class AdaptiveMaxPool1d(_AdaptiveMax):
    """Max pooling to a fixed output length, the twin of ``torch.nn.AdaptiveMaxPool1d``.

    Args:
        output_size: the output length ``ol`` (an int or a 1-tuple).

    Shapes:
        input ``(N, C, L)`` or unbatched ``(C, L)``; output ``(N, C, ol)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.AdaptiveMaxPool1d(2).apply({}, torch.tensor([[[1.0, 4.0, 3.0, 2.0]]]))
        tensor([[[4., 3.]]])
    """

    _ndim = 1


class AdaptiveMaxPool3d(_AdaptiveMax):
    """Max pooling to a fixed output size, the twin of ``torch.nn.AdaptiveMaxPool3d``.

    Args:
        output_size: ``o`` (a cube) or ``(od, oh, ow)``; an entry ``None`` keeps that input
            size.

    Shapes:
        input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``; output ``(N, C, od, oh, ow)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.AdaptiveMaxPool3d(1).apply({}, torch.zeros(2, 3, 4, 5, 6)).shape
        torch.Size([2, 3, 1, 1, 1])
    """

    _ndim = 3
