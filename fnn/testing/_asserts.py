"""Assertions over pytrees of tensors: closeness, equality, finiteness, structure and shapes."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from types import EllipsisType
from typing import Any

import numpy as np
import torch

import fnn.tree

__all__ = [
    "assert_shape",
    "assert_tree_all_finite",
    "assert_tree_shape_prefix",
    "assert_trees_all_close",
    "assert_trees_all_equal",
    "assert_trees_all_equal_structs",
]

ShapeSpec = Sequence[int | EllipsisType | None]

# Default (rtol, atol) of assert_trees_all_close, by the lowest-precision dtype compared.
_CLOSE_DEFAULTS: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.complex32: (1e-3, 1e-5),
}
_CLOSE_DEFAULT = (1e-6, 0.0)


# --------------------------------------------------------------------------------------------
# Leaves
# --------------------------------------------------------------------------------------------


def _at(path: str) -> str:
    """Render a leaf path the way ``fnn.tree.structure_mismatch`` does."""
    return f"at {path!r}" if path else "at the root"


def _is_python_number(x: Any) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, np.generic)


def _to_tensor(x: Any) -> torch.Tensor | None:
    """A detached CPU tensor holding ``x``, or ``None`` if ``x`` is not numeric.

    Python numbers keep full precision (``float`` -> float64, ``int`` -> int64).
    """
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray | np.generic):
        arr = np.array(x, copy=True)
        try:
            return torch.from_numpy(arr)
        except TypeError:  # object, string, ... arrays
            return None
    if isinstance(x, bool):
        return torch.tensor(x, dtype=torch.bool)
    if isinstance(x, numbers.Integral):
        return torch.tensor(int(x), dtype=torch.int64)
    if isinstance(x, numbers.Real):
        return torch.tensor(float(x), dtype=torch.float64)
    if isinstance(x, numbers.Complex):
        return torch.tensor(complex(x), dtype=torch.complex128)
    return None


def _shape_of(x: Any) -> tuple[int, ...]:
    if isinstance(x, torch.Tensor | np.ndarray | np.generic):
        return tuple(x.shape)
    if _is_python_number(x):
        return ()
    raise TypeError(
        f"expected a torch.Tensor, a numpy array or a Python number, got {type(x).__qualname__}"
    )


def _describe(x: Any) -> str:
    """Name a leaf: ``"torch.Tensor float32 of shape (2, 3)"``, ``"Python float 1.5"``, ..."""
    if isinstance(x, torch.Tensor):
        return f"torch.Tensor {str(x.dtype).removeprefix('torch.')} of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray | np.generic):
        kind = "numpy.ndarray" if isinstance(x, np.ndarray) else f"numpy.{type(x).__name__}"
        return f"{kind} {x.dtype} of shape {tuple(x.shape)}"
    if _is_python_number(x):
        return f"Python {type(x).__name__} {x!r}"
    return f"{type(x).__qualname__} {x!r}"


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(flat % size)
        flat //= size
    return tuple(reversed(out))


def _fmt_index(idx: tuple[int, ...]) -> str:
    return f"index {idx}" if idx else "the only element"


def _fmt_value(t: torch.Tensor, idx: tuple[int, ...]) -> str:
    """The element at ``idx`` printed at its own precision (float32 ``0.1`` prints ``0.1``)."""
    v = t[idx]
    if v.dtype in (torch.bfloat16, torch.complex32):
        v = v.to(torch.float32 if v.dtype == torch.bfloat16 else torch.complex64)
    try:
        return str(v.numpy()[()])
    except TypeError:
        return str(v.item())


def _names(i: int) -> tuple[str, str]:
    return ("trees[0]", f"trees[{i}]")


def _check_count(fn: str, trees: tuple[Any, ...]) -> None:
    if len(trees) < 2:
        raise ValueError(
            f"{fn} compares trees with each other and needs at least two, got {len(trees)}: "
            f"write {fn}(actual, expected)."
        )


def _pairs(fn: str, trees: tuple[Any, ...]):
    """Yield ``(i, path, leaf_of_tree_0, leaf_of_tree_i)``, after checking structures match."""
    _check_count(fn, trees)
    first, _ = fnn.tree.flatten_with_path(trees[0])
    for i in range(1, len(trees)):
        mismatch = fnn.tree.structure_mismatch(trees[0], trees[i], names=_names(i))
        if mismatch is not None:
            raise AssertionError(f"{fn}: {mismatch}")
    for i in range(1, len(trees)):
        other = fnn.tree.leaves(trees[i])
        for (path, a), b in zip(first, other, strict=True):
            yield i, path, a, b


# --------------------------------------------------------------------------------------------
# Closeness and equality
# --------------------------------------------------------------------------------------------


def _close_defaults(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    rtol, atol = _CLOSE_DEFAULT
    for t in (a, b):
        r, t_atol = _CLOSE_DEFAULTS.get(t.dtype, _CLOSE_DEFAULT)
        rtol, atol = max(rtol, r), max(atol, t_atol)
    return rtol, atol


def _wide(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


def _same_value_mask(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise ``a == b``, where NaN equals NaN (a NaN anywhere in a complex number counts)."""
    eq = a == b
    if a.is_floating_point() or a.is_complex():
        eq = eq | (torch.isnan(a) & torch.isnan(b))
    return eq


def _close_report(
    a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float
) -> tuple[int, list[str]] | None:
    """``None`` if ``a`` and ``b`` (same shape) are close, else ``(n_mismatched, detail lines)``."""
    wa, wb = _wide(a), _wide(b)
    same = _same_value_mask(wa, wb)
    mag = torch.maximum(wa.abs(), wb.abs())
    abs_err = torch.where(same, 0.0, (wa - wb).abs()).nan_to_num(nan=torch.inf, posinf=torch.inf)
    finite = torch.isfinite(wa) & torch.isfinite(wb)
    ok = same | (finite & (abs_err <= atol + rtol * mag))
    bad = int((~ok).sum())
    if bad == 0:
        return None
    rel_err = torch.where(abs_err == 0, 0.0, abs_err / mag).nan_to_num(
        nan=torch.inf, posinf=torch.inf
    )
    shape = tuple(a.shape)
    i_abs = _index(int(abs_err.reshape(-1).argmax()), shape)
    i_rel = _index(int(rel_err.reshape(-1).argmax()), shape)
    lines = [
        f"{bad} of {a.numel()} elements mismatch",
        f"largest absolute error {float(abs_err[i_abs]):.6g} at {_fmt_index(i_abs)}: "
        f"{_fmt_value(a, i_abs)} vs {_fmt_value(b, i_abs)}",
        f"largest relative error {float(rel_err[i_rel]):.6g} at {_fmt_index(i_rel)}: "
        f"{_fmt_value(a, i_rel)} vs {_fmt_value(b, i_rel)}",
    ]
    return bad, lines


def assert_trees_all_close(
    *trees: Any, rtol: float | None = None, atol: float | None = None
) -> None:
    """Assert that trees have the same structure and shapes, and leaves close in value.

    Two elements ``a`` and ``b`` are close when ``|a - b| <= atol + rtol * max(|a|, |b|)``: the
    test is symmetric, so the order of the trees does not matter. NaNs in the same place, and
    infinities of the same sign, count as close. Each tree is compared with ``trees[0]``.

    Leaves are torch tensors, numpy arrays or Python numbers, in any mix. Shapes must match
    exactly (no broadcasting); dtypes may differ (a float32 result may be compared with a float64
    reference) and the comparison is done in float64 / complex128. Non-numeric leaves (strings,
    ...) must be equal.

    Default tolerances depend on the lowest-precision dtype of the two leaves compared:
    ``rtol=1e-6, atol=0.0`` for float32, float64, complex and integer leaves;
    ``rtol=1e-3, atol=1e-5`` for float16; ``rtol=1.6e-2, atol=1e-5`` for bfloat16.

    Args:
        *trees: two or more pytrees with the same structure.
        rtol: relative tolerance (``None``: the dtype default above).
        atol: absolute tolerance (``None``: the dtype default above).

    Raises:
        AssertionError: naming the path of the first leaf that differs, the shapes when they
            differ, and otherwise how many elements mismatch and the largest absolute and relative
            error with their index; structure mismatches name the first differing path.

    Example:
        >>> import torch
        >>> from fnn.testing import assert_trees_all_close
        >>> got = {"w": torch.tensor([1.0, 2.0]), "b": 0.5}
        >>> assert_trees_all_close(got, {"w": torch.tensor([1.0, 2.0 + 1e-7]), "b": 0.5})
        >>> assert_trees_all_close(got, {"w": torch.tensor([1.0, 2.5]), "b": 0.5})
        Traceback (most recent call last):
        ...
        AssertionError: assert_trees_all_close: trees[0] and trees[1] differ at 'w' (rtol=1e-06, atol=0):
          1 of 2 elements mismatch
          largest absolute error 0.5 at index (1,): 2.0 vs 2.5
          largest relative error 0.2 at index (1,): 2.0 vs 2.5
    """  # noqa: E501
    fn = "assert_trees_all_close"
    for i, path, x, y in _pairs(fn, trees):
        names = _names(i)
        where = f"{names[0]} and {names[1]} differ {_at(path)}"
        a, b = _to_tensor(x), _to_tensor(y)
        if a is None or b is None:
            if a is None and b is None and x == y:
                continue
            raise AssertionError(f"{fn}: {where}: {_describe(x)} vs {_describe(y)}")
        if a.shape != b.shape:
            raise AssertionError(
                f"{fn}: {where}: shapes differ: {names[0]} has {_describe(x)}, "
                f"{names[1]} has {_describe(y)}"
            )
        d_rtol, d_atol = _close_defaults(a, b)
        r = d_rtol if rtol is None else rtol
        t = d_atol if atol is None else atol
        report = _close_report(a, b, r, t)
        if report is None:
            continue
        lines = report[1]
        if a.dtype != b.dtype:
            lines.append(
                f"dtypes: {names[0]} has {_dtype_name(a)}, {names[1]} has {_dtype_name(b)}"
            )
        detail = "\n  ".join(lines)
        raise AssertionError(f"{fn}: {where} (rtol={r:g}, atol={t:g}):\n  {detail}")


def assert_trees_all_equal(*trees: Any) -> None:
    """Assert that trees are exactly equal: structure, shapes, dtypes and every element.

    NaNs in the same place count as equal (so a tree equals itself); ``-0.0 == 0.0``. A torch
    tensor and a numpy array are equal when their dtypes correspond (``torch.float32`` and
    ``numpy.float32``) and all elements are equal. Python numbers have no dtype: they compare by
    value, converted the way ``tensor == number`` converts them (``0.1`` equals a float32 ``0.1``);
    two Python numbers must also have the same type (``1`` is not equal to ``1.0``). Non-numeric
    leaves (strings, ...) are compared with ``==``.

    Args:
        *trees: two or more pytrees with the same structure.

    Raises:
        AssertionError: naming the path of the first leaf that differs, the shapes or dtypes when
            they differ, otherwise how many elements differ, the first differing index with both
            values, and the largest absolute difference.

    Example:
        >>> import torch
        >>> from fnn.testing import assert_trees_all_equal
        >>> nan = float("nan")
        >>> assert_trees_all_equal([torch.tensor([1.0, nan])], [torch.tensor([1.0, nan])])
        >>> assert_trees_all_equal([torch.tensor([1.0, 2.0])], [torch.tensor([1.0, 2.0]).double()])
        Traceback (most recent call last):
        ...
        AssertionError: assert_trees_all_equal: trees[0] and trees[1] differ at '0': dtypes differ: trees[0] has torch.Tensor float32 of shape (2,), trees[1] has torch.Tensor float64 of shape (2,)
    """  # noqa: E501
    fn = "assert_trees_all_equal"
    for i, path, x, y in _pairs(fn, trees):
        names = _names(i)
        where = f"{names[0]} and {names[1]} differ {_at(path)}"
        a, b = _to_tensor(x), _to_tensor(y)
        if a is None or b is None:
            if a is None and b is None and x == y:
                continue
            raise AssertionError(f"{fn}: {where}: {_describe(x)} vs {_describe(y)}")
        x_num, y_num = _is_python_number(x), _is_python_number(y)
        if a.shape != b.shape:
            problem = "shapes differ"
        elif x_num and y_num and type(x) is not type(y):
            problem = "types differ"
        elif not x_num and not y_num and a.dtype != b.dtype:
            problem = "dtypes differ"
        else:
            problem = None
        if problem is not None:
            raise AssertionError(
                f"{fn}: {where}: {problem}: {names[0]} has {_describe(x)}, "
                f"{names[1]} has {_describe(y)}"
            )
        if x_num != y_num:  # a Python number is weakly typed, like in `tensor == number`
            common = torch.result_type(a if not x_num else b, x if x_num else y)
            a, b = a.to(common), b.to(common)
        same = _same_value_mask(a, b)
        n_diff = int((~same).sum())
        if n_diff == 0:
            continue
        shape = tuple(a.shape)
        first = _index(int((~same).reshape(-1).nonzero()[0, 0]), shape)
        lines = [
            f"{n_diff} of {a.numel()} elements differ; first at {_fmt_index(first)}: "
            f"{_fmt_value(a, first)} vs {_fmt_value(b, first)}"
        ]
        if a.dtype != torch.bool:
            wa, wb = _wide(a), _wide(b)
            err = torch.where(same, 0.0, (wa - wb).abs()).nan_to_num(
                nan=torch.inf, posinf=torch.inf
            )
            big = _index(int(err.reshape(-1).argmax()), shape)
            lines.append(
                f"largest absolute difference {float(err[big]):.6g} at {_fmt_index(big)}: "
                f"{_fmt_value(a, big)} vs {_fmt_value(b, big)}"
            )
        detail = "\n  ".join(lines)
        raise AssertionError(f"{fn}: {where}:\n  {detail}")


def assert_tree_all_finite(tree: Any) -> None:
    """Assert that every element of every leaf of ``tree`` is finite (no NaN, no ±inf).

    Integer and bool leaves are always finite. Leaves are torch tensors, numpy arrays or Python
    numbers; other leaves are ignored.

    Raises:
        AssertionError: naming the path of the first leaf with non-finite values, how many
            elements there are NaN, +inf and -inf, the first such index, and the paths of any
            other leaves with non-finite values.

    Example:
        >>> import torch
        >>> from fnn.testing import assert_tree_all_finite
        >>> assert_tree_all_finite({"w": torch.ones(2), "step": 3})
        >>> assert_tree_all_finite({"w": torch.tensor([1.0, float("inf")]), "b": float("nan")})
        Traceback (most recent call last):
        ...
        AssertionError: assert_tree_all_finite: 1 of 1 elements are not finite at 'b' (1 NaN, 0 +inf, 0 -inf); first at the only element: nan
          other leaves with non-finite values: ['w']
    """  # noqa: E501
    bad: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for path, x in fnn.tree.flatten_with_path(tree)[0]:
        t = _to_tensor(x)
        if t is None or not (t.is_floating_point() or t.is_complex()):
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad.append((path, t, finite))
    if not bad:
        return
    path, t, finite = bad[0]
    flat = t.reshape(-1)
    real = torch.view_as_real(flat).abs().amax(-1) if t.is_complex() else flat
    n_nan = int(torch.isnan(flat).sum())
    n_pos = int((real == torch.inf).sum()) if not t.is_complex() else 0
    n_neg = int((real == -torch.inf).sum()) if not t.is_complex() else 0
    first = _index(int((~finite).reshape(-1).nonzero()[0, 0]), tuple(t.shape))
    msg = (
        f"assert_tree_all_finite: {int((~finite).sum())} of {t.numel()} elements are not finite "
        f"{_at(path)} ({n_nan} NaN, {n_pos} +inf, {n_neg} -inf); "
        f"first at {_fmt_index(first)}: {_fmt_value(t, first)}"
    )
    if len(bad) > 1:
        msg += f"\n  other leaves with non-finite values: {[p for p, _, _ in bad[1:]]}"
    raise AssertionError(msg)


def assert_trees_all_equal_structs(*trees: Any) -> None:
    """Assert that trees have the same structure (leaves may differ in anything).

    Raises:
        AssertionError: with :func:`fnn.tree.structure_mismatch`'s message, naming the first
            differing path and what each tree has there.

    Example:
        >>> from fnn.testing import assert_trees_all_equal_structs
        >>> assert_trees_all_equal_structs({"a": 1, "b": [2]}, {"a": "x", "b": [None]})
        Traceback (most recent call last):
        ...
        AssertionError: assert_trees_all_equal_structs: trees differ at 'b.0': trees[0] has a leaf, trees[1] has None
    """  # noqa: E501
    fn = "assert_trees_all_equal_structs"
    _check_count(fn, trees)
    for i in range(1, len(trees)):
        mismatch = fnn.tree.structure_mismatch(trees[0], trees[i], names=_names(i))
        if mismatch is not None:
            raise AssertionError(f"{fn}: {mismatch}")


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def _fmt_spec(spec: ShapeSpec) -> str:
    parts = ["..." if d is Ellipsis else str(d) for d in spec]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _is_spec(obj: Any) -> bool:
    return isinstance(obj, Sequence) and all(
        d is None or d is Ellipsis or (isinstance(d, int) and not isinstance(d, bool)) for d in obj
    )


def _check_spec(spec: Any) -> tuple[int | EllipsisType | None, ...]:
    if not _is_spec(spec) or isinstance(spec, str):
        raise TypeError(
            f"an expected shape is a tuple of ints, None (any size) and at most one ... "
            f"(any number of dimensions), e.g. (None, 3, ...); got {spec!r}"
        )
    spec = tuple(spec)
    if spec.count(Ellipsis) > 1:
        raise ValueError(f"an expected shape may contain at most one ..., got {_fmt_spec(spec)}")
    return spec


def _dims_mismatch(shape: tuple[int, ...], spec: tuple[int | None, ...], offset: int) -> str | None:
    for k, (size, want) in enumerate(zip(shape, spec, strict=True)):
        if want is not None and size != want:
            return f"dimension {k + offset} is {size}, expected {want}"
    return None


def _dims(n: int) -> str:
    return f"{n} dimension" if n == 1 else f"{n} dimensions"


def _shape_mismatch(shape: tuple[int, ...], spec: tuple[Any, ...]) -> str | None:
    """Why ``shape`` does not match ``spec`` (``None`` if it does)."""
    if Ellipsis not in spec:
        if len(shape) != len(spec):
            return f"it has {_dims(len(shape))}, expected {len(spec)}"
        return _dims_mismatch(shape, spec, 0)
    k = spec.index(Ellipsis)
    head, tail = spec[:k], spec[k + 1 :]
    if len(shape) < len(head) + len(tail):
        return f"it has {_dims(len(shape))}, expected at least {len(head) + len(tail)}"
    found = _dims_mismatch(shape[: len(head)], head, 0)
    if found is None and tail:
        start = len(shape) - len(tail)
        found = _dims_mismatch(shape[start:], tail, start)
    return found


def assert_shape(x_or_list: Any, expected: ShapeSpec | Sequence[ShapeSpec]) -> None:
    """Assert that an array (or each array of a list) has the expected shape.

    ``expected`` is a tuple of ints, ``None`` (a dimension of any size) and at most one ``...``
    (any number of dimensions, including none): ``(None, 3, ...)`` matches shapes ``(B, 3)`` and
    ``(B, 3, H, W)``. Given a list or tuple of arrays, ``expected`` is either one shape that all
    of them must have, or a list of shapes, one per array. Python numbers have shape ``()``.

    Args:
        x_or_list: a torch tensor, numpy array or Python number, or a list/tuple of them.
        expected: one expected shape, or a list of them matching ``x_or_list``.

    Raises:
        AssertionError: naming which input (``inputs[1]``) has which shape, the expected shape
            and the first dimension that does not fit.

    Example:
        >>> import torch
        >>> from fnn.testing import assert_shape
        >>> x = torch.zeros(8, 3, 4, 4)
        >>> assert_shape(x, (None, 3, ...))
        >>> assert_shape([x, torch.zeros(8)], [(8, ...), (8,)])
        >>> assert_shape(x, (None, 4, ...))
        Traceback (most recent call last):
        ...
        AssertionError: assert_shape: input has shape (8, 3, 4, 4), expected (None, 4, ...): dimension 1 is 3, expected 4
    """  # noqa: E501
    fn = "assert_shape"
    if isinstance(x_or_list, list | tuple):
        inputs = list(x_or_list)
        labels = [f"inputs[{i}]" for i in range(len(inputs))]
        if _is_spec(expected) and not isinstance(expected, str):
            specs = [_check_spec(expected)] * len(inputs)
        else:
            specs = [_check_spec(s) for s in expected]
            if len(specs) != len(inputs):
                raise AssertionError(
                    f"{fn}: got {len(inputs)} inputs but {len(specs)} expected shapes; pass one "
                    f"shape for all inputs or one shape per input"
                )
    else:
        inputs, labels, specs = [x_or_list], ["input"], [_check_spec(expected)]
    for x, label, spec in zip(inputs, labels, specs, strict=True):
        shape = _shape_of(x)
        why = _shape_mismatch(shape, spec)
        if why is not None:
            raise AssertionError(
                f"{fn}: {label} has shape {shape}, expected {_fmt_spec(spec)}: {why}"
            )


def assert_tree_shape_prefix(tree: Any, prefix: Sequence[int | None]) -> None:
    """Assert that the shape of every leaf of ``tree`` starts with ``prefix``.

    Useful for batched trees: ``assert_tree_shape_prefix(batch, (32,))`` checks every leaf has a
    leading batch dimension of size 32. ``None`` in ``prefix`` matches any size.

    Args:
        tree: a pytree of torch tensors, numpy arrays or Python numbers (shape ``()``).
        prefix: the leading dimensions every leaf must have.

    Raises:
        AssertionError: naming the path of the first leaf whose shape does not start with
            ``prefix``, its shape, and the dimension that does not fit.

    Example:
        >>> import torch
        >>> from fnn.testing import assert_tree_shape_prefix
        >>> batch = {"x": torch.zeros(4, 3), "y": torch.zeros(4)}
        >>> assert_tree_shape_prefix(batch, (4,))
        >>> assert_tree_shape_prefix(batch, (4, 3))
        Traceback (most recent call last):
        ...
        AssertionError: assert_tree_shape_prefix: leaf at 'y' has shape (4,), which does not start with (4, 3): it has 1 dimension, expected at least 2
    """  # noqa: E501
    spec = _check_spec(prefix)
    if Ellipsis in spec:
        raise ValueError(f"a shape prefix cannot contain ..., got {_fmt_spec(spec)}")
    for path, x in fnn.tree.flatten_with_path(tree)[0]:
        shape = _shape_of(x)
        why = _shape_mismatch(shape, (*spec, Ellipsis))
        if why is not None:
            raise AssertionError(
                f"assert_tree_shape_prefix: leaf {_at(path)} has shape {shape}, which does not "
                f"start with {_fmt_spec(spec)}: {why}"
            )
