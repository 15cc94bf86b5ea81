"""Optimizers without a ``torch.optim`` twin (and Muon, which has one), as thin
:func:`~fnn_optim.chain` s of building blocks.

Names and defaults are Optax's (``learning_rate`` has no default, as in Optax), except
:func:`muon`, whose rule and defaults are ``torch.optim.Muon``'s. As in
:mod:`fnn_optim._alias`, optional terms that are zero (``weight_decay=0``, no momentum) add no
transform, so their hyperparameters are absent from the state.
"""

from __future__ import annotations

from typing import Any

import torch

from fnn import tree as _tree
from fnn_optim._alias import _check
from fnn_optim._base import GradientTransformation, Params, ScalarOrSchedule, chain
from fnn_optim._more_transforms import (
    _MUON_NS_COEFFS,
    clip_by_block_rms,
    ema,
    scale_by_belief,
    scale_by_factored_rms,
    scale_by_lion,
    scale_by_muon,
    scale_by_novograd,
    scale_by_param_block_rms,
    scale_by_trust_ratio,
)
from fnn_optim._transforms import (
    add_decayed_weights,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    trace,
)

__all__ = ["adabelief", "adafactor", "lamb", "lars", "lion", "muon", "novograd"]


def _mask_or_none(mask: Any) -> Any:
    """Optax's ``mask=True`` (every leaf) is ``None`` here."""
    return None if mask is True else mask


def _decay(weight_decay: float, mask: Any = None) -> list[GradientTransformation]:
    if weight_decay == 0:
        return []
    return [add_decayed_weights(weight_decay, _mask_or_none(mask))]


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
) -> GradientTransformation:
    """AdaBelief (Zhuang et al., 2020, arXiv:2010.07468): Adam whose second moment tracks the
    variance of the gradient around its prediction ``mu`` (the "belief").

    Update rule, with ``t`` the step number from 1::

        mu = b1 * mu + (1 - b1) * g
        nu = b2 * nu + (1 - b2) * (g - mu)**2 + eps_root
        params = params - learning_rate * (mu / (1 - b1**t)) / (sqrt(nu / (1 - b2**t)) + eps)

    No torch twin; defaults are Optax's (``eps=eps_root=1e-16``). Chain: ``scale_by_belief``,
    ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.adabelief(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.8889, -1.8889])}
    """
    _check("adabelief", "learning_rate", learning_rate, 0.0)
    _check("adabelief", "b1", b1, 0.0, 1.0)
    _check("adabelief", "b2", b2, 0.0, 1.0)
    return chain(scale_by_belief(b1, b2, eps, eps_root), scale_by_learning_rate(learning_rate))


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 1e-3,
    mask: Any = None,
) -> GradientTransformation:
    """Lion, evolved sign momentum (Chen et al., 2023, "Symbolic Discovery of Optimization
    Algorithms", arXiv:2302.06675).

    Update rule::

        d = sign(b1 * mu + (1 - b1) * g);   mu = b2 * mu + (1 - b2) * g
        params = params - learning_rate * (d + weight_decay * params)

    No torch twin; defaults are Optax's (``b1=0.9, b2=0.99, weight_decay=1e-3``). Use a
    learning rate 3-10x smaller than AdamW's. ``mask``: which leaves decay (a tree of bools or a
    function of the params). Chain: ``scale_by_lion``, ``add_decayed_weights``,
    ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.lion(learning_rate=0.1, weight_decay=0.0)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params), params)
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.9000, -1.9000])}
    """
    _check("lion", "learning_rate", learning_rate, 0.0)
    _check("lion", "b1", b1, 0.0, 1.0)
    _check("lion", "b2", b2, 0.0, 1.0)
    _check("lion", "weight_decay", weight_decay, 0.0)
    return chain(
        scale_by_lion(b1, b2), *_decay(weight_decay, mask), scale_by_learning_rate(learning_rate)
    )


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> GradientTransformation:
    """LAMB, layer-wise adaptive moments (You et al., 2020, "Large Batch Optimization for Deep
    Learning: Training BERT in 76 minutes", arXiv:1904.00962).

    Update rule, per tensor, with ``t`` the step number from 1::

        mu, nu as in Adam;  r = (mu / (1 - b1**t)) / (sqrt(nu / (1 - b2**t) + eps_root) + eps)
        r = r + weight_decay * params
        params = params - learning_rate * (||params|| / ||r||) * r     (ratio 1 if a norm is 0)

    No torch twin; defaults are Optax's (``eps=1e-6``). ``mask``: which leaves decay. Chain:
    ``scale_by_adam``, ``add_decayed_weights``, ``scale_by_trust_ratio``,
    ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([3.0, 4.0])}
        >>> opt = fnn_optim.lamb(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([1.0, 1.0])}, opt.init(params), params)
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([2.6464, 3.6464])}
    """
    _check("lamb", "learning_rate", learning_rate, 0.0)
    _check("lamb", "b1", b1, 0.0, 1.0)
    _check("lamb", "b2", b2, 0.0, 1.0)
    _check("lamb", "weight_decay", weight_decay, 0.0)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        *_decay(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Any = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    """LARS, layer-wise adaptive rate scaling (You et al., 2017, "Large Batch Training of
    Convolutional Networks", arXiv:1708.03888), Optax's formulation.

    Update rule, per tensor::

        g = g + weight_decay * params
        g = trust_coefficient * ||params|| / (||g|| + eps) * g      (ratio 1 if a norm is 0)
        buf = momentum * buf + learning_rate * g  (starting from 0)
        params = params - (learning_rate * g + momentum * buf if nesterov else buf)

    No torch twin; defaults are Optax's (``trust_coefficient=0.001, momentum=0.9``). The masks
    (a tree of bools like the params, a function of the params, or ``True`` for every leaf)
    choose the leaves that decay and the leaves that get the trust ratio (commonly: not the
    biases and normalisation scales). Chain: ``add_decayed_weights``, ``scale_by_trust_ratio``,
    ``scale_by_learning_rate``, ``trace``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([3.0, 4.0])}
        >>> opt = fnn_optim.lars(learning_rate=1.0)
        >>> updates, state = opt.update({"w": torch.tensor([0.0, 1.0])}, opt.init(params), params)
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([3.0000, 3.9950])}
    """
    _check("lars", "learning_rate", learning_rate, 0.0)
    _check("lars", "weight_decay", weight_decay, 0.0)
    _check("lars", "momentum", momentum, 0.0)
    momentum_part = [trace(momentum, nesterov)] if momentum != 0 else []
    return chain(
        *_decay(weight_decay, weight_decay_mask),
        scale_by_trust_ratio(
            trust_coefficient=trust_coefficient, eps=eps, mask=_mask_or_none(trust_ratio_mask)
        ),
        scale_by_learning_rate(learning_rate),
        *momentum_part,
    )


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    weight_decay_rate: float | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern, 2018, "Adafactor: Adaptive Learning Rates with Sublinear
    Memory Cost", arXiv:1804.04235), Optax's ``adafactor``.

    Update rule, with ``rho_t = 1 - t**-decay_rate`` (``t`` from 1, minus ``decay_offset``)::

        v = factored running mean of g**2 + eps      (scale_by_factored_rms: row and column
            means for matrices with two axes >= min_dim_size_to_factor, full otherwise)
        u = g / sqrt(v)
        u = u / max(1, rms(u) / clipping_threshold)              (if clipping_threshold)
        u = learning_rate * u                                    (if learning_rate)
        u = u * max(rms(params), 1e-3)                           (if multiply_by_parameter_scale)
        u = momentum * m + (1 - momentum) * u; m = u             (if momentum)
        u = u + weight_decay_rate * params                       (if weight_decay_rate)
        params = params - u

    Defaults are Optax's: no learning rate (the parameter scale sets the step), factoring from
    128 rows and columns, update clipping at 1. **Not** ``torch.optim.Adafactor`` (torch >= 2.5),
    which is another variant: it factors the last two axes of every tensor with two or more
    dimensions, steps by ``min(lr, 1/sqrt(t)) * max(eps2, rms(params))``, clamps ``v`` at
    ``eps1**2`` instead of adding ``eps`` and decays weights by ``lr * weight_decay``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.full((2, 2), 2.0)}
        >>> opt = fnn_optim.adafactor(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.ones(2, 2)}, opt.init(params), params)
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([[1.8000, 1.8000],
                [1.8000, 1.8000]])}
    """
    _check("adafactor", "learning_rate", learning_rate, 0.0)
    parts = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        parts.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms())
    if momentum is not None:
        parts.append(ema(momentum, debias=False))
    if weight_decay_rate is not None:
        parts.append(add_decayed_weights(weight_decay_rate, _mask_or_none(weight_decay_mask)))
    parts.append(scale(-1.0))
    return chain(*parts)


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """NovoGrad (Ginsburg et al., 2019, "Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks", arXiv:1905.11286).

    Update rule, per tensor; at the first step ``nu = ||g||**2`` and ``mu = a``::

        nu = b2 * nu + (1 - b2) * ||g||**2
        a = g / (sqrt(nu + eps_root) + eps) + weight_decay * params
        mu = b1 * mu + a
        params = params - learning_rate * mu

    No torch twin; defaults are Optax's (``b2=0.25, eps=1e-6``). Chain: ``scale_by_novograd``,
    ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.novograd(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([3.0, 4.0])}, opt.init(params), params)
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.9400, -2.0800])}
    """
    _check("novograd", "learning_rate", learning_rate, 0.0)
    _check("novograd", "b1", b1, 0.0, 1.0)
    _check("novograd", "b2", b2, 0.0, 1.0)
    _check("novograd", "weight_decay", weight_decay, 0.0)
    return chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def _is_matrix(params: Params) -> Any:
    return _tree.map(lambda p: p.ndim == 2, params)


def _is_not_matrix(params: Params) -> Any:
    return _tree.map(lambda p: p.ndim != 2, params)


def muon(
    learning_rate: ScalarOrSchedule = 1e-3,
    weight_decay: float = 0.1,
    beta: float = 0.95,
    nesterov: bool = True,
    ns_coeffs: tuple[float, float, float] = _MUON_NS_COEFFS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    ns_dtype: torch.dtype = torch.bfloat16,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
) -> GradientTransformation:
    """Muon, momentum orthogonalised by Newton-Schulz (Jordan et al., 2024,
    https://kellerjordan.github.io/posts/muon/), for the matrices; Adam for the other leaves.

    Update rule for each 2-d leaf of shape ``(A, B)`` (PyTorch's ``(out, in)``)::

        buf = beta * buf + (1 - beta) * g
        m = (1 - beta) * g + beta * buf if nesterov else buf
        O = NewtonSchulz(m)          (ns_steps quintic iterations with ns_coeffs, in ns_dtype)
        params = params - learning_rate * (weight_decay * params + s * O)
        s = sqrt(max(1, A / B)), or 0.2 * sqrt(max(A, B)) with adjust_lr_fn="match_rms_adamw"

    Leaves that are not matrices (Optax's rule) take an AdamW step with the same learning rate:
    ``adam_b1``, ``adam_b2``, ``adam_eps``, ``adam_eps_root``, decoupled ``adam_weight_decay``.

    Torch twin for the matrices: ``torch.optim.Muon(params, lr, weight_decay,
    momentum=beta, nesterov, ns_coefficients=ns_coeffs, eps, ns_steps, adjust_lr_fn)``, whose
    defaults these are (``learning_rate=1e-3, weight_decay=0.1, beta=0.95``, Newton-Schulz in
    bfloat16); torch.optim.Muon refuses other leaves. Optax's ``muon`` differs: bias-corrected
    momentum, float32 Newton-Schulz with ``eps=1e-8``, no weight decay by default. See
    :func:`~fnn_optim.scale_by_muon`.

    Chain: ``scale_by_muon``, ``add_decayed_weights`` (matrices, if ``weight_decay``),
    ``add_decayed_weights`` (other leaves, if ``adam_weight_decay``), ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"b": torch.zeros(2), "w": torch.zeros(2, 2)}
        >>> opt = fnn_optim.muon(learning_rate=0.1, ns_dtype=torch.float32)
        >>> grads = {"b": torch.ones(2), "w": torch.eye(2)}
        >>> updates, state = opt.update(grads, opt.init(params), params)
        >>> new = fnn_optim.apply_updates(params, updates)
        >>> new["b"], torch.linalg.svdvals(new["w"]).round(decimals=2)
        (tensor([-0.1000, -0.1000]), tensor([0.1100, 0.1100]))
    """
    _check("muon", "learning_rate", learning_rate, 0.0)
    _check("muon", "weight_decay", weight_decay, 0.0)
    _check("muon", "beta", beta, 0.0)
    _check("muon", "adam_weight_decay", adam_weight_decay, 0.0)
    decay = [add_decayed_weights(weight_decay, _is_matrix)] if weight_decay != 0 else []
    if adam_weight_decay != 0:
        decay.append(add_decayed_weights(adam_weight_decay, _is_not_matrix))
    return chain(
        scale_by_muon(
            ns_coeffs,
            ns_steps,
            beta,
            eps,
            nesterov=nesterov,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
            adam_b1=adam_b1,
            adam_b2=adam_b2,
            adam_eps=adam_eps,
            adam_eps_root=adam_eps_root,
        ),
        *decay,
        scale_by_learning_rate(learning_rate),
    )
