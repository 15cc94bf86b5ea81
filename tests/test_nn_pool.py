"""Max, average and adaptive pooling (1-D to 3-D) equal their torch.nn twins."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn as tnn

import fnn
from fnn import nn
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

F64 = torch.float64
KEY = fnn.random.key(0)

NAMES = [
    f"{kind}{n}d"
    for kind in ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool")
    for n in (1, 2, 3)
]


def _value_and_grad_fnn(model, x, train):
    def loss(x):
        y = model.apply({}, x, train=train)
        return (y * y).sum(), y

    gx, y = fnn.grad(loss, has_aux=True)(x)
    return y, gx


def _value_and_grad_torch(twin, x, train):
    twin.train(train)
    x = x.clone().requires_grad_(True)
    y = twin(x)
    (y * y).sum().backward()
    return y.detach(), x.grad


def _check_against_twin(model, twin, x, train):
    """``model`` has no params or state and equals ``twin`` in value and input gradient."""
    try:
        with torch.no_grad():
            ty = twin(x)
    except RuntimeError:  # torch rejects this input size; so must fnn, naming the module
        with pytest.raises(RuntimeError, match="Pool"):
            model.init(KEY, x)
        with pytest.raises(RuntimeError, match="Pool"):
            model.apply({}, x)
        return
    if ty.isinf().any():  # a dilated max-pool window of only padding: fnn refuses (see below)
        with pytest.raises(ValueError, match="hold only padding"):
            model.init(KEY, x)
        return
    params, state = model.init(KEY, x)
    assert (params, state) == ({}, {})
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    before = x.clone()
    y, gx = _value_and_grad_fnn(model, x, train)
    ty, tgx = _value_and_grad_torch(twin, x, train)
    assert_trees_all_close(y, ty)
    assert_trees_all_close(gx, tgx)
    assert_trees_all_equal(x, before)  # apply never modifies its input


def _sizes(draw, n, lo, hi):
    return tuple(draw(st.integers(lo, hi)) for _ in range(n))


def _input(draw, n):
    batch = draw(st.sampled_from([(), (2,)]))  # () is an unbatched input
    spatial = _sizes(draw, n, 1, 7 if n < 3 else 5)
    return torch.randn(*batch, 2, *spatial, dtype=F64)


@pytest.mark.parametrize("n", [1, 2, 3])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_max_pool_matches_torch_in_value_and_grad(n, data):
    kernel = _sizes(data.draw, n, 1, 3)
    stride = data.draw(st.one_of(st.none(), st.integers(1, 3)))
    padding = tuple(data.draw(st.integers(0, k // 2)) for k in kernel)
    dilation = data.draw(st.integers(1, 2))
    ceil_mode = data.draw(st.booleans())
    x = _input(data.draw, n)
    args = (kernel, stride, padding, dilation)
    model = getattr(nn, f"MaxPool{n}d")(*args, ceil_mode=ceil_mode)
    twin = getattr(tnn, f"MaxPool{n}d")(*args, ceil_mode=ceil_mode)
    _check_against_twin(model, twin, x, data.draw(st.booleans()))


@pytest.mark.parametrize("n", [1, 2, 3])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_avg_pool_matches_torch_in_value_and_grad(n, data):
    kernel = _sizes(data.draw, n, 1, 3)
    stride = data.draw(st.one_of(st.none(), st.integers(1, 3)))
    padding = tuple(data.draw(st.integers(0, k // 2)) for k in kernel)
    options = {"ceil_mode": data.draw(st.booleans()), "count_include_pad": data.draw(st.booleans())}
    if n > 1:
        options["divisor_override"] = data.draw(st.sampled_from([None, 1, 3, -2]))
    x = _input(data.draw, n)
    model = getattr(nn, f"AvgPool{n}d")(kernel, stride, padding, **options)
    twin = getattr(tnn, f"AvgPool{n}d")(kernel, stride, padding, **options)
    _check_against_twin(model, twin, x, data.draw(st.booleans()))


@pytest.mark.parametrize("kind", ["AdaptiveAvgPool", "AdaptiveMaxPool"])
@pytest.mark.parametrize("n", [1, 2, 3])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_adaptive_pool_matches_torch_in_value_and_grad(kind, n, data):
    entry = st.integers(1, 5) if n == 1 else st.one_of(st.none(), st.integers(1, 5))
    output_size = data.draw(st.one_of(st.integers(1, 5), st.tuples(*[entry] * n)))
    x = _input(data.draw, n)
    model = getattr(nn, f"{kind}{n}d")(output_size)
    twin = getattr(tnn, f"{kind}{n}d")(output_size)
    _check_against_twin(model, twin, x, data.draw(st.booleans()))


@pytest.mark.parametrize("name", NAMES)
def test_every_pool_has_no_params_or_state_and_runs_unbatched(name):
    n = int(name[-2])
    model = getattr(nn, name)(2)
    x = torch.randn(3, 2, *[4] * n)
    assert model.init(KEY, x) == ({}, {})
    twin = getattr(tnn, name)(2)
    assert twin.state_dict() == {}
    assert_trees_all_close(model.apply({}, x), twin(x))
    assert_trees_all_close(model.apply({}, x[0]), twin(x[0]))


def test_stride_defaults_to_the_kernel_size_and_options_become_tuples():
    pool = nn.MaxPool2d(3)
    assert (pool.kernel_size, pool.stride, pool.padding, pool.dilation) == (
        (3, 3),
        (3, 3),
        (0, 0),
        (1, 1),
    )
    assert nn.AvgPool1d(2, stride=1).stride == (1,)
    assert nn.AdaptiveAvgPool2d((None, 3)).output_size == (None, 3)
    assert nn.AdaptiveMaxPool3d(2).output_size == (2, 2, 2)
    assert nn.MaxPool2d(2) == nn.MaxPool2d((2, 2), stride=2) and hash(nn.MaxPool2d(2))


def test_shape_errors_name_the_path_and_the_shape():
    model = nn.Sequential([nn.MaxPool2d(2), nn.AdaptiveAvgPool1d(3)])
    with pytest.raises(
        ValueError,
        match=r"MaxPool2d at '0': expected an input of shape \(N, C, H, W\) or unbatched "
        r"\(C, H, W\), i.e. 4-D or 3-D, got shape \(8,\)",
    ):
        model.apply({}, torch.zeros(8))
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool1d at '1'.*got shape \(1, 2, 3, 4\)"):
        model.apply({}, torch.zeros(1, 2, 6, 8))
    with pytest.raises(RuntimeError, match=r"MaxPool3d \(the root module\)"):  # too small
        nn.MaxPool3d(3).apply({}, torch.zeros(1, 1, 2, 2, 2))


def test_max_pool_refuses_windows_of_only_padding_where_torch_gives_minus_inf():
    # Dilation 2 with padding 1 over a size-1 dim: the window's taps are at -1 and 1, both
    # outside the input. torch returns -inf and its CPU backward then corrupts memory.
    x = torch.randn(1, 2, 1, 5)
    assert tnn.MaxPool2d((2, 1), stride=1, padding=(1, 0), dilation=2)(x).isinf().all()
    model = nn.Sequential([nn.MaxPool2d((2, 1), stride=1, padding=(1, 0), dilation=2)])
    with pytest.raises(
        ValueError,
        match=r"MaxPool2d at '0': with the input of shape \(1, 2, 1, 5\), some windows along "
        r"spatial dim 0 \(of size 1\) hold only padding",
    ):
        model.init(KEY, x)
    with pytest.raises(ValueError, match="hold only padding"):
        model.apply({}, x)
    ok = torch.randn(1, 2, 3, 5)  # every window now reaches the input: fnn equals torch
    twin = tnn.MaxPool2d((2, 1), stride=1, padding=(1, 0), dilation=2)
    assert_trees_all_close(model.apply({}, ok), twin(ok))


def test_bad_options_are_rejected_at_construction():
    with pytest.raises(ValueError, match=r"MaxPool2d: padding must be at most half the kernel"):
        nn.MaxPool2d(2, padding=(1, 2))
    with pytest.raises(ValueError, match=r"AvgPool1d: padding must be at most half the kernel"):
        nn.AvgPool1d(3, padding=2)
    with pytest.raises(ValueError, match="divisor_override must be None or a non-zero int"):
        nn.AvgPool2d(2, divisor_override=0)
    with pytest.raises(ValueError, match="every entry of stride must be >= 1"):
        nn.MaxPool1d(2, stride=0)
    with pytest.raises(TypeError, match=r"MaxPool3d: expected kernel_size to be an int or 3 ints"):
        nn.MaxPool3d((2, 2))
    with pytest.raises(ValueError, match=r"AdaptiveMaxPool1d: expected output_size to be an int"):
        nn.AdaptiveMaxPool1d(None)
    with pytest.raises(
        ValueError, match=r"AdaptiveAvgPool2d: expected output_size.*got \(1, 2, 3\)"
    ):
        nn.AdaptiveAvgPool2d((1, 2, 3))


def test_vmap_of_per_example_apply_equals_batched_apply():
    xs = torch.randn(4, 3, 9, 7, dtype=F64)
    for model in (nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.AvgPool2d(2), nn.AdaptiveMaxPool2d(2)):
        batched = model.apply({}, xs)
        assert_trees_all_close(fnn.vmap(lambda x, m=model: m.apply({}, x))(xs), batched)
        grads = fnn.vmap(fnn.grad(lambda x, m=model: m.apply({}, x).square().sum()))(xs)
        assert_trees_all_close(
            grads, fnn.grad(lambda x, m=model: m.apply({}, x).square().sum())(xs)
        )


@settings(max_examples=5, deadline=None)
@given(size=st.integers(4, 9))
def test_a_cnn_with_pools_equals_torch(size):
    model = nn.Sequential(
        [
            nn.Conv2d(4, 3, padding=1),
            nn.relu,
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ]
    )
    twin = tnn.Sequential(
        tnn.Conv2d(3, 4, 3, padding=1, dtype=F64), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.AdaptiveAvgPool2d(1), tnn.Flatten(),
    )  # fmt: skip
    x = torch.randn(2, 3, size, size, dtype=F64)
    params, state = model.init(KEY, x)
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    assert_trees_all_close(model.apply(params, x), twin(x).detach())
