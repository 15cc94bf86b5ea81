"""Pytrees: nested dicts, lists, tuples, namedtuples and registered classes of tensors.

Built on optree with the namespace ``"fnn"``; ``None`` is an empty subtree, never a leaf. Leaves
are addressed by dotted paths (``"encoder.layers.0.weight"``) that equal ``torch.nn``
``state_dict()`` keys.

- Structure: :func:`flatten`, :func:`unflatten`, :func:`leaves`, :func:`structure`, :func:`map`,
  :func:`reduce`, :func:`all`, :func:`transpose`, :func:`structure_mismatch`.
- Paths: :func:`flatten_with_path`, :func:`map_with_path`, :func:`paths`.
- Math over tensor leaves: :func:`add`, :func:`sub`, :func:`scale`, :func:`vdot`, :func:`l2_norm`,
  :func:`zeros_like`, :func:`ones_like`, :func:`full_like`, :func:`cast`, :func:`size`,
  :func:`bytes`, :func:`where`, :func:`clip`.
- Registering classes (optree and ``torch.utils._pytree`` in one call):
  :func:`register_dataclass`, :func:`register_pytree_node`.
"""

from fnn._src.tree import add as add
from fnn._src.tree import all as all
from fnn._src.tree import bytes as bytes
from fnn._src.tree import cast as cast
from fnn._src.tree import clip as clip
from fnn._src.tree import flatten as flatten
from fnn._src.tree import flatten_with_path as flatten_with_path
from fnn._src.tree import full_like as full_like
from fnn._src.tree import l2_norm as l2_norm
from fnn._src.tree import leaves as leaves
from fnn._src.tree import map as map
from fnn._src.tree import map_with_path as map_with_path
from fnn._src.tree import ones_like as ones_like
from fnn._src.tree import paths as paths
from fnn._src.tree import reduce as reduce
from fnn._src.tree import register_dataclass as register_dataclass
from fnn._src.tree import register_pytree_node as register_pytree_node
from fnn._src.tree import scale as scale
from fnn._src.tree import size as size
from fnn._src.tree import structure as structure
from fnn._src.tree import structure_mismatch as structure_mismatch
from fnn._src.tree import sub as sub
from fnn._src.tree import transpose as transpose
from fnn._src.tree import unflatten as unflatten
from fnn._src.tree import vdot as vdot
from fnn._src.tree import where as where
from fnn._src.tree import zeros_like as zeros_like

__all__ = [
    "add",
    "all",
    "bytes",
    "cast",
    "clip",
    "flatten",
    "flatten_with_path",
    "full_like",
    "l2_norm",
    "leaves",
    "map",
    "map_with_path",
    "ones_like",
    "paths",
    "reduce",
    "register_dataclass",
    "register_pytree_node",
    "scale",
    "size",
    "structure",
    "structure_mismatch",
    "sub",
    "transpose",
    "unflatten",
    "vdot",
    "where",
    "zeros_like",
]
