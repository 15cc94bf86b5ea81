"""fnn.jit returns large results in the buffers of earlier results that nobody holds any more.

The threshold (32 MB, glibc's largest mmap threshold) is lowered here so that small tensors
count as large; the tests use dynamo's "eager" backend, where donation is the same ``copy_``.
What must hold: every result equals the eager function's; a result anybody still holds (a
reference, a view, a numpy array, a DLPack capsule) keeps its values; dropped results are
reused; results autograd records are never written into buffers.
"""

from __future__ import annotations

import pytest
import torch
import torch.utils.dlpack
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn._src import jit_recycle
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

EAGER = {"backend": "eager"}


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    monkeypatch.setattr(jit_recycle, "RECYCLE_BYTES", 256)  # 64 float32s count as large
    # Recycling runs when glibc returns large blocks to the system (fnn's "release" policy); the
    # process-wide policy itself stays as it is.
    monkeypatch.setattr(jit_recycle, "cpu_memory_policy", lambda: "release")


def outer(w: torch.Tensor, x: torch.Tensor) -> dict:
    """Per-example outer products (large) and their sum (small)."""
    per_example = x[:, :, None] * w[None, :, :]
    return {"per_example": per_example, "total": per_example.sum(0), "w": w}


def data(seed: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 6, generator=g), torch.randn(n, 5, generator=g)


def ptr(out: dict) -> int:
    return out["per_example"].data_ptr()


def test_dropped_results_are_reused_and_every_result_is_right():
    f = fnn.jit(outer, **EAGER)
    ptrs = []
    for seed in range(6):
        w, x = data(seed)
        out = f(w, x)
        assert_trees_all_close(out, outer(w, x))
        assert out["w"] is w  # an input returned as a result stays that input
        ptrs.append(ptr(out))
        del out
    assert len(set(ptrs[2:])) <= 2, "from the third call, dropped results should be reused"
    assert f.num_compiles == 2  # the first version, then the one writing into buffers


def _hold(out: dict, how: str):
    t = out["per_example"]
    if how == "reference":
        return t
    if how == "view":
        return t[1:]
    if how == "numpy":
        return t.numpy()
    if how == "dlpack":
        return torch.utils.dlpack.to_dlpack(t)
    if how == "detached":
        return t.detach()
    if how == "storage":
        return t.untyped_storage()
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["reference", "view", "numpy", "dlpack", "detached", "storage"])
def test_results_still_held_keep_their_values(how):
    f = fnn.jit(outer, **EAGER)
    held, want = [], []
    for seed in range(5):
        w, x = data(seed)
        out = f(w, x)
        want.append(out["per_example"].clone())
        held.append(_hold(out, how))
        del out
    for k, h in enumerate(held):
        if how == "dlpack":
            continue  # a capsule can be consumed once; holding it is what matters
        got = torch.from_numpy(h) if how == "numpy" else h
        if how == "storage":
            got = torch.tensor([], dtype=torch.float32).set_(h).view(want[k].shape)
        expect = want[k][1:] if how == "view" else want[k]
        assert_trees_all_equal(got, expect)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=3, max_size=10))
def test_any_pattern_of_holding_and_dropping_keeps_held_results(keeps):
    f = fnn.jit(outer, **EAGER)
    held = []
    for seed, keep in enumerate(keeps):
        w, x = data(seed)
        out = f(w, x)
        assert_trees_all_close(out, outer(w, x))
        if keep:
            held.append((out, outer(w, x)))
        del out
    for out, want in held:
        assert_trees_all_close(out, want)


def test_results_autograd_records_are_not_written_into_buffers():
    f = fnn.jit(outer, **EAGER)
    for seed in range(3):
        f(*data(seed))
    w, x = data(7)
    w.requires_grad_()
    out = f(w, x)
    assert out["per_example"].grad_fn is not None
    (grad,) = torch.autograd.grad(out["total"].sum(), w)
    assert_trees_all_close(grad, torch.full_like(w, 1.0) * x.sum(0)[:, None])


def test_reuse_buffers_false_compiles_once_and_returns_new_tensors():
    f = fnn.jit(outer, reuse_buffers=False, **EAGER)
    kept = [f(*data(seed)) for seed in range(3)]
    ptrs = []
    for seed in range(3, 6):
        out = f(*data(seed))
        ptrs.append(ptr(out))
        del out
    assert f.num_compiles == 1
    assert all(ptr(k) not in ptrs for k in kept)


def test_donated_arguments_are_filled_first():
    @fnn.jit(donate_argnums=0, **EAGER)
    def scaled(acc, x):
        return acc + x.sum(0), x[:, :, None] * x[:, None, :]

    acc = torch.zeros(5)
    for seed in range(4):
        _, x = data(seed)
        before = acc.clone()
        new_acc, big = scaled(acc, x)
        assert new_acc is acc
        assert_trees_all_close(new_acc, before + x.sum(0))
        assert_trees_all_close(big, x[:, :, None] * x[:, None, :])
        del big


def test_a_result_that_changes_shape_turns_recycling_off():
    f = fnn.jit(outer, **EAGER)
    for n in (4, 4, 4, 6, 7, 4):
        w, x = data(n, n=n)
        assert_trees_all_close(f(w, x), outer(w, x))
    entry = next(iter(f._cache.values()))
    assert entry.recycling is False


def test_small_results_are_left_alone(monkeypatch):
    monkeypatch.setattr(jit_recycle, "RECYCLE_BYTES", 2**40)
    f = fnn.jit(outer, **EAGER)
    for seed in range(3):
        f(*data(seed))
    assert f.num_compiles == 1
    assert next(iter(f._cache.values())).recycling is False


@pytest.mark.parametrize("policy", ["keep", "release", "system"])
def test_recycling_runs_only_when_the_allocator_returns_freed_blocks(monkeypatch, policy):
    monkeypatch.setattr(jit_recycle, "cpu_memory_policy", lambda: policy)
    f = fnn.jit(outer, **EAGER)
    for seed in range(3):
        w, x = data(seed)
        assert_trees_all_close(f(w, x), outer(w, x))
    recycling = next(iter(f._cache.values())).recycling
    if policy == "keep":  # glibc reuses freed blocks itself: no second version compiled
        assert (f.num_compiles, recycling) == (1, False)
    else:
        assert f.num_compiles == 2
        assert recycling.calls == 2


def test_under_fail_on_recompile_the_second_version_is_never_compiled():
    f = fnn.jit(outer, **EAGER)
    f(*data(0))
    with torch.compiler.set_stance("fail_on_recompile"):
        for seed in range(1, 4):
            w, x = data(seed)
            assert_trees_all_close(f(w, x), outer(w, x))
    assert f.num_compiles == 1
    assert next(iter(f._cache.values())).recycling is False


def test_results_sharing_memory_with_an_input_or_each_other_are_not_recycled():
    def shares(w, x):
        big = x[:, :, None] * w[None, :, :]
        own = torch.cat([big, big]) * 2
        return {"input": w.detach(), "big": big, "alias": big.detach(), "own": own}

    w, x = data(0)
    out = shares(w, x)
    picked = jit_recycle.recyclable(out, [w, x])
    assert [id(t) for t in picked] == [id(out["own"])]
    f = fnn.jit(shares, **EAGER)
    for seed in range(4):
        w, x = data(seed)
        got = f(w, x)
        assert got["input"].data_ptr() == w.data_ptr()
        assert got["alias"].data_ptr() == got["big"].data_ptr()
        assert_trees_all_close(got, shares(w, x))
        del got


def test_only_results_whose_shape_no_input_or_other_result_has_are_recycled():
    # Buffers are filled by shape in flattened order: a result sharing its shape with an input
    # returned as a result would take (and overwrite) the wrong buffer, so it is not recycled.
    def pair(x, y):
        return {"a": x[:, :, None] * x[:, None, :], "b": 2 * y, "y": y}

    x, y = torch.randn(4, 5), torch.randn(4, 5, 5)
    assert jit_recycle.recyclable(pair(x, y), [x, y]) == []
    f = fnn.jit(pair, **EAGER)
    for seed in range(4):
        x = data(seed)[1]
        out = f(x, y)
        assert out["y"] is y
        assert_trees_all_close(out, pair(x, y))
    assert f.num_compiles == 1
