"""Iterating a pipeline: cursors over positions, tasks, reassembly, and the resumable state.

The calling process plans the work as a sequence of tasks (position ranges), runs them itself
or hands them to workers, and reassembles the results in task order. A task is a pure function
of the pipeline and its positions, so the output does not depend on who ran it. The state is
the position after the last item delivered to the caller: ``(epoch, offset)``, plus the
pipeline's fingerprint.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fnn_data import _tree
from fnn_data._plan import Chunk, Plan, Segment, Task

if TYPE_CHECKING:
    from fnn_data._dataset import Dataset

STATE_VERSION = 1


class _IndexCursor:
    """Walks the positions of an indexable pipeline, epoch by epoch."""

    def __init__(self, plan: Plan, epoch: int, offset: int) -> None:
        self.plan, self.epoch, self.offset = plan, epoch, offset

    def state(self) -> tuple[int, int]:
        return self.epoch, self.offset

    def ended(self) -> bool:
        return self.plan.ended(self.epoch)

    def next(self, count: int) -> Segment | None:
        """Up to ``count`` positions, never across an epoch's end; None after the last."""
        if self.ended():
            return None
        end = self.plan.L
        stop = min(self.offset + count, end)
        seg = Segment(self.epoch, self.offset, stop, None, stop == end)
        if stop == end:
            self.epoch, self.offset = self.epoch + 1, 0
        else:
            self.offset = stop
        return seg


class _StreamCursor:
    """Reads a stream source; a resume reopens it and skips the records already read."""

    def __init__(self, plan: Plan, epoch: int, offset: int) -> None:
        self.plan, self.epoch, self.offset = plan, epoch, offset
        self._it: Iterator[Any] | None = None
        self._raw = 0
        self._done = plan.ended(epoch)

    def state(self) -> tuple[int, int]:
        return self.epoch, self.offset

    def ended(self) -> bool:
        return self._done

    def _open(self) -> None:
        self._it = self.plan.source.open()
        skip = self.plan.stream_raw(self.offset) if self.offset else 0
        self._raw = sum(1 for _ in itertools.islice(self._it, skip))

    def next(self, count: int) -> Segment | None:
        if self._done:
            return None
        if self._it is None:
            self._open()
        index: list[int] = []
        records: list[Any] = []
        epoch_end = False
        while len(records) < count:
            try:
                item = next(self._it)
            except StopIteration:
                epoch_end = True
                break
            raw, self._raw = self._raw, self._raw + 1
            if self.plan.stream_keep(raw) is not None:
                index.append(raw)
                records.append(item)
        seg = Segment(
            self.epoch, self.offset, self.offset + len(records), (index, records), epoch_end
        )
        self.offset += len(records)
        if epoch_end:
            empty = self.offset == 0  # an epoch without records: all epochs are empty
            self.epoch, self.offset, self._it = self.epoch + 1, 0, None
            self._done = empty or self.plan.ended(self.epoch)
        return seg


def _batch_tasks(plan: Plan, cursor: Any) -> Iterator[Task]:
    """One task per batch (pipelines without ``filter``: batch boundaries are known)."""
    bs = plan.batch_size
    while True:
        segs: list[Segment] = []
        count = 0
        while count < bs:
            seg = cursor.next(bs - count)
            if seg is None:
                break
            if seg.stop > seg.start:
                segs.append(seg)
                count += seg.stop - seg.start
            if seg.epoch_end and plan.breaks_after(seg.epoch):
                break
        if count == 0:
            if cursor.ended():
                return
            continue
        if count < bs and plan.drop_remainder:
            continue
        yield Task("batch", tuple(segs), cursor.state())


def _record_tasks(plan: Plan, cursor: Any) -> Iterator[Task]:
    """Fixed-size chunks of positions (with ``filter``, or unbatched)."""
    while True:
        seg = cursor.next(plan.chunk)
        if seg is None:
            return
        brk = seg.epoch_end and plan.breaks_after(seg.epoch)
        yield Task("records", (seg,), cursor.state(), brk)


def _after(plan: Plan, epoch: int, offset: int) -> tuple[int, int]:
    """The position after the record at ``(epoch, offset)``."""
    if plan.L is not None and offset + 1 >= plan.L:
        return epoch + 1, 0
    return epoch, offset + 1


def _whole_batches(plan: Plan, results: Iterator[tuple[Task, Any]]) -> Iterator[tuple[Any, Any]]:
    first = None
    for task, (batch, spec, epoch, src) in results:
        if spec is not None:
            if first is None:
                first = (spec, epoch, src)
            elif spec != first[0]:
                raise plan.structure_error(first[1], first[2], first[0], src, spec, epoch_b=epoch)
        yield batch, task.state


def _assemble(plan: Plan, results: Iterator[tuple[Task, Chunk]]) -> Iterator[tuple[Any, Any]]:
    """Batches (or single records) from chunks of surviving records, in position order."""
    bs = plan.batch_size
    first: Chunk | None = None
    pending: list[Chunk] = []  # chunks (sliced to their unused rows) waiting for a batch
    count = 0
    last_state: tuple[int, int] | None = None

    def take(n: int) -> tuple[Any, tuple[int, int]]:
        nonlocal count
        parts, used = [], 0
        while used < n:
            c = pending[0]
            k = min(n - used, len(c.offsets))
            parts.append(_tree.slice_leaves(c.leaves, 0, k))
            end = (c.epoch, int(c.offsets[k - 1]))
            if k == len(c.offsets):
                pending.pop(0)
            else:
                pending[0] = _rest(c, k)
            used += k
        count -= n
        batch = _tree.unflatten(first.spec, _tree.concat_leaves(parts))
        return plan.apply_batch_ops(batch), _after(plan, *end)

    for task, chunk in results:
        last_state = task.state
        if chunk.spec is not None:
            if first is None:
                first = chunk
            elif chunk.spec != first.spec:
                raise plan.structure_error(
                    first.epoch, int(first.sources[0]), first.spec,
                    int(chunk.sources[0]), chunk.spec, epoch_b=chunk.epoch,
                )  # fmt: skip
            if bs is None:
                for k, offset in enumerate(chunk.offsets.tolist()):
                    leaves = (
                        _tree.row(chunk.leaves, k)
                        if chunk.leaves is not None
                        else [_tree.as_tensor(x) for x in chunk.rows[k]]
                    )
                    yield _tree.unflatten(chunk.spec, leaves), _after(plan, chunk.epoch, offset)
                continue
            pending.append(chunk)
            count += len(chunk.offsets)
            while count >= bs:
                yield take(bs)
        if task.break_after and count:
            if plan.drop_remainder:
                pending.clear()
                count = 0
            else:
                batch, _ = take(count)
                yield batch, task.state
    if count and not plan.drop_remainder and last_state is not None:
        batch, _ = take(count)
        yield batch, last_state


def _rest(c: Chunk, k: int) -> Chunk:
    return Chunk(
        c.epoch, c.offsets[k:], c.sources[k:], c.spec, _tree.slice_leaves(c.leaves, k, None), None
    )


class Engine:
    """Produces ``(item, state_after)`` pairs from a position, with or without workers."""

    def __init__(self, plan: Plan, position: tuple[int, int], workers: int) -> None:
        cursor = (_StreamCursor if plan.stream else _IndexCursor)(plan, *position)
        tasks = _batch_tasks(plan, cursor) if plan.aligned else _record_tasks(plan, cursor)
        self.pool = None
        if workers > 0 and not plan.fast_gather:
            from fnn_data._workers import WorkerPool

            self.pool = WorkerPool(plan, workers)  # forks now, in the caller's thread
            results = self.pool.run(tasks)
        else:
            results = ((t, plan.run(t, _tree.private_empty)) for t in tasks)
        self.items = (_whole_batches if plan.aligned else _assemble)(plan, results)

    def __iter__(self) -> Engine:
        return self

    def __next__(self) -> tuple[Any, tuple[int, int]]:
        return next(self.items)

    def stop_workers(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def close(self) -> None:
        self.stop_workers()
        try:
            self.items.close()
        except ValueError:  # still running in a prefetch thread that did not stop in time
            pass


class DataIterator:
    """Iterates a :class:`Dataset`; its state is a few integers that resume it anywhere.

    Created by ``iter(ds)``, ``ds.iter(...)`` or ``ds.iter_from(state)``. Iteration yields
    batches (pytrees of torch tensors) or, for an unbatched pipeline, records with their
    leaves as tensors. Worker processes and the prefetch thread are released when the
    iterator is exhausted, on :meth:`close` (or leaving a ``with`` block), on garbage
    collection, and when an exception (including KeyboardInterrupt) passes through it.

    Example:
        >>> import numpy as np, fnn_data
        >>> ds = fnn_data.from_arrays(np.arange(10)).shuffle(seed=0).batch(3)
        >>> it = iter(ds)
        >>> a = next(it)
        >>> state = it.get_state()
        >>> sorted(state)
        ['epoch', 'fingerprint', 'fnn_data', 'offset', 'pipeline']
        >>> b = next(it)
        >>> it.set_state(state)
        >>> bool((next(it) == b).all())
        True
    """

    def __init__(
        self, dataset: Dataset, state: Mapping[str, Any] | None = None, progress: bool = False
    ) -> None:
        self._plan = dataset._compiled()
        self._options = dataset._options
        self._source: Any = None
        self._mover = None
        self._bar = None
        self._position = (0, 0) if state is None else self._check(state)
        if progress:
            from fnn_data._progress import attach

            attach(self)
        self._open()

    def _open(self) -> None:
        from fnn_data._prefetch import Prefetcher, mover

        opts = self._options
        engine = Engine(self._plan, self._position, opts.workers)
        move = mover(opts.device, opts.pin_memory)
        if opts.prefetch > 0:
            self._source, self._mover = Prefetcher(engine, opts.prefetch, move), None
        else:
            self._source, self._mover = engine, move

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> Any:
        if self._source is None:
            raise StopIteration
        try:
            item, position = next(self._source)
        except BaseException:  # exhausted, an error, or KeyboardInterrupt: release everything
            self.close()
            raise
        if self._mover is not None:
            item = self._mover(item)
        self._position = position
        if self._bar is not None:
            self._bar.update(self._records_in(item))
        return item

    def _records_in(self, item: Any) -> int:
        if self._plan.batch is None:
            return 1
        return _tree.leading(_tree.flatten(item)[0]) or 1

    def get_state(self) -> dict[str, Any]:
        """The position after the last item delivered, as a small JSON-serialisable dict.

        ``{"fnn_data": 1, "fingerprint": str, "pipeline": str, "epoch": int, "offset": int}``:
        the epoch and the offset within it of the next record to read, and what identifies
        the pipeline. With workers or prefetching, items prepared but not yet delivered do
        not count.

        Example:
            >>> import json, numpy as np, fnn_data
            >>> it = iter(fnn_data.from_arrays(np.arange(5)).batch(2).repeat(2).workers(1))
            >>> _ = next(it), next(it), next(it)
            >>> state = it.get_state(); state["epoch"], state["offset"]
            (1, 0)
            >>> json.loads(json.dumps(state)) == state
            True
        """
        epoch, offset = self._position
        return {
            "fnn_data": STATE_VERSION,
            "fingerprint": self._plan.fingerprint,
            "pipeline": self._plan.description,
            "epoch": int(epoch),
            "offset": int(offset),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`get_state` of the same pipeline).

        Example:
            >>> import numpy as np, fnn_data
            >>> it = iter(fnn_data.from_arrays(np.arange(6)).batch(2))
            >>> start = it.get_state()
            >>> [b.tolist() for b in it]
            [[0, 1], [2, 3], [4, 5]]
            >>> it.set_state(start)
            >>> next(it).tolist()
            [0, 1]
        """
        position = self._check(state)
        self._release()
        self._position = position
        self._open()

    def _check(self, state: Mapping[str, Any]) -> tuple[int, int]:
        plan = self._plan
        if not isinstance(state, Mapping) or state.get("fnn_data") != STATE_VERSION:
            raise ValueError(
                "fnn_data: expected a state from DataIterator.get_state() (a dict with "
                f"'fnn_data': {STATE_VERSION}, 'fingerprint', 'epoch', 'offset'), got {state!r}."
            )
        if state.get("fingerprint") != plan.fingerprint:
            raise ValueError(
                "fnn_data: this state was saved from a different pipeline, so it cannot resume "
                f"this one.\n  saved from: {state.get('pipeline')}\n  this one:   "
                f"{plan.description}\n(fingerprints {state.get('fingerprint')} != "
                f"{plan.fingerprint}). A state resumes only a pipeline with the same source size "
                "and fields, stages, seeds, sizes and function names."
            )
        epoch, offset = state.get("epoch"), state.get("offset")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, offset)):
            raise ValueError(f"fnn_data: the state's epoch and offset must be ints, got {state!r}.")
        if epoch < 0 or offset < 0 or (plan.L is not None and offset > plan.L):
            raise ValueError(
                f"fnn_data: the state's position (epoch {epoch}, offset {offset}) is out of "
                f"range for this pipeline (epochs of {plan.L} records)."
            )
        if plan.L is not None and offset == plan.L and plan.L:
            return epoch + 1, 0
        return epoch, offset

    def _release(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()

    def close(self) -> None:
        """Stop the workers and the prefetch thread; the iterator then yields nothing more.

        Example:
            >>> import numpy as np, fnn_data
            >>> it = iter(fnn_data.from_arrays(np.arange(6)).batch(2).workers(2).prefetch(1))
            >>> _ = next(it)
            >>> it.close()
            >>> list(it)
            []
        """
        self._release()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> DataIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        epoch, offset = self._position
        return f"DataIterator(epoch={epoch}, offset={offset}, {self._plan.description})"


def records_done(plan: Plan, position: tuple[int, int]) -> int | None:
    """Positions already read before ``position`` (for a progress bar's start), if known."""
    if plan.L is None:
        return None
    return position[0] * plan.L + position[1]
