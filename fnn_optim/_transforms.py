"""Building blocks: gradient transformations that optimizers chain together.

Each block is a factory returning a :class:`~fnn_optim.GradientTransformation`, with its state
``NamedTuple`` defined right above it (Optax's layout). The arithmetic runs over the flattened
leaves with ``torch._foreach_*`` ops, one op for all parameters. ``update`` is pure: it never
writes into the incoming updates or state (new tensors are returned; under ``fnn.jit`` with
donation they are written back into the old buffers).

Conventions: a block that normalises or accumulates the gradient (``scale_by_adam``, ...)
returns a *descent direction* (to be multiplied by ``-learning_rate``, e.g. by
:func:`scale_by_learning_rate`); :func:`scale_by_rprop` and :func:`scale_by_asgd`, whose step sizes
are their learning rates, return the final update. Hyperparameters are 0-d tensors in
``state.hyperparams``; per-step scalar factors (bias corrections, ...) are computed from them and
from the int64 ``count`` with tensor ops, so a compiled step never recompiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fnn import tree as _tree
from fnn_optim import _foreach as _fe
from fnn_optim._base import (
    GradientTransformation,
    Params,
    ScalarOrSchedule,
    Schedule,
    Updates,
    _check_tree,
    _flatten,
    _hyper,
    _hyperparams,
    _is_schedule,
    _lerp,
    _n,
    _plain_eager,
    _resolve,
    _scheduled,
    _unflatten,
    _zero_count,
)

__all__ = [
    "add_decayed_weights",
    "scale",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_asgd",
    "scale_by_learning_rate",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "scale_by_time_decay",
    "trace",
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _zeros_like(params: Params) -> Any:
    """A tree of zeros with the structure, shapes, dtypes and devices of ``params``."""
    return _tree.map(lambda p: torch.zeros_like(p, memory_format=torch.preserve_format), params)


def _full_like(params: Params, value: float | Tensor) -> Any:
    return _tree.map(lambda p: torch.full_like(p, float(value)), params)


def _updates_and(where: str, updates: Updates, state_tree: Any) -> tuple[list, Any, list]:
    """Flatten ``updates`` and a per-parameter ``state_tree``; raise if their structures differ."""
    u, udef = _flatten(updates)
    s, sdef = _flatten(state_tree)
    _check_tree(where, udef, sdef)
    return u, udef, s


def _need_params(where: str, params: Params | None) -> None:
    if params is None:
        raise ValueError(
            f"{where}: this transformation needs the current parameters; call "
            "`opt.update(grads, state, params)`."
        )


def _sqrt(x: list[Tensor]) -> list[Tensor]:
    return list(_fe.sqrt(x))


def _ema(moments: list[Tensor], values: list[Tensor], one_minus_decay: Tensor) -> list[Tensor]:
    """``decay * moments + (1 - decay) * values`` (a new list; ``torch.lerp``, as torch.optim)."""
    return _lerp(moments, values, one_minus_decay)


# --------------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------------


class ScaleState(NamedTuple):
    """State of :func:`scale`: ``hyperparams = {"step_size": 0-d tensor}``."""

    hyperparams: dict[str, Tensor]


def scale(step_size: float | Tensor) -> GradientTransformation:
    """Multiply the updates by ``step_size`` (a hyperparameter, settable in the state).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale(-0.5)
        >>> opt.update({"w": torch.ones(2)}, opt.init({"w": torch.zeros(2)}))[0]
        {'w': tensor([-0.5000, -0.5000])}
    """

    def init(params: Params) -> ScaleState:
        return ScaleState(_hyperparams(params, step_size=step_size))

    def update(
        updates: Updates, state: ScaleState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleState]:
        del params, extra
        u, udef = _flatten(updates)
        return _unflatten(udef, _fe.mul(u, state.hyperparams["step_size"])), state

    return GradientTransformation(init, update)


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`.

    ``count``: int64 0-d, updates so far. ``hyperparams["learning_rate"]``: the learning rate (with
    a schedule, the value used at the last step; ``schedule(0)`` after ``init``). ``scheduled``:
    ``{"learning_rate": None}`` when a schedule drives it, else ``{}``.
    """

    count: Tensor
    hyperparams: dict[str, Tensor]
    scheduled: dict[str, None]


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Multiply the updates by ``-learning_rate`` (by ``learning_rate`` if ``flip_sign=False``).

    Args:
        learning_rate: a number, a 0-d tensor, or a schedule ``count -> 0-d tensor`` evaluated at
            the number of updates done so far (0 at the first update).
        flip_sign: negate, so that descent directions become updates to add to the parameters.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_learning_rate(lambda count: 0.1 / (1.0 + count))
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> for _ in range(2):
        ...     updates, state = opt.update({"w": torch.ones(2)}, state)
        >>> updates["w"], fnn_optim.get_hyperparams(state)
        (tensor([-0.0500, -0.0500]), {'learning_rate': tensor(0.0500)})
    """
    is_schedule = _is_schedule(learning_rate)
    scheduled = _scheduled("learning_rate") if is_schedule else {}

    def init(params: Params) -> ScaleByLearningRateState:
        count = _zero_count(params)
        first = _hyper(0.0, params)
        value = _resolve(learning_rate, count, first) if is_schedule else learning_rate
        return ScaleByLearningRateState(
            count, _hyperparams(params, learning_rate=value), dict(scheduled)
        )

    def update(
        updates: Updates,
        state: ScaleByLearningRateState,
        params: Params | None = None,
        **extra: Any,
    ) -> tuple[Updates, ScaleByLearningRateState]:
        del params, extra
        lr = _resolve(learning_rate, state.count, state.hyperparams["learning_rate"])
        u, udef = _flatten(updates)
        out = _fe.mul(u, -lr if flip_sign else lr)
        new_state = ScaleByLearningRateState(
            state.count + 1, {"learning_rate": lr}, dict(scheduled)
        )
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: ``count`` and the last ``hyperparams["step_size"]``."""

    count: Tensor
    hyperparams: dict[str, Tensor]
    scheduled: dict[str, None]


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply the updates by ``step_size_fn(count)`` (``count`` = updates done so far).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_schedule(lambda count: 2.0**count)
        >>> state = opt.init({"w": torch.zeros(1)})
        >>> for _ in range(3):
        ...     updates, state = opt.update({"w": torch.ones(1)}, state)
        >>> updates
        {'w': tensor([4.])}
    """
    if not _is_schedule(step_size_fn):
        raise TypeError(
            "fnn_optim.scale_by_schedule: expected a schedule, a function of the int64 step "
            f"count tensor; got {step_size_fn!r}. Use fnn_optim.scale for a constant."
        )

    def init(params: Params) -> ScaleByScheduleState:
        count = _zero_count(params)
        value = _resolve(step_size_fn, count, _hyper(0.0, params))
        return ScaleByScheduleState(count, {"step_size": value}, _scheduled("step_size"))

    def update(
        updates: Updates, state: ScaleByScheduleState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByScheduleState]:
        del params, extra
        value = _resolve(step_size_fn, state.count, state.hyperparams["step_size"])
        u, udef = _flatten(updates)
        new_state = ScaleByScheduleState(
            state.count + 1, {"step_size": value}, _scheduled("step_size")
        )
        return _unflatten(udef, _fe.mul(u, value)), new_state

    return GradientTransformation(init, update)


class ScaleByTimeDecayState(NamedTuple):
    """State of :func:`scale_by_time_decay`: ``count`` and ``hyperparams["lr_decay"]``."""

    count: Tensor
    hyperparams: dict[str, Tensor]


def scale_by_time_decay(lr_decay: float | Tensor) -> GradientTransformation:
    """Divide the updates by ``1 + count * lr_decay`` (torch.optim.Adagrad's ``lr_decay``).

    ``count`` is the number of updates done before this one (0 at the first update).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_time_decay(1.0)
        >>> state = opt.init({"w": torch.zeros(1)})
        >>> _, state = opt.update({"w": torch.ones(1)}, state)
        >>> opt.update({"w": torch.ones(1)}, state)[0]
        {'w': tensor([0.5000])}
    """

    def init(params: Params) -> ScaleByTimeDecayState:
        return ScaleByTimeDecayState(_zero_count(params), _hyperparams(params, lr_decay=lr_decay))

    def update(
        updates: Updates, state: ScaleByTimeDecayState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByTimeDecayState]:
        del params, extra
        decay = state.hyperparams["lr_decay"]
        factor = 1.0 / (1.0 + state.count * decay)
        u, udef = _flatten(updates)
        out = _fe.mul(u, factor)
        return _unflatten(udef, out), ScaleByTimeDecayState(state.count + 1, state.hyperparams)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Adam family
# --------------------------------------------------------------------------------------------


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`.

    ``mu``, ``nu``: first and second moments (trees like the params); ``nu_max``: running maximum
    of ``nu`` with ``amsgrad=True``, else ``None``; ``hyperparams``: ``b1``, ``b2``, ``eps``,
    ``eps_root``.
    """

    count: Tensor
    mu: Any
    nu: Any
    nu_max: Any
    hyperparams: dict[str, Tensor]


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    amsgrad: bool = False,
) -> GradientTransformation:
    r"""Rescale by Adam's bias-corrected moments (Kingma & Ba, 2015, arXiv:1412.6980).

    With ``t = count + 1``::

        mu = b1 * mu + (1 - b1) * g            nu = b2 * nu + (1 - b2) * g**2
        nu_hat = max over steps of nu if amsgrad else nu
        direction = (mu / (1 - b1**t)) / (sqrt(nu_hat / (1 - b2**t) + eps_root) + eps)

    ``amsgrad=True`` is torch.optim.Adam's AMSGrad (Reddi et al., 2018): the maximum of the
    *uncorrected* ``nu`` is kept and bias-corrected like ``nu``.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_adam()
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> opt.update({"w": torch.tensor([2.0, -3.0])}, state)[0]
        {'w': tensor([ 1., -1.])}
    """

    def init(params: Params) -> ScaleByAdamState:
        return ScaleByAdamState(
            _zero_count(params),
            _zeros_like(params),
            _zeros_like(params),
            _zeros_like(params) if amsgrad else None,
            _hyperparams(params, b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        )

    def update(
        updates: Updates, state: ScaleByAdamState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByAdamState]:
        del params, extra
        g, udef, mu = _updates_and("fnn_optim.scale_by_adam", updates, state.mu)
        h = state.hyperparams
        count = state.count + 1
        mu = _ema(mu, g, 1 - h["b1"])
        compiling = not _plain_eager()
        if compiling:  # inductor fuses the whole step into one pass whatever the formula
            nu = _ema(_tree.leaves(state.nu), _fe.mul(g, g), 1 - h["b2"])
        else:  # torch.optim's formula: no g**2 buffer, one pass fewer over memory
            nu = list(_fe.mul(_tree.leaves(state.nu), h["b2"]))
            _fe.addcmul_(nu, g, g, value=(1 - h["b2"]).item())
        nu_max = None
        nu_hat = nu
        if amsgrad:
            nu_hat = nu_max = list(_fe.maximum(_tree.leaves(state.nu_max), nu))
        bc1 = 1 - h["b1"] ** count
        bc2 = 1 - h["b2"] ** count
        # direction = mu / (sqrt(nu + eps_root * bc2) * (bc1 / sqrt(bc2)) + eps * bc1)
        if compiling or h["eps_root"].item() != 0:
            denom = list(_fe.add(nu_hat, h["eps_root"] * bc2))
            _fe.sqrt_(denom)
        else:
            denom = list(_fe.sqrt(nu_hat))
        _fe.mul_(denom, bc1 / bc2.sqrt())
        _fe.add_(denom, h["eps"] * bc1)
        out = _fe.div(mu, denom)
        new_state = ScaleByAdamState(
            count,
            _unflatten(udef, mu),
            _unflatten(udef, nu),
            None if nu_max is None else _unflatten(udef, nu_max),
            h,
        )
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


class ScaleByAdamaxState(NamedTuple):
    """State of :func:`scale_by_adamax`: ``mu`` (first moment), ``nu`` (infinity norm)."""

    count: Tensor
    mu: Any
    nu: Any
    hyperparams: dict[str, Tensor]


def scale_by_adamax(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Rescale by Adamax's infinity norm (Kingma & Ba, 2015, section 7), as torch.optim.Adamax.

    With ``t = count + 1``::

        mu = b1 * mu + (1 - b1) * g      nu = max(b2 * nu, |g| + eps)
        direction = mu / ((1 - b1**t) * nu)

    ``eps`` is added inside the maximum as in torch.optim.Adamax (Optax adds it to ``nu`` after the
    maximum instead).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_adamax(eps=0.0)
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> opt.update({"w": torch.tensor([2.0, -4.0])}, state)[0]
        {'w': tensor([ 1., -1.])}
    """

    def init(params: Params) -> ScaleByAdamaxState:
        return ScaleByAdamaxState(
            _zero_count(params),
            _zeros_like(params),
            _zeros_like(params),
            _hyperparams(params, b1=b1, b2=b2, eps=eps),
        )

    def update(
        updates: Updates, state: ScaleByAdamaxState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByAdamaxState]:
        del params, extra
        g, udef, mu = _updates_and("fnn_optim.scale_by_adamax", updates, state.mu)
        h = state.hyperparams
        count = state.count + 1
        mu = _ema(mu, g, 1 - h["b1"])
        abs_g = list(_fe.abs(g))
        _fe.add_(abs_g, h["eps"])
        nu = list(_fe.mul(_tree.leaves(state.nu), h["b2"]))
        _fe.maximum_(nu, abs_g)
        denom = _fe.mul(nu, 1 - h["b1"] ** count)
        out = _fe.div(mu, denom)
        new_state = ScaleByAdamaxState(count, _unflatten(udef, mu), _unflatten(udef, nu), h)
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


class ScaleByRAdamState(NamedTuple):
    """State of :func:`scale_by_radam`: ``mu``, ``nu`` as in Adam."""

    count: Tensor
    mu: Any
    nu: Any
    hyperparams: dict[str, Tensor]


def scale_by_radam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, threshold: float = 5.0
) -> GradientTransformation:
    """Rescale by Rectified Adam (Liu et al., 2020, arXiv:1908.03265), as torch.optim.RAdam.

    With ``t = count + 1``, ``rho_inf = 2 / (1 - b2) - 1`` and
    ``rho_t = rho_inf - 2 t b2**t / (1 - b2**t)``::

        mu, nu as in Adam;  mu_hat = mu / (1 - b1**t)
        if rho_t > threshold:
            r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            direction = r * mu_hat * sqrt(1 - b2**t) / (sqrt(nu) + eps)
        else:
            direction = mu_hat

    The branch is taken with tensor arithmetic (no Python ``if`` on tensors), so it compiles.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_radam()
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> updates, state = opt.update({"w": torch.tensor([2.0, -3.0])}, state)
        >>> updates["w"].round(decimals=4)  # the first steps: bias-corrected momentum only
        tensor([ 2., -3.])
    """

    def init(params: Params) -> ScaleByRAdamState:
        return ScaleByRAdamState(
            _zero_count(params),
            _zeros_like(params),
            _zeros_like(params),
            _hyperparams(params, b1=b1, b2=b2, eps=eps, threshold=threshold),
        )

    def update(
        updates: Updates, state: ScaleByRAdamState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByRAdamState]:
        del params, extra
        g, udef, mu = _updates_and("fnn_optim.scale_by_radam", updates, state.mu)
        h = state.hyperparams
        count = state.count + 1
        b2 = h["b2"]
        mu = _ema(mu, g, 1 - h["b1"])
        nu = _ema(_tree.leaves(state.nu), _fe.mul(g, g), 1 - b2)
        bc1 = 1 - h["b1"] ** count
        b2_t = b2**count
        bc2 = 1 - b2_t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * count * b2_t / bc2
        rectify = rho_t > h["threshold"]
        ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        rect = torch.where(rectify, ratio, torch.ones_like(ratio)).sqrt()
        on = rectify.to(bc1.dtype)
        # denom = sqrt(nu) + eps when rectifying, 1 otherwise (on is 0 or 1).
        denom = _sqrt(nu)
        _fe.add_(denom, h["eps"])
        _fe.mul_(denom, on)
        _fe.add_(denom, 1 - on)
        coef = torch.where(rectify, rect * bc2.sqrt(), torch.ones_like(rect)) / bc1
        out = _fe.div(mu, denom)
        _fe.mul_(out, coef)
        new_state = ScaleByRAdamState(count, _unflatten(udef, mu), _unflatten(udef, nu), h)
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`: ``mu``, ``nu`` and ``mu_product`` (0-d, the product of
    the momentum coefficients so far)."""

    count: Tensor
    mu: Any
    nu: Any
    mu_product: Tensor
    hyperparams: dict[str, Tensor]


def scale_by_nadam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3
) -> GradientTransformation:
    """Rescale by NAdam (Dozat, 2016) with torch.optim.NAdam's momentum schedule.

    With ``t = count + 1``, ``m_t = b1 (1 - 0.5 * 0.96**(t * momentum_decay))`` and
    ``P_t = m_1 ... m_t`` (``mu_product``)::

        mu, nu as in Adam;  denom = sqrt(nu / (1 - b2**t)) + eps
        direction = (1 - m_t) / (1 - P_t) * g / denom + m_{t+1} / (1 - P_t m_{t+1}) * mu / denom

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_nadam()
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> opt.update({"w": torch.tensor([2.0, -3.0])}, state)[0]
        {'w': tensor([ 1.0565, -1.0565])}
    """

    def init(params: Params) -> ScaleByNadamState:
        return ScaleByNadamState(
            _zero_count(params),
            _zeros_like(params),
            _zeros_like(params),
            _hyper(1.0, params),
            _hyperparams(params, b1=b1, b2=b2, eps=eps, momentum_decay=momentum_decay),
        )

    def update(
        updates: Updates, state: ScaleByNadamState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByNadamState]:
        del params, extra
        g, udef, mu = _updates_and("fnn_optim.scale_by_nadam", updates, state.mu)
        h = state.hyperparams
        b1, psi = h["b1"], h["momentum_decay"]
        count = state.count + 1
        mu = _ema(mu, g, 1 - b1)
        nu = _ema(_tree.leaves(state.nu), _fe.mul(g, g), 1 - h["b2"])
        m_t = b1 * (1.0 - 0.5 * 0.96 ** (count * psi))
        m_next = b1 * (1.0 - 0.5 * 0.96 ** ((count + 1) * psi))
        mu_product = state.mu_product * m_t
        c_grad = (1.0 - m_t) / (1.0 - mu_product)
        c_mu = m_next / (1.0 - mu_product * m_next)
        denom = _sqrt(nu)
        _fe.div_(denom, (1 - h["b2"] ** count).sqrt())
        _fe.add_(denom, h["eps"])
        out = list(_fe.mul(g, c_grad))
        _fe.add_(out, _fe.mul(mu, c_mu))
        _fe.div_(out, denom)
        new_state = ScaleByNadamState(
            count, _unflatten(udef, mu), _unflatten(udef, nu), mu_product, h
        )
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# RMS family
# --------------------------------------------------------------------------------------------


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: ``nu``, the running mean of squared gradients."""

    nu: Any
    hyperparams: dict[str, Tensor]


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    *,
    eps_in_sqrt: bool = True,
) -> GradientTransformation:
    """Rescale by the root mean square of past gradients (Tieleman & Hinton, 2012; RMSProp)::

        nu = decay * nu + (1 - decay) * g**2          (nu starts at initial_scale)
        direction = g / sqrt(nu + eps) if eps_in_sqrt else g / (sqrt(nu) + eps)

    Defaults are Optax's; :func:`~fnn_optim.rmsprop` uses ``eps_in_sqrt=False``, torch's rule.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_rms(decay=0.75, eps=0.0)
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> opt.update({"w": torch.tensor([2.0, -3.0])}, state)[0]
        {'w': tensor([ 2., -2.])}
    """

    def init(params: Params) -> ScaleByRmsState:
        return ScaleByRmsState(
            _full_like(params, initial_scale), _hyperparams(params, decay=decay, eps=eps)
        )

    def update(
        updates: Updates, state: ScaleByRmsState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByRmsState]:
        del params, extra
        g, udef, nu = _updates_and("fnn_optim.scale_by_rms", updates, state.nu)
        h = state.hyperparams
        nu = _ema(nu, _fe.mul(g, g), 1 - h["decay"])
        if eps_in_sqrt:
            denom = list(_fe.add(nu, h["eps"]))
            _fe.sqrt_(denom)
        else:
            denom = _sqrt(nu)
            _fe.add_(denom, h["eps"])
        out = _fe.div(g, denom)
        return _unflatten(udef, out), ScaleByRmsState(_unflatten(udef, nu), h)

    return GradientTransformation(init, update)


class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev`: ``mu`` and ``nu``, running means of ``g`` and ``g**2``."""

    mu: Any
    nu: Any
    hyperparams: dict[str, Tensor]


def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    *,
    eps_in_sqrt: bool = True,
) -> GradientTransformation:
    """Rescale by the centred root mean square (Graves, 2013; RMSprop with ``centered=True``)::

        mu = decay * mu + (1 - decay) * g      nu = decay * nu + (1 - decay) * g**2
        direction = g / sqrt(nu - mu**2 + eps) if eps_in_sqrt else g / (sqrt(nu - mu**2) + eps)

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_stddev(decay=0.5, eps=0.0)
        >>> state = opt.init({"w": torch.zeros(1)})
        >>> opt.update({"w": torch.tensor([2.0])}, state)[0]
        {'w': tensor([2.])}
    """

    def init(params: Params) -> ScaleByRStdDevState:
        return ScaleByRStdDevState(
            _zeros_like(params),
            _full_like(params, initial_scale),
            _hyperparams(params, decay=decay, eps=eps),
        )

    def update(
        updates: Updates, state: ScaleByRStdDevState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByRStdDevState]:
        del params, extra
        g, udef, mu = _updates_and("fnn_optim.scale_by_stddev", updates, state.mu)
        h = state.hyperparams
        mu = _ema(mu, g, 1 - h["decay"])
        nu = _ema(_tree.leaves(state.nu), _fe.mul(g, g), 1 - h["decay"])
        var = list(_fe.mul(mu, mu))
        _fe.neg_(var)
        _fe.add_(var, nu)
        if eps_in_sqrt:
            _fe.add_(var, h["eps"])
            _fe.sqrt_(var)
        else:
            _fe.sqrt_(var)
            _fe.add_(var, h["eps"])
        out = _fe.div(g, var)
        new_state = ScaleByRStdDevState(_unflatten(udef, mu), _unflatten(udef, nu), h)
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`: ``sum_of_squares`` of all gradients so far."""

    sum_of_squares: Any
    hyperparams: dict[str, Tensor]


def scale_by_rss(
    initial_accumulator_value: float = 0.1, eps: float = 1e-7, *, eps_in_sqrt: bool = True
) -> GradientTransformation:
    """Rescale by the root of the sum of squared gradients (Duchi et al., 2011; Adagrad)::

        sum_of_squares += g**2                  (starts at initial_accumulator_value)
        direction = g / sqrt(sum_of_squares + eps) if eps_in_sqrt
                    else g / (sqrt(sum_of_squares) + eps)

    Defaults are Optax's; :func:`~fnn_optim.adagrad` uses ``eps_in_sqrt=False``, torch's rule.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> opt.update({"w": torch.tensor([2.0, -3.0])}, state)[0]
        {'w': tensor([ 1., -1.])}
    """

    def init(params: Params) -> ScaleByRssState:
        return ScaleByRssState(
            _full_like(params, initial_accumulator_value), _hyperparams(params, eps=eps)
        )

    def update(
        updates: Updates, state: ScaleByRssState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByRssState]:
        del params, extra
        g, udef, acc = _updates_and("fnn_optim.scale_by_rss", updates, state.sum_of_squares)
        eps = state.hyperparams["eps"]
        acc = list(_fe.add(acc, _fe.mul(g, g)))
        if eps_in_sqrt:
            denom = list(_fe.add(acc, eps))
            _fe.sqrt_(denom)
        else:
            denom = _sqrt(acc)
            _fe.add_(denom, eps)
        out = _fe.div(g, denom)
        return _unflatten(udef, out), ScaleByRssState(_unflatten(udef, acc), state.hyperparams)

    return GradientTransformation(init, update)


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`: ``e_g`` (mean of ``g**2``), ``e_x`` (of steps**2)."""

    e_g: Any
    e_x: Any
    hyperparams: dict[str, Tensor]


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    """Rescale by Adadelta's ratio of RMS step to RMS gradient (Zeiler, 2012, arXiv:1212.5701)::

        e_g = rho * e_g + (1 - rho) * g**2
        direction = sqrt(e_x + eps) / sqrt(e_g + eps) * g
        e_x = rho * e_x + (1 - rho) * direction**2

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_adadelta(rho=0.0, eps=1e-6)
        >>> state = opt.init({"w": torch.zeros(1)})
        >>> opt.update({"w": torch.tensor([1.0])}, state)[0]
        {'w': tensor([0.0010])}
    """

    def init(params: Params) -> ScaleByAdaDeltaState:
        return ScaleByAdaDeltaState(
            _zeros_like(params), _zeros_like(params), _hyperparams(params, rho=rho, eps=eps)
        )

    def update(
        updates: Updates, state: ScaleByAdaDeltaState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByAdaDeltaState]:
        del params, extra
        g, udef, e_g = _updates_and("fnn_optim.scale_by_adadelta", updates, state.e_g)
        h = state.hyperparams
        e_g = _ema(e_g, _fe.mul(g, g), 1 - h["rho"])
        e_x = _tree.leaves(state.e_x)
        std = list(_fe.add(e_g, h["eps"]))
        _fe.sqrt_(std)
        delta = list(_fe.add(e_x, h["eps"]))
        _fe.sqrt_(delta)
        _fe.div_(delta, std)
        _fe.mul_(delta, g)
        e_x = _ema(e_x, _fe.mul(delta, delta), 1 - h["rho"])
        new_state = ScaleByAdaDeltaState(_unflatten(udef, e_g), _unflatten(udef, e_x), h)
        return _unflatten(udef, delta), new_state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Momentum and weight decay
# --------------------------------------------------------------------------------------------


class TraceState(NamedTuple):
    """State of :func:`trace`: ``count`` and the momentum buffer ``trace``."""

    count: Tensor
    trace: Any
    hyperparams: dict[str, Tensor]


def trace(decay: float, nesterov: bool = False, dampening: float = 0.0) -> GradientTransformation:
    """Momentum, with torch.optim.SGD's rule (Polyak, 1964; Sutskever et al., 2013 for Nesterov)::

        buf = g                                   at the first update
        buf = decay * buf + (1 - dampening) * g   afterwards
        direction = g + decay * buf if nesterov else buf

    The momentum coefficient is stored as ``hyperparams["momentum"]`` (the name of the argument
    of :func:`~fnn_optim.sgd` and :func:`~fnn_optim.rmsprop`), with ``hyperparams["dampening"]``.
    Without dampening this is Optax's ``trace``.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.trace(decay=0.5)
        >>> state = opt.init({"w": torch.zeros(1)})
        >>> for _ in range(3):
        ...     updates, state = opt.update({"w": torch.ones(1)}, state)
        >>> updates
        {'w': tensor([1.7500])}
    """
    if nesterov and dampening != 0:
        raise ValueError(
            f"fnn_optim.trace: Nesterov momentum requires dampening=0 (got {dampening}), "
            "as in torch.optim.SGD."
        )

    def init(params: Params) -> TraceState:
        return TraceState(
            _zero_count(params),
            _zeros_like(params),
            _hyperparams(params, momentum=decay, dampening=dampening),
        )

    def update(
        updates: Updates, state: TraceState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, TraceState]:
        del params, extra
        g, udef, buf = _updates_and("fnn_optim.trace", updates, state.trace)
        h = state.hyperparams
        m = h["momentum"]
        # The buffer starts at zero, so the first update (coefficient 1) sets it to g.
        buf = list(_fe.mul(buf, m))
        if _plain_eager():  # torch.optim's kernels: g folded in with a Python alpha, no g * coef
            first = bool(state.count == 0)
            _fe.add_(buf, g, alpha=1.0 if first else 1 - h["dampening"].item())
        else:
            coef = torch.where(state.count == 0, torch.ones_like(m), 1 - h["dampening"])
            _fe.add_(buf, _fe.mul(g, coef))
        if nesterov:
            out = list(_fe.mul(buf, m))
            _fe.add_(out, g)
        else:
            out = buf
        return _unflatten(udef, out), TraceState(state.count + 1, _unflatten(udef, buf), h)

    return GradientTransformation(init, update)


class AddDecayedWeightsState(NamedTuple):
    """State of :func:`add_decayed_weights`: ``hyperparams["weight_decay"]``."""

    hyperparams: dict[str, Tensor]


def add_decayed_weights(
    weight_decay: float | Tensor = 0.0,
    mask: Any | Callable[[Params], Any] | None = None,
) -> GradientTransformation:
    """Add ``weight_decay * params`` to the updates (L2 regularisation / decoupled decay).

    Before a rescaling block this is torch's coupled ``weight_decay`` (added to the gradient);
    after it and before :func:`scale_by_learning_rate` it is AdamW's decoupled decay
    (Loshchilov & Hutter, 2019).

    Args:
        weight_decay: the coefficient.
        mask: ``None`` (decay every leaf), a pytree of bools with the structure of the params
            (``True`` = decay), or a function ``params -> such a tree``.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"b": torch.ones(2), "w": torch.ones(2)}
        >>> opt = fnn_optim.add_decayed_weights(0.1, mask=lambda p: {"b": False, "w": True})
        >>> opt.update({"b": torch.zeros(2), "w": torch.zeros(2)}, opt.init(params), params)[0]
        {'b': tensor([0., 0.]), 'w': tensor([0.1000, 0.1000])}
    """

    def init(params: Params) -> AddDecayedWeightsState:
        return AddDecayedWeightsState(_hyperparams(params, weight_decay=weight_decay))

    def update(
        updates: Updates, state: AddDecayedWeightsState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, AddDecayedWeightsState]:
        del extra
        where = "fnn_optim.add_decayed_weights"
        _need_params(where, params)
        u, udef = _flatten(updates)
        p, pdef = _flatten(params)
        _check_tree(where, udef, pdef, names=("the updates", "the params"))
        wd = state.hyperparams["weight_decay"]
        if mask is None:
            out = list(_fe.mul(p, wd))
            _fe.add_(out, u)
            return _unflatten(udef, out), state
        m = mask(params) if callable(mask) else mask
        flags, mdef = _flatten(m)
        _check_tree(where, mdef, pdef, names=("the mask", "the params"))
        idx = [i for i, f in enumerate(flags) if f]
        out = list(u)
        if idx:
            decayed = list(_fe.mul([p[i] for i in idx], wd))
            _fe.add_(decayed, [u[i] for i in idx])
            for i, d in zip(idx, decayed, strict=True):
                out[i] = d
        return _unflatten(udef, out), state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Blocks whose step sizes are the learning rate (torch's Rprop and ASGD)
# --------------------------------------------------------------------------------------------


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`: ``count``, ``prev`` (the last gradient, zeroed where its
    sign flipped) and ``step_sizes`` (per element, like the params)."""

    count: Tensor
    prev: Any
    step_sizes: Any
    hyperparams: dict[str, Tensor]


def scale_by_rprop(
    learning_rate: float = 1e-2,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> GradientTransformation:
    """Resilient backpropagation (Riedmiller & Braun, 1993), torch.optim.Rprop's variant.

    Every element has its own step size, starting at ``learning_rate``. With ``s = sign(g *
    prev)``::

        step_size = clip(step_size * (eta_plus if s > 0 else eta_minus if s < 0 else 1),
                         min_step_size, max_step_size)
        g = 0 where s < 0;  update = -sign(g) * step_size;  prev = g

    Returns the final update (already negated): chain nothing after it but transforms that
    keep its scale. ``learning_rate`` is only the initial step size, so it is not a
    hyperparameter of the state (as in torch, where changing ``lr`` later has no effect).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_rprop(learning_rate=0.1)
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> updates, state = opt.update({"w": torch.tensor([2.0, -3.0])}, state)
        >>> updates, opt.update({"w": torch.tensor([1.0, 1.0])}, state)[0]
        ({'w': tensor([-0.1000,  0.1000])}, {'w': tensor([-0.1200, -0.0000])})
    """

    def init(params: Params) -> ScaleByRpropState:
        return ScaleByRpropState(
            _zero_count(params),
            _zeros_like(params),
            _full_like(params, learning_rate),
            _hyperparams(
                params,
                eta_minus=eta_minus,
                eta_plus=eta_plus,
                min_step_size=min_step_size,
                max_step_size=max_step_size,
            ),
        )

    def update(
        updates: Updates, state: ScaleByRpropState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByRpropState]:
        del params, extra
        g, udef, prev = _updates_and("fnn_optim.scale_by_rprop", updates, state.prev)
        h = state.hyperparams
        n = len(g)
        s = list(_fe.mul(g, prev))
        _fe.sign_(s)
        # factor = 1 + [s > 0] (eta_plus - 1) + [s < 0] (eta_minus - 1), with s in {-1, 0, 1}.
        pos = list(_fe.clamp_min(s, 0.0))  # 1 where s > 0
        neg = list(_fe.clamp_max(s, 0.0))  # -1 where s < 0
        _fe.mul_(pos, h["eta_plus"] - 1)
        factor = list(_fe.mul(neg, 1 - h["eta_minus"]))
        _fe.add_(factor, pos)
        _fe.add_(factor, 1.0)
        steps = list(_fe.mul(_tree.leaves(state.step_sizes), factor))
        _fe.maximum_(steps, _n(h["min_step_size"], n))
        _fe.minimum_(steps, _n(h["max_step_size"], n))
        _fe.add_(neg, 1.0)  # 0 where s < 0, else 1
        new_prev = list(_fe.mul(g, neg))
        out = list(_fe.sign(new_prev))
        _fe.mul_(out, steps)
        _fe.neg_(out)
        new_state = ScaleByRpropState(
            state.count + 1, _unflatten(udef, new_prev), _unflatten(udef, steps), h
        )
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)


class ScaleByAsgdState(NamedTuple):
    """State of :func:`scale_by_asgd`.

    ``ax``: the averaged parameters (a tree like the params): read them to evaluate the averaged
    model. ``eta``: the step size of the next update (0-d). ``mu``: the averaging coefficient of
    the next update (0-d). ``hyperparams``: ``learning_rate``, ``lambd``, ``alpha``, ``t0``.
    """

    count: Tensor
    eta: Tensor
    mu: Tensor
    ax: Any
    hyperparams: dict[str, Tensor]
    scheduled: dict[str, None]


def scale_by_asgd(
    learning_rate: ScalarOrSchedule = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
) -> GradientTransformation:
    """Averaged SGD (Polyak & Juditsky, 1992), torch.optim.ASGD's rule; the final update.

    With ``t = count + 1`` and ``eta``, ``mu`` from the previous step (``lr`` and ``1`` at the
    first)::

        update = -eta * (g + lambd * params)
        ax = ax + mu * (params + update - ax)
        eta = lr / (1 + lambd * lr * t)**alpha;   mu = 1 / max(1, t - t0)

    Needs ``params``. Returns the final update (already negated), so it must be the last
    transform of a chain: ``ax`` averages ``params + update``.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_asgd(learning_rate=0.1, lambd=0.0)
        >>> params = {"w": torch.zeros(1)}
        >>> updates, state = opt.update({"w": torch.ones(1)}, opt.init(params), params)
        >>> updates, state.ax
        ({'w': tensor([-0.1000])}, {'w': tensor([-0.1000])})
    """
    is_schedule = _is_schedule(learning_rate)
    scheduled = _scheduled("learning_rate") if is_schedule else {}

    def init(params: Params) -> ScaleByAsgdState:
        count = _zero_count(params)
        lr = _resolve(learning_rate, count, _hyper(0.0, params)) if is_schedule else learning_rate
        h = _hyperparams(params, learning_rate=lr, lambd=lambd, alpha=alpha, t0=t0)
        return ScaleByAsgdState(
            count,
            h["learning_rate"].clone(),
            torch.ones_like(h["learning_rate"]),
            _zeros_like(params),
            h,
            dict(scheduled),
        )

    def update(
        updates: Updates, state: ScaleByAsgdState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByAsgdState]:
        del extra
        where = "fnn_optim.scale_by_asgd"
        _need_params(where, params)
        g, udef, ax = _updates_and(where, updates, state.ax)
        p, pdef = _flatten(params)
        _check_tree(where, udef, pdef, names=("the updates", "the params"))
        h = state.hyperparams
        lr = _resolve(learning_rate, state.count, h["learning_rate"])
        count = state.count + 1
        out = list(_fe.mul(p, h["lambd"]))
        _fe.add_(out, g)
        _fe.mul_(out, -state.eta)
        new_p = _fe.add(p, out)
        diff = list(_fe.sub(new_p, ax))
        _fe.mul_(diff, state.mu)
        ax = list(_fe.add(ax, diff))
        eta = lr / (1 + h["lambd"] * lr * count) ** h["alpha"]
        mu = 1 / torch.clamp_min(count - h["t0"], 1.0)
        new_h = {**h, "learning_rate": lr}
        new_state = ScaleByAsgdState(
            count, eta.to(lr.dtype), mu.to(lr.dtype), _unflatten(udef, ax), new_h, dict(scheduled)
        )
        return _unflatten(udef, out), new_state

    return GradientTransformation(init, update)
