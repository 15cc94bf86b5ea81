"""A CNN with BatchNorm and dropout: its fnn.jit train step compiles once and matches eager,
and the model equals its torch.nn twin (custom models read as documented)."""

from __future__ import annotations

import torch
from test_nn_golden import Residual, cnn
from torch import nn as tnn

import fnn
from fnn import nn
from fnn.testing import assert_trees_all_close

KEY = fnn.random.key(0)


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)


def _loss(model, params, state, x, y, key):
    logits, state = model.apply(params, x, state=state, key=key, train=True)
    return fnn.losses.cross_entropy(logits, y).mean(), state


def _make_step(model):
    def step(params, state, x, y, key):
        (loss, state), grads = fnn.value_and_grad(
            lambda p: _loss(model, p, state, x, y, key), has_aux=True
        )(params)
        params = fnn.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        return params, state, loss

    return step


def test_cnn_train_step_compiles_once_and_matches_eager():
    model = cnn()
    x, _ = _batch(0)
    params, state = model.init(KEY, x)
    eager = _make_step(model)
    compiled = fnn.jit(_make_step(model), donate_argnums=(0, 1))
    ep, es = params, state
    cp, cs = fnn.tree.map(torch.clone, (params, state))
    for i in range(3):
        x, y = _batch(i)
        key = fnn.random.fold_in(KEY, i)
        ep, es, eloss = eager(ep, es, x, y, key)
        cp, cs, closs = compiled(cp, cs, x, y, key)
        assert_trees_all_close(closs, eloss, rtol=1e-5, atol=1e-6)
    assert compiled.num_compiles == 1
    assert_trees_all_close((cp, cs), (ep, es), rtol=1e-4, atol=1e-5)
    assert int(cs["1"]["num_batches_tracked"]) == 3


def test_cnn_equals_its_torch_twin_in_train_and_eval():
    model = cnn()
    x, _ = _batch(1)
    params, state = model.init(KEY, x)
    twin = tnn.Sequential(
        tnn.Conv2d(1, 8, 3, padding=1),
        tnn.BatchNorm2d(8),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Dropout(0.2),
        tnn.Flatten(),
        tnn.Linear(128, 10),
    )
    twin.load_state_dict(nn.to_state_dict(params, state))
    twin.eval()
    assert_trees_all_close(model.apply(params, x, state=state)[0], twin(x).detach(), atol=1e-6)
    twin.train()
    twin[4].p = 0.0  # torch's dropout masks come from its global RNG: compare without them
    no_drop = nn.Sequential([*model.layers[:4], *model.layers[5:]])
    sd = {
        k.replace("6.", "5.", 1) if k.startswith("6.") else k: v
        for k, v in nn.to_state_dict(params, state).items()
    }
    p2, s2 = nn.from_state_dict(no_drop, sd, x)
    y, s2 = no_drop.apply(p2, x, state=s2, train=True)
    assert_trees_all_close(y, twin(x).detach(), atol=1e-5)
    assert_trees_all_close(s2["1"]["running_mean"], twin[1].running_mean, atol=1e-6)


class TorchResidual(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c)
        self.conv2 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


def test_a_custom_residual_block_loads_its_torch_twin_by_name():
    twin = TorchResidual(4)
    x = torch.randn(2, 4, 6, 6)
    model = Residual(4)
    params, state = nn.from_state_dict(model, twin.state_dict(), x)
    twin.train()
    y, new_state = model.apply(params, x, state=state, train=True)
    assert_trees_all_close(y, twin(x).detach(), atol=1e-5)
    assert_trees_all_close(
        dict(nn.to_state_dict(params, new_state)), dict(twin.state_dict()), atol=1e-6
    )
