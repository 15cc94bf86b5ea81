"""L-BFGS as gradient transformations: the direction, two line searches and the optimizer.

**How this relates to torch.optim.LBFGS.** ``torch.optim.LBFGS.step(closure)`` runs up to
``max_iter`` (default 20) L-BFGS iterations per call, calling the closure (forward and backward)
once per iteration and more inside its line search. An Optax-style ``update`` is given one
gradient and returns one update, so here **one update is one L-BFGS iteration**: the rule of
``torch.optim.LBFGS(max_iter=1)``. Call ``update`` ``n`` times (each with a fresh gradient) for
``n`` iterations. With a fixed learning rate (the default, as torch's ``line_search_fn=None``)
the steps equal torch's with ``max_iter=1``; with ``linesearch="strong_wolfe"`` the line search
is torch's (bracketing and zoom with cubic interpolation, Wolfe constants ``1e-4`` and ``0.9``)
and evaluates the loss through the ``value_fn=`` extra, as ``optax.lbfgs`` does:

    updates, state = opt.update(grads, state, params, value=loss, grad=grads, value_fn=loss_fn)

**State.** The history is ``memory_size`` pairs ``(s, y)`` of flat vectors (the concatenation of
all leaves, as torch does: every leaf must have the same dtype and device), kept as two tuples of
``memory_size`` tensors of shape ``(N,)``, oldest first, with ``rho = 1 / (y . s)`` and the number
of valid pairs. Empty slots are zeros with ``rho = 0``, so they contribute nothing. The memory is
allocated at ``init`` (torch grows its lists up to ``history_size``).

**Compiling.** :func:`scale_by_lbfgs` compiles under ``fnn.jit`` (the two-loop recursion is
unrolled over all ``memory_size`` slots; keep ``memory_size`` small there), and so does
:func:`scale_by_backtracking_linesearch` (it evaluates all its trial steps). The strong-Wolfe
:func:`scale_by_zoom_linesearch` takes data-dependent branches and runs eagerly only.
"""

from __future__ import annotations

import math
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
    Updates,
    _check_tree,
    _flatten,
    _hyperparams,
    _unflatten,
    _zero_count,
    chain,
)
from fnn_optim._transforms import _need_params, scale_by_learning_rate

__all__ = [
    "lbfgs",
    "scale_by_backtracking_linesearch",
    "scale_by_lbfgs",
    "scale_by_zoom_linesearch",
]

_CURVATURE_EPS = 1e-10
"""A pair enters the history only if ``y . s`` exceeds this (torch.optim.LBFGS's constant)."""


# --------------------------------------------------------------------------------------------
# Flat vectors
# --------------------------------------------------------------------------------------------


def _flat(where: str, leaves: list[Tensor]) -> Tensor:
    """The concatenation of ``leaves`` (one dtype and device) as a vector of shape ``(N,)``."""
    if not leaves:
        raise ValueError(f"{where}: the parameters have no leaves.")
    first = leaves[0]
    for x in leaves:
        if not x.is_floating_point() or x.dtype != first.dtype or x.device != first.device:
            raise TypeError(
                f"{where}: L-BFGS works on the concatenation of all leaves, which must be floating "
                f"tensors of one dtype and device; got {first.dtype} on {first.device} and "
                f"{x.dtype} on {x.device}."
            )
    return torch.cat([x.reshape(-1) for x in leaves])


def _split(vec: Tensor, like: list[Tensor]) -> list[Tensor]:
    """Cut a flat vector into tensors shaped like ``like``."""
    parts = torch.split(vec, [x.numel() for x in like])
    return [p.view(x.shape) for p, x in zip(parts, like, strict=True)]


def _pieces(
    where: str, updates: Updates, params: Params | None
) -> tuple[list[Tensor], Any, list[Tensor]]:
    _need_params(where, params)
    u, udef = _flatten(updates)
    p, pdef = _flatten(params)
    _check_tree(where, udef, pdef, names=("the updates", "the params"))
    return u, udef, p


# --------------------------------------------------------------------------------------------
# The L-BFGS direction
# --------------------------------------------------------------------------------------------


class ScaleByLbfgsState(NamedTuple):
    """State of :func:`scale_by_lbfgs`.

    ``count``: iterations done (int64 0-d). ``params``, ``grad``: the flat parameters and
    gradient, shape ``(N,)``, at the last iteration. ``s_history``, ``y_history``: tuples of
    ``memory_size`` flat vectors ``s = x_k - x_{k-1}`` and ``y = g_k - g_{k-1}``, oldest first
    (zeros in empty slots). ``rho_history``: ``(memory_size,)``, ``1 / (y . s)`` (0 in empty
    slots). ``num_pairs``: valid pairs (int64 0-d, at most ``memory_size``). ``h_diag``: the
    initial inverse-Hessian scale ``y . s / y . y`` of the newest pair (1 before any).
    ``hyperparams``: ``tolerance_grad``, ``tolerance_change``.
    """

    count: Tensor
    params: Tensor
    grad: Tensor
    s_history: tuple[Tensor, ...]
    y_history: tuple[Tensor, ...]
    rho_history: Tensor
    num_pairs: Tensor
    h_diag: Tensor
    hyperparams: dict[str, Tensor]


def _two_loop(
    g: Tensor, s_hist: tuple, y_hist: tuple, rho: Tensor, h_diag: Tensor, start: int
) -> Tensor:
    """``H g`` by the two-loop recursion (Nocedal & Wright, Algorithm 7.4) over slots
    ``start .. memory_size - 1`` (oldest first)."""
    m = len(s_hist)
    q = g.clone()
    alphas: dict[int, Tensor] = {}
    for k in range(m - 1, start - 1, -1):  # newest to oldest
        alphas[k] = rho[k] * torch.dot(s_hist[k], q)
        q = q - y_hist[k] * alphas[k]
    r = q * h_diag
    for k in range(start, m):  # oldest to newest
        beta = rho[k] * torch.dot(y_hist[k], r)
        r = r + s_hist[k] * (alphas[k] - beta)
    return r


def scale_by_lbfgs(
    memory_size: int = 100, tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9
) -> GradientTransformation:
    """The L-BFGS direction ``H g`` (Liu & Nocedal, 1989), torch.optim.LBFGS's iteration.

    With ``x``, ``g`` the flat parameters and gradient and ``k`` the iteration (``count``)::

        if max|g| <= tolerance_grad: direction = 0 and the state does not change
        s = x - x_prev;  y = g - g_prev
        if k > 0 and y . s > 1e-10: push (s, y, 1 / (y . s)) (dropping the oldest when full);
                                    h_diag = y . s / y . y
        direction = two-loop recursion over the history, starting from h_diag * q
        direction = direction * min(1, 1 / sum|g|)              at k = 0 (direction = g)
        direction = 0 if g . direction < tolerance_change       (not a descent direction)

    Multiply by ``-learning_rate`` (:func:`~fnn_optim.scale_by_learning_rate`) for the update,
    or chain a line search. Needs ``params``.

    Args:
        memory_size: pairs kept (torch's ``history_size``; default 100 as torch). The state holds
            ``2 * memory_size + 2`` vectors of the size of all parameters together.
        tolerance_grad: below this largest absolute gradient element, no step is taken.
        tolerance_change: smallest accepted ``g . direction``.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.scale_by_lbfgs(memory_size=3)
        >>> params = {"w": torch.tensor([1.0, 1.0])}
        >>> state = opt.init(params)
        >>> d, state = opt.update({"w": torch.tensor([1.0, 3.0])}, state, params)
        >>> d  # the gradient scaled by min(1, 1 / sum|g|) at the first iteration
        {'w': tensor([0.2500, 0.7500])}
    """
    if not isinstance(memory_size, int) or memory_size < 1:
        raise ValueError(
            f"fnn_optim.scale_by_lbfgs: memory_size must be a positive int; got {memory_size!r}."
        )
    where = "fnn_optim.scale_by_lbfgs"

    def init(params: Params) -> ScaleByLbfgsState:
        x = _flat(where, _tree.leaves(params))
        zeros = torch.zeros_like(x)
        return ScaleByLbfgsState(
            _zero_count(params),
            zeros,
            zeros.clone(),
            tuple(torch.zeros_like(x) for _ in range(memory_size)),
            tuple(torch.zeros_like(x) for _ in range(memory_size)),
            x.new_zeros((memory_size,)),
            torch.zeros((), dtype=torch.int64, device=x.device),
            x.new_ones(()),
            _hyperparams(params, tolerance_grad=tolerance_grad, tolerance_change=tolerance_change),
        )

    def update(
        updates: Updates, state: ScaleByLbfgsState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByLbfgsState]:
        del extra
        u, udef, p = _pieces(where, updates, params)
        g, x = _flat(where, u), _flat(where, p)
        if g.shape != state.grad.shape:
            raise ValueError(
                f"{where}: the parameters have {g.numel()} elements but the state was made for "
                f"{state.grad.numel()}; call `opt.init` again after changing the parameters."
            )
        h = state.hyperparams
        compiling = torch.compiler.is_compiling()
        active = g.abs().max() > h["tolerance_grad"]
        first = state.count == 0
        # 1. The new pair enters the history if it has positive curvature.
        s = x - state.params
        y = g - state.grad
        ys = torch.dot(y, s)
        accept = active & ~first & (ys > _CURVATURE_EPS)
        if compiling:  # no data-dependent Python branch: select every slot
            s_hist = tuple(
                torch.where(accept, new, old)
                for new, old in zip((*state.s_history[1:], s), state.s_history, strict=True)
            )
            y_hist = tuple(
                torch.where(accept, new, old)
                for new, old in zip((*state.y_history[1:], y), state.y_history, strict=True)
            )
        elif bool(accept):  # shifting a tuple moves no data
            s_hist = (*state.s_history[1:], s)
            y_hist = (*state.y_history[1:], y)
        else:
            s_hist, y_hist = state.s_history, state.y_history
        shifted_rho = torch.cat([state.rho_history[1:], (1 / ys).reshape(1)])
        rho = torch.where(accept, shifted_rho, state.rho_history)
        h_diag = torch.where(accept, ys / torch.dot(y, y), state.h_diag)
        num_pairs = torch.where(
            accept, torch.clamp_max(state.num_pairs + 1, memory_size), state.num_pairs
        )
        # 2. The direction: the two-loop recursion over the valid pairs (all slots when
        # compiling; empty slots have rho = 0 and add exactly nothing).
        start = 0 if compiling else memory_size - int(num_pairs)
        d = _two_loop(g, s_hist, y_hist, rho, h_diag, start)
        first_scale = torch.clamp_max(1 / g.abs().sum(), 1.0)
        step = torch.where(first, first_scale, torch.ones_like(first_scale))
        descent = torch.dot(g, d) >= h["tolerance_change"]
        d = d * torch.where(active & descent, step, torch.zeros_like(step))
        new_state = ScaleByLbfgsState(
            state.count + active.to(state.count.dtype),
            torch.where(active, x, state.params),
            torch.where(active, g, state.grad),
            s_hist,
            y_hist,
            rho,
            num_pairs,
            h_diag,
            h,
        )
        return _unflatten(udef, _split(d, u)), new_state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Line searches
# --------------------------------------------------------------------------------------------


def _need_value_fn(where: str, value_fn: Any) -> None:
    if not callable(value_fn):
        raise ValueError(
            f"{where}: a line search evaluates the loss at trial parameters; pass the loss "
            "function as an extra: `opt.update(grads, state, params, value=loss, grad=grads, "
            f"value_fn=loss_fn)` where `loss_fn(params)` returns a 0-d tensor; got {value_fn!r}."
        )


def _value_and_grad_at(value_fn: Callable, treedef: Any, like: list[Tensor], vec: Tensor):
    """``value_fn`` and its flat gradient at the flat parameters ``vec`` (eager autograd)."""
    with torch.enable_grad():
        v = vec.detach().requires_grad_(True)
        value = value_fn(_unflatten(treedef, _split(v, like)))
        (grad,) = torch.autograd.grad(value, v, allow_unused=True)
    return value.detach(), torch.zeros_like(vec) if grad is None else grad


def _start_point(
    where: str,
    value_fn: Callable,
    value: Any,
    grad: Any,
    treedef: Any,
    p: list[Tensor],
    x: Tensor,
) -> tuple[Tensor, Tensor]:
    """The loss and the flat gradient at ``x``: from the extras, else computed."""
    if value is not None and grad is not None:
        g, gdef = _flatten(grad)
        _check_tree(where, gdef, treedef, names=("`grad`", "the params"))
        return torch.as_tensor(value).detach(), _flat(where, g)
    f0, g0 = _value_and_grad_at(value_fn, treedef, p, x)
    return (f0 if value is None else torch.as_tensor(value).detach()), g0


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`: ``step_size`` (0-d, the multiple of the
    incoming update taken at the last update), ``num_evaluations`` (int64 0-d, evaluations of
    ``value_fn`` at the last update), ``hyperparams``: ``slope_rtol``, ``curv_rtol``,
    ``tolerance_change``."""

    step_size: Tensor
    num_evaluations: Tensor
    hyperparams: dict[str, Tensor]


def _safe_div(a: float, b: float) -> float:
    return a / b if b != 0 else math.copysign(math.inf, a) if a != 0 else math.nan


def _cubic_minimum(
    x1: float,
    f1: float,
    g1: float,
    x2: float,
    f2: float,
    g2: float,
    bounds: tuple[float, float] | None = None,
) -> float:
    """The minimiser of the cubic through two points with slopes, clamped to ``bounds`` (the
    interval of the points by default); the midpoint if the cubic has no minimum."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * _safe_div(f1 - f2, x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if d2_square >= 0 and math.isfinite(d2_square):
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            pos = x2 - (x2 - x1) * _safe_div(g2 + d2 - d1, g2 - g1 + 2 * d2)
        else:
            pos = x1 - (x1 - x2) * _safe_div(g1 + d2 - d1, g1 - g2 + 2 * d2)
        if not math.isnan(pos):
            return min(max(pos, lo), hi)
    return (lo + hi) / 2.0


def _strong_wolfe(
    phi: Callable[[float], tuple[float, float]],
    f: float,
    gtd: float,
    d_norm: float,
    c1: float,
    c2: float,
    tolerance_change: float,
    max_ls: int,
) -> tuple[float, int]:
    """A step ``t`` along the direction satisfying the strong Wolfe conditions, starting at
    ``t = 1`` (torch.optim.LBFGS's ``_strong_wolfe``: bracketing, then zoom by cubic
    interpolation). ``phi(t)`` returns the loss and the directional derivative at ``t``."""
    t = 1.0
    f_new, gtd_new = phi(t)
    evals = 1
    t_prev, f_prev, gtd_prev = 0.0, f, gtd
    done = False
    ls_iter = 0
    bracket, bracket_f, bracket_gtd = [0.0, t], [f, f_new], [gtd, gtd_new]
    while ls_iter < max_ls:
        if f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_gtd = [t_prev, t], [f_prev, f_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_gtd = [t], [f_new], [gtd_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_gtd = [t_prev, t], [f_prev, f_new], [gtd_prev, gtd_new]
            break
        # Extrapolate: the cubic minimiser between 1.01 t and 10 t.
        bounds = (t + 0.01 * (t - t_prev), t * 10)
        t_prev, t = t, _cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds)
        f_prev, gtd_prev = f_new, gtd_new
        f_new, gtd_new = phi(t)
        evals += 1
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_gtd = [0.0, t], [f, f_new], [gtd, gtd_new]

    insufficient_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_minimum(
            bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1]
        )
        # Keep the trial at least 10% of the bracket away from its ends (after one close call).
        top, bottom = max(bracket), min(bracket)
        eps = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < eps:
            if insufficient_progress or t >= top or t <= bottom:
                t = top - eps if abs(t - top) < abs(t - bottom) else bottom + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        f_new, gtd_new = phi(t)
        evals += 1
        ls_iter += 1
        if f_new > f + c1 * t * gtd or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high], bracket_gtd[high] = t, f_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_gtd[high] = bracket_gtd[low]
            bracket[low], bracket_f[low], bracket_gtd[low] = t, f_new, gtd_new
    return bracket[low], evals


def scale_by_zoom_linesearch(
    max_linesearch_steps: int = 25,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    tolerance_change: float = 1e-9,
) -> GradientTransformation:
    """Scale the update by a step size satisfying the strong Wolfe conditions (Nocedal &
    Wright, Algorithms 3.5-3.6), with torch.optim.LBFGS's ``line_search_fn="strong_wolfe"``.

    The incoming update ``u`` is the trial step at ``t = 1``; with ``f(t) = value_fn(params +
    t u)`` the search brackets, then zooms (cubic interpolation) to a ``t`` with::

        f(t) <= f(0) + slope_rtol * t * f'(0)    and    |f'(t)| <= curv_rtol * |f'(0)|

    within ``max_linesearch_steps`` further evaluations, and returns ``t * u``. If ``u`` is
    not a descent direction (``f'(0) >= 0``) the update is zero.

    **Extras**: ``value_fn`` (required, ``params -> 0-d loss``), ``value`` and ``grad`` (the loss
    and gradient at ``params``; computed with ``value_fn`` when missing). Each trial computes the
    loss and its gradient with autograd. **Eager only**: the search branches on loss values (a
    compiled step raises; use :func:`scale_by_backtracking_linesearch` or a fixed learning rate
    under ``fnn.jit``). Needs ``params``.

    Example:
        >>> import torch, fnn_optim
        >>> loss_fn = lambda p: ((p["w"] - 3.0) ** 2).sum()
        >>> opt = fnn_optim.scale_by_zoom_linesearch()
        >>> params = {"w": torch.zeros(2)}
        >>> updates, state = opt.update(
        ...     {"w": torch.full((2,), 10.0)}, opt.init(params), params, value_fn=loss_fn
        ... )
        >>> updates, state.step_size  # the trial t = 1 overshoots; the zoom finds t = 0.3
        ({'w': tensor([3., 3.])}, tensor(0.3000))
    """
    where = "fnn_optim.scale_by_zoom_linesearch"

    def init(params: Params) -> ScaleByZoomLinesearchState:
        h = _hyperparams(
            params, slope_rtol=slope_rtol, curv_rtol=curv_rtol, tolerance_change=tolerance_change
        )
        return ScaleByZoomLinesearchState(
            torch.ones_like(h["slope_rtol"]),
            torch.zeros((), dtype=torch.int64, device=h["slope_rtol"].device),
            h,
        )

    def update(
        updates: Updates,
        state: ScaleByZoomLinesearchState,
        params: Params | None = None,
        *,
        value: Any = None,
        grad: Any = None,
        value_fn: Callable[[Params], Tensor] | None = None,
        **extra: Any,
    ) -> tuple[Updates, ScaleByZoomLinesearchState]:
        del extra
        if torch.compiler.is_compiling():
            raise RuntimeError(
                f"{where} branches on loss values and cannot be compiled; under fnn.jit use "
                "fnn_optim.scale_by_backtracking_linesearch or a fixed learning rate "
                "(fnn_optim.lbfgs(linesearch=None))."
            )
        _need_value_fn(where, value_fn)
        u, udef, p = _pieces(where, updates, params)
        treedef = _tree.structure(params)
        d, x = _flat(where, u), _flat(where, p)
        f0, g0 = _start_point(where, value_fn, value, grad, treedef, p, x)
        h = {k: float(v) for k, v in state.hyperparams.items()}
        gtd = float(torch.dot(g0, d))
        if not gtd < 0:
            step, evals = 0.0, 0
        else:

            def phi(t: float) -> tuple[float, float]:
                f, g = _value_and_grad_at(value_fn, treedef, p, x + t * d)
                return float(f), float(torch.dot(g, d))

            step, evals = _strong_wolfe(
                phi,
                float(f0),
                gtd,
                float(d.abs().max()),
                h["slope_rtol"],
                h["curv_rtol"],
                h["tolerance_change"],
                max_linesearch_steps,
            )
        step_t = torch.tensor(step, dtype=d.dtype, device=d.device)
        new_state = ScaleByZoomLinesearchState(
            step_t.to(state.step_size.dtype),
            torch.full_like(state.num_evaluations, evals),
            state.hyperparams,
        )
        return _unflatten(udef, _split(d * step_t, u)), new_state

    return GradientTransformation(init, update)


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`: ``step_size`` (0-d, the multiple of
    the incoming update taken at the last update); ``hyperparams``: ``slope_rtol``,
    ``decrease_factor``."""

    step_size: Tensor
    hyperparams: dict[str, Tensor]


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int = 20, slope_rtol: float = 1e-4, decrease_factor: float = 0.8
) -> GradientTransformation:
    """Scale the update by the largest ``decrease_factor**k`` (``k < max_backtracking_steps``)
    with sufficient decrease (Armijo, 1966)::

        value_fn(params + t u) <= value + slope_rtol * t * (grad . u)

    taking the smallest trial if none passes. The incoming update ``u`` is the step at ``t =
    1``; unlike Optax's, the first trial is always 1 (no growth from the previous step).

    **Extras**: ``value_fn`` (required), ``value`` and ``grad`` (computed when missing). Eagerly
    it stops at the first accepted trial; **compiled** (``fnn.jit``), it evaluates all
    ``max_backtracking_steps`` trials (no data-dependent branch) and selects the same step.
    Needs ``params``.

    Example:
        >>> import torch, fnn_optim
        >>> loss_fn = lambda p: ((p["w"] - 1.0) ** 2).sum()
        >>> opt = fnn_optim.scale_by_backtracking_linesearch(decrease_factor=0.5)
        >>> params = {"w": torch.zeros(2)}
        >>> updates, state = opt.update(
        ...     {"w": torch.full((2,), 4.0)}, opt.init(params), params, value_fn=loss_fn
        ... )
        >>> updates, state.step_size
        ({'w': tensor([1., 1.])}, tensor(0.2500))
    """
    if not isinstance(max_backtracking_steps, int) or max_backtracking_steps < 1:
        raise ValueError(
            "fnn_optim.scale_by_backtracking_linesearch: max_backtracking_steps must be a "
            f"positive int; got {max_backtracking_steps!r}."
        )
    where = "fnn_optim.scale_by_backtracking_linesearch"

    def init(params: Params) -> ScaleByBacktrackingLinesearchState:
        h = _hyperparams(params, slope_rtol=slope_rtol, decrease_factor=decrease_factor)
        return ScaleByBacktrackingLinesearchState(torch.ones_like(h["slope_rtol"]), h)

    def update(
        updates: Updates,
        state: ScaleByBacktrackingLinesearchState,
        params: Params | None = None,
        *,
        value: Any = None,
        grad: Any = None,
        value_fn: Callable[[Params], Tensor] | None = None,
        **extra: Any,
    ) -> tuple[Updates, ScaleByBacktrackingLinesearchState]:
        del extra
        _need_value_fn(where, value_fn)
        u, udef, p = _pieces(where, updates, params)
        h = state.hyperparams
        if value is None or grad is None:
            vg = torch.func.grad_and_value(lambda leaves: value_fn(_unflatten(udef, leaves)))
            g0, f0 = vg(list(p))
            f0 = f0 if value is None else value
        else:
            g0, gdef = _flatten(grad)
            _check_tree(where, gdef, udef, names=("`grad`", "the updates"))
            f0 = value
        f0 = torch.as_tensor(f0).detach()
        slope = torch.stack([x.sum() for x in _fe.mul(list(g0), u)]).sum()
        compiling = torch.compiler.is_compiling()

        def trial(t: Tensor) -> Tensor:
            moved = _fe.add(p, _fe.mul(u, t))
            return value_fn(_unflatten(udef, list(moved))).detach()

        steps = [h["decrease_factor"] ** k for k in range(max_backtracking_steps)]
        if compiling:
            step = steps[-1]
            oks = [trial(t) <= f0 + h["slope_rtol"] * t * slope for t in steps]
            for t, ok in zip(reversed(steps), reversed(oks), strict=True):
                step = torch.where(ok, t, step)
        else:
            step = steps[-1]
            for t in steps:
                if bool(trial(t) <= f0 + h["slope_rtol"] * t * slope):
                    step = t
                    break
        step = step.to(h["slope_rtol"].dtype)
        out = _fe.mul(u, step)
        return _unflatten(udef, out), ScaleByBacktrackingLinesearchState(step, h)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------------


def lbfgs(
    learning_rate: ScalarOrSchedule = 1.0,
    memory_size: int = 100,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    linesearch: str | GradientTransformation | None = None,
) -> GradientTransformation:
    """L-BFGS (Liu & Nocedal, 1989, "On the limited memory BFGS method for large scale
    optimization"), one iteration per update.

    Update rule (see :func:`scale_by_lbfgs` for the direction ``d = H g``)::

        params = params - learning_rate * d                  (linesearch=None, the default)
        params = params - t * learning_rate * d              (t from the line search)

    where at the first iteration ``d = g * min(1, 1 / sum|g|)``, no step is taken when
    ``max|g| <= tolerance_grad`` or ``g . d < tolerance_change``.

    Torch twin: ``torch.optim.LBFGS(params, lr, max_iter=1, tolerance_grad, tolerance_change,
    history_size=memory_size, line_search_fn)``; defaults are torch's (``learning_rate=1``,
    ``memory_size=100``, no line search). **Differences**: one update is one iteration (torch's
    default ``max_iter=20`` runs twenty per ``step``: call ``update`` twenty times with fresh
    gradients); torch's ``max_eval`` becomes the line search's own limit; torch's
    ``tolerance_change`` tests on loss and parameter changes end its inner loop, which does not
    exist here; the history is allocated at ``init``.

    Args:
        learning_rate: the step along ``d`` (the line search's first trial), or a schedule.
        memory_size: pairs kept in the history (torch's ``history_size``).
        tolerance_grad: no step when the largest absolute gradient element is at most this.
        tolerance_change: no step when ``g . d`` is below this.
        linesearch: ``None`` (fixed step), ``"strong_wolfe"`` (torch's line search:
            :func:`scale_by_zoom_linesearch`, eager only), ``"backtracking"``
            (:func:`scale_by_backtracking_linesearch`, compiles), or any transformation that
            takes the extras ``value``, ``grad``, ``value_fn``.

    With a line search pass the extras: ``opt.update(grads, state, params, value=loss,
    grad=grads, value_fn=loss_fn)``.

    Example:
        >>> import torch, fnn, fnn_optim
        >>> loss_fn = lambda p: ((p["w"] - torch.tensor([1.0, 2.0])) ** 2).sum()
        >>> params = {"w": torch.zeros(2)}
        >>> opt = fnn_optim.lbfgs(linesearch="strong_wolfe")
        >>> state = opt.init(params)
        >>> for _ in range(3):
        ...     loss, grads = fnn.value_and_grad(loss_fn)(params)
        ...     updates, state = opt.update(
        ...         grads, state, params, value=loss, grad=grads, value_fn=loss_fn
        ...     )
        ...     params = fnn_optim.apply_updates(params, updates)
        >>> torch.allclose(params["w"], torch.tensor([1.0, 2.0]))
        True
    """
    if linesearch is None:
        search: list[GradientTransformation] = []
    elif linesearch == "strong_wolfe":
        search = [scale_by_zoom_linesearch()]
    elif linesearch == "backtracking":
        search = [scale_by_backtracking_linesearch()]
    elif isinstance(linesearch, GradientTransformation):
        search = [linesearch]
    else:
        raise ValueError(
            "fnn_optim.lbfgs: linesearch must be None, 'strong_wolfe', 'backtracking' or a "
            f"GradientTransformation; got {linesearch!r}."
        )
    return chain(
        scale_by_lbfgs(memory_size, tolerance_grad, tolerance_change),
        scale_by_learning_rate(learning_rate),
        *search,
    )
