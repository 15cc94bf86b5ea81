"""Pytrees for fnn: optree (namespace ``"fnn"``) plus tree math over tensor leaves.

Conventions that hold for every function here:

- Flattening is optree's with ``namespace="fnn"`` and ``none_is_leaf=False``: ``None`` is an
  empty subtree (no leaves), never a leaf.
- Dict leaves are visited in sorted key order (optree's rule), but rebuilt dicts keep the key
  order of the input; ``OrderedDict`` and ``defaultdict`` are visited in insertion order.
- A *path* is a dotted string: dict keys as ``str(key)``, sequence indices as numbers, namedtuple
  and dataclass fields by name; the root leaf has path ``""``. For a nested dict of tensors the
  paths equal the ``state_dict()`` keys of the matching ``torch.nn`` module.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import functools
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import optree
import torch
import torch.utils._pytree as torch_pytree
from optree import PyTreeKind, PyTreeSpec

PyTree = Any
Leaf = Any
PyTreeDef = PyTreeSpec
IsLeaf = Callable[[Any], bool] | None
T = TypeVar("T")

NAMESPACE = "fnn"

_OPTS: dict[str, Any] = {"namespace": NAMESPACE, "none_is_leaf": False}


# --------------------------------------------------------------------------------------------
# Flattening under torch.compile
# --------------------------------------------------------------------------------------------
#
# Under dynamo, optree calls are replaced by the pure-Python polyfills of
# ``torch/_dynamo/polyfills/pytree.py``. Its dict flatten polyfill is marked constant-foldable, so
# for a dict whose contents are all Python constants (e.g. an empty dict ``{}``, the state of a
# stateless model) dynamo runs optree's real dict flatten, which returns an
# ``optree.registry.DictMetaData`` that dynamo cannot wrap ("Unexpected type in sourceless
# builder"). While compiling, fnn therefore flattens with the same traversal as the polyfill but
# handles ``dict``/``defaultdict`` nodes itself (same key order as optree), producing the polyfill's
# ``PyTreeSpec``. Eager flattening is untouched.


def _compile_dict_unflatten(metadata: tuple[list[Any], list[Any]], values: Iterable[Any]) -> dict:
    original_keys, keys = metadata
    out = dict.fromkeys(original_keys)
    out.update(zip(keys, values, strict=True))
    return out


def _compile_defaultdict_unflatten(
    metadata: tuple[Any, tuple[list[Any], list[Any]]], values: Iterable[Any]
) -> collections.defaultdict:
    default_factory, dict_metadata = metadata
    return collections.defaultdict(default_factory, _compile_dict_unflatten(dict_metadata, values))


def _compile_flatten(tree: PyTree, is_leaf: IsLeaf) -> tuple[list[Leaf], Any]:
    """``optree.tree_flatten(tree, is_leaf, **_OPTS)`` for use while dynamo is tracing."""
    import torch._dynamo.polyfills.pytree as dynamo_pytree

    spec_cls = dynamo_pytree.PyTreeSpec
    insertion_ordered = optree._C.is_dict_insertion_ordered(NAMESPACE)
    out: list[Leaf] = []

    def spec(children: tuple, node_type: Any, metadata: Any, entries: tuple, unflat: Any) -> Any:
        return spec_cls(
            children, node_type, metadata, entries, unflat, none_is_leaf=False, namespace=NAMESPACE
        )

    leaf_spec: list[Any] = []  # one immutable leaf spec shared by all leaves: dynamo traces
    # every spec construction (a dataclass __init__ and __post_init__); with this, the shortcut
    # for tensors below and _compile_unflatten, tracing the MLP Adam step went 1.98 s -> 1.2-1.5 s

    def helper(node: PyTree) -> Any:
        # a tensor is always a leaf (is_leaf can only add leaves): skip the registry lookup
        if isinstance(node, torch.Tensor) or optree.tree_is_leaf(node, is_leaf, **_OPTS):
            out.append(node)
            if not leaf_spec:
                leaf_spec.append(spec((), None, None, (), None))
            return leaf_spec[0]
        node_type = type(node)
        if node_type is dict or node_type is collections.defaultdict:
            original_keys = list(node)
            keys = original_keys if insertion_ordered else optree.utils.total_order_sorted(node)
            children = tuple(helper(node[k]) for k in keys)
            metadata: Any = (original_keys, keys)
            unflat: Any = _compile_dict_unflatten
            if node_type is collections.defaultdict:
                metadata = (node.default_factory, metadata)
                unflat = _compile_defaultdict_unflatten
            return spec(children, node_type, metadata, tuple(keys), unflat)
        children, metadata, entries, unflat = optree.tree_flatten_one_level(node, is_leaf, **_OPTS)
        return spec(tuple(helper(c) for c in children), node_type, metadata, entries, unflat)

    treespec = helper(tree)
    return out, treespec


# --------------------------------------------------------------------------------------------
# Flatten / unflatten / map
# --------------------------------------------------------------------------------------------


def flatten(tree: PyTree, is_leaf: IsLeaf = None) -> tuple[list[Leaf], PyTreeDef]:
    """Flatten ``tree`` into its list of leaves and its structure.

    Args:
        tree: any pytree (dicts, lists, tuples, namedtuples, ``None``, registered classes).
        is_leaf: optional predicate; a subtree for which it returns ``True`` is kept as one leaf.

    Returns:
        ``(leaves, treedef)``: the leaves in traversal order (dict keys sorted) and an optree
        ``PyTreeSpec`` to rebuild the tree with :func:`unflatten`. ``None`` has no leaves.

    Example:
        >>> import fnn
        >>> leaves, treedef = fnn.tree.flatten({"b": 2, "a": [1, None]})
        >>> leaves
        [1, 2]
        >>> treedef
        PyTreeSpec({'a': [*, None], 'b': *})
    """
    if torch.compiler.is_compiling():
        return _compile_flatten(tree, is_leaf)
    return optree.tree_flatten(tree, is_leaf, **_OPTS)


def unflatten(treedef: PyTreeDef, leaves: Iterable[Leaf]) -> PyTree:
    """Rebuild a tree of structure ``treedef`` from ``leaves`` (the inverse of :func:`flatten`).

    Raises:
        ValueError: if the number of leaves differs from ``treedef.num_leaves``.

    Example:
        >>> import fnn
        >>> treedef = fnn.tree.structure({"a": 0, "b": (0, 0)})
        >>> fnn.tree.unflatten(treedef, [1, 2, 3])
        {'a': 1, 'b': (2, 3)}
    """
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(
            f"fnn.tree.unflatten: the structure {treedef} expects {treedef.num_leaves} leaves, "
            f"but got {len(leaves)}."
        )
    if torch.compiler.is_compiling():
        import torch._dynamo.polyfills.pytree as dynamo_pytree

        if isinstance(treedef, dynamo_pytree.PyTreeSpec):  # made by _compile_flatten
            return _compile_unflatten(treedef, leaves)
    return treedef.unflatten(leaves)


def _compile_unflatten(treedef: Any, leaves: list[Leaf]) -> PyTree:
    """The polyfill spec's ``unflatten`` without its per-node slicing and leaf tests, which
    dynamo traces call by call (the leaf count is checked by the caller)."""
    it = iter(leaves)

    def rebuild(node: Any) -> PyTree:
        if node._type is None:
            return next(it)
        return node._unflatten_func(node._metadata, [rebuild(c) for c in node._children])

    return rebuild(treedef)


def leaves(tree: PyTree, is_leaf: IsLeaf = None) -> list[Leaf]:
    """Return the leaves of ``tree`` as a list, in :func:`flatten` order.

    Example:
        >>> import fnn
        >>> fnn.tree.leaves({"b": (3, None), "a": 1})
        [1, 3]
    """
    if torch.compiler.is_compiling():
        return _compile_flatten(tree, is_leaf)[0]
    return optree.tree_leaves(tree, is_leaf, **_OPTS)


def structure(tree: PyTree, is_leaf: IsLeaf = None) -> PyTreeDef:
    """Return the structure (an optree ``PyTreeSpec``) of ``tree``; leaves are shown as ``*``.

    Example:
        >>> import fnn
        >>> fnn.tree.structure({"w": 1.0, "b": [2.0, None]})
        PyTreeSpec({'b': [*, None], 'w': *})
    """
    if torch.compiler.is_compiling():
        return _compile_flatten(tree, is_leaf)[1]
    return optree.tree_structure(tree, is_leaf, **_OPTS)


def _flatten_rest(
    fn_name: str, treedef: PyTreeDef, tree: PyTree, rest: Sequence[PyTree], is_leaf: IsLeaf
) -> list[list[Leaf]]:
    """Flatten each tree of ``rest``, requiring the same structure as ``tree`` (``treedef``)."""
    out = []
    for i, other in enumerate(rest):
        other_leaves, other_def = flatten(other, is_leaf)
        if other_def != treedef:
            msg = structure_mismatch(
                tree, other, names=("tree 1", f"tree {i + 2}"), is_leaf=is_leaf
            )
            raise ValueError(
                f"fnn.tree.{fn_name}: every tree must have the structure of the first one; {msg}."
            )
        out.append(other_leaves)
    return out


def map(f: Callable[..., Any], tree: PyTree, *rest: PyTree, is_leaf: IsLeaf = None) -> PyTree:
    """Apply ``f`` leaf-wise: ``f(leaf, *leaves_of_rest_at_the_same_place)``.

    Args:
        f: function of ``1 + len(rest)`` leaves.
        tree: the tree whose structure the result has.
        *rest: more trees; each must have exactly the structure of ``tree``.
        is_leaf: optional predicate marking subtrees to treat as leaves.

    Raises:
        ValueError: if a tree of ``rest`` has another structure; the message names the first
            differing path (see :func:`structure_mismatch`).

    Example:
        >>> import torch, fnn
        >>> params = {"bias": torch.zeros(4), "weight": torch.zeros(4, 3)}
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'bias': (4,), 'weight': (4, 3)}
        >>> fnn.tree.map(lambda a, b: a + b, {"x": 1, "y": None}, {"x": 10, "y": None})
        {'x': 11, 'y': None}
    """
    tree_leaves, treedef = flatten(tree, is_leaf)
    rest_leaves = _flatten_rest("map", treedef, tree, rest, is_leaf)
    return treedef.unflatten([f(*xs) for xs in zip(tree_leaves, *rest_leaves, strict=True)])


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def _entry_name(kind: PyTreeKind, node_type: type, entry: Any) -> str:
    """Render the path component of child ``entry`` of a node of ``kind``/``node_type``."""
    if kind == PyTreeKind.NAMEDTUPLE:
        return node_type._fields[entry]
    if kind == PyTreeKind.STRUCTSEQUENCE:
        return optree.structseq_fields(node_type)[entry]
    return str(entry)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _render_accessor(accessor: optree.PyTreeAccessor) -> str:
    return ".".join(_entry_name(e.kind, e.type, e.entry) for e in accessor)


def flatten_with_path(
    tree: PyTree, is_leaf: IsLeaf = None
) -> tuple[list[tuple[str, Leaf]], PyTreeDef]:
    """Flatten ``tree`` into ``[(path, leaf), ...]`` and its structure.

    Paths are dotted names: dict keys as ``str(key)``, sequence indices as numbers, namedtuple and
    dataclass fields by their field name, and ``""`` for a tree that is a single leaf. For nested
    dicts of tensors the paths equal ``torch.nn.Module.state_dict()`` keys. Paths are unique as
    long as no dict key contains a dot and no dict mixes keys such as ``1`` and ``"1"``.

    Example:
        >>> import torch, fnn
        >>> params = {"encoder": {"layers": [{"weight": torch.ones(2, 3)}]}, "scale": 1.0}
        >>> pairs, treedef = fnn.tree.flatten_with_path(params)
        >>> [(path, type(leaf).__name__) for path, leaf in pairs]
        [('encoder.layers.0.weight', 'Tensor'), ('scale', 'float')]
        >>> fnn.tree.flatten_with_path(3.0)[0]
        [('', 3.0)]
    """
    if torch.compiler.is_compiling():
        tree_leaves, treedef = _compile_flatten(tree, is_leaf)
        accessors = treedef.accessors()
    else:
        accessors, tree_leaves, treedef = optree.tree_flatten_with_accessor(tree, is_leaf, **_OPTS)
    paths = [_render_accessor(a) for a in accessors]
    return list(zip(paths, tree_leaves, strict=True)), treedef


def paths(tree: PyTree, is_leaf: IsLeaf = None) -> list[str]:
    """Return the dotted paths of the leaves of ``tree``, in :func:`flatten` order.

    Example:
        >>> import fnn
        >>> fnn.tree.paths({"layer": [{"w": 0, "b": 0}], "gain": 0})
        ['gain', 'layer.0.b', 'layer.0.w']
    """
    if torch.compiler.is_compiling():
        accessors = _compile_flatten(tree, is_leaf)[1].accessors()
    else:
        accessors = optree.tree_accessors(tree, is_leaf, **_OPTS)
    return [_render_accessor(a) for a in accessors]


def map_with_path(
    f: Callable[..., Any], tree: PyTree, *rest: PyTree, is_leaf: IsLeaf = None
) -> PyTree:
    """Like :func:`map`, but calls ``f(path, leaf, *other_leaves)`` with the dotted leaf path.

    Example:
        >>> import torch, fnn
        >>> params = {"linear": {"bias": torch.ones(2), "weight": torch.ones(2, 2)}}
        >>> fnn.tree.map_with_path(lambda p, t: p if t.ndim > 1 else None, params)
        {'linear': {'bias': None, 'weight': 'linear.weight'}}
    """
    pairs, treedef = flatten_with_path(tree, is_leaf)
    rest_leaves = _flatten_rest("map_with_path", treedef, tree, rest, is_leaf)
    out = [f(p, x, *xs) for (p, x), *xs in zip(pairs, *rest_leaves, strict=True)]
    return treedef.unflatten(out)


# --------------------------------------------------------------------------------------------
# Structure comparison
# --------------------------------------------------------------------------------------------


def _type_name(t: type) -> str:
    return t.__qualname__


def _plural(n: int) -> str:
    return f"{n} child" if n == 1 else f"{n} children"


def _describe(spec: PyTreeSpec) -> str:
    """Describe the top node of ``spec`` for error messages (``"a dict with keys ['a']"``)."""
    if spec.is_leaf():
        return "a leaf"
    kind, t = spec.kind, spec.type
    if kind == PyTreeKind.NONE:
        return "None"
    if kind in (PyTreeKind.DICT, PyTreeKind.ORDEREDDICT, PyTreeKind.DEFAULTDICT):
        article = "an" if _type_name(t)[0] in "AEIOU" else "a"
        return f"{article} {_type_name(t)} with keys {list(spec.entries())!r}"
    if kind == PyTreeKind.NAMEDTUPLE:
        return f"a namedtuple {_type_name(t)} with fields {list(t._fields)!r}"
    if kind in (PyTreeKind.LIST, PyTreeKind.TUPLE, PyTreeKind.DEQUE):
        return f"a {_type_name(t)} of {_plural(spec.num_children)}"
    if kind == PyTreeKind.STRUCTSEQUENCE:
        return f"a {_type_name(t)} of {_plural(spec.num_children)}"
    names = [_entry_name(kind, t, e) for e in spec.entries()]
    return f"a {_type_name(t)} with children {names!r}"


def _node_data(spec: PyTreeSpec) -> Any:
    """The static data (aux / metadata) of the top node of ``spec``."""
    one = spec.one_level()
    return one.walk([None] * one.num_leaves, lambda _type, data, _children: data, None)


def _first_difference(a: PyTreeSpec, b: PyTreeSpec, path: str) -> tuple[str, str, str] | None:
    """Find the first node (depth first) where ``a`` and ``b`` differ: (path, desc_a, desc_b)."""
    if a == b:
        return None
    if a.is_leaf() or b.is_leaf() or a.type is not b.type or a.kind != b.kind:
        return _describe_pair(a, b, path)
    if list(a.entries()) != list(b.entries()) or a.num_children != b.num_children:
        return _describe_pair(a, b, path)
    if a.one_level() != b.one_level():  # same children, different static metadata
        da, db = _describe(a), _describe(b)
        return (
            path,
            f"{da}, static data {_node_data(a)!r}",
            f"{db}, static data {_node_data(b)!r}",
        )
    for entry, ca, cb in zip(a.entries(), a.children(), b.children(), strict=True):
        found = _first_difference(ca, cb, _join(path, _entry_name(a.kind, a.type, entry)))
        if found is not None:
            return found
    # Equal nodes and children that compare equal one by one, yet the specs differ (e.g. a
    # different namespace or none_is_leaf setting): report the whole specs.
    return (path, repr(a), repr(b))


def _describe_pair(a: PyTreeSpec, b: PyTreeSpec, path: str) -> tuple[str, str, str]:
    da, db = _describe(a), _describe(b)
    if da == db and a.type is not b.type:  # two different classes with the same name
        da += f" (from {a.type.__module__})"
        db += f" (from {b.type.__module__})"
    return (path, da, db)


def structure_mismatch(
    a: PyTree,
    b: PyTree,
    *,
    names: tuple[str, str] = ("first", "second"),
    is_leaf: IsLeaf = None,
) -> str | None:
    """Explain how the structures of two trees differ, or return ``None`` if they are the same.

    The message names the first differing dotted path (depth first, in :func:`flatten` order) and
    what each tree has there: a leaf, ``None``, a dict and its keys, a list/tuple and its number of
    children, a namedtuple and its type, or a registered class.

    Args:
        a, b: the two trees (or two ``PyTreeSpec`` structures).
        names: how the message calls ``a`` and ``b``.
        is_leaf: optional predicate marking subtrees to treat as leaves.

    Example:
        >>> import fnn
        >>> print(fnn.tree.structure_mismatch({"a": 1}, {"a": 2}))
        None
        >>> fnn.tree.structure_mismatch({"enc": {"a": 1, "b": 2}}, {"enc": {"a": 1, "c": 2}})
        "trees differ at 'enc': first has a dict with keys ['a', 'b'], second has a dict with keys ['a', 'c']"
        >>> fnn.tree.structure_mismatch([1.0, 2.0], [1.0, [2.0, 3.0, 4.0]], names=("x", "y"))
        "trees differ at '1': x has a leaf, y has a list of 3 children"
    """  # noqa: E501
    sa = a if isinstance(a, PyTreeSpec) else structure(a, is_leaf)
    sb = b if isinstance(b, PyTreeSpec) else structure(b, is_leaf)
    found = _first_difference(sa, sb, "")
    if found is None:
        return None
    path, da, db = found
    where = f"at {path!r}" if path else "at the root"
    return f"trees differ {where}: {names[0]} has {da}, {names[1]} has {db}"


# --------------------------------------------------------------------------------------------
# Reductions and transposition
# --------------------------------------------------------------------------------------------


class _NoInitializer:
    def __repr__(self) -> str:
        return "<no initializer>"


_NO_INITIALIZER: Any = _NoInitializer()


def reduce(
    f: Callable[[T, Leaf], T],
    tree: PyTree,
    initializer: T = _NO_INITIALIZER,
    is_leaf: IsLeaf = None,
) -> T:
    """Fold the leaves of ``tree`` left to right: ``f(f(f(initializer, l0), l1), l2)...``.

    Without ``initializer`` the first leaf starts the fold, so an empty tree is an error.

    Example:
        >>> import operator, fnn
        >>> fnn.tree.reduce(operator.add, {"a": 1, "b": [2, 3]})
        6
        >>> fnn.tree.reduce(operator.add, {"a": None}, 10)
        10
    """
    tree_leaves = leaves(tree, is_leaf)
    if initializer is _NO_INITIALIZER:
        if not tree_leaves:
            raise TypeError(
                f"fnn.tree.reduce: the tree {structure(tree, is_leaf)} has no leaves and no "
                "initializer was given; pass one, e.g. fnn.tree.reduce(f, tree, 0)."
            )
        return functools.reduce(f, tree_leaves)
    return functools.reduce(f, tree_leaves, initializer)


def all(tree: PyTree, is_leaf: IsLeaf = None) -> builtins.bool:
    """Return ``True`` if every leaf is truthy (a tensor leaf if all its elements are).

    An empty tree gives ``True``. Reading a tensor's value synchronises with the device and, under
    ``torch.compile``, breaks the graph: use it outside compiled code (tests, input checks).

    Example:
        >>> import torch, fnn
        >>> fnn.tree.all({"a": torch.tensor([1, 2]), "b": True})
        True
        >>> fnn.tree.all([torch.tensor([1.0, 0.0])])
        False
    """
    for leaf in leaves(tree, is_leaf):
        if isinstance(leaf, torch.Tensor):
            if not builtins.bool(leaf.all()):
                return False
        elif isinstance(leaf, np.ndarray):
            if not builtins.bool(leaf.all()):
                return False
        elif not leaf:
            return False
    return True


def transpose(outer_treedef: PyTreeDef, inner_treedef: PyTreeDef | None, pytree: PyTree) -> PyTree:
    """Turn a tree of structure ``outer(inner)`` into one of structure ``inner(outer)``.

    Like ``jax.tree.transpose``: ``pytree`` must have the structure ``outer_treedef`` whose every
    leaf is replaced by a tree of structure ``inner_treedef``. With ``inner_treedef=None`` the inner
    structure is taken from the first outer child.

    Example: a list of trees becomes a tree of lists, and back.

        >>> import fnn
        >>> per_step = [{"loss": 1.0, "acc": 0.5}, {"loss": 0.9, "acc": 0.6}, {"loss": 0.8, "acc": 0.7}]
        >>> history = fnn.tree.transpose(fnn.tree.structure([0, 0, 0]), None, per_step)
        >>> history
        {'loss': [1.0, 0.9, 0.8], 'acc': [0.5, 0.6, 0.7]}
        >>> outer = fnn.tree.structure({"acc": 0, "loss": 0})
        >>> fnn.tree.transpose(outer, fnn.tree.structure([0, 0, 0]), history) == per_step
        True
    """  # noqa: E501
    if not isinstance(outer_treedef, PyTreeSpec) or not (
        inner_treedef is None or isinstance(inner_treedef, PyTreeSpec)
    ):
        raise TypeError(
            "fnn.tree.transpose: outer_treedef and inner_treedef must be structures (use "
            f"fnn.tree.structure(tree)); got {type(outer_treedef).__name__} and "
            f"{type(inner_treedef).__name__}."
        )
    if inner_treedef is None:
        if outer_treedef.num_leaves == 0:
            raise ValueError(
                f"fnn.tree.transpose: the outer structure {outer_treedef} has no leaves, so the "
                "inner structure cannot be inferred; pass inner_treedef."
            )
        inner_treedef = structure(_first_outer_child(outer_treedef, pytree))
    expected = outer_treedef.compose(inner_treedef)
    msg = structure_mismatch(
        expected, structure(pytree), names=("the expected structure", "pytree")
    )
    if msg is not None:
        raise ValueError(
            f"fnn.tree.transpose: pytree must have the outer structure {outer_treedef} with inner "
            f"structure {inner_treedef} at every outer leaf; {msg}."
        )
    n_inner = inner_treedef.num_leaves
    flat = leaves(pytree)
    columns = [flat[i::n_inner] for i in range(n_inner)] if n_inner else []
    return inner_treedef.unflatten([outer_treedef.unflatten(col) for col in columns])


def _first_outer_child(outer_treedef: PyTreeDef, pytree: PyTree) -> PyTree:
    try:
        return outer_treedef.flatten_up_to(pytree)[0]
    except ValueError as e:
        raise ValueError(
            f"fnn.tree.transpose: pytree does not have the outer structure {outer_treedef}: {e}"
        ) from None


# --------------------------------------------------------------------------------------------
# Tree math
# --------------------------------------------------------------------------------------------


def _use_foreach(tree_leaves: Sequence[Leaf]) -> builtins.bool:
    """Whether to use a ``torch._foreach_*`` kernel on these leaves.

    Only in eager mode outside ``torch.func`` transforms: the foreach ops have no vmap batching
    rule in torch 2.13, and under ``torch.compile`` inductor fuses the per-leaf ops itself.
    """
    return (
        builtins.len(tree_leaves) > 1
        and not torch.compiler.is_compiling()
        and torch._C._functorch.maybe_current_level() is None
        and builtins.all(isinstance(x, torch.Tensor) for x in tree_leaves)
    )


def _as_tensor(x: Leaf) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def _result_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    return functools.reduce(torch.promote_types, [t.dtype for t in tensors])


def add(*trees: PyTree) -> PyTree:
    """Leaf-wise sum of one or more trees of the same structure.

    Leaves may be tensors (any shapes that broadcast), numpy arrays or numbers.

    Example:
        >>> import torch, fnn
        >>> fnn.tree.add({"w": torch.ones(2)}, {"w": torch.ones(2)}, {"w": torch.ones(2)})
        {'w': tensor([3., 3.])}
    """
    if not trees:
        raise TypeError("fnn.tree.add: expected at least one tree, got none.")
    first, treedef = flatten(trees[0])
    rest = _flatten_rest("add", treedef, trees[0], trees[1:], None)
    if not rest:
        return treedef.unflatten(first)
    if _use_foreach(first) and builtins.all(_use_foreach(r) for r in rest):
        acc = torch._foreach_add(first, rest[0])
        for r in rest[1:]:
            torch._foreach_add_(acc, r)
        return treedef.unflatten(acc)
    return treedef.unflatten(
        [functools.reduce(operator.add, xs) for xs in zip(first, *rest, strict=True)]
    )


def sub(a: PyTree, b: PyTree) -> PyTree:
    """Leaf-wise difference ``a - b`` of two trees of the same structure.

    Example:
        >>> import torch, fnn
        >>> fnn.tree.sub({"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([1.0, 1.0])})
        {'w': tensor([2., 3.])}
    """
    la, treedef = flatten(a)
    (lb,) = _flatten_rest("sub", treedef, a, [b], None)
    if _use_foreach(la) and _use_foreach(lb):
        return treedef.unflatten(torch._foreach_sub(la, lb))
    return treedef.unflatten([x - y for x, y in zip(la, lb, strict=True)])


def scale(tree: PyTree, scalar: float | torch.Tensor) -> PyTree:
    """Multiply every leaf by ``scalar`` (a Python number or a 0-d tensor).

    Pass a step-dependent factor (a learning rate) as a 0-d tensor: under ``torch.compile`` a new
    Python number means a recompile.

    Example:
        >>> import torch, fnn
        >>> fnn.tree.scale({"w": torch.tensor([1.0, 2.0])}, torch.tensor(0.5))
        {'w': tensor([0.5000, 1.0000])}
    """
    if isinstance(scalar, torch.Tensor) and scalar.ndim != 0:
        raise ValueError(
            "fnn.tree.scale: scalar must be a Python number or a 0-d tensor; got a tensor of "
            f"shape {tuple(scalar.shape)}. To scale leaf by leaf use "
            "fnn.tree.map(torch.mul, tree, factors)."
        )
    tree_leaves, treedef = flatten(tree)
    if _use_foreach(tree_leaves):
        return treedef.unflatten(torch._foreach_mul(tree_leaves, scalar))
    return treedef.unflatten([x * scalar for x in tree_leaves])


def vdot(a: PyTree, b: PyTree) -> torch.Tensor:
    """Inner product of two trees: the sum over leaves of ``(a_leaf * b_leaf).sum()``.

    Returns:
        A 0-d tensor (``tensor(0.)`` for trees without leaves), of the promoted leaf dtype.

    Example:
        >>> import torch, fnn
        >>> a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(3.0)}
        >>> fnn.tree.vdot(a, a)
        tensor(14.)
    """
    la, treedef = flatten(a)
    (lb,) = _flatten_rest("vdot", treedef, a, [b], None)
    if not la:
        return torch.tensor(0.0)
    terms = [torch.sum(_as_tensor(x) * _as_tensor(y)) for x, y in zip(la, lb, strict=True)]
    return _sum_scalars(terms)


def _sum_scalars(terms: list[torch.Tensor]) -> torch.Tensor:
    """Sum a non-empty list of 0-d tensors in one kernel, promoting mixed dtypes."""
    if builtins.len(terms) == 1:
        return terms[0]
    dtype = _result_dtype(terms)
    return torch.stack([t.to(dtype) for t in terms]).sum()


def l2_norm(tree: PyTree, squared: builtins.bool = False) -> torch.Tensor:
    """Global L2 norm of all leaves, as if they were concatenated into one vector.

    Args:
        tree: a tree of floating-point tensors (numbers and numpy arrays are converted).
        squared: return the squared norm (the sum of squares) instead.

    Returns:
        A 0-d tensor; ``tensor(0.)`` for a tree without leaves.

    Example:
        >>> import torch, fnn
        >>> fnn.tree.l2_norm({"w": torch.tensor([3.0, 0.0]), "b": torch.tensor(4.0)})
        tensor(5.)
        >>> fnn.tree.l2_norm({"w": torch.tensor([3.0, 0.0]), "b": torch.tensor(4.0)}, squared=True)
        tensor(25.)
    """
    tree_leaves = [_as_tensor(x) for x in leaves(tree)]
    if not tree_leaves:
        return torch.tensor(0.0)
    for i, x in enumerate(tree_leaves):
        if not (x.is_floating_point() or x.is_complex()):
            path = flatten_with_path(tree)[0][i][0]
            raise TypeError(
                "fnn.tree.l2_norm: expected floating-point leaves, but the leaf at "
                f"{path!r} has dtype {x.dtype}; select the float leaves first or cast them."
            )
    if _use_foreach(tree_leaves):
        norms = list(torch._foreach_norm(tree_leaves))
    else:
        norms = [torch.linalg.vector_norm(x) for x in tree_leaves]
    if builtins.len(norms) == 1:
        norm = norms[0]
        return norm * norm if squared else norm
    dtype = _result_dtype(norms)
    stacked = torch.stack([n.to(dtype) for n in norms])
    return torch.sum(stacked * stacked) if squared else torch.linalg.vector_norm(stacked)


def _fill_like(x: Leaf, value: Any, fn_name: str) -> Leaf:
    if isinstance(x, torch.Tensor):
        return torch.full_like(x, value)
    if isinstance(x, np.ndarray):
        return np.full_like(x, value)
    if isinstance(x, builtins.bool | int | float | complex | np.generic):
        return type(x)(value)
    raise TypeError(
        f"fnn.tree.{fn_name}: leaves must be tensors, numpy arrays or numbers; got a "
        f"{type(x).__qualname__}."
    )


def zeros_like(tree: PyTree) -> PyTree:
    """A tree of the same structure with every leaf replaced by zeros of its shape and dtype.

    Example:
        >>> import torch, fnn
        >>> fnn.tree.zeros_like({"w": torch.ones(2, dtype=torch.int64), "lr": 0.1})
        {'w': tensor([0, 0]), 'lr': 0.0}
    """
    return map(lambda x: _fill_like(x, 0, "zeros_like"), tree)


def ones_like(tree: PyTree) -> PyTree:
    """A tree of the same structure with every leaf replaced by ones of its shape and dtype.

    Example:
        >>> import torch, fnn
        >>> fnn.tree.ones_like([torch.zeros(2, 1)])
        [tensor([[1.],
                [1.]])]
    """
    return map(lambda x: _fill_like(x, 1, "ones_like"), tree)


def full_like(tree: PyTree, fill_value: float | torch.Tensor) -> PyTree:
    """A tree of the same structure with every leaf filled with ``fill_value`` (shape, dtype kept).

    Example:
        >>> import torch, fnn
        >>> fnn.tree.full_like({"w": torch.zeros(3)}, 0.5)
        {'w': tensor([0.5000, 0.5000, 0.5000])}
    """
    return map(lambda x: _fill_like(x, fill_value, "full_like"), tree)


def cast(tree: PyTree, dtype: torch.dtype) -> PyTree:
    """Convert the floating-point tensor leaves of ``tree`` to ``dtype``; leave the others alone.

    Integer and bool leaves are kept as they are on purpose: a tree of training state holds step
    counters and PRNG keys (integer tensors) next to the floating parameters, and casting those to
    ``bfloat16`` would silently corrupt them. Non-tensor leaves are returned unchanged.

    Args:
        tree: a tree of tensors (and possibly other leaves).
        dtype: a floating-point ``torch.dtype`` such as ``torch.bfloat16``.

    Example:
        >>> import torch, fnn
        >>> state = {"params": torch.zeros(2), "step": torch.tensor(3)}
        >>> fnn.tree.map(lambda t: t.dtype, fnn.tree.cast(state, torch.float16))
        {'params': torch.float16, 'step': torch.int64}
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            "fnn.tree.cast converts floating-point leaves to another floating-point dtype; "
            f"expected a floating torch.dtype such as torch.bfloat16, got {dtype!r}."
        )
    return map(
        lambda x: x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x,
        tree,
    )


def size(tree: PyTree) -> int:
    """Total number of elements over all leaves (tensors, numpy arrays; a number counts as 1).

    Example:
        >>> import torch, fnn
        >>> fnn.tree.size({"weight": torch.zeros(4, 3), "bias": torch.zeros(4), "empty": None})
        16
    """
    total = 0
    for path, x in flatten_with_path(tree)[0]:
        if isinstance(x, torch.Tensor):
            total += x.numel()
        elif isinstance(x, np.ndarray | np.generic):
            total += x.size
        elif isinstance(x, builtins.bool | int | float | complex):
            total += 1
        else:
            raise TypeError(
                "fnn.tree.size: leaves must be tensors, numpy arrays or numbers; the leaf at "
                f"{path!r} is a {type(x).__qualname__}."
            )
    return total


def bytes(tree: PyTree) -> int:
    """Total storage in bytes of the tensor and numpy-array leaves (``numel * element_size``).

    Python numbers have no defined storage size and raise ``TypeError``.

    Example:
        >>> import numpy as np, torch, fnn
        >>> fnn.tree.bytes({"w": torch.zeros(4, 3), "step": torch.tensor(0, dtype=torch.int32)})
        52
        >>> fnn.tree.bytes([np.zeros(2, dtype=np.float64)])
        16
    """
    total = 0
    for path, x in flatten_with_path(tree)[0]:
        if isinstance(x, torch.Tensor):
            total += x.numel() * x.element_size()
        elif isinstance(x, np.ndarray | np.generic):
            total += x.nbytes
        else:
            raise TypeError(
                "fnn.tree.bytes: leaves must be tensors or numpy arrays; the leaf at "
                f"{path!r} is a {type(x).__qualname__}."
            )
    return total


def where(cond: torch.Tensor | builtins.bool | PyTree, a: PyTree, b: PyTree) -> PyTree:
    """Leaf-wise ``torch.where(cond, a_leaf, b_leaf)``.

    Args:
        cond: a bool tensor that broadcasts against every leaf (a 0-d tensor selects whole trees
            without a Python branch, so it works under ``torch.compile`` and ``vmap``), a Python
            bool, or a tree of bool tensors with the structure of ``a``.
        a, b: trees of the same structure.

    Example:
        >>> import torch, fnn
        >>> a, b = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([-1.0, -2.0])}
        >>> fnn.tree.where(torch.tensor(False), a, b)
        {'w': tensor([-1., -2.])}
        >>> fnn.tree.where({"w": torch.tensor([True, False])}, a, b)
        {'w': tensor([ 1., -2.])}
    """
    la, treedef = flatten(a)
    (lb,) = _flatten_rest("where", treedef, a, [b], None)
    if isinstance(cond, builtins.bool | np.bool_):
        chosen = la if cond else lb
        return treedef.unflatten(chosen)
    if isinstance(cond, torch.Tensor | np.ndarray):
        c = _as_tensor(cond)
        out = [torch.where(c, _as_tensor(x), _as_tensor(y)) for x, y in zip(la, lb, strict=True)]
        return treedef.unflatten(out)
    lc, cdef = flatten(cond)
    if cdef != treedef:
        msg = structure_mismatch(cond, a, names=("cond", "a"))
        raise ValueError(
            "fnn.tree.where: cond must be a bool tensor, a bool, or a tree with the structure of "
            f"a; {msg}."
        )
    out = [
        torch.where(_as_tensor(c), _as_tensor(x), _as_tensor(y))
        for c, x, y in zip(lc, la, lb, strict=True)
    ]
    return treedef.unflatten(out)


def clip(
    tree: PyTree,
    min: float | torch.Tensor | None = None,
    max: float | torch.Tensor | None = None,
) -> PyTree:
    """Clamp every tensor leaf to ``[min, max]`` (``torch.clamp``); either bound may be omitted.

    Bounds may be Python numbers or tensors broadcasting against the leaves.

    Example:
        >>> import torch, fnn
        >>> fnn.tree.clip({"g": torch.tensor([-3.0, 0.5, 3.0])}, min=-1.0, max=1.0)
        {'g': tensor([-1.0000,  0.5000,  1.0000])}
    """
    if min is None and max is None:
        raise ValueError("fnn.tree.clip: give at least one of min and max; both were None.")
    return map(lambda x: torch.clamp(_as_tensor(x), min, max), tree)


# --------------------------------------------------------------------------------------------
# Registering classes (optree namespace "fnn" and torch.utils._pytree in one call)
# --------------------------------------------------------------------------------------------


def _check_not_registered(cls: type, fn_name: str) -> None:
    if not isinstance(cls, type):
        raise TypeError(f"fnn.tree.{fn_name}: expected a class, got {cls!r}.")
    where = []
    if optree.register_pytree_node.get(cls, namespace=NAMESPACE) is not None:
        where.append(f"optree (namespace {NAMESPACE!r})")
    if cls in torch_pytree.SUPPORTED_NODES:
        where.append("torch.utils._pytree")
    if where:
        raise ValueError(
            f"fnn.tree.{fn_name}: {cls.__module__}.{cls.__qualname__} is already registered as a "
            f"pytree node in {' and '.join(where)}; register each class exactly once, next to its "
            "definition."
        )


def _serialized_type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode_context(x: Any) -> Any:
    """Encode static data as JSON values that keep tuples and dtypes (for torch.export.save)."""
    if x is None or isinstance(x, builtins.bool | int | float | str):
        return x
    if isinstance(x, tuple):
        return {"tuple": [_encode_context(v) for v in x]}
    if isinstance(x, list):
        return [_encode_context(v) for v in x]
    if isinstance(x, dict) and builtins.all(isinstance(k, str) for k in x):
        return {"dict": {k: _encode_context(v) for k, v in x.items()}}
    if isinstance(x, torch.dtype):
        return {"dtype": str(x).removeprefix("torch.")}
    raise TypeError(
        "fnn.tree: cannot serialize the static data of a registered class for torch.export.save: "
        f"{x!r} has type {type(x).__qualname__}; static data must be made of None, bool, int, "
        "float, str, torch.dtype, tuples, lists and dicts with str keys."
    )


def _decode_context(x: Any) -> Any:
    if isinstance(x, list):
        return [_decode_context(v) for v in x]
    if isinstance(x, dict):
        ((tag, value),) = x.items()
        if tag == "tuple":
            return tuple(_decode_context(v) for v in value)
        if tag == "dict":
            return {k: _decode_context(v) for k, v in value.items()}
        return getattr(torch, value)
    return x


def _torch_key(name: str | int) -> torch_pytree.KeyEntry:
    return (
        torch_pytree.SequenceKey(name) if isinstance(name, int) else torch_pytree.GetAttrKey(name)
    )


def register_pytree_node(
    cls: type[T],
    flatten_fn: Callable[[T], tuple[Iterable[Any], Any]],
    unflatten_fn: Callable[[Any, list[Any]], T],
    *,
    path_names: Sequence[str] | Callable[[T], Sequence[str]] | None = None,
) -> type[T]:
    """Register ``cls`` as a pytree node in fnn's optree namespace and in ``torch.utils._pytree``.

    After this one call, instances of ``cls`` are flattened by every ``fnn.tree`` function and pass
    through ``torch.func`` transforms, ``torch.compile`` and ``torch.export``.

    Args:
        cls: the class to register (once; registering it again raises ``ValueError``).
        flatten_fn: ``flatten_fn(obj) -> (children, aux)``: the children are subtrees, ``aux`` is
            hashable static data (it becomes part of the structure), as in JAX.
        unflatten_fn: ``unflatten_fn(aux, children) -> obj``.
        path_names: how children appear in paths: ``None`` for their positions (``"0"``,
            ``"1"``, ...), a sequence of names, or a function ``path_names(obj)`` returning one
            name per child.

    Returns:
        ``cls``, so this can be used after a class definition or in a decorator helper.

    In ``torch.utils._pytree`` a ``None`` child is moved into the static context, so ``None`` is
    an empty subtree there too, as it is in ``fnn.tree``.

    Example:
        >>> import torch, fnn
        >>> class Affine:
        ...     def __init__(self, weight, bias, name):
        ...         self.weight, self.bias, self.name = weight, bias, name
        >>> _ = fnn.tree.register_pytree_node(
        ...     Affine,
        ...     lambda m: ((m.weight, m.bias), m.name),
        ...     lambda name, children: Affine(*children, name),
        ...     path_names=("weight", "bias"),
        ... )
        >>> pairs, _ = fnn.tree.flatten_with_path(Affine(torch.ones(2, 3), torch.zeros(2), "fc"))
        >>> [(path, tuple(leaf.shape)) for path, leaf in pairs]
        [('weight', (2, 3)), ('bias', (2,))]
    """
    _check_not_registered(cls, "register_pytree_node")

    def names_of(obj: Any, n: int) -> list[str | int]:
        if path_names is None:
            return list(range(n))
        names = list(path_names(obj) if callable(path_names) else path_names)
        if builtins.len(names) != n:
            raise ValueError(
                f"fnn.tree.register_pytree_node: path_names gave {builtins.len(names)} names "
                f"{names!r} for the {n} children of a {cls.__qualname__}; give one name per child."
            )
        return names

    def optree_flatten(obj: Any) -> tuple[list[Any], Any, list[Any]]:
        children, aux = flatten_fn(obj)
        children = list(children)
        return children, aux, names_of(obj, builtins.len(children))

    def optree_unflatten(aux: Any, children: Iterable[Any]) -> Any:
        return unflatten_fn(aux, list(children))

    def torch_flatten_with_keys(obj: Any) -> tuple[list[tuple[Any, Any]], Any]:
        children, aux = flatten_fn(obj)
        children = list(children)
        names = names_of(obj, builtins.len(children))
        keep = [i for i, c in enumerate(children) if c is not None]
        context = (aux, builtins.len(children), tuple(keep))
        return [(_torch_key(names[i]), children[i]) for i in keep], context

    def torch_flatten(obj: Any) -> tuple[list[Any], Any]:
        keyed, context = torch_flatten_with_keys(obj)
        return [child for _, child in keyed], context

    def torch_unflatten(values: Iterable[Any], context: Any) -> Any:
        aux, n, keep = context
        children: list[Any] = [None] * n
        for i, v in zip(keep, values, strict=True):
            children[i] = v
        return unflatten_fn(aux, children)

    _register_both(
        cls,
        optree_flatten,
        optree_unflatten,
        optree.accessors.AutoEntry,
        torch_flatten,
        torch_unflatten,
        torch_flatten_with_keys,
    )
    return cls


def _register_both(
    cls: type,
    optree_flatten: Callable[[Any], Any],
    optree_unflatten: Callable[[Any, Any], Any],
    path_entry_type: type[optree.PyTreeEntry],
    torch_flatten: Callable[[Any], Any],
    torch_unflatten: Callable[[Any, Any], Any],
    torch_flatten_with_keys: Callable[[Any], Any],
) -> None:
    optree.register_pytree_node(
        cls,
        optree_flatten,
        optree_unflatten,
        path_entry_type=path_entry_type,
        namespace=NAMESPACE,
    )
    try:
        torch_pytree.register_pytree_node(
            cls,
            torch_flatten,
            torch_unflatten,
            serialized_type_name=_serialized_type_name(cls),
            to_dumpable_context=lambda context: json.dumps(_encode_context(context)),
            from_dumpable_context=lambda dumped: _decode_context(json.loads(dumped)),
            flatten_with_keys_fn=torch_flatten_with_keys,
        )
    except BaseException:
        optree.unregister_pytree_node(cls, namespace=NAMESPACE)
        raise


def register_dataclass(
    cls: type[T] | None = None,
    *,
    data_fields: Sequence[str] | None = None,
    meta_fields: Sequence[str] | None = None,
) -> Any:
    """Register a dataclass as a pytree node in fnn's optree namespace and ``torch.utils._pytree``.

    Usable bare (``@fnn.tree.register_dataclass``), with arguments, or as a function call. Data
    fields are the children (subtrees of tensors); meta fields are static and become part of the
    structure (hashable configuration such as an activation name). By default every ``init`` field
    is a data field except those declared ``dataclasses.field(metadata={"static": True})``. If only
    one of ``data_fields`` / ``meta_fields`` is given the other is the rest of the ``init`` fields.
    Paths use the field names; instances are rebuilt by calling ``cls(**fields)``.

    The class then passes through ``torch.func.grad`` / ``vmap``, ``torch.compile(fullgraph=True)``
    and ``torch.export`` (whose serialized name is the class's qualified name). A data field
    holding ``None`` is an empty subtree in both registries.

    Example:
        >>> import dataclasses, torch, fnn
        >>> @fnn.tree.register_dataclass
        ... @dataclasses.dataclass
        ... class Linear:
        ...     weight: torch.Tensor
        ...     bias: torch.Tensor
        ...     activation: str = dataclasses.field(default="relu", metadata={"static": True})
        >>> layer = Linear(torch.zeros(4, 3), torch.zeros(4))
        >>> fnn.tree.map(lambda t: tuple(t.shape), layer)
        Linear(weight=(4, 3), bias=(4,), activation='relu')
        >>> [path for path, _ in fnn.tree.flatten_with_path(layer)[0]]
        ['weight', 'bias']
    """
    if cls is None:
        return functools.partial(
            register_dataclass, data_fields=data_fields, meta_fields=meta_fields
        )
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(
            f"fnn.tree.register_dataclass: expected a dataclass, got {cls!r}; decorate the class "
            "with @dataclasses.dataclass first (below @fnn.tree.register_dataclass)."
        )
    data, meta = _dataclass_fields(cls, data_fields, meta_fields)
    _check_not_registered(cls, "register_dataclass")

    def optree_flatten(obj: Any) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[str, ...]]:
        return tuple(getattr(obj, n) for n in data), tuple(getattr(obj, n) for n in meta), data

    def optree_unflatten(meta_values: tuple[Any, ...], children: Iterable[Any]) -> Any:
        return cls(
            **dict(zip(data, children, strict=True)), **dict(zip(meta, meta_values, strict=True))
        )

    def torch_flatten_with_keys(obj: Any) -> tuple[list[tuple[Any, Any]], Any]:
        present = tuple(n for n in data if getattr(obj, n) is not None)
        context = (present, tuple(getattr(obj, n) for n in meta))
        return [(torch_pytree.GetAttrKey(n), getattr(obj, n)) for n in present], context

    def torch_flatten(obj: Any) -> tuple[list[Any], Any]:
        keyed, context = torch_flatten_with_keys(obj)
        return [child for _, child in keyed], context

    def torch_unflatten(values: Iterable[Any], context: Any) -> Any:
        present, meta_values = context
        kwargs = dict.fromkeys(data)
        kwargs.update(zip(present, values, strict=True))
        return cls(**kwargs, **dict(zip(meta, meta_values, strict=True)))

    _register_both(
        cls,
        optree_flatten,
        optree_unflatten,
        optree.accessors.DataclassEntry,
        torch_flatten,
        torch_unflatten,
        torch_flatten_with_keys,
    )
    return cls


def _dataclass_fields(
    cls: type, data_fields: Sequence[str] | None, meta_fields: Sequence[str] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate and complete the data/meta split of the ``init`` fields of dataclass ``cls``."""
    init = [f.name for f in dataclasses.fields(cls) if f.init]
    if data_fields is None and meta_fields is None:
        static = {f.name for f in dataclasses.fields(cls) if f.metadata.get("static", False)}
        return (
            tuple(n for n in init if n not in static),
            tuple(n for n in init if n in static),
        )
    for arg, names in (("data_fields", data_fields), ("meta_fields", meta_fields)):
        if isinstance(names, str):
            raise TypeError(
                f"fnn.tree.register_dataclass: {arg} must be a sequence of field names, got the "
                f"string {names!r}; write {arg}=[{names!r}]."
            )
        unknown = [n for n in names or () if n not in init]
        if unknown:
            raise ValueError(
                f"fnn.tree.register_dataclass: {arg} of {cls.__qualname__} names {unknown}, "
                f"which are not init fields; the init fields are {init}."
            )
    if data_fields is None:
        data_fields = [n for n in init if n not in set(meta_fields or ())]
    if meta_fields is None:
        meta_fields = [n for n in init if n not in set(data_fields)]
    both = sorted(set(data_fields) & set(meta_fields))
    missing = [n for n in init if n not in set(data_fields) | set(meta_fields)]
    if both or missing:
        raise ValueError(
            f"fnn.tree.register_dataclass: every init field of {cls.__qualname__} must be in "
            f"exactly one of data_fields and meta_fields; in both: {both}, in neither: {missing}."
        )
    return tuple(data_fields), tuple(meta_fields)
