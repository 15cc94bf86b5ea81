"""fnn: functional, JAX-style deep learning on PyTorch.

Pytrees (:mod:`fnn.tree`), explicit PRNG keys (:mod:`fnn.random`), chex-like test helpers
(:mod:`fnn.testing`), and the transforms every user writes: ``grad``, ``value_and_grad``,
``vmap``, ``jacrev``, ``jacfwd``, ``hessian``, ``jvp``, ``vjp``, ``stop_gradient``, ``jit``,
``remat`` and the ``jax.lax``-style control flow ``scan``, ``fori_loop``, ``while_loop``,
``cond``, ``switch``, ``associative_scan``. On import fnn tells glibc's malloc to keep freed CPU
blocks for reuse (``cpu_memory_policy``, ``set_cpu_memory_policy``, ``release_cpu_memory``;
``FNN_CPU_MEMORY=system`` leaves the allocator alone).
"""

import importlib
from typing import TYPE_CHECKING, Any

from fnn import random, testing, tree
from fnn._src.autodiff import grad as grad
from fnn._src.autodiff import hessian as hessian
from fnn._src.autodiff import jacfwd as jacfwd
from fnn._src.autodiff import jacrev as jacrev
from fnn._src.autodiff import jvp as jvp
from fnn._src.autodiff import stop_gradient as stop_gradient
from fnn._src.autodiff import value_and_grad as value_and_grad
from fnn._src.autodiff import vjp as vjp
from fnn._src.control_flow import associative_scan as associative_scan
from fnn._src.control_flow import cond as cond
from fnn._src.control_flow import fori_loop as fori_loop
from fnn._src.control_flow import scan as scan
from fnn._src.control_flow import switch as switch
from fnn._src.control_flow import while_loop as while_loop
from fnn._src.cpu_memory import configure_from_environment as _configure_cpu_memory
from fnn._src.cpu_memory import cpu_memory_policy as cpu_memory_policy
from fnn._src.cpu_memory import release_cpu_memory as release_cpu_memory
from fnn._src.cpu_memory import set_cpu_memory_policy as set_cpu_memory_policy
from fnn._src.jit import jit as jit
from fnn._src.remat import remat as remat
from fnn._src.vmap import vmap as vmap

if TYPE_CHECKING:  # loaded on first use at run time (see ``__getattr__``)
    from fnn import checkpoint, losses, models, nn

__version__ = "0.1.0"

# Large CPU tensors are reused, not page-faulted in afresh every step (fnn/_src/cpu_memory.py).
_configure_cpu_memory()

# The layers above the transforms (DESIGN.md: fnn.nn, fnn.losses and fnn.models at layer 3,
# fnn.checkpoint at 4) load on first use, so that fnn_optim and fnn_data, which build on fnn.tree
# and fnn.random, never import fnn.nn; ``fnn.nn`` and ``from fnn import nn`` work as usual.
_LAZY = ("checkpoint", "losses", "models", "nn")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"fnn.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'fnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "associative_scan",
    "checkpoint",
    "cond",
    "cpu_memory_policy",
    "fori_loop",
    "grad",
    "hessian",
    "jacfwd",
    "jacrev",
    "jit",
    "jvp",
    "losses",
    "models",
    "nn",
    "random",
    "release_cpu_memory",
    "remat",
    "scan",
    "set_cpu_memory_policy",
    "stop_gradient",
    "switch",
    "testing",
    "tree",
    "value_and_grad",
    "vjp",
    "vmap",
    "while_loop",
]
