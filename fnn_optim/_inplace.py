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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fnn import tree as _tree
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


def with_inplace_step(opt: GradientTransformation, step: InplaceStep) -> GradientTransformation:
    """Mark ``opt`` (made by a chain just now) as having a fused in-place step for :func:`step_`."""
    opt.update._fnn_inplace_step = step  # type: ignore[attr-defined]
    return opt


def step_(opt: GradientTransformation, grads: Updates, state: OptState, params: Params) -> OptState:
    """One step of ``opt`` done in place: ``params`` and the tensors of ``state`` are overwritten.

    The same step as::

        updates, new_state = opt.update(grads, state, params)
        fnn_optim.apply_updates_(params, updates)

    but the returned state is ``state`` itself, its tensors holding the new values, so the old
    state is gone (do not keep references to it). This is ``torch.optim``'s memory behaviour,
    for eager training loops; inside ``fnn.jit``, donate the parameters and the state instead and
    keep the functional ``update``.

    ``sgd``, ``adam``, ``adamw`` and ``amsgrad`` (without ``mask``, with ``eps_root=0``) run
    torch's fused kernels, the ones ``torch.optim``'s ``fused=True`` runs. Their results equal
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


def _groups(*lists: list[Tensor]) -> list[tuple[list[Tensor], ...]] | None:
    """Split parallel lists of leaves by (device, dtype) as torch's fused kernels need them.

    None when some leaf cannot take the fused path (not floating point, or its companions differ
    in shape, dtype or device, which the functional path reports with a clear error).
    """
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], ...]] = {}
    for leaves in zip(*lists, strict=True):
        first = leaves[0]
        if not isinstance(first, Tensor) or not first.is_floating_point():
            return None
        for t in leaves[1:]:
            if (
                not isinstance(t, Tensor)
                or t.shape != first.shape
                or t.dtype != first.dtype
                or t.device != first.device
            ):
                return None
        key = (first.device, first.dtype)
        if key not in groups:
            groups[key] = tuple([] for _ in lists)
        for bucket, t in zip(groups[key], leaves, strict=True):
            bucket.append(t)
    return list(groups.values())


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


def adam_inplace_step(
    resolve_lr: Callable[[Any], Tensor], *, decoupled: bool, coupled_decay: bool, amsgrad: bool
) -> InplaceStep:
    """The fused step of ``adam`` (``coupled_decay``: its chain starts with the decay) / ``adamw``.

    ``resolve_lr(lr_state)`` gives the step's learning rate (the schedule at ``count``, or the
    stored value) as :func:`scale_by_learning_rate` computes it.
    """

    def step(grads: Updates, state: Any, params: Params) -> bool:
        if coupled_decay:
            decay_state, adam_state, lr_state = state
            wd = decay_state.hyperparams["weight_decay"]
        elif decoupled:
            adam_state, decay_state, lr_state = state
            wd = decay_state.hyperparams["weight_decay"]
        else:
            adam_state, lr_state = state
            wd = None
        h = adam_state.hyperparams
        if h["eps_root"].item() != 0:
            return False
        p, g = _leaves("fnn_optim.step_", params, grads)
        mu, nu = _tree.leaves(adam_state.mu), _tree.leaves(adam_state.nu)
        nu_max = _tree.leaves(adam_state.nu_max) if amsgrad else nu
        groups = _groups(p, g, mu, nu, nu_max)
        if groups is None:
            return False
        lr = _learning_rate(resolve_lr, lr_state).item()
        adam_state.count.add_(1)
        steps = [adam_state.count.to(torch.float32)]
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
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
                weight_decay=0.0 if wd is None else wd.item(),
                eps=h["eps"].item(),
                amsgrad=amsgrad,
                maximize=False,
            )
        return True

    return step


def sgd_inplace_step(
    resolve_lr: Callable[[Any], Tensor], *, coupled_decay: bool, momentum: bool, nesterov: bool
) -> InplaceStep:
    """The fused step of ``sgd``: optional coupled decay, optional ``trace``, learning rate."""

    def step(grads: Updates, state: Any, params: Params) -> bool:
        parts = list(state)
        decay_state = parts.pop(0) if coupled_decay else None
        trace_state = parts.pop(0) if momentum else None
        (lr_state,) = parts
        p, g = _leaves("fnn_optim.step_", params, grads)
        bufs = _tree.leaves(trace_state.trace) if momentum else p
        groups = _groups(p, g, bufs)
        if groups is None:
            return False
        m = d = 0.0
        first = False
        if trace_state is not None:
            m = trace_state.hyperparams["momentum"].item()
            if m == 0:  # the kernel then takes no buffers; the trace still keeps (1 - d) * g
                return False
            d = trace_state.hyperparams["dampening"].item()
            first = bool(trace_state.count == 0)
            trace_state.count.add_(1)
        lr = _learning_rate(resolve_lr, lr_state).item()
        wd = 0.0 if decay_state is None else decay_state.hyperparams["weight_decay"].item()
        for gp, gg, gb in groups:
            torch._fused_sgd_(
                gp,
                gg,
                gb if momentum else [],
                weight_decay=wd,
                momentum=m,
                lr=lr,
                dampening=d,
                nesterov=nesterov,
                maximize=False,
                is_first_step=first,
            )
        return True

    return step
