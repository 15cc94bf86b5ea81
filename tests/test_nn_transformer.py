"""Transformer layers, stacks and the full Transformer equal their torch.nn twins."""

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
from fnn.nn import _transformer
from fnn.testing import assert_trees_all_close

F64 = torch.float64
KEY = fnn.random.key(0)
TOL = {"rtol": 1e-7, "atol": 1e-10}

pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")


@pytest.fixture(autouse=True)
def _no_torch_fastpath():
    """torch's fused inference path may differ in the last bits; compare the reference path."""
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


def _check_against_torch(model, twin, inputs, kwargs, train=False):
    """Init fnn, load into the twin, compare key lists, outputs and gradients (params, inputs)."""
    params, state = model.init(KEY, *inputs, **kwargs)
    assert state == {}
    sd = nn.to_state_dict(params, state)
    assert list(sd) == list(twin.state_dict())  # names, and torch's order
    twin.load_state_dict(sd, strict=True)
    twin.train(train)

    xs = [x.clone().requires_grad_(True) for x in inputs]
    leaves, spec = fnn.tree.flatten(params)
    leaves = [t.detach().requires_grad_(True) for t in leaves]
    y = model.apply(fnn.tree.unflatten(spec, leaves), *xs, train=train, **kwargs)
    grads = torch.autograd.grad((y * y).sum(), [*leaves, *xs])

    txs = [x.clone().requires_grad_(True) for x in inputs]
    ty = twin(*txs, **kwargs)
    (ty * ty).sum().backward()

    assert_trees_all_close(y, ty.detach(), **TOL)
    pgrads = fnn.tree.unflatten(spec, list(grads[: len(leaves)]))
    assert_trees_all_close(pgrads, _nest({k: p.grad for k, p in twin.named_parameters()}), **TOL)
    assert_trees_all_close(list(grads[len(leaves) :]), [x.grad for x in txs], **TOL)
    return params


def _seq(length, N, E, batched, batch_first, g):
    if not batched:
        return torch.randn(length, E, dtype=F64, generator=g)
    shape = (N, length, E) if batch_first else (length, N, E)
    return torch.randn(shape, dtype=F64, generator=g)


def _masks(kind, L, S, N, batched, g, causal=False):
    """(attn_mask, key_padding_mask) in torch's convention, never blocking key 0."""
    if kind is None:
        return None, None
    if causal:
        blocked = ~torch.ones(L, S, dtype=torch.bool).tril()
    else:
        blocked = torch.rand(L, S, generator=g) > 0.6
        blocked[:, 0] = False
    kpm = torch.rand((N, S) if batched else (S,), generator=g) > 0.6
    kpm[..., 0] = False
    if kind == "bool":
        return blocked, kpm
    to_float = lambda m: torch.zeros(m.shape, dtype=F64).masked_fill(m, -math.inf)  # noqa: E731
    return to_float(blocked), to_float(kpm)


ACTIVATIONS = {
    "relu": ("relu", F.relu),
    "gelu": ("gelu", F.gelu),
    "silu": (F.silu, F.silu),
    "gelu_tanh_module": (nn.GELU("tanh"), tnn.GELU(approximate="tanh")),
}

layer_options = dict(
    nhead=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    dim_ff=st.integers(1, 6),
    N=st.integers(1, 2),
    layout=st.sampled_from(["seq_first", "batch_first", "unbatched"]),
    norm_first=st.booleans(),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    bias=st.booleans(),
    mask_kind=st.sampled_from([None, "bool", "float"]),
    train=st.booleans(),
)


@settings(max_examples=15, deadline=None)
@given(L=st.integers(1, 4), is_causal=st.booleans(), **layer_options)
def test_encoder_layer_matches_torch(
    L, is_causal, nhead, head_dim, dim_ff, N, layout, norm_first, activation, bias, mask_kind, train
):
    g = torch.Generator().manual_seed(L * 100 + nhead * 10 + head_dim)
    E, batched, bf = nhead * head_dim, layout != "unbatched", layout == "batch_first"
    causal = is_causal and mask_kind is not None
    src_mask, kpm = _masks(mask_kind, L, L, N, batched, g, causal)
    ours, theirs = ACTIVATIONS[activation]
    model = nn.TransformerEncoderLayer(
        nhead, dim_ff, 0.0, ours, batch_first=bf, norm_first=norm_first, bias=bias
    )
    twin = tnn.TransformerEncoderLayer(
        E, nhead, dim_ff, 0.0, theirs, batch_first=bf, norm_first=norm_first, bias=bias, dtype=F64
    )
    kwargs = dict(src_mask=src_mask, src_key_padding_mask=kpm, is_causal=causal)
    _check_against_torch(model, twin, [_seq(L, N, E, batched, bf, g)], kwargs, train)


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 4), S=st.integers(1, 4), tgt_causal=st.booleans(), **layer_options)
def test_decoder_layer_matches_torch(
    T,
    S,
    tgt_causal,
    nhead,
    head_dim,
    dim_ff,
    N,
    layout,
    norm_first,
    activation,
    bias,
    mask_kind,
    train,
):
    g = torch.Generator().manual_seed(T * 100 + S * 10 + nhead)
    E, batched, bf = nhead * head_dim, layout != "unbatched", layout == "batch_first"
    causal = tgt_causal and mask_kind is not None
    tgt_mask, tgt_kpm = _masks(mask_kind, T, T, N, batched, g, causal)
    memory_mask, memory_kpm = _masks(mask_kind, T, S, N, batched, g)
    ours, theirs = ACTIVATIONS[activation]
    model = nn.TransformerDecoderLayer(
        nhead, dim_ff, 0.0, ours, batch_first=bf, norm_first=norm_first, bias=bias
    )
    twin = tnn.TransformerDecoderLayer(
        E, nhead, dim_ff, 0.0, theirs, batch_first=bf, norm_first=norm_first, bias=bias, dtype=F64
    )
    kwargs = dict(
        tgt_mask=tgt_mask,
        memory_mask=memory_mask,
        tgt_key_padding_mask=tgt_kpm,
        memory_key_padding_mask=memory_kpm,
        tgt_is_causal=causal,
    )
    inputs = [_seq(T, N, E, batched, bf, g), _seq(S, N, E, batched, bf, g)]
    _check_against_torch(model, twin, inputs, kwargs, train)


@pytest.mark.parametrize("norm_first,train", [(False, False), (True, True)])
def test_stacks_and_transformer_match_torch(norm_first, train):
    g = torch.Generator().manual_seed(0)
    E, H, FF, N, S, T = 8, 2, 12, 2, 5, 4
    src, tgt = (
        torch.randn(N, S, E, dtype=F64, generator=g),
        torch.randn(N, T, E, dtype=F64, generator=g),
    )
    src_kpm = torch.tensor([[False] * S, [False] * 3 + [True] * (S - 3)])
    tgt_mask = tnn.Transformer.generate_square_subsequent_mask(T, dtype=F64)
    common = dict(batch_first=True, norm_first=norm_first)
    enc_layer = nn.TransformerEncoderLayer(H, FF, 0.0, **common)
    t_enc_layer = tnn.TransformerEncoderLayer(E, H, FF, 0.0, dtype=F64, **common)
    encoder = nn.TransformerEncoder(enc_layer, 3, nn.LayerNorm())
    t_encoder = tnn.TransformerEncoder(t_enc_layer, 3, tnn.LayerNorm(E, dtype=F64))
    _check_against_torch(encoder, t_encoder, [src], {"src_key_padding_mask": src_kpm}, train)
    _check_against_torch(
        nn.TransformerEncoder(enc_layer, 2),
        tnn.TransformerEncoder(t_enc_layer, 2, enable_nested_tensor=False),
        [src],
        {"mask": tgt_mask.new_zeros(S, S).fill_(0.5), "is_causal": False},
        train,
    )
    dec_layer = nn.TransformerDecoderLayer(H, FF, 0.0, **common)
    t_dec_layer = tnn.TransformerDecoderLayer(E, H, FF, 0.0, dtype=F64, **common)
    _check_against_torch(
        nn.TransformerDecoder(dec_layer, 2, nn.LayerNorm()),
        tnn.TransformerDecoder(t_dec_layer, 2, tnn.LayerNorm(E, dtype=F64)),
        [tgt, src],
        {"tgt_mask": tgt_mask, "memory_key_padding_mask": src_kpm, "tgt_is_causal": True},
        train,
    )
    model = nn.Transformer(H, 2, 2, FF, 0.0, **common)
    twin = tnn.Transformer(E, H, 2, 2, FF, 0.0, dtype=F64, **common)
    kwargs = dict(tgt_mask=tgt_mask, src_key_padding_mask=src_kpm, memory_key_padding_mask=src_kpm)
    _check_against_torch(model, twin, [src, tgt], kwargs, train)


def test_transformer_defaults_and_init_follow_torch():
    E, FF = 16, 32
    src, tgt = torch.zeros(3, 2, E), torch.zeros(4, 2, E)
    model = nn.Transformer(num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=FF)
    params, _ = model.init(KEY, src, tgt)
    twin = tnn.Transformer(E, 8, 1, 1, FF)  # torch's defaults: nhead=8, dropout=0.1, relu, ...
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())
    for name, t in nn.to_state_dict(params).items():
        assert t.dtype == torch.float32
        if t.ndim > 1:  # Transformer._reset_parameters: xavier-uniform on every matrix
            bound = math.sqrt(6 / (t.shape[0] + t.shape[1]))
            assert bound * 0.8 < t.abs().max() <= bound, name
    enc = params["encoder"]["layers"]["0"]
    assert torch.equal(enc["norm1"]["weight"], torch.ones(E))
    assert enc["linear1"]["bias"].abs().max() <= 1 / math.sqrt(E)  # Linear's default bias
    assert torch.equal(enc["self_attn"]["in_proj_bias"], torch.zeros(3 * E))
    # A layer on its own keeps Linear's default weight init (torch does not xavier it).
    layer_params, _ = nn.TransformerEncoderLayer(8, FF).init(KEY, src)
    assert layer_params["linear1"]["weight"].abs().max() <= 1 / math.sqrt(E)
    assert layer_params["self_attn"]["out_proj"]["weight"].abs().max() <= 1 / math.sqrt(E)
    mask = nn.Transformer.generate_square_subsequent_mask(5, dtype=F64)
    assert torch.equal(mask, tnn.Transformer.generate_square_subsequent_mask(5, dtype=F64))


def test_dropout_is_keyed_reproducible_and_off_in_eval():
    src = torch.randn(5, 2, 8)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(2, 16, dropout=0.3), 2)
    params, _ = model.init(KEY, src)
    a = model.apply(params, src, key=fnn.random.key(1), train=True)
    b = model.apply(params, src, key=fnn.random.key(1), train=True)
    c = model.apply(params, src, key=fnn.random.key(2), train=True)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    no_dropout = nn.TransformerEncoder(nn.TransformerEncoderLayer(2, 16, dropout=0.0), 2)
    ref = no_dropout.apply(params, src)
    assert not torch.allclose(a, ref)
    assert torch.equal(model.apply(params, src), ref)  # eval mode: no dropout, no key needed
    with pytest.raises(ValueError, match=r"at 'layers\.0\.self_attn' needs a PRNG key"):
        model.apply(params, src, train=True)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_cached_decoding_equals_full_causal_recomputation(norm_first, batch_first):
    g = torch.Generator().manual_seed(1)
    T, S, N, E = 6, 5, 2, 8
    seq = 1 if batch_first else 0
    shape = lambda n: (N, n, E) if batch_first else (n, N, E)  # noqa: E731
    tgt, memory = torch.randn(shape(T), generator=g), torch.randn(shape(S), generator=g)
    memory_kpm = torch.tensor([[False] * S, [False] * 3 + [True] * (S - 3)])
    model = nn.TransformerDecoder(
        nn.TransformerDecoderLayer(
            2, 16, 0.1, "gelu", batch_first=batch_first, norm_first=norm_first
        ),
        num_layers=2,
        norm=nn.LayerNorm(),
    )
    params, cache = model.init(KEY, tgt, memory, decode=True)
    assert sorted(cache["layers"]["1"]["self_attn"]) == [
        "cache_index",
        "cached_key",
        "cached_value",
    ]
    assert model.init(KEY, tgt, memory)[0].keys() == params.keys()
    full = model.apply(
        params,
        tgt,
        memory,
        tgt_mask=~nn.make_causal_mask(T),
        memory_key_padding_mask=memory_kpm,
        tgt_is_causal=True,
    )
    outs, start = [], 0
    for n in (2, 1, 1, 2):  # a prefill of two tokens, then single steps, then two
        y, cache = model.apply(
            params,
            tgt.narrow(seq, start, n),
            memory,
            state=cache,
            memory_key_padding_mask=memory_kpm,
            decode=True,
        )
        outs.append(y)
        start += n
    assert_trees_all_close(torch.cat(outs, seq), full, rtol=1e-5, atol=1e-6)
    assert int(cache["layers"]["0"]["self_attn"]["cache_index"]) == T


def test_transformer_decode_matches_the_full_forward():
    g = torch.Generator().manual_seed(2)
    src, tgt = torch.randn(5, 2, 8, generator=g), torch.randn(4, 2, 8, generator=g)
    model = nn.Transformer(2, 1, 2, 16)
    params, cache = model.init(KEY, src, tgt, decode=True)
    full = model.apply(params, src, tgt, tgt_mask=~nn.make_causal_mask(4))
    outs = []
    for t in range(4):
        y, cache = model.apply(params, src, tgt[t : t + 1], state=cache, decode=True)
        outs.append(y)
    assert_trees_all_close(torch.cat(outs), full, rtol=1e-5, atol=1e-6)
    # The parts separately: encode once, decode step by step.
    memory = model.encoder.apply(params["encoder"], src)
    _, dcache = model.decoder.init(KEY, tgt, memory, decode=True)
    y0, _ = model.decoder.apply(params["decoder"], tgt[:1], memory, state=dcache, decode=True)
    assert_trees_all_close(y0, outs[0], rtol=1e-6, atol=1e-6)


def test_encoder_layer_under_vmap_is_per_example():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 8, generator=g)
    model = nn.TransformerEncoderLayer(2, 16, batch_first=True)
    params, _ = model.init(KEY, x)
    got = fnn.vmap(lambda row: model.apply(params, row))(x)
    assert_trees_all_close(got, model.apply(params, x), rtol=1e-5, atol=1e-6)


def test_apply_does_not_modify_its_inputs():
    src, tgt = torch.randn(5, 2, 8), torch.randn(3, 2, 8)
    model = nn.Transformer(2, 1, 1, 16)
    params, cache = model.init(KEY, src, tgt, decode=True)
    before = fnn.tree.map(torch.clone, (params, cache, src, tgt))
    model.apply(params, src, tgt[:1], state=cache, decode=True, key=KEY, train=True)
    fnn.testing.assert_trees_all_equal((params, cache, src, tgt), before)


def test_errors_name_the_module_path_and_shapes():
    model = nn.Transformer(2, 1, 1, 16, d_model=8)
    src, tgt = torch.zeros(5, 2, 8), torch.zeros(3, 2, 8)
    params, _ = model.init(KEY, src, tgt)
    with pytest.raises(
        ValueError, match=r"Transformer \(the root module\): the batch sizes.*dim 1"
    ):
        model.apply(params, src, torch.zeros(3, 3, 8))
    with pytest.raises(ValueError, match=r"equal d_model=8; got src \(5, 2, 6\)"):
        model.apply(params, torch.zeros(5, 2, 6), tgt)
    layer = nn.TransformerEncoder(nn.TransformerEncoderLayer(2, 16), 2)
    params, _ = layer.init(KEY, src)
    with pytest.raises(
        ValueError, match=r"'layers\.0\.self_attn'.*shape \(24, 8\), expected \(18, 6\)"
    ):
        layer.apply(params, torch.zeros(5, 2, 6))
    with pytest.raises(ValueError, match=r"TransformerEncoderLayer at 'layers\.0': expected `src`"):
        layer.apply(params, torch.zeros(8))
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(2, 16), 1)
    params, cache = dec.init(KEY, tgt, src, decode=True)
    with pytest.raises(
        ValueError, match=r"Layer at 'layers\.0': expected `memory`.*shape \(5, 2, 4\)"
    ):
        dec.apply(params, tgt, torch.zeros(5, 2, 4))
    with pytest.raises(ValueError, match=r"'layers\.0': decode=True .* tgt_mask"):
        dec.apply(params, tgt, src, tgt_mask=torch.zeros(3, 3), state=cache, decode=True)
    with pytest.raises(ValueError, match=r"activation should be 'relu' or 'gelu', not 'tanh'"):
        nn.TransformerEncoderLayer(2, activation="tanh")
    with pytest.raises(ValueError, match=r"dropout must be a probability.*got 2"):
        nn.TransformerEncoderLayer(8, 2, 2)  # torch's (d_model, nhead, ...) order
    with pytest.raises(ValueError, match=r"num_layers must be a positive int"):
        nn.TransformerEncoder(nn.TransformerEncoderLayer(2), 0)


def test_every_public_name_is_documented_with_shapes_and_an_example():
    for name in _transformer.__all__:
        obj = getattr(nn, name)
        assert obj is getattr(_transformer, name)
        doc = inspect.getdoc(obj) or ""
        assert "Shapes:" in doc and ">>>" in doc, name
        assert issubclass(obj, nn.Module)
