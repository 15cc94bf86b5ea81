"""Compute an optimizer's per-step scalars once per step, not once per element, under inductor.

An update's scalars (Adam's bias corrections ``1 - b1 ** t``, a cosine schedule's learning rate,
``eps * bc1``, ...) are 0-d tensors computed inside the compiled step. Inductor inlines a cheap
0-d computation into every loop that reads it, and its C++ is built with ``-fmath-errno``, so
the compiler may not hoist ``powf``/``cosf``/``sqrtf`` out of the loop: they ran once per vector
of 16 floats. On a 10M-parameter Adam step that made the whole fused kernel 1.5x slower
(10.0 ms against 6.5 ms with the scalars computed first, and 6.8 ms for torch's
``_fused_adam_``, measured here at 2 threads).

:func:`hoist` is the identity, except under ``torch.compile``, where it goes through the custom
op ``fnn_optim::hoist`` whose inductor lowering stores its input into a buffer ("realizes" it),
so consumers load one number. Eagerly, and when the lowering cannot be registered (another
torch version's internals), it changes nothing but speed.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from fnn._src.tracing import in_transform

_registered = False


@torch.library.custom_op("fnn_optim::hoist", mutates_args=())
def _hoist_op(x: Tensor) -> Tensor:
    """Identity (a copy): the eager body of the op; inductor replaces it by a realized buffer."""
    return x.clone()


@_hoist_op.register_fake
def _hoist_fake(x: Tensor) -> Tensor:
    _register_lowering()  # runs while dynamo traces, before inductor lowers the graph
    return torch.empty_like(x)


def _hoist_backward(ctx: Any, grad: Tensor) -> Tensor:
    return grad


def _hoist_setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
    """Nothing to save: the op is the identity."""


_hoist_op.register_autograd(_hoist_backward, setup_context=_hoist_setup_context)


def _register_lowering() -> None:
    """Teach inductor to lower ``fnn_optim::hoist`` as "store this value" (once per process).

    Imported lazily: ``torch._inductor.lowering`` takes seconds to import, and only a process
    that compiles needs it (the fake kernel above runs while dynamo traces).
    """
    global _registered
    if _registered:
        return
    _registered = True

    def lower(x: Any) -> Any:
        x.realize()
        return x

    try:
        from torch._inductor.lowering import register_lowering

        register_lowering(torch.ops.fnn_optim.hoist.default)(lower)
    except Exception as e:  # pragma: no cover - other torch internals: inductor's fallback
        warnings.warn(  # (it calls the op's copy: correct, one small kernel call per scalar)
            f"fnn_optim: could not register the inductor lowering of fnn_optim::hoist ({e!r}); "
            "compiled optimizer steps stay correct but may run slower.",
            RuntimeWarning,
            stacklevel=2,
        )


def hoist(x: Any) -> Any:
    """``x`` itself; under ``torch.compile`` a 0-d tensor is computed once, before the loops.

    Args:
        x: anything; only a 0-d tensor while compiling, outside torch.func transforms (whose
            batching and functorch-autograd rules a custom op would need), goes through the op.

    Returns:
        ``x`` (eagerly the very same object).

    Example:
        >>> import torch
        >>> from fnn_optim._hoist import hoist
        >>> t = torch.tensor(0.5)
        >>> hoist(t) is t
        True
    """
    if (
        isinstance(x, Tensor)
        and x.dim() == 0
        and torch.compiler.is_compiling()
        and not in_transform()
    ):
        return _hoist_op(x)
    return x
