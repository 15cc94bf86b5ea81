"""Which shard this process reads, from torch.distributed or the launcher's environment."""

from __future__ import annotations

import os

import torch

from fnn_data._dataset import Dataset


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: torch.distributed, else RANK/WORLD_SIZE, else (0, 1).

    Example:
        >>> import fnn_data
        >>> fnn_data.process_rank()  # a single process without a launcher
        (0, 1)
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None and world is None:
        return 0, 1
    if rank is None or world is None:
        raise ValueError(
            "fnn_data.process_rank: found only one of RANK and WORLD_SIZE in the environment "
            f"(RANK={rank!r}, WORLD_SIZE={world!r}); set both (torchrun does) or neither."
        )
    try:
        return int(rank), int(world)
    except ValueError:
        raise ValueError(
            f"fnn_data.process_rank: RANK and WORLD_SIZE must be integers, got RANK={rank!r}, "
            f"WORLD_SIZE={world!r}."
        ) from None


def shard_for_process(ds: Dataset) -> Dataset:
    """``ds.shard(rank, world_size)`` for this process (see :func:`process_rank`).

    Under ``torchrun`` or an initialised ``torch.distributed`` each rank reads a disjoint
    shard; in a single process the dataset is returned whole (``shard(0, 1)``). Use the same
    shuffle seed on every rank so that the shards of each epoch are disjoint.

    Example:
        >>> import numpy as np, fnn_data
        >>> ds = fnn_data.from_arrays(np.arange(4)).shuffle(seed=0)
        >>> [int(x) for x in fnn_data.shard_for_process(ds)] == [int(x) for x in ds]
        True
    """
    rank, world = process_rank()
    return ds.shard(rank, world)
