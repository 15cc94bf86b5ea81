"""Every optimizer's full training step compiles once with ``fnn.jit`` and matches eager.

The step (``value_and_grad`` of a tiny loss, ``opt.update``, ``apply_updates``, parameters and
state donated) runs 10 times while a schedule moves the learning rate and after
``set_hyperparams`` changes it between steps: one compilation, because the step count and every
hyperparameter are 0-d tensors in the state. Shapes are tiny (a 4x3 matrix and a (3,) bias):
compiling is what costs time here.
"""

from __future__ import annotations

import os

import pytest
import torch
from test_optim_torch import _FIXED_EXAMPLES, ROWS, Row

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close

STEPS = 10
# Inductor's C++ code generation costs seconds per optimizer, so most of the table runs on
# "aot_eager" (dynamo's tracing and guards, so the compile count is the real one, plus
# AOTAutograd's functionalisation). Inductor compiles the rows whose ops cover the rest
# (foreach lerp/maximum/sqrt/div, torch.where on 0-d tensors) and both scheduled-learning-rate
# tests. FNN_OPTIM_TEST_INDUCTOR=1 compiles every optimizer with inductor (about 2x slower).
BACKENDS = {"sgd_momentum": "inductor", "amsgrad": "inductor", "radam": "inductor"}
DEFAULT_BACKEND = "inductor" if os.environ.get("FNN_OPTIM_TEST_INDUCTOR") == "1" else "aot_eager"
_gen = torch.Generator().manual_seed(0)
X = torch.randn(5, 4, generator=_gen)
Y = torch.randn(5, 3, generator=_gen)
PARAMS = {"bias": torch.zeros(3), "weight": torch.randn(4, 3, generator=_gen)}


def loss_fn(params: dict) -> torch.Tensor:
    return ((torch.tanh(X @ params["weight"] + params["bias"]) - Y) ** 2).mean()


def linear(count: torch.Tensor) -> torch.Tensor:
    """A schedule: 1.0 at step 0, down by 0.05 per step (tensor ops only)."""
    return 1.0 - 0.05 * count


def _make_step(opt: optim.GradientTransformation):
    def step(params, state):
        loss, grads = fnn.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state, loss

    return step


def _run(step, opt: optim.GradientTransformation, change: dict) -> tuple:
    params = {k: v.clone() for k, v in PARAMS.items()}
    state = opt.init(params)
    losses = []
    for i in range(STEPS):
        if i == STEPS // 2:
            state = optim.set_hyperparams(state, **change)
        params, state, loss = step(params, state)
        losses.append(loss.detach().clone())
    return params, state, losses


def _check_compiles_once_and_matches_eager(
    opt: optim.GradientTransformation, change: dict, backend: str = "inductor"
) -> None:
    step = _make_step(opt)
    compiled = fnn.jit(step, donate_argnums=(0, 1), backend=backend)
    got = _run(compiled, opt, change)
    want = _run(step, opt, change)
    assert compiled.num_compiles == 1
    assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got[0]["weight"], PARAMS["weight"])


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_step_compiles_once_while_the_schedule_moves_and_after_set_hyperparams(row: Row):
    h = _FIXED_EXAMPLES[row.name]
    # The schedule multiplies the learning rate (a moving effective learning rate), and the
    # learning rate itself stays settable. Rprop's learning rate is only its initial step size.
    opt = optim.chain(row.fnn(h), optim.scale_by_schedule(linear))
    change = {"eta_plus": 1.3} if row.name == "rprop" else {"lr": h["lr"] / 2}
    _check_compiles_once_and_matches_eager(opt, change, BACKENDS.get(row.name, DEFAULT_BACKEND))


@pytest.mark.parametrize(
    ("make", "change"),
    [(optim.adam, {"b1": 0.5}), (optim.asgd, {"lambd": 1e-2})],
    ids=["adam", "asgd"],
)
def test_scheduled_learning_rate_compiles_once(make, change):
    # A schedule given as the learning rate itself (scale_by_learning_rate and ASGD's own).
    _check_compiles_once_and_matches_eager(make(lambda count: 0.05 * linear(count)), change)
