"""fnn.jit's fast path: after dynamo has accepted an entry once, calls skip dynamo's lookup.

The fast path may run only where dynamo would have run the same compiled code. Each test changes
one thing dynamo guards (a tensor's shape, dtype, strides, ``requires_grad``, identity; grad mode;
the compiler stance; an active mode; dynamo's cache) and checks that the call still gives the
eager function's result, and whether it compiled again. The tests use dynamo's ``"eager"``
backend: the fast path runs dynamo's transformed code whatever the backend, and the backend
compiles in milliseconds, so hypothesis can try many call sequences.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn._src.jit_fast import MAX_FAST_PATHS
from fnn.testing import assert_trees_all_close

EAGER = {"backend": "eager"}


def affine(params: dict, x: torch.Tensor) -> dict:
    return {"y": x @ params["w"] + params["b"], "n": (x * x).sum()}


def fresh(n_in: int = 3, n_out: int = 2, dtype: torch.dtype = torch.float32) -> dict:
    g = torch.Generator().manual_seed(n_in * 10 + n_out)
    return {
        "w": torch.randn(n_in, n_out, generator=g, dtype=dtype),
        "b": torch.randn(n_out, generator=g, dtype=dtype),
    }


def fast_paths(jitted: fnn.jit) -> int:
    """How many fast paths the jitted function holds over all its cache entries."""
    return sum(len(entry.fast) for entry in jitted._cache.values())


def hits(jitted, monkeypatch) -> list:
    """Record each fast-path run of ``jitted``: a list that grows by one per run."""
    calls: list = []
    for entry in jitted._cache.values():
        for fast in entry.fast:
            run = fast.run

            def counted(*a, _run=run):
                calls.append(len(a))
                return _run(*a)

            monkeypatch.setattr(fast, "run", counted)
    return calls


def test_the_second_call_builds_a_fast_path_that_later_calls_take(monkeypatch):
    f = fnn.jit(affine, **EAGER)
    params, x = fresh(), torch.randn(4, 3)
    f(params, x)
    assert fast_paths(f) == 0  # the first call compiles through dynamo
    assert_trees_all_close(f(params, x), affine(params, x))
    assert fast_paths(f) == 1
    taken = hits(f, monkeypatch)
    for _ in range(3):
        x = torch.randn(4, 3)
        assert_trees_all_close(f(params, x), affine(params, x))
    assert len(taken) == 3
    assert f.num_compiles == 1


def test_donation_on_the_fast_path_writes_into_the_inputs():
    @fnn.jit(donate_argnums=0, **EAGER)
    def step(params, lr):
        return {k: p - lr * 2 * p for k, p in params.items()}

    params = fresh()
    lr = torch.tensor(0.25)
    for _ in range(4):
        before = {k: v.clone() for k, v in params.items()}
        out = step(params, lr)
        assert all(out[k] is params[k] for k in params)
        assert_trees_all_close(out, {k: v * 0.5 for k, v in before.items()})
    assert fast_paths(step) == 1
    # A donated tensor also passed elsewhere is still refused on the fast path's entry.
    with pytest.raises(ValueError, match="both as donated"):
        step(params, params["b"])


def _variants() -> dict:
    """Calls that differ from ``fresh()``/``(4, 3)`` in one thing dynamo guards."""
    params = fresh()
    return {
        "shape": (params, torch.randn(5, 3)),
        "dtype": (fresh(dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)),
        "strides": (params, torch.randn(3, 4).t()),
        "requires_grad": ({"w": params["w"].requires_grad_(), "b": params["b"]}, torch.randn(4, 3)),
    }


def test_a_changed_tensor_goes_through_dynamo_and_gives_the_eager_result(monkeypatch):
    for what, (params, x) in _variants().items():
        f = fnn.jit(affine, **EAGER)
        base_params, base_x = fresh(), torch.randn(4, 3)
        f(base_params, base_x)
        f(base_params, base_x)
        assert fast_paths(f) == 1, what
        taken = hits(f, monkeypatch)
        got = f(params, x)
        assert not taken, f"{what}: the fast path ran for a call dynamo guards differently"
        with torch.no_grad():
            assert_trees_all_close(got, affine(params, x), rtol=1e-6, atol=1e-6)
        assert f.num_compiles == 2, what
        assert_trees_all_close(f(base_params, base_x), affine(base_params, base_x))
        assert len(taken) == 1, f"{what}: the first inputs should still take the fast path"


def test_one_tensor_passed_twice_is_never_taken_for_two_distinct_ones(monkeypatch):
    def add(a, b):
        return a + 2 * b

    f = fnn.jit(add, **EAGER)
    x, y = torch.randn(3), torch.randn(3)
    f(x, y)
    f(x, y)
    taken = hits(f, monkeypatch)
    assert_trees_all_close(f(x, x), x + 2 * x)
    assert not taken
    g = fnn.jit(add, **EAGER)  # compiled for one tensor twice: dynamo keeps guarding that
    g(x, x)
    g(x, x)
    assert_trees_all_close(g(x, y), x + 2 * y)


def test_grad_mode_inference_mode_and_threads_go_through_dynamo(monkeypatch):
    def scaled(x, w):
        return (x * w).sum()

    f = fnn.jit(scaled, **EAGER)
    x, w = torch.randn(3), torch.randn(3, requires_grad=True)
    f(x, w)
    f(x, w)
    taken = hits(f, monkeypatch)
    with torch.no_grad():
        assert not f(x, w).requires_grad
    with torch.inference_mode():
        assert not f(x, w).requires_grad
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        f(x, w)
    finally:
        torch.set_num_threads(threads)
    assert not taken
    out = f(x, w)
    assert out.requires_grad and len(taken) == 1
    (grad,) = torch.autograd.grad(out, w)
    assert_trees_all_close(grad, x)


def test_the_compiler_stance_and_active_modes_are_respected(monkeypatch):
    seen = {"compiling": None}

    def tagged(x):
        seen["compiling"] = torch.compiler.is_compiling()  # a side effect dynamo replays
        return x + 1

    f = fnn.jit(tagged, **EAGER)
    x = torch.randn(2)
    f(x)
    f(x)
    taken = hits(f, monkeypatch)
    seen["compiling"] = None
    f(x)
    assert seen["compiling"] is True and len(taken) == 1  # compiled code, side effect replayed
    with torch.compiler.set_stance("force_eager"):
        f(x)
    assert seen["compiling"] is False and len(taken) == 1  # ran as Python, as the stance says
    with torch.device("cpu"):  # a __torch_function__ mode dynamo guards
        assert_trees_all_close(f(x), x + 1)
    assert len(taken) == 1
    with torch.compiler.set_stance("fail_on_recompile"):
        f(x)
    assert len(taken) == 2


def test_after_dynamo_reset_the_function_compiles_again():
    f = fnn.jit(affine, **EAGER)
    params, x = fresh(), torch.randn(4, 3)
    for _ in range(3):
        f(params, x)
    assert f.num_compiles == 1 and fast_paths(f) == 1
    torch._dynamo.reset()
    assert_trees_all_close(f(params, x), affine(params, x))
    assert f.num_compiles == 2
    f(params, x)
    assert fast_paths(f) == 1  # the dead fast path was replaced


def test_python_values_read_from_outside_are_compiled_in_like_jax():
    scale = {"factor": 2.0}

    def scaled(x):
        return x * scale["factor"]

    f = fnn.jit(scaled, **EAGER)
    x = torch.ones(2)
    f(x)
    f(x)  # from here on the fast path runs the compiled code
    scale["factor"] = 3.0
    assert_trees_all_close(f(x), 2 * x)
    assert f.num_compiles == 1


def test_varying_shapes_build_a_bounded_number_of_fast_paths():
    f = fnn.jit(lambda x: x.sin() + 1, dynamic=True, **EAGER)
    for n in range(2, 3 * MAX_FAST_PATHS):  # 1 is specialised
        x = torch.randn(n)
        for _ in range(2):
            assert_trees_all_close(f(x), x.sin() + 1)
    assert fast_paths(f) <= MAX_FAST_PATHS
    assert f.num_compiles == 1


_shared = fnn.jit(affine, **EAGER)
_CHANGES = ["same", "shape", "dtype", "strides", "requires_grad", "no_grad"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(_CHANGES), min_size=1, max_size=8))
def test_any_sequence_of_calls_gives_the_eager_results(changes):
    """Whatever mix of calls follows the compile, each returns what the eager function does."""
    for change in changes:
        params, x = fresh(), torch.randn(4, 3)
        if change in _variants():
            params, x = _variants()[change]
        if change == "no_grad":
            with torch.no_grad():
                got = _shared(params, x)
        else:
            got = _shared(params, x)
        with torch.no_grad():
            assert_trees_all_close(got, affine(params, x), rtol=1e-6, atol=1e-6)
    assert fast_paths(_shared) <= MAX_FAST_PATHS


def test_a_model_train_step_takes_the_fast_path_and_matches_eager(monkeypatch):
    # A realistic step: an fnn.nn model with BatchNorm and dropout keys, an optimizer chain,
    # donation. Dynamo guards hundreds of Python objects here; the fast path must still be
    # built (dynamo's full check passes once) and then give the eager step's results.
    import fnn_optim as optim
    from fnn import nn

    model = nn.Sequential([nn.Linear(8), nn.BatchNorm1d(), nn.relu, nn.Dropout(0.1), nn.Linear(2)])
    x, y = torch.randn(6, 5), torch.randn(6, 2)
    params, state = model.init(fnn.random.key(0), x)
    # SGD, not Adam: the first bias feeds BatchNorm, so its true gradient is zero, and Adam
    # would turn the eager and compiled rounding noise (1e-7) into full-size, differing steps.
    schedule = optim.warmup_cosine(0.1, 2, 20)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(schedule, momentum=0.9))

    def step(params, opt_state, state, key, x, y):
        def loss(p, s):
            out, s = model.apply(p, x, state=s, key=key, train=True)
            return ((out - y) ** 2).mean(), s

        (value, state), grads = fnn.value_and_grad(loss, has_aux=True)(params, state)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, state, value

    jitted = fnn.jit(step, donate_argnums=(0, 1, 2), **EAGER)
    clone = lambda tree: fnn.tree.map(torch.clone, tree)  # noqa: E731
    ref = (clone(params), opt.init(params), clone(state))
    got = (clone(params), opt.init(params), clone(state))
    for i in range(4):
        key = fnn.random.key(i)
        *ref, ref_value = step(*ref, key, x, y)
        *got, got_value = jitted(*got, key, x, y)
        assert_trees_all_close((got, got_value), (ref, ref_value), rtol=1e-5, atol=1e-6)
        if i == 1:
            assert fast_paths(jitted) == 1
            taken = hits(jitted, monkeypatch)
    assert len(taken) == 2
    assert jitted.num_compiles == 1
