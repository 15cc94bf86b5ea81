"""Remember that inductor's CPU vector-ISA probes passed here, so later processes skip them.

Before its first C++ kernel in a process, inductor checks every vector instruction set the CPU
advertises (AVX2, AVX-512, ...) by building a test program and loading it in a child Python
(``torch._inductor.cpu_vec_isa.VecISA.check_build``). The builds are cached on disk, the loads are
not: six child processes, about 1.1 s of the 5 s it took here to start the MLP training step from
a warm compile cache.

Inductor's own switch for this is ``config.cpp.vec_isa_ok`` (``True``: trust the CPU's flags).
It is part of the compile-cache key, so it must not differ between the process that filled the
cache and the one reading it. :func:`vec_isa_ok` therefore gives the same answer in both: the
first time on a machine (for this torch, Python, C++ compiler and CPU) it runs inductor's probes
and records whether every advertised ISA passed; afterwards it reads that record. Only when all
passed does ``fnn.jit`` pass ``cpp.vec_isa_ok=True``; otherwise inductor keeps probing as usual.
Nothing is assumed that inductor did not verify on this machine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch


def _identity() -> str | None:
    """A key for what the verdict depends on; None where fnn does not know how to form one."""
    from torch._inductor import cpp_builder

    if sys.platform != "linux":
        return None
    compiler = cpp_builder.get_cpp_compiler()  # a name ("g++") or a path
    found = shutil.which(compiler)
    if found is None:
        return None
    real = os.path.realpath(found)
    stat = os.stat(real)
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        flags = sorted({line for line in f if line.startswith(("flags", "Features"))})
    parts = [torch.__version__, sys.executable, platform.machine(), real]
    parts += [str(stat.st_size), str(stat.st_mtime_ns), *flags]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _verdict() -> bool:
    """Run inductor's probes (cached for the process); True if every advertised ISA passed."""
    from torch._inductor import config, cpu_vec_isa

    probed = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()]
    with config.patch({"cpp.vec_isa_ok": True}):
        advertised = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list.__wrapped__()]
    return bool(advertised) and probed == advertised


@functools.cache
def vec_isa_ok() -> bool:
    """True when inductor's vector-ISA probes are known to pass here (see the module docstring).

    The first call on a machine runs the probes (what inductor's first compile would do anyway)
    and writes the verdict under inductor's cache directory; later processes read it. Any error
    (an unknown platform, a torch without these internals, an unwritable cache) gives False,
    which leaves inductor's behaviour unchanged.
    """
    try:
        from torch._inductor import config
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        if config.cpp.vec_isa_ok is not None:  # the user (or TORCHINDUCTOR_VEC_ISA_OK) decided
            return False
        key = _identity()
        if key is None:
            return False
        path = Path(cache_dir()) / "fnn" / f"vec_isa_{key}.json"
        if path.exists():
            return json.loads(path.read_text()).get("all_passed") is True
        ok = _verdict()
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as f:
            json.dump({"all_passed": ok}, f)
        os.replace(f.name, path)
        return ok
    except Exception:
        return False
