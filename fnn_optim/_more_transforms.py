"""More building blocks: AdaBelief, Lion, trust ratios, Adafactor's factored moments, NovoGrad,
Muon, clipping, averaging, noise and NaN handling.

Same conventions as :mod:`fnn_optim._transforms`: each block is a factory with its state
``NamedTuple`` right above it; ``update`` is pure; hyperparameters are 0-d tensors in
``state.hyperparams``; the arithmetic runs over the flattened leaves with ``torch._foreach_*``
ops. A few blocks are inherently per tensor (a reduction over tensor-dependent axes, a matrix
iteration, a sampler call per shape): their docstrings say so and loop over the leaves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fnn import random as _random
from fnn import tree as _tree
from fnn_optim import _foreach as _fe
from fnn_optim._base import (
    EmptyState,
    GradientTransformation,
    Params,
    Updates,
    _check_tree,
    _flatten,
    _hyper_dtype_device,
    _hyperparams,
    _lerp,
    _n,
    _unflatten,
    _zero_count,
)
from fnn_optim._transforms import (
    ScaleByAdamState,
    _ema,
    _need_params,
    _updates_and,
    _zeros_like,
    scale_by_adam,
)

__all__ = [
    "adaptive_grad_clip",
    "add_noise",
    "centralize",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "ema",
    "scale_by_belief",
    "scale_by_factored_rms",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_novograd",
    "scale_by_param_block_rms",
    "scale_by_trust_ratio",
    "zero_nans",
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _with_params(where: str, updates: Updates, params: Params | None) -> tuple[list, Any, list]:
    """Flatten ``updates`` and ``params`` (required); raise if their structures differ."""
    _need_params(where, params)
    u, udef = _flatten(updates)
    p, pdef = _flatten(params)
    _check_tree(where, udef, pdef, names=("the updates", "the params"))
    return u, udef, p


def _selected(where: str, mask: Any, params: Params, n: int) -> list[int]:
    """Indices of the leaves chosen by ``mask`` (``None``: all; a bool tree; a function)."""
    if mask is None:
        return list(range(n))
    m = mask(params) if callable(mask) else mask
    flags, mdef = _flatten(m)
    _check_tree(where, mdef, _tree.structure(params), names=("the mask", "the params"))
    return [i for i, f in enumerate(flags) if f]


def _norms(xs: list[Tensor]) -> Tensor:
    """The L2 norm of each tensor of ``xs`` (one ``torch._foreach_norm``), stacked: ``(len,)``."""
    norms = _fe.norm(xs)
    dtype = norms[0].dtype
    return torch.stack([x.to(dtype) for x in norms])


def _rms(xs: list[Tensor]) -> Tensor:
    """The root mean square of each tensor of ``xs``, stacked: ``(len,)``."""
    norms = _norms(xs)
    sizes = torch.tensor(
        [math.sqrt(max(x.numel(), 1)) for x in xs], dtype=norms.dtype, device=norms.device
    )
    return norms / sizes


# --------------------------------------------------------------------------------------------
# Adaptive rescalings
# --------------------------------------------------------------------------------------------


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`: ``mu`` (first moment) and ``nu`` (second moment of the
    prediction error ``g - mu``, with ``eps_root`` added at every step)."""

    count: Tensor
    mu: Any
    nu: Any
    hyperparams: dict[str, Tensor]


def scale_by_belief(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-16, eps_root: float = 1e-16
) -> GradientTransformation:
    """Rescale by AdaBelief's "belief" in the gradient (Zhuang et al., 2020, arXiv:2010.07468).

    With ``t = count + 1`` (Optax's ``scale_by_belief``, the paper's Algorithm 2)::

        mu = b1 * mu + (1 - b1) * g
        nu = b2 * nu + (1 - b2) * (g - mu)**2 + eps_root
        direction = (mu / (1 - b1**t)) / (sqrt(nu / (1 - b2**t)) + eps)

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_belief()
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> opt.update({"w": torch.tensor([2.0, -3.0])}, state)[0]
        {'w': tensor([ 1.1111, -1.1111])}
    """

    def init(params: Params) -> ScaleByBeliefState:
        return ScaleByBeliefState(
            _zero_count(params),
            _zeros_like(params),
            _zeros_like(params),
            _hyperparams(params, b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        )

    def update(
        updates: Updates, state: ScaleByBeliefState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByBeliefState]:
        del params, extra
        g, udef, mu = _updates_and("fnn_optim.scale_by_belief", updates, state.mu)
        h = state.hyperparams
        count = state.count + 1
        mu = _ema(mu, g, 1 - h["b1"])
        err = _fe.sub(g, mu)
        nu = _ema(_tree.leaves(state.nu), _fe.mul(err, err), 1 - h["b2"])
        _fe.add_(nu, h["eps_root"])
        denom = list(_fe.div(nu, 1 - h["b2"] ** count))
        _fe.sqrt_(denom)
        _fe.add_(denom, h["eps"])
        out = list(_fe.div(mu, 1 - h["b1"] ** count))
        _fe.div_(out, denom)
        new_state = ScaleByBeliefState(count, _unflatten(udef, mu), _unflatten(udef, nu), h)
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`: ``mu``, the momentum (a tree like the params)."""

    count: Tensor
    mu: Any
    hyperparams: dict[str, Tensor]


def scale_by_lion(b1: float = 0.9, b2: float = 0.99) -> GradientTransformation:
    """Rescale by Lion's sign of interpolated momentum (Chen et al., 2023, arXiv:2302.06675)::

        direction = sign(b1 * mu + (1 - b1) * g)
        mu = b2 * mu + (1 - b2) * g

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_lion()
        >>> state = opt.init({"w": torch.zeros(3)})
        >>> opt.update({"w": torch.tensor([2.0, 0.0, -3.0])}, state)[0]
        {'w': tensor([ 1.,  0., -1.])}
    """

    def init(params: Params) -> ScaleByLionState:
        return ScaleByLionState(
            _zero_count(params), _zeros_like(params), _hyperparams(params, b1=b1, b2=b2)
        )

    def update(
        updates: Updates, state: ScaleByLionState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByLionState]:
        del params, extra
        g, udef, mu = _updates_and("fnn_optim.scale_by_lion", updates, state.mu)
        h = state.hyperparams
        out = _lerp(mu, g, 1 - h["b1"])
        _fe.sign_(out)
        mu = _ema(mu, g, 1 - h["b2"])
        return _unflatten(udef, out), ScaleByLionState(state.count + 1, _unflatten(udef, mu), h)

    return GradientTransformation(init, update)


class ScaleByTrustRatioState(NamedTuple):
    """State of :func:`scale_by_trust_ratio`: ``min_norm``, ``trust_coefficient``, ``eps``."""

    hyperparams: dict[str, Tensor]


def scale_by_trust_ratio(
    min_norm: float = 0.0,
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
    *,
    mask: Any | Callable[[Params], Any] | None = None,
) -> GradientTransformation:
    """Scale each tensor's update by its trust ratio (LARS: You et al., 2017; LAMB: 2019).

    Per tensor (one ``torch._foreach_norm`` for all of them), with norms floored at
    ``min_norm``::

        ratio = trust_coefficient * ||param|| / (||update|| + eps)
        update = update * (1 if ||param|| == 0 or ||update|| == 0 else ratio)

    Args:
        min_norm: lower bound of both norms.
        trust_coefficient: multiplies the ratio (LARS's ``eta``).
        eps: added to the update norm.
        mask: ``None`` (every leaf), a tree of bools like the params (``True`` = scale) or a
            function ``params -> such a tree``; unselected leaves pass through unchanged (Optax
            wraps the block in ``optax.masked`` for this).

    Needs ``params``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([3.0, 4.0])}
        >>> opt = fnn_optim.scale_by_trust_ratio()
        >>> opt.update({"w": torch.tensor([0.0, 0.5])}, opt.init(params), params)[0]
        {'w': tensor([0., 5.])}
    """

    def init(params: Params) -> ScaleByTrustRatioState:
        return ScaleByTrustRatioState(
            _hyperparams(params, min_norm=min_norm, trust_coefficient=trust_coefficient, eps=eps)
        )

    def update(
        updates: Updates, state: ScaleByTrustRatioState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByTrustRatioState]:
        del extra
        where = "fnn_optim.scale_by_trust_ratio"
        u, udef, p = _with_params(where, updates, params)
        idx = _selected(where, mask, params, len(u))
        if not idx:
            return updates, state
        h = state.hyperparams
        us = [u[i] for i in idx]
        p_norm = torch.clamp_min(_norms([p[i] for i in idx]), h["min_norm"])
        u_norm = torch.clamp_min(_norms(us), h["min_norm"])
        ratio = h["trust_coefficient"] * p_norm / (u_norm + h["eps"])
        ratio = torch.where((p_norm == 0) | (u_norm == 0), torch.ones_like(ratio), ratio)
        out = list(u)
        for i, x in zip(idx, _fe.mul(us, list(ratio.unbind())), strict=True):
            out[i] = x
        return _unflatten(udef, out), state

    return GradientTransformation(init, update)


class ScaleByParamBlockRmsState(NamedTuple):
    """State of :func:`scale_by_param_block_rms`: ``hyperparams["min_scale"]``."""

    hyperparams: dict[str, Tensor]


def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    """Multiply each tensor's update by the root mean square of its parameter (Adafactor)::

        update = update * max(rms(param), min_scale)

    One ``torch._foreach_norm`` for all tensors. Needs ``params``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([3.0, -3.0])}
        >>> opt = fnn_optim.scale_by_param_block_rms()
        >>> opt.update({"w": torch.ones(2)}, opt.init(params), params)[0]
        {'w': tensor([3., 3.])}
    """

    def init(params: Params) -> ScaleByParamBlockRmsState:
        return ScaleByParamBlockRmsState(_hyperparams(params, min_scale=min_scale))

    def update(
        updates: Updates,
        state: ScaleByParamBlockRmsState,
        params: Params | None = None,
        **extra: Any,
    ) -> tuple[Updates, ScaleByParamBlockRmsState]:
        del extra
        u, udef, p = _with_params("fnn_optim.scale_by_param_block_rms", updates, params)
        if not u:
            return updates, state
        factor = torch.clamp_min(_rms(p), state.hyperparams["min_scale"])
        return _unflatten(udef, _fe.mul(u, list(factor.unbind()))), state

    return GradientTransformation(init, update)


class FactoredState(NamedTuple):
    """State of :func:`scale_by_factored_rms` (Optax's name).

    Per leaf: ``v_row`` and ``v_col``, the running means of ``g**2 + epsilon`` over the largest
    and the second-largest axis (the leaf's shape without that axis), for factored leaves;
    ``v``, the full running mean, for the others. Unused entries are ``(1,)`` zeros.
    """

    count: Tensor
    v_row: Any
    v_col: Any
    v: Any
    hyperparams: dict[str, Tensor]


def _factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """The (second-largest, largest) axes of ``shape`` if it is factored, else ``None``."""
    if not factored or len(shape) < 2:
        return None
    order = sorted(range(len(shape)), key=lambda i: shape[i])
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return order[-2], order[-1]


def _stat_dtype(x: Tensor) -> torch.dtype:
    """At least float32 for second-moment statistics."""
    return torch.promote_types(x.dtype, torch.float32)


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
) -> GradientTransformation:
    """Rescale by Adafactor's factored second moments (Shazeer & Stern, 2018,
    arXiv:1804.04235), Optax's ``scale_by_factored_rms``.

    With ``rho = 1 - (count - step_offset + 1) ** -decay_rate`` (0 at the first update) and
    ``g2 = g**2 + epsilon``, for a leaf whose two largest axes ``d1`` (second-largest) and
    ``d0`` (largest) have at least ``min_dim_size_to_factor`` elements::

        v_row = rho * v_row + (1 - rho) * mean(g2, axis=d0)
        v_col = rho * v_col + (1 - rho) * mean(g2, axis=d1)
        direction = g / sqrt(v_row / mean(v_row, axis=d1) (x) v_col)   (outer product)

    and for the other leaves (vectors, small matrices) ``v = rho * v + (1 - rho) * g2``,
    ``direction = g / sqrt(v)``. Statistics are kept in at least float32.

    **Per tensor**: each leaf reduces over its own axes, so this block loops over the leaves
    (a few small ops each) instead of running one ``torch._foreach_*`` op for all of them.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_factored_rms(min_dim_size_to_factor=2)
        >>> state = opt.init({"w": torch.zeros(2, 3)})
        >>> [tuple(t.shape) for t in (state.v_row["w"], state.v_col["w"], state.v["w"])]
        [(2,), (3,), (1,)]
        >>> opt.update({"w": torch.full((2, 3), 2.0)}, state)[0]["w"]
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """

    def init(params: Params) -> FactoredState:
        def stats(p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            dims = _factored_dims(tuple(p.shape), factored, min_dim_size_to_factor)
            kw = {"dtype": _stat_dtype(p), "device": p.device}
            one = torch.zeros((1,), **kw)
            if dims is None:
                return one, one.clone(), torch.zeros(p.shape, **kw)
            d1, d0 = dims
            row = [s for i, s in enumerate(p.shape) if i != d0]
            col = [s for i, s in enumerate(p.shape) if i != d1]
            return torch.zeros(row, **kw), torch.zeros(col, **kw), one

        leaves, treedef = _flatten(params)
        rows, cols, vs = zip(*(stats(p) for p in leaves), strict=True) if leaves else ((), (), ())
        return FactoredState(
            _zero_count(params),
            _unflatten(treedef, rows),
            _unflatten(treedef, cols),
            _unflatten(treedef, vs),
            _hyperparams(
                params, decay_rate=decay_rate, epsilon=epsilon, step_offset=float(step_offset)
            ),
        )

    def update(
        updates: Updates, state: FactoredState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, FactoredState]:
        del params, extra
        g, udef, v = _updates_and("fnn_optim.scale_by_factored_rms", updates, state.v)
        rows, cols = _tree.leaves(state.v_row), _tree.leaves(state.v_col)
        h = state.hyperparams
        step = (state.count - h["step_offset"] + 1).to(h["decay_rate"].dtype)
        rho = 1 - step ** (-h["decay_rate"])
        out, new_rows, new_cols, new_v = [], [], [], []
        for x, r, c, vv in zip(g, rows, cols, v, strict=True):
            x32 = x.to(_stat_dtype(x))
            g2 = x32 * x32 + h["epsilon"]
            dims = _factored_dims(tuple(x.shape), factored, min_dim_size_to_factor)
            if dims is None:
                vv = torch.lerp(vv, g2, (1 - rho).to(vv.dtype))
                out.append((x32 * torch.rsqrt(vv)).to(x.dtype))
                new_rows.append(r)
                new_cols.append(c)
                new_v.append(vv)
                continue
            d1, d0 = dims
            r = torch.lerp(r, g2.mean(d0), (1 - rho).to(r.dtype))
            c = torch.lerp(c, g2.mean(d1), (1 - rho).to(c.dtype))
            reduced_d1 = d1 - 1 if d1 > d0 else d1
            row_factor = torch.rsqrt(r / r.mean(reduced_d1, keepdim=True))
            col_factor = torch.rsqrt(c)
            upd = x32 * row_factor.unsqueeze(d0) * col_factor.unsqueeze(d1)
            out.append(upd.to(x.dtype))
            new_rows.append(r)
            new_cols.append(c)
            new_v.append(vv)
        new_state = FactoredState(
            state.count + 1,
            _unflatten(udef, new_rows),
            _unflatten(udef, new_cols),
            _unflatten(udef, new_v),
            h,
        )
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


class ScaleByNovogradState(NamedTuple):
    """State of :func:`scale_by_novograd`: ``mu`` (a tree like the params) and ``nu`` (one 0-d
    second moment of the gradient norm per leaf)."""

    count: Tensor
    mu: Any
    nu: Any
    hyperparams: dict[str, Tensor]


def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Rescale by NovoGrad's layer-wise second moments (Ginsburg et al., 2019,
    arXiv:1905.11286), Optax's ``scale_by_novograd``.

    Per leaf (one ``torch._foreach_norm`` for all), at the first update ``nu = ||g||**2`` and
    ``mu = a``; afterwards::

        nu = b2 * nu + (1 - b2) * ||g||**2
        a = g / (sqrt(nu + eps_root) + eps) + weight_decay * params
        mu = b1 * mu + a;   direction = mu

    Needs ``params``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.zeros(2)}
        >>> opt = fnn_optim.scale_by_novograd(eps=0.0)
        >>> opt.update({"w": torch.tensor([3.0, 4.0])}, opt.init(params), params)[0]
        {'w': tensor([0.6000, 0.8000])}
    """

    def init(params: Params) -> ScaleByNovogradState:
        return ScaleByNovogradState(
            _zero_count(params),
            _zeros_like(params),
            _tree.map(lambda p: torch.zeros((), dtype=p.dtype, device=p.device), params),
            _hyperparams(
                params, b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay
            ),
        )

    def update(
        updates: Updates, state: ScaleByNovogradState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByNovogradState]:
        del extra
        where = "fnn_optim.scale_by_novograd"
        g, udef, p = _with_params(where, updates, params)
        _, _, mu = _updates_and(where, updates, state.mu)
        h = state.hyperparams
        first = state.count == 0
        zero = torch.zeros_like(h["b1"])
        b1 = torch.where(first, zero, h["b1"])
        b2 = torch.where(first, zero, h["b2"])
        norms = list(_fe.norm(g))
        _fe.mul_(norms, norms)
        nu = _lerp(_tree.leaves(state.nu), norms, 1 - b2)
        denom = list(_fe.add(nu, h["eps_root"]))
        _fe.sqrt_(denom)
        _fe.add_(denom, h["eps"])
        a = list(_fe.div(g, denom))
        _fe.add_(a, _fe.mul(p, h["weight_decay"]))
        mu = list(_fe.mul(mu, b1))
        _fe.add_(mu, a)
        new_state = ScaleByNovogradState(
            state.count + 1, _unflatten(udef, mu), _unflatten(udef, nu), h
        )
        return _unflatten(udef, mu), new_state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Muon
# --------------------------------------------------------------------------------------------

_MUON_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def _newton_schulz(
    x: Tensor, coeffs: tuple[float, float, float], steps: int, eps: Tensor, dtype: torch.dtype
) -> Tensor:
    """Keller Jordan's quintic Newton-Schulz iteration, as ``torch.optim.Muon`` computes it."""
    a, b, c = coeffs
    y = x.to(dtype)
    tall = y.size(0) > y.size(1)
    if tall:
        y = y.T
    y = y / torch.clamp_min(y.norm(), eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = y @ y.T
        gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        y = torch.addmm(y, gram_update, y, beta=a)
    return y.T if tall else y


class ScaleByMuonState(NamedTuple):
    """State of :func:`scale_by_muon`.

    ``mu``: the momentum buffers of the matrices (a tree like the params; for the other leaves
    unused ``(0,)`` tensors). ``adam``: the :class:`ScaleByAdamState` of the leaves that are
    not matrices, over the list of those leaves in flatten order. ``hyperparams``: ``beta``,
    ``eps``.
    """

    count: Tensor
    mu: Any
    adam: ScaleByAdamState
    hyperparams: dict[str, Tensor]


def scale_by_muon(
    ns_coeffs: tuple[float, float, float] = _MUON_NS_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-7,
    *,
    nesterov: bool = True,
    adjust_lr_fn: str | None = None,
    ns_dtype: torch.dtype = torch.bfloat16,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_eps_root: float = 0.0,
) -> GradientTransformation:
    """Rescale matrices by Muon's orthogonalised momentum (Jordan et al., 2024,
    https://kellerjordan.github.io/posts/muon/), torch.optim.Muon's rule; Adam elsewhere.

    For each 2-d leaf of shape ``(A, B)`` (PyTorch's ``(out, in)``)::

        buf = beta * buf + (1 - beta) * g
        m = (1 - beta) * g + beta * buf if nesterov else buf
        direction = NS(m) * (sqrt(max(1, A / B))          if adjust_lr_fn in (None, "original")
                             0.2 * sqrt(max(A, B))         if adjust_lr_fn == "match_rms_adamw")

    ``NS`` is ``ns_steps`` iterations of Keller Jordan's quintic Newton-Schulz map
    ``X <- a X + (b A + c A A) X`` with ``A = X X^T``, ``(a, b, c) = ns_coeffs``, started from
    ``m / max(||m||_F, eps)`` (on the transpose of a tall matrix) and computed in ``ns_dtype``
    (bfloat16, as torch.optim.Muon and Keller Jordan do). It approximately replaces the
    singular values of ``m`` by values near 1.

    Leaves that are not matrices (biases, norm scales, conv kernels: Optax's default rule for
    Muon) get Adam's direction (:func:`~fnn_optim.scale_by_adam` with ``adam_b1``, ``adam_b2``,
    ``adam_eps``, ``adam_eps_root``).

    **Per tensor**: each matrix runs its own Newton-Schulz iteration (a Python loop over the
    matrices, as in torch.optim.Muon); the momentum and Adam parts use ``torch._foreach_*``.
    ``ns_coeffs``, ``ns_steps``, ``nesterov``, ``adjust_lr_fn`` and ``ns_dtype`` are static.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_muon(ns_dtype=torch.float32)
        >>> state = opt.init({"b": torch.zeros(2), "w": torch.zeros(2, 2)})
        >>> d, _ = opt.update({"b": torch.ones(2), "w": torch.eye(2)}, state)
        >>> d["b"], torch.linalg.svdvals(d["w"]).round(decimals=1)
        (tensor([1., 1.]), tensor([1.1000, 1.1000]))
    """
    if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
        raise ValueError(
            "fnn_optim.scale_by_muon: adjust_lr_fn must be None, 'original' or "
            f"'match_rms_adamw' (torch.optim.Muon's); got {adjust_lr_fn!r}."
        )
    if len(ns_coeffs) != 3:
        raise ValueError(
            f"fnn_optim.scale_by_muon: ns_coeffs must be three numbers (a, b, c); got {ns_coeffs}."
        )
    coeffs = (float(ns_coeffs[0]), float(ns_coeffs[1]), float(ns_coeffs[2]))
    adam = scale_by_adam(adam_b1, adam_b2, adam_eps, adam_eps_root)

    def shape_factor(shape: torch.Size) -> float:
        rows, cols = shape
        if adjust_lr_fn == "match_rms_adamw":
            return 0.2 * math.sqrt(max(rows, cols))
        return math.sqrt(max(1.0, rows / cols))

    def init(params: Params) -> ScaleByMuonState:
        leaves, treedef = _flatten(params)
        mu = [torch.zeros_like(p) if p.ndim == 2 else p.new_zeros((0,)) for p in leaves]
        return ScaleByMuonState(
            _zero_count(params),
            _unflatten(treedef, mu),
            adam.init([p for p in leaves if p.ndim != 2]),
            _hyperparams(params, beta=beta, eps=eps),
        )

    def update(
        updates: Updates, state: ScaleByMuonState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByMuonState]:
        del params, extra
        g, udef = _flatten(updates)
        mu_all, mdef = _flatten(state.mu)
        _check_tree("fnn_optim.scale_by_muon", udef, mdef)
        h = state.hyperparams
        mats = [i for i, x in enumerate(g) if x.ndim == 2]
        rest = [i for i, x in enumerate(g) if x.ndim != 2]
        out = list(g)
        mu_new = list(mu_all)
        if mats:
            gm = [g[i] for i in mats]
            buf = list(_lerp([mu_all[i] for i in mats], gm, 1 - h["beta"]))
            m = _lerp(gm, buf, h["beta"]) if nesterov else buf
            for i, x, b in zip(mats, m, buf, strict=True):
                o = _newton_schulz(x, coeffs, ns_steps, h["eps"], ns_dtype)
                out[i] = o.to(g[i].dtype) * shape_factor(g[i].shape)
                mu_new[i] = b
        adam_state = state.adam
        if rest:
            directions, adam_state = adam.update([g[i] for i in rest], state.adam)
            for i, d in zip(rest, directions, strict=True):
                out[i] = d
        new_state = ScaleByMuonState(state.count + 1, _unflatten(udef, mu_new), adam_state, h)
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Averaging and centralisation
# --------------------------------------------------------------------------------------------


class EmaState(NamedTuple):
    """State of :func:`ema`: ``ema``, the (not debiased) moving average of the updates."""

    count: Tensor
    ema: Any
    hyperparams: dict[str, Tensor]


def ema(decay: float, debias: bool = True) -> GradientTransformation:
    """Exponential moving average of the updates (Optax's ``ema``); with ``t = count + 1``::

        ema = decay * ema + (1 - decay) * g
        direction = ema / (1 - decay**t) if debias else ema

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.ema(0.5)
        >>> state = opt.init({"w": torch.zeros(1)})
        >>> _, state = opt.update({"w": torch.tensor([2.0])}, state)
        >>> opt.update({"w": torch.tensor([4.0])}, state)[0]  # (0.5 * 1 + 2) / 0.75
        {'w': tensor([3.3333])}
    """

    def init(params: Params) -> EmaState:
        return EmaState(_zero_count(params), _zeros_like(params), _hyperparams(params, decay=decay))

    def update(
        updates: Updates, state: EmaState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, EmaState]:
        del params, extra
        g, udef, acc = _updates_and("fnn_optim.ema", updates, state.ema)
        h = state.hyperparams
        count = state.count + 1
        acc = _ema(acc, g, 1 - h["decay"])
        out = _fe.div(acc, 1 - h["decay"] ** count) if debias else acc
        return _unflatten(udef, out), EmaState(count, _unflatten(udef, acc), h)

    return GradientTransformation(init, update)


def centralize() -> GradientTransformation:
    """Gradient centralisation (Yong et al., 2020, arXiv:2004.01461), Optax's ``centralize``.

    Every leaf with two or more dimensions loses its mean over all axes but the first (the
    output units of a PyTorch ``(out, in, ...)`` weight); vectors and scalars pass through.
    **Per tensor**: a mean over each leaf's own axes (a loop over the leaves).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.centralize()
        >>> g = {"b": torch.tensor([1.0, 2.0]), "w": torch.arange(1.0, 7.0).reshape(2, 3)}
        >>> opt.update(g, opt.init(g))[0]
        {'b': tensor([1., 2.]), 'w': tensor([[-1.,  0.,  1.],
                [-1.,  0.,  1.]])}
    """

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, EmptyState]:
        del params, extra
        u, udef = _flatten(updates)
        out = [
            x - x.mean(dim=tuple(range(1, x.ndim)), keepdim=True) if x.ndim > 1 else x for x in u
        ]
        return _unflatten(udef, out), state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------------


class ClipState(NamedTuple):
    """State of :func:`clip`: ``hyperparams["max_delta"]``."""

    hyperparams: dict[str, Tensor]


def clip(max_delta: float) -> GradientTransformation:
    """Clip every element of the updates to ``[-max_delta, max_delta]``.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.clip(1.0)
        >>> opt.update({"w": torch.tensor([-3.0, 0.5, 2.0])}, opt.init({"w": torch.zeros(3)}))[0]
        {'w': tensor([-1.0000,  0.5000,  1.0000])}
    """

    def init(params: Params) -> ClipState:
        return ClipState(_hyperparams(params, max_delta=max_delta))

    def update(
        updates: Updates, state: ClipState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ClipState]:
        del params, extra
        u, udef = _flatten(updates)
        delta = state.hyperparams["max_delta"]
        out = list(_fe.maximum(u, _n(-delta, len(u))))
        _fe.minimum_(out, _n(delta, len(u)))
        return _unflatten(udef, out), state

    return GradientTransformation(init, update)


class ClipByGlobalNormState(NamedTuple):
    """State of :func:`clip_by_global_norm`: ``hyperparams["max_norm"]``."""

    hyperparams: dict[str, Tensor]


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale the updates so that their global L2 norm is at most ``max_norm`` (Optax's rule)::

        norm = sqrt(sum of all squared elements)
        updates = updates if norm < max_norm else updates * (max_norm / norm)

    ``torch.nn.utils.clip_grad_norm_`` differs slightly: it scales by
    ``max_norm / (norm + 1e-6)`` whenever that is below 1.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.clip_by_global_norm(1.0)
        >>> g = {"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}
        >>> opt.update(g, opt.init(g))[0]
        {'a': tensor([0.6000]), 'b': tensor([0.8000])}
    """

    def init(params: Params) -> ClipByGlobalNormState:
        return ClipByGlobalNormState(_hyperparams(params, max_norm=max_norm))

    def update(
        updates: Updates, state: ClipByGlobalNormState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ClipByGlobalNormState]:
        del params, extra
        u, udef = _flatten(updates)
        if not u:
            return updates, state
        bound = state.hyperparams["max_norm"]
        norm = torch.linalg.vector_norm(_norms(u))
        factor = torch.where(norm < bound, torch.ones_like(norm), bound / norm)
        return _unflatten(udef, _fe.mul(u, factor)), state

    return GradientTransformation(init, update)


class ClipByBlockRmsState(NamedTuple):
    """State of :func:`clip_by_block_rms`: ``hyperparams["threshold"]``."""

    hyperparams: dict[str, Tensor]


def clip_by_block_rms(threshold: float) -> GradientTransformation:
    """Rescale each tensor so that its root mean square is at most ``threshold``::

        update = update / max(1, rms(update) / threshold)

    One ``torch._foreach_norm`` for all tensors (Adafactor's update clipping).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.clip_by_block_rms(1.0)
        >>> g = {"a": torch.tensor([3.0, -3.0]), "b": torch.tensor([0.5, 0.5])}
        >>> opt.update(g, opt.init(g))[0]
        {'a': tensor([ 1., -1.]), 'b': tensor([0.5000, 0.5000])}
    """

    def init(params: Params) -> ClipByBlockRmsState:
        return ClipByBlockRmsState(_hyperparams(params, threshold=threshold))

    def update(
        updates: Updates, state: ClipByBlockRmsState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ClipByBlockRmsState]:
        del params, extra
        u, udef = _flatten(updates)
        if not u:
            return updates, state
        denom = torch.clamp_min(_rms(u) / state.hyperparams["threshold"], 1.0)
        return _unflatten(udef, _fe.div(u, list(denom.unbind()))), state

    return GradientTransformation(init, update)


class AdaptiveGradClipState(NamedTuple):
    """State of :func:`adaptive_grad_clip`: ``hyperparams``: ``clipping``, ``eps``."""

    hyperparams: dict[str, Tensor]


def _unitwise_norm(x: Tensor) -> Tensor:
    """Norms per output unit of a PyTorch-layout tensor (``(out, ...)``): over all axes but the
    first for tensors with two or more dimensions, over everything for vectors and scalars."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


def adaptive_grad_clip(clipping: float, eps: float = 1e-3) -> GradientTransformation:
    """Adaptive gradient clipping, unit-wise (Brock et al., 2021, arXiv:2102.06171, NFNets).

    For each output unit (row ``i`` of a PyTorch ``(out, in, ...)`` weight; the whole tensor for
    vectors and scalars), with ``max_norm = clipping * max(||params_i||, eps)``::

        g_i = g_i if ||g_i|| < max_norm else g_i * max_norm / max(||g_i||, 1e-6)

    Units follow PyTorch's layouts (as timm's ``adaptive_clip_grad``); Optax's
    ``adaptive_grad_clip`` assumes JAX's ``(in, out)`` / HWIO layouts and reduces over the
    leading axes instead. **Per tensor**: the norms reduce over each leaf's own axes (a loop
    over the leaves). Needs ``params``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([[3.0, 4.0], [0.0, 0.0]])}
        >>> opt = fnn_optim.adaptive_grad_clip(0.1)
        >>> opt.update({"w": torch.tensor([[6.0, 8.0], [0.0, 1e-5]])}, opt.init(params), params)[0]
        {'w': tensor([[3.0000e-01, 4.0000e-01],
                [0.0000e+00, 1.0000e-05]])}
    """

    def init(params: Params) -> AdaptiveGradClipState:
        return AdaptiveGradClipState(_hyperparams(params, clipping=clipping, eps=eps))

    def update(
        updates: Updates, state: AdaptiveGradClipState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, AdaptiveGradClipState]:
        del extra
        u, udef, p = _with_params("fnn_optim.adaptive_grad_clip", updates, params)
        h = state.hyperparams
        out = []
        for g, w in zip(u, p, strict=True):
            g_norm = _unitwise_norm(g)
            max_norm = h["clipping"] * torch.clamp_min(_unitwise_norm(w), h["eps"])
            clipped = g * (max_norm / torch.clamp_min(g_norm, 1e-6))
            out.append(torch.where(g_norm < max_norm, g, clipped.to(g.dtype)))
        return _unflatten(udef, out), state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# NaNs and noise
# --------------------------------------------------------------------------------------------


class ZeroNansState(NamedTuple):
    """State of :func:`zero_nans`: ``found_nan``, a bool 0-d tensor per leaf, ``True`` if the
    last updates of that leaf held a NaN."""

    found_nan: Any


def zero_nans() -> GradientTransformation:
    """Replace NaNs in the updates by zeros and record, per leaf, whether there were any.

    **Per tensor** (there is no ``torch._foreach`` NaN test): one ``isnan`` and one ``where``
    per leaf, which ``fnn.jit`` fuses.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.zero_nans()
        >>> g = {"a": torch.tensor([1.0, float("nan")]), "b": torch.ones(1)}
        >>> updates, state = opt.update(g, opt.init(g))
        >>> updates, state.found_nan
        ({'a': tensor([1., 0.]), 'b': tensor([1.])}, {'a': tensor(True), 'b': tensor(False)})
    """

    def init(params: Params) -> ZeroNansState:
        return ZeroNansState(
            _tree.map(lambda p: torch.zeros((), dtype=torch.bool, device=p.device), params)
        )

    def update(
        updates: Updates, state: ZeroNansState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ZeroNansState]:
        del params, extra
        u, udef, _ = _updates_and("fnn_optim.zero_nans", updates, state.found_nan)
        nans = [torch.isnan(x) for x in u]
        out = [torch.where(m, torch.zeros_like(x), x) for m, x in zip(nans, u, strict=True)]
        found = [m.any() for m in nans]
        return _unflatten(udef, out), ZeroNansState(_unflatten(udef, found))

    return GradientTransformation(init, update)


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`: ``count`` and ``rng_key``, an :mod:`fnn.random` key
    (``torch.uint32``, shape ``(2,)``); ``hyperparams``: ``eta``, ``gamma``."""

    count: Tensor
    rng_key: Tensor
    hyperparams: dict[str, Tensor]


def add_noise(eta: float = 0.01, gamma: float = 0.55, seed: int = 0) -> GradientTransformation:
    """Add annealed Gaussian noise (Neelakantan et al., 2015, arXiv:1511.06807), Optax's rule.

    With ``t = count + 1``: ``key, sample_key = fnn.random.split(rng_key)``; ``sample_key`` is
    split into one key per leaf (flatten order) and::

        updates = updates + sqrt(eta / t**gamma) * fnn.random.normal(leaf_key, leaf.shape)

    so the noise variance is ``eta / (1 + count)**gamma``. The same ``seed`` gives the same noise
    (and, since :mod:`fnn.random` is JAX's threefry, Optax's noise within float tolerance).
    **Per tensor**: one sampler call per leaf shape.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.add_noise(eta=1.0, seed=0)
        >>> g = {"w": torch.zeros(3)}
        >>> a, _ = opt.update(g, opt.init(g))
        >>> b, _ = opt.update(g, opt.init(g))
        >>> torch.equal(a["w"], b["w"]), bool(a["w"].abs().sum() > 0)
        (True, True)
    """

    def init(params: Params) -> AddNoiseState:
        _, device = _hyper_dtype_device(params)
        return AddNoiseState(
            _zero_count(params),
            _random.key(seed, device=device),
            _hyperparams(params, eta=eta, gamma=gamma),
        )

    def update(
        updates: Updates, state: AddNoiseState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, AddNoiseState]:
        del params, extra
        u, udef = _flatten(updates)
        h = state.hyperparams
        count = state.count + 1
        std = torch.sqrt(h["eta"] / count.to(h["eta"].dtype) ** h["gamma"])
        keys = _random.split(state.rng_key)
        rng_key, sample_key = keys[0], keys[1]
        out = list(u)
        if u:
            leaf_keys = _random.split(sample_key, len(u))
            noise = [
                _random.normal(leaf_keys[i], tuple(x.shape), dtype=x.dtype) for i, x in enumerate(u)
            ]
            out = list(_fe.add(u, _fe.mul(noise, std)))
        return _unflatten(udef, out), AddNoiseState(count, rng_key, h)

    return GradientTransformation(init, update)
