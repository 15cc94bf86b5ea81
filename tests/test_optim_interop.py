"""Training moves between torch.optim and fnn_optim mid-run: from_torch_state / to_torch_state.

One table drives the tests: every optimizer with a torch.optim twin, with its optional terms
switched on (weight decay, momentum, dampening, Nesterov, AMSGrad, centering, decoupled decay,
lr decay, averaging) and some variants. On a small torch.nn model (six tensors whose
`named_parameters()` order differs from the sorted order of their names), in float64:

1. torch trains 5 steps, its state_dict() becomes fnn_optim state (for an fnn optimizer built
   with *other* numeric hyperparameters: the conversion must carry torch's), and 5 fnn_optim steps
   equal 5 more torch steps;
2. fnn_optim trains 5 steps, to_torch_state is loaded into a torch optimizer built with torch's
   *default* hyperparameters, and 5 torch steps equal 5 more fnn_optim steps;
3. from_torch_state(to_torch_state(state)) == state exactly (float32 and float64), and the other
   way round torch's state_dict comes back unchanged;
4. mismatches raise errors naming the parameter, the entry or the option.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

STEPS = 5
RTOL, ATOL = 1e-9, 1e-12

# ---------------------------------------------------------------------------------------------
# The model: torch.nn for torch.optim, the same function of a nested dict for fnn_optim
# ---------------------------------------------------------------------------------------------


class Tiny(torch.nn.Module):
    """Registration order out, emb, hidden, scale: not the sorted order of the names."""

    def __init__(self) -> None:
        super().__init__()
        self.out = torch.nn.Linear(3, 2)
        self.emb = torch.nn.Parameter(torch.randn(5, 4))
        self.hidden = torch.nn.Linear(4, 3)
        self.scale = torch.nn.Parameter(torch.randn(()))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.emb[idx]))) * self.scale


IDX = torch.tensor([0, 3, 1, 4, 2, 3])


def _target(dtype: torch.dtype) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 12, dtype=dtype).reshape(6, 2)


def _model(dtype: torch.dtype) -> Tiny:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Tiny().to(dtype)


def _loss(model: torch.nn.Module, named: dict[str, torch.Tensor]) -> torch.Tensor:
    """A regression plus a wavy quadratic pulling every parameter towards 3.

    The minimum is far away, so no gradient nears zero (adaptive methods divide by it).
    """
    pred = torch.func.functional_call(model, named, (IDX,))
    wavy = sum((0.5 * (p - 3.0) ** 2 + 0.5 * torch.sin(3 * p)).sum() for p in named.values())
    return ((pred - _target(pred.dtype)) ** 2).mean() + wavy


def _nested(model: torch.nn.Module) -> dict[str, Any]:
    """The parameters as a nested dict in the module's order (as fnn.nn builds them)."""
    out: dict[str, Any] = {}
    for name, p in model.named_parameters():
        *path, leaf = name.split(".")
        node = out
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = p.detach().clone()
    return out


def _named(params: dict) -> dict[str, torch.Tensor]:
    return dict(fnn.tree.flatten_with_path(params)[0])


def torch_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int = STEPS) -> None:
    for _ in range(n):
        opt.zero_grad()
        _loss(model, dict(model.named_parameters())).backward()
        opt.step()


def fnn_steps(
    model: torch.nn.Module, opt: optim.GradientTransformation, params: dict, state: Any
) -> tuple[dict, Any]:
    for _ in range(STEPS):
        named = {k: v.detach().requires_grad_() for k, v in _named(params).items()}
        grads = torch.autograd.grad(_loss(model, named), list(named.values()))  # leaf order
        grads = fnn.tree.unflatten(fnn.tree.structure(params), list(grads))
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    # torch.optim keeps some scalars (step, ASGD's eta and mu, NAdam's mu_product) in it.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    torch_cls: type[torch.optim.Optimizer]
    hyperparams: dict[str, Any]  # torch's keyword arguments
    fnn: Callable[[dict[str, Any]], optim.GradientTransformation]  # from torch's arguments

    def __repr__(self) -> str:
        return self.name


def _adam_args(h: dict) -> dict:
    b1, b2 = h["betas"]
    return {"learning_rate": h["lr"], "b1": b1, "b2": b2, "eps": h["eps"]}


ADAM_H = {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}

ROWS = [
    Row(
        "sgd",
        torch.optim.SGD,
        {"lr": 0.05, "weight_decay": 0.1},
        lambda h: optim.sgd(h["lr"], weight_decay=h["weight_decay"]),
    ),
    Row(
        "sgd_momentum",
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.1},
        lambda h: optim.sgd(h["lr"], h["momentum"], h["dampening"], weight_decay=h["weight_decay"]),
    ),
    Row(
        "sgd_nesterov",
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
        lambda h: optim.sgd(h["lr"], h["momentum"], nesterov=True),
    ),
    Row(
        "adam",
        torch.optim.Adam,
        ADAM_H,
        lambda h: optim.adam(**_adam_args(h), weight_decay=h["weight_decay"]),
    ),
    Row(
        "amsgrad",
        torch.optim.Adam,
        {**ADAM_H, "amsgrad": True},
        lambda h: optim.amsgrad(**_adam_args(h), weight_decay=h["weight_decay"]),
    ),
    Row(
        "adamw_amsgrad",
        torch.optim.AdamW,
        {**ADAM_H, "amsgrad": True},
        lambda h: optim.adamw(**_adam_args(h), weight_decay=h["weight_decay"], amsgrad=True),
    ),
    Row(
        "adamw",
        torch.optim.AdamW,
        {"lr": 0.02, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05},
        lambda h: optim.adamw(**_adam_args(h), weight_decay=h["weight_decay"]),
    ),
    Row(
        "adamax",
        torch.optim.Adamax,
        ADAM_H,
        lambda h: optim.adamax(**_adam_args(h), weight_decay=h["weight_decay"]),
    ),
    Row(
        "nadam",
        torch.optim.NAdam,
        {**ADAM_H, "momentum_decay": 5e-3},
        lambda h: optim.nadam(
            **_adam_args(h), weight_decay=h["weight_decay"], momentum_decay=h["momentum_decay"]
        ),
    ),
    Row(
        "nadam_decoupled",
        torch.optim.NAdam,
        {**ADAM_H, "decoupled_weight_decay": True},
        lambda h: optim.nadam(
            **_adam_args(h), weight_decay=h["weight_decay"], decoupled_weight_decay=True
        ),
    ),
    Row(
        "radam",
        torch.optim.RAdam,
        {**ADAM_H, "betas": (0.8, 0.9)},  # b2 = 0.9 rectifies from step 6: both branches run
        lambda h: optim.radam(**_adam_args(h), weight_decay=h["weight_decay"]),
    ),
    Row(
        "radam_decoupled",
        torch.optim.RAdam,
        {**ADAM_H, "decoupled_weight_decay": True},
        lambda h: optim.radam(
            **_adam_args(h), weight_decay=h["weight_decay"], decoupled_weight_decay=True
        ),
    ),
    Row(
        "adagrad",
        torch.optim.Adagrad,
        {
            "lr": 0.05,
            "lr_decay": 0.01,
            "weight_decay": 0.1,
            "initial_accumulator_value": 0.1,
            "eps": 1e-10,
        },
        lambda h: optim.adagrad(
            h["lr"], h["lr_decay"], h["weight_decay"], h["initial_accumulator_value"], h["eps"]
        ),
    ),
    Row(
        "adadelta",
        torch.optim.Adadelta,
        {"lr": 0.9, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.1},
        lambda h: optim.adadelta(h["lr"], h["rho"], h["eps"], h["weight_decay"]),
    ),
    Row(
        "rmsprop",
        torch.optim.RMSprop,
        {"lr": 0.01, "alpha": 0.9, "eps": 1e-6},
        lambda h: optim.rmsprop(h["lr"], decay=h["alpha"], eps=h["eps"]),
    ),
    Row(
        "rmsprop_centered_momentum",
        torch.optim.RMSprop,
        {
            "lr": 0.01,
            "alpha": 0.9,
            "eps": 1e-6,
            "weight_decay": 0.1,
            "momentum": 0.5,
            "centered": True,
        },
        lambda h: optim.rmsprop(
            h["lr"], h["alpha"], h["eps"], h["weight_decay"], h["momentum"], h["centered"]
        ),
    ),
    Row(
        "rprop",
        torch.optim.Rprop,
        {"lr": 0.02, "etas": (0.4, 1.3), "step_sizes": (1e-4, 0.05)},
        lambda h: optim.rprop(h["lr"], h["etas"], h["step_sizes"]),
    ),
    Row(
        "asgd",
        torch.optim.ASGD,
        {"lr": 0.02, "lambd": 1e-3, "alpha": 0.6, "t0": 3.0, "weight_decay": 0.1},
        lambda h: optim.asgd(h["lr"], h["lambd"], h["alpha"], h["t0"], h["weight_decay"]),
    ),
]


def _other(h: dict[str, Any]) -> dict[str, Any]:
    """Other numeric hyperparameters, same structure: halve every nonzero float (and pair)."""
    out = {}
    for k, v in h.items():
        if k in ("betas", "step_sizes"):
            out[k] = (v[0] / 2, v[1] / 2)
        elif k == "etas":
            out[k] = (v[0] / 2, 1 + (v[1] - 1) / 2)
        elif isinstance(v, float) and v != 0:
            out[k] = v / 2
        else:
            out[k] = v
    return out


def _fnn_opt(row: Row, h: dict[str, Any] | None = None) -> optim.GradientTransformation:
    return row.fnn(row.hyperparams if h is None else h)


# ---------------------------------------------------------------------------------------------
# 1. torch -> fnn_optim
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_torch_state_continues_in_fnn_optim(row: Row) -> None:
    with _default_dtype(torch.float64):
        model = _model(torch.float64)
        torch_opt = row.torch_cls(model.parameters(), **row.hyperparams)
        torch_steps(model, torch_opt)
        params = _nested(model)
        opt = _fnn_opt(row, _other(row.hyperparams))  # torch's numbers must come with the state
        state = optim.from_torch_state(opt, torch_opt.state_dict(), params)
        torch_steps(model, torch_opt)  # torch steps in place: the fnn state must not share buffers
        got, state = fnn_steps(model, opt, params, state)
    assert_trees_all_close(got, _nested(model), rtol=RTOL, atol=ATOL)
    counts = [leaf for path, leaf in fnn.tree.flatten_with_path(state)[0] if path.endswith("count")]
    # torch.optim.SGD keeps no step count: 1 with momentum buffers, else 0 (then 5 fnn steps).
    torch_count = (
        int(bool(row.hyperparams.get("momentum"))) if row.name.startswith("sgd") else STEPS
    )
    want_count = torch_count + STEPS
    assert counts and all(int(c) == want_count for c in counts), counts


# ---------------------------------------------------------------------------------------------
# 2. fnn_optim -> torch
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_fnn_optim_state_continues_in_torch(row: Row) -> None:
    with _default_dtype(torch.float64):
        model = _model(torch.float64)
        params = _nested(model)
        opt = _fnn_opt(row)
        params, state = fnn_steps(model, opt, params, opt.init(params))
        torch_dict = optim.to_torch_state(opt, state, params)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(_named(params)[name])
        torch_opt = row.torch_cls(model.parameters())  # torch's defaults: the dict brings them
        torch_opt.load_state_dict(torch_dict)
        torch_steps(model, torch_opt)  # in place: fnn's state must not share torch's buffers
        got, _ = fnn_steps(model, opt, params, state)
    assert_trees_all_close(got, _nested(model), rtol=RTOL, atol=ATOL)
    group = torch_opt.param_groups[0]
    for key, value in row.hyperparams.items():
        assert group[key] == value, (key, group[key], value)


# ---------------------------------------------------------------------------------------------
# 3. Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_round_trip_is_exact(row: Row, dtype: torch.dtype) -> None:
    with _default_dtype(dtype):
        model = _model(dtype)
        params = _nested(model)
        opt = _fnn_opt(row)
        params, state = fnn_steps(model, opt, params, opt.init(params))
        # torch.optim.SGD keeps no step count: pass it
        count = int(state[-1].count) if row.torch_cls is torch.optim.SGD else None
        torch_dict = optim.to_torch_state(opt, state, params)
        back = optim.from_torch_state(opt, torch_dict, params, count=count)
        assert_trees_all_equal(back, state)
        # and torch -> fnn_optim -> torch gives torch's state_dict back
        torch_opt = row.torch_cls(model.parameters(), **row.hyperparams)
        torch_steps(model, torch_opt)
        saved = torch_opt.state_dict()
        params = _nested(model)
        again = optim.to_torch_state(opt, optim.from_torch_state(opt, saved, params), params)
    assert saved["state"].keys() == again["state"].keys()
    for i, entry in saved["state"].items():
        assert entry.keys() == again["state"][i].keys()
        for key, value in entry.items():
            torch.testing.assert_close(
                again["state"][i][key], value, rtol=0, atol=0, check_dtype=False
            )
    (g1,), (g2,) = saved["param_groups"], again["param_groups"]
    for key in row.hyperparams:
        if dtype == torch.float64:
            assert g2[key] == g1[key], key
        else:  # hyperparameters are float32 tensors in fnn_optim
            assert g2[key] == pytest.approx(g1[key], rel=1e-6), key


def test_fresh_torch_optimizer_converts_to_init_state() -> None:
    params = _nested(_model(torch.float32))
    for row in ROWS:
        named = _named(params)  # sorted order: not the insertion order, so names are needed
        torch_opt = row.torch_cls(list(named.values()), **row.hyperparams)
        state = optim.from_torch_state(_fnn_opt(row), torch_opt.state_dict(), params, list(named))
        assert_trees_all_close(state, _fnn_opt(row).init(params))


# ---------------------------------------------------------------------------------------------
# Names, schedules, step counts
# ---------------------------------------------------------------------------------------------


def test_names_come_from_param_names_or_the_names_argument() -> None:
    with _default_dtype(torch.float64):
        model = _model(torch.float64)
        torch_opt = torch.optim.Adam(model.named_parameters(), lr=0.01)  # stores param_names
        torch_steps(model, torch_opt)
        nested = _nested(model)
        # A dict built in sorted order: insertion order is not torch's, param_names is.
        params = {k: nested[k] for k in sorted(nested)}
        assert list(params) != list(nested)
        state = optim.from_torch_state(optim.adam(0.01), torch_opt.state_dict(), params)
        torch_names = [n for n, _ in model.named_parameters()]
        sd = torch_opt.state_dict()
        (group,) = sd["param_groups"]
        plain = {**sd, "param_groups": [{k: v for k, v in group.items() if k != "param_names"}]}
        with pytest.raises(ValueError, match="has shape"):  # sorted is not torch's order
            optim.from_torch_state(optim.adam(0.01), plain, params)
        by_names = optim.from_torch_state(optim.adam(0.01), plain, params, torch_names)
        assert_trees_all_equal(by_names, state)
        ref = optim.from_torch_state(optim.adam(0.01), plain, nested)  # insertion order
        assert_trees_all_equal(state[0].mu, ref[0].mu)
        # to_torch_state with names: torch's positions follow the names
        out = optim.to_torch_state(optim.adam(0.01), state, params, names=torch_names)
        for i, (_, p) in enumerate(model.named_parameters()):
            torch.testing.assert_close(out["state"][i]["exp_avg"], torch_opt.state[p]["exp_avg"])


def test_schedules_continue_from_torchs_step_count() -> None:
    with _default_dtype(torch.float64):
        for fnn_opt, cls, kw, count in [
            (optim.adam(optim.step_lr(0.0625, 3, 0.5)), torch.optim.Adam, {}, None),
            (
                optim.sgd(optim.step_lr(0.0625, 3, 0.5), momentum=0.9),
                torch.optim.SGD,
                {"momentum": 0.9},
                STEPS,
            ),
        ]:
            model = _model(torch.float64)
            torch_opt = cls(model.parameters(), lr=0.0625, **kw)
            scheduler = torch.optim.lr_scheduler.StepLR(torch_opt, step_size=3, gamma=0.5)
            for _ in range(STEPS):
                torch_steps(model, torch_opt, 1)
                scheduler.step()
            params = _nested(model)
            if count is not None:
                with pytest.raises(ValueError, match=r"keeps no step count.*pass count="):
                    optim.from_torch_state(fnn_opt, torch_opt.state_dict(), params)
            state = optim.from_torch_state(fnn_opt, torch_opt.state_dict(), params, count=count)
            for _ in range(STEPS):
                torch_steps(model, torch_opt, 1)
                scheduler.step()
            got, _ = fnn_steps(model, fnn_opt, params, state)
            assert_trees_all_close(got, _nested(model), rtol=RTOL, atol=ATOL)


def test_step_may_be_a_number_or_an_int_tensor() -> None:
    params = {"w": torch.zeros(2)}
    entry = {"exp_avg": torch.ones(2), "exp_avg_sq": torch.ones(2)}
    group = torch.optim.Adam([torch.zeros(1)]).state_dict()["param_groups"][0]
    for step in (3, 3.0, torch.tensor(3), torch.tensor(3.0, dtype=torch.float64)):
        sd = {"state": {0: {**entry, "step": step}}, "param_groups": [group]}
        state = optim.from_torch_state(optim.adam(), sd, params)
        assert state[0].count.dtype == torch.int64 and int(state[0].count) == 3


# ---------------------------------------------------------------------------------------------
# 4. Errors
# ---------------------------------------------------------------------------------------------


def _adam_dict(steps: int = 2) -> tuple[dict, dict, list[str]]:
    model = _model(torch.float32)
    torch_opt = torch.optim.Adam(model.parameters(), lr=0.01)
    torch_steps(model, torch_opt, steps)
    return torch_opt.state_dict(), _nested(model), [n for n, _ in model.named_parameters()]


def test_unknown_optimizers_are_refused_with_the_reason() -> None:
    sd, params, _ = _adam_dict()
    with pytest.raises(ValueError, match=r"chain of \(ScaleByLionState.*Supported.*fnn_optim"):
        optim.from_torch_state(optim.lion(1e-3), sd, params)
    with pytest.raises(ValueError, match="LBFGS runs several iterations"):
        optim.from_torch_state(optim.lbfgs(), sd, params)
    clipped = optim.chain(optim.clip_by_global_norm(1.0), optim.adam())
    with pytest.raises(ValueError, match="chains with extra transforms"):
        optim.to_torch_state(clipped, clipped.init(params), params)


def test_torch_state_mismatches_name_the_parameter_and_the_entry() -> None:
    sd, params, names = _adam_dict()
    opt = optim.adam(0.01)
    # an entry missing
    broken = {
        **sd,
        "state": {**sd["state"], 2: {k: v for k, v in sd["state"][2].items() if k != "exp_avg_sq"}},
    }
    with pytest.raises(
        ValueError, match=rf"parameter '{names[2]}' \(index 2\).*missing \['exp_avg_sq'\]"
    ):
        optim.from_torch_state(opt, broken, params)
    # a shape that is not the parameter's ('scale' is 0-d)
    broken = {**sd, "state": {**sd["state"], 1: {**sd["state"][1], "exp_avg": torch.zeros(7)}}}
    shape = rf"'exp_avg' of parameter '{names[1]}' has shape \(7,\); the parameter has shape \(\)"
    with pytest.raises(ValueError, match=shape):
        optim.from_torch_state(opt, broken, params, names=names)
    # amsgrad in torch, not in fnn_optim
    with pytest.raises(
        ValueError, match=r"amsgrad=True, but `opt` \(fnn_optim.adam\) was built with amsgrad=False"
    ):
        group = {**sd["param_groups"][0], "amsgrad": True}
        optim.from_torch_state(opt, {**sd, "param_groups": [group]}, params)
    # some parameters without state (their grad was None)
    partial = {**sd, "state": {k: v for k, v in sd["state"].items() if k != 3}}
    with pytest.raises(ValueError, match=rf"no state for parameter '{names[3]}'.*grad is None"):
        optim.from_torch_state(opt, partial, params)
    # step counts that differ
    uneven = {**sd, "state": {**sd["state"], 0: {**sd["state"][0], "step": torch.tensor(7.0)}}}
    with pytest.raises(ValueError, match=r"'step' differs between parameters"):
        optim.from_torch_state(opt, uneven, params)
    # two param groups
    two = {**sd, "param_groups": [sd["param_groups"][0], sd["param_groups"][0]]}
    with pytest.raises(ValueError, match="has 2 param groups; only one"):
        optim.from_torch_state(opt, two, params)
    # not a state dict
    with pytest.raises(TypeError, match=r"expected a torch optimizer's state_dict\(\)"):
        optim.from_torch_state(opt, {"exp_avg": 1}, params)
    # fewer parameters than torch's
    with pytest.raises(ValueError, match="has 6 parameters but params has 5"):
        optim.from_torch_state(opt, sd, {k: v for k, v in params.items() if k != "scale"})


def test_other_optimizer_or_options_are_refused() -> None:
    sd, params, _ = _adam_dict()
    # torch Adam's state given to fnn_optim.sgd: Adam's entries are foreign to SGD
    with pytest.raises(
        ValueError, match=r"fnn_optim.sgd.*\['amsgrad'.*looks like the state of torch.optim.Adam"
    ):
        optim.from_torch_state(optim.sgd(0.1), sd, params)
    # torch Adam's state given to fnn_optim.adamax: the entries differ
    with pytest.raises(ValueError, match=r"fnn_optim.adamax.*torch.optim.Adam\b"):
        optim.from_torch_state(optim.adamax(), sd, params)
    # weight decay in torch, none in fnn_optim
    group = {**sd["param_groups"][0], "weight_decay": 0.1}
    with pytest.raises(
        ValueError, match=r"weight_decay=0.1, but `opt` has no weight_decay term.*weight_decay=0.1"
    ):
        optim.from_torch_state(optim.adam(), {**sd, "param_groups": [group]}, params)
    # coupled decay in torch, decoupled in fnn_optim
    with pytest.raises(
        ValueError, match=r"decoupled_weight_decay=False.*fnn_optim.adamw decouples"
    ):
        optim.from_torch_state(optim.adamw(), {**sd, "param_groups": [group]}, params)
    # maximize
    group = {**sd["param_groups"][0], "maximize": True}
    with pytest.raises(ValueError, match=r"maximize=True.*Negate the loss"):
        optim.from_torch_state(optim.adam(), {**sd, "param_groups": [group]}, params)
    # eps_root has no torch counterpart
    with pytest.raises(ValueError, match=r"eps_root=0.01, which torch.optim.Adam does not have"):
        optim.from_torch_state(optim.adam(eps_root=0.01), sd, params)
    # nesterov is not visible in the state: the check finds it
    model = _model(torch.float32)
    torch_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    torch_steps(model, torch_opt, 2)
    with pytest.raises(ValueError, match="nesterov=True, but `opt` was built with nesterov=False"):
        optim.from_torch_state(optim.sgd(0.1, momentum=0.9), torch_opt.state_dict(), _nested(model))
    # momentum in fnn_optim, none in torch
    torch_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"momentum=0 .*built with a nonzero momentum"):
        optim.from_torch_state(optim.sgd(0.1, momentum=0.9), torch_opt.state_dict(), _nested(model))


def test_names_errors_and_to_torch_errors() -> None:
    sd, params, names = _adam_dict()
    opt = optim.adam(0.01)
    with pytest.raises(ValueError, match=r"unknown: \['nope'\]; missing: \['hidden.bias'\]"):
        optim.from_torch_state(opt, sd, params, names=[*names[:-1], "nope"])
    with pytest.raises(ValueError, match=r"repeated: \['emb'\]"):
        optim.to_torch_state(opt, opt.init(params), params, names=[*names, "emb"])
    # a state of another optimizer than opt
    with pytest.raises(ValueError, match=r"state is a chain of \(ScaleByAdamState.*opt.init makes"):
        optim.to_torch_state(optim.adamw(), opt.init(params), params)
    # params that are not those of the state
    with pytest.raises(
        ValueError, match=r"0.mu \(ScaleByAdamState\) does not have the structure of params"
    ):
        optim.to_torch_state(opt, opt.init(params), {**params, "extra": torch.zeros(2)})
    # RAdam's threshold is fixed in torch
    radam = optim.radam(threshold=4.0)
    with pytest.raises(ValueError, match=r"threshold=4, which torch.optim.RAdam does not have"):
        optim.to_torch_state(radam, radam.init(params), params)
    # a hand-made chain whose rule differs from the alias's is caught by the check
    odd = optim.chain(optim.scale_by_rms(0.9, eps=0.1), optim.scale_by_learning_rate(0.1))
    state = odd.init(params)
    with pytest.raises(ValueError, match=r"does not step like torch.optim.RMSprop"):
        optim.to_torch_state(odd, state, params)
    assert optim.to_torch_state(odd, state, params, check=False)["param_groups"][0][
        "eps"
    ] == pytest.approx(0.1)
