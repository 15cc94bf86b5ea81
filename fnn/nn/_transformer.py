"""Transformer layers: the twins of ``torch.nn.Transformer`` and its encoder/decoder parts.

``d_model`` is inferred from the input (``src.shape[-1]``); every other argument keeps torch's
name, default and meaning, and the parameter names are torch's ``state_dict()`` keys
(``self_attn.in_proj_weight``, ``linear1.weight``, ``norm1.weight``, ``layers.0.…``,
``encoder.layers.0.…``, ``decoder.norm.weight``, …), in torch's order.

Masks follow **torch's convention**: a boolean ``*_mask`` / ``*_key_padding_mask`` is ``True``
where attention is *not* allowed (padding); a float mask is added to the attention scores.
``*_is_causal`` is torch's hint that the mask is the causal one; fnn never inspects mask values
(``None`` means ``False``: the mask is applied as given, which computes the same result), and
``is_causal=True`` without a mask applies the causal mask.

Dropout draws from the key passed to ``apply`` (each dropout site has its own key, derived from
its path: ``dropout``, ``dropout1``, …); eval mode (``train=False``) uses none.

Incremental decoding: the decoder layers take ``decode=True`` (see :class:`TransformerDecoder`),
keeping a KV cache per self-attention in the state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fnn._src.initializers import Initializer
from fnn.nn._attention import _XAVIER_UNIFORM, MultiheadAttention, _LinearTo
from fnn.nn._dropout import Dropout
from fnn.nn._linear import Linear
from fnn.nn._module import Module, Scope, _where, meta_like
from fnn.nn._norm import LayerNorm

__all__ = [
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]

Tensor = torch.Tensor
_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _shape_of(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else f"a {type(x).__name__}"


class _Layer(Module):
    """What the encoder and decoder layers share: config checks, the blocks, dropout sites."""

    def _setup(self, attentions: tuple[str, ...], norms: int) -> None:
        name = f"fnn.nn.{type(self).__name__}"
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d <= 1.0:
            raise ValueError(
                f"{name}: dropout must be a probability in [0, 1], got {d!r}. (fnn infers "
                "d_model: write the layer as (nhead, dim_feedforward, ...).)"
            )
        act = self.activation
        if isinstance(act, str):
            if act not in _ACTIVATIONS:
                raise ValueError(f"{name}: activation should be 'relu' or 'gelu', not {act!r}.")
            self._act = _ACTIVATIONS[act]
        elif isinstance(act, Module) or callable(act):
            self._act = None if isinstance(act, Module) else act
        else:
            raise TypeError(
                f"{name}: activation must be 'relu', 'gelu', a function or an fnn.nn.Module, "
                f"got {type(act).__name__}."
            )
        for attn in attentions:
            setattr(
                self,
                attn,
                MultiheadAttention(
                    self.nhead,
                    dropout=self.dropout,
                    bias=self.bias,
                    batch_first=self.batch_first,
                    embed_dim=self.d_model,
                    weight_init=self.weight_init,
                    bias_init=self.bias_init,
                ),
            )
        self.linear1 = Linear(
            self.dim_feedforward,
            bias=self.bias,
            weight_init=self.weight_init,
            bias_init=self.bias_init,
        )
        self.linear2 = _LinearTo(
            bias=self.bias, weight_init=self.weight_init, bias_init=self.bias_init
        )
        for i in range(1, norms + 1):
            setattr(self, f"norm{i}", LayerNorm(eps=self.layer_norm_eps, bias=self.bias))
        self._drop = Dropout(self.dropout)

    def _check(self, scope: Scope, x: Tensor, name: str) -> int:
        layout = "(N, S, E)" if self.batch_first else "(S, N, E)"
        if not isinstance(x, Tensor) or x.ndim not in (2, 3):
            raise ValueError(
                f"{_where(self, scope.path)}: expected `{name}` of shape {layout} or, "
                f"unbatched, (S, E); got {_shape_of(x)}."
            )
        d = x.shape[-1]
        if self.d_model is not None and d != self.d_model:
            raise ValueError(
                f"{_where(self, scope.path)}: d_model={self.d_model} was given, but `{name}` "
                f"has {d} features (shape {tuple(x.shape)})."
            )
        return d

    def _dropout(self, scope: Scope, name: str, x: Tensor) -> Tensor:
        if scope.train and self.dropout > 0:
            return scope.child(name, self._drop)(x)
        return x

    def _ff_block(self, scope: Scope, x: Tensor, out_dropout: str) -> Tensor:
        h = scope.linear1(x)
        h = scope.activation(h) if self._act is None else self._act(h)
        h = scope.linear2(self._dropout(scope, "dropout", h), x.shape[-1])
        return self._dropout(scope, out_dropout, h)


_LAYER_ARGS = """
    Args:
        nhead: the number of attention heads (must divide ``d_model``).
        dim_feedforward: the hidden size of the feed-forward block.
        dropout: the dropout probability (attention weights and the three/four dropout
            sites), active in train mode.
        activation: ``"relu"``, ``"gelu"``, a function, or an ``fnn.nn`` module (e.g.
            ``fnn.nn.GELU("tanh")``).
        layer_norm_eps: the LayerNorms' eps.
        batch_first: inputs are ``(N, S, E)`` instead of ``(S, N, E)``.
        norm_first: pre-norm (``x + block(norm(x))``) instead of post-norm
            (``norm(x + block(x))``).
        bias: whether the linear layers, attention projections and LayerNorms have biases.
        d_model: ``E``; optional (inferred from the input), checked when given.
        weight_init: initializer of every weight matrix (attention projections, ``linear1``,
            ``linear2``); default torch's (:class:`Transformer` passes xavier-uniform, as
            torch's ``Transformer._reset_parameters``).
        bias_init: initializer of the attention and linear biases; default torch's.
"""


class TransformerEncoderLayer(_Layer):
    """Self-attention and feed-forward blocks, the twin of ``torch.nn.TransformerEncoderLayer``.

    Post-norm (default): ``x = norm1(x + sa(x)); x = norm2(x + ff(x))``; pre-norm
    (``norm_first``): ``x = x + sa(norm1(x)); x = x + ff(norm2(x))``, with
    ``sa = dropout1 ∘ self_attn`` and ``ff = dropout2 ∘ linear2 ∘ dropout ∘ activation ∘
    linear1``.
    {args}
    Shapes:
        ``src (S, N, E)`` (``(N, S, E)`` with ``batch_first``; ``(S, E)`` unbatched), output the
        same; ``src_mask (S, S)`` or ``(N * nhead, S, S)``, ``src_key_padding_mask (N, S)``
        (torch's convention: ``True`` = ignore). Parameters: ``self_attn.in_proj_weight
        (3E, E)``, ``self_attn.out_proj.weight (E, E)``, ``linear1.weight (F, E)``,
        ``linear2.weight (E, F)``, ``norm1.weight (E,)``, … and their biases.

    Example:
        >>> import fnn, torch
        >>> layer = fnn.nn.TransformerEncoderLayer(nhead=2, dim_feedforward=16, batch_first=True)
        >>> x = torch.randn(3, 5, 8)
        >>> params, _ = layer.init(fnn.random.key(0), x)
        >>> list(fnn.tree.map(lambda t: tuple(t.shape), fnn.nn.to_state_dict(params)).items())[:4]
        [('self_attn.in_proj_weight', (24, 8)), ('self_attn.in_proj_bias', (24,)), ('self_attn.out_proj.weight', (8, 8)), ('self_attn.out_proj.bias', (8,))]
        >>> layer.apply(params, x).shape
        torch.Size([3, 5, 8])
        >>> y = layer.apply(params, x, key=fnn.random.key(1), train=True)  # with dropout
    """  # noqa: E501

    nhead: int
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: str | Callable[[Tensor], Tensor] | Module = "relu"
    layer_norm_eps: float = 1e-5
    batch_first: bool = False
    norm_first: bool = False
    bias: bool = True
    d_model: int | None = None
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        self._setup(("self_attn",), norms=2)

    def forward(
        self,
        scope: Scope,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        self._check(scope, src, "src")

        def sa(x: Tensor) -> Tensor:
            y = scope.self_attn(
                x,
                x,
                x,
                attn_mask=src_mask,
                key_padding_mask=src_key_padding_mask,
                need_weights=False,
                is_causal=bool(is_causal),
            )[0]
            return self._dropout(scope, "dropout1", y)

        if src.is_meta:  # init (shapes only): each block once, in torch's parameter order
            sa(src)
            self._ff_block(scope, src, "dropout2")
            for norm in (scope.norm1, scope.norm2):
                norm(src)
            return meta_like(src)
        x = src
        if self.norm_first:
            x = x + sa(scope.norm1(x))
            return x + self._ff_block(scope, scope.norm2(x), "dropout2")
        x = scope.norm1(x + sa(x))
        return scope.norm2(x + self._ff_block(scope, x, "dropout2"))


class TransformerDecoderLayer(_Layer):
    """Self-attention, cross-attention and feed-forward blocks, the twin of
    ``torch.nn.TransformerDecoderLayer``.

    Post-norm (default): ``x = norm1(x + sa(x)); x = norm2(x + mha(x, memory));
    x = norm3(x + ff(x))``; pre-norm (``norm_first``) applies each norm to the block's input
    instead. Dropout sites: ``dropout1`` (after ``self_attn``), ``dropout2`` (after
    ``multihead_attn``), ``dropout`` and ``dropout3`` (in and after the feed-forward block).

    With ``decode=True`` the self-attention keeps a KV cache in the state (see
    :class:`MultiheadAttention`): ``init(key, tgt, memory, decode=True)`` makes a cache as long
    as ``tgt``; each ``apply(..., state=state, decode=True)`` takes the next tokens of ``tgt``
    (attending causally to all earlier ones) and returns the advanced state. ``tgt_mask`` and
    ``tgt_key_padding_mask`` are then not accepted (the cache is causal).
    {args}
    Shapes:
        ``tgt (T, N, E)``, ``memory (S, N, E)`` (batch first with ``batch_first``; no ``N``
        unbatched), output like ``tgt``; ``tgt_mask (T, T)``, ``memory_mask (T, S)`` (or with a
        leading ``N * nhead``), ``tgt_key_padding_mask (N, T)``, ``memory_key_padding_mask
        (N, S)`` (torch's convention: ``True`` = ignore).

    Example:
        >>> import fnn, torch
        >>> layer = fnn.nn.TransformerDecoderLayer(nhead=2, dim_feedforward=16, batch_first=True)
        >>> tgt, memory = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
        >>> params, _ = layer.init(fnn.random.key(0), tgt, memory)
        >>> sorted(params)
        ['linear1', 'linear2', 'multihead_attn', 'norm1', 'norm2', 'norm3', 'self_attn']
        >>> layer.apply(params, tgt, memory).shape
        torch.Size([3, 4, 8])
    """

    nhead: int
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: str | Callable[[Tensor], Tensor] | Module = "relu"
    layer_norm_eps: float = 1e-5
    batch_first: bool = False
    norm_first: bool = False
    bias: bool = True
    d_model: int | None = None
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        self._setup(("self_attn", "multihead_attn"), norms=3)

    def forward(
        self,
        scope: Scope,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
        decode: bool = False,
    ) -> Tensor:
        d = self._check(scope, tgt, "tgt")
        if not isinstance(memory, Tensor) or memory.ndim != tgt.ndim or memory.shape[-1] != d:
            raise ValueError(
                f"{_where(self, scope.path)}: expected `memory` with tgt's rank and feature size "
                f"(tgt has shape {tuple(tgt.shape)}), got {_shape_of(memory)}."
            )
        if decode and (tgt_mask is not None or tgt_key_padding_mask is not None):
            raise ValueError(
                f"{_where(self, scope.path)}: decode=True attends causally over the KV cache; "
                "tgt_mask and tgt_key_padding_mask are not accepted."
            )

        def sa(x: Tensor) -> Tensor:
            y = scope.self_attn(
                x,
                x,
                x,
                attn_mask=tgt_mask,
                key_padding_mask=tgt_key_padding_mask,
                need_weights=False,
                is_causal=bool(tgt_is_causal) and not decode,
                decode=decode,
            )[0]
            return self._dropout(scope, "dropout1", y)

        def mha(x: Tensor) -> Tensor:
            y = scope.multihead_attn(
                x,
                memory,
                memory,
                attn_mask=memory_mask,
                key_padding_mask=memory_key_padding_mask,
                need_weights=False,
                is_causal=bool(memory_is_causal),
            )[0]
            return self._dropout(scope, "dropout2", y)

        if tgt.is_meta:  # init (shapes only): each block once, in torch's parameter order
            sa(tgt)
            mha(tgt)
            self._ff_block(scope, tgt, "dropout3")
            for norm in (scope.norm1, scope.norm2, scope.norm3):
                norm(tgt)
            return meta_like(tgt)
        x = tgt
        if self.norm_first:
            x = x + sa(scope.norm1(x))
            x = x + mha(scope.norm2(x))
            return x + self._ff_block(scope, scope.norm3(x), "dropout3")
        x = scope.norm1(x + sa(x))
        x = scope.norm2(x + mha(x))
        return scope.norm3(x + self._ff_block(scope, x, "dropout3"))


for _cls in (TransformerEncoderLayer, TransformerDecoderLayer):
    _cls.__doc__ = _cls.__doc__.replace("{args}", _LAYER_ARGS)


def _check_layers(module: Module, layer: object, cls: type, num_layers: int) -> None:
    name = f"fnn.nn.{type(module).__name__}"
    if not isinstance(layer, Module):
        raise TypeError(
            f"{name}: expected an fnn.nn.Module layer (e.g. fnn.nn.{cls.__name__}), got "
            f"{type(layer).__name__}."
        )
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"{name}: num_layers must be a positive int, got {num_layers!r}.")


class TransformerEncoder(Module):
    """A stack of ``num_layers`` copies of ``encoder_layer`` and an optional final ``norm``,
    the twin of ``torch.nn.TransformerEncoder``.

    Each copy has its own parameters (``layers.0.…``, ``layers.1.…``), as torch's deep copies.
    torch's nested-tensor fast path (``enable_nested_tensor``, ``mask_check``) is a speed
    optimisation with the same results; fnn has no such options.

    Args:
        encoder_layer: the layer to repeat (a :class:`TransformerEncoderLayer` or any module
            taking ``(src, src_mask=, src_key_padding_mask=, is_causal=)``).
        num_layers: the number of copies.
        norm: an optional module applied to the output (e.g. ``fnn.nn.LayerNorm()``).

    Shapes:
        ``src (S, N, E)`` (``(N, S, E)`` batch first; ``(S, E)`` unbatched), output the same;
        ``mask (S, S)`` or ``(N * nhead, S, S)``, ``src_key_padding_mask (N, S)`` (torch's
        convention: ``True`` = ignore).

    Example:
        >>> import fnn, torch
        >>> layer = fnn.nn.TransformerEncoderLayer(nhead=2, dim_feedforward=16)
        >>> encoder = fnn.nn.TransformerEncoder(layer, num_layers=2, norm=fnn.nn.LayerNorm())
        >>> src = torch.randn(5, 3, 8)
        >>> params, _ = encoder.init(fnn.random.key(0), src)
        >>> sorted(params), sorted(params["layers"])
        (['layers', 'norm'], ['0', '1'])
        >>> mask = fnn.nn.Transformer.generate_square_subsequent_mask(5)
        >>> encoder.apply(params, src, mask=mask, is_causal=True).shape
        torch.Size([5, 3, 8])
    """

    encoder_layer: Module
    num_layers: int
    norm: Module | None = None

    def __post_init__(self) -> None:
        _check_layers(self, self.encoder_layer, TransformerEncoderLayer, self.num_layers)
        self.layers = (self.encoder_layer,) * self.num_layers

    def forward(
        self,
        scope: Scope,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        x = src
        for layer in scope.layers:
            x = layer(
                x,
                src_mask=mask,
                src_key_padding_mask=src_key_padding_mask,
                is_causal=bool(is_causal),
            )
        return x if self.norm is None else scope.norm(x)


class TransformerDecoder(Module):
    """A stack of ``num_layers`` copies of ``decoder_layer`` and an optional final ``norm``,
    the twin of ``torch.nn.TransformerDecoder``.

    **Incremental decoding**: ``init(key, tgt, memory, decode=True)`` (``tgt`` as long as the
    longest sequence to generate) returns a state holding one KV cache per layer; then
    ``y, state = decoder.apply(params, tgt_step, memory, state=state, decode=True)`` runs the
    next token(s) of ``tgt`` attending causally to all earlier ones. The concatenated outputs
    equal one call on the whole ``tgt`` with the causal ``tgt_mask``.

    Args:
        decoder_layer: the layer to repeat (a :class:`TransformerDecoderLayer` or a module with
            its signature).
        num_layers: the number of copies.
        norm: an optional module applied to the output.

    Shapes:
        ``tgt (T, N, E)``, ``memory (S, N, E)`` (batch first with ``batch_first``; no ``N``
        unbatched), output like ``tgt``; masks as :class:`TransformerDecoderLayer`.

    Example:
        >>> import fnn, torch
        >>> layer = fnn.nn.TransformerDecoderLayer(nhead=2, dim_feedforward=16, batch_first=True)
        >>> decoder = fnn.nn.TransformerDecoder(layer, num_layers=2)
        >>> tgt, memory = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
        >>> params, cache = decoder.init(fnn.random.key(0), tgt, memory, decode=True)
        >>> steps = []
        >>> for t in range(4):
        ...     y, cache = decoder.apply(params, tgt[:, t : t + 1], memory, state=cache, decode=True)
        ...     steps.append(y)
        >>> full = decoder.apply(params, tgt, memory, tgt_mask=fnn.nn.make_causal_mask(4).logical_not())
        >>> torch.allclose(torch.cat(steps, dim=1), full, atol=1e-6)
        True
    """  # noqa: E501

    decoder_layer: Module
    num_layers: int
    norm: Module | None = None

    def __post_init__(self) -> None:
        _check_layers(self, self.decoder_layer, TransformerDecoderLayer, self.num_layers)
        self.layers = (self.decoder_layer,) * self.num_layers

    def forward(
        self,
        scope: Scope,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
        decode: bool = False,
    ) -> Tensor:
        x = tgt
        extra = {"decode": True} if decode else {}
        for layer in scope.layers:
            x = layer(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=bool(tgt_is_causal),
                memory_is_causal=memory_is_causal,
                **extra,
            )
        return x if self.norm is None else scope.norm(x)


class Transformer(Module):
    """An encoder-decoder Transformer, the twin of ``torch.nn.Transformer`` (``d_model``
    inferred from ``src``).

    ``encoder`` is a :class:`TransformerEncoder` of ``num_encoder_layers`` layers with a final
    ``LayerNorm``; ``decoder`` a :class:`TransformerDecoder` likewise. As torch's
    ``_reset_parameters``, every weight matrix is initialised xavier-uniform (biases and
    LayerNorms keep their defaults). Custom encoders/decoders are used as given (torch would
    re-initialise their matrices; fnn leaves their initialisation to them).

    For generation, run the parts separately: ``memory = model.encoder.apply(params["encoder"],
    src)`` once, then ``model.decoder.apply(params["decoder"], tgt_step, memory, state=...,
    decode=True)`` per step (see :class:`TransformerDecoder`); ``decode=True`` here runs the
    encoder each call.

    Args:
        nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first, norm_first,
            bias: as :class:`TransformerEncoderLayer` (defaults torch's: ``nhead=8``,
            ``dim_feedforward=2048``, ``dropout=0.1``).
        num_encoder_layers, num_decoder_layers: the depths (default 6 each).
        custom_encoder, custom_decoder: modules to use instead of the default stacks.
        d_model: ``E``; optional (inferred), checked when given.

    Shapes:
        ``src (S, N, E)``, ``tgt (T, N, E)`` (batch first with ``batch_first``; no ``N``
        unbatched), output ``(T, N, E)``; ``src_mask (S, S)``, ``tgt_mask (T, T)``,
        ``memory_mask (T, S)``, ``*_key_padding_mask (N, S or T)`` (torch's convention:
        ``True`` = ignore).

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.Transformer(nhead=2, num_encoder_layers=1, num_decoder_layers=1,
        ...                            dim_feedforward=16, batch_first=True)
        >>> src, tgt = torch.randn(3, 6, 8), torch.randn(3, 4, 8)
        >>> params, _ = model.init(fnn.random.key(0), src, tgt)
        >>> sorted(fnn.nn.to_state_dict(params))[:3]
        ['decoder.layers.0.linear1.bias', 'decoder.layers.0.linear1.weight', 'decoder.layers.0.linear2.bias']
        >>> tgt_mask = fnn.nn.Transformer.generate_square_subsequent_mask(4)
        >>> model.apply(params, src, tgt, tgt_mask=tgt_mask, tgt_is_causal=True).shape
        torch.Size([3, 4, 8])
    """  # noqa: E501

    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: str | Callable[[Tensor], Tensor] | Module = "relu"
    custom_encoder: Module | None = None
    custom_decoder: Module | None = None
    layer_norm_eps: float = 1e-5
    batch_first: bool = False
    norm_first: bool = False
    bias: bool = True
    d_model: int | None = None

    def __post_init__(self) -> None:
        kw = dict(
            nhead=self.nhead,
            dim_feedforward=self.dim_feedforward,
            dropout=self.dropout,
            activation=self.activation,
            layer_norm_eps=self.layer_norm_eps,
            batch_first=self.batch_first,
            norm_first=self.norm_first,
            bias=self.bias,
            d_model=self.d_model,
            weight_init=_XAVIER_UNIFORM,
        )
        norm = LayerNorm(eps=self.layer_norm_eps, bias=self.bias)
        self.encoder = self.custom_encoder or TransformerEncoder(
            TransformerEncoderLayer(**kw), self.num_encoder_layers, norm
        )
        self.decoder = self.custom_decoder or TransformerDecoder(
            TransformerDecoderLayer(**kw), self.num_decoder_layers, norm
        )

    @staticmethod
    def generate_square_subsequent_mask(
        sz: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """The float causal mask of torch: ``0`` on and below the diagonal, ``-inf`` above.

        Shapes:
            output ``(sz, sz)``.

        Example:
            >>> import fnn
            >>> fnn.nn.Transformer.generate_square_subsequent_mask(3)
            tensor([[0., -inf, -inf],
                    [0., 0., -inf],
                    [0., 0., 0.]])
        """
        return torch.triu(torch.full((sz, sz), float("-inf"), dtype=dtype, device=device), 1)

    def forward(
        self,
        scope: Scope,
        src: Tensor,
        tgt: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        src_is_causal: bool | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
        decode: bool = False,
    ) -> Tensor:
        where = _where(self, scope.path)
        for name, t in (("src", src), ("tgt", tgt)):
            if not isinstance(t, Tensor) or t.ndim not in (2, 3):
                raise ValueError(
                    f"{where}: expected `{name}` with 3 dims (or 2 unbatched), got {_shape_of(t)}."
                )
        batch = 0 if self.batch_first else 1
        if src.ndim == 3 and (tgt.ndim != 3 or src.shape[batch] != tgt.shape[batch]):
            raise ValueError(
                f"{where}: the batch sizes of src and tgt must be equal (dim {batch}); got src "
                f"{tuple(src.shape)}, tgt {tuple(tgt.shape)}."
            )
        want = self.d_model if self.d_model is not None else src.shape[-1]
        if src.shape[-1] != want or tgt.shape[-1] != want:
            raise ValueError(
                f"{where}: the feature sizes of src and tgt must equal d_model={want}; got src "
                f"{tuple(src.shape)}, tgt {tuple(tgt.shape)}."
            )
        memory = scope.encoder(
            src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal
        )
        extra = {"decode": True} if decode else {}
        return scope.decoder(
            tgt,
            memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
            **extra,
        )
