"""``jax.lax``-style control flow that composes with ``torch.func`` and ``torch.compile``.

:func:`scan`, :func:`fori_loop`, :func:`while_loop`, :func:`cond`, :func:`switch` and
:func:`associative_scan` take and return pytrees (anything :mod:`fnn.tree` flattens) and keep
JAX's semantics. In torch 2.13 the higher-order ops ``torch.cond``, ``torch.while_loop``,
``scan`` and ``map`` fail under ``torch.func.grad`` (eager and compiled), so fnn builds its
control flow from Python loops with static trip counts and ``torch.where``. What that costs:

- **Loops with a static trip count are unrolled** (:func:`scan`, :func:`fori_loop` with Python
  ints). Eagerly that is just a Python loop. Under ``torch.compile`` every iteration is traced
  into the graph: compile time and graph size grow linearly with the trip count (keep it to
  tens or hundreds of steps), and a new trip count recompiles.
- **A predicate that can be read now is read** (:func:`cond`, :func:`switch`, :func:`while_loop`
  in eager mode, also inside ``torch.func.grad``): Python runs only the chosen branch, at the
  cost of one host synchronisation.
- **A predicate that cannot be read is a select.** Under ``torch.func.vmap`` a batched predicate
  has one value per example, and under ``torch.compile`` reading a tensor would break the graph.
  Then :func:`cond` / :func:`switch` evaluate *every* branch and pick with ``torch.where``. This
  differentiates, vmaps and compiles, but costs all branches, and a branch that produces
  ``inf``/``nan`` where it is *not* selected still poisons the gradient (``0 * inf``): make the
  unused branch safe (``torch.where(ok, x, 1.0)`` before a ``log``), as in JAX.
  ``torch.cond`` was measured and not used under compile: it fails under ``torch.func.grad``
  and rejects branches that return an input unchanged or a non-tensor leaf.
- **while_loop** runs eagerly as a Python loop (one host synchronisation per iteration). Under
  ``vmap`` with a batched predicate it runs until *every* example is done, freezing finished
  ones with ``torch.where`` (JAX's batching rule). Under ``torch.compile`` with no ``torch.func``
  transform it lowers to ``torch._higher_order_ops.while_loop`` (a real loop in the graph; it
  supports ``loss.backward()``); under ``torch.compile`` combined with ``torch.func.grad`` or
  ``vmap`` it raises, pointing to :func:`fori_loop` with a static bound.
- :func:`associative_scan` is a parallel prefix scan: ``O(log n)`` sequential depth and about
  ``2n`` applications of the combine function, vectorized over the scanned axis.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fnn._src import tree

PyTree = Any

__all__ = ["associative_scan", "cond", "fori_loop", "scan", "switch", "while_loop"]


# --------------------------------------------------------------------------------------------
# Predicates: can Python read them now?
# --------------------------------------------------------------------------------------------


def _functorch_wrapped(t: torch.Tensor) -> bool:
    f = torch._C._functorch
    return f.is_batchedtensor(t) or f.is_gradtrackingtensor(t) or f.is_functionaltensor(t)


def _is_batched(t: torch.Tensor) -> bool:
    """Whether ``t`` carries a ``vmap`` batch dimension at any functorch level (eager only)."""
    while _functorch_wrapped(t):
        if torch._C._functorch.is_batchedtensor(t):
            return True
        t = torch._C._functorch.get_unwrapped(t)
    return False


def _any_example_true(pred: torch.Tensor) -> bool:
    """``True`` if ``pred`` is true for any example of every enclosing ``vmap`` (eager only).

    Peels the functorch wrappers down to the physical tensor, whose batch dimensions hold the
    value of every example, and reduces it outside all transforms.
    """
    t = pred
    while _functorch_wrapped(t):
        t = torch._C._functorch.get_unwrapped(t)
    with torch._C._DisableFuncTorch():
        return builtins.bool(t.any())


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        dtype = str(x.dtype).removeprefix("torch.")
        return f"a {dtype} tensor of shape {tuple(x.shape)}"
    return f"{type(x).__qualname__} {x!r}"


def _check_scalar_pred(fn_name: str, what: str, pred: Any, integer: bool = False) -> None:
    """Raise unless ``pred`` is a Python bool/int or a 0-d bool/integer tensor."""
    if isinstance(pred, builtins.bool | int | np.bool_ | np.integer):
        return
    expected = "an integer" if integer else "a boolean"
    if isinstance(pred, torch.Tensor):
        ok_dtype = pred.dtype == torch.bool or not (pred.is_floating_point() or pred.is_complex())
        if pred.ndim == 0 and ok_dtype:
            return
        raise TypeError(
            f"fnn.{fn_name}: {what} must be {expected} scalar (a Python value or a 0-d bool or "
            f"integer tensor), got {_describe(pred)}. Reduce it first, e.g. `(x > 0).all()` or "
            "`x.sum() > 0`; under vmap the shape is the per-example shape."
        )
    raise TypeError(
        f"fnn.{fn_name}: {what} must be {expected} scalar (a Python value or a 0-d tensor), "
        f"got {_describe(pred)}."
    )


def _concrete(x: Any) -> Any:
    """The Python value of a scalar predicate/index if it can be read without breaking a graph
    or a ``vmap``; ``None`` when it has to be selected with ``torch.where`` instead."""
    if not isinstance(x, torch.Tensor):
        return x.item() if isinstance(x, np.generic) else x
    if torch.compiler.is_compiling() or _is_batched(x):
        return None
    return x.item()


# --------------------------------------------------------------------------------------------
# Carries: same structure, shapes and dtypes
# --------------------------------------------------------------------------------------------


def _at(path: str) -> str:
    return f"at {path!r}" if path else "at the root"


def _check_same_type(
    fn_name: str, ref: PyTree, new: PyTree, names: tuple[str, str], where: str, fix: str
) -> tuple[list[Any], list[Any], Any]:
    """Check that ``new`` has the structure, shapes and dtypes of ``ref``.

    Returns ``(ref_leaves, new_leaves, treedef)``. The error names the first differing path.
    """
    ref_leaves, ref_def = tree.flatten(ref)
    new_leaves, new_def = tree.flatten(new)
    if new_def != ref_def:
        msg = tree.structure_mismatch(ref, new, names=names)
        raise TypeError(f"fnn.{fn_name}: {where} changed structure: {msg}. {fix}")
    for k, (a, b) in enumerate(zip(ref_leaves, new_leaves, strict=True)):
        a_tensor, b_tensor = isinstance(a, torch.Tensor), isinstance(b, torch.Tensor)
        if a_tensor and b_tensor:
            if a.shape == b.shape and a.dtype == b.dtype:
                continue
        elif not a_tensor and not b_tensor and type(a) is type(b):
            continue
        path = tree.paths(ref)[k]
        raise TypeError(
            f"fnn.{fn_name}: {where} changed {_at(path)}: {names[0]} has {_describe(a)}, "
            f"{names[1]} has {_describe(b)}. {fix}"
        )
    return ref_leaves, new_leaves, ref_def


_CARRY_FIX = (
    "The carry must keep its structure, shapes and dtypes from one iteration to the next; "
    "start from a value of the final type (e.g. torch.zeros(3) rather than 0) or cast inside "
    "the body."
)


def _split_pair(fn_name: str, out: Any, step: int) -> tuple[Any, Any]:
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise TypeError(
            f"fnn.{fn_name}: f must return a pair (new_carry, y), got {type(out).__qualname__}"
            + (f" of length {len(out)}" if isinstance(out, tuple | list) else "")
            + f" at step {step}. Return `carry, None` when there is nothing to stack."
        )
    return out[0], out[1]


def _select(
    fn_name: str,
    pred: torch.Tensor,
    a: PyTree,
    b: PyTree,
    names: tuple[str, str],
    where: str = "the branch output",
    fix: str = "Every branch must return the same structure, shapes and dtypes (jax.lax.cond).",
) -> PyTree:
    """``torch.where(pred, a_leaf, b_leaf)`` leaf by leaf, after checking both match."""
    la, lb, treedef = _check_same_type(fn_name, a, b, names, where, fix)
    out = []
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, torch.Tensor):
            out.append(torch.where(pred, x, y))
        elif x == y:
            out.append(x)
        elif isinstance(x, int | float | builtins.bool):
            out.append(torch.where(pred, torch.as_tensor(x), torch.as_tensor(y)))
        else:
            raise TypeError(
                f"fnn.{fn_name}: the branches returned different non-tensor leaves {x!r} and "
                f"{y!r}; under vmap or torch.compile both branches run and only tensors (or "
                "numbers) can be selected."
            )
    return treedef.unflatten(out)


# --------------------------------------------------------------------------------------------
# scan
# --------------------------------------------------------------------------------------------


def _stack(fn_name: str, ys: list[PyTree], empty_like: PyTree | None) -> PyTree:
    """Stack per-step outputs along a new leading axis (``empty_like`` for zero steps)."""
    if not ys:
        if empty_like is None:
            return None
        return tree.map(
            lambda y: torch.as_tensor(y).new_empty((0, *torch.as_tensor(y).shape)), empty_like
        )
    first_pairs, treedef = tree.flatten_with_path(ys[0])
    columns: list[list[Any]] = [[leaf] for _, leaf in first_pairs]
    for step, y in enumerate(ys[1:], start=1):
        _, leaves, _ = _check_same_type(
            fn_name,
            ys[0],
            y,
            ("step 0", f"step {step}"),
            "the stacked output y",
            "Every step must return y of the same structure, shapes and dtypes.",
        )
        for column, leaf in zip(columns, leaves, strict=True):
            column.append(leaf)
    return treedef.unflatten([torch.stack([torch.as_tensor(v) for v in c]) for c in columns])


def _scan_length(fn_name: str, xs: PyTree, length: int | None) -> int:
    pairs, _ = tree.flatten_with_path(xs)
    lengths = {}
    for path, leaf in pairs:
        if not isinstance(leaf, torch.Tensor) or leaf.ndim == 0:
            raise TypeError(
                f"fnn.{fn_name}: every leaf of xs must be a tensor with a leading axis to scan "
                f"over; xs has {_describe(leaf)} {_at(path)}."
            )
        lengths[path] = leaf.shape[0]
    if length is not None:
        if not isinstance(length, int) or isinstance(length, builtins.bool) or length < 0:
            raise TypeError(f"fnn.{fn_name}: length must be an int >= 0, got {length!r}.")
        wrong = {p: n for p, n in lengths.items() if n != length}
        if wrong:
            raise ValueError(
                f"fnn.{fn_name}: length={length}, but the leading axis of xs has size "
                f"{next(iter(wrong.values()))} {_at(next(iter(wrong)))}."
            )
        return length
    if not lengths:
        raise ValueError(
            f"fnn.{fn_name}: xs has no leaves, so the number of steps is unknown; pass "
            "length=..., e.g. fnn.scan(f, init, None, length=10)."
        )
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{p or '<root>'}: {n}" for p, n in lengths.items())
        raise ValueError(
            f"fnn.{fn_name}: every leaf of xs must have the same leading size; got {sizes}."
        )
    return next(iter(lengths.values()))


def scan(
    f: Callable[[PyTree, PyTree], tuple[PyTree, PyTree]],
    init: PyTree,
    xs: PyTree = None,
    length: int | None = None,
    reverse: bool = False,
) -> tuple[PyTree, PyTree]:
    """Loop ``f`` over the leading axis of ``xs``, threading a carry; stack the outputs.

    The semantics of ``jax.lax.scan``, in Python::

        def scan(f, init, xs, length=None, reverse=False):
            carry, ys = init, []
            for x in (reversed(xs) if reverse else xs):
                carry, y = f(carry, x)
                ys.append(y)
            return carry, stack(ys[::-1] if reverse else ys)

    Args:
        f: ``f(carry, x) -> (new_carry, y)``. ``new_carry`` must have the structure, shapes and
            dtypes of ``init``; ``y`` is any pytree (``None`` for nothing) with the same
            structure, shapes and dtypes at every step.
        init: the initial carry, any pytree.
        xs: a pytree of tensors of shape ``(length, ...)``, sliced along the leading axis
            (``f`` sees the leaves with shape ``(...)``), or ``None`` to scan ``length`` steps
            with ``x=None``.
        length: the number of steps; required when ``xs`` is ``None``, checked otherwise.
        reverse: scan from the last slice to the first; ``ys[i]`` still belongs to ``xs[i]``.

    Returns:
        ``(final_carry, ys)``: ``ys`` has the structure of ``y`` and leaves of shape
        ``(length, *y_leaf.shape)``. With ``length == 0``, ``f`` is called once on zero slices
        only to learn the shapes of ``y``, and the carry is ``init``.

    Cost: the loop is unrolled. Under ``torch.compile`` every step is traced, so compile time
    and graph size grow linearly with ``length``; it works under ``torch.func.grad``/``vmap``
    and ``torch.compile(fullgraph=True)``.

    Raises:
        TypeError: if ``f`` changes the structure, a shape or a dtype of the carry (naming the
            tree path and the step), or returns something other than a pair.
        ValueError: if the leaves of ``xs`` disagree on the length, or ``length`` disagrees.

    Example:
        >>> import torch, fnn
        >>> def cumsum(total, x):
        ...     total = total + x
        ...     return total, total
        >>> fnn.scan(cumsum, torch.tensor(0.0), torch.tensor([1.0, 2.0, 3.0]))
        (tensor(6.), tensor([1., 3., 6.]))
        >>> fnn.scan(cumsum, torch.tensor(0.0), torch.tensor([1.0, 2.0, 3.0]), reverse=True)
        (tensor(6.), tensor([6., 5., 3.]))
        >>> fnn.scan(lambda c, _: (c * 2, None), torch.tensor(1.0), None, length=3)
        (tensor(8.), None)
    """
    n = _scan_length("scan", xs, length)
    xs_leaves, xs_def = tree.flatten(xs)
    slices = [torch.unbind(leaf, 0) for leaf in xs_leaves]
    carry = init
    if n == 0:
        zeros = [leaf.new_zeros(leaf.shape[1:]) for leaf in xs_leaves]
        _, y = _split_pair("scan", f(init, xs_def.unflatten(zeros)), 0)
        return init, _stack("scan", [], y)
    ys = []
    for step, i in enumerate(reversed(range(n)) if reverse else range(n)):
        x = xs_def.unflatten([s[i] for s in slices])
        new_carry, y = _split_pair("scan", f(carry, x), step)
        _check_same_type(
            "scan", init, new_carry, ("init", f"the carry of step {step}"), "the carry", _CARRY_FIX
        )
        carry = new_carry
        ys.append(y)
    if reverse:
        ys.reverse()
    return carry, _stack("scan", ys, None)


# --------------------------------------------------------------------------------------------
# while_loop and fori_loop
# --------------------------------------------------------------------------------------------


def _compiled_while(
    fn_name: str,
    cond_fun: Callable[[PyTree], Any],
    body_fun: Callable[[PyTree], PyTree],
    init_val: PyTree,
) -> PyTree:
    """``torch._higher_order_ops.while_loop`` on the flattened carry (compile, no functorch)."""
    if torch._C._are_functorch_transforms_active():
        raise RuntimeError(
            f"fnn.{fn_name}: a loop whose trip count depends on tensor values cannot run under "
            "torch.compile together with torch.func.grad or vmap in torch 2.13 (the "
            "while_loop higher-order op fails under torch.func transforms, and reading the "
            "predicate would break the graph). Give the loop a static bound instead, e.g. "
            "fnn.fori_loop(0, max_steps, body, init) with Python ints, freezing the carry "
            "once done with fnn.tree.where(done, carry, body(carry))."
        )
    from torch._higher_order_ops.while_loop import while_loop as torch_while_loop

    pairs, treedef = tree.flatten_with_path(init_val)
    for path, leaf in pairs:
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"fnn.{fn_name}: under torch.compile the carry of a loop with a tensor-valued "
                f"trip count must hold tensors only, but it has {_describe(leaf)} "
                f"{_at(path)}; use a 0-d tensor (torch.tensor(...))."
            )

    def cond_flat(*leaves: torch.Tensor) -> torch.Tensor:
        pred = cond_fun(treedef.unflatten(leaves))
        _check_scalar_pred(fn_name, "cond_fun's result", pred)
        return torch.as_tensor(pred).to(torch.bool)

    def body_flat(*leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:
        new = body_fun(treedef.unflatten(leaves))
        _, new_leaves, _ = _check_same_type(
            fn_name, init_val, new, ("init_val", "body_fun's result"), "the carry", _CARRY_FIX
        )
        # The higher-order op rejects outputs that alias inputs (e.g. an unchanged leaf).
        return tuple(leaf.clone() for leaf in new_leaves)

    out = torch_while_loop(cond_flat, body_flat, tuple(leaf for _, leaf in pairs))
    return treedef.unflatten(list(out))


def _while(
    fn_name: str,
    cond_fun: Callable[[PyTree], Any],
    body_fun: Callable[[PyTree], PyTree],
    init_val: PyTree,
) -> PyTree:
    if torch.compiler.is_compiling():
        return _compiled_while(fn_name, cond_fun, body_fun, init_val)
    val = init_val
    step = 0
    while True:
        pred = cond_fun(val)
        _check_scalar_pred(fn_name, "cond_fun's result", pred)
        concrete = _concrete(pred)
        # A vmap-batched predicate: run while any example runs, freeze the finished ones.
        running = _any_example_true(pred) if concrete is None else builtins.bool(concrete)
        if not running:
            return val
        new = body_fun(val)
        names = ("init_val", f"body_fun's result at iteration {step}")
        _check_same_type(fn_name, init_val, new, names, "the carry", _CARRY_FIX)
        if concrete is None:
            p = pred if pred.dtype == torch.bool else pred != 0
            new = _select(fn_name, p, new, val, names, "the carry", _CARRY_FIX)
        val = new
        step += 1


def while_loop(
    cond_fun: Callable[[PyTree], Any],
    body_fun: Callable[[PyTree], PyTree],
    init_val: PyTree,
) -> PyTree:
    """Repeat ``val = body_fun(val)`` while ``cond_fun(val)`` is true; return ``val``.

    The semantics of ``jax.lax.while_loop``::

        val = init_val
        while cond_fun(val):
            val = body_fun(val)
        return val

    Args:
        cond_fun: ``cond_fun(val)`` returns a Python bool or a 0-d bool tensor.
        body_fun: ``body_fun(val)`` returns the next value, with the structure, shapes and
            dtypes of ``init_val``.
        init_val: the initial loop value, any pytree.

    Returns:
        The final value, a pytree like ``init_val``.

    How it runs:

    - Eagerly (also inside ``torch.func.grad``): a Python loop that reads the predicate each
      iteration (one host synchronisation per iteration). Differentiating through it
      differentiates the iterations that ran, as reverse-mode JAX cannot.
    - Under ``torch.func.vmap`` with a predicate that differs per example: the body runs while
      *any* example's predicate is true, and finished examples keep their value
      (``torch.where``), as JAX's batching rule does.
    - Under ``torch.compile`` with no ``torch.func`` transform: ``torch._higher_order_ops.
      while_loop``, a loop inside the graph whose trip count is decided at run time (one
      compiled graph serves every trip count); the carry must hold tensors only. It supports
      ``loss.backward()`` on the compiled result, but two such loops in a row on values that
      require grad hit an internal assertion of torch 2.13 (unbacked symbols).
    - Under ``torch.compile`` combined with ``torch.func.grad`` or ``vmap``: a
      ``RuntimeError`` saying so (with ``fullgraph=True`` dynamo re-raises it as its
      ``Unsupported`` error, a ``RuntimeError`` quoting fnn's message): the higher-order op
      fails there in torch 2.13. Use :func:`fori_loop` with a static bound and freeze the
      carry with ``fnn.tree.where`` once done.

    Raises:
        TypeError: if ``body_fun`` changes the structure, a shape or a dtype of the value
            (naming the tree path), or ``cond_fun`` returns a non-scalar.
        RuntimeError: under ``torch.compile`` together with ``torch.func`` transforms.

    Example:
        >>> import torch, fnn
        >>> fnn.while_loop(lambda x: x < 100, lambda x: x * 3, torch.tensor(1))
        tensor(243)
        >>> fnn.while_loop(lambda s: s["i"] < 3, lambda s: {"i": s["i"] + 1, "x": s["x"] * 2},
        ...                {"i": 0, "x": torch.tensor([1.0, 0.5])})
        {'i': 3, 'x': tensor([8., 4.])}
    """
    return _while("while_loop", cond_fun, body_fun, init_val)


def _static_int(x: Any) -> int | None:
    if isinstance(x, builtins.bool):
        return int(x)
    if isinstance(x, int | np.integer):
        return int(x)
    return None


def fori_loop(
    lower: int | torch.Tensor,
    upper: int | torch.Tensor,
    body_fun: Callable[[Any, PyTree], PyTree],
    init_val: PyTree,
) -> PyTree:
    """Run ``val = body_fun(i, val)`` for ``i`` in ``range(lower, upper)``; return ``val``.

    The semantics of ``jax.lax.fori_loop``::

        val = init_val
        for i in range(lower, upper):
            val = body_fun(i, val)
        return val

    Args:
        lower, upper: the bounds; Python ints (the loop is unrolled) or 0-d integer tensors.
        body_fun: ``body_fun(i, val)`` returns the next value, with the structure, shapes and
            dtypes of ``init_val``. ``i`` is a Python int when the loop is unrolled, and a 0-d
            int64 tensor when the bounds are only known at run time (see below).
        init_val: the initial loop value, any pytree.

    Returns:
        The final value, a pytree like ``init_val``.

    How it runs:

    - Python-int bounds: unrolled (like :func:`scan`): works under ``torch.func.grad``,
      ``vmap`` and ``torch.compile(fullgraph=True)``; under compile, compile time grows with
      ``upper - lower`` and each new bound recompiles.
    - Tensor bounds in eager mode (also inside ``torch.func.grad``, and inside ``vmap`` when
      the bounds are not batched): read as ints, then unrolled as above.
    - Tensor bounds that cannot be read (batched by ``vmap``, or under ``torch.compile``):
      a :func:`while_loop` over ``(i, val)`` with a tensor ``i``, with that function's rules:
      under ``vmap`` it runs to the largest bound and freezes finished examples; under
      ``torch.compile`` alone it is one compiled loop for every bound; under ``torch.compile``
      with ``torch.func.grad``/``vmap`` it raises (pass Python ints instead).

    Raises:
        TypeError: if the bounds are not integers, or ``body_fun`` changes the structure, a
            shape or a dtype of the value (naming the tree path and the iteration).

    Example:
        >>> import torch, fnn
        >>> fnn.fori_loop(0, 4, lambda i, x: x + i, torch.tensor(0.0))
        tensor(6.)
        >>> fnn.fori_loop(1, 3, lambda i, acc: {"p": acc["p"] * i}, {"p": torch.tensor([2.0])})
        {'p': tensor([4.])}
    """
    for name, bound in (("lower", lower), ("upper", upper)):
        if _static_int(bound) is None:
            _check_scalar_pred("fori_loop", f"the bound {name}", bound, integer=True)
            if bound.dtype == torch.bool:
                raise TypeError(f"fnn.fori_loop: the bound {name} must be an integer, got bool.")
    lo = _static_int(lower)
    hi = _static_int(upper)
    lo = _concrete(lower) if lo is None else lo
    hi = _concrete(upper) if hi is None else hi
    if lo is not None and hi is not None:
        val = init_val
        for i in range(int(lo), int(hi)):
            new = body_fun(i, val)
            names = ("init_val", f"body_fun's result at i={i}")
            _check_same_type("fori_loop", init_val, new, names, "the carry", _CARRY_FIX)
            val = new
        return val

    device = (lower if isinstance(lower, torch.Tensor) else upper).device
    i0 = torch.as_tensor(lower, dtype=torch.int64, device=device)
    hi_t = torch.as_tensor(upper, dtype=torch.int64, device=device)
    _, val = _while(
        "fori_loop",
        lambda c: c[0] < hi_t,
        lambda c: (c[0] + 1, body_fun(c[0], c[1])),
        (i0, init_val),
    )
    return val


# --------------------------------------------------------------------------------------------
# cond and switch
# --------------------------------------------------------------------------------------------


def cond(
    pred: bool | torch.Tensor,
    true_fun: Callable[..., PyTree],
    false_fun: Callable[..., PyTree],
    *operands: Any,
) -> PyTree:
    """Return ``true_fun(*operands)`` if ``pred`` else ``false_fun(*operands)``.

    The semantics of ``jax.lax.cond``; both branches must return pytrees of the same
    structure, shapes and dtypes.

    Args:
        pred: a Python bool/int or a 0-d bool or integer tensor (nonzero is true).
        true_fun, false_fun: functions of ``*operands``.
        *operands: any pytrees, passed to the branch.

    Returns:
        The chosen branch's output.

    How it runs:

    - ``pred`` is a Python value, or a tensor in eager mode (also inside ``torch.func.grad``,
      and inside ``vmap`` when ``pred`` is not batched): only the chosen branch runs. Branch
      outputs are then not compared, so a mismatch shows only where both run.
    - ``pred`` batched by ``vmap``, or any tensor ``pred`` under ``torch.compile``: **both**
      branches run and every output leaf is ``torch.where(pred, true_leaf, false_leaf)``. That
      differentiates, vmaps and compiles into one graph, but costs both branches, and a branch
      producing ``inf``/``nan`` where it is not selected still gives ``nan`` gradients; guard
      its input (``torch.where(x > 0, x, 1.0)`` before ``log``). ``torch.cond`` is not used:
      in torch 2.13 it fails under ``torch.func.grad`` and rejects branches that return an
      operand unchanged.

    Raises:
        TypeError: if ``pred`` is not a scalar, or (when both branches run) the branch outputs
            differ in structure, shape or dtype (naming the tree path).

    Example:
        >>> import torch, fnn
        >>> x = torch.tensor([1.0, -2.0])
        >>> fnn.cond(x.sum() > 0, lambda v: v * 10, lambda v: -v, x)
        tensor([-1.,  2.])
        >>> torch.func.vmap(lambda v: fnn.cond(v > 0, torch.sqrt, torch.square, v))(x)
        tensor([1., 4.])
    """
    _check_scalar_pred("cond", "pred", pred)
    concrete = _concrete(pred)
    if concrete is not None:
        return true_fun(*operands) if concrete else false_fun(*operands)
    p = pred if pred.dtype == torch.bool else pred != 0
    return _select("cond", p, true_fun(*operands), false_fun(*operands), ("true_fun", "false_fun"))


def switch(
    index: int | torch.Tensor,
    branches: Sequence[Callable[..., PyTree]],
    *operands: Any,
) -> PyTree:
    """Return ``branches[clamp(index, 0, len(branches) - 1)](*operands)``.

    The semantics of ``jax.lax.switch``: an out-of-range index is clamped, and every branch
    must return pytrees of the same structure, shapes and dtypes.

    Args:
        index: a Python int or a 0-d integer tensor.
        branches: a non-empty sequence of functions of ``*operands``.
        *operands: any pytrees, passed to the branch.

    Returns:
        The chosen branch's output.

    How it runs: like :func:`cond`. A readable index (Python int, or a tensor in eager mode
    that ``vmap`` does not batch) runs one branch. An index batched by ``vmap`` or any tensor
    index under ``torch.compile`` runs **all** branches and selects with a chain of
    ``torch.where`` (cost: every branch).

    Raises:
        TypeError: if ``index`` is not an integer scalar, or (when all branches run) their
            outputs differ in structure, shape or dtype.
        ValueError: if ``branches`` is empty.

    Example:
        >>> import torch, fnn
        >>> branches = [lambda x: x + 1, lambda x: x * 10, lambda x: -x]
        >>> fnn.switch(1, branches, torch.tensor(2.0))
        tensor(20.)
        >>> fnn.switch(torch.tensor(7), branches, torch.tensor(2.0))  # clamped to 2
        tensor(-2.)
        >>> torch.func.vmap(lambda i: fnn.switch(i, branches, torch.tensor(2.0)))(
        ...     torch.tensor([0, 1, 2]))
        tensor([ 3., 20., -2.])
    """
    branches = list(branches)
    if not branches:
        raise ValueError("fnn.switch: branches must hold at least one function, got none.")
    if isinstance(index, builtins.bool) or (
        isinstance(index, torch.Tensor) and index.dtype == torch.bool
    ):
        raise TypeError(f"fnn.switch: index must be an integer, got {_describe(index)}.")
    _check_scalar_pred("switch", "index", index, integer=True)
    n = len(branches)
    concrete = _concrete(index)
    if concrete is not None:
        return branches[min(max(int(concrete), 0), n - 1)](*operands)
    idx = index.clamp(0, n - 1)
    outs = [b(*operands) for b in branches]
    result = outs[0]
    for k in range(1, n):
        result = _select("switch", idx == k, outs[k], result, (f"branch {k}", "branch 0"))
    return result


# --------------------------------------------------------------------------------------------
# associative_scan
# --------------------------------------------------------------------------------------------


def _slice(x: torch.Tensor, axis: int, start: int, stop: int | None, step: int = 1):
    return x[(slice(None),) * axis + (slice(start, stop, step),)]


def _interleave(a: torch.Tensor, b: torch.Tensor, axis: int) -> torch.Tensor:
    """``[a0, b0, a1, b1, ...]`` along ``axis``; ``a`` has as many or one more elements."""
    na, nb = a.shape[axis], b.shape[axis]
    if na == nb:
        return torch.stack([a, b], dim=axis + 1).flatten(axis, axis + 1)
    head = torch.stack([_slice(a, axis, 0, nb), b], dim=axis + 1).flatten(axis, axis + 1)
    return torch.cat([head, _slice(a, axis, nb, None)], dim=axis)


def associative_scan(
    fn: Callable[[PyTree, PyTree], PyTree],
    elems: PyTree,
    reverse: bool = False,
    axis: int = 0,
) -> PyTree:
    """Inclusive prefix scan with an associative ``fn``, in ``O(log n)`` sequential steps.

    With ``n = elems.shape[axis]``, returns ``out`` with ``out[0] = elems[0]`` and
    ``out[i] = fn(out[i - 1], elems[i])`` along ``axis`` (``cumsum`` for ``fn=torch.add``),
    computed by the recursive odd/even algorithm of ``jax.lax.associative_scan`` (Blelloch):
    combine adjacent pairs, scan the half-length result recursively, then fill in the even
    positions. The order of combination differs from the sequential loop, which is why ``fn``
    must be associative (floating-point results may differ by rounding).

    Args:
        fn: ``fn(a, b) -> c``, associative, taking and returning pytrees with the structure of
            ``elems``. It is applied to whole slices: leaves of shape ``(k, ...)`` along
            ``axis`` for some ``k``, so it must be elementwise along ``axis`` (vectorized).
        elems: a pytree of tensors, all with the same size ``n`` along ``axis``.
        reverse: scan from the end: ``out = flip(associative_scan(fn, flip(elems)))``, as JAX.
        axis: the axis to scan along (negative counts from the end of the first leaf).

    Returns:
        A pytree like ``elems``, each leaf of the same shape.

    Cost: about ``2n`` element-combinations in ``2 log2(n)`` batched calls of ``fn``; under
    ``torch.compile`` the graph grows with ``log n``, not ``n``. Works under
    ``torch.func.grad``/``vmap``.

    Raises:
        ValueError: if the leaves differ in size along ``axis`` (naming the paths) or ``axis``
            is out of range.
        TypeError: if ``fn`` changes the structure of its result.

    Example:
        >>> import torch, fnn
        >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
        >>> fnn.associative_scan(torch.add, x)
        tensor([ 1.,  3.,  6., 10., 15.])
        >>> fnn.associative_scan(torch.maximum, torch.tensor([[1, 3], [2, 0]]), axis=1)
        tensor([[1, 3],
                [2, 2]])
        >>> # h[t] = a[t] * h[t-1] + b[t]: combine affine maps (a, b)
        >>> def affine(p, q):
        ...     return q[0] * p[0], q[0] * p[1] + q[1]
        >>> a, b = torch.tensor([1.0, 0.5, 2.0]), torch.tensor([1.0, 1.0, 1.0])
        >>> fnn.associative_scan(affine, (a, b))[1]
        tensor([1.0000, 1.5000, 4.0000])
    """
    pairs, treedef = tree.flatten_with_path(elems)
    if not pairs:
        return elems
    for path, leaf in pairs:
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"fnn.associative_scan: every leaf of elems must be a tensor; elems has "
                f"{_describe(leaf)} {_at(path)}."
            )
    ndim = pairs[0][1].ndim
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"fnn.associative_scan: axis={axis} is out of range for the first leaf of elems, "
            f"of shape {tuple(pairs[0][1].shape)}."
        )
    axis = axis % ndim
    sizes = {}
    for path, leaf in pairs:
        if leaf.ndim <= axis:
            raise ValueError(
                f"fnn.associative_scan: axis={axis} is out of range for the leaf {_at(path)} "
                f"of shape {tuple(leaf.shape)}."
            )
        sizes[path] = leaf.shape[axis]
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{p or '<root>'}: {n}" for p, n in sizes.items())
        raise ValueError(
            f"fnn.associative_scan: every leaf must have the same size along axis {axis}; "
            f"got {listed}."
        )

    def combine(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
        out = fn(treedef.unflatten(a), treedef.unflatten(b))
        out_leaves, out_def = tree.flatten(out)
        if out_def != treedef:
            msg = tree.structure_mismatch(treedef, out_def, names=("elems", "fn's result"))
            raise TypeError(
                f"fnn.associative_scan: fn must return a pytree with the structure of elems; {msg}."
            )
        return out_leaves

    def scan_rec(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = xs[0].shape[axis]
        if n < 2:
            return xs
        reduced = combine(
            [_slice(x, axis, 0, n - 1, 2) for x in xs], [_slice(x, axis, 1, None, 2) for x in xs]
        )
        odd = scan_rec(reduced)  # the prefixes ending at positions 1, 3, 5, ...
        if n % 2 == 0:
            even = combine(
                [_slice(o, axis, 0, -1) for o in odd], [_slice(x, axis, 2, None, 2) for x in xs]
            )
        else:
            even = combine(odd, [_slice(x, axis, 2, None, 2) for x in xs])
        even = [
            torch.cat([_slice(x, axis, 0, 1), e], dim=axis) for x, e in zip(xs, even, strict=True)
        ]
        return [_interleave(e, o, axis) for e, o in zip(even, odd, strict=True)]

    leaves = [leaf for _, leaf in pairs]
    if reverse:
        leaves = [torch.flip(leaf, (axis,)) for leaf in leaves]
    out = scan_rec(leaves)
    if reverse:
        out = [torch.flip(leaf, (axis,)) for leaf in out]
    return treedef.unflatten(out)
