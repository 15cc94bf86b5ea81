"""The eager functional update reuses the buffers of states and updates nobody holds any more.

``adam``, ``adamw``, ``amsgrad`` and ``sgd`` with momentum (with or without coupled weight decay)
write their new moments and updates into buffers they returned two steps earlier, once nothing
outside the optimizer refers to them (``fnn._src.recycle``). A state or an update still held
in any way (a Python reference, a view, a detached alias, a numpy array, a DLPack capsule) must
keep its values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.utils.dlpack

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

OPTIMIZERS = {
    "adam": lambda: optim.adam(0.05),
    "adamw": lambda: optim.adamw(0.05, weight_decay=0.1),
    "amsgrad": lambda: optim.amsgrad(0.05),
    "sgd momentum": lambda: optim.sgd(0.05, momentum=0.9),
    "adam coupled decay": lambda: optim.adam(0.05, weight_decay=0.1),
    "sgd nesterov + decay": lambda: optim.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
}


def _setup(make, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = {"w": torch.randn(5, 4, generator=g), "b": torch.randn(4, generator=g)}
    grads = [{k: torch.randn(v.shape, generator=g) for k, v in params.items()} for _ in range(8)]
    opt = make()
    return opt, params, grads


def _buffers(tree) -> set[int]:
    return {t.data_ptr() for t in fnn.tree.leaves(tree) if isinstance(t, torch.Tensor) and t.dim()}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_dropped_states_and_updates_are_reused(name):
    opt, params, grads = _setup(OPTIMIZERS[name])
    state = opt.init(params)
    seen_states, seen_updates = [], []
    for g in grads:
        updates, state = opt.update(g, state, params)
        optim.apply_updates_(params, updates)
        seen_states.append(_buffers(state))
        seen_updates.append(_buffers(updates))
        del updates
    # from the third step on, the state sits in the buffers of the state two steps before
    for k in range(2, len(grads)):
        assert seen_states[k] == seen_states[k - 2]
        assert seen_updates[k] & (seen_updates[k - 1] | seen_updates[k - 2])


def _hold_reference(t):
    return t


HOLDERS = {
    "reference": _hold_reference,
    "view": lambda t: t[..., :1],
    "detached alias": lambda t: t.detach(),
    "numpy array": lambda t: t.numpy(),
    "storage": lambda t: t.untyped_storage(),
    "dlpack capsule": torch.utils.dlpack.to_dlpack,
}


@pytest.mark.parametrize("holder", sorted(HOLDERS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_anything_still_held_keeps_its_values(name, holder):
    opt, params, grads = _setup(OPTIMIZERS[name])
    state = opt.init(params)
    held, snapshots = [], []
    for i, g in enumerate(grads):
        updates, state = opt.update(g, state, params)
        optim.apply_updates_(params, updates)
        if i in (1, 4):  # hold one leaf of this state and of these updates, by `holder` only
            for tree in (state, updates):
                leaf = next(t for t in fnn.tree.leaves(tree) if t.dim())
                held.append(HOLDERS[holder](leaf))
                snapshots.append(leaf.clone())
        del updates
    for h, snap in zip(held, snapshots, strict=True):
        if isinstance(h, torch.UntypedStorage):
            h = torch.tensor([], dtype=snap.dtype).set_(h)[: snap.numel()].view(snap.shape)
        elif not isinstance(h, torch.Tensor | np.ndarray):
            h = torch.utils.dlpack.from_dlpack(h)
        got = torch.as_tensor(h)
        assert_trees_all_equal(got, snap[..., : got.shape[-1]])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_kept_states_give_the_same_trajectory(name):
    # A user who keeps every state (nothing is recycled) and one who drops them (everything is)
    # see the same numbers.
    opt_a, params_a, grads = _setup(OPTIMIZERS[name])
    opt_b, params_b, _ = _setup(OPTIMIZERS[name])
    sa, sb = opt_a.init(params_a), opt_b.init(params_b)
    kept = []
    for g in grads:
        ua, sa = opt_a.update(g, sa, params_a)
        optim.apply_updates_(params_a, ua)
        kept.append((ua, sa))
        ub, sb = opt_b.update(g, sb, params_b)
        optim.apply_updates_(params_b, ub)
        del ub
    assert_trees_all_equal(params_a, params_b)
    assert_trees_all_equal(sa, sb)


def test_differentiable_inputs_take_the_chain_and_keep_the_graph():
    opt, params, grads = _setup(OPTIMIZERS["adam"])
    g = {k: v.clone().requires_grad_() for k, v in grads[0].items()}
    updates, _ = opt.update(g, opt.init(params), params)
    assert all(u.grad_fn is not None for u in updates.values())
    with torch.no_grad():
        updates, _ = opt.update(g, opt.init(params), params)
    assert all(u.grad_fn is None for u in updates.values())
    want, _ = optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(0.05)).update(
        grads[0], opt.init(params), params
    )
    assert_trees_all_close(updates, want, rtol=1e-6, atol=1e-7)


def _reference(make, params, grads):
    """The same steps with the chain op by op (no kernels, no recycling)."""
    from unittest import mock

    opt = make()
    params = {k: v.clone() for k, v in params.items()}
    state = opt.init(params)
    with mock.patch("fnn_optim._inplace.KERNELS_IN_UPDATE", False):
        for g in grads:
            updates, state = opt.update(g, state, params)
            optim.apply_updates_(params, updates)
    return params, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_buffers_made_under_inference_mode_are_not_written_outside_it(name):
    opt, params, grads = _setup(OPTIMIZERS[name])
    want_p, want_s = _reference(OPTIMIZERS[name], params, grads)
    state = opt.init(params)
    for i, g in enumerate(grads):
        if i < 3:
            with torch.inference_mode():
                updates, state = opt.update(g, state, params)
                optim.apply_updates_(params, updates)
            state = fnn.tree.map(torch.clone, state)  # normal tensors again
        else:
            updates, state = opt.update(g, state, params)
            optim.apply_updates_(params, updates)
        del updates
    assert_trees_all_close(params, want_p, rtol=2e-5, atol=2e-6)
    assert_trees_all_close(state, want_s, rtol=2e-5, atol=2e-6)


class _Tagged(torch.Tensor):
    """A trivial tensor subclass: its own ops must run, so no fused kernel takes it."""


def test_tensor_subclasses_take_the_chain():
    from unittest import mock

    opt, params, grads = _setup(OPTIMIZERS["adam"])
    tagged = [{k: v.as_subclass(_Tagged) for k, v in g.items()} for g in grads]
    want_p, _ = _reference(OPTIMIZERS["adam"], params, grads)
    state = opt.init(params)
    with mock.patch.object(torch, "_fused_adam_") as kernel:
        for g in tagged:
            updates, state = opt.update(g, state, params)
            optim.apply_updates_(params, {k: torch.Tensor(v) for k, v in updates.items()})
    assert kernel.call_count == 0
    assert_trees_all_close(params, want_p, rtol=1e-6, atol=1e-7)


def test_adamw_keeps_the_graph_through_parameters_that_require_grad():
    opt, params, grads = _setup(OPTIMIZERS["adamw"])
    leaf = {k: v.clone().requires_grad_() for k, v in params.items()}
    updates, _ = opt.update(grads[0], opt.init(leaf), leaf)  # the decay reads the params
    assert all(u.grad_fn is not None for u in updates.values())
    adam = OPTIMIZERS["adam"]()
    updates, _ = adam.update(grads[0], adam.init(leaf), leaf)  # Adam never reads them
    assert all(u.grad_fn is None for u in updates.values())


_CHANGED_GRADS = {
    "requires grad": lambda g: {k: v.clone().requires_grad_() for k, v in g.items()},
    "subclass": lambda g: {k: v.as_subclass(_Tagged) for k, v in g.items()},
    "other strides": lambda g: {k: v.t().contiguous().t() for k, v in g.items()},
}


@pytest.mark.parametrize("change", sorted(_CHANGED_GRADS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_remembered_layout_is_checked_again_at_every_step(name, change):
    # After the first steps the update re-checks later inputs against the layout it accepted
    # (in C++); gradients that differ from it in autograd, type or strides must still be seen.
    # Non-contiguous leaves take the chain: torch's fused kernels pair elements by memory order.
    from unittest import mock

    from fnn_optim import _functional_steps

    opt, params, grads = _setup(OPTIMIZERS[name])
    want_p, want_s = _reference(OPTIMIZERS[name], params, grads)
    state = opt.init(params)
    check, verdicts = _functional_steps._checked_layout, []

    def recorded(*args):
        verdicts.append(check(*args))
        return verdicts[-1]

    for i, g in enumerate(grads):
        if i == 4:
            g = _CHANGED_GRADS[change](g)
        verdicts.clear()
        with mock.patch.object(_functional_steps, "_checked_layout", recorded):
            updates, state = opt.update(g, state, params)
        accepted = bool(verdicts) and verdicts[-1] is not None
        if i == 4:
            assert not accepted, f"{change}: the fused step took inputs it must leave to the chain"
            if change == "requires grad":
                assert all(u.grad_fn is not None for u in updates.values())
            updates = {k: torch.Tensor(v.detach()) for k, v in updates.items()}
            state = fnn.tree.map(lambda t: torch.Tensor(t.detach()), state)
        elif i > 0:
            assert accepted, f"step {i}: plain inputs should take the fused step"
        optim.apply_updates_(params, updates)
        del updates
    assert_trees_all_close(params, want_p, rtol=2e-5, atol=2e-6)
    assert_trees_all_close(state, want_s, rtol=2e-5, atol=2e-6)
