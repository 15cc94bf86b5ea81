"""The functional ``update`` of ``sgd``, ``adam``, ``adamw`` and ``amsgrad`` in plain eager mode.

A functional update must return a new state and new updates. Written op by op through the
chain, that is eight foreach passes for Adam and fresh memory for every new buffer (which glibc
page-faults back in every step unless fnn's ``"keep"`` CPU memory policy is on). Here each new
buffer is one the update returned two calls earlier and nothing outside the optimizer refers to
any more (:mod:`fnn._src.recycle`), and the arithmetic takes few passes:

- Adam / AdamW / AMSGrad: the new moments start as copies of the old ones, the updates as a
  zeroed buffer, and torch's fused kernel (``torch._fused_adam_``) advances them; AdamW's
  decay is added to the updates afterwards.
- SGD with momentum: when the two new buffers together are at least the size of the last-level cache
  or 32 MiB, whichever is smaller, one pass of :mod:`fnn_optim._streaming`'s kernel writes both with
  streaming stores (a plain store to memory out of cache reads it in first). Otherwise each leaf's
  new momentum buffer and updates are written with two ``out=`` ops, the second reading what the
  first just wrote while it is still in cache (the fused kernel would need a copy and a zeroed
  buffer first). Both give the same bits.

Coupled weight decay first writes ``grads + weight_decay * params`` into a recycled buffer.
Each step returns None (the chain runs and reports any problem) for inputs it does not take:
autograd would record the update, a leaf is a tensor subclass or not a floating-point strided
tensor, or the trees or layouts disagree. :func:`fnn_optim._inplace.with_fused_steps` calls
these only in plain eager mode.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fnn import tree as _tree
from fnn._src.recycle import Layout, Recycler
from fnn_optim import _streaming
from fnn_optim._base import Params, Updates, _flatten, _unflatten
from fnn_optim._inplace import (
    FunctionalStep,
    _adam_members,
    _layout,
    _parts,
    _replaced,
    _run_adam,
    _sgd_layout,
    _split,
    dense,
)

_REQUIRES_GRAD = operator.attrgetter("requires_grad")

try:  # dynamo's C++ check of tensor metadata (part of torch._C; torch._dynamo stays unimported)
    from torch._C._dynamo.guards import TensorGuards as _TensorGuards
except ImportError:  # pragma: no cover - a torch build without it: the Python checks run
    _TensorGuards = None


def _unsuitable(tensors: list[Tensor], params: list[Tensor]) -> bool:
    """True when the chain's ops must run instead of a kernel on recycled buffers: autograd
    would record the update, or a gradient or state leaf is a tensor subclass (whose own ops
    must run). ``params`` (read by weight decay) may be ``nn.Parameter``s."""
    if not set(map(type, tensors)) <= {Tensor}:
        return True
    return torch.is_grad_enabled() and (
        any(map(_REQUIRES_GRAD, tensors)) or any(map(_REQUIRES_GRAD, params))
    )


def _read_params(params: Params | None, gdef: Any) -> list[Tensor] | None:
    """The leaves of ``params`` for a step that reads them (weight decay); None when missing or
    shaped unlike the gradients (the chain then reports it)."""
    if params is None:
        return None
    p, pdef = _flatten(params)
    return p if pdef == gdef else None


def _next_lr_state(lr_state: Any, lr: Tensor) -> Any:
    """The state :func:`scale_by_learning_rate`'s update returns after using ``lr``."""
    return type(lr_state)(lr_state.count + 1, {"learning_rate": lr}, dict(lr_state.scheduled))


def _with_coupled_decay(
    recycler: Recycler, g: list[Tensor], p: list[Tensor], decay_state: Any, layout: Layout
) -> list[Tensor]:
    """``g + weight_decay * p`` in a recycled buffer (``g`` itself without coupled decay);
    ``layout`` is the gradients' (and the parameters')."""
    if decay_state is None:
        return g
    wd = decay_state.hyperparams["weight_decay"].item()
    if wd == 0:
        return g
    decayed = recycler.take("decayed grads", layout)
    torch._foreach_copy_(decayed, g)
    torch._foreach_add_(decayed, p, alpha=wd)
    recycler.keep("decayed grads", decayed, layout)
    return decayed


def _checked_layout(
    recycler: Recycler,
    g: list[Tensor],
    state: dict[str, list[Tensor]],
    p: list[Tensor],
    last: _LastLayout | None = None,
) -> tuple[Layout, list[list[int]]] | None:
    """The gradients' layout and its (device, dtype) groups, when every state list (kept by
    ``recycler`` under its role) and the parameters (when read) are laid out alike and no
    input needs the chain's ops (see :func:`_unsuitable`); None otherwise. ``last`` remembers
    an accepted layout, so that later calls with tensors just like these skip the reads."""
    if last is not None:
        known = last.match(g, state.values(), p)
        if known is not None:
            return known
    layout = _layout(g)
    if layout is None:
        return None
    for role, leaves in state.items():
        if _unsuitable(leaves, []) or recycler.layout(role, leaves) != layout:
            return None
    if p and _layout(p) != layout:
        return None
    if _unsuitable(g, p) or not (dense(g) and dense(p) and all(map(dense, state.values()))):
        return None
    parts = _parts(layout)
    if parts is None:
        return None
    if last is not None:
        last.remember(g, (layout, parts))
    return layout, parts


class _LastLayout:
    """The last layout :func:`_checked_layout` accepted, re-checked in C++ on later calls.

    Reading shape, dtype, device and layout of each leaf from Python took about 250 µs a call
    for the 150 gradients and 150 momentum buffers of ``benchmarks/optim_bench.py`` here (their
    metadata is out of cache after a step that streams 80 MB). Dynamo's ``TensorGuards`` checks
    each tensor's type, shape, strides, dtype, device, ``requires_grad`` and dispatch keys in
    C++; a list that passes it for the remembered gradients has their layout and is suitable:
    only layouts of plain tensors that do not require grad are remembered, so grad mode and
    autograd cannot matter.
    """

    __slots__ = ("_guards", "_n", "_result")

    def __init__(self) -> None:
        self._guards: Any = None
        self._n = -1
        self._result: tuple[Layout, list[list[int]]] | None = None

    def match(
        self, g: list[Tensor], state: Any, p: list[Tensor]
    ) -> tuple[Layout, list[list[int]]] | None:
        guards, n = self._guards, self._n
        if guards is None or len(g) != n or not guards.check(*g):
            return None
        for leaves in state:
            if len(leaves) != n or not guards.check(*leaves):
                return None
        if p and (len(p) != n or not guards.check(*p)):
            return None
        return self._result

    def remember(self, g: list[Tensor], result: tuple[Layout, list[list[int]]]) -> None:
        if _TensorGuards is None or any(map(_REQUIRES_GRAD, g)):
            return
        self._guards = _TensorGuards(*g, dynamic_dims_sizes=None, dynamic_dims_strides=None)
        self._n = len(g)
        self._result = result


def adam_functional_step(
    resolve_lr: Callable[[Any], Tensor], *, decoupled: bool, coupled_decay: bool, amsgrad: bool
) -> FunctionalStep:
    """The functional update of ``adam`` / ``adamw`` on torch's fused kernel.

    New moments: copies of the old ones (into recycled buffers) that the kernel advances in
    place. Updates: a zeroed buffer taken as the kernel's "parameters", which it leaves holding
    ``-lr * direction``; ``adamw`` then adds ``-lr * weight_decay * params``. Four passes (two
    copies, a fill and the kernel) instead of the chain's eight, and no new memory once warm
    (see :mod:`fnn._src.recycle`). Coupled decay (``adam(weight_decay=...)``) first writes
    ``grads + weight_decay * params`` into a recycled buffer (the chain's first transform).
    """
    recycler, last = Recycler(), _LastLayout()

    def update(grads: Updates, state: Any, params: Params | None) -> Any:
        members = _adam_members(state, decoupled=decoupled, coupled_decay=coupled_decay)
        if members is None:
            return None
        at, decay_state, adam_state, lr_state = members
        h = adam_state.hyperparams
        g, gdef = _flatten(grads)
        mu, mudef = _flatten(adam_state.mu)
        nu, nudef = _flatten(adam_state.nu)
        if gdef != mudef or nudef != mudef:
            return None
        nu_max = _tree.leaves(adam_state.nu_max) if amsgrad else nu
        p = _read_params(params, gdef) if decay_state is not None else []
        if p is None:
            return None
        moments = {"mu": mu, "nu": nu, **({"nu_max": nu_max} if amsgrad else {})}
        checked = _checked_layout(recycler, g, moments, p, last)
        if checked is None:
            return None
        layout, parts = checked
        new_mu = recycler.take("mu", layout)
        new_nu = recycler.take("nu", layout)
        new_max = recycler.take("nu_max", layout) if amsgrad else []
        u = recycler.take("updates", layout)
        with torch.no_grad():
            decay = decay_state if coupled_decay else None
            g = _with_coupled_decay(recycler, g, p, decay, layout)
            torch._foreach_copy_(new_mu, mu)
            torch._foreach_copy_(new_nu, nu)
            if amsgrad:
                torch._foreach_copy_(new_max, nu_max)
            torch._foreach_zero_(u)
            count = adam_state.count + 1
            lr = resolve_lr(lr_state)
            rate = lr.item()
            groups = _split(parts, u, g, new_mu, new_nu, new_max if amsgrad else new_nu)
            _run_adam(torch._fused_adam_, groups, count, rate, h, amsgrad=amsgrad)
            if decoupled:
                wd = decay_state.hyperparams["weight_decay"].item()
                if wd != 0:
                    torch._foreach_add_(u, p, alpha=-rate * wd)
        recycler.keep("mu", new_mu, layout)
        recycler.keep("nu", new_nu, layout)
        if amsgrad:
            recycler.keep("nu_max", new_max, layout)
        recycler.keep("updates", u, layout)
        new_adam = adam_state._replace(
            count=count,
            mu=_unflatten(mudef, new_mu),
            nu=_unflatten(mudef, new_nu),
            nu_max=_unflatten(mudef, new_max) if amsgrad else None,
        )
        changes = {at: new_adam, -1: _next_lr_state(lr_state, lr)}
        return _unflatten(gdef, u), _replaced(state, changes)

    return update


def _sgd_leafwise(
    g: list[Tensor],
    buf: list[Tensor],
    new_buf: list[Tensor],
    u: list[Tensor],
    m: float,
    dampening: float,
    nlr: Tensor,
    *,
    first: bool,
    nesterov: bool,
) -> None:
    """torch.optim.SGD's momentum rule (see :func:`fnn_optim.trace`), leaf by leaf: the new
    momentum buffers into ``new_buf``, ``nlr * direction`` into ``u`` (``nlr = -lr``). Each
    leaf's second op reads what its first just wrote, while it is still in cache."""
    add, mul = torch.add, torch.mul
    if not first and dampening == 0 and not nesterov:  # the usual case
        for gi, bi, xi, ui in zip(g, buf, new_buf, u, strict=True):
            add(gi, bi, alpha=m, out=xi)
            mul(xi, nlr, out=ui)
        return
    for gi, bi, xi, ui in zip(g, buf, new_buf, u, strict=True):
        if first:  # torch.optim: the buffer starts as the gradient
            xi.copy_(gi)
        else:
            mul(bi, m, out=xi)
            xi.add_(gi, alpha=1 - dampening)
        if nesterov:
            add(gi, xi, alpha=m, out=ui)
            ui.mul_(nlr)
        else:
            mul(xi, nlr, out=ui)


def sgd_functional_step(
    resolve_lr: Callable[[Any], Tensor], *, coupled_decay: bool, momentum: bool, nesterov: bool
) -> FunctionalStep:
    """The functional update of ``sgd`` with momentum, into recycled buffers.

    No torch kernel fits: ``_fused_sgd_`` updates its buffers in place, so it would need a copy of
    the momentum buffer and a zeroed updates buffer first (11 passes over memory with
    ``apply_updates_`` against ``torch.optim`` foreach's 8). The new momentum buffer and the updates
    go into buffers recycled from two calls earlier (see :mod:`fnn._src.recycle`): for float32 CPU
    states at least the size of the last-level cache or 32 MiB (after the first step, without
    dampening) in one pass of :func:`fnn_optim._streaming.sgd_momentum`'s streaming stores;
    otherwise leaf by leaf with ``out=`` ops, the second reading what the first just wrote while it
    is still in cache. Coupled decay first writes ``grads + weight_decay * params`` into a recycled
    buffer. Momentum-free SGD is left to the chain (one multiplication).
    """
    recycler, last = Recycler(), _LastLayout()

    def update(grads: Updates, state: Any, params: Params | None) -> Any:
        if not momentum:
            return None
        decay_state = _sgd_layout(state, coupled_decay=coupled_decay, momentum=True)
        if decay_state is False:
            return None
        trace_state, lr_state = state[-2], state[-1]
        h = trace_state.hyperparams
        m = h["momentum"].item()
        if m == 0:
            return None
        g, gdef = _flatten(grads)
        buf, bdef = _flatten(trace_state.trace)
        p = _read_params(params, gdef) if decay_state is not None else []
        if p is None or bdef != gdef:
            return None
        checked = _checked_layout(recycler, g, {"trace": buf}, p, last)
        if checked is None:
            return None
        layout, parts = checked
        new_buf = recycler.take("trace", layout)
        u = recycler.take("updates", layout)
        with torch.no_grad():
            g = _with_coupled_decay(recycler, g, p, decay_state, layout)
            lr = resolve_lr(lr_state)
            first = bool(trace_state.count == 0)
            dampening = h["dampening"].item()
            streamed = (
                not first
                and dampening == 0
                and len(parts) == 1
                and layout[0][1] == torch.float32
                and layout[0][2].type == "cpu"
                and _streaming.sgd_momentum(g, buf, new_buf, u, m, -lr.item(), nesterov=nesterov)
            )
            if not streamed:
                _sgd_leafwise(g, buf, new_buf, u, m, dampening, -lr, first=first, nesterov=nesterov)
        recycler.keep("trace", new_buf, layout)
        recycler.keep("updates", u, layout)
        new_trace = trace_state._replace(
            count=trace_state.count + 1, trace=_unflatten(bdef, new_buf)
        )
        changes = {-2: new_trace, -1: _next_lr_state(lr_state, lr)}
        return _unflatten(gdef, u), _replaced(state, changes)

    return update
