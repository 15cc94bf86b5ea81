"""Explicit, splittable PRNG keys, bit-identical to ``jax.random`` (threefry2x32).

There is no global random state: every sampler takes a key, and the same key always gives
the same numbers. Make one key from a seed, then split it into as many independent keys as
you need, or fold a step number into it::

    >>> import fnn
    >>> key = fnn.random.key(0)
    >>> init_key, dropout_key = fnn.random.split(key)
    >>> w = fnn.random.normal(init_key, (3, 2))
    >>> step_key = fnn.random.fold_in(dropout_key, 7)

A key is a ``torch.uint32`` tensor of shape ``(2,)``, exactly JAX's raw key, so keys pass
through ``torch.func.vmap`` (a batch of split keys gives independent draws),
``torch.func.grad`` and ``torch.compile`` (a new key value never recompiles) like any tensor.

What matches JAX: ``key``, ``split``, ``fold_in``, ``bits``, ``uniform``, ``bernoulli``,
``randint``, ``permutation`` and ``choice`` without ``p`` bit for bit; ``normal``,
``truncated_normal``, ``gumbel``, ``exponential`` and ``orthogonal`` within float tolerance
(they go through torch's ``erfinv``/``log``, which are not XLA's); ``categorical`` and
``choice`` with ``p`` compare perturbed or accumulated floats, so they give JAX's indices
except where two candidates tie within that tolerance (the golden tests see no difference).
"""

from fnn._src.prng import bits as bits
from fnn._src.prng import fold_in as fold_in
from fnn._src.prng import is_key as is_key
from fnn._src.prng import key as key
from fnn._src.prng import split as split
from fnn._src.samplers import bernoulli as bernoulli
from fnn._src.samplers import categorical as categorical
from fnn._src.samplers import choice as choice
from fnn._src.samplers import exponential as exponential
from fnn._src.samplers import gumbel as gumbel
from fnn._src.samplers import normal as normal
from fnn._src.samplers import orthogonal as orthogonal
from fnn._src.samplers import permutation as permutation
from fnn._src.samplers import randint as randint
from fnn._src.samplers import truncated_normal as truncated_normal
from fnn._src.samplers import uniform as uniform

__all__ = [
    "bernoulli",
    "bits",
    "categorical",
    "choice",
    "exponential",
    "fold_in",
    "gumbel",
    "is_key",
    "key",
    "normal",
    "orthogonal",
    "permutation",
    "randint",
    "split",
    "truncated_normal",
    "uniform",
]
