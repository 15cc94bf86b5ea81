"""Test helpers for fnn, in the spirit of chex: pytree asserts, compile counting, gradient checks.

Asserts over pytrees of torch tensors, numpy arrays and Python numbers name the dotted tree path
of the first mismatch (``"encoder.layers.0.weight"``) and say what differs there:

- :func:`assert_trees_all_close`, :func:`assert_trees_all_equal`, :func:`assert_tree_all_finite`,
  :func:`assert_trees_all_equal_structs`: values and structure.
- :func:`assert_shape`, :func:`assert_tree_shape_prefix`: shapes, with ``None`` and ``...``.

Transforms:

- :func:`assert_max_compiles`: a context manager counting ``torch.compile`` compilations.
- :func:`check_grads`: autodiff (``torch.func.jvp`` / ``vjp``) against finite differences.
- :func:`variants`: run a pytest test eagerly and compiled (ids ``[eager]`` and ``[jit]``).

Example:
    >>> import torch, fnn
    >>> fnn.testing.assert_trees_all_close({"w": torch.ones(2)}, {"w": torch.ones(2) + 1e-8})
    >>> fnn.testing.assert_shape(torch.zeros(4, 3), (None, 3))
"""

from fnn.testing._asserts import assert_shape as assert_shape
from fnn.testing._asserts import assert_tree_all_finite as assert_tree_all_finite
from fnn.testing._asserts import assert_tree_shape_prefix as assert_tree_shape_prefix
from fnn.testing._asserts import assert_trees_all_close as assert_trees_all_close
from fnn.testing._asserts import assert_trees_all_equal as assert_trees_all_equal
from fnn.testing._asserts import assert_trees_all_equal_structs as assert_trees_all_equal_structs
from fnn.testing._compile import CompileCount as CompileCount
from fnn.testing._compile import assert_max_compiles as assert_max_compiles
from fnn.testing._grads import check_grads as check_grads
from fnn.testing._variants import Variant as Variant
from fnn.testing._variants import variants as variants

__all__ = [
    "CompileCount",
    "Variant",
    "assert_max_compiles",
    "assert_shape",
    "assert_tree_all_finite",
    "assert_tree_shape_prefix",
    "assert_trees_all_close",
    "assert_trees_all_equal",
    "assert_trees_all_equal_structs",
    "check_grads",
    "variants",
]
