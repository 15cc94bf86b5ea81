"""fnn_data: Grain-style deterministic, resumable input pipelines on PyTorch.

A pipeline is a lazy, immutable chain over an indexable source::

    ds = (
        fnn_data.from_arrays(x=images, y=labels)   # or from_npy / from_torch / from_image_folder
        .shuffle(seed=0)                           # global, lazy, reshuffled every epoch
        .random_map(augment)                       # augment(record, key): a key per record
        .batch(256)                                # one vectorised gather per field if it can
        .repeat()                                  # epochs without end
        .workers(2)                                # processes; same output for any number
        .prefetch(2)                               # a background thread keeps 2 batches ready
    )
    it = iter(ds)
    state = it.get_state()                         # a few ints: save it with the model
    it = ds.iter_from(state)                       # later, in another process: same batches

Promises: the same seed gives the same batches for any number of workers, threads or prefetch
depth, on any machine; a state resumes exactly; shards are disjoint and cover the data;
batches are pytrees of torch tensors. Real data that ships offline: :mod:`fnn_data.datasets`.
fnn_data never imports ``fnn`` (its keys are bit-identical to ``fnn.random``'s).
"""

from fnn_data import datasets as datasets
from fnn_data._dataset import Dataset as Dataset
from fnn_data._distributed import process_rank as process_rank
from fnn_data._distributed import shard_for_process as shard_for_process
from fnn_data._images import from_image_folder as from_image_folder
from fnn_data._iterator import DataIterator as DataIterator
from fnn_data._progress import progress as progress
from fnn_data._sources import from_arrays as from_arrays
from fnn_data._sources import from_iterable as from_iterable
from fnn_data._sources import from_npy as from_npy
from fnn_data._sources import from_torch as from_torch
from fnn_data._workers import WorkerError as WorkerError

__all__ = [
    "DataIterator",
    "Dataset",
    "WorkerError",
    "datasets",
    "from_arrays",
    "from_image_folder",
    "from_iterable",
    "from_npy",
    "from_torch",
    "process_rank",
    "progress",
    "shard_for_process",
]
