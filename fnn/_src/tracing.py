"""Where code is running: eagerly, under ``torch.compile``, inside a ``torch.func`` transform.

One place for the test, because the obvious one is wrong under compile: dynamo wraps
``torch._C._functorch.peek_interpreter_stack()`` in an object that is never ``None``, so
``peek_interpreter_stack() is not None`` reads as "inside a transform" in every compiled
function (it sent fnn_optim's compiled updates down their per-leaf ``vmap`` path and made
compiled attention write SDPA's math out). Dynamo evaluates a test of the result's *type*
faithfully, eagerly and while tracing alike.
"""

from __future__ import annotations

import torch

_NoneType = type(None)


def in_transform() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jvp``, ...) is active.

    Correct eagerly and while ``torch.compile`` traces.

    Example:
        >>> import torch
        >>> from fnn._src.tracing import in_transform
        >>> in_transform(), bool(torch.func.vmap(lambda x: x * in_transform())(torch.ones(2))[0])
        (False, True)
    """
    return type(torch._C._functorch.peek_interpreter_stack()) is not _NoneType


def plain_eager() -> bool:
    """Outside ``torch.compile`` and outside every ``torch.func`` transform.

    Only there may code read tensors as Python numbers (``.item()``) or update tensors in place
    that a transform would batch or trace.

    Example:
        >>> from fnn._src.tracing import plain_eager
        >>> plain_eager()
        True
    """
    return not torch.compiler.is_compiling() and not in_transform()
