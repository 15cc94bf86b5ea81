"""Normalization layers: batch, instance, layer, group, RMS and local response normalization.

Each layer is the twin of the ``torch.nn`` layer of the same name, with the feature/channel count
inferred from the input. The ``num_features`` / ``num_channels`` / ``normalized_shape`` arguments
of torch are optional here and keep torch's position, so ``BatchNorm2d(64, eps=1e-3)`` written
for torch still means the same thing (the count is then checked against the input).

BatchNorm (and InstanceNorm with ``track_running_stats=True``) keep their running statistics in
the *state*: ``y, state = model.apply(params, x, state=state, train=True)`` returns the updated
statistics instead of writing into buffers; the given ``state`` is never modified. The update is
torch's: ``new = momentum * batch_stat + (1 - momentum) * old`` with the unbiased batch variance,
and ``momentum=None`` (BatchNorm) for the cumulative average ``1 / num_batches_tracked``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fnn._src.initializers import Initializer, ones, zeros
from fnn._src.tracing import plain_eager
from fnn.nn._module import Module, Scope, _join, _where, meta_like

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "LocalResponseNorm",
    "RMSNorm",
]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _shape_of(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def _check_count(
    module: Module, scope: Scope, name: str, given: int | None, got: int, dim: str
) -> None:
    """Check an optional configured count (``num_features=64``) against the inferred one."""
    if given is not None and given != got:
        raise ValueError(
            f"{_where(module, scope.path)}: {name}={given} was given, but the input has "
            f"{got} channels ({dim}). Leave {name} out to infer it from the input."
        )


def _affine(
    module: Module, scope: Scope, c: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``weight`` and ``bias`` of shape ``(c,)`` when ``module.affine`` (torch: ones, zeros)."""
    if not module.affine:
        return None, None
    w = scope.param("weight", (c,), module.weight_init or ones)
    b = scope.param("bias", (c,), module.bias_init or zeros) if module.bias else None
    return w, b


def _stats_dtype(x: torch.Tensor, w: torch.Tensor | None) -> torch.dtype:
    """The dtype of new running statistics: the parameters', else the input's floating dtype."""
    if w is not None:
        return w.dtype
    return x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()


def _running_stats(
    module: Module, scope: Scope, c: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The state entries ``running_mean``, ``running_var``, ``num_batches_tracked`` (torch's)."""
    rm = scope.get_state("running_mean", lambda: torch.zeros(c, dtype=dtype))
    rv = scope.get_state("running_var", lambda: torch.ones(c, dtype=dtype))
    nbt = scope.get_state("num_batches_tracked", lambda: torch.zeros((), dtype=torch.long))
    for name, value in (("running_mean", rm), ("running_var", rv)):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (c,):
            raise ValueError(
                f"{_where(module, scope.path)}: state '{_join(scope.path, name)}' has "
                f"{_shape_of(value)}, expected shape ({c},) for an input with {c} channels. "
                "Was the state made by init on inputs with this many channels?"
            )
    return rm, rv, nbt


def _momentum_update(
    old: torch.Tensor, new: torch.Tensor, momentum: float | torch.Tensor
) -> torch.Tensor:
    """Torch's running-statistic update ``momentum * new + (1 - momentum) * old``."""
    return momentum * new.to(old.dtype) + (1 - momentum) * old


# --------------------------------------------------------------------------------------------
# BatchNorm
# --------------------------------------------------------------------------------------------


class _BatchNorm(Module):
    """Shared implementation of BatchNorm1d/2d/3d; see :class:`BatchNorm2d`."""

    num_features: int | None = None
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    bias: bool = True
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    # Class attributes (not annotated, so not fields): accepted input ranks, their layout.
    _ndims = ()
    _layout = ""

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        where = _where(self, scope.path)
        if not isinstance(x, torch.Tensor) or x.ndim not in self._ndims:
            raise ValueError(
                f"{where}: expected input of shape {self._layout}, got {_shape_of(x)}."
            )
        c = x.shape[1]
        _check_count(self, scope, "num_features", self.num_features, c, "x.shape[1]")
        w, b = _affine(self, scope, c)
        batch_stats = scope.train or not self.track_running_stats
        if batch_stats and x.shape[0] * math.prod(x.shape[2:]) == 1:
            raise ValueError(
                f"{where}: expected more than 1 value per channel to compute batch statistics, "
                f"got input of shape {tuple(x.shape)} (batch size 1 and no spatial extent). "
                + (
                    "Use a batch of 2 or more, or apply with train=False (running statistics)."
                    if self.track_running_stats
                    else "Use a batch of 2 or more (track_running_stats=False: batch statistics "
                    "are used in eval mode too)."
                )
            )
        if x.is_meta:  # init's shape pass: make the state, skip torch's slow meta kernels
            if self.track_running_stats:
                _running_stats(self, scope, c, _stats_dtype(x, w))
            return meta_like(x)
        if not self.track_running_stats:
            return F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
        rm, rv, nbt = _running_stats(self, scope, c, _stats_dtype(x, w))
        if not scope.train:
            return F.batch_norm(x, rm, rv, w, b, False, 0.0, self.eps)
        nbt_new = nbt + 1
        if plain_eager() and rm.dtype == rv.dtype == x.dtype:
            # Eager: torch's kernel updates the running statistics it is given in the same pass
            # over x that computes the batch statistics; it gets copies, so the old state stays
            # intact, with no second var_mean pass over x.
            m = self.momentum if self.momentum is not None else 1.0 / float(nbt_new)
            rm, rv = rm.clone(), rv.clone()
            y = F.batch_norm(x, rm, rv, w, b, True, m, self.eps)
            scope.put_state("running_mean", rm)
            scope.put_state("running_var", rv)
            scope.put_state("num_batches_tracked", nbt_new)
            return y
        # Traced or batched: normalise with the batch statistics (torch's kernel, so torch's
        # output and gradients), and compute the new running statistics functionally.
        y = F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
        nbt = nbt_new
        momentum = self.momentum if self.momentum is not None else 1.0 / nbt.to(rm.dtype)
        dims = (0, *range(2, x.ndim))
        var, mean = torch.var_mean(x.detach(), dim=dims, correction=1)
        scope.put_state("running_mean", _momentum_update(rm, mean, momentum))
        scope.put_state("running_var", _momentum_update(rv, var, momentum))
        scope.put_state("num_batches_tracked", nbt)
        return y


_BN_DOC = """
    Args:
        num_features: the number of channels ``C``; optional (inferred from ``x.shape[1]``),
            checked against the input when given.
        eps: added to the variance for numerical stability.
        momentum: the weight of the batch statistic in the running average; ``None`` for the
            cumulative average (``1 / num_batches_tracked``).
        affine: whether to learn ``weight`` and ``bias`` (torch's init: ones and zeros).
        track_running_stats: whether to keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked`` in the state. Without them, batch statistics are used in
            train and eval mode and the layer keeps no state.
        bias: with ``affine``, whether to learn ``bias``.
        weight_init, bias_init: initializers of ``weight`` and ``bias`` (default: ones, zeros).

    In train mode the output is normalised with the batch statistics (mean and biased variance
    over all dims but ``C``) and the returned state holds the updated running statistics
    (unbiased variance) and ``num_batches_tracked + 1``. In eval mode the running statistics
    are used and the state is returned unchanged. ``apply`` needs ``state=`` (from ``init``)
    unless ``track_running_stats=False``.
"""


class BatchNorm1d(_BatchNorm):
    """Batch normalization over ``(N, C)`` or ``(N, C, L)``, the twin of ``torch.nn.BatchNorm1d``.
    {doc}
    Shapes:
        input ``(N, C)`` or ``(N, C, L)``, output the same; ``weight (C,)``, ``bias (C,)``;
        state ``running_mean (C,)``, ``running_var (C,)``, ``num_batches_tracked ()`` (int64).

    Example:
        >>> import fnn, torch
        >>> bn = fnn.nn.BatchNorm1d()
        >>> x = torch.randn(8, 3)
        >>> params, state = bn.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), (params, state))
        ({'weight': (3,), 'bias': (3,)},
         {'running_mean': (3,), 'running_var': (3,), 'num_batches_tracked': ()})
        >>> y, state = bn.apply(params, x, state=state, train=True)
        >>> int(state["num_batches_tracked"])
        1
    """

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization over ``(N, C, H, W)``, the twin of ``torch.nn.BatchNorm2d``.
    {doc}
    Shapes:
        input ``(N, C, H, W)``, output the same; ``weight (C,)``, ``bias (C,)``; state
        ``running_mean (C,)``, ``running_var (C,)``, ``num_batches_tracked ()`` (int64).

    Example:
        >>> import fnn, torch
        >>> bn = fnn.nn.BatchNorm2d()
        >>> x = torch.randn(4, 3, 5, 5)
        >>> params, state = bn.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (3,), 'bias': (3,)}
        >>> y, new_state = bn.apply(params, x, state=state, train=True)
        >>> y.shape, int(new_state["num_batches_tracked"]), int(state["num_batches_tracked"])
        (torch.Size([4, 3, 5, 5]), 1, 0)
        >>> y, _ = bn.apply(params, x, state=new_state)  # eval: running statistics
    """

    _ndims = (4,)
    _layout = "(N, C, H, W)"


class BatchNorm3d(_BatchNorm):
    """Batch normalization over ``(N, C, D, H, W)``, the twin of ``torch.nn.BatchNorm3d``.
    {doc}
    Shapes:
        input ``(N, C, D, H, W)``, output the same; ``weight (C,)``, ``bias (C,)``; state
        ``running_mean (C,)``, ``running_var (C,)``, ``num_batches_tracked ()`` (int64).

    Example:
        >>> import fnn, torch
        >>> bn = fnn.nn.BatchNorm3d(affine=False)
        >>> params, state = bn.init(fnn.random.key(0), torch.zeros(2, 3, 4, 4, 4))
        >>> params, sorted(state)
        ({}, ['num_batches_tracked', 'running_mean', 'running_var'])
    """

    _ndims = (5,)
    _layout = "(N, C, D, H, W)"


for _cls in (BatchNorm1d, BatchNorm2d, BatchNorm3d):
    _cls.__doc__ = _cls.__doc__.replace("{doc}", _BN_DOC)


# --------------------------------------------------------------------------------------------
# InstanceNorm
# --------------------------------------------------------------------------------------------


class _InstanceNorm(Module):
    """Shared implementation of InstanceNorm1d/2d/3d; see :class:`InstanceNorm2d`."""

    num_features: int | None = None
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = False
    track_running_stats: bool = False
    bias: bool = True
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    # Class attributes (not annotated, so not fields): number of spatial dims, the layout.
    _spatial = 0
    _layout = ""

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        where = _where(self, scope.path)
        nb = self._spatial + 1  # rank of an unbatched input (C, *spatial)
        if not isinstance(x, torch.Tensor) or x.ndim not in (nb, nb + 1):
            raise ValueError(
                f"{where}: expected input of shape {self._layout}, got {_shape_of(x)}."
            )
        unbatched = x.ndim == nb
        xb = x.unsqueeze(0) if unbatched else x
        c = xb.shape[1]
        dim = "x.shape[0], unbatched input" if unbatched else "x.shape[1]"
        _check_count(self, scope, "num_features", self.num_features, c, dim)
        w, b = _affine(self, scope, c)
        use_input_stats = scope.train or not self.track_running_stats
        if use_input_stats and math.prod(xb.shape[2:]) == 1:
            raise ValueError(
                f"{where}: expected more than 1 spatial element per channel to compute instance "
                f"statistics, got input of shape {tuple(x.shape)}."
            )
        if x.is_meta:  # init's shape pass: make the state, skip torch's slow meta kernels
            if self.track_running_stats:
                _running_stats(self, scope, c, _stats_dtype(x, w))
            return meta_like(x)
        if not self.track_running_stats:
            y = F.instance_norm(xb, None, None, w, b, True, 0.0, self.eps)
        else:
            rm, rv, _ = _running_stats(self, scope, c, _stats_dtype(x, w))
            if not scope.train:
                # The running statistics are per channel, shared by all instances.
                y = F.batch_norm(xb, rm, rv, w, b, False, 0.0, self.eps)
            else:
                y = F.instance_norm(xb, None, None, w, b, True, 0.0, self.eps)
                # torch updates one copy of the statistics per instance, then averages them
                # over the batch; num_batches_tracked is kept but never incremented.
                momentum = self.momentum if self.momentum is not None else 0.0
                dims = tuple(range(2, xb.ndim))
                var, mean = torch.var_mean(xb.detach(), dim=dims, correction=1)
                scope.put_state("running_mean", _momentum_update(rm, mean, momentum).mean(0))
                scope.put_state("running_var", _momentum_update(rv, var, momentum).mean(0))
        return y.squeeze(0) if unbatched else y


_IN_DOC = """
    Each channel of each example is normalised with its own mean and (biased) variance over the
    spatial dims.

    Args:
        num_features: the number of channels ``C``; optional (inferred from the input),
            checked against the input when given.
        eps: added to the variance for numerical stability.
        momentum: the weight of the instance statistics in the running average (with
            ``track_running_stats``); ``None`` means ``0.0`` (no update), as in torch.
        affine: whether to learn a per-channel ``weight`` and ``bias`` (default False, as torch).
        track_running_stats: whether to keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked`` in the state (default False, as torch). When kept, they are
            updated in train mode (torch never increments ``num_batches_tracked`` here) and used
            instead of the instance statistics in eval mode.
        bias: with ``affine``, whether to learn ``bias``.
        weight_init, bias_init: initializers of ``weight`` and ``bias`` (default: ones, zeros).
"""


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization over ``(N, C, L)``, the twin of ``torch.nn.InstanceNorm1d``.
    {doc}
    Shapes:
        input ``(N, C, L)`` or unbatched ``(C, L)``, output the same; with ``affine``,
        ``weight (C,)`` and ``bias (C,)``.

    Example:
        >>> import fnn, torch
        >>> norm = fnn.nn.InstanceNorm1d(affine=True)
        >>> params, state = norm.init(fnn.random.key(0), torch.zeros(2, 3, 10))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params), state
        ({'weight': (3,), 'bias': (3,)}, {})
    """

    _spatial = 1
    _layout = "(N, C, L) or (C, L)"


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization over ``(N, C, H, W)``, the twin of ``torch.nn.InstanceNorm2d``.
    {doc}
    Shapes:
        input ``(N, C, H, W)`` or unbatched ``(C, H, W)``, output the same; with ``affine``,
        ``weight (C,)`` and ``bias (C,)``; with ``track_running_stats``, state
        ``running_mean (C,)``, ``running_var (C,)``, ``num_batches_tracked ()``.

    Example:
        >>> import fnn, torch
        >>> norm = fnn.nn.InstanceNorm2d(track_running_stats=True)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> params, state = norm.init(fnn.random.key(0), x)
        >>> params, fnn.tree.map(lambda t: tuple(t.shape), state)
        ({}, {'running_mean': (3,), 'running_var': (3,), 'num_batches_tracked': ()})
        >>> y, state = norm.apply(params, x, state=state, train=True)
        >>> y.shape
        torch.Size([2, 3, 4, 4])
    """

    _spatial = 2
    _layout = "(N, C, H, W) or (C, H, W)"


class InstanceNorm3d(_InstanceNorm):
    """Instance normalization over ``(N, C, D, H, W)``, the twin of ``torch.nn.InstanceNorm3d``.
    {doc}
    Shapes:
        input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``, output the same; with
        ``affine``, ``weight (C,)`` and ``bias (C,)``.

    Example:
        >>> import fnn, torch
        >>> norm = fnn.nn.InstanceNorm3d()
        >>> norm.init(fnn.random.key(0), torch.zeros(2, 3, 4, 4, 4))
        ({}, {})
        >>> norm.apply({}, torch.randn(2, 3, 4, 4, 4), train=True).shape
        torch.Size([2, 3, 4, 4, 4])
    """

    _spatial = 3
    _layout = "(N, C, D, H, W) or (C, D, H, W)"


for _cls in (InstanceNorm1d, InstanceNorm2d, InstanceNorm3d):
    _cls.__doc__ = _cls.__doc__.replace("{doc}", _IN_DOC)


# --------------------------------------------------------------------------------------------
# LayerNorm, RMSNorm, GroupNorm, LocalResponseNorm
# --------------------------------------------------------------------------------------------


def _as_shape_tuple(module: Module, value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, tuple | list) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    ):
        return tuple(value)
    raise TypeError(
        f"fnn.nn.{type(module).__name__}: normalized_shape must be None, an int or a tuple of "
        f"ints, got {value!r}."
    )


def _normalized_shape(module: Module, scope: Scope, x: torch.Tensor) -> tuple[int, ...]:
    """``module.normalized_shape`` (``None``: ``x.shape[-1:]``), checked against ``x``."""
    shape = module.normalized_shape
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        want = "(*, D)" if shape is None else f"(*, {', '.join(map(str, shape))})"
        raise ValueError(
            f"{_where(module, scope.path)}: expected input of shape {want}, got {_shape_of(x)}."
        )
    if shape is None:
        return tuple(x.shape[-1:])
    if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape) :]) != shape:
        raise ValueError(
            f"{_where(module, scope.path)}: expected input of shape "
            f"(*, {', '.join(map(str, shape))}) (normalized_shape={shape}), got shape "
            f"{tuple(x.shape)}."
        )
    return shape


class LayerNorm(Module):
    """Layer normalization over the trailing dims, the twin of ``torch.nn.LayerNorm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the mean and (biased) variance
    over the last ``len(normalized_shape)`` dims.

    Args:
        normalized_shape: the trailing dims to normalise over: an int, a tuple, or ``None``
            (default) for the last dim of the input. When given it is checked against the input.
        eps: added to the variance for numerical stability.
        elementwise_affine: whether to learn ``weight`` (and ``bias``) of ``normalized_shape``.
        bias: with ``elementwise_affine``, whether to learn ``bias``.
        weight_init, bias_init: initializers (default: ones, zeros, as torch).

    Shapes:
        input ``(*, *normalized_shape)``, output the same; ``weight`` and ``bias`` of shape
        ``normalized_shape``.

    Example:
        >>> import fnn, torch
        >>> params, _ = fnn.nn.LayerNorm().init(fnn.random.key(0), torch.zeros(2, 5, 8))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (8,), 'bias': (8,)}
        >>> params, _ = fnn.nn.LayerNorm((5, 8)).init(fnn.random.key(0), torch.zeros(2, 5, 8))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (5, 8), 'bias': (5, 8)}
    """

    normalized_shape: int | tuple[int, ...] | None = None
    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        self.normalized_shape = _as_shape_tuple(self, self.normalized_shape)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        shape = _normalized_shape(self, scope, x)
        w = b = None
        if self.elementwise_affine:
            w = scope.param("weight", shape, self.weight_init or ones)
            if self.bias:
                b = scope.param("bias", shape, self.bias_init or zeros)
        if x.is_meta:
            return meta_like(x)
        return F.layer_norm(x, shape, w, b, self.eps)


class RMSNorm(Module):
    """Root-mean-square normalization over the trailing dims, the twin of ``torch.nn.RMSNorm``.

    ``y = x / sqrt(mean(x ** 2) + eps) * weight``, the mean over the last
    ``len(normalized_shape)`` dims.

    Args:
        normalized_shape: the trailing dims to normalise over: an int, a tuple, or ``None``
            (default) for the last dim of the input. When given it is checked against the input.
        eps: added for numerical stability; ``None`` means ``torch.finfo(x.dtype).eps``.
        elementwise_affine: whether to learn ``weight`` of shape ``normalized_shape``.
        weight_init: initializer of ``weight`` (default: ones, as torch).

    Shapes:
        input ``(*, *normalized_shape)``, output the same; ``weight`` of shape
        ``normalized_shape``.

    Example:
        >>> import fnn, torch
        >>> params, _ = fnn.nn.RMSNorm().init(fnn.random.key(0), torch.zeros(2, 8))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (8,)}
        >>> fnn.nn.RMSNorm().apply(params, torch.full((1, 8), 3.0))
        tensor([[1., 1., 1., 1., 1., 1., 1., 1.]])
    """

    normalized_shape: int | tuple[int, ...] | None = None
    eps: float | None = None
    elementwise_affine: bool = True
    weight_init: Initializer | None = None

    def __post_init__(self) -> None:
        self.normalized_shape = _as_shape_tuple(self, self.normalized_shape)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        shape = _normalized_shape(self, scope, x)
        w = (
            scope.param("weight", shape, self.weight_init or ones)
            if self.elementwise_affine
            else None
        )
        if x.is_meta:
            return meta_like(x)
        return F.rms_norm(x, shape, w, self.eps)


class GroupNorm(Module):
    """Group normalization, the twin of ``torch.nn.GroupNorm`` (channel count inferred).

    The ``C`` channels are split into ``num_groups`` groups; each group of each example is
    normalised with its own mean and (biased) variance, then scaled and shifted per channel.

    Args:
        num_groups: the number of groups; must divide the number of channels.
        num_channels: the number of channels ``C``; optional (inferred from ``x.shape[1]``),
            checked against the input when given (it keeps torch's argument position).
        eps: added to the variance for numerical stability.
        affine: whether to learn a per-channel ``weight`` and ``bias``.
        bias: with ``affine``, whether to learn ``bias``.
        weight_init, bias_init: initializers (default: ones, zeros, as torch).

    Shapes:
        input ``(N, C, *)``, output the same; ``weight (C,)``, ``bias (C,)``.

    Example:
        >>> import fnn, torch
        >>> norm = fnn.nn.GroupNorm(2)
        >>> params, _ = norm.init(fnn.random.key(0), torch.zeros(4, 6, 5))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight': (6,), 'bias': (6,)}
        >>> norm.apply(params, torch.randn(4, 6, 5)).shape
        torch.Size([4, 6, 5])
    """

    num_groups: int
    num_channels: int | None = None
    eps: float = 1e-5
    affine: bool = True
    bias: bool = True
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        g = self.num_groups
        if not isinstance(g, int) or isinstance(g, bool) or g <= 0:
            raise ValueError(f"fnn.nn.GroupNorm: num_groups must be a positive int, got {g!r}.")
        if self.num_channels is not None and self.num_channels % g != 0:
            raise ValueError(
                f"fnn.nn.GroupNorm: num_channels ({self.num_channels}) must be divisible by "
                f"num_groups ({g})."
            )

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        where = _where(self, scope.path)
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise ValueError(f"{where}: expected input of shape (N, C, *), got {_shape_of(x)}.")
        c, g = x.shape[1], self.num_groups
        _check_count(self, scope, "num_channels", self.num_channels, c, "x.shape[1]")
        if c % g != 0:
            raise ValueError(
                f"{where}: the input's {c} channels (x.shape[1] of shape {tuple(x.shape)}) "
                f"are not divisible by num_groups={g}."
            )
        if x.shape[0] * (c // g) * math.prod(x.shape[2:]) == 1:
            raise ValueError(
                f"{where}: expected more than 1 value per group, got input of shape "
                f"{tuple(x.shape)} with num_groups={g}."
            )
        w, b = _affine(self, scope, c)
        if x.is_meta:
            return meta_like(x)
        return F.group_norm(x, g, w, b, self.eps)


class LocalResponseNorm(Module):
    """Local response normalization across channels, the twin of ``torch.nn.LocalResponseNorm``.

    ``y_c = x_c / (k + alpha / size * sum_{c' near c} x_{c'} ** 2) ** beta``, the sum over a
    window of ``size`` neighbouring channels.

    Args:
        size: the number of neighbouring channels summed over.
        alpha: the multiplicative factor.
        beta: the exponent.
        k: the additive factor.

    Shapes:
        input ``(N, C, *)`` with at least one trailing dim, output the same; no parameters.

    Example:
        >>> import fnn, torch
        >>> norm = fnn.nn.LocalResponseNorm(2)
        >>> norm.init(fnn.random.key(0), torch.zeros(2, 4, 5, 5))
        ({}, {})
        >>> norm.apply({}, torch.ones(2, 4, 5, 5)).shape
        torch.Size([2, 4, 5, 5])
    """

    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim < 3:
            raise ValueError(
                f"{_where(self, scope.path)}: expected input of shape (N, C, *) with at least 3 "
                f"dims, got {_shape_of(x)}."
            )
        if x.is_meta:
            return meta_like(x)
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
