"""``fnn.jit``'s fast path: dynamo's compiled code, called without dynamo's per-call lookup.

Every call of a ``torch.compile`` d function enters dynamo's frame hook, which evaluates the
guards of the cached graph: one check per tensor (shape, strides, dtype, ...) and one per Python
object the traced code read (globals, closure cells, module attributes; hundreds for a
training step of an ``fnn.nn`` model). Measured on a 2-core CPU (torch 2.13), that lookup and
the compiled region's bookkeeping took 140 µs of a 290 µs tiny-MLP step, 0.6 ms of a 3.9 ms MLP
step and 0.7 ms of a 4.6 ms 455-tensor SGD step.

``fnn.jit`` has already matched the structure of the arguments and their non-tensor leaves
(its cache key). Once dynamo has accepted an entry's tensors (its full guard check, run once by
:func:`build`), a :class:`FastPath` runs dynamo's transformed code for that entry directly when

- each tensor has the same type, shape, strides, dtype, device, ``requires_grad`` and dispatch
  keys as then (``TensorGuards``, dynamo's own C++ tensor check), and the tensors are distinct
  objects, as they were then;
- the global state dynamo guards is unchanged (grad mode, inference mode, autocast, default
  dtype, deterministic algorithms, thread count: ``GlobalStateGuard``);
- no ``torch.compile`` region, ``__torch_function__`` or ``__torch_dispatch__`` mode is active,
  the compiler stance runs compiled code, and dynamo still holds the entry (no ``reset``).

Anything else goes through dynamo as before. What the fast path does not re-check is the Python
state the traced code read besides the arguments: like ``jax.jit``, fnn compiles it in.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["MAX_FAST_PATHS", "FastPath", "build", "stance"]

# Entries that keep missing (shapes that vary call after call) stop building fast paths.
MAX_FAST_PATHS = 4
# Compiler stances under which dynamo would run an entry's compiled code.
_RUNNING_STANCES = frozenset({"default", "fail_on_recompile", "eager_on_recompile"})


class FastPath:
    """Dynamo's compiled code for one cache entry of one flat function, and when it may run.

    ``run(*tensors)`` is the transformed code dynamo executes for that entry; ``accepts(tensors)``
    says whether dynamo's guards are known to hold for ``tensors`` (see the module docstring).
    """

    __slots__ = ("_cache_entry", "_code", "_global_state", "_inference", "_tensor_guards", "run")

    def __init__(
        self,
        run: Callable[..., Any],
        cache_entry: Any,
        code: types.CodeType,
        tensors: list[torch.Tensor],
    ) -> None:
        from torch._C._dynamo.guards import GlobalStateGuard, TensorGuards

        self.run = run
        self._cache_entry = cache_entry
        self._code = code
        self._tensor_guards = TensorGuards(
            *tensors, dynamic_dims_sizes=None, dynamic_dims_strides=None
        )
        self._global_state = GlobalStateGuard()
        self._inference = torch.is_inference_mode_enabled()

    def accepts(self, tensors: list[torch.Tensor]) -> bool:
        """Whether dynamo would run this entry's code for ``tensors`` now (cheap checks first)."""
        return (
            _quiet()
            and self._global_state.check()
            and torch.is_inference_mode_enabled() is self._inference
            and self.alive()
            and len(set(map(id, tensors))) == len(tensors)
            and self._tensor_guards.check(*tensors)
        )

    def alive(self) -> bool:
        """Whether dynamo still holds the entry (``torch._dynamo.reset()`` drops them all)."""
        return self._cache_entry in _entries(self._code)

    def __call__(self, tensors: list[torch.Tensor]) -> Any:
        try:
            return self.run(*tensors)
        except BaseException:
            # What dynamo's own call does on the way out: undo functorch levels an interrupted
            # graph may have entered (fast paths only run outside every transform: depth 0).
            torch._C._functorch.pop_dynamic_layer_stack_and_undo_to_depth(0)
            raise


def build(generated: Callable[..., Any], tensors: list[torch.Tensor]) -> FastPath | None:
    """A :class:`FastPath` for the dynamo cache entry of ``generated`` that accepts ``tensors``.

    ``generated`` is the flat ``def f(*a)`` that ``fnn.jit`` compiled. Runs dynamo's full guard
    check of each of its cache entries on ``tensors`` (what dynamo's next call would run). Returns
    ``None`` when no entry accepts them (dynamo will compile one), or the call is not one the fast
    path can take (see :meth:`FastPath.accepts`).
    """
    code = generated.__code__
    if not (code.co_flags & inspect.CO_VARARGS and code.co_argcount == 0 and _quiet()):
        return None
    if len(set(map(id, tensors))) != len(tensors):
        return None  # dynamo compiled the repeated tensor as one input; keep its guards
    frame_locals = {code.co_varnames[0]: tuple(tensors)}
    for entry in _entries(code):
        if entry.code is not None and entry.guard_manager.check(frame_locals):
            run = types.FunctionType(
                entry.code,
                generated.__globals__,
                generated.__name__,
                generated.__defaults__,
                generated.__closure__,
            )
            return FastPath(run, entry, code, tensors)
    return None


def _entries(code: types.CodeType) -> list[Any]:
    return torch._C._dynamo.eval_frame._debug_get_cache_entry_list(code)


def stance() -> str:
    """torch.compile's current stance (``torch.compiler.set_stance``)."""
    return torch._dynamo.eval_frame._stance.stance


def _quiet() -> bool:
    """No dynamo region, no torch function/dispatch mode, and a stance that runs compiled code."""
    return (
        torch._C._dynamo.eval_frame.get_eval_frame_callback() is None
        and stance() in _RUNNING_STANCES
        and getattr(torch._dynamo.eval_frame._stance, "backend", None) is None
        and not torch._C._len_torch_function_stack()
        and not torch._C._len_torch_dispatch_stack()
    )
