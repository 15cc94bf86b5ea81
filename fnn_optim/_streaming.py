"""Streaming stores for the functional SGD-with-momentum update of large states.

A functional update writes two new buffers (the new momentum buffer and the updates) where
``torch.optim`` overwrites its buffer in place. On x86 a plain store to memory that is not in
cache first reads the line in (read-for-ownership), so each new buffer costs a full extra read:
measured here on one 9.85M-element tensor, ``torch.mul(a, s, out=c)`` into a buffer out of cache
took 2.8-3.4 ms against 1.7-1.8 ms for ``a.mul_(s)`` and 1.6-1.8 ms to read ``a`` once. Counted in
reads of the 40 MB, ``torch.optim`` foreach SGD makes 5 and the functional update plus
``apply_updates_`` made 6: a floor of 1.2x before any Python (``benchmarks/optim_bench.py``
measured 1.22-1.27x).

This module's kernel computes both buffers in one pass with streaming (non-temporal) stores,
which skip that read: ``new_buf = momentum * buf + grad`` and ``updates = -lr * new_buf`` (or
``-lr * (grad + momentum * new_buf)`` with Nesterov), 4 reads in all with ``apply_updates_``.
The optimizer benchmark's functional SGD step then took 0.88x, 0.96x and 0.96x of torch foreach's
in three runs. The parts run on torch's own OpenMP threads (the library links ``libgomp.so.1``,
which resolves to the copy torch loaded): threads of another pool competed with torch's workers,
which spin for a while after each op, and made the kernel slower than plain stores.

Streaming stores send the lines to memory instead of the cache, which only pays when the buffers
would not stay in cache anyway: the kernel runs when the two new buffers together reach the size of
the last-level cache (``/sys/devices/system/cpu/cpu0/cache``) or 32 MiB, whichever is smaller. The
cap is for virtual machines, which see the whole socket's cache: a 2-vCPU Intel Xeon VM reads 260
MiB there, yet a functional SGD step over 5M parameters (40 MB of new buffers), repeated alone, took
3.6 ms with the kernel and 5.4-5.6 ms without; 2.5M parameters took 1.8 ms either way and 1M 0.85 ms
with it against 0.79 ms without. On that VM the optimizer benchmark's functional SGD step went from
1.52x of torch foreach's without the kernel to 0.92x. It rounds exactly where the op-by-op path does
(``torch.add(grad, buf, alpha=momentum)`` is one fused multiply-add per element; Nesterov's buffer
is a product, then a sum), so results do not depend on which path ran.

The kernel is C, compiled once per machine with the system's C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``; about 0.3 s; without OpenMP if the compiler has none, then on one thread)
into ``$XDG_CACHE_HOME/fnn`` (``~/.cache/fnn``) and loaded with ``ctypes``. It has AVX-512 and
AVX2 versions, picked by torch's own CPU capability (so that torch's kernels use fused
multiply-adds too). Without a compiler, on another CPU, or with ``FNN_STREAMING_STORES=0``, the
op-by-op path runs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from string import Template

import torch
from torch import Tensor

__all__ = ["available", "sgd_momentum"]

_ENV = "FNN_STREAMING_STORES"
_LOG = logging.getLogger("fnn_optim")
_DEFAULT_CACHE_BYTES = 32 << 20  # also the largest size limit (module docstring)
# No contraction of a * b + c into one rounding: the kernel rounds where torch's ops round.
_FLAGS = ("-O3", "-ffp-contract=off", "-shared", "-fPIC")
_OPENMP = ("-fopenmp",)  # left out (one thread) where the compiler has no OpenMP

_TEMPLATE = r"""
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

typedef struct {
  const float *const *g, *const *b;
  float *const *x, *const *u;
  const int64_t *n;
  int64_t leaves, start, stop;
  float m, nlr;
  int nesterov, isa;
} job_t;

/* One element, as fnn_optim's op-by-op path computes it (compiled with -ffp-contract=off):
   add(g, b, alpha=m) is fma(m, b, g); with Nesterov the buffer is mul(b, m) then add_(g). */
static inline void one(const float *g, const float *b, float *x, float *u, int64_t i,
                       float m, float nlr, int nesterov) {
  float xi = nesterov ? m * b[i] + g[i] : fmaf(m, b[i], g[i]);
  x[i] = xi;
  u[i] = nesterov ? nlr * fmaf(m, xi, g[i]) : nlr * xi;
}

$SEGMENTS
/* The part [start, stop) of the leaves laid end to end. */
static void *run(void *arg) {
  const job_t *j = (const job_t *)arg;
  int64_t at = 0;
  for (int64_t k = 0; k < j->leaves && at < j->stop; at += j->n[k], k++) {
    const int64_t lo = j->start > at ? j->start - at : 0;
    const int64_t hi = j->stop - at < j->n[k] ? j->stop - at : j->n[k];
    if (hi <= lo) continue;
    void (*seg)(const float *, const float *, float *, float *, int64_t, float, float, int) =
        j->isa == 512 ? seg512 : seg256;
    seg(j->g[k] + lo, j->b[k] + lo, j->x[k] + lo, j->u[k] + lo, hi - lo, j->m, j->nlr,
        j->nesterov);
  }
  _mm_sfence(); /* streaming stores are weakly ordered: make them visible before returning */
  return 0;
}

int fnn_sgd_momentum(const float *const *g, const float *const *b, float *const *x,
                     float *const *u, const int64_t *n, int64_t leaves, float m, float nlr,
                     int nesterov, int isa, int threads) {
  if (isa != 512 && isa != 256) return 1;
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  int64_t total = 0;
  for (int64_t k = 0; k < leaves; k++) total += n[k];
  job_t jobs[64];
  for (int t = 0; t < threads; t++) {
    job_t j = {g, b, x, u, n, leaves, total / 16 * t / threads * 16,
               t == threads - 1 ? total : total / 16 * (t + 1) / threads * 16, m, nlr,
               nesterov, isa};
    jobs[t] = j;
  }
  /* torch's own OpenMP runtime (same soname, already loaded) runs the parts: a thread of
     another pool would compete with torch's workers, which spin for a while after each op. */
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int t = 0; t < threads; t++) run(&jobs[t]);
  return 0;
}
"""


# One vector loop per instruction set ($T target, $W-bit vectors of $L floats, $M alignment mask).
_SEGMENT = r"""
__attribute__((target("$T"))) static void seg$W(
    const float *g, const float *b, float *x, float *u, int64_t n, float m, float nlr,
    int nesterov) {
  int64_t i = 0;
  while (i < n && ((uintptr_t)(x + i) & $M)) one(g, b, x, u, i++, m, nlr, nesterov);
  const int stream = ((uintptr_t)(u + i) & $M) == 0;
  const __m$W vm = _mm${W}_set1_ps(m), vl = _mm${W}_set1_ps(nlr);
  for (; i + $L <= n; i += $L) {
    const __m$W gv = _mm${W}_loadu_ps(g + i);
    const __m$W bv = _mm${W}_loadu_ps(b + i);
    const __m$W xv =
        nesterov ? _mm${W}_add_ps(_mm${W}_mul_ps(vm, bv), gv) : _mm${W}_fmadd_ps(vm, bv, gv);
    const __m$W uv = _mm${W}_mul_ps(vl, nesterov ? _mm${W}_fmadd_ps(vm, xv, gv) : xv);
    if (stream) {
      _mm${W}_stream_ps(x + i, xv);
      _mm${W}_stream_ps(u + i, uv);
    } else {
      _mm${W}_storeu_ps(x + i, xv);
      _mm${W}_storeu_ps(u + i, uv);
    }
  }
  for (; i < n; i++) one(g, b, x, u, i, m, nlr, nesterov);
}
"""
_SOURCE = Template(_TEMPLATE).substitute(
    SEGMENTS="".join(
        Template(_SEGMENT).substitute(T=target, W=bits, L=bits // 32, M=bits // 8 - 1)
        for target, bits in (("avx512f", 512), ("avx2,fma", 256))
    )
)


def _setting() -> bool:
    setting = os.environ.get(_ENV, "1")
    if setting not in ("0", "1"):
        raise ValueError(
            f"{_ENV} must be 0 (fnn_optim's functional SGD writes its buffers op by op) or 1 "
            f"(large ones are written with streaming stores, the default); got {setting!r}."
        )
    return setting == "1"


@functools.cache
def _isa() -> int:
    """512 or 256 for the kernel version matching torch's CPU capability; 0 for none."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 0
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": 512, "AVX2": 256}.get(capability, 0)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fnn"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        path = name and shutil.which(name)
        if path:
            return path
    return None


def _build(compiler: str, target: Path) -> None:
    """Compile :data:`_SOURCE` into ``target`` (written under another name, then renamed, so
    that a process never loads a half-written library)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / "sgd_streaming.c"
        source.write_text(_SOURCE)
        out = Path(tmp) / target.name
        cmd = [compiler, *_FLAGS, str(source), "-o", str(out)]
        try:
            subprocess.run([*cmd, *_OPENMP], check=True, capture_output=True, timeout=120)
        except subprocess.CalledProcessError:
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        os.replace(out, target)


_LOCK = threading.Lock()


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The compiled kernel (built on first use), or None when it cannot be had."""
    if not _isa():
        return None
    compiler = _compiler()
    if compiler is None:
        _LOG.info("fnn_optim: no C compiler found; SGD writes its buffers op by op")
        return None
    flags = [*_FLAGS, *_OPENMP]
    key = hashlib.sha256("\0".join([_SOURCE, compiler, *flags]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"sgd_streaming_{key}.so"
    try:
        with _LOCK:
            if not target.exists():
                _build(compiler, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        _LOG.info("fnn_optim: the streaming SGD kernel is not available (%s)", err)
        return None
    fn = lib.fnn_sgd_momentum
    pointers = ctypes.POINTER(ctypes.c_void_p)
    fn.argtypes = [pointers] * 4 + [ctypes.POINTER(ctypes.c_int64), ctypes.c_int64]
    fn.argtypes += [ctypes.c_float, ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return lib


@functools.cache
def _cache_bytes() -> int:
    """The size of cpu0's last-level cache from sysfs (32 MiB when it cannot be read)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = (0, _DEFAULT_CACHE_BYTES)
    try:
        for index in base.glob("index*"):
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            size = int(text.rstrip("KMG")) * scale
            best = max(best, (level, size))
    except (OSError, ValueError):
        return _DEFAULT_CACHE_BYTES
    return best[1]


def available() -> bool:
    """Whether :func:`sgd_momentum` can run here (a supported CPU, the kernel compiled, and
    ``FNN_STREAMING_STORES`` not 0).

    Raises:
        ValueError: ``FNN_STREAMING_STORES`` is set to something other than ``0`` or ``1``.

    Example:
        >>> from fnn_optim._streaming import available
        >>> isinstance(available(), bool)
        True
    """
    return _setting() and _library() is not None


def _array(kind: type, values: list[int]) -> ctypes.Array:
    return (kind * len(values))(*values)


def sgd_momentum(
    g: list[Tensor],
    buf: list[Tensor],
    new_buf: list[Tensor],
    u: list[Tensor],
    momentum: float,
    nlr: float,
    *,
    nesterov: bool,
    min_bytes: int | None = None,
) -> bool:
    """``new_buf = momentum * buf + g`` and ``u = nlr * new_buf`` (Nesterov:
    ``u = nlr * (g + momentum * new_buf)``), leaf by leaf, with streaming stores.

    Every list holds contiguous float32 CPU tensors, leaf ``i`` of the same shape in each;
    ``nlr`` is ``-learning_rate``. Runs only when the two new buffers together reach
    ``min_bytes`` (default: the last-level cache size or 32 MiB, whichever is smaller) and the
    kernel is :func:`available`;
    returns whether it ran (the caller otherwise writes the buffers op by op).

    Example:
        >>> import torch
        >>> from fnn_optim._streaming import sgd_momentum
        >>> g, b = [torch.ones(40)], [torch.full((40,), 2.0)]
        >>> x, u = [torch.empty(40)], [torch.empty(40)]
        >>> if sgd_momentum(g, b, x, u, 0.5, -0.1, nesterov=False, min_bytes=0):
        ...     assert x[0].eq(2.0).all() and u[0].eq(-0.2).all()
    """
    if not g or not _setting():
        return False
    sizes = [t.numel() for t in g]
    limit = min(_cache_bytes(), _DEFAULT_CACHE_BYTES) if min_bytes is None else min_bytes
    if 8 * sum(sizes) < limit:
        return False
    lib = _library()
    if lib is None:
        return False
    ptr = Tensor.data_ptr
    arrays = [_array(ctypes.c_void_p, list(map(ptr, leaves))) for leaves in (g, buf, new_buf, u)]
    failed = lib.fnn_sgd_momentum(
        *arrays,
        _array(ctypes.c_int64, sizes),
        len(sizes),
        momentum,
        nlr,
        int(nesterov),
        _isa(),
        torch.get_num_threads(),
    )
    return failed == 0
