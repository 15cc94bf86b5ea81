"""Linear, Bilinear, Identity, Flatten, Unflatten, Sequential equal their torch.nn twins."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn as tnn

import fnn
from fnn import nn
from fnn.testing import assert_trees_all_close

F64 = torch.float64
KEY = fnn.random.key(0)


def _grads_fnn(model, params, *xs):
    xs = [x.clone().requires_grad_(True) for x in xs]
    leaves, spec = fnn.tree.flatten(params)
    leaves = [t.detach().requires_grad_(True) for t in leaves]
    y = model.apply(fnn.tree.unflatten(spec, leaves), *xs)
    gs = torch.autograd.grad((y * y).sum(), [*leaves, *xs])
    return y, fnn.tree.unflatten(spec, list(gs[: len(leaves)])), gs[len(leaves) :]


def _grads_torch(twin, *xs):
    xs = [x.clone().requires_grad_(True) for x in xs]
    twin.zero_grad()
    y = twin(*xs)
    (y * y).sum().backward()
    grads = {k: p.grad for k, p in twin.named_parameters()}
    return y, grads, [x.grad for x in xs]


@settings(max_examples=15, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    fin=st.integers(1, 6),
    fout=st.integers(1, 6),
    bias=st.booleans(),
)
def test_linear_matches_torch_in_value_and_grad(batch, fin, fout, bias):
    x = torch.randn(*batch, fin, dtype=F64)
    model = nn.Linear(fout, bias=bias)
    params, state = model.init(KEY, x)
    assert state == {}
    twin = tnn.Linear(fin, fout, bias=bias, dtype=F64)
    twin.load_state_dict(nn.to_state_dict(params))
    y, gp, gx = _grads_fnn(model, params, x)
    ty, tgp, tgx = _grads_torch(twin, x)
    assert_trees_all_close(y, ty.detach())
    assert_trees_all_close(gp, _nest(tgp))
    assert_trees_all_close(gx[0], tgx[0])


def _nest(flat):
    out = {}
    for k, v in flat.items():
        node = out
        *ps, leaf = k.split(".")
        for p in ps:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def test_linear_default_init_has_torchs_bounds():
    params, _ = nn.Linear(64).init(KEY, torch.zeros(1, 100))
    bound = 1 / math.sqrt(100)
    for name in ("weight", "bias"):
        t = params[name]
        assert t.abs().max() <= bound
        assert t.abs().max() > 0.9 * bound  # spread over the whole range, not a tiny init
        assert t.dtype == torch.float32


def test_linear_takes_custom_initializers_and_the_inputs_dtype():
    model = nn.Linear(3, weight_init=nn.initializers.ones, bias_init=nn.initializers.zeros)
    params, _ = model.init(KEY, torch.zeros(2, 4, dtype=F64))
    assert params["weight"].dtype == F64
    assert torch.equal(params["weight"], torch.ones(3, 4, dtype=F64))
    assert torch.equal(params["bias"], torch.zeros(3, dtype=F64))


def test_linear_shape_errors_name_the_path_and_both_shapes():
    model = nn.Sequential([nn.Linear(4), nn.Linear(2)])
    params, _ = model.init(KEY, torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"Linear at '0'.*shape \(4, 3\), expected \(4, 7\)"):
        model.apply(params, torch.zeros(5, 7))
    with pytest.raises(ValueError, match=r"Linear at '0': expected `x` of shape \(\.\.\., in_f"):
        model.apply(params, torch.tensor(1.0))


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 3), in1=st.integers(1, 4), in2=st.integers(1, 4), bias=st.booleans())
def test_bilinear_matches_torch(batch, in1, in2, bias):
    x1, x2 = torch.randn(batch, in1, dtype=F64), torch.randn(batch, in2, dtype=F64)
    model = nn.Bilinear(3, bias=bias)
    params, _ = model.init(KEY, x1, x2)
    twin = tnn.Bilinear(in1, in2, 3, bias=bias, dtype=F64)
    twin.load_state_dict(nn.to_state_dict(params))
    y, gp, gx = _grads_fnn(model, params, x1, x2)
    ty, tgp, tgx = _grads_torch(twin, x1, x2)
    assert_trees_all_close(y, ty.detach())
    assert_trees_all_close(gp, _nest(tgp))
    assert_trees_all_close(list(gx), tgx)
    assert params["weight"].abs().max() <= in1**-0.5


@settings(max_examples=15, deadline=None)
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    start=st.integers(-4, 3),
    end=st.integers(-4, 3),
)
def test_flatten_matches_torch(shape, start, end):
    x = torch.randn(*shape)
    try:
        expected = tnn.Flatten(start, end)(x)
    except (IndexError, RuntimeError):
        with pytest.raises((ValueError, RuntimeError, IndexError)):
            nn.Flatten(start, end).apply({}, x)
        return
    assert torch.equal(nn.Flatten(start, end).apply({}, x), expected)


def test_unflatten_and_identity_match_torch():
    x = torch.randn(2, 12, 5)
    assert torch.equal(nn.Unflatten(1, (3, 4)).apply({}, x), tnn.Unflatten(1, (3, 4))(x))
    assert torch.equal(nn.Unflatten(-2, (-1, 2)).apply({}, x), tnn.Unflatten(-2, (-1, 2))(x))
    with pytest.raises(ValueError, match=r"Unflatten.*size 12 into \(5, 2\)"):
        nn.Unflatten(1, (5, 2)).apply({}, x)
    assert nn.Identity().apply({}, x) is x


def test_sequential_names_layers_by_position_like_torch():
    model = nn.Sequential(nn.Linear(8), nn.relu, nn.Linear(8), nn.Identity(), nn.Linear(2))
    x = torch.randn(4, 3)
    params, _ = model.init(KEY, x)
    twin = tnn.Sequential(
        tnn.Linear(3, 8), tnn.ReLU(), tnn.Linear(8, 8), tnn.Identity(), tnn.Linear(8, 2)
    )
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())
    twin.load_state_dict(nn.to_state_dict(params))
    assert_trees_all_close(model.apply(params, x), twin(x).detach())
    assert len(model) == 5
    with pytest.raises(TypeError, match="layer 1 is a int"):
        nn.Sequential([nn.Linear(2), 3])
