"""``fnn.jit``: ``torch.compile(fullgraph=True)`` for pure functions of pytrees, with donation.

How a call runs (the compiled path):

1. Static arguments are set aside; the other arguments are flattened with ``fnn.tree`` into
   tensors and non-tensor leaves (Python numbers, strings, ...).
2. The structure of the arguments, the static arguments and the non-tensor leaves form the cache
   key. A new key generates (:mod:`fnn._src.jit_codegen`) a small Python function taking the
   tensors as a flat ``*a`` and rebuilding the argument trees from literals
   (``{'w': a[0], 'b': a[1]}``), so dynamo guards only on tensors, and compiles it with
   ``torch.compile(fullgraph=True)``. Each key has its own code object, hence its own dynamo
   cache and recompile limit.
3. Inside the compiled function the results are written into the donated inputs (``copy_``
   under ``no_grad``, see :func:`fnn._src.donation.run`), so inductor stores them straight into the
   input buffers.
4. From the second call of an entry on, once dynamo's full guard check has accepted its tensors,
   the call runs dynamo's compiled code directly when the tensors' metadata and the global state
   still match (:mod:`fnn._src.jit_fast`), skipping dynamo's per-call lookup.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import optree
import torch

from fnn._src.donation import run
from fnn._src.inductor import with_defaults as _with_defaults
from fnn._src.jit_args import argnames as _argnames
from fnn._src.jit_args import argnums as _argnums
from fnn._src.jit_args import positional_names as _positional_names
from fnn._src.jit_codegen import OPTS as _OPTS
from fnn._src.jit_codegen import generate, layout
from fnn._src.jit_codegen import is_tensor as _is_tensor
from fnn._src.jit_diagnostics import Diagnostics
from fnn._src.jit_fast import MAX_FAST_PATHS, FastPath, build, stance
from fnn._src.jit_recycle import ResultRecycling, recyclable
from fnn._src.tracing import plain_eager

__all__ = ["jit"]

_DISABLE_VAR = "FNN_DISABLE_JIT"
# ``os.environ.get`` encodes the name and raises and catches a KeyError when it is unset (2-3
# µs a call here, ~15 µs with cold caches); CPython's environ keeps the encoded mapping in
# ``_data``, updated by every ``os.environ`` write.
_ENV_DATA: dict[Any, Any] | None = getattr(os.environ, "_data", None)
_ENV_KEY: Any = getattr(os.environ, "encodekey", lambda k: k)(_DISABLE_VAR)


def _jit_disabled() -> bool:
    """Whether ``FNN_DISABLE_JIT`` is set to anything but ``""`` or ``"0"``, read now."""
    if _ENV_DATA is None:  # pragma: no cover - a Python without CPython's os.environ
        return os.environ.get(_DISABLE_VAR, "") not in ("", "0")
    value = _ENV_DATA.get(_ENV_KEY)
    return value is not None and value not in (b"", b"0", "", "0")


_counters: Any = None  # torch._dynamo.utils.counters, imported on the first compile


def jit(
    fun: Callable[..., Any] | None = None,
    *,
    donate_argnums: int | Sequence[int] = (),
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Iterable[str] = (),
    dynamic: bool | None = None,
    reuse_buffers: bool = True,
    **compile_options: Any,
) -> Any:
    """Compile ``fun`` with ``torch.compile(fullgraph=True)``; arguments and results are pytrees.

    Usable bare (``@fnn.jit``), with options (``@fnn.jit(donate_argnums=(0, 1))``) or as a call
    (``fnn.jit(f)``). ``torch.compile`` is always the outermost transform: put ``fnn.grad``,
    ``fnn.vmap`` and the ``torch.func`` transforms inside the jitted function, never around it.

    Arguments and results are fnn pytrees (dicts, lists, tuples, namedtuples, registered
    dataclasses, ``None`` as an empty subtree) whose leaves are tensors or constants.

    **What compiles again.** The first call compiles. A later call compiles again when:

    - the structure of the arguments changes (dict keys, list lengths, namedtuple or dataclass
      types and their static fields, where ``None`` is);
    - a static argument changes (compared with ``==``; static arguments must be hashable);
    - a non-tensor leaf changes: Python numbers, strings and other constants in the arguments are
      compiled in as constants. A changed Python ``int`` or ``float`` warns once per function,
      because it is usually a learning rate or step count that should be a 0-d tensor;
    - a tensor changes shape (the first change then compiles a version with dynamic sizes, unless
      ``dynamic=False``), dtype, device, number of dimensions or ``requires_grad``; or global state
      such as grad mode or the default dtype changes. These are dynamo's guards; past
      ``torch._dynamo.config.recompile_limit`` (8) versions per key the call raises.

    **What is read once.** Python values the function reads besides its arguments (globals,
    closure variables, attributes of the objects it captures, such as a model's configuration)
    are read while compiling and compiled in, as in ``jax.jit``. From the second call of a
    compiled version on, fnn checks the arguments (as above: structure, constants, and each
    tensor's shape, strides, dtype, device, ``requires_grad`` and identity) and the global state
    (grad and inference mode, autocast, default dtype, deterministic mode, thread count, compiler
    stance, active ``__torch_function__``/``__torch_dispatch__`` modes), then runs dynamo's
    compiled code directly, without dynamo's per-call lookup, which also re-checks every Python
    object the traced code read. That lookup cost 0.14 ms of a 0.29 ms step of a small MLP here.
    Changing such an outside value later therefore does not compile again: pass what changes as
    an argument (a tensor, or a static argument). Calls that differ in anything fnn checks go
    through dynamo as usual.

    Passing an argument by keyword instead of by position is another signature and compiles
    once more. Changing the *values* of tensors never compiles again: pass anything that changes
    from step to step (step count, learning rate, loss scale, PRNG key) as a tensor.
    ``num_compiles`` counts compilations; ``torch.compiler.set_stance("fail_on_recompile")``
    turns any new compilation of an already-compiled function into an error.

    **What may not be inside** (each breaks the graph, which ``fullgraph=True`` turns into an
    error; ``explain`` shows where): ``torch.Generator`` randomness (use :mod:`fnn.random` keys);
    ``.item()``, ``.tolist()`` or Python control flow on tensor values (``if loss > 0:``; use
    ``torch.where``, ``fnn.cond``); ``print`` of tensors; ``torch.utils.checkpoint`` (use
    ``fnn.remat``); ``torch.distributed`` collectives (run them outside). Other Python code
    runs while compiling, not at every call: computing with Python numbers and shapes is
    fine, but mutations of outside Python objects are replayed by dynamo after every call.

    **Donation.** The results are written into the storage of the donated arguments, so a
    training step holds one copy of its parameters and optimizer state instead of two, and
    inductor writes the new values straight into the old buffers. *After the call the donated
    input tensors hold the new values*: like ``optimizer.step()``, the call updates them in place,
    and the returned leaves written into them *are* those input tensors (``out["w"] is
    params["w"]``). The matching rule is JAX's: each result leaf, in flattened order, is written
    into the first not yet used donated input leaf with the same shape, dtype and device; each
    donated buffer is used at most once. A result leaf that is a donated input itself (returned
    unchanged) keeps that input and is never copied; a result leaf returned twice is written
    once; a result that is a view of a donated input is cloned before anything is written.
    Results with no matching donated buffer are new tensors; donated inputs that receive no
    result keep their old values. The copies run under ``torch.no_grad()``, so a result written
    into a donated input is not connected to autograd (donated tensors may require grad, e.g.
    ``nn.Parameter``). A tensor may be donated once per call: passing it in a donated argument
    and also elsewhere (or twice in donated arguments) raises ``ValueError``, because writing the
    result would change the other argument too. Donated tensors must not overlap in memory, and a
    result sharing memory with a donated input without being a view of it (``x.detach()``) sees
    what is written into that input.

    **Large results.** Under fnn's default CPU memory policy (``"keep"``, see
    :func:`fnn.set_cpu_memory_policy`) glibc reuses freed blocks and large results cost nothing
    special. Under ``"release"`` or ``"system"`` glibc maps every block of 32 MB or more freshly
    and unmaps it on free, so a function returning such tensors (per-example gradients of a
    layer with a few hundred thousand weights over a batch) would page-fault them in at every
    call. There, when the first call of a compiled version returns new CPU tensors of 32 MB or
    more that do not require grad, fnn compiles that version once more with buffers for them as
    extra donated inputs, and later calls return their results in buffers returned by earlier
    calls that nothing refers to any more (no reference, no view, no array on the storage), or
    in new ones. Holding a result keeps its buffer out of reuse; the function keeps up to two
    sets of dropped results alive between calls. The jitted per-example gradients of the suite's
    MLP (``benchmarks.run``) took 4.4 ms a call this way and 26.5 ms without it under
    ``"system"`` here (3.95 ms under ``"keep"``). ``reuse_buffers=False`` turns this off (and
    the second compilation with it); calls where autograd would record the function never
    reuse buffers.

    **Nesting.** Called while another compiled function is being traced, or inside a
    ``torch.func`` transform (``fnn.grad``, ``fnn.vmap``, ...), a jitted function runs ``fun``
    inline, without compiling and without donation (JAX ignores donation in inner jits too).

    **Debugging.** With the environment variable ``FNN_DISABLE_JIT=1`` (read at every call, so it
    can be set at any time) jitted functions run eagerly, like ``JAX_DISABLE_JIT``; donated inputs
    still receive the results, so programs behave the same. ``explain(*args)`` reports graph
    breaks.

    Args:
        fun: the function to compile.
        donate_argnums: positions of arguments whose tensors receive the results (see above).
            Also applies when such a parameter is passed by keyword.
        static_argnums: positions of static arguments: hashable Python values (flags, sizes,
            modules holding configuration) that are compiled in; each new value compiles again.
            Parameters named here are static when passed by keyword too.
        static_argnames: names of static arguments (the keyword form of ``static_argnums``).
        dynamic: passed to ``torch.compile``: ``None`` (default) compiles dynamic sizes after a
            size changes, ``True`` from the start, ``False`` never.
        reuse_buffers: write large results into the buffers of earlier results nothing
            refers to any more (see "Large results" above).
        **compile_options: passed to ``torch.compile``: ``backend`` (default ``"inductor"``),
            ``mode`` (e.g. ``"max-autotune-no-cudagraphs"``), ``options`` (inductor config, e.g.
            ``{"cpp_wrapper": True}``), ``disable``. ``fullgraph`` is always ``True``. With
            inductor and no ``mode``, fnn sets ``cpp.max_horizontal_fusion_size`` to 1 unless
            ``options`` sets it: inductor's default (16) merges the loops of up to 16 same-shape
            tensors into one loop body, so an optimizer update over many same-shape parameters
            streams from ~100 arrays at once. A 150-tensor Adam step took 18.0 ms with 16 and
            9.5 ms with 1 (torch's fused kernel: 8.4 ms); the models of ``benchmarks.run``
            did not change speed. It also turns off ``size_asserts`` (dynamo's guards already
            check the inputs' sizes and strides), and sets ``cpp.vec_isa_ok`` once inductor's
            own vector-ISA probes have passed on this machine (recorded under inductor's cache
            directory by the first process): later processes skip six child processes, about
            1 s of a warm-cache start here. And it turns inductor's channels-last layout
            optimization off for graphs that train BatchNorm, unless ``options`` sets
            ``layout_optimization``: on CPU that layout made such steps 15-25% slower here
            (ResNet-18: 182 ms with it, 146 ms without), while it speeds up convolution nets
            without BatchNorm by about 20%. It also installs a ``post_grad_custom_post_pass``
            for float32 CPU matrix products (``fnn._src.onednn_matmul``): on AMD CPUs large
            ones run on oneDNN's linear kernel instead of MKL (1-9% off the suite's
            transformer and CNN steps on an AMD EPYC; on an Intel Xeon MKL was faster, so
            ``FNN_ONEDNN_MATMUL=auto`` keeps MKL there; ``1`` or ``0`` decides for any CPU);
            on every CPU a small ``addmm`` whose uses are pointwise or reductions adds its
            bias in their kernel, and products with a dimension of 1 (a one-unit layer, an
            outer product) become inductor code (the suite's tiny MLP step: 134 to 120 µs on
            the Xeon).

    Returns:
        A callable with the signature of ``fun`` and the attributes ``num_compiles`` (graphs
        compiled during calls of this function so far, read from dynamo's process-wide counter
        around each call) and ``explain(*args, **kwargs)``.

    Example:
        >>> import torch, fnn
        >>> @fnn.jit(donate_argnums=0)
        ... def sgd(params, grads, lr):
        ...     return {name: p - lr * grads[name] for name, p in params.items()}
        >>> params = {"w": torch.ones(3)}
        >>> new = sgd(params, {"w": torch.ones(3)}, torch.tensor(0.5))
        >>> new["w"]
        tensor([0.5000, 0.5000, 0.5000])
        >>> new["w"] is params["w"]  # written into the donated input's storage
        True
        >>> new = sgd(new, {"w": torch.ones(3)}, torch.tensor(0.25))  # a new tensor value
        >>> sgd.num_compiles
        1
    """
    if fun is None:
        return functools.partial(
            jit,
            donate_argnums=donate_argnums,
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            dynamic=dynamic,
            reuse_buffers=reuse_buffers,
            **compile_options,
        )
    return Jitted(
        fun,
        donate_argnums=donate_argnums,
        static_argnums=static_argnums,
        static_argnames=static_argnames,
        dynamic=dynamic,
        reuse_buffers=reuse_buffers,
        compile_options=compile_options,
    )


_PLAIN_TENSOR_TYPES = frozenset({torch.Tensor, torch.nn.Parameter})
_NOT_RUN = object()  # _run_recycling declined: run the entry's first version


class _Entry:
    """One cache entry: the compiled function for a key and which of its tensors are donated."""

    __slots__ = ("compiled", "donated", "fast", "generated", "kept", "recycling", "tries")

    def __init__(
        self,
        generated: Callable[..., Any],
        compiled: Callable[..., Any],
        donated: list[int],
        *,
        num_tensors: int,
    ) -> None:
        self.generated = generated
        self.compiled = compiled
        self.donated = tuple(donated)
        donated_set = set(donated)
        self.kept = tuple(k for k in range(num_tensors) if k not in donated_set)
        self.fast: tuple[FastPath, ...] = ()
        self.tries = MAX_FAST_PATHS
        # None until the first call returns; then False or how large results are recycled.
        self.recycling: ResultRecycling | bool | None = None


class Jitted(Diagnostics):
    """A function compiled by :func:`jit`: call it like the original function.

    Attributes:
        num_compiles: graphs ``torch.compile`` compiled during calls of this function (first
            compiles and recompiles alike; cache hits count nothing).
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        *,
        donate_argnums: int | Sequence[int],
        static_argnums: int | Sequence[int],
        static_argnames: str | Iterable[str],
        dynamic: bool | None,
        compile_options: dict[str, Any],
        reuse_buffers: bool = True,
    ) -> None:
        if not callable(fun):
            raise TypeError(f"fnn.jit: expected a function to compile, got {fun!r}.")
        self._fun = fun
        self._name = getattr(fun, "__name__", None) or type(fun).__name__
        donate = _argnums("donate_argnums", donate_argnums)
        static = _argnums("static_argnums", static_argnums)
        names = _argnames(static_argnames)
        both = sorted(set(donate) & set(static))
        if both:
            raise ValueError(
                f"fnn.jit({self._name}): argument(s) {both} are in both donate_argnums and "
                "static_argnums; a static argument is a Python value compiled in and has no "
                "buffers to donate."
            )
        if "fullgraph" in compile_options:
            raise TypeError(
                f"fnn.jit({self._name}): fullgraph is always True (a graph break is an error; "
                "use .explain(*args) to find it); remove the fullgraph option."
            )
        try:
            inspect.signature(torch.compile).bind(fun, dynamic=dynamic, **compile_options)
        except TypeError as e:
            raise TypeError(
                f"fnn.jit({self._name}): unknown option for torch.compile: {e}. The options are "
                "backend, mode, options and disable."
            ) from None
        self._params = _positional_names(fun)
        self._static_argnums = static | {
            i for i, n in enumerate(self._params) if n is not None and n in names
        }
        self._static_argnames = names | ({self._name_of(i) for i in static} - {None})
        self._donate_argnums = donate
        self._donate_argnames = frozenset({self._name_of(i) for i in donate} - {None})
        self._check_names(names)
        self._has_static = bool(self._static_argnums or self._static_argnames)
        self._dynamic = dynamic
        self._reuse_buffers = bool(reuse_buffers)
        self._compile_options = compile_options
        self._cache: dict[Any, _Entry] = {}
        self._first_of_structure: dict[Any, tuple[Any, ...]] = {}
        self._last_key: Any = None
        self._hit: tuple[Any, Any, _Entry] | None = None
        self._warned_numbers = False
        self._num_compiles = 0
        functools.update_wrapper(self, fun)  # type: ignore[arg-type]

    # ----------------------------------------------------------------------------------------
    # Calling
    # ----------------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not plain_eager():
            return self._fun(*args, **kwargs)  # nested: inline, as JAX does
        if self._has_static:
            dyn_args, dyn_kwargs, static_key = self._split(args, kwargs)
        else:
            dyn_args, dyn_kwargs, static_key = args, kwargs, ()
        if _jit_disabled():
            self._hash_statics(static_key)
            return self._run_eagerly(args, kwargs, dyn_args, dyn_kwargs)
        leaves, treedef = optree.tree_flatten((dyn_args, dyn_kwargs), **_OPTS)
        if _PLAIN_TENSOR_TYPES.issuperset(map(type, leaves)):  # the common case, in C
            tensors, consts = leaves, ()
        else:
            is_tensor = [isinstance(x, torch.Tensor) for x in leaves]
            tensors = [x for x, t in zip(leaves, is_tensor, strict=True) if t]
            consts = tuple(
                (i, type(x), x)
                for i, (x, t) in enumerate(zip(leaves, is_tensor, strict=True))
                if not t
            )
        key = (treedef, static_key, consts)
        hit = self._hit  # the entry of the last all-tensor call: compared, not hashed again
        if not consts and hit is not None and hit[0] == treedef and hit[1] == static_key:
            entry = hit[2]
        else:
            try:
                entry = self._cache.get(key)
            except TypeError:
                self._hash_statics(static_key)
                raise self._unhashable_leaf(leaves, dyn_args, dyn_kwargs) from None
            if entry is not None and not consts:
                self._hit = (treedef, static_key, entry)
        fresh = entry is None
        if fresh:
            entry = self._new_entry(key, leaves, dyn_args, dyn_kwargs)
            if entry is None:  # torch.compiler.set_stance("eager_on_recompile")
                return self._run_eagerly(args, kwargs, dyn_args, dyn_kwargs)
        else:
            recycling = entry.recycling
            if recycling and recycling.applies(tensors):
                out = self._run_recycling(entry, recycling, tensors, leaves, dyn_args, dyn_kwargs)
                if out is not _NOT_RUN:
                    return out
        out = self._run(entry, tensors, leaves, dyn_args, dyn_kwargs, fresh)
        if entry.recycling is None:
            entry.recycling = self._recycling(key, leaves, tensors, out)
        return out

    def _run_recycling(
        self,
        entry: _Entry,
        recycling: ResultRecycling,
        tensors: list[torch.Tensor],
        leaves: list[Any],
        dyn_args: tuple[Any, ...],
        dyn_kwargs: dict[str, Any],
    ) -> Any:
        """Call the version of ``entry`` that returns its large results in recycled buffers.

        Its first call compiles it: only under the default compiler stance, and if that fails
        the entry stops recycling and the caller runs the first version (``_NOT_RUN``).
        """
        first = recycling.calls == 0
        if first and stance() != "default":
            entry.recycling = False
            return _NOT_RUN
        buffers = recycling.take()
        call = [*tensors, *buffers]
        try:
            out = self._run(recycling.entry, call, leaves, dyn_args, dyn_kwargs, first)
        except Exception:
            if not first:
                raise
            entry.recycling = False
            return _NOT_RUN
        if not recycling.keep(buffers, out):
            entry.recycling = False
        return out

    def _run(
        self,
        entry: _Entry,
        tensors: list[torch.Tensor],
        leaves: list[Any],
        dyn_args: tuple[Any, ...],
        dyn_kwargs: dict[str, Any],
        fresh: bool,
    ) -> Any:
        """Call ``entry`` on the flat tensors: on a fast path if one accepts them, else dynamo."""
        if not fresh:  # compiled by an earlier call: run it without dynamo's lookup if it may
            for fast in entry.fast:
                if fast.accepts(tensors):
                    return fast(tensors)
            if entry.tries:
                fast = self._add_fast_path(entry, tensors)
                if fast is not None:
                    return fast(tensors)
        if entry.donated:
            self._check_donation(tensors, entry, leaves, dyn_args, dyn_kwargs)
        before = _counters["stats"]["unique_graphs"]
        try:
            return entry.compiled(*tensors)
        except torch._dynamo.exc.Unsupported as e:
            if hasattr(e, "add_note"):
                e.add_note(
                    f"fnn.jit({self._name}) compiles one graph (fullgraph=True): call "
                    f"{self._name}.explain(*args) to list the graph breaks. Common causes: "
                    ".item() or Python control flow on tensor values, print(tensor), "
                    "torch.Generator randomness (use fnn.random keys), torch.utils.checkpoint."
                )
            raise
        finally:
            self._num_compiles += _counters["stats"]["unique_graphs"] - before

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        # Decorating a method: bind the instance as the first (dynamic, constant-leaf) argument.
        return self if obj is None else functools.partial(self, obj)

    @property
    def num_compiles(self) -> int:
        """Graphs compiled by calls of this function so far (dynamo's ``unique_graphs``)."""
        return self._num_compiles

    def __repr__(self) -> str:
        opts = "".join(
            f", {name}={value!r}"
            for name, value in (
                ("donate_argnums", tuple(sorted(self._donate_argnums))),
                ("static_argnums", tuple(sorted(self._static_argnums))),
                ("static_argnames", tuple(sorted(self._static_argnames))),
            )
            if value
        )
        return f"fnn.jit({self._name}{opts}, num_compiles={self._num_compiles})"

    def explain(self, *args: Any, **kwargs: Any) -> Any:
        """Trace ``fun`` on these arguments without ``fullgraph`` and report its graph breaks.

        Runs the function once through dynamo with the ``"eager"`` backend, without donation
        (the arguments are not modified) and without touching this function's compiled cache or
        dynamo's other caches (unlike ``torch._dynamo.explain``, which resets them all).

        Returns:
            ``torch._dynamo``'s ``ExplainOutput``: ``graph_count``, ``graph_break_count``,
            ``break_reasons`` (each with ``.reason`` and ``.user_stack``), ``graphs``; ``print``
            it for a summary.

        Example:
            >>> import torch, fnn
            >>> @fnn.jit
            ... def f(x):
            ...     if x.sum() > 0:  # Python control flow on a tensor value
            ...         return x + 1
            ...     return x - 1
            >>> f.explain(torch.ones(2)).graph_break_count
            1
        """
        from torch._dynamo.backends.debugging import ExplainWithBackend

        dyn_args, dyn_kwargs, static_key = self._split(args, kwargs)
        self._hash_statics(static_key)
        leaves, treedef = optree.tree_flatten((dyn_args, dyn_kwargs), **_OPTS)
        consts = tuple((i, type(x), x) for i, x in enumerate(leaves) if not _is_tensor(x))
        generated, _ = self._generate((treedef, static_key, consts), leaves, donate=False)
        backend = ExplainWithBackend("eager")
        tensors = [x for x in leaves if _is_tensor(x)]
        torch.compile(generated, backend=backend, dynamic=self._dynamic)(*tensors)
        return backend.output()

    # ----------------------------------------------------------------------------------------
    # Arguments
    # ----------------------------------------------------------------------------------------

    def _split(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...]]:
        """Set the static arguments aside: (dynamic args, dynamic kwargs, static key)."""
        static_pos = tuple(
            (i, type(args[i]), args[i]) for i in sorted(self._static_argnums) if i < len(args)
        )
        if static_pos:
            dyn_args = tuple(a for i, a in enumerate(args) if i not in self._static_argnums)
        else:
            dyn_args = args
        static_kw = tuple(
            (n, type(kwargs[n]), kwargs[n]) for n in sorted(self._static_argnames) if n in kwargs
        )
        if static_kw:
            dyn_kwargs = {n: v for n, v in kwargs.items() if n not in self._static_argnames}
        else:
            dyn_kwargs = kwargs
        return dyn_args, dyn_kwargs, (static_pos, static_kw) if static_pos or static_kw else ()

    # ----------------------------------------------------------------------------------------
    # Compiling
    # ----------------------------------------------------------------------------------------

    def _new_entry(
        self, key: Any, leaves: list[Any], dyn_args: tuple[Any, ...], dyn_kwargs: dict[str, Any]
    ) -> _Entry | None:
        global _counters
        if _counters is None:
            from torch._dynamo.utils import counters

            _counters = counters
        change = self._what_changed(key, leaves, dyn_args, dyn_kwargs)
        if self._cache:
            now = stance()
            if now == "fail_on_recompile" or torch._dynamo.config.error_on_recompile:
                raise RuntimeError(
                    f"fnn.jit({self._name}) would compile again while torch.compile's stance is "
                    f"'fail_on_recompile': {change}."
                )
            if now == "eager_on_recompile":
                return None
        generated, donated = self._generate(key, leaves, donate=True)
        compiled = torch.compile(
            generated,
            fullgraph=True,
            dynamic=self._dynamic,
            **_with_defaults(self._compile_options, self._dynamic),
        )
        entry = _Entry(generated, compiled, donated, num_tensors=len(leaves) - len(key[2]))
        self._cache[key] = entry
        self._last_key = key
        return entry

    def _recycling(
        self, key: Any, leaves: list[Any], tensors: list[torch.Tensor], out: Any
    ) -> ResultRecycling | bool:
        """After an entry's first call: a version writing its large results into buffers."""
        picked = recyclable(out, tensors) if self._reuse_buffers else []
        if not picked:
            return False
        try:  # the call itself succeeded: a problem here only means no recycling
            template_args, template_kwargs, donated = self._layout(key, leaves)
            extra = list(range(len(tensors), len(tensors) + len(picked)))
            template = (template_args, template_kwargs, donated + extra)
            generated, donated = generate(self._fun, self._name, template, key[1], donate=True)
            compiled = torch.compile(
                generated,
                fullgraph=True,
                dynamic=self._dynamic,
                **_with_defaults(self._compile_options, self._dynamic),
            )
        except Exception:
            return False
        entry = _Entry(generated, compiled, donated, num_tensors=len(tensors) + len(picked))
        return ResultRecycling(entry, picked)

    @staticmethod
    def _add_fast_path(entry: _Entry, tensors: list[torch.Tensor]) -> FastPath | None:
        """A fast path for ``entry`` on these tensors, if dynamo's guards accept them."""
        entry.tries -= 1
        fast = build(entry.generated, tensors)
        if fast is not None:
            entry.fast = (*(f for f in entry.fast if f.alive()), fast)
        return fast

    def _layout(self, key: Any, leaves: list[Any]) -> tuple[Any, dict[str, Any], list[int]]:
        """The argument trees with tensors replaced by slots, and the donated slots."""
        return layout(
            key[0],
            leaves,
            static_argnums=self._static_argnums,
            donate_argnums=self._donate_argnums,
            donate_argnames=self._donate_argnames,
        )

    def _generate(
        self, key: Any, leaves: list[Any], *, donate: bool
    ) -> tuple[Callable[..., Any], list[int]]:
        """Write and ``exec`` the flat function ``f(*tensors)`` for ``key``; which are donated."""
        return generate(self._fun, self._name, self._layout(key, leaves), key[1], donate=donate)

    def _run_eagerly(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        dyn_args: tuple[Any, ...],
        dyn_kwargs: dict[str, Any],
    ) -> Any:
        """``FNN_DISABLE_JIT=1``: call ``fun`` directly, then write into the donated inputs."""
        if not (self._donate_argnums or self._donate_argnames):
            return self._fun(*args, **kwargs)
        leaves, treedef = optree.tree_flatten((dyn_args, dyn_kwargs), **_OPTS)
        _, _, donated = self._layout((treedef, (), ()), leaves)
        tensors = [x for x in leaves if _is_tensor(x)]
        entry = _Entry(self._fun, self._fun, donated, num_tensors=len(tensors))
        self._check_donation(tensors, entry, leaves, dyn_args, dyn_kwargs)
        return run(self._fun, args, kwargs, tuple(tensors[k] for k in donated))
