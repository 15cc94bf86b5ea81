"""Real datasets that ship offline: nothing here downloads anything.

``digits()`` reads scikit-learn's bundled handwritten digits (1,797 grey 8x8 images of the digits
0-9, from the UCI "Optical Recognition of Handwritten Digits" set), which live inside the
scikit-learn package itself. scikit-learn is the ``data`` extra: ``pip install 'fnn[data]'``.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["digits"]

NUM_TEST = 360  # 20% of 1,797, the size of the split scikit-learn's examples use
_SPLIT_SEED = 1234


@functools.cache
def _load() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "fnn_data.datasets.digits() reads the handwritten digits bundled with scikit-learn, "
            "which is not installed. Install the data extra: pip install 'fnn[data]' "
            "(or pip install scikit-learn)."
        ) from None
    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    # A fixed split, the same on every machine and version: a permutation from fnn.random,
    # whose bits are specified (threefry2x32, equal to jax.random), not numpy's generators.
    import fnn.random

    order = fnn.random.permutation(fnn.random.key(_SPLIT_SEED), len(labels)).numpy()
    images, labels = images[order], labels[order]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def digits(split: str = "train") -> dict[str, np.ndarray]:
    """The handwritten digits bundled with scikit-learn, with a fixed train/test split.

    Args:
        split: ``"train"`` (1,437 images), ``"test"`` (360 images) or ``"all"`` (1,797 images,
            in the fixed shuffled order: the test images first, then the training images).

    Returns:
        ``{"image": float32 array (N, 1, 8, 8) with values in [0, 1], "label": int64 array (N,)
        with values 0-9}``. The arrays are read-only views of one cached copy; ``np.array(a)``
        gives a writable copy.

    Raises:
        ImportError: scikit-learn (the ``data`` extra) is not installed.
        ValueError: ``split`` is not one of the three names.

    Example:
        >>> import fnn_data
        >>> train = fnn_data.datasets.digits("train")
        >>> train["image"].shape, train["image"].dtype, train["label"].shape
        ((1437, 1, 8, 8), dtype('float32'), (1437,))
        >>> len(fnn_data.datasets.digits("test")["label"])
        360
    """
    if split not in ("train", "test", "all"):
        raise ValueError(
            f"fnn_data.datasets.digits: split must be 'train', 'test' or 'all', got {split!r}."
        )
    images, labels = _load()
    part = {"train": slice(NUM_TEST, None), "test": slice(None, NUM_TEST), "all": slice(None)}
    s = part[split]
    return {"image": images[s], "label": labels[s]}
