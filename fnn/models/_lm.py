"""A GPT-style decoder-only language model, its KV-cached decoding, and sampling.

:func:`transformer_lm` builds a :class:`TransformerLM`: token and learned position embeddings,
pre-LayerNorm blocks of causal :class:`fnn.nn.MultiheadAttention` and a GELU MLP, a final
LayerNorm and a linear head (or the token embedding, tied). The parameter names are those of
the ``torch.nn`` module written the same way (``tok_emb.weight``, ``pos_emb.weight``,
``blocks.0.ln1.weight``, ``blocks.0.attn.in_proj_weight``, ``blocks.0.mlp.0.weight``,
``ln_f.weight``, ``head.weight``).

Incremental decoding keeps a KV cache in ``state`` (pure: ``apply`` returns the new cache);
:func:`generate` uses it for greedy decoding and for temperature / top-k / nucleus sampling
with explicit keys (:func:`fnn.random.categorical`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fnn._src.prng import is_key, split
from fnn._src.samplers import categorical
from fnn._src.tree import map as tree_map
from fnn.nn import (
    GELU,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    MultiheadAttention,
    Scope,
    Sequential,
)
from fnn.nn._module import _where
from fnn.nn.initializers import Initializer, normal, zeros

__all__ = ["TransformerLM", "generate", "top_k_filter", "top_p_filter", "transformer_lm"]

Tensor = torch.Tensor

_STD = 0.02  # GPT-2's init: N(0, 0.02²) for embeddings and weight matrices


def _attention_init(std: float, out_std: float) -> Initializer:
    """``N(0, std²)`` for ``in_proj_weight`` ``(3E, E)``, ``N(0, out_std²)`` for
    ``out_proj.weight`` ``(E, E)`` (MultiheadAttention calls its ``weight_init`` for both)."""
    inner, outer = normal(std), normal(out_std)

    def init(key: Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> Tensor:
        return (outer if shape[0] == shape[1] else inner)(key, shape, dtype)

    return init


def _check_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"fnn.models.TransformerLM: {name} must be an int >= {minimum}, got {value!r}."
        )


class Block(Module):
    """One pre-LayerNorm GPT block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``.

    ``attn`` is causal multi-head self-attention (batch first, with a KV cache of
    ``context_length`` positions under ``decode=True``); ``mlp`` is ``Linear(hidden) → GELU →
    Linear(d_model)`` (names ``mlp.0``, ``mlp.2``). Dropout follows the attention and the MLP
    (and drops attention weights), in train mode.

    Shapes:
        input ``(N, L, d_model)``, output the same.

    Example:
        >>> import fnn, torch
        >>> block = fnn.models._lm.Block(2, 8, 32, 16, 0.0, 0.02)
        >>> params, _ = block.init_shapes(torch.zeros(2, 5, 8))
        >>> list(params), list(params["mlp"])
        (['ln1', 'attn', 'ln2', 'mlp'], ['0', '2'])
    """

    num_heads: int
    d_model: int
    hidden: int
    context_length: int
    dropout: float
    out_std: float

    def __post_init__(self) -> None:
        self.ln1 = LayerNorm()
        self.attn = MultiheadAttention(
            self.num_heads,
            dropout=self.dropout,
            batch_first=True,
            embed_dim=self.d_model,
            max_len=self.context_length,
            weight_init=_attention_init(_STD, self.out_std),
            bias_init=zeros,
        )
        self.ln2 = LayerNorm()
        self.mlp = Sequential(
            [
                Linear(self.hidden, weight_init=normal(_STD), bias_init=zeros),
                GELU(),
                Linear(self.d_model, weight_init=normal(self.out_std), bias_init=zeros),
            ]
        )
        self._drop = Dropout(self.dropout)

    def forward(self, scope: Scope, x: Tensor, decode: bool = False) -> Tensor:
        h = scope.ln1(x)
        h = scope.attn(h, h, h, need_weights=False, is_causal=not decode, decode=decode)[0]
        x = x + scope.child("dropout1", self._drop)(h)
        h = scope.mlp(scope.ln2(x))
        return x + scope.child("dropout2", self._drop)(h)


class _TiedHead(Module):
    """The tied output layer ``logits = x @ weight.T``, run under the token embedding's name so
    that ``weight`` *is* ``tok_emb.weight``."""

    num_embeddings: int
    features: int

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        w = scope.param("weight", (self.num_embeddings, self.features), normal(_STD))
        return F.linear(x, w)


class TransformerLM(Module):
    """A GPT-style decoder-only language model (see :func:`transformer_lm`).

    ``logits = head(ln_f(blocks(dropout(tok_emb(tokens) + pos_emb(positions)))))``; with
    ``tie_embeddings`` there is no ``head`` and ``logits = h @ tok_emb.weight.T``.

    Initialisation is GPT-2's: embeddings and weight matrices ``N(0, 0.02²)``, the residual
    output projections (``attn.out_proj.weight``, ``mlp.2.weight``) ``N(0, 0.02² / (2 *
    num_layers))``, biases zero, LayerNorms ``(1, 0)``. The head has no bias.

    **Incremental decoding.** ``apply(params, tokens, state=cache, decode=True)`` runs the next
    ``L`` tokens of each sequence, attending causally to all the earlier ones held in the KV
    cache, and returns ``(logits, new_cache)``; the position of each new token is read from the
    cache (``cache["cache_index"]``). The cache comes from :meth:`init_cache` (or from
    ``init(key, tokens, decode=True)``); it holds ``context_length`` positions per sequence, and
    running past them is an index error. Stepping a sequence through the cache gives the same
    logits as one call on the whole sequence.

    Args:
        vocab_size, context_length, d_model, num_layers, num_heads, mlp_ratio, dropout,
            tie_embeddings: see :func:`transformer_lm`.

    Shapes:
        ``tokens (N, L)`` integer ids with ``L <= context_length``, output ``(N, L,
        vocab_size)``; ``tok_emb.weight (vocab_size, d_model)``, ``pos_emb.weight
        (context_length, d_model)``, ``blocks.i.attn.in_proj_weight (3 d_model, d_model)``,
        ``blocks.i.mlp.0.weight (mlp_ratio d_model, d_model)``, ``head.weight (vocab_size,
        d_model)``; cache: ``blocks.i.attn.cached_key`` / ``cached_value`` ``(N,
        context_length, d_model)``, ``cache_index`` ``()`` int64.

    Example:
        >>> import fnn, torch
        >>> model = fnn.models.TransformerLM(50, 16, 32, num_layers=2, num_heads=4)
        >>> tokens = torch.randint(0, 50, (2, 10))
        >>> params, _ = model.init(fnn.random.key(0), tokens)
        >>> model.apply(params, tokens).shape
        torch.Size([2, 10, 50])
        >>> cache = model.init_cache(batch_size=2)
        >>> logits, cache = model.apply(params, tokens[:, :4], state=cache, decode=True)
        >>> logits, cache = model.apply(params, tokens[:, 4:5], state=cache, decode=True)
        >>> logits.shape, int(cache["cache_index"])
        (torch.Size([2, 1, 50]), 5)
    """

    vocab_size: int
    context_length: int
    d_model: int
    num_layers: int
    num_heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads"):
            _check_int(name, getattr(self, name))
        _check_int("mlp_ratio", self.mlp_ratio)
        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"fnn.models.TransformerLM: dropout must be in [0, 1], got {rate!r}.")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"fnn.models.TransformerLM: d_model={self.d_model} must be divisible by "
                f"num_heads={self.num_heads}."
            )
        d = self.d_model
        self.tok_emb = Embedding(self.vocab_size, d, weight_init=normal(_STD))
        self.pos_emb = Embedding(self.context_length, d, weight_init=normal(_STD))
        self._drop = Dropout(self.dropout)
        out_std = _STD / math.sqrt(2 * self.num_layers)
        self.blocks = tuple(
            Block(self.num_heads, d, self.mlp_ratio * d, self.context_length, rate, out_std)
            for _ in range(self.num_layers)
        )
        self.ln_f = LayerNorm()
        if self.tie_embeddings:
            self._tied = _TiedHead(self.vocab_size, d)
        else:
            self.head = Linear(self.vocab_size, bias=False, weight_init=normal(_STD))

    def forward(self, scope: Scope, tokens: Tensor, decode: bool = False) -> Tensor:
        where = _where(self, scope.path)
        if (
            not isinstance(tokens, Tensor)
            or tokens.ndim != 2
            or tokens.dtype not in (torch.int64, torch.int32)
        ):
            got = (
                f"a {tokens.dtype} tensor of shape {tuple(tokens.shape)}"
                if isinstance(tokens, Tensor)
                else f"a {type(tokens).__name__}"
            )
            raise ValueError(
                f"{where}: expected token ids as an int64 (or int32) tensor of shape (N, L), got "
                f"{got}."
            )
        L = tokens.shape[1]
        if L > self.context_length:
            raise ValueError(
                f"{where}: the sequence length {L} (tokens of shape {tuple(tokens.shape)}) exceeds "
                f"context_length={self.context_length}."
            )
        device = tokens.device
        if decode:
            index = scope.get_state("cache_index", lambda: torch.zeros((), dtype=torch.long))
            positions = index + torch.arange(L, device=device)
            scope.put_state("cache_index", index + L)
        else:
            positions = torch.arange(L, device=device)
        x = scope.tok_emb(tokens) + scope.pos_emb(positions)
        x = scope.child("dropout", self._drop)(x)
        for block in scope.blocks:
            x = block(x, decode=decode)
        x = scope.ln_f(x)
        if self.tie_embeddings:
            return scope.child("tok_emb", self._tied)(x)
        return scope.head(x)

    def init_cache(
        self,
        batch_size: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> dict:
        """An empty KV cache for ``batch_size`` sequences (the ``state`` of ``decode=True``).

        Args:
            batch_size: the number of sequences ``N`` decoded together.
            dtype: the parameters' floating dtype (default ``torch.get_default_dtype()``).
            device: where to create the cache.

        Shapes:
            ``blocks.i.attn.cached_key``, ``cached_value`` ``(N, context_length, d_model)``
            zeros; ``blocks.i.attn.cache_index`` and ``cache_index`` ``()`` int64 zeros.

        Example:
            >>> import fnn, torch
            >>> model = fnn.models.transformer_lm(50, 16, 32, num_layers=1, num_heads=4)
            >>> cache = model.init_cache(3)
            >>> fnn.tree.map(lambda t: tuple(t.shape), cache)  # doctest: +NORMALIZE_WHITESPACE
            {'cache_index': (), 'blocks': {'0': {'attn': {'cached_key': (3, 16, 32),
             'cached_value': (3, 16, 32), 'cache_index': ()}}}}
        """
        _check_int("batch_size", batch_size)
        tokens = torch.zeros(batch_size, 1, dtype=torch.long)
        _, like = self.init_shapes(tokens, dtype=dtype, decode=True)
        return tree_map(lambda t: torch.zeros(t.shape, dtype=t.dtype, device=device), like)


def transformer_lm(
    vocab_size: int,
    context_length: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    mlp_ratio: int = 4,
    dropout: float = 0.0,
    tie_embeddings: bool = False,
) -> TransformerLM:
    """A GPT-style decoder-only transformer language model.

    Token embedding ``tok_emb`` plus learned position embedding ``pos_emb``, ``num_layers``
    pre-LayerNorm blocks ``blocks.i`` (``ln1``, causal self-attention ``attn``, ``ln2``,
    ``mlp.0 → GELU → mlp.2``), a final ``ln_f`` and a bias-free linear ``head`` (absent with
    ``tie_embeddings``: the logits are ``h @ tok_emb.weight.T``). GPT-2's initialisation; see
    :class:`TransformerLM` for incremental decoding with a KV cache and :func:`generate`.

    Args:
        vocab_size: the number of token ids.
        context_length: the maximum sequence length (the rows of ``pos_emb``, the cache length).
        d_model: the embedding size.
        num_layers: the number of blocks.
        num_heads: the attention heads per block (must divide ``d_model``).
        mlp_ratio: the MLP's hidden size is ``mlp_ratio * d_model``.
        dropout: the dropout probability after the embeddings, on the attention weights and
            after each attention and MLP (train mode, with the key passed to ``apply``).
        tie_embeddings: use ``tok_emb.weight`` as the output layer (no ``head``).

    Shapes:
        input ``(N, L)`` token ids, ``L <= context_length``; output ``(N, L, vocab_size)``
        logits.

    Example:
        >>> import fnn, torch
        >>> model = fnn.models.transformer_lm(100, 32, 64, num_layers=2, num_heads=4,
        ...                                   tie_embeddings=True)
        >>> params, _ = model.init_shapes(torch.zeros(1, 32, dtype=torch.long))
        >>> shapes = fnn.tree.map(lambda t: tuple(t.shape), fnn.nn.to_state_dict(params))
        >>> [(k, v) for k, v in shapes.items() if not k.startswith("blocks.1")][:6]
        [('tok_emb.weight', (100, 64)), ('pos_emb.weight', (32, 64)), ('blocks.0.ln1.weight', (64,)), ('blocks.0.ln1.bias', (64,)), ('blocks.0.attn.in_proj_weight', (192, 64)), ('blocks.0.attn.in_proj_bias', (192,))]
        >>> "head.weight" in shapes
        False
    """  # noqa: E501
    return TransformerLM(
        vocab_size, context_length, d_model, num_layers, num_heads, mlp_ratio, dropout,
        tie_embeddings,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"{type(x).__name__} {x!r}"


def _check_top_k(k: object, where: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{where}: top_k must be an int >= 1, got {k!r}.")


def _check_top_p(p: object, where: str) -> None:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 < p <= 1.0:
        raise ValueError(f"{where}: top_p must be a probability in (0, 1], got {p!r}.")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row and set the others to ``-inf``.

    Logits equal to the ``k``-th largest are all kept (ties). ``k >= vocab`` keeps everything.

    Args:
        logits: unnormalised log-probabilities; the last dim indexes the vocabulary.
        k: the number of candidates to keep (``>= 1``).

    Shapes:
        ``logits (*, V)``, output ``(*, V)``.

    Example:
        >>> import fnn, torch
        >>> fnn.models.top_k_filter(torch.tensor([1.0, 3.0, 2.0, 0.0]), 2)
        tensor([-inf, 3., 2., -inf])
    """
    _check_top_k(k, "fnn.models.top_k_filter")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability
    mass reaches ``p``, and set the other logits to ``-inf``.

    Tokens are sorted by probability (``softmax(logits)``); a token is kept when the mass of
    the tokens before it is below ``p``, so the most likely token is always kept and the
    kept mass is ``>= p``. ``p >= 1`` keeps everything.

    Args:
        logits: unnormalised log-probabilities; the last dim indexes the vocabulary.
        p: the probability mass to keep, in ``(0, 1]``.

    Shapes:
        ``logits (*, V)``, output ``(*, V)``.

    Example:
        >>> import fnn, torch
        >>> probs = torch.tensor([0.1, 0.5, 0.15, 0.25])
        >>> fnn.models.top_p_filter(probs.log(), 0.7).exp()
        tensor([0.0000, 0.5000, 0.0000, 0.2500])
    """
    _check_top_p(p, "fnn.models.top_p_filter")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # the mass of the more likely tokens
    sorted_logits = sorted_logits.masked_fill(before >= p, float("-inf"))
    return torch.empty_like(logits).scatter(-1, order, sorted_logits)


def _next_token(
    logits: Tensor,
    key: Tensor | None,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    greedy: bool,
) -> Tensor:
    """The next token ``(N,)`` from the last position's logits ``(N, V)``."""
    if greedy:
        return torch.argmax(logits, dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return categorical(key, logits)


def generate(
    model: TransformerLM,
    params: dict,
    prompt: Tensor,
    max_new_tokens: int,
    key: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
) -> Tensor:
    """Continue ``prompt`` by ``max_new_tokens`` tokens, with the model's KV cache.

    The prompt is run once (filling the cache), then one token at a time: each new token is
    the argmax of the last logits (``greedy=True``), or is sampled from ``softmax(logits /
    temperature)`` after keeping only the ``top_k`` most likely tokens and/or the nucleus of
    mass ``top_p`` (:func:`top_k_filter`, :func:`top_p_filter`), with
    :func:`fnn.random.categorical` and the ``t``-th of ``fnn.random.split(key,
    max_new_tokens)``. Pure: the same key gives the same tokens, and nothing is modified.
    Runs in eval mode (no dropout).

    Args:
        model: a :class:`TransformerLM`.
        params: its parameters.
        prompt: the token ids to continue (at least one per sequence).
        max_new_tokens: the number of tokens to add; ``prompt`` length plus this must not
            exceed ``model.context_length``.
        key: a PRNG key; required unless ``greedy``.
        temperature: divides the logits before sampling (``> 0``; lower is sharper).
        top_k: sample only among the ``top_k`` most likely tokens.
        top_p: sample only within the nucleus of probability mass ``top_p``.
        greedy: take the most likely token each step (``key`` and the sampling options are
            then unused).

    Shapes:
        ``prompt (N, P)`` (or ``(P,)``), output ``(N, P + max_new_tokens)`` (or
        ``(P + max_new_tokens,)``): the prompt followed by the new tokens.

    Example:
        >>> import fnn, torch
        >>> model = fnn.models.transformer_lm(20, 16, 16, num_layers=1, num_heads=2)
        >>> prompt = torch.tensor([[1, 2, 3]])
        >>> params, _ = model.init(fnn.random.key(0), prompt)
        >>> out = fnn.models.generate(model, params, prompt, 5, key=fnn.random.key(1), top_k=5)
        >>> out.shape, out[:, :3].tolist()
        (torch.Size([1, 8]), [[1, 2, 3]])
        >>> torch.equal(out, fnn.models.generate(model, params, prompt, 5, key=fnn.random.key(1), top_k=5))
        True
    """  # noqa: E501
    where = "fnn.models.generate"
    if not isinstance(model, TransformerLM):
        raise TypeError(
            f"{where}: expected an fnn.models.TransformerLM, got {type(model).__name__}."
        )
    if not isinstance(prompt, Tensor) or prompt.ndim not in (1, 2) or prompt.shape[-1] < 1:
        got = (
            f"shape {tuple(prompt.shape)}" if isinstance(prompt, Tensor) else type(prompt).__name__
        )
        raise ValueError(
            f"{where}: expected a prompt of token ids of shape (N, P) or (P,) with P >= 1, "
            f"got {got}."
        )
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"{where}: max_new_tokens must be an int >= 0, got {max_new_tokens!r}.")
    total = prompt.shape[-1] + max_new_tokens
    if total > model.context_length:
        raise ValueError(
            f"{where}: the prompt length {prompt.shape[-1]} plus max_new_tokens={max_new_tokens} "
            f"is {total}, more than the model's context_length={model.context_length}."
        )
    if not greedy:
        if key is None:
            raise ValueError(
                f"{where}: sampling needs a PRNG key: pass key=fnn.random.key(...), or greedy=True."
            )
        if not is_key(key):
            raise TypeError(
                f"{where}: expected a PRNG key (a torch.uint32 tensor of shape (2,), made by "
                f"fnn.random.key(seed)), got {_describe(key)}."
            )
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not temperature > 0
        ):
            raise ValueError(
                f"{where}: temperature must be > 0, got {temperature!r}; use greedy=True for "
                "argmax decoding."
            )
        if top_k is not None:
            _check_top_k(top_k, where)
        if top_p is not None:
            _check_top_p(top_p, where)
    batched = prompt.ndim == 2
    tokens = prompt if batched else prompt[None]
    if max_new_tokens == 0:
        return prompt.clone()
    dtype = params["tok_emb"]["weight"].dtype
    cache = model.init_cache(tokens.shape[0], dtype, tokens.device)
    logits, cache = model.apply(params, tokens, state=cache, decode=True)
    keys = None if greedy else split(key, max_new_tokens)
    out = [tokens]
    for t in range(max_new_tokens):
        step_key = None if keys is None else keys[t]
        nxt = _next_token(logits[:, -1], step_key, temperature, top_k, top_p, greedy)[:, None]
        out.append(nxt.to(tokens.dtype))
        if t + 1 < max_new_tokens:
            logits, cache = model.apply(params, out[-1], state=cache, decode=True)
    result = torch.cat(out, dim=1)
    return result if batched else result[0]
