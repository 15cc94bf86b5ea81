"""``save`` / ``restore`` of one checkpoint directory, atomically, with checksums.

A checkpoint is a directory holding two files:

- ``tensors.safetensors``: every tensor and numpy array of the tree (see ``_format``);
- ``manifest.json``, written last: ``{"format": "fnn.checkpoint", "version": 1, "files":
  {name: {"sha256", "size"}}, "structure": <the tree, see _tree>, "metadata": <user JSON>,
  "checksum": <sha256 of the canonical JSON of the other fields>}``.

A directory without a valid manifest is incomplete and never restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fnn.checkpoint._errors import CorruptCheckpointError, IncompleteCheckpointError
from fnn.checkpoint._format import (
    DTYPES,
    NUMPY_DTYPES,
    check_little_endian,
    parse_header,
    write_file,
)
from fnn.checkpoint._tree import Snapshot, build, build_like, encode, iter_leaves

__all__ = ["read_metadata", "restore", "save"]

FORMAT = "fnn.checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
_OWN_FILES = {MANIFEST, TENSORS}
_SIBLING = re.compile(r"^(?P<name>.+)\.(?P<what>tmp|old|del)-[0-9a-f]{8}$")

PathLike = str | os.PathLike

# A test hook: called with the name of each point of the save sequence below (the crash test
# sets it, in a subprocess, to kill the process there). Always None otherwise.
_crash_hook: Callable[[str], None] | None = None


def _crash_point(name: str) -> None:
    if _crash_hook is not None:
        _crash_hook(name)


# --------------------------------------------------------------------------------------------
# Files, fsync and the manifest
# --------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _check_metadata(metadata: Any) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise TypeError(
            "fnn.checkpoint.save: metadata must be a dict with str keys (JSON), got "
            f"{type(metadata).__name__}."
        )
    try:
        json.loads(_canonical(metadata))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"fnn.checkpoint.save: metadata must be plain JSON (no NaN or infinity, no objects); "
            f"{e}. Put tensors and exotic values in the tree instead."
        ) from None
    return metadata


def _write_checkpoint(directory: Path, snapshot: Snapshot, metadata: dict) -> None:
    """Write both files into the (new, empty) ``directory``, fsyncing each; manifest last."""
    with open(directory / TENSORS, "wb") as f:
        digest, size = write_file(f, snapshot.entries, {"format": "pt"})
        f.flush()
        os.fsync(f.fileno())
    _crash_point("tensors_written")
    body = {
        "format": FORMAT,
        "version": VERSION,
        "files": {TENSORS: {"sha256": digest, "size": size}},
        "structure": snapshot.structure,
        "metadata": metadata,
    }
    manifest = dict(body, checksum=hashlib.sha256(_canonical(body)).hexdigest())
    with open(directory / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, allow_nan=False, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(directory)


def load_manifest(directory: Path) -> dict:
    """Read and check the manifest of ``directory`` and the sizes of its files (cheap: no hash).

    Raises:
        IncompleteCheckpointError: no manifest.
        CorruptCheckpointError: the manifest does not parse or its checksum differs, or a file is
            missing or has another size than recorded (e.g. truncated).
    """
    file = directory / MANIFEST
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        if not directory.is_dir():
            raise
        raise IncompleteCheckpointError(
            f"fnn.checkpoint: {directory} has no {MANIFEST}: it is not a checkpoint, or its save "
            "did not finish (or the manifest was deleted) so its files cannot be trusted; it is "
            "refused. (A Manager's directory holds checkpoints in step_* subdirectories.)"
        ) from None
    try:
        manifest = json.loads(text.decode("utf-8"))
        body = {k: v for k, v in manifest.items() if k != "checksum"}
        good = manifest.get("checksum") == hashlib.sha256(_canonical(body)).hexdigest()
    except (UnicodeDecodeError, ValueError, AttributeError, TypeError):
        good = False
    if not good:
        raise CorruptCheckpointError(
            f"fnn.checkpoint: {file} is corrupt: it does not parse as JSON or its checksum does "
            "not match its contents."
        )
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CorruptCheckpointError(
            f"fnn.checkpoint: {file} has format {manifest.get('format')!r} version "
            f"{manifest.get('version')!r}; this fnn reads {FORMAT!r} version {VERSION}."
        )
    for name, info in manifest["files"].items():
        try:
            size = (directory / name).stat().st_size
        except FileNotFoundError:
            raise CorruptCheckpointError(
                f"fnn.checkpoint: {directory / name} is missing; the manifest lists it."
            ) from None
        if size != info["size"]:
            raise CorruptCheckpointError(
                f"fnn.checkpoint: {directory / name} has {size} bytes but the manifest records "
                f"{info['size']} (truncated or overwritten); it is refused."
            )
    return manifest


def _is_complete(directory: Path) -> bool:
    try:
        load_manifest(directory)
    except (OSError, IncompleteCheckpointError, CorruptCheckpointError):
        return False
    return True


def _siblings(path: Path, *kinds: str) -> list[Path]:
    """The leftover siblings ``<name>.tmp-*`` / ``.old-*`` / ``.del-*`` of ``path``, by kind."""
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        m = _SIBLING.match(n)
        if m and m["name"] == path.name and m["what"] in kinds:
            out.append(path.parent / n)
    return sorted(out)


def _interrupted(path: Path) -> Path | None:
    """A complete checkpoint left beside a missing ``path`` by an interrupted save, or None.

    ``path`` is missing only between the two renames of an overwrite (window 3 below), when the
    new checkpoint is complete in ``<path>.tmp-*`` and the previous one in ``<path>.old-*``, or
    after a first save was interrupted before its rename (window 2): the newest is the tmp one.
    """
    for kind in ("tmp", "old"):
        complete = []
        for p in _siblings(path, kind):
            try:
                if _is_complete(p):
                    complete.append(((p / MANIFEST).stat().st_mtime_ns, p))
            except OSError:  # renamed or deleted meanwhile
                continue
        if complete:
            return max(complete)[1]
    return None


def locate(path: Path) -> Path:
    """The directory to read for the checkpoint ``path`` (``path`` itself unless a save to it was
    interrupted between its renames).

    Raises:
        FileNotFoundError: nothing is there.
    """
    if os.path.lexists(path):
        return path
    found = _interrupted(path)
    if found is None:
        raise FileNotFoundError(f"fnn.checkpoint: no checkpoint at {path}.")
    warnings.warn(
        f"fnn.checkpoint: {path} is missing but {found.name} beside it is a complete checkpoint "
        "left by a save interrupted between its two renames; reading that one.",
        stacklevel=3,
    )
    return found


def recover(path: Path) -> None:
    """Finish what an interrupted save to ``path`` left: move a complete leftover into place if
    ``path`` is missing, then delete every other leftover sibling. One writer per path."""
    if not os.path.lexists(path):
        found = _interrupted(path)
        if found is not None:
            os.rename(found, path)
            _fsync_dir(path.parent)
    for leftover in _siblings(path, "tmp", "old", "del"):
        shutil.rmtree(leftover, ignore_errors=True)


def remove(path: Path) -> None:
    """Delete the checkpoint ``path``: renamed aside first (atomic), so it never looks half-gone."""
    trash = path.with_name(f"{path.name}.del-{secrets.token_hex(4)}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------------


def _check_replaceable(path: Path) -> None:
    if not path.is_dir() or path.is_symlink():
        raise FileExistsError(
            f"fnn.checkpoint.save: {path} exists and is not a checkpoint directory; refusing to "
            "replace it. Choose another path or delete it."
        )
    foreign = sorted(set(os.listdir(path)) - _OWN_FILES)
    if foreign:
        raise FileExistsError(
            f"fnn.checkpoint.save: {path} exists and holds {foreign[:5]}, which are not files of "
            "an fnn checkpoint; refusing to replace it. Choose another path or delete it."
        )


def write(path: Path, snapshot: Snapshot, metadata: dict) -> None:
    """Write ``snapshot`` as the checkpoint ``path``, atomically (the save sequence).

    The sequence, and what a crash (a kill, a power cut) at each point leaves:

    1. ``recover(path)``; write both files into ``<path>.tmp-<random>``, fsync them, the manifest
       last, then fsync the tmp directory. A crash here leaves ``path`` as it was (the previous
       checkpoint, or nothing) and an incomplete tmp directory, which is never read (it has no
       valid manifest) and is deleted by the next save.
    2. [tmp complete] If ``path`` does not exist, ``rename(tmp, path)`` and fsync the parent:
       before the rename ``restore(path)`` finds the complete tmp (``locate``), after it
       ``path``: always the new checkpoint. Done.
    3. Otherwise ``rename(path, <path>.old-<random>)``. A crash before it leaves ``path`` = the
       previous checkpoint (the complete tmp is garbage, deleted by the next save). Between this
       rename and the next one ``path`` is missing: ``restore(path)`` then reads the complete
       tmp, i.e. the new checkpoint, and the next save moves it into place (``recover``).
    4. ``rename(tmp, path)``, fsync the parent: ``path`` is the new checkpoint.
    5. Delete ``<path>.old-*``. A crash during the deletion leaves garbage that is never read
       (``path`` exists) and is deleted by the next save.

    So at every moment ``restore(path)`` returns the previous checkpoint or the new one, complete
    and verified; the crash test kills a saving process at each of these points and at random.
    """
    check_little_endian("fnn.checkpoint.save")
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    if os.path.lexists(path):
        _check_replaceable(path)
    token = secrets.token_hex(4)
    tmp = path.with_name(f"{path.name}.tmp-{token}")
    tmp.mkdir()
    try:
        _write_checkpoint(tmp, snapshot, metadata)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _crash_point("tmp_complete")
    if not os.path.lexists(path):
        os.rename(tmp, path)
        _fsync_dir(path.parent)
        _crash_point("renamed_in")
        return
    old = path.with_name(f"{path.name}.old-{token}")
    os.rename(path, old)
    _crash_point("old_renamed_aside")
    os.rename(tmp, path)
    _fsync_dir(path.parent)
    _crash_point("renamed_in")
    shutil.rmtree(old, ignore_errors=True)
    _crash_point("old_deleted")


def save(path: PathLike, tree: Any, *, metadata: dict | None = None) -> None:
    """Save a pytree to the directory ``path``, atomically.

    Leaves may be tensors (any dtype safetensors has: float64/32/16, bfloat16, float8, every
    (u)int, bool, complex64; any shape, 0-d and empty included; on any device; contiguous or
    not), numpy arrays and scalars, and ``int``, ``float`` (``nan``/``inf`` included), ``bool``
    and ``str``, inside dicts (str/int/bool keys), lists, tuples, ``None``, NamedTuples (e.g.
    ``fnn_optim`` states) and classes registered with ``fnn.tree.register_dataclass``. Values
    and dtypes are kept bit for bit.

    Writes ``tensors.safetensors`` (readable by the safetensors package) and ``manifest.json``
    (the structure, ``metadata``, and the sha256 and size of the tensor file) into a temporary
    sibling directory, fsyncs, and renames it to ``path``, replacing an existing checkpoint
    there. A crash at any moment leaves the previous checkpoint or the new one, never a
    half-written one that looks complete. One process should write a given path at a time.

    Args:
        path: the checkpoint directory (created with its parents; an existing checkpoint there
            is replaced, anything else is refused).
        tree: the pytree.
        metadata: optional JSON-able dict stored in the manifest (see :func:`read_metadata`).

    Raises:
        TypeError: a leaf or node that cannot be stored; the message gives its dotted path.
        FileExistsError: ``path`` exists and is not a checkpoint.

    Example:
        >>> import tempfile, torch, fnn
        >>> tree = {"w": torch.ones(2, 3, dtype=torch.bfloat16), "key": fnn.random.key(0),
        ...         "step": 7, "data": {"epoch": 1, "position": 96}}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     fnn.checkpoint.save(f"{d}/ckpt", tree, metadata={"note": "warmup done"})
        ...     restored = fnn.checkpoint.restore(f"{d}/ckpt")
        ...     meta = fnn.checkpoint.read_metadata(f"{d}/ckpt")
        >>> restored["w"].dtype, restored["key"], restored["step"], restored["data"]
        (torch.bfloat16, tensor([0, 0], dtype=torch.uint32), 7, {'epoch': 1, 'position': 96})
        >>> meta
        {'note': 'warmup done'}
    """
    metadata = _check_metadata(metadata)
    write(Path(path), encode(tree, copy=False), metadata)


# --------------------------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------------------------


def _sha256_of_file(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_tensor_file(file: Path, info: dict, mmap: bool, verify: bool) -> tuple[Any, dict]:
    """The bytes of ``file`` (a bytearray, or a copy-on-write memory map) and its parsed header.

    Without ``mmap`` the checksum is computed on the very bytes the tensors are made from.
    """
    check_little_endian("fnn.checkpoint.restore")
    size = info["size"]
    if mmap:
        if verify and _sha256_of_file(file) != info["sha256"]:
            raise _checksum_error(file)
        buffer: Any = np.memmap(file, dtype=np.uint8, mode="c") if size else bytearray()
    else:
        buffer = bytearray(size)
        with open(file, "rb") as f:
            got = f.readinto(buffer)
        if got != size:
            raise CorruptCheckpointError(
                f"fnn.checkpoint: {file} gave {got} bytes, the manifest records {size}."
            )
        if verify and hashlib.sha256(buffer).hexdigest() != info["sha256"]:
            raise _checksum_error(file)
    entries, _ = parse_header(buffer, size, str(file))
    return buffer, entries


def _checksum_error(file: Path) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"fnn.checkpoint: {file} is corrupt: its sha256 differs from the one in the manifest "
        "(a byte changed on disk); it is refused."
    )


def _device_for(map_location: Any, like_leaf: Any) -> torch.device:
    if map_location is not None:
        return torch.device(map_location)
    if isinstance(like_leaf, torch.Tensor) and like_leaf.device.type != "meta":
        return like_leaf.device
    return torch.device("cpu")


def _loader(buffer: Any, entries: dict, map_location: Any) -> Callable[[dict, str, Any], Any]:
    def load(leaf: dict, path: str, like_leaf: Any) -> Any:
        e = entries[leaf["name"]]
        count = e.nbytes // max(1, DTYPES[e.code].itemsize)
        if leaf["kind"] == "ndarray":
            dtype = NUMPY_DTYPES[e.code]
            arr = np.frombuffer(buffer, dtype=dtype, count=count, offset=e.offset)
            arr = arr.reshape(e.shape)
            return arr[()] if leaf["scalar"] else arr
        if count == 0:
            t = torch.empty(e.shape, dtype=DTYPES[e.code])
        else:
            source, offset = buffer, e.offset
            if offset % DTYPES[e.code].itemsize:  # a foreign file with unaligned data: copy
                source, offset = bytearray(buffer[offset : offset + e.nbytes]), 0
            t = torch.frombuffer(source, dtype=DTYPES[e.code], count=count, offset=offset)
            t = t.view(e.shape)
        device = _device_for(map_location, like_leaf)
        if device.type != "cpu":
            t = t.to(device)
        if leaf["requires_grad"]:
            t.requires_grad_(True)
        return t

    return load


def _check_entries(structure: dict, entries: dict, file: Path) -> None:
    """The manifest's tensor leaves and the safetensors header must agree exactly."""
    named = {}
    for path, leaf in iter_leaves(structure):
        if leaf["kind"] not in ("tensor", "ndarray"):
            continue
        named[leaf["name"]] = leaf
        e = entries.get(leaf["name"])
        wanted = (leaf["dtype"], tuple(leaf["shape"]))
        if e is None or (e.code, e.shape) != wanted:
            got = None if e is None else (e.code, e.shape)
            raise CorruptCheckpointError(
                f"fnn.checkpoint: {file} does not match the manifest: {path!r} should be tensor "
                f"{leaf['name']!r} {wanted}, the file has {got}."
            )
        if leaf["kind"] == "ndarray" and e.code not in NUMPY_DTYPES:
            raise CorruptCheckpointError(f"fnn.checkpoint: {file}: {path!r} has no numpy dtype.")
    extra = sorted(set(entries) - set(named))
    if extra:
        raise CorruptCheckpointError(
            f"fnn.checkpoint: {file} holds tensors {extra[:5]} that the manifest does not list."
        )


def restore(
    path: PathLike,
    like: Any = None,
    *,
    map_location: str | torch.device | None = None,
    mmap: bool = False,
    verify: bool = True,
) -> Any:
    """Restore the pytree saved at ``path``.

    Without ``like`` the saved tree is rebuilt as it was: the same containers (NamedTuples and
    registered classes looked up by name in imported modules, or imported from fnn, fnn_optim
    and fnn_data; a checkpoint never runs code), dtypes, shapes and values bit for bit, tensors
    on the CPU with their ``requires_grad``, numpy arrays as numpy arrays.

    With ``like`` (a tree of the expected structure: e.g. a freshly initialised state, or meta
    tensors from ``model.init_shapes``) leaves are matched by dotted path and the result has
    ``like``'s containers; every missing and unexpected path and every dtype, shape or kind
    difference is reported at once. Tensors go to ``like``'s devices (meta: CPU).

    Args:
        path: the checkpoint directory given to :func:`save`.
        like: optional tree to check against and restore onto.
        map_location: a device for every tensor (overrides ``like``'s devices).
        mmap: memory-map the tensor file instead of reading it: tensors on the CPU are then
            copy-on-write views of the file, read from disk as they are used (writing to them
            never changes the file). For checkpoints larger than memory.
        verify: check the sha256 of the tensor file against the manifest (default). With
            ``mmap`` this reads the whole file once; ``verify=False`` skips it (sizes and the
            header are still checked).

    Returns:
        The restored tree.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        IncompleteCheckpointError: ``path`` has no manifest (an unfinished save).
        CorruptCheckpointError: a checksum, size or header is wrong; the message names the file.
        StructureMismatchError: the stored tree does not match ``like``.

    Example:
        >>> import tempfile, torch, fnn
        >>> with tempfile.TemporaryDirectory() as d:
        ...     fnn.checkpoint.save(d + "/c", {"w": torch.zeros(2, 3), "step": 3})
        ...     like = {"w": torch.empty(3, 2), "step": 0, "extra": torch.empty(1)}
        ...     fnn.checkpoint.restore(d + "/c", like=like)
        Traceback (most recent call last):
        ...
        fnn.checkpoint.StructureMismatchError: fnn.checkpoint.restore: the checkpoint ... does not match like:
          missing (in like, not in the checkpoint): ['extra']
          'w': shape (2, 3) in the checkpoint, (3, 2) in like
    """  # noqa: E501
    where = locate(Path(path))
    manifest = load_manifest(where)
    file = where / TENSORS
    buffer, entries = _read_tensor_file(file, manifest["files"][TENSORS], mmap, verify)
    structure = manifest["structure"]
    try:
        _check_entries(structure, entries, file)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CorruptCheckpointError):
            raise
        raise CorruptCheckpointError(
            f"fnn.checkpoint: the structure in {where / MANIFEST} is malformed ({e!r})."
        ) from e
    load = _loader(buffer, entries, map_location)
    if like is None:
        return build(structure, load, str(where / MANIFEST))
    return build_like(structure, like, load, f"at {where}")


def read_metadata(path: PathLike) -> dict:
    """The ``metadata`` dict given to :func:`save` (``{}`` if none); reads the manifest only.

    Example:
        >>> import tempfile, fnn
        >>> with tempfile.TemporaryDirectory() as d:
        ...     fnn.checkpoint.save(d + "/c", {"step": 1}, metadata={"loss": 0.25})
        ...     fnn.checkpoint.read_metadata(d + "/c")
        {'loss': 0.25}
    """
    return load_manifest(locate(Path(path)))["metadata"]
