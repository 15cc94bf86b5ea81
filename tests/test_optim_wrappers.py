"""fnn_optim's wrappers against written-out references.

- ``masked`` / ``partition`` / ``freeze``: equal to running the inner transformations on the
  selected leaves separately (sub-dicts), masked-out leaves unchanged, states holding only their
  leaves;
- ``inject_hyperparams``: equal to the plain optimizer, and to Adam written out with the learning
  rate changed by ``set_hyperparams`` / ``b1`` driven by a schedule;
- ``MultiSteps``: k micro-steps equal one inner step on the mean gradient; no full-size state
  beyond the accumulator (bytes counted);
- ``apply_if_finite``: equal to the inner optimizer run on the finite steps only; counters;
- ``lookahead``: the paper's rule written out around plain SGD;
- ``flatten(adam)``: equal to ``adam``;
- compiled (``fnn.jit``, donated params and state) 6-step loops of ``MultiSteps``,
  ``apply_if_finite`` (with a NaN step) and ``inject_hyperparams`` (``set_hyperparams`` between
  steps) compile once and equal the eager loops.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

# ---------------------------------------------------------------------------------------------
# The problem: a few tensors of different shapes, a deterministic stream of gradients
# ---------------------------------------------------------------------------------------------


def _params(dtype: torch.dtype = torch.float64) -> dict:
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)

    return {
        "bias": rand(3),
        "encoder": {"layers": [{"weight": rand(2, 3)}, {"weight": rand(3, 2)}]},
        "scale": rand(),
        "weight": rand(4, 3),
    }


def _grads(step: int, like: Any) -> Any:
    g = torch.Generator().manual_seed(1000 + step)
    return fnn.tree.map(
        lambda p: torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype), like
    )


def _run(opt: optim.GradientTransformation, params: Any, steps: int, **extra: Any):
    """``steps`` eager steps on the gradient stream; returns the params and the state."""
    state = opt.init(params)
    for t in range(steps):
        updates, state = opt.update(_grads(t, params), state, params, **extra)
        params = optim.apply_updates(params, updates)
    return params, state


def _sub(tree: dict, keys: list[str]) -> dict:
    return {k: tree[k] for k in keys}


def _adam_written_out(
    params: dict, grads: list[dict], lrs: list[float], b1s: list[float], b2=0.999, eps=1e-8
) -> dict:
    """Kingma & Ba's Adam, one tensor at a time, with the lr and b1 of each step given."""
    m = fnn.tree.map(torch.zeros_like, params)
    v = fnn.tree.map(torch.zeros_like, params)
    for t, (g, lr, b1) in enumerate(zip(grads, lrs, b1s, strict=True), start=1):
        m = fnn.tree.map(lambda m, g, b1=b1: b1 * m + (1 - b1) * g, m, g)
        v = fnn.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        params = fnn.tree.map(
            lambda p, m, v, lr=lr, b1=b1, t=t: (
                p - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
            ),
            params,
            m,
            v,
        )
    return params


# ---------------------------------------------------------------------------------------------
# masked, set_to_zero, freeze
# ---------------------------------------------------------------------------------------------

_MASKS = {
    "tree": {
        "bias": False,
        "encoder": {"layers": [{"weight": True}, {"weight": True}]},
        "scale": False,
        "weight": True,
    },
    "prefix": {"bias": False, "encoder": True, "scale": False, "weight": True},
    "function": lambda tree: fnn.tree.map(lambda t: t.ndim > 1, tree),
}


@pytest.mark.parametrize("kind", list(_MASKS))
def test_masked_equals_inner_on_the_masked_in_leaves_and_leaves_the_rest_unchanged(kind):
    params = _params()
    opt = optim.masked(optim.adam(0.1), _MASKS[kind])
    state = opt.init(params)
    inside = ["encoder", "weight"]
    ref_opt = optim.adam(0.1)
    ref_state = ref_opt.init(_sub(params, inside))
    for t in range(5):
        grads = _grads(t, params)
        updates, state = opt.update(grads, state, params)
        ref_updates, ref_state = ref_opt.update(_sub(grads, inside), ref_state)
        assert_trees_all_close(_sub(updates, inside), ref_updates, rtol=1e-12)
        assert_trees_all_equal(_sub(updates, ["bias", "scale"]), _sub(grads, ["bias", "scale"]))
    # The inner state holds buffers for the masked-in leaves only (MaskedNode elsewhere).
    mu = state.inner_state[0].mu
    assert fnn.tree.paths(mu) == ["encoder.layers.0.weight", "encoder.layers.1.weight", "weight"]
    assert mu["bias"] == optim.MaskedNode()
    assert fnn.tree.bytes(state) == fnn.tree.bytes(ref_state)


def test_masked_errors_name_the_uncovered_path_and_refuse_tensor_masks():
    params = _params()
    with pytest.raises(ValueError, match=r"covers the parameter 'scale'"):
        optim.masked(optim.sgd(0.1), {"bias": True, "encoder": True, "weight": True}).init(params)
    with pytest.raises(TypeError, match="Python bools"):
        optim.masked(optim.sgd(0.1), fnn.tree.map(lambda p: torch.tensor(True), params)).init(
            params
        )


def test_set_to_zero_zeroes_nan_and_freeze_keeps_no_state():
    params = _params()
    grads = fnn.tree.map(lambda g: g.fill_(float("nan")), _grads(0, params))
    zero = optim.set_to_zero()
    updates, _ = zero.update(grads, zero.init(params))
    assert all(bool((u == 0).all()) for u in fnn.tree.leaves(updates))

    frozen = {"bias": True, "encoder": True, "scale": False, "weight": False}
    opt = optim.chain(optim.sgd(0.5), optim.freeze(frozen))
    new, state = _run(opt, params, 3)
    assert fnn.tree.leaves(state[1]) == []  # freeze keeps no state at all
    assert_trees_all_equal(_sub(new, ["bias", "encoder"]), _sub(params, ["bias", "encoder"]))
    ref, _ = _run(optim.sgd(0.5), params, 3)
    assert_trees_all_close(_sub(new, ["scale", "weight"]), _sub(ref, ["scale", "weight"]))


# ---------------------------------------------------------------------------------------------
# partition
# ---------------------------------------------------------------------------------------------

_LABELS = {
    "tree": {
        "bias": "sgd",
        "encoder": {"layers": [{"weight": "adam"}, {"weight": "adam"}]},
        "scale": "sgd",
        "weight": "adam",
    },
    "prefix": {"bias": "sgd", "encoder": "adam", "scale": "sgd", "weight": "adam"},
    "function": lambda path, leaf: "adam" if leaf.ndim > 1 else "sgd",
    "regex": [(r"^(bias|scale)$", "sgd"), (r"weight", "adam")],
}


@pytest.mark.parametrize("kind", list(_LABELS))
def test_partition_sgd_and_adam_equal_running_each_group_separately(kind):
    params = _params()
    opt = optim.partition(
        {"sgd": optim.sgd(0.1, momentum=0.9), "adam": optim.adam(0.01)}, _LABELS[kind]
    )
    new, state = _run(opt, params, 6)
    sgd_keys, adam_keys = ["bias", "scale"], ["encoder", "weight"]
    sgd_opt, adam_opt = optim.sgd(0.1, momentum=0.9), optim.adam(0.01)
    sgd_p, adam_p = _sub(params, sgd_keys), _sub(params, adam_keys)
    sgd_s, adam_s = sgd_opt.init(sgd_p), adam_opt.init(adam_p)
    for t in range(6):
        grads = _grads(t, params)
        u, sgd_s = sgd_opt.update(_sub(grads, sgd_keys), sgd_s, sgd_p)
        sgd_p = optim.apply_updates(sgd_p, u)
        u, adam_s = adam_opt.update(_sub(grads, adam_keys), adam_s, adam_p)
        adam_p = optim.apply_updates(adam_p, u)
    assert_trees_all_close(new, {**sgd_p, **adam_p}, rtol=1e-12)
    # Each label's state holds only its leaves.
    assert fnn.tree.paths(state.inner_states["sgd"][0].trace) == ["bias", "scale"]
    assert fnn.tree.bytes(state.inner_states["adam"]) == fnn.tree.bytes(adam_s)
    # A name used by both groups is keyed by its path; set_hyperparams reaches one group.
    hyper = optim.get_hyperparams(state)
    assert {"inner_states.adam.1.learning_rate", "inner_states.sgd.1.learning_rate"} <= set(hyper)
    state = optim.set_hyperparams(state, **{"inner_states.sgd.1.lr": 0.5})
    assert float(optim.get_hyperparams(state)["inner_states.sgd.1.learning_rate"]) == 0.5


def test_partition_regex_first_match_wins_and_an_unmatched_name_raises():
    params = _params()
    opt = optim.partition(
        {"a": optim.set_to_zero(), "b": optim.identity()},
        [(re.compile(r"^encoder\.layers\.0\."), "a"), (r"encoder", "b"), (r".*", "a")],
    )
    updates, _ = opt.update(_grads(0, params), opt.init(params))
    grads = _grads(0, params)
    assert_trees_all_equal(updates["encoder"]["layers"][1], grads["encoder"]["layers"][1])
    assert bool((updates["encoder"]["layers"][0]["weight"] == 0).all())
    assert bool((updates["weight"] == 0).all())
    partial = optim.partition({"b": optim.identity()}, [(r"weight", "b")])
    with pytest.raises(ValueError, match=r"no rule matches the parameter 'bias'"):
        partial.init(params)
    with pytest.raises(ValueError, match=r"'scale' has the label 'c'.*\['a', 'b'\]"):
        optim.partition(
            {"a": optim.identity(), "b": optim.identity()},
            lambda path, leaf: "c" if path == "scale" else "a",
        ).init(params)


# ---------------------------------------------------------------------------------------------
# inject_hyperparams
# ---------------------------------------------------------------------------------------------


def test_inject_hyperparams_equals_the_optimizer_and_lists_each_name_once():
    params = _params()
    opt = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1, momentum=0.9, nesterov=True)
    new, state = _run(opt, params, 5)
    ref, _ = _run(optim.sgd(0.1, momentum=0.9, nesterov=True), params, 5)
    assert_trees_all_close(new, ref, rtol=1e-12)
    # Each name once: the injected entries live in the wrapper's state only.
    assert sorted(optim.get_hyperparams(state)) == ["dampening", "learning_rate", "momentum"]
    assert sorted(state.hyperparams) == ["dampening", "learning_rate", "momentum"]
    # Defaults are injected too; weight_decay=0 builds no decay transform, so it stays static.
    adam_state = optim.inject_hyperparams(optim.adam)(1e-3).init(params)
    assert sorted(adam_state.hyperparams) == ["b1", "b2", "eps", "eps_root", "learning_rate"]


def test_inject_hyperparams_set_lr_equals_adam_written_out_with_that_lr():
    params = _params()
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=0.1)
    state = opt.init(params)
    p = params
    lrs = [0.1, 0.1, 0.1, 0.02, 0.02, 0.3]
    for t, lr in enumerate(lrs):
        state = optim.set_hyperparams(state, lr=lr)
        updates, state = opt.update(_grads(t, params), state, p)
        p = optim.apply_updates(p, updates)
    grads = [_grads(t, params) for t in range(len(lrs))]
    assert_trees_all_close(p, _adam_written_out(params, grads, lrs, [0.9] * 6), rtol=1e-10)


def test_inject_hyperparams_schedules_equal_adam_written_out_and_refuse_to_be_set():
    params = _params()

    def b1_schedule(count: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.1 * torch.minimum(count, torch.tensor(4)).to(torch.float64)

    def lr_schedule(count: torch.Tensor) -> torch.Tensor:
        return 0.1 * 0.5 ** count.to(torch.float64)

    opt = optim.inject_hyperparams(optim.adam)(learning_rate=lr_schedule, b1=b1_schedule)
    new, state = _run(opt, params, 6)
    grads = [_grads(t, params) for t in range(6)]
    lrs = [0.1 * 0.5**t for t in range(6)]
    b1s = [0.5 + 0.1 * min(t, 4) for t in range(6)]
    assert_trees_all_close(new, _adam_written_out(params, grads, lrs, b1s), rtol=1e-10)
    assert math.isclose(float(optim.get_hyperparams(state)["learning_rate"]), lrs[-1])
    with pytest.raises(ValueError, match="driven by a schedule"):
        optim.set_hyperparams(state, b1=0.9)
    state = optim.set_hyperparams(state, b2=0.99)  # not scheduled: settable
    assert float(state.hyperparams["b2"]) == 0.99


def test_inject_hyperparams_refuses_what_it_cannot_honour():
    params = _params()
    with pytest.raises(ValueError, match="keeps no hyperparameter named 'weight_decay'"):
        optim.inject_hyperparams(optim.adam)(weight_decay=lambda count: 0.0 * count).init(params)

    def transformed(momentum: float = 0.9) -> optim.GradientTransformation:
        return optim.trace(decay=1 - momentum)

    with pytest.raises(ValueError, match="the factory transforms it"):
        optim.inject_hyperparams(transformed)().init(params)
    state = optim.inject_hyperparams(transformed, static_args="momentum")().init(params)
    assert state.hyperparams == {}
    # A function for a non-numeric argument (adamw's mask) is not a schedule.
    mask = lambda p: fnn.tree.map(lambda t: t.ndim > 1, p)  # noqa: E731
    new, _ = _run(
        optim.inject_hyperparams(optim.adamw)(0.1, weight_decay=0.5, mask=mask), params, 3
    )
    ref, _ = _run(optim.adamw(0.1, weight_decay=0.5, mask=mask), params, 3)
    assert_trees_all_close(new, ref, rtol=1e-12)
    with pytest.raises(TypeError, match="static_args=\\('momentum',\\)"):
        optim.inject_hyperparams(optim.sgd)(0.1, momentum=lambda count: torch.ones(2))


# ---------------------------------------------------------------------------------------------
# MultiSteps
# ---------------------------------------------------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(k=st.integers(1, 4), use_grad_mean=st.booleans())
def test_multisteps_over_k_micro_batches_equals_one_step_on_the_mean_gradient(k, use_grad_mean):
    params = _params()
    opt = optim.MultiSteps(optim.adam(0.05), k, use_grad_mean=use_grad_mean)
    ref_opt = optim.adam(0.05)
    state, ref_state = opt.init(params), ref_opt.init(params)
    p, ref_p = params, params
    for step in range(3):
        micro = [_grads(step * k + i, params) for i in range(k)]
        for i, g in enumerate(micro):
            updates, state = opt.update(g, state, p)
            last = i == k - 1
            assert bool(opt.has_updated(state)) == last
            if not last:
                assert all(bool((u == 0).all()) for u in fnn.tree.leaves(updates))
            p = optim.apply_updates(p, updates)
        total = fnn.tree.add(*micro)
        combined = total if not use_grad_mean else fnn.tree.scale(total, 1.0 / k)
        ref_updates, ref_state = ref_opt.update(combined, ref_state, ref_p)
        ref_p = optim.apply_updates(ref_p, ref_updates)
        assert_trees_all_close(p, ref_p, rtol=1e-10, atol=1e-12)
    assert int(state.gradient_step) == 3 and int(state.mini_step) == 0


def test_multisteps_keeps_no_full_size_copy_beyond_the_accumulator():
    params = _params(torch.float32)
    inner = optim.adam(1e-3)
    state = optim.MultiSteps(inner, 4).init(params)
    counters = 2 * 8  # mini_step and gradient_step: int64 0-d
    assert fnn.tree.bytes(state) == (
        fnn.tree.bytes(inner.init(params)) + fnn.tree.bytes(params) + counters
    )
    n_leaves = len(fnn.tree.leaves(inner.init(params))) + len(fnn.tree.leaves(params)) + 2
    assert len(fnn.tree.leaves(state)) == n_leaves
    # Ditto after an update, and the accumulator is one leaf per parameter.
    _, state = optim.MultiSteps(inner, 4).update(_grads(0, params), state, params)
    assert fnn.tree.structure(state.acc_grads) == fnn.tree.structure(params)
    assert fnn.tree.bytes(state) == (
        fnn.tree.bytes(inner.init(params)) + fnn.tree.bytes(params) + counters
    )


def test_multisteps_k_schedule_and_chaining():
    params = _params()
    # k = 1 for the first inner update, then 2.
    opt = optim.chain(optim.MultiSteps(optim.sgd(1.0), lambda step: 1 + (step >= 1).long()))
    state = opt.init(params)
    emitted = []
    for t in range(5):
        _, state = opt.update(_grads(t, params), state, params)
        emitted.append(bool(optim.MultiSteps.has_updated(state[0])))
    assert emitted == [True, False, True, False, True]


# ---------------------------------------------------------------------------------------------
# apply_if_finite
# ---------------------------------------------------------------------------------------------


def _poison(grads: dict, value: float) -> dict:
    grads = fnn.tree.map(torch.clone, grads)
    grads["encoder"]["layers"][1]["weight"][0, 1] = value
    return grads


def test_apply_if_finite_skips_nonfinite_steps_and_counts_them():
    params = _params()
    opt = optim.apply_if_finite(optim.adam(0.1), max_consecutive_errors=5)
    state = opt.init(params)
    bad = {1: float("nan"), 3: float("inf"), 4: float("-inf")}
    p = params
    ref_opt = optim.adam(0.1)
    ref_p, ref_state = params, ref_opt.init(params)
    counts = []
    for t in range(7):
        grads = _grads(t, params)
        if t in bad:
            grads = _poison(grads, bad[t])
        updates, state = opt.update(grads, state, p)
        if t in bad:
            assert all(bool((u == 0).all()) for u in fnn.tree.leaves(updates))
        else:
            ref_updates, ref_state = ref_opt.update(grads, ref_state, ref_p)
            ref_p = optim.apply_updates(ref_p, ref_updates)
        p = optim.apply_updates(p, updates)
        counts.append((int(state.notfinite_count), bool(state.last_finite)))
    finite = [True, False, True, False, False, True, True]
    assert counts == list(zip([0, 1, 0, 1, 2, 0, 0], finite, strict=True))
    assert int(state.total_notfinite) == 3
    assert_trees_all_close(p, ref_p, rtol=1e-12)
    assert_trees_all_equal(state.inner_state, ref_state)


def test_apply_if_finite_applies_after_max_consecutive_errors():
    params = _params()
    opt = optim.apply_if_finite(optim.sgd(0.1), max_consecutive_errors=2)
    state = opt.init(params)
    nonzero = []
    for t in range(3):
        updates, state = opt.update(_poison(_grads(t, params), float("nan")), state, params)
        nonzero.append(not bool((updates["weight"] == 0).all()))
    assert nonzero == [False, False, True]  # the third error in a row exceeds the limit of 2


# ---------------------------------------------------------------------------------------------
# lookahead
# ---------------------------------------------------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(sync_period=st.integers(1, 4), alpha=st.floats(0.1, 1.0))
def test_lookahead_equals_the_papers_rule_written_out(sync_period, alpha):
    params, lr, steps = _params(), 0.1, 9
    opt = optim.lookahead(optim.sgd(lr), sync_period, alpha)
    state = opt.init(params)
    p = params
    # Zhang et al. (2019), Algorithm 1, with SGD as the inner optimizer A.
    fast, slow = params, params
    for t in range(1, steps + 1):
        grads = _grads(t, params)
        updates, state = opt.update(grads, state, p)
        p = optim.apply_updates(p, updates)
        fast = fnn.tree.map(lambda x, g: x - lr * g, fast, grads)
        if t % sync_period == 0:
            slow = fnn.tree.map(lambda s, f: s + alpha * (f - s), slow, fast)
            fast = slow
        assert_trees_all_close(p, fast, rtol=1e-12, atol=1e-14)
        assert_trees_all_close(state.slow, slow, rtol=1e-12, atol=1e-14)
    assert optim.get_hyperparams(state)["slow_step_size"].item() == pytest.approx(alpha)


# ---------------------------------------------------------------------------------------------
# flatten
# ---------------------------------------------------------------------------------------------


def test_flatten_adam_equals_adam_on_one_buffer():
    params = _params()
    new, state = _run(optim.flatten(optim.adamw(0.05, weight_decay=0.1)), params, 6)
    ref, _ = _run(optim.adamw(0.05, weight_decay=0.1), params, 6)
    assert_trees_all_close(new, ref, rtol=1e-12)
    assert [tuple(t.shape) for t in state[0].mu] == [(fnn.tree.size(params),)]
    # Mixed dtypes: one buffer per dtype, same result.
    mixed = {**params, "bias": params["bias"].float()}
    new, state = _run(optim.flatten(optim.adam(0.05)), mixed, 4)
    ref, _ = _run(optim.adam(0.05), mixed, 4)
    assert_trees_all_close(new, ref, rtol=1e-6)
    assert [t.dtype for t in state[0].mu] == [torch.float32, torch.float64]


# ---------------------------------------------------------------------------------------------
# Every wrapper: states of tensors only, extras passed through, structure errors
# ---------------------------------------------------------------------------------------------

_WRAPPERS: dict[str, Callable[[], optim.GradientTransformation]] = {
    "masked": lambda: optim.masked(optim.adam(0.1), _MASKS["prefix"]),
    "freeze": lambda: optim.freeze(_MASKS["prefix"]),
    "partition": lambda: optim.partition(
        {"sgd": optim.sgd(0.1), "adam": optim.adam(0.1)}, _LABELS["regex"]
    ),
    "inject_hyperparams": lambda: optim.inject_hyperparams(optim.rmsprop)(0.1, momentum=0.5),
    "MultiSteps": lambda: optim.MultiSteps(optim.adam(0.1), 2),
    "apply_if_finite": lambda: optim.apply_if_finite(optim.adam(0.1), 2),
    "lookahead": lambda: optim.lookahead(optim.adam(0.1), 2, 0.5),
    "flatten": lambda: optim.flatten(optim.adam(0.1)),
}


@pytest.mark.parametrize("name", list(_WRAPPERS))
def test_every_wrapper_keeps_tensor_leaves_and_passes_extras(name):
    params = _params(torch.float32)
    opt = _WRAPPERS[name]()
    assert isinstance(opt, optim.GradientTransformation)
    state = opt.init(params)
    assert all(isinstance(x, torch.Tensor) for x in fnn.tree.leaves(state))
    loss = torch.tensor(1.0)
    updates, new_state = opt.update(_grads(0, params), state, params, value=loss)
    assert fnn.tree.structure(updates) == fnn.tree.structure(params)
    assert fnn.tree.structure(new_state) == fnn.tree.structure(state)
    for h in optim.get_hyperparams(new_state).values():
        assert h.shape == () and h.dtype == torch.float32
    with pytest.raises(ValueError, match="structure"):
        opt.update({"bias": torch.zeros(3)}, new_state, params)


# ---------------------------------------------------------------------------------------------
# Compiled: one graph over 6 steps
# ---------------------------------------------------------------------------------------------

# As in test_optim_compile.py: "aot_eager" runs dynamo's tracing and guards (so the compile count
# is the real one) and AOTAutograd's functionalisation, without inductor's C++ code generation,
# which costs seconds per graph; FNN_OPTIM_TEST_INDUCTOR=1 compiles these loops with inductor.
BACKEND = "inductor" if os.environ.get("FNN_OPTIM_TEST_INDUCTOR") == "1" else "aot_eager"


def _compiled_and_eager(opt, between: Callable[[Any, int], Any] | None = None, poison=()):
    """The same 6-step loop compiled (donated params and state) and eager."""
    params = {"b": torch.linspace(-1, 1, 3), "w": torch.linspace(0, 1, 6).reshape(2, 3)}

    @fnn.jit(donate_argnums=(0, 1), backend=BACKEND)
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    results = []
    for compiled in (True, False):
        p = fnn.tree.map(torch.clone, params)
        state = opt.init(p)
        for t in range(6):
            grads = fnn.tree.map(lambda x, t=t: torch.cos(x * (t + 1)) + 0.1 * t, p)
            if t in poison:
                grads["w"][0, 0] = float("nan")
            if compiled:
                p, state = step(p, state, grads)
            else:
                updates, state = opt.update(grads, state, p)
                p = optim.apply_updates(p, updates)
            if between is not None:
                state = between(state, t)
        results.append((p, state))
    assert step.num_compiles == 1
    assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-6)
    return results[0][1]


def test_multisteps_compiles_once():
    state = _compiled_and_eager(optim.MultiSteps(optim.adam(0.1), 3))
    assert int(state.gradient_step) == 2


def test_apply_if_finite_compiles_once_and_skips_the_nan_step():
    state = _compiled_and_eager(optim.apply_if_finite(optim.adam(0.1), 3), poison=(2,))
    assert int(state.total_notfinite) == 1


def test_inject_hyperparams_compiles_once_with_set_hyperparams_between_steps():
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=0.1)
    state = _compiled_and_eager(opt, between=lambda s, t: optim.set_hyperparams(s, lr=0.01 * t))
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.05)
