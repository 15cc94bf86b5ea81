"""Interop with ``torch.nn``: state dicts in and out, and wrapping an ``nn.Module``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch

__all__ = ["to_state_dict"]


def _merge(params: Mapping, state: Mapping, prefix: str, out: OrderedDict) -> None:
    # torch's order: a module's own parameters, then its own buffers, then its children.
    for tree in (params, state):
        for k, v in tree.items():
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v
    children = [k for k, v in params.items() if isinstance(v, Mapping)]
    children += [k for k, v in state.items() if isinstance(v, Mapping) and k not in children]
    for k in children:
        _merge(params.get(k, {}), state.get(k, {}), f"{prefix}{k}.", out)


def to_state_dict(params: Mapping, state: Mapping | None = None) -> OrderedDict[str, torch.Tensor]:
    """Flatten ``params`` and ``state`` into a ``torch.nn`` ``state_dict`` (dotted names).

    The keys are those of the matching ``torch.nn`` model's ``state_dict()``, in its order
    (each module's parameters, then its buffers, then its children), so
    ``torch_model.load_state_dict(fnn.nn.to_state_dict(params, state))`` loads the weights.
    Tensors are shared, not copied.

    Args:
        params: nested dict of parameters (from ``init``).
        state: nested dict of state (BatchNorm statistics) or ``None``.

    Returns:
        An ``OrderedDict`` mapping dotted names to tensors.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.Sequential([fnn.nn.Linear(4), fnn.nn.BatchNorm1d()])
        >>> params, state = model.init(fnn.random.key(0), torch.zeros(2, 3))
        >>> list(fnn.nn.to_state_dict(params, state))  # doctest: +NORMALIZE_WHITESPACE
        ['0.weight', '0.bias', '1.weight', '1.bias', '1.running_mean', '1.running_var',
         '1.num_batches_tracked']
        >>> torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        >>> torch_model.load_state_dict(fnn.nn.to_state_dict(params, state))
        <All keys matched successfully>
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"fnn.nn.to_state_dict: expected params to be a nested dict, got {type(params).__name__}."
        )
    if state is not None and not isinstance(state, Mapping):
        raise TypeError(
            f"fnn.nn.to_state_dict: expected state to be a nested dict or None, got "
            f"{type(state).__name__}."
        )
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    _merge(params, state or {}, "", out)
    return out
