"""PyTorch interop: state dicts in and out by name, and from_torch's pure wrapper."""

from __future__ import annotations

import pytest
import torch
from torch import nn as tnn

import fnn
from fnn import nn
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

KEY = fnn.random.key(0)


def _torch_mlp():
    torch.manual_seed(0)
    return tnn.Sequential(tnn.Linear(3, 8), tnn.ReLU(), tnn.Linear(8, 2))


def _fnn_mlp():
    return nn.Sequential([nn.Linear(8), torch.relu, nn.Linear(2)])


def test_a_torch_state_dict_loads_by_name_and_gives_the_same_outputs():
    twin, model = _torch_mlp(), _fnn_mlp()
    x = torch.randn(5, 3)
    params, state = nn.from_state_dict(model, twin.state_dict(), x)
    assert state == {}
    assert_trees_all_equal(model.apply(params, x), twin(x).detach())
    # copies: changing the torch model afterwards does not reach the fnn params
    with torch.no_grad():
        twin[0].weight.add_(1.0)
    assert not torch.equal(params["0"]["weight"], twin[0].weight)


def test_round_trip_through_to_state_dict_is_exact():
    model = _fnn_mlp()
    x = torch.randn(2, 3)
    params, _ = model.init(KEY, x)
    again, _ = nn.from_state_dict(model, nn.to_state_dict(params), x)
    assert_trees_all_equal(again, params)


def test_mismatches_are_reported_all_at_once_by_name():
    model = _fnn_mlp()
    sd = dict(_torch_mlp().state_dict())
    sd.pop("2.bias")
    sd["0.weight"] = torch.zeros(8, 4)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        nn.from_state_dict(model, sd, torch.randn(1, 3))
    msg = str(info.value)
    assert "missing keys: ['2.bias']" in msg
    assert "unexpected keys: ['extra.weight']" in msg
    assert "0.weight: shape (8, 4) in the state_dict, the model expects (8, 3)" in msg
    with pytest.raises(TypeError, match="pass example inputs"):
        nn.from_state_dict(model, sd)
    with pytest.raises(TypeError, match=r"use fnn\.nn\.from_torch"):
        nn.from_state_dict(_torch_mlp(), sd, torch.randn(1, 3))


def test_floating_tensors_are_cast_to_the_models_dtype():
    model = _fnn_mlp()
    sd = {k: v.double() for k, v in _torch_mlp().state_dict().items()}
    params, _ = nn.from_state_dict(model, sd, torch.randn(1, 3))
    assert all(t.dtype == torch.float32 for t in fnn.tree.leaves(params))


def _torch_bn_net():
    torch.manual_seed(0)
    return tnn.Sequential(tnn.Linear(3, 4), tnn.BatchNorm1d(4), tnn.ReLU(), tnn.Linear(4, 2))


def test_from_torch_init_copies_params_and_buffers_by_state_dict_name():
    net = _torch_bn_net()
    model = nn.from_torch(net)
    params, state = model.init(KEY, torch.randn(4, 3))
    assert list(nn.to_state_dict(params, state)) == list(net.state_dict())
    assert_trees_all_equal(dict(nn.to_state_dict(params, state)), dict(net.state_dict()))
    assert params["0"]["weight"] is not net[0].weight


def test_from_torch_apply_matches_the_module_and_returns_new_state():
    net = _torch_bn_net()
    model = nn.from_torch(net)
    x = torch.randn(6, 3)
    params, state = model.init(KEY, x)
    before = fnn.tree.map(torch.clone, state)
    y, s1 = model.apply(params, x, state=state, train=True)
    net.train()
    assert_trees_all_close(y, net(x).detach())  # net's own buffers update here, as torch does
    assert_trees_all_equal(state, before)  # ours did not
    assert_trees_all_close(dict(nn.to_state_dict(params, s1)), dict(net.state_dict()))
    net.eval()
    y_eval, _ = model.apply(params, x, state=s1)
    assert_trees_all_close(y_eval, net(x).detach())
    assert net.training is False  # apply never toggles the user's module


def test_from_torch_under_grad_vmap_and_jit():
    net = _torch_bn_net()
    model = nn.from_torch(net)
    x = torch.randn(6, 3)
    params, state = model.init(KEY, x)

    def loss(p):
        y, new_state = model.apply(p, x, state=state, train=True)
        return y.square().mean(), new_state

    (_value, s1), grads = fnn.value_and_grad(loss, has_aux=True)(params)
    net.train()
    net.zero_grad()
    net(x).square().mean().backward()
    # torch.func and autograd may reduce in different orders: a few ulp of an O(1) gradient.
    assert_trees_all_close(
        dict(nn.to_state_dict(grads)),
        {k: p.grad for k, p in net.named_parameters()},
        rtol=1e-6,
        atol=1e-6,
    )
    per_example = fnn.vmap(lambda xi: model.apply(params, xi[None], state=s1)[0][0])(x)
    assert_trees_all_close(per_example, model.apply(params, x, state=s1)[0], rtol=1e-5)
    step = fnn.jit(lambda p, s, x: model.apply(p, x, state=s, train=True))
    y1, j1 = step(params, state, x)
    _y2, j2 = step(params, j1, x)
    assert step.num_compiles == 1
    assert int(j2["1"]["num_batches_tracked"]) == 2
    # The compiled kernels may sum in another order than eager's: a few ulp of an O(1) output.
    assert_trees_all_close(
        (y1, j1), model.apply(params, x, state=state, train=True), rtol=1e-6, atol=1e-6
    )


def test_from_torch_dropout_is_reproducible_from_the_key_in_eager():
    model = nn.from_torch(tnn.Sequential(tnn.Linear(3, 64), tnn.Dropout(0.5)))
    x = torch.randn(4, 3)
    params, _ = model.init(KEY, x)
    a = model.apply(params, x, key=fnn.random.key(1), train=True)
    b = model.apply(params, x, key=fnn.random.key(1), train=True)
    c = model.apply(params, x, key=fnn.random.key(2), train=True)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(model.apply(params, x), model.apply(params, x, train=False))


def test_from_torch_requires_state_when_the_module_has_buffers():
    model = nn.from_torch(_torch_bn_net())
    params, _ = model.init(KEY, torch.randn(2, 3))
    with pytest.raises(ValueError, match="pass state= to apply"):
        model.apply(params, torch.randn(2, 3))
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module, got int"):
        nn.from_torch(3)
