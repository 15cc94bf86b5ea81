"""fnn.jit's matmul pass: which float32 CPU products go to oneDNN (and on which CPUs), the bias
and small-product rewrites, and that results stay MKL's."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

import fnn
from fnn._src import onednn_matmul as om

needs_onednn = pytest.mark.skipif(om._OP is None, reason="this PyTorch has no oneDNN linear kernel")


@pytest.fixture
def onednn(monkeypatch):
    """oneDNN for large products on any CPU (by default only on AMD CPUs)."""
    monkeypatch.setenv("FNN_ONEDNN_MATMUL", "1")


aten = torch.ops.aten
PRODUCTS = (aten.mm.default, aten.addmm.default)


def _passed(fn, *args):
    """``fn`` traced to aten ops (fake tensors, as inductor's graphs carry), after the pass."""
    gm = make_fx(fn, tracing_mode="fake")(*args)
    om.linear_pass()(gm.graph)
    gm.recompile()
    return gm


def _targets(gm) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _linear(x, w, b):
    return torch.nn.functional.linear(x, w, b)


def _matmul(x, m2, b):  # ``m2`` is (K, N): oneDNN gets its transpose as the weight
    return x @ m2 if b is None else torch.addmm(b, x, m2)


@needs_onednn
@pytest.mark.usefixtures("onednn")  # the same setting for every example
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    m=st.integers(1, 40),
    k=st.integers(1, 40),
    n=st.integers(1, 40),
    with_bias=st.booleans(),
    weight_rows=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_row_major_products_move_to_onednn_and_equal_mkl(m, k, n, with_bias, weight_rows, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g) if weight_rows else torch.randn(k, n, generator=g)
    b = torch.randn(n, generator=g) if with_bias else None
    fn = _linear if weight_rows else _matmul
    old = om.MIN_MACS
    om.MIN_MACS = 0
    try:
        gm = _passed(fn, x, w, b)
    finally:
        om.MIN_MACS = old
    targets = _targets(gm)
    assert om._OP in targets and not set(PRODUCTS) & set(targets), targets
    torch.testing.assert_close(gm(x, w, b), fn(x, w, b), rtol=1e-5, atol=1e-5)


def _cases():
    x, w, b = torch.randn(48, 40), torch.randn(56, 40), torch.randn(56)
    h = torch.randn(48, 56)
    return {
        "transposed input (a weight gradient)": (lambda dz, h: dz.t() @ h, (x, h)),
        "float64": (_linear, (x.double(), w.double(), b.double())),
        "2-D bias": (lambda x, w, b: torch.addmm(b, x, w.t()), (x, w, b.expand(48, 56) + 0)),
        "beta and alpha": (lambda x, w, b: torch.addmm(b, x, w.t(), beta=0.5, alpha=2), (x, w, b)),
        "weight with gaps": (
            lambda x, w: x @ w[:, ::2],
            (torch.randn(48, 40), torch.randn(40, 112)),
        ),
        "batched input": (
            lambda x, w: torch.bmm(x, w),
            (torch.randn(2, 48, 40), torch.randn(2, 40, 8)),
        ),
    }


@needs_onednn
@pytest.mark.usefixtures("onednn")
@pytest.mark.parametrize("case", sorted(_cases()))
def test_products_onednn_should_not_take_stay_on_mkl(case):
    fn, args = _cases()[case]
    old = om.MIN_MACS
    om.MIN_MACS = 0
    try:
        gm = _passed(fn, *args)
    finally:
        om.MIN_MACS = old
    assert om._OP not in _targets(gm)
    torch.testing.assert_close(gm(*args), fn(*args))


@needs_onednn
def test_products_with_symbolic_sizes_stay_on_mkl(monkeypatch, onednn):
    monkeypatch.setattr(om, "MIN_MACS", 0)
    x, w, b = torch.randn(48, 40), torch.randn(56, 40), torch.randn(56)
    gm = make_fx(_linear, tracing_mode="symbolic")(x, w, b)
    om.linear_pass()(gm.graph)
    gm.recompile()
    assert om._OP not in _targets(gm)
    torch.testing.assert_close(gm(x, w, b), _linear(x, w, b))


@needs_onednn
def test_products_below_the_size_threshold_stay_on_mkl(onednn):
    x, w, b = torch.randn(64, 256), torch.randn(256, 256), torch.randn(256)  # 4.2M MACs
    assert 64 * 256 * 256 < om.MIN_MACS
    assert om._OP not in _targets(_passed(_linear, x, w, b))
    x = torch.randn(256, 512)  # 256 x 512 x 256 = 33.5M MACs
    assert 256 * 512 * 256 >= om.MIN_MACS
    assert om._OP in _targets(_passed(_linear, x, torch.randn(256, 512), b))


@needs_onednn
def test_jitted_training_step_runs_products_on_onednn_and_matches_eager(monkeypatch, onednn):
    monkeypatch.setattr(om, "MIN_MACS", 0)  # part of the pass's cache key: compiled afresh
    g = torch.Generator().manual_seed(0)
    params = {
        "w1": torch.randn(16, 12, generator=g) * 0.3,
        "b1": torch.randn(16, generator=g),
        "w2": torch.randn(3, 16, generator=g) * 0.3,
    }
    x, y = torch.randn(20, 12, generator=g), torch.randint(0, 3, (20,), generator=g)

    def loss(p, x, y):
        h = torch.relu(torch.nn.functional.linear(x, p["w1"], p["b1"]))
        return torch.nn.functional.cross_entropy(h @ p["w2"].t(), y)

    step = fnn.jit(fnn.value_and_grad(loss))
    with torch.profiler.profile() as prof:
        value, grads = step(params, x, y)
    names = {e.name for e in prof.events()}
    assert "fnn::onednn_linear" in names, sorted(n for n in names if "::" in n)
    want_value, want_grads = fnn.value_and_grad(loss)(params, x, y)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(grads, want_grads)


@pytest.mark.parametrize(
    "setting, vendor, want",
    [
        (None, "AuthenticAMD", True),
        (None, "GenuineIntel", False),
        (None, "", False),
        ("auto", "AuthenticAMD", True),
        ("auto", "GenuineIntel", False),
        ("1", "GenuineIntel", True),
        ("0", "AuthenticAMD", False),
    ],
)
def test_onednn_goes_with_the_cpu_vendor_unless_the_environment_says(
    monkeypatch, setting, vendor, want
):
    if setting is None:
        monkeypatch.delenv("FNN_ONEDNN_MATMUL", raising=False)
    else:
        monkeypatch.setenv("FNN_ONEDNN_MATMUL", setting)
    monkeypatch.setattr(om, "_cpu_vendor", lambda: vendor)
    assert om.onednn_products() is (want and om._OP is not None)
    made = om.linear_pass()
    assert made.onednn is om.onednn_products() and made is om.linear_pass()
    other = om._pass(not made.onednn)
    assert made.uuid() != other.uuid()  # compiled graphs are cached apart


def test_a_bad_environment_value_is_an_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv("FNN_ONEDNN_MATMUL", "yes")
    with pytest.raises(ValueError, match=r"FNN_ONEDNN_MATMUL must be auto .* got 'yes'"):
        om.linear_pass()


def test_the_vendor_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert om._read_vendor(str(info)) == "AuthenticAMD"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # an aarch64 kernel: no vendor_id
    assert om._read_vendor(str(info)) == ""
    assert om._read_vendor(str(tmp_path / "missing")) == ""
    assert om.cpu_vendor() == om._read_vendor("/proc/cpuinfo")


def test_the_small_product_rewrites_run_without_onednn(monkeypatch):
    monkeypatch.setenv("FNN_ONEDNN_MATMUL", "0")
    gm = _passed(lambda a, b: torch.relu(a @ b), torch.randn(8, 1), torch.randn(1, 5))
    assert not set(PRODUCTS) & set(_targets(gm))


@needs_onednn
@pytest.mark.parametrize("weight_rows", [True, False])
def test_weights_changed_in_place_between_calls_are_read_afresh(weight_rows):
    # A donated training step overwrites the weights in their storage every step: the kernel
    # must not reuse anything it derived from an earlier call's weight at the same address.
    g = torch.Generator().manual_seed(1)
    x, b = torch.randn(64, 96, generator=g), torch.randn(80, generator=g)
    stored = torch.randn(80, 96, generator=g) if weight_rows else torch.randn(96, 80, generator=g)
    for _ in range(3):
        w = stored if weight_rows else stored.t()
        torch.testing.assert_close(om._OP(x, w, b), torch.addmm(b, x, w.t()))
        stored.mul_(-1.5).add_(0.25)
        b.add_(1.0)


def _relu_linear(x, w, b):
    return torch.relu(torch.nn.functional.linear(x, w, b))


def _linear_and_sum(x, w, b):  # the product itself is an output: no kernel to add the bias in
    y = torch.nn.functional.linear(x, w, b)
    return y, torch.relu(y)


def _log_softmax_linear(x, w, b):  # as inductor's graphs have it: decomposed to reductions
    y = torch.nn.functional.linear(x, w, b)
    shifted = y - y.amax(dim=1, keepdim=True)
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(2, 30),
    k=st.integers(2, 30),
    n=st.integers(2, 30),
    log_softmax=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_small_addmm_whose_uses_are_pointwise_or_reductions_adds_its_bias_in_them(
    m, k, n, log_softmax, seed
):
    g = torch.Generator().manual_seed(seed)
    x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n)
    fn = _log_softmax_linear if log_softmax else _relu_linear
    gm = _passed(fn, x, w, b)  # far below MIN_MACS: stays on MKL
    targets = _targets(gm)
    assert aten.addmm.default not in targets and aten.mm.default in targets, targets
    assert aten.add.Tensor in targets and om._OP not in targets
    torch.testing.assert_close(gm(x, w, b), fn(x, w, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "fn, bias_shape",
    [(_linear_and_sum, (56,)), (lambda x, w, b: torch.relu(torch.addmm(b, x, w.t())), (48, 56))],
    ids=["product also returned", "2-D bias"],
)
def test_addmm_keeps_its_bias_unless_its_uses_can_add_it_and_the_bias_is_1d(fn, bias_shape):
    x, w, b = torch.randn(48, 40), torch.randn(56, 40), torch.randn(*bias_shape)
    gm = _passed(fn, x, w, b)
    assert aten.addmm.default in _targets(gm)
    torch.testing.assert_close(gm(x, w, b), fn(x, w, b))


def _operand(rows, cols, column_major, g):
    """A ``(rows, cols)`` float32 matrix, row-major or the transpose of a row-major one."""
    if column_major:
        return torch.randn(cols, rows, generator=g).t()
    return torch.randn(rows, cols, generator=g)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 40), st.just(1), st.integers(1, 40)),  # outer product
        st.tuples(st.just(1), st.integers(1, 64), st.integers(1, 64)),  # row vector @ matrix
        st.tuples(st.integers(1, 64), st.integers(1, 64), st.just(1)),  # matrix @ column
    ),
    a_columns=st.booleans(),
    b_columns=st.booleans(),
    bias=st.sampled_from([None, "1-D", "2-D"]),
    seed=st.integers(0, 2**16),
)
def test_products_with_a_dimension_of_1_become_fused_code(shape, a_columns, b_columns, bias, seed):
    m, k, n = shape
    g = torch.Generator().manual_seed(seed)
    a, b = _operand(m, k, a_columns, g), _operand(k, n, b_columns, g)
    c = None if bias is None else torch.randn(n if bias == "1-D" else (m, n), generator=g)

    def fn(a, b, c):
        y = a @ b if c is None else torch.addmm(c, a, b)
        return y, y.sum()  # the product itself is an output too: no consumer to fuse into

    gm = _passed(fn, a, b, c)
    assert not set(PRODUCTS) & set(_targets(gm)), _targets(gm)
    got, want = gm(a, b, c), fn(a, b, c)
    if k == 1 and c is None:  # one product per element: MKL's value to the bit
        assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "m, k, n",
    [(1, 256, 257), (257, 256, 1), (4, 3, 5), (1, 1, 1)],  # (1, 1, 1): an outer product
    ids=["row vector above the limit", "column above the limit", "no dimension of 1", "1x1x1"],
)
def test_which_products_stay_on_mkl(m, k, n):
    a, b = torch.randn(m, k), torch.randn(k, n)
    stays = m * k * n > om.MAX_GEMV_MACS or min(m, n, k) > 1
    assert stays == (aten.mm.default in _targets(_passed(torch.mm, a, b)))


def test_products_of_symbolic_size_with_a_dimension_of_1_stay_on_mkl():
    a, b = torch.randn(6, 1), torch.randn(1, 7)
    gm = make_fx(torch.mm, tracing_mode="symbolic")(a, b)
    om.linear_pass()(gm.graph)
    gm.recompile()
    assert aten.mm.default in _targets(gm)
    assert torch.equal(gm(a, b), a @ b)


def test_jitted_small_mlp_fuses_its_biases_and_one_unit_products_and_matches_eager():
    g = torch.Generator().manual_seed(2)
    params = {
        "w1": torch.randn(24, 10, generator=g) * 0.3,
        "b1": torch.randn(24, generator=g),
        "w2": torch.randn(1, 24, generator=g) * 0.3,
        "b2": torch.randn(1, generator=g),
    }
    x, y = torch.randn(16, 10, generator=g), torch.randn(16, 1, generator=g)

    def loss(p, x, y):
        h = torch.relu(torch.nn.functional.linear(x, p["w1"], p["b1"]))
        return ((torch.nn.functional.linear(h, p["w2"], p["b2"]) - y) ** 2).mean()

    step = fnn.jit(fnn.value_and_grad(loss))
    step(params, x, y)  # compile outside the profile
    with torch.profiler.profile(record_shapes=True) as prof:
        value, grads = step(params, x, y)
    names = {e.name for e in prof.events()}
    assert "aten::addmm" not in names, sorted(names)
    # Left on MKL: the first layer's product and its weight gradient. The one-unit layer's
    # forward (16x24 @ 24x1), weight gradient (1x16 @ 16x24) and input gradient (16x1 @ 1x24,
    # an outer product) are inductor code.
    products = sorted(
        tuple(map(tuple, e.input_shapes[:2])) for e in prof.events() if e.name == "aten::mm"
    )
    assert products == [((16, 10), (10, 24)), ((24, 16), (16, 10))], products
    want_value, want_grads = fnn.value_and_grad(loss)(params, x, y)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(grads, want_grads)
