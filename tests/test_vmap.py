"""Specification of fnn.vmap: in_axes / out_axes as pytree prefixes, axis_size, chunk_size, its
errors, and its compositions (per-example gradients, ensembles, per-example dropout), against
Python loops over the mapped axis."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn.testing import assert_trees_all_close

FAST = settings(deadline=None, max_examples=25)
Pair = collections.namedtuple("Pair", ["first", "second"])


@fnn.tree.register_dataclass
@dataclasses.dataclass
class Affine:
    weight: torch.Tensor
    bias: torch.Tensor | None


def rand(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def loop(f, n, args_at):
    """Reference: ``[f(*args_at(i)) for i in range(n)]`` stacked leaf-wise on a new axis 0."""
    outs = [f(*args_at(i)) for i in range(n)]
    return fnn.tree.map(lambda *xs: torch.stack(xs), *outs)


# ---------------------------------------------------------------------------------------------
# in_axes
# ---------------------------------------------------------------------------------------------


def predict(p, x):
    return torch.tanh(p["w"] @ x + p["b"])


def test_default_maps_axis_0_of_every_leaf_of_every_argument():
    ps = {"w": rand(5, 2, 3, seed=1), "b": rand(5, 2, seed=2)}
    xs = rand(5, 3, seed=3)
    got = fnn.vmap(predict)(ps, xs)
    want = loop(predict, 5, lambda i: ({"w": ps["w"][i], "b": ps["b"][i]}, xs[i]))
    assert_trees_all_close(got, want, rtol=1e-12)


def test_in_axes_are_tree_prefixes_with_none():
    p = {"w": rand(2, 3, seed=1), "b": rand(4, 2, seed=2)}  # only b is mapped (axis 0)
    xs = rand(3, 4, seed=3)  # mapped on axis 1
    got = fnn.vmap(predict, in_axes=({"w": None, "b": 0}, 1))(p, xs)
    want = loop(predict, 4, lambda i: ({"w": p["w"], "b": p["b"][i]}, xs[:, i]))
    assert_trees_all_close(got, want, rtol=1e-12)
    # a list at the top level reads as a tuple; None maps nothing in that argument
    same = fnn.vmap(predict, in_axes=[{"w": None, "b": 0}, 1])(p, xs)
    assert_trees_all_close(same, got)


def test_negative_in_axes_count_from_the_end():
    xs = rand(3, 4, 5, seed=1)
    got = fnn.vmap(lambda x: x.sum(0), in_axes=-1)(xs)
    assert_trees_all_close(got, torch.stack([xs[..., i].sum(0) for i in range(5)]))


def test_keyword_arguments_are_not_mapped():
    xs = rand(4, 3, seed=1)
    scale = rand(3, seed=2)  # not mapped, although it has 3 rows and 4 would not fit
    got = fnn.vmap(lambda x, *, scale: x * scale)(xs, scale=scale)
    assert_trees_all_close(got, xs * scale)


def test_non_tensor_leaves_pass_through_when_not_mapped():
    xs = rand(4, 3, seed=1)
    got = fnn.vmap(lambda cfg, x: x * cfg["gain"], in_axes=(None, 0))({"gain": 2.0}, xs)
    assert_trees_all_close(got, 2 * xs)


# ---------------------------------------------------------------------------------------------
# out_axes, axis_size, chunk_size
# ---------------------------------------------------------------------------------------------


def test_out_axes_prefix_with_positive_negative_and_none():
    xs = rand(4, 2, 3, seed=1)
    table = rand(5, seed=2)

    def f(x):
        return {"id": x, "sum": Pair(x.sum(0), x.sum(1)), "table": table * 2}

    got = fnn.vmap(f, out_axes={"id": -1, "sum": Pair(0, 1), "table": None})(xs)
    assert_trees_all_close(got["id"], xs.permute(1, 2, 0))
    assert_trees_all_close(got["sum"].first, xs.sum(1))
    assert_trees_all_close(got["sum"].second, xs.sum(2).T)
    assert type(got["sum"]) is Pair
    assert_trees_all_close(got["table"], table * 2)  # returned once, not per example


def test_out_axes_none_for_an_output_that_depends_on_the_mapped_axis_is_an_error():
    with pytest.raises(ValueError, match=r"out_axes is None for the output at 'b'.*but it does"):
        fnn.vmap(lambda x: {"a": x, "b": x * 2}, out_axes={"a": 0, "b": None})(torch.ones(3))


def test_out_axes_none_for_a_value_batched_only_by_an_outer_vmap():
    # torch.func.vmap(out_dims=None) rejects this; JAX (and fnn) accept it
    xs = rand(3, seed=1)

    def outer(x):
        return fnn.vmap(lambda y: x * 2, out_axes=None)(torch.ones(4))

    assert_trees_all_close(fnn.vmap(outer)(xs), 2 * xs)


def test_non_tensor_outputs_need_out_axes_none():
    got = fnn.vmap(lambda x: (x * 2, "tag"), out_axes=(0, None))(torch.ones(3))
    assert got[1] == "tag"
    with pytest.raises(TypeError, match=r"output at '1' is a str.*out_axes None"):
        fnn.vmap(lambda x: (x * 2, "tag"))(torch.ones(3))


def test_axis_size_when_nothing_is_mapped_broadcasts_outputs():
    w = rand(2, seed=1)
    got = fnn.vmap(lambda w: {"w": w * 2}, in_axes=None, axis_size=3)(w)
    assert_trees_all_close(got, {"w": (w * 2).expand(3, 2)})
    with pytest.raises(ValueError, match=r"no input is mapped.*axis_size=N"):
        fnn.vmap(lambda w: w, in_axes=None)(w)
    with pytest.raises(ValueError, match=r"axis_size=3, but args\[0\] of shape \(4,\) has size 4"):
        fnn.vmap(lambda x: x, axis_size=3)(torch.ones(4))


def test_chunk_size_passes_through_and_gives_the_same_result():
    xs = rand(7, 3, seed=1)
    calls = []

    def f(x):
        calls.append(1)
        return {"n": (x**2).sum(), "x": x}

    got = fnn.vmap(f, chunk_size=3)(xs)
    assert len(calls) == 3  # ceil(7 / 3) chunks, one call each
    assert_trees_all_close(got, fnn.vmap(f)(xs))
    assert_trees_all_close(got["n"], (xs**2).sum(1))


# ---------------------------------------------------------------------------------------------
# Random trees: vmap equals a loop
# ---------------------------------------------------------------------------------------------


@st.composite
def batched_tensors(draw, batch):
    shape = draw(st.lists(st.integers(1, 3), max_size=2))
    return rand(batch, *shape, seed=draw(st.integers(0, 2**16)))


def batched_trees(batch):
    keys = st.text(alphabet="abcxyz", min_size=1, max_size=3)

    def nodes(children):
        return st.one_of(
            st.dictionaries(keys, children, max_size=3),
            st.lists(children, max_size=3),
            st.builds(Pair, children, children),
            st.builds(Affine, children, st.one_of(st.none(), children)),
        )

    return st.recursive(batched_tensors(batch) | st.none(), nodes, max_leaves=6)


@FAST
@given(data=st.data())
def test_vmap_of_random_trees_equals_a_loop(data):
    batch = data.draw(st.integers(1, 3))
    tree = data.draw(batched_trees(batch))
    if not fnn.tree.leaves(tree):
        tree = {"only": rand(batch, seed=0), "rest": tree}

    def f(t):
        total = sum(x.sum() for x in fnn.tree.leaves(t))
        return fnn.tree.map(lambda x: torch.sin(x) * total, t)

    got = fnn.vmap(f)(tree)
    want = loop(f, batch, lambda i: (fnn.tree.map(lambda x: x[i], tree),))
    assert fnn.tree.structure(got) == fnn.tree.structure(tree)
    assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Compositions: per-example gradients, ensembles, per-example dropout, nesting, compile
# ---------------------------------------------------------------------------------------------


def init_mlp(key, sizes=(3, 4, 2)):
    keys = fnn.random.split(key, len(sizes) - 1)
    return [
        {"weight": fnn.random.normal(k, (o, i)) * i**-0.5, "bias": torch.zeros(o)}
        for k, i, o in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def apply_mlp(params, x):
    for k, layer in enumerate(params):
        x = x @ layer["weight"].T + layer["bias"]
        if k < len(params) - 1:
            x = torch.relu(x)
    return x


def test_ensembles_init_and_apply_over_stacked_parameters_equal_a_loop():
    keys = fnn.random.split(fnn.random.key(0), 4)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    stacked = fnn.vmap(init_mlp)(keys)
    assert stacked[0]["weight"].shape == (4, 4, 3)
    want_params = loop(init_mlp, 4, lambda i: (keys[i],))
    assert_trees_all_close(stacked, want_params, rtol=1e-6)
    got = fnn.vmap(apply_mlp, in_axes=(0, None))(stacked, x)
    want = loop(apply_mlp, 4, lambda i: (want_params_at(stacked, i), x))
    # A batched product and a loop of products may sum in different orders (seen on an Intel
    # MKL: 1 ulp of an O(1) output, 2.6e-6 relative on a value near 0.01), so absolute slack.
    assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got[0], got[1])  # members differ


def want_params_at(stacked, i):
    return fnn.tree.map(lambda t: t[i], stacked)


def test_per_example_gradients_equal_a_loop_of_torch_autograd():
    params = init_mlp(fnn.random.key(1))
    xs = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    ys = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))

    def loss(p, x, y):
        return ((apply_mlp(p, x) - y) ** 2).sum()

    got = fnn.vmap(fnn.grad(loss), in_axes=(None, 0, 0))(params, xs, ys)
    per_example = []
    for x, y in zip(xs, ys, strict=True):
        leaves, treedef = fnn.tree.flatten(params)
        leaves = [t.clone().requires_grad_() for t in leaves]
        loss(fnn.tree.unflatten(treedef, leaves), x, y).backward()
        per_example.append(fnn.tree.unflatten(treedef, [t.grad for t in leaves]))
    want = fnn.tree.map(lambda *gs: torch.stack(gs), *per_example)
    assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)


def dropout(key, x, rate=0.5):
    keep = fnn.random.bernoulli(key, 1 - rate, x.shape)
    return torch.where(keep, x / (1 - rate), torch.zeros_like(x))


def test_per_example_dropout_with_split_keys_equals_a_loop():
    keys = fnn.random.split(fnn.random.key(3), 6)
    xs = torch.ones(6, 16)
    got = fnn.vmap(dropout)(keys, xs)
    assert_trees_all_close(got, loop(dropout, 6, lambda i: (keys[i], xs[i])))
    masks = got != 0
    assert not all(torch.equal(masks[0], m) for m in masks[1:])  # independent per example


def test_global_random_state_under_vmap_points_to_keys():
    with pytest.raises(RuntimeError, match=r"fnn\.random\.split\(key, batch_size\)"):
        fnn.vmap(lambda x: x + torch.rand(()))(torch.ones(3))


def test_nested_vmap_is_an_outer_product():
    a, b = rand(3, seed=1), rand(4, seed=2)
    got = fnn.vmap(lambda x: fnn.vmap(lambda y: x * y)(b))(a)
    assert_trees_all_close(got, torch.outer(a, b))


def test_vmap_of_grad_under_compile_matches_eager():
    params = {"w": torch.tensor([[0.5, -1.0], [2.0, 0.1]]), "b": torch.tensor([0.1, 0.2])}
    xs = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, 0.3]])

    def per_example(params, xs):
        g = fnn.vmap(fnn.grad(lambda p, x: torch.tanh(p["w"] @ x + p["b"]).sum()), (None, 0))
        return g(params, xs), fnn.vmap(lambda x: (x * 2, xs.sum()), out_axes=(0, None))(xs)

    got = torch.compile(per_example, fullgraph=True)(params, xs)
    assert_trees_all_close(got, per_example(params, xs), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_mismatched_batch_sizes_name_the_argument_paths_and_sizes():
    with pytest.raises(
        ValueError,
        match=r"same size, got sizes \[3, 4\]: args\[0\]\.w of shape \(3, 2\) has size 3 on axis "
        r"0; args\[1\]\.data\.1 of shape \(4,\) has size 4 on axis 0",
    ):
        fnn.vmap(lambda p, x: p)({"w": torch.ones(3, 2)}, {"data": [torch.ones(3), torch.ones(4)]})


def test_axis_out_of_range_and_non_tensor_mapped_leaves_are_errors():
    with pytest.raises(ValueError, match=r"args\[0\]\.w over axis 2, but it has shape \(3, 2\)"):
        fnn.vmap(lambda p: p, in_axes=2)({"w": torch.ones(3, 2)})
    with pytest.raises(ValueError, match=r"args\[0\]\.t over axis 0, but it is a 0-d tensor"):
        fnn.vmap(lambda p: p)({"t": torch.tensor(1.0)})
    with pytest.raises(TypeError, match=r"args\[1\]\.lr over axis 0, but it is a float"):
        fnn.vmap(lambda x, c: x)(torch.ones(3), {"lr": 0.1})
    with pytest.raises(ValueError, match=r"puts the mapped axis at 3 in the output"):
        fnn.vmap(lambda x: x, out_axes=3)(torch.ones(3, 2))


def test_in_axes_that_are_not_a_prefix_are_errors():
    with pytest.raises(ValueError, match=r"in_axes is a tuple of length 1, but .* 2 positional"):
        fnn.vmap(lambda a, b: a, in_axes=(0,))(torch.ones(2), torch.ones(2))
    with pytest.raises(
        ValueError, match=r"at 'args\[0\]\.enc' in_axes has a dict with keys \['a'\]"
    ):
        fnn.vmap(lambda p: p, in_axes=({"enc": {"a": 0}},))({"enc": {"a": torch.ones(2), "b": 1}})
    with pytest.raises(TypeError, match=r"in_axes must be an int, None, or a tuple"):
        fnn.vmap(lambda p: p, in_axes={"a": 0})({"a": torch.ones(2)})
    with pytest.raises(TypeError, match=r"pytree of ints and Nones.*contains 'x'"):
        fnn.vmap(lambda p: p, in_axes=("x",))
