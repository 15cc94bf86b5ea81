"""``Embedding``: a lookup table of learned vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fnn._src.initializers import Initializer, normal
from fnn.nn._module import Module, Scope, _where

__all__ = ["Embedding"]

Tensor = torch.Tensor

_INDEX_DTYPES = (torch.int64, torch.int32)


def _zero_row(init: Initializer, row: int) -> Initializer:
    """``init`` with row ``row`` set to zero (out of place), as torch zeroes ``padding_idx``."""

    def zeroed(key: Tensor, shape, dtype: torch.dtype | None = None) -> Tensor:
        w = init(key, shape, dtype)
        return w.index_fill(0, torch.tensor([row], device=w.device), 0.0)

    return zeroed


class Embedding(Module):
    """Look up rows of ``weight`` by integer index, the twin of ``torch.nn.Embedding``.

    ``y[..., :] = weight[x[...], :]``. Rows at ``padding_idx`` get no gradient (and start at
    zero). With ``max_norm``, every looked-up row whose ``norm_type``-norm exceeds ``max_norm``
    is scaled to norm ``max_norm`` (``row * max_norm / (norm + 1e-7)``) in the output, exactly as
    torch computes it; but where torch also rewrites those rows of its weight *in place*, fnn
    never modifies ``params``: the renormalised rows exist only in the output, and the stored
    weight keeps its norm (so later calls renormalise again; the outputs are the same as
    torch's). As in torch, the gradient flows to those rows as if unscaled (torch renormalises
    outside autograd).

    Args:
        num_embeddings: the number of rows (valid indices are ``0 .. num_embeddings - 1``).
        features: the size of each vector (torch's ``embedding_dim``).
        padding_idx: a row that gets no gradient and is initialised to zero (negative counts
            from the end, as torch); ``None`` for none.
        max_norm: renormalise looked-up rows with a larger norm to this norm; ``None`` for no
            renormalisation.
        norm_type: the ``p`` of the p-norm used with ``max_norm``.
        scale_grad_by_freq: scale each row's gradient by the inverse of its index's frequency
            in the input.
        weight_init: initializer of ``weight``; default ``N(0, 1)``, as torch. The
            ``padding_idx`` row is zeroed after either.

    Shapes:
        input ``(*)`` of int64 or int32 indices, output ``(*, features)``;
        ``weight (num_embeddings, features)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.Embedding(10, 3, padding_idx=0)
        >>> idx = torch.tensor([[0, 2, 4], [9, 2, 0]])
        >>> params, state = model.init(fnn.random.key(0), idx)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params), state
        ({'weight': (10, 3)}, {})
        >>> y = model.apply(params, idx)
        >>> y.shape, y[0, 0]
        (torch.Size([2, 3, 3]), tensor([0., 0., 0.]))
    """

    num_embeddings: int
    features: int
    padding_idx: int | None = None
    max_norm: float | None = None
    norm_type: float = 2.0
    scale_grad_by_freq: bool = False
    weight_init: Initializer | None = None

    def __post_init__(self) -> None:
        for name in ("num_embeddings", "features"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"fnn.nn.Embedding: {name} must be a non-negative int, got {v!r}.")
        p, n = self.padding_idx, self.num_embeddings
        if p is not None:
            if not -n <= p < n:
                raise ValueError(
                    f"fnn.nn.Embedding: padding_idx must be in [-{n}, {n}) for "
                    f"num_embeddings={n}, got {p}."
                )
            self.padding_idx = p % n

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        if not isinstance(x, torch.Tensor) or x.dtype not in _INDEX_DTYPES:
            got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(
                f"{_where(self, scope.path)}: expected indices as an int64 or int32 tensor of "
                f"any shape (*), got {got}; convert with x.long()."
            )
        init = self.weight_init or normal(1.0)
        if self.padding_idx is not None:
            init = _zero_row(init, self.padding_idx)
        w = scope.param("weight", (self.num_embeddings, self.features), init)
        y = F.embedding(x, w, self.padding_idx, None, self.norm_type, self.scale_grad_by_freq)
        if self.max_norm is None or y.numel() == 0:
            return y
        return _renorm(y, self.max_norm, self.norm_type)


def _renorm(rows: Tensor, max_norm: float, norm_type: float) -> Tensor:
    """torch's ``embedding_renorm_`` applied to looked-up ``rows`` (out of place).

    torch takes each row's norm in the weight's dtype, compares it with ``max_norm`` and computes
    the scale in double precision, then multiplies the row by the scale in the weight's dtype;
    this does the same. The result carries the value of the scaled rows but the gradient of
    ``rows`` (a straight-through identity), as torch's in-place renorm happens outside autograd.
    """
    fixed = rows.detach()
    norm = torch.linalg.vector_norm(fixed, norm_type, dim=-1, keepdim=True).double()
    # ``number / tensor`` would be ``reciprocal(tensor) * number``; torch divides in double.
    scale = torch.full_like(norm, max_norm) / (norm + 1e-7)
    scale = torch.where(norm > max_norm, scale, 1.0).to(rows.dtype)
    return fixed * scale + (rows - fixed)
