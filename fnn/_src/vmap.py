"""Vectorising map over fnn pytrees: :func:`vmap`, ``jax.vmap`` on ``torch.func.vmap``.

The arguments are flattened with :mod:`fnn.tree` (optree), only the mapped leaves are handed to
``torch.func.vmap`` as a flat tuple, and the outputs are rebuilt with the treedef the function
returned: leaf lists made by optree and by ``torch.utils._pytree`` are never zipped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import optree
import torch

from fnn._src import tree as tree_lib

__all__ = ["vmap"]

PyTree = Any
Axes = Any  # int | None | a pytree (prefix) of ints and Nones

_RANDOM_HINT = (
    "fnn has no global random state under vmap: draw with fnn.random and map over split keys, "
    "e.g.\n    keys = fnn.random.split(key, batch_size)\n    fnn.vmap(f)(keys, x)"
)


def _where(fun: Callable[..., Any]) -> str:
    name = getattr(fun, "__name__", None) or type(fun).__qualname__
    return f"fnn.vmap({name})"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_axes_spec(what: str, axes: Axes) -> None:
    """Every leaf of an ``in_axes`` / ``out_axes`` spec must be an int or None."""
    for leaf in optree.tree_leaves(axes, none_is_leaf=True, namespace=tree_lib.NAMESPACE):
        if not (leaf is None or (isinstance(leaf, int) and not isinstance(leaf, bool))):
            raise TypeError(
                f"fnn.vmap: {what} must be an int, None, or a pytree of ints and Nones (a tree "
                f"prefix of the {'arguments' if what == 'in_axes' else 'output'}), but it "
                f"contains {leaf!r} ({type(leaf).__qualname__})."
            )


def _num_leaves(tree: PyTree) -> int:
    return tree_lib.structure(tree).num_leaves


def _node_name(x: Any) -> str:
    if isinstance(x, dict):
        return f"a {type(x).__qualname__} with keys {sorted(x, key=repr)!r}"
    if isinstance(x, list | tuple) and not hasattr(x, "_fields"):
        return f"a {type(x).__qualname__} of length {len(x)}"
    return f"a {type(x).__qualname__}"


def _broadcast_axes(where: str, what: str, prefix: Axes, tree: PyTree, path: str) -> list[Any]:
    """One axis (int or None) per leaf of ``tree``, broadcasting the tree prefix ``prefix``.

    ``None`` in ``prefix`` is a leaf ("not mapped"); ``None`` in ``tree`` is an empty subtree.
    """
    if prefix is None or isinstance(prefix, int):
        return [prefix] * _num_leaves(tree)
    if tree is None:
        return []
    try:
        p_children, _, p_entries, _ = optree.tree_flatten_one_level(
            prefix, none_is_leaf=True, namespace=tree_lib.NAMESPACE
        )
        t_children, _, t_entries, _ = optree.tree_flatten_one_level(
            tree, none_is_leaf=True, namespace=tree_lib.NAMESPACE
        )
        same = type(prefix) is type(tree) and tuple(p_entries) == tuple(t_entries)
    except ValueError:  # the tree is a leaf where the prefix has a container
        same = False
    if not same:
        where_path = f"at {path!r}" if path else "at the root"
        tree_desc = "a leaf" if tree_lib.structure(tree).is_leaf() else _node_name(tree)
        tree_desc = ("have " if what == "in_axes" else "has ") + tree_desc
        target = "arguments" if what == "in_axes" else "output"
        raise ValueError(
            f"{where}: {what} must be a tree prefix of the {target}, but {where_path} {what} has "
            f"{_node_name(prefix)} and the {target} {tree_desc}. Use one int or None for a "
            "whole subtree, or mirror its structure."
        )
    names = getattr(type(tree), "_fields", None)
    out: list[Any] = []
    for entry, p, t in zip(t_entries, p_children, t_children, strict=True):
        name = names[entry] if names is not None else str(entry)
        out.extend(_broadcast_axes(where, what, p, t, _join(path, name)))
    return out


def _in_axes_per_arg(where: str, in_axes: Axes, nargs: int) -> tuple[Axes, ...]:
    if in_axes is None or isinstance(in_axes, int):
        return (in_axes,) * nargs
    if isinstance(in_axes, tuple) and not hasattr(in_axes, "_fields"):
        if len(in_axes) != nargs:
            raise ValueError(
                f"{where}: in_axes is a tuple of length {len(in_axes)}, but the function was "
                f"called with {nargs} positional argument(s); give one entry (an int, None or a "
                "tree prefix) per positional argument. Keyword arguments are never mapped."
            )
        return in_axes
    raise TypeError(
        f"{where}: in_axes must be an int, None, or a tuple with one entry per positional "
        f"argument, got {_node_name(in_axes)}; to give axes for the leaves of one argument, "
        "wrap them: in_axes=({'w': 0, 'b': None},)."
    )


def _is_batched_here(x: torch.Tensor) -> bool:
    """Whether ``x`` carries the batch dimension of the innermost vmap (the one running ``fun``).

    Under ``torch.compile`` dynamo cannot read functorch levels, so any batch dimension counts
    (a tensor batched only by an enclosing vmap is then reported too).
    """
    if not torch._C._functorch.is_batchedtensor(x):
        return False
    if torch.compiler.is_compiling():
        return True
    level = torch._C._functorch.maybe_current_level()
    return torch._C._functorch.maybe_get_level(x) == level


def vmap(
    fun: Callable[..., Any],
    in_axes: Axes = 0,
    out_axes: Axes = 0,
    *,
    axis_size: int | None = None,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Vectorise ``fun`` over an axis of its inputs, like ``jax.vmap`` (on ``torch.func.vmap``).

    ``fnn.vmap(f)(xs)`` computes ``torch.stack([f(x) for x in xs])`` without the loop, for ``f``
    written for one example. Arguments and outputs are any fnn pytrees.

    Args:
        fun: the function to map; it returns a pytree of tensors (leaves with ``out_axes`` None
            may be any object).
        in_axes: which axis of each positional argument to map over: an int (the same axis for
            every leaf of every argument), ``None`` (not mapped: passed whole to every call), or
            a tuple with one entry per positional argument, each an int, ``None`` or a tree prefix
            of that argument (``({"w": 0, "b": None}, 0)``). Negative axes count from the end.
            A top-level list is read as a tuple.
        out_axes: where the mapped axis goes in each output leaf: an int, ``None`` or a tree
            prefix of the output. ``None`` says that output does not depend on the mapped axis
            and is returned once, unbatched (an error if it does depend on it). Negative axes
            count from the end of the output (``-1``: last).
        axis_size: the size of the mapped axis; needed when no input is mapped (then every output
            leaf with an int out axis is broadcast to that size), checked otherwise.
        chunk_size: map at most this many examples at once (``torch.func.vmap``'s
            ``chunk_size``), trading speed for memory; ``None`` maps all at once.

    Keyword arguments are passed to every call unmapped, as ``torch.func.vmap`` does. (This
    differs from ``jax.vmap``, which maps keyword arguments over their axis 0: in fnn, pass
    what is mapped positionally.)

    Returns:
        The mapped function. With inputs mapped over an axis of size ``B``, an output leaf of
        shape ``s`` for one example has shape ``s`` with ``B`` inserted at its out axis.

    Raises:
        ValueError: if the mapped axes have different sizes (naming the argument paths, shapes
            and sizes), an axis is out of range, ``in_axes``/``out_axes`` is not a tree prefix,
            nothing is mapped and ``axis_size`` is missing, or an ``out_axes=None`` output
            depends on the mapped axis.
        TypeError: if a mapped leaf (or an output leaf with an int axis) is not a tensor.

    Randomness comes from explicit keys: map over ``fnn.random.split(key, B)`` for independent
    draws per example (``torch``'s global RNG is an error under vmap). ``vmap(grad(f))`` gives
    per-example gradients and ``vmap(init)`` over split keys builds ensembles.

    Example:
        >>> import torch, fnn
        >>> params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.5)}
        >>> xs = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]])  # a batch of 3 examples
        >>> predict = lambda p, x: (p["w"] * x).sum() + p["b"]
        >>> fnn.vmap(predict, in_axes=(None, 0))(params, xs)
        tensor([3.5000, 2.5000, 6.5000])
        >>> out = fnn.vmap(lambda x: {"sum": x.sum(), "twice": 2 * x}, out_axes={"sum": 0, "twice": 1})(xs)
        >>> out["twice"].shape
        torch.Size([2, 3])
        >>> fnn.vmap(lambda: torch.ones(2), axis_size=3)().shape
        torch.Size([3, 2])
    """  # noqa: E501
    where = _where(fun)
    _check_axes_spec("in_axes", in_axes)
    _check_axes_spec("out_axes", out_axes)
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    if axis_size is not None and (
        not isinstance(axis_size, int) or isinstance(axis_size, bool) or axis_size < 1
    ):
        raise ValueError(f"{where}: axis_size must be a positive int or None, got {axis_size!r}.")

    @functools.wraps(fun)
    def vmapped(*args: Any, **kwargs: Any) -> Any:
        per_arg = _in_axes_per_arg(where, in_axes, len(args))
        flat: list[Any] = []
        axes: list[int | None] = []
        treedefs = []
        for i, (arg, ax) in enumerate(zip(args, per_arg, strict=True)):
            leaves, treedef = tree_lib.flatten(arg)
            flat.extend(leaves)
            treedefs.append((treedef, len(leaves)))
            axes.extend(_broadcast_axes(where, "in_axes", ax, arg, f"args[{i}]"))

        mapped = [k for k, a in enumerate(axes) if a is not None]
        in_dims = []
        for k in mapped:
            in_dims.append(_normalize_in_axis(where, args, treedefs, flat, k, axes[k]))
        size = _batch_size(where, args, treedefs, flat, mapped, in_dims, axis_size)

        state: dict[str, Any] = {}

        def flat_fun(*batched: Any) -> tuple[Any, ...]:
            leaves = list(flat)
            for k, b in zip(mapped, batched, strict=False):  # a dummy input comes last
                leaves[k] = b
            rebuilt, start = [], 0
            for treedef, n in treedefs:
                rebuilt.append(treedef.unflatten(leaves[start : start + n]))
                start += n
            out = fun(*rebuilt, **kwargs)
            return _flat_outputs(where, out, out_axes, state)

        inputs = [flat[k] for k in mapped]
        if not mapped:  # nothing mapped: a dummy input carries the batch size for torch.func
            inputs, in_dims = [torch.empty(size, 0)], [0]
        try:
            results = torch.func.vmap(
                flat_fun, in_dims=tuple(in_dims), out_dims=0, chunk_size=chunk_size
            )(*inputs)
        except RuntimeError as e:
            if "randomness" in str(e):
                raise RuntimeError(f"{where}: {e}\n{_RANDOM_HINT}") from e
            raise
        return _rebuild_outputs(results, state)

    return vmapped


def _leaf_name(args: tuple[Any, ...], treedefs: list[Any], k: int) -> str:
    """The path ``args[i].a.b`` of flat input leaf ``k``."""
    for i, (_, n) in enumerate(treedefs):
        if k < n:
            path = tree_lib.paths(args[i])[k]
            return f"args[{i}].{path}" if path else f"args[{i}]"
        k -= n
    raise AssertionError("leaf index out of range")


def _normalize_in_axis(
    where: str, args: tuple[Any, ...], treedefs: list[Any], flat: list[Any], k: int, axis: int
) -> int:
    leaf = flat[k]
    if not isinstance(leaf, torch.Tensor):
        raise TypeError(
            f"{where}: in_axes maps {_leaf_name(args, treedefs, k)} over axis {axis}, but it is a "
            f"{type(leaf).__qualname__} ({leaf!r:.40}), not a tensor; give it in_axes None to "
            "pass it unmapped, or make it a tensor with the mapped axis."
        )
    if leaf.ndim == 0:
        raise ValueError(
            f"{where}: in_axes maps {_leaf_name(args, treedefs, k)} over axis {axis}, but it is a "
            "0-d tensor (a scalar), which has no axis to map; give it in_axes None to pass it "
            "unmapped to every call."
        )
    if not -leaf.ndim <= axis < leaf.ndim:
        raise ValueError(
            f"{where}: in_axes maps {_leaf_name(args, treedefs, k)} over axis {axis}, but it has "
            f"shape {tuple(leaf.shape)} ({leaf.ndim} dims); valid axes are {-leaf.ndim} to "
            f"{leaf.ndim - 1}. Use in_axes None for leaves that are not mapped."
        )
    return axis % leaf.ndim


def _batch_size(
    where: str,
    args: tuple[Any, ...],
    treedefs: list[Any],
    flat: list[Any],
    mapped: list[int],
    in_dims: list[int],
    axis_size: int | None,
) -> int:
    sizes = [flat[k].shape[d] for k, d in zip(mapped, in_dims, strict=True)]
    if not sizes:
        if axis_size is None:
            raise ValueError(
                f"{where}: no input is mapped (every leaf has in_axes None, or there are no "
                "tensor arguments), so the size of the mapped axis is unknown; pass axis_size=N."
            )
        return axis_size

    def describe(j: int) -> str:
        k = mapped[j]
        return (
            f"{_leaf_name(args, treedefs, k)} of shape {tuple(flat[k].shape)} has size "
            f"{sizes[j]} on axis {in_dims[j]}"
        )

    distinct = sorted(set(sizes))
    if len(distinct) > 1:
        examples = [describe(sizes.index(s)) for s in distinct]
        raise ValueError(
            f"{where}: the mapped axes must all have the same size, got sizes {distinct}: "
            + "; ".join(examples)
            + "."
        )
    if axis_size is not None and axis_size != sizes[0]:
        raise ValueError(f"{where}: axis_size={axis_size}, but {describe(0)}.")
    return sizes[0]


def _flat_outputs(where: str, out: PyTree, out_axes: Axes, state: dict[str, Any]) -> tuple:
    """Inside ``torch.func.vmap``: the tensor leaves to return, checking ``out_axes``.

    Every tensor leaf goes out with ``out_dims=0``; leaves with an int out axis are moved there
    afterwards, and leaves with ``out_axes=None`` (checked not to carry the batch dimension) are
    broadcast by torch and sliced back to one copy. Non-tensor leaves with ``out_axes=None``
    bypass torch.func through ``state``.
    """
    leaves, out_def = tree_lib.flatten(out)
    axes = _broadcast_axes(where, "out_axes", out_axes, out, "")
    tensors, plan = [], []
    for k, (leaf, ax) in enumerate(zip(leaves, axes, strict=True)):
        is_tensor = isinstance(leaf, torch.Tensor)
        if ax is None:
            if is_tensor and _is_batched_here(leaf):
                path = tree_lib.paths(out)[k]
                at = f"the output at {path!r}" if path else "the output"
                raise ValueError(
                    f"{where}: out_axes is None for {at}, which says it does not depend on the "
                    "mapped axis, but it does (it differs from example to example). Give it an "
                    "int out axis (e.g. out_axes=0) to return one value per example."
                )
        elif not is_tensor:
            path = tree_lib.paths(out)[k]
            at = f"the output at {path!r}" if path else "the output"
            raise TypeError(
                f"{where}: {at} is a {type(leaf).__qualname__} ({leaf!r:.40}), but mapped "
                "outputs must be tensors; return a tensor, or give it out_axes None."
            )
        elif not -(leaf.ndim + 1) <= ax <= leaf.ndim:
            path = tree_lib.paths(out)[k]
            at = f"the output at {path!r}" if path else "the output"
            raise ValueError(
                f"{where}: out_axes puts the mapped axis at {ax} in {at}, which has shape "
                f"{tuple(leaf.shape)} per example; valid out axes are {-(leaf.ndim + 1)} to "
                f"{leaf.ndim}."
            )
        if is_tensor:
            plan.append(("tensor", ax))
            tensors.append(leaf)
        else:
            plan.append(("const", leaf))
    state["out_def"], state["plan"] = out_def, plan
    return tuple(tensors)


def _rebuild_outputs(results: tuple[torch.Tensor, ...], state: dict[str, Any]) -> PyTree:
    it = iter(results)
    leaves = []
    for kind, value in state["plan"]:
        if kind == "const":
            leaves.append(value)
            continue
        r = next(it)
        if value is None:
            leaves.append(r[0])
        elif value in (0, -r.ndim):
            leaves.append(r)
        else:
            leaves.append(torch.movedim(r, 0, value))
    return state["out_def"].unflatten(leaves)
