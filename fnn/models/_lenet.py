"""LeNet-5 for small grey-scale images (MNIST-sized)."""

from __future__ import annotations

import torch

from fnn.nn import Conv2d, Linear, MaxPool2d, Module, Scope, relu
from fnn.nn._module import _where

__all__ = ["LeNet5", "lenet5"]


class LeNet5(Module):
    """LeNet-5: two 5x5 convolutions with max pooling, then three ``Linear`` layers.

    ``conv1`` (6 channels, 5x5, ``padding``) → relu → 2x2 max pool → ``conv2`` (16 channels,
    5x5) → relu → 2x2 max pool → flatten → ``fc1`` (120) → relu → ``fc2`` (84) → relu → ``fc3``
    (``num_classes``). The names are those of the usual ``torch.nn`` version (``conv1``,
    ``conv2``, ``fc1``, ``fc2``, ``fc3``, pooling with ``F.max_pool2d``); every layer has torch's
    default init. ``padding=2`` on a 28x28 input is the paper's 32x32 input (MNIST padded with
    zeros); use ``padding=0`` for 32x32 inputs. Both give ``fc1`` 16 * 5 * 5 = 400 inputs; other
    sizes work too (``fc1``'s input size is inferred).

    Args:
        num_classes: the output size of ``fc3``.
        padding: the zero padding of ``conv1``.

    Shapes:
        input ``(N, C, H, W)`` (``C = 1``, 28x28 with ``padding=2`` or 32x32 with
        ``padding=0``), output ``(N, num_classes)``; ``conv1.weight (6, C, 5, 5)``,
        ``conv2.weight (16, 6, 5, 5)``, ``fc1.weight (120, 400)``, ``fc2.weight (84, 120)``,
        ``fc3.weight (num_classes, 84)``.

    Example:
        >>> import fnn, torch
        >>> params, _ = fnn.models.LeNet5(padding=0).init_shapes(torch.zeros(2, 1, 32, 32))
        >>> {k: v["weight"] for k, v in fnn.tree.map(lambda t: tuple(t.shape), params).items()}
        ... # doctest: +NORMALIZE_WHITESPACE
        {'conv1': (6, 1, 5, 5), 'conv2': (16, 6, 5, 5), 'fc1': (120, 400), 'fc2': (84, 120),
         'fc3': (10, 84)}
    """

    num_classes: int = 10
    padding: int = 2

    def __post_init__(self) -> None:
        for name, value, minimum in (
            ("num_classes", self.num_classes, 1),
            ("padding", self.padding, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(
                    f"fnn.models.LeNet5: {name} must be an int >= {minimum}, got {value!r}."
                )
        self.conv1 = Conv2d(6, 5, padding=self.padding)
        self.conv2 = Conv2d(16, 5)
        self.pool = MaxPool2d(2)
        self.fc1 = Linear(120)
        self.fc2 = Linear(84)
        self.fc3 = Linear(self.num_classes)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{_where(self, scope.path)}: expected images of shape (N, C, H, W), e.g. "
                f"(N, 1, 28, 28), got {got}."
            )
        x = scope.pool(relu(scope.conv1(x)))
        x = scope.pool(relu(scope.conv2(x)))
        x = torch.flatten(x, 1)
        x = relu(scope.fc1(x))
        x = relu(scope.fc2(x))
        return scope.fc3(x)


def lenet5(num_classes: int = 10, padding: int = 2) -> LeNet5:
    """LeNet-5 for 1x28x28 (MNIST; ``padding=2``) or 1x32x32 (``padding=0``) images.

    See :class:`LeNet5` for the layout.

    Args:
        num_classes: the output size.
        padding: the zero padding of ``conv1`` (2 for 28x28 inputs, 0 for 32x32).

    Shapes:
        input ``(N, 1, 28, 28)`` (or ``(N, 1, 32, 32)`` with ``padding=0``), output
        ``(N, num_classes)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.models.lenet5()
        >>> x = torch.zeros(8, 1, 28, 28)
        >>> params, state = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)["fc1"], state
        ({'weight': (120, 400), 'bias': (120,)}, {})
        >>> model.apply(params, x).shape
        torch.Size([8, 10])
    """
    return LeNet5(num_classes, padding)
