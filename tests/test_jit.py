"""Specification of fnn.jit: compiled pytree functions, donation, static arguments, debugging.

Compiling is slow, so jitted functions live at module level and are shared by the tests; only
the training step uses inductor (what donation is for), the rest dynamo's "eager" backend.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn.testing import (
    assert_max_compiles,
    assert_trees_all_close,
    assert_trees_all_equal,
    variants,
)

EAGER = {"backend": "eager"}  # dynamo traces and guards as usual; no inductor code generation


# ---------------------------------------------------------------------------------------------
# A small MLP and a hand-written Adam step (step count and learning rate are 0-d tensors)
# ---------------------------------------------------------------------------------------------

AdamState = collections.namedtuple("AdamState", ["count", "mu", "nu"])


def init_mlp(seed: int, sizes=(5, 16, 3)) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "layers": [
            {
                "weight": torch.randn(n_out, n_in, generator=gen) / n_in**0.5,
                "bias": torch.zeros(n_out),
            }
            for n_in, n_out in itertools.pairwise(sizes)
        ]
    }


def mlp(params: dict, x: torch.Tensor) -> torch.Tensor:
    *hidden, last = params["layers"]
    for layer in hidden:
        x = torch.tanh(x @ layer["weight"].T + layer["bias"])
    return x @ last["weight"].T + last["bias"]


def loss_fn(params: dict, batch: dict) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(mlp(params, batch["x"]), batch["y"])


def adam_init(params: dict) -> AdamState:
    return AdamState(
        torch.zeros((), dtype=torch.int64), fnn.tree.zeros_like(params), fnn.tree.zeros_like(params)
    )


def adam_step(params, opt_state, batch, lr, b1=0.9, b2=0.999, eps=1e-8):
    grads, loss = torch.func.grad_and_value(loss_fn)(params, batch)
    count = opt_state.count + 1
    mu = fnn.tree.map(lambda m, g: b1 * m + (1 - b1) * g, opt_state.mu, grads)
    nu = fnn.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, opt_state.nu, grads)
    c1, c2 = 1 - b1**count, 1 - b2**count
    params = fnn.tree.map(
        lambda p, m, v: p - lr * (m / c1) / (torch.sqrt(v / c2) + eps), params, mu, nu
    )
    return params, AdamState(count, mu, nu), loss


train_step = fnn.jit(adam_step, donate_argnums=(0, 1))


def batches(n: int):
    gen = torch.Generator().manual_seed(1)
    return [
        {"x": torch.randn(8, 5, generator=gen), "y": torch.randint(0, 3, (8,), generator=gen)}
        for _ in range(n)
    ]


def clone(tree):
    return fnn.tree.map(torch.clone, tree)


def ptrs(tree) -> list[int]:
    return [t.data_ptr() for t in fnn.tree.leaves(tree)]


def test_compiled_adam_step_matches_eager_compiles_once_and_writes_into_the_donated_buffers():
    params, opt_state = init_mlp(0), adam_init(init_mlp(0))
    ref_params, ref_state = clone(params), clone(opt_state)
    buffers = ptrs((params, opt_state))
    with assert_max_compiles(1):
        for i, batch in enumerate(batches(10)):
            lr = torch.tensor(1e-2 * 0.9**i)  # a new learning rate every step: no recompile
            inputs = (params, opt_state)
            params, opt_state, loss = train_step(params, opt_state, batch, lr)
            ref_params, ref_state, ref_loss = adam_step(ref_params, ref_state, batch, lr)

            assert_trees_all_close(
                (params, opt_state, loss), (ref_params, ref_state, ref_loss), rtol=1e-5, atol=1e-7
            )
            # the donated inputs hold the returned values: they *are* the returned tensors
            for old, new in zip(
                fnn.tree.leaves(inputs), fnn.tree.leaves((params, opt_state)), strict=True
            ):
                assert old is new
            assert ptrs((params, opt_state)) == buffers
    assert int(opt_state.count) == 10
    assert train_step.num_compiles == 1


def test_without_donation_the_inputs_keep_their_values_and_results_are_new_tensors():
    step = fnn.jit(adam_step, **EAGER)
    params, opt_state = init_mlp(1), adam_init(init_mlp(1))
    before = clone((params, opt_state))
    new_params, new_state, _ = step(params, opt_state, batches(1)[0], torch.tensor(0.1))
    assert_trees_all_equal((params, opt_state), before)
    assert not set(ptrs((new_params, new_state))) & set(ptrs((params, opt_state)))
    assert step.num_compiles == 1


# ---------------------------------------------------------------------------------------------
# Donation rules (the same in the compiled function and under FNN_DISABLE_JIT=1)
# ---------------------------------------------------------------------------------------------


@fnn.jit(donate_argnums=0, **EAGER)
def keep_and_add(x):
    return x, x + 1  # the donated input itself is returned: it keeps its buffer and value


@fnn.jit(donate_argnums=0, **EAGER)
def twice(x):
    y = x * 2
    return y, y  # one result returned twice: written once, both are the donated buffer


@fnn.jit(donate_argnums=0, **EAGER)
def transpose(x):
    return x.T  # a view of the donated input: read before the input is overwritten


@fnn.jit(donate_argnums=(0,), **EAGER)
def mixed(state, scale):
    # results in flattened order: "a" (float, 2x2), "b" (int), "c" (3,) and a new (2x2) float
    return {
        "a": state["a"] * scale,
        "b": state["b"] + 1,
        "c": state["c"].double(),
        "d": state["a"] + 1,
    }


@pytest.fixture(params=["compiled", "disabled"])
def mode(request, monkeypatch):
    if request.param == "disabled":
        monkeypatch.setenv("FNN_DISABLE_JIT", "1")
    return request.param


def test_a_returned_donated_input_keeps_its_value_and_blocks_its_buffer(mode):
    x = torch.arange(4.0)
    same, plus = keep_and_add(x)
    assert same is x
    assert_trees_all_equal((same, plus), (torch.arange(4.0), torch.arange(4.0) + 1))
    assert plus.data_ptr() != x.data_ptr()


def test_a_result_returned_twice_is_written_once(mode):
    x = torch.arange(3.0)
    a, b = twice(x)
    assert a is x and b is x
    assert_trees_all_equal(x, torch.arange(3.0) * 2)


def test_a_result_that_views_a_donated_input_is_read_before_the_write(mode):
    x = torch.arange(9.0).reshape(3, 3)
    expected = x.T.clone()
    out = transpose(x)
    assert out is x
    assert_trees_all_equal(x, expected)


def test_results_fill_donated_buffers_of_the_same_shape_and_dtype_in_flattened_order(mode):
    state = {"a": torch.ones(2, 2), "b": torch.zeros((), dtype=torch.int64), "c": torch.ones(3)}
    a, b, c = state["a"], state["b"], state["c"]
    out = mixed(state, torch.tensor(3.0))
    assert out["a"] is a and out["b"] is b  # same shape and dtype: written in place
    assert out["c"] is not c and out["c"].dtype == torch.float64  # another dtype: a new tensor
    assert out["d"] is not a  # "a"'s buffer is already used by out["a"]
    assert_trees_all_equal(c, torch.ones(3))  # a donated input that receives nothing is kept
    assert_trees_all_equal(
        (a, b, out["d"]), (torch.full((2, 2), 3.0), torch.tensor(1), torch.full((2, 2), 2.0))
    )


def test_donated_parameters_that_require_grad_are_updated_in_place(mode):
    w = torch.nn.Parameter(torch.ones(2, 2))
    out = mixed({"a": w, "b": torch.tensor(0), "c": torch.ones(3)}, torch.tensor(2.0))
    assert out["a"] is w and w.requires_grad and w.is_leaf
    assert_trees_all_equal(w.detach(), torch.full((2, 2), 2.0))


def test_a_tensor_both_donated_and_passed_otherwise_is_refused(mode):
    x = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"both as donated argument 'state'.*leaf 'a'.*'scale'"):
        mixed({"a": x, "b": torch.tensor(0), "c": torch.ones(3)}, x)
    with pytest.raises(ValueError, match=r"same tensor is donated twice.*leaf 'a'.*leaf 'c'"):
        mixed({"a": x, "b": torch.tensor(0), "c": x}, torch.tensor(1.0))
    assert_trees_all_equal(x, torch.ones(2, 2))  # nothing was written


# ---------------------------------------------------------------------------------------------
# Static arguments, Python numbers, recompiles
# ---------------------------------------------------------------------------------------------


@fnn.jit(static_argnums=1, static_argnames="op", **EAGER)
def power(x, n, op="add"):
    y = x**n
    return y + 1 if op == "add" else y - 1


def test_a_changed_static_argument_compiles_again_and_the_same_value_does_not():
    x = torch.arange(3.0)
    power(x, 2)  # may already be compiled by another test: count from here
    start = power.num_compiles
    with assert_max_compiles(0):
        assert_trees_all_equal(power(x, 2), x**2 + 1)
    assert power.num_compiles == start
    assert_trees_all_equal(power(x, 3, op="sub"), x**3 - 1)
    assert power.num_compiles == start + 1
    assert_trees_all_equal(power(torch.arange(4.0), 3, op="sub"), torch.arange(4.0) ** 3 - 1)
    assert power.num_compiles == start + 2  # a new shape: dynamo recompiles, counted too
    assert_trees_all_equal(power(x, n=4), x**4 + 1)  # a static parameter passed by keyword


def _mixed(tree, n, op="add"):
    kind = {dict: 1.0, collections.OrderedDict: 3.0, tuple: 5.0}.get(type(tree), 7.0)
    out = sum(fnn.tree.leaves(tree)) ** n * kind  # a wrong entry gives a wrong number
    return out + 1 if op == "add" else out - 1


by_structure = fnn.jit(_mixed, static_argnums=(1,), static_argnames=("op",), **EAGER)
_MIXED_TREES = {
    "dict": lambda x: {"a": x, "b": 2 * x},
    "ordered": lambda x: collections.OrderedDict(a=x, b=2 * x),
    "tuple": lambda x: (x, 2 * x),
    "nested": lambda x: {"a": (x,), "b": [2 * x]},
    "number": lambda x: {"a": x, "b": 2.0},
}


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(_MIXED_TREES)), st.sampled_from([1, 2])),
        min_size=1,
        max_size=8,
    )
)
def test_any_sequence_of_structures_and_statics_runs_the_entry_compiled_for_it(calls):
    """The last call's entry is reused by comparing structures, never for a different one."""
    x = torch.arange(3.0)
    for kind, n in calls:
        tree = _MIXED_TREES[kind](x)
        assert_trees_all_close(by_structure(tree, n), _mixed(tree, n))
        seen = by_structure.num_compiles
        assert_trees_all_close(by_structure(tree, n, op="sub"), _mixed(tree, n, op="sub"))
        assert_trees_all_close(by_structure(tree, n), _mixed(tree, n))
        assert by_structure.num_compiles <= seen + 1  # op="sub" may compile once; the repeat never


def test_an_unhashable_static_argument_is_a_clear_error():
    with pytest.raises(
        TypeError,
        match=r"static argument 'n' \(position 1\) must be hashable.*"
        r"unhashable list: \[2\].*tuple instead of a list",
    ):
        power(torch.ones(1), [2])


@fnn.jit(**EAGER)
def scale(x, factor):
    return x * factor


def test_a_python_float_compiles_in_as_a_constant_and_warns_once_a_tensor_never_recompiles():
    x = torch.ones(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scale(x, 0.5)
        scale(x, torch.tensor(0.5))
        start = scale.num_compiles
        with assert_max_compiles(0):
            for f in (0.1, 0.2, 0.3):
                assert_trees_all_equal(scale(x, torch.tensor(f)), x * f)
    with pytest.warns(
        UserWarning,
        match=r"Python float in argument 'factor' \(position 1\) "
        r"changed from 0.5 to 0.25.*torch.tensor\(0.25\)",
    ):
        assert_trees_all_equal(scale(x, 0.25), x * 0.25)
    assert scale.num_compiles == start + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per function
        scale(x, 0.125)


def test_fail_on_recompile_stance_names_what_changed():
    x = torch.ones(2)
    power(x, 2)
    with torch.compiler.set_stance("fail_on_recompile"):
        power(x, 2)  # cached: fine
        with pytest.raises(RuntimeError, match=r"would compile again.*static arguments changed"):
            power(x, 5)


# ---------------------------------------------------------------------------------------------
# Pytrees in and out
# ---------------------------------------------------------------------------------------------

Pair = collections.namedtuple("Pair", ["first", "second"])


@fnn.tree.register_dataclass
@dataclasses.dataclass(frozen=True)
class Layer:
    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: str = dataclasses.field(default="relu", metadata={"static": True})


def tree_fn(layer: Layer, pair: Pair, extra=None, *, options):
    y = layer.weight * options["gain"] + (0 if layer.bias is None else layer.bias)
    y = torch.relu(y) if layer.activation == "relu" else y
    return {
        "layer": Layer(y, None, "id"),
        "pair": Pair(pair.second, pair.first),
        "none": None,
        "list": [pair.first.sum(), extra],
    }


jit_tree_fn = fnn.jit(tree_fn, **EAGER)


def test_pytree_arguments_and_results_with_none_namedtuples_and_dataclasses():
    layer = Layer(torch.tensor([-1.0, 2.0]), None)
    pair = Pair(torch.ones(2), torch.zeros(3))
    opts = {"gain": torch.tensor(2.0)}
    expected = tree_fn(layer, pair, options=opts)
    out = jit_tree_fn(layer, pair, options=opts)
    fnn.testing.assert_trees_all_equal_structs(out, expected)
    assert_trees_all_equal(out, expected)
    assert type(out["pair"]) is Pair and out["layer"].activation == "id"
    # a bias instead of None is another structure: compiled once more, still correct
    layer = Layer(torch.tensor([-1.0, 2.0]), torch.ones(2), activation="id")
    assert_trees_all_equal(
        jit_tree_fn(layer, pair, "s", options=opts), tree_fn(layer, pair, "s", options=opts)
    )


# ---------------------------------------------------------------------------------------------
# Debugging: FNN_DISABLE_JIT, explain, nesting
# ---------------------------------------------------------------------------------------------


@fnn.jit(**EAGER)
def breaks(x):
    if x.sum() > 0:  # data-dependent Python control flow: a graph break
        return x + 1
    return x - 1


def test_a_graph_break_is_an_error_that_points_to_explain():
    with pytest.raises(Exception, match="Data-dependent") as info:
        breaks(torch.ones(2))
    assert "breaks.explain(*args)" in "\n".join(getattr(info.value, "__notes__", []))
    explained = breaks.explain(torch.ones(2))
    assert explained.graph_break_count == 1
    assert explained.break_reasons[0].user_stack[-1].name == "breaks"


def test_fnn_disable_jit_runs_the_python_function_at_every_call(monkeypatch):
    monkeypatch.setenv("FNN_DISABLE_JIT", "1")
    start = breaks.num_compiles
    with assert_max_compiles(0):
        assert_trees_all_equal(breaks(torch.ones(2)), torch.full((2,), 2.0))  # no graph break
        assert_trees_all_equal(breaks(-torch.ones(2)), torch.full((2,), -2.0))
    assert breaks.num_compiles == start
    monkeypatch.setenv("FNN_DISABLE_JIT", "0")
    with pytest.raises(Exception, match="Data-dependent"):
        breaks(torch.ones(2))


@fnn.jit(**EAGER)
def outer(x):
    return scale(x, torch.tensor(3.0)) + 1  # a jitted function inside a jitted function


def test_nested_jit_and_jit_under_torch_func_transforms_run_inline():
    x = torch.arange(3.0)
    start = scale.num_compiles
    assert_trees_all_equal(outer(x), x * 3 + 1)
    grad = torch.func.grad(lambda x: scale(x, torch.tensor(3.0)).sum())(x)
    assert_trees_all_equal(grad, torch.full((3,), 3.0))
    assert_trees_all_equal(torch.func.vmap(scale, in_dims=(0, None))(x, 2.0), x * 2)
    assert scale.num_compiles == start  # inline: the inner function was not compiled


# ---------------------------------------------------------------------------------------------
# Forms and errors
# ---------------------------------------------------------------------------------------------


def double(x):
    """Double x."""
    return x * 2


def test_decorator_forms_and_wrapping():
    bare = fnn.jit(double)
    called = fnn.jit()(double)
    assert bare.__name__ == "double" and bare.__doc__ == "Double x." and bare.__wrapped__ is double
    assert repr(fnn.jit(double, donate_argnums=0)) == (
        "fnn.jit(double, donate_argnums=(0,), num_compiles=0)"
    )
    assert type(bare) is type(called) and called.num_compiles == 0

    class Model:
        def __init__(self, gain: float) -> None:
            self.gain = gain

        def __hash__(self) -> int:
            return hash(self.gain)

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Model) and other.gain == self.gain

        @fnn.jit(**EAGER)
        def apply(self, x):
            return x * self.gain

    assert_trees_all_equal(Model(3.0).apply(torch.ones(2)), torch.full((2,), 3.0))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"donate_argnums": -1}, TypeError, r"donate_argnums must be an int .* >= 0"),
        ({"static_argnums": "x"}, TypeError, r"static_argnums must be an int"),
        ({"static_argnames": [1]}, TypeError, r"static_argnames must be a string"),
        ({"donate_argnums": 0, "static_argnums": 0}, ValueError, r"both donate_argnums and stat"),
        ({"static_argnums": 3}, ValueError, r"static_argnums=\[3\] but f takes 2 positional"),
        ({"static_argnames": "z"}, ValueError, r"\['z'\] are not parameters of f.*\['x', 'y'\]"),
        ({"fullgraph": False}, TypeError, r"fullgraph is always True"),
        ({"backnd": "eager"}, TypeError, r"unknown option for torch.compile.*backnd"),
    ],
)
def test_invalid_options_are_refused_when_decorating(kwargs, error, pattern):
    def f(x, y):
        return x + y

    with pytest.raises(error, match=pattern):
        fnn.jit(f, **kwargs)


def test_arguments_that_are_neither_tensors_nor_hashable_are_a_clear_error():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "argument 'factor' (position 1), leaf 'gain' is a ndarray, which is neither a tensor "
            "nor hashable (torch.as_tensor(x) makes it a tensor)"
        ),
    ):
        scale(torch.ones(2), {"gain": np.ones(2)})
    with pytest.raises(TypeError, match=r"fnn.jit: expected a function to compile, got 3"):
        fnn.jit(3)


@variants("eager", "jit")
def test_the_jit_variant_is_fnn_jit(variant):
    f = variant(lambda tree: {"y": tree["x"] + 1})
    assert isinstance(f, type(train_step)) == variant.is_jit
    assert_trees_all_equal(f({"x": torch.zeros(2)}), {"y": torch.ones(2)})


def test_trees_with_empty_dicts_pass_through_a_donating_step():
    """Models without state return ``state == {}``; a jitted step must carry it untouched."""

    def step(params, state, batch):
        new = fnn.tree.map(lambda p: p - 0.1 * batch.sum(), params)
        return new, state, {"loss": batch.mean(), "extra": {}}

    jitted = fnn.jit(step, donate_argnums=(0, 1))
    params = {"w": torch.ones(2), "b": {}}
    w = params["w"]
    new, state, aux = jitted(params, {}, torch.ones(3))
    assert state == {} and aux["extra"] == {} and new["b"] == {}
    assert new["w"] is w
    torch.testing.assert_close(w, torch.full((2,), 0.7))


def test_inductor_defaults_merge_under_the_users_options():
    from fnn._src.inductor import _Inductor
    from fnn._src.inductor import with_defaults as _with_defaults
    from fnn._src.onednn_matmul import linear_pass
    from fnn._src.vec_isa import vec_isa_ok

    def config(options):  # inductor's config names: "cpp.vec_isa_ok" as given, dashes as _
        return {k.replace("-", "_"): v for k, v in options.items()}

    defaults = {"cpp.max_horizontal_fusion_size": 1, "size_asserts": False}
    if vec_isa_ok():
        defaults["cpp.vec_isa_ok"] = True
    if linear_pass() is not None:
        defaults["post_grad_custom_post_pass"] = linear_pass()
    made = _with_defaults({})
    assert list(made) == ["backend"] and isinstance(made["backend"], _Inductor)
    assert made["backend"].config == config(defaults)
    mine = {
        "cpp.max_horizontal_fusion_size": 8,
        "size_asserts": True,
        "cpp_wrapper": True,
        "cpp.vec_isa_ok": None,
        "post_grad_custom_post_pass": None,
    }
    made = _with_defaults({"options": mine, "disable": False}, dynamic=True)
    assert made["backend"].config == config(mine)  # the user's values win
    assert made["backend"].dynamic is True and made["disable"] is False
    assert _with_defaults({"options": None})["backend"].config == config(defaults)
    assert _with_defaults({"backend": "inductor"})["backend"] == _with_defaults({})["backend"]
    for untouched in ({"mode": "max-autotune-no-cudagraphs"}, {"backend": "aot_eager"}):
        assert _with_defaults(untouched) == untouched  # mode excludes options; not inductor


def _graph_of(fn, *args):
    gm = torch.fx.symbolic_trace(fn)
    gm(*args)
    return gm


def test_graphs_that_train_batch_norm_are_recognised():
    from fnn._src.inductor import _trains_batch_norm

    x, w, b = torch.randn(4, 3, 5, 5), torch.ones(3), torch.zeros(3)
    rm, rv = torch.zeros(3), torch.ones(3)
    F = torch.nn.functional
    trains = [
        lambda x: F.batch_norm(x, None, None, w, b, True, 0.0, 1e-5),
        lambda x: F.batch_norm(x, rm.clone(), rv.clone(), w, b, training=True),
        lambda x: torch.batch_norm(x, w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5, False),
    ]
    evaluates = [
        lambda x: F.batch_norm(x, rm, rv, w, b, False, 0.0, 1e-5),
        lambda x: F.batch_norm(x, rm, rv, w, b),
        lambda x: F.conv2d(x, torch.ones(2, 3, 3, 3)).relu(),
    ]
    assert all(_trains_batch_norm(_graph_of(f, x)) for f in trains)
    assert not any(_trains_batch_norm(_graph_of(f, x)) for f in evaluates)


@pytest.mark.parametrize("trains", [True, False])
def test_layout_optimization_is_off_only_for_graphs_that_train_batch_norm(trains, monkeypatch):
    from torch._inductor import config

    from fnn._src.inductor import _Inductor

    seen = []
    monkeypatch.setattr(
        torch._TorchCompileInductorWrapper,
        "__call__",
        lambda self, gm, inputs, **kw: seen.append(config.layout_optimization),
    )
    w, b, rm, rv = torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3)
    x = torch.randn(4, 3, 2, 2)
    gm = _graph_of(
        lambda x: torch.nn.functional.batch_norm(x, rm.clone(), rv.clone(), w, b, trains), x
    )
    _Inductor({}, None)(gm, [x])
    _Inductor({"layout_optimization": True}, None)(gm, [x])  # an explicit choice wins
    default = config.layout_optimization
    assert seen == [False if trains else default, default]


def test_a_jitted_batch_norm_train_step_equals_eager():
    from fnn import nn

    model = nn.Sequential([nn.Conv2d(4, 3, padding=1), nn.BatchNorm2d(), nn.relu])
    x = torch.randn(2, 3, 5, 5)
    params, state = model.init(fnn.random.key(0), x)

    def loss(p, s, x):
        y, s = model.apply(p, x, state=s, train=True)
        return (y**2).mean(), s

    step = fnn.value_and_grad(loss, has_aux=True)
    want = step(params, state, x)
    got = fnn.jit(step)(params, state, x)
    assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


# ---- the remembered vector-ISA verdict (fnn._src.vec_isa) ----------------------------------


@pytest.fixture
def fresh_isa_record(tmp_path, monkeypatch):
    from fnn._src import vec_isa

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    vec_isa.vec_isa_ok.cache_clear()
    yield vec_isa, tmp_path
    vec_isa.vec_isa_ok.cache_clear()


def test_the_isa_verdict_is_probed_once_then_read_back(fresh_isa_record, monkeypatch):
    vec_isa, root = fresh_isa_record
    if vec_isa._identity() is None:  # a platform fnn forms no verdict on: inductor probes as usual
        assert vec_isa.vec_isa_ok() is False and not (root / "fnn").exists()
        return
    probes = []
    monkeypatch.setattr(vec_isa, "_verdict", lambda: probes.append(1) or True)
    assert vec_isa.vec_isa_ok() is True and probes == [1]
    (record,) = (root / "fnn").glob("vec_isa_*.json")
    assert json.loads(record.read_text()) == {"all_passed": True}
    vec_isa.vec_isa_ok.cache_clear()  # a new process: reads the record, probes nothing
    assert vec_isa.vec_isa_ok() is True and probes == [1]
    record.write_text(json.dumps({"all_passed": False}))
    vec_isa.vec_isa_ok.cache_clear()
    assert vec_isa.vec_isa_ok() is False and probes == [1]


def test_the_isa_verdict_is_inductors_own_probe(fresh_isa_record, monkeypatch):
    # True exactly when inductor's probes kept every ISA the CPU advertises
    vec_isa, _ = fresh_isa_record
    from torch._inductor import config, cpu_vec_isa

    real = cpu_vec_isa.valid_vec_isa_list
    with config.patch({"cpp.vec_isa_ok": True}):
        advertised = real.__wrapped__()  # the CPU's ISAs, unprobed
    if not advertised:  # nothing to vouch for
        assert vec_isa._verdict() is False
        return
    for probed, want in ((list(advertised), True), (advertised[:-1], False)):

        def probe(result=probed):
            return result

        probe.__wrapped__ = real.__wrapped__
        monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", probe)
        assert vec_isa._verdict() is want


def test_a_users_isa_setting_or_any_failure_leaves_inductor_alone(fresh_isa_record, monkeypatch):
    vec_isa, root = fresh_isa_record
    from torch._inductor import config

    with config.patch({"cpp.vec_isa_ok": False}):
        assert vec_isa.vec_isa_ok() is False
    vec_isa.vec_isa_ok.cache_clear()

    def broken():
        raise RuntimeError("no compiler")

    monkeypatch.setattr(vec_isa, "_identity", broken)
    assert vec_isa.vec_isa_ok() is False
    assert not (root / "fnn").exists()
