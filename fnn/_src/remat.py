"""Gradient checkpointing that composes with ``torch.func``: :func:`remat`.

``torch.utils.checkpoint`` does not work under ``torch.func.grad`` in torch 2.13 (it relies on
saved-tensor hooks, which ``torch.func`` refuses). fnn's remat is a custom
``torch.autograd.Function`` written in the ``setup_context`` style that ``torch.func`` needs:
its forward runs ``f`` without recording a graph and saves only the inputs; its backward
recomputes ``f`` under ``torch.func.vjp`` and pulls the cotangents back. Its ``vmap`` rule
applies the same function to ``torch.func.vmap(f)`` (torch's ``generate_vmap_rule`` breaks
``jvp`` outside ``vmap`` in 2.13), and a ``jvp`` rule (recomputing ``f`` under
``torch.func.jvp``) serves forward mode.

Under ``torch.compile`` that function is not used (dynamo cannot trace it under ``torch.func``
transforms, and without them the compiler would discard the recomputation): remat uses
``torch.utils.checkpoint`` there, or nothing; see :func:`remat` for the measurements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch._C._functorch import TransformType

from fnn._src import tree

__all__ = ["remat"]


def _differentiable(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


class _Call:
    """One call of a remat-ed function: everything static, and what its output looked like.

    ``run(*tensors)`` rebuilds the arguments from the tensor leaves and calls ``f``; the first
    run records the output structure and its non-tensor leaves.
    """

    def __init__(
        self,
        f: Callable[..., Any],
        static: dict[int, Any],
        n_args: int,
        treedef: Any,
        leaves: list[Any],
        tensor_pos: list[int],
        has_kwargs: bool,
    ) -> None:
        self.f, self.static, self.n_args, self.has_kwargs = f, static, n_args, has_kwargs
        # Tensor leaves are replaced by the arguments of every run; holding on to them here
        # would keep each input alive until the whole graph is freed.
        leaves = list(leaves)
        for i in tensor_pos:
            leaves[i] = None
        self.treedef, self.leaves, self.tensor_pos = treedef, leaves, tensor_pos
        self.out_def: Any = None
        self.out_consts: list[Any] = []  # output leaves that are not tensors, in order
        self.out_tensor_pos: list[int] = []  # where the tensor outputs go among the leaves
        self.out_diff: list[bool] = []  # which tensor outputs are differentiable

    def call(self, tensors: Sequence[torch.Tensor]) -> Any:
        leaves = list(self.leaves)
        for pos, t in zip(self.tensor_pos, tensors, strict=True):
            leaves[pos] = t
        rebuilt = self.treedef.unflatten(leaves)
        dynamic, kwargs = rebuilt if self.has_kwargs else (rebuilt, {})
        dynamic = iter(dynamic)
        args = [self.static[i] if i in self.static else next(dynamic) for i in range(self.n_args)]
        return self.f(*args, **kwargs)

    def run(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Call ``f`` and return its tensor outputs, recording the rest of the output."""
        out_leaves, out_def = tree.flatten(self.call(tensors))
        pos = [i for i, leaf in enumerate(out_leaves) if isinstance(leaf, torch.Tensor)]
        if self.out_def is None:
            self.out_def, self.out_tensor_pos = out_def, pos
            self.out_consts = [x for x in out_leaves if not isinstance(x, torch.Tensor)]
            self.out_diff = [_differentiable(out_leaves[i]) for i in pos]
        return tuple(out_leaves[i] for i in pos)

    def vmapped(self, in_dims: Sequence[int | None], randomness: str) -> _VmappedCall:
        return _VmappedCall(self, tuple(in_dims), randomness)

    def rebuild(self, out_tensors: Sequence[torch.Tensor]) -> Any:
        leaves: list[Any] = [None] * self.out_def.num_leaves
        consts = iter(self.out_consts)
        tensor_pos = set(self.out_tensor_pos)
        for i in range(len(leaves)):
            if i not in tensor_pos:
                leaves[i] = next(consts)
        for i, t in zip(self.out_tensor_pos, out_tensors, strict=True):
            leaves[i] = t
        return self.out_def.unflatten(leaves)


class _VmappedCall:
    """``torch.func.vmap`` of a :class:`_Call`: remat of vmap equals vmap of remat."""

    def __init__(self, inner: Any, in_dims: tuple, randomness: str) -> None:
        self.inner, self.in_dims, self.randomness = inner, in_dims, randomness

    @property
    def out_diff(self) -> list[bool]:
        return self.inner.out_diff

    def run(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.func.vmap(self.inner.run, self.in_dims, 0, randomness=self.randomness)(
            *tensors
        )

    def vmapped(self, in_dims: Sequence[int | None], randomness: str) -> _VmappedCall:
        return _VmappedCall(self, tuple(in_dims), randomness)


def _restricted(call: _Call, tensors: Sequence[torch.Tensor]) -> tuple[Callable, list[int]]:
    """``f`` as a function of its differentiable tensor inputs, returning its differentiable
    tensor outputs; and the indices of those inputs."""
    diff_in = [i for i, t in enumerate(tensors) if _differentiable(t)]

    def fn(*diff: torch.Tensor) -> tuple[torch.Tensor, ...]:
        full = list(tensors)
        for i, t in zip(diff_in, diff, strict=True):
            full[i] = t
        return tuple(o for o in call.run(*full) if _differentiable(o))

    return fn, diff_in


def _differentiating_levels() -> list[int]:
    """The functorch levels (innermost last) of the active grad/vjp and jvp transforms."""
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    differentiating = (TransformType.Grad, TransformType.Jvp)
    return [i.level() for i in retrieve_all_functorch_interpreters() if i.key() in differentiating]


def _base(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor under all functorch wrappers."""
    f = torch._C._functorch
    while f.is_batchedtensor(t) or f.is_gradtrackingtensor(t) or f.is_functionaltensor(t):
        t = f.get_unwrapped(t)
    return t


def _gradient_may_be_differentiated(levels_at_forward: list[int], tensors: Sequence) -> bool:
    """Whether the gradient a backward pass computes may itself be differentiated.

    Under classic autograd that is ``create_graph=True`` (grad mode on in the backward pass).
    Under ``torch.func`` the backward pass belongs to the innermost differentiating level of
    the forward; another differentiating level still alive (``grad(grad(f))``,
    ``jacfwd(jacrev(f))``), or inputs requiring grad under classic autograd, may differentiate.
    """
    if not levels_at_forward:
        return torch.is_grad_enabled()
    own = levels_at_forward[-1]
    if any(level != own for level in _differentiating_levels()):
        return True
    return torch.is_grad_enabled() and any(_base(t).requires_grad for t in tensors)


def _refuse_forward_over_forward() -> None:
    """Raise if forward mode is nested in forward mode: torch 2.13 would silently drop the
    outer tangent of a custom function's jvp rule (measured: ``jvp(jvp(sin))`` gives 0)."""
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    jvp_levels = [i for i in retrieve_all_functorch_interpreters() if i.key() == TransformType.Jvp]
    if len(jvp_levels) > 1:
        raise NotImplementedError(
            "fnn.remat: forward mode nested in forward mode (torch.func.jvp of jvp, "
            "jacfwd(jacfwd(...))) through a remat-ed function is not supported: torch 2.13 "
            "drops the outer tangent of a custom autograd.Function's jvp rule, which would give "
            "wrong (zero) derivatives. Use reverse mode for the outer derivative, e.g. "
            "jacrev(jacfwd(f)) or hessian = jacfwd(jacrev(f)), or call f without remat."
        )


class _Remat(torch.autograd.Function):
    @staticmethod
    def forward(call: _Call, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = call.run(*tensors)
        # Returning an input unchanged would make autograd treat the output as that input.
        return tuple(o.clone() if any(o is t for t in tensors) else o for o in outs)

    @staticmethod
    def vmap(info: Any, in_dims: tuple, call: _Call, *tensors: torch.Tensor) -> Any:
        # torch's generated rule breaks torch.func.jvp outside vmap (an internal assertion),
        # so batch by running the remat-ed function on the vmapped call instead.
        outs = _Remat.apply(call.vmapped(in_dims[1:], info.randomness), *tensors)
        return outs, (0,) * len(outs)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        call, *tensors = inputs
        ctx.call = call
        ctx.save_for_backward(*tensors)
        ctx.inputs = tensors  # for jvp; dropped by backward so the inputs can be freed
        ctx.diff_levels = _differentiating_levels()
        ctx.mark_non_differentiable(*(o for o in output if not _differentiable(o)))

    @staticmethod
    def backward(ctx: Any, *cotangents: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        tensors = ctx.saved_tensors
        ctx.inputs = None
        keep_graph = _gradient_may_be_differentiated(ctx.diff_levels, tensors)
        if not keep_graph:
            # Nobody differentiates this gradient: do not let a graph for that keep the
            # recomputed activations alive (torch.func.grad always asks for one).
            tensors = tuple(t.detach() for t in tensors)
        fn, diff_in = _restricted(ctx.call, tensors)
        with torch.enable_grad():
            _, vjp_fn = torch.func.vjp(fn, *(tensors[i] for i in diff_in))
        diff_out = ctx.call.out_diff
        grads = vjp_fn(
            tuple(g for g, d in zip(cotangents, diff_out, strict=True) if d),
            retain_graph=False,
            create_graph=keep_graph,
        )
        result: list[torch.Tensor | None] = [None] * len(tensors)
        for i, g in zip(diff_in, grads, strict=True):
            result[i] = g
        return (None, *result)

    @staticmethod
    def jvp(ctx: Any, _call_tangent: Any, *tangents: torch.Tensor | None) -> Any:
        _refuse_forward_over_forward()
        tensors = ctx.inputs
        fn, diff_in = _restricted(ctx.call, tensors)
        primals = tuple(tensors[i] for i in diff_in)
        tans = tuple(
            torch.zeros_like(tensors[i]) if tangents[i] is None else tangents[i] for i in diff_in
        )
        _, out_tangents = torch.func.jvp(fn, primals, tans)
        out_tangents = iter(out_tangents)
        return tuple(next(out_tangents) if d else None for d in ctx.call.out_diff)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def remat(
    f: Callable[..., Any] | None = None,
    *,
    static_argnums: int | Sequence[int] = (),
    policy: None = None,
) -> Any:
    """Gradient checkpointing: keep only the inputs of ``f``, recompute it in the backward pass.

    The counterpart of ``jax.checkpoint`` / ``jax.remat``. ``remat(f)`` computes the same
    values and the same derivatives as ``f``, but the backward pass (``torch.func.grad``,
    ``torch.func.vjp``, ``loss.backward()``) stores only the inputs of ``f`` and runs ``f``
    again to get its intermediates. Wrapping each layer (or each block of layers) of a deep
    network trades one extra forward pass for activation memory: the activations inside
    ``f`` are never kept for the backward pass.

    Args:
        f: the function to checkpoint: ``f(*args, **kwargs)`` taking and returning pytrees.
            It must be deterministic (recomputation must reproduce the forward pass; fnn's
            explicit PRNG keys make that automatic) and free of side effects that matter.
        static_argnums: positions of arguments that are not traced: passed to ``f`` as they
            are, by closure (configuration, Python numbers, modules).
        policy: only ``None`` (save nothing but the inputs) is supported; JAX's policies that
            save selected intermediates are not implemented.

    Returns:
        A function with the signature of ``f``. Used as ``@fnn.remat`` or
        ``fnn.remat(f, static_argnums=(1,))`` (or ``@fnn.remat(static_argnums=...)``).

    What is differentiated: floating (and complex) tensor leaves of the arguments; integer and
    bool tensors, and non-tensor leaves (numbers, strings, ``None``), pass through as constants.
    Non-tensor output leaves are returned as they are.

    Transforms (eager mode):

    - ``torch.func.grad``/``vjp``/``jacrev``, ``vmap`` (remat of the vmapped function),
      ``grad(grad(...))``, ``jacrev(jacrev(...))``, ``hessian``, classic ``loss.backward()``
      and ``torch.autograd.grad(create_graph=True)``: exact, with ``f`` run once more in each
      backward pass.
    - ``torch.func.jvp``/``jacfwd``: a ``jvp`` rule that runs ``f`` once more under
      ``torch.func.jvp``. Forward mode nested in forward mode (``jacfwd(jacfwd(...))``) raises
      ``NotImplementedError``: torch 2.13 silently drops the outer tangent of a custom
      function's ``jvp`` rule. Calling the function returned by ``torch.func.vjp`` inside
      another ``vjp`` (vjp of a vjp, as ``check_grads(order=2)`` does) hits an internal
      assertion of torch 2.13; ``grad(grad(...))`` works.
    - When nothing differentiates the gradient again (a single ``torch.func.grad``, possibly
      under ``vmap``, or ``backward()`` without ``create_graph``), the recomputation keeps no
      graph. That matters: ``torch.func.grad`` always records the graph of the backward pass
      (``create_graph=True``), which keeps every activation alive until the gradient is
      returned, so plain ``torch.func.grad`` peaks far above ``loss.backward()``; remat-ed
      blocks escape that.

    Measured (``python benchmarks/remat_probe.py``: 32 layers ``gelu(x @ W.T + b)`` of width
    1024, float32, peak RSS above the parameters; the 128 MiB of gradients are included):

    =====================  ====================  =================  ===================
    batch 512 / 2048       no remat              remat each layer   remat each 4 layers
    =====================  ====================  =================  ===================
    ``loss.backward()``    136 / 544 MiB         136 / 288 MiB      136 / 196 MiB
    saved after forward    128 / 512 MiB         64 / 256 MiB       16 / 64 MiB
    ``torch.func.grad``    386 / 1161 MiB        136 / 300 MiB      136 / 196 MiB
    =====================  ====================  =================  ===================

    Under ``torch.compile``:

    - With no ``torch.func`` transform (a compiled forward, then ``loss.backward()``), remat
      uses ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, which dynamo turns
      into ``tag_activation_checkpoint``: the min-cut partitioner must recompute the tagged
      region. Measured at batch 2048: peak 516 MiB without remat, 268 MiB with each layer
      remat-ed, 184 MiB with blocks of 4. The custom function used in eager mode would be undone
      there: the partitioner re-saved the activations (504 MiB held after forward, as without
      remat).
    - Around ``torch.func.grad``/``vmap`` (``torch.compile(torch.func.grad(loss))``), ``f``
      is called as it is and **no memory is saved** (measured: 508 MiB with or without remat).
      The gradient is then part of one forward graph, which the partitioner and
      ``torch._functorch.config.activation_memory_budget`` never see, and in torch 2.13 dynamo
      cannot trace the custom function under ``torch.func`` transforms, nor
      ``torch.utils.checkpoint`` (``torch.func`` does not support saved tensor hooks).
      Values and gradients stay exact.
    - ``f`` must not mutate Python state (dynamo refuses side effects inside the checkpointed
      region), as with ``torch.utils.checkpoint``.

    Raises:
        TypeError: if ``f`` is not callable or ``static_argnums`` is not ints.
        NotImplementedError: if a ``policy`` is given.
        IndexError: if a static argument position is out of range for a call.

    Example:
        >>> import torch, fnn
        >>> calls = []
        >>> @fnn.remat
        ... def layer(w, x):
        ...     calls.append(1)
        ...     return torch.tanh(x @ w)
        >>> w, x = torch.eye(2), torch.tensor([[1.0, 2.0]])
        >>> g = torch.func.grad(lambda w: layer(w, x).sum())(w)
        >>> g.shape, len(calls)  # forward once, recomputed once in the backward pass
        (torch.Size([2, 2]), 2)
        >>> torch.allclose(g, torch.func.grad(lambda w: torch.tanh(x @ w).sum())(w))
        True
    """
    if policy is not None:
        raise NotImplementedError(
            f"fnn.remat: policy={policy!r} is not supported; only policy=None (save only the "
            "inputs of f, recompute everything else) is implemented. Wrap smaller functions "
            "in remat to keep more intermediates."
        )
    if _is_int(static_argnums):
        static_argnums = (static_argnums,)
    static_argnums = tuple(static_argnums)
    if not all(_is_int(i) for i in static_argnums):
        raise TypeError(
            f"fnn.remat: static_argnums must be an int or a sequence of ints, got "
            f"{static_argnums!r}."
        )
    if f is None:
        return functools.partial(remat, static_argnums=static_argnums, policy=policy)
    if not callable(f):
        raise TypeError(
            f"fnn.remat: expected a function to checkpoint, got {type(f).__qualname__}; use "
            "fnn.remat(f) or @fnn.remat."
        )

    @functools.wraps(f)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        static = {}
        for i in static_argnums:
            j = i + len(args) if i < 0 else i
            if not 0 <= j < len(args):
                raise IndexError(
                    f"fnn.remat: static_argnums contains {i}, but "
                    f"{getattr(f, '__qualname__', f)} was called with {len(args)} positional "
                    "arguments."
                )
            static[j] = args[j]
        dynamic = tuple(a for i, a in enumerate(args) if i not in static)
        # (Flattening an empty kwargs dict breaks dynamo's optree support in torch 2.13.)
        leaves, treedef = tree.flatten((dynamic, kwargs) if kwargs else dynamic)
        tensor_pos = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        call = _Call(f, static, len(args), treedef, leaves, tensor_pos, bool(kwargs))
        tensors = [leaves[i] for i in tensor_pos]
        if not tensors:
            return f(*args, **kwargs)
        if torch.compiler.is_compiling():
            if torch._C._are_functorch_transforms_active():
                return f(*args, **kwargs)
            return torch.utils.checkpoint.checkpoint(
                lambda *ts: call.call(ts), *tensors, use_reentrant=False, preserve_rng_state=False
            )
        outs = _Remat.apply(call, *tensors)
        return call.rebuild(outs)

    return wrapped
