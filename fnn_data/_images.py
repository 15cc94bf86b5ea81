"""A directory of images with labels from sub-folder names, decoded with Pillow (optional)."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from fnn_data._dataset import Dataset
from fnn_data._sources import Source

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "fnn_data.from_image_folder decodes images with Pillow, which is not installed. "
            "Install the data extra: pip install 'fnn[data]' (or pip install pillow)."
        ) from None
    return Image


class ImageFolderSource(Source):
    """``root/<class>/<file>`` images; record ``i`` is ``{"image": ..., "label": ...}``."""

    def __init__(
        self,
        root: str | os.PathLike,
        mode: str | None,
        size: tuple[int, int] | None,
        extensions: tuple[str, ...],
    ) -> None:
        _pil()
        self.root = pathlib.Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"fnn_data.from_image_folder: {str(self.root)!r} is not a directory."
            )
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        exts = tuple(e.lower() for e in extensions)
        self.files: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            for dirpath, _, names in sorted(os.walk(self.root / name)):
                for f in sorted(names):
                    if f.lower().endswith(exts):
                        self.files.append((str(pathlib.Path(dirpath, f)), label))
        if not self.files:
            raise ValueError(
                f"fnn_data.from_image_folder: found no images ({', '.join(exts)}) in the "
                f"sub-folders of {str(self.root)!r}; expected root/<class name>/<image file>."
            )
        self.mode = mode
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def record(self, i: int) -> dict[str, np.ndarray]:
        path, label = self.files[i]
        with _pil().open(path) as img:
            if self.mode is not None:
                img = img.convert(self.mode)
            if self.size is not None:
                img = img.resize((self.size[1], self.size[0]))
            a = np.asarray(img)
        a = a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))
        return {"image": a, "label": np.int64(label)}

    def signature(self) -> str:
        n, k = len(self.files), len(self.classes)
        return f"{n} images in {k} classes, mode={self.mode}, size={self.size}"


def from_image_folder(
    root: str | os.PathLike,
    *,
    mode: str | None = "RGB",
    size: tuple[int, int] | None = None,
    extensions: tuple[str, ...] = EXTENSIONS,
) -> Dataset:
    """A pipeline over ``root/<class name>/<image>`` files, decoded with Pillow.

    Classes are the sub-folder names in sorted order (label ``k`` is ``ds.source.classes[k]``);
    files are taken in sorted order, searched recursively within each class folder. Decoding
    happens when a record is read, so it runs in the worker processes with ``.workers(n)``.

    Args:
        root: the directory holding one sub-folder per class.
        mode: Pillow mode to convert to (``"RGB"``, ``"L"``...), or None to keep each file's.
        size: ``(height, width)`` to resize every image to, or None to keep their sizes
            (images of different sizes can be iterated one by one but not batched).
        extensions: file name endings to read (case-insensitive).

    Returns:
        A :class:`Dataset` of records ``{"image": uint8 array (C, H, W), "label": int64}``.

    Raises:
        ImportError: Pillow (the ``data`` extra) is not installed.

    Example:
        >>> import tempfile, pathlib, numpy as np, fnn_data
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name, value in [("cat", 0), ("dog", 255)]:
        ...     (root / name).mkdir()
        ...     Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(root / name / "a.png")
        >>> ds = fnn_data.from_image_folder(root)
        >>> ds.source.classes, len(ds)
        (['cat', 'dog'], 2)
        >>> b = next(iter(ds.batch(2)))
        >>> b["image"].shape, b["label"].tolist()
        (torch.Size([2, 3, 4, 6]), [0, 1])
    """
    return Dataset(
        ImageFolderSource(root, mode, size, tuple(extensions)), origin="from_image_folder"
    )
