"""fnn: functional, JAX-style deep learning on PyTorch.

Pytrees (:mod:`fnn.tree`), explicit PRNG keys (:mod:`fnn.random`), chex-like test helpers
(:mod:`fnn.testing`), and the transforms every user writes: ``grad``, ``value_and_grad``,
``vmap``, ``jacrev``, ``jacfwd``, ``hessian``, ``jvp``, ``vjp``, ``stop_gradient``, ``jit``,
``remat`` and the ``jax.lax``-style control flow ``scan``, ``fori_loop``, ``while_loop``,
``cond``, ``switch``, ``associative_scan``.
"""

from fnn import checkpoint, losses, models, nn, random, testing, tree
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

__version__ = "0.1.0"
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
