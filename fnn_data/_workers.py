"""Worker processes: run tasks, return results through shared memory, in order.

Start method: ``fork`` (where the platform has it, i.e. Linux and macOS). A forked worker
inherits the pipeline as it is in memory: the source arrays (read in place, never written, so
their pages stay shared: no copy-on-access growth) and the stages' functions, lambdas included,
without pickling anything. Workers are forked when the iterator starts, in the caller's thread,
before any prefetch thread exists. Without ``fork`` (Windows) ``spawn`` is used, which needs a
picklable pipeline.

Results: a worker writes each batch straight into reusable shared-memory slots and sends back
only offsets and shapes; the caller's tensors are views of the slots (see ``_shm``). Anything that
does not fit goes through torch's multiprocessing reductions (a file descriptor per tensor, not
the bytes). No record is pickled. Task ``t`` goes to worker ``t mod n`` and results are read
back in task order, so the output does not depend on which worker is faster.

Failures: an exception in a worker is sent back and raised in the caller with the worker's
traceback as a note; a worker that dies (killed, segfault) raises a RuntimeError saying which.
Workers ignore SIGINT (Ctrl-C reaches the whole process group; the caller handles it and stops
them), and each exits by itself when its parent process is gone.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import pickle
import queue
import signal
import time
import traceback
from collections.abc import Iterator
from typing import Any

import torch
import torch.multiprocessing  # registers the shared-memory tensor reductions

from fnn_data import _shm, _tree
from fnn_data._plan import Plan, Task

TASKS_PER_WORKER = 2  # tasks in flight per worker: one running, one queued


class WorkerError(RuntimeError):
    """An exception from a worker that could not be rebuilt in the caller (message inside)."""


def _context() -> Any:
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _worker_main(plan: Plan, task_q: Any, conn: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    slots: dict[int, torch.Tensor] = {}
    while True:
        try:
            msg = task_q.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if msg is None:
            return
        tid, task, (sids, sent, forget) = msg
        for f in forget:
            slots.pop(f, None)
        for sid, tensor in zip(sids, sent, strict=True):
            if tensor is not None:
                slots[sid] = tensor
        mine = [None if sid is None else slots[sid] for sid in sids]
        alloc = _shm.SlotAlloc(mine, _tree.shared_empty)
        try:
            result, used = _shm.encode(plan.run(task, alloc), mine)
            reply = (tid, True, result, alloc.requested, used)
            del result
        except BaseException as e:
            reply = (tid, False, _pack(e), alloc.requested, [])
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return
        del reply  # drop our references to the slot's views before the next task


def _pack(e: BaseException) -> tuple[bytes | None, str, str]:
    frames = "".join(traceback.format_tb(e.__traceback__))
    text = f"Traceback (most recent call last):\n{frames}{type(e).__name__}: {e}"
    try:
        blob = pickle.dumps(e)
        pickle.loads(blob)
    except Exception:
        blob = None
    return blob, f"{type(e).__name__}: {e}", text


class WorkerPool:
    """``n`` forked processes running a plan's tasks (internal)."""

    def __init__(self, plan: Plan, n: int) -> None:
        ctx = _context()
        self.plan = plan
        self.procs: list[Any] = []
        self.task_qs: list[Any] = []
        self.conns: list[Any] = []
        self.closed = False
        self.slots = _shm.SlotPool(n, max_slots=4 * (2 * n * TASKS_PER_WORKER + 8))
        for w in range(n):
            task_q = ctx.Queue()
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_worker_main,
                args=(plan, task_q, send, os.getpid()),
                name=f"fnn_data-worker-{w}",
                daemon=True,
            )
            p.start()
            send.close()
            self.procs.append(p)
            self.task_qs.append(task_q)
            self.conns.append(recv)

    def run(self, tasks: Iterator[Task]) -> Iterator[tuple[Task, Any]]:
        """Results of ``tasks`` in order; tasks without records are done here."""
        n = len(self.procs)
        inflight: collections.deque = collections.deque()
        tid = 0
        exhausted = False

        def fill() -> None:
            nonlocal tid, exhausted
            while not exhausted and len(inflight) < n * TASKS_PER_WORKER:
                task = next(tasks, None)
                if task is None:
                    exhausted = True
                    return
                if all(s.stop == s.start for s in task.segments):
                    inflight.append((task, None, None))
                    continue
                w = tid % n
                slots = self.slots.acquire(w)
                self.task_qs[w].put((tid, task, slots))
                inflight.append((task, w, (tid, slots[0])))
                tid += 1

        fill()
        while inflight:
            task, w, ids = inflight.popleft()
            fill()  # keep the workers busy while this result is received and consumed
            if w is None:
                yield task, self.plan.run(task, _tree.private_empty)
            else:
                yield task, self._receive(w, *ids, task)

    def _receive(self, w: int, tid: int, sids: list[int | None], task: Task) -> Any:
        conn, proc = self.conns[w], self.procs[w]
        try:
            while not conn.poll(0.1):
                if not proc.is_alive():
                    raise EOFError
            got, ok, payload, requested, used = conn.recv()
        except (EOFError, OSError):
            proc.join(1.0)
            s = task.segments[0]
            raise RuntimeError(
                f"fnn_data: worker {w} (pid {proc.pid}) exited unexpectedly (exit code "
                f"{proc.exitcode}) while processing epoch {s.epoch}, offsets "
                f"[{s.start}, {task.segments[-1].stop})."
            ) from None
        if got != tid:
            raise RuntimeError(f"fnn_data: worker {w} answered task {got}, expected {tid}.")
        self.slots.grow(requested)
        if ok:
            return self.slots.finish(sids, payload, used)
        self.slots.release(sids)
        blob, summary, text = payload
        note = f"fnn_data: raised in worker {w} (pid {proc.pid}); the worker's traceback:\n{text}"
        exc = None
        if blob is not None:
            try:
                exc = pickle.loads(blob)
            except Exception:
                exc = None
        if not isinstance(exc, BaseException):
            raise WorkerError(f"{summary}\n\n{note}")
        exc.add_note(note)
        raise exc

    def close(self) -> None:
        """Stop every worker: ask politely, drain their pipes, then terminate stragglers."""
        if self.closed:
            return
        self.closed = True
        for q in self.task_qs:
            try:
                q.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 2.0
        for conn, p in zip(self.conns, self.procs, strict=True):
            while p.is_alive() and time.monotonic() < deadline:
                try:
                    while conn.poll(0):
                        conn.recv_bytes()  # unread results: discard without rebuilding tensors
                except (OSError, EOFError):
                    pass
                p.join(0.02)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(1.0)
            if p.is_alive():
                p.kill()
                p.join()
        for q in self.task_qs:
            q.cancel_join_thread()
            q.close()
        for conn in self.conns:
            conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
