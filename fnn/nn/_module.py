"""The module contract: frozen configuration dataclasses with pure ``init`` / ``apply``.

A module is a dataclass holding configuration only (ints, floats, strings, initializers and
other modules) -- never tensors. Its computation is one method, ``forward(self, scope, *inputs)``.
The :class:`Scope` passed in is the explicit window onto this module's slice of the parameters,
state, PRNG key and train flag:

* ``scope.param(name, shape, init)`` declares a parameter. During ``init`` it is created from
  ``init(key, shape, dtype)``; during ``apply`` it is read from ``params`` and its shape checked.
* ``scope.get_state(name, init)`` / ``scope.put_state(name, value)`` read and record
  non-differentiated state (BatchNorm's running statistics). ``apply`` never mutates the state
  it was given: it returns a new state dict.
* ``scope.key`` is this module's PRNG key (``None`` when ``apply`` got no key), derived from the
  caller's key and the module's dotted path, so two dropout layers never share a mask.
* ``scope.train`` is the train flag. ``scope.<child>(x)`` runs a sub-module held in the field
  ``<child>`` on its own slice of everything above.

``init`` runs ``forward`` once on meta tensors (shapes only, no arithmetic), so input sizes are
inferred from the example and a ResNet-50-sized init costs only the random draws of its weights.
Nothing is global: the scope is an argument, and ``init``/``apply`` are pure functions of their
inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fnn._src.prng import check_key, fold_in

__all__ = ["Module", "Scope"]

_EMPTY: dict = {}
_META = torch.device("meta")


def meta_like(x: torch.Tensor) -> torch.Tensor:
    """An empty meta tensor of ``x``'s shape and dtype (4 us; ``torch.empty_like`` takes 45).

    Layers whose output has the input's shape return this on meta inputs (``init``'s shape
    pass) instead of running torch's meta kernels, many of which are slow Python references.
    """
    return torch.empty(x.shape, dtype=x.dtype, device=_META)


def _path_hash(path: str) -> int:
    """FNV-1a of ``path``, 31 bits: the data folded into a key for the module at ``path``.

    Pure Python (no ``zlib``) so ``torch.compile`` folds it to a constant while tracing.
    """
    h = 0x811C9DC5
    for ch in path:
        h = ((h ^ ord(ch)) * 0x01000193) & 0xFFFFFFFF
    return h & 0x7FFFFFFF


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _where(module: Any, path: str) -> str:
    name = type(module).__name__
    return f"fnn.nn.{name} at '{path}'" if path else f"fnn.nn.{name} (the root module)"


def _shape(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, tuple | list):
        return type(x)(_shape(v) for v in x)
    if isinstance(x, Mapping):
        return {k: _shape(v) for k, v in x.items()}
    return x


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty(x.shape, dtype=x.dtype, device=_META)
    if isinstance(x, tuple | list):
        return type(x)(_to_meta(v) for v in x)
    if isinstance(x, Mapping):
        return {k: _to_meta(v) for k, v in x.items()}
    return x


def _first_tensor(xs: Any) -> torch.Tensor | None:
    if isinstance(xs, torch.Tensor):
        return xs
    if isinstance(xs, tuple | list):
        vals = xs
    elif isinstance(xs, Mapping):
        vals = list(xs.values())
    else:
        return None
    found = [t for t in (_first_tensor(v) for v in vals) if t is not None]
    floats = [t for t in found if t.dtype.is_floating_point]
    return (floats or found or [None])[0]


def _prune(tree: dict) -> dict:
    """``tree`` without empty sub-dicts (modules without parameters leave no entry)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            v = _prune(v)
            if not v:
                continue
        out[k] = v
    return out


class _Run:
    """What one ``init`` or ``apply`` call shares between its scopes (never global)."""

    __slots__ = ("device", "dtype", "init_key", "key", "mode", "record", "train", "updates")

    def __init__(self, mode: str, key, init_key, train: bool, dtype=None, device=None, record=None):
        self.mode = mode  # "init", "shapes" or "apply"
        self.key = key  # the forward's key (dropout): None, a key, or a meta key at init
        self.init_key = init_key  # the key parameters are drawn from (mode "init")
        self.train = train
        self.dtype = dtype
        self.device = device
        self.updates: dict[tuple[str, ...], Any] = {}
        self.record = record


_SCOPE_API = frozenset(
    {"param", "get_state", "put_state", "child", "key", "train", "path", "module", "params"}
)


class Scope:
    """A module's explicit view of its parameters, state, key and train flag; see module doc.

    ``forward`` receives one as its first argument. Attribute access to a sub-module field
    (``scope.conv1``) gives a callable that runs that sub-module on its own slice; fields that
    hold a tuple/list or a ``str``-keyed dict of modules give a tuple or dict of such callables
    (named ``field.0``, ``field.key``, as ``torch.nn.ModuleList``/``ModuleDict`` name them).
    """

    __slots__ = (
        "_key",
        "_names_",
        "_parent",
        "_path",
        "_rel",
        "_run",
        "_state",
        "module",
        "params",
    )

    def __init__(self, run: _Run, module: Module, parent: Scope | None, rel: tuple, params, state):
        self._run = run
        self.module = module
        self._parent = parent
        self._rel = rel  # this scope's names relative to its parent: ("conv1",), ("layers", "0")
        self.params = params
        self._state = state
        self._key = None
        self._path = None  # computed on first use: most calls never need it
        self._names_ = None

    @property
    def path(self) -> str:
        """This module's dotted path from the root (``""`` for the root)."""
        path = self._path
        if path is None:
            rel = ".".join(self._rel)
            parent = self._parent
            path = rel if parent is None or not parent.path else f"{parent.path}.{rel}"
            self._path = path
        return path

    @property
    def _names(self) -> tuple[str, ...]:
        names = self._names_
        if names is None:
            parent = self._parent
            names = self._rel if parent is None else (*parent._names, *self._rel)
            self._names_ = names
        return names

    def _enter(self, rel: tuple[str, ...], module: Module) -> Scope:
        """The scope of the child ``module`` at ``rel`` below this one."""
        params, state = self.params, self._state
        if self._run.mode == "apply":
            for n in rel:
                params = params.get(n, _EMPTY)
                if state is not None:
                    state = state.get(n, _EMPTY)
        else:
            for n in rel:
                params = params.setdefault(n, {})
                state = state.setdefault(n, {})
        return Scope(self._run, module, self, rel, params, state)

    # -- flags and keys ---------------------------------------------------------------------
    @property
    def train(self) -> bool:
        """Whether ``apply`` was called with ``train=True``."""
        return self._run.train

    @property
    def key(self) -> torch.Tensor | None:
        """This module's PRNG key: the caller's key folded with this module's path, or ``None``."""
        if self._key is None and self._run.key is not None:
            root = self._run.key
            self._key = root if root.device == _META else fold_in(root, _path_hash(self.path))
        return self._key

    # -- parameters -------------------------------------------------------------------------
    def param(
        self,
        name: str,
        shape: tuple[int, ...],
        init: Callable[..., torch.Tensor],
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Declare (at ``init``) or read (at ``apply``) the parameter ``name`` of ``shape``.

        ``init`` is called as ``init(key, shape, dtype)`` with a key unique to this parameter's
        dotted name. At ``apply``, a missing parameter or one of another shape raises an error
        naming the module path and both shapes.
        """
        run = self._run
        if run.mode == "apply":
            params = self.params
            try:
                value = params.get(name)
            except AttributeError:
                raise TypeError(
                    f"{_where(self.module, self.path)}: expected a dict of parameters, got "
                    f"{type(params).__name__}. Pass the `params` returned by init."
                ) from None
            if value is not None and value.shape == shape:  # the fast path: one comparison
                return value
            shape = tuple(shape)
            if value is None:
                have = sorted(k for k, v in params.items() if isinstance(v, torch.Tensor))
                raise KeyError(
                    f"{_where(self.module, self.path)}: missing parameter "
                    f"'{_join(self.path, name)}' of shape {shape}; this module's params hold "
                    f"{have or 'nothing'}. Were the params made by init of this model?"
                )
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"{_where(self.module, self.path)}: parameter '{_join(self.path, name)}' "
                    f"has shape {tuple(value.shape)}, expected {shape} for the given inputs."
                )
            return value
        shape = tuple(int(d) for d in shape)
        dtype = run.dtype if dtype is None else dtype
        existing = self.params.get(name)
        if existing is None:
            if run.mode == "init":
                key = fold_in(run.init_key, _path_hash(_join(self.path, name)))
                value = init(key, shape, dtype)
                if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                    got = tuple(value.shape) if isinstance(value, torch.Tensor) else value
                    raise ValueError(
                        f"{_where(self.module, self.path)}: the initializer of '{name}' returned "
                        f"{got}, expected a tensor of shape {shape}."
                    )
                if run.device is not None and value.device != run.device:
                    value = value.to(run.device)
            else:
                value = torch.empty(shape, dtype=dtype, device=_META)
            self.params[name] = value
        elif tuple(existing.shape) != shape:
            raise ValueError(
                f"{_where(self.module, self.path)}: parameter '{_join(self.path, name)}' was "
                f"declared with shape {tuple(existing.shape)} and again with {shape}; a shared "
                "module must see inputs of the same feature sizes each call."
            )
        else:
            value = existing
        return torch.empty(shape, dtype=value.dtype, device=_META)

    # -- state ------------------------------------------------------------------------------
    def get_state(self, name: str, init: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The current value of the state entry ``name``.

        At ``init`` the entry is created by ``init()``, which must build a real tensor (it is
        moved to the inputs' device); the inputs are meta tensors then, so take sizes and dtypes
        from them but not their device.
        """
        run = self._run
        if run.mode == "apply":
            full = (*self._names, name)
            if full in run.updates:
                return run.updates[full]
            state = self._state
            value = None if state is None else state.get(name)
            if value is None:
                if state is None:
                    raise ValueError(
                        f"{_where(self.module, self.path)} keeps state ('{name}'); pass "
                        "state= to apply (the state returned by init): "
                        "`y, state = model.apply(params, x, state=state, train=...)`."
                    )
                raise KeyError(
                    f"{_where(self.module, self.path)}: missing state entry "
                    f"'{_join(self.path, name)}'; was the state made by init of this model?"
                )
            return value
        existing = self._state.get(name)
        if existing is None:
            existing = init()
            if not isinstance(existing, torch.Tensor) or existing.device == _META:
                raise ValueError(
                    f"{_where(self.module, self.path)}: the init of state '{name}' must return "
                    "a real tensor (at init, inputs are meta tensors: do not pass "
                    f"device=x.device there), got {existing!r}."
                )
            if run.mode == "shapes":
                existing = torch.empty(existing.shape, dtype=existing.dtype, device=_META)
            elif run.device is not None:
                existing = existing.to(run.device)
            self._state[name] = existing
        return torch.empty(existing.shape, dtype=existing.dtype, device=_META)

    def put_state(self, name: str, value: torch.Tensor) -> None:
        """Record a new value for the state entry ``name`` (ignored during ``init``)."""
        if self._run.mode == "apply":
            self._run.updates[(*self._names, name)] = value

    # -- children ---------------------------------------------------------------------------
    def child(self, name: str, module: Module | None = None) -> Callable[..., Any]:
        """A callable running ``module`` (default: the field ``name``) as the child ``name``."""
        if module is None:
            module = getattr(self.module, name)
        if not isinstance(module, Module):
            raise TypeError(
                f"{_where(self.module, self.path)}: child '{name}' is a "
                f"{type(module).__name__}, not an fnn.nn.Module."
            )
        if "." in name:
            raise ValueError(f"{_where(self.module, self.path)}: child names cannot hold '.'.")
        return _Bound(self, (name,), module)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            value = getattr(self.module, name)
        except AttributeError:
            raise AttributeError(
                f"{_where(self.module, self.path)} has no sub-module '{name}'."
            ) from None
        if isinstance(value, Module):
            return _Bound(self, (name,), value)
        if isinstance(value, tuple | list) and value and all(isinstance(v, Module) for v in value):
            return tuple(_Bound(self, (name, str(i)), v) for i, v in enumerate(value))
        if (
            isinstance(value, Mapping)
            and value
            and all(isinstance(v, Module) for v in value.values())
        ):
            return {k: _Bound(self, (name, str(k)), v) for k, v in value.items()}
        raise AttributeError(
            f"{_where(self.module, self.path)}: field '{name}' is a {type(value).__name__}, not a "
            "sub-module; read configuration as scope.module." + name
        )


class _Bound:
    """A sub-module bound to its parent's scope: calling it runs the child's ``forward``."""

    __slots__ = ("_parent", "_rel", "module")

    def __init__(self, parent: Scope, rel: tuple[str, ...], module: Module):
        self._parent = parent
        self._rel = rel
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self.module, self._parent._enter(self._rel, self.module), args, kwargs)


def _call(module: Module, scope: Scope, args: tuple, kwargs: dict) -> Any:
    record = scope._run.record
    if record is not None:  # summary: rows in call order (parents before children)
        row = len(record)
        record.append(None)
    try:
        out = module.forward(scope, *args, **kwargs)
    except Exception as e:
        if not getattr(e, "_fnn_noted", False) and not str(e).startswith("fnn."):
            e.add_note(f"(raised in {_where(module, scope.path)})")
            try:
                e._fnn_noted = True
            except AttributeError:
                pass
        raise
    if record is not None:
        record[row] = (scope.path, module, out, scope.params, scope._state)
    return out


class _ModuleMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        for name, value in vars(obj).items():
            if name in _SCOPE_API and _is_child(value):
                raise TypeError(
                    f"fnn.nn.{cls.__name__}: a sub-module field cannot be named '{name}' "
                    f"(scope.{name} is part of the Scope API); rename it."
                )
        object.__setattr__(obj, "_fnn_frozen", True)
        return obj


def _is_child(value: Any) -> bool:
    if isinstance(value, Module):
        return True
    if isinstance(value, tuple | list):
        return any(isinstance(v, Module) for v in value)
    if isinstance(value, Mapping):
        return any(isinstance(v, Module) for v in value.values())
    return False


class Module(metaclass=_ModuleMeta):
    """Base class of fnn modules: a frozen dataclass of configuration with pure init/apply.

    Subclasses are made dataclasses automatically (do not decorate them): annotated class
    attributes are the configuration fields. Sub-modules are fields, or are assigned in
    ``__post_init__`` (or a custom ``__init__``) from the fields; after construction the
    instance is frozen. Subclasses implement ``forward(self, scope, *inputs, **kwargs)``.

    Parameter names are the dotted attribute paths, so a module whose fields are named as the
    ``torch.nn`` twin's attributes has exactly the twin's ``state_dict()`` keys.

    Example (a residual block, an MLP and a CNN):
        >>> import fnn, torch
        >>> from fnn import nn
        >>> class Residual(nn.Module):
        ...     channels: int
        ...     def __post_init__(self):
        ...         self.conv1 = nn.Conv2d(self.channels, 3, padding=1, bias=False)
        ...         self.bn1 = nn.BatchNorm2d()
        ...         self.conv2 = nn.Conv2d(self.channels, 3, padding=1, bias=False)
        ...         self.bn2 = nn.BatchNorm2d()
        ...     def forward(self, scope, x):
        ...         h = nn.relu(scope.bn1(scope.conv1(x)))
        ...         return nn.relu(x + scope.bn2(scope.conv2(h)))
        >>> class MLP(nn.Module):
        ...     features: tuple[int, ...]
        ...     def __post_init__(self):
        ...         self.layers = [nn.Linear(f) for f in self.features]
        ...     def forward(self, scope, x):
        ...         *hidden, last = scope.layers
        ...         for layer in hidden:
        ...             x = nn.relu(layer(x))
        ...         return last(x)
        >>> cnn = nn.Sequential([nn.Conv2d(8, 3), Residual(8), nn.AdaptiveAvgPool2d(1),
        ...                      nn.Flatten(), MLP((16, 10))])
        >>> x = torch.randn(4, 3, 16, 16)
        >>> params, state = cnn.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)["4"]["layers"]
        {'0': {'weight': (16, 8), 'bias': (16,)}, '1': {'weight': (10, 16), 'bias': (10,)}}
        >>> sorted(state["1"]["bn1"])
        ['num_batches_tracked', 'running_mean', 'running_var']
        >>> logits, state = cnn.apply(params, x, state=state, train=True)
        >>> logits.shape
        torch.Size([4, 10])
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(cls, eq=True, repr=True, unsafe_hash=True)

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_fnn_frozen", False):
            raise dataclasses.FrozenInstanceError(
                f"fnn.nn.{type(self).__name__} is frozen (a module holds configuration only); "
                f"cannot assign '{name}'. Make a new one: dataclasses.replace(module, {name}=...)."
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"fnn.nn.{type(self).__name__} is frozen.")

    def forward(self, scope: Scope, *inputs: Any, **kwargs: Any) -> Any:
        """The computation; see :class:`Scope`. Subclasses override this."""
        raise NotImplementedError(f"fnn.nn.{type(self).__name__} must define forward(scope, ...).")

    # -- the public, pure API -------------------------------------------------------------------
    def init(
        self,
        key: torch.Tensor,
        *inputs: Any,
        train: bool = False,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict]:
        """Create ``(params, state)`` for inputs shaped like ``inputs``.

        Runs ``forward`` once on meta tensors (shapes only; no arithmetic on the inputs), drawing
        each parameter with a key derived from ``key`` and the parameter's dotted name.

        Args:
            key: a PRNG key (``fnn.random.key(seed)``).
            *inputs: example inputs (only their shapes and dtypes are used).
            train: the train flag ``forward`` sees during init.
            dtype: the parameters' floating dtype; default: that of the first floating input,
                else ``torch.get_default_dtype()``.
            **kwargs: passed to ``forward``.

        Returns:
            ``(params, state)``: nested dicts of tensors whose dotted names are the
            ``state_dict()`` keys of the matching ``torch.nn`` model; ``state`` is ``{}`` when
            no layer keeps any.
        """
        check_key(key, "fnn.nn.Module.init")
        return self._init("init", key, inputs, train, dtype, kwargs)

    def init_shapes(
        self, *inputs: Any, train: bool = False, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> tuple[dict, dict]:
        """Like :meth:`init` but returns meta tensors (shapes and dtypes only; nothing drawn).

        Example:
            >>> import fnn, torch
            >>> params, state = fnn.nn.Linear(3).init_shapes(torch.zeros(2, 5))
            >>> params["weight"]
            tensor(..., device='meta', size=(3, 5))
        """
        return self._init("shapes", None, inputs, train, dtype, kwargs)

    def _init(self, mode, key, inputs, train, dtype, kwargs, record=None):
        first = _first_tensor(inputs)
        if dtype is None:
            if first is not None and first.dtype.is_floating_point:
                dtype = first.dtype
            else:
                dtype = torch.get_default_dtype()
        device = None if first is None or first.device == _META else first.device
        meta_key = torch.empty(2, dtype=torch.uint32, device=_META)
        run = _Run(mode, meta_key, key, bool(train), dtype, device, record)
        params: dict = {}
        state: dict = {}
        scope = Scope(run, self, None, (), params, state)
        out = _call(self, scope, _to_meta(inputs), _to_meta(kwargs))
        if record is not None:
            return _prune(params), _prune(state), out
        return _prune(params), _prune(state)

    def apply(
        self,
        params: Mapping[str, Any],
        *inputs: Any,
        state: Mapping[str, Any] | None = None,
        key: torch.Tensor | None = None,
        train: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run the module: ``y`` when ``state`` is None, else ``(y, new_state)``.

        Pure: ``params`` and ``state`` are never modified; ``new_state`` is a new dict sharing
        the entries that did not change.

        Args:
            params: the parameters from :meth:`init` (or :func:`fnn.nn.from_state_dict`).
            *inputs: the inputs; shapes as the layer documents (batched, like ``torch.nn``).
            state: the state from :meth:`init`, required by layers that keep state
                (BatchNorm). When given, the call returns ``(y, new_state)``.
            key: a PRNG key for layers that draw random numbers (dropout) in train mode.
            train: train mode (dropout active, BatchNorm uses and updates batch statistics).
            **kwargs: passed to ``forward``.
        """
        if not isinstance(params, Mapping):
            raise TypeError(
                f"fnn.nn.{type(self).__name__}.apply: expected params to be the dict returned by "
                f"init, got {type(params).__name__}."
            )
        if key is not None:
            check_key(key, "fnn.nn.Module.apply")
        run = _Run("apply", key, None, bool(train))
        scope = Scope(run, self, None, (), params, state)
        out = _call(self, scope, inputs, kwargs)
        if state is None:
            return out
        return out, _with_updates(state, run.updates)


def _with_updates(state: Mapping, updates: dict) -> dict:
    """A copy of the nested dict ``state`` with ``updates`` (keyed by name tuples) written in."""
    if not updates:
        return dict(state)
    out = _copy_dicts(state)
    for names, value in updates.items():
        node = out
        for n in names[:-1]:
            node = node[n]
        node[names[-1]] = value
    return out


def _copy_dicts(tree: Mapping) -> dict:
    return {k: _copy_dicts(v) if isinstance(v, Mapping) else v for k, v in tree.items()}
