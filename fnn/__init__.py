"""fnn: functional, JAX-style deep learning on PyTorch.

Pytrees (:mod:`fnn.tree`), explicit PRNG keys (:mod:`fnn.random`) and chex-like test helpers
(:mod:`fnn.testing`) are the foundation the transforms, layers and optimizers build on.
"""

from fnn import random, testing, tree

__version__ = "0.1.0"
__all__ = ["random", "testing", "tree"]
