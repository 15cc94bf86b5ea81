"""fnn_optim's optimizers step exactly like their torch.optim twins; the contract of the base.

One table drives the comparison: every optimizer torch.optim also has runs 50 steps on the same
random problem (a 0-d parameter, a vector and two matrices; a regression through tanh plus a wavy
quadratic) with hypothesis-chosen hyperparameters, in torch.optim (the single-tensor loop, torch's
default on CPU, and the foreach implementation, its default on GPUs) and in fnn_optim (eager).
The parameters must match at float32 tolerance in float32, and to 1e-9 in float64, where both
compute the same formulas up to rounding. Block options torch has no twin for are checked against
their update rules written out.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

STEPS = 50

# ---------------------------------------------------------------------------------------------
# The problem
# ---------------------------------------------------------------------------------------------


def _problem(dtype: torch.dtype) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)

    params = {"bias": rand(3), "emb": rand(2, 5), "scale": rand(), "weight": rand(4, 3) / 2}
    data = {"x": rand(8, 4), "y": rand(8, 3)}
    return params, data


def _loss(params: dict, data: dict) -> torch.Tensor:
    """A regression through tanh plus a wavy quadratic pulling every parameter towards 10.

    The minimum is far from the start, so no gradient comes near zero in 50 steps: adaptive
    methods divide by the gradient scale, and near zero they would amplify rounding differences.
    """
    pred = torch.tanh(data["x"] @ params["weight"] + params["bias"]) + params["scale"]
    wavy = sum((0.5 * (p - 10.0) ** 2 + 0.5 * torch.sin(3 * p)).sum() for p in params.values())
    return ((pred - data["y"]) ** 2).mean() + wavy


def _grads(params: dict, data: dict) -> dict:
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    grads = torch.autograd.grad(_loss(leaves, data), list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    # torch.optim keeps some scalars (ASGD's eta and mu, step counts) in the default dtype.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def run_torch(make: Callable[..., torch.optim.Optimizer], params: dict, data: dict, **kw) -> dict:
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    opt = make(list(leaves.values()), **kw)
    for _ in range(STEPS):
        opt.zero_grad()
        _loss(leaves, data).backward()
        opt.step()
    return {k: v.detach() for k, v in leaves.items()}


def run_fnn(opt: optim.GradientTransformation, params: dict, data: dict) -> tuple[dict, Any]:
    params = {k: v.clone() for k, v in params.items()}
    state = opt.init(params)
    for _ in range(STEPS):
        updates, state = opt.update(_grads(params, data), state, params)
        params = optim.apply_updates(params, updates)
    return params, state


# ---------------------------------------------------------------------------------------------
# The table: every optimizer torch.optim also has
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    hyperparams: st.SearchStrategy  # draws a dict of hyperparameters
    torch: Callable[[list, dict], Callable[..., torch.optim.Optimizer]]
    fnn: Callable[[dict], optim.GradientTransformation]

    def __repr__(self) -> str:
        return self.name


def _torch(cls, **fixed):
    return lambda h: lambda params, **kw: cls(params, **fixed, **h, **kw)


lr = st.floats(1e-3, 0.1)
b1 = st.floats(0.5, 0.95)
b2 = st.floats(0.9, 0.999)
eps = st.sampled_from([1e-8, 1e-6, 1e-3])
wd = st.sampled_from([0.0, 1e-2, 0.1])
betas = st.tuples(b1, b2)


def _adam_like(**extra):
    return st.fixed_dictionaries(
        {"lr": lr, "betas": betas, "eps": eps, "weight_decay": wd, **extra}
    )


def _adam_args(h: dict) -> dict:
    return {"learning_rate": h["lr"], "b1": h["betas"][0], "b2": h["betas"][1], "eps": h["eps"]}


ROWS = [
    Row(
        "sgd",
        st.fixed_dictionaries({"lr": lr, "weight_decay": wd}),
        _torch(torch.optim.SGD),
        lambda h: optim.sgd(h["lr"], weight_decay=h["weight_decay"]),
    ),
    Row(
        "sgd_momentum",
        st.fixed_dictionaries(
            {
                "lr": lr,
                "momentum": st.floats(0.1, 0.95),
                "dampening": st.floats(0.0, 0.5),
                "weight_decay": wd,
            }
        ),
        _torch(torch.optim.SGD),
        lambda h: optim.sgd(h["lr"], h["momentum"], h["dampening"], weight_decay=h["weight_decay"]),
    ),
    Row(
        "sgd_nesterov",
        st.fixed_dictionaries({"lr": lr, "momentum": st.floats(0.1, 0.95), "weight_decay": wd}),
        _torch(torch.optim.SGD, nesterov=True),
        lambda h: optim.sgd(h["lr"], h["momentum"], nesterov=True, weight_decay=h["weight_decay"]),
    ),
    Row(
        "adam",
        _adam_like(),
        _torch(torch.optim.Adam),
        lambda h: optim.adam(**_adam_args(h), weight_decay=h["weight_decay"]),
    ),
    Row(
        "adamw",
        _adam_like(weight_decay=st.floats(0.0, 0.2), amsgrad=st.booleans()),
        _torch(torch.optim.AdamW),
        lambda h: optim.adamw(
            **_adam_args(h), weight_decay=h["weight_decay"], amsgrad=h["amsgrad"]
        ),
    ),
    Row(
        "amsgrad",
        _adam_like(),
        _torch(torch.optim.Adam, amsgrad=True),
        lambda h: optim.amsgrad(**_adam_args(h), weight_decay=h["weight_decay"]),
    ),
    Row(
        "adamax",
        _adam_like(),
        _torch(torch.optim.Adamax),
        lambda h: optim.adamax(**_adam_args(h), weight_decay=h["weight_decay"]),
    ),
    Row(
        "nadam",
        _adam_like(momentum_decay=st.floats(1e-3, 1e-2), decoupled_weight_decay=st.booleans()),
        _torch(torch.optim.NAdam),
        lambda h: optim.nadam(
            **_adam_args(h),
            weight_decay=h["weight_decay"],
            momentum_decay=h["momentum_decay"],
            decoupled_weight_decay=h["decoupled_weight_decay"],
        ),
    ),
    Row(
        "radam",
        _adam_like(decoupled_weight_decay=st.booleans()),
        _torch(torch.optim.RAdam),
        lambda h: optim.radam(
            **_adam_args(h),
            weight_decay=h["weight_decay"],
            decoupled_weight_decay=h["decoupled_weight_decay"],
        ),
    ),
    Row(
        "adagrad",
        st.fixed_dictionaries(
            {
                "lr": lr,
                "lr_decay": st.sampled_from([0.0, 1e-2, 0.1]),
                "weight_decay": wd,
                "initial_accumulator_value": st.sampled_from([0.0, 0.1]),
                "eps": st.sampled_from([1e-10, 1e-6]),
            }
        ),
        _torch(torch.optim.Adagrad),
        lambda h: optim.adagrad(
            h["lr"], h["lr_decay"], h["weight_decay"], h["initial_accumulator_value"], h["eps"]
        ),
    ),
    Row(
        "adadelta",
        st.fixed_dictionaries(
            {
                "lr": st.floats(0.1, 1.0),
                "rho": st.floats(0.5, 0.95),
                "eps": st.sampled_from([1e-6, 1e-4]),
                "weight_decay": wd,
            }
        ),
        _torch(torch.optim.Adadelta),
        lambda h: optim.adadelta(h["lr"], h["rho"], h["eps"], h["weight_decay"]),
    ),
    Row(
        "rmsprop",
        st.fixed_dictionaries(
            {
                "lr": st.floats(1e-3, 1e-2),
                "alpha": st.floats(0.8, 0.99),
                "eps": eps,
                "weight_decay": wd,
                "momentum": st.sampled_from([0.0, 0.5, 0.9]),
                "centered": st.booleans(),
            }
        ),
        _torch(torch.optim.RMSprop),
        lambda h: optim.rmsprop(
            h["lr"],
            decay=h["alpha"],
            eps=h["eps"],
            weight_decay=h["weight_decay"],
            momentum=h["momentum"],
            centered=h["centered"],
        ),
    ),
    Row(
        "rprop",
        st.fixed_dictionaries(
            {
                "lr": st.floats(1e-3, 0.05),
                "etas": st.tuples(st.floats(0.3, 0.7), st.floats(1.1, 1.5)),
                "step_sizes": st.tuples(st.sampled_from([1e-6, 1e-4]), st.floats(0.5, 50.0)),
            }
        ),
        _torch(torch.optim.Rprop),
        lambda h: optim.rprop(h["lr"], h["etas"], h["step_sizes"]),
    ),
    Row(
        "asgd",
        st.fixed_dictionaries(
            {
                "lr": st.floats(1e-3, 0.05),
                "lambd": st.floats(1e-4, 1e-2),
                "alpha": st.floats(0.5, 1.0),
                "t0": st.sampled_from([5.0, 20.0, 1e6]),  # averaging starts after t0 steps
                "weight_decay": wd,
            }
        ),
        _torch(torch.optim.ASGD),
        lambda h: optim.asgd(h["lr"], h["lambd"], h["alpha"], h["t0"], h["weight_decay"]),
    ),
]

# torch.optim's default on CPU is the single-tensor loop (foreach=False); foreach=True is its
# default on GPUs.
TORCH_VARIANTS = {"for_loop": {"foreach": False}, "foreach": {"foreach": True}}
# (rtol, atol) per dtype: float32 differs from torch by rounding (torch computes its scalar
# factors in Python float64, fnn_optim in 0-d float32 tensors), float64 by rounding only.
TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-9, 1e-12)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_matches_torch_optim_for_50_steps(row: Row, dtype: torch.dtype, data) -> None:
    h = data.draw(row.hyperparams, label="hyperparams")
    params, batch = _problem(dtype)
    rtol, atol = TOLERANCES[dtype]
    with _default_dtype(dtype):
        got, state = run_fnn(row.fnn(h), params, batch)
        for variant, kw in TORCH_VARIANTS.items():
            want = run_torch(row.torch(h), params, batch, **kw)
            try:
                assert_trees_all_close(got, want, rtol=rtol, atol=atol)
            except AssertionError as e:
                raise AssertionError(f"{row.name} vs torch.optim ({variant}), {h}:\n{e}") from None
    # The parameters moved, and every state leaf is a tensor (0-d for counts and hyperparams).
    assert not torch.allclose(got["weight"], params["weight"])
    assert all(isinstance(leaf, torch.Tensor) for leaf in fnn.tree.leaves(state))
    assert all(v.ndim == 0 and v.dtype == dtype for v in optim.get_hyperparams(state).values())


# ---------------------------------------------------------------------------------------------
# The contract: pure updates, tensor-only states, hyperparameters, applying updates, errors
# ---------------------------------------------------------------------------------------------


# One fixed hyperparameter draw per row (with every optional term switched on where possible).
_FIXED_EXAMPLES = {
    "sgd": {"lr": 0.05, "weight_decay": 0.1},
    "sgd_momentum": {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.1},
    "sgd_nesterov": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1},
    "adam": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1},
    "adamw": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1, "amsgrad": True},
    "amsgrad": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1},
    "adamax": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1},
    "nadam": {
        "lr": 0.01,
        "betas": (0.9, 0.99),
        "eps": 1e-8,
        "weight_decay": 0.1,
        "momentum_decay": 4e-3,
        "decoupled_weight_decay": True,
    },
    "radam": {
        "lr": 0.01,
        "betas": (0.9, 0.99),
        "eps": 1e-8,
        "weight_decay": 0.1,
        "decoupled_weight_decay": False,
    },
    "adagrad": {
        "lr": 0.05,
        "lr_decay": 0.01,
        "weight_decay": 0.1,
        "initial_accumulator_value": 0.1,
        "eps": 1e-10,
    },
    "adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.1},
    "rmsprop": {
        "lr": 0.01,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.1,
        "momentum": 0.9,
        "centered": True,
    },
    "rprop": {"lr": 0.01, "etas": (0.5, 1.2), "step_sizes": (1e-6, 50.0)},
    "asgd": {"lr": 0.01, "lambd": 1e-4, "alpha": 0.75, "t0": 1.0, "weight_decay": 0.1},
}


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_update_is_pure_and_state_leaves_are_tensors(row: Row) -> None:
    h = _FIXED_EXAMPLES[row.name]
    params, batch = _problem(torch.float32)
    opt = row.fnn(h)
    state = opt.init(params)
    _, state = opt.update(_grads(params, batch), state, params)
    grads = _grads(params, batch)
    before = fnn.tree.map(torch.clone, (grads, state, params))
    _, new_state = opt.update(grads, state, params)
    assert_trees_all_equal((grads, state, params), before)  # nothing written into the inputs
    fnn.testing.assert_trees_all_equal_structs(new_state, state)
    for path, leaf in fnn.tree.flatten_with_path(new_state)[0]:
        assert isinstance(leaf, torch.Tensor), f"state leaf {path!r} is {type(leaf).__name__}"
    assert [k for k in fnn.tree.paths(new_state) if k.endswith("count")]  # a step count exists
    for path, leaf in fnn.tree.flatten_with_path(new_state)[0]:
        if path.endswith("count"):
            assert leaf.dtype == torch.int64 and leaf.ndim == 0 and leaf.item() == 2, path


def test_fixed_examples_cover_the_table() -> None:
    assert set(_FIXED_EXAMPLES) == {r.name for r in ROWS}


def _w() -> dict:
    return {"b": torch.zeros(3), "w": torch.ones(4, 3)}


def test_get_hyperparams_names_are_plain_when_unique_and_paths_when_shared() -> None:
    opt = optim.chain(optim.scale_by_adam(b1=0.8), optim.scale_by_rms(eps=1e-3), optim.sgd(0.1))
    hp = optim.get_hyperparams(opt.init(_w()))
    assert sorted(hp) == ["0.eps", "1.eps", "b1", "b2", "decay", "eps_root", "learning_rate"]
    assert hp["b1"].item() == pytest.approx(0.8) and hp["1.eps"].item() == pytest.approx(1e-3)
    assert all(v.ndim == 0 and v.dtype == torch.float32 for v in hp.values())
    # named_chain: the paths use the names
    named = optim.named_chain(("adam", optim.scale_by_adam()), ("rms", optim.scale_by_rms()))
    assert {"adam.eps", "rms.eps"} <= set(optim.get_hyperparams(named.init(_w())))
    # float64 parameters give float64 hyperparameters
    state64 = optim.adam(0.1).init(fnn.tree.map(lambda t: t.double(), _w()))
    assert {v.dtype for v in optim.get_hyperparams(state64).values()} == {torch.float64}


def test_set_hyperparams_returns_a_new_state_and_changes_the_step() -> None:
    params, grads = _w(), {"b": torch.ones(3), "w": torch.ones(4, 3)}
    opt = optim.sgd(0.1, momentum=0.5)
    state = opt.init(params)
    new = optim.set_hyperparams(state, lr=0.01, momentum=torch.tensor(0.25))
    assert optim.get_hyperparams(state)["learning_rate"].item() == pytest.approx(0.1)  # pure
    hp = optim.get_hyperparams(new)
    assert hp["learning_rate"].item() == pytest.approx(0.01)
    assert hp["momentum"].item() == 0.25
    assert all(v.ndim == 0 and v.dtype == torch.float32 for v in hp.values())
    updates, _ = opt.update(grads, new, params)
    assert_trees_all_close(updates, fnn.tree.map(lambda g: -0.01 * g, grads))
    # the full dotted path works for any entry, and lr as its last part
    again = optim.set_hyperparams(state, **{"1.lr": 0.5})
    assert optim.get_hyperparams(again)["learning_rate"].item() == 0.5


def test_set_hyperparams_keys_shared_names_by_path() -> None:
    opt = optim.chain(optim.scale_by_adam(), optim.scale_by_rms())
    state = opt.init(_w())
    new = optim.set_hyperparams(state, **{"1.eps": 0.5})
    assert new[1].hyperparams["eps"].item() == 0.5
    assert new[0].hyperparams["eps"].item() == pytest.approx(1e-8)
    with pytest.raises(KeyError, match=r"'eps' is used by several.*\['0.eps', '1.eps'\]"):
        optim.set_hyperparams(state, eps=0.5)


def test_set_hyperparams_errors() -> None:
    state = optim.adam(0.1).init(_w())
    with pytest.raises(KeyError, match=r"no hyperparameter 'beta1'.*available: \['b1', 'b2'"):
        optim.set_hyperparams(state, beta1=0.5)
    with pytest.raises(ValueError, match="one element; got a tensor of shape"):
        optim.set_hyperparams(state, lr=torch.ones(2))
    with pytest.raises(TypeError, match="real number"):
        optim.set_hyperparams(state, lr="fast")
    scheduled = optim.adam(lambda count: 0.1 / (1 + count)).init(_w())
    with pytest.raises(ValueError, match="driven by a schedule"):
        optim.set_hyperparams(scheduled, lr=0.5)
    assert optim.set_hyperparams(scheduled, b1=0.5)[0].hyperparams["b1"].item() == 0.5


def test_a_scheduled_learning_rate_is_stored_as_used() -> None:
    params, grads = _w(), {"b": torch.ones(3), "w": torch.ones(4, 3)}
    opt = optim.sgd(lambda count: 0.5 - 0.1 * count)
    state = opt.init(params)
    assert optim.get_hyperparams(state)["learning_rate"].item() == 0.5
    for expected in (0.5, 0.4, 0.3):
        updates, state = opt.update(grads, state, params)
        assert updates["b"][0].item() == pytest.approx(-expected)
        assert optim.get_hyperparams(state)["learning_rate"].item() == pytest.approx(expected)


def test_apply_updates_is_pure_and_apply_updates_inplace_mutates() -> None:
    params = _w()
    updates = {"b": torch.ones(3), "w": -torch.ones(4, 3)}
    new = optim.apply_updates(params, updates)
    assert_trees_all_equal(params, _w())
    assert_trees_all_equal(new, {"b": torch.ones(3), "w": torch.zeros(4, 3)})
    leaves = [params["b"], params["w"]]
    out = optim.apply_updates_(params, updates)
    assert out is params and params["b"] is leaves[0] and params["w"] is leaves[1]
    assert_trees_all_equal(params, new)
    # in place on leaves that require grad (nn.Parameter), like optimizer.step()
    p = {"w": torch.nn.Parameter(torch.zeros(2))}
    optim.apply_updates_(p, {"w": torch.ones(2)})
    assert p["w"].requires_grad and p["w"].grad_fn is None
    assert_trees_all_equal(p["w"].detach(), torch.ones(2))
    # updates of another dtype are cast to the parameter's
    half = optim.apply_updates({"w": torch.zeros(2, dtype=torch.bfloat16)}, {"w": torch.ones(2)})
    assert half["w"].dtype == torch.bfloat16


def test_structure_mismatches_name_the_first_differing_path() -> None:
    params = {"enc": {"b": torch.zeros(3), "w": torch.zeros(2, 3)}}
    grads = {"enc": {"b": torch.zeros(3), "v": torch.zeros(2, 3)}}
    opt = optim.adam(0.1)
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"scale_by_adam.*differ at 'enc'.*keys \['b', 'v'\]"):
        opt.update(grads, state, params)
    with pytest.raises(ValueError, match=r"apply_updates: the updates.*differ at 'enc'"):
        optim.apply_updates(params, grads)
    with pytest.raises(ValueError, match=r"apply_updates_: the updates"):
        optim.apply_updates_(params, grads)
    with pytest.raises(ValueError, match=r"add_decayed_weights.*needs the current parameters"):
        optim.adamw(0.1).update(params, optim.adamw(0.1).init(params))
    with pytest.raises(ValueError, match=r"the mask must have the structure of the params"):
        wd = optim.add_decayed_weights(0.1, mask={"enc": {"b": False}})
        wd.update(params, wd.init(params), params)
    with pytest.raises(ValueError, match=r"chain: expected the state made by this chain"):
        opt.update(params, state[0], params)


def test_chain_passes_extra_arguments_and_drops_them_for_members_without_them() -> None:
    seen = []

    def update_with_value(updates, state, params=None, *, value=None):
        seen.append(value)
        return updates, state

    legacy = optim.GradientTransformation(lambda p: optim.EmptyState(), update_with_value)
    old_style = optim.GradientTransformation(
        lambda p: optim.EmptyState(), lambda updates, state, params=None: (updates, state)
    )
    opt = optim.chain(legacy, old_style, optim.sgd(0.1))
    opt.update(_w(), opt.init(_w()), _w(), value=torch.tensor(3.0), other=1)
    assert seen == [torch.tensor(3.0)]


# ---------------------------------------------------------------------------------------------
# Block options without a torch twin, against their update rules written out
# ---------------------------------------------------------------------------------------------


def _two_steps(opt: optim.GradientTransformation, g1: torch.Tensor, g2: torch.Tensor, p=None):
    params = {"w": torch.zeros_like(g1) if p is None else p}
    state = opt.init(params)
    _, state = opt.update({"w": g1}, state, params)
    return opt.update({"w": g2}, state, params)[0]["w"]


G1 = torch.tensor([0.5, -2.0, 0.0, 3.0], dtype=torch.float64)
G2 = torch.tensor([1.5, 1.0, -0.25, 3.0], dtype=torch.float64)


def test_optax_style_block_options_follow_their_update_rules() -> None:
    # scale_by_rms, eps inside the root (Optax's default), starting from initial_scale
    d, e, s0 = 0.9, 1e-3, 0.5
    nu = d * (d * s0 + (1 - d) * G1**2) + (1 - d) * G2**2
    got = _two_steps(optim.scale_by_rms(d, e, s0), G1, G2)
    assert_trees_all_close(got, G2 / torch.sqrt(nu + e), rtol=1e-12)
    # scale_by_stddev, eps inside the root
    mu = d * (1 - d) * G1 + (1 - d) * G2
    nu = d * (1 - d) * G1**2 + (1 - d) * G2**2
    got = _two_steps(optim.scale_by_stddev(d, e), G1, G2)
    assert_trees_all_close(got, G2 / torch.sqrt(nu - mu**2 + e), rtol=1e-12)
    # scale_by_rss, Optax's defaults: accumulator from 0.1, eps 1e-7 inside the root
    acc = 0.1 + G1**2 + G2**2
    assert_trees_all_close(_two_steps(optim.scale_by_rss(), G1, G2), G2 / torch.sqrt(acc + 1e-7))
    # scale_by_adam with eps_root
    b1, b2, eps, eps_root = 0.9, 0.99, 1e-8, 1e-2
    mu = b1 * (1 - b1) * G1 + (1 - b1) * G2
    nu = b2 * (1 - b2) * G1**2 + (1 - b2) * G2**2
    want = (mu / (1 - b1**2)) / (torch.sqrt(nu / (1 - b2**2) + eps_root) + eps)
    got = _two_steps(optim.scale_by_adam(b1, b2, eps, eps_root), G1, G2)
    assert_trees_all_close(got, want, rtol=1e-12)
    # trace with Nesterov and no dampening: Optax's trace
    buf = 0.9 * G1 + G2
    assert_trees_all_close(_two_steps(optim.trace(0.9, nesterov=True), G1, G2), G2 + 0.9 * buf)
    # scale and scale_by_schedule
    assert_trees_all_close(_two_steps(optim.scale(-2.0), G1, G2), -2.0 * G2)
    got = _two_steps(optim.scale_by_schedule(lambda c: 1.0 + c), G1, G2)
    assert_trees_all_close(got, 2.0 * G2)


def test_adamw_mask_decays_only_the_chosen_leaves() -> None:
    params = {"b": torch.full((3,), 2.0), "w": torch.full((2, 3), 2.0)}
    zeros = fnn.tree.map(torch.zeros_like, params)
    for mask in ({"b": False, "w": True}, lambda p: fnn.tree.map(lambda t: t.ndim > 1, p)):
        opt = optim.adamw(0.1, weight_decay=0.5, mask=mask)
        updates, _ = opt.update(zeros, opt.init(params), params)
        assert_trees_all_equal(updates, {"b": torch.zeros(3), "w": torch.full((2, 3), -0.1)})
