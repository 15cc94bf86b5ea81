"""Workers and prefetching: the same output for any number of workers and any prefetch depth,
worker exceptions with their traceback, clean shutdown, shared memory without copies."""

import gc
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

import fnn_data


def _plain(tree):
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_plain(v) for v in tree]
    return tree.tolist() if isinstance(tree, torch.Tensor) else tree


def _no_children():
    """No worker process is left (active_children also reaps finished ones)."""
    deadline = time.monotonic() + 5
    while mp.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not mp.active_children()


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "fnn_data-prefetch"]


class _Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 30

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i)] * 3), "y": i * i}


def _augment(record, key):
    return {**record, "x": record["x"] * 2 + float(int(key[0]) % 7)}


PIPELINES = {
    "map, random_map, batch, repeat": lambda: (
        fnn_data.from_arrays(x=np.arange(60, dtype=np.float32).reshape(30, 2), y=np.arange(30))
        .shuffle(seed=1)
        .random_map(_augment)
        .map(lambda r: {**r, "s": r["x"].sum()})
        .batch(4)
        .repeat(2)
    ),
    "filter, batch, drop_remainder": lambda: (
        fnn_data.from_arrays(x=np.arange(50), y=np.arange(50) % 7)
        .shuffle(seed=2)
        .filter(lambda r: r["y"] != 3)
        .batch(5, drop_remainder=True)
    ),
    "unbatched records with a filter": lambda: (
        fnn_data.from_arrays(np.arange(150)).filter(lambda v: v % 4 != 0).map(lambda v: v * v)
    ),
    "stream": lambda: (
        fnn_data.from_iterable(lambda: ({"v": np.float32(i)} for i in range(23)))
        .map(lambda r: {"v": r["v"] * 3})
        .batch(4)
    ),
    "torch dataset, batch-level map": lambda: (
        fnn_data.from_torch(_Squares())
        .shuffle(seed=3)
        .batch(7)
        .map(lambda b: {**b, "total": b["x"].sum()})
    ),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_the_output_is_the_same_for_any_number_of_workers_and_prefetch_depth(name):
    ds = PIPELINES[name]()
    reference = [_plain(b) for b in ds]
    assert reference
    for workers, prefetch in [(1, 0), (2, 0), (0, 1), (2, 3)]:
        got = [_plain(b) for b in ds.workers(workers).prefetch(prefetch)]
        assert got == reference, (workers, prefetch)
    assert _no_children() and not _prefetch_threads()


def test_worker_results_arrive_through_shared_memory_slots():
    x = np.random.default_rng(0).random((64, 3, 8, 8), dtype=np.float32)
    ds = fnn_data.from_arrays(x=x).map(lambda r: {"x": r["x"] + 1}).batch(8).repeat().workers(2)
    it = iter(ds)
    batches = [next(it) for _ in range(6)]
    slots = it._source.pool.slots.slots
    pointers = {s.untyped_storage().data_ptr() for s in slots.values()}
    assert slots and batches[-1]["x"].untyped_storage().data_ptr() in pointers
    np.testing.assert_array_equal(batches[-1]["x"].numpy(), x[40:48] + 1)
    it.close()


def test_keeping_the_labels_of_worker_batches_does_not_keep_their_images():
    x = np.zeros((400, 3, 16, 16), np.float32)
    ds = fnn_data.from_arrays(x=x, y=np.arange(400)).map(lambda r: r).batch(10).workers(2)
    it = iter(ds)
    labels, image_buffers = [], set()
    for _ in range(30):
        batch = next(it)
        labels.append(batch["y"])  # an evaluation loop collecting labels
        image_buffers.add(batch["x"].untyped_storage().data_ptr())
        del batch
    it.close()
    assert torch.cat(labels).tolist() == list(range(300))
    assert len(image_buffers) <= 8  # the image slots were recycled while the labels were kept


def _explode(record):
    if record["y"] == 13:
        raise KeyError("record thirteen")
    return record


def test_a_worker_exception_reaches_the_caller_with_the_worker_traceback():
    ds = fnn_data.from_arrays(x=np.zeros(20), y=np.arange(20)).map(_explode).batch(4).workers(2)
    with pytest.raises(KeyError, match="record thirteen") as excinfo:
        list(ds)
    notes = "\n".join(excinfo.value.__notes__)
    assert "raised by map #1 (_explode) on the record at source index 13" in notes
    assert "raised in worker" in notes and "Traceback (most recent call last)" in notes
    assert "in _explode" in notes  # the frame of the user's function, from the worker
    assert _no_children()


def test_an_exception_that_cannot_be_pickled_still_arrives_as_a_worker_error():
    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no pickling")

    def bad(v):
        raise Unpicklable("local class")

    with pytest.raises(fnn_data.WorkerError, match=r"Unpicklable: local class[\s\S]*Traceback"):
        list(fnn_data.from_arrays(np.arange(4)).map(bad).workers(1))
    assert _no_children()


def test_workers_stop_on_break_on_garbage_collection_and_at_the_end():
    ds = fnn_data.from_arrays(np.arange(1000)).map(lambda v: v + 1).batch(10).workers(2)
    for _ in ds.prefetch(2):
        break  # the loop drops the iterator: reference counting collects it at once
    assert _no_children() and not _prefetch_threads()
    it = iter(ds.prefetch(2))
    next(it)
    assert len(mp.active_children()) == 2 and _prefetch_threads()
    del it
    gc.collect()
    assert _no_children() and not _prefetch_threads()
    with iter(ds) as it:
        next(it)
    assert _no_children()
    assert len(list(ds)) == 100 and _no_children()


def _slow(v):
    time.sleep(0.02)
    return v


def test_keyboard_interrupt_while_waiting_stops_the_workers_at_once(monkeypatch):
    from fnn_data._workers import WorkerPool

    ds = fnn_data.from_arrays(np.arange(400)).map(_slow).batch(4).workers(2)
    it = iter(ds)
    next(it)
    receive = WorkerPool._receive

    def interrupted(self, *args):
        raise KeyboardInterrupt  # what Ctrl-C does to a caller blocked on a worker

    monkeypatch.setattr(WorkerPool, "_receive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        next(it)
    monkeypatch.setattr(WorkerPool, "_receive", receive)
    assert _no_children()  # released by the iterator itself, not by garbage collection
    assert list(it) == []  # and it stays closed


def test_a_real_ctrl_c_leaves_no_worker_behind_and_workers_ignore_sigint():
    # A process started in the background by a non-interactive shell begins with SIGINT
    # ignored, and Python then never turns Ctrl-C into KeyboardInterrupt: install the handler
    # an interactive Python has, so that the test means the same however pytest was started.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _real_ctrl_c()
    finally:
        signal.signal(signal.SIGINT, previous)


def _real_ctrl_c():
    ds = fnn_data.from_arrays(np.arange(400)).map(_slow).batch(4).workers(2)
    it = iter(ds)
    first = next(it)
    for p in it._source.pool.procs:  # Ctrl-C in a terminal reaches the workers too
        os.kill(p.pid, signal.SIGINT)
    assert torch.equal(next(it), first + 4)  # they ignored it and kept working
    timer = threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in it:
            pass
    timer.join()
    del it
    gc.collect()
    assert _no_children()


def test_a_worker_that_dies_is_reported():
    ds = fnn_data.from_arrays(np.arange(400)).map(_slow).batch(4).workers(2)
    it = iter(ds)
    next(it)
    os.kill(it._source.pool.procs[1].pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"worker 1 \(pid \d+\) exited unexpectedly"):
        for _ in range(50):
            next(it)
    assert _no_children()


def _private_dirty_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])
    raise AssertionError("no Private_Dirty line")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="Linux /proc only")
def test_workers_read_the_source_in_place_without_copying_it():
    x = np.ones((6144, 1024), np.float64)  # 48 MB, shared with the forked workers
    ds = fnn_data.from_arrays(x).map(lambda row: row.sum()).batch(64).workers(2)
    it = iter(ds)
    before = [_private_dirty_kb(p.pid) for p in it._source.pool.procs]
    for _ in range(90):  # 90 of the 96 batches: every worker has read ~half of the rows
        assert float(next(it)[0]) == 1024.0
    after = [_private_dirty_kb(p.pid) for p in it._source.pool.procs]
    it.close()
    grown_mb = max(a - b for a, b in zip(after, before, strict=True)) / 1024
    assert grown_mb < 12, grown_mb  # copy-on-access would add ~24 MB per worker
