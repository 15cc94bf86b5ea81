"""Parameter initializers over explicit PRNG keys, like ``jax.nn.initializers``.

Each factory returns ``init(key, shape, dtype=None) -> Tensor``; randomness comes only from
the key. Fans follow PyTorch's weight layouts (``(out, in)``, ``(out, in / groups, *kernel)``),
so e.g. ``kaiming_uniform(a=math.sqrt(5))`` is ``nn.Linear``'s default weight init::

    >>> import math, fnn
    >>> from fnn.nn import initializers
    >>> w = initializers.kaiming_uniform(a=math.sqrt(5))(fnn.random.key(0), (4, 16))
    >>> bool(w.abs().max() <= 0.25)
    True

``glorot_*``/``he_*`` are aliases of ``xavier_*``/``kaiming_*`` and follow torch (their
``*_normal`` forms are untruncated normals, unlike JAX's truncated ones). See
``fnn._src.initializers`` for details.
"""

from fnn._src.initializers import Initializer as Initializer
from fnn._src.initializers import calculate_gain as calculate_gain
from fnn._src.initializers import compute_fans as compute_fans
from fnn._src.initializers import constant as constant
from fnn._src.initializers import glorot_normal as glorot_normal
from fnn._src.initializers import glorot_uniform as glorot_uniform
from fnn._src.initializers import he_normal as he_normal
from fnn._src.initializers import he_uniform as he_uniform
from fnn._src.initializers import kaiming_normal as kaiming_normal
from fnn._src.initializers import kaiming_uniform as kaiming_uniform
from fnn._src.initializers import lecun_normal as lecun_normal
from fnn._src.initializers import lecun_uniform as lecun_uniform
from fnn._src.initializers import normal as normal
from fnn._src.initializers import ones as ones
from fnn._src.initializers import orthogonal as orthogonal
from fnn._src.initializers import truncated_normal as truncated_normal
from fnn._src.initializers import uniform as uniform
from fnn._src.initializers import variance_scaling as variance_scaling
from fnn._src.initializers import xavier_normal as xavier_normal
from fnn._src.initializers import xavier_uniform as xavier_uniform
from fnn._src.initializers import zeros as zeros

__all__ = [
    "Initializer",
    "calculate_gain",
    "compute_fans",
    "constant",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]
