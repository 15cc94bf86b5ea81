"""Fused kernels behind ``fnn_optim.step_`` and behind the eager functional ``update``.

sgd, adam, adamw and amsgrad take torch's fused kernels (checked by counting the kernel calls):
``step_`` in place, and the plain eager ``update`` on copies of the state in recycled buffers.
Every other optimizer's ``step_`` takes the functional update and copies the new state into the
old tensors. Over 30 steps of a random problem, both must give the parameters and the state of
the optimizer's chain of transforms run op by op (``update`` + ``apply_updates``; float32
tolerance, as the fused kernels round differently), and match ``torch.optim`` with
``fused=True``. Recycling reuses a buffer only when nothing outside the optimizer refers to it.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close

STEPS = 30


def _problem(dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[dict, list[dict]]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)

    params = {"b": rand(3), "s": rand(), "w": rand(4, 3)}
    grads = [{k: rand(*v.shape) for k, v in params.items()} for _ in range(STEPS)]
    return params, grads


def _op_by_op(run, *args):
    """``run(*args)`` with the eager ``update`` running its chain op by op: the reference."""
    with mock.patch("fnn_optim._inplace.KERNELS_IN_UPDATE", False):
        return run(*args)


def _functional(opt: optim.GradientTransformation, params: dict, grads: list[dict]):
    """``update`` + ``apply_updates`` over ``grads``, keeping every state (as a user may)."""
    params = {k: v.clone() for k, v in params.items()}
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


def _inplace(opt: optim.GradientTransformation, params: dict, grads: list[dict]):
    params = {k: v.clone() for k, v in params.items()}
    state = opt.init(params)
    first = state
    leaves = [id(t) for t in fnn.tree.leaves(state)]
    for g in grads:
        state = optim.step_(opt, g, state, params)
    assert state is first, "step_ must return the state it was given"
    assert [id(t) for t in fnn.tree.leaves(state)] == leaves, "the state's tensors were replaced"
    return params, state


def _dropping(opt: optim.GradientTransformation, params: dict, grads: list[dict]):
    """The usual eager loop: each old state and each update is dropped after use."""
    params = {k: v.clone() for k, v in params.items()}
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, params)
        optim.apply_updates_(params, updates)
        del updates
    return params, state


def _check_matches_functional(opt, dtype=torch.float32, seed=0):
    params, grads = _problem(dtype, seed)
    want_p, want_s = _op_by_op(_functional, opt, params, grads)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for run in (_inplace, _functional, _dropping):
        got_p, got_s = run(opt, params, grads)
        assert_trees_all_close(got_p, want_p, **tol)
        assert_trees_all_close(got_s, want_s, **tol)
        assert fnn.tree.structure(got_s) == fnn.tree.structure(want_s)


FUSED = {
    "sgd": lambda lr: optim.sgd(lr),
    "sgd momentum": lambda lr: optim.sgd(lr, momentum=0.9),
    "sgd nesterov + decay": lambda lr: optim.sgd(lr, momentum=0.8, nesterov=True, weight_decay=0.1),
    "sgd dampening": lambda lr: optim.sgd(lr, momentum=0.7, dampening=0.3),
    "adam": lambda lr: optim.adam(lr),
    "adam coupled decay": lambda lr: optim.adam(lr, weight_decay=0.05),
    "amsgrad": lambda lr: optim.amsgrad(lr, b2=0.99),
    "adamw": lambda lr: optim.adamw(lr, weight_decay=0.1),
    "adamw amsgrad": lambda lr: optim.adamw(lr, amsgrad=True),
}
KERNELS = {"sgd": "_fused_sgd_", "ada": "_fused_adam_", "ams": "_fused_adam_"}
# The functional update of adam takes the fused kernel (coupled decay is added to the gradients
# before it, adamw's decay to the updates after it); sgd with momentum writes each leaf with
# out= ops (fnn_optim._functional_steps._sgd_leafwise); plain sgd runs the chain.
FUNCTIONAL_FUSED = {"adam", "adam coupled decay", "amsgrad", "adamw", "adamw amsgrad"}
FUNCTIONAL_LEAFWISE = {"sgd momentum", "sgd nesterov + decay", "sgd dampening"}


def _kernel(name: str) -> str:
    return "_fused_adamw_" if name.startswith("adamw") else KERNELS[name[:3]]


@pytest.mark.parametrize("name", sorted(FUSED))
@pytest.mark.parametrize("schedule", [False, True], ids=["constant lr", "scheduled lr"])
def test_fused_paths_equal_the_chain_op_by_op(name, schedule):
    lr = optim.warmup_cosine_decay_schedule(0.0, 0.05, 5, STEPS) if schedule else 0.02
    opt = FUSED[name](lr)
    params, grads = _problem()
    want_p, want_s = _op_by_op(_functional, opt, params, grads)
    kernels = {k: getattr(torch, k) for k in ("_fused_sgd_", "_fused_adam_", "_fused_adamw_")}
    steps = optim._functional_steps
    leafwise = steps._sgd_leafwise
    for run in (_inplace, _functional, _dropping):
        with (
            mock.patch.multiple(torch, **{k: mock.Mock(side_effect=f) for k, f in kernels.items()}),
            mock.patch.object(steps, "_sgd_leafwise", side_effect=leafwise) as by_leaf,
        ):
            got_p, got_s = run(opt, params, grads)
            calls = {k: getattr(torch, k).call_count for k in kernels}
        assert_trees_all_close(got_p, want_p, rtol=2e-5, atol=2e-6)
        assert_trees_all_close(got_s, want_s, rtol=2e-5, atol=2e-6)
        if run is _inplace:
            assert calls == {k: STEPS if k == _kernel(name) else 0 for k in kernels}
            assert by_leaf.call_count == 0
        elif run is _functional:  # adamw's functional path uses _fused_adam_ (decay added after)
            want = KERNELS[name[:3]] if name in FUNCTIONAL_FUSED else None
            assert calls == {k: STEPS if k == want else 0 for k in kernels}
            assert by_leaf.call_count == (STEPS if name in FUNCTIONAL_LEAFWISE else 0)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd momentum"])
def test_fused_step_groups_leaves_by_dtype(name):
    params, grads = _problem(torch.float64)
    params["w"], grads = params["w"].float(), [{**g, "w": g["w"].float()} for g in grads]
    opt = FUSED[name](0.01)
    want_p, want_s = _op_by_op(_functional, opt, params, grads)
    for run in (_inplace, _functional, _dropping):
        got_p, got_s = run(opt, params, grads)
        assert got_p["w"].dtype == torch.float32 and got_p["b"].dtype == torch.float64
        assert_trees_all_close(got_p, want_p, rtol=2e-5, atol=2e-6)
        assert_trees_all_close(got_s, want_s, rtol=2e-5, atol=2e-6)


@settings(max_examples=10, deadline=None)
@given(
    lr=st.floats(1e-4, 0.1),
    b1=st.floats(0.0, 0.95),
    b2=st.floats(0.9, 0.9999),
    wd=st.floats(0.0, 0.2),
    seed=st.integers(0, 10),
)
def test_fused_adamw_matches_torch_fused(lr, b1, b2, wd, seed):
    params, grads = _problem(torch.float32, seed)
    got_p, _ = _inplace(optim.adamw(lr, b1, b2, weight_decay=wd), params, grads)
    tp = [v.clone().requires_grad_() for v in params.values()]
    topt = torch.optim.AdamW(tp, lr=lr, betas=(b1, b2), weight_decay=wd, fused=True)
    for g in grads:
        for p, gv in zip(tp, g.values(), strict=True):
            p.grad = gv.clone()
        topt.step()
    want = dict(zip(params, [p.detach() for p in tp], strict=True))
    assert_trees_all_close(got_p, want, rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(
    lr=st.floats(1e-4, 0.1),
    momentum=st.floats(0.0, 0.95),
    nesterov=st.booleans(),
    wd=st.floats(0.0, 0.2),
)
def test_fused_sgd_matches_torch_fused(lr, momentum, nesterov, wd):
    nesterov = nesterov and momentum > 0
    params, grads = _problem(torch.float32)
    got_p, _ = _inplace(optim.sgd(lr, momentum, 0.0, nesterov, wd), params, grads)
    tp = [v.clone().requires_grad_() for v in params.values()]
    topt = torch.optim.SGD(
        tp, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd, fused=True
    )
    for g in grads:
        for p, gv in zip(tp, g.values(), strict=True):
            p.grad = gv.clone()
        topt.step()
    want = dict(zip(params, [p.detach() for p in tp], strict=True))
    assert_trees_all_close(got_p, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.rmsprop(0.01, momentum=0.5, centered=True),
        lambda: optim.lion(0.01),
        lambda: optim.adam(0.01, eps_root=1e-8),  # no fused kernel has eps_root
        lambda: optim.adamw(0.01, mask={"b": False, "s": True, "w": True}),
        lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.01)),
    ],
    ids=["rmsprop", "lion", "adam eps_root", "adamw mask", "clipped adam"],
)
def test_other_optimizers_step_in_place_through_the_functional_update(make):
    with mock.patch.object(torch, "_fused_adamw_") as fused_adamw:
        _check_matches_functional(make())
    assert fused_adamw.call_count == 0


def test_step_in_float64_is_as_exact_as_the_functional_update():
    _check_matches_functional(optim.rmsprop(0.01), dtype=torch.float64)


def test_step_writes_parameters_that_require_grad():
    params, grads = _problem()
    params = {k: torch.nn.Parameter(v) for k, v in params.items()}
    opt = optim.adam(0.1)
    state = optim.step_(opt, grads[0], opt.init(params), params)
    assert all(p.requires_grad and p.grad_fn is None for p in params.values())
    assert int(state[0].count) == 1


def test_step_under_compile_takes_the_functional_path():
    params, grads = _problem()
    opt = optim.adam(0.05)
    want_p, _ = _functional(opt, params, grads[:3])

    @torch.compile(backend="aot_eager", fullgraph=True)
    def step(g, state, params):
        return optim.step_(opt, g, state, params)

    params = {k: v.clone() for k, v in params.items()}
    state = opt.init(params)
    for g in grads[:3]:
        state = step(g, state, params)
    assert_trees_all_close(params, want_p, rtol=1e-6, atol=1e-7)
    assert int(state[0].count) == 3


def test_mismatched_gradients_are_refused_with_the_path():
    params, grads = _problem()
    opt = optim.adam(0.1)
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"fnn_optim\.step_"):
        optim.step_(opt, {"b": grads[0]["b"], "w": grads[0]["w"]}, state, params)
    with pytest.raises(ValueError, match="fnn_optim"):
        optim.step_(
            optim.rmsprop(0.1), {"b": grads[0]["b"]}, optim.rmsprop(0.1).init(params), params
        )


def test_momentum_that_rounds_to_zero_takes_the_functional_path():
    # 1e-300 is not 0 for sgd(), so the chain keeps a trace, but float32 stores it as 0: the fused
    # kernel would then refuse the buffers; the functional path keeps (1 - dampening) * g.
    _check_matches_functional(optim.sgd(0.05, momentum=1e-300, dampening=0.5))


def test_a_state_tensor_resized_in_place_is_not_taken_for_its_old_layout():
    # The recycler remembers the layout of the sets it handed out; a state leaf resized in
    # place (to a shape that would broadcast) must be read again, so the update behaves as
    # the chain does (which refuses it) instead of broadcasting silently.
    def run():
        opt = optim.sgd(0.1, momentum=0.9)
        params = {"w": torch.ones(3)}
        state = opt.init(params)
        for _ in range(3):
            _, state = opt.update({"w": torch.ones(3)}, state, params)
        state[0].trace["w"].resize_(1)
        with pytest.raises(RuntimeError) as raised:
            opt.update({"w": torch.ones(3)}, state, params)
        return str(raised.value)

    assert run() == _op_by_op(run)


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.adam(0.05),
        lambda: optim.adamw(0.05, weight_decay=0.1),
        lambda: optim.sgd(0.05, momentum=0.9),
    ],
    ids=["adam", "adamw", "sgd momentum"],
)
def test_non_contiguous_leaves_step_like_contiguous_ones(make):
    # torch's fused kernels pair elements by memory order: a transposed gradient or parameter
    # must not reach them (torch.optim.Adam(fused=True) itself steps wrongly on one in 2.13).
    g0 = torch.Generator().manual_seed(3)
    w, g = torch.randn(5, 4, generator=g0), torch.randn(5, 4, generator=g0)
    transposed = lambda t: t.t().contiguous().t()  # noqa: E731 - same values, other strides
    results = []
    for wt, gt in ((w, g), (w, transposed(g)), (transposed(w), g)):
        opt = make()
        inplace = {"w": wt.clone() if wt.is_contiguous() else transposed(wt)}
        functional = {"w": inplace["w"].clone()}
        state_a, state_b = opt.init(inplace), opt.init(functional)
        for _ in range(3):
            state_a = optim.step_(opt, {"w": gt}, state_a, inplace)
            updates, state_b = opt.update({"w": gt}, state_b, functional)
            optim.apply_updates_(functional, updates)
        results += [inplace["w"], functional["w"]]
    for r in results[1:]:
        assert_trees_all_close(r, results[0], rtol=1e-5, atol=1e-6)
