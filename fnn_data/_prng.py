"""Keys for the pipeline's randomness: a numpy twin of ``fnn.random``'s threefry2x32.

Every key fnn_data derives is bit-identical to the one ``fnn.random`` would give (the tests
compare them), but it is computed in numpy, for two reasons:

* the hot path works on numpy index arrays: deriving the keys of a 256-record chunk in numpy
  takes about half the time of the torch version (whose cost is ~100 small-op dispatches);
* importing fnn_data does not import ``fnn`` (whose ``__init__`` imports ``fnn.nn``), so the data
  layer stays below the model layer and worker start-up stays cheap.

Derivations (``K(seed)`` is ``fnn.random.key(seed)``, ``fold_in`` is ``fnn.random.fold_in``):

* ``shuffle(seed)`` in epoch ``e``: the Feistel round keys are
  ``fnn.random.bits(fold_in(fold_in(K(seed), 0), e), (8,), torch.uint64)``.
* the ``m``-th ``random_map`` of a pipeline (``m = 0, 1, ...`` in chain order), with seed ``s``,
  gives the record with source index ``i`` in epoch ``e`` the key
  ``fold_in(fold_in(fold_in(K(s), 1 + m), e), i)``. (For ``i >= 2**32`` the high word of ``i``
  enters threefry's first counter word, which is ``fold_in``'s natural extension.)

The first ``fold_in`` separates the purposes (0 for shuffling, ``1 + m`` for the ``m``-th
``random_map``), so no two stages ever share a key even when they share a seed. Nothing depends
on a worker id, a thread or the process: the same pipeline gives the same keys everywhere.
"""

from __future__ import annotations

import functools

import numpy as np

_MASK32 = 0xFFFFFFFF
_PARITY = 0x1BD11BDA
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))

Key = tuple[int, int]  # the two uint32 words of a key, as Python ints


def key(seed: int) -> Key:
    """The words of ``fnn.random.key(seed)`` (JAX's ``[0, seed]`` for seeds below 2**32)."""
    hi = 0 if -(2**31) <= seed < 2**32 else (seed >> 32) & _MASK32
    return hi, seed & _MASK32


def threefry2x32(
    k: Key, x0: np.ndarray, x1: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # uint32 arrays in, new uint32 arrays out
    """threefry2x32 (20 rounds) of the counters ``(x0, x1)`` under key ``k``."""
    k0, k1 = np.uint32(k[0]), np.uint32(k[1])
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(_PARITY))
    x0 = x0 + k0
    x1 = x1 + k1
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 += x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 ^= x0
        x0 += ks[(i + 1) % 3]
        x1 += ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _threefry_ints(k: Key, x0: int, x1: int) -> Key:
    """threefry2x32 of one counter pair in Python ints (faster than numpy for one value)."""
    k0, k1 = k
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = (x0 + k0) & _MASK32
    x1 = (x1 + k1) & _MASK32
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = (x0 + x1) & _MASK32
            x1 = (((x1 << r) | (x1 >> (32 - r))) & _MASK32) ^ x0
        x0 = (x0 + ks[(i + 1) % 3]) & _MASK32
        x1 = (x1 + ks[(i + 2) % 3] + i + 1) & _MASK32
    return x0, x1


@functools.lru_cache(maxsize=256)
def fold_in(k: Key, data: int) -> Key:
    """``fnn.random.fold_in`` on one key and one integer in ``[0, 2**32)``."""
    return _threefry_ints(k, 0, data & _MASK32)


def fold_in_many(k: Key, data: np.ndarray) -> np.ndarray:
    """``fold_in(k, d)`` for every ``d`` of an int64 array: a uint32 array of shape ``(n, 2)``."""
    d = data.astype(np.uint64, copy=False)
    hi = (d >> np.uint64(32)).astype(np.uint32)
    lo = (d & np.uint64(_MASK32)).astype(np.uint32)
    x0, x1 = threefry2x32(k, hi, lo)
    return np.stack([x0, x1], axis=-1)


def bits64(k: Key, n: int) -> np.ndarray:
    """``fnn.random.bits(k, (n,), torch.uint64)`` as a numpy uint64 array."""
    words = [_threefry_ints(k, 0, i) for i in range(n)]
    return np.array([(a << 32) | b for a, b in words], dtype=np.uint64)


def shuffle_key(seed: int, epoch: int) -> Key:
    """The key a ``shuffle(seed)`` uses in ``epoch``: ``fold_in(fold_in(K(seed), 0), epoch)``."""
    return fold_in(fold_in(key(seed), 0), epoch)


def random_map_key(seed: int, ordinal: int, epoch: int) -> Key:
    """The key the ``ordinal``-th random_map folds record indices into, in ``epoch``."""
    return fold_in(fold_in(key(seed), 1 + ordinal), epoch)
