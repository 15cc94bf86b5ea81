"""Samplers over PRNG keys, following ``jax.random``'s algorithms step for step.

``uniform`` and ``bernoulli`` are bit-identical to JAX (eager); samplers that go through a
transcendental function (``normal`` through ``erfinv``, ``gumbel`` through ``log``, ...) use
torch's implementation of that function, so they agree with JAX to float tolerance.
Integer samplers (``randint``, ``permutation``, ``choice`` without probabilities) are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fnn._src.prng import Shape, _as_shape, bits32, check_key, hash_shape, split

__all__ = [
    "bernoulli",
    "categorical",
    "choice",
    "exponential",
    "gumbel",
    "normal",
    "orthogonal",
    "permutation",
    "randint",
    "truncated_normal",
    "uniform",
]

Number = int | float
TensorLike = torch.Tensor | Number


def _float_dtype(dtype: torch.dtype | None, where: str) -> torch.dtype:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"fnn.random.{where}: expected a floating dtype, got {dtype}.")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(
            f"fnn.random.{where}: expected float16, bfloat16, float32 or float64, got {dtype}."
        )
    return dtype


def _unit_floats(key: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uniform floats in ``[0, 1)``: random mantissa bits under an exponent of one, minus one."""
    if dtype == torch.float64:
        x0, x1 = hash_shape(key, shape)
        b = (x0.to(torch.int64) << 32) | (x1.to(torch.int64) & 0xFFFFFFFF)
        b = (b >> 12) & ((1 << 52) - 1)
        b |= 0x3FF0000000000000
        f = b.view(torch.float64)
    else:
        b = bits32(key, shape)
        if dtype == torch.float32:
            b >>= 9
            b &= (1 << 23) - 1
            b |= 0x3F800000
            f = b.view(torch.float32)
        elif dtype == torch.float16:
            b &= 0xFFFF
            b >>= 6
            b |= 0x3C00
            f = b.to(torch.int16).view(torch.float16)
        else:  # bfloat16: JAX draws 8 bits when the mantissa has fewer than 8.
            b &= 0xFF
            b >>= 1
            b |= 0x3F80
            f = b.to(torch.int16).view(torch.bfloat16)
    return f - 1.0


def _bound(value: TensorLike, dtype: torch.dtype, device: torch.device, name: str, where: str):
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"fnn.random.{where}: expected `{name}` to be a number or a tensor, "
            f"got {type(value).__name__}."
        )
    return torch.tensor(value, dtype=dtype, device=device)


def _check_broadcast(shape: tuple[int, ...], where: str, **operands: torch.Tensor) -> None:
    for name, t in operands.items():
        try:
            ok = torch.broadcast_shapes(tuple(t.shape), shape) == shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"fnn.random.{where}: `{name}` of shape {tuple(t.shape)} does not broadcast to "
                f"the requested shape {shape}."
            )


def uniform(
    key: torch.Tensor,
    shape: Shape = (),
    dtype: torch.dtype | None = None,
    minval: TensorLike = 0.0,
    maxval: TensorLike = 1.0,
) -> torch.Tensor:
    """Uniform floats in ``[minval, maxval)``, bit-identical to ``jax.random.uniform``.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        shape: the output shape.
        dtype: float16, bfloat16, float32 or float64 (default: torch's default dtype).
        minval, maxval: bounds, numbers or tensors broadcastable to ``shape``.

    Returns:
        A tensor of ``shape`` and ``dtype`` on the key's device.

    Example:
        >>> import fnn
        >>> fnn.random.uniform(fnn.random.key(0), (3,))
        tensor([0.9477, 0.9786, 0.3323])
    """
    check_key(key, "uniform")
    shape = _as_shape(shape, "uniform")
    dtype = _float_dtype(dtype, "uniform")
    f = _unit_floats(key, shape, dtype)
    default = (
        not isinstance(minval, torch.Tensor)
        and not isinstance(maxval, torch.Tensor)
        and minval == 0.0
        and maxval == 1.0
    )
    if default:
        return f
    lo = _bound(minval, dtype, key.device, "minval", "uniform")
    hi = _bound(maxval, dtype, key.device, "maxval", "uniform")
    _check_broadcast(shape, "uniform", minval=lo, maxval=hi)
    span = hi - lo
    if dtype == torch.float32 and not _is_power_of_two(minval, maxval, dtype):
        # XLA fuses `f * span + lo` into one FMA (a single rounding) for float32. The product
        # is exact in float64, so computing there and rounding back reproduces it (barring a
        # double-rounding tie, about one value in 2**29). A power-of-two span makes the
        # product exact, so the cheap path below is already fused-exact.
        f = torch.addcmul(lo.double(), f.double(), span.double()).to(dtype)
    else:
        # float16/bfloat16 match JAX with two roundings; float64 (JAX with x64 fuses) may
        # differ from JAX in the last bit when the span is not a power of two.
        f = f * span
        f += lo
    return torch.maximum(lo, f)


def _is_power_of_two(minval: TensorLike, maxval: TensorLike, dtype: torch.dtype) -> bool:
    """Whether the span of two *number* bounds, rounded to ``dtype``, is a power of two."""
    if isinstance(minval, torch.Tensor) or isinstance(maxval, torch.Tensor):
        return False
    span = float(torch.tensor(maxval, dtype=dtype) - torch.tensor(minval, dtype=dtype))
    if not math.isfinite(span) or span <= 0:
        return False
    return math.frexp(span)[0] == 0.5


def normal(key: torch.Tensor, shape: Shape = (), dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal samples, ``sqrt(2) * erfinv(u)`` for ``u`` uniform in ``(-1, 1)`` as in JAX.

    Equal to ``jax.random.normal`` within float tolerance (torch's ``erfinv`` is not XLA's).

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        shape: the output shape.
        dtype: float16, bfloat16, float32 or float64 (default: torch's default dtype).

    Returns:
        A tensor of ``shape`` and ``dtype`` on the key's device.

    Example:
        >>> import fnn
        >>> fnn.random.normal(fnn.random.key(0), (2, 3)).shape
        torch.Size([2, 3])
    """
    check_key(key, "normal")
    shape = _as_shape(shape, "normal")
    dtype = _float_dtype(dtype, "normal")
    lo = -(1.0 - torch.finfo(dtype).eps / 2)  # the float just above -1, exactly representable
    u = uniform(key, shape, dtype, lo, 1.0)
    u = _erfinv(u)
    u *= math.sqrt(2.0)
    return u


# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), single precision:
# the polynomial XLA evaluates for float32.
_GILES_CENTRAL = (
    2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
    -0.00125372503, -0.00417768164, 0.246640727, 1.50140941,
)  # fmt: skip
_GILES_TAIL = (
    -0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
    -0.0076224613, 0.00943887047, 1.00167406, 2.83297682,
)  # fmt: skip


def _erfinv(x: torch.Tensor) -> torch.Tensor:
    """``erfinv`` for ``|x| < 1``: torch's kernel eagerly, Giles' polynomial when compiled.

    Inductor evaluates ``torch.erfinv`` one element at a time (8x slower than the eager
    kernel); the polynomial vectorises and is also what XLA computes for float32.
    """
    if not (torch.compiler.is_compiling() and x.dtype == torch.float32):
        return torch.erfinv(x)
    w = -torch.log1p(-x * x)
    central = w - 2.5
    tail = torch.sqrt(w) - 3.0
    p_central = torch.full_like(x, _GILES_CENTRAL[0])
    for c in _GILES_CENTRAL[1:]:
        p_central = p_central * central + c
    p_tail = torch.full_like(x, _GILES_TAIL[0])
    for c in _GILES_TAIL[1:]:
        p_tail = p_tail * tail + c
    return torch.where(w < 5.0, p_central, p_tail) * x


def truncated_normal(
    key: torch.Tensor,
    lower: TensorLike = -2.0,
    upper: TensorLike = 2.0,
    shape: Shape | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal samples truncated to the open interval ``(lower, upper)``, as in JAX.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        lower, upper: bounds (numbers or tensors); samples lie strictly between them.
        shape: the output shape (default: the broadcast shape of ``lower`` and ``upper``).
        dtype: float16, bfloat16, float32 or float64 (default: torch's default dtype).

    Returns:
        A tensor of ``shape`` and ``dtype``; equal to ``jax.random.truncated_normal`` within
        float tolerance.

    Example:
        >>> import fnn
        >>> x = fnn.random.truncated_normal(fnn.random.key(0), -1.0, 1.0, (1000,))
        >>> bool((x > -1).all() and (x < 1).all())
        True
    """
    check_key(key, "truncated_normal")
    dtype = _float_dtype(dtype, "truncated_normal")
    lo = _bound(lower, dtype, key.device, "lower", "truncated_normal")
    hi = _bound(upper, dtype, key.device, "upper", "truncated_normal")
    if shape is None:
        shape = torch.broadcast_shapes(lo.shape, hi.shape)
    shape = _as_shape(shape, "truncated_normal")
    _check_broadcast(shape, "truncated_normal", lower=lo, upper=hi)
    sqrt2 = torch.tensor(math.sqrt(2.0), dtype=dtype, device=key.device)
    a = torch.erf(lo / sqrt2)
    b = torch.erf(hi / sqrt2)
    u = uniform(key, shape, dtype, a, b)
    out = sqrt2 * _erfinv(u)
    inf = torch.tensor(math.inf, dtype=dtype, device=key.device)
    return torch.clamp(out, torch.nextafter(lo, inf), torch.nextafter(hi, -inf))


def bernoulli(key: torch.Tensor, p: TensorLike = 0.5, shape: Shape | None = None) -> torch.Tensor:
    """Booleans that are ``True`` with probability ``p``, bit-identical to ``jax.random.bernoulli``.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        p: the probability, a number or a floating tensor broadcastable to ``shape``. The
            uniform draw it is compared with has ``p``'s dtype (torch's default for numbers).
        shape: the output shape (default: ``p``'s shape).

    Returns:
        A ``torch.bool`` tensor of ``shape``.

    Example:
        >>> import fnn
        >>> fnn.random.bernoulli(fnn.random.key(0), 0.5, (5,))
        tensor([False, False,  True,  True, False])
    """
    check_key(key, "bernoulli")
    if isinstance(p, torch.Tensor):
        if not p.dtype.is_floating_point:
            raise TypeError(f"fnn.random.bernoulli: expected a floating `p`, got {p.dtype}.")
        p = p.to(key.device)
    else:
        p = _bound(p, torch.get_default_dtype(), key.device, "p", "bernoulli")
    shape = tuple(p.shape) if shape is None else _as_shape(shape, "bernoulli")
    _check_broadcast(shape, "bernoulli", p=p)
    return uniform(key, shape, p.dtype) < p


_RANDINT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)
_INT32 = torch.iinfo(torch.int32)


def randint(
    key: torch.Tensor,
    shape: Shape,
    minval: int | torch.Tensor,
    maxval: int | torch.Tensor,
    dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """Integers uniform in ``[minval, maxval)``, equal to ``jax.random.randint``.

    Follows JAX's algorithm exactly: two draws of 32 random bits combined modulo the span
    (which keeps the bias small when the span is not a power of two); ``maxval <= minval``
    gives ``minval``. Narrow dtypes sample in 32 bits with the bounds clipped to the dtype's
    range (``randint(k, s, 0, 256, torch.uint8)`` covers every byte), as in JAX.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        shape: the output shape.
        minval, maxval: ints or integer tensors broadcastable to ``shape``.
        dtype: int8, uint8, int16, int32 or int64 (default int64, torch's index type).
            int64 draws equal JAX's int32 draws (JAX's default without ``jax_enable_x64``), so
            their bounds must lie in ``[-2**31, 2**31]``: Python-int bounds outside raise, and
            tensor bounds are clipped to it, as JAX clips int32 bounds.

    Returns:
        A tensor of ``shape`` and ``dtype`` on the key's device.

    Example:
        >>> import fnn
        >>> fnn.random.randint(fnn.random.key(0), (6,), 0, 10)
        tensor([9, 0, 2, 3, 1, 7])
    """
    check_key(key, "randint")
    shape = _as_shape(shape, "randint")
    if dtype not in _RANDINT_DTYPES:
        raise TypeError(
            f"fnn.random.randint: expected dtype int8, uint8, int16, int32 or int64, got {dtype}."
        )
    if dtype == torch.int64:
        for name, v in (("minval", minval), ("maxval", maxval)):
            if isinstance(v, int) and not _INT32.min <= v <= _INT32.max + 1:
                raise ValueError(
                    f"fnn.random.randint: int64 draws use JAX's 32-bit algorithm, so `{name}` "
                    f"must lie in [{_INT32.min}, {_INT32.max + 1}]; got {v}."
                )
    device = key.device

    def as_int64(v: int | torch.Tensor, name: str) -> torch.Tensor:
        if isinstance(v, torch.Tensor):
            if v.dtype.is_floating_point:
                v = v.trunc()
            return v.to(device=device, dtype=torch.int64)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(
                f"fnn.random.randint: expected `{name}` to be an int or an integer tensor, "
                f"got {type(v).__name__}."
            )
        return torch.tensor(int(v), dtype=torch.int64, device=device)

    lo = as_int64(minval, "minval")
    hi = as_int64(maxval, "maxval")
    _check_broadcast(shape, "randint", minval=lo, maxval=hi)
    if dtype in (torch.int32, torch.int64):
        out_of_range = hi > _INT32.max
        lo = lo.clamp(_INT32.min, _INT32.max)
        hi = hi.clamp(_INT32.min, _INT32.max)
    else:  # JAX samples narrow dtypes in int32, with maxval allowed one past the dtype's max.
        info = torch.iinfo(dtype)
        lo = lo.clamp(info.min, info.max)
        hi = hi.clamp(info.min, info.max + 1)
        out_of_range = torch.zeros_like(hi, dtype=torch.bool)

    mask = 0xFFFFFFFF
    k1, k2 = split(key)
    higher = bits32(k1, shape).to(torch.int64) & mask
    lower = bits32(k2, shape).to(torch.int64) & mask
    # The rest is JAX's uint32 arithmetic, done in int64 and reduced modulo 2**32 where
    # uint32 would wrap.
    span = (hi - lo) & mask
    span = torch.where(hi <= lo, torch.ones_like(span), span)
    span = torch.where(out_of_range & (hi > lo), (span + 1) & mask, span)
    # An unsigned remainder by a span that wrapped to 0 leaves its operand unchanged (XLA).
    span = torch.where(span == 0, torch.full_like(span, 1 << 32), span)
    multiplier = (1 << 16) % span  # 2**32 % span, as JAX computes it in uint32
    multiplier = ((multiplier * multiplier) & mask) % span
    offset = (((higher % span) * multiplier) & mask) + (lower % span)
    offset = (offset & mask) % span
    return (lo + offset).to(dtype)


def _sort_keys(key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return bits32(key, shape).to(torch.int64) & 0xFFFFFFFF


def _shuffle(key: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """JAX's shuffle: rounds of a stable sort along ``axis`` by random 32-bit keys."""
    n = x.numel()
    rounds = math.ceil(3 * math.log(max(1, n)) / math.log(2**32 - 1))
    for _ in range(rounds):
        key, subkey = split(key)
        order = torch.sort(_sort_keys(subkey, tuple(x.shape)), dim=axis, stable=True).indices
        x = torch.take_along_dim(x, order, dim=axis)
    return x


def _axis(axis: int, ndim: int, where: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"fnn.random.{where}: axis {axis} is out of range for {ndim} dims.")
    return axis % ndim


def permutation(
    key: torch.Tensor, x: int | torch.Tensor, axis: int = 0, independent: bool = False
) -> torch.Tensor:
    """A random permutation of ``range(x)`` or of ``x`` along ``axis``, equal to JAX's.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        x: an int ``n`` (permute ``arange(n)``, int64) or a tensor of any shape.
        axis: the axis to permute along.
        independent: if True, each slice along ``axis`` is shuffled independently;
            otherwise whole slices move together.

    Returns:
        A tensor: shape ``(n,)`` for an int, else ``x``'s shape and dtype.

    Example:
        >>> import fnn
        >>> fnn.random.permutation(fnn.random.key(0), 6)
        tensor([0, 1, 5, 4, 3, 2])
    """
    check_key(key, "permutation")
    if isinstance(x, int) and not isinstance(x, bool):
        if x < 0:
            raise ValueError(f"fnn.random.permutation: expected n >= 0, got {x}.")
        return _shuffle(key, torch.arange(x, device=key.device), 0)
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"fnn.random.permutation: expected an int or a tensor, got {type(x).__name__}."
        )
    if x.ndim == 0:
        raise ValueError(
            "fnn.random.permutation: expected an int or a tensor with at least one dim, got a "
            "0-d tensor; pass int(n) to permute range(n)."
        )
    axis = _axis(axis, x.ndim, "permutation")
    if independent or x.ndim == 1:
        return _shuffle(key, x, axis)
    order = _shuffle(key, torch.arange(x.shape[axis], device=x.device), 0)
    return torch.index_select(x, axis, order)


def gumbel(key: torch.Tensor, shape: Shape = (), dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard Gumbel samples, ``-log(-log(u))`` with ``u`` uniform in ``[tiny, 1)`` as in JAX.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        shape: the output shape.
        dtype: a floating dtype (default: torch's default dtype).

    Returns:
        A tensor of ``shape`` and ``dtype``.

    Example:
        >>> import fnn
        >>> fnn.random.gumbel(fnn.random.key(0), (2,)).shape
        torch.Size([2])
    """
    check_key(key, "gumbel")
    dtype = _float_dtype(dtype, "gumbel")
    u = uniform(key, shape, dtype, torch.finfo(dtype).tiny, 1.0)
    return -torch.log(-torch.log(u))


def exponential(
    key: torch.Tensor, shape: Shape = (), dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Standard exponential samples, ``-log1p(-u)`` with ``u`` uniform in ``[0, 1)`` as in JAX.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        shape: the output shape.
        dtype: a floating dtype (default: torch's default dtype).

    Returns:
        A tensor of ``shape`` and ``dtype``, all values ``>= 0``.

    Example:
        >>> import fnn
        >>> bool((fnn.random.exponential(fnn.random.key(0), (100,)) >= 0).all())
        True
    """
    check_key(key, "exponential")
    dtype = _float_dtype(dtype, "exponential")
    u = uniform(key, shape, dtype)
    return -torch.log1p(-u)


def categorical(
    key: torch.Tensor,
    logits: torch.Tensor,
    axis: int = -1,
    shape: Shape | None = None,
    replace: bool = True,
) -> torch.Tensor:
    """Sample category indices from unnormalised log-probabilities (Gumbel-max), as in JAX.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        logits: a floating tensor; ``axis`` indexes the categories, the other dims are a batch.
        axis: the category axis.
        shape: the output shape: ``(*sample_shape, *batch_shape)``, where ``batch_shape`` is
            ``logits``'s shape without ``axis`` (the default is ``batch_shape``).
        replace: draw with replacement (Gumbel-max) or without (Gumbel-top-k, which needs
            ``prod(sample_shape) <=`` the number of categories).

    Returns:
        An int64 tensor of ``shape``.

    Example:
        >>> import fnn
        >>> logits = torch.log(torch.tensor([0.1, 0.0, 0.9]))
        >>> fnn.random.categorical(fnn.random.key(0), logits, shape=(8,)).tolist()
        [0, 2, 2, 2, 2, 2, 2, 2]
    """
    check_key(key, "categorical")
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError("fnn.random.categorical: expected `logits` to be a floating tensor.")
    if logits.ndim == 0:
        raise ValueError(
            "fnn.random.categorical: `logits` needs a category axis, got a 0-d tensor."
        )
    axis = _axis(axis, logits.ndim, "categorical")
    batch_shape = tuple(logits.shape[:axis] + logits.shape[axis + 1 :])
    shape = batch_shape if shape is None else _as_shape(shape, "categorical")
    if len(shape) < len(batch_shape) or shape[len(shape) - len(batch_shape) :] != batch_shape:
        raise ValueError(
            f"fnn.random.categorical: `shape` {shape} must end with the batch shape "
            f"{batch_shape} of `logits` (its shape {tuple(logits.shape)} without axis {axis})."
        )
    prefix = shape[: len(shape) - len(batch_shape)]
    if replace:
        noise_shape = (*prefix, *logits.shape)
        g = gumbel(key, noise_shape, logits.dtype)
        return torch.argmax(g + logits, dim=len(prefix) + axis)
    k = math.prod(prefix)
    if k > logits.shape[axis]:
        raise ValueError(
            f"fnn.random.categorical: cannot draw {k} samples without replacement from "
            f"{logits.shape[axis]} categories."
        )
    perturbed = logits + gumbel(key, tuple(logits.shape), logits.dtype)
    idx = torch.topk(torch.movedim(perturbed, axis, -1), k).indices  # (*batch, k)
    return torch.movedim(idx, -1, 0).reshape(shape)


def choice(
    key: torch.Tensor,
    a: int | torch.Tensor,
    shape: Sequence[int] = (),
    replace: bool = True,
    p: torch.Tensor | None = None,
    axis: int = 0,
) -> torch.Tensor:
    """Random samples from ``range(a)`` or from the slices of ``a`` along ``axis``, as in JAX.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        a: an int ``n`` (sample from ``range(n)``) or a tensor (sample its slices).
        shape: the sample shape.
        replace: sample with replacement.
        p: optional probabilities of each entry, shape ``(n,)``.
        axis: the axis of ``a`` to sample along.

    Returns:
        For an int, an int64 tensor of ``shape``; for a tensor, ``a.shape`` with ``axis``
        replaced by ``shape``.

    Example:
        >>> import fnn
        >>> fnn.random.choice(fnn.random.key(0), 10, (3,), replace=False)
        tensor([0, 1, 8])
    """
    check_key(key, "choice")
    shape = _as_shape(shape, "choice")
    if isinstance(a, int) and not isinstance(a, bool):
        arr, n = None, a
    elif isinstance(a, torch.Tensor) and a.ndim > 0:
        axis = _axis(axis, a.ndim, "choice")
        arr, n = a, a.shape[axis]
    else:
        raise TypeError(
            "fnn.random.choice: expected `a` to be an int or a tensor with at least one dim, "
            f"got {type(a).__name__}."
        )
    draws = math.prod(shape)
    out_shape = shape if arr is None else (*arr.shape[:axis], *shape, *arr.shape[axis + 1 :])
    if draws == 0:
        dtype = torch.int64 if arr is None else arr.dtype
        return torch.zeros(out_shape, dtype=dtype, device=key.device)
    if n <= 0:
        raise ValueError(f"fnn.random.choice: cannot sample from an empty population (n={n}).")
    if not replace and draws > n:
        raise ValueError(
            f"fnn.random.choice: cannot take {draws} samples without replacement from {n}."
        )
    if p is None:
        if replace:
            ind = randint(key, shape, 0, n)
        else:
            perm = permutation(key, n if arr is None else arr, axis)
            if arr is None:
                return perm[:draws].reshape(shape)
            return torch.narrow(perm, axis, 0, draws).reshape(out_shape)
    else:
        if not isinstance(p, torch.Tensor):
            p = torch.as_tensor(p, dtype=torch.get_default_dtype())
        if not p.dtype.is_floating_point:
            p = p.to(torch.get_default_dtype())
        p = p.to(key.device)
        if tuple(p.shape) != (n,):
            raise ValueError(
                f"fnn.random.choice: `p` must have shape ({n},) to match the population, "
                f"got {tuple(p.shape)}."
            )
        if replace:
            cum = torch.cumsum(p, 0)
            r = cum[-1] * (1 - uniform(key, shape, dtype=cum.dtype))
            ind = torch.searchsorted(cum, r.reshape(-1)).reshape(shape)
        else:
            g = gumbel(key, (n,), dtype=p.dtype) + torch.log(p)
            ind = torch.topk(g, draws).indices.reshape(shape)
    if arr is None:
        return ind
    return torch.index_select(arr, axis, ind.reshape(-1)).reshape(out_shape)


def orthogonal(
    key: torch.Tensor,
    n: int,
    shape: Shape = (),
    dtype: torch.dtype | None = None,
    m: int | None = None,
) -> torch.Tensor:
    """Matrices with orthonormal columns (or rows), Haar-distributed, as ``jax.random.orthogonal``.

    QR of a normal matrix, with the signs fixed by ``R``'s diagonal so the result is unique.

    Args:
        key: a PRNG key, ``torch.uint32`` of shape ``(2,)``.
        n: the number of rows.
        shape: a batch shape.
        dtype: a floating dtype (default: torch's default dtype).
        m: the number of columns (default ``n``).

    Returns:
        A tensor of shape ``(*shape, n, m)``.

    Example:
        >>> import fnn
        >>> q = fnn.random.orthogonal(fnn.random.key(0), 3)
        >>> torch.allclose(q @ q.T, torch.eye(3), atol=1e-5)
        True
    """
    check_key(key, "orthogonal")
    shape = _as_shape(shape, "orthogonal")
    dtype = _float_dtype(dtype, "orthogonal")
    m = n if m is None else m
    z = normal(key, (*shape, max(n, m), min(n, m)), dtype)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    q, r = torch.linalg.qr(z.to(compute))
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    x = (q * torch.sign(d).unsqueeze(-2)).to(dtype)
    return x.mT if n < m else x
