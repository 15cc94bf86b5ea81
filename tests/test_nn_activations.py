"""Activations: every fnn.nn function and layer equals its torch twin in value and gradient."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as tF
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn as tnn

import fnn
from fnn import nn
from fnn.nn import _activations
from fnn.testing import assert_trees_all_close

F64 = torch.float64
KEY = fnn.random.key(0)


@dataclasses.dataclass
class Act:
    """An fnn function and layer with their torch twins and a strategy for their options."""

    fn: Callable[..., torch.Tensor]
    layer: type[nn.Module]
    torch_fn: Callable[..., torch.Tensor]
    torch_layer: type[tnn.Module]
    options: st.SearchStrategy[dict] = st.just({})  # noqa: RUF009
    dim: bool = False  # takes a `dim` option (drawn to fit the input's rank)


_slope = st.floats(-3.0, 3.0, allow_nan=False)
_pos = st.floats(0.1, 4.0)

ACTS: dict[str, Act] = {
    "relu": Act(nn.relu, nn.ReLU, tF.relu, tnn.ReLU),
    "relu6": Act(nn.relu6, nn.ReLU6, tF.relu6, tnn.ReLU6),
    "leaky_relu": Act(
        nn.leaky_relu,
        nn.LeakyReLU,
        tF.leaky_relu,
        tnn.LeakyReLU,
        st.fixed_dictionaries({}, optional={"negative_slope": _slope}),
    ),
    "elu": Act(
        nn.elu, nn.ELU, tF.elu, tnn.ELU, st.fixed_dictionaries({}, optional={"alpha": _pos})
    ),
    "selu": Act(nn.selu, nn.SELU, tF.selu, tnn.SELU),
    "celu": Act(
        nn.celu, nn.CELU, tF.celu, tnn.CELU, st.fixed_dictionaries({}, optional={"alpha": _pos})
    ),
    "gelu": Act(
        nn.gelu,
        nn.GELU,
        tF.gelu,
        tnn.GELU,
        st.fixed_dictionaries({}, optional={"approximate": st.sampled_from(["none", "tanh"])}),
    ),
    "silu": Act(nn.silu, nn.SiLU, tF.silu, tnn.SiLU),
    "mish": Act(nn.mish, nn.Mish, tF.mish, tnn.Mish),
    "softplus": Act(
        nn.softplus,
        nn.Softplus,
        tF.softplus,
        tnn.Softplus,
        st.fixed_dictionaries({}, optional={"beta": _pos, "threshold": st.floats(0.5, 25.0)}),
    ),
    "softsign": Act(nn.softsign, nn.Softsign, tF.softsign, tnn.Softsign),
    "hardtanh": Act(
        nn.hardtanh,
        nn.Hardtanh,
        tF.hardtanh,
        tnn.Hardtanh,
        st.tuples(st.floats(-5.0, 0.0), st.floats(0.1, 5.0)).map(
            lambda b: {"min_val": b[0], "max_val": b[1]}
        )
        | st.just({}),
    ),
    "hardswish": Act(nn.hardswish, nn.Hardswish, tF.hardswish, tnn.Hardswish),
    "hardsigmoid": Act(nn.hardsigmoid, nn.Hardsigmoid, tF.hardsigmoid, tnn.Hardsigmoid),
    "sigmoid": Act(nn.sigmoid, nn.Sigmoid, torch.sigmoid, tnn.Sigmoid),
    "tanh": Act(nn.tanh, nn.Tanh, torch.tanh, tnn.Tanh),
    "softmax": Act(nn.softmax, nn.Softmax, tF.softmax, tnn.Softmax, dim=True),
    "log_softmax": Act(nn.log_softmax, nn.LogSoftmax, tF.log_softmax, tnn.LogSoftmax, dim=True),
    "glu": Act(nn.glu, nn.GLU, tF.glu, tnn.GLU, dim=True),
}


@st.composite
def _case(draw, act: Act):
    """(x, options): a float64 input of 1-3 dims with values around the kinks, and options."""
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    options = dict(draw(act.options))
    if act.dim:
        d = draw(st.integers(-len(shape), len(shape) - 1))
        if act.fn is nn.glu:
            shape[d] *= 2
        if draw(st.booleans()) or d != -1:
            options["dim"] = d
    n = 1
    for s in shape:
        n *= s
    value = st.floats(-30.0, 30.0, allow_nan=False) | st.sampled_from([0.0, -3.0, 3.0, 6.0])
    values = draw(st.lists(value, min_size=n, max_size=n))
    return torch.tensor(values, dtype=F64).reshape(shape), options


def _value_and_input_grad(f, x, g):
    xr = x.clone().requires_grad_(True)
    y = f(xr)
    (gx,) = torch.autograd.grad((y * g).sum(), xr)
    return y.detach(), gx


@pytest.mark.parametrize("name", list(ACTS))
def test_function_and_layer_match_torch_in_value_and_grad(name):
    act = ACTS[name]

    @settings(max_examples=12, deadline=None)
    @given(case=_case(act), seed=st.integers(0, 2**16))
    def check(case, seed):
        x, options = case
        before = x.clone()
        torch_options = {"dim": -1, **options} if act.dim else options  # torch's dim=None warns
        shape = act.torch_fn(x, **torch_options).shape
        g = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(seed))
        y_ref, gx_ref = _value_and_input_grad(lambda t: act.torch_fn(t, **torch_options), x, g)
        y_mod, gx_mod = _value_and_input_grad(act.torch_layer(**torch_options), x, g)
        assert_trees_all_close((y_mod, gx_mod), (y_ref, gx_ref))

        y_fn = act.fn(x, **options)
        gx_fn = fnn.grad(lambda t: (act.fn(t, **options) * g).sum())(x)
        layer = act.layer(**options)
        params, state = layer.init(KEY, x)
        assert (params, state) == ({}, {})
        y_layer = layer.apply(params, x)
        gx_layer = fnn.grad(lambda t: (layer.apply(params, t) * g).sum())(x)
        assert_trees_all_close((y_fn, gx_fn), (y_ref, gx_ref))
        assert_trees_all_close((y_layer, gx_layer), (y_ref, gx_ref))
        assert torch.equal(x, before)  # never in place

    check()


@pytest.mark.parametrize("name", list(ACTS))
def test_layers_have_torchs_defaults_and_no_state_dict(name):
    act = ACTS[name]
    fields = {f.name: f.default for f in dataclasses.fields(act.layer)}
    torch_sig = inspect.signature(act.torch_layer.__init__).parameters
    for name, default in fields.items():
        if name == "dim":  # torch's legacy default dim=None is replaced by -1
            assert default == -1
            continue
        assert default == torch_sig[name].default, name
    fn_sig = inspect.signature(act.fn).parameters
    assert list(fn_sig)[1:] == list(fields)
    assert all(fn_sig[name].default == default for name, default in fields.items())
    x = torch.randn(2, 4)
    params, state = act.layer().init(KEY, x, train=True)
    assert (params, state) == ({}, {})
    act.torch_layer().load_state_dict(nn.to_state_dict(params, state), strict=True)


def test_activations_under_vmap_match_the_batched_call():
    xs = torch.randn(5, 3, 4, dtype=F64)
    for act in ACTS.values():
        layer = act.layer()
        per_example = fnn.vmap(lambda x, layer=layer: layer.apply({}, x))(xs)
        assert_trees_all_close(per_example, layer.apply({}, xs))
        assert_trees_all_close(fnn.vmap(act.fn)(xs), act.fn(xs))


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 3), max_size=2),
    per_channel=st.booleans(),
    init=st.floats(-1.0, 1.0),
)
def test_prelu_matches_torch_in_value_and_grads(n, c, spatial, per_channel, init):
    x = torch.randn(n, c, *spatial, dtype=F64)
    num = c if per_channel else 1
    model = nn.PReLU(num, init)
    params, state = model.init(KEY, x)
    assert state == {}
    assert_trees_all_close(params, {"weight": torch.full((num,), init, dtype=F64)})
    twin = tnn.PReLU(num, init, dtype=F64)
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    # Perturb the slopes so each channel differs, in both.
    params = {"weight": params["weight"] + torch.linspace(0, 0.5, num, dtype=F64)}
    twin.load_state_dict(nn.to_state_dict(params), strict=True)

    g = torch.randn(x.shape, dtype=F64)
    y = model.apply(params, x)
    gp, gx = fnn.grad(lambda p, t: (model.apply(p, t) * g).sum(), argnums=(0, 1))(params, x)
    xr = x.clone().requires_grad_(True)
    ty = twin(xr)
    (ty * g).sum().backward()
    assert_trees_all_close((y, gp, gx), (ty.detach(), {"weight": twin.weight.grad}, xr.grad))


def test_prelu_with_one_slope_takes_any_shape_and_vmaps():
    model = nn.PReLU()
    for shape in [(), (7,), (2, 3, 4)]:
        x = torch.randn(shape, dtype=F64)
        params, _ = model.init(KEY, x)
        assert torch.equal(model.apply(params, x), tnn.PReLU(dtype=F64)(x).detach())
    xs = torch.randn(6, 3, 2)
    params, _ = model.init(KEY, xs)
    assert_trees_all_close(fnn.vmap(lambda x: model.apply(params, x))(xs), model.apply(params, xs))


def test_prelu_init_options_and_errors():
    assert nn.PReLU(init=0.1) == nn.PReLU(init_value=0.1) == nn.PReLU(1, 0.1)
    params, _ = nn.PReLU(2, weight_init=nn.initializers.ones).init(KEY, torch.zeros(1, 2))
    assert torch.equal(params["weight"], torch.ones(2))
    assert dataclasses.replace(nn.PReLU(3), init_value=0.5).init_value == 0.5
    with pytest.raises(ValueError, match="num_parameters must be a positive int, got 0"):
        nn.PReLU(0)
    model = nn.Sequential([nn.Linear(4), nn.PReLU(3)])
    with pytest.raises(ValueError, match=r"PReLU at '1'.*num_parameters=3.*got shape \(2, 4\)"):
        model.init(KEY, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"PReLU \(the root module\).*got shape \(3,\)"):
        nn.PReLU(3).init(KEY, torch.zeros(3))


def test_layer_option_errors_are_raised_at_construction():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        nn.GELU("erf")
    with pytest.raises(ValueError, match=r"max_val > min_val, got min_val=1\.0, max_val=1\.0"):
        nn.Hardtanh(1.0, 1.0)


def test_runtime_errors_name_the_layer():
    with pytest.raises(RuntimeError, match="must be even") as info:
        nn.Sequential([nn.GLU()]).apply({}, torch.zeros(2, 3))
    assert "fnn.nn.GLU at '0'" in "".join(getattr(info.value, "__notes__", []))


def test_every_public_name_is_documented_with_shapes_and_an_example():
    for name in _activations.__all__:
        obj = getattr(nn, name)
        assert obj is getattr(_activations, name)
        doc = inspect.getdoc(obj) or ""
        assert "Shapes:" in doc and ">>>" in doc, name
        if inspect.isclass(obj):
            assert issubclass(obj, nn.Module)
    assert {a.layer.__name__ for a in ACTS.values()} | {"PReLU"} == {
        n for n in _activations.__all__ if n[0].isupper()
    }
    assert {a.fn.__name__ for a in ACTS.values()} == {
        n for n in _activations.__all__ if n[0].islower()
    }
