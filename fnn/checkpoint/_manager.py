"""``Manager``: numbered checkpoints in one directory, retention, optional asynchronous saves."""

from __future__ import annotations

import operator
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from fnn.checkpoint._errors import (
    CheckpointError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
)
from fnn.checkpoint._save import (
    _SIBLING,
    PathLike,
    _check_metadata,
    _interrupted,
    load_manifest,
    read_metadata,
    recover,
    remove,
    restore,
    write,
)
from fnn.checkpoint._tree import Snapshot, encode

__all__ = ["Manager"]

_STEP = re.compile(r"^step_(\d{8,})$")


def _positive(name: str, value: Any, allow_none: bool) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        none = " or None" if allow_none else ""
        raise ValueError(
            f"fnn.checkpoint.Manager: {name} must be an int >= 1{none}, got {value!r}."
        )
    return value


class Manager:
    """Numbered checkpoints ``<directory>/step_00000042`` with retention and resumption.

    Each checkpoint is written by :func:`fnn.checkpoint.save` (atomic, checksummed). After each
    save the oldest checkpoints beyond ``max_to_keep`` are deleted, except those whose step is a
    multiple of ``keep_every_n_steps``. Listing skips incomplete and corrupt checkpoints (a
    missing manifest, a file of the wrong size) and warns naming them, so after a crash
    :meth:`latest_step` is the newest checkpoint that can be restored.

    With ``async_save=True``, :meth:`save` copies every tensor to host memory before it returns
    (the caller may then change or donate them) and writes in a background thread; a second
    ``save`` first waits for the first. An error in the background is raised by the next
    :meth:`save`, :meth:`wait`, :meth:`restore` or :meth:`close`. Leaving a ``with`` block
    waits for the last save. One manager (one process) should write a directory at a time.

    Args:
        directory: where the checkpoints live (created if missing).
        max_to_keep: how many of the newest checkpoints to keep; ``None`` keeps all.
        keep_every_n_steps: also keep forever every checkpoint whose step is a multiple of it.
        save_interval_steps: :meth:`save` skips steps that are not a multiple of it (unless
            ``force=True``).
        async_save: write in a background thread.

    Example:
        >>> import tempfile, torch, fnn
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with fnn.checkpoint.Manager(d, max_to_keep=2, save_interval_steps=10) as mgr:
        ...         for step in range(1, 41):
        ...             state = {"w": torch.full((2,), float(step)), "step": step}
        ...             _ = mgr.save(step, state)  # False: skipped by the interval
        ...         print(mgr.all_steps(), mgr.latest_step())
        ...         restored = mgr.restore(like=state)
        [30, 40] 40
        >>> restored
        {'w': tensor([40., 40.]), 'step': 40}
    """

    def __init__(
        self,
        directory: PathLike,
        *,
        max_to_keep: int | None = 3,
        keep_every_n_steps: int | None = None,
        save_interval_steps: int = 1,
        async_save: bool = False,
    ) -> None:
        self._directory = Path(directory)
        self.max_to_keep = _positive("max_to_keep", max_to_keep, True)
        self.keep_every_n_steps = _positive("keep_every_n_steps", keep_every_n_steps, True)
        self.save_interval_steps = _positive("save_interval_steps", save_interval_steps, False)
        self.async_save = bool(async_save)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._thread: threading.Thread | None = None
        self._in_flight: int | None = None
        self._error: tuple[int, BaseException] | None = None
        self._closed = False

    @property
    def directory(self) -> Path:
        """The directory holding the checkpoints."""
        return self._directory

    def __repr__(self) -> str:
        return (
            f"Manager({str(self._directory)!r}, max_to_keep={self.max_to_keep}, "
            f"keep_every_n_steps={self.keep_every_n_steps}, "
            f"save_interval_steps={self.save_interval_steps}, async_save={self.async_save})"
        )

    def step_path(self, step: int) -> Path:
        """The directory of checkpoint ``step``: ``<directory>/step_00000042``."""
        return self._directory / f"step_{self._step(step):08d}"

    # -- listing --------------------------------------------------------------------------------
    def _scan(self) -> tuple[set[int], set[int]]:
        """Steps on disk: those with a directory or a tmp/old leftover (candidates to list),
        and those with any leftover of an interrupted save or deletion (to clean up)."""
        candidates, with_leftovers = set(), set()
        for name in os.listdir(self._directory):
            m = _SIBLING.match(name)
            base = m["name"] if m else name
            s = _STEP.match(base)
            if not (s and base == f"step_{int(s[1]):08d}"):
                continue
            if m is None or m["what"] != "del":
                candidates.add(int(s[1]))
            if m is not None:
                with_leftovers.add(int(s[1]))
        return candidates, with_leftovers

    def _candidates(self) -> set[int]:
        return self._scan()[0]

    def _complete(self, step: int, broken: list[str]) -> bool:
        path = self.step_path(step)
        if os.path.lexists(path):
            try:
                load_manifest(path)
            except (IncompleteCheckpointError, CorruptCheckpointError) as e:
                broken.append(f"{path.name} ({type(e).__name__})")
                return False
            except (FileNotFoundError, NotADirectoryError):  # deleted meanwhile
                return False
            return True
        # an interrupted save (not our own save in progress) may have left it complete beside
        return step != self._in_flight and _interrupted(path) is not None

    def _warn_broken(self, broken: list[str]) -> None:
        if broken:
            warnings.warn(
                f"fnn.checkpoint.Manager: skipping incomplete or corrupt checkpoints in "
                f"{self._directory}: {', '.join(broken)}.",
                stacklevel=3,
            )

    def all_steps(self) -> list[int]:
        """The steps of every complete checkpoint, ascending (warns about broken ones)."""
        broken: list[str] = []
        steps = [s for s in sorted(self._candidates()) if self._complete(s, broken)]
        self._warn_broken(broken)
        return steps

    def latest_step(self) -> int | None:
        """The newest step with a complete checkpoint, or ``None``; warns naming any newer ones
        it skipped as incomplete or corrupt (the check reads manifests and file sizes; a
        changed byte is found by :meth:`restore`, which verifies checksums)."""
        broken: list[str] = []
        for step in sorted(self._candidates(), reverse=True):
            if self._complete(step, broken):
                self._warn_broken(broken)
                return step
        self._warn_broken(broken)
        return None

    # -- saving ---------------------------------------------------------------------------------
    def _step(self, step: Any) -> int:
        try:
            value = operator.index(step)
        except TypeError:
            raise TypeError(
                f"fnn.checkpoint.Manager: step must be an int (or an integer 0-d tensor), got "
                f"{type(step).__name__}."
            ) from None
        if value < 0:
            raise ValueError(f"fnn.checkpoint.Manager: step must be >= 0, got {value}.")
        return value

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("fnn.checkpoint.Manager: this manager is closed.")

    def save(
        self, step: int, tree: Any, *, metadata: dict | None = None, force: bool = False
    ) -> bool:
        """Save ``tree`` as checkpoint ``step`` (see :func:`fnn.checkpoint.save`).

        Skipped (returns ``False``) when ``step`` is not a multiple of ``save_interval_steps``
        or not newer than :meth:`latest_step`, unless ``force=True`` (which also overwrites an
        existing checkpoint of that step, atomically). Then the retention policy deletes old
        checkpoints.

        Returns:
            Whether a checkpoint was written (or, with ``async_save``, started).

        Raises:
            Any error of the previous asynchronous save.
        """
        self._check_open()
        step = self._step(step)
        self.wait()
        if not force:
            if step % self.save_interval_steps:
                return False
            latest = self.latest_step()
            if latest is not None and step <= latest:
                return False
        metadata = _check_metadata(metadata)
        snapshot = encode(tree, copy=self.async_save)
        if not self.async_save:
            self._write_step(step, snapshot, metadata)
            return True
        self._in_flight = step
        self._thread = threading.Thread(
            target=self._run, args=(step, snapshot, metadata), name=f"fnn.checkpoint step {step}"
        )
        self._thread.start()
        return True

    def _run(self, step: int, snapshot: Snapshot, metadata: dict) -> None:
        try:
            self._write_step(step, snapshot, metadata)
        except BaseException as e:  # surfaced by the next save / wait / close
            self._error = (step, e)

    def _write_step(self, step: int, snapshot: Snapshot, metadata: dict) -> None:
        write(self.step_path(step), snapshot, metadata)
        for s in self._scan()[1]:  # finish or clean up what interrupted saves left
            recover(self.step_path(s))
        if self.max_to_keep is None:
            return
        # Keep the newest max_to_keep complete checkpoints (broken ones among them stay, and
        # are named by the listing warnings); delete every older one, broken or not, except
        # the multiples of keep_every_n_steps. Only the kept window's manifests are read.
        kept = 0
        for s in sorted(self._candidates(), reverse=True):
            if kept < self.max_to_keep:
                kept += self._complete(s, [])
            elif self.keep_every_n_steps is None or s % self.keep_every_n_steps:
                remove(self.step_path(s))

    def wait(self) -> None:
        """Wait for the asynchronous save in progress, if any; raise its error, if any."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
            self._in_flight = None
        if self._error is not None:
            step, error = self._error
            self._error = None
            if hasattr(error, "add_note"):
                error.add_note(
                    f"(raised by the asynchronous save of step {step} to "
                    f"{self.step_path(step)}, which did not complete)"
                )
            raise error

    def close(self) -> None:
        """Wait for the last save (raising its error) and close the manager."""
        if not self._closed:
            self._closed = True
            self.wait()

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- restoring ------------------------------------------------------------------------------
    def restore(
        self,
        step: int | None = None,
        like: Any = None,
        *,
        map_location: str | torch.device | None = None,
        mmap: bool = False,
        verify: bool = True,
    ) -> Any:
        """Restore checkpoint ``step``, or the newest one that restores (see
        :func:`fnn.checkpoint.restore` for ``like``, ``map_location``, ``mmap``, ``verify``).

        With ``step=None`` a checkpoint found corrupt while restoring (a checksum mismatch) is
        skipped with a warning naming it, and the next newest is tried. Waits for an
        asynchronous save in progress first.

        Raises:
            FileNotFoundError: there is no complete checkpoint (or none for ``step``).
        """
        self.wait()
        if step is not None:
            return restore(
                self.step_path(step), like, map_location=map_location, mmap=mmap, verify=verify
            )
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(
                f"fnn.checkpoint.Manager: no complete checkpoint in {self._directory}."
            )
        errors = []
        for s in reversed(steps):
            try:
                return restore(
                    self.step_path(s), like, map_location=map_location, mmap=mmap, verify=verify
                )
            except (IncompleteCheckpointError, CorruptCheckpointError) as e:
                warnings.warn(
                    f"fnn.checkpoint.Manager: skipping step {s}, which cannot be restored: {e}",
                    stacklevel=2,
                )
                errors.append(f"step {s}: {e}")
        raise CheckpointError(
            f"fnn.checkpoint.Manager: no checkpoint in {self._directory} restores:\n"
            + "\n".join(errors)
        )

    def read_metadata(self, step: int | None = None) -> dict:
        """The metadata saved with checkpoint ``step`` (default: the latest)."""
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"fnn.checkpoint.Manager: no complete checkpoint in {self._directory}."
                )
        return read_metadata(self.step_path(step))
