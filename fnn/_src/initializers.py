"""Parameter initializers over explicit PRNG keys, in the style of ``jax.nn.initializers``.

Every initializer is a factory that returns ``init(key, shape, dtype=None) -> Tensor``; the
randomness comes only from ``key`` (an ``fnn.random`` key), never from torch's global
generator, so the same key always gives the same parameters.

Layout convention: fnn stores parameters in PyTorch's layouts -- a Linear weight is
``(out, in)`` and a convolution weight is ``(out, in / groups, *kernel)``. Fans are therefore
computed as ``torch.nn.init._calculate_fan_in_and_fan_out`` does::

    fan_in  = shape[1] * prod(shape[2:])
    fan_out = shape[0] * prod(shape[2:])

i.e. ``variance_scaling``'s defaults are ``in_axis=1, out_axis=0`` (JAX's are ``in_axis=-2,
out_axis=-1`` because JAX stores Dense kernels as ``(in, out)`` and conv kernels as
``(*kernel, in, out)``). With this default, ``kaiming_uniform(a=math.sqrt(5))`` gives exactly
the bounds of ``nn.Linear``'s and ``nn.Conv2d``'s default weight initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import torch

from fnn._src.prng import Shape, _as_shape, check_key
from fnn._src.samplers import normal as _normal
from fnn._src.samplers import orthogonal as _orthogonal
from fnn._src.samplers import truncated_normal as _truncated_normal
from fnn._src.samplers import uniform as _uniform

__all__ = [
    "Initializer",
    "calculate_gain",
    "compute_fans",
    "constant",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

# The standard deviation of a standard normal truncated to (-2, 2), as in JAX.
_TRUNC_STD = 0.87962566103423978

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["truncated_normal", "normal", "uniform"]


class Initializer(Protocol):
    """``init(key, shape, dtype=None) -> Tensor``: what every factory here returns."""

    def __call__(
        self, key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None
    ) -> torch.Tensor: ...


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


def _check_float(dtype: torch.dtype, where: str) -> None:
    if not dtype.is_floating_point:
        raise TypeError(f"fnn.nn.initializers.{where}: expected a floating dtype, got {dtype}.")


def _norm_axes(axes: int | Sequence[int], ndim: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"fnn.nn.initializers: axis {a} is out of range for shape {shape!r}.")
        out.append(a % ndim)
    return tuple(out)


def compute_fans(
    shape: Shape,
    in_axis: int | Sequence[int] = 1,
    out_axis: int | Sequence[int] = 0,
    batch_axis: int | Sequence[int] = (),
) -> tuple[float, float]:
    """``(fan_in, fan_out)`` of a weight of ``shape``, by default in PyTorch's layout.

    The receptive field is the product of every axis that is not an in, out or batch axis;
    ``fan_in = prod(shape[in_axis]) * receptive_field`` and likewise for ``fan_out``. The
    defaults (``in_axis=1, out_axis=0``) equal ``torch.nn.init._calculate_fan_in_and_fan_out``.

    Args:
        shape: the weight's shape, at least 2-D (e.g. ``(out, in)`` or ``(out, in, kh, kw)``).
        in_axis, out_axis: the input and output feature axes (ints or sequences of ints).
        batch_axis: axes that hold independent weights and count towards neither fan.

    Returns:
        ``(fan_in, fan_out)`` as floats.

    Raises:
        ValueError: if ``shape`` has fewer than 2 dimensions.

    Example:
        >>> compute_fans((64, 3, 5, 5))
        (75.0, 1600.0)
    """
    shape = _as_shape(shape, "fnn.nn.initializers.compute_fans")
    if len(shape) < 2:
        raise ValueError(
            "fnn.nn.initializers: fan_in and fan_out need a shape with at least 2 dimensions, "
            f"got shape {shape!r}."
        )
    ndim = len(shape)
    ins = _norm_axes(in_axis, ndim, shape)
    outs = _norm_axes(out_axis, ndim, shape)
    batch = _norm_axes(batch_axis, ndim, shape)
    receptive = math.prod(d for i, d in enumerate(shape) if i not in (*ins, *outs, *batch))
    fan_in = math.prod(shape[i] for i in ins) * receptive
    fan_out = math.prod(shape[i] for i in outs) * receptive
    return float(fan_in), float(fan_out)


def zeros(key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An initializer returning zeros of ``shape`` (``key`` is accepted and ignored).

    Args:
        key: a PRNG key (unused; kept for the common signature).
        shape: the output shape.
        dtype: the output dtype (default: torch's default dtype).

    Returns:
        A tensor of zeros of ``shape`` and ``dtype``.

    Example:
        >>> import fnn
        >>> zeros(fnn.random.key(0), (2, 3))
        tensor([[0., 0., 0.],
                [0., 0., 0.]])
    """
    return torch.zeros(
        _as_shape(shape, "fnn.nn.initializers.zeros"), dtype=_dtype(dtype), device=key.device
    )


def ones(key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An initializer returning ones of ``shape`` (``key`` is accepted and ignored).

    Args:
        key: a PRNG key (unused; kept for the common signature).
        shape: the output shape.
        dtype: the output dtype (default: torch's default dtype).

    Returns:
        A tensor of ones of ``shape`` and ``dtype``.

    Example:
        >>> import fnn
        >>> ones(fnn.random.key(0), (3,))
        tensor([1., 1., 1.])
    """
    return torch.ones(
        _as_shape(shape, "fnn.nn.initializers.ones"), dtype=_dtype(dtype), device=key.device
    )


def constant(value: float) -> Initializer:
    """An initializer filling every entry with ``value`` (like ``nn.init.constant_``).

    Args:
        value: the fill value.

    Returns:
        ``init(key, shape, dtype=None)`` giving a tensor of ``shape`` full of ``value``.

    Example:
        >>> import fnn
        >>> constant(0.5)(fnn.random.key(0), (2,))
        tensor([0.5000, 0.5000])
    """

    def init(key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        shape = _as_shape(shape, "fnn.nn.initializers.constant")
        return torch.full(shape, value, dtype=_dtype(dtype), device=key.device)

    return init


def normal(stddev: float = 1e-2) -> Initializer:
    """An initializer drawing from ``N(0, stddev**2)`` (``nn.init.normal_(w, 0, stddev)``).

    Args:
        stddev: the standard deviation.

    Returns:
        ``init(key, shape, dtype=None)`` giving a tensor of ``shape`` and ``dtype``.

    Example:
        >>> import fnn
        >>> normal(1.0)(fnn.random.key(0), (2, 3)).shape
        torch.Size([2, 3])
    """

    def init(key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return _normal(key, shape, _dtype(dtype)) * stddev

    return init


def uniform(scale: float = 1e-2) -> Initializer:
    """An initializer drawing from ``U[0, scale)``, as ``jax.nn.initializers.uniform``.

    Note the JAX convention: the range is ``[0, scale)``, *not* ``[-scale, scale)`` and not
    torch's ``nn.init.uniform_`` default of ``[0, 1)``. For a symmetric range use
    ``variance_scaling(..., distribution="uniform")`` or one of the fan-based initializers.

    Args:
        scale: the upper bound (exclusive).

    Returns:
        ``init(key, shape, dtype=None)`` giving a tensor of ``shape`` and ``dtype``.

    Example:
        >>> import fnn
        >>> w = uniform(2.0)(fnn.random.key(0), (1000,))
        >>> bool((w >= 0).all() and (w < 2).all())
        True
    """

    def init(key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return _uniform(key, shape, _dtype(dtype), 0.0, 1.0) * scale

    return init


def truncated_normal(stddev: float = 1e-2, lower: float = -2.0, upper: float = 2.0) -> Initializer:
    """An initializer drawing ``stddev * z`` for ``z`` a standard normal truncated to
    ``(lower, upper)``, as ``jax.nn.initializers.truncated_normal``.

    ``lower`` and ``upper`` are in units of ``stddev``: this equals
    ``nn.init.trunc_normal_(w, 0, stddev, lower * stddev, upper * stddev)`` in distribution.
    ``stddev`` is the std *before* truncation (the result's std is smaller: about
    ``0.88 * stddev`` for the default ``(-2, 2)``).

    Args:
        stddev: the scale of the untruncated normal.
        lower, upper: truncation bounds, in standard deviations.

    Returns:
        ``init(key, shape, dtype=None)`` giving a tensor of ``shape`` and ``dtype``.

    Example:
        >>> import fnn
        >>> w = truncated_normal(1.0)(fnn.random.key(0), (1000,))
        >>> bool(w.abs().max() < 2)
        True
    """

    def init(key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return _truncated_normal(key, lower, upper, shape, _dtype(dtype)) * stddev

    return init


def variance_scaling(
    scale: float,
    mode: Mode = "fan_in",
    distribution: Distribution = "truncated_normal",
    in_axis: int | Sequence[int] = 1,
    out_axis: int | Sequence[int] = 0,
    batch_axis: int | Sequence[int] = (),
) -> Initializer:
    """An initializer with variance ``scale / n``, ``n`` the fan chosen by ``mode``.

    As ``jax.nn.initializers.variance_scaling`` but with fans in PyTorch's layout by default
    (``in_axis=1, out_axis=0``: weights ``(out, in, *kernel)``; see the module docstring).
    Pass ``in_axis=-2, out_axis=-1`` for JAX's ``(..., in, out)`` layout.

    * ``"truncated_normal"``: normal truncated to two standard deviations, rescaled so the
      variance is exactly ``scale / n`` (std ``sqrt(scale / n) / 0.8796...``, as JAX).
    * ``"normal"``: ``N(0, scale / n)``.
    * ``"uniform"``: ``U[-b, b)`` with ``b = sqrt(3 * scale / n)``.

    Args:
        scale: the variance multiplier (e.g. a gain squared).
        mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"`` (the mean of the two).
        distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.
        in_axis, out_axis, batch_axis: see :func:`compute_fans`.

    Returns:
        ``init(key, shape, dtype=None)``; ``shape`` must have at least 2 dimensions.

    Raises:
        ValueError: for an unknown ``mode``/``distribution`` or a non-positive ``scale``; the
            returned ``init`` raises ``ValueError`` for a shape with fewer than 2 dimensions.

    Example:
        >>> import fnn
        >>> init = variance_scaling(2.0, "fan_in", "uniform")
        >>> w = init(fnn.random.key(0), (64, 3, 3, 3))
        >>> bool(w.abs().max() <= (3 * 2.0 / 27) ** 0.5)
        True
    """
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(
            f"fnn.nn.initializers.variance_scaling: invalid mode {mode!r}; expected "
            "'fan_in', 'fan_out' or 'fan_avg'."
        )
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise ValueError(
            f"fnn.nn.initializers.variance_scaling: invalid distribution {distribution!r}; "
            "expected 'truncated_normal', 'normal' or 'uniform'."
        )
    if not scale > 0:
        raise ValueError(
            f"fnn.nn.initializers.variance_scaling: scale must be positive, got {scale!r}."
        )

    def init(key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        check_key(key, "variance_scaling")
        shape = _as_shape(shape, "fnn.nn.initializers.variance_scaling")
        dtype = _dtype(dtype)
        _check_float(dtype, "variance_scaling")
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis, batch_axis)
        if math.prod(shape) == 0:
            return torch.empty(shape, dtype=dtype, device=key.device)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / n
        if distribution == "truncated_normal":
            std = math.sqrt(variance) / _TRUNC_STD
            return _truncated_normal(key, -2.0, 2.0, shape, dtype) * std
        if distribution == "normal":
            return _normal(key, shape, dtype) * math.sqrt(variance)
        bound = math.sqrt(3.0 * variance)
        return _uniform(key, shape, dtype, -bound, bound)

    return init


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity; equal to ``torch.nn.init.calculate_gain``.

    ============================================  =====================================
    nonlinearity                                  gain
    ============================================  =====================================
    linear, conv{1,2,3}d, conv_transpose{1,2,3}d  1
    sigmoid                                       1
    tanh                                          5/3
    relu                                          sqrt(2)
    leaky_relu                                    sqrt(2 / (1 + negative_slope**2))
    selu                                          3/4
    ============================================  =====================================

    Args:
        nonlinearity: the name of the nonlinearity.
        param: ``leaky_relu``'s negative slope (default 0.01).

    Returns:
        The gain as a float.

    Raises:
        ValueError: for an unknown nonlinearity or an invalid ``param``.

    Example:
        >>> calculate_gain("tanh")
        1.6666666666666667
    """
    linear_fns = [
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
    ]
    if nonlinearity in linear_fns or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif (not isinstance(param, bool) and isinstance(param, int)) or isinstance(param, float):
            negative_slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _torch_mode(mode: str, where: str) -> Mode:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(
            f"fnn.nn.initializers.{where}: mode {mode!r} not supported, expected "
            "'fan_in' or 'fan_out'."
        )
    return mode  # type: ignore[return-value]


def xavier_uniform(
    gain: float = 1.0,
    *,
    in_axis: int | Sequence[int] = 1,
    out_axis: int | Sequence[int] = 0,
    batch_axis: int | Sequence[int] = (),
) -> Initializer:
    """Glorot uniform: ``U[-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    Same distribution as ``torch.nn.init.xavier_uniform_(w, gain)`` and, for ``gain=1``, as
    ``jax.nn.initializers.glorot_uniform`` (with fans in PyTorch's layout).

    Args:
        gain: an optional scaling factor (see :func:`calculate_gain`).
        in_axis, out_axis, batch_axis: see :func:`compute_fans`.

    Returns:
        ``init(key, shape, dtype=None)``; ``shape`` must have at least 2 dimensions.

    Example:
        >>> import fnn
        >>> w = xavier_uniform()(fnn.random.key(0), (20, 10))
        >>> bool(w.abs().max() <= (6 / 30) ** 0.5)
        True
    """
    return variance_scaling(gain**2, "fan_avg", "uniform", in_axis, out_axis, batch_axis)


def xavier_normal(
    gain: float = 1.0,
    *,
    in_axis: int | Sequence[int] = 1,
    out_axis: int | Sequence[int] = 0,
    batch_axis: int | Sequence[int] = (),
) -> Initializer:
    """Glorot normal: ``N(0, std**2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Same distribution as ``torch.nn.init.xavier_normal_(w, gain)`` -- an *untruncated* normal.
    (``jax.nn.initializers.glorot_normal`` truncates; for that use
    ``variance_scaling(gain**2, "fan_avg", "truncated_normal")``.)

    Args:
        gain: an optional scaling factor (see :func:`calculate_gain`).
        in_axis, out_axis, batch_axis: see :func:`compute_fans`.

    Returns:
        ``init(key, shape, dtype=None)``; ``shape`` must have at least 2 dimensions.

    Example:
        >>> import fnn
        >>> xavier_normal()(fnn.random.key(0), (20, 10)).shape
        torch.Size([20, 10])
    """
    return variance_scaling(gain**2, "fan_avg", "normal", in_axis, out_axis, batch_axis)


def kaiming_uniform(
    a: float = 0.0,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    in_axis: int | Sequence[int] = 1,
    out_axis: int | Sequence[int] = 0,
    batch_axis: int | Sequence[int] = (),
) -> Initializer:
    """He uniform: ``U[-b, b)``, ``b = gain * sqrt(3 / fan)``, ``gain = calculate_gain(
    nonlinearity, a)``; same distribution as ``torch.nn.init.kaiming_uniform_``.

    ``kaiming_uniform(a=math.sqrt(5))`` is the default weight init of ``nn.Linear`` and
    ``nn.Conv*d`` (bound ``1 / sqrt(fan_in)``) for weights in PyTorch's layout.

    Args:
        a: the negative slope of the rectifier after this layer (for ``leaky_relu``).
        mode: ``"fan_in"`` (preserve forward variance) or ``"fan_out"`` (backward).
        nonlinearity: a name accepted by :func:`calculate_gain`.
        in_axis, out_axis, batch_axis: see :func:`compute_fans`.

    Returns:
        ``init(key, shape, dtype=None)``; ``shape`` must have at least 2 dimensions.

    Example:
        >>> import fnn, math
        >>> w = kaiming_uniform(a=math.sqrt(5))(fnn.random.key(0), (16, 8, 3, 3))
        >>> bool(w.abs().max() <= 1 / math.sqrt(8 * 9))
        True
    """
    mode = _torch_mode(mode, "kaiming_uniform")
    gain = calculate_gain(nonlinearity, a)
    return variance_scaling(gain**2, mode, "uniform", in_axis, out_axis, batch_axis)


def kaiming_normal(
    a: float = 0.0,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    in_axis: int | Sequence[int] = 1,
    out_axis: int | Sequence[int] = 0,
    batch_axis: int | Sequence[int] = (),
) -> Initializer:
    """He normal: ``N(0, std**2)``, ``std = calculate_gain(nonlinearity, a) / sqrt(fan)``.

    Same distribution as ``torch.nn.init.kaiming_normal_`` -- an *untruncated* normal.
    (``jax.nn.initializers.he_normal`` truncates; for that use
    ``variance_scaling(2.0, "fan_in", "truncated_normal")``.)

    Args:
        a: the negative slope of the rectifier after this layer (for ``leaky_relu``).
        mode: ``"fan_in"`` (preserve forward variance) or ``"fan_out"`` (backward).
        nonlinearity: a name accepted by :func:`calculate_gain`.
        in_axis, out_axis, batch_axis: see :func:`compute_fans`.

    Returns:
        ``init(key, shape, dtype=None)``; ``shape`` must have at least 2 dimensions.

    Example:
        >>> import fnn
        >>> kaiming_normal(nonlinearity="relu")(fnn.random.key(0), (16, 8)).shape
        torch.Size([16, 8])
    """
    mode = _torch_mode(mode, "kaiming_normal")
    gain = calculate_gain(nonlinearity, a)
    return variance_scaling(gain**2, mode, "normal", in_axis, out_axis, batch_axis)


def lecun_uniform(
    *,
    in_axis: int | Sequence[int] = 1,
    out_axis: int | Sequence[int] = 0,
    batch_axis: int | Sequence[int] = (),
) -> Initializer:
    """LeCun uniform: ``U[-b, b)``, ``b = sqrt(3 / fan_in)``, as JAX's ``lecun_uniform``.

    Equal in distribution to ``torch.nn.init.kaiming_uniform_(w, nonlinearity="linear")``.

    Args:
        in_axis, out_axis, batch_axis: see :func:`compute_fans`.

    Returns:
        ``init(key, shape, dtype=None)``; ``shape`` must have at least 2 dimensions.

    Example:
        >>> import fnn
        >>> w = lecun_uniform()(fnn.random.key(0), (10, 12))
        >>> bool(w.abs().max() <= 0.5)
        True
    """
    return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis, batch_axis)


def lecun_normal(
    *,
    in_axis: int | Sequence[int] = 1,
    out_axis: int | Sequence[int] = 0,
    batch_axis: int | Sequence[int] = (),
) -> Initializer:
    """LeCun normal, as JAX's ``lecun_normal``: a normal truncated to two standard deviations,
    rescaled to variance ``1 / fan_in``.

    (torch has no twin; ``kaiming_normal(nonlinearity="linear")`` is the untruncated one.)

    Args:
        in_axis, out_axis, batch_axis: see :func:`compute_fans`.

    Returns:
        ``init(key, shape, dtype=None)``; ``shape`` must have at least 2 dimensions.

    Example:
        >>> import fnn
        >>> lecun_normal()(fnn.random.key(0), (10, 12)).shape
        torch.Size([10, 12])
    """
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis)


def orthogonal(scale: float = 1.0, column_axis: int = -1) -> Initializer:
    """A (semi-)orthogonal initializer, as ``jax.nn.initializers.orthogonal``.

    The shape is viewed as a matrix with ``shape[column_axis]`` columns and the product of the
    other axes as rows; that matrix has orthonormal rows (if rows <= columns) or orthonormal
    columns (otherwise), times ``scale``, and is Haar-distributed.

    For a 2-D ``(out, in)`` weight the default equals ``torch.nn.init.orthogonal_(w, scale)``
    in distribution. torch views a conv weight as ``(out, in * prod(kernel))``; to get that
    (transposed, which is the same orthogonality condition) pass ``column_axis=0``.

    Args:
        scale: the gain multiplying the orthogonal matrix.
        column_axis: the axis that indexes columns.

    Returns:
        ``init(key, shape, dtype=None)``; ``shape`` must have at least 2 dimensions.

    Example:
        >>> import fnn
        >>> w = orthogonal()(fnn.random.key(0), (3, 5))
        >>> torch.allclose(w @ w.T, torch.eye(3), atol=1e-5)
        True
    """

    def init(key: torch.Tensor, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        check_key(key, "orthogonal")
        shape = _as_shape(shape, "fnn.nn.initializers.orthogonal")
        dtype = _dtype(dtype)
        _check_float(dtype, "orthogonal")
        if len(shape) < 2:
            raise ValueError(
                "fnn.nn.initializers.orthogonal: needs a shape with at least 2 dimensions, "
                f"got shape {shape!r}."
            )
        (axis,) = _norm_axes(column_axis, len(shape), shape)
        if math.prod(shape) == 0:
            return torch.empty(shape, dtype=dtype, device=key.device)
        n_cols = shape[axis]
        n_rows = math.prod(shape) // n_cols
        q = _orthogonal(key, n_rows, (), dtype, n_cols)  # (n_rows, n_cols)
        rest = tuple(d for i, d in enumerate(shape) if i != axis)
        q = q.reshape(*rest, n_cols).movedim(-1, axis)
        return (q * scale).contiguous()

    return init


glorot_uniform: Callable[..., Initializer] = xavier_uniform
glorot_normal: Callable[..., Initializer] = xavier_normal
he_uniform: Callable[..., Initializer] = kaiming_uniform
he_normal: Callable[..., Initializer] = kaiming_normal
