"""Attention: ``dot_product_attention``, mask helpers and ``MultiheadAttention``.

Two mask conventions meet here, so every function says which one it takes:

* **fnn / SDPA convention** -- :func:`dot_product_attention`, :func:`make_causal_mask` and
  :func:`make_padding_mask`: a boolean mask is ``True`` where a query **may attend** (as
  ``torch.nn.functional.scaled_dot_product_attention``'s ``attn_mask``); a float mask is added
  to the attention scores (``0`` to attend, ``-inf`` to block).
* **torch.nn.MultiheadAttention convention** -- :class:`MultiheadAttention` (and the
  Transformer layers) take ``attn_mask`` / ``key_padding_mask`` exactly as their ``torch.nn``
  twins: a boolean mask is ``True`` where attention is **not allowed** (``True`` = ignore /
  padding); a float mask is added to the scores.

Convert with ``~``: ``key_padding_mask = ~make_padding_mask(lengths, S)``.

Dropout on attention weights takes its randomness only from an explicit key (the ``key=``
of :func:`dot_product_attention`, or the module's ``scope.key`` in train mode), never from
torch's global generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from fnn._src.initializers import Initializer, xavier_normal, xavier_uniform, zeros
from fnn._src.samplers import bernoulli
from fnn._src.tracing import in_transform
from fnn.nn._defaults import fan_in_bias_init, torch_weight_init
from fnn.nn._dropout import _dropout, _key
from fnn.nn._linear import Linear, _check_features
from fnn.nn._module import Module, Scope, _where

__all__ = [
    "MultiheadAttention",
    "dot_product_attention",
    "make_causal_mask",
    "make_padding_mask",
]

Tensor = torch.Tensor

_XAVIER_UNIFORM = xavier_uniform()
_XAVIER_NORMAL = xavier_normal()


def _shape_of(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else f"a {type(x).__name__}"


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def make_causal_mask(
    L: int, S: int | None = None, device: torch.device | str | None = None
) -> Tensor:
    """The boolean causal mask ``mask[i, j] = j <= i`` (``True`` = may attend).

    Lower-triangular and aligned to the top-left corner, exactly the mask that
    ``scaled_dot_product_attention(..., is_causal=True)`` applies, also when ``L != S``.
    For :class:`MultiheadAttention` (torch's convention, ``True`` = blocked) pass ``~mask``,
    or the float mask ``torch.nn.Transformer.generate_square_subsequent_mask(L)``.

    Args:
        L: the number of queries (target length).
        S: the number of keys (source length); default ``L``.
        device: where to create the mask.

    Shapes:
        output ``(L, S)``, ``torch.bool``.

    Example:
        >>> import fnn
        >>> fnn.nn.make_causal_mask(3)
        tensor([[ True, False, False],
                [ True,  True, False],
                [ True,  True,  True]])
    """
    S = L if S is None else S
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()


def make_padding_mask(lengths_or_bool: Tensor, max_len: int | None = None) -> Tensor:
    """A boolean ``(N, S)`` mask that is ``True`` on real tokens and ``False`` on padding.

    Given integer ``lengths`` of shape ``(N,)``, ``mask[n, s] = s < lengths[n]``. Given a
    boolean ``(N, S)`` tensor, it is read as "is a real token" (e.g. ``tokens != pad_id``)
    and returned as is (checked against ``max_len`` when that is given).

    **Conventions.** This mask is ``True`` = attend, the convention of
    :func:`dot_product_attention` and of ``scaled_dot_product_attention``'s boolean
    ``attn_mask``; there, pass ``mask[:, None, None, :]`` (broadcast over heads and queries).
    ``torch.nn.MultiheadAttention``, the ``torch.nn.Transformer*`` layers and their fnn twins
    take a ``key_padding_mask`` with the **opposite** convention, ``True`` = padding (ignored):
    pass ``key_padding_mask=~mask`` to them.

    Args:
        lengths_or_bool: integer lengths ``(N,)``, or a boolean ``(N, S)`` real-token mask.
        max_len: the padded length ``S``. Default for lengths: ``lengths.max()`` (a host sync,
            so give it explicitly under ``torch.compile``).

    Shapes:
        input ``(N,)`` integers or ``(N, S)`` booleans, output ``(N, S)`` booleans.

    Example:
        >>> import fnn, torch
        >>> mask = fnn.nn.make_padding_mask(torch.tensor([1, 3]), 4)
        >>> mask
        tensor([[ True, False, False, False],
                [ True,  True,  True, False]])
        >>> ~mask  # the key_padding_mask of (fnn.)nn.MultiheadAttention: True = padding
        tensor([[False,  True,  True,  True],
                [False, False, False,  True]])
    """
    x = lengths_or_bool
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dtype == torch.bool:
        if x.ndim != 2 or (max_len is not None and x.shape[1] != max_len):
            want = f"(N, {max_len})" if max_len is not None else "(N, S)"
            raise ValueError(
                f"fnn.nn.make_padding_mask: expected a boolean mask of shape {want}, got "
                f"shape {tuple(x.shape)}."
            )
        return x
    if x.dtype.is_floating_point or x.dtype.is_complex or x.ndim != 1:
        raise ValueError(
            "fnn.nn.make_padding_mask: expected integer lengths of shape (N,) or a boolean "
            f"mask of shape (N, S), got a {x.dtype} tensor of shape {tuple(x.shape)}."
        )
    if max_len is None:
        max_len = int(x.max()) if x.numel() else 0
    return torch.arange(max_len, device=x.device) < x[:, None]


# --------------------------------------------------------------------------------------------
# dot_product_attention
# --------------------------------------------------------------------------------------------


def _check_dims(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> None:
    where = "fnn.nn.dot_product_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.ndim < 2:
            raise ValueError(
                f"{where}: expected `{name}` with at least 2 dims, got {_shape_of(t)}."
            )
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"{where}: expected q (..., L, E), k (..., S, E), v (..., S, Ev); got q "
            f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}."
        )
    if mask is not None:
        L, S = q.shape[-2], k.shape[-2]
        ok = isinstance(mask, Tensor) and (mask.dtype == torch.bool or mask.is_floating_point())
        rows_ok = ok and (mask.ndim < 2 or mask.shape[-2] in (1, L))
        if not (rows_ok and (mask.ndim == 0 or mask.shape[-1] in (1, S))):
            got = f"a {mask.dtype} tensor of " if isinstance(mask, Tensor) else ""
            raise ValueError(
                f"{where}: expected a boolean or float `mask` broadcastable to (..., {L}, {S}) "
                f"(L, S from q and k), got {got}{_shape_of(mask)}."
            )


def _with_causal(mask: Tensor, L: int, S: int) -> Tensor:
    causal = make_causal_mask(L, S, mask.device)
    if mask.dtype == torch.bool:
        return mask & causal
    return mask.masked_fill(~causal, float("-inf"))


def _scores(q: Tensor, k: Tensor, mask: Tensor | None, is_causal: bool, scale: float) -> Tensor:
    s = (q * scale) @ k.transpose(-2, -1)
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        mask = make_causal_mask(L, S, q.device) if mask is None else _with_causal(mask, L, S)
    if mask is None:
        return s
    if mask.dtype == torch.bool:
        return s.masked_fill(~mask, float("-inf"))
    return s + mask


def _keyed_dropout(w: Tensor, rate: float, key: Tensor) -> Tensor:
    if rate >= 1:
        return w * torch.zeros((), dtype=w.dtype, device=w.device)
    return _dropout(w, bernoulli(key, 1.0 - rate, tuple(w.shape)), rate)


def _explicit_math() -> bool:
    """Whether to write SDPA's math out: under ``vmap`` its CPU kernels have no batching rule
    (torch would loop over the batch, with a warning). Eager: any active ``vmap``. Compiling:
    any active ``torch.func`` transform (the precise check does not trace). A plain compiled
    step keeps SDPA: the transformer LM step of ``benchmarks.run`` took 0.64x eager torch with
    it and 0.72-0.75x with the math written out."""
    if torch.compiler.is_compiling():
        return in_transform()
    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


def dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_rate: float = 0.0,
    key: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """``softmax(q @ k^T * scale + mask) @ v``, on ``scaled_dot_product_attention``.

    Without dropout this is one call of ``torch.nn.functional.scaled_dot_product_attention``
    (so its fused kernels are used; under ``fnn.vmap``, where those kernels have no batching
    rule, the same math is written out). With ``dropout_rate > 0`` the attention weights are
    computed explicitly, a dropout mask drawn from ``key`` (``fnn.random``; never torch's global
    generator) zeroes each weight with probability ``dropout_rate`` and scales the rest by
    ``1 / (1 - dropout_rate)``, and the result is multiplied with ``v``. Queries that may attend
    to no key give zeros, as in ``scaled_dot_product_attention``.

    Args:
        q, k, v: queries, keys and values.
        mask: a boolean mask, ``True`` where a query **may attend** to a key (SDPA's
            convention; the opposite of ``torch.nn.MultiheadAttention``'s masks), or a float
            mask added to the scores. Broadcastable to ``(..., L, S)``.
        is_causal: also apply the causal mask of :func:`make_causal_mask` (``mask`` may be
            given too: both apply).
        dropout_rate: the probability of dropping an attention weight (``0`` = no dropout).
        key: the PRNG key of the dropout mask; required when ``dropout_rate > 0``.
        scale: the score scale; default ``1 / sqrt(E)``.

    Shapes:
        ``q (..., L, E)``, ``k (..., S, E)``, ``v (..., S, Ev)``, output ``(..., L, Ev)``
        (typically ``(N, heads, L, E)``).

    Raises:
        ValueError: for mismatched shapes, or ``dropout_rate > 0`` without a ``key``.

    Example:
        >>> import fnn, torch
        >>> q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 3)
        >>> fnn.nn.dot_product_attention(q, k, v).shape
        torch.Size([2, 4, 5, 3])
        >>> y = fnn.nn.dot_product_attention(q, k, v, dropout_rate=0.1, key=fnn.random.key(0))
        >>> y.shape
        torch.Size([2, 4, 5, 3])
    """
    _check_dims(q, k, v, mask)
    if isinstance(dropout_rate, bool) or not 0.0 <= dropout_rate <= 1.0:
        raise ValueError(
            "fnn.nn.dot_product_attention: dropout_rate must be a number in [0, 1], got "
            f"{dropout_rate!r}."
        )
    if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    explicit = dropout_rate > 0 or _explicit_math()
    if dropout_rate > 0:
        if key is None:
            raise ValueError(
                f"fnn.nn.dot_product_attention: dropout_rate={dropout_rate} needs a PRNG key "
                "for the dropout mask: pass key=fnn.random.key(...) (a new key each step), or "
                "dropout_rate=0.0."
            )
    if explicit:
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        w = torch.ops.aten._safe_softmax(_scores(q, k, mask, is_causal, scale), -1)
        return (_keyed_dropout(w, dropout_rate, key) if dropout_rate > 0 else w) @ v
    if is_causal and mask is not None:
        mask, is_causal = _with_causal(mask, q.shape[-2], k.shape[-2]), False
    return F.scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal, scale=scale)


# --------------------------------------------------------------------------------------------
# MultiheadAttention
# --------------------------------------------------------------------------------------------


class _LinearTo(Linear):
    """``Linear`` told its output size when called: ``out_proj`` and the Transformer's
    ``linear2`` map to ``d_model``, known only from the input. Errors and summaries call it
    ``Linear``, as torch's twin is one."""

    features: int | None = None

    def forward(self, scope: Scope, x: Tensor, features: int) -> Tensor:
        fan_in = _check_features(self, scope, x)
        w = scope.param("weight", (features, fan_in), self.weight_init or torch_weight_init)
        b = None
        if self.bias:
            b = scope.param("bias", (features,), self.bias_init or fan_in_bias_init(fan_in))
        return F.linear(x, w, b)


_LinearTo.__name__ = _LinearTo.__qualname__ = "Linear"


def _float_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """torch's ``_canonical_mask``: a boolean mask (``True`` = blocked) as ``0`` / ``-inf``."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)


class MultiheadAttention(Module):
    """Multi-head attention, the twin of ``torch.nn.MultiheadAttention`` (size inferred).

    ``out = concat(head_1, ..., head_h) @ out_proj.weight.T + out_proj.bias`` with
    ``head_i = softmax(q_i k_i^T / sqrt(E / h) + mask) v_i`` over the projections
    ``q = query @ W_q.T + b_q`` (likewise ``k``, ``v``). Same parameters, layouts, defaults,
    masks and outputs as torch; ``embed_dim`` ``E`` comes from ``query.shape[-1]`` and the key
    and value sizes from ``key`` and ``value``. When those equal ``E`` the projections are
    packed into ``in_proj_weight (3E, E)``, else they are ``q_proj_weight (E, E)``,
    ``k_proj_weight (E, kdim)`` and ``v_proj_weight (E, vdim)`` (torch's rule).

    Masks follow **torch's convention** (boolean ``True`` = may NOT attend; float masks are
    added to the scores; see the module docstring): ``attn_mask`` ``(L, S)`` or
    ``(N * num_heads, L, S)``, ``key_padding_mask`` ``(N, S)`` (``True`` = padding).
    ``is_causal=True`` applies the causal mask; unlike torch, ``attn_mask`` may then be omitted.

    In train mode attention weights are dropped with probability ``dropout`` using the key
    passed to ``apply`` (an error without one); eval mode uses no dropout.

    **Incremental decoding** (a pure KV cache): ``init(..., decode=True)`` creates the state
    ``cached_key``, ``cached_value`` ``(N, max_len, E)`` (``(max_len, E)`` unbatched) and
    ``cache_index`` (``int64``, 0-d). Each ``apply(..., state=state, decode=True)`` with ``L``
    new tokens (self-attention: ``query``, ``key`` and ``value`` all hold the new tokens)
    writes their projected keys and values at ``cache_index``, attends causally over the cache
    and returns the state with ``cache_index + L``. Stepping a sequence through this equals the
    causal attention over the whole sequence. The cache is not part of torch's ``state_dict``:
    use ``fnn.nn.to_state_dict(params)`` (without the state) for the torch twin. Writing past
    ``max_len`` is an index error.

    Args:
        num_heads: the number of heads ``h`` (must divide ``E``).
        dropout: the dropout probability on the attention weights (train mode).
        bias: whether to learn ``in_proj_bias`` and ``out_proj.bias``.
        add_bias_kv: whether to learn ``bias_k``, ``bias_v`` ``(1, 1, E)`` appended to the keys
            and values.
        add_zero_attn: whether to append a zero key and value.
        kdim, vdim: the key and value sizes; optional (inferred), checked when given.
        batch_first: inputs are ``(N, L, E)`` instead of ``(L, N, E)``.
        embed_dim: ``E``; optional (inferred from ``query``), checked when given.
        max_len: the cache length for ``decode=True``; default the length of the input ``init``
            was called with.
        weight_init: initializer of every projection matrix (``in_proj_weight`` or the
            ``*_proj_weight`` and ``out_proj.weight``); default torch's: xavier-uniform for the
            input projections, ``U(-1/sqrt(E), 1/sqrt(E))`` for ``out_proj.weight``.
        bias_init: initializer of ``in_proj_bias`` and ``out_proj.bias``; default zeros (torch).

    Shapes:
        ``query (L, N, E)`` (``(N, L, E)`` with ``batch_first``; ``(L, E)`` unbatched),
        ``key (S, N, kdim)``, ``value (S, N, vdim)``; output ``(attn_output, attn_weights)``:
        ``attn_output`` shaped like ``query``, ``attn_weights`` ``(N, L, S)`` averaged over heads
        (``(N, num_heads, L, S)`` with ``average_attn_weights=False``; no ``N`` unbatched), or
        ``None`` with ``need_weights=False``. ``S`` counts the added bias/zero keys.

    Example:
        >>> import fnn, torch
        >>> mha = fnn.nn.MultiheadAttention(num_heads=2, batch_first=True)
        >>> x = torch.randn(3, 5, 8)
        >>> params, state = mha.init(fnn.random.key(0), x, x, x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'in_proj_weight': (24, 8), 'in_proj_bias': (24,), 'out_proj': {'weight': (8, 8), 'bias': (8,)}}
        >>> out, weights = mha.apply(params, x, x, x)
        >>> out.shape, weights.shape
        (torch.Size([3, 5, 8]), torch.Size([3, 5, 5]))

        Cached decoding, one token at a time:

        >>> _, cache = mha.init(fnn.random.key(0), x, x, x, decode=True)
        >>> fnn.tree.map(lambda t: tuple(t.shape), cache)
        {'cached_key': (3, 5, 8), 'cached_value': (3, 5, 8), 'cache_index': ()}
        >>> step = x[:, :1]
        >>> out, _ = mha.apply(params, step, step, step, state=cache, decode=True)[0]
        >>> out.shape
        torch.Size([3, 1, 8])
    """  # noqa: E501

    num_heads: int
    dropout: float = 0.0
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False
    kdim: int | None = None
    vdim: int | None = None
    batch_first: bool = False
    embed_dim: int | None = None
    max_len: int | None = None
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        name = "fnn.nn.MultiheadAttention"
        h = self.num_heads
        if isinstance(h, bool) or not isinstance(h, int) or h <= 0:
            raise ValueError(f"{name}: num_heads must be a positive int, got {h!r}.")
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d <= 1.0:
            raise ValueError(
                f"{name}: dropout must be a probability in [0, 1], got {d!r}. (fnn infers "
                "embed_dim: write MultiheadAttention(num_heads) for torch's (embed_dim, "
                "num_heads).)"
            )
        if self.embed_dim is not None and self.embed_dim % h:
            raise ValueError(
                f"{name}: embed_dim={self.embed_dim} must be divisible by num_heads={h}."
            )
        if self.max_len is not None and self.max_len <= 0:
            raise ValueError(f"{name}: max_len must be positive, got {self.max_len!r}.")
        self.out_proj = _LinearTo(
            bias=self.bias, weight_init=self.weight_init, bias_init=self.bias_init or zeros
        )

    def forward(
        self,
        scope: Scope,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        decode: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        where = _where(self, scope.path)
        layout = "(N, L, E)" if self.batch_first else "(L, N, E)"
        if not isinstance(query, Tensor) or query.ndim not in (2, 3):
            raise ValueError(
                f"{where}: expected `query` of shape {layout} or, unbatched, (L, E); got "
                f"{_shape_of(query)}."
            )
        for name, t in (("key", key), ("value", value)):
            if not isinstance(t, Tensor) or t.ndim != query.ndim:
                raise ValueError(
                    f"{where}: expected a {query.ndim}-D `{name}` like `query` (shape "
                    f"{tuple(query.shape)}), got {_shape_of(t)}."
                )
        self_attention, kv_same = query is key and key is value, key is value
        given = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        batched = query.ndim == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        L, N, E = query.shape
        S = key.shape[0]
        if key.shape[1] != N or value.shape[:2] != key.shape[:2]:
            kv_layout = "(N, S, {})" if self.batch_first else "(S, N, {})"
            raise ValueError(
                f"{where}: expected query {layout}, key {kv_layout.format('kdim')} and value "
                f"{kv_layout.format('vdim')} (one batch size N, one source length S); got "
                f"{given}."
            )
        H = self.num_heads
        if (self.embed_dim is not None and E != self.embed_dim) or E % H:
            want = self.embed_dim if self.embed_dim is not None else f"a multiple of {H}"
            raise ValueError(
                f"{where}: expected query's embed_dim (last dim) to be {want} "
                f"(num_heads={H}), got {E}."
            )
        kdim, vdim = key.shape[-1], value.shape[-1]
        for name, arg, given, got in (
            ("kdim", "key", self.kdim, kdim),
            ("vdim", "value", self.vdim, vdim),
        ):
            if given is not None and given != got:
                raise ValueError(
                    f"{where}: {name}={given} was given, but `{arg}` has {got} features "
                    "(its last dim)."
                )

        # -- parameters, declared in torch's order ---------------------------------------
        w_init = self.weight_init or _XAVIER_UNIFORM
        packed = kdim == E and vdim == E
        if packed:
            w = scope.param("in_proj_weight", (3 * E, E), w_init)
            w_q, w_k, w_v = w.chunk(3)
        else:
            w = None
            w_q = scope.param("q_proj_weight", (E, E), w_init)
            w_k = scope.param("k_proj_weight", (E, kdim), w_init)
            w_v = scope.param("v_proj_weight", (E, vdim), w_init)
        b = scope.param("in_proj_bias", (3 * E,), self.bias_init or zeros) if self.bias else None
        b_q, b_k, b_v = b.chunk(3) if b is not None else (None, None, None)
        bias_k = bias_v = None
        if self.add_bias_kv:
            bias_k = scope.param("bias_k", (1, 1, E), _XAVIER_NORMAL)
            bias_v = scope.param("bias_v", (1, 1, E), _XAVIER_NORMAL)

        # -- input projections (torch's _in_projection_packed / _in_projection) ----------
        if packed and self_attention:
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
        elif packed and kv_same:
            q = F.linear(query, w_q, b_q)
            k, v = F.linear(key, w[E:], None if b is None else b[E:]).chunk(2, dim=-1)
        else:
            q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

        # -- masks: float, torch's convention ---------------------------------------------
        dtype = q.dtype
        if decode:
            if attn_mask is not None or key_padding_mask is not None:
                raise ValueError(
                    f"{where}: decode=True attends causally over the KV cache and takes no "
                    "attn_mask or key_padding_mask."
                )
            if S != L:
                raise ValueError(
                    f"{where}: decode=True is self-attention over new tokens: key and value "
                    f"must have query's length {L}, got {S}."
                )
            k, v, attn_mask = self._cache(scope, k, v, batched)
            S, is_causal = k.shape[0], False
        kpm = _float_mask(key_padding_mask, dtype)
        attn_mask = _float_mask(attn_mask, dtype)
        if kpm is not None:
            want = (N, S) if batched else (S,)
            if tuple(kpm.shape) != want:
                raise ValueError(
                    f"{where}: expected key_padding_mask of shape {want} ((N, S) batched, (S,) "
                    f"unbatched), got {tuple(kpm.shape)}."
                )
            kpm = kpm.reshape(N, S)
        if attn_mask is not None:
            if attn_mask.ndim == 3:
                want = (N * H, L, S) if batched else (H, L, S)
            else:
                want = (L, S)
            if tuple(attn_mask.shape) != want:
                raise ValueError(
                    f"{where}: expected attn_mask of shape (L, S) = {(L, S)} or (N * num_heads, "
                    f"L, S) = {(N * H, L, S)}, got {tuple(attn_mask.shape)}."
                )
        if query.is_meta:  # init's shape pass: declare out_proj, skip the attention math
            s_all = S + int(self.add_bias_kv) + int(self.add_zero_attn)
            weights = None
            if need_weights:
                shape = (N, L, s_all) if average_attn_weights else (N, H, L, s_all)
                weights = torch.empty(shape[0 if batched else 1 :], dtype=dtype, device="meta")
            return self._output(scope.out_proj(q, E), batched), weights
        sdpa_causal = is_causal and kpm is None and not need_weights
        if sdpa_causal:
            attn_mask = None  # torch hands SDPA the is_causal flag instead of the mask
        elif is_causal and attn_mask is None:
            attn_mask = _float_mask(~make_causal_mask(L, S, q.device), dtype)

        # -- extra keys, heads ------------------------------------------------------------
        if bias_k is not None:
            k = torch.cat([k, bias_k.expand(1, N, E)])
            v = torch.cat([v, bias_v.expand(1, N, E)])
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            kpm = None if kpm is None else F.pad(kpm, (0, 1))
        D = E // H
        q, k, v = (t.reshape(t.shape[0], N, H, D).permute(1, 2, 0, 3) for t in (q, k, v))
        if self.add_zero_attn:
            zero = torch.zeros((N, H, 1, D), dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zero], dim=2), torch.cat([v, zero], dim=2)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            kpm = None if kpm is None else F.pad(kpm, (0, 1))
        S = k.shape[2]
        mask = None
        if attn_mask is not None:
            mask = attn_mask.reshape(N, H, L, S) if attn_mask.ndim == 3 else attn_mask
        if kpm is not None:
            kpm = kpm.reshape(N, 1, 1, S)
            mask = kpm if mask is None else mask + kpm

        # -- attention --------------------------------------------------------------------
        rate = self.dropout if scope.train else 0.0
        prng = _key(self, scope) if rate > 0 else None
        weights = None
        if need_weights:  # torch's explicit path: weights are returned (after dropout)
            s = (q * math.sqrt(1.0 / D)) @ k.transpose(-2, -1)
            w_attn = F.softmax(s if mask is None else s + mask, dim=-1)
            if rate > 0:
                w_attn = _keyed_dropout(w_attn, rate, prng)
            out = w_attn @ v
            weights = w_attn.mean(dim=1) if average_attn_weights else w_attn
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = dot_product_attention(q, k, v, mask, sdpa_causal, rate, prng)
        out = scope.out_proj(out.permute(2, 0, 1, 3).reshape(L, N, E), E)
        return self._output(out, batched), weights

    def _output(self, out: Tensor, batched: bool) -> Tensor:
        """``(L, N, E)`` back to the input's layout."""
        if not batched:
            return out.squeeze(1)
        return out.transpose(0, 1) if self.batch_first else out

    def _cache(self, scope: Scope, k: Tensor, v: Tensor, batched: bool):
        """Write the new keys/values ``(L, N, E)`` into the cache; all keys and their mask."""
        L, N, E = k.shape
        max_len = self.max_len if self.max_len is not None else L
        shape = (N, max_len, E) if batched else (max_len, E)
        try:
            ck = scope.get_state("cached_key", lambda: torch.zeros(shape, dtype=k.dtype))
            cv = scope.get_state("cached_value", lambda: torch.zeros(shape, dtype=v.dtype))
            index = scope.get_state("cache_index", lambda: torch.zeros((), dtype=torch.long))
        except KeyError as e:
            raise KeyError(
                f"{e.args[0]} The KV cache is made by init with decode=True: "
                "`params, cache = model.init(key, *inputs, decode=True)`."
            ) from None
        if not batched:
            ck, cv = ck.unsqueeze(0), cv.unsqueeze(0)
        if ck.ndim != 3 or ck.shape[0] != N or ck.shape[2] != E or cv.shape != ck.shape:
            raise ValueError(
                f"{_where(self, scope.path)}: the KV cache has shape {tuple(ck.shape)}, expected "
                f"(N, max_len, E) with N={N}, E={E}; init with decode=True on inputs of this "
                "batch size."
            )
        pos = index + torch.arange(L, device=k.device)
        ck = ck.index_copy(1, pos, k.transpose(0, 1).to(ck.dtype))
        cv = cv.index_copy(1, pos, v.transpose(0, 1).to(cv.dtype))
        scope.put_state("cached_key", ck if batched else ck.squeeze(0))
        scope.put_state("cached_value", cv if batched else cv.squeeze(0))
        scope.put_state("cache_index", index + L)
        blocked = torch.arange(ck.shape[1], device=k.device) > pos[:, None]  # (L, max_len)
        return ck.transpose(0, 1), cv.transpose(0, 1), blocked
