"""Specification of fnn's jax.lax-style control flow: scan, fori_loop, while_loop, cond, switch,
associative_scan — against hand-written loops, eagerly and under grad, vmap and compile."""

from __future__ import annotations

import collections

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

import fnn
from fnn.testing import assert_max_compiles, assert_trees_all_close, check_grads

FAST = settings(deadline=None, max_examples=25)
State = collections.namedtuple("State", ["h", "count"])


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------
# scan
# ---------------------------------------------------------------------------------------------


def rnn_step(carry, x):
    """A carry that is a namedtuple holding a dict; y is a pytree with a None subtree."""
    h = torch.tanh(carry.h["state"] * 0.9 + x["input"] * x["gain"])
    new = State(h={"state": h}, count=carry.count + 1)
    return new, {"out": h.sum(), "none": None, "pair": (h * 2, x["gain"])}


def reference_scan(f, init, xs, length, reverse):
    """jax.lax.scan's documented Python semantics, written out."""
    carry, ys = init, []
    for i in reversed(range(length)) if reverse else range(length):
        carry, y = f(carry, fnn.tree.map(lambda x, i=i: x[i], xs))
        ys.append(y)
    if reverse:
        ys.reverse()
    stacked = fnn.tree.map(lambda *leaves: torch.stack(leaves), *ys) if ys else None
    return carry, stacked


@FAST
@given(length=st.integers(1, 6), width=st.integers(1, 3), reverse=st.booleans())
def test_scan_matches_a_python_loop_on_pytrees(length, width, reverse):
    xs = {"input": randn(length, width, seed=length), "gain": randn(length, seed=width)}
    init = State(h={"state": torch.zeros(width, dtype=torch.float64)}, count=torch.tensor(0))
    got = fnn.scan(rnn_step, init, xs, reverse=reverse)
    want = reference_scan(rnn_step, init, xs, length, reverse)
    assert_trees_all_close(got, want)
    assert got[1]["none"] is None
    assert got[1]["pair"][0].shape == (length, width)


def test_scan_reverse_keeps_ys_aligned_with_xs():
    xs = torch.tensor([1.0, 2.0, 3.0])
    carry, ys = fnn.scan(lambda c, x: (c + x, c + x), torch.tensor(0.0), xs, reverse=True)
    assert carry.item() == 6.0
    assert ys.tolist() == [6.0, 5.0, 3.0]  # ys[i] is the sum of xs[i:]


def test_scan_without_xs_uses_length_and_may_return_no_ys():
    carry, ys = fnn.scan(lambda c, x: (c * 2, None), torch.tensor(1.0), None, length=5)
    assert carry.item() == 32.0 and ys is None
    carry, ys = fnn.scan(lambda c, x: (c + 1, c), torch.tensor(0), length=3)
    assert ys.tolist() == [0, 1, 2]


def test_scan_of_length_zero_returns_init_and_empty_stacks():
    def f(c, x):
        return c + x.sum(), {"y": x * 2}

    carry, ys = fnn.scan(f, torch.tensor(1.0), torch.zeros(0, 3))
    assert carry.item() == 1.0
    assert ys["y"].shape == (0, 3)


def test_scan_carry_may_hold_python_numbers_that_stay_numbers():
    carry, _ = fnn.scan(lambda c, x: ((c[0] + 1, c[1] + x), None), (0, torch.tensor(0.0)),
                        torch.ones(4))  # fmt: skip
    assert carry[0] == 4 and carry[1].item() == 4.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (lambda c, x: ({"h": c["h"], "extra": x}, None), "changed structure"),
        (lambda c, x: ({"h": torch.cat([c["h"], x[None]])}, None), "at 'h'"),
        (lambda c, x: ({"h": c["h"].float()}, None), "has a float32 tensor"),
        (lambda c, x: ({"h": 0.0}, None), "at 'h'"),
    ],
    ids=["new key", "shape", "dtype", "tensor to number"],
)
def test_scan_rejects_a_carry_that_changes_naming_the_path(body, message):
    init = {"h": torch.zeros(1, dtype=torch.float64)}
    with pytest.raises(TypeError, match=message) as info:
        fnn.scan(body, init, torch.ones(3, dtype=torch.float64))
    assert "fnn.scan" in str(info.value) and "step 0" in str(info.value)


def test_scan_rejects_a_body_that_does_not_return_a_pair():
    with pytest.raises(TypeError, match=r"pair \(new_carry, y\)"):
        fnn.scan(lambda c, x: c + x, torch.tensor(0.0), torch.ones(2))


def test_scan_rejects_ys_that_change_between_steps():
    with pytest.raises(TypeError, match="step 1"):
        fnn.scan(lambda c, x: (c + 1, torch.ones(int(c) + 1)), torch.tensor(0), None, length=2)


def test_scan_checks_lengths():
    xs = {"a": torch.ones(3), "b": torch.ones(4)}
    with pytest.raises(ValueError, match="a: 3, b: 4"):
        fnn.scan(lambda c, x: (c, None), 0, xs)
    with pytest.raises(ValueError, match="length=2"):
        fnn.scan(lambda c, x: (c, None), 0, torch.ones(3), length=2)
    with pytest.raises(ValueError, match="pass length"):
        fnn.scan(lambda c, x: (c, None), 0, None)
    with pytest.raises(TypeError, match="leading axis"):
        fnn.scan(lambda c, x: (c, None), 0, {"w": torch.tensor(1.0)})


def test_scan_gradients_match_the_loop_and_finite_differences():
    xs, w = randn(5, 3, seed=1), randn(3, seed=2)

    def loss(scanner, w, xs):
        def step(h, x):
            h = torch.tanh(h * w + x)
            return h, (h**2).sum()

        h, ys = scanner(step, torch.zeros(3, dtype=torch.float64), xs)
        return h.sum() + ys.sum()

    def loop(step, init, xs):
        return reference_scan(step, init, xs, xs.shape[0], False)

    got = grad(loss, argnums=(1, 2))(fnn.scan, w, xs)
    want = grad(loss, argnums=(1, 2))(loop, w, xs)
    assert_trees_all_close(got, want, rtol=1e-12)
    check_grads(lambda w, xs: loss(fnn.scan, w, xs), (w, xs), order=2, modes=("rev",))


def test_scan_under_vmap_matches_scanning_each_example():
    xs = randn(4, 6, 2)  # (batch, length, features)

    def cumulative(xs):
        return fnn.scan(lambda c, x: (c + x, c * x), torch.zeros(2, dtype=xs.dtype), xs)

    got = vmap(cumulative)(xs)
    want = [cumulative(x) for x in xs]
    assert_trees_all_close(got, fnn.tree.map(lambda *t: torch.stack(t), *want))


# ---------------------------------------------------------------------------------------------
# fori_loop and while_loop
# ---------------------------------------------------------------------------------------------


@FAST
@given(lower=st.integers(-3, 3), upper=st.integers(-3, 6), tensor_bounds=st.booleans())
def test_fori_loop_matches_range(lower, upper, tensor_bounds):
    seen = []

    def body(i, val):
        seen.append(i)
        return {"acc": val["acc"] * 2 + i}

    lo, hi = (torch.tensor(lower), torch.tensor(upper)) if tensor_bounds else (lower, upper)
    got = fnn.fori_loop(lo, hi, body, {"acc": torch.tensor(1.0)})
    want = 1.0
    for i in range(lower, upper):
        want = want * 2 + i
    assert got["acc"].item() == want
    assert seen == list(range(lower, upper))  # Python ints, even for readable tensor bounds


def test_fori_loop_rejects_a_changing_carry_and_bad_bounds():
    with pytest.raises(TypeError, match=r"fnn.fori_loop.*i=0"):
        fnn.fori_loop(0, 2, lambda i, x: x.float(), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(TypeError, match="integer"):
        fnn.fori_loop(torch.tensor(0.0), 2, lambda i, x: x, 0)
    with pytest.raises(TypeError, match="integer"):
        fnn.fori_loop(0, torch.tensor([1, 2]), lambda i, x: x, 0)


def test_fori_loop_with_batched_bounds_runs_each_example_to_its_own_bound():
    n = torch.tensor([0, 1, 3, 2])
    got = vmap(lambda n, x: fnn.fori_loop(0, n, lambda i, c: c * 2 + i, x))(n, torch.ones(4))
    want = []
    for bound in n.tolist():
        c = 1.0
        for i in range(bound):
            c = c * 2 + i
        want.append(c)
    assert got.tolist() == want


def test_fori_loop_gradient_matches_finite_differences():
    def f(w):
        return fnn.fori_loop(0, 4, lambda i, h: torch.sin(h * w + i), w)

    check_grads(f, (randn(3),), order=2, modes=("rev",))


def collatz_steps(n):
    def body(s):
        odd = s["n"] % 2 == 1
        return {"n": torch.where(odd, 3 * s["n"] + 1, s["n"] // 2), "steps": s["steps"] + 1}

    return fnn.while_loop(lambda s: s["n"] != 1, body, {"n": n, "steps": torch.tensor(0)})


def test_while_loop_runs_until_the_predicate_is_false():
    assert collatz_steps(torch.tensor(6))["steps"].item() == 8
    assert collatz_steps(torch.tensor(1))["steps"].item() == 0


def test_while_loop_under_vmap_freezes_finished_examples():
    n = torch.tensor([1, 6, 7, 2])
    got = vmap(collatz_steps)(n)
    assert got["steps"].tolist() == [
        collatz_steps(torch.tensor(k))["steps"].item() for k in n.tolist()
    ]
    assert got["n"].tolist() == [1, 1, 1, 1]


def test_while_loop_differentiates_the_iterations_that_ran():
    def f(x):  # doubles x until its sum exceeds 10: 3 doublings from the start below
        return fnn.while_loop(lambda v: v.sum() < 10, lambda v: v * 2, x).sum()

    x = torch.tensor([1.0, 0.5])
    assert grad(f)(x).tolist() == [8.0, 8.0]
    per_example = vmap(grad(lambda v: f(v[None])))(torch.tensor([1.0, 3.0, 20.0]))
    assert per_example.tolist() == [16.0, 4.0, 1.0]


def test_while_loop_rejects_a_non_scalar_predicate_and_a_changing_carry():
    with pytest.raises(TypeError, match=r"cond_fun's result.*shape \(2,\)"):
        fnn.while_loop(lambda v: v < 3, lambda v: v + 1, torch.zeros(2))
    with pytest.raises(TypeError, match="iteration 0"):
        fnn.while_loop(lambda v: v.sum() < 3, lambda v: torch.cat([v, v]), torch.ones(1))


# ---------------------------------------------------------------------------------------------
# cond and switch
# ---------------------------------------------------------------------------------------------


class Counting:
    """A branch that records each call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


def test_cond_with_a_readable_predicate_runs_only_the_chosen_branch():
    for pred in (True, torch.tensor(True), torch.tensor(1)):
        yes, no = Counting(lambda x: x + 1), Counting(lambda x: x - 1)
        assert fnn.cond(pred, yes, no, torch.tensor(1.0)).item() == 2.0
        assert (yes.calls, no.calls) == (1, 0)
    yes, no = Counting(lambda x: x + 1), Counting(lambda x: x - 1)
    assert fnn.cond(torch.tensor(False), yes, no, torch.tensor(1.0)).item() == 0.0
    assert (yes.calls, no.calls) == (0, 1)


def test_cond_inside_grad_branches_in_python():
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)

    def f(x):
        return fnn.cond(x.sum() > 0, lambda v: (v**3).sum(), lambda v: -v.sum(), x)

    assert_trees_all_close(grad(f)(x), 3 * x**2)
    assert_trees_all_close(grad(f)(-x), -torch.ones(3, dtype=torch.float64))


def test_cond_under_vmap_selects_per_example_and_runs_both_branches():
    yes, no = Counting(lambda v: {"y": torch.sqrt(v.abs())}), Counting(lambda v: {"y": v**2})
    x = torch.tensor([4.0, -3.0, 9.0])
    got = vmap(lambda v: fnn.cond(v > 0, yes, no, v))(x)
    assert got["y"].tolist() == [2.0, 9.0, 3.0]
    assert (yes.calls, no.calls) == (1, 1)
    per_example = vmap(grad(lambda v: fnn.cond(v > 0, torch.sin, torch.cos, v)))(x)
    assert_trees_all_close(per_example, torch.where(x > 0, torch.cos(x), -torch.sin(x)))


def test_cond_with_an_unbatched_predicate_under_vmap_still_branches():
    yes, no = Counting(lambda v: v + 1), Counting(lambda v: v - 1)
    got = vmap(lambda v: fnn.cond(torch.tensor(True), yes, no, v))(torch.zeros(3))
    assert got.tolist() == [1.0, 1.0, 1.0] and no.calls == 0


def test_cond_checks_the_predicate_and_branch_outputs():
    with pytest.raises(TypeError, match=r"pred must be a boolean scalar.*shape \(2,\)"):
        fnn.cond(torch.tensor([True, False]), lambda: 1, lambda: 2)
    with pytest.raises(TypeError, match="float32"):
        fnn.cond(torch.tensor(0.5), lambda: 1, lambda: 2)
    with pytest.raises(TypeError, match=r"at 'b'"):
        vmap(lambda v: fnn.cond(v > 0, lambda: {"b": v}, lambda: {"b": v[None]}))(torch.ones(2))
    with pytest.raises(TypeError, match="changed structure"):
        vmap(lambda v: fnn.cond(v > 0, lambda: (v, v), lambda: [v, v]))(torch.ones(2))


def test_switch_clamps_the_index_like_jax():
    branches = [lambda x: x + 1, lambda x: x * 10, lambda x: -x]
    x = torch.tensor(2.0)
    assert [fnn.switch(i, branches, x).item() for i in (-5, 0, 1, 2, 9)] == [3, 3, 20, -2, -2]
    assert fnn.switch(torch.tensor(1), branches, x).item() == 20


def test_switch_under_vmap_selects_per_example():
    branches = [lambda x: x + 1, lambda x: x * 10, lambda x: -x]
    index = torch.tensor([0, 1, 2, 7, -1])
    got = vmap(lambda i, x: fnn.switch(i, branches, x))(index, torch.full((5,), 2.0))
    assert got.tolist() == [3.0, 20.0, -2.0, -2.0, 3.0]


def test_switch_rejects_bad_indices_and_empty_branches():
    with pytest.raises(ValueError, match="at least one"):
        fnn.switch(0, [])
    with pytest.raises(TypeError, match="integer"):
        fnn.switch(torch.tensor(True), [lambda: 1])
    with pytest.raises(TypeError, match="integer"):
        fnn.switch(torch.tensor(1.0), [lambda: 1])


# ---------------------------------------------------------------------------------------------
# associative_scan
# ---------------------------------------------------------------------------------------------


def sequential_scan(fn, elems, reverse=False, axis=0):
    """out[i] = fn(out[i-1], elems[i]) along ``axis``: the definition, one element at a time."""
    moved = fnn.tree.map(lambda x: torch.movedim(x, axis, 0), elems)
    if reverse:
        moved = fnn.tree.map(lambda x: torch.flip(x, (0,)), moved)
    n = fnn.tree.leaves(moved)[0].shape[0]
    outs = []
    for i in range(n):
        x = fnn.tree.map(lambda t, i=i: t[i : i + 1], moved)
        outs.append(x if i == 0 else fn(outs[-1], x))
    out = fnn.tree.map(lambda *ts: torch.cat(ts), *outs) if outs else moved
    if reverse:
        out = fnn.tree.map(lambda x: torch.flip(x, (0,)), out)
    return fnn.tree.map(lambda x: torch.movedim(x, 0, axis), out)


def linear_recurrence(p, q):
    """Compose h -> a*h + b maps: (a1, b1) then (a2, b2) is (a2*a1, a2*b1 + b2)."""
    return {"a": q["a"] * p["a"], "b": q["a"] * p["b"] + q["b"]}


OPS = {
    "add": (torch.add, lambda x, axis: torch.cumsum(x, axis)),
    "mul": (torch.mul, lambda x, axis: torch.cumprod(x, axis)),
    "max": (torch.maximum, lambda x, axis: torch.cummax(x, axis).values),
}


@FAST
@given(n=st.integers(0, 17), reverse=st.booleans(), axis=st.sampled_from([0, 1, -1]))
@pytest.mark.parametrize("op", sorted(OPS))
def test_associative_scan_matches_torch_cumulative_ops(op, n, reverse, axis):
    fn, cumulative = OPS[op]
    shape = [3, 2, 4]
    shape[axis] = n
    x = randn(*shape, seed=n) * 0.5 + 1.0
    got = fnn.associative_scan(fn, x, reverse=reverse, axis=axis)
    want = cumulative(x.flip(axis), axis).flip(axis) if reverse else cumulative(x, axis)
    assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)


@FAST
@given(n=st.integers(1, 20), reverse=st.booleans())
def test_associative_scan_solves_a_linear_recurrence_over_pytrees(n, reverse):
    elems = {"a": randn(n, 2, seed=n).sigmoid(), "b": randn(n, 2, seed=n + 1)}
    got = fnn.associative_scan(linear_recurrence, elems, reverse=reverse)
    want = sequential_scan(linear_recurrence, elems, reverse=reverse)
    assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)
    # h[t] = a[t] h[t-1] + b[t] from h = 0, by a plain loop
    h, hs = torch.zeros(2, dtype=torch.float64), []
    order = reversed(range(n)) if reverse else range(n)
    for t in order:
        h = elems["a"][t] * h + elems["b"][t]
        hs.append(h)
    if reverse:
        hs.reverse()
    assert_trees_all_close(got["b"], torch.stack(hs), rtol=1e-10, atol=1e-12)


def test_associative_scan_gradients_and_vmap_match_the_sequential_scan():
    elems = {"a": randn(7, seed=1).sigmoid(), "b": randn(7, seed=2)}

    def loss(scanner, elems):
        return (scanner(linear_recurrence, elems)["b"] ** 2).sum()

    assert_trees_all_close(
        grad(loss, argnums=1)(fnn.associative_scan, elems),
        grad(loss, argnums=1)(sequential_scan, elems),
        rtol=1e-10,
    )
    check_grads(lambda e: fnn.associative_scan(linear_recurrence, e)["b"], (elems,))
    batch = {"a": randn(3, 5, seed=3).sigmoid(), "b": randn(3, 5, seed=4)}
    got = vmap(lambda e: fnn.associative_scan(linear_recurrence, e))(batch)
    want = fnn.associative_scan(linear_recurrence, batch, axis=1)
    assert_trees_all_close(got, want, rtol=1e-12)


def test_associative_scan_errors_name_the_problem():
    with pytest.raises(ValueError, match="a: 3, b: 4"):
        fnn.associative_scan(torch.add, {"a": torch.ones(3), "b": torch.ones(4)})
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        fnn.associative_scan(torch.add, torch.ones(3, 2), axis=2)
    with pytest.raises(TypeError, match="structure of elems"):
        fnn.associative_scan(lambda a, b: (a[0] + b[0],), (torch.ones(3), torch.ones(3)))


# ---------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True): few compiled functions, tiny shapes, module level
# ---------------------------------------------------------------------------------------------


def _controlled(x, n):
    """Every construct in one function: scan, fori_loop, cond, switch, associative_scan."""
    carry, ys = fnn.scan(lambda c, v: (c + v, c * v), torch.zeros_like(x[0]), x)
    carry = fnn.fori_loop(0, n, lambda i, c: c * 0.5 + i, carry)
    flipped = fnn.cond(carry.sum() > 0, lambda c: c.sin(), lambda c: c.cos(), carry)
    chosen = fnn.switch((carry.sum() > 1).long(), [lambda: flipped, lambda: -flipped])
    prefix = fnn.associative_scan(torch.add, ys, reverse=True)
    return chosen.sum() + prefix.sum()


_compiled_controlled = torch.compile(_controlled, fullgraph=True)
_compiled_grad = torch.compile(grad(_controlled), fullgraph=True)
_compiled_vmap_grad = torch.compile(vmap(grad(_controlled), in_dims=(0, None)), fullgraph=True)


def test_control_flow_compiles_into_one_graph_with_grad_and_vmap():
    x = randn(4, 3, seed=5)
    xs = randn(2, 4, 3, seed=6)
    with assert_max_compiles(3):
        assert_trees_all_close(_compiled_controlled(x, 3), _controlled(x, 3), rtol=1e-10)
        assert_trees_all_close(_compiled_grad(x, 3), grad(_controlled)(x, 3), rtol=1e-10)
        assert_trees_all_close(
            _compiled_vmap_grad(xs, 3), vmap(grad(_controlled), in_dims=(0, None))(xs, 3)
        )
    # the other branch of cond/switch, same graph
    with assert_max_compiles(0):
        assert_trees_all_close(_compiled_controlled(-x, 3), _controlled(-x, 3), rtol=1e-10)


def _dynamic_loops(x, n):
    y = fnn.fori_loop(0, n, lambda i, c: c * 2 + i, x)
    return fnn.while_loop(lambda c: c.sum() < 100, lambda c: c + 10, y)


_compiled_dynamic_loops = torch.compile(_dynamic_loops, fullgraph=True)
_compiled_fori = torch.compile(
    lambda x, n: fnn.fori_loop(0, n, lambda i, c: c * 2, x), fullgraph=True
)


def test_tensor_bounded_loops_compile_once_for_every_bound():
    x = torch.tensor([1.0, 2.0])
    with assert_max_compiles(1):
        for n in (0, 2, 5):
            assert_trees_all_close(
                _compiled_dynamic_loops(x, torch.tensor(n)), _dynamic_loops(x, n)
            )


def test_a_compiled_tensor_bounded_loop_supports_backward():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad(_compiled_fori(x, torch.tensor(3)).sum(), x)
    assert g.tolist() == [8.0, 8.0]


def test_data_dependent_loops_under_compile_and_grad_raise_a_clear_error():
    f = torch.compile(grad(lambda x: _dynamic_loops(x, 2).sum()), fullgraph=True)
    with pytest.raises(Exception, match=r"(?s)fnn.while_loop.*static bound"):
        f(torch.tensor([1.0, 2.0]))
