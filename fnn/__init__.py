"""fnn: functional, JAX-style deep learning on PyTorch.

Pytrees (:mod:`fnn.tree`), explicit PRNG keys (:mod:`fnn.random`), chex-like test helpers
(:mod:`fnn.testing`), and the transforms every user writes: ``grad``, ``value_and_grad``,
``vmap``, ``jacrev``, ``jacfwd``, ``hessian``, ``jvp``, ``vjp``, ``stop_gradient``, ``jit``,
``remat`` and the ``jax.lax``-style control flow ``scan``, ``fori_loop``, ``while_loop``,
``cond``, ``switch``, ``associative_scan``.

Importing fnn turns on torch's huge-page allocation of CPU tensors of 2 MB and more
(``THP_MEM_ALLOC_ENABLE=1``) for this process, unless that variable is set. Batched transforms
such as ``vmap(grad)`` return tensors larger than glibc ever reuses (32 MB), so every call maps
fresh memory; with 4 KB pages that is one page fault per 4 KB. torch reads the variable once,
at its first CPU allocation: import fnn before creating tensors, or set the variable yourself
(``THP_MEM_ALLOC_ENABLE=0`` keeps torch's default). The environment is left as it was.
"""

# First, before any tensor exists (see fnn._src.huge_pages).
from fnn._src import huge_pages as _huge_pages  # noqa: F401

# isort: split

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
from fnn._src.jit import jit as jit
from fnn._src.remat import remat as remat
from fnn._src.vmap import vmap as vmap

if TYPE_CHECKING:  # loaded on first use at run time (see ``__getattr__``)
    from fnn import checkpoint, losses, models, nn

__version__ = "0.1.0"

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
    "remat",
    "scan",
    "stop_gradient",
    "switch",
    "testing",
    "tree",
    "value_and_grad",
    "vjp",
    "vmap",
    "while_loop",
]
