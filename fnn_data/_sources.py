"""Where records come from: arrays, ``.npy`` files, torch datasets and streams.

An indexable source has a length and returns record ``i`` on demand (and, for arrays, a whole
set of records with one gather per field). A stream source (``from_iterable``) can only be read
from the start. Sources never copy their arrays: numpy arrays, memory maps and tensors are read
in place, so worker processes (started with ``fork``) share them without copy-on-access growth
(array data pages are never written, unlike the reference counts of a list of Python objects).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import optree
import torch

from fnn_data import _tree
from fnn_data._dataset import Dataset

__all__ = ["from_arrays", "from_iterable", "from_npy", "from_torch"]


class Source:
    """An indexable source of records (internal protocol)."""

    is_stream = False
    supports_gather = False  # whether gather() has a vectorised fast path

    def __len__(self) -> int:
        raise NotImplementedError

    def record(self, i: int) -> Any:
        raise NotImplementedError

    def records(self, index: np.ndarray) -> list[Any]:
        """The records at ``index`` (an int64 array), in order."""
        return [self.record(int(i)) for i in index]

    def gather(self, index: np.ndarray, alloc: _tree.Alloc) -> tuple[list[Any], Any]:
        """``(leaves, structure)`` of the records at ``index`` (if supports_gather), with the
        output tensors from ``alloc``."""
        raise NotImplementedError

    def signature(self) -> str:
        """What identifies the source in a pipeline's fingerprint and repr."""
        raise NotImplementedError


class ArraySource(Source):
    """Records are rows of a pytree of arrays or tensors that share their first dimension."""

    supports_gather = True

    def __init__(self, tree: Any, where: str) -> None:
        paths, leaves, spec = optree.tree_flatten_with_path(
            tree, none_is_leaf=False, namespace=_tree.NAMESPACE
        )
        if not leaves:
            raise ValueError(f"{where}: expected at least one array, got {tree!r}.")
        names = [".".join(str(p) for p in path) or "<array>" for path in paths]
        for name, leaf in zip(names, leaves, strict=True):
            if not isinstance(leaf, np.ndarray | torch.Tensor):
                raise TypeError(
                    f"{where}: expected numpy arrays or torch tensors, got "
                    f"{type(leaf).__name__} at {name!r}. Wrap Python sequences with "
                    "np.asarray(...)."
                )
            if leaf.ndim == 0:
                raise ValueError(
                    f"{where}: {name!r} is a scalar (shape ()); expected arrays whose first "
                    "dimension indexes the records."
                )
        lengths = {name: int(leaf.shape[0]) for name, leaf in zip(names, leaves, strict=True)}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k}: {v}" for k, v in lengths.items())
            raise ValueError(
                f"{where}: every field needs the same number of records (its first dimension), "
                f"got {listed}."
            )
        self._n = next(iter(lengths.values()))
        self._spec = spec
        self._names = names
        self._leaves = leaves
        self._numpy = [_numpy_view(x) for x in leaves]  # None where numpy can't view it
        self._torch = [_torch_view(a) for a in self._numpy]  # for the batch gather
        # A flat dict of arrays (the usual source) builds its records directly.
        template = _tree.unflatten(spec, list(range(len(leaves))))
        self._fields = (
            [(k, leaves[j]) for k, j in template.items()]
            if type(template) is dict and spec.num_leaves == len(template)
            else None
        )

    def __len__(self) -> int:
        return self._n

    def record(self, i: int) -> Any:
        if self._fields is not None:
            return {k: x[i] for k, x in self._fields}
        return _tree.unflatten(self._spec, [x[i] for x in self._leaves])

    def records(self, index: np.ndarray) -> list[Any]:
        if self._fields is not None:
            fields = self._fields
            return [{k: x[i] for k, x in fields} for i in index.tolist()]
        return [self.record(i) for i in index.tolist()]

    def gather(self, index: np.ndarray, alloc: _tree.Alloc) -> tuple[list[Any], Any]:
        out = []
        for leaf, arr, view in zip(self._leaves, self._numpy, self._torch, strict=True):
            if arr is None:
                out.append(leaf.index_select(0, torch.from_numpy(index).to(leaf.device)))
            elif alloc is _tree.private_empty and view is not None:
                # torch's index_select runs on torch's threads: 224 us against 325 us for
                # numpy's fancy indexing (256 records of 3x32x32 float32, 2 threads, quiet).
                out.append(view.index_select(0, torch.from_numpy(index)))
            elif alloc is _tree.private_empty:  # read-only (np.load mmap) or foreign layout
                picked = arr[index]
                if not picked.dtype.isnative:  # torch holds native byte order only
                    picked = picked.astype(picked.dtype.newbyteorder("="))
                out.append(torch.from_numpy(picked))
            else:  # into a given buffer (a worker's shared-memory slot)
                t = alloc((len(index), *arr.shape[1:]), _torch_dtype(arr.dtype))
                np.take(arr, index, axis=0, out=t.numpy(), mode="wrap")  # "wrap": unbuffered
                out.append(t)
        return out, self._spec

    def signature(self) -> str:
        fields = ", ".join(
            f"{name}: {_dtype_name(x)}{list(x.shape[1:])}"
            for name, x in zip(self._names, self._leaves, strict=True)
        )
        return f"{self._n} records {{{fields}}}"


def _numpy_view(x: np.ndarray | torch.Tensor) -> np.ndarray | None:
    if isinstance(x, np.ndarray):
        return np.asarray(x) if x.dtype.kind in "biufc" else None  # memmap -> plain view
    if x.device.type != "cpu" or x.requires_grad or x.is_conj() or x.is_neg():
        return None
    try:
        return x.numpy()
    except (TypeError, RuntimeError):  # bfloat16 and other types numpy lacks
        return None


# dtypes whose torch twins support index_select on CPU (torch's uint16-64 do not)
_INDEXABLE = frozenset(
    np.dtype(t)
    for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8)
) | {np.dtype(np.bool_)}


def _torch_view(arr: np.ndarray | None) -> torch.Tensor | None:
    """A tensor sharing ``arr``'s memory, or ``None`` where torch cannot (or should not) view it:
    read-only arrays (memory-mapped ``.npy``; torch warns on them), byte-swapped or unusual
    dtypes, negative strides."""
    if arr is None or not arr.flags.writeable or not arr.dtype.isnative:
        return None
    if arr.dtype not in _INDEXABLE or any(s < 0 for s in arr.strides):
        return None
    return torch.from_numpy(arr)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def _dtype_name(x: np.ndarray | torch.Tensor) -> str:
    return str(x.dtype).removeprefix("torch.")


def from_arrays(tree: Any = None, /, **fields: np.ndarray | torch.Tensor) -> Dataset:
    """A pipeline over in-memory arrays: record ``i`` is row ``i`` of every array.

    Pass the arrays as keyword fields (``from_arrays(x=..., y=...)``), or as one pytree of
    arrays (a dict, a tuple, or a single array, whose records are then its rows). Arrays are
    numpy arrays or torch tensors sharing their first dimension; they are read in place, never
    copied.

    Records seen by ``map``/``filter`` hold the source's own types: numpy arrays for numpy
    fields, tensors for tensor fields. Batches of a pipeline without per-record stages are
    gathered with one vectorised index per field.

    Args:
        tree: a pytree of arrays, or None when ``fields`` are given.
        **fields: named arrays, each of shape ``(N, ...)``.

    Returns:
        A :class:`Dataset` of ``N`` records.

    Raises:
        ValueError: the arrays have different first dimensions, or a scalar was given.
        TypeError: a leaf is not an array or a tensor.

    Example:
        >>> import numpy as np, fnn_data
        >>> ds = fnn_data.from_arrays(x=np.arange(10.0).reshape(5, 2), y=np.arange(5))
        >>> len(ds), ds.source.record(1)
        (5, {'x': array([2., 3.]), 'y': np.int64(1)})
        >>> next(iter(ds.batch(2)))
        {'x': tensor([[0., 1.],
                [2., 3.]], dtype=torch.float64), 'y': tensor([0, 1])}
    """
    if (tree is None) == (not fields):
        raise TypeError(
            "fnn_data.from_arrays: pass either one pytree of arrays or keyword fields "
            f"(from_arrays(x=..., y=...)), got {'both' if fields else 'neither'}."
        )
    source = ArraySource(fields if tree is None else tree, "fnn_data.from_arrays")
    return Dataset(source, origin="from_arrays")


def from_npy(
    path: str | os.PathLike | None = None, /, *, mmap: bool = True, **paths: str | os.PathLike
) -> Dataset:
    """A pipeline over ``.npy`` files, memory-mapped: only the records read are paged in.

    Args:
        path: one ``.npy`` file whose rows are the records, or None when ``paths`` are given.
        mmap: map the files read-only (``np.load(mmap_mode="r")``); False loads them into
            memory.
        **paths: named files, e.g. ``from_npy(x="x.npy", y="y.npy")``; records are dicts.

    Returns:
        A :class:`Dataset` whose records are rows of the arrays (numpy views of the map).

    Example:
        >>> import tempfile, os, numpy as np, fnn_data
        >>> d = tempfile.mkdtemp()
        >>> np.save(os.path.join(d, "x.npy"), np.arange(12, dtype=np.float32).reshape(6, 2))
        >>> np.save(os.path.join(d, "y.npy"), np.arange(6))
        >>> ds = fnn_data.from_npy(x=os.path.join(d, "x.npy"), y=os.path.join(d, "y.npy"))
        >>> next(iter(ds.batch(3)))["x"]
        tensor([[0., 1.],
                [2., 3.],
                [4., 5.]])
    """
    if (path is None) == (not paths):
        raise TypeError(
            "fnn_data.from_npy: pass either one path or named paths (from_npy(x='x.npy', ...)), "
            f"got {'both' if paths else 'neither'}."
        )
    mode = "r" if mmap else None

    def load(p: str | os.PathLike) -> np.ndarray:
        return np.load(p, mmap_mode=mode, allow_pickle=False)

    tree = load(path) if path is not None else {k: load(p) for k, p in paths.items()}
    return Dataset(ArraySource(tree, "fnn_data.from_npy"), origin="from_npy")


class TorchSource(Source):
    """Records are ``dataset[i]`` of a map-style ``torch.utils.data.Dataset``."""

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                "fnn_data.from_torch: expected a map-style torch.utils.data.Dataset (with "
                f"__getitem__ and __len__), got {type(dataset).__name__}. For an "
                "IterableDataset use fnn_data.from_iterable(lambda: iter(dataset))."
            )
        self.dataset = dataset
        self._n = len(dataset)
        self._batched = callable(getattr(dataset, "__getitems__", None))

    def __len__(self) -> int:
        return self._n

    def record(self, i: int) -> Any:
        return self.dataset[i]

    def records(self, index: np.ndarray) -> list[Any]:
        if self._batched:  # torch's batched-fetch protocol (used by DataLoader too)
            return list(self.dataset.__getitems__(index.tolist()))
        return [self.dataset[i] for i in index.tolist()]

    def signature(self) -> str:
        return f"{type(self.dataset).__qualname__} of {self._n} records"


def from_torch(dataset: torch.utils.data.Dataset) -> Dataset:
    """A pipeline over a map-style ``torch.utils.data.Dataset``: record ``i`` is ``dataset[i]``.

    Records keep the dataset's structure (a tuple ``(x, y)`` gives tuple batches, as with
    ``DataLoader``'s collation). A dataset with ``__getitems__`` is read a chunk at a time.

    Args:
        dataset: any object with ``__len__`` and ``__getitem__``.

    Returns:
        A :class:`Dataset` of ``len(dataset)`` records.

    Example:
        >>> import torch, fnn_data
        >>> tds = torch.utils.data.TensorDataset(torch.arange(6.0), torch.arange(6) % 2)
        >>> next(iter(fnn_data.from_torch(tds).batch(3)))
        (tensor([0., 1., 2.]), tensor([0, 1, 0]))
    """
    return Dataset(TorchSource(dataset), origin="from_torch")


class IterableSource:
    """A stream of records: readable only from the start (internal)."""

    is_stream = True

    def __init__(self, factory: Callable[[], Iterable[Any]] | Iterable[Any]) -> None:
        if callable(factory) and not hasattr(factory, "__iter__"):
            self._factory = factory
            self._name = getattr(factory, "__qualname__", type(factory).__name__)
            self._one_shot = False
        elif hasattr(factory, "__iter__"):
            self._factory = lambda: factory
            self._name = type(factory).__qualname__
            self._one_shot = iter(factory) is factory  # a generator or other iterator
        else:
            raise TypeError(
                "fnn_data.from_iterable: expected a function returning an iterable, or an "
                f"iterable, got {type(factory).__name__}."
            )
        self._opened = False

    def open(self) -> Iterator[Any]:
        if self._one_shot and self._opened:
            raise RuntimeError(
                "fnn_data.from_iterable: the source is a one-shot iterator that was already "
                "read, so it cannot restart for a new epoch or a resume. Pass a function that "
                "returns a fresh iterator instead: from_iterable(lambda: read_records(path))."
            )
        self._opened = True
        return iter(self._factory())

    def signature(self) -> str:
        return f"stream {self._name}"


def from_iterable(factory: Callable[[], Iterable[Any]] | Iterable[Any]) -> Dataset:
    """A pipeline over a stream of records, for data that cannot be indexed.

    What resuming can honestly offer: a stream has no random access, so the state is the epoch
    and the number of records read in it. ``iter_from(state)`` calls ``factory()`` again and
    skips that many records (reading and discarding them, O(position) work), which resumes
    exactly when ``factory()`` yields the same records in the same order each time (a file, a
    deterministic generator). A stream cannot be globally shuffled (``shuffle`` raises; shuffle
    the source's order yourself), ``shard(i, k)`` takes every ``k``-th record starting at ``i``,
    ``repeat`` calls ``factory()`` again for each epoch, and an epoch that yields nothing ends
    the iteration. With workers, the stream is read in the calling process and the records are
    sent to the workers pickled (a stream has no arrays to share).

    Args:
        factory: a function of no arguments returning a fresh iterable (preferred), or an
            iterable; a one-shot iterator (a generator object) can be read only once.

    Returns:
        A :class:`Dataset` without a known length.

    Example:
        >>> import fnn_data
        >>> ds = fnn_data.from_iterable(lambda: ({"v": i * i} for i in range(5))).batch(2)
        >>> it = iter(ds); next(it)
        {'v': tensor([0, 1])}
        >>> state = it.get_state(); state["epoch"], state["offset"]
        (0, 2)
        >>> [b["v"].tolist() for b in ds.iter_from(state)]
        [[4, 9], [16]]
    """
    return Dataset(IterableSource(factory), origin="from_iterable")
