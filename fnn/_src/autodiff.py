"""Differentiation over fnn pytrees, with JAX's signatures and semantics.

``grad``, ``value_and_grad``, ``jacrev``, ``jacfwd``, ``hessian``, ``jvp``, ``vjp`` and
``stop_gradient`` work on any fnn pytree (dicts, lists, tuples, namedtuples, registered
dataclasses, ``None`` subtrees) and compose with each other and with :func:`fnn.vmap`.

``torch.func`` only understands ``torch.utils._pytree``, which orders dict keys differently from
fnn's optree-based :mod:`fnn.tree`. So every transform here flattens its arguments with
:mod:`fnn.tree`, hands ``torch.func`` a flat tuple of leaves, and rebuilds the results with the same
treedef: leaf lists made by the two flatteners are never zipped.

Only floating-point tensors are differentiated: a differentiated argument holding an integer
tensor, a PRNG key (a ``torch.uint32`` tensor) or a Python number is an error naming that leaf's
path. ``has_aux`` payloads hold tensors only.

Eager fast path of :func:`grad` / :func:`value_and_grad`: outside every ``torch.func`` transform
and outside ``torch.compile``, gradients are taken by classic autograd (``torch.autograd.grad``)
instead of ``torch.func.grad_and_value``, which costs 1.1-1.2x of ``loss.backward()`` on a
784-512-512-10 MLP and 2.4x on a tiny one (``python -m benchmarks.autodiff_probe``). The results
are the same; :func:`_eager_value_and_grad` states the rule.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import has_torch_function

from fnn._src import tree as tree_lib

__all__ = [
    "grad",
    "hessian",
    "jacfwd",
    "jacrev",
    "jvp",
    "stop_gradient",
    "value_and_grad",
    "vjp",
]

PyTree = Any
Argnums = int | Sequence[int]

# Tests set this to False to force the torch.func path where the eager fast path would apply.
_EAGER_FAST_PATH = True

_AccumulateGrad = torch._C._functions.AccumulateGrad
# What torch.autograd.grad runs once it has validated its arguments (see _autograd_grad).
_engine_run_backward = getattr(torch.autograd.graph, "_engine_run_backward", None)

_MOVE_OUT_HINT = (
    "Keep non-floating values out of the differentiated arguments: pass them as another "
    "positional argument that is not in argnums (or close over them), e.g.\n"
    "    def loss(params, batch, step, key): ...\n"
    "    fnn.grad(loss, argnums=0)(params, batch, step, key)"
)


# --------------------------------------------------------------------------------------------
# Shared helpers: naming, argnums, splitting arguments into differentiated leaves
# --------------------------------------------------------------------------------------------


def _where(transform: str, fun: Callable[..., Any]) -> str:
    """``"fnn.grad(loss)"``: how error messages name the transformed function."""
    name = getattr(fun, "__name__", None) or type(fun).__qualname__
    return f"fnn.{transform}({name})"


def _arg_path(i: int, path: str) -> str:
    return f"args[{i}].{path}" if path else f"args[{i}]"


def _describe(x: Any) -> str:
    """``"a torch.int64 tensor of shape (3,)"``, ``"a float (0.5)"``: a leaf, for messages."""
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    text = repr(x)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(x).__qualname__} ({text})"


def _check_argnums(where: str, argnums: Argnums) -> tuple[tuple[int, ...], bool]:
    """Validate ``argnums`` when the transform is created: ``(argnums as a tuple, was an int)``."""
    if isinstance(argnums, int) and not isinstance(argnums, bool):
        return (argnums,), True
    if (
        isinstance(argnums, Sequence)
        and not isinstance(argnums, str)
        and len(argnums) > 0
        and all(isinstance(a, int) and not isinstance(a, bool) for a in argnums)
    ):
        if len(set(argnums)) != len(argnums):
            raise ValueError(f"{where}: argnums must not repeat an argument, got {argnums!r}.")
        return tuple(argnums), False
    raise TypeError(
        f"{where}: argnums must be an int or a non-empty tuple of ints (positions of the "
        f"arguments to differentiate), got {argnums!r}."
    )


def _resolve_argnums(where: str, argnums: tuple[int, ...], nargs: int) -> tuple[int, ...]:
    """Make negative argnums positive and check them against the number of arguments."""
    if len(argnums) == 1 and 0 <= argnums[0] < nargs:
        return argnums
    out = []
    for a in argnums:
        if not -nargs <= a < nargs:
            raise ValueError(
                f"{where}: argnums={argnums if len(argnums) > 1 else argnums[0]!r} refers to "
                f"positional argument {a}, but the function was called with {nargs} positional "
                "argument(s). Keyword arguments are never differentiated: pass what you "
                "differentiate positionally."
            )
        out.append(a % nargs)
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: argnums {argnums!r} name the same argument twice.")
    return tuple(out)


class _DiffArgs:
    """The positional arguments of ``f`` with the leaves of the differentiated ones pulled out.

    ``leaves`` is the flat list of differentiated leaves (argument by argument, each in
    :func:`fnn.tree.flatten` order); ``rebuild(flat)`` puts new leaves back into the arguments and
    ``split(flat)`` turns one value per leaf into one tree per differentiated argument.
    """

    __slots__ = ("argnums", "args", "leaves", "sizes", "treedefs")

    def __init__(self, where: str, args: tuple[Any, ...], argnums: tuple[int, ...]) -> None:
        self.args = args
        self.argnums = argnums
        self.treedefs = []
        self.sizes = []
        leaves: list[torch.Tensor] = []
        for i in argnums:
            arg_leaves, treedef = tree_lib.flatten(args[i])
            for k, leaf in enumerate(arg_leaves):
                if not (isinstance(leaf, torch.Tensor) and leaf.dtype.is_floating_point):
                    raise _not_differentiable(where, args[i], i, k, leaf, argnums)
            leaves += arg_leaves
            self.treedefs.append(treedef)
            self.sizes.append(len(arg_leaves))
        self.leaves = leaves

    def rebuild(self, flat: Sequence[Any]) -> list[Any]:
        args = list(self.args)
        if len(self.argnums) == 1:  # the common case, without slicing
            args[self.argnums[0]] = tree_lib.unflatten(self.treedefs[0], flat)
            return args
        start = 0
        for i, treedef, n in zip(self.argnums, self.treedefs, self.sizes, strict=True):
            args[i] = tree_lib.unflatten(treedef, flat[start : start + n])
            start += n
        return args

    def split(self, flat: Sequence[Any]) -> list[PyTree]:
        if len(self.treedefs) == 1:
            return [tree_lib.unflatten(self.treedefs[0], flat)]
        out, start = [], 0
        for treedef, n in zip(self.treedefs, self.sizes, strict=True):
            out.append(tree_lib.unflatten(treedef, flat[start : start + n]))
            start += n
        return out


def _not_differentiable(
    where: str, arg: Any, i: int, k: int, leaf: Any, argnums: tuple[int, ...]
) -> TypeError:
    path = tree_lib.paths(arg)[k]
    hint = ""
    if isinstance(leaf, torch.Tensor) and leaf.dtype == torch.uint32 and leaf.shape[-1:] == (2,):
        hint = " (a PRNG key?)"
    elif isinstance(leaf, float):
        hint = f" (to differentiate it, pass torch.tensor({leaf!r}))"
    nums = argnums[0] if len(argnums) == 1 else argnums
    return TypeError(
        f"{where}: cannot differentiate with respect to {_arg_path(i, path)}: it is "
        f"{_describe(leaf)}{hint}, and only floating-point tensors are differentiated "
        f"(argnums={nums!r} selects every leaf of args[{i}]). {_MOVE_OUT_HINT}"
    )


def _split_aux(where: str, out: Any, has_aux: bool) -> tuple[Any, Any]:
    if not has_aux:
        return out, None
    if not (isinstance(out, tuple | list) and len(out) == 2):
        got = f"a {type(out).__qualname__}"
        if isinstance(out, tuple | list):
            got += f" of length {len(out)}"
        raise TypeError(
            f"{where}: with has_aux=True the function must return a pair (output, aux), got {got}."
        )
    return out[0], out[1]


def _aux_leaves(where: str, aux: Any) -> tuple[list[torch.Tensor], Any]:
    leaves, treedef = tree_lib.flatten(aux)
    for k, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            path = tree_lib.paths(aux)[k]
            at = f"aux.{path}" if path else "aux"
            raise TypeError(
                f"{where}: with has_aux=True the function returns (output, aux), and aux must hold "
                f"tensors only, but {at} is {_describe(leaf)}. Return a tensor instead (e.g. "
                "torch.tensor(x)), or compute non-tensor values outside the differentiated "
                "function."
            )
    return leaves, treedef


def _check_scalar(where: str, value: Any) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{where}: the function must return a scalar floating tensor (shape ()) to be "
            f"differentiated with grad, got {_describe(value)}."
        )
    if value.ndim != 0:
        raise TypeError(
            f"{where}: grad needs a scalar output (shape ()), but the function returned a tensor "
            f"of shape {tuple(value.shape)}. Reduce it (e.g. .sum() or .mean()), or use "
            "fnn.jacrev / fnn.vjp for non-scalar outputs."
        )
    if not value.is_floating_point():
        raise TypeError(
            f"{where}: the function must return a floating scalar to be differentiated, got a "
            f"{value.dtype} tensor."
        )


def _float_leaves(where: str, out: Any, what: str = "output") -> tuple[list[torch.Tensor], Any]:
    """Flatten the output of ``f``; every leaf must be a floating tensor (to be differentiated)."""
    leaves, treedef = tree_lib.flatten(out)
    for k, leaf in enumerate(leaves):
        if not (isinstance(leaf, torch.Tensor) and leaf.is_floating_point()):
            path = tree_lib.paths(out)[k]
            at = f"the {what} at {path!r}" if path else f"the {what}"
            raise TypeError(
                f"{where}: every leaf of the {what} must be a floating-point tensor to be "
                f"differentiated, but {at} is {_describe(leaf)}. Return non-floating values as "
                "aux (has_aux=True) instead."
            )
    return leaves, treedef


def _check_like(where: str, what: str, ref: Any, got: Any, names: tuple[str, str]) -> list[Any]:
    """Flatten ``got``, requiring the structure, shapes and dtypes of ``ref`` (tangents etc.)."""
    msg = tree_lib.structure_mismatch(ref, got, names=names)
    if msg is not None:
        raise ValueError(f"{where}: {what} must have the structure of {names[0]}; {msg}.")
    ref_leaves = tree_lib.leaves(ref)
    got_leaves = tree_lib.leaves(got)
    for k, (r, g) in enumerate(zip(ref_leaves, got_leaves, strict=True)):
        if not (isinstance(g, torch.Tensor) and g.shape == r.shape and g.dtype == r.dtype):
            path = tree_lib.paths(ref)[k]
            at = f" at {path!r}" if path else ""
            raise ValueError(
                f"{where}: {what} must match {names[0]} leaf by leaf in shape and dtype; "
                f"{names[0]}{at} is {_describe(r)}, {names[1]}{at} is {_describe(g)}."
            )
    return got_leaves


# --------------------------------------------------------------------------------------------
# grad / value_and_grad
# --------------------------------------------------------------------------------------------


def _use_eager_fast_path() -> bool:
    """Whether :func:`_eager_value_and_grad` may replace ``torch.func.grad_and_value``."""
    return (
        _EAGER_FAST_PATH
        and not torch.compiler.is_compiling()
        and torch._C._functorch.maybe_current_level() is None
    )


def _reaches_outside(out: torch.Tensor, xs: Sequence[torch.Tensor]) -> bool:
    """Whether the autograd graph of ``out`` reaches a tensor requiring grad other than ``xs``.

    That happens when ``f`` closes over (or creates) a tensor that requires grad: the caller may
    differentiate through this gradient with classic autograd, so it must keep its graph.
    """
    root = out.grad_fn
    if root is None:
        return out.requires_grad and not any(out is x for x in xs)
    ours = {id(x) for x in xs}
    accumulate_grad = _AccumulateGrad
    seen = {root}
    stack = [root]
    visit, pop, push = seen.add, stack.pop, stack.append  # this loop runs on every eager grad
    while stack:
        for node, _ in pop().next_functions:
            if node is None or node in seen:
                continue
            visit(node)
            if type(node) is accumulate_grad:
                if id(node.variable) not in ours:
                    return True
            else:
                push(node)
    return False


def _autograd_grad(
    value: torch.Tensor, xs: list[torch.Tensor], create_graph: bool
) -> Sequence[torch.Tensor]:
    """``torch.autograd.grad(value, xs, allow_unused=True)``, zeros for unused inputs.

    For plain tensors this calls the autograd engine the way ``torch.autograd.grad`` does after
    validating its arguments (which we have done: ``value`` is a floating scalar, ``xs`` are
    tensors): same engine call, same results, ~20 us less per call, which is 10% of a tiny MLP's
    gradient. Tensor subclasses and ``__torch_function__`` modes go through the public function.
    """
    if not value.requires_grad:  # the output does not depend on any input
        return [torch.zeros_like(x) for x in xs]
    if _engine_run_backward is not None and not has_torch_function(xs):
        ones = torch.ones_like(value, memory_format=torch.preserve_format)
        grads = _engine_run_backward(
            (value,), (ones,), create_graph, create_graph, tuple(xs), True, False
        )
    else:
        grads = torch.autograd.grad(value, xs, allow_unused=True, create_graph=create_graph)
    for g in grads:
        if g is None:
            return [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads, strict=True)]
    return grads


def _eager_value_and_grad(
    flat_fun: Callable[..., tuple[torch.Tensor, list[torch.Tensor]]],
    leaves: Sequence[torch.Tensor],
) -> tuple[Sequence[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """``torch.func.grad_and_value(flat_fun, argnums=all, has_aux=True)`` by classic autograd.

    Taken exactly when :func:`_use_eager_fast_path` says so: no ``torch.func`` transform is
    active and nothing is being traced by ``torch.compile``. It reproduces torch.func's results:

    - gradients are computed under an outer ``torch.no_grad()`` too (``torch.enable_grad``);
    - each leaf gets its own alias, so a tensor passed at two paths (tied weights) gets two
      gradients; an input the output does not depend on gets zeros;
    - the gradients keep an autograd graph (``create_graph=True``) exactly when grad mode is on
      at the call and either a differentiated leaf requires grad or the output's graph reaches
      another tensor that requires grad (a closure, a non-differentiated argument): the caller
      can then differentiate through them with classic autograd (``fnn.grad`` inside a
      ``loss.backward()`` outer loop, MAML, ``fnn.grad`` of ``fnn.grad``), as with torch.func.
      Otherwise the value, aux and gradients are returned detached, as torch.func returns them.
    """
    if not torch.is_grad_enabled():  # torch.func.grad ignores an outer no_grad: so do we
        with torch.enable_grad():
            xs = [x.detach().requires_grad_() for x in leaves]
            value, aux = flat_fun(*xs)
            grads = _autograd_grad(value, xs, False)
        return grads, value.detach(), [a.detach() for a in aux]
    higher = False
    xs = []
    for x in leaves:
        if x.requires_grad:  # keep the caller's graph: a view, so tied leaves stay separate
            higher = True
            xs.append(x.view_as(x))
        else:
            xs.append(x.detach().requires_grad_())
    value, aux = flat_fun(*xs)
    if not higher:
        higher = _reaches_outside(value, xs)
    grads = _autograd_grad(value, xs, higher)
    if higher:
        return grads, value, aux
    return grads, value.detach(), [a.detach() for a in aux]


def _value_and_grad(
    where: str,
    fun: Callable[..., Any],
    argnums: tuple[int, ...],
    single: bool,
    has_aux: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Any, Any, Any]:
    """``(value, aux, grads)`` of ``fun(*args, **kwargs)``; ``aux`` is None without has_aux."""
    diff = _DiffArgs(where, args, _resolve_argnums(where, argnums, len(args)))
    aux_def = []

    def flat_fun(*xs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        value = fun(*diff.rebuild(xs), **kwargs)
        if not has_aux:
            _check_scalar(where, value)
            return value, []
        value, aux = _split_aux(where, value, has_aux)
        _check_scalar(where, value)
        aux_leaves, treedef = _aux_leaves(where, aux)
        aux_def.append(treedef)
        return value, aux_leaves

    if not diff.leaves:  # nothing to differentiate: empty gradient trees
        value, aux_leaves = flat_fun()
        grads: Sequence[torch.Tensor] = []
    elif _use_eager_fast_path():
        grads, value, aux_leaves = _eager_value_and_grad(flat_fun, diff.leaves)
    else:
        grads, (value, aux_leaves) = torch.func.grad_and_value(
            flat_fun, argnums=tuple(range(len(diff.leaves))), has_aux=True
        )(*diff.leaves)
    trees = diff.split(grads)
    aux = tree_lib.unflatten(aux_def[-1], aux_leaves) if has_aux else None
    return value, aux, trees[0] if single else tuple(trees)


def value_and_grad(
    fun: Callable[..., Any], argnums: Argnums = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Make a function returning both ``fun``'s value and its gradient, like ``jax.value_and_grad``.

    Args:
        fun: a function of pytrees returning a scalar floating tensor (shape ``()``), or with
            ``has_aux=True`` a pair ``(scalar, aux)`` where ``aux`` is a pytree of tensors.
        argnums: which positional argument(s) to differentiate: an int, or a tuple of ints (then
            the gradient is a tuple with one tree per argument). Every leaf of a differentiated
            argument must be a floating tensor; keyword arguments are never differentiated.
        has_aux: whether ``fun`` returns ``(value, aux)``.

    Returns:
        A function with ``fun``'s signature returning ``(value, grads)``, or
        ``((value, aux), grads)`` with ``has_aux``. ``grads`` has the structure of the
        differentiated argument(s) and each leaf the shape and dtype of its input leaf; an input
        ``fun`` does not depend on gets zeros. ``value`` and ``aux`` are returned as computed.

    Raises:
        TypeError: if a differentiated leaf is not a floating tensor (the message names its path,
            e.g. ``args[0].opt.step``), if ``fun``'s output is not a scalar (the message gives its
            shape), or if ``aux`` holds a non-tensor.

    Works under ``torch.compile``, ``fnn.vmap`` and other transforms, and nests (``grad(grad(f))``).
    Called eagerly outside any transform it uses classic autograd (``torch.autograd.grad``), within
    a few percent of ``loss.backward()`` on an MNIST-size MLP, with the same results as
    ``torch.func.grad_and_value``; inside transforms and under ``torch.compile`` it uses the
    latter.

    Example:
        >>> import torch, fnn
        >>> def loss(params, x):
        ...     return ((params["w"] * x).sum() + params["b"]) ** 2
        >>> params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.5)}
        >>> value, grads = fnn.value_and_grad(loss)(params, torch.tensor([3.0, -1.0]))
        >>> value
        tensor(2.2500)
        >>> grads
        {'w': tensor([ 9., -3.]), 'b': tensor(3.)}
    """
    where = _where("value_and_grad", fun)
    nums, single = _check_argnums(where, argnums)

    @functools.wraps(fun)
    def value_and_grad_fun(*args: Any, **kwargs: Any) -> Any:
        value, aux, grads = _value_and_grad(where, fun, nums, single, has_aux, args, kwargs)
        return ((value, aux), grads) if has_aux else (value, grads)

    return value_and_grad_fun


def grad(
    fun: Callable[..., Any], argnums: Argnums = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Make a function returning the gradient of scalar-valued ``fun``, like ``jax.grad``.

    Args:
        fun: a function of pytrees returning a scalar floating tensor (shape ``()``), or with
            ``has_aux=True`` a pair ``(scalar, aux)`` where ``aux`` is a pytree of tensors.
        argnums: which positional argument(s) to differentiate: an int, or a tuple of ints (then
            the result is a tuple with one gradient tree per argument). Every leaf of a
            differentiated argument must be a floating tensor: keep step counters and PRNG keys
            in other arguments. Keyword arguments are never differentiated.
        has_aux: whether ``fun`` returns ``(value, aux)``; then the result is ``(grads, aux)``.

    Returns:
        A function with ``fun``'s signature returning ``grads`` (or ``(grads, aux)``): trees with
        the structure of the differentiated argument(s), each leaf shaped like its input leaf.

    Raises:
        TypeError: if a differentiated leaf is not a floating tensor (naming its path), the output
            is not a scalar (giving its shape), or ``aux`` holds a non-tensor.

    Composes with the other transforms: ``fnn.vmap(fnn.grad(f))`` gives per-example gradients,
    ``fnn.grad(fnn.grad(f))`` second derivatives, and gradients of functions taking inner
    gradient steps (MAML) are exact. See :func:`value_and_grad` for the eager fast path.

    Example:
        >>> import torch, fnn
        >>> fnn.grad(lambda x: (x**3).sum())(torch.tensor([1.0, 2.0]))
        tensor([ 3., 12.])
        >>> fnn.grad(fnn.grad(lambda x: x**3))(torch.tensor(2.0))  # d2/dx2 x^3 = 6x
        tensor(12.)
        >>> def loss(w, x, step):
        ...     return (w * x).sum() * step, {"pred": w * x}
        >>> g, aux = fnn.grad(loss, argnums=(0, 1), has_aux=True)(
        ...     torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor(2))
        >>> g
        (tensor([6., 8.]), tensor([2., 4.]))
        >>> aux
        {'pred': tensor([3., 8.])}
    """
    where = _where("grad", fun)
    nums, single = _check_argnums(where, argnums)

    @functools.wraps(fun)
    def grad_fun(*args: Any, **kwargs: Any) -> Any:
        _, aux, grads = _value_and_grad(where, fun, nums, single, has_aux, args, kwargs)
        return (grads, aux) if has_aux else grads

    return grad_fun


# --------------------------------------------------------------------------------------------
# Jacobians
# --------------------------------------------------------------------------------------------


def _jacobian(
    transform: str,
    torch_jac: Callable[..., Any],
    fun: Callable[..., Any],
    argnums: Argnums,
    has_aux: bool,
) -> Callable[..., Any]:
    where = _where(transform, fun)
    nums, single = _check_argnums(where, argnums)

    @functools.wraps(fun)
    def jac_fun(*args: Any, **kwargs: Any) -> Any:
        diff = _DiffArgs(where, args, _resolve_argnums(where, nums, len(args)))
        defs: list[Any] = []

        def flat_fun(*xs: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
            out, aux = _split_aux(where, fun(*diff.rebuild(xs), **kwargs), has_aux)
            out_leaves, out_def = _float_leaves(where, out)
            aux_leaves, aux_def = _aux_leaves(where, aux)
            defs[:] = [out_def, aux_def]
            return tuple(out_leaves), aux_leaves

        if diff.leaves:
            rows, aux_leaves = torch_jac(
                flat_fun, argnums=tuple(range(len(diff.leaves))), has_aux=True
            )(*diff.leaves)
        else:  # no input leaves: every Jacobian block is an empty tree
            out_leaves, aux_leaves = flat_fun()
            rows = [()] * len(out_leaves)
        out_def, aux_def = defs
        # rows[o][k]: d output leaf o / d input leaf k, of shape out_shape + in_shape.
        blocks = [diff.split(row) for row in rows]
        jac = out_def.unflatten([b[0] if single else tuple(b) for b in blocks])
        return (jac, tree_lib.unflatten(aux_def, aux_leaves)) if has_aux else jac

    return jac_fun


def jacrev(
    fun: Callable[..., Any], argnums: Argnums = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Jacobian of ``fun`` by reverse mode (one VJP per output element), like ``jax.jacrev``.

    Args:
        fun: a function of pytrees returning a pytree of floating tensors (or ``(out, aux)``
            with ``has_aux=True``, ``aux`` a pytree of tensors).
        argnums: the positional argument(s) to differentiate (int or tuple of ints); their leaves
            must be floating tensors.
        has_aux: whether ``fun`` returns ``(out, aux)``; then the result is ``(jacobian, aux)``.

    Returns:
        A function returning the Jacobian as a tree with the structure of the output whose every
        leaf is a tree with the structure of the input (a tuple of them for tuple ``argnums``).
        The block for output leaf ``o`` and input leaf ``i`` has shape
        ``o.shape + i.shape``. Prefer :func:`jacfwd` when there are fewer inputs than outputs.

    Example:
        >>> import torch, fnn
        >>> f = lambda p: {"y": p["a"] * p["b"], "s": p["a"].sum()}
        >>> jac = fnn.jacrev(f)({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 4.0])})
        >>> jac["y"]["a"]
        tensor([[3., 0.],
                [0., 4.]])
        >>> fnn.tree.map(lambda t: tuple(t.shape), jac)
        {'y': {'a': (2, 2), 'b': (2, 2)}, 's': {'a': (2,), 'b': (2,)}}
    """
    return _jacobian("jacrev", torch.func.jacrev, fun, argnums, has_aux)


def jacfwd(
    fun: Callable[..., Any], argnums: Argnums = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Jacobian of ``fun`` by forward mode (one JVP per input element), like ``jax.jacfwd``.

    Same arguments and result structure as :func:`jacrev`: the output's tree of input trees,
    blocks of shape ``out_leaf.shape + in_leaf.shape``. Cheaper than :func:`jacrev` when the
    inputs are smaller than the outputs.

    Example:
        >>> import torch, fnn
        >>> fnn.jacfwd(lambda x: x**2)(torch.tensor([1.0, 3.0]))
        tensor([[2., 0.],
                [0., 6.]])
        >>> a, b = fnn.jacfwd(lambda x, y: x * y, argnums=(0, 1))(torch.tensor(2.0), torch.tensor(5.0))
        >>> a, b
        (tensor(5.), tensor(2.))
    """  # noqa: E501
    return _jacobian("jacfwd", torch.func.jacfwd, fun, argnums, has_aux)


def hessian(
    fun: Callable[..., Any], argnums: Argnums = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Hessian of scalar ``fun``: ``jacfwd(jacrev(fun, argnums), argnums)``, like ``jax.hessian``.

    Args:
        fun: a function of pytrees returning a floating tensor (usually a scalar), or
            ``(out, aux)`` with ``has_aux=True``.
        argnums: the positional argument(s) to differentiate (int or tuple of ints).
        has_aux: whether ``fun`` returns ``(out, aux)``; then the result is ``(hessian, aux)``.

    Returns:
        A function returning the Hessian: for an input tree ``p`` a tree of trees, where block
        ``[i][j]`` has shape ``out.shape + p_i.shape + p_j.shape``.

    Example:
        >>> import torch, fnn
        >>> f = lambda x: (x[0] ** 2) * x[1]
        >>> fnn.hessian(f)(torch.tensor([1.0, 2.0]))
        tensor([[4., 2.],
                [2., 0.]])
        >>> h = fnn.hessian(lambda p: (p["a"] * p["b"]).sum())({"a": torch.ones(2), "b": torch.ones(2)})
        >>> h["a"]["b"]
        tensor([[1., 0.],
                [0., 1.]])
    """  # noqa: E501
    return jacfwd(jacrev(fun, argnums, has_aux), argnums, has_aux)


# --------------------------------------------------------------------------------------------
# jvp / vjp
# --------------------------------------------------------------------------------------------


def _flat_output_fun(
    where: str, fun: Callable[..., Any], diff: Any, has_aux: bool, defs: list[Any]
) -> Callable[..., tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]]:
    """``fun`` over flat differentiated leaves, returning flat (outputs, aux leaves).

    The output and aux tree definitions are stored in ``defs`` when the function runs.
    """

    def flat_fun(*xs: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
        out, aux = _split_aux(where, fun(*diff.rebuild(xs)), has_aux)
        out_leaves, out_def = _float_leaves(where, out)
        aux_leaves, aux_def = _aux_leaves(where, aux)
        defs[:] = [out_def, aux_def]
        return tuple(out_leaves), aux_leaves

    return flat_fun


def jvp(
    fun: Callable[..., Any],
    primals: Sequence[PyTree],
    tangents: Sequence[PyTree],
    has_aux: bool = False,
) -> tuple[Any, ...]:
    """Forward-mode Jacobian-vector product, like ``jax.jvp``.

    Args:
        fun: a function of ``len(primals)`` pytrees returning a pytree of floating tensors (or
            ``(out, aux)`` with ``has_aux=True``).
        primals: a tuple or list of the arguments; their leaves must be floating tensors.
        tangents: a tuple or list with the structure of ``primals``, each leaf of the shape and
            dtype of its primal leaf.
        has_aux: whether ``fun`` returns ``(out, aux)``.

    Returns:
        ``(primals_out, tangents_out)``, or ``(primals_out, tangents_out, aux)`` with ``has_aux``:
        ``fun(*primals)`` and its derivative along ``tangents``, both with the output's
        structure.

    Example:
        >>> import torch, fnn
        >>> out, t_out = fnn.jvp(lambda p: p["w"] ** 2, ({"w": torch.tensor([1.0, 3.0])},),
        ...                      ({"w": torch.tensor([1.0, 0.5])},))
        >>> out, t_out
        (tensor([1., 9.]), tensor([2., 3.]))
    """
    where = _where("jvp", fun)
    for name, seq in (("primals", primals), ("tangents", tangents)):
        if not isinstance(seq, tuple | list):
            raise TypeError(
                f"{where}: {name} must be a tuple or list of the positional arguments, got a "
                f"{type(seq).__qualname__}; for one argument write fnn.jvp(f, (x,), (t,))."
            )
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(
            f"{where}: primals has {len(primals)} arguments but tangents has {len(tangents)}; "
            "give one tangent per primal."
        )
    diff = _DiffArgs(where, primals, tuple(range(len(primals))))
    t_leaves = _check_like(where, "tangents", primals, tangents, ("primals", "tangents"))
    defs: list[Any] = []
    flat_fun = _flat_output_fun(where, fun, diff, has_aux, defs)

    if diff.leaves:
        out, t_out, aux_leaves = torch.func.jvp(
            flat_fun, tuple(diff.leaves), tuple(t_leaves), has_aux=True
        )
    else:
        out, aux_leaves = flat_fun()
        t_out = tuple(torch.zeros_like(o) for o in out)
    out_def, aux_def = defs
    result = (tree_lib.unflatten(out_def, out), tree_lib.unflatten(out_def, t_out))
    return (*result, tree_lib.unflatten(aux_def, aux_leaves)) if has_aux else result


def vjp(fun: Callable[..., Any], *primals: PyTree, has_aux: bool = False) -> tuple[Any, ...]:
    """Reverse-mode vector-Jacobian product, like ``jax.vjp``.

    Args:
        fun: a function of ``len(primals)`` pytrees returning a pytree of floating tensors (or
            ``(out, aux)`` with ``has_aux=True``).
        *primals: the arguments; their leaves must be floating tensors.
        has_aux: whether ``fun`` returns ``(out, aux)``.

    Returns:
        ``(primals_out, vjp_fn)`` or ``(primals_out, vjp_fn, aux)``. ``vjp_fn(cotangent)`` takes
        a tree with the structure, shapes and dtypes of ``primals_out`` and returns a tuple with
        one tree per primal (the structure of that primal). It can be called several times.

    Example:
        >>> import torch, fnn
        >>> out, vjp_fn = fnn.vjp(lambda a, b: {"y": a * b}, torch.tensor([1.0, 2.0]),
        ...                       torch.tensor([3.0, 4.0]))
        >>> out
        {'y': tensor([3., 8.])}
        >>> vjp_fn({"y": torch.tensor([1.0, 10.0])})
        (tensor([ 3., 40.]), tensor([ 1., 20.]))
    """
    where = _where("vjp", fun)
    diff = _DiffArgs(where, primals, tuple(range(len(primals))))
    defs: list[Any] = []
    flat_fun = _flat_output_fun(where, fun, diff, has_aux, defs)

    if diff.leaves:
        out, flat_vjp, aux_leaves = torch.func.vjp(flat_fun, *diff.leaves, has_aux=True)
    else:
        out, aux_leaves = flat_fun()

        def flat_vjp(cts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return ()

    out_def, aux_def = defs
    primals_out = tree_lib.unflatten(out_def, out)

    def vjp_fn(cotangent: PyTree) -> tuple[PyTree, ...]:
        ct_leaves = _check_like(
            where, "the cotangent", primals_out, cotangent, ("the output", "the cotangent")
        )
        return tuple(diff.split(flat_vjp(tuple(ct_leaves))))

    result = (primals_out, vjp_fn)
    return (*result, tree_lib.unflatten(aux_def, aux_leaves)) if has_aux else result


# --------------------------------------------------------------------------------------------
# stop_gradient
# --------------------------------------------------------------------------------------------


def stop_gradient(tree: PyTree) -> PyTree:
    """Detach every tensor leaf of ``tree`` from differentiation, like ``jax.lax.stop_gradient``.

    Values, shapes and structure are unchanged; non-tensor leaves pass through. Works under
    :func:`grad` and the other transforms (the leaves count as constants there), under classic
    autograd, and under ``torch.compile``.

    Example:
        >>> import torch, fnn
        >>> def f(x):
        ...     return (x * fnn.stop_gradient({"s": x})["s"]).sum()  # d/dx of x * const
        >>> fnn.grad(f)(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    return tree_lib.map(lambda x: x.detach() if isinstance(x, torch.Tensor) else x, tree)
