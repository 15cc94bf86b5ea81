"""The fnn.nn module contract: frozen config, init on shapes only, pure apply, state, keys."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import fnn
from fnn import nn
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

KEY = fnn.random.key(0)


class MLP(nn.Module):
    features: tuple[int, ...]

    def __post_init__(self):
        self.layers = [nn.Linear(f) for f in self.features]

    def forward(self, scope, x):
        *hidden, last = scope.layers
        for layer in hidden:
            x = torch.relu(layer(x))
        return last(x)


class Counter(nn.Module):
    """A layer with state: counts calls in train mode and keeps a running sum of its input."""

    def forward(self, scope, x):
        count = scope.get_state("count", lambda: torch.zeros((), dtype=torch.int64))
        total = scope.get_state("total", lambda: torch.zeros(x.shape[-1]))
        if scope.train:
            scope.put_state("count", count + 1)
            scope.put_state("total", total + x.sum(0))
        return x + total


class Noisy(nn.Module):
    def forward(self, scope, x):
        if scope.key is None:
            return x
        return x + fnn.random.normal(scope.key, x.shape)


def test_a_module_is_a_frozen_dataclass_of_config():
    model = MLP((4, 2))
    assert dataclasses.is_dataclass(model)
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"dataclasses\.replace"):
        model.features = (3,)
    assert model == MLP((4, 2)) and hash(model) == hash(MLP((4, 2)))
    assert dataclasses.replace(model, features=(5,)).layers[0].features == 5
    assert repr(nn.Linear(3)) == "Linear(features=3, bias=True, weight_init=None, bias_init=None)"


def test_init_infers_sizes_and_names_params_like_torch():
    x = torch.randn(5, 3)
    params, state = MLP((8, 2)).init(KEY, x)
    assert state == {}
    shapes = fnn.tree.map(lambda t: tuple(t.shape), params)
    assert shapes == {
        "layers": {"0": {"weight": (8, 3), "bias": (8,)}, "1": {"weight": (2, 8), "bias": (2,)}}
    }
    twin = torch.nn.Module()
    twin.layers = torch.nn.ModuleList([torch.nn.Linear(3, 8), torch.nn.Linear(8, 2)])
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())


def test_init_runs_forward_on_meta_tensors_only():
    seen = []

    class Probe(nn.Module):
        def forward(self, scope, x):
            seen.append(x.device.type)
            return scope.child("lin", nn.Linear(2))(x)

    params, _ = Probe().init(KEY, torch.randn(3, 4))
    assert seen == ["meta"]
    assert params["lin"]["weight"].device.type == "cpu"
    p_shapes, _ = Probe().init_shapes(torch.randn(3, 4))
    assert p_shapes["lin"]["weight"].device.type == "meta"


def test_init_is_deterministic_and_each_parameter_gets_its_own_key():
    model = MLP((4, 4))
    x = torch.randn(2, 4)
    a, _ = model.init(KEY, x)
    b, _ = model.init(KEY, x)
    c, _ = model.init(fnn.random.key(1), x)
    assert_trees_all_equal(a, b)
    assert not torch.equal(a["layers"]["0"]["weight"], c["layers"]["0"]["weight"])
    assert not torch.equal(a["layers"]["0"]["weight"], a["layers"]["1"]["weight"])


def test_apply_is_pure_and_returns_state_only_when_given():
    model = nn.Sequential([nn.Linear(3), Counter()])
    x = torch.randn(4, 2)
    params, state = model.init(KEY, x)
    assert sorted(state["1"]) == ["count", "total"]
    before = fnn.tree.map(torch.clone, (params, state))
    _y, new_state = model.apply(params, x, state=state, train=True)
    assert_trees_all_equal((params, state), before)  # nothing mutated
    assert int(new_state["1"]["count"]) == 1
    _y2, newer = model.apply(params, x, state=new_state, train=True)
    assert int(newer["1"]["count"]) == 2
    assert_trees_all_close(newer["1"]["total"], 2 * new_state["1"]["total"])
    _, same = model.apply(params, x, state=state, train=False)
    assert_trees_all_equal(same, state)
    with pytest.raises(ValueError, match=r"Counter at '1' keeps state \('count'\); pass state="):
        model.apply(params, x)


def test_missing_params_and_wrong_types_give_clear_errors():
    model = MLP((4, 2))
    params, _ = model.init(KEY, torch.randn(2, 3))
    del params["layers"]["1"]["bias"]
    with pytest.raises(KeyError, match=r"missing parameter 'layers.1.bias' of shape \(2,\)"):
        model.apply(params, torch.randn(2, 3))
    with pytest.raises(TypeError, match="expected params to be the dict returned by init"):
        model.apply([1], torch.randn(2, 3))
    with pytest.raises(TypeError, match="expected a single PRNG key"):
        model.init(0, torch.randn(2, 3))


def test_keys_differ_per_module_path_and_are_ignored_without_key():
    model = nn.Sequential([Noisy(), Noisy()])
    x = torch.zeros(1000)
    params, _ = model.init(KEY, x)
    assert torch.equal(model.apply(params, x), x)
    a = model.apply(params, x, key=fnn.random.key(1))
    b = model.apply(params, x, key=fnn.random.key(1))
    assert torch.equal(a, b)
    noise0 = nn.Sequential([Noisy()]).apply({}, x, key=fnn.random.key(1))
    assert not torch.allclose(a - noise0, torch.zeros(1000))  # layer '1' drew other numbers


def test_ensembles_and_per_example_use_are_plain_vmap():
    model = MLP((8, 1))
    x = torch.randn(6, 3)
    keys = fnn.random.split(KEY, 4)
    stacked = fnn.vmap(lambda k: model.init(k, x)[0])(keys)
    assert stacked["layers"]["0"]["weight"].shape == (4, 8, 3)
    ys = fnn.vmap(lambda p: model.apply(p, x))(stacked)
    for i in range(4):
        one = fnn.tree.map(lambda t, i=i: t[i], stacked)
        assert_trees_all_close(ys[i], model.apply(one, x))
        assert_trees_all_close(one, model.init(keys[i], x)[0])

    params = fnn.tree.map(lambda t: t[0], stacked)

    def loss(p, xi):
        return model.apply(p, xi[None]).sum()

    per_example = fnn.vmap(fnn.grad(loss), in_axes=(None, 0))(params, x)
    for i in range(6):
        assert_trees_all_close(
            fnn.tree.map(lambda t, i=i: t[i], per_example),
            fnn.grad(loss)(params, x[i]),
            rtol=1e-5,
            atol=1e-6,
        )


def test_shared_module_reuses_its_parameters():
    class Twice(nn.Module):
        def __post_init__(self):
            self.lin = nn.Linear(3)

        def forward(self, scope, x):
            return scope.lin(scope.lin(x))

    params, _ = Twice().init(KEY, torch.randn(2, 3))
    assert list(params) == ["lin"]
    x = torch.randn(2, 3)
    w, b = params["lin"]["weight"], params["lin"]["bias"]
    assert_trees_all_close(Twice().apply(params, x), (x @ w.T + b) @ w.T + b)
    with pytest.raises(ValueError, match=r"declared with shape \(3, 3\) and again with \(3, 4\)"):

        class Bad(nn.Module):
            def __post_init__(self):
                self.lin = nn.Linear(3)

            def forward(self, scope, x):
                return scope.lin(torch.cat([scope.lin(x), x[:, :1]], 1))

        Bad().init(KEY, torch.randn(2, 3))


def test_child_names_may_not_shadow_the_scope_api():
    class Bad(nn.Module):
        def __post_init__(self):
            self.key = nn.Linear(2)

    with pytest.raises(TypeError, match="cannot be named 'key'"):
        Bad()


def test_errors_inside_a_child_say_which_module_raised():
    class Boom(nn.Module):
        def forward(self, scope, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as info:
        nn.Sequential([nn.Identity(), Boom()]).apply({}, torch.zeros(1))
    assert "(raised in fnn.nn.Boom at '1')" in info.value.__notes__


def test_apply_works_under_jit_and_compiles_once():
    model = nn.Sequential([nn.Linear(4), Counter()])
    x = torch.randn(3, 2)
    params, state = model.init(KEY, x)
    step = fnn.jit(lambda p, s, x: model.apply(p, x, state=s, train=True))
    y, s1 = step(params, state, x)
    y, s2 = step(params, s1, x)
    assert step.num_compiles == 1
    ey, es1 = model.apply(params, x, state=state, train=True)
    ey, es2 = model.apply(params, x, state=es1, train=True)
    assert_trees_all_close((y, s2), (ey, es2))


def test_summary_lists_every_submodule_with_totals():
    model = nn.Sequential([MLP((8, 4)), nn.Linear(2)])
    text = nn.summary(model, torch.zeros(5, 3))
    lines = text.splitlines()
    assert lines[0].split() == ["path", "module", "output", "shape", "params", "bytes"]
    paths = [line.split()[0] for line in lines[3:-2]]
    assert paths == ["0", "0.layers.0", "0.layers.1", "1"]
    assert "(5, 2)" in lines[2] and "(5, 8)" in lines[4]
    total = 3 * 8 + 8 + 8 * 4 + 4 + 4 * 2 + 2
    assert lines[-1].startswith(f"params: {total} ")
    assert len(nn.summary(model, torch.zeros(5, 3), depth=1).splitlines()) == len(lines) - 2


def test_every_public_layer_documents_shapes_and_has_an_example():
    missing = []
    for name in nn.__all__:
        obj = getattr(nn, name)
        if name in ("Module", "Scope", "initializers", "TorchModule") or not callable(obj):
            continue
        doc = obj.__doc__ or ""
        if isinstance(obj, type) and issubclass(obj, nn.Module) and "Shape" not in doc:
            missing.append(f"{name}: no shapes")
        if ">>>" not in doc:
            missing.append(f"{name}: no example")
    assert not missing, missing
