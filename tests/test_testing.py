"""fnn.testing: each helper passes when it should and fails with a message locating the problem."""

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn.tree
from fnn.testing import (
    Variant,
    assert_max_compiles,
    assert_shape,
    assert_tree_all_finite,
    assert_tree_shape_prefix,
    assert_trees_all_close,
    assert_trees_all_equal,
    assert_trees_all_equal_structs,
    check_grads,
    variants,
)

pytest_plugins = ["pytester"]

NAN, INF = float("nan"), float("inf")
F64 = torch.float64


def _tree(w, b=0.5):
    return {"encoder": {"layers": [{"weight": w}]}, "scale": b}


# --------------------------------------------------------------------------------------------
# assert_trees_all_close
# --------------------------------------------------------------------------------------------


def test_close_passes_on_close_trees_of_mixed_leaf_types():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert_trees_all_close(_tree(w), _tree(w + 1e-7), _tree(w.numpy().astype(np.float64)))
    assert_trees_all_close(torch.tensor(0.1), 0.1)  # float32 vs a Python float (float64)


def test_close_treats_same_place_nans_and_same_sign_infs_as_close():
    x = torch.tensor([NAN, INF, -INF, 1.0])
    assert_trees_all_close(x, x.clone())


@pytest.mark.parametrize(
    ("dtype", "err"), [(torch.float16, 5e-4), (torch.bfloat16, 1e-2), (torch.float32, 5e-7)]
)
def test_close_default_tolerance_follows_the_lowest_precision_dtype(dtype, err):
    x = torch.ones(3, dtype=dtype)
    assert_trees_all_close(x, torch.full((3,), 1 + err, dtype=F64))


def test_close_failure_names_path_largest_errors_indices_and_count():
    a = torch.zeros(2, 3)
    b = a.clone()
    b[0, 1] = 0.5
    b[1, 2] = 2.0
    with pytest.raises(AssertionError) as info:
        assert_trees_all_close(_tree(a), _tree(b))
    msg = str(info.value)
    assert "differ at 'encoder.layers.0.weight'" in msg
    assert "2 of 6 elements mismatch" in msg
    assert "largest absolute error 2 at index (1, 2): 0.0 vs 2.0" in msg
    assert "largest relative error 1 at index (0, 1): 0.0 vs 0.5" in msg


def test_close_relative_error_reports_its_own_worst_element():
    a = torch.tensor([100.0, 1.0])
    b = torch.tensor([101.0, 1.5])  # abs errors 1 and 0.5, relative 0.0099 and 0.333
    pattern = (
        r"largest absolute error 1 at index \(0,\).*"
        r"largest relative error 0\.333333 at index \(1,\)"
    )
    with pytest.raises(AssertionError, match=re.compile(pattern, re.S)):
        assert_trees_all_close({"x": a}, {"x": b})


def test_close_failure_on_third_tree_names_it():
    with pytest.raises(AssertionError, match=r"trees\[0\] and trees\[2\] differ at 'b'"):
        assert_trees_all_close({"b": 1.0}, {"b": 1.0}, {"b": 1.1})


def test_close_shape_mismatch_names_both_shapes_and_dtypes():
    with pytest.raises(
        AssertionError,
        match=r"at 'x': shapes differ: trees\[0\] has torch.Tensor float32 of shape \(2, 3\), "
        r"trees\[1\] has numpy.ndarray float64 of shape \(3, 2\)",
    ):
        assert_trees_all_close({"x": torch.zeros(2, 3)}, {"x": np.zeros((3, 2))})


def test_close_failure_mentions_differing_dtypes():
    with pytest.raises(
        AssertionError, match=r"dtypes: trees\[0\] has float32, trees\[1\] has float64"
    ):
        assert_trees_all_close(torch.ones(2), torch.full((2,), 2.0, dtype=F64))


def test_close_nan_against_number_and_inf_against_finite_fail():
    with pytest.raises(
        AssertionError, match=r"largest absolute error inf at index \(1,\): nan vs 2.0"
    ):
        assert_trees_all_close(torch.tensor([1.0, NAN]), torch.tensor([1.0, 2.0]))
    with pytest.raises(AssertionError, match=r"1 of 2 elements mismatch"):
        assert_trees_all_close(torch.tensor([1.0, INF]), torch.tensor([1.0, 1e30]))


def test_close_structure_mismatch_uses_fnn_tree_message():
    a, b = {"w": 1.0, "b": [1.0, 2.0]}, {"w": 1.0, "b": [1.0]}
    expected = fnn.tree.structure_mismatch(a, b, names=("trees[0]", "trees[1]"))
    with pytest.raises(AssertionError, match=re.escape(expected)):
        assert_trees_all_close(a, b)


def test_close_explicit_tolerances_are_used():
    assert_trees_all_close(torch.tensor([1.0]), torch.tensor([1.1]), rtol=0.1)
    assert_trees_all_close(torch.tensor([0.0]), torch.tensor([1e-3]), atol=1e-3)
    with pytest.raises(AssertionError, match=r"rtol=0.01, atol=0"):
        assert_trees_all_close(torch.tensor([1.0]), torch.tensor([1.1]), rtol=0.01)


def test_close_needs_two_trees():
    with pytest.raises(ValueError, match="needs at least two"):
        assert_trees_all_close(torch.ones(2))


_floats = st.floats(-1e6, 1e6, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(_floats, min_size=1, max_size=6),
    noise=st.lists(st.floats(-1e-3, 1e-3), min_size=6, max_size=6),
    rtol=st.sampled_from([1e-6, 1e-4, 1e-2]),
    atol=st.sampled_from([0.0, 1e-5]),
)
def test_close_is_symmetric_and_agrees_with_torch_isclose(a, noise, rtol, atol):
    x = torch.tensor(a, dtype=F64)
    y = x * (1 + torch.tensor(noise[: len(a)], dtype=F64))
    # |x - y| <= atol + rtol * max(|x|, |y|)  <=>  isclose(x, y) or isclose(y, x)
    expected = bool(
        (
            torch.isclose(x, y, rtol=rtol, atol=atol) | torch.isclose(y, x, rtol=rtol, atol=atol)
        ).all()
    )
    for first, second in [(x, y), (y, x)]:
        if expected:
            assert_trees_all_close(first, second, rtol=rtol, atol=atol)
        else:
            with pytest.raises(AssertionError, match="elements mismatch"):
                assert_trees_all_close(first, second, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------
# assert_trees_all_equal
# --------------------------------------------------------------------------------------------


def test_equal_passes_with_nans_in_the_same_place_and_across_tensor_numpy_python():
    x = torch.tensor([1.0, NAN, -0.0])
    assert_trees_all_equal(_tree(x), _tree(torch.tensor([1.0, NAN, 0.0])))
    assert_trees_all_equal(x, x.numpy())
    assert_trees_all_equal(torch.tensor(0.1), 0.1)  # like `tensor == 0.1`
    assert_trees_all_equal({"n": 3, "s": "relu"}, {"n": 3, "s": "relu"})


def test_equal_failure_names_path_count_first_index_and_largest_difference():
    a = torch.arange(6).reshape(2, 3)
    b = a.clone()
    b[0, 2] = 7
    b[1, 1] = 40
    with pytest.raises(AssertionError) as info:
        assert_trees_all_equal(_tree(a), _tree(b))
    msg = str(info.value)
    assert "differ at 'encoder.layers.0.weight'" in msg
    assert "2 of 6 elements differ; first at index (0, 2): 2 vs 7" in msg
    assert "largest absolute difference 36 at index (1, 1): 4 vs 40" in msg


def test_equal_dtype_mismatch_names_both_dtypes():
    with pytest.raises(
        AssertionError,
        match=r"at 'scale': dtypes differ: trees\[0\] has torch.Tensor float32 of shape \(\), "
        r"trees\[1\] has torch.Tensor float64 of shape \(\)",
    ):
        assert_trees_all_equal(_tree(1, torch.tensor(1.0)), _tree(1, torch.tensor(1.0, dtype=F64)))


def test_equal_shape_and_python_type_mismatches():
    with pytest.raises(AssertionError, match=r"shapes differ: .*shape \(2,\).*shape \(1, 2\)"):
        assert_trees_all_equal(torch.zeros(2), torch.zeros(1, 2))
    with pytest.raises(AssertionError, match=r"types differ: trees\[0\] has Python int 1"):
        assert_trees_all_equal(1, 1.0)
    with pytest.raises(AssertionError, match=r"1 of 1 elements differ; first at the only element"):
        assert_trees_all_equal(torch.tensor(1), 1.5)  # 1 != 1.5, not truncated to an int
    with pytest.raises(AssertionError, match=r"at 'act': str 'relu' vs str 'gelu'"):
        assert_trees_all_equal({"act": "relu"}, {"act": "gelu"})


def test_equal_nan_against_number_fails():
    with pytest.raises(AssertionError, match=r"first at index \(0,\): nan vs 0.0"):
        assert_trees_all_equal(torch.tensor([NAN]), torch.tensor([0.0]))


def test_equal_structure_mismatch_uses_fnn_tree_message():
    a, b = [torch.ones(1)], (torch.ones(1),)
    expected = fnn.tree.structure_mismatch(a, b, names=("trees[0]", "trees[1]"))
    with pytest.raises(AssertionError, match=re.escape(expected)):
        assert_trees_all_equal(a, b)


# --------------------------------------------------------------------------------------------
# assert_tree_all_finite and assert_trees_all_equal_structs
# --------------------------------------------------------------------------------------------


def test_finite_passes_on_finite_and_integer_leaves():
    assert_tree_all_finite({"w": torch.randn(3), "step": torch.tensor(3), "lr": 0.1, "n": 2})


def test_finite_failure_names_path_counts_and_other_leaves():
    tree = {
        "a": torch.ones(2),
        "b": {"w": torch.tensor([[1.0, NAN], [INF, -INF]])},
        "c": np.array([NAN]),
    }
    with pytest.raises(AssertionError) as info:
        assert_tree_all_finite(tree)
    msg = str(info.value)
    assert "3 of 4 elements are not finite at 'b.w' (1 NaN, 1 +inf, 1 -inf)" in msg
    assert "first at index (0, 1): nan" in msg
    assert "other leaves with non-finite values: ['c']" in msg


def test_equal_structs_ignores_leaves_and_reports_first_difference():
    assert_trees_all_equal_structs({"a": 1, "b": [2]}, {"a": "x", "b": [torch.ones(3)]})
    a, b = {"enc": {"a": 1, "b": 2}}, {"enc": {"a": 1, "c": 2}}
    expected = fnn.tree.structure_mismatch(a, b, names=("trees[0]", "trees[2]"))
    assert expected is not None and "'enc'" in expected
    with pytest.raises(AssertionError, match=re.escape(expected)):
        assert_trees_all_equal_structs(a, a, b)


def test_equal_structs_names_the_offending_tree():
    with pytest.raises(AssertionError, match=r"trees\[0\] has a leaf, trees\[2\] has None"):
        assert_trees_all_equal_structs([1], [2], [None])


# --------------------------------------------------------------------------------------------
# assert_shape and assert_tree_shape_prefix
# --------------------------------------------------------------------------------------------

_shapes = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)


@st.composite
def _shape_and_matching_spec(draw):
    """A shape and a spec that matches it: some sizes replaced by None, a run by `...`."""
    shape = draw(_shapes)
    spec = [None if draw(st.booleans()) else d for d in shape]
    if draw(st.booleans()):
        i = draw(st.integers(0, len(spec)))
        j = draw(st.integers(i, len(spec)))
        spec[i:j] = [...]
    return shape, tuple(spec)


@settings(max_examples=80, deadline=None)
@given(_shape_and_matching_spec())
def test_shape_matches_specs_with_none_and_ellipsis(case):
    shape, spec = case
    assert_shape(torch.zeros(shape), spec)
    assert_shape(np.zeros(shape), spec)
    assert_shape([torch.zeros(shape), torch.zeros(shape)], spec)
    assert_shape([torch.zeros(shape), torch.zeros(7)], [spec, (None,)])


@settings(max_examples=80, deadline=None)
@given(_shape_and_matching_spec(), st.data())
def test_shape_rejects_a_wrong_size_and_names_the_dimension(case, data):
    shape, spec = case
    fixed = [k for k, d in enumerate(spec) if d is not None and d is not Ellipsis]
    if fixed:  # make one fixed size wrong; dims after `...` are counted from the end
        k = data.draw(st.sampled_from(fixed))
        bad = list(spec)
        bad[k] = spec[k] + 1
        dim = k if Ellipsis not in spec[:k] else len(shape) - (len(spec) - k)
        why = re.escape(f"dimension {dim} is {spec[k]}, expected {spec[k] + 1}")
    else:  # no fixed size to break: ask for one more dimension than there is
        bad = [None] * (len(shape) + 1) + ([...] if Ellipsis in spec else [])
        why = rf"it has {len(shape)} dimensions?, expected (at least )?{len(shape) + 1}"
    with pytest.raises(AssertionError, match=re.escape(f"input has shape {shape}")) as info:
        assert_shape(torch.zeros(shape), tuple(bad))
    assert re.search(why, str(info.value))


def test_shape_failure_messages_name_the_input_and_the_problem():
    x = torch.zeros(2, 3)
    with pytest.raises(
        AssertionError, match=r"inputs\[1\] has shape \(3,\), expected \(2, \.\.\.\)"
    ):
        assert_shape([x, torch.zeros(3)], (2, ...))
    with pytest.raises(AssertionError, match=r"it has 2 dimensions, expected 3"):
        assert_shape(x, (2, 3, None))
    with pytest.raises(AssertionError, match=r"it has 2 dimensions, expected at least 3"):
        assert_shape(x, (2, ..., 3, 3))
    with pytest.raises(AssertionError, match=r"2 inputs but 1 expected shapes"):
        assert_shape([x, x], [(2, 3)])
    assert_shape(1.5, ())


def test_shape_rejects_malformed_specs():
    with pytest.raises(ValueError, match=r"at most one \.\.\."):
        assert_shape(torch.zeros(2), (..., ...))
    with pytest.raises(TypeError, match=r"e.g. \(None, 3, \.\.\.\)"):
        assert_shape(torch.zeros(2), "2")


@settings(max_examples=60, deadline=None)
@given(prefix=_shapes.filter(len), suffixes=st.lists(_shapes, min_size=1, max_size=3))
def test_shape_prefix_holds_for_every_leaf(prefix, suffixes):
    tree = {f"leaf{i}": torch.zeros(prefix + s) for i, s in enumerate(suffixes)}
    assert_tree_shape_prefix(tree, prefix)
    assert_tree_shape_prefix(tree, tuple(None for _ in prefix))
    assert_tree_shape_prefix(tree, ())
    wrong = (*prefix[:-1], prefix[-1] + 1)
    with pytest.raises(AssertionError, match=r"leaf at 'leaf0' has shape"):
        assert_tree_shape_prefix(tree, wrong)


def test_shape_prefix_failure_names_path_and_dimension():
    batch = {"x": torch.zeros(4, 3), "y": [torch.zeros(5)]}
    with pytest.raises(
        AssertionError,
        match=r"leaf at 'y.0' has shape \(5,\), which does not start with \(4,\): "
        r"dimension 0 is 5, expected 4",
    ):
        assert_tree_shape_prefix(batch, (4,))


# --------------------------------------------------------------------------------------------
# assert_max_compiles (backend="eager": dynamo compiles the same way, minus inductor's codegen)
# --------------------------------------------------------------------------------------------


def test_max_compiles_counts_one_compile_for_repeated_calls_with_the_same_shapes():
    f = torch.compile(lambda x: x * 2 + 1, backend="eager", fullgraph=True)
    with assert_max_compiles(1) as compiles:
        assert compiles.count == 0
        f(torch.ones(2))
        f(torch.ones(2))
        assert compiles.count == 1
    with assert_max_compiles(0) as warm:
        f(torch.zeros(2))
    assert (compiles.count, warm.count) == (1, 0)


def test_max_compiles_detects_a_new_shape_and_gives_the_reason():
    f = torch.compile(lambda x: x.sum(), backend="eager", fullgraph=True)
    with pytest.raises(AssertionError) as info, assert_max_compiles(1) as compiles:
        f(torch.ones(2))
        f(torch.ones(2, 2))
    assert compiles.count == 2
    msg = str(info.value)
    assert "compiled 2 graphs inside the block, at most 1 allowed" in msg
    assert "rank mismatch. expected 1, actual 2" in msg


def test_max_compiles_detects_a_changed_python_float():
    def scale(x, lr):
        return x * lr

    f = torch.compile(scale, backend="eager", fullgraph=True)
    f(torch.ones(2), 0.1)
    with pytest.raises(AssertionError, match=r"(?s)compiled 1 graph inside.*scale .*lr == 0\.1"):
        with assert_max_compiles(0):
            f(torch.ones(2), 0.2)


def test_max_compiles_sees_no_recompile_when_a_0d_tensor_changes():
    f = torch.compile(lambda x, lr: x * lr, backend="eager", fullgraph=True)
    with assert_max_compiles(1) as compiles:
        for lr in (0.1, 0.2, 0.3):
            f(torch.ones(2), torch.tensor(lr))
    assert compiles.count == 1


def test_max_compiles_counts_each_graph_of_a_graph_break():
    def f(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    with assert_max_compiles(2) as compiles:
        torch.compile(f, backend="eager")(torch.ones(2))
    assert compiles.count == 2


def test_max_compiles_lets_the_blocks_own_error_through():
    f = torch.compile(lambda x: x - 1, backend="eager")
    with pytest.raises(KeyError, match="mine"), assert_max_compiles(0):
        f(torch.ones(1))
        raise KeyError("mine")


def test_max_compiles_rejects_a_negative_limit():
    with pytest.raises(ValueError, match="count >= 0"):
        assert_max_compiles(-1)


# --------------------------------------------------------------------------------------------
# check_grads
# --------------------------------------------------------------------------------------------


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=F64)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize(
    "f",
    [
        pytest.param(lambda x: 3 * x**3 - x**2 + 2, id="polynomial"),
        pytest.param(torch.sin, id="sin"),
        pytest.param(lambda x: (x[:, None] * x[None, :]).sum(0), id="outer-sum"),
    ],
)
def test_check_grads_passes_on_correct_functions(f, order):
    check_grads(f, (_x(4),), order=order)


@pytest.mark.parametrize("order", [1, 2])
def test_check_grads_passes_on_matmul_over_a_dict_of_tensors(order):
    params = {"w": _x(3, 4), "b": _x(3)}

    def f(p, x):
        return {"y": torch.tanh(p["w"] @ x + p["b"]), "norm": (p["w"] ** 2).sum()}

    check_grads(f, (params, _x(4)), order=order)


@pytest.mark.parametrize("modes", [("fwd",), ("rev",)])
def test_check_grads_float32_defaults_pass(modes):
    check_grads(lambda x: torch.sin(x) * x**2, (_x(5).float(),), order=2, modes=modes)


def test_check_grads_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    check_grads(torch.exp, (_x(2),))
    assert torch.equal(state, torch.get_rng_state())


class _SinWrongBackward(torch.autograd.Function):
    """sin with a correct jvp and a backward that is off by a factor of 2."""

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.x = inputs[0]

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * g * torch.cos(x)

    @staticmethod
    def jvp(ctx, t):
        return t * torch.cos(ctx.x)


class _SinWrongJvp(_SinWrongBackward):
    """sin with a correct backward and a jvp with the wrong sign."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)

    @staticmethod
    def jvp(ctx, t):
        return -t * torch.cos(ctx.x)


def test_check_grads_rev_fails_on_a_wrong_backward_and_names_the_argument():
    f = lambda p, x: {"y": _SinWrongBackward.apply(p["w"]) * x}  # noqa: E731
    args = ({"w": _x(3)}, _x(3))
    check_grads(f, args, modes=("fwd",))  # the jvp is right
    with pytest.raises(AssertionError) as info:
        check_grads(f, args, modes=("rev",))
    msg = str(info.value)
    assert "reverse mode (torch.func.vjp) disagrees with central finite differences for f" in msg
    assert "the gradient with respect to args[0] at 'w'" in msg
    want, got = re.search(r"expected \(finite differences\) (\S+), got \(vjp\) (\S+)", msg).groups()
    assert float(got) == pytest.approx(2 * float(want), rel=1e-6)  # the factor of 2, located


def test_check_grads_fwd_fails_on_a_wrong_jvp_and_names_argument_and_output():
    f = lambda p: {"out": _SinWrongJvp.apply(p["a"])}  # noqa: E731
    args = ({"a": _x(3)},)
    check_grads(f, args, modes=("rev",))  # the backward is right
    with pytest.raises(AssertionError) as info:
        check_grads(f, args, modes=("fwd",))
    msg = str(info.value)
    assert "forward mode (torch.func.jvp) disagrees" in msg
    assert "the derivative of output at 'out' along a random direction in args[0] at 'a'" in msg
    assert "3 of 3 elements mismatch" in msg
    assert "expected (finite differences): [" in msg and "got (jvp): [" in msg


class _CosWrongDerivative(torch.autograd.Function):
    """cos whose derivative has the wrong sign (sin instead of -sin), in both modes."""

    @staticmethod
    def forward(x):
        return torch.cos(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.x = inputs[0]

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sin(x)

    @staticmethod
    def jvp(ctx, t):
        return t * torch.sin(ctx.x)


class _SinWrongSecondDerivative(torch.autograd.Function):
    """sin with right first derivatives whose backward's own derivative is wrong."""

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.x = inputs[0]

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * _CosWrongDerivative.apply(x)

    @staticmethod
    def jvp(ctx, t):
        return t * _CosWrongDerivative.apply(ctx.x)


@pytest.mark.parametrize(("mode", "label"), [("fwd", "the JVP of f"), ("rev", "the VJP of f")])
def test_check_grads_order_2_catches_a_wrong_second_derivative(mode, label):
    x = _x(3)
    check_grads(_SinWrongSecondDerivative.apply, (x,), order=1, modes=(mode,))
    with pytest.raises(
        AssertionError, match=f"disagrees with central finite differences for {label}"
    ):
        check_grads(_SinWrongSecondDerivative.apply, (x,), order=2, modes=(mode,))


def test_check_grads_rejects_bad_arguments_with_the_fix():
    x = _x(2)
    with pytest.raises(TypeError, match=r"as a tuple.*check_grads\(f, \(x,\)\)"):
        check_grads(torch.sin, x)
    with pytest.raises(TypeError, match=r"args\[1\] is int. Close over other values"):
        check_grads(lambda x, n: x * n, (x, 3))
    with pytest.raises(TypeError, match=r"output leaf .* real floating tensor"):
        check_grads(lambda x: x.long(), (x,))
    with pytest.raises(ValueError, match="order=1 or order=2"):
        check_grads(torch.sin, (x,), order=3)
    with pytest.raises(ValueError, match="modes must be"):
        check_grads(torch.sin, (x,), modes=("forward",))


# --------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------


@variants("eager", "jit")
def test_variants_run_the_function_eagerly_and_compiled(variant, request):
    assert request.node.name == f"test_variants_run_the_function_eagerly_and_compiled[{variant}]"
    f = variant(lambda x: x + 1)
    with assert_max_compiles(1) as compiles:
        assert_trees_all_equal(f(torch.zeros(2)), torch.ones(2))
    assert compiles.count == (1 if variant.is_jit else 0)


def test_variants_make_one_test_per_variant_with_readable_ids(pytester):
    pytester.makepyfile(
        textwrap.dedent(
            """
            import torch
            from fnn.testing import variants

            @variants("eager", "jit")
            def test_add(variant):
                assert variant(lambda x: x + 1)(torch.zeros(1)).item() == 1.0
            """
        )
    )
    result = pytester.runpytest_inprocess("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_add[[]eager[]] PASSED*", "*test_add[[]jit[]] PASSED*"])


def test_variant_objects_and_unknown_names():
    assert Variant("eager")(abs) is abs
    assert not Variant("eager").is_jit and Variant("jit").is_jit
    with pytest.raises(
        ValueError, match=r"unknown variant 'xla'; the variants are \['eager', 'jit'\]"
    ):
        variants("eager", "xla")


def test_fnn_testing_imports_without_pytest():
    code = "import sys; sys.modules['pytest'] = None; import fnn.testing; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
