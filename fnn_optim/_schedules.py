"""Learning-rate schedules: pure functions ``schedule(count) -> Tensor`` of the step count.

A schedule maps the int64 step tensor ``count`` (0 for the first update) to a float32 tensor of
the same shape: a 0-d ``count`` gives the value for one step, ``torch.arange(n)`` the whole curve
(handy for plots). A Python ``int`` is accepted for convenience. Schedules are written with tensor
ops only (``torch.where``, ``clamp``, integer floor division; no Python ``if`` on tensor values),
so a compiled step (``fnn.jit``) evaluates them without graph breaks and never compiles again as
``count`` moves. Their configuration (rates, step counts) is fixed when the schedule is built and
compiled in as constants.

Values are computed in float32 (relative error about 1e-7 of the schedule's largest value); the
optimizer casts them to its hyperparameter dtype. Step counts are exact integers up to 2**63;
fractions of them (``count / decay_steps``) are float32, exact for counts below 2**24.

Two families:

- **Optax names and semantics**: :func:`constant_schedule`, :func:`linear_schedule`,
  :func:`polynomial_schedule`, :func:`cosine_decay_schedule`,
  :func:`warmup_cosine_decay_schedule`, :func:`exponential_decay`,
  :func:`piecewise_constant_schedule`, :func:`join_schedules`, :func:`sgdr_schedule`,
  :func:`cosine_onecycle_schedule`; short names :func:`constant`, :func:`linear`,
  :func:`polynomial`, :func:`cosine_decay`, :func:`warmup_cosine`, :func:`piecewise_constant`.
- **torch.optim.lr_scheduler twins** (``schedule(k)`` is the learning rate torch uses for the
  ``k``-th ``optimizer.step()``, i.e. ``param_groups[0]["lr"]`` after ``k`` calls of
  ``scheduler.step()``): :func:`step_lr`, :func:`multistep_lr`, :func:`exponential_lr`,
  :func:`linear_lr`, :func:`constant_lr`, :func:`cosine_annealing_lr`, :func:`polynomial_lr`,
  :func:`cyclic` (``CyclicLR``), :func:`onecycle` (``OneCycleLR``),
  :func:`cosine_annealing_warm_restarts` / :func:`sgdr` (``CosineAnnealingWarmRestarts``).
  The plateau scheduler is a transformation: :func:`fnn_optim.reduce_on_plateau`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from fnn_optim._base import Schedule

__all__ = [
    "constant",
    "constant_lr",
    "constant_schedule",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cosine_decay",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cyclic",
    "exponential_decay",
    "exponential_lr",
    "join_schedules",
    "linear",
    "linear_lr",
    "linear_schedule",
    "multistep_lr",
    "onecycle",
    "piecewise_constant",
    "piecewise_constant_schedule",
    "polynomial",
    "polynomial_lr",
    "polynomial_schedule",
    "sgdr",
    "sgdr_schedule",
    "step_lr",
    "warmup_cosine",
    "warmup_cosine_decay_schedule",
]

_F32 = torch.float32


# --------------------------------------------------------------------------------------------
# Argument checks and small helpers
# --------------------------------------------------------------------------------------------


def _real(fn: str, name: str, value: Any) -> float:
    """``value`` as a Python float (numbers and one-element tensors), or a clear TypeError."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"fnn_optim.{fn}: {name} must be a real number; got {value!r}.")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"fnn_optim.{fn}: {name} must be finite; got {value!r}.")
    return out


def _int(fn: str, name: str, value: Any, minimum: int | None = None) -> int:
    """A step count: an ``int`` (or an integral float such as ``1e4``), at least ``minimum``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"fnn_optim.{fn}: {name} must be an integer number of steps; got {value!r}."
        )
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"fnn_optim.{fn}: {name} must be >= {minimum}; got {out}.")
    return out


def _count(fn: str, count: Tensor | int) -> Tensor:
    """The step count as an integer tensor (a Python ``int`` becomes an int64 0-d tensor)."""
    if isinstance(count, Tensor):
        if count.is_floating_point() or count.is_complex() or count.dtype == torch.bool:
            raise TypeError(
                f"fnn_optim.{fn}: the step count must be an integer tensor (the optimizer's int64 "
                f"`count`); got dtype {count.dtype}. Pass e.g. torch.tensor(step) or "
                "torch.arange(n)."
            )
        return count
    if isinstance(count, bool) or not isinstance(count, numbers.Integral):
        raise TypeError(
            f"fnn_optim.{fn}: the step count must be an int64 tensor or a Python int; got "
            f"{count!r}."
        )
    return torch.tensor(int(count), dtype=torch.int64)


def _full(count: Tensor, value: float) -> Tensor:
    return torch.full(count.shape, value, dtype=_F32, device=count.device)


def _named(schedule: Callable[[Tensor | int], Tensor], name: str, **config: Any) -> Schedule:
    """Give the closure a readable name and repr-friendly attributes (for error messages)."""
    schedule.__name__ = schedule.__qualname__ = name
    schedule.__doc__ = f"fnn_optim.{name}({', '.join(f'{k}={v!r}' for k, v in config.items())})"
    return schedule


def _pow(base: float, exponent: Tensor) -> Tensor:
    """``base ** exponent`` (float32) as ``exp(exponent * log(base))`` for ``base > 0``.

    ``log(base)`` is taken in float64 before rounding to float32, so ``0.999 ** 300`` keeps
    float32 accuracy; ``torch.pow(0.999, n)`` rounds the base first and loses ``n`` times more.
    """
    if base > 0:
        return torch.exp(exponent * math.log(base))
    return torch.pow(base, exponent)


def _cos_anneal(start: float, end: float, pct: Tensor) -> Tensor:
    """``end + (start - end) / 2 * (1 + cos(pi * pct))``: torch's ``_annealing_cos``."""
    return end + (start - end) / 2.0 * (torch.cos(math.pi * pct) + 1.0)


def _linear_anneal(start: float, end: float, pct: Tensor) -> Tensor:
    """``(end - start) * pct + start``: torch's ``_annealing_linear``."""
    return (end - start) * pct + start


# --------------------------------------------------------------------------------------------
# Optax schedules
# --------------------------------------------------------------------------------------------


def constant_schedule(value: float) -> Schedule:
    """The schedule that always returns ``value``.

    Args:
        value: the constant.

    Returns:
        ``schedule(count) -> value`` as a float32 tensor of ``count``'s shape.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.constant_schedule(0.1)(torch.tensor(7))
        tensor(0.1000)
    """
    value = _real("constant_schedule", "value", value)

    def schedule(count: Tensor | int) -> Tensor:
        return _full(_count("constant_schedule", count), value)

    return _named(schedule, "constant_schedule", value=value)


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial decay from ``init_value`` to ``end_value`` over ``transition_steps`` (Optax).

    With ``k = clip(count - transition_begin, 0, transition_steps)``::

        value = (init_value - end_value) * (1 - k / transition_steps) ** power + end_value

    so the value is ``init_value`` up to ``transition_begin`` and ``end_value`` from
    ``transition_begin + transition_steps`` on. As in Optax, ``transition_steps <= 0`` gives the
    constant ``init_value`` and a negative ``transition_begin`` counts as 0. The torch twin with
    ``end_value=0`` is :func:`polynomial_lr`.

    Args:
        init_value: the value before the transition.
        end_value: the value after it.
        power: the exponent (1 is :func:`linear_schedule`).
        transition_steps: number of steps of the transition.
        transition_begin: the step at which the transition starts.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.polynomial_schedule(1.0, 0.0, power=2, transition_steps=4)(torch.arange(6))
        tensor([1.0000, 0.5625, 0.2500, 0.0625, 0.0000, 0.0000])
    """
    fn = "polynomial_schedule"
    init_value = _real(fn, "init_value", init_value)
    end_value = _real(fn, "end_value", end_value)
    power = _real(fn, "power", power)
    transition_steps = _int(fn, "transition_steps", transition_steps)
    transition_begin = max(0, _int(fn, "transition_begin", transition_begin))
    if transition_steps <= 0:
        return constant_schedule(init_value)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        k = torch.clamp(count - transition_begin, 0, transition_steps).to(_F32)
        frac = 1.0 - k / transition_steps
        return (init_value - end_value) * frac**power + end_value

    return _named(
        schedule,
        fn,
        init_value=init_value,
        end_value=end_value,
        power=power,
        transition_steps=transition_steps,
        transition_begin=transition_begin,
    )


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear interpolation from ``init_value`` to ``end_value`` (Optax).

    With ``k = clip(count - transition_begin, 0, transition_steps)``::

        value = init_value + (end_value - init_value) * k / transition_steps

    :func:`polynomial_schedule` with ``power=1``; ``transition_steps <= 0`` gives the constant
    ``init_value``. The torch twin is :func:`linear_lr` (``LinearLR`` with
    ``start_factor=1, end_factor=end_value / init_value``).

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.linear_schedule(0.0, 1.0, transition_steps=4, transition_begin=1)(torch.arange(7))
        tensor([0.0000, 0.0000, 0.2500, 0.5000, 0.7500, 1.0000, 1.0000])
    """
    fn = "linear_schedule"
    init_value = _real(fn, "init_value", init_value)
    end_value = _real(fn, "end_value", end_value)
    transition_steps = _int(fn, "transition_steps", transition_steps)
    transition_begin = max(0, _int(fn, "transition_begin", transition_begin))
    if transition_steps <= 0:
        return constant_schedule(init_value)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        k = torch.clamp(count - transition_begin, 0, transition_steps).to(_F32)
        return init_value + (end_value - init_value) * (k / transition_steps)

    return _named(
        schedule,
        fn,
        init_value=init_value,
        end_value=end_value,
        transition_steps=transition_steps,
        transition_begin=transition_begin,
    )


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps`` (Optax).

    With ``k = min(count, decay_steps)`` (Loshchilov & Hutter, SGDR, arXiv:1608.03983)::

        value = init_value * ((1 - alpha) * (0.5 * (1 + cos(pi * k / decay_steps))) ** exponent
                              + alpha)

    The value stays at ``alpha * init_value`` after ``decay_steps`` (torch's
    :func:`cosine_annealing_lr` rises again instead).

    Args:
        init_value: the value at step 0.
        decay_steps: steps of the decay (> 0).
        alpha: the final value as a fraction of ``init_value``.
        exponent: power applied to the cosine factor.

    Raises:
        ValueError: if ``decay_steps <= 0``.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.cosine_decay_schedule(1.0, decay_steps=4, alpha=0.1)(torch.arange(6))
        tensor([1.0000, 0.8682, 0.5500, 0.2318, 0.1000, 0.1000])
    """
    fn = "cosine_decay_schedule"
    init_value = _real(fn, "init_value", init_value)
    decay_steps = _int(fn, "decay_steps", decay_steps, minimum=1)
    alpha = _real(fn, "alpha", alpha)
    exponent = _real(fn, "exponent", exponent)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        k = torch.clamp(count, max=decay_steps).to(_F32)
        cosine = 0.5 * (1.0 + torch.cos(math.pi * (k / decay_steps)))
        return init_value * ((1.0 - alpha) * cosine**exponent + alpha)

    return _named(
        schedule, fn, init_value=init_value, decay_steps=decay_steps, alpha=alpha, exponent=exponent
    )


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]``, and so on (Optax).

    Each schedule restarts its count at its boundary: for ``boundaries[i-1] <= count <
    boundaries[i]`` the value is ``schedules[i](count - boundaries[i-1])``.

    Args:
        schedules: ``n`` schedules.
        boundaries: ``n - 1`` increasing step numbers.

    Raises:
        ValueError: if the lengths do not fit or the boundaries decrease.

    Example:
        >>> import torch, fnn_optim as optim
        >>> s = optim.join_schedules(
        ...     [optim.constant_schedule(1.0), optim.linear_schedule(0.5, 0.0, 2)], [3]
        ... )
        >>> s(torch.arange(6))
        tensor([1.0000, 1.0000, 1.0000, 0.5000, 0.2500, 0.0000])
    """
    fn = "join_schedules"
    schedules = list(schedules)
    boundaries = [_int(fn, f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
    if not schedules or len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"fnn_optim.{fn}: needs n schedules and n - 1 boundaries; got {len(schedules)} "
            f"schedules and {len(boundaries)} boundaries."
        )
    for i, s in enumerate(schedules):
        if not callable(s):
            raise TypeError(f"fnn_optim.{fn}: schedules[{i}] must be a schedule; got {s!r}.")
    if boundaries != sorted(boundaries):
        raise ValueError(f"fnn_optim.{fn}: boundaries must not decrease; got {boundaries}.")

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        out = schedules[0](count)
        for boundary, s in zip(boundaries, schedules[1:], strict=True):
            out = torch.where(count < boundary, out, s(count - boundary))
        return out

    return _named(schedule, fn, boundaries=boundaries)


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

    Optax's semantics: ``decay_steps`` is the *total* length, warmup included. With
    ``alpha = end_value / peak_value`` (0 if ``peak_value == 0``)::

        count < warmup_steps:  init_value + (peak_value - init_value) * count / warmup_steps
        otherwise:             cosine_decay_schedule(peak_value, decay_steps - warmup_steps,
                                                     alpha, exponent)(count - warmup_steps)

    Args:
        init_value: value at step 0.
        peak_value: value at the end of the warmup.
        warmup_steps: steps of linear warmup (0 for none).
        decay_steps: total steps of warmup and decay (> ``warmup_steps``).
        end_value: the value from ``decay_steps`` on.
        exponent: power applied to the cosine factor.

    Raises:
        ValueError: if ``decay_steps <= warmup_steps``.

    Example:
        >>> import torch, fnn_optim as optim
        >>> s = optim.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6)
        >>> s(torch.arange(8))
        tensor([0.0000, 0.5000, 1.0000, 0.8536, 0.5000, 0.1464, 0.0000, 0.0000])
    """
    fn = "warmup_cosine_decay_schedule"
    init_value = _real(fn, "init_value", init_value)
    peak_value = _real(fn, "peak_value", peak_value)
    warmup_steps = _int(fn, "warmup_steps", warmup_steps, minimum=0)
    decay_steps = _int(fn, "decay_steps", decay_steps)
    end_value = _real(fn, "end_value", end_value)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"fnn_optim.{fn}: decay_steps is the total length, warmup included, so it must exceed "
            f"warmup_steps; got warmup_steps={warmup_steps}, decay_steps={decay_steps}."
        )
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    joined = join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )

    def schedule(count: Tensor | int) -> Tensor:
        return joined(_count(fn, count))

    return _named(
        schedule,
        fn,
        init_value=init_value,
        peak_value=peak_value,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        end_value=end_value,
        exponent=exponent,
    )


def warmup_cosine(
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    *,
    init_value: float = 0.0,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Short form of :func:`warmup_cosine_decay_schedule` with the peak first, warming up from 0.

    ``warmup_cosine(1e-3, 100, 10_000)`` warms up linearly from 0 to ``1e-3`` over the first 100
    steps, then decays along a cosine to 0 at step 10 000 (``decay_steps`` is the total length,
    warmup included, as in Optax) and stays there.

    Equals ``warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps,
    end_value, exponent)``.

    Example:
        >>> import torch, fnn_optim as optim
        >>> s = optim.warmup_cosine(1e-3, 100, 10_000)
        >>> [round(s(k).item(), 8) for k in (0, 50, 100, 5050, 10_000)]
        [0.0, 0.0005, 0.001, 0.0005, 0.0]
    """
    return warmup_cosine_decay_schedule(
        init_value, peak_value, warmup_steps, decay_steps, end_value, exponent
    )


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """Exponential decay by ``decay_rate`` every ``transition_steps`` steps (Optax).

    With ``d = count - transition_begin`` and ``p = d / transition_steps`` (``floor``-ed if
    ``staircase``)::

        value = init_value                     if d <= 0
                init_value * decay_rate ** p   otherwise

    clipped from below (``decay_rate < 1``) or above (``decay_rate > 1``) at ``end_value`` if
    given. As in Optax, ``transition_steps <= 0`` or ``decay_rate == 0`` give the constant
    ``init_value`` and a negative ``transition_begin`` counts as 0. torch twins:
    :func:`exponential_lr` (``transition_steps=1``), :func:`step_lr` (``staircase=True``).

    Args:
        init_value: the value up to ``transition_begin``.
        transition_steps: steps per factor of ``decay_rate``.
        decay_rate: the factor.
        transition_begin: the step at which the decay starts.
        staircase: decay in discrete jumps every ``transition_steps`` steps.
        end_value: bound on the value, if any.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.exponential_decay(1.0, 2, 0.5, staircase=True)(torch.arange(6))
        tensor([1.0000, 1.0000, 0.5000, 0.5000, 0.2500, 0.2500])
        >>> optim.exponential_decay(1.0, 2, 0.5, end_value=0.4)(torch.arange(6))
        tensor([1.0000, 0.7071, 0.5000, 0.4000, 0.4000, 0.4000])
    """
    fn = "exponential_decay"
    init_value = _real(fn, "init_value", init_value)
    transition_steps = _int(fn, "transition_steps", transition_steps)
    decay_rate = _real(fn, "decay_rate", decay_rate)
    transition_begin = max(0, _int(fn, "transition_begin", transition_begin))
    staircase = bool(staircase)
    end = None if end_value is None else _real(fn, "end_value", end_value)
    if transition_steps <= 0 or decay_rate == 0.0:
        return constant_schedule(init_value)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        d = count - transition_begin
        if staircase:
            p = torch.div(d, transition_steps, rounding_mode="floor").to(_F32)
        else:
            p = d.to(_F32) / transition_steps
        decayed = init_value * _pow(decay_rate, p)
        value = torch.where(d <= 0, _full(count, init_value), decayed)
        if end is not None:
            value = torch.clamp(value, min=end) if decay_rate < 1.0 else torch.clamp(value, max=end)
        return value

    return _named(
        schedule,
        fn,
        init_value=init_value,
        transition_steps=transition_steps,
        decay_rate=decay_rate,
        transition_begin=transition_begin,
        staircase=staircase,
        end_value=end,
    )


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """``init_value`` times the product of the scales of every boundary reached (Optax).

    ::

        value = init_value * prod(scale for boundary, scale in boundaries_and_scales.items()
                                  if count >= boundary)

    Args:
        init_value: the value before the first boundary.
        boundaries_and_scales: ``{step: scale}``; from ``step`` on the value is multiplied by
            ``scale`` (>= 0). The torch twin with a single ``gamma`` is :func:`multistep_lr`.

    Raises:
        ValueError: if a scale is negative.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.piecewise_constant_schedule(1.0, {2: 0.5, 4: 0.1})(torch.arange(6))
        tensor([1.0000, 1.0000, 0.5000, 0.5000, 0.0500, 0.0500])
    """
    fn = "piecewise_constant_schedule"
    init_value = _real(fn, "init_value", init_value)
    items = sorted(
        (_int(fn, "a boundary", b), _real(fn, f"the scale of boundary {b}", s))
        for b, s in (boundaries_and_scales or {}).items()
    )
    negative = {b: s for b, s in items if s < 0}
    if negative:
        raise ValueError(f"fnn_optim.{fn}: scales must be >= 0; got {negative}.")

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        value = _full(count, init_value)
        for boundary, scale in items:
            value = torch.where(count < boundary, value, value * scale)
        return value

    return _named(schedule, fn, init_value=init_value, boundaries_and_scales=dict(items) or None)


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    """SGDR as in Optax: :func:`warmup_cosine_decay_schedule` runs joined one after another.

    Each dict of ``cosine_kwargs`` holds the arguments of one
    :func:`warmup_cosine_decay_schedule` (``init_value``, ``peak_value``, ``warmup_steps``,
    ``decay_steps``, optionally ``end_value`` and ``exponent``); run ``i`` starts when the runs
    before it have used up their ``decay_steps``. For torch's ``CosineAnnealingWarmRestarts``
    (restart period ``T_0`` growing by ``T_mult``) see :func:`cosine_annealing_warm_restarts`.

    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    arXiv:1608.03983.

    Example:
        >>> import torch, fnn_optim as optim
        >>> run = dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=3)
        >>> optim.sgdr_schedule([run, run])(torch.arange(7))
        tensor([0.0000, 1.0000, 0.5000, 0.0000, 1.0000, 0.5000, 0.0000])
    """
    schedules = []
    boundaries = []
    step = 0
    for i, kwargs in enumerate(cosine_kwargs):
        if not isinstance(kwargs, Mapping) or "decay_steps" not in kwargs:
            raise TypeError(
                f"fnn_optim.sgdr_schedule: cosine_kwargs[{i}] must be a dict of "
                f"warmup_cosine_decay_schedule arguments with decay_steps; got {kwargs!r}."
            )
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        step += _int("sgdr_schedule", f"cosine_kwargs[{i}]['decay_steps']", kwargs["decay_steps"])
        boundaries.append(step)
    if not schedules:
        raise ValueError("fnn_optim.sgdr_schedule: cosine_kwargs is empty.")
    joined = join_schedules(schedules, boundaries[:-1])
    return _named(joined, "sgdr_schedule", boundaries=boundaries[:-1])


# --------------------------------------------------------------------------------------------
# torch.optim.lr_scheduler twins
# --------------------------------------------------------------------------------------------


def step_lr(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``torch.optim.lr_scheduler.StepLR``: decay by ``gamma`` every ``step_size`` steps.

    ::

        value = lr * gamma ** floor(count / step_size)

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.step_lr(0.1, step_size=2, gamma=0.5)(torch.arange(6))
        tensor([0.1000, 0.1000, 0.0500, 0.0500, 0.0250, 0.0250])
    """
    fn = "step_lr"
    lr = _real(fn, "lr", lr)
    step_size = _int(fn, "step_size", step_size, minimum=1)
    gamma = _real(fn, "gamma", gamma)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        n = torch.div(count, step_size, rounding_mode="floor").to(_F32)
        return lr * _pow(gamma, n)

    return _named(schedule, fn, lr=lr, step_size=step_size, gamma=gamma)


def multistep_lr(lr: float, milestones: Iterable[int], gamma: float = 0.1) -> Schedule:
    """``torch.optim.lr_scheduler.MultiStepLR``: decay by ``gamma`` at each milestone.

    ::

        value = lr * gamma ** (number of milestones <= count)

    A milestone listed twice decays twice, as in torch.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.multistep_lr(1.0, milestones=[2, 4], gamma=0.1)(torch.arange(6))
        tensor([1.0000, 1.0000, 0.1000, 0.1000, 0.0100, 0.0100])
    """
    fn = "multistep_lr"
    lr = _real(fn, "lr", lr)
    stones = sorted(_int(fn, "a milestone", m) for m in milestones)
    gamma = _real(fn, "gamma", gamma)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        n = torch.zeros(count.shape, dtype=_F32, device=count.device)
        for milestone in stones:  # a few elementwise compares: one fused kernel, no tables
            n = n + (count >= milestone).to(_F32)
        return lr * _pow(gamma, n)

    return _named(schedule, fn, lr=lr, milestones=stones, gamma=gamma)


def exponential_lr(lr: float, gamma: float) -> Schedule:
    """``torch.optim.lr_scheduler.ExponentialLR``: ``value = lr * gamma ** count``.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.exponential_lr(1.0, gamma=0.5)(torch.arange(4))
        tensor([1.0000, 0.5000, 0.2500, 0.1250])
    """
    fn = "exponential_lr"
    lr = _real(fn, "lr", lr)
    gamma = _real(fn, "gamma", gamma)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        return lr * _pow(gamma, count.to(_F32))

    return _named(schedule, fn, lr=lr, gamma=gamma)


def linear_lr(
    lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> Schedule:
    """``torch.optim.lr_scheduler.LinearLR``: the factor moves linearly over ``total_iters``.

    ::

        value = lr * (start_factor + (end_factor - start_factor)
                      * min(count, total_iters) / total_iters)

    Defaults are torch's.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.linear_lr(1.0, start_factor=0.5, end_factor=1.0, total_iters=2)(torch.arange(4))
        tensor([0.5000, 0.7500, 1.0000, 1.0000])
    """
    fn = "linear_lr"
    lr = _real(fn, "lr", lr)
    start_factor = _real(fn, "start_factor", start_factor)
    end_factor = _real(fn, "end_factor", end_factor)
    total_iters = _int(fn, "total_iters", total_iters, minimum=1)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        k = torch.clamp(count, max=total_iters).to(_F32)
        return lr * (start_factor + (end_factor - start_factor) * (k / total_iters))

    return _named(
        schedule,
        fn,
        lr=lr,
        start_factor=start_factor,
        end_factor=end_factor,
        total_iters=total_iters,
    )


def constant_lr(lr: float, factor: float = 1.0 / 3, total_iters: int = 5) -> Schedule:
    """``torch.optim.lr_scheduler.ConstantLR``: ``lr * factor`` for ``total_iters`` steps.

    ::

        value = lr * factor   if count < total_iters
                lr            otherwise

    Defaults are torch's.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.constant_lr(1.0, factor=0.5, total_iters=2)(torch.arange(4))
        tensor([0.5000, 0.5000, 1.0000, 1.0000])
    """
    fn = "constant_lr"
    lr = _real(fn, "lr", lr)
    factor = _real(fn, "factor", factor)
    total_iters = _int(fn, "total_iters", total_iters, minimum=0)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        return torch.where(count < total_iters, _full(count, lr * factor), _full(count, lr))

    return _named(schedule, fn, lr=lr, factor=factor, total_iters=total_iters)


def cosine_annealing_lr(lr: float, T_max: int, eta_min: float = 0.0) -> Schedule:
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` (its closed form).

    ::

        value = eta_min + (lr - eta_min) * (1 + cos(pi * count / T_max)) / 2

    The curve is periodic: after ``T_max`` it rises back to ``lr`` at ``2 * T_max`` (as torch's);
    :func:`cosine_decay_schedule` stays at the bottom instead.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.cosine_annealing_lr(1.0, T_max=2)(torch.arange(5))
        tensor([1.0000, 0.5000, 0.0000, 0.5000, 1.0000])
    """
    fn = "cosine_annealing_lr"
    lr = _real(fn, "lr", lr)
    T_max = _int(fn, "T_max", T_max, minimum=1)
    eta_min = _real(fn, "eta_min", eta_min)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        # count mod 2 T_max keeps the float32 argument of cos small and exact.
        k = torch.remainder(count, 2 * T_max).to(_F32)
        return eta_min + (lr - eta_min) * (1.0 + torch.cos(math.pi * (k / T_max))) / 2.0

    return _named(schedule, fn, lr=lr, T_max=T_max, eta_min=eta_min)


def polynomial_lr(lr: float, total_iters: int = 5, power: float = 1.0) -> Schedule:
    """``torch.optim.lr_scheduler.PolynomialLR``: polynomial decay to 0 over ``total_iters``.

    ::

        value = lr * (1 - min(count, total_iters) / total_iters) ** power

    Defaults are torch's.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.polynomial_lr(1.0, total_iters=4, power=2.0)(torch.arange(6))
        tensor([1.0000, 0.5625, 0.2500, 0.0625, 0.0000, 0.0000])
    """
    fn = "polynomial_lr"
    lr = _real(fn, "lr", lr)
    total_iters = _int(fn, "total_iters", total_iters, minimum=1)
    power = _real(fn, "power", power)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        k = torch.clamp(count, max=total_iters).to(_F32)
        return lr * (1.0 - k / total_iters) ** power

    return _named(schedule, fn, lr=lr, total_iters=total_iters, power=power)


def cyclic(
    base_lr: float,
    max_lr: float,
    step_size_up: float = 2000,
    step_size_down: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> Schedule:
    """``torch.optim.lr_scheduler.CyclicLR``: cycles between ``base_lr`` and ``max_lr``.

    A cycle lasts ``total = step_size_up + step_size_down`` steps (``step_size_down`` defaults
    to ``step_size_up``). With ``cycle = 1 + floor(count / total)`` and ``pos = count - (cycle
    - 1) * total`` the position in the cycle::

        rise = pos / step_size_up                 if pos <= step_size_up
               (total - pos) / step_size_down     otherwise
        value = base_lr + (max_lr - base_lr) * rise * scale

    where ``scale`` is 1 (``"triangular"``), ``0.5 ** (cycle - 1)`` (``"triangular2"``, the
    amplitude halves every cycle) or ``gamma ** count`` (``"exp_range"``). Defaults are torch's;
    torch's custom ``scale_fn`` and momentum cycling are not part of a learning-rate schedule.

    Smith, "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186.

    Raises:
        ValueError: for an unknown ``mode`` or step sizes that are not positive.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.cyclic(0.0, 1.0, step_size_up=2, mode="triangular2")(torch.arange(9))
        tensor([0.0000, 0.5000, 1.0000, 0.5000, 0.0000, 0.2500, 0.5000, 0.2500, 0.0000])
    """
    fn = "cyclic"
    base_lr = _real(fn, "base_lr", base_lr)
    max_lr = _real(fn, "max_lr", max_lr)
    up = _real(fn, "step_size_up", step_size_up)
    down = up if step_size_down is None else _real(fn, "step_size_down", step_size_down)
    gamma = _real(fn, "gamma", gamma)
    if mode not in ("triangular", "triangular2", "exp_range"):
        raise ValueError(
            f"fnn_optim.{fn}: mode must be 'triangular', 'triangular2' or 'exp_range'; "
            f"got {mode!r}."
        )
    if up <= 0 or down < 0:
        raise ValueError(
            f"fnn_optim.{fn}: needs step_size_up > 0 and step_size_down >= 0; got "
            f"step_size_up={step_size_up!r}, step_size_down={step_size_down!r}."
        )
    total = up + down
    integral = up.is_integer() and down.is_integer()
    height = max_lr - base_lr

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        if integral:  # exact integer cycle arithmetic
            done = torch.div(count, int(total), rounding_mode="floor")
            pos = (count - done * int(total)).to(_F32)
            cycle = done.to(_F32) + 1.0
        else:  # torch's float arithmetic
            cycle = torch.floor(1.0 + count.to(_F32) / total)
            pos = count.to(_F32) - (cycle - 1.0) * total
        rise = torch.where(pos <= up, pos / up, (total - pos) / max(down, 1e-30))
        if mode == "triangular":
            return base_lr + height * rise
        if mode == "triangular2":
            return base_lr + height * rise * _pow(0.5, cycle - 1.0)
        return base_lr + height * rise * _pow(gamma, count.to(_F32))

    return _named(
        schedule,
        fn,
        base_lr=base_lr,
        max_lr=max_lr,
        step_size_up=up,
        step_size_down=down,
        mode=mode,
        gamma=gamma,
    )


def onecycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """``torch.optim.lr_scheduler.OneCycleLR``: the 1cycle policy, step for step like torch.

    With ``initial = max_lr / div_factor``, ``min_lr = initial / final_div_factor`` and
    ``T = total_steps``, the phases end at (torch's float end steps)::

        two phases:   initial -> max_lr  until  pct_start * T - 1,
                      max_lr  -> min_lr  until  T - 1
        three_phase:  initial -> max_lr  until  pct_start * T - 1,
                      max_lr  -> initial until  2 * pct_start * T - 2,
                      initial -> min_lr  until  T - 1

    Within a phase from step ``s`` to ``e``, ``pct = (count - s) / (e - s)`` and the value is
    ``end + (start - end) / 2 * (1 + cos(pi * pct))`` (``"cos"``) or ``start + (end - start) *
    pct`` (``"linear"``). torch raises past ``total_steps``; here the value stays at ``min_lr``
    from step ``T - 1`` on. Defaults are torch's; momentum cycling is not part of a schedule.

    Smith & Topin, "Super-Convergence", arXiv:1708.07120.

    Args:
        max_lr: the peak learning rate.
        total_steps: the length of the cycle.
        pct_start: fraction of the cycle spent rising.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        div_factor: ``max_lr / div_factor`` is the starting value.
        final_div_factor: ``min_lr = max_lr / div_factor / final_div_factor``.
        three_phase: the paper's symmetric three-phase variant.

    Raises:
        ValueError: for ``pct_start`` outside [0, 1], an unknown ``anneal_strategy`` or a phase
            of zero length (``pct_start * total_steps == 1``: torch divides by zero there).

    Example:
        >>> import torch, fnn_optim as optim
        >>> s = optim.onecycle(1.0, total_steps=10, pct_start=0.5, anneal_strategy="linear",
        ...                    div_factor=10.0, final_div_factor=1.0)
        >>> s(torch.arange(10))
        tensor([0.1000, 0.3250, 0.5500, 0.7750, 1.0000, 0.8200, 0.6400, 0.4600, 0.2800, 0.1000])
    """
    fn = "onecycle"
    max_lr = _real(fn, "max_lr", max_lr)
    total_steps = _int(fn, "total_steps", total_steps, minimum=1)
    pct_start = _real(fn, "pct_start", pct_start)
    div_factor = _real(fn, "div_factor", div_factor)
    final_div_factor = _real(fn, "final_div_factor", final_div_factor)
    if not 0.0 <= pct_start <= 1.0:
        raise ValueError(f"fnn_optim.{fn}: pct_start must be in [0, 1]; got {pct_start}.")
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"fnn_optim.{fn}: anneal_strategy must be 'cos' or 'linear'; got {anneal_strategy!r}."
        )
    anneal = _cos_anneal if anneal_strategy == "cos" else _linear_anneal
    initial = max_lr / div_factor
    min_lr = initial / final_div_factor
    rise_end = float(pct_start * total_steps) - 1
    if three_phase:
        phases = [
            (rise_end, initial, max_lr),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial),
            (total_steps - 1, initial, min_lr),
        ]
    else:
        phases = [(rise_end, initial, max_lr), (total_steps - 1, max_lr, min_lr)]
    # (start step, end step, last integer step of the phase, start value, end value)
    table = []
    start = 0.0
    for end, a, b in phases:
        if end == start:
            raise ValueError(
                f"fnn_optim.{fn}: a phase of zero length (pct_start * total_steps = "
                f"{pct_start * total_steps}); torch divides by zero there. Change pct_start."
            )
        table.append((start, float(end), math.floor(end), a, b))
        start = float(end)

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        step = torch.clamp(count, max=total_steps - 1)
        x = step.to(_F32)
        values = [anneal(a, b, (x - s) / (e - s)) for s, e, _, a, b in table]
        out = values[-1]
        # torch picks the first phase with count <= end step.
        for (_, _, last, _, _), value in zip(table[-2::-1], values[-2::-1], strict=True):
            out = torch.where(step <= last, value, out)
        return out

    return _named(
        schedule,
        fn,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
    )


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """Optax's name and arguments for the cosine 1cycle policy, with torch's values.

    Equals ``onecycle(peak_value, transition_steps, pct_start, "cos", div_factor,
    final_div_factor)``, i.e. ``OneCycleLR`` step for step. Optax's own version interpolates
    from step -1 (its first phase is one step longer), so its values differ slightly from
    torch's; this follows torch.

    Example:
        >>> import torch, fnn_optim as optim
        >>> s = optim.cosine_onecycle_schedule(100, 1.0)
        >>> [round(s(k).item(), 6) for k in (0, 29, 99)]
        [0.04, 1.0, 4e-06]
    """
    return onecycle(peak_value, transition_steps, pct_start, "cos", div_factor, final_div_factor)


def cosine_annealing_warm_restarts(
    lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0
) -> Schedule:
    """``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``: SGDR's cosine with restarts.

    Restart ``i`` (from 0) lasts ``T_i = T_0 * T_mult ** i`` steps. With ``T_cur`` the steps
    since the last restart::

        value = eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    Restarts are found exactly in integer arithmetic, like torch's step-by-step loop (its closed
    form for ``scheduler.step(epoch)`` takes a float log and can be one restart off).

    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    arXiv:1608.03983. Also exported as :func:`sgdr`.

    Args:
        lr: the value at each restart.
        T_0: length of the first run (> 0).
        T_mult: growth factor of the run length (integer >= 1).
        eta_min: the value the cosine decays to.

    Example:
        >>> import torch, fnn_optim as optim
        >>> optim.cosine_annealing_warm_restarts(1.0, T_0=2, T_mult=2)(torch.arange(8))
        tensor([1.0000, 0.5000, 1.0000, 0.8536, 0.5000, 0.1464, 1.0000, 0.9619])
    """
    fn = "cosine_annealing_warm_restarts"
    lr = _real(fn, "lr", lr)
    T_0 = _int(fn, "T_0", T_0, minimum=1)
    T_mult = _int(fn, "T_mult", T_mult, minimum=1)
    eta_min = _real(fn, "eta_min", eta_min)
    restarts = []  # (first step, length) of every restart after the first that fits in int64
    if T_mult > 1:
        start, length = T_0, T_0 * T_mult
        while start < 2**62:
            restarts.append((start, length))
            start, length = start + length, length * T_mult

    def schedule(count: Tensor | int) -> Tensor:
        count = _count(fn, count)
        if T_mult == 1:
            t_cur = torch.remainder(count, T_0).to(_F32)
            t_i: Tensor | int = T_0
        else:
            # Elementwise compares against every restart (at most 62): one fused kernel, exact.
            start = torch.zeros_like(count)
            length = torch.full_like(count, T_0)
            for first, size in restarts:
                reached = count >= first
                start = torch.where(reached, first, start)
                length = torch.where(reached, size, length)
            t_cur = (count - start).to(_F32)
            t_i = length.to(_F32)
        return eta_min + (lr - eta_min) * (1.0 + torch.cos(math.pi * (t_cur / t_i))) / 2.0

    return _named(schedule, fn, lr=lr, T_0=T_0, T_mult=T_mult, eta_min=eta_min)


# Short names (the issue's); each is the function above, not a copy.
constant = constant_schedule
linear = linear_schedule
polynomial = polynomial_schedule
cosine_decay = cosine_decay_schedule
piecewise_constant = piecewise_constant_schedule
sgdr = cosine_annealing_warm_restarts
