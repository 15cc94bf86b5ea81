"""Conv1d/2d/3d and ConvTranspose1d/2d/3d equal their torch.nn twins in value and gradient."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn as tnn

import fnn
from fnn import nn
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

F64 = torch.float64
KEY = fnn.random.key(0)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

CONV = {1: (nn.Conv1d, tnn.Conv1d), 2: (nn.Conv2d, tnn.Conv2d), 3: (nn.Conv3d, tnn.Conv3d)}
CONV_T = {
    1: (nn.ConvTranspose1d, tnn.ConvTranspose1d),
    2: (nn.ConvTranspose2d, tnn.ConvTranspose2d),
    3: (nn.ConvTranspose3d, tnn.ConvTranspose3d),
}


def _nest(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        node = out
        *ps, leaf = k.split(".")
        for p in ps:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _value_and_grads_fnn(model, params, x, train):
    def loss(params, x):
        y = model.apply(params, x, train=train)
        return (y * y).sum(), y

    (gp, gx), y = fnn.grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return y, gp, gx


def _value_and_grads_torch(twin, x, train):
    twin.train(train)
    x = x.clone().requires_grad_(True)
    twin.zero_grad()
    y = twin(x)
    (y * y).sum().backward()
    return y.detach(), _nest({k: p.grad for k, p in twin.named_parameters()}), x.grad


def _check_against_twin(model, twin, x, train):
    """Init ``model`` on ``x``, load it into ``twin`` and compare outputs and gradients."""
    try:
        twin(x)
    except RuntimeError:  # torch rejects this input size; so must fnn, naming the module
        with pytest.raises((ValueError, RuntimeError), match="Conv"):
            params, _ = model.init(KEY, x)
            model.apply(params, x)
        return
    params, state = model.init(KEY, x)
    assert state == {}
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    before = (fnn.tree.map(torch.clone, params), x.clone())
    y, gp, gx = _value_and_grads_fnn(model, params, x, train)
    ty, tgp, tgx = _value_and_grads_torch(twin, x, train)
    assert_trees_all_close(y, ty)
    assert_trees_all_close(gp, tgp)
    assert_trees_all_close(gx, tgx)
    assert_trees_all_equal((params, x), before)  # apply never modifies its inputs


@st.composite
def _common(draw, n):
    groups = draw(st.integers(1, 3))
    return {
        "n": n,
        "groups": groups,
        "cin": groups * draw(st.integers(1, 2)),
        "cout": groups * draw(st.integers(1, 2)),
        "k": tuple(draw(st.integers(1, 3)) for _ in range(n)),
        "stride": tuple(draw(st.integers(1, 3)) for _ in range(n)),
        "dilation": tuple(draw(st.integers(1, 2)) for _ in range(n)),
        "bias": draw(st.booleans()),
        "batch": draw(st.sampled_from([(), (2,)])),  # () is an unbatched input
        "spatial": tuple(draw(st.integers(1, 7 if n < 3 else 4)) for _ in range(n)),
        "train": draw(st.booleans()),
    }


@pytest.mark.parametrize("n", [1, 2, 3])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_conv_matches_torch_in_value_and_grad(n, data):
    c = data.draw(_common(n))
    padding = data.draw(
        st.one_of(
            st.sampled_from(["same", "valid"]),
            st.integers(0, 2),
            st.tuples(*[st.integers(0, 2)] * n),
        )
    )
    mode = data.draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    assume(not (padding == "same" and any(s != 1 for s in c["stride"])))
    fnn_cls, torch_cls = CONV[n]
    # Positional, in torch's order (without in_channels).
    model = fnn_cls(c["cout"], c["k"], c["stride"], padding, c["dilation"], c["groups"], c["bias"])
    model = dataclasses.replace(model, padding_mode=mode)
    twin = torch_cls(
        c["cin"], c["cout"], c["k"], c["stride"], padding, c["dilation"], c["groups"], c["bias"],
        padding_mode=mode, dtype=F64,
    )  # fmt: skip
    x = torch.randn(*c["batch"], c["cin"], *c["spatial"], dtype=F64)
    _check_against_twin(model, twin, x, c["train"])


@pytest.mark.parametrize("n", [1, 2, 3])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_conv_transpose_matches_torch_in_value_and_grad(n, data):
    c = data.draw(_common(n))
    padding = tuple(data.draw(st.integers(0, 2)) for _ in range(n))
    output_padding = tuple(
        data.draw(st.integers(0, max(s, d) - 1))
        for s, d in zip(c["stride"], c["dilation"], strict=True)
    )
    fnn_cls, torch_cls = CONV_T[n]
    model = fnn_cls(
        c["cout"], c["k"], c["stride"], padding, output_padding, c["groups"], c["bias"],
        c["dilation"],
    )  # fmt: skip
    twin = torch_cls(
        c["cin"], c["cout"], c["k"], c["stride"], padding, output_padding, c["groups"],
        c["bias"], c["dilation"], dtype=F64,
    )  # fmt: skip
    x = torch.randn(*c["batch"], c["cin"], *c["spatial"], dtype=F64)
    _check_against_twin(model, twin, x, c["train"])


@pytest.mark.parametrize(
    ("model", "twin"),
    [
        (nn.Conv2d(64, 3, groups=2), tnn.Conv2d(8, 64, 3, groups=2)),
        (nn.Conv1d(64, 5), tnn.Conv1d(8, 64, 5)),
        # torch's fan_in for a transposed conv is weight.shape[1] * prod(k) = out/groups * k.
        (nn.ConvTranspose2d(64, 3, groups=4), tnn.ConvTranspose2d(8, 64, 3, groups=4)),
        (nn.ConvTranspose3d(64, 2), tnn.ConvTranspose3d(8, 64, 2)),
    ],
)
def test_default_init_has_torchs_bounds(model, twin):
    n = model._ndim
    params, _ = model.init(KEY, torch.zeros(1, 8, *[6] * n))
    assert params["weight"].shape == twin.weight.shape
    fan_in, _ = tnn.init._calculate_fan_in_and_fan_out(twin.weight)
    bound = 1 / math.sqrt(fan_in)  # both the weight's and the bias's bound in torch
    assert twin.weight.abs().max() <= bound and twin.bias.abs().max() <= bound
    for name in ("weight", "bias"):
        t = params[name]
        assert t.dtype == torch.float32
        assert t.abs().max() <= bound
        assert t.abs().max() > 0.9 * bound  # spread over the whole range, not a tiny init
        assert abs(t.mean()) < 0.2 * bound


def test_custom_initializers_and_the_inputs_dtype():
    model = nn.ConvTranspose2d(
        3, 2, weight_init=nn.initializers.ones, bias_init=nn.initializers.zeros
    )
    params, _ = model.init(KEY, torch.zeros(1, 4, 5, 5, dtype=F64))
    assert torch.equal(params["weight"], torch.ones(4, 3, 2, 2, dtype=F64))
    assert torch.equal(params["bias"], torch.zeros(3, dtype=F64))


def test_options_are_normalised_to_tuples_and_the_module_is_a_frozen_value():
    model = nn.Conv2d(32, 3)
    assert (model.kernel_size, model.stride, model.padding, model.dilation) == (
        (3, 3),
        (1, 1),
        (0, 0),
        (1, 1),
    )
    assert model == nn.Conv2d(32, (3, 3), padding=[0, 0]) and hash(model) == hash(nn.Conv2d(32, 3))
    assert nn.Conv2d(8, 3, padding="same").padding == "same"
    assert nn.ConvTranspose1d(4, 3, output_padding=0).output_padding == (0,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.stride = 2


def test_shape_errors_name_the_path_and_both_shapes():
    model = nn.Sequential([nn.Conv2d(4, 3, groups=2), nn.ConvTranspose1d(2, 3)])
    with pytest.raises(
        ValueError,
        match=r"Conv2d at '0': expected an input of shape \(N, C, H, W\).*got shape \(4, 8\)",
    ):
        model.init(KEY, torch.zeros(4, 8))
    with pytest.raises(
        ValueError, match=r"Conv2d at '0'.*\(2, 3, 8, 8\).*groups = 2, got 3 channels"
    ):
        model.init(KEY, torch.zeros(2, 3, 8, 8))
    with pytest.raises(
        ValueError, match=r"Conv2d at '0': the input of shape \(2, 4, 2, 8\) is too small"
    ):
        model.init(KEY, torch.zeros(2, 4, 2, 8))
    with pytest.raises(
        ValueError,
        match=r"ConvTranspose1d \(the root module\): the input of shape \(1, 2, 1\) is too "
        r"small: it would give an output of spatial size \(-1,\)",
    ):
        nn.ConvTranspose1d(2, 3, padding=2).init(KEY, torch.zeros(1, 2, 1))
    conv = nn.Sequential([nn.Conv1d(4, 3)])
    params, _ = conv.init(KEY, torch.zeros(2, 6, 8))
    with pytest.raises(
        ValueError, match=r"Conv1d at '0'.*'0.weight' has shape \(4, 6, 3\), expected \(4, 5, 3\)"
    ):
        conv.apply(params, torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match=r"Conv1d at '0'.*got shape \(\)"):
        conv.apply(params, torch.tensor(1.0))


def test_bad_options_are_rejected_at_construction():
    with pytest.raises(
        ValueError, match=r"Conv2d: features \(out_channels\) = 5 must be divisible by groups = 2"
    ):
        nn.Conv2d(5, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        nn.Conv1d(4, 3, stride=2, padding="same")
    with pytest.raises(
        ValueError, match=r"padding must be an int, 2 ints, 'same' or 'valid', got 'full'"
    ):
        nn.Conv2d(4, 3, padding="full")
    with pytest.raises(ValueError, match="ConvTranspose2d: only padding_mode='zeros'"):
        nn.ConvTranspose2d(4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="output_padding must be smaller than stride or dilation"):
        nn.ConvTranspose2d(4, 3, stride=2, output_padding=(1, 2))
    with pytest.raises(
        TypeError, match=r"Conv3d: expected kernel_size to be an int or 3 ints, got \(3, 3\)"
    ):
        nn.Conv3d(4, (3, 3))
    with pytest.raises(ValueError, match="every entry of stride must be >= 1"):
        nn.Conv2d(4, 3, stride=0)
    with pytest.raises(ValueError, match="groups must be a positive int"):
        nn.Conv2d(4, 3, groups=0)


def test_vmap_of_per_example_apply_equals_batched_apply():
    model = nn.Conv2d(6, 3, stride=2, padding=1, groups=3, padding_mode="reflect")
    xs = torch.randn(5, 3, 9, 8, dtype=F64)
    params, _ = model.init(KEY, xs)
    batched = model.apply(params, xs)
    assert_trees_all_close(fnn.vmap(lambda x: model.apply(params, x))(xs), batched)  # (C, H, W)
    assert_trees_all_close(fnn.vmap(lambda x: model.apply(params, x[None])[0])(xs), batched)

    def loss(params, x):
        return model.apply(params, x[None]).square().sum()

    per_example = fnn.vmap(fnn.grad(loss), in_axes=(None, 0))(params, xs)
    looped = [fnn.grad(loss)(params, x) for x in xs]
    assert_trees_all_close(per_example, fnn.tree.map(lambda *g: torch.stack(g), *looped))


def test_a_cnn_has_torchs_state_dict_keys_and_output():
    model = nn.Sequential(
        [nn.Conv2d(8, 3, padding=1), nn.relu, nn.ConvTranspose2d(4, 2, stride=2), nn.Flatten()]
    )
    twin = tnn.Sequential(
        tnn.Conv2d(3, 8, 3, padding=1), tnn.ReLU(), tnn.ConvTranspose2d(8, 4, 2, 2), tnn.Flatten()
    )
    x = torch.randn(2, 3, 5, 5)
    params, state = model.init(KEY, x)
    assert list(nn.to_state_dict(params, state)) == list(twin.state_dict())
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    assert_trees_all_close(model.apply(params, x), twin(x).detach(), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 9),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 3),
    padding=st.sampled_from([0, 1, 2, "valid", "same"]),
    dilation=st.integers(1, 2),
    transposed=st.booleans(),
)
def test_the_cached_spatial_check_agrees_with_the_uncached_one_and_with_torch(
    size, kernel, stride, padding, dilation, transposed
):
    from fnn.nn import _conv

    assume(not (isinstance(padding, str) and (transposed or stride != 1)))  # torch rejects these
    args = ((size,), (kernel,), (stride,), (dilation,))
    pad = padding if isinstance(padding, str) else (padding,)
    out_pad = (0,) if transposed else None
    want = _conv._spatial_problem_uncached(*args, pad, out_pad)
    assert _conv._spatial_problem(*args, pad, out_pad) == want
    assert _conv._spatial_problem(*args, pad, out_pad) == want  # a cache hit: the same answer
    cls = tnn.ConvTranspose1d if transposed else tnn.Conv1d
    layer = cls(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    try:
        layer(torch.zeros(1, 1, size))
        torch_ok = True
    except RuntimeError:
        torch_ok = False
    assert torch_ok == (want is None), want


def test_too_small_inputs_are_an_error_on_every_call_and_under_dynamic_shapes():
    model = nn.Conv2d(2, 3)
    params, _ = model.init(KEY, torch.zeros(1, 3, 8, 8))
    for _ in range(2):  # the second check comes from the cache
        with pytest.raises(ValueError, match=r"input of shape \(1, 3, 2, 8\) is too small"):
            model.apply(params, torch.zeros(1, 3, 2, 8))
    step = fnn.jit(model.apply, dynamic=True)  # symbolic sizes skip the cache
    for h in (5, 7):
        x = torch.randn(1, 3, h, 6)
        assert_trees_all_close(step(params, x), model.apply(params, x), rtol=1e-5, atol=1e-6)
