"""fnn_optim's streaming-store kernel for the functional SGD-with-momentum update.

The kernel (``fnn_optim._streaming``) must compute exactly what the op-by-op path computes
(``torch.add(grad, buf, alpha=momentum)`` and a product with ``-lr``), for any sizes, offsets,
thread counts and with Nesterov, so that results never depend on which path ran. It runs only
for states at least the size of the last-level cache or 32 MiB; the tests lower that limit.
"""

from __future__ import annotations

import platform

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn_optim as optim
from fnn_optim import _streaming
from fnn_optim._functional_steps import _sgd_leafwise

X86 = platform.machine().lower() in ("x86_64", "amd64")
CAPABILITY = torch.backends.cpu.get_cpu_capability()
FMA_CAPABLE = CAPABILITY in ("AVX512", "AVX2")
# Elsewhere there is no kernel to test; `test_the_kernel_is_built_where_...` checks that.
needs_kernel = pytest.mark.skipif(not (X86 and FMA_CAPABLE), reason="x86 AVX2/AVX-512 only")
# Both vector loops run where the CPU has AVX-512 (it has AVX2 too).
ISAS = [512, 256] if CAPABILITY == "AVX512" else [256]


@pytest.fixture
def always(monkeypatch):
    """The kernel for every size (the cache-size limit at 0); counts the calls that ran it."""
    monkeypatch.setattr(_streaming, "_cache_bytes", lambda: 0)
    ran = []
    real = _streaming.sgd_momentum

    def counted(*args, **kwargs):
        done = real(*args, **kwargs)
        ran.append(done)
        return done

    monkeypatch.setattr(_streaming, "sgd_momentum", counted)
    return ran


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """A kernel library built afresh into an empty cache directory (restored afterwards)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _streaming._library.cache_clear()
    yield tmp_path
    _streaming._library.cache_clear()


def _reference(g, b, m, nlr, nesterov):
    """The op-by-op path (``_sgd_leafwise``), the one the kernel must match bit for bit."""
    x = [torch.empty_like(t) for t in g]
    u = [torch.empty_like(t) for t in g]
    _sgd_leafwise(g, b, x, u, m, 0.0, torch.tensor(nlr), first=False, nesterov=nesterov)
    return x, u


def test_the_kernel_is_built_where_torch_runs_fused_multiply_adds():
    assert _streaming.available() == (X86 and FMA_CAPABLE)


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=6),
    offset=st.integers(0, 17),
    momentum=st.floats(0.0, 0.75, width=32),
    lr=st.floats(2**-16, 1.0, width=32),
    nesterov=st.booleans(),
    threads=st.integers(1, 3),
    isa=st.sampled_from(ISAS),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_the_op_by_op_path_bit_for_bit(
    sizes, offset, momentum, lr, nesterov, threads, isa, seed
):
    gen = torch.Generator().manual_seed(seed)

    def leaves():  # views at ``offset`` elements: unaligned starts take the plain-store loop
        return [torch.randn(n + offset, generator=gen)[offset:] for n in sizes]

    g, b, x, u = leaves(), leaves(), leaves(), leaves()
    before, picked = torch.get_num_threads(), _streaming._isa
    torch.set_num_threads(threads)
    _streaming._isa = lambda: isa  # the AVX2 loop too, where the CPU has AVX-512
    try:
        ran = _streaming.sgd_momentum(g, b, x, u, momentum, -lr, nesterov=nesterov, min_bytes=0)
    finally:
        torch.set_num_threads(before)
        _streaming._isa = picked
    assert ran
    want_x, want_u = _reference(g, b, momentum, -lr, nesterov)
    for got, want in zip(x + u, want_x + want_u, strict=True):
        assert torch.equal(got, want)


def test_below_the_size_limit_the_kernel_leaves_the_buffers_alone():
    g, b = [torch.ones(8)], [torch.ones(8)]
    x, u = [torch.zeros(8)], [torch.zeros(8)]
    assert not _streaming.sgd_momentum(g, b, x, u, 0.9, -0.1, nesterov=False, min_bytes=65)
    assert x[0].eq(0).all() and u[0].eq(0).all()


@pytest.mark.parametrize("cache_mib", [None, 8, 260])  # this machine's reading, small, a VM's
def test_the_default_limit_is_the_last_level_cache_size_or_32_mib(monkeypatch, cache_mib):
    if cache_mib is not None:
        monkeypatch.setattr(_streaming, "_cache_bytes", lambda: cache_mib << 20)
    cache = _streaming._cache_bytes()
    assert cache >= 1 << 20  # sysfs read (or the 32 MiB default), in bytes
    size = min(cache, 32 << 20)
    for n, runs in ((size // 8 - 16, False), (size // 8, X86 and FMA_CAPABLE)):
        # two new float32 buffers of n elements: just under, then exactly the limit
        g, x, u = [torch.ones(n)], [torch.zeros(n)], [torch.zeros(n)]
        assert _streaming.sgd_momentum(g, g, x, u, 0.5, -0.5, nesterov=False) == runs
        assert x[0][-1].item() == (1.5 if runs else 0.0)


SGDS = {
    "momentum": lambda: optim.sgd(0.05, momentum=0.9),
    "nesterov": lambda: optim.sgd(0.05, momentum=0.9, nesterov=True),
    "nesterov + decay": lambda: optim.sgd(0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
}


def _trajectory(make, steps=6):
    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(7, 33, generator=g), "b": torch.randn(33, generator=g)}
    opt = make()
    state = opt.init(params)
    for _ in range(steps):
        grads = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
        updates, state = opt.update(grads, state, params)
        optim.apply_updates_(params, updates)
    return params, state


@needs_kernel
@pytest.mark.parametrize("name", sorted(SGDS))
def test_sgd_gives_the_same_trajectory_with_and_without_the_kernel(name, always, monkeypatch):
    with_kernel = _trajectory(SGDS[name])
    assert always == [True] * 5  # every step after the first (which copies the gradient)
    monkeypatch.setenv("FNN_STREAMING_STORES", "0")
    always.clear()
    without = _trajectory(SGDS[name])
    assert not any(always)
    for a, b in zip(
        torch.utils._pytree.tree_leaves(with_kernel),
        torch.utils._pytree.tree_leaves(without),
        strict=True,
    ):
        assert torch.equal(a, b)


@needs_kernel
def test_sgd_with_the_kernel_matches_torch_optim(always):
    g = torch.Generator().manual_seed(1)
    init = [torch.randn(9, 20, generator=g), torch.randn(20, generator=g)]
    grads = [[torch.randn(t.shape, generator=g) for t in init] for _ in range(10)]
    ours = {"w": init[0].clone(), "b": init[1].clone()}
    theirs = [t.clone().requires_grad_() for t in init]
    opt = optim.sgd(0.1, momentum=0.9, nesterov=True)
    torch_opt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, nesterov=True, foreach=True)
    state = opt.init(ours)
    for step in grads:
        updates, state = opt.update({"w": step[0], "b": step[1]}, state, ours)
        optim.apply_updates_(ours, updates)
        for p, gi in zip(theirs, step, strict=True):
            p.grad = gi.clone()
        torch_opt.step()
    assert always == [True] * 9
    torch.testing.assert_close(ours["w"], theirs[0].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["b"], theirs[1].detach(), rtol=1e-5, atol=1e-6)


@needs_kernel
def test_a_held_state_keeps_its_values_when_the_kernel_writes_the_next(always):
    params = {"w": torch.randn(6, 6)}
    opt = optim.sgd(0.1, momentum=0.9)
    state = opt.init(params)
    held = []
    for k in range(5):
        grads = {"w": torch.full((6, 6), float(k + 1))}
        updates, state = opt.update(grads, state, params)
        held.append((state, updates, state[-2].trace["w"].clone(), updates["w"].clone()))
    assert always == [True] * 4
    for st_, up, trace, upd in held:
        assert torch.equal(st_[-2].trace["w"], trace)
        assert torch.equal(up["w"], upd)


def test_the_switch_turns_the_kernel_off_and_rejects_other_values(monkeypatch):
    monkeypatch.setenv("FNN_STREAMING_STORES", "0")
    assert not _streaming.available()
    x = [torch.zeros(4)]
    assert not _streaming.sgd_momentum(x, x, x, x, 0.9, -0.1, nesterov=False, min_bytes=0)
    monkeypatch.setenv("FNN_STREAMING_STORES", "yes")
    with pytest.raises(ValueError, match=r"FNN_STREAMING_STORES must be 0 .* got 'yes'"):
        _streaming.available()
    opt = optim.sgd(0.1, momentum=0.9)
    params = {"w": torch.zeros(3)}
    state = opt.init(params)
    _, state = opt.update({"w": torch.ones(3)}, state, params)
    with pytest.raises(ValueError, match="FNN_STREAMING_STORES"):
        opt.update({"w": torch.ones(3)}, state, params)


@needs_kernel
def test_the_kernel_is_compiled_into_the_user_cache_directory(fresh_library):
    assert _streaming.available()
    built = list((fresh_library / "fnn").glob("sgd_streaming_*.so"))
    assert len(built) == 1
    assert not [p for p in (fresh_library / "fnn").iterdir() if p.is_dir()]  # no leftovers


def test_without_a_compiler_sgd_takes_the_op_by_op_path(fresh_library, monkeypatch, always):
    monkeypatch.setenv("FNN_STREAMING_STORES", "0")
    switched_off = _trajectory(SGDS["nesterov"])
    monkeypatch.delenv("FNN_STREAMING_STORES")
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(fresh_library))  # nothing to find there
    always.clear()
    assert not _streaming.available()
    fallback = _trajectory(SGDS["nesterov"])
    assert always == [False] * 5
    for a, b in zip(
        torch.utils._pytree.tree_leaves(fallback),
        torch.utils._pytree.tree_leaves(switched_off),
        strict=True,
    ):
        assert torch.equal(a, b)
