"""A background thread that keeps items ready, and the final move to a device."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import optree
import torch

from fnn_data._tree import NAMESPACE


def mover(device: torch.device | None, pin_memory: bool) -> Callable[[Any], Any] | None:
    """A function moving an item's tensors to ``device`` (None when there is no device).

    Pinning (and ``non_blocking`` copies) happens only for a CUDA device with CUDA available;
    on the CPU, ``tensor.to("cpu")`` returns the tensor itself, so the move is free.
    """
    if device is None:
        return None
    pin = pin_memory and device.type == "cuda" and torch.cuda.is_available()

    def move(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        if pin and x.device.type == "cpu":
            x = x.pin_memory()
        return x.to(device, non_blocking=pin)

    return lambda item: optree.tree_map(move, item, none_is_leaf=False, namespace=NAMESPACE)


def _fill(
    engine: Any, q: queue.Queue, stop: threading.Event, move: Callable[[Any], Any] | None
) -> None:
    def put(msg: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item, position in engine:
            if move is not None:
                item = move(item)
            if not put(("item", (item, position))):
                return
        put(("end", None))
    except BaseException as e:
        if not stop.is_set():
            put(("error", e))


class Prefetcher:
    """Runs an engine in a daemon thread, ``depth`` items ahead of the caller (internal).

    The thread holds the engine, the queue and a stop flag, never the iterator, so dropping
    the iterator still garbage-collects it (and stops the thread and the workers).
    """

    def __init__(self, engine: Any, depth: int, move: Callable[[Any], Any] | None) -> None:
        self._engine = engine
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_fill,
            args=(engine, self._queue, self._stop, move),
            name="fnn_data-prefetch",
            daemon=True,
        )
        self._thread.start()

    def __next__(self) -> tuple[Any, Any]:
        while True:
            try:
                kind, payload = self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError(
                        "fnn_data: the prefetch thread stopped unexpectedly."
                    ) from None
                continue
            if kind == "item":
                return payload
            if kind == "end":
                raise StopIteration
            raise payload

    def close(self) -> None:
        self._stop.set()
        self._drain()
        self._thread.join(timeout=1.0)
        if self._thread.is_alive():  # blocked on a worker: stopping the workers unblocks it
            self._engine.stop_workers()
            self._drain()
            self._thread.join(timeout=5.0)
        self._engine.close()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
