"""``step_``: one optimizer step in place, on torch's fused kernels where the optimizer has one.

A functional ``update`` must return new moment buffers, new updates and (with
``apply_updates``) new parameters, so eagerly it moves about 1.3x the memory of
``torch.optim``'s in-place ``foreach`` step (every new buffer is written to fresh memory).
``fnn.jit`` with donation removes that cost inside a compiled step. :func:`step_` removes it
eagerly: it overwrites the parameters and the state's tensors, as ``torch.optim`` does.

For :func:`fnn_optim.sgd`, :func:`fnn_optim.adam`, :func:`fnn_optim.adamw` and
:func:`fnn_optim.amsgrad` (built by those functions, without ``mask`` or ``eps_root``) the step
runs torch's hand-fused CPU/CUDA kernels (``torch._fused_adam_``, ``_fused_adamw_``,
``_fused_sgd_``: what ``torch.optim``'s ``fused=True`` runs): one pass over memory per
parameter. Any other transformation takes its functional ``update``, adds the updates into the
parameters, and copies the new state into the old state's tensors.

The functional ``update`` of those optimizers also avoids the chain's op-by-op passes in plain
eager mode (:func:`with_fused_steps` calls :mod:`fnn_optim._functional_steps`, which writes into
buffers recycled from earlier calls). The result is the chain's, to float rounding; under
``torch.compile``, inside a torch.func transform, or when autograd would record the update, the
chain runs op by op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fnn import tree as _tree
from fnn._src.recycle import Layout, layout_of
from fnn_optim._base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
    _check_tree,
    _flatten,
    _plain_eager,
    _resolve,
    apply_updates_,
)

__all__ = ["step_"]

# A fused in-place step: (grads, state, params) -> True if it did the step, False to fall back.
InplaceStep = Callable[[Updates, OptState, Params], bool]


# Off: ``update`` always runs the chain op by op (the tests' reference).
KERNELS_IN_UPDATE = True

# A fused functional step: (grads, state, params) -> (updates, new state), or None to fall back.
FunctionalStep = Callable[[Updates, OptState, "Params | None"], "tuple[Updates, OptState] | None"]


def with_fused_steps(
    opt: GradientTransformation, inplace: InplaceStep, functional: FunctionalStep | None = None
) -> GradientTransformation:
    """``opt`` (a chain made just now) with fused steps for plain eager calls.

    ``inplace`` serves :func:`step_`. ``functional``, when given, serves ``update`` itself in
    plain eager mode (not under ``torch.compile`` or a torch.func transform); whenever it returns
    None (an input it does not handle, or a malformed one) the chain's own update runs and
    reports any error.
    """
    chain_update = opt.update
    if functional is None:
        update = chain_update
    else:

        def update(
            updates: Updates, state: OptState, params: Params | None = None, **extra: Any
        ) -> tuple[Updates, OptState]:
            if KERNELS_IN_UPDATE and _plain_eager():
                done = functional(updates, state, params)
                if done is not None:
                    return done
            return chain_update(updates, state, params, **extra)

    update._fnn_inplace_step = inplace  # type: ignore[attr-defined]
    return GradientTransformation(opt.init, update)


def step_(opt: GradientTransformation, grads: Updates, state: OptState, params: Params) -> OptState:
    """One step of ``opt`` done in place: ``params`` and the tensors of ``state`` are overwritten.

    The same step as::

        updates, new_state = opt.update(grads, state, params)
        fnn_optim.apply_updates_(params, updates)

    but the returned state is ``state`` itself, its tensors holding the new values, so the old
    state is gone (do not keep references to it). This is ``torch.optim``'s memory behaviour,
    for eager training loops; inside ``fnn.jit``, donate the parameters and the state instead and
    keep the functional ``update``.

    ``sgd``, ``adam``, ``adamw`` and ``amsgrad`` (without ``mask``, with ``eps_root=0``, on
    contiguous leaves) run torch's fused kernels, the ones ``torch.optim``'s ``fused=True``
    runs; those pair elements by memory order, so non-contiguous leaves (a transposed gradient)
    take the functional path. Their results equal
    the functional update to float rounding, not bit for bit. Every other optimizer runs its
    functional update and copies the result into the old buffers. Under ``torch.compile`` or a
    torch.func transform the functional path is always taken.

    Args:
        opt: any gradient transformation.
        grads: the gradients, a pytree like ``params``.
        state: ``opt``'s state for ``params``; updated in place and returned.
        params: the parameters, a pytree of tensors; updated in place (tensors that require grad,
            e.g. ``nn.Parameter``, are written under ``torch.no_grad``).

    Returns:
        ``state``, with its tensors holding the state after the step.

    Raises:
        ValueError: the trees of ``grads``, ``params`` and ``state`` do not match ``opt``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.adam(learning_rate=0.1)
        >>> state = opt.init(params)
        >>> state = fnn_optim.step_(opt, {"w": torch.tensor([0.5, -3.0])}, state, params)
        >>> params["w"]
        tensor([ 0.9000, -1.9000])
        >>> int(state[0].count)  # the state's tensors were updated in place
        1
    """
    fused: InplaceStep | None = getattr(opt.update, "_fnn_inplace_step", None)
    if fused is not None and _plain_eager():
        with torch.no_grad():
            if fused(grads, state, params):
                return state
    updates, new_state = opt.update(grads, state, params)
    apply_updates_(params, updates)
    old, odef = _flatten(state)
    new, ndef = _flatten(new_state)
    _check_tree("fnn_optim.step_", ndef, odef, names=("the new state", "the old state"))
    with torch.no_grad():
        for a, b in zip(old, new, strict=True):
            if isinstance(a, Tensor) and a is not b:
                a.copy_(b)
    return state


# --------------------------------------------------------------------------------------------
# The fused kernels
# --------------------------------------------------------------------------------------------


def _parts(layout: Layout) -> list[list[int]] | None:
    """The positions of a :func:`~fnn._src.recycle.layout_of` split by (device, dtype), as
    fused kernels need; None unless every leaf is a strided floating-point tensor."""
    dtypes = {dtype for _, dtype, _, _ in layout}
    devices = {device for _, _, device, _ in layout}
    if not all(dtype.is_floating_point for dtype in dtypes):
        return None
    if not {kind for _, _, _, kind in layout} <= {torch.strided}:
        return None
    if len(dtypes) <= 1 and len(devices) <= 1:
        return [list(range(len(layout)))]
    where: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, (_, dtype, device, _) in enumerate(layout):
        where.setdefault((device, dtype), []).append(i)
    return list(where.values())


def _layout(leaves: list[Any]) -> Layout | None:
    """:func:`~fnn._src.recycle.layout_of` the leaves, None when one is not a tensor."""
    for t in leaves:
        if not isinstance(t, Tensor):
            return None
    return layout_of(leaves)


def _partition(*lists: list[Tensor]) -> list[list[int]] | None:
    """Split the positions of parallel lists of leaves by (device, dtype), as fused kernels need.

    None when some leaf cannot take a fused path (not a floating-point tensor, or its companions
    differ in shape, dtype or device, which the functional path reports with a clear error).
    """
    layout = _layout(lists[0])
    if layout is None or any(_layout(leaves) != layout for leaves in lists[1:]):
        return None
    if not all(dense(leaves) for leaves in lists):
        return None
    return _parts(layout)


_IS_CONTIGUOUS = Tensor.is_contiguous


def dense(tensors: list[Tensor]) -> bool:
    """Whether every tensor is contiguous. Torch's fused optimizer kernels walk each tensor's
    memory in order and pair elements by position, so a leaf with other strides (a transposed
    gradient, a channels-last weight) gets the wrong partner: in torch 2.13
    ``torch.optim.Adam(fused=True)`` itself steps wrongly with a non-contiguous gradient. Such
    leaves take the op-by-op path."""
    return all(map(_IS_CONTIGUOUS, tensors))


def _split(parts: list[list[int]], *lists: list[Tensor]) -> list[tuple[list[Tensor], ...]]:
    """``lists`` cut into the groups of positions ``parts`` (no copy when there is one group)."""
    if len(parts) == 1:
        return [lists]
    return [tuple([leaves[i] for i in idx] for leaves in lists) for idx in parts]


def _groups(*lists: list[Tensor]) -> list[tuple[list[Tensor], ...]] | None:
    """:func:`_partition` and :func:`_split` in one: the lists by (device, dtype), or None."""
    parts = _partition(*lists)
    return None if parts is None else _split(parts, *lists)


def _leaves(where: str, params: Params, grads: Updates) -> tuple[list[Tensor], list[Tensor]]:
    p, pdef = _flatten(params)
    g, gdef = _flatten(grads)
    _check_tree(where, gdef, pdef, names=("the gradients", "the params"))
    return p, g


def lr_resolver(learning_rate: Any) -> Callable[[Any], Tensor]:
    """``lr_state -> this step's learning rate``, as :func:`scale_by_learning_rate` resolves it."""

    def resolve(lr_state: Any) -> Tensor:
        return _resolve(learning_rate, lr_state.count, lr_state.hyperparams["learning_rate"])

    return resolve


def _learning_rate(resolve: Callable[[Any], Tensor], lr_state: Any) -> Tensor:
    """The learning rate of this step; advance the ``scale_by_learning_rate`` state in place."""
    lr = resolve(lr_state)
    lr_state.hyperparams["learning_rate"].copy_(lr)
    lr_state.count.add_(1)
    return lr


def _adam_members(
    state: Any, *, decoupled: bool, coupled_decay: bool
) -> tuple[int, Any, Any, Any] | None:
    """``(at, decay, adam, lr)``: where ``scale_by_adam``'s state sits in an ``adam``/``adamw``
    chain state, the ``add_decayed_weights`` state (None without one), the Adam state and the
    learning-rate state; None for a state of another shape or with ``eps_root`` (which torch's
    kernels do not have)."""
    n = 3 if decoupled or coupled_decay else 2
    if not isinstance(state, tuple) or len(state) != n:
        return None
    at = 1 if coupled_decay else 0  # (decay, adam, lr), (adam, decay, lr) or (adam, lr)
    decay = state[0] if coupled_decay else state[1] if decoupled else None
    if state[at].hyperparams["eps_root"].item() != 0:
        return None
    return at, decay, state[at], state[-1]


def _sgd_layout(state: Any, *, coupled_decay: bool, momentum: bool) -> Any | None:
    """The ``add_decayed_weights`` state of an ``sgd`` chain state (None without one), or
    ``False`` for a state of another shape. The trace, if any, is ``state[-2]``."""
    n = 1 + coupled_decay + momentum
    if not isinstance(state, tuple) or len(state) != n:
        return False
    return state[0] if coupled_decay else None


def _replaced(state: tuple[Any, ...], changes: dict[int, Any]) -> tuple[Any, ...]:
    members = list(state)
    for i, member in changes.items():
        members[i] = member
    return tuple(members)


def _run_adam(
    kernel: Any,
    groups: list[tuple[list[Tensor], ...]],
    count: Tensor,
    lr: float,
    h: dict[str, Tensor],
    *,
    amsgrad: bool,
    weight_decay: float = 0.0,
) -> None:
    """``kernel`` (``torch._fused_adam_`` or ``_fused_adamw_``) on each (device, dtype) group of
    (params, grads, mu, nu, nu_max) lists, at step ``count``."""
    steps = [count.to(torch.float32)]
    for gp, gg, gm, gn, gx in groups:
        kernel(
            gp,
            gg,
            gm,
            gn,
            gx if amsgrad else [],
            steps * len(gp),
            lr=lr,
            beta1=h["b1"].item(),
            beta2=h["b2"].item(),
            weight_decay=weight_decay,
            eps=h["eps"].item(),
            amsgrad=amsgrad,
            maximize=False,
        )


def _run_sgd(
    groups: list[tuple[list[Tensor], ...]],
    h: dict[str, Tensor] | None,
    lr: float,
    *,
    nesterov: bool,
    first: bool,
    weight_decay: float = 0.0,
) -> None:
    """``torch._fused_sgd_`` on each group of (params, grads, momentum buffers) lists; ``h`` is
    the trace's hyperparameters (None: no momentum, the buffers are not used)."""
    for gp, gg, gb in groups:
        torch._fused_sgd_(
            gp,
            gg,
            gb if h is not None else [],
            weight_decay=weight_decay,
            momentum=0.0 if h is None else h["momentum"].item(),
            lr=lr,
            dampening=0.0 if h is None else h["dampening"].item(),
            nesterov=nesterov,
            maximize=False,
            is_first_step=first,
        )


def adam_inplace_step(
    resolve_lr: Callable[[Any], Tensor], *, decoupled: bool, coupled_decay: bool, amsgrad: bool
) -> InplaceStep:
    """The fused step of ``adam`` (``coupled_decay``: its chain starts with the decay) / ``adamw``.

    ``resolve_lr(lr_state)`` gives the step's learning rate (the schedule at ``count``, or the
    stored value) as :func:`scale_by_learning_rate` computes it.
    """

    def step(grads: Updates, state: Any, params: Params) -> bool:
        members = _adam_members(state, decoupled=decoupled, coupled_decay=coupled_decay)
        if members is None:  # the functional path runs (and reports a malformed state)
            return False
        _, decay_state, adam_state, lr_state = members
        h = adam_state.hyperparams
        p, g = _leaves("fnn_optim.step_", params, grads)
        mu, nu = _tree.leaves(adam_state.mu), _tree.leaves(adam_state.nu)
        nu_max = _tree.leaves(adam_state.nu_max) if amsgrad else nu
        groups = _groups(p, g, mu, nu, nu_max)
        if groups is None:
            return False
        lr = _learning_rate(resolve_lr, lr_state).item()
        adam_state.count.add_(1)
        wd = 0.0 if decay_state is None else decay_state.hyperparams["weight_decay"].item()
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        _run_adam(kernel, groups, adam_state.count, lr, h, amsgrad=amsgrad, weight_decay=wd)
        return True

    return step


def sgd_inplace_step(
    resolve_lr: Callable[[Any], Tensor], *, coupled_decay: bool, momentum: bool, nesterov: bool
) -> InplaceStep:
    """The fused step of ``sgd``: optional coupled decay, optional ``trace``, learning rate."""

    def step(grads: Updates, state: Any, params: Params) -> bool:
        decay_state = _sgd_layout(state, coupled_decay=coupled_decay, momentum=momentum)
        if decay_state is False:
            return False
        trace_state, lr_state = (state[-2] if momentum else None), state[-1]
        p, g = _leaves("fnn_optim.step_", params, grads)
        bufs = _tree.leaves(trace_state.trace) if momentum else p
        groups = _groups(p, g, bufs)
        if groups is None:
            return False
        first = False
        if trace_state is not None:
            if trace_state.hyperparams["momentum"].item() == 0:
                return False  # the kernel then takes no buffers; the trace keeps (1 - d) * g
            first = bool(trace_state.count == 0)
            trace_state.count.add_(1)
        lr = _learning_rate(resolve_lr, lr_state).item()
        wd = 0.0 if decay_state is None else decay_state.hyperparams["weight_decay"].item()
        h = None if trace_state is None else trace_state.hyperparams
        _run_sgd(groups, h, lr, nesterov=nesterov, first=first, weight_decay=wd)
        return True

    return step
