"""dot_product_attention, the mask helpers and MultiheadAttention equal their torch references."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn as tnn

import fnn
from fnn import nn
from fnn.nn import _attention
from fnn.testing import assert_trees_all_close

F64 = torch.float64
KEY = fnn.random.key(0)
TOL = {"rtol": 1e-7, "atol": 1e-10}


@pytest.fixture(autouse=True)
def _no_torch_fastpath():
    """torch's fused inference path (eval, no grad) may differ in the last bits: compare the
    reference path; ``test_torch_fastpath_agrees_too`` checks the fused one separately."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(before)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads only add overhead (a lot on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _nest(flat):
    out = {}
    for k, v in flat.items():
        node = out
        *ps, leaf = k.split(".")
        for p in ps:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _loss(out):
    y, w = out
    return (y * y).sum() + (0 if w is None else (w * w).sum())


# --------------------------------------------------------------------------------------------
# dot_product_attention and masks
# --------------------------------------------------------------------------------------------


def _reference_attention(q, k, v, mask, is_causal, scale):
    """softmax(q k^T * scale + mask) v, written out (fully masked rows give zeros, as SDPA)."""
    s = q @ k.transpose(-2, -1) * scale
    allowed = torch.ones(s.shape, dtype=torch.bool)
    if is_causal:
        allowed = allowed & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    if mask is not None and mask.dtype == torch.bool:
        allowed = allowed & mask
    elif mask is not None:
        s = s + mask
    s = s.masked_fill(~allowed, -math.inf)
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return w @ v


@settings(max_examples=20, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    L=st.integers(1, 5),
    S=st.integers(1, 5),
    E=st.integers(1, 6),
    Ev=st.integers(1, 4),
    mask_kind=st.sampled_from([None, "bool", "float"]),
    is_causal=st.booleans(),
    scale=st.sampled_from([None, 0.3]),
)
def test_dot_product_attention_matches_sdpa_and_the_formula(
    batch, L, S, E, Ev, mask_kind, is_causal, scale
):
    g = torch.Generator().manual_seed(L * 100 + S * 10 + E)
    q = torch.randn(*batch, L, E, dtype=F64, generator=g)
    k = torch.randn(*batch, S, E, dtype=F64, generator=g)
    v = torch.randn(*batch, S, Ev, dtype=F64, generator=g)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(L, S, generator=g) > 0.3
        mask[:, 0] = True  # every query may attend to something
    elif mask_kind == "float":
        mask = torch.randn(L, S, dtype=F64, generator=g)
    got = nn.dot_product_attention(q, k, v, mask, is_causal, scale=scale)
    want = _reference_attention(q, k, v, mask, is_causal, E**-0.5 if scale is None else scale)
    assert_trees_all_close(got, want, **TOL)
    if not (is_causal and mask is not None):  # SDPA itself refuses a mask with is_causal
        sdpa = F.scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal, scale=scale)
        assert_trees_all_close(got, sdpa, **TOL)


def test_dot_product_attention_dropout_is_keyed_reproducible_and_unbiased():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2000, 1, 8, generator=g), torch.randn(2000, 6, 8, generator=g)
    v = torch.ones(2000, 6, 1)
    a = nn.dot_product_attention(q, k, v, dropout_rate=0.3, key=fnn.random.key(1))
    b = nn.dot_product_attention(q, k, v, dropout_rate=0.3, key=fnn.random.key(1))
    c = nn.dot_product_attention(q, k, v, dropout_rate=0.3, key=fnn.random.key(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Each output is sum_j w_j * keep_j / (1 - p): 1 on average (no dropout: exactly 1).
    assert abs(a.mean().item() - 1.0) < 0.03
    assert a.std() > 0.1
    # Exactly: softmax weights times the keyed Bernoulli(1 - p) mask, scaled, times v.
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1)
    keep = fnn.random.bernoulli(fnn.random.key(1), 0.7, tuple(w.shape))
    assert_trees_all_close(a, (w * keep / 0.7) @ v, rtol=1e-5, atol=1e-6)
    zero = nn.dot_product_attention(q, k, v, dropout_rate=1.0, key=KEY)
    assert torch.equal(zero, torch.zeros_like(zero))


def test_dot_product_attention_errors():
    q = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"dropout_rate=0\.1 needs a PRNG key"):
        nn.dot_product_attention(q, q, q, dropout_rate=0.1)
    with pytest.raises(ValueError, match=r"q \(2, 3, 4\), k \(2, 3, 5\)"):
        nn.dot_product_attention(q, torch.zeros(2, 3, 5), q)
    with pytest.raises(ValueError, match=r"broadcastable to \(\.\.\., 3, 3\).*shape \(3, 4\)"):
        nn.dot_product_attention(q, q, q, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"dropout_rate must be a number in \[0, 1\]"):
        nn.dot_product_attention(q, q, q, dropout_rate=1.5, key=KEY)


def test_make_causal_mask_is_sdpas_causal_mask():
    for L, S in ((3, 3), (2, 5), (5, 2)):
        q, k, v = torch.randn(1, L, 4), torch.randn(1, S, 4), torch.randn(1, S, 3)
        mask = nn.make_causal_mask(L, S)
        assert mask.dtype == torch.bool and mask.shape == (L, S)
        assert torch.equal(mask, torch.ones(L, S, dtype=torch.bool).tril())
        if L <= S:  # (SDPA gives NaN rows for L > S, where some rows attend to nothing)
            assert_trees_all_close(
                F.scaled_dot_product_attention(q, k, v, mask),
                F.scaled_dot_product_attention(q, k, v, is_causal=True),
            )
    float_mask = tnn.Transformer.generate_square_subsequent_mask(4)
    assert torch.equal(~nn.make_causal_mask(4), float_mask == -math.inf)


def test_make_padding_mask_from_lengths_and_booleans():
    mask = nn.make_padding_mask(torch.tensor([2, 0, 3]), 4)
    assert torch.equal(
        mask,
        torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool),
    )
    assert nn.make_padding_mask(torch.tensor([2, 3])).shape == (2, 3)
    real = torch.tensor([[5, 6, 0]]) != 0
    assert nn.make_padding_mask(real) is real
    with pytest.raises(ValueError, match=r"boolean mask of shape \(N, 4\), got shape \(1, 3\)"):
        nn.make_padding_mask(real, 4)
    with pytest.raises(ValueError, match=r"integer lengths of shape \(N,\)"):
        nn.make_padding_mask(torch.ones(2, 3))


def test_padding_masks_mean_the_same_in_both_conventions():
    """fnn's mask (True = token) for dot_product_attention; its negation for MHA/torch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, dtype=F64, generator=g)
    real = nn.make_padding_mask(torch.tensor([5, 3]), 5)
    mha = nn.MultiheadAttention(1, bias=False, batch_first=True)
    params, _ = mha.init(KEY, x, x, x)
    ident = torch.eye(8, dtype=F64)
    params = {"in_proj_weight": torch.cat([ident] * 3), "out_proj": {"weight": ident}}
    got, _ = mha.apply(params, x, x, x, key_padding_mask=~real, need_weights=False)
    want = nn.dot_product_attention(x, x, x, real[:, None, :])
    assert_trees_all_close(got, want, **TOL)


# --------------------------------------------------------------------------------------------
# MultiheadAttention vs torch
# --------------------------------------------------------------------------------------------


def _mask(kind, shape, g):
    """A random mask in torch's convention (True = blocked) that never blocks key 0."""
    if kind is None:
        return None
    if kind == "bool":
        m = torch.rand(shape, generator=g) > 0.6
        m[..., 0] = False
        return m
    m = torch.randn(shape, dtype=F64, generator=g)
    m[..., 1:] = m[..., 1:].masked_fill(torch.rand(m[..., 1:].shape, generator=g) > 0.7, -math.inf)
    return m


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    L=st.integers(1, 4),
    S=st.integers(1, 4),
    N=st.integers(1, 2),
    layout=st.sampled_from(["seq_first", "batch_first", "unbatched"]),
    inputs=st.sampled_from(["self", "kv_same", "cross", "kdim_vdim"]),
    bias=st.booleans(),
    add_bias_kv=st.booleans(),
    add_zero_attn=st.booleans(),
    mask_kind=st.sampled_from([None, "bool", "float"]),
    attn_mask_3d=st.booleans(),
    use_kpm=st.booleans(),
    need_weights=st.booleans(),
    average=st.booleans(),
    is_causal=st.booleans(),
    train=st.booleans(),
)
def test_multihead_attention_matches_torch_in_value_and_grad(
    heads,
    head_dim,
    L,
    S,
    N,
    layout,
    inputs,
    bias,
    add_bias_kv,
    add_zero_attn,
    mask_kind,
    attn_mask_3d,
    use_kpm,
    need_weights,
    average,
    is_causal,
    train,
):
    g = torch.Generator().manual_seed(heads * 1000 + head_dim * 100 + L * 10 + S)
    E = heads * head_dim
    if inputs == "self" or is_causal:
        S = L
    kdim, vdim = (E + 1, E + 2) if inputs == "kdim_vdim" else (E, E)
    batched = layout != "unbatched"
    batch_first = layout == "batch_first"

    def make(length, dim):
        shape = (N, length, dim) if batch_first else (length, N, dim)
        return torch.randn(shape if batched else (length, dim), dtype=F64, generator=g)

    query = make(L, E)
    key = query if inputs == "self" else make(S, kdim)
    value = key if inputs in ("self", "kv_same") else make(S, vdim)

    attn_mask = None
    if is_causal:  # torch needs the causal mask itself along with the hint
        causal = ~torch.ones(L, L, dtype=torch.bool).tril()
        attn_mask = causal if mask_kind != "float" else _attention._float_mask(causal, F64)
    elif mask_kind is not None:
        shape = ((N if batched else 1) * heads, L, S) if attn_mask_3d else (L, S)
        attn_mask = _mask(mask_kind, shape, g)
    kpm = None
    if use_kpm:
        kpm = _mask(mask_kind or "bool", (N, S) if batched else (S,), g)
    kwargs = dict(
        key_padding_mask=kpm,
        need_weights=need_weights,
        attn_mask=attn_mask,
        average_attn_weights=average,
        is_causal=is_causal,
    )

    model = nn.MultiheadAttention(
        heads,
        bias=bias,
        add_bias_kv=add_bias_kv,
        add_zero_attn=add_zero_attn,
        batch_first=batch_first,
    )
    params, state = model.init(KEY, query, key, value)
    assert state == {}
    twin = tnn.MultiheadAttention(
        E,
        heads,
        bias=bias,
        add_bias_kv=add_bias_kv,
        add_zero_attn=add_zero_attn,
        kdim=kdim,
        vdim=vdim,
        batch_first=batch_first,
        dtype=F64,
    )
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    twin.train(train)

    # fnn: gradients by torch.autograd on the pure apply
    xs = [query.clone().requires_grad_(True)]
    xs.append(xs[0] if key is query else key.clone().requires_grad_(True))
    xs.append(xs[1] if value is key else value.clone().requires_grad_(True))
    leaves, spec = fnn.tree.flatten(params)
    leaves = [t.detach().requires_grad_(True) for t in leaves]
    out = model.apply(fnn.tree.unflatten(spec, leaves), *xs, train=train, **kwargs)
    uniq = [x for i, x in enumerate(xs) if all(x is not y for y in xs[:i])]
    grads = torch.autograd.grad(_loss(out), [*leaves, *uniq], allow_unused=True)

    # torch
    txs = [query.clone().requires_grad_(True)]
    txs.append(txs[0] if key is query else key.clone().requires_grad_(True))
    txs.append(txs[1] if value is key else value.clone().requires_grad_(True))
    tout = twin(*txs, **kwargs)
    _loss(tout).backward()
    tuniq = [x for i, x in enumerate(txs) if all(x is not y for y in txs[:i])]

    assert_trees_all_close(out[0], tout[0].detach(), **TOL)
    if need_weights:
        assert_trees_all_close(out[1], tout[1].detach(), **TOL)
    else:
        assert out[1] is None and tout[1] is None
    pgrads = fnn.tree.unflatten(spec, list(grads[: len(leaves)]))
    assert_trees_all_close(pgrads, _nest({k: p.grad for k, p in twin.named_parameters()}), **TOL)
    assert_trees_all_close(list(grads[len(leaves) :]), [x.grad for x in tuniq], **TOL)


def test_torch_fastpath_agrees_too():
    torch.backends.mha.set_fastpath_enabled(True)
    x = torch.randn(2, 5, 8, dtype=F64)
    model = nn.MultiheadAttention(2, batch_first=True)
    params, _ = model.init(KEY, x, x, x)
    twin = tnn.MultiheadAttention(8, 2, batch_first=True, dtype=F64).eval()
    twin.load_state_dict(nn.to_state_dict(params), strict=True)
    kpm = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        for need_weights in (False, True):
            want = twin(x, x, x, key_padding_mask=kpm, need_weights=need_weights)
            got = model.apply(params, x, x, x, key_padding_mask=kpm, need_weights=need_weights)
            assert_trees_all_close(got[0], want[0], **TOL)


def test_multihead_attention_default_init_follows_torch():
    E, kdim = 32, 16
    x, k = torch.zeros(3, 2, E), torch.zeros(4, 2, kdim)
    params, _ = nn.MultiheadAttention(4, add_bias_kv=True).init(KEY, x, x, x)
    assert params["in_proj_weight"].abs().max() <= math.sqrt(6 / (E + 3 * E))
    assert params["in_proj_weight"].abs().max() > 0.9 * math.sqrt(6 / (E + 3 * E))
    assert params["out_proj"]["weight"].abs().max() <= 1 / math.sqrt(E)
    assert params["out_proj"]["weight"].abs().max() > 0.9 / math.sqrt(E)
    for b in (params["in_proj_bias"], params["out_proj"]["bias"]):
        assert torch.equal(b, torch.zeros_like(b))
    assert 0.5 < params["bias_k"].std() * math.sqrt(E) < 1.5  # xavier normal: std 1/sqrt(E)
    params, _ = nn.MultiheadAttention(4).init(KEY, x, k, k)
    assert sorted(params) == ["in_proj_bias", "k_proj_weight", "out_proj", "q_proj_weight",
                              "v_proj_weight"]  # fmt: skip
    assert params["k_proj_weight"].abs().max() <= math.sqrt(6 / (E + kdim))
    params, _ = nn.MultiheadAttention(4, bias=False).init(KEY, x, x, x)
    assert sorted(params) == ["in_proj_weight", "out_proj"] and list(params["out_proj"]) == [
        "weight"
    ]
    init = nn.initializers.constant(0.5)
    params, _ = nn.MultiheadAttention(4, weight_init=init, bias_init=init).init(KEY, x, x, x)
    assert all(bool((t == 0.5).all()) for t in fnn.tree.leaves(params))


class _Wrap(nn.Module):
    attn: nn.Module

    def forward(self, scope, q, kv, **kwargs):
        return scope.attn(q, kv, kv, **kwargs)


def test_multihead_attention_errors_name_the_path_and_shapes():
    model = _Wrap(nn.MultiheadAttention(2, batch_first=True))
    x = torch.zeros(2, 3, 8)
    params, _ = model.init(KEY, x, x)
    where = r"MultiheadAttention at 'attn'"
    with pytest.raises(ValueError, match=where + r".*'attn.in_proj_weight' has shape \(24, 8\)"):
        model.apply(params, torch.zeros(2, 3, 6), torch.zeros(2, 3, 6))
    with pytest.raises(ValueError, match=where + r": expected a 3-D `key`.*got shape \(3, 8\)"):
        model.apply(params, x, torch.zeros(3, 8))
    with pytest.raises(ValueError, match=where + r".*key_padding_mask of shape \(2, 3\).*\(2, 4\)"):
        model.apply(params, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=where + r".*attn_mask of shape \(L, S\) = \(3, 3\)"):
        model.apply(params, x, x, attn_mask=torch.zeros(3, 4))
    with pytest.raises(ValueError, match=where + r".*embed_dim.*a multiple of 2.*got 7"):
        model.init(KEY, torch.zeros(2, 3, 7), torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match=where + r".*one batch size.*got query \(2, 3, 8\), key"):
        model.apply(params, x, torch.zeros(3, 3, 8))
    with pytest.raises(ValueError, match=where + r": expected `query` of shape \(N, L, E\)"):
        model.apply(params, torch.zeros(8), x)
    with pytest.raises(ValueError, match=r"kdim=5 was given, but `key` has 8 features"):
        _Wrap(nn.MultiheadAttention(2, kdim=5)).init(KEY, x, x)
    with pytest.raises(ValueError, match=r"embed_dim \(last dim\) to be 6 \(num_heads=2\), got 8"):
        nn.MultiheadAttention(2, embed_dim=6).init(KEY, x, x, x)
    with pytest.raises(ValueError, match=r"dropout must be a probability.*got 8"):
        nn.MultiheadAttention(64, 8)  # torch's (embed_dim, num_heads) order


def test_multihead_attention_dropout_is_keyed_and_off_in_eval():
    x = torch.randn(4, 2, 8, dtype=F64)
    model = _Wrap(nn.MultiheadAttention(2, dropout=0.5))
    params, _ = model.init(KEY, x, x)
    ref = _Wrap(nn.MultiheadAttention(2)).apply(params, x, x)
    for need_weights in (True, False):
        a, b, c = (
            model.apply(params, x, x, key=fnn.random.key(i), train=True, need_weights=need_weights)
            for i in (1, 1, 2)
        )
        assert torch.equal(a[0], b[0]) and not torch.allclose(a[0], c[0])
        assert not torch.allclose(a[0], ref[0])
    assert_trees_all_close(model.apply(params, x, x), ref)  # eval: no dropout
    with pytest.raises(ValueError, match=r"MultiheadAttention at 'attn' needs a PRNG key"):
        model.apply(params, x, x, train=True)


def test_multihead_attention_apply_is_pure():
    x, kv = torch.randn(3, 2, 8), torch.randn(5, 2, 8)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    model = nn.MultiheadAttention(2, add_bias_kv=True)
    params, _ = model.init(KEY, x, kv, kv)
    before = fnn.tree.map(torch.clone, (params, x, kv, kpm))
    model.apply(params, x, kv, kv, key_padding_mask=kpm, key=KEY, train=True)
    fnn.testing.assert_trees_all_equal((params, x, kv, kpm), before)


def test_multihead_attention_under_vmap_is_per_example():
    g = torch.Generator().manual_seed(0)
    q, kv = torch.randn(4, 3, 8, generator=g), torch.randn(4, 5, 6, generator=g)
    kpm = torch.rand(4, 5, generator=g) > 0.7
    kpm[:, 0] = False
    model = nn.MultiheadAttention(2, batch_first=True)
    params, _ = model.init(KEY, q, kv, kv)
    want_out, want_w = model.apply(params, q, kv, kv, key_padding_mask=kpm)
    for need_weights in (True, False):

        def one(q1, kv1, m1, need_weights=need_weights):
            return model.apply(params, q1, kv1, kv1, key_padding_mask=m1, need_weights=need_weights)

        got_out, got_w = fnn.vmap(one)(q, kv, kpm)
        assert_trees_all_close(got_out, want_out, rtol=1e-5, atol=1e-6)
        if need_weights:
            assert_trees_all_close(got_w, want_w, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# KV-cache decoding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout,extras,chunks",
    [
        ("seq_first", {}, (1,) * 6),
        ("batch_first", {"add_bias_kv": True, "add_zero_attn": True}, (3, 1, 2)),
        ("unbatched", {}, (2, 2, 2)),
        ("batch_first", {"max_len": 9}, (1, 5)),
    ],
)
def test_cached_decoding_equals_full_causal_attention(layout, extras, chunks):
    T, N, E = 6, 2, 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn((N, T, E) if layout == "batch_first" else (T, N, E), dtype=F64, generator=g)
    if layout == "unbatched":
        x = x[:, 0]
    seq = 1 if layout == "batch_first" else 0
    model = nn.MultiheadAttention(2, batch_first=layout == "batch_first", **extras)
    params, cache = model.init(KEY, x, x, x, decode=True)
    max_len = extras.get("max_len", T)
    shape = (max_len, E) if layout == "unbatched" else (N, max_len, E)
    assert fnn.tree.map(lambda t: tuple(t.shape), cache) == {
        "cached_key": shape,
        "cached_value": shape,
        "cache_index": (),
    }
    assert cache["cache_index"].dtype == torch.int64
    causal = ~nn.make_causal_mask(T)
    want, want_w = model.apply(params, x, x, x, attn_mask=causal, average_attn_weights=False)
    outs, weights, start = [], [], 0
    for n in chunks:
        part = x.narrow(seq, start, n)
        old, before = cache, fnn.tree.map(torch.clone, cache)
        (out, w), cache = model.apply(
            params, part, part, part, state=old, decode=True, average_attn_weights=False
        )
        fnn.testing.assert_trees_all_equal(old, before)  # the given state is not modified
        outs.append(out)
        weights.append(w)
        start += n
        assert int(cache["cache_index"]) == start
    assert_trees_all_close(torch.cat(outs, seq), want, **TOL)
    got_w = torch.cat(weights, -2)  # keys: max_len cache slots, then bias_k / zero keys
    assert_trees_all_close(got_w[..., :T], want_w[..., :T], **TOL)
    assert torch.equal(got_w[..., T:max_len], torch.zeros_like(got_w[..., T:max_len]))
    assert_trees_all_close(got_w[..., max_len:], want_w[..., T:], **TOL)


def test_cached_decoding_errors():
    x = torch.zeros(4, 2, 8)
    model = _Wrap(nn.MultiheadAttention(2))
    params, cache = model.init(KEY, x, x, decode=True)
    with pytest.raises(ValueError, match=r"'attn': decode=True .* no attn_mask"):
        model.apply(params, x, x, state=cache, decode=True, attn_mask=torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"'attn': the KV cache has shape \(2, 4, 8\).*N=3"):
        model.apply(params, torch.zeros(1, 3, 8), torch.zeros(1, 3, 8), state=cache, decode=True)
    with pytest.raises(ValueError, match=r"must have query's length 1, got 4"):
        model.apply(params, x[:1], x, state=cache, decode=True)
    assert model.init(KEY, x, x)[1] == {}  # no cache without decode=True
    with pytest.raises(KeyError, match=r"'attn.cached_key'.*made by init with decode=True"):
        model.apply(params, x, x, state={}, decode=True)


def test_every_public_name_is_documented_with_shapes_and_an_example():
    for name in _attention.__all__:
        obj = getattr(nn, name)
        assert obj is getattr(_attention, name)
        doc = inspect.getdoc(obj) or ""
        assert "Shapes:" in doc and ">>>" in doc, name
