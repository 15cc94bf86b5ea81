"""The safetensors file format, written and read here (no dependency on the safetensors package).

A file is (https://github.com/huggingface/safetensors, "Format"):

- 8 bytes: ``N``, the length of the header, an unsigned little-endian 64-bit integer;
- ``N`` bytes: a UTF-8 JSON object ``{"__metadata__": {str: str}, name: {"dtype": "F32",
  "shape": [2, 3], "data_offsets": [begin, end]}, ...}``, padded with spaces so that the data
  starts at a multiple of 8;
- the data buffer: each tensor's bytes, C order and little-endian, at ``[begin, end)`` relative
  to the start of the buffer. The buffer is covered exactly, with no holes and no overlaps.

Tensors are laid out by decreasing element size, then by name (as the safetensors package does),
so every tensor starts at a multiple of its element size and can be viewed without a copy.
Nothing here ever unpickles anything: a file holds numbers and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
from collections.abc import Iterable
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch

from fnn.checkpoint._errors import CorruptCheckpointError

__all__ = [
    "DTYPES",
    "NUMPY_DTYPES",
    "Entry",
    "HeaderEntry",
    "as_bytes",
    "check_little_endian",
    "code_of_numpy",
    "code_of_torch",
    "parse_header",
    "write_file",
]

MAX_HEADER = 100_000_000  # the safetensors package refuses larger headers too
_ALIGN = 8

# The dtype names of the safetensors specification that torch can hold, in its naming.
DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "U16": torch.uint16,
    "I16": torch.int16,
    "U32": torch.uint32,
    "I32": torch.int32,
    "U64": torch.uint64,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "C64": torch.complex64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
}
_CODE_OF_TORCH = {dtype: code for code, dtype in DTYPES.items()}
ITEMSIZE: dict[str, int] = {code: dtype.itemsize for code, dtype in DTYPES.items()}

# The same names for the numpy dtypes that have one (numpy has no bfloat16 or float8).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
}
_CODE_OF_NUMPY = {dtype: code for code, dtype in NUMPY_DTYPES.items()}


def check_little_endian(what: str) -> None:
    """safetensors data is little-endian; this implementation does not byte-swap."""
    if sys.byteorder != "little":
        raise NotImplementedError(
            f"fnn.checkpoint: {what} needs a little-endian machine (safetensors data is "
            f"little-endian); this machine is {sys.byteorder}-endian."
        )


def code_of_torch(dtype: torch.dtype, path: str) -> str:
    """The safetensors name of a torch dtype, e.g. ``torch.bfloat16 -> "BF16"``."""
    try:
        return _CODE_OF_TORCH[dtype]
    except KeyError:
        raise TypeError(
            f"fnn.checkpoint.save: the tensor at {path!r} has dtype {dtype}, which safetensors "
            f"cannot store; supported: {', '.join(str(d) for d in DTYPES.values())}. Convert it "
            "first (e.g. a complex128 tensor with torch.view_as_real)."
        ) from None


def code_of_numpy(dtype: np.dtype, path: str) -> str:
    """The safetensors name of a numpy dtype (native or little-endian byte order)."""
    code = _CODE_OF_NUMPY.get(dtype)
    if code is None:
        raise TypeError(
            f"fnn.checkpoint.save: the numpy array at {path!r} has dtype {dtype}, which "
            "safetensors cannot store; supported: bool, (u)int8-64, float16/32/64, complex64 "
            "(little-endian)."
        )
    return code


def as_bytes(t: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a flat ``uint8`` numpy array (a view, no copy)."""
    if t.numel() == 0:
        return np.empty(0, dtype=np.uint8)
    # A contiguous tensor may still carry a stride != 1 on a dimension of size 1; the flat view
    # with stride 1 is the same memory.
    flat = t.detach().as_strided((t.numel(),), (1,))
    return flat.view(torch.uint8).numpy()


class Entry(NamedTuple):
    """One tensor to write: its name, safetensors dtype, shape, and its bytes (uint8, C order)."""

    name: str
    code: str
    shape: tuple[int, ...]
    data: np.ndarray


def _padded_header(entries: list[Entry], metadata: dict[str, str]) -> tuple[bytes, list[Entry]]:
    ordered = sorted(entries, key=lambda e: (-ITEMSIZE[e.code], e.name))
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for e in ordered:
        end = offset + e.data.nbytes
        header[e.name] = {"dtype": e.code, "shape": list(e.shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % _ALIGN)
    return struct.pack("<Q", len(text)) + text, ordered


def write_file(f: BinaryIO, entries: Iterable[Entry], metadata: dict[str, str]) -> tuple[str, int]:
    """Write a safetensors file to the binary stream ``f``.

    Returns:
        ``(sha256_hex, size)`` of everything written, computed from the bytes as they are
        written (the file is not read back).
    """
    check_little_endian("writing safetensors")
    entries = list(entries)
    names = [e.name for e in entries]
    if len(set(names)) != len(names) or "__metadata__" in names:
        raise ValueError(f"fnn.checkpoint: tensor names must be unique, got {names}.")
    head, ordered = _padded_header(entries, metadata)
    digest = hashlib.sha256(head)
    f.write(head)
    size = len(head)
    for e in ordered:
        view = memoryview(e.data)
        digest.update(view)
        f.write(view)
        size += e.data.nbytes
    return digest.hexdigest(), size


class HeaderEntry(NamedTuple):
    """One tensor of a parsed header; ``offset`` is from the start of the file."""

    code: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def _corrupt(where: str, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"fnn.checkpoint: {where} is not a valid safetensors file: {what}"
    )


def parse_header(buffer: Any, size: int, where: str) -> tuple[dict[str, HeaderEntry], dict]:
    """Parse and validate the header of a safetensors file held in ``buffer`` (``size`` bytes).

    Checks everything the format promises before a single tensor is built: the header length
    fits the file, the JSON parses, each entry has a known dtype, a shape of non-negative ints
    and offsets whose length matches the shape, and the entries cover the data exactly.

    Returns:
        ``(entries, metadata)``: entries by tensor name, and the ``__metadata__`` dict.

    Raises:
        CorruptCheckpointError: naming ``where`` (the file) and what is wrong.
    """
    if size < 8:
        raise _corrupt(where, f"it has {size} bytes, fewer than the 8 of the header length")
    (n,) = struct.unpack("<Q", bytes(buffer[:8]))
    if n > min(size - 8, MAX_HEADER):
        raise _corrupt(
            where,
            f"the header length field says {n} bytes but the file has {size - 8} bytes after it "
            "(truncated or not a safetensors file)",
        )
    try:
        header = json.loads(bytes(buffer[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(where, f"the header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise _corrupt(where, f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(where, "__metadata__ must map strings to strings")
    start = 8 + n
    data_len = size - start
    entries: dict[str, HeaderEntry] = {}
    spans = []
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                code in DTYPES
                and isinstance(shape, list)
                and all(type(d) is int and d >= 0 for d in shape)
                and type(begin) is int
                and type(end) is int
                and 0 <= begin <= end <= data_len
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise _corrupt(
                where, f"tensor {name!r} has an invalid entry {info!r} (data has {data_len} bytes)"
            )
        nbytes = math.prod(shape) * ITEMSIZE[code]
        if end - begin != nbytes:
            raise _corrupt(
                where,
                f"tensor {name!r} of dtype {code} and shape {shape} needs {nbytes} bytes, its "
                f"offsets [{begin}, {end}) give {end - begin}",
            )
        entries[name] = HeaderEntry(code, tuple(shape), start + begin, nbytes)
        spans.append((begin, end, name))
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise _corrupt(
                where, f"tensor {name!r} starts at byte {begin} of the data, expected {covered}"
            )
        covered = end
    if covered != data_len:
        raise _corrupt(
            where, f"the tensors cover {covered} bytes of data but the file holds {data_len}"
        )
    return entries, metadata
