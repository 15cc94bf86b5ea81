"""fnn.models transformers: the ViTs equal torchvision's VisionTransformer, the language model
equals its torch.nn twin, cached decoding equals recomputation, and sampling is specified.

The ViT twin below is torchvision's ``vision_transformer.py`` written out (torchvision is not a
test dependency): ``MLPBlock`` (torchvision's ``ops.MLP``: Linear, GELU, Dropout, Linear,
Dropout, with its init loop), ``EncoderBlock``, ``Encoder`` and ``VisionTransformer`` with its
init and forward. When torchvision is importable, the fnn ViT is also checked against
``torchvision.models.VisionTransformer`` itself.

Golden files ``tests/golden/models/{vit_b_16,vit_tiny,transformer_lm,transformer_lm_tied}.json``
record each model's parameter (and cache) names, shapes and dtypes; after a deliberate change
regenerate them with ``FNN_UPDATE_GOLDEN=1 python -m pytest tests/test_models_transformer.py``
and review the diff.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections import OrderedDict
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn as tnn

import fnn
from fnn import models, nn
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

GOLDEN = Path(__file__).parent / "golden" / "models"
KEY = fnn.random.key(0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# torchvision's VisionTransformer, written out
# ---------------------------------------------------------------------------------------------


class TorchMLPBlock(tnn.Sequential):
    """torchvision's ``MLPBlock(in_dim, mlp_dim, dropout)`` = ``ops.MLP(in_dim, [mlp_dim,
    in_dim], activation_layer=nn.GELU, inplace=None, dropout=dropout)`` and its init."""

    def __init__(self, in_dim, mlp_dim, dropout):
        super().__init__(
            tnn.Linear(in_dim, mlp_dim),
            tnn.GELU(),
            tnn.Dropout(dropout),
            tnn.Linear(mlp_dim, in_dim),
            tnn.Dropout(dropout),
        )
        for m in self.modules():
            if isinstance(m, tnn.Linear):
                tnn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    tnn.init.normal_(m.bias, std=1e-6)


class TorchEncoderBlock(tnn.Module):
    def __init__(self, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout, norm_layer):
        super().__init__()
        self.num_heads = num_heads
        self.ln_1 = norm_layer(hidden_dim)
        self.self_attention = tnn.MultiheadAttention(
            hidden_dim, num_heads, dropout=attention_dropout, batch_first=True
        )
        self.dropout = tnn.Dropout(dropout)
        self.ln_2 = norm_layer(hidden_dim)
        self.mlp = TorchMLPBlock(hidden_dim, mlp_dim, dropout)

    def forward(self, input):
        torch._assert(
            input.dim() == 3, f"Expected (batch_size, seq_length, hidden_dim) got {input.shape}"
        )
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x)
        x = x + input
        y = self.ln_2(x)
        y = self.mlp(y)
        return x + y


class TorchEncoder(tnn.Module):
    def __init__(
        self, seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout,
        norm_layer,
    ):  # fmt: skip
        super().__init__()
        self.pos_embedding = tnn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = tnn.Dropout(dropout)
        layers = OrderedDict()
        for i in range(num_layers):
            layers[f"encoder_layer_{i}"] = TorchEncoderBlock(
                num_heads, hidden_dim, mlp_dim, dropout, attention_dropout, norm_layer
            )
        self.layers = tnn.Sequential(layers)
        self.ln = norm_layer(hidden_dim)

    def forward(self, input):
        input = input + self.pos_embedding
        return self.ln(self.layers(self.dropout(input)))


class TorchVisionTransformer(tnn.Module):
    def __init__(
        self, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, dropout=0.0,
        attention_dropout=0.0, num_classes=1000, representation_size=None,
        norm_layer=partial(tnn.LayerNorm, eps=1e-6),  # noqa: B008 (torchvision's signature)
    ):  # fmt: skip
        super().__init__()
        torch._assert(image_size % patch_size == 0, "Input shape indivisible by patch size!")
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.conv_proj = tnn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        seq_length = (image_size // patch_size) ** 2
        self.class_token = tnn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length += 1
        self.encoder = TorchEncoder(
            seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout,
            norm_layer,
        )  # fmt: skip
        heads_layers = OrderedDict()
        if representation_size is None:
            heads_layers["head"] = tnn.Linear(hidden_dim, num_classes)
        else:
            heads_layers["pre_logits"] = tnn.Linear(hidden_dim, representation_size)
            heads_layers["act"] = tnn.Tanh()
            heads_layers["head"] = tnn.Linear(representation_size, num_classes)
        self.heads = tnn.Sequential(heads_layers)
        fan_in = (
            self.conv_proj.in_channels
            * self.conv_proj.kernel_size[0]
            * self.conv_proj.kernel_size[1]
        )
        tnn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        tnn.init.zeros_(self.conv_proj.bias)
        if hasattr(self.heads, "pre_logits"):
            fan_in = self.heads.pre_logits.in_features
            tnn.init.trunc_normal_(self.heads.pre_logits.weight, std=math.sqrt(1 / fan_in))
            tnn.init.zeros_(self.heads.pre_logits.bias)
        tnn.init.zeros_(self.heads.head.weight)
        tnn.init.zeros_(self.heads.head.bias)

    def _process_input(self, x):
        n, _, h, w = x.shape
        p = self.patch_size
        torch._assert(h == self.image_size, "Wrong image height!")
        torch._assert(w == self.image_size, "Wrong image width!")
        n_h, n_w = h // p, w // p
        x = self.conv_proj(x)
        x = x.reshape(n, self.hidden_dim, n_h * n_w)
        return x.permute(0, 2, 1)

    def forward(self, x):
        x = self._process_input(x)
        n = x.shape[0]
        batch_class_token = self.class_token.expand(n, -1, -1)
        x = torch.cat([batch_class_token, x], dim=1)
        x = self.encoder(x)
        x = x[:, 0]
        return self.heads(x)


SMALL_VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)


def _randomize_heads(twin: tnn.Module, seed: int) -> None:
    """torchvision zero-initialises the head (logits would be 0): draw it to compare."""
    g = _gen(seed)
    with torch.no_grad():
        for p in twin.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def _images(n=2, size=32, seed=0, dtype=torch.float64):
    return torch.randn(n, 3, size, size, generator=_gen(seed), dtype=dtype)


def _named_grads(twin: tnn.Module) -> dict:
    return {k: p.grad for k, p in twin.named_parameters()}


# ---------------------------------------------------------------------------------------------
# ViT: equal to torchvision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("representation_size", [None, 12])
def test_vit_loads_torchvisions_state_dict_and_equals_it_with_gradients(representation_size):
    torch.manual_seed(0)
    twin = TorchVisionTransformer(
        **SMALL_VIT, num_classes=10, representation_size=representation_size
    ).double()
    _randomize_heads(twin, 1)
    model = models.VisionTransformer(
        **SMALL_VIT, num_classes=10, representation_size=representation_size
    )
    x = _images()
    params, state = nn.from_state_dict(model, twin.state_dict(), x)
    assert state == {}
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())  # names and order

    twin.eval()
    assert_trees_all_close(model.apply(params, x), twin(x).detach(), rtol=1e-10, atol=1e-10)

    # gradients w.r.t. the parameters and the images (train mode; dropout 0)
    twin.train()
    xt = x.clone().requires_grad_(True)
    twin(xt).square().sum().backward()
    loss = lambda p, x: model.apply(p, x, train=True).square().sum()  # noqa: E731
    grads, dx = fnn.grad(loss, argnums=(0, 1))(params, x)
    assert_trees_all_close(dict(nn.to_state_dict(grads)), _named_grads(twin), rtol=1e-9, atol=1e-10)
    assert_trees_all_close(dx, xt.grad, rtol=1e-9, atol=1e-10)


def test_vit_float32_logits_equal_the_twin():
    torch.manual_seed(1)
    twin = TorchVisionTransformer(**SMALL_VIT, num_classes=7).eval()
    _randomize_heads(twin, 2)
    model = models.VisionTransformer(**SMALL_VIT, num_classes=7)
    x = _images(4, dtype=torch.float32)
    params, _ = nn.from_state_dict(model, twin.state_dict(), x)
    with torch.no_grad():  # torch's fast path (native MHA) in eval inference
        want = twin(x)
    assert_trees_all_close(model.apply(params, x), want, rtol=1e-5, atol=1e-5)


def test_vit_equals_torchvision_when_installed():
    if importlib.util.find_spec("torchvision") is not None:
        from torchvision.models import VisionTransformer as TVViT

        torch.manual_seed(2)
        tv = TVViT(**SMALL_VIT, num_classes=5).double().eval()
        _randomize_heads(tv, 3)
        model = models.VisionTransformer(**SMALL_VIT, num_classes=5)
        x = _images()
        params, _ = nn.from_state_dict(model, tv.state_dict(), x)
        assert list(nn.to_state_dict(params)) == list(tv.state_dict())
        assert_trees_all_close(model.apply(params, x), tv(x).detach(), rtol=1e-10, atol=1e-10)
        from torchvision.models import vit_b_16 as tv_vit_b_16

        with torch.device("meta"):
            tv16 = tv_vit_b_16()
        fnn16, _ = models.vit_b_16().init_shapes(torch.zeros(1, 3, 224, 224))
        got = {k: tuple(v.shape) for k, v in nn.to_state_dict(fnn16).items()}
        assert got == {k: tuple(v.shape) for k, v in tv16.state_dict().items()}


@pytest.mark.parametrize(
    ("make", "sizes"),
    [(models.vit_b_16, (16, 12, 12, 768, 3072)), (models.vit_tiny, (16, 12, 3, 192, 768))],
)
def test_vit_b_16_and_tiny_have_the_twins_names_shapes_and_order(make, sizes):
    with torch.device("meta"):  # shapes only, nothing drawn
        twin = TorchVisionTransformer(224, *sizes)
    params, state = make().init_shapes(torch.zeros(1, 3, 224, 224))
    got = [(k, tuple(v.shape)) for k, v in nn.to_state_dict(params, state).items()]
    assert got == [(k, tuple(v.shape)) for k, v in twin.state_dict().items()]


def test_vit_init_follows_torchvisions_distributions():
    model = models.VisionTransformer(32, 8, 1, 4, 64, 256, num_classes=10)
    params, _ = model.init(KEY, torch.zeros(1, 3, 32, 32))
    sd = nn.to_state_dict(params)
    w = sd["conv_proj.weight"]  # trunc_normal_(std=sqrt(1/fan_in)), bounds +-2 absolute
    std = math.sqrt(1 / (3 * 8 * 8))
    assert abs(w.std().item() - std) < 0.1 * std and w.abs().max() < 2
    assert sd["conv_proj.bias"].eq(0).all() and sd["class_token"].eq(0).all()
    assert abs(sd["encoder.pos_embedding"].std().item() - 0.02) < 0.002
    block = "encoder.layers.encoder_layer_0."
    for name, (fan_out, fan_in) in (("mlp.0", (256, 64)), ("mlp.3", (64, 256))):
        bound = math.sqrt(6 / (fan_in + fan_out))  # xavier_uniform_
        assert sd[block + name + ".weight"].abs().max() <= bound
        assert sd[block + name + ".weight"].abs().max() > 0.9 * bound
        b = sd[block + name + ".bias"]  # normal_(std=1e-6)
        assert 0 < b.abs().max() < 1e-5 and abs(b.std().item() - 1e-6) < 3e-7
    assert sd[block + "self_attention.in_proj_weight"].abs().max() <= math.sqrt(6 / (64 + 192))
    assert sd[block + "self_attention.in_proj_bias"].eq(0).all()
    assert sd[block + "self_attention.out_proj.bias"].eq(0).all()
    assert sd[block + "self_attention.out_proj.weight"].abs().max() <= 1 / math.sqrt(64)
    assert sd[block + "ln_1.weight"].eq(1).all() and sd["encoder.ln.bias"].eq(0).all()
    assert sd["heads.head.weight"].eq(0).all() and sd["heads.head.bias"].eq(0).all()
    rep = models.VisionTransformer(32, 8, 1, 4, 64, 256, representation_size=100)
    p2, _ = rep.init(KEY, torch.zeros(1, 3, 32, 32))
    pre = p2["heads"]["pre_logits"]["weight"]
    assert abs(pre.std().item() - math.sqrt(1 / 64)) < 0.1 * math.sqrt(1 / 64)


def test_vit_dropout_uses_the_key_and_eval_ignores_it():
    model = models.VisionTransformer(**SMALL_VIT, num_classes=4, dropout=0.2, attention_dropout=0.1)
    x = _images(dtype=torch.float32)
    params, _ = model.init(KEY, x)
    params["heads"]["head"]["weight"] = torch.randn(4, 16, generator=_gen(5))
    k1, k2 = fnn.random.split(fnn.random.key(1))
    a = model.apply(params, x, key=k1, train=True)
    assert torch.equal(a, model.apply(params, x, key=k1, train=True))
    assert not torch.allclose(a, model.apply(params, x, key=k2, train=True))
    assert torch.equal(model.apply(params, x), model.apply(params, x, key=k1))
    with pytest.raises(ValueError, match="needs a PRNG key in train mode"):
        model.apply(params, x, train=True)


def test_vit_under_vmap_and_does_not_modify_its_inputs():
    model = models.VisionTransformer(**SMALL_VIT, num_classes=3)
    x = _images(3, dtype=torch.float32)
    params, _ = model.init(KEY, x)
    params["heads"]["head"]["weight"] = torch.randn(3, 16, generator=_gen(6))
    before = fnn.tree.map(torch.clone, (params, x))
    full = model.apply(params, x)
    per_example = fnn.vmap(lambda xi: model.apply(params, xi[None])[0])(x)
    assert_trees_all_close(per_example, full, rtol=1e-5, atol=1e-6)
    assert_trees_all_equal((params, x), before)


def test_vit_errors_name_the_module_and_shapes():
    model = models.VisionTransformer(**SMALL_VIT)
    with pytest.raises(
        ValueError,
        match=r"VisionTransformer \(the root module\): expected images of shape "
        r"\(N, C, 32, 32\) \(image_size=32\), got shape \(2, 3, 64, 64\)",
    ):
        model.init_shapes(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="image_size=30 is not divisible by patch_size=8"):
        models.VisionTransformer(30, 8, 1, 2, 16, 32)
    with pytest.raises(ValueError, match="hidden_dim=16 must be divisible by num_heads=3"):
        models.VisionTransformer(32, 8, 1, 3, 16, 32)
    with pytest.raises(ValueError, match="dropout must be in"):
        models.VisionTransformer(**SMALL_VIT, dropout=1.5)
    inner = nn.Sequential([nn.Identity(), model])
    with pytest.raises(ValueError, match=r"VisionTransformer at '1': expected images"):
        inner.init_shapes(torch.zeros(2, 3, 16, 16))


# ---------------------------------------------------------------------------------------------
# The language model and its torch twin
# ---------------------------------------------------------------------------------------------


class TorchBlock(tnn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.ln1 = tnn.LayerNorm(d)
        self.attn = tnn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = tnn.LayerNorm(d)
        self.mlp = tnn.Sequential(tnn.Linear(d, hidden), tnn.GELU(), tnn.Linear(hidden, d))

    def forward(self, x):
        L = x.shape[1]
        mask = tnn.Transformer.generate_square_subsequent_mask(L, dtype=x.dtype)
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, is_causal=True, need_weights=False)
        x = x + a
        return x + self.mlp(self.ln2(x))


class TorchLM(tnn.Module):
    def __init__(self, vocab, ctx, d, layers, heads, mlp_ratio=4, tie=False):
        super().__init__()
        self.tok_emb = tnn.Embedding(vocab, d)
        self.pos_emb = tnn.Embedding(ctx, d)
        self.blocks = tnn.ModuleList(TorchBlock(d, heads, mlp_ratio * d) for _ in range(layers))
        self.ln_f = tnn.LayerNorm(d)
        self.tie = tie
        if not tie:
            self.head = tnn.Linear(d, vocab, bias=False)

    def forward(self, tokens):
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return F.linear(x, self.tok_emb.weight) if self.tie else self.head(x)


LM = dict(vocab_size=23, context_length=12, d_model=16, num_layers=2, num_heads=4)


def _tokens(n, length, vocab=23, seed=0):
    return torch.randint(0, vocab, (n, length), generator=_gen(seed))


def _lm(tie=False, dtype=torch.float32, **kw):
    model = models.transformer_lm(**{**LM, **kw}, tie_embeddings=tie)
    params, _ = model.init(KEY, _tokens(1, 4), dtype=dtype)
    return model, params


@settings(max_examples=6, deadline=None)
@given(
    tie=st.booleans(),
    n=st.integers(1, 3),
    length=st.integers(1, 12),
    mlp_ratio=st.sampled_from([1, 4]),
)
def test_lm_equals_its_torch_twin_logits_and_gradients(tie, n, length, mlp_ratio):
    model, params = _lm(tie, torch.float64, mlp_ratio=mlp_ratio)
    twin = TorchLM(*LM.values(), mlp_ratio=mlp_ratio, tie=tie).double()
    twin.load_state_dict(nn.to_state_dict(params), strict=True)  # names and shapes match
    tokens = _tokens(n, length, seed=length)
    targets = _tokens(n, length, seed=length + 100)

    twin.eval()
    with torch.no_grad():
        want = twin(tokens)
    assert_trees_all_close(model.apply(params, tokens), want, rtol=1e-9, atol=1e-10)

    twin.train()
    F.cross_entropy(twin(tokens).flatten(0, 1), targets.flatten()).backward()

    def loss(p):
        logits = model.apply(p, tokens, train=True)
        return fnn.losses.cross_entropy(logits.flatten(0, 1), targets.flatten())

    grads = fnn.grad(loss)(params)
    assert_trees_all_close(dict(nn.to_state_dict(grads)), _named_grads(twin), rtol=1e-8, atol=1e-11)


def test_lm_names_and_gpt2_init():
    _, params = _lm()
    sd = nn.to_state_dict(params)
    assert list(sd)[:8] == [
        "tok_emb.weight",
        "pos_emb.weight",
        "blocks.0.ln1.weight",
        "blocks.0.ln1.bias",
        "blocks.0.attn.in_proj_weight",
        "blocks.0.attn.in_proj_bias",
        "blocks.0.attn.out_proj.weight",
        "blocks.0.attn.out_proj.bias",
    ]
    assert list(sd)[-3:] == ["ln_f.weight", "ln_f.bias", "head.weight"]
    assert "head.bias" not in sd and "head.weight" not in nn.to_state_dict(_lm(tie=True)[1])
    big = models.transformer_lm(256, 32, 64, num_layers=6, num_heads=4)
    p, state = big.init(KEY, _tokens(1, 4))
    assert state == {}
    sd = nn.to_state_dict(p)
    out_std = 0.02 / math.sqrt(2 * 6)
    for name, std in (
        ("tok_emb.weight", 0.02),
        ("pos_emb.weight", 0.02),
        ("blocks.3.attn.in_proj_weight", 0.02),
        ("blocks.3.attn.out_proj.weight", out_std),
        ("blocks.3.mlp.0.weight", 0.02),
        ("blocks.3.mlp.2.weight", out_std),
        ("head.weight", 0.02),
    ):
        assert abs(sd[name].std().item() - std) < 0.05 * std, name
        assert abs(sd[name].mean().item()) < 0.1 * std, name
    for name in ("attn.in_proj_bias", "attn.out_proj.bias", "mlp.0.bias", "mlp.2.bias", "ln1.bias"):
        assert sd[f"blocks.5.{name}"].eq(0).all(), name
    assert sd["blocks.5.ln2.weight"].eq(1).all()


def test_lm_decoding_one_token_or_a_chunk_at_a_time_equals_the_full_sequence():
    for tie in (False, True):
        model, params = _lm(tie, torch.float64)
        tokens = _tokens(2, 12, seed=7)
        full = model.apply(params, tokens)
        cache = model.init_cache(2, torch.float64)
        _, init_cache = model.init(KEY, tokens, decode=True, dtype=torch.float64)
        assert_trees_all_equal(cache, init_cache)  # the same empty cache either way
        before = fnn.tree.map(torch.clone, cache)
        steps = []
        for a, b in ((0, 5), (5, 6), (6, 7), (7, 10), (10, 11), (11, 12)):
            logits, new = model.apply(params, tokens[:, a:b], state=cache, decode=True)
            assert (
                int(new["cache_index"]) == b and int(new["blocks"]["1"]["attn"]["cache_index"]) == b
            )
            if a == 0:
                assert_trees_all_equal(cache, before)  # apply never modifies the cache given
            cache = new
            steps.append(logits)
        assert_trees_all_close(torch.cat(steps, dim=1), full, rtol=1e-10, atol=1e-12)


def _greedy_by_recomputation(model, params, prompt, n):
    tokens = prompt
    for _ in range(n):
        nxt = model.apply(params, tokens)[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens


def test_cached_greedy_generation_equals_recomputing_the_full_sequence():
    for tie in (False, True):
        model, params = _lm(tie, torch.float64)
        prompt = _tokens(3, 4, seed=11)
        out = models.generate(model, params, prompt, 8, greedy=True)
        assert out.shape == (3, 12) and torch.equal(out[:, :4], prompt)
        assert torch.equal(out, _greedy_by_recomputation(model, params, prompt, 8))
        unbatched = models.generate(model, params, prompt[1], 8, greedy=True)
        assert torch.equal(unbatched, out[1])


def test_sampling_is_reproducible_from_the_key_and_follows_categorical():
    model, params = _lm()
    prompt = _tokens(4, 3, seed=12)
    k1, k2 = fnn.random.split(fnn.random.key(3))
    a = models.generate(model, params, prompt, 6, key=k1, temperature=2.0)
    assert torch.equal(a, models.generate(model, params, prompt, 6, key=k1, temperature=2.0))
    assert not torch.equal(a, models.generate(model, params, prompt, 6, key=k2, temperature=2.0))
    # step t samples fnn.random.categorical(split(key, n)[t], logits / temperature)
    tokens, keys = prompt, fnn.random.split(k1, 6)
    for t in range(6):
        logits = model.apply(params, tokens)[:, -1] / 2.0
        tokens = torch.cat([tokens, fnn.random.categorical(keys[t], logits)[:, None]], dim=1)
    assert torch.equal(a, tokens)
    assert torch.equal(models.generate(model, params, prompt, 0, key=k1), prompt)


def test_top_k_1_equals_greedy_and_top_k_samples_only_the_top_k():
    model, params = _lm()
    prompt = _tokens(2, 3, seed=13)
    greedy = models.generate(model, params, prompt, 7, greedy=True)
    for i in range(2):
        key = fnn.random.key(i)
        assert torch.equal(models.generate(model, params, prompt, 7, key=key, top_k=1), greedy)
    # 32 copies of each prompt in one batch: 32 independent draws of the next token each
    top3 = model.apply(params, prompt)[:, -1].topk(3).indices.repeat(32, 1)
    nxt = models.generate(model, params, prompt.repeat(32, 1), 1, key=KEY, top_k=3)[:, -1]
    assert (nxt[:, None] == top3).any(dim=1).all()
    assert len(set(nxt.tolist())) > 2  # it samples (the near-uniform logits of a new model)


def test_top_k_filter_on_hand_made_logits():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.0, 0.0, 1.0, -1.0, 0.5]])
    inf = float("-inf")
    assert_trees_all_equal(
        models.top_k_filter(logits, 2),
        torch.tensor([[inf, 5.0, inf, 4.0, inf], [inf, inf, 1.0, inf, 0.5]]),
    )
    assert torch.equal(models.top_k_filter(logits, 5), logits)
    assert torch.equal(models.top_k_filter(logits, 99), logits)
    with pytest.raises(ValueError, match="top_k must be an int >= 1, got 0"):
        models.top_k_filter(logits, 0)


def test_top_p_filter_keeps_the_smallest_nucleus_with_enough_mass():
    probs = torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15], [0.7, 0.1, 0.1, 0.05, 0.05]])
    logits = probs.log() + torch.tensor([[1.5], [-2.0]])  # softmax is shift-invariant
    # sorted, row 0 is 0.4, 0.3, 0.15, 0.1, 0.05 (tokens 1, 3, 4, 2, 0): masses before each
    # token 0, 0.4, 0.7, 0.85, 0.95; row 1 is 0.7, 0.1, 0.1, 0.05, 0.05: 0, 0.7, 0.8, 0.9, 0.95
    for p, keep in (
        (0.3, [[1], [0]]),  # the most likely token alone has mass >= p
        (0.55, [[1, 3], [0]]),
        (0.75, [[1, 3, 4], [0, None]]),  # None: one of the tied 0.1 tokens 1, 2
        (0.88, [[1, 3, 4, 2], [0, 1, 2]]),
        (0.97, [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]),
        (1.0, [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]),
    ):
        filtered = models.top_p_filter(logits, p)
        for row in range(2):
            kept = sorted(torch.isfinite(filtered[row]).nonzero().flatten().tolist())
            if None in keep[row]:
                assert kept in ([0, 1], [0, 2]), kept
            else:
                assert kept == sorted(keep[row]), (p, row, kept)
            # kept logits are unchanged: the masked distribution is the renormalised nucleus
            assert torch.equal(filtered[row, kept], logits[row, kept])
            masked = torch.softmax(filtered[row], -1)
            nucleus = probs[row, kept] / probs[row, kept].sum()
            assert_trees_all_close(masked[kept], nucleus, rtol=1e-6)
            assert masked.sum().item() == pytest.approx(1.0) and masked[kept].sum() > 1 - 1e-6
    with pytest.raises(ValueError, match=r"top_p must be a probability in \(0, 1\], got 0"):
        models.top_p_filter(logits, 0)


def test_top_p_generation_samples_only_inside_the_nucleus():
    model, params = _lm()
    prompt = _tokens(3, 5, seed=14)
    last = model.apply(params, prompt)[:, -1]
    allowed = torch.isfinite(models.top_p_filter(last, 0.3))
    assert (allowed.sum(-1) < last.shape[-1]).all()
    nxt = models.generate(model, params, prompt.repeat(32, 1), 1, key=KEY, top_p=0.3)[:, -1]
    assert allowed.repeat(32, 1)[torch.arange(96), nxt].all()
    assert len(set(nxt[::3].tolist())) > 1  # it samples inside the nucleus of prompt 0
    both = models.generate(model, params, prompt, 4, key=fnn.random.key(0), top_k=4, top_p=0.9)
    assert both.shape == (3, 9)


def test_lm_dropout_under_keys_and_vmap_and_purity():
    model = models.transformer_lm(**LM, dropout=0.3)
    tokens = _tokens(3, 6, seed=15)
    params, _ = model.init(KEY, tokens)
    before = fnn.tree.map(torch.clone, (params, tokens))
    k = fnn.random.key(4)
    a = model.apply(params, tokens, key=k, train=True)
    assert torch.equal(a, model.apply(params, tokens, key=k, train=True))
    assert not torch.allclose(a, model.apply(params, tokens, key=fnn.random.key(5), train=True))
    with pytest.raises(ValueError, match="needs a PRNG key in train mode"):
        model.apply(params, tokens, train=True)
    full = model.apply(params, tokens)
    per_example = fnn.vmap(lambda t: model.apply(params, t[None])[0])(tokens)
    assert_trees_all_close(per_example, full, rtol=1e-5, atol=1e-6)
    assert_trees_all_equal((params, tokens), before)


def test_lm_and_generate_errors_say_what_was_expected():
    model, params = _lm()
    with pytest.raises(
        ValueError,
        match=r"TransformerLM \(the root module\): expected token ids as an int64 \(or int32\) "
        r"tensor of shape \(N, L\), got a torch.float32",
    ):
        model.apply(params, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"the sequence length 13 .* exceeds context_length=12"):
        model.apply(params, _tokens(1, 13))
    with pytest.raises(ValueError, match="d_model=16 must be divisible by num_heads=3"):
        models.transformer_lm(10, 8, 16, 1, 3)
    with pytest.raises(ValueError, match="num_layers must be an int >= 1, got 0"):
        models.transformer_lm(10, 8, 16, 0, 2)
    prompt = _tokens(1, 4)
    with pytest.raises(ValueError, match="sampling needs a PRNG key"):
        models.generate(model, params, prompt, 2)
    with pytest.raises(TypeError, match=r"expected a PRNG key .* got int 0"):
        models.generate(model, params, prompt, 2, key=0)
    with pytest.raises(ValueError, match="prompt length 4 plus max_new_tokens=9 is 13, more than"):
        models.generate(model, params, prompt, 9, greedy=True)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        models.generate(model, params, prompt, 2, key=KEY, temperature=0)
    with pytest.raises(ValueError, match="top_p must be a probability"):
        models.generate(model, params, prompt, 2, key=KEY, top_p=1.5)
    with pytest.raises(TypeError, match=r"expected an fnn\.models\.TransformerLM"):
        models.generate(nn.Linear(3), params, prompt, 2, greedy=True)
    cache = model.init_cache(2)
    with pytest.raises(ValueError, match=r"the KV cache has shape \(2, 12, 16\), expected"):
        model.apply(params, prompt, state=cache, decode=True)


# ---------------------------------------------------------------------------------------------
# The compiled train step (the only compiled test in this file)
# ---------------------------------------------------------------------------------------------


def test_compiled_lm_train_step_compiles_once_and_matches_eager():
    model = models.transformer_lm(17, 8, 16, num_layers=2, num_heads=2)
    params, _ = model.init(KEY, _tokens(4, 8, vocab=17))

    def step(params, tokens, targets, lr):
        def loss_fn(p):
            logits = model.apply(p, tokens)
            return fnn.losses.cross_entropy(logits.flatten(0, 1), targets.flatten())

        loss, grads = fnn.value_and_grad(loss_fn)(params)
        return fnn.tree.map(lambda p, g: p - lr * g, params, grads), loss

    compiled = fnn.jit(step, donate_argnums=0)
    lr = torch.tensor(0.5)
    ep, cp = params, fnn.tree.map(torch.clone, params)
    for i in range(3):
        tokens, targets = _tokens(4, 8, vocab=17, seed=20 + i), _tokens(4, 8, vocab=17, seed=30 + i)
        ep, eloss = step(ep, tokens, targets, lr)
        cp, closs = compiled(cp, tokens, targets, lr)
        assert_trees_all_close(closs, eloss, rtol=1e-4, atol=1e-6)
    assert compiled.num_compiles == 1
    assert_trees_all_close(cp, ep, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(ep["head"]["weight"], params["head"]["weight"])  # it trained


# ---------------------------------------------------------------------------------------------
# Golden files (only this file's models; tests/test_models_cnn.py owns the others)
# ---------------------------------------------------------------------------------------------

_LONG = torch.long
GOLDEN_MODELS = {
    "vit_b_16": (models.vit_b_16, lambda: torch.zeros(1, 3, 224, 224), {}),
    "vit_tiny": (models.vit_tiny, lambda: torch.zeros(1, 3, 224, 224), {}),
    "transformer_lm": (
        lambda: models.transformer_lm(100, 32, 64, num_layers=2, num_heads=4),
        lambda: torch.zeros(1, 32, dtype=_LONG),
        {"decode": True},  # records the KV cache layout too
    ),
    "transformer_lm_tied": (
        lambda: models.transformer_lm(100, 32, 64, num_layers=2, num_heads=4, tie_embeddings=True),
        lambda: torch.zeros(1, 32, dtype=_LONG),
        {},
    ),
}


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = [list(v.shape), str(v.dtype).removeprefix("torch.")]
    return out


@pytest.mark.parametrize("name", sorted(GOLDEN_MODELS))
def test_parameter_names_shapes_and_dtypes_match_the_golden_file(name):
    make, inputs, kwargs = GOLDEN_MODELS[name]
    params, state = make().init_shapes(inputs(), **kwargs)
    got = {"params": _flat(params), "state": _flat(state)}
    path = GOLDEN / f"{name}.json"
    if os.environ.get("FNN_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n")
    assert path.exists(), f"no golden file {path}; run with FNN_UPDATE_GOLDEN=1 and review it"
    want = json.loads(path.read_text())
    assert got == want, (
        f"{name}: parameter layout changed.\n  golden: {want}\n  now:    {got}\n"
        "If deliberate, regenerate with FNN_UPDATE_GOLDEN=1 and review the diff."
    )
