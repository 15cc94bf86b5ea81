"""Dropout layers: ``Dropout``, ``Dropout1d``, ``Dropout2d``, ``Dropout3d``, ``AlphaDropout``.

Randomness comes only from the key given to ``apply`` (``model.apply(params, x, key=k,
train=True)``): each layer draws its mask with ``fnn.random.bernoulli`` from its own key, the
caller's key folded with the layer's path, so two dropout layers never share a mask and the same
key always gives the same masks. torch's global generator is never used.

In eval mode (``train=False``) and with ``rate == 0`` every layer returns its input unchanged
(no key needed). In train mode the output follows torch's formulas exactly for a given mask.
"""

from __future__ import annotations

import math

import torch

from fnn._src.samplers import bernoulli
from fnn.nn._module import Module, Scope, _where

__all__ = ["AlphaDropout", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d"]

Tensor = torch.Tensor

# SELU's alpha * scale: the value SELU saturates to for large negative inputs is -_ALPHA.
_ALPHA = 1.7580993408473766


def _check_rate(module: Module) -> None:
    rate = module.rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise ValueError(
            f"fnn.nn.{type(module).__name__}: rate (the drop probability, torch's p) must be "
            f"a number in [0, 1], got {rate!r}."
        )


def _key(module: Module, scope: Scope) -> Tensor:
    key = scope.key
    if key is None:
        raise ValueError(
            f"{_where(module, scope.path)} needs a PRNG key in train mode: pass key= to apply, "
            "e.g. `model.apply(params, x, key=fnn.random.key(step), train=True)` (use a new key "
            "each step), or train=False to evaluate without dropout."
        )
    return key


def _dropout(x: Tensor, keep: Tensor, rate: float) -> Tensor:
    """torch's ``_dropout_impl``: ``x * (keep / (1 - rate))``, ``keep`` boolean, broadcast."""
    return x * (keep.to(x.dtype) / (1.0 - rate))


def _alpha_dropout(x: Tensor, keep: Tensor, rate: float) -> Tensor:
    """torch's ``_dropout_impl`` for alpha dropout, op for op: ``a * x + b`` on kept entries,
    ``a * (-alpha) + b`` on dropped ones (``a``, ``b`` restore zero mean and unit variance)."""
    a = 1.0 / math.sqrt((_ALPHA * _ALPHA * rate + 1) * (1 - rate))
    noise = keep.to(x.dtype)
    b = (noise - 1) * (_ALPHA * a) + _ALPHA * a * rate
    return x * (noise * a) + b


class Dropout(Module):
    """Zero each element with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    The twin of ``torch.nn.Dropout``: in train mode, ``y = x * m / (1 - rate)`` with ``m``
    a Bernoulli(``1 - rate``) mask drawn from the key passed to ``apply``; in eval mode (or with
    ``rate == 0``) ``y = x``; ``rate == 1`` gives ``x * 0``, as torch.

    Args:
        rate: the probability of zeroing an element (torch's ``p``).

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Raises:
        ValueError: in train mode without a key (naming the layer's path).

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.Dropout(0.5)
        >>> params, state = model.init(fnn.random.key(0), torch.ones(2, 4))
        >>> params, state
        ({}, {})
        >>> model.apply(params, torch.ones(2, 4), key=fnn.random.key(1), train=True)
        tensor([[0., 2., 2., 0.],
                [2., 0., 2., 2.]])
        >>> model.apply(params, torch.ones(2, 4))  # eval mode: the identity
        tensor([[1., 1., 1., 1.],
                [1., 1., 1., 1.]])
    """

    rate: float = 0.5

    def __post_init__(self) -> None:
        _check_rate(self)

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        rate = self.rate
        if not scope.train or rate == 0:
            return x
        if rate == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        keep = bernoulli(_key(self, scope), 1.0 - rate, tuple(x.shape))
        return _dropout(x, keep, rate)


class _ChannelDropout(Module):
    """Dropout of whole channels of inputs with ``_spatial`` spatial dims (the ``DropoutNd``)."""

    _spatial = 0  # set by each subclass (a class attribute, not a field)
    rate: float = 0.5

    def __post_init__(self) -> None:
        _check_rate(self)

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        d = self._spatial
        if x.ndim not in (d + 1, d + 2):
            spatial = {1: "L", 2: "H, W", 3: "D, H, W"}[d]
            raise ValueError(
                f"{_where(self, scope.path)}: expected an input of shape (N, C, {spatial}) or, "
                f"unbatched, (C, {spatial}) ({d + 2} or {d + 1} dims), got shape "
                f"{tuple(x.shape)}. For element-wise dropout use fnn.nn.Dropout."
            )
        rate = self.rate
        if not scope.train or rate == 0:
            return x
        if rate == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        shape = (*x.shape[: x.ndim - d], *(1,) * d)  # one draw per (example, channel)
        keep = bernoulli(_key(self, scope), 1.0 - rate, shape)
        return _dropout(x, keep, rate)


class Dropout1d(_ChannelDropout):
    """Zero whole channels (1-D feature maps ``x[n, c, :]``) with probability ``rate``.

    The twin of ``torch.nn.Dropout1d``: each channel of each example is kept with probability
    ``1 - rate`` and scaled by ``1 / (1 - rate)``, or zeroed; the mask comes from the key passed
    to ``apply``. Eval mode (or ``rate == 0``) is the identity.

    Args:
        rate: the probability of zeroing a channel (torch's ``p``).

    Shapes:
        input ``(N, C, L)`` or unbatched ``(C, L)``, output the same; no parameters.

    Example:
        >>> import fnn, torch
        >>> y = fnn.nn.Dropout1d(0.5).apply({}, torch.ones(1, 4, 3), key=fnn.random.key(1),
        ...                                 train=True)
        >>> y[0]
        tensor([[0., 0., 0.],
                [2., 2., 2.],
                [2., 2., 2.],
                [0., 0., 0.]])
    """

    _spatial = 1


class Dropout2d(_ChannelDropout):
    """Zero whole channels (2-D feature maps ``x[n, c, :, :]``) with probability ``rate``.

    The twin of ``torch.nn.Dropout2d``: each channel of each example is kept with probability
    ``1 - rate`` and scaled by ``1 / (1 - rate)``, or zeroed; the mask comes from the key passed
    to ``apply``. Eval mode (or ``rate == 0``) is the identity.

    A 3-D input is one unbatched example ``(C, H, W)``, as torch's documentation describes
    and as ``Dropout1d``/``Dropout3d`` read theirs. (torch 2.13 itself still reads a 3-D input as
    ``(N, C, L)``, with a deprecation warning; fnn does not, so that a layer gives the same
    masks under ``fnn.vmap`` as on a batch. Use :class:`Dropout1d` for ``(N, C, L)``.)

    Args:
        rate: the probability of zeroing a channel (torch's ``p``).

    Shapes:
        input ``(N, C, H, W)`` or unbatched ``(C, H, W)``, output the same; no parameters.

    Example:
        >>> import fnn, torch
        >>> y = fnn.nn.Dropout2d(0.5).apply({}, torch.ones(2, 3, 4, 4), key=fnn.random.key(1),
        ...                                 train=True)
        >>> y[:, :, 0, 0]  # one value per channel
        tensor([[0., 2., 2.],
                [0., 2., 0.]])
    """

    _spatial = 2


class Dropout3d(_ChannelDropout):
    """Zero whole channels (3-D feature maps ``x[n, c, :, :, :]``) with probability ``rate``.

    The twin of ``torch.nn.Dropout3d``: each channel of each example is kept with probability
    ``1 - rate`` and scaled by ``1 / (1 - rate)``, or zeroed; the mask comes from the key passed
    to ``apply``. Eval mode (or ``rate == 0``) is the identity.

    Args:
        rate: the probability of zeroing a channel (torch's ``p``).

    Shapes:
        input ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``, output the same; no parameters.

    Example:
        >>> import fnn, torch
        >>> x = torch.ones(2, 3, 2, 2, 2)
        >>> y = fnn.nn.Dropout3d(0.5).apply({}, x, key=fnn.random.key(1), train=True)
        >>> y[:, :, 0, 0, 0]  # one value per channel
        tensor([[0., 2., 2.],
                [0., 2., 0.]])
    """

    _spatial = 3


class AlphaDropout(Module):
    """Dropout for self-normalising (SELU) networks, the twin of ``torch.nn.AlphaDropout``.

    Dropped elements are set to SELU's negative saturation value ``-alpha'`` (``alpha' =
    1.7580993...``), and an affine map ``a * . + b`` with ``a = ((1 - rate) * (1 + rate *
    alpha'^2))^(-1/2)`` and ``b = a * alpha' * rate`` keeps a zero-mean, unit-variance input at
    zero mean and unit variance (Klambauer et al., 2017). Kept: ``a * x + b``; dropped:
    ``-a * alpha' * (1 - rate)``. The mask is Bernoulli(``1 - rate``) from the key passed to
    ``apply``; eval mode (or ``rate == 0``) is the identity, ``rate == 1`` gives ``x * 0``.

    Args:
        rate: the probability of dropping an element (torch's ``p``).

    Shapes:
        input ``(*)``, output ``(*)``; no parameters.

    Example:
        >>> import fnn, torch
        >>> x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
        >>> y = fnn.nn.AlphaDropout(0.2).apply({}, x, key=fnn.random.key(0), train=True)
        >>> abs(y.mean().item()) < 0.02, abs(y.std().item() - 1) < 0.02
        (True, True)
    """

    rate: float = 0.5

    def __post_init__(self) -> None:
        _check_rate(self)

    def forward(self, scope: Scope, x: Tensor) -> Tensor:
        rate = self.rate
        if not scope.train or rate == 0:
            return x
        if rate == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        keep = bernoulli(_key(self, scope), 1.0 - rate, tuple(x.shape))
        return _alpha_dropout(x, keep, rate)
