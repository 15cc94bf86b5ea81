"""Embedding equals torch.nn.Embedding in output and weight gradient, without mutating params."""

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


def _twin_value_and_grad(twin: tnn.Embedding, idx: torch.Tensor, g: torch.Tensor):
    twin.zero_grad()
    y = twin(idx)
    (y * g).sum().backward()
    return y.detach(), {"weight": twin.weight.grad}


def _fnn_value_and_grad(model: nn.Embedding, params: dict, idx: torch.Tensor, g: torch.Tensor):
    y = model.apply(params, idx)
    grads = fnn.grad(lambda p: (model.apply(p, idx) * g).sum())(params)
    return y, grads


@settings(max_examples=20, deadline=None)
@given(
    num=st.integers(1, 12),
    features=st.integers(1, 5),
    shape=st.lists(st.integers(0, 4), max_size=3),
    padding=st.booleans(),
    negative_padding=st.booleans(),
    max_norm=st.none() | st.floats(0.3, 3.0),
    norm_type=st.sampled_from([1.0, 2.0, 3.0, float("inf")]),
    scale_grad_by_freq=st.booleans(),
    int32=st.booleans(),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_embedding_matches_torch_in_output_and_weight_grad(
    num,
    features,
    shape,
    padding,
    negative_padding,
    max_norm,
    norm_type,
    scale_grad_by_freq,
    int32,
    seed,
    data,
):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, num, shape, generator=gen, dtype=torch.int32 if int32 else torch.int64)
    padding_idx = None
    if padding:
        padding_idx = data.draw(
            st.integers(-num, -1) if negative_padding else st.integers(0, num - 1)
        )
    options = dict(
        padding_idx=padding_idx,
        max_norm=max_norm,
        norm_type=norm_type,
        scale_grad_by_freq=scale_grad_by_freq,
    )
    model = nn.Embedding(num, features, **options)
    params, state = model.init(KEY, idx, dtype=F64)
    assert state == {}
    twin = tnn.Embedding(num, features, **options, dtype=F64)
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    before = fnn.tree.map(torch.clone, params)
    idx_before = idx.clone()

    g = torch.randn(*shape, features, generator=gen, dtype=F64)
    y, grads = _fnn_value_and_grad(model, params, idx, g)
    ty, tgrads = _twin_value_and_grad(twin, idx, g)
    assert y.shape == (*shape, features)
    assert_trees_all_close(y, ty)
    assert_trees_all_close(grads, tgrads)
    assert_trees_all_equal(params, before)  # torch renormalised its weight in place; fnn did not
    assert torch.equal(idx, idx_before)
    if padding_idx is not None:
        assert not grads["weight"][padding_idx].any()


def test_max_norm_output_equals_torchs_bit_for_bit_each_call():
    idx = torch.tensor([[0, 3, 3, 7], [7, 1, 0, 9]])
    for dtype in (torch.float32, F64):
        model = nn.Embedding(10, 6, max_norm=1.0)
        params, _ = model.init(KEY, idx, dtype=dtype)
        twin = tnn.Embedding(10, 6, max_norm=1.0, dtype=dtype)
        twin.load_state_dict(nn.to_state_dict(params), strict=True)
        ty = twin(idx).detach()
        assert_trees_all_equal(model.apply(params, idx), ty)
        # torch's weight now holds the renormalised rows; fnn's params still hold the old ones,
        # and a second call gives the same output as torch's second call.
        assert not torch.equal(twin.weight.detach(), params["weight"])
        assert_trees_all_equal(model.apply(params, idx), twin(idx).detach())
        norms = model.apply(params, idx).norm(dim=-1)
        assert bool((norms <= 1.0 + 1e-6).all())


def test_default_init_is_a_standard_normal_with_the_padding_row_zero():
    model = nn.Embedding(2000, 64, padding_idx=-1)
    assert model.padding_idx == 1999  # normalised like torch
    params, _ = model.init(KEY, torch.zeros(3, dtype=torch.long))
    w = params["weight"]
    assert w.shape == (2000, 64) and w.dtype == torch.float32
    assert not w[1999].any()
    rest = w[:1999]
    assert abs(float(rest.mean())) < 0.01 and abs(float(rest.std()) - 1) < 0.01
    assert float(rest.abs().max()) > 3.5  # a normal, not a bounded uniform
    custom = nn.Embedding(5, 2, padding_idx=2, weight_init=nn.initializers.ones)
    params, _ = custom.init(KEY, torch.zeros(1, dtype=torch.long))
    assert torch.equal(params["weight"], torch.ones(5, 2).index_fill(0, torch.tensor([2]), 0))


def test_index_dtype_and_option_errors_name_the_layer():
    model = nn.Sequential([nn.Embedding(4, 3)])
    params, _ = model.init(KEY, torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"Embedding at '0': expected indices as an int64 or int32"):
        model.apply(params, torch.zeros(2))
    with pytest.raises(TypeError, match=r"got a torch.uint8 tensor"):
        model.apply(params, torch.zeros(2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(4, 3\), expected \(5, 3\)"):
        nn.Sequential([nn.Embedding(5, 3)]).apply(params, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"padding_idx must be in \[-4, 4\).*got 4"):
        nn.Embedding(4, 3, padding_idx=4)
    with pytest.raises(ValueError, match="features must be a non-negative int"):
        nn.Embedding(4, 3.0)
    with pytest.raises(IndexError) as info:  # torch checks the range itself
        model.apply(params, torch.tensor([4]))
    assert "fnn.nn.Embedding at '0'" in "".join(info.value.__notes__)


def test_embedding_under_vmap_equals_the_batched_lookup():
    model = nn.Embedding(10, 4, max_norm=1.0)
    idx = torch.randint(0, 10, (6, 5))
    params, _ = model.init(KEY, idx)
    per_example = fnn.vmap(lambda i: model.apply(params, i))(idx)
    assert_trees_all_close(per_example, model.apply(params, idx))
    # per-example gradients sum to the batch gradient
    g = torch.randn(6, 5, 4)
    per_grads = fnn.vmap(
        fnn.grad(lambda p, i, gi: (model.apply(p, i) * gi).sum()), in_axes=(None, 0, 0)
    )(params, idx, g)
    full = fnn.grad(lambda p: (model.apply(p, idx) * g).sum())(params)
    assert_trees_all_close(fnn.tree.map(lambda t: t.sum(0), per_grads), full, atol=1e-6)
