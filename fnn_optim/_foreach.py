"""``torch._foreach_*`` ops that also run under ``torch.func`` transforms.

fnn_optim does its arithmetic with one ``torch._foreach_*`` op for all leaves. Those ops have no
``vmap`` batching rule in torch 2.13 ("Batching rule not implemented for
aten::_foreach_lerp.List"), so an optimizer update under ``fnn.vmap`` (an ensemble training its
members at once) failed. Each function here calls the foreach op, except inside a torch.func
transform, where it applies the matching per-tensor op leaf by leaf (which vmap batches).

Arguments follow the foreach ops: ``xs`` is a list of tensors; ``other`` a list of the same
length, or one scalar / 0-d tensor for every leaf. In-place variants return ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fnn._src.tracing import in_transform
from fnn_optim._hoist import hoist

Leaves = Sequence[Tensor]


# Inside a torch.func transform the per-leaf ops are used (see ``fnn._src.tracing``).
_transformed = in_transform


def _nth(arg: Any, i: int) -> Any:
    return arg[i] if isinstance(arg, list | tuple) else arg


def _each(method: str, xs: Leaves, *args: Any, **kwargs: Any) -> list[Tensor]:
    return [getattr(x, method)(*(_nth(a, i) for a in args), **kwargs) for i, x in enumerate(xs)]


def _make(name: str, method: str | None = None, *, inplace: bool = False) -> Any:
    foreach = getattr(torch, f"_foreach_{name}")
    method = method or name

    def op(xs: Leaves, *args: Any, **kwargs: Any) -> Any:
        if not _transformed():
            if torch.compiler.is_compiling():  # per-step scalars: computed once, not per element
                args = tuple(hoist(a) for a in args)
                kwargs = {k: hoist(v) for k, v in kwargs.items()}
            return foreach(xs, *args, **kwargs)
        out = _each(method, xs, *args, **kwargs)
        return None if inplace else out

    op.__name__ = name
    op.__doc__ = f"``torch._foreach_{name}``, leaf by leaf inside torch.func transforms."
    return op


abs = _make("abs")
add = _make("add")
add_ = _make("add_", inplace=True)
addcmul_ = _make("addcmul_", inplace=True)
clamp_max = _make("clamp_max")
clamp_min = _make("clamp_min")
div = _make("div")
div_ = _make("div_", inplace=True)
lerp = _make("lerp")
maximum = _make("maximum")
mul = _make("mul")
mul_ = _make("mul_", inplace=True)
neg_ = _make("neg_", inplace=True)
sign = _make("sign")
sign_ = _make("sign_", inplace=True)
sqrt = _make("sqrt")
sqrt_ = _make("sqrt_", inplace=True)
sub = _make("sub")


def norm(xs: Leaves, ord: float = 2) -> list[Tensor]:
    """``torch._foreach_norm``: the vector norm of each tensor (0-d tensors)."""
    if not _transformed():
        return list(torch._foreach_norm(xs, ord))
    return [torch.linalg.vector_norm(x, ord) for x in xs]


def maximum_(xs: Leaves, other: Any) -> None:
    """``torch._foreach_maximum_`` (torch.Tensor has no ``maximum_``: ``copy_`` of the maximum)."""
    if not _transformed():
        return torch._foreach_maximum_(xs, other)
    for i, x in enumerate(xs):
        x.copy_(torch.maximum(x, torch.as_tensor(_nth(other, i), dtype=x.dtype)))
    return None


def minimum_(xs: Leaves, other: Any) -> None:
    """``torch._foreach_minimum_`` (torch.Tensor has no ``minimum_``: ``copy_`` of the minimum)."""
    if not _transformed():
        return torch._foreach_minimum_(xs, other)
    for i, x in enumerate(xs):
        x.copy_(torch.minimum(x, torch.as_tensor(_nth(other, i), dtype=x.dtype)))
    return None
