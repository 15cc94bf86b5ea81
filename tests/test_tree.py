"""Specification of fnn.tree: structure, paths, tree math and class registration."""

from __future__ import annotations

import collections
import dataclasses
import operator
import re

import numpy as np
import pytest
import torch
import torch._dynamo.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn

Pair = collections.namedtuple("Pair", ["first", "second"])
Triple = collections.namedtuple("Triple", ["x", "y", "z"])

FAST = settings(deadline=None, max_examples=40)


@dataclasses.dataclass
class Seen:
    """An unregistered class, hence a leaf: records what a mapped function was called with."""

    args: tuple


# ---------------------------------------------------------------------------------------------
# Random trees and a hand-written reference walker
# ---------------------------------------------------------------------------------------------


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    seed = draw(st.integers(0, 2**16))
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


KEYS = st.text(alphabet="abcxyz_", min_size=1, max_size=4)


def _nodes(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.dictionaries(KEYS, children, max_size=3),
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.builds(Pair, children, children),
        st.builds(Triple, children, children, children),
    )


TREES = st.recursive(st.one_of(tensors(), st.none()), _nodes, max_leaves=8)


def ref_nodes(tree, keys=(), names=()):
    """Yield (raw_keys, dotted_path, subtree) for every node and leaf, in fnn.tree order."""
    yield keys, ".".join(names), tree
    if tree is None or isinstance(tree, torch.Tensor):
        return
    if isinstance(tree, dict):
        items = [(k, str(k), tree[k]) for k in sorted(tree)]
    elif hasattr(tree, "_fields"):
        items = [(i, name, v) for i, (name, v) in enumerate(zip(tree._fields, tree, strict=True))]
    else:
        items = [(i, str(i), v) for i, v in enumerate(tree)]
    for key, name, child in items:
        yield from ref_nodes(child, (*keys, key), (*names, name))


def ref_leaves_with_path(tree):
    return [(path, t) for _, path, t in ref_nodes(tree) if isinstance(t, torch.Tensor)]


def replace_at(tree, keys, new):
    """Return ``tree`` with the subtree at raw ``keys`` replaced by ``new``."""
    if not keys:
        return new
    key, rest = keys[0], keys[1:]
    if isinstance(tree, dict):
        return {**tree, key: replace_at(tree[key], rest, new)}
    items = list(tree)
    items[key] = replace_at(items[key], rest, new)
    if hasattr(tree, "_fields"):
        return type(tree)(*items)
    return type(tree)(items)


def same_tensors(xs, ys) -> bool:
    return len(xs) == len(ys) and all(x is y for x, y in zip(xs, ys, strict=True))


def float_tree_pairs():
    """Two trees of float tensors with the same structure (second uses other values)."""
    return TREES.flatmap(
        lambda t: st.integers(0, 2**16).map(
            lambda seed: (
                t,
                fnn.tree.map(
                    lambda x: torch.randn(
                        x.shape, generator=torch.Generator().manual_seed(seed + x.numel())
                    ),
                    t,
                ),
            )
        )
    )


# ---------------------------------------------------------------------------------------------
# Structure: flatten, unflatten, map, paths, transpose
# ---------------------------------------------------------------------------------------------


@FAST
@given(TREES)
def test_flatten_then_unflatten_rebuilds_the_same_tree(tree):
    leaves, treedef = fnn.tree.flatten(tree)
    rebuilt = fnn.tree.unflatten(treedef, leaves)
    assert fnn.tree.structure(rebuilt) == treedef
    assert same_tensors(fnn.tree.leaves(rebuilt), leaves)
    assert treedef.num_leaves == len(leaves)


@FAST
@given(TREES)
def test_leaves_are_the_tensors_in_reference_order_and_none_is_not_a_leaf(tree):
    assert same_tensors(fnn.tree.leaves(tree), [t for _, t in ref_leaves_with_path(tree)])


@FAST
@given(TREES)
def test_map_identity_keeps_structure_and_leaves(tree):
    out = fnn.tree.map(lambda x: x, tree)
    assert fnn.tree.structure_mismatch(tree, out) is None
    assert same_tensors(fnn.tree.leaves(out), fnn.tree.leaves(tree))


@FAST
@given(TREES)
def test_map_over_several_trees_passes_leaves_at_the_same_place(tree):
    doubled = fnn.tree.map(lambda x: x * 2, tree)
    out = fnn.tree.map(lambda a, b, c: Seen((a, b, c)), tree, doubled, tree)
    triples = [seen.args for seen in fnn.tree.leaves(out)]
    for (a, b, c), leaf in zip(triples, fnn.tree.leaves(tree), strict=True):
        assert a is leaf and c is leaf
        assert torch.equal(b, leaf * 2)


@FAST
@given(TREES)
def test_flatten_with_path_matches_reference_walker_and_paths_are_unique(tree):
    pairs, treedef = fnn.tree.flatten_with_path(tree)
    expected = ref_leaves_with_path(tree)
    assert [p for p, _ in pairs] == [p for p, _ in expected]
    assert same_tensors([x for _, x in pairs], [x for _, x in expected])
    assert len({p for p, _ in pairs}) == len(pairs)
    assert treedef == fnn.tree.structure(tree)
    assert fnn.tree.paths(tree) == [p for p, _ in pairs]


@FAST
@given(TREES)
def test_map_with_path_calls_f_with_the_path_and_every_leaf(tree):
    halves = fnn.tree.map(lambda x: x / 2, tree)
    out = fnn.tree.map_with_path(lambda p, x, h: Seen((p, torch.equal(x, h * 2))), tree, halves)
    got = [seen.args for seen in fnn.tree.leaves(out)]
    assert got == [(p, True) for p, _ in ref_leaves_with_path(tree)]


@FAST
@given(TREES, st.integers(1, 4))
def test_transpose_list_of_trees_to_tree_of_lists_and_back(tree, n):
    trees = [fnn.tree.map(lambda x, i=i: x + i, tree) for i in range(n)]
    outer = fnn.tree.structure([0] * n)
    tree_of_lists = fnn.tree.transpose(outer, None, trees)
    inner = fnn.tree.structure(tree)
    assert fnn.tree.structure(tree_of_lists) == inner.compose(fnn.tree.structure([0] * n))
    if inner.num_leaves:
        lists = inner.flatten_up_to(tree_of_lists)
        for column, leaf in zip(lists, fnn.tree.leaves(tree), strict=True):
            assert all(torch.equal(column[i], leaf + i) for i in range(n))
    back = fnn.tree.transpose(inner, outer, tree_of_lists)
    assert fnn.tree.structure(back) == fnn.tree.structure(trees)
    assert same_tensors(fnn.tree.leaves(back), fnn.tree.leaves(trees))


def test_transpose_with_explicit_inner_structure_and_non_list_outer():
    tree = {"a": Pair(1, 2), "b": Pair(3, 4)}
    out = fnn.tree.transpose(
        fnn.tree.structure({"a": 0, "b": 0}), fnn.tree.structure(Pair(0, 0)), tree
    )
    assert out == Pair({"a": 1, "b": 3}, {"a": 2, "b": 4})


def test_transpose_rejects_a_tree_without_the_composed_structure():
    with pytest.raises(ValueError, match=r"trees differ at '1\.b'.*pytree has a list of 2"):
        fnn.tree.transpose(
            fnn.tree.structure([0, 0]), None, [{"a": 1, "b": 2}, {"a": 1, "b": [2, 3]}]
        )
    with pytest.raises(TypeError, match="must be structures"):
        fnn.tree.transpose([0, 0], None, [1, 2])


def test_unflatten_with_the_wrong_number_of_leaves_says_both_counts():
    treedef = fnn.tree.structure({"a": 0, "b": [0, 0]})
    with pytest.raises(ValueError, match="expects 3 leaves, but got 2"):
        fnn.tree.unflatten(treedef, [1, 2])


def test_is_leaf_keeps_subtrees_whole():
    tree = {"a": (1, 2), "b": [3]}
    assert fnn.tree.leaves(tree, is_leaf=lambda x: isinstance(x, tuple)) == [(1, 2), 3]
    pairs, _ = fnn.tree.flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))
    assert pairs == [("a", (1, 2)), ("b.0", 3)]


def test_paths_of_a_single_leaf_is_the_empty_string():
    assert fnn.tree.flatten_with_path(torch.ones(2))[0][0][0] == ""
    assert fnn.tree.flatten_with_path(None)[0] == []


def test_namedtuple_and_ordered_dict_paths():
    tree = {"opt": Pair(first=1, second=collections.OrderedDict([("z", 2), ("a", 3)]))}
    assert fnn.tree.paths(tree) == ["opt.first", "opt.second.z", "opt.second.a"]


def test_paths_equal_torch_state_dict_keys():
    module = torch.nn.Sequential(
        torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1)
    )
    state = module.state_dict()
    nested: dict = {}
    for key, value in state.items():
        *parents, last = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    pairs, _ = fnn.tree.flatten_with_path(nested)
    assert sorted(p for p, _ in pairs) == sorted(state.keys())
    assert all(x is state[p] for p, x in pairs)
    # The state_dict itself (an OrderedDict) keeps its order.
    assert fnn.tree.paths(state) == list(state.keys())
    assert fnn.tree.paths({"0": {"weight": 0, "bias": 0}}) == ["0.bias", "0.weight"]
    assert set(fnn.tree.paths({"0": {"weight": 0, "bias": 0}})) == set(
        torch.nn.Sequential(torch.nn.Linear(2, 3)).state_dict().keys()
    )


# ---------------------------------------------------------------------------------------------
# structure_mismatch and the errors built on it
# ---------------------------------------------------------------------------------------------


@FAST
@given(TREES)
def test_structure_mismatch_is_none_for_trees_of_the_same_structure(tree):
    assert fnn.tree.structure_mismatch(tree, fnn.tree.map(lambda x: x + 1, tree)) is None


@FAST
@given(TREES, st.data())
def test_structure_mismatch_names_the_first_differing_path(tree, data):
    nodes = list(ref_nodes(tree))
    keys, path, sub = data.draw(st.sampled_from(nodes))
    if isinstance(sub, torch.Tensor):
        new, first_has, second_has = [sub, sub], "a leaf", "a list of 2 children"
    elif sub is None:
        new, first_has, second_has = torch.zeros(()), "None", "a leaf"
    else:
        new, first_has, second_has = torch.zeros(()), None, "a leaf"
    mutated = replace_at(tree, keys, new)
    msg = fnn.tree.structure_mismatch(tree, mutated)
    where = f"at {path!r}" if path else "at the root"
    assert msg is not None and msg.startswith(f"trees differ {where}: first has ")
    if first_has is not None:
        assert f"first has {first_has}," in msg
    assert msg.endswith(f"second has {second_has}")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (
            {"encoder": {"bias": {"a": 1, "b": 2}}},
            {"encoder": {"bias": {"a": 1, "c": 2}}},
            "trees differ at 'encoder.bias': first has a dict with keys ['a', 'b'], "
            "second has a dict with keys ['a', 'c']",
        ),
        (
            {"w": 1.0},
            {"w": [1.0, 2.0, 3.0]},
            "trees differ at 'w': first has a leaf, second has a list of 3 children",
        ),
        ([1, 2], [1, 2, 3], "first has a list of 2 children, second has a list of 3 children"),
        ((1,), [1], "trees differ at the root: first has a tuple of 1 child, second has a list"),
        (
            Pair(1, 2),
            Triple(1, 2, 3),
            "first has a namedtuple Pair with fields ['first', 'second'], "
            "second has a namedtuple Triple with fields ['x', 'y', 'z']",
        ),
        (
            {"a": [None, 1]},
            {"a": [1, 1]},
            "trees differ at 'a.0': first has None, second has a leaf",
        ),
        (
            collections.OrderedDict(a=1),
            {"a": 1},
            "first has an OrderedDict with keys ['a'], second has a dict with keys ['a']",
        ),
    ],
)
def test_structure_mismatch_messages(a, b, expected):
    assert expected in fnn.tree.structure_mismatch(a, b)


def test_structure_mismatch_uses_the_given_names():
    msg = fnn.tree.structure_mismatch({"a": 1}, {"b": 1}, names=("params", "grads"))
    assert msg == "trees differ at the root: params has a dict with keys ['a'], grads has a " + (
        "dict with keys ['b']"
    )


def test_map_with_mismatched_trees_raises_with_the_path():
    with pytest.raises(
        ValueError, match=r"fnn\.tree\.map: .*trees differ at 'x\.1': tree 1 has a leaf, tree 3"
    ):
        fnn.tree.map(lambda *xs: xs[0], {"x": [1, 2]}, {"x": [1, 2]}, {"x": [1, (2, 3)]})
    with pytest.raises(ValueError, match=r"fnn\.tree\.map_with_path: .*at 'b'"):
        fnn.tree.map_with_path(lambda p, a, b: a, {"a": 1, "b": 2}, {"a": 1, "b": None})


# ---------------------------------------------------------------------------------------------
# reduce, all
# ---------------------------------------------------------------------------------------------


@FAST
@given(TREES)
def test_reduce_folds_leaves_in_order(tree):
    got = fnn.tree.reduce(lambda acc, x: [*acc, x], tree, [])
    assert same_tensors(got, fnn.tree.leaves(tree))


def test_reduce_without_initializer_uses_the_first_leaf_and_rejects_empty_trees():
    assert fnn.tree.reduce(operator.sub, {"a": 10, "b": [3, 2]}) == 5
    with pytest.raises(TypeError, match="has no leaves and no initializer"):
        fnn.tree.reduce(operator.add, {"a": None, "b": []})


def test_all_checks_every_element_of_every_leaf():
    assert fnn.tree.all({"a": torch.tensor([1, 2]), "b": True, "c": np.array([1.0])})
    assert not fnn.tree.all({"a": torch.tensor([1, 0]), "b": True})
    assert not fnn.tree.all([np.array([True, False])])
    assert not fnn.tree.all([1, 0])
    assert fnn.tree.all({"empty": None, "nothing": []}) is True


# ---------------------------------------------------------------------------------------------
# Tree math
# ---------------------------------------------------------------------------------------------


def ref_map(f, *trees):
    """Apply f over leaves with the reference walker, returning the list of results."""
    leaf_lists = [[t for _, t in ref_leaves_with_path(tree)] for tree in trees]
    return [f(*xs) for xs in zip(*leaf_lists, strict=True)]


def close_lists(xs, ys) -> bool:
    return len(xs) == len(ys) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.allclose(x, y)
        for x, y in zip(xs, ys, strict=True)
    )


@FAST
@given(float_tree_pairs())
def test_elementwise_math_matches_leaf_by_leaf_reference(pair):
    a, b = pair
    leaves = fnn.tree.leaves
    assert close_lists(leaves(fnn.tree.add(a, b, a)), ref_map(lambda x, y: x + y + x, a, b))
    assert close_lists(leaves(fnn.tree.add(a)), ref_map(lambda x: x, a))
    assert close_lists(leaves(fnn.tree.sub(a, b)), ref_map(torch.sub, a, b))
    assert close_lists(leaves(fnn.tree.scale(a, 0.5)), ref_map(lambda x: x * 0.5, a))
    assert close_lists(
        leaves(fnn.tree.scale(a, torch.tensor(-2.0))), ref_map(lambda x: x * -2.0, a)
    )
    assert close_lists(leaves(fnn.tree.zeros_like(a)), ref_map(torch.zeros_like, a))
    assert close_lists(leaves(fnn.tree.ones_like(a)), ref_map(torch.ones_like, a))
    assert close_lists(
        leaves(fnn.tree.full_like(a, 3.5)), ref_map(lambda x: torch.full_like(x, 3.5), a)
    )
    assert close_lists(
        leaves(fnn.tree.clip(a, min=-0.5, max=0.25)), ref_map(lambda x: x.clamp(-0.5, 0.25), a)
    )
    assert close_lists(leaves(fnn.tree.clip(a, max=0.0)), ref_map(lambda x: x.clamp(max=0.0), a))
    cond = fnn.tree.map(lambda x: x > 0, a)
    assert close_lists(leaves(fnn.tree.where(cond, a, b)), ref_map(torch.where, cond, a, b))
    assert close_lists(leaves(fnn.tree.where(torch.tensor(True), a, b)), ref_map(lambda x: x, a))
    assert close_lists(leaves(fnn.tree.where(False, a, b)), ref_map(lambda x: x, b))
    for out in (fnn.tree.add(a, b), fnn.tree.scale(a, 2.0), fnn.tree.clip(a, min=0.0)):
        assert fnn.tree.structure_mismatch(out, a) is None


@FAST
@given(float_tree_pairs())
def test_reductions_match_reference(pair):
    a, b = pair
    flat_a = [t.reshape(-1) for _, t in ref_leaves_with_path(a)]
    flat_b = [t.reshape(-1) for _, t in ref_leaves_with_path(b)]
    cat_a = torch.cat(flat_a) if flat_a else torch.zeros(0)
    cat_b = torch.cat(flat_b) if flat_b else torch.zeros(0)
    for got, want in [
        (fnn.tree.l2_norm(a), torch.linalg.vector_norm(cat_a)),
        (fnn.tree.l2_norm(a, squared=True), torch.linalg.vector_norm(cat_a) ** 2),
        (fnn.tree.vdot(a, b), torch.dot(cat_a, cat_b)),
    ]:
        assert got.shape == () and got.dtype == torch.float32
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert fnn.tree.size(a) == cat_a.numel()
    assert fnn.tree.bytes(a) == 4 * cat_a.numel()


def test_empty_trees_give_zero():
    for empty in ({}, [], None, {"a": None, "b": ()}):
        assert torch.equal(fnn.tree.l2_norm(empty), torch.tensor(0.0))
        assert torch.equal(fnn.tree.l2_norm(empty, squared=True), torch.tensor(0.0))
        assert torch.equal(fnn.tree.vdot(empty, empty), torch.tensor(0.0))
        assert fnn.tree.size(empty) == 0 and fnn.tree.bytes(empty) == 0


def test_zero_dim_and_empty_tensor_leaves():
    tree = {"scalar": torch.tensor(3.0), "empty": torch.zeros(0, 4), "v": torch.tensor([4.0])}
    assert torch.equal(fnn.tree.l2_norm(tree), torch.tensor(5.0))
    assert torch.equal(fnn.tree.vdot(tree, tree), torch.tensor(25.0))
    assert fnn.tree.size(tree) == 2
    assert fnn.tree.l2_norm({"only": torch.tensor(-2.0)}).shape == ()
    assert torch.equal(
        fnn.tree.l2_norm({"only": torch.tensor(-2.0)}, squared=True), torch.tensor(4.0)
    )


def test_mixed_dtypes_promote_in_reductions():
    tree = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(2, dtype=torch.float32)}
    assert fnn.tree.l2_norm(tree).dtype == torch.float64
    assert torch.allclose(fnn.tree.l2_norm(tree), torch.tensor(2.0, dtype=torch.float64))
    assert fnn.tree.vdot(tree, tree).dtype == torch.float64


def test_numbers_and_numpy_leaves():
    tree = {"n": np.ones((2, 3), dtype=np.float32), "x": 2.0, "t": torch.zeros(4, dtype=torch.int8)}
    assert fnn.tree.size(tree) == 11
    assert fnn.tree.bytes({"n": tree["n"], "t": tree["t"]}) == 28
    assert float(fnn.tree.l2_norm({"n": np.array([3.0]), "x": 4.0})) == pytest.approx(5.0)
    assert fnn.tree.add({"x": 1, "n": np.ones(2)}, {"x": 2, "n": np.ones(2)})["x"] == 3
    zeros = fnn.tree.zeros_like(tree)
    assert zeros["x"] == 0.0 and isinstance(zeros["n"], np.ndarray) and zeros["n"].sum() == 0
    assert zeros["t"].dtype == torch.int8
    with pytest.raises(TypeError, match=r"fnn\.tree\.bytes: .*the leaf at 'x' is a float"):
        fnn.tree.bytes(tree)
    with pytest.raises(TypeError, match=r"the leaf at 'a\.0' is a str"):
        fnn.tree.size({"a": ["text"]})


def test_cast_converts_floating_leaves_only():
    state = {
        "params": {"w": torch.zeros(2, dtype=torch.float32), "h": torch.zeros(1, dtype=torch.half)},
        "step": torch.tensor(7),
        "key": torch.tensor([1, 2], dtype=torch.uint32),
        "mask": torch.tensor([True]),
        "lr": 0.1,
    }
    out = fnn.tree.cast(state, torch.bfloat16)
    assert out["params"]["w"].dtype == torch.bfloat16 and out["params"]["h"].dtype == torch.bfloat16
    assert out["step"] is state["step"] and out["key"] is state["key"]
    assert out["mask"] is state["mask"] and out["lr"] == 0.1
    with pytest.raises(ValueError, match=r"expected a floating torch\.dtype .*got torch\.int32"):
        fnn.tree.cast(state, torch.int32)


def test_math_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"fnn\.tree\.add: .*trees differ at 'b'"):
        fnn.tree.add({"a": torch.ones(1), "b": torch.ones(1)}, {"a": torch.ones(1), "b": None})
    with pytest.raises(ValueError, match=r"fnn\.tree\.vdot: .*at the root"):
        fnn.tree.vdot([torch.ones(1)], (torch.ones(1),))
    with pytest.raises(ValueError, match=r"0-d tensor; got a tensor of shape \(2,\)"):
        fnn.tree.scale({"a": torch.ones(2)}, torch.ones(2))
    with pytest.raises(ValueError, match="at least one of min and max"):
        fnn.tree.clip({"a": torch.ones(2)})
    with pytest.raises(ValueError, match=r"fnn\.tree\.where: cond must be .*trees differ at 'a'"):
        fnn.tree.where({"a": None}, {"a": torch.ones(1)}, {"a": torch.ones(1)})
    with pytest.raises(TypeError, match=r"l2_norm: .*the leaf at 'step' has dtype torch\.int64"):
        fnn.tree.l2_norm({"w": torch.ones(2), "step": torch.tensor(3)})
    with pytest.raises(TypeError, match="at least one tree"):
        fnn.tree.add()


def test_math_under_torch_compile_fullgraph_matches_eager():
    def step(params, grads, lr):
        grads = fnn.tree.clip(grads, min=-1.0, max=1.0)
        norm = fnn.tree.l2_norm(grads)
        update = fnn.tree.scale(grads, -lr / (norm + 1.0))
        new = fnn.tree.add(params, update)
        new = fnn.tree.where(norm > 0, new, params)
        diff = fnn.tree.sub(new, params)
        return new, fnn.tree.vdot(diff, diff), fnn.tree.l2_norm(new, squared=True)

    params = {"w": torch.randn(3, 2), "b": torch.randn(3), "s": torch.tensor(0.5)}
    grads = fnn.tree.map(lambda x: torch.randn_like(x) * 3, params)
    lr = torch.tensor(0.1)
    eager = step(params, grads, lr)
    compiled = torch.compile(step, fullgraph=True)(params, grads, lr)
    assert close_lists(fnn.tree.leaves(compiled), fnn.tree.leaves(eager))
    assert fnn.tree.structure(compiled) == fnn.tree.structure(eager)


Nothing = collections.namedtuple("Nothing", [])


@fnn.tree.register_dataclass
@dataclasses.dataclass
class OnlyStatic:
    """A registered dataclass without data fields: an empty subtree."""

    name: str = dataclasses.field(default="cfg", metadata={"static": True})


def _tree_ops(t):
    """Every fnn.tree entry point on one tree; run eagerly and under torch.compile."""
    leaves, treedef = fnn.tree.flatten(t)
    pairs, path_def = fnn.tree.flatten_with_path(t)
    return (
        fnn.tree.map(lambda x: x + 1, t),
        fnn.tree.map(lambda x, y: x * y, t, t),
        fnn.tree.unflatten(fnn.tree.structure(t), fnn.tree.leaves(t)),
        fnn.tree.unflatten(treedef, [x * 2 for x in leaves]),
        path_def.unflatten([x for _, x in pairs]),
        [p for p, _ in pairs],
        fnn.tree.paths(t),
        fnn.tree.map_with_path(lambda p, x: x * len(p), t),
        fnn.tree.add(t, t),
        fnn.tree.sub(t, fnn.tree.scale(t, 0.5)),
        fnn.tree.where(torch.tensor(True), t, fnn.tree.zeros_like(t)),
        fnn.tree.l2_norm(t),
        treedef.num_leaves,
        fnn.tree.structure(t) == fnn.tree.structure(fnn.tree.ones_like(t)),
    )


def _plain(tree):
    """``repr`` of a tree with tensors as lists: shows types, dict key order and values."""
    return repr(
        fnn.tree.map(lambda x: (x.dtype, x.tolist()) if isinstance(x, torch.Tensor) else x, tree)
    )


EMPTY_SUBTREES = {
    "empty dict": {"a": torch.ones(1), "b": {}},
    "empty root": {},
    "none root": None,
    "empty list, tuple, None": {"b": [], "a": (), "c": None, "d": torch.ones(2)},
    "empty namedtuple": {"n": Nothing(), "p": Pair((), torch.ones(1)), "m": [Nothing()]},
    "dataclass without data": {"s": OnlyStatic(), "w": torch.ones(1), "t": [OnlyStatic("x")]},
    "nested empties": {
        "z": {"y": {}, "x": [{}, (), None, {"q": {}}]},
        "a": torch.arange(3.0),
        "d": collections.defaultdict(list),
        "o": collections.OrderedDict(b={}, a=torch.ones(1)),
    },
    "unsorted keys": {"b": torch.ones(1), "a": {}, "c": {"z": torch.zeros(1), "y": {}}},
}


@pytest.mark.parametrize("name", list(EMPTY_SUBTREES))
def test_tree_functions_on_empty_subtrees_under_torch_compile_match_eager(name):
    # Dynamo constant-folds optree's dict flatten for all-constant dicts such as {} and fails on
    # its metadata ("Unexpected type in sourceless builder"); fnn.tree must still trace.
    tree = EMPTY_SUBTREES[name]
    eager = _tree_ops(tree)
    counter = torch._dynamo.testing.CompileCounter()
    with torch._dynamo.config.patch(recompile_limit=64):
        compiled = torch.compile(_tree_ops, backend=counter, fullgraph=True)(tree)
    assert counter.frame_count == 1
    assert _plain(compiled) == _plain(eager)
    assert [type(x) for x in compiled] == [type(x) for x in eager]


def test_empty_dict_state_under_torch_compile_with_inductor():
    f = torch.compile(lambda t: fnn.tree.map(lambda x: x + 1, t), fullgraph=True)
    out = f({"a": torch.ones(1), "b": {}})
    assert _plain(out) == _plain({"a": torch.full((1,), 2.0), "b": {}})
    assert f({}) == {}


def test_math_under_vmap_and_grad():
    batch = {"w": torch.randn(5, 3, 2), "b": torch.randn(5, 3)}
    norms = torch.func.vmap(fnn.tree.l2_norm)(batch)
    expected = torch.stack(
        [fnn.tree.l2_norm(fnn.tree.map(lambda x, i=i: x[i], batch)) for i in range(5)]
    )
    assert torch.allclose(norms, expected)
    scaled = torch.func.vmap(lambda t, s: fnn.tree.add(fnn.tree.scale(t, s), t))(
        batch, torch.arange(5.0)
    )
    assert torch.allclose(scaled["w"], batch["w"] * (torch.arange(5.0) + 1)[:, None, None])
    params = {"w": torch.randn(3, 2), "b": torch.randn(3)}
    g = torch.func.grad(lambda p: fnn.tree.l2_norm(p, squared=True))(params)
    assert close_lists(fnn.tree.leaves(g), fnn.tree.leaves(fnn.tree.scale(params, 2.0)))
    zero = {"w": torch.zeros(2), "b": torch.zeros(())}
    g0 = torch.func.grad(fnn.tree.l2_norm)(zero)
    assert fnn.tree.all(fnn.tree.map(lambda x: torch.isfinite(x), g0))
    gv = torch.func.grad(lambda p, q: fnn.tree.vdot(p, q))(params, params)
    assert close_lists(fnn.tree.leaves(gv), fnn.tree.leaves(params))


# ---------------------------------------------------------------------------------------------
# Registering classes: fnn.tree and torch.utils._pytree in one call
# ---------------------------------------------------------------------------------------------


@fnn.tree.register_dataclass
@dataclasses.dataclass
class Linear:
    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: str = dataclasses.field(default="tanh", metadata={"static": True})


class Affine:
    """A plain class registered with register_pytree_node and a path_names function."""

    def __init__(self, scale, shift, name="affine"):
        self.scale, self.shift, self.name = scale, shift, name


fnn.tree.register_pytree_node(
    Affine,
    lambda m: ((m.scale, m.shift), m.name),
    lambda name, children: Affine(*children, name=name),
    path_names=lambda m: ("scale", "shift"),
)


def make_linear(*batch):
    return Linear(torch.randn(*batch, 3, 2), torch.randn(*batch, 3))


def make_affine(*batch):
    return Affine(torch.randn(*batch, 3, 2), torch.randn(*batch, 3))


def fields(obj):
    if isinstance(obj, Linear):
        return obj.weight, obj.bias
    return obj.scale, obj.shift


def rebuild(obj, a, b):
    return Linear(a, b) if isinstance(obj, Linear) else Affine(a, b)


def apply(obj, x):
    a, b = fields(obj)
    return torch.tanh(x @ a.T + b)


REGISTERED = pytest.mark.parametrize("make", [make_linear, make_affine], ids=["dataclass", "node"])


@REGISTERED
def test_registered_class_paths_structure_and_static_data(make):
    obj = make()
    names = ["weight", "bias"] if isinstance(obj, Linear) else ["scale", "shift"]
    assert fnn.tree.paths({"layer": obj}) == [f"layer.{n}" for n in names]
    doubled = fnn.tree.map(lambda x: x * 2, obj)
    assert type(doubled) is type(obj)
    assert torch.equal(fields(doubled)[0], fields(obj)[0] * 2)
    assert fnn.tree.structure_mismatch(obj, doubled) is None


def test_dataclass_static_fields_are_structure_and_none_is_an_empty_subtree():
    a = Linear(torch.ones(1), torch.ones(1), activation="tanh")
    b = Linear(torch.ones(1), torch.ones(1), activation="relu")
    assert fnn.tree.leaves(a) == [a.weight, a.bias]
    msg = fnn.tree.structure_mismatch(a, b)
    assert "at the root" in msg and "'tanh'" in msg and "'relu'" in msg
    no_bias = Linear(torch.ones(1), None)
    assert fnn.tree.paths(no_bias) == ["weight"]
    assert fnn.tree.structure_mismatch(no_bias, a) == (
        "trees differ at 'bias': first has None, second has a leaf"
    )


@REGISTERED
def test_registered_class_through_torch_func_grad(make):
    obj, x = make(), torch.randn(4, 2)

    def loss(o):
        return apply(o, x).sum()

    g = torch.func.grad(loss)(obj)
    assert type(g) is type(obj)
    ref = torch.func.grad(lambda a, b: loss(rebuild(obj, a, b)), argnums=(0, 1))(*fields(obj))
    assert all(torch.allclose(u, v) for u, v in zip(fields(g), ref, strict=True))


def test_registered_dataclass_with_a_none_field_through_grad():
    obj, x = Linear(torch.randn(3, 2), None), torch.randn(4, 2)
    g = torch.func.grad(lambda o: torch.tanh(x @ o.weight.T).sum())(obj)
    assert g.bias is None and g.weight.shape == (3, 2)


@REGISTERED
def test_registered_class_through_torch_func_vmap(make):
    batched, x = make(5), torch.randn(4, 2)
    out = torch.func.vmap(lambda o: apply(o, x))(batched)
    per_example = [apply(rebuild(batched, *(f[i] for f in fields(batched))), x) for i in range(5)]
    assert torch.allclose(out, torch.stack(per_example))
    mapped = torch.func.vmap(lambda o: fnn.tree.scale(o, 2.0))(batched)
    assert type(mapped) is type(batched)
    assert torch.allclose(fields(mapped)[1], fields(batched)[1] * 2)


@REGISTERED
def test_registered_class_through_torch_compile_fullgraph(make):
    obj, x = make(), torch.randn(4, 2)

    def step(o, x):
        g = torch.func.grad(lambda o: apply(o, x).sum())(o)
        return fnn.tree.sub(o, fnn.tree.scale(g, 0.1))

    eager = step(obj, x)
    compiled = torch.compile(step, fullgraph=True)(obj, x)
    assert type(compiled) is type(obj)
    assert close_lists(list(fields(compiled)), list(fields(eager)))


@REGISTERED
def test_registered_class_through_torch_export(make):
    class Module(torch.nn.Module):
        def forward(self, o, x):
            a, b = fields(o)
            return rebuild(o, a * 2, torch.tanh(x @ a.T + b).sum(0))

    obj, x = make(), torch.randn(4, 2)
    exported = torch.export.export(Module(), (obj, x))
    out = exported.module()(obj, x)
    want = Module()(obj, x)
    assert type(out) is type(obj)
    assert close_lists(list(fields(out)), list(fields(want)))


def test_registering_twice_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Linear is already registered .*optree.*torch"):
        fnn.tree.register_dataclass(Linear)
    with pytest.raises(ValueError, match=r"Affine is already registered"):
        fnn.tree.register_pytree_node(Affine, lambda m: ((), None), lambda a, c: Affine(1, 2))


def test_register_dataclass_with_explicit_fields_and_as_a_function():
    @dataclasses.dataclass
    class Norm:
        scale: torch.Tensor
        eps: float
        name: str

    assert fnn.tree.register_dataclass(Norm, meta_fields=["eps", "name"]) is Norm
    obj = Norm(torch.ones(2), 1e-5, "ln")
    assert fnn.tree.leaves(obj) == [obj.scale]
    assert fnn.tree.map(lambda t: t * 3, obj).eps == 1e-5

    @fnn.tree.register_dataclass(data_fields=["a", "b"], meta_fields=[])
    @dataclasses.dataclass
    class Two:
        a: int
        b: int

    assert fnn.tree.paths(Two(1, 2)) == ["a", "b"]


def test_register_dataclass_rejects_bad_fields_and_non_dataclasses():
    @dataclasses.dataclass
    class C:
        a: int
        b: int

    with pytest.raises(ValueError, match=r"names \['c'\], which are not init fields"):
        fnn.tree.register_dataclass(C, data_fields=["a", "c"])
    with pytest.raises(ValueError, match=r"in both: \['a'\], in neither: \[\]"):
        fnn.tree.register_dataclass(C, data_fields=["a", "b"], meta_fields=["a"])
    with pytest.raises(TypeError, match="sequence of field names, got the string 'a'"):
        fnn.tree.register_dataclass(C, meta_fields="a")
    with pytest.raises(TypeError, match="expected a dataclass"):
        fnn.tree.register_dataclass(Affine)
    assert fnn.tree.leaves(C(1, 2)) == [C(1, 2)]  # failed registrations left no trace


def test_register_pytree_node_path_names_default_and_sequence():
    class Box:
        def __init__(self, items):
            self.items = items

    fnn.tree.register_pytree_node(Box, lambda b: (b.items, None), lambda _, c: Box(c))
    assert fnn.tree.paths({"box": Box([1, 2])}) == ["box.0", "box.1"]

    class Named:
        def __init__(self, lo, hi):
            self.lo, self.hi = lo, hi

    fnn.tree.register_pytree_node(
        Named, lambda n: ((n.lo, n.hi), None), lambda _, c: Named(*c), path_names=("lo", "hi")
    )
    assert fnn.tree.paths(Named(0, 1)) == ["lo", "hi"]

    class Bad:
        pass

    fnn.tree.register_pytree_node(
        Bad, lambda o: ((1,), None), lambda _, c: Bad(), path_names=("a", "b")
    )
    with pytest.raises(ValueError, match=re.escape("path_names gave 2 names ['a', 'b'] for the 1")):
        fnn.tree.paths(Bad())


@REGISTERED
def test_registered_class_torch_treespec_survives_export_serialization(make):
    # torch.export.save writes tree specs with treespec_dumps; static data must come back equal.
    spec = torch.utils._pytree.tree_structure({"layer": make(), "cfg": (torch.ones(1), None)})
    assert torch.utils._pytree.treespec_loads(torch.utils._pytree.treespec_dumps(spec)) == spec


def test_static_data_that_json_cannot_hold_fails_to_serialize_with_a_clear_error():
    @fnn.tree.register_dataclass
    @dataclasses.dataclass
    class Conv:
        weight: torch.Tensor
        kernel: tuple = dataclasses.field(default=(3, 3), metadata={"static": True})
        dtype: torch.dtype = dataclasses.field(default=torch.float32, metadata={"static": True})
        init: object = dataclasses.field(default=None, metadata={"static": True})

    spec = torch.utils._pytree.tree_structure(Conv(torch.ones(1)))
    assert torch.utils._pytree.treespec_loads(torch.utils._pytree.treespec_dumps(spec)) == spec
    bad = torch.utils._pytree.tree_structure(Conv(torch.ones(1), init=object()))
    with pytest.raises(TypeError, match=r"cannot serialize the static data .* has type object"):
        torch.utils._pytree.treespec_dumps(bad)
