"""fnn.nn normalization layers against their torch.nn twins: outputs, gradients and state."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fnn
from fnn import nn
from fnn._src import autodiff
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

KEY = fnn.random.key(0)
F64 = torch.float64
# float64 throughout: fnn and the twin run the same kernels, so results agree to rounding.
TOL = {"rtol": 1e-12, "atol": 1e-12}
FEW = settings(max_examples=12, deadline=None)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape, gen, scale=1.0, shift=0.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=F64) * scale + shift


def _perturb(params: dict, gen: torch.Generator) -> dict:
    """Parameters moved off torch's ones/zeros init, so gradients test weight and bias use."""
    return fnn.tree.map(
        lambda t: t + 0.3 * torch.randn(t.shape, generator=gen, dtype=t.dtype), params
    )


def _clone(tree):
    return fnn.tree.map(torch.clone, tree)


def _step(model, twin, params, state, x, train: bool, gen: torch.Generator):
    """One apply of ``model`` and one forward/backward of ``twin``; compares everything.

    Compares the outputs, the gradients w.r.t. the input and the parameters (of the loss
    ``sum(y * g)`` for a random cotangent ``g``), and the new state with the twin's buffers.
    Also checks ``apply`` left ``params``, ``state`` and ``x`` as they were. Returns the new state.
    """
    before = _clone((params, state, x))
    g = torch.randn(tuple(x.shape), generator=gen, dtype=F64)  # y has x's shape for every norm

    def loss(p, x):
        y, new_state = model.apply(p, x, state=state, train=train)
        return (y * g).sum(), (y, new_state)

    (_, (y, new_state)), (gp, gx) = fnn.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        params, x
    )

    twin.train(train)
    twin.zero_grad(set_to_none=True)
    xt = x.detach().clone().requires_grad_(True)
    yt = twin(xt)
    (yt * g).sum().backward()

    assert_trees_all_close(y, yt.detach(), **TOL)
    assert_trees_all_close(gx, xt.grad, **TOL)
    assert_trees_all_close(
        dict(nn.to_state_dict(gp)), {k: p.grad for k, p in twin.named_parameters()}, **TOL
    )
    assert_trees_all_close(
        dict(nn.to_state_dict(params, new_state)), dict(twin.state_dict()), **TOL
    )
    assert_trees_all_equal(before, (params, state, x))
    return new_state


def _init_twin(model, twin, x, gen):
    params, state = model.init(KEY, x)
    params = _perturb(params, gen)
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    return params, state


# --------------------------------------------------------------------------------------------
# BatchNorm
# --------------------------------------------------------------------------------------------

_BN = {1: (nn.BatchNorm1d, torch.nn.BatchNorm1d), 2: (nn.BatchNorm2d, torch.nn.BatchNorm2d)}
_BN[3] = (nn.BatchNorm3d, torch.nn.BatchNorm3d)
_MOMENTA = st.sampled_from([0.1, 0.5, None])
_EPS = st.sampled_from([1e-5, 1e-2])


@FEW
@given(
    spatial=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    n=st.integers(1, 4),
    c=st.integers(1, 4),
    affine=st.booleans(),
    bias=st.booleans(),
    track=st.booleans(),
    momentum=_MOMENTA,
    eps=_EPS,
    seed=st.integers(0, 2**16),
)
@example([3, 2], 2, 3, True, True, True, None, 1e-5, 0)  # always: tracked, cumulative average
@example([], 5, 4, True, False, True, 0.1, 1e-5, 1)
def test_batchnorm_matches_torch_over_train_steps_then_eval(
    spatial, n, c, affine, bias, track, momentum, eps, seed
):
    if n * math.prod(spatial) == 1:
        n = 2
    fnn_cls, torch_cls = _BN[max(len(spatial), 1)]
    opts = dict(eps=eps, momentum=momentum, affine=affine, track_running_stats=track)
    model, twin = fnn_cls(**opts, bias=bias), torch_cls(c, **opts, bias=bias, dtype=F64)
    gen = _gen(seed)
    shape = (n, c, *spatial)
    params, state = _init_twin(model, twin, _randn(shape, gen), gen)
    for _ in range(4):  # each step's state fed into the next, checked against the twin's buffers
        x = _randn(shape, gen, scale=2.0, shift=0.5)
        state = _step(model, twin, params, state, x, True, gen)
    if track:
        assert int(state["num_batches_tracked"]) == 4
    for _ in range(2):
        new_state = _step(model, twin, params, state, _randn(shape, gen), False, gen)
        assert_trees_all_equal(new_state, state)


def test_batchnorm_init_is_torch_default():
    x = torch.zeros(4, 3, 5, dtype=F64)
    params, state = nn.BatchNorm1d().init(KEY, x)
    assert_trees_all_equal(
        params, {"weight": torch.ones(3, dtype=F64), "bias": torch.zeros(3, dtype=F64)}
    )
    assert_trees_all_equal(
        state,
        {
            "running_mean": torch.zeros(3, dtype=F64),
            "running_var": torch.ones(3, dtype=F64),
            "num_batches_tracked": torch.tensor(0),
        },
    )
    assert state["num_batches_tracked"].dtype == torch.int64
    # the running statistics follow the parameters' dtype
    params, state = nn.BatchNorm1d().init(KEY, x.float(), dtype=F64)
    assert params["weight"].dtype == state["running_mean"].dtype == F64
    # no running statistics, no state; no affine, no params
    assert nn.BatchNorm2d(track_running_stats=False).init(KEY, torch.zeros(2, 3, 4, 4))[1] == {}
    assert nn.BatchNorm2d(affine=False).init(KEY, torch.zeros(2, 3, 4, 4))[0] == {}
    params, _ = nn.BatchNorm2d(bias=False).init(KEY, torch.zeros(2, 3, 4, 4))
    assert list(params) == ["weight"]


def test_batchnorm_keeps_torch_positional_arguments():
    assert nn.BatchNorm2d(3, 1e-3, 0.2, False, False) == nn.BatchNorm2d(
        num_features=3, eps=1e-3, momentum=0.2, affine=False, track_running_stats=False
    )
    assert nn.BatchNorm1d(3).init(KEY, torch.zeros(2, 3))[0]["weight"].shape == (3,)


def test_batchnorm_apply_requires_state():
    bn = nn.BatchNorm1d()
    params, _ = bn.init(KEY, torch.zeros(4, 3))
    for train in (True, False):
        with pytest.raises(ValueError, match=r"BatchNorm1d.*keeps state.*pass state= to apply"):
            bn.apply(params, torch.randn(4, 3), train=train)
    # without running statistics no state is needed
    free = nn.BatchNorm1d(track_running_stats=False)
    params, _ = free.init(KEY, torch.zeros(4, 3))
    assert free.apply(params, torch.randn(4, 3)).shape == (4, 3)


@pytest.mark.parametrize(
    ("module", "shape", "layout"),
    [
        (nn.BatchNorm1d(), (2, 3, 4, 5), "(N, C) or (N, C, L)"),
        (nn.BatchNorm2d(), (2, 3), "(N, C, H, W)"),
        (nn.BatchNorm3d(), (2, 3, 4, 4), "(N, C, D, H, W)"),
        (nn.InstanceNorm1d(), (3,), "(N, C, L) or (C, L)"),
        (nn.InstanceNorm2d(), (2, 3, 4, 4, 4), "(N, C, H, W) or (C, H, W)"),
        (nn.InstanceNorm3d(), (3, 4, 4), "(N, C, D, H, W) or (C, D, H, W)"),
        (nn.GroupNorm(1), (3,), "(N, C, *)"),
        (nn.LocalResponseNorm(2), (2, 3), "(N, C, *)"),
    ],
)
def test_wrong_input_rank_names_path_and_shapes(module, shape, layout):
    model = nn.Sequential([nn.Identity(), module])
    name = type(module).__name__
    msg = f"fnn.nn.{name} at '1': expected input of shape {layout}.*got shape {shape}"
    with pytest.raises(ValueError, match=re.escape(msg).replace(r"\.\*", ".*")):
        model.init(KEY, torch.zeros(shape))


def test_batchnorm_batch_of_one_without_spatial_extent_raises_in_train():
    bn = nn.BatchNorm1d()
    x = torch.randn(1, 3)
    params, state = bn.init(KEY, x)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\)"):
        bn.apply(params, x, state=state, train=True)
    with pytest.raises(ValueError):  # torch raises too
        torch.nn.BatchNorm1d(3).train()(x)
    y, _ = bn.apply(params, x, state=state, train=False)  # running statistics: fine
    assert y.shape == (1, 3)
    bn.apply(params, torch.randn(1, 3, 2), state=state, train=True)  # L > 1: fine
    free = nn.BatchNorm1d(track_running_stats=False)  # batch statistics in eval mode too
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        free.apply(params, x, train=False)


def test_batchnorm_checks_counts_and_state_shapes():
    with pytest.raises(ValueError, match=r"num_features=4 was given, but the input has 3 channels"):
        nn.BatchNorm1d(4).init(KEY, torch.zeros(2, 3))
    bn = nn.BatchNorm1d(affine=False)
    _, state = bn.init(KEY, torch.zeros(2, 3))
    with pytest.raises(
        ValueError, match=re.escape("'running_mean' has shape (3,), expected shape (5,)")
    ):
        bn.apply({}, torch.randn(2, 5), state=state, train=True)


def test_batchnorm_under_grad_threads_state_through_has_aux(monkeypatch):
    """``fnn.grad(loss, has_aux=True)`` returns the new state; eager and torch.func paths."""
    gen = _gen(1)
    x0 = _randn((4, 3, 5, 5), gen)
    model = nn.BatchNorm2d(momentum=None)
    for eager in (True, False):
        monkeypatch.setattr(autodiff, "_EAGER_FAST_PATH", eager)
        twin = torch.nn.BatchNorm2d(3, momentum=None, dtype=F64)
        params, state = _init_twin(model, twin, x0, gen)

        def loss(params, state, x):
            y, new_state = model.apply(params, x, state=state, train=True)
            return (y**3).mean(), new_state

        for _ in range(2):
            x = _randn((4, 3, 5, 5), gen, shift=1.0)
            grads, new_state = fnn.grad(loss, has_aux=True)(params, state, x)
            twin.zero_grad()
            (twin(x) ** 3).mean().backward()
            want = {k: p.grad for k, p in twin.named_parameters()}
            assert_trees_all_close(dict(nn.to_state_dict(grads)), want, **TOL)
            assert_trees_all_close(
                dict(nn.to_state_dict(params, new_state)), dict(twin.state_dict()), **TOL
            )
            assert all(t.grad_fn is None and not t.requires_grad for t in new_state.values())
            state = new_state


def test_batchnorm_ensemble_under_vmap():
    """vmap over an ensemble axis of params, state and data equals a loop over the members."""
    gen = _gen(2)
    bn = nn.BatchNorm1d()
    members, xs = [], _randn((3, 6, 4, 5), gen)
    for e in range(3):
        params, state = bn.init(KEY, xs[e])
        state = {**state, "running_mean": _randn((4,), gen), "num_batches_tracked": torch.tensor(e)}
        members.append((_perturb(params, gen), state))
    stacked = fnn.tree.map(lambda *ts: torch.stack(ts), *members)
    for train in (True, False):

        def run(params, state, x, train=train):
            return bn.apply(params, x, state=state, train=train)

        got = fnn.vmap(run)(*stacked, xs)
        want = [run(p, s, xs[e]) for e, (p, s) in enumerate(members)]
        assert_trees_all_close(got, fnn.tree.map(lambda *ts: torch.stack(ts), *want), **TOL)


# --------------------------------------------------------------------------------------------
# InstanceNorm
# --------------------------------------------------------------------------------------------

_IN = {
    1: (nn.InstanceNorm1d, torch.nn.InstanceNorm1d),
    2: (nn.InstanceNorm2d, torch.nn.InstanceNorm2d),
}
_IN[3] = (nn.InstanceNorm3d, torch.nn.InstanceNorm3d)


@FEW
@given(
    spatial=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    n=st.one_of(st.none(), st.integers(1, 3)),
    c=st.integers(1, 4),
    affine=st.booleans(),
    bias=st.booleans(),
    track=st.booleans(),
    momentum=_MOMENTA,
    eps=_EPS,
    seed=st.integers(0, 2**16),
)
@example([3, 2], 3, 2, True, True, True, 0.1, 1e-5, 0)  # always: tracked, batched, momentum
@example([4], None, 3, True, True, True, 0.5, 1e-5, 1)  # always: tracked, unbatched
def test_instancenorm_matches_torch(spatial, n, c, affine, bias, track, momentum, eps, seed):
    if math.prod(spatial) == 1:
        spatial[0] = 2
    fnn_cls, torch_cls = _IN[len(spatial)]
    opts = dict(eps=eps, momentum=momentum, affine=affine, track_running_stats=track)
    model, twin = fnn_cls(**opts, bias=bias), torch_cls(c, **opts, bias=bias, dtype=F64)
    gen = _gen(seed)
    shape = (c, *spatial) if n is None else (n, c, *spatial)  # n None: unbatched input
    params, state = _init_twin(model, twin, _randn(shape, gen), gen)
    assert (state == {}) == (not track)
    for train in (True, True, True, False):
        state = _step(model, twin, params, state, _randn(shape, gen, 2.0, 0.5), train, gen)


def test_instancenorm_spatial_size_one_raises_when_using_instance_stats():
    norm = nn.InstanceNorm1d()
    with pytest.raises(ValueError, match=r"more than 1 spatial element.*\(2, 3, 1\)"):
        norm.apply({}, torch.randn(2, 3, 1), train=True)
    tracked = nn.InstanceNorm1d(track_running_stats=True)
    _, state = tracked.init(KEY, torch.zeros(2, 3, 1))
    y, _ = tracked.apply({}, torch.randn(2, 3, 1), state=state)  # eval: running statistics
    assert y.shape == (2, 3, 1)


# --------------------------------------------------------------------------------------------
# LayerNorm, RMSNorm
# --------------------------------------------------------------------------------------------


@st.composite
def _trailing_norm_case(draw):
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    dims = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    spec = draw(st.sampled_from(["none", "int", "tuple"]))
    if spec == "none":
        return lead + dims, None, dims[-1:]
    if spec == "int":
        return lead + dims, dims[-1], dims[-1:]
    return lead + dims, dims, dims


@FEW
@given(
    case=_trailing_norm_case(),
    eps=_EPS,
    affine=st.booleans(),
    bias=st.booleans(),
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_layernorm_matches_torch(case, eps, affine, bias, train, seed):
    shape, spec, normalized = case
    model = nn.LayerNorm(spec, eps, affine, bias)
    twin = torch.nn.LayerNorm(normalized, eps, affine, bias, dtype=F64)
    gen = _gen(seed)
    params, state = _init_twin(model, twin, _randn(shape, gen), gen)
    assert state == {}
    _step(model, twin, params, state, _randn(shape, gen, 2.0, 0.5), train, gen)


@FEW
@given(
    case=_trailing_norm_case(),
    eps=st.sampled_from([None, 1e-6, 1e-2]),
    affine=st.booleans(),
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rmsnorm_matches_torch(case, eps, affine, train, seed):
    shape, spec, normalized = case
    model = nn.RMSNorm(spec, eps, affine)
    twin = torch.nn.RMSNorm(normalized, eps, affine, dtype=F64)
    gen = _gen(seed)
    params, state = _init_twin(model, twin, _randn(shape, gen), gen)
    assert state == {}
    _step(model, twin, params, state, _randn(shape, gen, 2.0, 0.5), train, gen)


def test_trailing_norms_init_and_shape_errors():
    x = torch.zeros(2, 5, 8)
    assert_trees_all_equal(
        nn.LayerNorm().init(KEY, x), ({"weight": torch.ones(8), "bias": torch.zeros(8)}, {})
    )
    assert_trees_all_equal(nn.RMSNorm().init(KEY, x), ({"weight": torch.ones(8)}, {}))
    assert nn.LayerNorm(8, elementwise_affine=False).init(KEY, x) == ({}, {})
    assert list(nn.LayerNorm(bias=False).init(KEY, x)[0]) == ["weight"]
    assert nn.LayerNorm([5, 8]).normalized_shape == (5, 8)
    for cls in (nn.LayerNorm, nn.RMSNorm):
        model = nn.Sequential([cls((4, 8))])
        msg = f"fnn.nn.{cls.__name__} at '0': expected input of shape (*, 4, 8)"
        with pytest.raises(ValueError, match=re.escape(msg) + r".*got shape \(2, 5, 8\)"):
            model.init(KEY, x)
        with pytest.raises(TypeError, match="normalized_shape must be None, an int or a tuple"):
            cls("8")


@pytest.mark.parametrize("cls", [nn.LayerNorm, nn.RMSNorm])
def test_trailing_norms_per_example_under_vmap(cls):
    x = _randn((5, 8), _gen(3), 2.0)
    model = cls()
    params, _ = model.init(KEY, x)
    params = _perturb(params, _gen(4))
    got = fnn.vmap(lambda row: model.apply(params, row))(x)
    assert_trees_all_close(got, model.apply(params, x), **TOL)


# --------------------------------------------------------------------------------------------
# GroupNorm, LocalResponseNorm
# --------------------------------------------------------------------------------------------


@FEW
@given(
    groups=st.integers(1, 3),
    per_group=st.integers(1, 3),
    n=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    affine=st.booleans(),
    bias=st.booleans(),
    eps=_EPS,
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_groupnorm_matches_torch(groups, per_group, n, spatial, affine, bias, eps, train, seed):
    c = groups * per_group
    if n * per_group * math.prod(spatial) == 1:
        n = 2
    model = nn.GroupNorm(groups, eps=eps, affine=affine, bias=bias)
    twin = torch.nn.GroupNorm(groups, c, eps, affine, bias=bias, dtype=F64)
    gen = _gen(seed)
    shape = (n, c, *spatial)
    params, state = _init_twin(model, twin, _randn(shape, gen), gen)
    assert state == {}
    _step(model, twin, params, state, _randn(shape, gen, 2.0, 0.5), train, gen)


def test_groupnorm_init_and_errors():
    x = torch.zeros(2, 6, 4)
    assert_trees_all_equal(
        nn.GroupNorm(3).init(KEY, x), ({"weight": torch.ones(6), "bias": torch.zeros(6)}, {})
    )
    assert nn.GroupNorm(3, affine=False).init(KEY, x) == ({}, {})
    assert nn.GroupNorm(3, 6, 1e-3) == nn.GroupNorm(3, num_channels=6, eps=1e-3)  # torch's order
    with pytest.raises(
        ValueError, match=r"num_channels \(7\) must be divisible by num_groups \(3\)"
    ):
        nn.GroupNorm(3, 7)
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        nn.GroupNorm(0)
    model = nn.Sequential([nn.GroupNorm(4)])
    with pytest.raises(
        ValueError, match=r"GroupNorm at '0'.*6 channels.*\(2, 6, 4\).*num_groups=4"
    ):
        model.init(KEY, x)
    with pytest.raises(ValueError, match=r"num_channels=8 was given, but the input has 6 channels"):
        nn.GroupNorm(4, 8).init(KEY, x)
    with pytest.raises(ValueError, match=r"more than 1 value per group.*\(1, 3\)"):
        nn.GroupNorm(3).init(KEY, torch.zeros(1, 3))


@FEW
@given(
    size=st.integers(1, 5),
    alpha=st.sampled_from([1e-4, 0.5]),
    beta=st.sampled_from([0.75, 1.5]),
    k=st.sampled_from([1.0, 2.0]),
    shape=st.lists(st.integers(1, 4), min_size=3, max_size=5),
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_local_response_norm_matches_torch(size, alpha, beta, k, shape, train, seed):
    model = nn.LocalResponseNorm(size, alpha, beta, k)
    twin = torch.nn.LocalResponseNorm(size, alpha, beta, k)
    gen = _gen(seed)
    params, state = _init_twin(model, twin, _randn(shape, gen), gen)
    assert (params, state) == ({}, {})
    _step(model, twin, params, state, _randn(shape, gen, 2.0), train, gen)


# --------------------------------------------------------------------------------------------
# All layers: vmap over an extra leading axis equals a loop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        nn.GroupNorm(2),
        nn.InstanceNorm1d(affine=True),
        nn.InstanceNorm1d(track_running_stats=True),
        nn.LocalResponseNorm(3),
        nn.LayerNorm(),
        nn.BatchNorm1d(),
    ],
    ids=lambda m: type(m).__name__,
)
@pytest.mark.parametrize("train", [True, False])
def test_apply_under_vmap_equals_loop(model, train):
    xs = _randn((3, 4, 6, 5), _gen(5), 2.0, 0.5)
    params, state = model.init(KEY, xs[0])
    params = _perturb(params, _gen(6))

    def run(x):
        return model.apply(params, x, state=state, train=train)

    got = fnn.vmap(run)(xs)
    want = fnn.tree.map(lambda *ts: torch.stack(ts), *[run(x) for x in xs])
    assert_trees_all_close(got, want, **TOL)
