"""Donation at run time: the code :func:`fnn.jit` runs inside the compiled function.

``run(fun, args, kwargs, donated)`` calls ``fun`` and writes its result leaves into the donated
input tensors (JAX's matching rule: first unused donated input of the same shape, dtype and
device), so inductor stores results into the input buffers. It is traced by dynamo (or runs
eagerly under ``FNN_DISABLE_JIT=1``). :func:`donation_clash` is the check before a call that no
tensor is donated twice or also passed in a non-donated place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fnn._src import tree as _tree


def run(
    fun: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    donated: tuple[torch.Tensor, ...],
) -> Any:
    out = fun(*args, **kwargs)
    if donated:
        out = _write_into_donated(out, donated)
    return out


def _write_into_donated(out: Any, donated: tuple[torch.Tensor, ...]) -> Any:
    """Write the result leaves of ``out`` into the ``donated`` tensors (the JAX matching rule).

    Identity and view tests are decided while dynamo traces, so in the compiled function this
    leaves only the ``copy_`` ops, which inductor turns into stores into the input buffers.
    Dynamo runs this loop symbolically, where every Python step costs tens of microseconds, so
    identity goes through dicts keyed by the tensors (tensors hash by identity; dynamo tracks
    such dicts without guarding on the objects, unlike ``id()``): comparing every result with
    every donated input made a 150-tensor optimizer step take minutes to trace.
    """
    leaves, spec = _tree.flatten(out)  # fnn.tree handles empty dicts while compiling
    donated_at = {d: j for j, d in enumerate(donated)}
    bases = {_base_of(d): None for d in donated}
    used = [False] * len(donated)
    for x in leaves:  # results that are donated inputs keep them: no copy
        if isinstance(x, torch.Tensor) and x in donated_at:
            used[donated_at[x]] = True
    free: dict[Any, list[int]] = {}  # (shape, dtype, device) -> unused donated inputs, in order
    for j, d in enumerate(donated):
        if not used[j]:
            key = _bucket(d)
            if key in free:  # (no dict.setdefault: dynamo 2.13 returns None from it)
                free[key].append(j)
            else:
                free[key] = [j]
    result = list(leaves)
    first_at: dict[torch.Tensor, int] = {}
    with torch.no_grad():
        for i, x in enumerate(leaves):
            if not isinstance(x, torch.Tensor) or x in donated_at:
                continue
            if x in first_at:  # the same tensor returned twice: written once, returned twice
                result[i] = result[first_at[x]]
                continue
            first_at[x] = i
            if _base_of(x) in bases:
                result[i] = x.clone()  # shares memory with a donated buffer: read it first
            j = _take(free, x, donated)
            if j is not None:
                donated[j].copy_(result[i])
                result[i] = donated[j]
    return _tree.unflatten(spec, result)


def _base_of(x: torch.Tensor) -> torch.Tensor:
    return x if x._base is None else x._base


def _bucket(x: torch.Tensor) -> Any:
    """A dict key for "same shape, dtype and device"; symbolic shapes share one key per dtype."""
    shape = tuple(x.shape)
    static = all(type(n) is int for n in shape)
    return (shape if static else None, x.dtype, str(x.device))


def _take(
    free: dict[Any, list[int]], x: torch.Tensor, donated: tuple[torch.Tensor, ...]
) -> int | None:
    """Pop the first unused donated input with ``x``'s shape, dtype and device (or None)."""
    key = _bucket(x)
    if key[0] is not None and free.get(key):
        return free[key].pop(0)
    symbolic = free.get((None, key[1], key[2]), [])  # symbolic shapes: compare them
    for k, j in enumerate(symbolic):
        if donated[j].shape == x.shape:
            return symbolic.pop(k)
    return None


def donation_clash(
    tensors: list[torch.Tensor], donated: Sequence[int], kept: Sequence[int]
) -> tuple[int, int, bool] | None:
    """``(first, second, donated_twice)`` tensor indices of one tensor donated twice, or donated
    and also passed in a non-donated place (``kept``); ``None`` when each donated tensor appears
    once."""
    donated_ids = set(map(id, map(tensors.__getitem__, donated)))  # the common case, in C
    if len(donated_ids) == len(donated) and donated_ids.isdisjoint(
        map(id, map(tensors.__getitem__, kept))
    ):
        return None
    seen: dict[int, int] = {}
    for k in donated:
        first = seen.setdefault(id(tensors[k]), k)
        if first != k:
            return first, k, True
    for k in kept:
        first = seen.get(id(tensors[k]))
        if first is not None:
            return first, k, False
    return None
