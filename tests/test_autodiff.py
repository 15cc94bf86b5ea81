"""Specification of fnn's differentiation transforms: grad, value_and_grad, jacrev, jacfwd,
hessian, jvp, vjp and stop_gradient, over any fnn pytree, against torch.autograd, torch.func and
finite differences; the eager fast path against the torch.func path on the same functions."""

from __future__ import annotations

import collections
import dataclasses
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn._src import autodiff
from fnn.testing import assert_max_compiles, assert_trees_all_close, check_grads

FAST = settings(deadline=None, max_examples=25)
Pair = collections.namedtuple("Pair", ["first", "second"])


@fnn.tree.register_dataclass
@dataclasses.dataclass
class Dense:
    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: str = dataclasses.field(default="tanh", metadata={"static": True})


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(params=["fast", "torch.func"])
def path(request, monkeypatch):
    """Run a test through the eager fast path and through torch.func.grad_and_value."""
    monkeypatch.setattr(autodiff, "_EAGER_FAST_PATH", request.param == "fast")
    return request.param


def mlp_params(sizes=(3, 5, 2), seed=0):
    """``{"layers": [{"weight", "bias"}, ...], "scale": ...}`` in non-sorted key order."""
    layers = [
        {"weight": rand(o, i, seed=seed + k), "bias": rand(o, seed=seed + 10 + k)}
        for k, (i, o) in enumerate(itertools.pairwise(sizes))
    ]
    return {"scale": rand(seed=seed + 99), "layers": layers}


def mlp_loss(params, x, y):
    h = x
    for k, layer in enumerate(params["layers"]):
        h = h @ layer["weight"].T + layer["bias"]
        if k < len(params["layers"]) - 1:
            h = torch.tanh(h)
    return ((h * params["scale"] - y) ** 2).mean()


def torch_reference_grads(loss, params, *args):
    """Gradients by classic autograd: leaves requiring grad and ``loss.backward()``."""
    leaves, treedef = fnn.tree.flatten(params)
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    value = loss(fnn.tree.unflatten(treedef, leaves), *args)
    value.backward()
    return value.detach(), fnn.tree.unflatten(treedef, [t.grad for t in leaves])


# ---------------------------------------------------------------------------------------------
# grad / value_and_grad against references, on both paths
# ---------------------------------------------------------------------------------------------


def test_value_and_grad_of_an_mlp_equals_loss_backward(path):
    params, x, y = mlp_params(), rand(4, 3, seed=1), rand(4, 2, seed=2)
    value, grads = fnn.value_and_grad(mlp_loss)(params, x, y)
    want_value, want_grads = torch_reference_grads(mlp_loss, params, x, y)
    assert_trees_all_close(value, want_value, rtol=1e-12)
    assert_trees_all_close(grads, want_grads, rtol=1e-12)
    assert list(grads) == ["scale", "layers"]  # the input's key order, not a sorted one
    assert not value.requires_grad
    assert not any(g.requires_grad for g in fnn.tree.leaves(grads))


def test_grad_matches_finite_differences(path):
    params, x, y = mlp_params(), rand(4, 3, seed=1), rand(4, 2, seed=2)
    check_grads(lambda p: mlp_loss(p, x, y), (params,), modes=("rev",))
    # and the gradient function itself (its derivative is the Hessian-vector product)
    check_grads(lambda p: fnn.grad(mlp_loss)(p, x, y), (params,), modes=("rev",))


def test_fast_path_and_torch_func_path_agree_on_the_same_functions(monkeypatch):
    params, x, y = mlp_params(), rand(4, 3, seed=1), rand(4, 2, seed=2)

    def with_aux(p, x, y):
        return mlp_loss(p, x, y), {"pred": x @ p["layers"][0]["weight"].T}

    results = {}
    for fast in (True, False):
        monkeypatch.setattr(autodiff, "_EAGER_FAST_PATH", fast)
        results[fast] = (
            fnn.value_and_grad(with_aux, argnums=(0, 1), has_aux=True)(params, x, y),
            fnn.grad(lambda x: (torch.sin(x) ** 2).sum())(x),
            fnn.grad(fnn.grad(lambda t: t**4))(torch.tensor(1.5, dtype=torch.float64)),
        )
    assert_trees_all_close(results[True], results[False], rtol=1e-12, atol=1e-15)


def test_eager_fast_path_is_taken_only_outside_transforms_and_compile(monkeypatch):
    calls = []
    real = torch.func.grad_and_value

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.func, "grad_and_value", spy)
    f = fnn.grad(lambda x: (x**2).sum())
    f(torch.ones(3))
    assert calls == []  # eager, un-nested: torch.autograd.grad
    fnn.vmap(f)(torch.ones(2, 3))
    assert calls == [1]  # inside vmap: torch.func
    torch.func.grad(lambda x: f(x).sum())(torch.ones(3))
    assert calls == [1, 1]


def test_fast_path_through_public_torch_autograd_grad_gives_the_same_results(monkeypatch):
    # without torch's engine entry point, or with a __torch_function__ mode active, the fast
    # path calls torch.autograd.grad itself
    params, x, y = mlp_params(), rand(4, 3, seed=1), rand(4, 2, seed=2)
    want = fnn.value_and_grad(mlp_loss)(params, x, y)

    class Passthrough(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Passthrough():
        assert_trees_all_close(fnn.value_and_grad(mlp_loss)(params, x, y), want, rtol=1e-12)
    monkeypatch.setattr(autodiff, "_engine_run_backward", None)
    assert_trees_all_close(fnn.value_and_grad(mlp_loss)(params, x, y), want, rtol=1e-12)


@FAST
@given(data=st.data())
def test_grad_of_random_trees_round_trips_structure_and_values(data):
    tree = data.draw(trees())
    fast = data.draw(st.booleans())
    autodiff._EAGER_FAST_PATH = fast
    try:
        grads = fnn.grad(lambda t: sum((torch.sin(x) * x).sum() for x in fnn.tree.leaves(t)))(tree)
    finally:
        autodiff._EAGER_FAST_PATH = True
    want = fnn.tree.map(lambda x: torch.cos(x) * x + torch.sin(x), tree)
    assert fnn.tree.structure(grads) == fnn.tree.structure(tree)
    assert_trees_all_close(grads, want, rtol=1e-12, atol=1e-15)


def test_argnums_tuple_negative_and_keyword_arguments(path):
    a, b, c = rand(3, seed=1), rand(3, seed=2), rand(3, seed=3)

    def f(a, b, c, *, scale):
        return (a * b * c).sum() * scale

    ga, gc = fnn.grad(f, argnums=(0, -1))(a, b, c, scale=torch.tensor(2.0, dtype=torch.float64))
    assert_trees_all_close((ga, gc), (2 * b * c, 2 * a * b))
    assert_trees_all_close(fnn.grad(f, argnums=1)(a, b, c, scale=1.0), a * c)


def test_has_aux_returns_aux_unchanged_and_detached(path):
    x = rand(3, seed=1)

    def f(x):
        y = x**2
        return y.sum(), {"y": y, "stats": [y.max(), None]}

    (value, aux), g = fnn.value_and_grad(f, has_aux=True)(x)
    assert_trees_all_close(value, (x**2).sum())
    assert_trees_all_close(g, 2 * x)
    assert_trees_all_close(aux, {"y": x**2, "stats": [(x**2).max(), None]})
    assert not aux["y"].requires_grad
    g2, aux2 = fnn.grad(f, has_aux=True)(x)
    assert_trees_all_close((g2, aux2), (g, aux))


def test_unused_inputs_get_zero_gradients(path):
    params = {"used": rand(2, seed=1), "unused": rand(3, seed=2)}
    g = fnn.grad(lambda p: p["used"].sum())(params)
    assert_trees_all_close(g, {"used": torch.ones(2), "unused": torch.zeros(3)})
    constant = fnn.grad(lambda p: torch.tensor(1.0))(params)
    assert_trees_all_close(constant, {"used": torch.zeros(2), "unused": torch.zeros(3)})


def test_the_same_tensor_at_two_paths_gets_two_gradients(path):
    w = rand(3, seed=1)
    g = fnn.grad(lambda p: (p["a"] * 2 + p["b"] * 3).sum())({"a": w, "b": w})
    assert_trees_all_close(g, {"a": torch.full((3,), 2.0), "b": torch.full((3,), 3.0)})


def test_grad_ignores_an_outer_no_grad_like_torch_func(path):
    x = rand(3, seed=1).requires_grad_()
    with torch.no_grad():
        g = fnn.grad(lambda x: (x**3).sum())(x)
    assert_trees_all_close(g, 3 * x.detach() ** 2)
    assert not g.requires_grad


def test_empty_differentiated_argument_gives_an_empty_gradient(path):
    value, g = fnn.value_and_grad(lambda p, x: (x**2).sum())({"a": None}, torch.ones(2))
    assert g == {"a": None}
    assert_trees_all_close(value, torch.tensor(2.0))


def test_namedtuples_dataclasses_and_none_subtrees(path):
    params = Pair(Dense(rand(2, 3, seed=1), None), [Dense(rand(1, 2, seed=2), rand(1, seed=3))])
    x = rand(5, 3, seed=4)

    def loss(p, x):
        h = torch.tanh(x @ p.first.weight.T)
        (last,) = p.second
        return (h @ last.weight.T + last.bias).pow(2).sum()

    g = fnn.grad(loss)(params, x)
    _, want = torch_reference_grads(loss, params, x)
    assert type(g) is Pair and type(g.first) is Dense and g.first.bias is None
    assert g.first.activation == "tanh"
    assert_trees_all_close(g, want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Higher order and composition
# ---------------------------------------------------------------------------------------------


def test_grad_of_grad_is_the_second_derivative(path):
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    d2 = fnn.vmap(fnn.grad(fnn.grad(lambda t: torch.sin(t) * t**2)))(x)
    want = 2 * torch.sin(x) + 4 * x * torch.cos(x) - x**2 * torch.sin(x)
    assert_trees_all_close(d2, want, rtol=1e-12)
    hess_diag = fnn.grad(lambda t: fnn.grad(lambda s: (s**3).sum())(t).sum())(x)
    assert_trees_all_close(hess_diag, 6 * x)


def test_grad_inside_a_classic_backward_outer_loop_is_second_order(path):
    # fnn.grad's result is differentiable when its input requires grad (classic autograd outside)
    x = rand(3, seed=1).requires_grad_()
    g = fnn.grad(lambda t: (t**3).sum())(x)
    assert g.requires_grad
    (g * torch.arange(3.0, dtype=torch.float64)).sum().backward()
    assert_trees_all_close(x.grad, 6 * x.detach() * torch.arange(3.0))


def test_grad_closing_over_a_tensor_that_requires_grad_stays_differentiable(path):
    theta = rand(3, seed=2).requires_grad_()
    w0 = rand(3, seed=3)
    g = fnn.grad(lambda w: (torch.sin(w * theta)).sum())(w0)  # = theta cos(w theta)
    g.sum().backward()
    want = torch.cos(w0 * theta) - w0 * theta * torch.sin(w0 * theta)
    assert_trees_all_close(theta.grad, want.detach(), rtol=1e-12)


def maml_reference(meta, tasks, inner_lr, steps):
    """MAML outer gradient with classic autograd and create_graph (the reference)."""
    meta = fnn.tree.map(lambda t: t.detach().clone().requires_grad_(), meta)
    total = 0.0
    for x_tr, y_tr, x_te, y_te in tasks:
        p = meta
        for _ in range(steps):
            leaves, treedef = fnn.tree.flatten(p)
            grads = torch.autograd.grad(mlp_loss(p, x_tr, y_tr), leaves, create_graph=True)
            p = fnn.tree.unflatten(
                treedef, [w - inner_lr * g for w, g in zip(leaves, grads, strict=True)]
            )
        total = total + mlp_loss(p, x_te, y_te)
    total.backward()
    return fnn.tree.map(lambda t: t.grad, meta)


def make_tasks(n=2):
    return [
        tuple(rand(4, 3 if j % 2 == 0 else 2, seed=10 * k + j) for j in range(4)) for k in range(n)
    ]


def maml_loss(meta, tasks, inner_lr=0.1, steps=2):
    total = 0.0
    for x_tr, y_tr, x_te, y_te in tasks:
        p = meta
        for _ in range(steps):
            g = fnn.grad(mlp_loss)(p, x_tr, y_tr)
            p = fnn.tree.map(lambda w, g: w - inner_lr * g, p, g)
        total = total + mlp_loss(p, x_te, y_te)
    return total


def test_maml_grad_through_inner_gradient_steps(path):
    meta, tasks = mlp_params(), make_tasks()
    got = fnn.grad(maml_loss)(meta, tasks)
    assert_trees_all_close(got, maml_reference(meta, tasks, 0.1, 2), rtol=1e-10)


def test_maml_with_a_classic_backward_outer_loop(path):
    meta, tasks = mlp_params(), make_tasks()
    leaf_meta = fnn.tree.map(lambda t: t.clone().requires_grad_(), meta)
    maml_loss(leaf_meta, tasks).backward()
    got = fnn.tree.map(lambda t: t.grad, leaf_meta)
    assert_trees_all_close(got, maml_reference(meta, tasks, 0.1, 2), rtol=1e-10)


def test_maml_gradient_matches_finite_differences():
    meta, tasks = mlp_params(sizes=(3, 2)), make_tasks(1)
    check_grads(lambda m: maml_loss(m, tasks, steps=1), (meta,), modes=("rev",))


def test_per_example_gradients_by_vmap_of_grad_equal_a_loop(path):
    params, xs, ys = mlp_params(), rand(6, 3, seed=1), rand(6, 2, seed=2)

    def example_loss(p, x, y):
        return mlp_loss(p, x[None], y[None])

    per_example = fnn.vmap(fnn.grad(example_loss), in_axes=(None, 0, 0))(params, xs, ys)
    loop = [fnn.grad(example_loss)(params, x, y) for x, y in zip(xs, ys, strict=True)]
    stacked = fnn.tree.map(lambda *gs: torch.stack(gs), *loop)
    assert_trees_all_close(per_example, stacked, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Jacobians, hessian, jvp, vjp
# ---------------------------------------------------------------------------------------------


def tree_fn(p, x):
    return {"y": torch.tanh(p["w"] @ x) * p["b"], "s": (p["w"] ** 2).sum() * x[0]}


def flat_reference_jacobian(p, x):
    """Blocks by torch.autograd.functional.jacobian on each output / input leaf."""
    out = {}
    for name in ("y", "s"):
        out[name] = {}
        for leaf in ("w", "b"):

            def g(t, leaf=leaf, name=name):
                return tree_fn({**p, leaf: t}, x)[name]

            out[name][leaf] = torch.autograd.functional.jacobian(g, p[leaf])
    return out


@pytest.mark.parametrize("jac", [fnn.jacrev, fnn.jacfwd], ids=["jacrev", "jacfwd"])
def test_jacobians_of_trees_equal_torch_autograd(jac):
    p, x = {"w": rand(2, 3, seed=1), "b": rand(2, seed=2)}, rand(3, seed=3)
    got = jac(tree_fn)(p, x)
    want = flat_reference_jacobian(p, x)
    assert_trees_all_close(got, want, rtol=1e-12)
    assert got["y"]["w"].shape == (2, 2, 3)
    got_both, aux = jac(lambda p, x: (tree_fn(p, x), x * 2), argnums=(0, 1), has_aux=True)(p, x)
    assert isinstance(got_both["y"], tuple) and got_both["y"][1].shape == (2, 3)
    assert_trees_all_close(got_both["y"][0], want["y"], rtol=1e-12)
    assert_trees_all_close(aux, x * 2)


def test_jacfwd_of_jacrev_and_hessian_equal_torch_hessian():
    x = rand(4, seed=1)

    def f(x):
        return (torch.sin(x) * x.roll(1)).sum()

    want = torch.autograd.functional.hessian(f, x)
    assert_trees_all_close(fnn.jacfwd(fnn.jacrev(f))(x), want, rtol=1e-12)
    assert_trees_all_close(fnn.hessian(f)(x), want, rtol=1e-12)
    tree_h = fnn.hessian(lambda p: f(torch.cat([p["a"], p["b"]])))({"a": x[:1], "b": x[1:]})
    assert_trees_all_close(tree_h["a"]["b"], want[:1, 1:], rtol=1e-12)
    assert_trees_all_close(tree_h["b"]["b"], want[1:, 1:], rtol=1e-12)


def test_jvp_and_vjp_of_trees_equal_torch_func():
    p, x = {"w": rand(2, 3, seed=1), "b": rand(2, seed=2)}, rand(3, seed=3)
    t = ({"w": rand(2, 3, seed=4), "b": rand(2, seed=5)}, rand(3, seed=6))
    out, t_out = fnn.jvp(tree_fn, (p, x), t)

    def flat(w, b, x):
        o = tree_fn({"w": w, "b": b}, x)
        return o["y"], o["s"]

    want_out, want_t = torch.func.jvp(flat, (p["w"], p["b"], x), (t[0]["w"], t[0]["b"], t[1]))
    assert_trees_all_close(out, {"y": want_out[0], "s": want_out[1]}, rtol=1e-12)
    assert_trees_all_close(t_out, {"y": want_t[0], "s": want_t[1]}, rtol=1e-12)

    out2, vjp_fn = fnn.vjp(tree_fn, p, x)
    ct = {"y": rand(2, seed=7), "s": rand(seed=8)}
    gp, gx = vjp_fn(ct)
    _, flat_vjp = torch.func.vjp(flat, p["w"], p["b"], x)
    ww, wb, wx = flat_vjp((ct["y"], ct["s"]))
    assert_trees_all_close(out2, out)
    assert_trees_all_close((gp, gx), ({"w": ww, "b": wb}, wx), rtol=1e-12)
    # <ct, J t> == <vjp(ct), t>
    lhs = fnn.tree.vdot(ct, t_out)
    rhs = fnn.tree.vdot((gp, gx), t)
    assert_trees_all_close(lhs, rhs, rtol=1e-10)


def test_jvp_and_vjp_with_aux():
    x = rand(3, seed=1)
    one = torch.ones(3, dtype=torch.float64)
    out, t_out, aux = fnn.jvp(lambda x: (x**2, {"n": x.sum()}), (x,), (one,), True)
    assert_trees_all_close((out, t_out, aux), (x**2, 2 * x, {"n": x.sum()}))
    out, vjp_fn, aux = fnn.vjp(lambda x: (x**2, [x.max()]), x, has_aux=True)
    assert_trees_all_close((out, vjp_fn(one), aux), (x**2, (2 * x,), [x.max()]))


# ---------------------------------------------------------------------------------------------
# stop_gradient and torch.compile
# ---------------------------------------------------------------------------------------------


def test_stop_gradient_detaches_every_tensor_leaf_and_keeps_the_rest(path):
    x = rand(3, seed=1)
    tree = {"a": x, "n": 3, "none": None, "t": (x * 2,)}
    out = fnn.stop_gradient(tree)
    assert out["n"] == 3 and out["none"] is None
    assert_trees_all_close(out, tree)
    g = fnn.grad(lambda x: (x * fnn.stop_gradient({"s": x**2})["s"]).sum())(x)
    assert_trees_all_close(g, x**2)
    g_func = torch.func.grad(lambda x: (x * fnn.stop_gradient(x) ** 2).sum())(x)
    assert_trees_all_close(g_func, x**2)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_value_and_grad_and_stop_gradient_under_compile(compiled):
    params = {"w": torch.tensor([[0.5, -1.0], [2.0, 0.1]]), "b": torch.tensor([0.1, 0.2])}
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, 0.3]])

    def step(params, x):
        def loss(p):
            h = torch.tanh(x @ p["w"].T + p["b"])
            return (h * fnn.stop_gradient(h)).sum(), {"h": h}

        (value, aux), g = fnn.value_and_grad(loss, has_aux=True)(params)
        return value, aux, g

    def want(params):
        h = torch.tanh(x @ params["w"].T + params["b"])
        dh = h * (1 - h**2)  # d/dz of h * const(h) = const(h) * (1 - h^2)
        return h.pow(2).sum(), {"h": h}, {"w": dh.T @ x, "b": dh.sum(0)}

    # torch.compile outermost, torch.func inside (fnn takes its torch.func path when compiling)
    f = torch.compile(step, fullgraph=True) if compiled else step
    other = fnn.tree.map(lambda t: t * 0.5, params)
    with assert_max_compiles(1):  # new parameter values do not recompile
        assert_trees_all_close(f(params, x), want(params), rtol=1e-5, atol=1e-6)
        assert_trees_all_close(f(other, x), want(other), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_integer_leaf_in_a_differentiated_argument_names_its_path():
    state = {"params": {"w": torch.ones(2)}, "opt": {"step": torch.tensor(3)}}
    with pytest.raises(TypeError, match=r"args\[0\]\.opt\.step: it is a torch\.int64 tensor") as e:
        fnn.grad(lambda s: s["params"]["w"].sum())(state)
    assert "argnums" in str(e.value) and "fnn.grad(loss, argnums=0)(params, batch" in str(e.value)


def test_prng_key_in_a_differentiated_argument_names_its_path_and_how_to_pass_it():
    key = fnn.random.key(0)
    with pytest.raises(TypeError, match=r"args\[1\]\.rng: it is a torch\.uint32 .*PRNG key"):
        fnn.value_and_grad(lambda w, b: w.sum(), argnums=(0, 1))(torch.ones(2), {"rng": key})
    # the fix the message suggests: the key goes into an argument that is not differentiated
    g = fnn.grad(lambda w, k: (w * fnn.random.normal(k, (2,))).sum())(torch.ones(2), key)
    assert_trees_all_close(g, fnn.random.normal(key, (2,)))


def test_python_number_leaf_in_a_differentiated_argument_is_an_error():
    with pytest.raises(TypeError, match=r"args\[0\]\.lr: it is a float .*torch\.tensor\(0\.1\)"):
        fnn.grad(lambda p: p["w"].sum() * p["lr"])({"w": torch.ones(2), "lr": 0.1})


def test_non_scalar_output_error_gives_the_shape():
    with pytest.raises(TypeError, match=r"scalar output.*shape \(2, 3\).*jacrev"):
        fnn.grad(lambda x: x * 2)(torch.ones(2, 3))
    with pytest.raises(TypeError, match=r"scalar floating tensor.*got a float"):
        fnn.grad(lambda x: 1.0)(torch.ones(2))
    with pytest.raises(TypeError, match=r"floating scalar.*torch\.int64"):
        fnn.grad(lambda x: x.sum().long())(torch.ones(2))


def test_aux_holding_a_non_tensor_is_a_clear_error(path):
    with pytest.raises(TypeError, match=r"aux must hold tensors only, but aux\.stats\.n is a int"):
        fnn.grad(lambda x: (x.sum(), {"stats": {"n": 3}}), has_aux=True)(torch.ones(2))
    with pytest.raises(TypeError, match=r"aux must hold tensors only, but aux is a str"):
        fnn.vjp(lambda x: (x, "note"), torch.ones(2), has_aux=True)
    with pytest.raises(TypeError, match=r"must return a pair \(output, aux\), got a Tensor"):
        fnn.grad(lambda x: x.sum(), has_aux=True)(torch.ones(2))


def test_bad_argnums_are_errors():
    with pytest.raises(TypeError, match="argnums must be an int or a non-empty tuple"):
        fnn.grad(lambda x: x.sum(), argnums="0")
    with pytest.raises(ValueError, match="must not repeat"):
        fnn.grad(lambda x: x.sum(), argnums=(0, 0))
    with pytest.raises(ValueError, match=r"positional argument 2, but .* called with 2"):
        fnn.grad(lambda x, y: x.sum(), argnums=2)(torch.ones(1), torch.ones(1))


def test_jvp_and_vjp_check_tangents_and_cotangents():
    p = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match=r"tangents must have the structure of primals.*'0'"):
        fnn.jvp(lambda p: p["w"], (p,), ({"v": torch.ones(2)},))
    with pytest.raises(ValueError, match=r"primals at '0\.w' is a torch\.float32 tensor of shape"):
        fnn.jvp(lambda p: p["w"], (p,), ({"w": torch.ones(3)},))
    with pytest.raises(TypeError, match="tuple or list"):
        fnn.jvp(lambda x: x, torch.ones(2), torch.ones(2))
    _, vjp_fn = fnn.vjp(lambda p: {"y": p["w"] * 2}, p)
    with pytest.raises(ValueError, match=r"the cotangent must have the structure of the output"):
        vjp_fn(torch.ones(2))
    with pytest.raises(TypeError, match=r"output at 'i' is a torch\.int64 tensor"):
        fnn.jacrev(lambda x: {"i": x.long(), "f": x})(torch.ones(2))


# ---------------------------------------------------------------------------------------------
# Random trees for the round-trip property
# ---------------------------------------------------------------------------------------------


@st.composite
def float_tensors(draw):
    shape = draw(st.lists(st.integers(1, 3), max_size=2))
    return rand(*shape, seed=draw(st.integers(0, 2**16)))


KEYS = st.text(alphabet="abcxyz", min_size=1, max_size=3)


def trees():
    def nodes(children):
        return st.one_of(
            st.dictionaries(KEYS, children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.builds(Pair, children, children),
            st.builds(Dense, children, st.one_of(st.none(), children)),
        )

    return st.recursive(float_tensors(), nodes, max_leaves=6)
