"""How the process's C allocator treats large CPU blocks: keep them for reuse, or return them.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc hands out every block larger
than its mmap threshold as a fresh ``mmap`` and unmaps it on free; the threshold adapts upwards
but never past 32 MiB. A training step that makes a 51 MB tensor (per-example gradients of a
784x512 layer over 32 examples) therefore gets brand-new pages at every call, and the kernel
zero-fills and maps them one 4 KiB page fault at a time: about 20,000 faults, which took longer
than the arithmetic. Smaller blocks suffer the same until the threshold has adapted.

At import fnn tells glibc to serve every block from its heap and to keep up to
:data:`KEEP_BYTES` of freed memory at the heap's top (policy ``"keep"``): the caching that CPU
tuning guides for PyTorch get by swapping in jemalloc or tcmalloc. The price is that the
process's RSS does not shrink when tensors die; :func:`release_cpu_memory` gives freed memory
back on demand.

fnn leaves the allocator alone (policy ``"system"``) when the C library is not glibc, when
``FNN_CPU_MEMORY=system`` is set, or when the environment already tunes glibc's malloc
(any ``MALLOC_*`` variable, e.g. ``MALLOC_MMAP_THRESHOLD_``, or a ``glibc.malloc`` tunable):
the user's choice wins.
"""

from __future__ import annotations

import ctypes
import os
from typing import Literal

__all__ = ["KEEP_BYTES", "cpu_memory_policy", "release_cpu_memory", "set_cpu_memory_policy"]

Policy = Literal["keep", "release", "system"]

#: Freed memory glibc may keep at the top of its heap under the ``"keep"`` policy.
KEEP_BYTES = 1 << 30
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
# The values the "release" policy sets: glibc's adaptive threshold at its ceiling (blocks up to
# 32 MiB are reused, larger ones go back to the system on free), glibc's default mmap count.
_RELEASE = {_M_MMAP_MAX: 65536, _M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20}
_KEEP = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: KEEP_BYTES}
_ENV = "FNN_CPU_MEMORY"


def _glibc() -> ctypes.CDLL | None:
    """The running glibc, or None under another C library (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt  # noqa: B018
        libc.malloc_trim  # noqa: B018
    except (AttributeError, OSError, TypeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


_LIBC = _glibc()
_policy: Policy = "system"


def cpu_memory_policy() -> Policy:
    """The allocator policy in force: ``"keep"``, ``"release"`` or ``"system"`` (untouched).

    Returns:
        ``"keep"`` (fnn's default on glibc: freed blocks stay in the process for reuse),
        ``"release"`` (blocks over 32 MiB go back to the system on free), or ``"system"``
        (fnn never changed the allocator; see the module docstring for when).

    Example:
        >>> import fnn
        >>> fnn.cpu_memory_policy() in ("keep", "release", "system")
        True
    """
    return _policy


def set_cpu_memory_policy(policy: Literal["keep", "release"]) -> None:
    """Choose how glibc's ``malloc`` treats large CPU blocks, for the whole process.

    ``"keep"`` serves every block from the heap and keeps up to :data:`KEEP_BYTES` of freed
    memory at its top, so a step that frees and re-allocates a 50 MB tensor reuses the same pages
    instead of page-faulting fresh ones (eager per-example gradients of the suite's MLP: 10.3
    against 29.9 ms a call here, ``python -m benchmarks.cpu_memory_probe``). The
    RSS then stays near its peak. ``"release"`` returns blocks over 32 MiB to the system on free
    (glibc's own adaptive limit, fixed at its ceiling): the smallest RSS, at the price of page
    faults on every large allocation.

    Args:
        policy: ``"keep"`` or ``"release"``.

    Raises:
        ValueError: for any other policy.
        RuntimeError: when the C library is not glibc (there is nothing to set).

    Example:
        >>> import fnn
        >>> before = fnn.cpu_memory_policy()
        >>> if before != "system":
        ...     fnn.set_cpu_memory_policy("release")
        ...     fnn.set_cpu_memory_policy(before)
        >>> fnn.cpu_memory_policy() == before
        True
    """
    global _policy
    if policy not in ("keep", "release"):
        raise ValueError(f"fnn.set_cpu_memory_policy: expected 'keep' or 'release', got {policy!r}")
    if _LIBC is None:
        raise RuntimeError(
            "fnn.set_cpu_memory_policy: this process's C library is not glibc, whose malloc "
            "this setting tunes; the system allocator stays as it is"
        )
    for param, value in (_KEEP if policy == "keep" else _RELEASE).items():
        if _LIBC.mallopt(param, value) != 1:
            raise RuntimeError(f"glibc refused mallopt({param}, {value}) for policy {policy!r}")
    _policy = policy


def release_cpu_memory() -> bool:
    """Give the memory of dead tensors back to the operating system now.

    Under the ``"keep"`` policy freed blocks stay in the process; call this after a phase that
    needed much more memory than what follows (a large evaluation, loading a dataset). The next
    large allocations fault their pages in again.

    Returns:
        Whether any memory was returned (always False when the C library is not glibc).

    Example:
        >>> import fnn, torch
        >>> big = torch.ones(1 << 24)
        >>> del big
        >>> fnn.release_cpu_memory() in (True, False)
        True
    """
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))


def _user_tuned_malloc() -> bool:
    """Whether the environment already tunes glibc's malloc (then fnn leaves it alone)."""
    return any(name.startswith("MALLOC_") for name in os.environ) or (
        "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
    )


def configure_from_environment() -> None:
    """Apply the import-time policy: ``FNN_CPU_MEMORY`` if set, else ``"keep"`` on glibc.

    Raises:
        ValueError: when ``FNN_CPU_MEMORY`` holds anything but keep, release or system.
    """
    choice = os.environ.get(_ENV, "keep")
    if choice not in ("keep", "release", "system"):
        raise ValueError(
            f"environment variable {_ENV}={choice!r}: expected 'keep' (the default: freed CPU "
            "memory stays in the process for reuse), 'release' or 'system' (fnn leaves glibc's "
            "malloc alone)"
        )
    if choice == "system" or _LIBC is None or _user_tuned_malloc():
        return
    set_cpu_memory_policy(choice)
