"""Records and batches as pytrees: flattening, stacking into batches, slicing, joining.

A record is any pytree (optree, namespace ``"fnn"``: dicts, tuples, lists, namedtuples and
classes registered with ``fnn.tree``) whose leaves are numpy arrays, torch tensors, numpy
scalars or Python numbers; leaves of other types (strings, paths) are carried as lists. A batch
has the record's structure with each numeric leaf stacked along a new first dimension into a
torch tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optree
import torch

NAMESPACE = "fnn"

Alloc = Callable[[tuple[int, ...], torch.dtype], torch.Tensor]


def flatten(tree: Any) -> tuple[list[Any], optree.PyTreeSpec]:
    """Leaves and structure of a record or batch (``None`` is an empty subtree)."""
    return optree.tree_flatten(tree, none_is_leaf=False, namespace=NAMESPACE)


_LEAVES = (np.ndarray, np.generic, torch.Tensor, int, float, bool)


class Flattener:
    """``flatten`` with a fast path for the common record: a flat dict with the same keys.

    optree orders a dict's leaves by sorted key, so a flat dict's leaves are its values in the
    order of the first record's keys, and its structure is the first record's.
    """

    def __init__(self) -> None:
        self.keys: Any = None
        self.order: list[Any] = []
        self.spec: Any = None

    def __call__(self, tree: Any) -> tuple[list[Any], optree.PyTreeSpec]:
        if type(tree) is dict and self.keys is not None and tree.keys() == self.keys:
            leaves = [tree[k] for k in self.order]
            if all(isinstance(v, _LEAVES) for v in leaves):
                return leaves, self.spec
        leaves, spec = flatten(tree)
        if type(tree) is dict and all(isinstance(v, _LEAVES) for v in tree.values()):
            self.keys, self.spec = tree.keys(), spec
            self.order = [path[0] for path in spec.paths()]
        return leaves, spec


def unflatten(spec: optree.PyTreeSpec, leaves: Sequence[Any]) -> Any:
    return optree.tree_unflatten(spec, leaves)


def describe(spec: optree.PyTreeSpec) -> str:
    """A short readable form of a structure, for error messages."""
    return str(spec).removeprefix("PyTreeSpec(").removesuffix(", namespace='fnn')")


def private_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype)


def shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory (what a worker writes its output into)."""
    nbytes = math.prod(shape) * dtype.itemsize
    storage = torch.UntypedStorage._new_shared(max(nbytes, 1))
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _np_dtype_ok(a: np.ndarray) -> bool:
    return a.dtype.kind in "biufc" or a.dtype == np.bool_


def as_tensor(x: Any) -> Any:
    """A leaf as a torch tensor (numpy arrays and numbers without a copy where possible)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray | np.generic):
        a = np.asarray(x)
        if not _np_dtype_ok(a):
            return x
        if not a.flags.writeable or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a) if a.flags.writeable else a.copy()
        return torch.from_numpy(a)
    if isinstance(x, bool | int | float | complex):
        return torch.as_tensor(x)
    return x


def stack_leaf(values: list[Any], alloc: Alloc) -> Any:
    """Stack one leaf of many records along a new first dimension.

    Tensors stack with ``torch.stack``; numpy arrays, numpy scalars and Python numbers with
    ``np.stack``; anything else (strings, paths, ...) is returned as a list. Raises ValueError
    with the shapes when the records disagree.
    """
    first = values[0]
    if isinstance(first, torch.Tensor) and all(isinstance(v, torch.Tensor) for v in values):
        shape = (len(values), *first.shape)
        out = alloc(shape, first.dtype) if first.device.type == "cpu" else None
        try:
            return torch.stack(values, out=out) if out is not None else torch.stack(values)
        except RuntimeError as e:
            raise _shape_error(values, e) from None
    if isinstance(first, np.ndarray | np.generic | bool | int | float | complex | torch.Tensor):
        arrays = [np.asarray(v) for v in values]
        a0 = arrays[0]
        if not _np_dtype_ok(a0):
            return list(values)
        dtype = a0.dtype
        for a in arrays:
            if a.shape != a0.shape:
                raise _shape_error(values, None)
            if a.dtype != dtype:
                dtype = np.result_type(dtype, a.dtype)
        try:
            tdtype = torch.from_numpy(np.empty(0, dtype)).dtype
        except TypeError:
            return np.stack(arrays)
        out = alloc((len(arrays), *a0.shape), tdtype)
        np.stack(arrays, out=out.numpy())
        return out
    return list(values)


def _shape_error(values: list[Any], cause: Exception | None) -> ValueError:
    shapes = [tuple(np.shape(v)) for v in values]
    first = shapes[0]
    bad = next((i for i, s in enumerate(shapes) if s != first), None)
    detail = (
        f"record 0 has shape {first} but record {bad} has shape {shapes[bad]}"
        if bad is not None
        else str(cause)
    )
    return ValueError(detail)


def stack(records_leaves: list[list[Any]], alloc: Alloc) -> list[Any]:
    """Stack the flattened leaves of many records (all of one structure), leaf by leaf."""
    n_leaves = len(records_leaves[0])
    return [stack_leaf([r[k] for r in records_leaves], alloc) for k in range(n_leaves)]


def leading(leaves: list[Any]) -> int:
    """The number of records in a batch: its first leaf's first dimension (0 if unknown)."""
    for x in leaves:
        if isinstance(x, torch.Tensor | np.ndarray):
            return int(x.shape[0]) if x.ndim else 0
        if isinstance(x, list):
            return len(x)
    return 0


def slice_leaves(leaves: list[Any], start: int, stop: int) -> list[Any]:
    return [x[start:stop] for x in leaves]


def concat_leaves(pieces: list[list[Any]]) -> list[Any]:
    """Join batches (as leaf lists of one structure) along the first dimension."""
    if len(pieces) == 1:
        return pieces[0]
    out = []
    for k in range(len(pieces[0])):
        parts = [p[k] for p in pieces]
        if isinstance(parts[0], torch.Tensor):
            out.append(torch.cat(parts))
        elif isinstance(parts[0], np.ndarray):
            out.append(np.concatenate(parts))
        else:
            out.append([v for part in parts for v in part])
    return out


def row(leaves: list[Any], i: int) -> list[Any]:
    """Record ``i`` of a batch (views of its tensors)."""
    return [x[i] for x in leaves]
