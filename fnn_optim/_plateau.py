"""``reduce_on_plateau``: scale the updates down when the loss stops improving.

torch's ``ReduceLROnPlateau`` as a gradient transformation (Optax's
``optax.contrib.reduce_on_plateau``), fed with the loss through ``update(..., value=loss)``.
Its whole state is tensors and every decision is a ``torch.where``, so a compiled step
(``fnn.jit``) runs it without graph breaks or recompilation.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fnn_optim import _foreach as _fe
from fnn_optim._base import (
    GradientTransformation,
    Params,
    Updates,
    _flatten,
    _hyper,
    _hyper_dtype_device,
    _hyperparams,
    _unflatten,
    _zero_count,
)

__all__ = ["ReduceLROnPlateauState", "reduce_on_plateau"]

_WHERE = "fnn_optim.reduce_on_plateau"


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau` (all 0-d tensors).

    Attributes:
        scale: the factor applied to the updates (1 at the start; float, the hyperparameter
            dtype).
        best_value: the best (averaged) value seen, ``inf`` (``-inf`` in ``"max"`` mode) at first.
        plateau_count: values since the last improvement (torch's ``num_bad_epochs``), int64.
        cooldown_count: values left in the cooldown after a reduction, int64.
        count: values accumulated towards the next plateau check (``< accumulation_size``), int64.
        avg_value: their running mean.
        hyperparams: ``factor``, ``threshold``, ``min_scale`` (float) and ``patience``,
            ``cooldown`` (int64): settable with :func:`fnn_optim.set_hyperparams`.
    """

    scale: Tensor
    best_value: Tensor
    plateau_count: Tensor
    cooldown_count: Tensor
    count: Tensor
    avg_value: Tensor
    hyperparams: dict[str, Tensor]


def _number(name: str, value: Any, *, integer: bool = False, minimum: float = 0.0) -> Any:
    if isinstance(value, bool) or not isinstance(
        value, numbers.Integral if integer else numbers.Real
    ):
        kind = "an integer" if integer else "a real number"
        raise TypeError(f"{_WHERE}: {name} must be {kind}; got {value!r}.")
    if not (math.isfinite(value) and value >= minimum):
        raise ValueError(f"{_WHERE}: {name} must be finite and >= {minimum}; got {value!r}.")
    return int(value) if integer else float(value)


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_scale: float = 0.0,
    mode: str = "min",
    *,
    eps: float = 0.0,
    accumulation_size: int = 1,
) -> GradientTransformation:
    """Multiply the updates by a scale that drops by ``factor`` when the loss plateaus.

    torch's ``torch.optim.lr_scheduler.ReduceLROnPlateau`` as a transformation (Optax:
    ``optax.contrib.reduce_on_plateau``). Put it after the learning rate, e.g.
    ``chain(adam(1e-3), reduce_on_plateau(patience=5))``, and pass the loss (any 0-d tensor or
    number) with every update: ``opt.update(grads, state, params, value=loss)``.

    Each plateau check (every ``accumulation_size`` updates, on the mean of their values ``v``)
    does what torch's ``scheduler.step(v)`` does::

        better = v < best * (1 - threshold)      # mode "min", threshold_mode "rel"
                 v < best - threshold            # "min", "abs"
                 v > best * (1 + threshold)      # "max", "rel"
                 v > best + threshold            # "max", "abs"
        if better: best = v; plateau_count = 0  else: plateau_count += 1
        if cooldown_count > 0: cooldown_count -= 1; plateau_count = 0
        if plateau_count > patience:
            new = max(scale * factor, min_scale)
            if scale - new > eps: scale = new
            cooldown_count = cooldown; plateau_count = 0

    **Order (torch's).** An update is scaled by the scale decided by the values fed *before*
    it; its own ``value`` (the loss at the parameters being updated) counts from the next update
    on, as torch's ``scheduler.step(loss)`` after ``optimizer.step()`` changes the learning rate
    of the next step. So the learning rate times ``state.scale`` before update ``k`` equals
    torch's ``param_groups[0]["lr"]`` at its ``k``-th step when both see the same losses.
    (Optax's version already applies a new scale to the update that brought its value.)

    Args:
        factor: multiplier of the scale at each reduction (``< 1``). torch: ``factor``.
        patience: plateau checks without improvement tolerated; the next one reduces.
        threshold: minimal improvement that counts, relative or absolute.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: plateau checks after a reduction during which no plateau is counted.
        min_scale: lower bound of the scale. torch's ``min_lr`` is ``min_scale * lr``.
        mode: ``"min"`` (the value should decrease, e.g. a loss) or ``"max"`` (e.g. accuracy).
        eps: a reduction smaller than ``eps`` (in scale units) is skipped. torch's ``eps``
            (default 1e-8, in learning-rate units) is ``eps * lr`` here; the default 0 always
            reduces. Compiled in as a constant, not a hyperparameter.
        accumulation_size: updates whose values are averaged per plateau check (Optax's
            argument); 1 checks at every update, like one ``scheduler.step(loss)`` per step.
            For torch's once-per-epoch use, pass the number of steps per epoch.

    Returns:
        A :class:`~fnn_optim.GradientTransformation` with state
        :class:`ReduceLROnPlateauState`. ``update`` requires ``value=``.

    Raises:
        ValueError: for ``factor >= 1`` or an unknown ``mode`` / ``threshold_mode``; at
            ``update`` if no ``value`` is given.

    Example:
        >>> import torch, fnn_optim as optim
        >>> opt = optim.chain(optim.sgd(0.1), optim.reduce_on_plateau(factor=0.5, patience=1))
        >>> params = {"w": torch.zeros(1)}
        >>> state = opt.init(params)
        >>> lrs = []
        >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0]:
        ...     updates, state = opt.update({"w": torch.ones(1)}, state, params, value=loss)
        ...     lrs.append(round(-updates["w"].item(), 4))
        >>> lrs  # the lr of each step: after two steps without improvement it halves
        [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    """
    factor = _number("factor", factor)
    if factor >= 1.0:
        raise ValueError(f"{_WHERE}: factor must be < 1 (the scale shrinks); got {factor}.")
    patience = _number("patience", patience, integer=True)
    threshold = _number("threshold", threshold)
    cooldown = _number("cooldown", cooldown, integer=True)
    min_scale = _number("min_scale", min_scale)
    eps = _number("eps", eps)
    accumulation_size = _number("accumulation_size", accumulation_size, integer=True, minimum=1)
    if mode not in ("min", "max"):
        raise ValueError(f"{_WHERE}: mode must be 'min' or 'max'; got {mode!r}.")
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(
            f"{_WHERE}: threshold_mode must be 'rel' or 'abs'; got {threshold_mode!r}."
        )
    worst = math.inf if mode == "min" else -math.inf

    def init(params: Params) -> ReduceLROnPlateauState:
        _, device = _hyper_dtype_device(params)
        zero = _zero_count(params)
        hyper = _hyperparams(params, factor=factor, threshold=threshold, min_scale=min_scale)
        hyper["patience"] = torch.tensor(patience, dtype=torch.int64, device=device)
        hyper["cooldown"] = torch.tensor(cooldown, dtype=torch.int64, device=device)
        return ReduceLROnPlateauState(
            scale=_hyper(1.0, params),
            best_value=_hyper(worst, params),
            plateau_count=zero,
            cooldown_count=zero.clone(),
            count=zero.clone(),
            avg_value=_hyper(0.0, params),
            hyperparams=dict(sorted(hyper.items())),
        )

    def is_better(value: Tensor, best: Tensor, thr: Tensor) -> Tensor:
        if mode == "min":
            return value < (best * (1.0 - thr) if threshold_mode == "rel" else best - thr)
        return value > (best * (1.0 + thr) if threshold_mode == "rel" else best + thr)

    def update(
        updates: Updates,
        state: ReduceLROnPlateauState,
        params: Params | None = None,
        *,
        value: Any = None,
        **extra: Any,
    ) -> tuple[Updates, ReduceLROnPlateauState]:
        del params, extra
        if value is None:
            raise ValueError(
                f"{_WHERE}: the update needs the loss (or the monitored metric): call "
                "`opt.update(grads, state, params, value=loss)`."
            )
        if not isinstance(state, ReduceLROnPlateauState):
            raise TypeError(
                f"{_WHERE}: expected the ReduceLROnPlateauState made by this transformation's "
                f"`init`; got {type(state).__name__}."
            )
        hp = state.hyperparams
        v = torch.as_tensor(value).detach()
        if v.numel() != 1:
            raise ValueError(
                f"{_WHERE}: value must be a number or a one-element tensor (the loss); got a "
                f"tensor of shape {tuple(v.shape)}."
            )
        v = v.reshape(()).to(dtype=state.best_value.dtype, device=state.best_value.device)

        # Accumulate the running mean of the values of this check.
        count = state.count + 1
        avg = state.avg_value + (v - state.avg_value) / count.to(v.dtype)
        check = count >= accumulation_size

        # torch's ReduceLROnPlateau.step(avg).
        better = is_better(avg, state.best_value, hp["threshold"])
        best = torch.where(better, avg, state.best_value)
        plateau = torch.where(better, 0, state.plateau_count + 1)
        in_cooldown = state.cooldown_count > 0
        cooling = torch.where(in_cooldown, state.cooldown_count - 1, state.cooldown_count)
        plateau = torch.where(in_cooldown, 0, plateau)
        reduce = plateau > hp["patience"]
        reduced = torch.maximum(state.scale * hp["factor"], hp["min_scale"])
        scale = torch.where(reduce & (state.scale - reduced > eps), reduced, state.scale)
        cooling = torch.where(reduce, hp["cooldown"], cooling)
        plateau = torch.where(reduce, 0, plateau)

        new_state = ReduceLROnPlateauState(
            scale=torch.where(check, scale, state.scale),
            best_value=torch.where(check, best, state.best_value),
            plateau_count=torch.where(check, plateau, state.plateau_count),
            cooldown_count=torch.where(check, cooling, state.cooldown_count),
            count=torch.where(check, 0, count),
            avg_value=torch.where(check, 0.0, avg),
            hyperparams=dict(hp),
        )
        u, udef = _flatten(updates)
        return _unflatten(udef, _fe.mul(u, state.scale)), new_state

    return GradientTransformation(init, update)
