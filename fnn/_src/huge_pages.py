"""Huge pages for large CPU tensors, turned on when fnn is imported (before any tensor exists).

torch's CPU allocator asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) on
allocations of 2 MB and more when ``THP_MEM_ALLOC_ENABLE`` is set; c10 reads the variable once,
at its first CPU allocation. fnn sets it for this process unless the user set it (``0`` keeps
torch's default), makes c10 read it with one allocation, and removes it from the environment
again, so child processes and later readers of ``os.environ`` see what the user set. It
matters where the kernel's transparent-huge-page mode is ``madvise`` (with ``always`` large
mappings get huge pages anyway, with ``never`` not at all).

Why: batched transforms return large tensors. ``fnn.jit(fnn.vmap(fnn.grad(f)))`` over 32
examples of a 784-512-512-10 MLP returns 51 MB and 34 MB of gradients; glibc maps blocks above
32 MB fresh on every call and never reuses them, so with 4 KB pages each call took about 20,700
page faults and page-faulting cost more than the arithmetic (``benchmarks/run.py``, per-example
gradients). With huge pages it took 800 to 1,300 faults and under a third of the time.
"""

from __future__ import annotations

import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def _enable() -> bool:
    """Turn huge-page allocation on unless ``VARIABLE`` is set; whether fnn set it."""
    if VARIABLE in os.environ:
        return False
    os.environ[VARIABLE] = "1"
    try:
        import torch

        # c10 reads VARIABLE at its first CPU allocation, and only then. On the CPU explicitly:
        # a default device set before fnn is imported must not start (say) CUDA here.
        torch.empty(1, device="cpu")
    finally:
        del os.environ[VARIABLE]
    return True


#: Whether importing fnn set the variable (False when the user had set it).
ENABLED_BY_FNN = _enable()
