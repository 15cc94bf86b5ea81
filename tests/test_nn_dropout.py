"""Dropout layers: torch's formulas and statistics, with masks drawn only from explicit keys.

fnn's masks come from fnn.random, torch's from its global generator, so masks are never compared
with torch's. Instead: eval mode is the identity; the train output given a mask is torch's
formula, op for op (checked by recovering torch's own mask from torch's output and fnn's mask
from fnn's output); the keep fraction is within binomial tolerance of ``1 - rate``; keys decide
masks (same key, same mask; another key or another layer, another mask); gradients equal
``mask / (1 - rate)``.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn as tnn

import fnn
from fnn import nn
from fnn.nn._dropout import _ALPHA, _alpha_dropout, _dropout
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

F64 = torch.float64
KEY = fnn.random.key(0)
K1, K2 = fnn.random.split(fnn.random.key(1))

CHANNEL = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}
TWIN = {
    nn.Dropout: tnn.Dropout,
    nn.Dropout1d: tnn.Dropout1d,
    nn.Dropout2d: tnn.Dropout2d,
    nn.Dropout3d: tnn.Dropout3d,
    nn.AlphaDropout: tnn.AlphaDropout,
}
ALL = list(TWIN)


def _input(layer: type[nn.Module], batched: bool = True, size: int = 3) -> torch.Tensor:
    """A float64 input with no zeros (so a zero in the output means dropped)."""
    spatial = {nn.Dropout1d: 1, nn.Dropout2d: 2, nn.Dropout3d: 3}.get(layer, 2)
    shape = (2, 4) + (size,) * spatial if batched else (4,) + (size,) * spatial
    x = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    return torch.where(x == 0, 1.0, x)


def _alpha_dropped(rate: float, dtype: torch.dtype) -> torch.Tensor:
    """The value AlphaDropout gives a dropped element, rounded as torch's formula rounds it."""
    return _alpha_dropout(torch.zeros((), dtype=dtype), torch.tensor(False), rate)


def _torch_sample(module: tnn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return module.train()(x)


@pytest.mark.parametrize("layer", ALL)
def test_eval_mode_and_rate_zero_are_the_identity(layer):
    x = _input(layer)
    model = layer(0.3)
    params, state = model.init(KEY, x)
    assert (params, state) == ({}, {})
    assert model.init(KEY, x, train=True) == ({}, {})
    assert model.apply(params, x) is x
    assert model.apply(params, x, key=K1) is x
    assert layer(0.0).apply({}, x, key=K1, train=True) is x
    assert layer(0.0).apply({}, x, train=True) is x  # no randomness, so no key needed
    twin = TWIN[layer](0.3)
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    assert torch.equal(twin.eval()(x), model.apply(params, x))


@pytest.mark.parametrize("layer", ALL)
def test_train_mode_without_a_key_names_the_layer_and_says_pass_key(layer):
    x = _input(layer)
    model = nn.Sequential([nn.Identity(), layer(0.5)])
    with pytest.raises(ValueError, match=rf"fnn.nn.{layer.__name__} at '1' needs a PRNG key.*key="):
        model.apply({}, x, train=True)


@pytest.mark.parametrize("layer", ALL)
def test_rate_one_zeroes_the_output_like_torch(layer):
    x = _input(layer)
    y = layer(1.0).apply({}, x, key=K1, train=True)
    assert torch.equal(y, torch.zeros_like(x))
    assert torch.equal(y, TWIN[layer](1.0).train()(x))


@pytest.mark.parametrize("layer", ALL)
def test_rate_must_be_a_probability(layer):
    for bad in (-0.1, 1.5, "0.5", None):
        with pytest.raises(ValueError, match=r"rate \(the drop probability, torch's p\)"):
            layer(bad)
    assert layer(0.1).rate == layer(rate=0.1).rate == 0.1
    assert layer().rate == 0.5  # torch's default p


@settings(max_examples=10, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    rate=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31 - 1),
)
def test_dropout_zeroes_or_scales_each_element_and_its_gradient_is_the_mask(shape, rate, seed):
    x = torch.randn(shape, dtype=F64) + 10.0  # no zeros
    key = fnn.random.key(seed)
    model = nn.Dropout(rate)
    y = model.apply({}, x, key=key, train=True)
    keep = y != 0
    assert_trees_all_close(y, torch.where(keep, x / (1 - rate), 0.0))
    assert_trees_all_equal(y, _dropout(x, keep, rate))
    gx = fnn.grad(lambda t: model.apply({}, t, key=key, train=True).sum())(x)
    assert_trees_all_close(gx, keep.to(F64) / (1 - rate))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_output_given_a_mask_is_torchs_exactly(rate):
    x = _input(nn.Dropout, size=16).float()  # float32: rounding of torch's op order shows
    ty = _torch_sample(tnn.Dropout(rate), x, seed=3)
    assert_trees_all_equal(_dropout(x, ty != 0, rate), ty)
    y = nn.Dropout(rate).apply({}, x, key=K1, train=True)
    assert_trees_all_equal(y, x * ((y != 0).float() / (1 - rate)))


@pytest.mark.parametrize("layer", ALL)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_fraction_is_binomial_around_one_minus_rate(layer, rate):
    channelwise = layer in CHANNEL.values()
    if channelwise:  # (N, C) = (64, 128) draws
        x = torch.ones((64, 128) + (2,) * layer._spatial, dtype=F64)
    else:
        x = torch.randn(50_000, dtype=F64) + 10.0
    y = layer(rate).apply({}, x, key=K1, train=True)
    if layer is nn.AlphaDropout:
        dropped = y == _alpha_dropped(rate, F64)
    else:
        dropped = y == 0
    units = dropped
    if channelwise:  # whole channels: all or nothing
        units = dropped.flatten(2).all(-1)
        assert torch.equal(units, dropped.flatten(2).any(-1))
    n = units.numel()
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(int(units.sum()) - n * rate) < 5 * sd


@pytest.mark.parametrize("layer", ALL)
def test_same_key_same_mask_other_key_other_mask(layer):
    x = _input(layer, size=8)
    model = layer(0.5)
    y1 = model.apply({}, x, key=K1, train=True)
    assert torch.equal(y1, model.apply({}, x, key=K1, train=True))
    assert not torch.equal(y1, model.apply({}, x, key=K2, train=True))


@pytest.mark.parametrize("layer", ALL)
def test_two_layers_in_a_sequential_draw_different_masks_from_one_key(layer):
    x = _input(layer, size=8)
    model = nn.Sequential([layer(0.5), layer(0.5)])
    ones = torch.ones_like(x)
    # Apply each layer alone at its path via a Sequential with an Identity in the other slot.
    first = nn.Sequential([layer(0.5), nn.Identity()]).apply({}, ones, key=K1, train=True)
    second = nn.Sequential([nn.Identity(), layer(0.5)]).apply({}, ones, key=K1, train=True)
    assert not torch.equal(first, second)
    y = model.apply({}, x, key=K1, train=True)
    if layer is not nn.AlphaDropout:  # the two masks compose
        assert_trees_all_close(y, x * first * second)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("batched", [True, False])
def test_channel_dropout_zeroes_whole_channels_and_matches_torch_given_the_mask(d, batched):
    layer = CHANNEL[d]
    x = _input(layer, batched=batched).float()
    rate = 0.5
    y = layer(rate).apply({}, x, key=K1, train=True)
    assert y.shape == x.shape
    channels = y.flatten(-d)  # (N, C, spatial) or (C, spatial)
    keep = (channels != 0).all(-1)
    assert torch.equal(keep, (channels != 0).any(-1))  # a channel is all kept or all dropped
    assert 0 < int(keep.sum()) < keep.numel()
    mask = keep.reshape(*keep.shape, *(1,) * d)
    assert_trees_all_equal(y, _dropout(x, mask, rate))
    gx = fnn.grad(lambda t: layer(rate).apply({}, t, key=K1, train=True).sum())(x)
    assert_trees_all_equal(gx, (mask.float() / (1 - rate)).expand_as(x))
    if batched or d != 2:  # torch reads a 3-D Dropout2d input as (N, C, L); see the docstring
        ty = _torch_sample(TWIN[layer](rate), x, seed=5)
        tkeep = (ty.flatten(-d) != 0).all(-1)
        assert_trees_all_equal(_dropout(x, tkeep.reshape(*tkeep.shape, *(1,) * d), rate), ty)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_channel_dropout_shape_errors_name_the_path_and_shapes(d):
    layer = CHANNEL[d]
    model = nn.Sequential([nn.Identity(), layer()])
    for ndim in (d, d + 3):
        x = torch.zeros((2,) * ndim)
        with pytest.raises(ValueError, match=rf"{layer.__name__} at '1': expected an input of "):
            model.apply({}, x, key=K1, train=True)
        with pytest.raises(ValueError, match=re.escape(f"got shape {tuple(x.shape)}")):
            model.apply({}, x)  # wrong shapes fail in eval mode too


def test_dropout2d_reads_a_3d_input_as_one_unbatched_example():
    x = torch.randn(5, 4, 4)
    y = nn.Dropout2d().apply({}, x, key=K1, train=True)
    per_channel = (y.flatten(1) != 0).all(-1)
    assert torch.equal(per_channel, (y.flatten(1) != 0).any(-1))  # (C, H, W): channels are x[c]


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_alpha_dropout_keeps_mean_and_variance_like_torch(rate):
    x = torch.randn(200_000, dtype=F64, generator=torch.Generator().manual_seed(1))
    y = nn.AlphaDropout(rate).apply({}, x, key=K1, train=True)
    ty = _torch_sample(tnn.AlphaDropout(rate), x, seed=2)
    assert abs(y.mean()) < 0.01 and abs(ty.mean()) < 0.01
    assert abs(y.var() - 1) < 0.02 and abs(ty.var() - 1) < 0.02
    assert abs(y.mean() - ty.mean()) < 0.015 and abs(y.var() - ty.var()) < 0.03


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_alpha_dropout_output_given_a_mask_is_torchs_exactly(rate):
    x = _input(nn.AlphaDropout, size=16).float()
    a = 1.0 / math.sqrt((_ALPHA**2 * rate + 1) * (1 - rate))
    dropped_value = _alpha_dropped(rate, torch.float32)
    assert_trees_all_close(dropped_value, -_ALPHA * a * (1 - rate))
    ty = _torch_sample(tnn.AlphaDropout(rate), x, seed=7)
    assert_trees_all_equal(_alpha_dropout(x, ty != dropped_value, rate), ty)
    model = nn.AlphaDropout(rate)
    y = model.apply({}, x, key=K1, train=True)
    keep = y != dropped_value
    assert 0 < int(keep.sum()) < keep.numel()
    # torch's _dropout_impl written out: b = (noise - 1) * alpha * a + alpha * a * p.
    noise = keep.float()
    b = noise.add(-1).mul_(_ALPHA * a).add_(_ALPHA * a * rate)
    assert_trees_all_equal(y, x * noise.mul(a) + b)
    gx = fnn.grad(lambda t: model.apply({}, t, key=K1, train=True).sum())(x)
    assert_trees_all_equal(gx, noise * a)


@pytest.mark.parametrize("layer", ALL)
def test_vmap_with_per_example_keys_equals_a_loop(layer):
    x = _input(layer, size=6)
    keys = fnn.random.split(K1, x.shape[0])
    model = layer(0.5)
    ys = fnn.vmap(lambda k, xi: model.apply({}, xi, key=k, train=True))(keys, x)
    loop = torch.stack([model.apply({}, x[i], key=keys[i], train=True) for i in range(len(x))])
    assert_trees_all_equal(ys, loop)
    assert not torch.equal(ys[0] / x[0], ys[1] / x[1])  # examples got different masks


@pytest.mark.parametrize("layer", ALL)
def test_apply_does_not_modify_its_input(layer):
    x = _input(layer)
    before = x.clone()
    y = layer(0.5).apply({}, x, key=K1, train=True)
    assert torch.equal(x, before) and y.data_ptr() != x.data_ptr()
