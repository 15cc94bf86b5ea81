"""Reuse the output buffers of earlier calls once nothing else holds them.

Used by ``fnn_optim``'s eager functional updates (new moments and updates every step) and by
``fnn.jit`` for results of 32 MB and more (:mod:`fnn._src.jit_recycle`).

A functional eager update returns new tensors every step: new moments, new updates. The old
ones die when the caller rebinds its state. Each step therefore frees and allocates the same
sizes again. With glibc's own settings (fnn's CPU memory policies ``"release"`` and
``"system"``), freed memory at the top of the heap goes back to the operating system at once
(above a 1 MB trim threshold once it has seen half-megabyte blocks), so every step page-faults
its new buffers back in. Measured here on the 9.9M-parameter Adam step of
``benchmarks/optim_bench.py``: about 9,700 faults a step, roughly 20 ms of a 49 ms step. Under
the default ``"keep"`` policy glibc reuses the blocks itself; recycling then saves the
allocations and keeps the arithmetic in the few passes the updates are written for.

:class:`Recycler` keeps the buffers an update returned during its last two calls and hands a
set back as the next outputs only when nothing outside it refers to them: no Python reference
(``sys.getrefcount``), no other holder of the tensor (``Tensor._use_count``: views, autograd,
DLPack), no other tensor or array on its storage (``.numpy()``, ``detach()``) and no reference
to the storage's Python object (``untyped_storage()``). The results are the same as with fresh
buffers; only the memory is reused, so between steps the process keeps what the step needed at
its peak (the old state you dropped and one set of updates) instead of handing it back.
"""

from __future__ import annotations

import operator
import sys
import threading
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

_GENERATIONS = 2
_SHAPE = operator.attrgetter("shape")


def _counts(tensors: list[Tensor]) -> list[tuple[int, int, int, int]]:
    """References to each tensor and its storage, seen from here.

    Python references to the tensor, C++ holders of the tensor, holders of its storage, and
    Python references to the storage's Python object (torch keeps that one object per storage,
    so a user's ``untyped_storage()`` shows up only there).
    """
    out = []
    for t in tensors:
        storage = t.untyped_storage()
        out.append(
            (
                sys.getrefcount(t),
                t._use_count(),
                torch._C._storage_Use_Count(storage._cdata),
                sys.getrefcount(storage),
            )
        )
    return out


def _baseline() -> tuple[int, int, int, int] | None:
    """What :func:`_counts` reports for a tensor held by one list and nothing else.

    Measured rather than assumed, as CPython versions differ in the references a loop variable
    holds. None (recycling off) when two probes disagree.
    """
    probes = [torch.empty(1), torch.empty(1)]
    first, second = _counts(probes)
    return first if first == second else None


_BASE = _baseline()


def _unreferenced(tensors: list[Tensor]) -> bool:
    """Whether every tensor shows exactly :data:`_BASE` (the loop of :func:`_counts`, inlined
    and stopping at the first holder found, as this runs on every update)."""
    if _BASE is None:
        return False
    refs, uses, storage_uses, storage_refs = _BASE
    getrefcount, storage_use_count = sys.getrefcount, torch._C._storage_Use_Count
    for t in tensors:
        storage = t.untyped_storage()
        if (
            getrefcount(t) != refs
            or t._use_count() != uses
            or storage_use_count(storage._cdata) != storage_uses
            or getrefcount(storage) != storage_refs
        ):
            return False
    return True


Layout = list[tuple[torch.Size, torch.dtype, torch.device, torch.layout]]


_LAYOUT = operator.attrgetter("shape", "dtype", "device", "layout")


def layout_of(tensors: Sequence[Tensor]) -> Layout:
    """Shape, dtype, device and layout of each tensor: what a buffer must match to take its
    values. Lists of layouts compare in one ``==``."""
    return list(map(_LAYOUT, tensors))


class _Kept(NamedTuple):
    tensors: list[Tensor]
    layout: Layout
    inference: bool  # made under torch.inference_mode: writable only inside it


class Recycler:
    """The output buffers of the last two calls of one update function, by role.

    ``take(role, layout)`` returns tensors with that :func:`layout_of` (contents undefined): an
    earlier output set of that role that nothing else refers to any more, or new tensors.
    ``keep(role, tensors, layout)`` records this call's outputs. :meth:`layout` gives the layout
    of a set it handed out (this call's inputs are usually the last call's outputs) without
    reading every tensor again.
    """

    def __init__(self) -> None:
        self._kept: dict[str, deque[_Kept]] = {}
        self._lock = threading.Lock()

    def layout(self, role: str, tensors: Sequence[Tensor]) -> Layout:
        """:func:`layout_of` ``tensors``: remembered when they are a set kept for ``role`` (only
        their shapes are read again, as ``resize_`` could have changed them)."""
        with self._lock:
            for kept in self._kept.get(role, ()):
                if (
                    len(kept.tensors) == len(tensors)
                    and all(map(operator.is_, kept.tensors, tensors))
                    and list(map(_SHAPE, tensors)) == [size for size, _, _, _ in kept.layout]
                ):
                    return kept.layout
        return layout_of(tensors)

    def take(self, role: str, layout: Layout) -> list[Tensor]:
        writable = torch.is_inference_mode_enabled()
        with self._lock:
            kept = self._kept.get(role)
            if kept:
                # Newest first: a set freed since the last call is the likeliest still in cache.
                for i in range(len(kept) - 1, -1, -1):
                    k = kept[i]
                    if (
                        (writable or not k.inference)
                        and k.layout == layout
                        and _unreferenced(k.tensors)
                    ):
                        del kept[i]
                        return k.tensors
        return [torch.empty(size, dtype=dtype, device=device) for size, dtype, device, _ in layout]

    def keep(self, role: str, tensors: list[Tensor], layout: Layout) -> None:
        inference = bool(tensors) and tensors[0].is_inference()
        with self._lock:
            kept = self._kept.setdefault(role, deque(maxlen=_GENERATIONS))
            kept.append(_Kept(tensors, layout, inference))
