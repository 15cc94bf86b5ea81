"""``fnn.jit`` writes large results into the buffers of earlier results nobody holds any more.

By default glibc serves every allocation of 32 MB or more (its largest mmap threshold on 64-bit
Linux) with a fresh ``mmap`` and unmaps it on free, so a function returning such a tensor
page-faults all of it in again at every call: the per-example gradients of a 784-512-512-10 MLP
over 32 examples (51 and 34 MB) took about 20,700 faults a call here, more than half of the call.
JAX keeps its own pool of device buffers; torch has none on the CPU. Under fnn's default CPU
memory policy (``"keep"``, :mod:`fnn._src.cpu_memory`) glibc reuses freed blocks itself, so
recycling only runs under ``"release"`` or ``"system"``: with ``"keep"`` a fresh result cost
the same (3.95 against 4.04 ms a call for those gradients) and recycling costs a second compile.

When the first call of a compiled version returns new tensors of :data:`RECYCLE_BYTES` or more,
``fnn.jit`` compiles a second flat function that takes buffers for them as extra donated inputs
(the donation rule writes each result into the first free buffer of its shape, after the
arguments the user donated). Each later call takes a set of buffers that a call before returned
and that nothing refers to any more (:class:`fnn._src.recycle.Recycler`: no Python reference, no
view, no other holder of the storage), or new ones, and returns the results in them. Inductor
stores results straight into donated buffers, so this adds no pass over memory. The results are
the same; between calls the function keeps up to two such sets alive. Those per-example
gradients took 3.5 ms a call this way and 28.9 ms without it (the same compiled function with
``reuse_buffers=False``, interleaved in one process).

Recycling stays off for results not on the CPU (CUDA's caching allocator reuses blocks), for
results that require grad (the donated copy is not recorded by
autograd), non-contiguous or subclassed tensors, results sharing memory with an input or another
result, calls where autograd would record the function, and under a compiler stance other than
the default (``fail_on_recompile`` promises no new compilation); it turns itself off for good
when a call's results did not land in the buffers (e.g. a result changed shape) or the second
version fails to compile.
"""

from __future__ import annotations

import collections
import operator
from typing import Any

import optree
import torch

from fnn._src.cpu_memory import cpu_memory_policy
from fnn._src.jit_codegen import OPTS
from fnn._src.recycle import Layout, Recycler, layout_of

__all__ = ["RECYCLE_BYTES", "ResultRecycling", "recyclable"]

RECYCLE_BYTES = 32 * 2**20
_ROLE = "results"
_REQUIRES_GRAD = operator.attrgetter("requires_grad")


def recyclable(out: Any, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The result leaves of ``out`` worth writing into recycled buffers, in flattened order.

    New plain, contiguous CPU tensors of :data:`RECYCLE_BYTES` or more that do not require
    grad, share memory with no input (``tensors``) and no other result (views, ``detach()``:
    writing into a buffer would end such sharing), and whose shape, dtype and device no input
    and no other result has. None while the C allocator keeps freed blocks for reuse.
    """
    if allocator_reuses_cpu_blocks():
        return []
    results = [x for x in optree.tree_leaves(out, **OPTS) if isinstance(x, torch.Tensor)]
    inputs = {_storage(t) for t in tensors}
    storages = collections.Counter(_storage(x) for x in {id(x): x for x in results}.values())
    picked: list[torch.Tensor] = []
    seen: set[int] = set()
    for x in results:
        if (
            type(x) is torch.Tensor
            and id(x) not in seen
            and x.layout is torch.strided
            and x.device.type == "cpu"
            and x.nbytes >= RECYCLE_BYTES
            and not x.requires_grad
            and x.is_contiguous()
            and storages[_storage(x)] == 1
            and _storage(x) not in inputs
        ):
            seen.add(id(x))
            picked.append(x)
    # Results reach buffers by the donation rule (first free buffer of the same shape, dtype and
    # device, in flattened order). Keep only results whose (shape, dtype, device) no input and
    # no other result has, so that each buffer receives exactly the result it was made for.
    others = {_key(t) for t in tensors}
    others.update(_key(x) for x in results if id(x) not in seen)
    return [x for x in picked if _key(x) not in others]


def allocator_reuses_cpu_blocks() -> bool:
    """Whether glibc keeps freed large blocks for reuse (fnn's ``"keep"`` CPU memory policy)."""
    return cpu_memory_policy() == "keep"


def _key(x: torch.Tensor) -> tuple[Any, ...]:
    return (tuple(x.shape), x.dtype, x.device)


def _storage(x: torch.Tensor) -> int:
    """Where ``x``'s memory starts (sparse and other storage-less tensors: ``-id(x)``)."""
    try:
        return x.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return -id(x)


class ResultRecycling:
    """The second compiled version of an entry (``entry``: results into buffers) and its buffers.

    Created with the first call's results, which become the first kept set.
    """

    __slots__ = ("calls", "entry", "layout", "recycler")

    def __init__(self, entry: Any, first: list[torch.Tensor]) -> None:
        self.entry = entry
        self.calls = 0
        self.layout: Layout = layout_of(first)
        self.recycler = Recycler()
        self.recycler.keep(_ROLE, first, self.layout)

    @staticmethod
    def applies(tensors: list[torch.Tensor]) -> bool:
        """False when autograd would record the call (its results must keep their graph)."""
        return not (torch.is_grad_enabled() and any(map(_REQUIRES_GRAD, tensors)))

    def take(self) -> list[torch.Tensor]:
        """Buffers for this call's results: a free kept set, or new tensors."""
        return self.recycler.take(_ROLE, self.layout)

    def keep(self, buffers: list[torch.Tensor], out: Any) -> bool:
        """Keep ``buffers`` if every one of them came back among the results ``out``."""
        self.calls += 1
        returned = {id(x) for x in optree.tree_leaves(out, **OPTS)}
        if not all(id(b) in returned for b in buffers):
            return False
        self.recycler.keep(_ROLE, buffers, self.layout)
        return True
