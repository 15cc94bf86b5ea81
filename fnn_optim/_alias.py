"""Optimizers with a ``torch.optim`` twin, as thin :func:`~fnn_optim.chain` s of building blocks.

Names follow Optax (``learning_rate``, ``b1``, ``b2``, ``decay``, ...); defaults follow
``torch.optim``, so ``fnn_optim.rmsprop(1e-2)`` steps exactly like
``torch.optim.RMSprop(params, lr=1e-2)``. ``weight_decay`` is torch's: coupled (added to the
gradient before the rule) except in :func:`adamw` and with ``decoupled_weight_decay=True``.

Optional terms that are zero (``weight_decay=0``, ``momentum=0``, ``lr_decay=0``) add no
transform, as torch skips them: their hyperparameters are then absent from the state (build the
optimizer with a nonzero value to change it later with :func:`~fnn_optim.set_hyperparams`).
Every optimizer returns a ``chain``, so its state is a tuple whose last entry holds
``hyperparams["learning_rate"]``.
"""

from __future__ import annotations

import numbers
from typing import Any

from fnn_optim._base import GradientTransformation, ScalarOrSchedule, chain
from fnn_optim._functional_steps import adam_functional_step, sgd_functional_step
from fnn_optim._inplace import adam_inplace_step, sgd_inplace_step, with_fused_steps
from fnn_optim._inplace import lr_resolver as _lr_resolver
from fnn_optim._transforms import (
    add_decayed_weights,
    scale_by_adadelta,
    scale_by_adam,
    scale_by_adamax,
    scale_by_asgd,
    scale_by_learning_rate,
    scale_by_nadam,
    scale_by_radam,
    scale_by_rms,
    scale_by_rprop,
    scale_by_rss,
    scale_by_stddev,
    scale_by_time_decay,
    trace,
)

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "amsgrad",
    "asgd",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
]


def _check(fn: str, name: str, value: Any, low: float, high: float | None = None) -> None:
    """Raise ``ValueError`` unless ``low <= value`` (and ``value < high``), like torch.optim.

    Schedules and tensors are not checked.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"fnn_optim.{fn}: {name} must be {bound}; got {value}.")


def _coupled_decay(weight_decay: float) -> list[GradientTransformation]:
    return [add_decayed_weights(weight_decay)] if weight_decay != 0 else []


def sgd(
    learning_rate: ScalarOrSchedule = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Stochastic gradient descent with optional momentum (Robbins & Monro, 1951).

    Update rule (torch.optim.SGD's)::

        g = g + weight_decay * params
        buf = g at the first step, else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf          (when momentum != 0)
        params = params - learning_rate * g

    Torch twin: ``torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov)``
    (``lr`` -> ``learning_rate``). Defaults are torch's: ``learning_rate=1e-3``, no momentum, no
    dampening, no weight decay. Nesterov momentum: Sutskever et al., 2013.

    Chain: ``add_decayed_weights`` (if ``weight_decay``), ``trace`` (if ``momentum``),
    ``scale_by_learning_rate``. In plain eager mode the update with momentum writes into recycled
    buffers, and a float32 CPU state at least the size of the last-level cache (or 32 MiB if that is
    smaller) is written in one pass with streaming stores (:mod:`fnn_optim._streaming`; same
    results, ``FNN_STREAMING_STORES=0`` turns it off).

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.sgd(learning_rate=0.1, momentum=0.9)
        >>> state = opt.init(params)
        >>> for _ in range(2):
        ...     updates, state = opt.update({"w": torch.tensor([1.0, 1.0])}, state, params)
        ...     params = fnn_optim.apply_updates(params, updates)
        >>> params
        {'w': tensor([ 0.7100, -2.2900])}
    """
    _check("sgd", "learning_rate", learning_rate, 0.0)
    _check("sgd", "momentum", momentum, 0.0)
    _check("sgd", "weight_decay", weight_decay, 0.0)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            "fnn_optim.sgd: Nesterov momentum requires a momentum and zero dampening; got "
            f"momentum={momentum}, dampening={dampening}."
        )
    momentum_part = [trace(momentum, nesterov, dampening)] if momentum != 0 else []
    opt = chain(
        *_coupled_decay(weight_decay), *momentum_part, scale_by_learning_rate(learning_rate)
    )
    kinds = dict(coupled_decay=weight_decay != 0, momentum=momentum != 0, nesterov=nesterov)
    resolve = _lr_resolver(learning_rate)
    return with_fused_steps(
        opt, sgd_inplace_step(resolve, **kinds), sgd_functional_step(resolve, **kinds)
    )


def _adam_checks(fn: str, learning_rate: Any, b1: float, b2: float, eps: float) -> None:
    _check(fn, "learning_rate", learning_rate, 0.0)
    _check(fn, "b1", b1, 0.0, 1.0)
    _check(fn, "b2", b2, 0.0, 1.0)
    _check(fn, "eps", eps, 0.0)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    *,
    amsgrad: bool = False,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2015, arXiv:1412.6980).

    Update rule, with ``t`` the step number from 1::

        g = g + weight_decay * params                       (coupled, as torch.optim.Adam)
        mu = b1 * mu + (1 - b1) * g;   nu = b2 * nu + (1 - b2) * g**2
        nu_hat = running max of nu if amsgrad else nu
        params = params - learning_rate * (mu / (1 - b1**t))
                          / (sqrt(nu_hat / (1 - b2**t) + eps_root) + eps)

    Torch twin: ``torch.optim.Adam(params, lr, betas=(b1, b2), eps, weight_decay, amsgrad)``.
    Defaults are torch's (``learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8``); ``eps_root``
    (Optax's, default 0) has no torch counterpart.

    Chain: ``add_decayed_weights`` (if ``weight_decay``), ``scale_by_adam``,
    ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.adam(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.9000, -1.9000])}
    """
    _adam_checks("adam", learning_rate, b1, b2, eps)
    _check("adam", "weight_decay", weight_decay, 0.0)
    opt = chain(
        *_coupled_decay(weight_decay),
        scale_by_adam(b1, b2, eps, eps_root, amsgrad=amsgrad),
        scale_by_learning_rate(learning_rate),
    )
    kinds = dict(decoupled=False, coupled_decay=weight_decay != 0, amsgrad=amsgrad)
    resolve = _lr_resolver(learning_rate)
    return with_fused_steps(
        opt, adam_inplace_step(resolve, **kinds), adam_functional_step(resolve, **kinds)
    )


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 1e-2,
    mask: Any = None,
    *,
    amsgrad: bool = False,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019, arXiv:1711.05101).

    Update rule: the Adam direction ``d`` (see :func:`adam`, without coupled decay), then::

        params = params - learning_rate * (d + weight_decay * params)

    which equals torch's ``params *= 1 - lr * weight_decay`` followed by the Adam step.

    Torch twin: ``torch.optim.AdamW(params, lr, betas=(b1, b2), eps, weight_decay, amsgrad)``.
    Defaults are torch's: ``learning_rate=1e-3, weight_decay=1e-2``. ``mask`` (Optax's): a tree
    of bools like the params, or a function of the params returning one, choosing the leaves that
    decay.

    Chain: ``scale_by_adam``, ``add_decayed_weights``, ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.adamw(learning_rate=0.1, weight_decay=0.5)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params), params)
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.8500, -1.8000])}
    """
    _adam_checks("adamw", learning_rate, b1, b2, eps)
    _check("adamw", "weight_decay", weight_decay, 0.0)
    opt = chain(
        scale_by_adam(b1, b2, eps, eps_root, amsgrad=amsgrad),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
    if mask is not None:
        return opt
    kinds = dict(decoupled=True, coupled_decay=False, amsgrad=amsgrad)
    resolve = _lr_resolver(learning_rate)
    return with_fused_steps(
        opt, adam_inplace_step(resolve, **kinds), adam_functional_step(resolve, **kinds)
    )


def amsgrad(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """AMSGrad (Reddi et al., 2018, "On the Convergence of Adam and Beyond").

    :func:`adam` with ``amsgrad=True``: the denominator uses the running maximum of the
    (uncorrected) second moment ``nu``, bias-corrected like ``nu``.

    Torch twin: ``torch.optim.Adam(params, lr, betas=(b1, b2), eps, weight_decay,
    amsgrad=True)``; defaults are torch's.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.amsgrad(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.9000, -1.9000])}
    """
    return adam(learning_rate, b1, b2, eps, eps_root, weight_decay, amsgrad=True)


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Adamax, Adam with the infinity norm (Kingma & Ba, 2015, section 7).

    Update rule, with ``t`` the step number from 1::

        g = g + weight_decay * params
        mu = b1 * mu + (1 - b1) * g;   nu = max(b2 * nu, |g| + eps)
        params = params - learning_rate / (1 - b1**t) * mu / nu

    Torch twin: ``torch.optim.Adamax(params, lr, betas=(b1, b2), eps, weight_decay)``; defaults
    are torch's (``learning_rate=2e-3``). ``eps`` sits inside the maximum as in torch.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.adamax(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.9000, -1.9000])}
    """
    _adam_checks("adamax", learning_rate, b1, b2, eps)
    _check("adamax", "weight_decay", weight_decay, 0.0)
    return chain(
        *_coupled_decay(weight_decay),
        scale_by_adamax(b1, b2, eps),
        scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    *,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    """NAdam, Adam with Nesterov momentum (Dozat, 2016, "Incorporating Nesterov Momentum into
    Adam"), with torch's momentum schedule.

    Update rule, with ``t`` from 1, ``m_t = b1 (1 - 0.5 * 0.96**(t * momentum_decay))`` and
    ``P_t = m_1 ... m_t``::

        g = g + weight_decay * params                  (unless decoupled_weight_decay)
        mu, nu as in Adam;  denom = sqrt(nu / (1 - b2**t)) + eps
        params = params - learning_rate * ((1 - m_t) / (1 - P_t) * g / denom
                                           + m_{t+1} / (1 - P_t m_{t+1}) * mu / denom)
        params = params - learning_rate * weight_decay * params   (if decoupled_weight_decay)

    Torch twin: ``torch.optim.NAdam(params, lr, betas=(b1, b2), eps, weight_decay,
    momentum_decay, decoupled_weight_decay)``; defaults are torch's (``learning_rate=2e-3``).
    This is not Optax's ``nadam`` (Optax's is Adam with ``nesterov=True``, no momentum schedule).

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.nadam(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.8944, -1.8944])}
    """
    _adam_checks("nadam", learning_rate, b1, b2, eps)
    _check("nadam", "weight_decay", weight_decay, 0.0)
    _check("nadam", "momentum_decay", momentum_decay, 0.0)
    rule = scale_by_nadam(b1, b2, eps, momentum_decay)
    if decoupled_weight_decay:
        parts = [rule, *_coupled_decay(weight_decay)]
    else:
        parts = [*_coupled_decay(weight_decay), rule]
    return chain(*parts, scale_by_learning_rate(learning_rate))


def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    threshold: float = 5.0,
    *,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    """RAdam, Rectified Adam (Liu et al., 2020, arXiv:1908.03265).

    Update rule, with ``t`` from 1, ``rho_inf = 2 / (1 - b2) - 1`` and
    ``rho_t = rho_inf - 2 t b2**t / (1 - b2**t)``::

        g = g + weight_decay * params                  (unless decoupled_weight_decay)
        mu, nu as in Adam;  mu_hat = mu / (1 - b1**t)
        d = r_t * mu_hat * sqrt(1 - b2**t) / (sqrt(nu) + eps)   if rho_t > threshold
        d = mu_hat                                               otherwise
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        params = params - learning_rate * d
        params = params - learning_rate * weight_decay * params   (if decoupled_weight_decay)

    Torch twin: ``torch.optim.RAdam(params, lr, betas=(b1, b2), eps, weight_decay,
    decoupled_weight_decay)``, whose threshold is 5; defaults are torch's.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.radam(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.9500, -1.7000])}
    """
    _adam_checks("radam", learning_rate, b1, b2, eps)
    _check("radam", "weight_decay", weight_decay, 0.0)
    rule = scale_by_radam(b1, b2, eps, threshold)
    if decoupled_weight_decay:
        parts = [rule, *_coupled_decay(weight_decay)]
    else:
        parts = [*_coupled_decay(weight_decay), rule]
    return chain(*parts, scale_by_learning_rate(learning_rate))


def adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011, JMLR 12).

    Update rule, with ``t`` from 1::

        g = g + weight_decay * params
        sum_of_squares = sum_of_squares + g**2          (starts at initial_accumulator_value)
        params = params - learning_rate / (1 + (t - 1) * lr_decay)
                          * g / (sqrt(sum_of_squares) + eps)

    Torch twin: ``torch.optim.Adagrad(params, lr, lr_decay, weight_decay,
    initial_accumulator_value, eps)``; defaults are torch's (``learning_rate=1e-2, eps=1e-10``,
    accumulator from 0). Optax's ``adagrad`` puts ``eps`` inside the root and starts at 0.1.

    Chain: ``add_decayed_weights`` (if ``weight_decay``), ``scale_by_rss(eps_in_sqrt=False)``,
    ``scale_by_time_decay`` (if ``lr_decay``), ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.adagrad(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.9000, -1.9000])}
    """
    _check("adagrad", "learning_rate", learning_rate, 0.0)
    _check("adagrad", "lr_decay", lr_decay, 0.0)
    _check("adagrad", "weight_decay", weight_decay, 0.0)
    _check("adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0)
    _check("adagrad", "eps", eps, 0.0)
    time_decay = [scale_by_time_decay(lr_decay)] if lr_decay != 0 else []
    return chain(
        *_coupled_decay(weight_decay),
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=False),
        *time_decay,
        scale_by_learning_rate(learning_rate),
    )


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Adadelta (Zeiler, 2012, arXiv:1212.5701).

    Update rule::

        g = g + weight_decay * params
        e_g = rho * e_g + (1 - rho) * g**2
        d = sqrt(e_x + eps) / sqrt(e_g + eps) * g
        e_x = rho * e_x + (1 - rho) * d**2
        params = params - learning_rate * d

    Torch twin: ``torch.optim.Adadelta(params, lr, rho, eps, weight_decay)``; defaults are
    torch's (``learning_rate=1.0, rho=0.9, eps=1e-6``).

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.adadelta(learning_rate=1.0, rho=0.0, eps=0.01)
        >>> updates, state = opt.update({"w": torch.tensor([0.0, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 1.0000, -1.9001])}
    """
    _check("adadelta", "learning_rate", learning_rate, 0.0)
    _check("adadelta", "rho", rho, 0.0, 1.0 + 1e-12)
    _check("adadelta", "eps", eps, 0.0)
    _check("adadelta", "weight_decay", weight_decay, 0.0)
    return chain(
        *_coupled_decay(weight_decay),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    decay: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    initial_scale: float = 0.0,
) -> GradientTransformation:
    """RMSprop (Tieleman & Hinton, 2012, lecture 6.5; centred: Graves, 2013, arXiv:1308.0850).

    Update rule::

        g = g + weight_decay * params
        nu = decay * nu + (1 - decay) * g**2       (starts at initial_scale)
        mu = decay * mu + (1 - decay) * g          (centered only)
        d = g / (sqrt(nu - mu**2) + eps) if centered else g / (sqrt(nu) + eps)
        buf = momentum * buf + d;  d = buf         (if momentum)
        params = params - learning_rate * d

    Torch twin: ``torch.optim.RMSprop(params, lr, alpha=decay, eps, weight_decay, momentum,
    centered)``; defaults are torch's (``learning_rate=1e-2, decay=0.99, eps=1e-8``, ``eps``
    outside the root). Optax's defaults differ (``decay=0.9``, ``eps`` inside the root).

    Chain: ``add_decayed_weights`` (if ``weight_decay``), ``scale_by_rms`` or
    ``scale_by_stddev`` (``eps_in_sqrt=False``), ``trace`` (if ``momentum``),
    ``scale_by_learning_rate``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.rmsprop(learning_rate=0.1, decay=0.75, eps=0.0)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.8000, -1.8000])}
    """
    _check("rmsprop", "learning_rate", learning_rate, 0.0)
    _check("rmsprop", "decay", decay, 0.0, 1.0 + 1e-12)
    _check("rmsprop", "eps", eps, 0.0)
    _check("rmsprop", "weight_decay", weight_decay, 0.0)
    _check("rmsprop", "momentum", momentum, 0.0)
    block = scale_by_stddev if centered else scale_by_rms
    momentum_part = [trace(momentum)] if momentum > 0 else []
    return chain(
        *_coupled_decay(weight_decay),
        block(decay, eps, initial_scale, eps_in_sqrt=False),
        *momentum_part,
        scale_by_learning_rate(learning_rate),
    )


def rprop(
    learning_rate: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50.0),
) -> GradientTransformation:
    """Rprop, resilient backpropagation (Riedmiller & Braun, 1993, ICNN).

    Each element has its own step size, starting at ``learning_rate``; with ``s = sign(g *
    prev)``::

        step = clip(step * (etas[1] if s > 0 else etas[0] if s < 0 else 1), *step_sizes)
        g = 0 where s < 0;  params = params - sign(g) * step;  prev = g

    Torch twin: ``torch.optim.Rprop(params, lr, etas, step_sizes)``; defaults are torch's. As in
    torch, ``learning_rate`` is only the initial step size, so it cannot be a schedule and is not
    in the state; the state's hyperparameters are ``eta_minus``, ``eta_plus``,
    ``min_step_size``, ``max_step_size``. The step sizes are ``state[0].step_sizes``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.rprop(learning_rate=0.1)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([ 0.9000, -1.9000])}
    """
    if callable(learning_rate):
        raise TypeError(
            "fnn_optim.rprop: learning_rate is Rprop's initial step size and cannot be a "
            "schedule (Rprop adapts its step sizes itself)."
        )
    (eta_minus, eta_plus), (min_step, max_step) = etas, step_sizes
    _check("rprop", "learning_rate", learning_rate, 0.0)
    if not 0.0 < eta_minus < 1.0 < eta_plus:
        raise ValueError(
            f"fnn_optim.rprop: etas must satisfy 0 < etas[0] < 1 < etas[1]; got {etas}."
        )
    return chain(scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step, max_step))


def asgd(
    learning_rate: ScalarOrSchedule = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992, SIAM J. Control
    Optim. 30(4)).

    Update rule, with ``t`` from 1, ``eta`` starting at ``learning_rate`` and ``mu`` at 1::

        g = g + weight_decay * params
        params = params - eta * (g + lambd * params)
        ax = ax + mu * (params - ax)
        eta = learning_rate / (1 + lambd * learning_rate * t)**alpha;  mu = 1 / max(1, t - t0)

    Torch twin: ``torch.optim.ASGD(params, lr, lambd, alpha, t0, weight_decay)``; defaults are
    torch's. **The averaged parameters** are ``state[-1].ax`` (a tree like the params; torch keeps
    them in ``optimizer.state[p]["ax"]``): evaluate the model with them after training.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.asgd(learning_rate=0.1, lambd=0.0)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params), params)
        >>> fnn_optim.apply_updates(params, updates), state[-1].ax
        ({'w': tensor([ 0.9500, -1.7000])}, {'w': tensor([ 0.9500, -1.7000])})
    """
    _check("asgd", "learning_rate", learning_rate, 0.0)
    _check("asgd", "weight_decay", weight_decay, 0.0)
    return chain(*_coupled_decay(weight_decay), scale_by_asgd(learning_rate, lambd, alpha, t0))
