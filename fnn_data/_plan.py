"""A pipeline compiled for iteration: the index arithmetic and the work on one chunk of records.

Positions. A pipeline's records are addressed by ``(epoch, offset)``: the epoch is one pass over
the source, the offset a position within the epoch's (shuffled, sharded) order. The index-level
stages are pure functions of positions, applied per epoch in chain order:

* ``shuffle(seed)``: offset ``j`` reads ``pi_e(j)``, a keyed bijection (see ``_shuffle``);
* ``shard(i, k)``: of an epoch of ``L`` positions, shard ``i`` gets the contiguous block
  ``[i * (L // k) + min(i, L % k), ...)`` of ``L // k + (1 if i < L % k else 0)`` positions:
  the first ``L % k`` shards get one record more, no record is lost or repeated;
* ``repeat(n)``: ``n`` epochs (None: without end); wherever it appears, every epoch is
  reshuffled with its own key, as in Grain.

The record-level stages (``map``, ``random_map``, ``filter``) are per-record functions, so they
commute with the index-level ones: the pipeline is normalised to "index stages, then record
stages in their order, then ``batch``, then batch-level ``map``s". ``batch`` groups consecutive
surviving records; when a ``repeat`` comes after ``batch``, batches also end at the end of each
repeated unit (so every epoch of batches ends with its own short batch, or drops it). A
``shard`` written after ``batch`` shards records before batching: each process batches its own
records, which is what data-parallel training wants, and works with ``filter``.

This module runs in worker processes too: :meth:`Plan.run` turns a task (a few position
ranges) into a batch or a chunk of surviving records, the same way in any process.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from fnn_data import _prng, _shuffle, _tree


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a pipeline, as written by the user."""

    kind: str  # shuffle | shard | repeat | map | random_map | filter | batch
    fn: Callable[..., Any] | None = None
    seed: int | None = None
    size: int | None = None  # batch size, repeat count, shard count
    index: int | None = None  # shard index, random_map ordinal
    drop_remainder: bool = False
    after_batch: bool = False
    number: int = 0  # position in the chain, for messages

    @property
    def label(self) -> str:
        """How the stage is named in messages and reprs, e.g. ``map #2 (augment)``."""
        name = _fn_name(self.fn) if self.fn is not None else ""
        if self.kind in ("map", "random_map", "filter"):
            where = " on batches" if self.after_batch else ""
            return f"{self.kind} #{self.number} ({name}){where}"
        return self.describe()

    def describe(self) -> str:
        if self.kind == "shuffle":
            return f"shuffle(seed={self.seed})"
        if self.kind == "shard":
            return f"shard({self.index}, {self.size})"
        if self.kind == "repeat":
            return f"repeat({self.size})"
        if self.kind == "batch":
            drop = ", drop_remainder=True" if self.drop_remainder else ""
            return f"batch({self.size}{drop})"
        seed = f", seed={self.seed}" if self.kind == "random_map" else ""
        return f"{self.kind}({_fn_name(self.fn)}{seed})"


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


class Segment(NamedTuple):
    """Positions ``[start, stop)`` of one epoch; for streams, the records read there."""

    epoch: int
    start: int
    stop: int
    payload: tuple[list[int], list[Any]] | None = None  # (source indices, raw records)
    epoch_end: bool = False


class Task(NamedTuple):
    """One unit of work: a whole batch (``kind="batch"``) or a chunk of records."""

    kind: str
    segments: tuple[Segment, ...]
    state: tuple[int, int]  # the position after this task: (epoch, offset)
    break_after: bool = False  # a batch boundary (or the end) follows this chunk


class Chunk(NamedTuple):
    """The surviving records of a ``records`` task: offsets, structure, stacked leaves."""

    epoch: int
    offsets: np.ndarray  # int64 offsets (within the epoch) of the survivors
    sources: np.ndarray  # their source indices
    spec: Any  # structure of the records (None when nothing survived)
    leaves: list[Any] | None  # stacked leaves, or None when `rows` is used
    rows: list[list[Any]] | None  # per-record leaves (records of unequal shapes, unbatched)


_DROPPED = object()
# Positions whose source indices are computed together (see source_indices): a 256 KB block.
# Cycle walking ends in passes over a few stragglers that cost ~40 us each whatever their size,
# so larger blocks amortise them: per 256 shuffled indices of 50,000 records, 15.9 us with
# 8,192-position blocks and 7.7 us with 32,768.
BLOCK = 32768


class Plan:
    """A pipeline compiled for iteration (built once per :class:`Dataset`, shared by workers)."""

    def __init__(self, source: Any, stages: tuple[Stage, ...], origin: str) -> None:
        self.source = source
        self.stream = bool(getattr(source, "is_stream", False))
        self.n = None if self.stream else len(source)
        self.index_ops: list[Stage] = []
        self.lengths: list[int | None] = [self.n]
        self.record_ops: list[Stage] = []
        self.batch_ops: list[Stage] = []
        self.batch: Stage | None = None
        epochs_before: int | None = 1
        epochs_after: int | None = 1
        repeat_after_batch = False
        for st in stages:
            if st.kind in ("shuffle", "shard"):
                self.index_ops.append(st)
                self.lengths.append(self._out_len(st, self.lengths[-1]))
            elif st.kind == "repeat":
                if st.after_batch:
                    repeat_after_batch = True
                    epochs_after = None if epochs_after is None else _mul(epochs_after, st.size)
                else:
                    epochs_before = None if epochs_before is None else _mul(epochs_before, st.size)
            elif st.kind == "batch":
                self.batch = st
            elif st.after_batch:
                self.batch_ops.append(st)
            else:
                self.record_ops.append(st)
        self.L: int | None = self.lengths[-1]
        self.epochs = (
            None if epochs_before is None or epochs_after is None else epochs_before * epochs_after
        )
        self.break_epochs = epochs_before if repeat_after_batch else None
        self.batch_size = self.batch.size if self.batch else None
        self.drop_remainder = bool(self.batch and self.batch.drop_remainder)
        self.aligned = self.batch is not None and not any(
            op.kind == "filter" for op in self.record_ops
        )
        self.fast_gather = (
            self.aligned and not self.record_ops and not self.stream and _has_gather(source)
        )
        # positions per "records" task: only the grouping of work, never the output
        self.chunk = max(self.batch_size or 0, 64)
        self.shuffled = any(op.kind == "shuffle" for op in self.index_ops)
        self._block: tuple[tuple[int, int], np.ndarray] | None = None
        parts = [f"{origin}({source.signature()})", *(st.describe() for st in stages)]
        self.description = " -> ".join(parts)
        ident = repr([source.signature(), *(_identity(st) for st in stages)])
        self.fingerprint = hashlib.sha256(ident.encode()).hexdigest()[:16]

    # ---- index arithmetic -------------------------------------------------------------------

    def _out_len(self, st: Stage, n: int | None) -> int | None:
        if st.kind == "shuffle" or n is None:
            return n
        return n // st.size + (1 if st.index < n % st.size else 0)

    def ended(self, epoch: int) -> bool:
        """Whether ``epoch`` is past the last epoch (or there are no records at all)."""
        return self.L == 0 or (self.epochs is not None and epoch >= self.epochs)

    def breaks_after(self, epoch: int) -> bool:
        """Whether a batch must end where ``epoch`` ends."""
        if self.epochs is not None and epoch + 1 >= self.epochs:
            return True
        return self.break_epochs is not None and (epoch + 1) % self.break_epochs == 0

    def source_indices(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """Source indices of offsets ``[start, stop)`` of ``epoch`` (an int64 array).

        With a shuffle, indices are computed a block of ``BLOCK`` positions at a time and the
        last block is kept: a Feistel evaluation costs ~100 numpy calls whatever its length,
        so one per block instead of one per batch (memory stays O(BLOCK)).
        """
        if not self.shuffled:
            return self._indices(epoch, start, stop)
        b0, b1 = start // BLOCK, (stop - 1) // BLOCK if stop > start else start // BLOCK
        parts = []
        for b in range(b0, b1 + 1):
            cached = self._block
            if cached is None or cached[0] != (epoch, b):
                block = self._indices(epoch, b * BLOCK, min((b + 1) * BLOCK, self.L))
                cached = self._block = ((epoch, b), block)
            lo, hi = max(start - b * BLOCK, 0), min(stop - b * BLOCK, BLOCK)
            parts.append(cached[1][lo:hi])
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def _indices(self, epoch: int, start: int, stop: int) -> np.ndarray:
        j = np.arange(start, stop, dtype=np.int64)
        for op, n_in in zip(reversed(self.index_ops), reversed(self.lengths[:-1]), strict=True):
            if op.kind == "shard":
                q, r = divmod(n_in, op.size)
                j += op.index * q + min(op.index, r)
            else:
                j = _shuffle.permute(j, n_in, _shuffle.round_keys(op.seed, epoch))
        return j

    def stream_keep(self, raw: int) -> int | None:
        """For streams: the sharded offset of raw record ``raw``, or None if it is not ours."""
        c = raw
        for op in self.index_ops:  # only shards: shuffle is refused on streams
            if c % op.size != op.index:
                return None
            c //= op.size
        return c

    def stream_raw(self, offset: int) -> int:
        """For streams: the raw index of the record at sharded ``offset``."""
        c = offset
        for op in reversed(self.index_ops):
            c = c * op.size + op.index
        return c

    def num_items(self) -> int | None:
        """How many items (batches, or records) a full iteration yields; None if unknown."""
        if self.stream or self.epochs is None or any(o.kind == "filter" for o in self.record_ops):
            return None
        total = self.epochs * self.L
        if self.batch is None:
            return total
        bs = self.batch_size
        period = (self.break_epochs or self.epochs) * self.L
        periods = total // period if period else 0

        def count(n: int) -> int:
            return n // bs if self.drop_remainder else -(-n // bs)

        return periods * count(period) + count(total - periods * period)

    # ---- the work on a task (in the calling process or a worker) ---------------------------

    def run(self, task: Task, alloc: _tree.Alloc) -> Any:
        """Do one task, in this process or a worker.

        A ``batch`` task gives ``(batch, structure, epoch, source index)`` (the structure of its
        records and where the first one came from, for checking batches against each other;
        None for a plain gather); a ``records`` task gives a :class:`Chunk`.
        """
        if task.kind == "records":
            return self._records(task.segments[0], alloc)
        if self.fast_gather:
            index = np.concatenate(
                [self.source_indices(s.epoch, s.start, s.stop) for s in task.segments]
            )
            leaves, spec = self.source.gather(index, alloc)
            return self.apply_batch_ops(_tree.unflatten(spec, leaves), task), None, 0, 0
        chunks = [self._records(s, alloc) for s in task.segments]
        chunk = chunks[0] if len(chunks) == 1 else self._join(chunks)
        batch = self.apply_batch_ops(_tree.unflatten(chunk.spec, chunk.leaves), task)
        return batch, chunk.spec, chunk.epoch, int(chunk.sources[0])

    def apply_batch_ops(self, batch: Any, task: Task | None = None) -> Any:
        for op in self.batch_ops:
            try:
                batch = op.fn(batch)
            except Exception as e:
                if task is not None:
                    s = task.segments[0]
                    e.add_note(
                        f"fnn_data: raised by {op.label} on the batch starting at epoch "
                        f"{s.epoch}, offset {s.start}."
                    )
                raise
        return batch

    def record_inputs(self, seg: Segment) -> tuple[np.ndarray, list[Any]]:
        """Source indices and raw records of a segment."""
        if seg.payload is not None:
            index, raw = seg.payload
            return np.asarray(index, dtype=np.int64), list(raw)
        index = self.source_indices(seg.epoch, seg.start, seg.stop)
        return index, self.source.records(index)

    def _keys(self, epoch: int, index: np.ndarray) -> dict[int, tuple[torch.Tensor, ...]]:
        keys = {}
        for op in self.record_ops:
            if op.kind == "random_map":
                k = _prng.random_map_key(op.seed, op.index, epoch)
                keys[op.index] = torch.from_numpy(_prng.fold_in_many(k, index)).unbind(0)
        return keys

    def _records(self, seg: Segment, alloc: _tree.Alloc) -> Chunk:
        index, raw = self.record_inputs(seg)
        keys = self._keys(seg.epoch, index) if index.size else {}
        spec0 = None
        rows: list[list[Any]] = []
        kept: list[int] = []
        ops = self.record_ops
        flatten = _tree.Flattener()
        for t, record in enumerate(raw):
            out = record
            try:
                for op in ops:
                    if op.kind == "map":
                        out = op.fn(out)
                    elif op.kind == "random_map":
                        out = op.fn(out, keys[op.index][t])
                    elif not op.fn(out):
                        out = _DROPPED
                        break
            except Exception as e:
                e.add_note(
                    f"fnn_data: raised by {op.label} on the record at source index "
                    f"{int(index[t])} (epoch {seg.epoch}, offset {seg.start + t})."
                )
                raise
            if out is _DROPPED:
                continue
            leaves, spec = flatten(out)
            if spec0 is None:
                spec0, first = spec, t
            elif spec != spec0:
                raise self.structure_error(seg.epoch, int(index[first]), spec0, int(index[t]), spec)
            rows.append(leaves)
            kept.append(t)
        offsets = seg.start + np.asarray(kept, dtype=np.int64)
        sources = index[kept] if kept else np.zeros(0, np.int64)
        if not rows:
            return Chunk(seg.epoch, offsets, sources, None, None, None)
        try:
            leaves = _tree.stack(rows, alloc)
        except ValueError as e:
            if self.batch is None:  # records of unequal shapes are fine unbatched
                return Chunk(seg.epoch, offsets, sources, spec0, None, rows)
            raise self.stack_error(spec0, rows, sources, seg.epoch, e) from None
        return Chunk(seg.epoch, offsets, sources, spec0, leaves, None)

    def _join(self, chunks: list[Chunk]) -> Chunk:
        live = [c for c in chunks if c.spec is not None]
        for c in live[1:]:
            if c.spec != live[0].spec:
                raise self.structure_error(
                    live[0].epoch, int(live[0].sources[0]), live[0].spec,
                    int(c.sources[0]), c.spec, epoch_b=c.epoch,
                )  # fmt: skip
        leaves = _tree.concat_leaves([c.leaves for c in live])
        return Chunk(
            live[0].epoch,
            np.concatenate([c.offsets for c in live]),
            np.concatenate([c.sources for c in live]),
            live[0].spec,
            leaves,
            None,
        )

    # ---- error messages ---------------------------------------------------------------------

    def structure_error(
        self, epoch: int, src_a: int, spec_a: Any, src_b: int, spec_b: Any, epoch_b: int = -1
    ) -> ValueError:
        """Name the first record-level stage whose output structure differs between records."""
        epoch_b = epoch if epoch_b < 0 else epoch_b
        culprit = "the source"
        if not self.stream:
            ra, rb = self.source.record(src_a), self.source.record(src_b)
            ka = self._keys(epoch, np.array([src_a]))
            kb = self._keys(epoch_b, np.array([src_b]))
            if _tree.flatten(ra)[1] == _tree.flatten(rb)[1]:
                for op in self.record_ops:
                    if op.kind == "filter":
                        continue
                    ra = op.fn(ra) if op.kind == "map" else op.fn(ra, ka[op.index][0])
                    rb = op.fn(rb) if op.kind == "map" else op.fn(rb, kb[op.index][0])
                    if _tree.flatten(ra)[1] != _tree.flatten(rb)[1]:
                        culprit = op.label
                        break
        return ValueError(
            f"fnn_data: {culprit} gave records of different structures: "
            f"{_tree.describe(spec_a)} for source index {src_a} (epoch {epoch}) but "
            f"{_tree.describe(spec_b)} for source index {src_b} (epoch {epoch_b}). Every record "
            "must have the same structure (the same keys and nesting) to be batched; return "
            "the same keys for every record (use a placeholder value where one is missing)."
        )

    def stack_error(
        self, spec: Any, rows: list[list[Any]], sources: np.ndarray, epoch: int, err: Exception
    ) -> ValueError:
        paths = [".".join(str(p) for p in path) or "<record>" for path in spec.paths()]
        for k, path in enumerate(paths):
            shapes = [tuple(np.shape(r[k])) for r in rows]
            bad = next((i for i, s in enumerate(shapes) if s != shapes[0]), None)
            if bad is not None:
                return ValueError(
                    f"fnn_data: {self.batch.describe()} cannot stack field {path!r}: the record "
                    f"at source index {int(sources[0])} has shape {shapes[0]} but the record at "
                    f"source index {int(sources[bad])} (epoch {epoch}) has shape {shapes[bad]}. "
                    "Records must have equal shapes to be batched: crop, pad or resize them in a "
                    "map before .batch()."
                )
        return ValueError(f"fnn_data: {self.batch.describe()} could not stack records: {err}")


def _has_gather(source: Any) -> bool:
    return bool(getattr(source, "supports_gather", False))


def _identity(st: Stage) -> tuple[Any, ...]:
    """What a stage contributes to the fingerprint: its kind, numbers and function's name."""
    fn = _fn_name(st.fn) if st.fn is not None else None
    return (st.kind, fn, st.seed, st.size, st.index, st.drop_remainder, st.after_batch)


def _mul(a: int, b: int | None) -> int | None:
    return None if b is None else a * b
