"""Interop with PyTorch checkpoints: ``torch.save``-d ``state_dict`` files, in and out.

The names and layouts are ``fnn.nn.to_state_dict``'s (those of the matching ``torch.nn`` model);
reading uses ``torch.load(weights_only=True)`` only, which never runs code from the file.
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, overload

import torch

from fnn.checkpoint._save import PathLike, _fsync_dir
from fnn.nn import Module, from_state_dict, to_state_dict

__all__ = ["export_torch", "import_torch"]


def export_torch(path: PathLike, params: Mapping, state: Mapping | None = None) -> None:
    """Write ``params`` (and ``state``) as a ``torch.save``-d ``state_dict`` file.

    The keys are the ``state_dict()`` keys of the matching ``torch.nn`` model
    (:func:`fnn.nn.to_state_dict`), the tensors are contiguous CPU copies, so
    ``torch_model.load_state_dict(torch.load(path, weights_only=True))`` loads them anywhere.
    The file is written to a temporary name, fsynced and renamed: it is never half-written.

    Args:
        path: the file to write (e.g. ``"model.pt"``).
        params: the nested dict of parameters of an fnn model.
        state: its state (BatchNorm statistics), or ``None``.

    Example:
        >>> import tempfile, torch, fnn
        >>> model = fnn.nn.Sequential([fnn.nn.Linear(4), fnn.nn.BatchNorm1d()])
        >>> params, state = model.init(fnn.random.key(0), torch.zeros(2, 3))
        >>> twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     fnn.checkpoint.export_torch(f"{d}/model.pt", params, state)
        ...     twin.load_state_dict(torch.load(f"{d}/model.pt", weights_only=True))
        <All keys matched successfully>
    """
    state_dict = OrderedDict(
        (name, t.detach().to("cpu").clone(memory_format=torch.contiguous_format))
        for name, t in to_state_dict(params, state).items()
    )
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state_dict, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@overload
def import_torch(
    path: PathLike, model: None = None, *, map_location: str | torch.device | None = None
) -> OrderedDict[str, torch.Tensor]: ...


@overload
def import_torch(
    path: PathLike,
    model: Module,
    *example_inputs: Any,
    map_location: str | torch.device | None = None,
    **kwargs: Any,
) -> tuple[dict, dict]: ...


def import_torch(
    path: PathLike,
    model: Module | None = None,
    *example_inputs: Any,
    map_location: str | torch.device | None = None,
    **kwargs: Any,
) -> Any:
    """Read a ``torch.save``-d ``state_dict`` with ``torch.load(weights_only=True)`` only.

    With ``model`` and example inputs, returns ``(params, state)`` for that fnn model through
    :func:`fnn.nn.from_state_dict` (every missing or unexpected name and shape mismatch is
    reported at once). Without, returns the ``state_dict`` itself (an ``OrderedDict`` of dotted
    names to tensors), which is what ``fnn.nn.from_state_dict`` takes.

    Args:
        path: a file written by ``torch.save(module.state_dict(), path)`` or
            :func:`export_torch`.
        model: the fnn model the weights are for, or ``None``.
        *example_inputs: inputs shaped like the model's (only shapes and dtypes are used).
        map_location: passed to ``torch.load`` (default: CPU).
        **kwargs: passed to ``model.init_shapes`` (e.g. ``train=``).

    Raises:
        TypeError: the file does not hold a mapping of str names to tensors.

    Example:
        >>> import tempfile, torch, fnn
        >>> twin = torch.nn.Sequential(
        ...     torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
        ... )
        >>> model = fnn.nn.Sequential([fnn.nn.Linear(4), fnn.nn.relu, fnn.nn.Linear(2)])
        >>> x = torch.randn(5, 3)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     torch.save(twin.state_dict(), f"{d}/twin.pt")
        ...     params, state = fnn.checkpoint.import_torch(f"{d}/twin.pt", model, x)
        >>> torch.equal(model.apply(params, x), twin(x))
        True
    """
    loaded = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    if not isinstance(loaded, Mapping):
        raise TypeError(
            f"fnn.checkpoint.import_torch: {path} holds a {type(loaded).__name__}, expected a "
            "state_dict (a mapping of dotted names to tensors)."
        )
    bad = [k for k, v in loaded.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if bad:
        raise TypeError(
            f"fnn.checkpoint.import_torch: {path} is not a state_dict: the entries {bad[:5]} are "
            "not tensors under str names (a training checkpoint? pick its state_dict out with "
            "torch.load(path, weights_only=True)[name] and pass it to fnn.nn.from_state_dict)."
        )
    state_dict = OrderedDict(loaded)
    if model is None:
        return state_dict
    return from_state_dict(model, state_dict, *example_inputs, **kwargs)
