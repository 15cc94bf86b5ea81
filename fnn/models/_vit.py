"""Vision Transformers with torchvision's exact layout, names and initialisation.

The parameter names are the ``state_dict()`` keys of ``torchvision.models.VisionTransformer``
(``class_token``, ``conv_proj.weight``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_0.self_attention.in_proj_weight``, ``…mlp.0.weight``,
``encoder.ln.weight``, ``heads.head.weight``, ...), in the same order, so a torchvision
checkpoint loads by name with :func:`fnn.nn.from_state_dict`. The initialisation is
torchvision's: ``conv_proj`` truncated normal with std ``sqrt(1 / fan_in)`` (truncated at
``±2`` absolute, as ``nn.init.trunc_normal_``) and zero bias, ``pos_embedding``
``N(0, 0.02²)``, the MLP linears xavier-uniform with ``N(0, 1e-6²)`` biases, the attention
as ``torch.nn.MultiheadAttention``, LayerNorms with ``eps=1e-6``, and a zero classification head.
"""

from __future__ import annotations

import math

import torch

from fnn.nn import (
    GELU,
    Conv2d,
    Dropout,
    LayerNorm,
    Linear,
    Module,
    MultiheadAttention,
    Scope,
    Sequential,
    Tanh,
)
from fnn.nn._module import _where
from fnn.nn.initializers import Initializer, normal, truncated_normal, xavier_uniform, zeros

__all__ = ["VisionTransformer", "vit_b_16", "vit_tiny"]

Tensor = torch.Tensor

_LN_EPS = 1e-6  # torchvision's norm_layer: partial(nn.LayerNorm, eps=1e-6)
_XAVIER: Initializer = xavier_uniform()
_TINY_NORMAL: Initializer = normal(1e-6)
_POS_INIT: Initializer = normal(0.02)


def _trunc_normal(std: float) -> Initializer:
    """``nn.init.trunc_normal_(w, std=std)``: ``N(0, std²)`` truncated to ``(-2, 2)`` absolute.

    torch's bounds ``a=-2, b=2`` are absolute values, fnn's ``truncated_normal`` takes them in
    standard deviations: ``±2 / std``.
    """
    return truncated_normal(std, -2.0 / std, 2.0 / std)


def _check_positive(owner: str, **values: object) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"fnn.models.{owner}: {name} must be a positive int, got {v!r}.")


def _check_rate(owner: str, **values: object) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
            raise ValueError(f"fnn.models.{owner}: {name} must be in [0, 1], got {v!r}.")


class EncoderBlock(Module):
    """torchvision's ViT ``EncoderBlock``: pre-norm self-attention and MLP with residuals.

    ``x = input + dropout(self_attention(ln_1(input)))``, then ``x + mlp(ln_2(x))`` with
    ``mlp = Linear(mlp_dim) → GELU → Dropout → Linear(hidden_dim) → Dropout`` (torchvision's
    ``MLPBlock``, hence the names ``mlp.0`` and ``mlp.3``).

    Shapes:
        input ``(N, S, hidden_dim)``, output the same.

    Example:
        >>> import fnn, torch
        >>> block = fnn.models._vit.EncoderBlock(2, 8, 16, 0.0, 0.0)
        >>> params, _ = block.init_shapes(torch.zeros(2, 5, 8))
        >>> sorted(params), sorted(params["mlp"])
        (['ln_1', 'ln_2', 'mlp', 'self_attention'], ['0', '3'])
    """

    num_heads: int
    hidden_dim: int
    mlp_dim: int
    dropout: float
    attention_dropout: float

    def __post_init__(self) -> None:
        self.ln_1 = LayerNorm(eps=_LN_EPS)
        self.self_attention = MultiheadAttention(
            self.num_heads,
            dropout=self.attention_dropout,
            batch_first=True,
            embed_dim=self.hidden_dim,
        )
        self._drop = Dropout(self.dropout)
        self.ln_2 = LayerNorm(eps=_LN_EPS)
        self.mlp = Sequential(
            [
                Linear(self.mlp_dim, weight_init=_XAVIER, bias_init=_TINY_NORMAL),
                GELU(),
                Dropout(self.dropout),
                Linear(self.hidden_dim, weight_init=_XAVIER, bias_init=_TINY_NORMAL),
                Dropout(self.dropout),
            ]
        )

    def forward(self, scope: Scope, input: Tensor) -> Tensor:
        if input.ndim != 3:
            raise ValueError(
                f"{_where(self, scope.path)}: expected (batch_size, seq_length, hidden_dim), got "
                f"shape {tuple(input.shape)}."
            )
        x = scope.ln_1(input)
        x = scope.self_attention(x, x, x, need_weights=False)[0]
        x = scope.child("dropout", self._drop)(x) + input
        return x + scope.mlp(scope.ln_2(x))


class Encoder(Module):
    """torchvision's ViT ``Encoder``: position embedding, dropout, the blocks and ``ln``.

    ``ln(layers(dropout(input + pos_embedding)))``; the blocks are named
    ``layers.encoder_layer_0``, ``layers.encoder_layer_1``, ...

    Shapes:
        input ``(N, seq_length, hidden_dim)``, output the same; ``pos_embedding
        (1, seq_length, hidden_dim)``.

    Example:
        >>> import fnn, torch
        >>> encoder = fnn.models._vit.Encoder(5, 2, 2, 8, 16, 0.0, 0.0)
        >>> params, _ = encoder.init_shapes(torch.zeros(2, 5, 8))
        >>> list(params), list(params["layers"])
        (['pos_embedding', 'layers', 'ln'], ['encoder_layer_0', 'encoder_layer_1'])
    """

    seq_length: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int
    dropout: float
    attention_dropout: float

    def __post_init__(self) -> None:
        self._drop = Dropout(self.dropout)
        block = EncoderBlock(
            self.num_heads, self.hidden_dim, self.mlp_dim, self.dropout, self.attention_dropout
        )
        self.layers = {f"encoder_layer_{i}": block for i in range(self.num_layers)}
        self.ln = LayerNorm(eps=_LN_EPS)

    def forward(self, scope: Scope, input: Tensor) -> Tensor:
        shape = (self.seq_length, self.hidden_dim)
        if input.ndim != 3 or tuple(input.shape[1:]) != shape:
            raise ValueError(
                f"{_where(self, scope.path)}: expected (batch_size, seq_length, hidden_dim) = "
                f"(N, {shape[0]}, {shape[1]}), got shape {tuple(input.shape)}."
            )
        pos = scope.param("pos_embedding", (1, *shape), _POS_INIT)
        x = scope.child("dropout", self._drop)(input + pos)
        for layer in scope.layers.values():
            x = layer(x)
        return scope.ln(x)


class VisionTransformer(Module):
    """A Vision Transformer (ViT), torchvision's ``VisionTransformer`` layer for layer.

    The image is cut into ``patch_size × patch_size`` patches by ``conv_proj`` (a strided
    convolution to ``hidden_dim`` channels), a learned ``class_token`` is prepended, the
    sequence goes through the :class:`Encoder` (learned position embedding, ``num_layers``
    pre-norm blocks, final LayerNorm) and the class token's output through ``heads``
    (``heads.head``, or ``heads.pre_logits → tanh → heads.head`` with ``representation_size``).
    Names, order and initialisation are torchvision's (see the module docstring); the input
    channel count is inferred from the images (torchvision fixes it to 3).

    Dropout (``dropout`` after the position embedding, the attention and in the MLPs;
    ``attention_dropout`` on the attention weights) is active in train mode with the key passed
    to ``apply``.

    Args:
        image_size: the height and width of the (square) input images.
        patch_size: the patch height and width; must divide ``image_size``.
        num_layers: the number of encoder blocks.
        num_heads: the attention heads per block (must divide ``hidden_dim``).
        hidden_dim: the embedding size ``D``.
        mlp_dim: the hidden size of each block's MLP.
        dropout: the dropout probability (train mode).
        attention_dropout: the dropout probability of the attention weights (train mode).
        num_classes: the number of output logits.
        representation_size: if given, a ``pre_logits`` linear layer of this size and a tanh
            before the head (torchvision's option).

    Shapes:
        input ``(N, C, image_size, image_size)``, output ``(N, num_classes)``;
        ``class_token (1, 1, D)``, ``conv_proj.weight (D, C, patch_size, patch_size)``,
        ``encoder.pos_embedding (1, (image_size // patch_size)² + 1, D)``,
        ``…self_attention.in_proj_weight (3D, D)``, ``…mlp.0.weight (mlp_dim, D)``,
        ``…mlp.3.weight (D, mlp_dim)``, ``heads.head.weight (num_classes, D)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.models.VisionTransformer(32, 8, num_layers=2, num_heads=2,
        ...                                      hidden_dim=16, mlp_dim=32, num_classes=10)
        >>> x = torch.randn(2, 3, 32, 32)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> shapes = fnn.tree.map(lambda t: tuple(t.shape), fnn.nn.to_state_dict(params))
        >>> list(shapes.items())[:4]
        [('class_token', (1, 1, 16)), ('conv_proj.weight', (16, 3, 8, 8)), ('conv_proj.bias', (16,)), ('encoder.pos_embedding', (1, 17, 16))]
        >>> model.apply(params, x).shape
        torch.Size([2, 10])
    """  # noqa: E501

    image_size: int
    patch_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    num_classes: int = 1000
    representation_size: int | None = None

    def __post_init__(self) -> None:
        name = "VisionTransformer"
        _check_positive(
            name,
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            mlp_dim=self.mlp_dim,
            num_classes=self.num_classes,
        )
        if self.representation_size is not None:
            _check_positive(name, representation_size=self.representation_size)
        _check_rate(name, dropout=self.dropout, attention_dropout=self.attention_dropout)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"fnn.models.{name}: image_size={self.image_size} is not divisible by "
                f"patch_size={self.patch_size} (input shape indivisible by patch size)."
            )
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"fnn.models.{name}: hidden_dim={self.hidden_dim} must be divisible by "
                f"num_heads={self.num_heads}."
            )
        p, d = self.patch_size, self.hidden_dim
        # torchvision: fan_in = in_channels * p * p with in_channels = 3; here the channel
        # count is inferred, so the initializer reads the fan from the weight's shape.
        self.conv_proj = Conv2d(d, p, stride=p, weight_init=_patch_init, bias_init=zeros)
        self.seq_length = (self.image_size // p) ** 2 + 1
        self.encoder = Encoder(
            self.seq_length,
            self.num_layers,
            self.num_heads,
            d,
            self.mlp_dim,
            self.dropout,
            self.attention_dropout,
        )
        if self.representation_size is None:
            self.heads = {"head": Linear(self.num_classes, weight_init=zeros, bias_init=zeros)}
        else:
            r = self.representation_size
            self.heads = {
                "pre_logits": Linear(
                    r, weight_init=_trunc_normal(math.sqrt(1 / d)), bias_init=zeros
                ),
                "act": Tanh(),
                "head": Linear(self.num_classes, weight_init=zeros, bias_init=zeros),
            }

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        s = self.image_size
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[2:]) != (s, s):
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{_where(self, scope.path)}: expected images of shape (N, C, {s}, {s}) "
                f"(image_size={s}), got {got}."
            )
        d = self.hidden_dim
        class_token = scope.param("class_token", (1, 1, d), zeros)
        n = x.shape[0]
        x = scope.conv_proj(x)  # (N, D, n_h, n_w)
        x = x.reshape(n, d, -1).permute(0, 2, 1)
        x = torch.cat([class_token.expand(n, -1, -1), x], dim=1)
        x = scope.encoder(x)[:, 0]
        for layer in scope.heads.values():
            x = layer(x)
        return x


def _patch_init(key: Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> Tensor:
    """torchvision's ``conv_proj`` init: ``trunc_normal_(w, std=sqrt(1 / fan_in))``."""
    fan_in = math.prod(shape[1:])
    return _trunc_normal(math.sqrt(1 / fan_in))(key, shape, dtype)


def vit_b_16(
    *,
    image_size: int = 224,
    num_classes: int = 1000,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-B/16: patch size 16, 12 layers, 12 heads, ``hidden_dim=768``, ``mlp_dim=3072``.

    torchvision's ``vit_b_16(weights=None)``: the same names, shapes and initialisation, so
    its checkpoints load with :func:`fnn.nn.from_state_dict` (86.6M parameters at 1000
    classes). See :class:`VisionTransformer`.

    Args:
        image_size: the input height and width (a multiple of 16).
        num_classes: the number of output logits.
        dropout, attention_dropout: dropout probabilities (train mode).
        representation_size: an optional ``pre_logits`` layer size.

    Shapes:
        input ``(N, 3, image_size, image_size)``, output ``(N, num_classes)``.

    Example:
        >>> import fnn, torch
        >>> params, _ = fnn.models.vit_b_16().init_shapes(torch.zeros(1, 3, 224, 224))
        >>> sum(t.numel() for t in fnn.tree.leaves(params))
        86567656
        >>> params["encoder"]["pos_embedding"].shape
        torch.Size([1, 197, 768])
    """
    return VisionTransformer(
        image_size, 16, 12, 12, 768, 3072, dropout, attention_dropout, num_classes,
        representation_size,
    )  # fmt: skip


def vit_tiny(
    *,
    image_size: int = 224,
    num_classes: int = 1000,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-Tiny (DeiT-tiny's sizes): patch size 16, 12 layers, 3 heads, ``hidden_dim=192``,
    ``mlp_dim=768``, in torchvision's :class:`VisionTransformer` layout (5.7M parameters).

    Args:
        image_size: the input height and width (a multiple of 16).
        num_classes: the number of output logits.
        dropout, attention_dropout: dropout probabilities (train mode).
        representation_size: an optional ``pre_logits`` layer size.

    Shapes:
        input ``(N, C, image_size, image_size)``, output ``(N, num_classes)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.models.vit_tiny(image_size=32, num_classes=10)
        >>> params, _ = model.init_shapes(torch.zeros(1, 3, 32, 32))
        >>> layer = params["encoder"]["layers"]["encoder_layer_11"]
        >>> fnn.tree.map(lambda t: tuple(t.shape), layer["mlp"])
        {'0': {'weight': (768, 192), 'bias': (768,)}, '3': {'weight': (192, 768), 'bias': (192,)}}
    """
    return VisionTransformer(
        image_size, 16, 12, 3, 192, 768, dropout, attention_dropout, num_classes,
        representation_size,
    )  # fmt: skip
