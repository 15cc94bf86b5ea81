"""``Sequential``, ``Flatten`` and ``Unflatten``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fnn.nn._module import Module, Scope, _call, _where

__all__ = ["Flatten", "Sequential", "Unflatten"]

_INDEX = tuple((str(i),) for i in range(64))  # the child names "0", "1", ... made once


class Sequential(Module):
    """Apply ``layers`` in order, the twin of ``torch.nn.Sequential``.

    ``Sequential([a, b])`` and ``Sequential(a, b)`` are the same. ``layers`` may mix modules
    and plain functions (``fnn.nn.relu``); the i-th entry's parameters live under the name
    ``"i"``, as in ``torch.nn.Sequential``, so the same positions give the same
    ``state_dict()`` keys.

    Args:
        layers: a sequence of modules and/or callables ``x -> y``.

    Shapes:
        whatever the layers take and give.

    Example:
        >>> import fnn, torch
        >>> from fnn import nn
        >>> model = nn.Sequential([nn.Linear(8), nn.relu, nn.Linear(2)])
        >>> params, state = model.init(fnn.random.key(0), torch.zeros(5, 3))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'0': {'weight': (8, 3), 'bias': (8,)}, '2': {'weight': (2, 8), 'bias': (2,)}}
        >>> model.apply(params, torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """

    layers: Sequence[Module | Callable]

    def __init__(self, *layers: Module | Callable | Sequence[Module | Callable]) -> None:
        if len(layers) == 1 and isinstance(layers[0], list | tuple):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not (isinstance(layer, Module) or callable(layer)):
                raise TypeError(
                    f"fnn.nn.Sequential: layer {i} is a {type(layer).__name__}, expected an "
                    "fnn.nn.Module or a function; write Sequential([layer1, layer2, ...])."
                )
        self.layers = tuple(layers)

    def forward(self, scope: Scope, x):
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Module):
                x = _call(layer, scope._enter(_INDEX[i] if i < 64 else (str(i),), layer), (x,), {})
            else:
                x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self.layers)


def _dim(d: int, ndim: int, module: Module, scope: Scope, shape) -> int:
    if not -ndim <= d < ndim:
        raise ValueError(
            f"{_where(module, scope.path)}: dim {d} is out of range for an input of shape "
            f"{tuple(shape)}."
        )
    return d % ndim


class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` into one, the twin of ``torch.nn.Flatten``.

    Args:
        start_dim: first dim to flatten (default 1, keeping the batch dim).
        end_dim: last dim to flatten (default -1).

    Shapes:
        input ``(N, *dims)``, output ``(N, prod(dims))`` with the defaults.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Flatten().apply({}, torch.zeros(2, 3, 4, 5)).shape
        torch.Size([2, 60])
    """

    start_dim: int = 1
    end_dim: int = -1

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        if x.ndim:
            _dim(self.start_dim, x.ndim, self, scope, x.shape)
            _dim(self.end_dim, x.ndim, self, scope, x.shape)
        return torch.flatten(x, self.start_dim, self.end_dim)


class Unflatten(Module):
    """Expand dim ``dim`` into ``sizes``, the twin of ``torch.nn.Unflatten``.

    Args:
        dim: the dim to expand.
        sizes: the new sizes (their product must equal the size of ``dim``; one may be -1).

    Shapes:
        input ``(*, prod(sizes), *)``, output ``(*, *sizes, *)``.

    Example:
        >>> import fnn, torch
        >>> fnn.nn.Unflatten(1, (3, 4)).apply({}, torch.zeros(2, 12)).shape
        torch.Size([2, 3, 4])
    """

    dim: int
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        self.sizes = tuple(self.sizes)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        d = _dim(self.dim, x.ndim, self, scope, x.shape)
        known = 1
        for s in self.sizes:
            known *= s if s != -1 else 1
        n = x.shape[d]
        if (-1 not in self.sizes and known != n) or (-1 in self.sizes and n % max(known, 1)):
            raise ValueError(
                f"{_where(self, scope.path)}: cannot unflatten dim {self.dim} of size {n} into "
                f"{self.sizes} (input shape {tuple(x.shape)})."
            )
        return x.unflatten(d, self.sizes)
