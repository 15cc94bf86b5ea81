"""The errors of :mod:`fnn.checkpoint`: one base class and three precise kinds."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "IncompleteCheckpointError",
    "StructureMismatchError",
]


class CheckpointError(ValueError):
    """Base class of every error about the contents of a checkpoint."""

    __module__ = "fnn.checkpoint"  # shown in tracebacks as fnn.checkpoint.<name>


class IncompleteCheckpointError(CheckpointError):
    """The checkpoint has no manifest: its save never finished (or the manifest was deleted).

    A save writes ``manifest.json`` last, so a directory without one may be missing any file.
    """

    __module__ = "fnn.checkpoint"


class CorruptCheckpointError(CheckpointError):
    """A file of the checkpoint is damaged: a checksum or size differs from the manifest, or a
    header cannot be parsed. The message names the file."""

    __module__ = "fnn.checkpoint"


class StructureMismatchError(CheckpointError):
    """``restore(path, like=tree)``: the stored tree does not match ``like``. The message lists
    every missing and unexpected path and every shape, dtype and type difference at once."""

    __module__ = "fnn.checkpoint"
