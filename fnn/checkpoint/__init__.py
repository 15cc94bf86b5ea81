"""fnn.checkpoint: save and restore any training state, atomically, and resume bit for bit.

What it promises:

- **Any fnn pytree**: params, BatchNorm state, ``fnn_optim`` states (NamedTuples of 0-d
  tensors), PRNG keys (``uint32``), data-iterator state dicts, the step, your metadata. Tensors
  keep their dtype (bfloat16, int64, bool, ...), shape (0-d, empty) and every bit; numpy arrays
  come back as numpy arrays; ``int``/``float``/``bool``/``str`` leaves as themselves (``nan`` and
  ``inf`` included).
- **Safe**: no pickle anywhere. Tensors are in a ``safetensors`` file (readable by the
  safetensors package and every tool that reads it); the structure and metadata are JSON. A
  checkpoint cannot run code; classes are looked up by name, never imported from user modules.
- **Atomic and verified**: a save writes a temporary directory, fsyncs and renames it into
  place, manifest last; a crash at any moment leaves the previous checkpoint or the new one.
  Every file's sha256 and size are in the manifest: a truncated or changed file is refused with
  an error naming it, never returned as garbage.
- **Checked against what you expect**: ``restore(path, like=tree)`` reports every missing and
  unexpected path and every shape or dtype difference at once, by dotted path.

The API:

- :func:`save` / :func:`restore` / :func:`read_metadata`: one checkpoint directory.
- :class:`Manager`: ``step_00000042`` directories with ``max_to_keep``, ``keep_every_n_steps``,
  ``save_interval_steps``, ``latest_step`` that skips broken checkpoints, and asynchronous save.
- :func:`export_torch` / :func:`import_torch`: ``torch.save``-d ``state_dict`` files for the
  matching ``torch.nn`` model, read with ``torch.load(weights_only=True)`` only.
- Errors: :class:`CheckpointError` and its kinds :class:`IncompleteCheckpointError`,
  :class:`CorruptCheckpointError`, :class:`StructureMismatchError`.

On disk, ``path/`` holds ``tensors.safetensors`` (the tensors, named by dotted path) and
``manifest.json`` (format version, each file's sha256 and size, the tree structure, metadata,
and a checksum of the manifest itself).

Example: resuming a run.

    >>> import tempfile, torch, fnn, fnn_optim as optim
    >>> params = {"w": torch.zeros(3)}
    >>> opt = optim.adamw(1e-2)
    >>> state = {"params": params, "opt": opt.init(params), "key": fnn.random.key(0), "step": 0}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with fnn.checkpoint.Manager(d) as mgr:
    ...         mgr.save(0, state)
    ...         if mgr.latest_step() is not None:
    ...             state = mgr.restore(mgr.latest_step(), like=state)
    True
    >>> type(state["opt"][0]).__name__, state["opt"][0].count.dtype
    ('ScaleByAdamState', torch.int64)
"""

from fnn.checkpoint._errors import CheckpointError as CheckpointError
from fnn.checkpoint._errors import CorruptCheckpointError as CorruptCheckpointError
from fnn.checkpoint._errors import IncompleteCheckpointError as IncompleteCheckpointError
from fnn.checkpoint._errors import StructureMismatchError as StructureMismatchError
from fnn.checkpoint._manager import Manager as Manager
from fnn.checkpoint._save import read_metadata as read_metadata
from fnn.checkpoint._save import restore as restore
from fnn.checkpoint._save import save as save
from fnn.checkpoint._torch import export_torch as export_torch
from fnn.checkpoint._torch import import_torch as import_torch

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "IncompleteCheckpointError",
    "Manager",
    "StructureMismatchError",
    "export_torch",
    "import_torch",
    "read_metadata",
    "restore",
    "save",
]
