"""Tests for fnn.nn.initializers: determinism, shapes, and agreement with torch.nn.init."""

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn.nn import initializers as init

KEY = fnn.random.key(0)
OTHER = fnn.random.key(1)

# name -> (fnn initializer, torch in-place twin or None)
RANDOM_INITS = {
    "normal": (init.normal(0.5), lambda w: torch.nn.init.normal_(w, 0.0, 0.5)),
    "uniform": (init.uniform(0.5), lambda w: torch.nn.init.uniform_(w, 0.0, 0.5)),
    "truncated_normal": (
        init.truncated_normal(0.5),
        lambda w: torch.nn.init.trunc_normal_(w, 0.0, 0.5, -1.0, 1.0),
    ),
    "xavier_uniform": (init.xavier_uniform(1.5), lambda w: torch.nn.init.xavier_uniform_(w, 1.5)),
    "xavier_normal": (init.xavier_normal(1.5), lambda w: torch.nn.init.xavier_normal_(w, 1.5)),
    "glorot_uniform": (init.glorot_uniform(), torch.nn.init.xavier_uniform_),
    "glorot_normal": (init.glorot_normal(), torch.nn.init.xavier_normal_),
    "kaiming_uniform": (
        init.kaiming_uniform(a=math.sqrt(5)),
        lambda w: torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5)),
    ),
    "kaiming_uniform_fan_out_relu": (
        init.kaiming_uniform(mode="fan_out", nonlinearity="relu"),
        lambda w: torch.nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"),
    ),
    "kaiming_normal": (
        init.kaiming_normal(a=0.2),
        lambda w: torch.nn.init.kaiming_normal_(w, a=0.2),
    ),
    "kaiming_normal_fan_out_tanh": (
        init.kaiming_normal(mode="fan_out", nonlinearity="tanh"),
        lambda w: torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="tanh"),
    ),
    "he_uniform": (init.he_uniform(), torch.nn.init.kaiming_uniform_),
    "he_normal": (init.he_normal(), torch.nn.init.kaiming_normal_),
    "lecun_uniform": (
        init.lecun_uniform(),
        lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="linear"),
    ),
    # torch has no truncated LeCun normal: twin is trunc_normal_ at the rescaled std.
    "lecun_normal": (
        init.lecun_normal(),
        lambda w: torch.nn.init.trunc_normal_(
            w,
            0.0,
            s := 1 / math.sqrt(torch.nn.init._calculate_fan_in_and_fan_out(w)[0]) / 0.8796256610,
            -2 * s,
            2 * s,
        ),
    ),
    "variance_scaling_trunc": (
        init.variance_scaling(2.0, "fan_avg", "truncated_normal"),
        None,
    ),
    "orthogonal": (init.orthogonal(2.0), lambda w: torch.nn.init.orthogonal_(w, 2.0)),
}

UNIFORM_BOUND = {  # name -> torch's own bound formula, given (fan_in, fan_out)
    "xavier_uniform": lambda fi, fo: 1.5 * math.sqrt(6.0 / (fi + fo)),
    "glorot_uniform": lambda fi, fo: math.sqrt(6.0 / (fi + fo)),
    "kaiming_uniform": lambda fi, fo: (
        torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3.0 / fi)
    ),
    "kaiming_uniform_fan_out_relu": lambda fi, fo: math.sqrt(2.0) * math.sqrt(3.0 / fo),
    "he_uniform": lambda fi, fo: math.sqrt(2.0) * math.sqrt(3.0 / fi),
    "lecun_uniform": lambda fi, fo: math.sqrt(3.0 / fi),
}

STD_CHECKED = [
    "normal",
    "truncated_normal",
    "xavier_normal",
    "glorot_normal",
    "kaiming_normal",
    "kaiming_normal_fan_out_tanh",
    "he_normal",
    "lecun_normal",
]

LARGE_SHAPES = [(512, 512), (256, 64, 3, 3), (128, 32, 5), (64, 16, 3, 3, 3)]


def _fans(shape):
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("name", sorted(RANDOM_INITS))
def test_determinism_keys_shape_dtype(name):
    f, _ = RANDOM_INITS[name]
    shape = (6, 4, 3)
    a, b, c = f(KEY, shape), f(KEY, shape), f(OTHER, shape)
    assert a.shape == shape and a.dtype == torch.get_default_dtype()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    d = f(KEY, shape, torch.float64)
    assert d.dtype == torch.float64 and d.shape == shape


@pytest.mark.parametrize("name", sorted(UNIFORM_BOUND))
@pytest.mark.parametrize("shape", LARGE_SHAPES)
def test_uniform_bounds_match_torch_formula(name, shape):
    f, twin = RANDOM_INITS[name]
    bound = UNIFORM_BOUND[name](*_fans(shape))
    w = f(KEY, shape, torch.float64)
    t = twin(torch.empty(shape, dtype=torch.float64))
    assert t.abs().max() <= bound  # the formula really is torch's
    assert w.abs().max() <= bound
    assert w.abs().max() >= 0.99 * bound
    assert w.min() < -0.99 * bound  # symmetric
    # the uniform std is bound / sqrt(3)
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_kaiming_a_sqrt5_is_linear_and_conv_default():
    lin = torch.nn.Linear(300, 200)
    conv = torch.nn.Conv2d(16, 32, 5)
    for mod in (lin, conv):
        shape = tuple(mod.weight.shape)
        w = init.kaiming_uniform(a=math.sqrt(5))(KEY, shape)
        bound = 1 / math.sqrt(_fans(shape)[0])
        assert mod.weight.abs().max() <= bound
        assert w.abs().max() <= bound and w.abs().max() > 0.98 * bound


@pytest.mark.parametrize("name", STD_CHECKED)
@pytest.mark.parametrize("shape", LARGE_SHAPES)
def test_std_matches_torch(name, shape):
    f, twin = RANDOM_INITS[name]
    torch.manual_seed(0)  # only torch's twin uses the global generator
    expected = twin(torch.empty(shape, dtype=torch.float64)).std().item()
    got = f(KEY, shape, torch.float64)
    assert got.std().item() == pytest.approx(expected, rel=0.02)
    assert got.mean().abs().item() < 0.05 * expected


@pytest.mark.parametrize("shape", LARGE_SHAPES)
def test_truncated_bounds(shape):
    w = init.truncated_normal(0.5, -1.0, 3.0)(KEY, shape)
    assert w.min() > -0.5 and w.max() < 1.5
    fan_in, fan_out = _fans(shape)
    std = math.sqrt(2.0 / ((fan_in + fan_out) / 2)) / 0.87962566103423978
    v = init.variance_scaling(2.0, "fan_avg", "truncated_normal")(KEY, shape, torch.float64)
    assert v.abs().max() < 2 * std
    assert v.var().item() == pytest.approx(2.0 / ((fan_in + fan_out) / 2), rel=0.04)


def test_uniform_is_jax_convention():
    w = init.uniform(0.3)(KEY, (10000,))
    assert w.min() >= 0 and w.max() < 0.3 and w.max() > 0.29


@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (5, 5), (64, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthogonal_2d(shape, dtype):
    w = init.orthogonal(2.0)(KEY, shape, dtype)
    assert w.shape == shape and w.dtype == dtype
    n = min(shape)
    gram = w @ w.T if shape[0] <= shape[1] else w.T @ w
    atol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(gram, 4.0 * torch.eye(n, dtype=dtype), atol=atol, rtol=0)


@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (64, 4, 2, 2), (6, 2, 5)])
def test_orthogonal_conv_column_axis(shape):
    # column_axis=0 is torch's (out, in * kernel) view, transposed.
    w = init.orthogonal(column_axis=0)(KEY, shape, torch.float64)
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    torch.testing.assert_close(gram, torch.eye(min(m.shape), dtype=torch.float64))
    # default column_axis=-1: the matrix (prod(shape[:-1]), shape[-1])
    w = init.orthogonal()(KEY, shape, torch.float64)
    m = w.reshape(-1, shape[-1])
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    torch.testing.assert_close(gram, torch.eye(min(m.shape), dtype=torch.float64))


def test_constants():
    assert torch.equal(init.zeros(KEY, (2, 3)), torch.zeros(2, 3))
    assert torch.equal(init.ones(KEY, (2, 3), torch.float64), torch.ones(2, 3, dtype=torch.float64))
    c = init.constant(-1.5)(KEY, (4,), torch.float16)
    assert c.dtype == torch.float16 and torch.equal(c, torch.full((4,), -1.5, dtype=torch.float16))


NONLINEARITIES = [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
]


@pytest.mark.parametrize("name", NONLINEARITIES)
def test_calculate_gain_matches_torch(name):
    assert init.calculate_gain(name) == torch.nn.init.calculate_gain(name)


@pytest.mark.parametrize("param", [None, 0, 1, 0.2, math.sqrt(5), -0.3])
def test_calculate_gain_leaky_param(param):
    got = init.calculate_gain("leaky_relu", param)
    assert got == torch.nn.init.calculate_gain("leaky_relu", param)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", True)


FAN_BASED = [
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "lecun_uniform",
    "lecun_normal",
    "variance_scaling_trunc",
    "orthogonal",
]


@pytest.mark.parametrize("name", FAN_BASED)
@pytest.mark.parametrize("shape", [(), (5,)])
def test_fewer_than_two_dims_errors(name, shape):
    f, _ = RANDOM_INITS[name]
    with pytest.raises(
        ValueError, match="at least 2 dimensions, got shape " + re.escape(repr(shape))
    ):
        f(KEY, shape)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mode"):
        init.variance_scaling(1.0, "fan_middle")
    with pytest.raises(ValueError, match="distribution"):
        init.variance_scaling(1.0, "fan_in", "cauchy")
    with pytest.raises(ValueError, match="scale"):
        init.variance_scaling(0.0)
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform(mode="fan_avg")
    with pytest.raises(TypeError, match="floating"):
        init.xavier_uniform()(KEY, (3, 3), torch.int32)


def test_compute_fans_layouts():
    assert init.compute_fans((64, 3, 5, 5)) == (75.0, 1600.0)
    # JAX layout (kh, kw, in, out)
    assert init.compute_fans((5, 5, 3, 64), in_axis=-2, out_axis=-1) == (75.0, 1600.0)
    assert init.compute_fans((4, 10, 20), in_axis=1, out_axis=2, batch_axis=0) == (10.0, 20.0)


def test_empty_shape_ok():
    assert init.kaiming_uniform()(KEY, (0, 5)).shape == (0, 5)
    assert init.orthogonal()(KEY, (3, 0)).shape == (3, 0)


def test_vmap_over_keys():
    keys = fnn.random.split(KEY, 3)
    f = init.xavier_uniform()
    batched = torch.func.vmap(lambda k: f(k, (4, 5)))(keys)
    assert batched.shape == (3, 4, 5)
    for i in range(3):
        torch.testing.assert_close(batched[i], f(keys[i], (4, 5)))


dims = st.integers(1, 7)
shapes = st.one_of(
    st.tuples(dims, dims),
    st.tuples(dims, dims, dims),
    st.tuples(dims, dims, dims, dims),
    st.tuples(dims, dims, dims, dims, dims),
)


@settings(max_examples=40)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), name=st.sampled_from(sorted(UNIFORM_BOUND)))
def test_hypothesis_uniform_within_torch_bound(shape, seed, name):
    f, _ = RANDOM_INITS[name]
    w = f(fnn.random.key(seed), shape, torch.float64)
    assert w.shape == shape
    assert w.abs().max() <= UNIFORM_BOUND[name](*_fans(shape))
    assert torch.equal(w, f(fnn.random.key(seed), shape, torch.float64))


@settings(max_examples=40)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_hypothesis_fans_match_torch(shape, seed):
    assert init.compute_fans(shape) == tuple(float(x) for x in _fans(shape))
    w = init.lecun_normal()(fnn.random.key(seed), shape, torch.float64)
    assert w.shape == shape and torch.isfinite(w).all()
    assert w.abs().max() < 2 / math.sqrt(_fans(shape)[0]) / 0.87962566103423978


@settings(max_examples=30)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), column_axis=st.integers(-2, 1))
def test_hypothesis_orthogonal(shape, seed, column_axis):
    w = init.orthogonal(1.5, column_axis)(fnn.random.key(seed), shape, torch.float64)
    assert w.shape == shape
    m = w.movedim(column_axis, -1).reshape(-1, shape[column_axis])
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    torch.testing.assert_close(gram, 2.25 * torch.eye(min(m.shape), dtype=torch.float64))


def test_shape_errors_name_the_initializer_not_fnn_random():
    import fnn

    with pytest.raises(ValueError, match=r"^fnn\.nn\.initializers\.zeros: expected `shape`"):
        fnn.nn.initializers.zeros(fnn.random.key(0), (-1,))
