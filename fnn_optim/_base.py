"""The contract of fnn_optim: ``GradientTransformation``, ``chain``, applying updates, hyperparams.

A gradient transformation is a pair of pure functions (Optax's contract)::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params=None, **extra)
    params = fnn_optim.apply_updates(params, updates)

``extra`` may carry e.g. ``value=`` (the loss); :func:`chain` passes it to every member and
members ignore the extras they do not use.

**States.** Every state is a ``NamedTuple`` (a pytree for both optree and
``torch.utils._pytree``) whose leaves are *all* tensors: the step count is an int64 0-d tensor
``count`` and every hyperparameter is a 0-d tensor in a field ``hyperparams: dict[str, Tensor]``,
so a compiled step (``fnn.jit``) never compiles again when a schedule moves or a user changes
a learning rate. Hyperparameter tensors are float32 on the parameters' device, float64 when the
first floating parameter is float64.

A state whose ``hyperparams`` entries are driven by a schedule marks them in a field
``scheduled: dict[str, None]`` (the names as keys, ``None`` values: no leaves, only structure), so
:func:`set_hyperparams` can refuse to set them. Transforms written elsewhere follow the same two
conventions and :func:`get_hyperparams` / :func:`set_hyperparams` find them in any state tree.

Private helpers shared by the transforms of this package: :func:`_hyper`, :func:`_hyperparams`,
:func:`_zero_count`, :func:`_flatten`, :func:`_unflatten`, :func:`_resolve`,
:func:`_is_schedule`, :func:`_scheduled`, :func:`_check_tree`, :func:`_n`.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fnn import tree as _tree
from fnn._src.tracing import plain_eager
from fnn_optim import _foreach as _fe
from fnn_optim._hoist import hoist

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "Updates",
    "apply_updates",
    "apply_updates_",
    "chain",
    "get_hyperparams",
    "identity",
    "named_chain",
    "set_hyperparams",
]

Params = Any
"""A pytree of tensors: the parameters."""
Updates = Any
"""A pytree of tensors with the structure of the parameters: gradients or updates."""
OptState = Any
"""A pytree (nested ``NamedTuple`` s, tuples, dicts) whose leaves are all tensors."""
Schedule = Callable[[Tensor], Tensor]
"""``schedule(count) -> value``: a pure function of the int64 0-d step tensor returning a 0-d
tensor, written with tensor ops only (``torch.where`` instead of Python ``if`` on tensors) so that
it compiles without graph breaks."""
ScalarOrSchedule = float | Tensor | Schedule
"""A hyperparameter given as a number, a 0-d tensor or a :data:`Schedule`."""


class GradientTransformation(NamedTuple):
    """A pair of pure functions ``init(params) -> state`` and
    ``update(updates, state, params=None, **extra) -> (updates, state)``.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.sgd(0.1)
        >>> params = {"w": torch.ones(2)}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": torch.ones(2)}, state, params)
        >>> fnn_optim.apply_updates(params, updates)
        {'w': tensor([0.9000, 0.9000])}
    """

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


class EmptyState(NamedTuple):
    """The state of a stateless transformation (no leaves)."""


# --------------------------------------------------------------------------------------------
# Private helpers shared by the transforms
# --------------------------------------------------------------------------------------------


def _flatten(tree: Any) -> tuple[list[Any], Any]:
    """``fnn.tree.flatten``: the leaves (a list) and the structure of ``tree``."""
    return _tree.flatten(tree)


def _unflatten(treedef: Any, leaves: Any) -> Any:
    """Rebuild a tree from ``leaves`` (a list, or the tuple a ``torch._foreach_*`` op returns).

    Always converts to a list first: under ``fnn.jit`` foreach ops return tuples, and the trees
    built here must not depend on that (type-stable compiled inputs).
    """
    return _tree.unflatten(treedef, list(leaves))


def _first_float(like: Any) -> Tensor | None:
    leaves = [like] if isinstance(like, Tensor) else _tree.leaves(like)
    first_tensor = None
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            if leaf.is_floating_point():
                return leaf
            if first_tensor is None:
                first_tensor = leaf
    return first_tensor


def _hyper_dtype_device(like: Any) -> tuple[torch.dtype, torch.device]:
    """float64 if the first floating leaf of ``like`` is float64, else float32; its device."""
    leaf = _first_float(like)
    if leaf is None:
        return torch.float32, torch.device("cpu")
    dtype = torch.float64 if leaf.dtype == torch.float64 else torch.float32
    return dtype, leaf.device


def _hyper(value: float | Tensor, like: Any) -> Tensor:
    """A hyperparameter as a 0-d tensor: float32 on the device of ``like`` (a tensor, a list of
    leaves or any pytree), float64 when the first floating leaf of ``like`` is float64.

    Raises:
        ValueError: if ``value`` is a tensor with more than one element.
    """
    dtype, device = _hyper_dtype_device(like)
    return _as_scalar(value, dtype, device, "a hyperparameter")


def _as_scalar(value: Any, dtype: torch.dtype, device: torch.device, what: str) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{what} must be a number or a tensor with one element; got a tensor of shape "
                f"{tuple(value.shape)}."
            )
        return value.to(dtype=dtype, device=device).reshape(())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number or a 0-d tensor; got {value!r}.")
    return torch.tensor(float(value), dtype=dtype, device=device)


def _hyperparams(like: Any, **values: float | Tensor) -> dict[str, Tensor]:
    """``{name: _hyper(value, like)}`` for every keyword; the ``hyperparams`` field of a state."""
    dtype, device = _hyper_dtype_device(like)
    return {k: _as_scalar(v, dtype, device, f"hyperparameter {k!r}") for k, v in values.items()}


def _zero_count(like: Any) -> Tensor:
    """An int64 0-d zero on the device of the parameters ``like``: the ``count`` of a state."""
    _, device = _hyper_dtype_device(like)
    return torch.zeros((), dtype=torch.int64, device=device)


def _is_schedule(value: Any) -> bool:
    """True if ``value`` is a schedule (a callable), not a number or a tensor."""
    return callable(value) and not isinstance(value, Tensor)


def _resolve(hp: Any, count: Tensor, current: Tensor | None = None) -> Tensor:
    """The current value of a hyperparameter that may be a schedule.

    Args:
        hp: the value the transform was built with: a number, a tensor or a schedule.
        count: the int64 0-d step tensor the schedule is evaluated at.
        current: the 0-d tensor stored in the state's ``hyperparams``.

    Returns:
        ``hp(count)`` as a 0-d tensor with the dtype and device of ``current`` if ``hp`` is a
        schedule; otherwise ``current`` (the stored value, which :func:`set_hyperparams` may have
        changed), or ``hp`` itself when no ``current`` is given.
    """
    if _is_schedule(hp):
        value = hp(count)
        if not isinstance(value, Tensor):
            value = torch.as_tensor(value, device=count.device)
        if current is not None:
            value = value.to(dtype=current.dtype, device=current.device)
        return value.reshape(())
    return current if current is not None else hp


def _scheduled(*names: str) -> dict[str, None]:
    """The ``scheduled`` field of a state: the names of schedule-driven hyperparams (no leaves)."""
    return dict.fromkeys(names)


# Only in plain eager mode may an update read a hyperparameter with ``.item()`` to pick a
# cheaper eager kernel (a Python scalar); traced or batched code keeps everything as tensors.
_plain_eager = plain_eager


def _n(value: Tensor, n: int) -> list[Tensor]:
    """``[value] * n``: a 0-d tensor as the list of scalars of a ``torch._foreach_*`` op."""
    return [hoist(value)] * n


def _lerp(starts: list[Tensor], ends: list[Tensor], weight: Tensor | list[Tensor]) -> list[Tensor]:
    """``starts + weight * (ends - starts)`` leaf by leaf, with torch.lerp's rounding (a new list).

    ``weight`` is a 0-d tensor (or one per leaf). Eagerly this is one ``torch._foreach_lerp``.
    Under ``torch.compile`` inductor does not lower ``_foreach_lerp`` with tensor weights: it
    calls the eager kernel into fresh buffers, which blocks fusing the whole optimizer step into
    one pass. So the compiled path writes torch.lerp's formula out, which inductor fuses:
    ``s + w * (e - s)`` for ``|w| < 0.5``, else ``e - (e - s) * (1 - w)``.
    """
    weights = weight if isinstance(weight, list) else [weight] * len(starts)
    if not torch.compiler.is_compiling():
        return list(_fe.lerp(starts, ends, weights))
    if not isinstance(weight, list):  # one weight for all leaves: 1 - w and |w| < 0.5 once
        w = hoist(weight)
        weights, complements = [w] * len(starts), [hoist(1 - w)] * len(starts)
        smalls = [w.abs() < 0.5] * len(starts)
    else:
        complements = [1 - w for w in weights]
        smalls = [w.abs() < 0.5 for w in weights]
    diff = _fe.sub(ends, starts)
    low = _fe.add(starts, _fe.mul(diff, weights))
    high = _fe.sub(ends, _fe.mul(diff, complements))
    return [torch.where(s, lo, hi) for s, lo, hi in zip(smalls, low, high, strict=True)]


def _is_spec(x: Any) -> bool:
    # optree's PyTreeSpec, or the polyfill class of the same name that fnn.tree makes under dynamo.
    return type(x).__name__ == "PyTreeSpec"


def _check_tree(
    where: str,
    given: Any,
    expected: Any,
    names: tuple[str, str] = ("the updates", "the optimizer state"),
) -> None:
    """Raise if two trees (or ``PyTreeSpec`` s) have different structures.

    The message names ``where`` (e.g. ``"fnn_optim.scale_by_adam.update"``) and the first
    differing dotted path. Cheap when the structures agree (one comparison).

    Raises:
        ValueError: if the structures differ.
    """
    a = given if _is_spec(given) else _tree.structure(given)
    b = expected if _is_spec(expected) else _tree.structure(expected)
    if a == b:
        return
    detail = _tree.structure_mismatch(a, b, names=names)
    raise ValueError(
        f"{where}: {names[0]} must have the structure of {names[1]}; {detail}. The optimizer "
        "state has the structure of the parameters passed to `opt.init(params)`: pass updates "
        "for exactly those parameters, or call `opt.init` again after changing them."
    )


# --------------------------------------------------------------------------------------------
# identity, chain, named_chain
# --------------------------------------------------------------------------------------------


def identity() -> GradientTransformation:
    """The transformation that returns the updates unchanged (state :class:`EmptyState`).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.identity()
        >>> opt.update({"w": torch.ones(2)}, opt.init({"w": torch.zeros(2)}))
        ({'w': tensor([1., 1.])}, EmptyState())
    """

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, EmptyState]:
        del params, extra
        return updates, state

    return GradientTransformation(init, update)


def _accepting_extra(update: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an ``update`` that does not take ``**extra`` so that unknown extras are dropped."""
    try:
        parameters = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):
        return update
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return update
    accepted = {
        p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    } - {"updates", "state", "params"}

    def update_dropping_extra(
        updates: Updates, state: OptState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, OptState]:
        kept = {k: v for k, v in extra.items() if k in accepted}
        return update(updates, state, params, **kept)

    return update_dropping_extra


def _check_member(fn: str, i: Any, t: Any) -> None:
    if not isinstance(t, GradientTransformation):
        raise TypeError(
            f"fnn_optim.{fn}: member {i!r} must be a GradientTransformation (e.g. "
            f"`fnn_optim.scale(-0.1)`); got {type(t).__name__}: {t!r}."
        )


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` one after the other; the state is the tuple of their states.

    ``update(updates, state, params=None, **extra)`` passes ``params`` and ``extra`` (e.g.
    ``value=`` the loss) to every member. Hyperparameters of the members are read and changed
    with :func:`get_hyperparams` / :func:`set_hyperparams` (a name used by two members is keyed by
    its path in the state, e.g. ``"0.eps"``).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.chain(fnn_optim.scale_by_adam(), fnn_optim.scale_by_learning_rate(0.1))
        >>> params = {"w": torch.zeros(3)}
        >>> state = opt.init(params)
        >>> [type(s).__name__ for s in state]
        ['ScaleByAdamState', 'ScaleByLearningRateState']
        >>> updates, state = opt.update({"w": torch.ones(3)}, state, params)
        >>> updates["w"]
        tensor([-0.1000, -0.1000, -0.1000])
    """
    for i, t in enumerate(transforms):
        _check_member("chain", i, t)
    updates_fns = [_accepting_extra(t.update) for t in transforms]

    def init(params: Params) -> tuple[OptState, ...]:
        return tuple(t.init(params) for t in transforms)

    def update(
        updates: Updates, state: tuple[OptState, ...], params: Params | None = None, **extra: Any
    ) -> tuple[Updates, tuple[OptState, ...]]:
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"fnn_optim.chain: expected the state made by this chain's `init` (a tuple of "
                f"{len(transforms)} states); got {type(state).__name__}"
                + (f" of {len(state)}" if isinstance(state, tuple | list) else "")
                + "."
            )
        new_state = []
        for fn, s in zip(updates_fns, state, strict=True):
            updates, s = fn(updates, s, params, **extra)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def named_chain(*transforms: tuple[str, GradientTransformation]) -> GradientTransformation:
    """Like :func:`chain`, but the state is a dict keyed by the given names.

    Hyperparameter paths then read ``"adam.eps"`` instead of ``"0.eps"``.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.named_chain(
        ...     ("clip", fnn_optim.identity()), ("sgd", fnn_optim.sgd(0.1))
        ... )
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> list(state)
        ['clip', 'sgd']
        >>> fnn_optim.get_hyperparams(state)
        {'learning_rate': tensor(0.1000)}
    """
    names = []
    for i, item in enumerate(transforms):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(
                f"fnn_optim.named_chain: argument {i} must be a pair (name, transformation), "
                f"e.g. ('adam', fnn_optim.adam(1e-3)); got {item!r}."
            )
        _check_member("named_chain", item[0], item[1])
        names.append(item[0])
    if len(set(names)) != len(names):
        raise ValueError(f"fnn_optim.named_chain: the names must be unique; got {names}.")
    updates_fns = {name: _accepting_extra(t.update) for name, t in transforms}

    def init(params: Params) -> dict[str, OptState]:
        return {name: t.init(params) for name, t in transforms}

    def update(
        updates: Updates, state: dict[str, OptState], params: Params | None = None, **extra: Any
    ) -> tuple[Updates, dict[str, OptState]]:
        if not isinstance(state, dict) or list(state) != names:
            got = list(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"fnn_optim.named_chain: expected the state made by this chain's `init` (a dict "
                f"with keys {names}); got {got}."
            )
        new_state = {}
        for name, fn in updates_fns.items():
            updates, new_state[name] = fn(updates, state[name], params, **extra)
        return updates, new_state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Applying updates
# --------------------------------------------------------------------------------------------


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates`` leaf-wise (pure: ``params`` is not changed).

    One ``torch._foreach_add`` over all leaves. A result whose dtype differs from its parameter's
    (e.g. float32 updates on bfloat16 parameters) is cast back to the parameter's dtype, as in
    Optax. Inside ``fnn.jit`` with donated parameters this is as cheap as the in-place form.

    Args:
        params: a pytree of tensors.
        updates: a pytree of tensors with the structure and shapes of ``params``.

    Raises:
        ValueError: if the structures differ (the message names the first differing path).

    Example:
        >>> import torch, fnn_optim
        >>> params = {"b": torch.zeros(2), "w": torch.ones(2, 2)}
        >>> new = fnn_optim.apply_updates(params, {"b": torch.ones(2), "w": -torch.ones(2, 2)})
        >>> new["b"], new["w"].sum().item(), params["b"]
        (tensor([1., 1.]), 0.0, tensor([0., 0.]))
    """
    p, treedef = _tree.flatten(params)
    u, udef = _tree.flatten(updates)
    _check_tree("fnn_optim.apply_updates", udef, treedef, names=("the updates", "the params"))
    out = list(_fe.add(p, u))
    if any(o.dtype != x.dtype for o, x in zip(out, p, strict=True)):
        out = [o if o.dtype == x.dtype else o.to(x.dtype) for o, x in zip(out, p, strict=True)]
    return _tree.unflatten(treedef, out)


def apply_updates_(params: Params, updates: Updates) -> Params:
    """Add ``updates`` to ``params`` in place (``torch._foreach_add_`` under ``no_grad``).

    torch.optim's memory behaviour for eager training loops: no second copy of the parameters.
    Works on leaf tensors that require grad (``nn.Parameter``). Inside ``fnn.jit`` prefer the pure
    :func:`apply_updates` with donated parameters.

    Returns:
        ``params`` itself (the same tensors, now updated).

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.zeros(2)}
        >>> out = fnn_optim.apply_updates_(params, {"w": torch.ones(2)})
        >>> out is params, params["w"]
        (True, tensor([1., 1.]))
    """
    p, treedef = _tree.flatten(params)
    u, udef = _tree.flatten(updates)
    _check_tree("fnn_optim.apply_updates_", udef, treedef, names=("the updates", "the params"))
    with torch.no_grad():
        _fe.add_(p, u)
    return params


# --------------------------------------------------------------------------------------------
# Reading and setting hyperparameters
# --------------------------------------------------------------------------------------------

_SKIPPED_FIELDS = ("hyperparams", "scheduled")


def _owns_hyperparams(node: Any) -> bool:
    fields = getattr(type(node), "_fields", None)
    return (
        isinstance(node, tuple)
        and fields is not None
        and "hyperparams" in fields
        and isinstance(node.hyperparams, dict)
    )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Entry(NamedTuple):
    owner: str  # dotted path of the state node holding the hyperparams
    name: str
    value: Any
    scheduled: bool

    @property
    def path(self) -> str:
        return _join(self.owner, self.name)


def _entries(state: OptState) -> list[_Entry]:
    """Every hyperparameter in ``state``, depth first in flatten order."""
    out: list[_Entry] = []

    def visit(tree: Any, prefix: str) -> None:
        pairs, _ = _tree.flatten_with_path(tree, is_leaf=_owns_hyperparams)
        for path, node in pairs:
            if not _owns_hyperparams(node):
                continue
            owner = _join(prefix, path)
            scheduled = getattr(node, "scheduled", None) or {}
            for name, value in node.hyperparams.items():
                out.append(_Entry(owner, str(name), value, name in scheduled))
            for field in node._fields:
                if field not in _SKIPPED_FIELDS:
                    visit(getattr(node, field), _join(owner, field))

    visit(state, "")
    return out


def _keys(entries: list[_Entry]) -> list[str]:
    """The public key of each entry: its name if unique in the state, else its dotted path."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    return [e.name if counts[e.name] == 1 else e.path for e in entries]


def get_hyperparams(state: OptState) -> dict[str, Tensor]:
    """The hyperparameters of any optimizer state (chains and wrappers included), by name.

    A name used by a single transform is the key itself (``"learning_rate"``, ``"b1"``); a name
    used by several is keyed by the dotted path of its transform's state, e.g. ``"0.eps"`` and
    ``"1.eps"`` in a :func:`chain` (``"adam.eps"`` in a :func:`named_chain`). Schedule-driven
    entries hold the value used at the last step (at ``init``: the value at step 0).

    Returns:
        A new dict of the 0-d tensors stored in the state (not copies).

    Example:
        >>> import torch, fnn_optim
        >>> state = fnn_optim.adam(1e-3).init({"w": torch.zeros(2)})
        >>> hyperparams = fnn_optim.get_hyperparams(state)
        >>> sorted(hyperparams)
        ['b1', 'b2', 'eps', 'eps_root', 'learning_rate']
        >>> hyperparams["learning_rate"]
        tensor(0.0010)
    """
    entries = _entries(state)
    return {k: e.value for k, e in zip(_keys(entries), entries, strict=True)}


def _canonical(key: str) -> str:
    """``lr`` is an alias of ``learning_rate`` (also as the last part of a dotted path)."""
    if key == "lr":
        return "learning_rate"
    if key.endswith(".lr"):
        return key[: -len("lr")] + "learning_rate"
    return key


def set_hyperparams(state: OptState, **values: float | Tensor) -> OptState:
    """Return a new state with the given hyperparameters replaced (``state`` is not changed).

    Keys are those of :func:`get_hyperparams` (a plain name, or the dotted path of a name used by
    several transforms, e.g. ``set_hyperparams(state, **{"0.eps": 1e-6})``); a full dotted path
    is accepted for any entry. ``lr`` is an alias of ``learning_rate``. Each value (a number or a
    one-element tensor) becomes a 0-d tensor with the dtype and device of the entry it replaces,
    so a compiled step does not compile again.

    Raises:
        KeyError: for an unknown name (the message lists the available ones) or a name used by
            several transforms (the message lists their paths).
        ValueError: for a hyperparameter driven by a schedule: the schedule recomputes it at
            every step, so a set value would be silently overwritten.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.sgd(0.1, momentum=0.9)
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> state = fnn_optim.set_hyperparams(state, lr=0.01)
        >>> fnn_optim.get_hyperparams(state)["learning_rate"]
        tensor(0.0100)
    """
    if not values:
        return state
    entries = _entries(state)
    keys = _keys(entries)
    by_key: dict[str, int] = {}
    for i, (k, e) in enumerate(zip(keys, entries, strict=True)):
        by_key[k] = i
        by_key[e.path] = i
    new_values: dict[tuple[str, str], Tensor] = {}
    for given, value in values.items():
        key = _canonical(given)
        if key not in by_key:
            paths = [e.path for e in entries if e.name == key]
            if paths:
                raise KeyError(
                    f"fnn_optim.set_hyperparams: {given!r} is used by several transforms of this "
                    f"state; name one by its path: {paths}, e.g. "
                    f"`set_hyperparams(state, **{{{paths[0]!r}: ...}})`."
                )
            available = sorted(keys)
            raise KeyError(
                f"fnn_optim.set_hyperparams: no hyperparameter {given!r} in this state; "
                f"available: {available}"
                + (" (and 'lr' for 'learning_rate')" if "learning_rate" in keys else "")
                + "."
            )
        e = entries[by_key[key]]
        if e.scheduled:
            raise ValueError(
                f"fnn_optim.set_hyperparams: {given!r} is driven by a schedule, which recomputes "
                "it from the step count at every update, so a value set here would be "
                "overwritten. Build the optimizer with a number instead of a schedule to set it "
                "by hand, or change the schedule."
            )
        old = e.value
        if not isinstance(old, Tensor):
            raise TypeError(
                f"fnn_optim.set_hyperparams: the entry {e.path!r} is not a tensor ({old!r})."
            )
        new_values[(e.owner, e.name)] = _as_scalar(
            value, old.dtype, old.device, f"fnn_optim.set_hyperparams: {given!r}"
        )

    def rebuild(tree: Any, prefix: str) -> Any:
        def one(path: str, node: Any) -> Any:
            if not _owns_hyperparams(node):
                return node
            owner = _join(prefix, path)
            hyperparams = {
                k: new_values.get((owner, str(k)), v) for k, v in node.hyperparams.items()
            }
            rest = {
                f: rebuild(getattr(node, f), _join(owner, f))
                for f in node._fields
                if f not in _SKIPPED_FIELDS
            }
            return node._replace(hyperparams=hyperparams, **rest)

        return _tree.map_with_path(one, tree, is_leaf=_owns_hyperparams)

    return rebuild(state, "")
