"""Specification of fnn.remat: same values and derivatives as the function it wraps, under every
transform, with the forward pass recomputed in the backward pass and only the inputs saved."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import fnn
from fnn.testing import assert_max_compiles, assert_trees_all_close, check_grads


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


PARAMS = {"weight": randn(4, 3, seed=1), "bias": randn(4, seed=2)}
X = randn(5, 3, seed=3)


class Counted:
    """``f`` that counts its calls: a two-layer block with a pytree input and output."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params, x, scale=1.0):
        self.calls += 1
        h = torch.tanh(x @ params["weight"].T + params["bias"]) * scale
        return {"h": h, "energy": (h**2).sum(-1), "label": "block", "nothing": None}


def block(params, x, scale=1.0):
    return Counted()(params, x, scale)


remat_block = fnn.remat(block)


def loss(f):
    def fn(params, x):
        out = f(params, x)
        return (out["h"].sin()).sum() + out["energy"].sum()

    return fn


DERIVATIVES = {
    "grad": lambda f: grad(loss(f), argnums=(0, 1))(PARAMS, X),
    "vjp": lambda f: vjp(lambda x: f(PARAMS, x)["h"], X)[1](torch.ones(5, 4, dtype=X.dtype)),
    "jvp": lambda f: jvp(lambda x: f(PARAMS, x)["energy"], (X,), (torch.ones_like(X),)),
    "vmap(grad)": lambda f: vmap(grad(loss(f)), in_dims=(None, 0))(PARAMS, X[:, None]),
    "grad(vmap)": lambda f: grad(lambda p: vmap(lambda x: f(p, x)["h"])(X).sum())(PARAMS),
    "grad(grad)": lambda f: grad(lambda x: grad(loss(f), argnums=1)(PARAMS, x).pow(2).sum())(X),
    "jacrev": lambda f: jacrev(lambda x: f(PARAMS, x)["energy"])(X),
    "jacfwd": lambda f: jacfwd(lambda x: f(PARAMS, x)["energy"])(X),
    "hessian": lambda f: hessian(lambda x: loss(f)(PARAMS, x[None]))(X[0]),
    "jacrev(jacrev)": lambda f: jacrev(jacrev(lambda x: f(PARAMS, x[None])["energy"]))(X[0]),
    "jvp(vmap)": lambda f: jvp(vmap(lambda x: f(PARAMS, x)["h"]), (X,), (X,)),
}


@pytest.mark.parametrize("transform", sorted(DERIVATIVES))
def test_remat_matches_the_plain_function_under_torch_func(transform):
    derivative = DERIVATIVES[transform]
    assert_trees_all_close(derivative(remat_block), derivative(block), rtol=1e-12, atol=1e-14)


def test_remat_matches_the_plain_function_under_classic_autograd_and_double_backward():
    def grads(f):
        params = fnn.tree.map(lambda t: t.clone().requires_grad_(), PARAMS)
        first = torch.autograd.grad(loss(f)(params, X), list(params.values()), create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in first), list(params.values()))
        return first, second

    assert_trees_all_close(grads(remat_block), grads(block), rtol=1e-12)


def test_remat_returns_the_same_values_and_passes_non_tensor_leaves_through():
    got, want = remat_block(PARAMS, X), block(PARAMS, X)
    assert_trees_all_close(got, want)
    assert got["label"] == "block" and got["nothing"] is None


def test_remat_passes_finite_difference_checks():
    check_grads(lambda p, x: remat_block(p, x)["h"], (PARAMS, X))


def test_the_forward_pass_is_recomputed_during_the_backward_pass():
    counted = Counted()
    f = fnn.remat(counted)
    f(PARAMS, X)
    assert counted.calls == 1  # a forward pass alone runs f once
    grad(loss(f))(PARAMS, X)
    assert counted.calls == 3  # forward + recomputation in the backward pass
    params = fnn.tree.map(lambda t: t.clone().requires_grad_(), PARAMS)
    out = loss(f)(params, X)
    assert counted.calls == 4
    out.backward()
    assert counted.calls == 5


def test_only_the_inputs_are_saved_for_the_backward_pass():
    def saved_numel(f):
        numel = []

        def pack(t):
            numel.append(t.numel())
            return t

        x = X.clone().requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            h = x
            for _ in range(4):
                h = f({"weight": PARAMS["weight"][:3], "bias": PARAMS["bias"][:3]}, h)["h"]
        return sum(numel)

    inputs_only = 4 * (X.numel() + 9 + 3)  # x, weight, bias of each of the 4 blocks
    assert saved_numel(remat_block) == inputs_only
    assert saved_numel(block) > inputs_only  # plus the activations inside each block


def test_static_argnums_kwargs_and_integer_inputs():
    def f(x, n, *, table, index):
        return (x * n + table[index]).sum(), index * 2

    r = fnn.remat(f, static_argnums=1)
    x, table, index = randn(3), randn(5), torch.tensor([0, 4, 2])
    got = grad(lambda x, t: r(x, 3, table=t, index=index)[0], argnums=(0, 1))(x, table)
    want = grad(lambda x, t: f(x, 3, table=t, index=index)[0], argnums=(0, 1))(x, table)
    assert_trees_all_close(got, want)
    assert r(x, 3, table=table, index=index)[1].tolist() == [0, 8, 4]
    decorated = fnn.remat(static_argnums=(1,))(f)
    assert_trees_all_close(
        decorated(x, 3, table=table, index=index), f(x, 3, table=table, index=index)
    )


def test_an_output_that_is_an_input_still_gets_its_gradient():
    f = fnn.remat(lambda a, b: (a, a * b))
    got = grad(lambda a: sum(t.sum() for t in f(a, X)))(X)
    assert_trees_all_close(got, 1 + X)


def test_remat_refuses_what_it_cannot_do():
    with pytest.raises(NotImplementedError, match="policy"):
        fnn.remat(block, policy="dots_saveable")
    with pytest.raises(TypeError, match="static_argnums"):
        fnn.remat(block, static_argnums="1")
    with pytest.raises(TypeError, match="expected a function"):
        fnn.remat(3)
    with pytest.raises(IndexError, match="2 positional arguments"):
        fnn.remat(block, static_argnums=4)(PARAMS, X)
    with pytest.raises(NotImplementedError, match="forward mode nested in forward mode"):
        jacfwd(jacfwd(lambda x: remat_block(PARAMS, x[None])["energy"]))(X[0])


# ---------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True), tiny shapes, module-level compiled functions
# ---------------------------------------------------------------------------------------------

_compiled_loss = torch.compile(loss(remat_block), fullgraph=True)
_compiled_grad = torch.compile(grad(loss(remat_block), argnums=(0, 1)), fullgraph=True)


def test_remat_compiles_for_backward_and_under_torch_func_grad():
    params = fnn.tree.map(lambda t: t.clone().requires_grad_(), PARAMS)
    with assert_max_compiles(2):
        value = _compiled_loss(params, X)
        got = torch.autograd.grad(value, list(params.values()))
        assert_trees_all_close(value, loss(block)(PARAMS, X), rtol=1e-12)
        want = torch.autograd.grad(loss(block)(params, X), list(params.values()))
        assert_trees_all_close(got, want, rtol=1e-12)
        assert_trees_all_close(
            _compiled_grad(PARAMS, X), grad(loss(block), argnums=(0, 1))(PARAMS, X), rtol=1e-12
        )
