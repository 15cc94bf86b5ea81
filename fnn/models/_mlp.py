"""A multi-layer perceptron: ``Linear`` layers with an activation (and dropout) between them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fnn.nn import Dropout, Linear, Module, Scope, relu

__all__ = ["MLP", "mlp"]


class MLP(Module):
    """``Linear`` layers named ``layers.0``, ``layers.1``, … with ``activation`` between them.

    ``x -> activation(layers.0(x)) -> dropout -> … -> layers.{n-1}(x)``: every layer but the last
    is followed by ``activation`` and, when ``dropout > 0``, by dropout (active in train mode,
    its masks drawn from the key passed to ``apply``). The names are those of a ``torch.nn``
    module holding ``self.layers = nn.ModuleList([nn.Linear(...), ...])``. The input size is
    inferred; each layer has torch's default ``Linear`` init.

    Args:
        features: the output size of each layer, e.g. ``(64, 64, 10)``.
        activation: a function ``x -> y`` (``fnn.nn.relu``) or an fnn module (``fnn.nn.GELU()``;
            one module shared by all layers, so a ``PReLU`` has one ``activation.weight``).
        dropout: the drop probability after each hidden activation (torch's ``p``).

    Shapes:
        input ``(*, in)``, output ``(*, features[-1])``; ``layers.i.weight
        (features[i], features[i - 1])`` (``in`` for ``i = 0``), ``layers.i.bias (features[i],)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.models.MLP((32, 10), dropout=0.1)
        >>> params, _ = model.init_shapes(torch.zeros(4, 8))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)  # doctest: +NORMALIZE_WHITESPACE
        {'layers': {'0': {'weight': (32, 8), 'bias': (32,)},
                    '1': {'weight': (10, 32), 'bias': (10,)}}}
    """

    features: Sequence[int]
    activation: Callable[[torch.Tensor], torch.Tensor] | Module = relu
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        if not self.features or not all(
            isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in self.features
        ):
            raise ValueError(
                "fnn.models.MLP: features must be a non-empty sequence of positive ints (the "
                f"output size of each layer), got {self.features!r}."
            )
        if not (callable(self.activation) or isinstance(self.activation, Module)):
            raise TypeError(
                "fnn.models.MLP: activation must be a function x -> y or an fnn module, got "
                f"{self.activation!r}."
            )
        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError(
                f"fnn.models.MLP: dropout (the drop probability) must be in [0, 1], got {rate!r}."
            )
        self.layers = tuple(Linear(f) for f in self.features)
        # One dropout per hidden layer (no parameters, so no names; own keys, own masks).
        n = len(self.features) - 1 if rate > 0 else 0
        self.dropouts = tuple(Dropout(rate) for _ in range(n))

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        act = scope.activation if isinstance(self.activation, Module) else self.activation
        *hidden, last = scope.layers
        dropouts = scope.dropouts if self.dropouts else ()
        for i, layer in enumerate(hidden):
            x = act(layer(x))
            if dropouts:
                x = dropouts[i](x)
        return last(x)


def mlp(
    features: Sequence[int],
    activation: Callable[[torch.Tensor], torch.Tensor] | Module = relu,
    dropout: float = 0.0,
) -> MLP:
    """A multi-layer perceptron: ``Linear`` layers ``layers.0``, ``layers.1``, …; see :class:`MLP`.

    Args:
        features: the output size of each layer; the last is the model's output size.
        activation: applied after every layer but the last (a function or an fnn module).
        dropout: the drop probability after each hidden activation (train mode only).

    Shapes:
        input ``(*, in)``, output ``(*, features[-1])``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.models.mlp([64, 64, 10], activation=fnn.nn.gelu)
        >>> x = torch.zeros(32, 784)
        >>> params, _ = model.init_shapes(x)
        >>> shapes = fnn.tree.map(lambda t: tuple(t.shape), params["layers"])
        >>> {name: layer["weight"] for name, layer in shapes.items()}
        {'0': (64, 784), '1': (64, 64), '2': (10, 64)}
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> model.apply(params, x).shape
        torch.Size([32, 10])
    """
    return MLP(features, activation, dropout)
