"""Checking derivatives against finite differences: :func:`check_grads`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import fnn.tree
from fnn.testing._asserts import _close_report

__all__ = ["check_grads"]

# (eps, tolerance) by the lowest-precision dtype of the inputs; the tolerance is used for both
# rtol and atol. Central differences lose about half the digits, so anything below float64 is
# only a smoke test.
_GRAD_DEFAULTS: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-6, 1e-5),
    torch.float32: (1e-3, 2e-3),
    torch.float16: (3e-2, 5e-2),
    torch.bfloat16: (1e-1, 1e-1),
}
_PRECISION_ORDER = (torch.bfloat16, torch.float16, torch.float32, torch.float64)

Flat = Callable[..., tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class _Problem:
    """A function of a flat list of tensors, with names for its inputs and outputs."""

    fn: Flat  # (*xs) -> tuple of output tensors
    xs: tuple[torch.Tensor, ...]
    in_names: tuple[str, ...]
    out_names: tuple[str, ...]
    what: str  # "f", "the JVP of f", ...


def _label(prefix: str, path: str) -> str:
    return f"{prefix} at {path!r}" if path else prefix


def _flatten_args(f: Callable[..., Any], args: tuple[Any, ...]) -> _Problem:
    if not isinstance(args, tuple):
        raise TypeError(
            f"check_grads takes the positional arguments of f as a tuple, got "
            f"{type(args).__qualname__}; for one argument write check_grads(f, (x,))"
        )
    xs: list[torch.Tensor] = []
    names: list[str] = []
    treedefs = []
    for i, arg in enumerate(args):
        pairs, treedef = fnn.tree.flatten_with_path(arg)
        treedefs.append((treedef, len(pairs)))
        for path, leaf in pairs:
            name = _label(f"args[{i}]", path)
            if not (isinstance(leaf, torch.Tensor) and leaf.is_floating_point()):
                kind = (
                    f"a {leaf.dtype} tensor"
                    if isinstance(leaf, torch.Tensor)
                    else type(leaf).__qualname__
                )
                raise TypeError(
                    f"check_grads differentiates with respect to every leaf of args, so they "
                    f"must be real floating tensors (float64 recommended); {name} is {kind}. "
                    f"Close over other values instead: check_grads(lambda x: f(x, n), (x,))"
                )
            xs.append(leaf.detach())
            names.append(name)

    def rebuild(flat: Sequence[torch.Tensor]) -> list[Any]:
        out, k = [], 0
        for treedef, n in treedefs:
            out.append(fnn.tree.unflatten(treedef, list(flat[k : k + n])))
            k += n
        return out

    out_pairs, _ = fnn.tree.flatten_with_path(f(*rebuild(xs)))
    for path, leaf in out_pairs:
        if not (isinstance(leaf, torch.Tensor) and leaf.is_floating_point()):
            raise TypeError(
                f"check_grads needs every output leaf of f to be a real floating tensor; "
                f"{_label('the output', path)} is a {type(leaf).__qualname__}"
                + (f" of dtype {leaf.dtype}" if isinstance(leaf, torch.Tensor) else "")
            )

    def flat_fn(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # torch.func only sees flat tuples of tensors (it does not know fnn's pytrees).
        return tuple(fnn.tree.leaves(f(*rebuild(flat))))

    out_names = tuple(_label("output", p) for p, _ in out_pairs)
    return _Problem(flat_fn, tuple(xs), tuple(names), out_names, "f")


def _jvp_problem(p: _Problem) -> _Problem:
    """``(*xs, *ts) -> (*f(xs), *jvp(f, xs, ts))``, at ``(xs, xs)`` like JAX."""
    n = len(p.xs)

    def fn(*xts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, t_out = torch.func.jvp(p.fn, tuple(xts[:n]), tuple(xts[n:]))
        return (*out, *t_out)

    return _Problem(
        fn,
        p.xs + p.xs,
        tuple(f"{x} (primal)" for x in p.in_names) + tuple(f"{x} (tangent)" for x in p.in_names),
        p.out_names + tuple(f"tangent of {o}" for o in p.out_names),
        f"the JVP of {p.what}",
    )


def _vjp_problem(p: _Problem) -> _Problem:
    """``xs -> vjp(f, xs)(f(xs))``: gradients with the outputs as cotangents, like JAX."""

    def fn(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, vjp_fn = torch.func.vjp(p.fn, *xs)
        return tuple(vjp_fn(out))

    return _Problem(
        fn, p.xs, p.in_names, tuple(f"gradient for {x}" for x in p.in_names), f"the VJP of {p.what}"
    )


def _defaults(xs: Sequence[torch.Tensor]) -> tuple[float, float]:
    lowest = min((x.dtype for x in xs), key=_PRECISION_ORDER.index, default=torch.float64)
    return _GRAD_DEFAULTS[lowest]


def _random_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype)


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(
        ((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)),
        start=torch.zeros((), dtype=torch.float64),
    )


class _Checker:
    def __init__(self, modes: tuple[str, ...], eps: float, rtol: float, atol: float) -> None:
        self.modes, self.eps, self.rtol, self.atol = modes, eps, rtol, atol

    def _fail(self, mode: str, p: _Problem, where: str, lines: list[str]) -> None:
        how = {
            "fwd": "forward mode (torch.func.jvp)",
            "rev": "reverse mode (torch.func.vjp)",
        }[mode]
        detail = "\n  ".join(lines)
        raise AssertionError(
            f"check_grads: {how} disagrees with central finite differences for {p.what}: "
            f"{where} (eps={self.eps:g}, rtol={self.rtol:g}, atol={self.atol:g}):\n  {detail}"
        )

    def _check_primal(self, mode: str, p: _Problem, got: Sequence[torch.Tensor]) -> None:
        want = p.fn(*p.xs)
        for name, w, g in zip(p.out_names, want, got, strict=True):
            report = _close_report(w, g, self.rtol, self.atol)
            if report is not None:
                lines = ["the primal output it returned differs from a direct call", *report[1]]
                self._fail(mode, p, name, lines)

    def _numerical_jvp(self, p: _Problem, k: int, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Central differences along ``t`` in input ``k``: ``(f(x+eps t) - f(x-eps t)) / 2eps``."""
        plus = list(p.xs)
        minus = list(p.xs)
        plus[k] = p.xs[k] + self.eps * t
        minus[k] = p.xs[k] - self.eps * t
        f_plus, f_minus = p.fn(*plus), p.fn(*minus)
        return tuple((a - b) / (2 * self.eps) for a, b in zip(f_plus, f_minus, strict=True))

    def check(self, p: _Problem, order: int) -> None:
        gen = torch.Generator().manual_seed(0)
        directions = [_random_like(x, gen) for x in p.xs]
        numerical = [self._numerical_jvp(p, k, t) for k, t in enumerate(directions)]
        if "fwd" in self.modes:
            self._check_fwd(p, directions, numerical)
        if "rev" in self.modes:
            self._check_rev(p, directions, numerical, gen)
        if order > 1:
            if "fwd" in self.modes:
                self.check(_jvp_problem(p), order - 1)
            if "rev" in self.modes:
                self.check(_vjp_problem(p), order - 1)

    def _check_fwd(
        self,
        p: _Problem,
        directions: list[torch.Tensor],
        numerical: list[tuple[torch.Tensor, ...]],
    ) -> None:
        for k, t in enumerate(directions):
            tangents = [torch.zeros_like(x) for x in p.xs]
            tangents[k] = t
            out, t_out = torch.func.jvp(p.fn, p.xs, tuple(tangents))
            self._check_primal("fwd", p, out)
            for name, want, got in zip(p.out_names, numerical[k], t_out, strict=True):
                report = _close_report(want, got, self.rtol, self.atol)
                if report is not None:
                    where = f"the derivative of {name} along a random direction in {p.in_names[k]}"
                    lines = ["values are shown as finite differences vs jvp", *report[1]]
                    if want.numel() <= 8:
                        lines += [
                            f"expected (finite differences): {want.tolist()}",
                            f"got (jvp): {got.tolist()}",
                        ]
                    self._fail("fwd", p, where, lines)

    def _check_rev(
        self,
        p: _Problem,
        directions: list[torch.Tensor],
        numerical: list[tuple[torch.Tensor, ...]],
        gen: torch.Generator,
    ) -> None:
        out, vjp_fn = torch.func.vjp(p.fn, *p.xs)
        self._check_primal("rev", p, out)
        cotangents = tuple(_random_like(o, gen) for o in out)
        grads = vjp_fn(cotangents)
        for k, t in enumerate(directions):
            want = _dot(cotangents, numerical[k])
            got = _dot([grads[k]], [t])
            if _close_report(want, got, self.rtol, self.atol) is not None:
                err = float((want - got).abs())
                rel = err / max(float(want.abs()), float(got.abs()))
                self._fail(
                    "rev",
                    p,
                    f"the gradient with respect to {p.in_names[k]}",
                    [
                        "<cotangent, J v> for a random cotangent and a random direction v in "
                        f"{p.in_names[k]}:",
                        f"expected (finite differences) {float(want):.10g}, "
                        f"got (vjp) {float(got):.10g}",
                        f"absolute error {err:.6g}, relative error {rel:.6g}",
                    ],
                )


def check_grads(
    f: Callable[..., Any],
    args: tuple[Any, ...],
    order: int = 1,
    modes: Sequence[str] = ("fwd", "rev"),
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> None:
    """Check the derivatives of ``f`` at ``args`` against central finite differences.

    Like ``jax.test_util.check_grads``. For every leaf of ``args`` (a tuple of pytrees of real
    floating tensors, any shapes) it takes a random direction ``v`` in that leaf and compares:

    - ``"fwd"``: ``torch.func.jvp(f, args, v)`` with ``(f(args + eps v) - f(args - eps v)) / 2eps``,
      for every output leaf;
    - ``"rev"``: ``<c, J v>`` computed with ``torch.func.vjp`` (``<vjp(c), v>``) and with the
      finite differences, for a random cotangent ``c`` shaped like the output.

    With ``order=2`` it then checks the JVP and the VJP of ``f`` the same way (as JAX does:
    ``(x, t) -> jvp(f, x, t)`` at ``(args, args)`` and ``x -> vjp(f, x)(f(x))``), so second
    derivatives are checked too. Directions come from a local ``torch.Generator`` seeded with 0:
    the check is deterministic and leaves the global RNG alone.

    ``f`` returns a pytree of floating tensors. Use float64 inputs: finite differences lose about
    half of the digits. Defaults by the lowest-precision input dtype (``rtol`` and ``atol`` get
    the same value): float64 ``eps=1e-6, tol=1e-5``; float32 ``eps=1e-3, tol=2e-3``; float16
    ``eps=3e-2, tol=5e-2``; bfloat16 ``eps=1e-1, tol=1e-1``.

    Args:
        f: the function, called as ``f(*args)``.
        args: the positional arguments, a tuple of pytrees of floating tensors.
        order: 1 (first derivatives) or 2 (also second derivatives).
        modes: which autodiff to check: ``"fwd"`` (jvp), ``"rev"`` (vjp), or both.
        eps: finite-difference step (``None``: the dtype default).
        atol: absolute tolerance (``None``: the dtype default).
        rtol: relative tolerance (``None``: the dtype default).

    Raises:
        AssertionError: naming the mode, the function checked (``f``, ``the JVP of f``, ...), the
            argument path of the direction, the output path (forward mode), and the expected
            (finite differences) and computed values.

    Example:
        >>> import torch
        >>> from fnn.testing import check_grads
        >>> params = {"w": torch.tensor([[1.0, 2.0]], dtype=torch.float64)}
        >>> x = torch.tensor([0.5, -1.0], dtype=torch.float64)
        >>> check_grads(lambda p, x: torch.sin(p["w"] @ x), (params, x), order=2)
        >>> class BadSquare(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(x):
        ...         return x**2
        ...     @staticmethod
        ...     def setup_context(ctx, inputs, output):
        ...         ctx.save_for_backward(inputs[0])
        ...     @staticmethod
        ...     def backward(ctx, g):
        ...         (x,) = ctx.saved_tensors
        ...         return g * x  # wrong: should be 2 * g * x
        >>> check_grads(BadSquare.apply, (x,), modes=("rev",))
        Traceback (most recent call last):
        ...
        AssertionError: check_grads: reverse mode (torch.func.vjp) disagrees with central finite differences for f: the gradient with respect to args[0] (eps=1e-06, rtol=1e-05, atol=1e-05):
          <cotangent, J v> for a random cotangent and a random direction v in args[0]:
          expected (finite differences) ..., got (vjp) ...
          ...
    """  # noqa: E501
    if order not in (1, 2):
        raise ValueError(f"check_grads supports order=1 or order=2, got {order!r}")
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if not modes or not set(modes) <= {"fwd", "rev"}:
        raise ValueError(f'modes must be a non-empty subset of ("fwd", "rev"), got {modes!r}')
    problem = _flatten_args(f, args)
    d_eps, d_tol = _defaults(problem.xs)
    checker = _Checker(
        modes,
        d_eps if eps is None else eps,
        d_tol if rtol is None else rtol,
        d_tol if atol is None else atol,
    )
    checker.check(problem, order)
