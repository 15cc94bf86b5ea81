"""Progress bars (tqdm, an optional dependency) counting records per second."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def _tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        raise ImportError(
            "fnn_data progress bars use tqdm, which is not installed. Install the data extra: "
            "pip install 'fnn[data]' (or pip install tqdm)."
        ) from None
    return tqdm


def attach(it: Any, desc: str | None = None) -> Any:
    """Give a DataIterator a bar counting records (batch sizes summed), with records/s."""
    from fnn_data._iterator import records_done

    plan = it._plan
    filtered = any(op.kind == "filter" for op in plan.record_ops)
    total = None
    if plan.L is not None and plan.epochs is not None and not filtered:
        total = plan.epochs * plan.L
    if it._bar is not None:
        it._bar.close()
    it._bar = _tqdm()(
        total=total,
        initial=(records_done(plan, it._position) or 0) if not filtered else 0,
        unit="rec",
        unit_scale=True,
        desc=desc,
        dynamic_ncols=True,
    )
    return it


def progress(iterable: Iterable[Any], *, desc: str | None = None) -> Iterator[Any]:
    """Show a tqdm progress bar while iterating, with records per second.

    A :class:`~fnn_data.Dataset` or :class:`~fnn_data.DataIterator` gets a bar counting
    records (the batch sizes, summed), starting at the resume position, and keeps its
    ``get_state``; any other iterable gets a plain tqdm bar counting items. Same as
    ``ds.iter(progress=True)``. Needs ``tqdm`` (``pip install 'fnn[data]'``).

    Args:
        iterable: a Dataset, a DataIterator, or any iterable.
        desc: a label shown before the bar.

    Returns:
        An iterator over the same items.

    Example:
        >>> import numpy as np, fnn_data
        >>> ds = fnn_data.from_arrays(np.arange(100)).batch(10)
        >>> sum(len(b) for b in fnn_data.progress(ds, desc="demo"))  # the bar goes to stderr
        100
    """
    from fnn_data._dataset import Dataset
    from fnn_data._iterator import DataIterator

    if isinstance(iterable, Dataset):
        iterable = iterable.iter()
    if isinstance(iterable, DataIterator):
        return attach(iterable, desc)
    return iter(_tqdm()(iterable, desc=desc, dynamic_ncols=True))
