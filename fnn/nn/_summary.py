"""``summary``: a table of a model's sub-modules, output shapes and parameter counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fnn.nn._module import Module

__all__ = ["summary"]


def _count(tree: Any) -> tuple[int, int]:
    """(number of elements, bytes) of the tensors in a nested dict."""
    if isinstance(tree, torch.Tensor):
        return tree.numel(), tree.numel() * tree.element_size()
    if isinstance(tree, Mapping):
        n = b = 0
        for v in tree.values():
            dn, db = _count(v)
            n, b = n + dn, b + db
        return n, b
    return 0, 0


def _fmt_shape(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape))
    if isinstance(x, tuple | list):
        return "(" + ", ".join(_fmt_shape(v) for v in x) + ")"
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt_shape(v)}" for k, v in x.items()) + "}"
    return type(x).__name__


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def summary(model: Module, *example_inputs: Any, depth: int | None = None, **kwargs: Any) -> str:
    """A table of each sub-module's path, type, output shape, parameter count and bytes.

    Runs ``model.init_shapes`` (shapes only: no weights are drawn and nothing is computed), so
    it is instant even for large models. Each row counts the parameters of the sub-module and
    its children; the last lines give the totals of ``params`` and ``state``.

    Args:
        model: an fnn model.
        *example_inputs: inputs shaped like the model's inputs.
        depth: show sub-modules down to this nesting depth (``None``: all).
        **kwargs: passed to ``init_shapes`` (e.g. ``train=``).

    Returns:
        The table as a string (print it).

    Example:
        >>> import fnn, torch
        >>> from fnn import nn
        >>> model = nn.Sequential([nn.Linear(16), nn.relu, nn.Linear(10)])
        >>> print(nn.summary(model, torch.zeros(32, 8)))
        path  module      output shape  params  bytes
        ----  ----------  ------------  ------  ------
              Sequential  (32, 10)         314  1.2 KB
        0       Linear    (32, 16)         144  576 B
        2       Linear    (32, 10)         170  680 B
        <BLANKLINE>
        params: 314 (1.2 KB)   state: 0 (0 B)
    """
    if not isinstance(model, Module):
        raise TypeError(f"fnn.nn.summary: expected an fnn.nn.Module, got {type(model).__name__}.")
    record: list = []
    dtype = kwargs.pop("dtype", None)
    train = kwargs.pop("train", False)
    params, state, _ = model._init("shapes", None, example_inputs, train, dtype, kwargs, record)
    rows = [("path", "module", "output shape", "params", "bytes")]
    for path, module, out, p, _s in record:
        level = path.count(".") + 1 if path else 0
        if depth is not None and level > depth:
            continue
        n, b = _count(p)
        name = "  " * level + type(module).__name__
        rows.append((path, name, _fmt_shape(out), f"{n:,}", _fmt_bytes(b)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    rows.insert(1, tuple("-" * w for w in widths))
    lines = []
    for r in rows:
        cells = [r[i].rjust(widths[i]) if i == 3 else r[i].ljust(widths[i]) for i in range(5)]
        lines.append("  ".join(cells).rstrip())
    np_, bp = _count(params)
    ns, bs = _count(state)
    lines.append("")
    lines.append(f"params: {np_:,} ({_fmt_bytes(bp)})   state: {ns:,} ({_fmt_bytes(bs)})")
    return "\n".join(lines)
