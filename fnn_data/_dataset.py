"""The pipeline object: a lazy, immutable chain of stages over a source."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from fnn_data._plan import Plan, Stage

if TYPE_CHECKING:
    from fnn_data._iterator import DataIterator


@dataclasses.dataclass(frozen=True)
class _Options:
    workers: int = 0
    prefetch: int = 0
    device: torch.device | None = None
    pin_memory: bool = True


def _int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"fnn_data.Dataset.{where}: expected an int {what}, got bool {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"fnn_data.Dataset.{where}: expected an int {what}, got {type(value).__name__} "
            f"{value!r}."
        ) from None


def _callable(fn: Any, where: str) -> None:
    if not callable(fn):
        raise TypeError(
            f"fnn_data.Dataset.{where}: expected a function, got {type(fn).__name__} {fn!r}."
        )


class Dataset:
    """A lazy, immutable input pipeline: a source and a chain of stages.

    Build one from a source (:func:`fnn_data.from_arrays`, :func:`fnn_data.from_npy`,
    :func:`fnn_data.from_torch`, :func:`fnn_data.from_iterable`,
    :func:`fnn_data.from_image_folder`), chain stages (each returns a new Dataset; nothing runs
    until iteration), then iterate. The same pipeline always yields the same items, whatever
    the number of workers or the prefetch depth, in any process, and an iterator's
    :meth:`~fnn_data.DataIterator.get_state` lets a new process continue exactly where it
    stopped (see :meth:`iter_from`).

    Stages: ``shuffle``, ``shard`` and ``repeat`` act on record positions; ``map``,
    ``random_map`` and ``filter`` on records; ``batch`` stacks records into a batch (a pytree
    of torch tensors), after which ``map`` gets whole batches. ``workers``, ``prefetch`` and
    ``to_device`` choose how the pipeline runs and never change what it yields.

    Example:
        >>> import numpy as np, fnn_data
        >>> ds = (
        ...     fnn_data.from_arrays(x=np.arange(10.0), y=np.arange(10) % 2)
        ...     .shuffle(seed=0)
        ...     .map(lambda r: {"x": r["x"] * 10, "y": r["y"]})
        ...     .batch(4)
        ... )
        >>> ds
        Dataset(from_arrays(10 records {x: float64[], y: int64[]}) -> shuffle(seed=0) -> ...)
        >>> [b["x"].tolist() for b in ds]
        [[30.0, 10.0, 90.0, 40.0], [50.0, 20.0, 0.0, 60.0], [80.0, 70.0]]
    """

    __slots__ = ("_options", "_origin", "_plan", "_source", "_stages")

    def __init__(
        self,
        source: Any,
        stages: tuple[Stage, ...] = (),
        options: _Options = _Options(),
        origin: str | None = None,
    ) -> None:
        self._source = source
        self._stages = stages
        self._options = options
        self._origin = origin or _origin_of(source)
        self._plan: Plan | None = None

    # ---- building -----------------------------------------------------------------------------

    def _with(self, stage: Stage | None = None, **options: Any) -> Dataset:
        stages = self._stages if stage is None else (*self._stages, stage)
        opts = dataclasses.replace(self._options, **options) if options else self._options
        return Dataset(self._source, stages, opts, self._origin)

    def _stage(self, kind: str, **fields: Any) -> Stage:
        number = 1 + sum(st.kind == kind for st in self._stages)
        return Stage(kind, after_batch=self._batched, number=number, **fields)

    @property
    def _batched(self) -> bool:
        return any(st.kind == "batch" for st in self._stages)

    def _refuse_after_batch(self, where: str, advice: str) -> None:
        if self._batched:
            raise ValueError(f"fnn_data.Dataset.{where}: cannot follow .batch(); {advice}")

    def shuffle(self, seed: int) -> Dataset:
        """Shuffle the records globally, with a new order every epoch.

        The order is a keyed bijection of the record positions, evaluated lazily (a Feistel
        network with cycle walking, keyed from ``fnn.random.fold_in(fold_in(key(seed), 0),
        epoch)``): nothing is materialised, so it scales to 10**9 records, and the same seed
        gives the same order on every machine and for any number of workers.

        Args:
            seed: an int.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(6)).shuffle(seed=1).repeat(2)
            >>> [int(x) for x in ds]
            [2, 4, 5, 0, 1, 3, 0, 2, 5, 4, 3, 1]
        """
        seed = _int(seed, "seed", "shuffle")
        self._refuse_after_batch(
            "shuffle", "shuffle the records, then batch them: ds.shuffle(seed).batch(n)."
        )
        if getattr(self._source, "is_stream", False):
            raise ValueError(
                "fnn_data.Dataset.shuffle: a stream (from_iterable) has no random access, so it "
                "cannot be shuffled globally; shuffle the order of the stream's own source, or "
                "use an indexable source (from_arrays, from_npy, from_torch)."
            )
        return self._with(self._stage("shuffle", seed=seed))

    def map(self, fn: Callable[[Any], Any]) -> Dataset:
        """Apply ``fn`` to every record (before ``batch``) or to every batch (after it).

        ``fn`` must be a pure function of its input (it may run in a worker process) and
        return the same structure for every record.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(x=np.arange(4)).map(lambda r: {"x": r["x"] + 100})
            >>> next(iter(ds.batch(2).map(lambda b: b["x"].sum())))
            tensor(201)
        """
        _callable(fn, "map")
        return self._with(self._stage("map", fn=fn))

    def random_map(
        self, fn: Callable[[Any, torch.Tensor], Any], *, seed: int | None = None
    ) -> Dataset:
        """Apply ``fn(record, key)`` with a PRNG key of the record's own.

        The key (an ``fnn.random`` key: a ``torch.uint32`` tensor of shape ``(2,)``) is
        ``fold_in(fold_in(fold_in(key(seed), 1 + m), epoch), index)``, where ``m`` counts the
        ``random_map`` stages before this one and ``index`` is the record's source index: it
        depends on the seed, the epoch and the record, never on a worker, so results are the
        same with any number of workers, and each epoch draws anew. Use it with
        ``fnn.random`` samplers, or take its two words as random bits (``key.numpy()``).

        Args:
            fn: ``fn(record, key) -> record``.
            seed: an int; by default the seed of the last ``shuffle`` before this stage.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(x=np.zeros(3)).random_map(
            ...     lambda r, key: {"x": r["x"] + int(key[1]) % 10}, seed=0
            ... )
            >>> [b["x"].tolist() for b in ds.batch(3)]
            [[2.0, 0.0, 1.0]]
        """
        _callable(fn, "random_map")
        self._refuse_after_batch(
            "random_map", "apply it to records before batching, or use .map on batches."
        )
        if seed is None:
            shuffles = [st.seed for st in self._stages if st.kind == "shuffle"]
            if not shuffles:
                raise ValueError(
                    "fnn_data.Dataset.random_map: needs a seed; pass one "
                    "(random_map(fn, seed=0)) or shuffle(seed) earlier in the chain."
                )
            seed = shuffles[-1]
        seed = _int(seed, "seed", "random_map")
        ordinal = sum(st.kind == "random_map" for st in self._stages)
        return self._with(self._stage("random_map", fn=fn, seed=seed, index=ordinal))

    def filter(self, predicate: Callable[[Any], bool]) -> Dataset:
        """Keep the records for which ``predicate(record)`` is true.

        Batches are then made of consecutive surviving records; the iterator's state still
        counts positions, so resuming needs no buffered records.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(10)).filter(lambda x: x % 3 == 0)
            >>> [b.tolist() for b in ds.batch(3)]
            [[0, 3, 6], [9]]
        """
        _callable(predicate, "filter")
        self._refuse_after_batch("filter", "filter the records before batching them.")
        return self._with(self._stage("filter", fn=predicate))

    def batch(self, batch_size: int, *, drop_remainder: bool = False) -> Dataset:
        """Stack consecutive records into batches of ``batch_size``.

        Each leaf of the records becomes a tensor of shape ``(batch_size, *leaf_shape)``
        (numpy arrays and numbers are converted without an extra copy). Without per-record
        stages, a batch from arrays is one vectorised gather per field.

        Args:
            batch_size: records per batch, at least 1.
            drop_remainder: drop a last batch that has fewer records (kept by default:
                nothing is dropped unless you ask).

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(5))
            >>> [b.tolist() for b in ds.batch(2)]
            [[0, 1], [2, 3], [4]]
            >>> [b.tolist() for b in ds.batch(2, drop_remainder=True)]
            [[0, 1], [2, 3]]
        """
        size = _int(batch_size, "batch_size", "batch")
        if size < 1:
            raise ValueError(f"fnn_data.Dataset.batch: expected a batch_size >= 1, got {size}.")
        if self._batched:
            raise ValueError(
                "fnn_data.Dataset.batch: the pipeline is already batched; batch once, with the "
                "total size you want."
            )
        return self._with(self._stage("batch", size=size, drop_remainder=bool(drop_remainder)))

    def repeat(self, epochs: int | None = None) -> Dataset:
        """Repeat the data ``epochs`` times (None: forever), reshuffling every epoch.

        Before ``batch``, batches run on across epoch boundaries; after ``batch``, each
        repetition ends with its own (possibly short) batch.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(3))
            >>> [b.tolist() for b in ds.repeat(2).batch(2)]
            [[0, 1], [2, 0], [1, 2]]
            >>> [b.tolist() for b in ds.batch(2).repeat(2)]
            [[0, 1], [2], [0, 1], [2]]
        """
        if epochs is not None:
            epochs = _int(epochs, "number of epochs (or None)", "repeat")
            if epochs < 0:
                raise ValueError(f"fnn_data.Dataset.repeat: expected epochs >= 0, got {epochs}.")
        return self._with(self._stage("repeat", size=epochs))

    def shard(self, index: int, count: int) -> Dataset:
        """Keep shard ``index`` of ``count`` disjoint shards of every epoch's records.

        Remainder rule: of ``L`` positions, shard ``i`` gets the contiguous block starting at
        ``i * (L // count) + min(i, L % count)`` of ``L // count + (1 if i < L % count else
        0)`` positions, so the first ``L % count`` shards hold one record more and together
        the shards cover every record exactly once. After ``shuffle(seed)`` (same seed on every
        process) the shards are disjoint random subsets, new each epoch. Written after
        ``batch``, it still splits records (each process batches its own). Streams
        (``from_iterable``) take every ``count``-th record starting at ``index``.

        Args:
            index: this shard, in ``[0, count)``.
            count: the number of shards (e.g. processes), at least 1.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(7))
            >>> [[int(x) for x in ds.shard(i, 3)] for i in range(3)]
            [[0, 1, 2], [3, 4], [5, 6]]
        """
        index = _int(index, "shard index", "shard")
        count = _int(count, "shard count", "shard")
        if count < 1:
            raise ValueError(f"fnn_data.Dataset.shard: expected count >= 1, got {count}.")
        if not 0 <= index < count:
            raise ValueError(
                f"fnn_data.Dataset.shard: shard index {index} is out of range for {count} "
                f"shards; expected 0 <= index < {count}."
            )
        return self._with(self._stage("shard", index=index, size=count))

    def workers(self, n: int) -> Dataset:
        """Run the per-record work in ``n`` worker processes (0: in the calling process).

        Workers (started with ``fork``, so they share the source's arrays and the stages'
        functions without pickling them) process whole batches or chunks of positions; results
        come back through shared memory and are put back in order, so the output is identical
        for every ``n``. An exception in a worker is raised in the caller with the worker's
        traceback attached. Workers stop when the iterator is exhausted, closed, garbage
        collected or interrupted. A pipeline with nothing per record to compute (arrays, no
        ``map``/``filter``) gathers its batches in the calling process: one vectorised copy
        per field is faster than any hand-off between processes.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(6)).map(lambda x: x * 2).batch(3)
            >>> [b.tolist() for b in ds.workers(2)] == [b.tolist() for b in ds]
            True
        """
        n = _int(n, "number of workers", "workers")
        if n < 0:
            raise ValueError(f"fnn_data.Dataset.workers: expected n >= 0, got {n}.")
        return self._with(workers=n)

    def prefetch(self, n: int) -> Dataset:
        """Keep ``n`` items ready in a background thread (0: no thread).

        Loading then overlaps the training step. The iterator's state still refers to the last
        item handed to the caller, not the last one prepared.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(6)).batch(2)
            >>> [b.tolist() for b in ds.prefetch(2)]
            [[0, 1], [2, 3], [4, 5]]
        """
        n = _int(n, "prefetch depth", "prefetch")
        if n < 0:
            raise ValueError(f"fnn_data.Dataset.prefetch: expected n >= 0, got {n}.")
        return self._with(prefetch=n)

    def to_device(self, device: torch.device | str, *, pin_memory: bool = True) -> Dataset:
        """Move every item's tensors to ``device`` as the last stage.

        With ``pin_memory`` (and CUDA available) tensors are first copied to pinned memory and
        moved with ``non_blocking=True``; with ``prefetch`` the move happens in the background
        thread. On a CPU device it is a no-op.

        Example:
            >>> import numpy as np, fnn_data
            >>> b = next(iter(fnn_data.from_arrays(np.arange(4)).batch(2).to_device("cpu")))
            >>> b.device
            device(type='cpu')
        """
        return self._with(device=torch.device(device), pin_memory=bool(pin_memory))

    # ---- iterating ------------------------------------------------------------------------------

    def _compiled(self) -> Plan:
        if self._plan is None:
            self._plan = Plan(self._source, self._stages, self._origin)
        return self._plan

    def iter(
        self, *, state: Mapping[str, Any] | None = None, progress: bool = False
    ) -> DataIterator:
        """An iterator, optionally starting from a saved ``state`` and showing a progress bar.

        Args:
            state: a dict from :meth:`DataIterator.get_state` of this same pipeline.
            progress: show a tqdm bar counting records per second (needs ``tqdm``).

        Example:
            >>> import numpy as np, fnn_data
            >>> it = fnn_data.from_arrays(np.arange(5)).batch(2).iter()
            >>> next(it).tolist(), it.get_state()["offset"]
            ([0, 1], 2)
        """
        from fnn_data._iterator import DataIterator

        return DataIterator(self, state=state, progress=progress)

    def iter_from(self, state: Mapping[str, Any]) -> DataIterator:
        """Continue from ``state`` with exactly the items that would have come next.

        The state may come from another process (it is JSON-serialisable); it must come from
        the same pipeline (same source size and fields, stages, seeds, sizes and function
        names), or a ValueError says which.

        Example:
            >>> import json, numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(6)).shuffle(seed=3).batch(2)
            >>> it = iter(ds); first = next(it)
            >>> saved = json.dumps(it.get_state())
            >>> [b.tolist() for b in ds.iter_from(json.loads(saved))] == [b.tolist() for b in it]
            True
        """
        return self.iter(state=state)

    def __iter__(self) -> DataIterator:
        return self.iter()

    def __len__(self) -> int:
        """The number of items (batches, or records if unbatched) a full iteration yields.

        Raises TypeError when it is unknown without reading the data: after ``filter``, with
        ``repeat()`` forever, or for a stream.

        Example:
            >>> import numpy as np, fnn_data
            >>> ds = fnn_data.from_arrays(np.arange(10))
            >>> len(ds), len(ds.batch(4)), len(ds.batch(4, drop_remainder=True).repeat(3))
            (10, 3, 6)
        """
        n = self._compiled().num_items()
        if n is None:
            raise TypeError(
                "len(Dataset): unknown without reading the data (the pipeline filters, "
                "repeats forever or reads a stream)."
            )
        return n

    @property
    def source(self) -> Any:
        """The source object (e.g. ``ds.source.classes`` for an image folder).

        Example:
            >>> import numpy as np, fnn_data
            >>> src = fnn_data.from_arrays(x=np.arange(3)).shuffle(seed=0).source
            >>> len(src), src.record(2)
            (3, {'x': np.int64(2)})
        """
        return self._source

    def __repr__(self) -> str:
        return f"Dataset({self._compiled().description})"


def _origin_of(source: Any) -> str:
    return getattr(source, "origin", None) or type(source).__name__
