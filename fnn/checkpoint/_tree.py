"""A pytree <-> its tensors (for the safetensors file) and a JSON description of everything else.

The JSON *structure* is one object per node, in the tree's own order (dicts keep insertion
order), each with a ``"kind"``:

- containers: ``"dict"`` / ``"ordereddict"`` / ``"defaultdict"`` (``"keys"``: str, int or bool
  keys; ``"factory"`` for a defaultdict), ``"list"``, ``"tuple"``, ``"deque"`` (``"maxlen"``),
  ``"none"``, ``"namedtuple"`` (``"type"``: ``"module:qualname"``, ``"fields"``) and ``"node"``
  for a class registered with ``fnn.tree.register_dataclass`` / ``register_pytree_node``
  (``"type"``, ``"aux"``: its static data as tagged JSON, ``"entries"``: the path names of its
  children); every container has ``"children"``;
- leaves: ``"tensor"`` and ``"ndarray"`` (``"name"`` of the tensor in the safetensors file,
  ``"dtype"``, ``"shape"``; ``"requires_grad"``; ``"scalar"`` for a numpy scalar), and the JSON
  scalars ``"int"``, ``"float"``, ``"bool"``, ``"str"`` with their ``"value"``. A float keeps its
  exact value: finite ones as JSON numbers (``repr`` round-trips), ``"inf"``, ``"-inf"``, and
  ``"nan:<16 hex digits>"`` (the bits).

Tensor names are the leaves' dotted paths (``fnn.tree.flatten_with_path``'s), made unique with a
``#k`` suffix in the rare trees where two paths coincide (dict keys with dots).

Rebuilding never runs code named by a file: a class is looked up by module and qualified name
only in modules already imported, or imported if they belong to fnn, fnn_optim or fnn_data, and
it must be a namedtuple or a registered fnn pytree node with the stored fields.
"""

from __future__ import annotations

import collections
import importlib
import math
import struct
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import optree
import torch
from optree import PyTreeKind

from fnn import tree as _tree
from fnn._src.tree import NAMESPACE
from fnn.checkpoint._errors import (
    CheckpointError,
    CorruptCheckpointError,
    StructureMismatchError,
)
from fnn.checkpoint._format import (
    DTYPES,
    NUMPY_DTYPES,
    Entry,
    as_bytes,
    code_of_numpy,
    code_of_torch,
)

__all__ = ["Snapshot", "build", "build_like", "encode", "iter_leaves"]

_TRUSTED = ("fnn", "fnn_optim", "fnn_data")
_FACTORIES: dict[str, Any] = {
    "None": None,
    "list": list,
    "dict": dict,
    "set": set,
    "int": int,
    "float": float,
    "str": str,
    "tuple": tuple,
}
_FACTORY_NAMES = {v: k for k, v in _FACTORIES.items() if v is not None}
_DICT_KINDS = {
    PyTreeKind.DICT: "dict",
    PyTreeKind.ORDEREDDICT: "ordereddict",
    PyTreeKind.DEFAULTDICT: "defaultdict",
}


Parts = tuple[str, ...]  # the path components of a node


def _render(parts: Parts) -> str:
    """The dotted path of ``fnn.tree.flatten_with_path`` (``""`` for the root)."""
    return ".".join(parts)


def _where(path: str) -> str:
    return f"at {path!r}" if path else "at the root"


# --------------------------------------------------------------------------------------------
# Scalars and static data as JSON
# --------------------------------------------------------------------------------------------


def float_to_json(x: float) -> float | str:
    """A float as exact JSON: a number if finite, else "inf", "-inf" or "nan:<its bits>"."""
    if math.isfinite(x):
        return x
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "nan:" + struct.pack(">d", x).hex()


def float_from_json(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    if isinstance(v, str) and v.startswith("nan:") and len(v) == 20:
        return struct.unpack(">d", bytes.fromhex(v[4:]))[0]
    raise ValueError(f"not an encoded float: {v!r}")


def _encode_static(x: Any, path: str) -> Any:
    """The static data (aux) of a registered node as tagged JSON."""
    if x is None or isinstance(x, bool | int | str):
        return x
    if isinstance(x, float):
        return {"float": float_to_json(x)}
    if isinstance(x, tuple):
        return {"tuple": [_encode_static(v, path) for v in x]}
    if isinstance(x, list):
        return [_encode_static(v, path) for v in x]
    if isinstance(x, dict):
        return {"dict": [[_encode_static(k, path), _encode_static(v, path)] for k, v in x.items()]}
    if isinstance(x, torch.dtype):
        return {"dtype": str(x).removeprefix("torch.")}
    raise TypeError(
        f"fnn.checkpoint.save: the static data of the registered node {_where(path)} holds "
        f"{x!r} of type {type(x).__qualname__}; a checkpoint can store static data made of None, "
        "bool, int, float, str, torch.dtype, tuples, lists and dicts only."
    )


def _decode_static(x: Any) -> Any:
    if isinstance(x, list):
        return [_decode_static(v) for v in x]
    if not isinstance(x, dict):
        return x
    ((tag, value),) = x.items()
    if tag == "float":
        return float_from_json(value)
    if tag == "tuple":
        return tuple(_decode_static(v) for v in value)
    if tag == "dict":
        return {_decode_static(k): _decode_static(v) for k, v in value}
    if tag == "dtype":
        dtype = getattr(torch, value, None)
        if isinstance(dtype, torch.dtype):
            return dtype
    raise ValueError(f"unknown static data {x!r}")


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


class Snapshot(NamedTuple):
    """A tree ready to be written: its JSON structure and its tensors (bytes in host memory)."""

    structure: dict
    entries: list[Entry]


class _Encoder:
    def __init__(self, copy: bool) -> None:
        self.copy = copy
        self.entries: list[Entry] = []
        self.used: set[str] = set()

    def name(self, path: str) -> str:
        candidate, k = path, 1
        while candidate in self.used or candidate in ("", "__metadata__"):
            candidate, k = f"{path}#{k}", k + 1
        self.used.add(candidate)
        return candidate

    def tensor(self, t: torch.Tensor, path: str) -> dict:
        if t.layout != torch.strided or t.is_nested:
            raise TypeError(
                f"fnn.checkpoint.save: the tensor {_where(path)} has layout {t.layout}; only "
                "dense (strided) tensors can be saved: convert it with .to_dense() first."
            )
        if t.device.type == "meta":
            raise TypeError(
                f"fnn.checkpoint.save: the tensor {_where(path)} is on the meta device and has no "
                "data to save (meta tensors, e.g. from init_shapes, only work as like= trees)."
            )
        code = code_of_torch(t.dtype, path)
        data = t.detach()
        if (
            self.copy
            or data.device.type != "cpu"
            or not data.is_contiguous()
            or data.is_conj()
            or data.is_neg()
        ):
            host = torch.empty(tuple(data.shape), dtype=data.dtype)
            host.copy_(data)
            data = host
        name = self.name(path)
        self.entries.append(Entry(name, code, tuple(t.shape), as_bytes(data)))
        return {
            "kind": "tensor",
            "name": name,
            "dtype": code,
            "shape": list(t.shape),
            "requires_grad": bool(t.requires_grad),
        }

    def ndarray(self, a: np.ndarray | np.generic, path: str) -> dict:
        scalar = isinstance(a, np.generic)
        arr = np.asarray(a)
        code = code_of_numpy(arr.dtype, path)
        if self.copy or not arr.flags.c_contiguous:
            arr = np.array(arr, order="C", copy=True)
        name = self.name(path)
        data = arr.reshape(-1).view(np.uint8)
        self.entries.append(Entry(name, code, tuple(arr.shape), data))
        return {
            "kind": "ndarray",
            "name": name,
            "dtype": code,
            "shape": list(arr.shape),
            "scalar": scalar,
        }

    def encode(self, node: Any, parts: Parts) -> dict:
        path = _render(parts)
        if node is None:
            return {"kind": "none"}
        if isinstance(node, torch.Tensor):
            return self.tensor(node, path)
        if isinstance(node, np.ndarray | np.generic):
            return self.ndarray(node, path)
        if isinstance(node, bool):
            return {"kind": "bool", "value": bool(node)}
        if isinstance(node, int):
            return {"kind": "int", "value": int(node)}
        if isinstance(node, float):
            return {"kind": "float", "value": float_to_json(float(node))}
        if isinstance(node, str):
            return {"kind": "str", "value": str(node)}
        cls = type(node)
        registered = optree.register_pytree_node.get(cls, namespace=NAMESPACE)
        if registered is None:
            raise TypeError(
                f"fnn.checkpoint.save: the leaf {_where(path)} is a {cls.__module__}."
                f"{cls.__qualname__}; a checkpoint holds tensors, numpy arrays, int, float, bool "
                "and str leaves in dicts, lists, tuples, namedtuples and registered fnn pytree "
                "nodes (fnn.tree.register_dataclass)."
            )
        kind = registered.kind
        if kind in _DICT_KINDS:
            return self.mapping(node, parts, _DICT_KINDS[kind])
        if kind in (PyTreeKind.LIST, PyTreeKind.TUPLE, PyTreeKind.DEQUE):
            out: dict[str, Any] = {"kind": cls.__name__ if kind != PyTreeKind.DEQUE else "deque"}
            if kind == PyTreeKind.DEQUE:
                out["maxlen"] = node.maxlen
            out["children"] = [self.encode(v, (*parts, str(i))) for i, v in enumerate(node)]
            return out
        if kind == PyTreeKind.NAMEDTUPLE:
            return {
                "kind": "namedtuple",
                "type": f"{cls.__module__}:{cls.__qualname__}",
                "fields": list(cls._fields),
                "children": [
                    self.encode(v, (*parts, f)) for f, v in zip(cls._fields, node, strict=True)
                ],
            }
        if kind == PyTreeKind.CUSTOM:
            children, aux, entries, _ = optree.tree_flatten_one_level(
                node, namespace=NAMESPACE, none_is_leaf=False
            )
            names = [str(e) for e in entries]
            return {
                "kind": "node",
                "type": f"{cls.__module__}:{cls.__qualname__}",
                "aux": _encode_static(aux, path),
                "entries": names,
                "children": [
                    self.encode(c, (*parts, n)) for n, c in zip(names, children, strict=True)
                ],
            }
        raise TypeError(
            f"fnn.checkpoint.save: the node {_where(path)} is a {cls.__qualname__} (pytree kind "
            f"{kind.name}), which a checkpoint cannot store; use a tuple or a NamedTuple."
        )

    def mapping(self, node: Any, parts: Parts, kind: str) -> dict:
        path = _render(parts)
        keys = list(node.keys())
        bad = [k for k in keys if type(k) not in (str, int, bool)]
        if bad:
            raise TypeError(
                f"fnn.checkpoint.save: the dict {_where(path)} has keys {bad!r}; a checkpoint "
                "stores dicts whose keys are str, int or bool."
            )
        out: dict[str, Any] = {"kind": kind, "keys": keys}
        if kind == "defaultdict":
            factory = node.default_factory
            if factory is not None and factory not in _FACTORY_NAMES:
                raise TypeError(
                    f"fnn.checkpoint.save: the defaultdict {_where(path)} has the default factory "
                    f"{factory!r}; only None and the builtins {sorted(_FACTORY_NAMES.values())} "
                    "can be stored (a checkpoint never stores code). Convert it with dict(d)."
                )
            out["factory"] = "None" if factory is None else _FACTORY_NAMES[factory]
        out["children"] = [self.encode(node[k], (*parts, str(k))) for k in keys]
        return out


def encode(tree: Any, *, copy: bool) -> Snapshot:
    """Describe ``tree`` as JSON and collect its tensors and arrays as bytes.

    Args:
        tree: the pytree to save.
        copy: copy every tensor and array to fresh host memory (for an asynchronous save, so
            the caller may change the originals at once); otherwise contiguous CPU tensors and
            arrays are written from their own memory.
    """
    encoder = _Encoder(copy)
    structure = encoder.encode(tree, ())
    return Snapshot(structure, encoder.entries)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

Loader = Callable[[dict, str, Any], Any]
"""``load(leaf, path, like_leaf)``: build the tensor / array of a ``tensor`` or ``ndarray``
leaf (``like_leaf`` is the matching leaf of ``like=``, or ``None``)."""


def _children(node: dict) -> list[dict]:
    children = node["children"]
    if not isinstance(children, list):
        raise TypeError("children must be a list")
    return children


def _child_names(node: dict) -> list[str]:
    kind = node["kind"]
    n = len(_children(node))
    if kind in _DICT_KINDS.values():
        names = [str(k) for k in node["keys"]]
    elif kind == "namedtuple":
        names = [str(f) for f in node["fields"]]
    elif kind == "node":
        names = [str(e) for e in node["entries"]]
    elif kind in ("list", "tuple", "deque"):
        names = [str(i) for i in range(n)]
    else:
        raise ValueError(f"unknown node kind {kind!r}")
    if len(names) != n:
        raise ValueError(f"{kind} node with {len(names)} names and {n} children")
    return names


_LEAF_KINDS = ("tensor", "ndarray", "int", "float", "bool", "str")


def iter_leaves(structure: dict, parts: Parts = ()) -> Iterator[tuple[str, dict]]:
    """Every leaf of a JSON structure with its dotted path, in the stored order."""
    kind = structure["kind"]
    if kind in _LEAF_KINDS:
        yield _render(parts), structure
    elif kind != "none":
        for name, child in zip(_child_names(structure), _children(structure), strict=True):
            yield from iter_leaves(child, (*parts, name))


def _scalar(leaf: dict) -> Any:
    kind, value = leaf["kind"], leaf["value"]
    if kind == "float":
        return float_from_json(value)
    expected = {"int": int, "bool": bool, "str": str}[kind]
    if type(value) is not expected:
        raise TypeError(f"{kind} leaf holds {value!r}")
    return value


def _find_class(type_name: str) -> type | None:
    """The class ``module:qualname`` if its module is imported or trusted, else ``None``."""
    module_name, _, qualname = type_name.partition(":")
    module = sys.modules.get(module_name)
    if module is None and module_name.split(".")[0] in _TRUSTED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _missing_class(kind: str, type_name: str, path: str) -> CheckpointError:
    return CheckpointError(
        f"fnn.checkpoint.restore: cannot rebuild the {kind} {type_name} {_where(path)}: the class "
        "is not found among imported modules (fnn.checkpoint imports modules of fnn, fnn_optim "
        "and fnn_data only, and never runs code named by a file). Import the module that defines "
        "it before restoring, or pass like= (a tree of the same structure) to restore onto."
    )


def _namedtuple(node: dict, children: list[Any], path: str) -> Any:
    cls = _find_class(node["type"])
    if cls is None or not optree.is_namedtuple_class(cls):
        raise _missing_class("NamedTuple", node["type"], path)
    if list(cls._fields) != list(node["fields"]):
        raise CheckpointError(
            f"fnn.checkpoint.restore: the NamedTuple {node['type']} {_where(path)} has fields "
            f"{list(cls._fields)} now, the checkpoint stored {node['fields']}; restore with "
            "like= a tree of the new structure after converting, or with the old class."
        )
    return cls(*children)


def _custom(node: dict, children: list[Any], path: str) -> Any:
    cls = _find_class(node["type"])
    registered = None if cls is None else optree.register_pytree_node.get(cls, namespace=NAMESPACE)
    if registered is None or registered.kind != PyTreeKind.CUSTOM:
        raise _missing_class("registered pytree node", node["type"], path)
    obj = registered.unflatten_func(_decode_static(node["aux"]), children)
    entries = optree.tree_flatten_one_level(obj, namespace=NAMESPACE, none_is_leaf=False).entries
    if [str(e) for e in entries] != list(node["entries"]):
        raise CheckpointError(
            f"fnn.checkpoint.restore: the registered node {node['type']} {_where(path)} has the "
            f"children {[str(e) for e in entries]} now, the checkpoint stored {node['entries']}; "
            "restore with like= a tree of the current structure."
        )
    return obj


def _build(node: dict, parts: Parts, load: Loader) -> Any:
    path = _render(parts)
    kind = node["kind"]
    if kind in ("tensor", "ndarray"):
        return load(node, path, None)
    if kind in _LEAF_KINDS:
        return _scalar(node)
    if kind == "none":
        return None
    names = _child_names(node)
    children = [_build(c, (*parts, n), load) for n, c in zip(names, _children(node), strict=True)]
    if kind in ("dict", "ordereddict", "defaultdict"):
        pairs = zip(node["keys"], children, strict=True)
        if kind == "dict":
            return dict(pairs)
        if kind == "ordereddict":
            return collections.OrderedDict(pairs)
        return collections.defaultdict(_FACTORIES[node["factory"]], pairs)
    if kind == "list":
        return children
    if kind == "tuple":
        return tuple(children)
    if kind == "deque":
        return collections.deque(children, maxlen=node["maxlen"])
    if kind == "namedtuple":
        return _namedtuple(node, children, path)
    return _custom(node, children, path)  # kind "node" (_child_names rejected the others)


def build(structure: dict, load: Loader, where: str) -> Any:
    """Rebuild the stored tree from its JSON structure; ``load`` builds tensors and arrays."""
    try:
        return _build(structure, (), load)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptCheckpointError(
            f"fnn.checkpoint.restore: the structure in {where} is malformed ({type(e).__name__}: "
            f"{e})."
        ) from e


# --------------------------------------------------------------------------------------------
# Restoring onto a like= tree
# --------------------------------------------------------------------------------------------


def _describe_stored(leaf: dict) -> str:
    kind = leaf["kind"]
    if kind == "tensor":
        return f"a tensor {DTYPES[leaf['dtype']]} {tuple(leaf['shape'])}"
    if kind == "ndarray":
        what = "a numpy scalar" if leaf.get("scalar") else "a numpy array"
        return f"{what} {NUMPY_DTYPES[leaf['dtype']]} {tuple(leaf['shape'])}"
    return f"a {kind}"


def _describe_like(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor {x.dtype} {tuple(x.shape)}"
    if isinstance(x, np.generic):
        return f"a numpy scalar {x.dtype} ()"
    if isinstance(x, np.ndarray):
        return f"a numpy array {x.dtype} {tuple(x.shape)}"
    for t in (bool, int, float, str):
        if isinstance(x, t):
            return f"a {t.__name__}"
    return f"a {type(x).__qualname__}"


def _compare(path: str, leaf: dict, like: Any) -> str | None:
    """A one-line description of how the stored ``leaf`` differs from ``like``, or ``None``."""
    kind = leaf["kind"]
    if isinstance(like, torch.Tensor):
        same_kind = kind == "tensor"
    elif isinstance(like, np.generic | np.ndarray):
        same_kind = kind == "ndarray" and bool(leaf.get("scalar")) == isinstance(like, np.generic)
    elif isinstance(like, bool):
        same_kind = kind == "bool"
    elif isinstance(like, int):
        same_kind = kind == "int"
    elif isinstance(like, float):
        same_kind = kind == "float"
    elif isinstance(like, str):
        same_kind = kind == "str"
    else:
        same_kind = False
    if not same_kind:
        return (
            f"{path!r}: {_describe_stored(leaf)} in the checkpoint, {_describe_like(like)} in like"
        )
    if kind not in ("tensor", "ndarray"):
        return None
    problems = []
    stored_dtype = DTYPES[leaf["dtype"]] if kind == "tensor" else NUMPY_DTYPES[leaf["dtype"]]
    if stored_dtype != like.dtype:
        problems.append(f"dtype {stored_dtype} in the checkpoint, {like.dtype} in like")
    if tuple(leaf["shape"]) != tuple(like.shape):
        problems.append(
            f"shape {tuple(leaf['shape'])} in the checkpoint, {tuple(like.shape)} in like"
        )
    return f"{path!r}: {'; '.join(problems)}" if problems else None


def build_like(structure: dict, like: Any, load: Loader, where: str) -> Any:
    """Restore onto the structure of ``like``: leaves are matched by dotted path.

    Raises:
        StructureMismatchError: listing every missing and unexpected path and every leaf whose
            kind, dtype or shape differs, all at once.
    """
    stored: dict[str, dict] = {}
    for path, leaf in iter_leaves(structure):
        if path in stored:
            raise CheckpointError(
                f"fnn.checkpoint.restore: two leaves of {where} have the path {path!r} (dict keys "
                "with dots, or keys 1 and '1'), so they cannot be matched to like by path; "
                "restore without like=."
            )
        stored[path] = leaf
    pairs, treedef = _tree.flatten_with_path(like)
    like_paths = {p for p, _ in pairs}
    if len(like_paths) != len(pairs):
        raise ValueError(
            "fnn.checkpoint.restore: like has two leaves with the same dotted path (dict keys "
            "with dots, or keys 1 and '1'); leaves are matched by path."
        )
    missing = [p for p, _ in pairs if p not in stored]
    unexpected = sorted(p for p in stored if p not in like_paths)
    problems = [
        msg for p, x in pairs if p in stored and (msg := _compare(p, stored[p], x)) is not None
    ]
    if missing or unexpected or problems:
        lines = [f"fnn.checkpoint.restore: the checkpoint {where} does not match like:"]
        if missing:
            lines.append(f"  missing (in like, not in the checkpoint): {missing}")
        if unexpected:
            lines.append(f"  unexpected (in the checkpoint, not in like): {unexpected}")
        lines += [f"  {p}" for p in problems]
        raise StructureMismatchError("\n".join(lines))
    values = []
    for path, x in pairs:
        leaf = stored[path]
        values.append(
            load(leaf, path, x) if leaf["kind"] in ("tensor", "ndarray") else _scalar(leaf)
        )
    return treedef.unflatten(values)
