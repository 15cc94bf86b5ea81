"""Wrappers: transformations that change where, when or how another transformation applies.

``masked`` / ``partition`` / ``freeze`` choose which leaves a transformation sees;
``MultiSteps`` (gradient accumulation) and ``apply_if_finite`` choose *when* the inner update
applies; ``inject_hyperparams`` drives any numeric argument of an optimizer from its state or a
schedule; ``lookahead`` keeps slow weights; ``flatten`` runs an optimizer on one contiguous buffer.

All of them keep the contract: ``updates, state = opt.update(grads, state, params)`` and
``fnn_optim.apply_updates(params, updates)``; their states are ``NamedTuple`` s of tensors.

**Masking** follows Optax: the inner transformation sees the parameter tree with every masked-out
leaf replaced by :class:`MaskedNode` (an empty ``NamedTuple``: no leaves), so its state holds
buffers for the masked-in leaves only, and masked-out updates pass through unchanged.

**Choosing without branching.** ``MultiSteps``, ``apply_if_finite`` and ``lookahead`` decide on a
0-d bool tensor whether the inner update applies; they always run the inner update and select
with ``torch.where`` (no Python ``if`` on a tensor), so a step compiles to one graph under
``fnn.jit`` and never recompiles. torch has no ``_foreach_where``: the selection is one
``torch.where`` per leaf (inductor fuses them under ``fnn.jit``), the one per-tensor loop here.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import re
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from fnn import tree as _tree
from fnn_optim import _foreach as _fe
from fnn_optim._base import (
    _SKIPPED_FIELDS,
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    Updates,
    _accepting_extra,
    _as_scalar,
    _check_member,
    _check_tree,
    _entries,
    _flatten,
    _hyper,
    _hyperparams,
    _is_schedule,
    _join,
    _lerp,
    _owns_hyperparams,
    _resolve,
    _scheduled,
    _unflatten,
    _zero_count,
)

__all__ = [
    "ApplyIfFiniteState",
    "InjectHyperparamsState",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "PartitionState",
    "apply_if_finite",
    "flatten",
    "freeze",
    "inject_hyperparams",
    "lookahead",
    "masked",
    "partition",
    "set_to_zero",
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


class MaskedNode(NamedTuple):
    """Stands for a masked-out leaf in the trees a masked transformation sees (Optax's name).

    An empty ``NamedTuple``: a pytree node without leaves (for optree and
    ``torch.utils._pytree``), so ``fnn.tree.map`` and the ``_foreach`` ops skip it and the inner
    state holds nothing for that leaf.
    """


def _where_leaves(cond: Tensor, a: Sequence[Tensor], b: Sequence[Tensor]) -> list[Tensor]:
    """``torch.where(cond, a[i], b[i])`` for every leaf (torch has no foreach ``where``)."""
    return [torch.where(cond, x, y) for x, y in zip(a, b, strict=True)]


def _zero_unless(cond: Tensor, leaves: Sequence[Tensor]) -> list[Tensor]:
    """``leaves`` where ``cond``, else zeros of the same dtype (NaN/inf become 0 too)."""
    return [torch.where(cond, x, 0.0) for x in leaves]


def _select_state(where: str, cond: Tensor, new: OptState, old: OptState) -> OptState:
    """The state ``new`` where ``cond`` (a 0-d bool tensor), else ``old``, leaf by leaf."""
    n, ndef = _flatten(new)
    o, odef = _flatten(old)
    _check_tree(
        where,
        ndef,
        odef,
        names=("the state returned by the inner transformation", "the state it was given"),
    )
    return _unflatten(ndef, _where_leaves(cond, n, o))


def _per_leaf(where: str, what: str, spec: Any, tree: Any) -> list[Any]:
    """One entry of ``spec`` per leaf of ``tree`` (flatten order).

    ``spec`` has the structure of ``tree`` or is a prefix of it: a leaf of ``spec`` (e.g. a
    single ``False`` for ``{"encoder": ...}``) stands for every leaf of ``tree`` below it.
    """
    leaves, treedef = _flatten(spec)
    if treedef == _tree.structure(tree):
        return leaves
    lookup = dict(_tree.flatten_with_path(spec)[0])
    out = []
    for path in _tree.paths(tree):
        p = path
        while p not in lookup:
            if not p:
                raise ValueError(
                    f"{where}: the {what} must have the structure of the parameters or be a "
                    f"prefix of it (one entry standing for a whole subtree); nothing in it "
                    f"covers the parameter {path!r}. {what.capitalize()} paths: "
                    f"{sorted(lookup)}."
                )
            p = p.rpartition(".")[0]
        out.append(lookup[p])
    return out


def _mask_flags(where: str, mask: Any, tree: Any) -> list[bool]:
    """The mask (a tree or prefix tree of bools, or a function of ``tree``) as one bool a leaf."""
    spec = mask(tree) if callable(mask) else mask
    flags = _per_leaf(where, "mask", spec, tree)
    for f in flags:
        if not isinstance(f, bool | np.bool_):
            raise TypeError(
                f"{where}: the mask's leaves must be Python bools (the mask decides which leaves "
                f"the inner transformation sees, which fixes the structure of its state); got "
                f"{type(f).__name__}: {f!r}. For a mask computed from tensors, compute it once "
                "outside the training step, e.g. `fnn.tree.map(lambda p: p.ndim > 1, params)`."
            )
    return [bool(f) for f in flags]


def _hide(leaves: Sequence[Any], treedef: Any, keep: Sequence[bool]) -> Any:
    """The tree with every leaf whose ``keep`` is False replaced by :class:`MaskedNode`."""
    return _tree.unflatten(
        treedef, [x if k else MaskedNode() for x, k in zip(leaves, keep, strict=True)]
    )


def _unhide(
    where: str, out: list[Any], inner_updates: Any, given: Any, keep: Sequence[bool]
) -> None:
    """Write the leaves of ``inner_updates`` (the inner result for the kept leaves) into ``out``."""
    _check_tree(
        where,
        inner_updates,
        given,
        names=("the updates returned by the inner transformation", "the updates it was given"),
    )
    it = iter(_tree.leaves(inner_updates))
    for i, k in enumerate(keep):
        if k:
            out[i] = next(it)


def _hidden_params(
    where: str, params: Params | None, udef: Any, keep: Sequence[bool]
) -> Params | None:
    if params is None:
        return None
    p, pdef = _flatten(params)
    _check_tree(where, udef, pdef, names=("the updates", "the params"))
    return _hide(p, pdef, keep)


def _need_params(where: str, params: Params | None) -> None:
    if params is None:
        raise ValueError(
            f"{where}: this transformation needs the current parameters; call "
            "`opt.update(grads, state, params)`."
        )


def _check_int(where: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}; got {value!r}.")
    return int(value)


# --------------------------------------------------------------------------------------------
# masked, set_to_zero, freeze
# --------------------------------------------------------------------------------------------


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner state, built on the masked-in leaves only."""

    inner_state: Any


def masked(
    inner: GradientTransformation, mask: Any | Callable[[Any], Any]
) -> GradientTransformation:
    """Apply ``inner`` to the leaves where ``mask`` is True; pass the others through unchanged.

    Optax's semantics: ``inner`` sees the trees with every masked-out leaf replaced by
    :class:`MaskedNode` (no leaves), so its state holds buffers for the masked-in leaves only
    (e.g. ``masked(adam(...), mask)`` keeps Adam moments for the masked-in leaves alone).

    Args:
        inner: the transformation to apply to the masked-in leaves.
        mask: a tree of Python bools with the structure of the parameters, or a prefix of it (a
            single ``False`` for ``{"encoder": ...}`` masks the whole encoder); or a function
            of a tree (the params at ``init``, the updates at ``update``: same structure and
            shapes) returning such a tree.

    Raises:
        ValueError: if the mask does not cover a leaf (the message names its path).
        TypeError: if a mask leaf is not a Python bool (a mask is structure, not data).

    Example:
        >>> import torch, fnn, fnn_optim
        >>> params = {"bias": torch.zeros(2), "weight": torch.zeros(2, 2)}
        >>> matrices = lambda p: fnn.tree.map(lambda t: t.ndim > 1, p)
        >>> opt = fnn_optim.masked(fnn_optim.sgd(0.1), matrices)
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"bias": torch.ones(2), "weight": torch.ones(2, 2)}, state)
        >>> updates["bias"], updates["weight"][0]  # bias passed through, weight scaled by -lr
        (tensor([1., 1.]), tensor([-0.1000, -0.1000]))
    """
    _check_member("masked", "inner", inner)
    inner_update = _accepting_extra(inner.update)
    where = "fnn_optim.masked"

    def init(params: Params) -> MaskedState:
        leaves, treedef = _flatten(params)
        keep = _mask_flags(where, mask, params)
        return MaskedState(inner.init(_hide(leaves, treedef, keep)))

    def update(
        updates: Updates, state: MaskedState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, MaskedState]:
        u, udef = _flatten(updates)
        keep = _mask_flags(where, mask, updates)
        hidden = _hide(u, udef, keep)
        new, inner_state = inner_update(
            hidden, state.inner_state, _hidden_params(where, params, udef, keep), **extra
        )
        out = list(u)
        _unhide(where, out, new, hidden, keep)
        return _unflatten(udef, out), MaskedState(inner_state)

    return GradientTransformation(init, update)


def set_to_zero() -> GradientTransformation:
    """Replace every update by zeros (state :class:`~fnn_optim.EmptyState`).

    Zeros, not ``0 * update``: NaN and inf become 0 too. One ``torch.zeros_like`` per leaf
    (creating tensors has no foreach form). Used by :func:`freeze` and as the transformation of
    a frozen group in :func:`partition`.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.set_to_zero()
        >>> opt.update({"w": torch.tensor([1.0, float("nan")])}, opt.init({"w": torch.zeros(2)}))
        ({'w': tensor([0., 0.])}, EmptyState())
    """

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, EmptyState]:
        del params, extra
        u, udef = _flatten(updates)
        return _unflatten(udef, [torch.zeros_like(x) for x in u]), state

    return GradientTransformation(init, update)


def freeze(mask: Any | Callable[[Any], Any]) -> GradientTransformation:
    """Zero the updates of the leaves where ``mask`` is True (frozen); pass the others through.

    ``masked(set_to_zero(), mask)`` (Optax's ``freeze``): it keeps no state at all. Where it
    sits matters:

    - ``chain(adam(1e-3), freeze(mask))`` gives frozen leaves exactly zero updates, but Adam
      still keeps moments for them;
    - ``chain(freeze(mask), adam(1e-3))`` would feed Adam zero gradients, and Adam's momentum
      still moves the frozen leaves: not a freeze;
    - to keep no optimizer state for frozen leaves, use :func:`partition`:
      ``partition({"train": adam(1e-3), "frozen": set_to_zero()}, labels)``.

    Args:
        mask: as in :func:`masked`; ``True`` marks a frozen leaf.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"encoder": {"w": torch.zeros(2)}, "head": {"w": torch.zeros(2)}}
        >>> frozen = {"encoder": True, "head": False}
        >>> opt = fnn_optim.chain(fnn_optim.sgd(0.5), fnn_optim.freeze(frozen))
        >>> grads = {"encoder": {"w": torch.ones(2)}, "head": {"w": torch.ones(2)}}
        >>> opt.update(grads, opt.init(params))[0]
        {'encoder': {'w': tensor([0., 0.])}, 'head': {'w': tensor([-0.5000, -0.5000])}}
    """
    return masked(set_to_zero(), mask)


# --------------------------------------------------------------------------------------------
# partition
# --------------------------------------------------------------------------------------------


class PartitionState(NamedTuple):
    """State of :func:`partition`: ``inner_states[label]`` is the state of that label's
    transformation, built on that label's leaves only (the others are :class:`MaskedNode`)."""

    inner_states: dict[Hashable, OptState]


def _is_pattern(x: Any) -> bool:
    return isinstance(x, str | re.Pattern)


def _looks_like_rules(labels: Any) -> bool:
    return (
        isinstance(labels, list | tuple)
        and len(labels) > 0
        and all(
            isinstance(r, tuple) and len(r) == 2 and _is_pattern(r[0]) and not callable(r[1])
            for r in labels
        )
    )


def partition(
    transforms: dict[Hashable, GradientTransformation],
    labels: Any | Callable[[str, Any], Hashable] | Sequence[tuple[str | re.Pattern[str], Hashable]],
) -> GradientTransformation:
    """Apply a different transformation to each group of leaves (Optax's ``partition``).

    Each leaf gets a label; ``transforms[label]`` is applied to the leaves of that label (and
    its state holds those leaves only, as in :func:`masked`). The groups are disjoint: every leaf
    is transformed by exactly one member.

    Args:
        transforms: ``{label: transformation}``.
        labels: one of

            - a tree of labels with the structure of the parameters, or a prefix of it
              (``{"encoder": "frozen", "head": "train"}``);
            - a function ``(dotted_path, leaf) -> label`` called for every leaf (the params at
              ``init``, the updates at ``update``: same shapes and dtypes), e.g.
              ``lambda path, p: "no_decay" if p.ndim <= 1 else "decay"``;
            - a list of ``(regex, label)`` pairs tried in order against each dotted name
              (``"encoder.layers.0.weight"``, as ``fnn.tree.paths`` and ``state_dict()`` spell
              them) with ``re.search``: the first match wins (anchor with ``^``/``$`` for whole
              names); a name no rule matches raises.

    Raises:
        ValueError: a leaf without a label (no regex matches: the message names the path) or
            with a label that is not a key of ``transforms``.

    Example:
        >>> import torch, fnn, fnn_optim
        >>> body = {"bias": torch.zeros(2), "weight": torch.zeros(2)}
        >>> params = {"body": body, "head": torch.zeros(2)}
        >>> opt = fnn_optim.partition(
        ...     {"sgd": fnn_optim.sgd(0.1), "frozen": fnn_optim.set_to_zero()},
        ...     [(r"^head$", "frozen"), (r".*", "sgd")],
        ... )
        >>> state = opt.init(params)
        >>> grads = fnn.tree.map(torch.ones_like, params)
        >>> updates, state = opt.update(grads, state)
        >>> updates["head"], updates["body"]["weight"]
        (tensor([0., 0.]), tensor([-0.1000, -0.1000]))
    """
    where = "fnn_optim.partition"
    if not isinstance(transforms, dict) or not transforms:
        raise TypeError(
            f"{where}: transforms must be a non-empty dict {{label: transformation}}, e.g. "
            f"{{'adam': fnn_optim.adam(1e-3), 'frozen': fnn_optim.set_to_zero()}}; got "
            f"{transforms!r}."
        )
    for name, t in transforms.items():
        _check_member("partition", name, t)
    updates_fns = {name: _accepting_extra(t.update) for name, t in transforms.items()}
    rules = None
    if _looks_like_rules(labels):
        rules = [(re.compile(p) if isinstance(p, str) else p, lab) for p, lab in labels]

    def leaf_labels(tree: Any) -> list[Hashable]:
        if callable(labels):
            pairs = _tree.flatten_with_path(tree)[0]
            out = [labels(path, leaf) for path, leaf in pairs]
            paths = [path for path, _ in pairs]
        elif rules is not None and _tree.structure(labels) != _tree.structure(tree):
            paths = _tree.paths(tree)
            out = []
            for path in paths:
                for rx, lab in rules:
                    if rx.search(path):
                        out.append(lab)
                        break
                else:
                    shown = [(rx.pattern, lab) for rx, lab in rules]
                    raise ValueError(
                        f"{where}: no rule matches the parameter {path!r}; the rules (tried in "
                        f"order with re.search on the dotted name) are {shown}. Add a "
                        "catch-all rule last, e.g. (r'.*', 'default')."
                    )
        else:
            out = _per_leaf(where, "labels", labels, tree)
            paths = _tree.paths(tree)
        for path, lab in zip(paths, out, strict=True):
            if not isinstance(lab, Hashable) or lab not in transforms:
                raise ValueError(
                    f"{where}: the parameter {path!r} has the label {lab!r}, which is not a key "
                    f"of transforms; the labels are {list(transforms)}."
                )
        return out

    def init(params: Params) -> PartitionState:
        leaves, treedef = _flatten(params)
        labs = leaf_labels(params)
        return PartitionState(
            {
                name: t.init(_hide(leaves, treedef, [lab == name for lab in labs]))
                for name, t in transforms.items()
            }
        )

    def update(
        updates: Updates, state: PartitionState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, PartitionState]:
        if not isinstance(state, PartitionState) or set(state.inner_states) != set(transforms):
            raise ValueError(
                f"{where}: expected the PartitionState made by this partition's `init` (labels "
                f"{list(transforms)}); got {type(state).__name__}."
            )
        u, udef = _flatten(updates)
        labs = leaf_labels(updates)
        out = list(u)
        new_states = {}
        for name, fn in updates_fns.items():
            keep = [lab == name for lab in labs]
            hidden = _hide(u, udef, keep)
            new, new_states[name] = fn(
                hidden,
                state.inner_states[name],
                _hidden_params(where, params, udef, keep),
                **extra,
            )
            _unhide(where, out, new, hidden, keep)
        return _unflatten(udef, out), PartitionState(new_states)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# inject_hyperparams
# --------------------------------------------------------------------------------------------


class InjectHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams`.

    ``count``: int64 0-d, updates so far (schedules are evaluated at it). ``hyperparams``: the
    injected values (0-d tensors; for a schedule, the value used at the last update).
    ``scheduled``: the schedule-driven names (no leaves). ``injected``: for each node of the inner
    state that holds injected hyperparameters, its dotted path and their names (no leaves: pure
    structure). ``inner_state``: the inner optimizer's state *without* the injected entries
    (they live in ``hyperparams`` only, so each name appears once in ``get_hyperparams``).
    """

    count: Tensor
    hyperparams: dict[str, Tensor]
    scheduled: dict[str, None]
    injected: dict[str, dict[str, None]]
    inner_state: Any


def _map_owners(fn: Callable[[str, Any], Any], tree: Any, prefix: str = "") -> Any:
    """Apply ``fn(owner_path, node)`` to every state node holding ``hyperparams`` (nested too).

    Owner paths are those of :func:`fnn_optim.get_hyperparams`. Tuples, namedtuples, lists and
    dicts (what states are made of) are walked directly, which keeps ``fnn.jit`` tracing fast;
    other pytree nodes go through ``fnn.tree.map_with_path``.
    """
    if _owns_hyperparams(tree):
        node = fn(prefix, tree)
        rest = {
            f: _map_owners(fn, getattr(node, f), _join(prefix, f))
            for f in node._fields
            if f not in _SKIPPED_FIELDS
        }
        return node._replace(**rest)
    if tree is None or isinstance(tree, Tensor):
        return tree
    kind = type(tree)
    if kind is dict:
        return {k: _map_owners(fn, v, _join(prefix, str(k))) for k, v in tree.items()}
    if kind is list or kind is tuple:
        return kind(_map_owners(fn, v, _join(prefix, str(i))) for i, v in enumerate(tree))
    if isinstance(tree, tuple) and hasattr(kind, "_fields"):  # a namedtuple
        return kind(*(_map_owners(fn, getattr(tree, f), _join(prefix, f)) for f in kind._fields))

    def one(path: str, node: Any) -> Any:
        return _map_owners(fn, node, _join(prefix, path)) if _owns_hyperparams(node) else node

    return _tree.map_with_path(one, tree, is_leaf=_owns_hyperparams)


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Sequence[str] = (),
) -> Callable[..., GradientTransformation]:
    """Make an optimizer's numeric arguments state entries, and let any of them be a schedule.

    ``inject_hyperparams(fnn_optim.adamw)(learning_rate=schedule, weight_decay=0.05)`` behaves
    like ``adamw`` with the current value of each such argument read from the state at every
    update: ``fnn_optim.get_hyperparams(state)`` reads them and
    ``fnn_optim.set_hyperparams(state, weight_decay=0.1)`` changes them, and an argument given as a
    schedule (a function of the int64 step count) is recomputed at every update. Like Optax's,
    defaults count as given (``b1``, ``b2``, ``eps`` of ``adam`` are injected too), bools and the
    names in ``static_args`` stay static, and schedules are evaluated at ``count`` (0 at the
    first update); the state keeps the values used at the last update. A function is taken as a
    schedule only for an argument whose default is a number (or that has none): ``adamw``'s
    ``mask`` function stays static.

    **How the values reach the optimizer** (different from Optax, on purpose). fnn_optim's
    transforms read their hyperparameters from their own state, and its optimizer factories
    choose their structure in Python from the values (``sgd`` adds momentum only if
    ``momentum != 0``), which a tensor under ``fnn.jit`` cannot decide. So the inner optimizer is
    built once, with the given numbers (a schedule's value at step 0), and before every update the
    current values are written into the entries of the same name in the inner state (every node
    holding that name). This is exactly "rebuild the optimizer with the current values" for
    every fnn_optim optimizer, with no recompilation under ``fnn.jit``: all values are 0-d
    tensors. ``init`` checks that each injected entry in the inner state equals the argument it
    was built from (an argument the factory transforms, e.g. ``decay = 1 - momentum``, raises).

    A numeric argument the inner state keeps no entry of that name for stays static: e.g.
    ``weight_decay=0`` (no decay transform is built; build with a nonzero value to change it
    later) or ``adagrad``'s ``initial_accumulator_value`` (used by ``init`` only). A schedule or a
    tensor given for such an argument raises, since it could not be honoured.

    Args:
        inner_factory: a function returning a :class:`~fnn_optim.GradientTransformation`, e.g.
            ``fnn_optim.adam``.
        static_args: names of arguments never to inject.

    Returns:
        A function with ``inner_factory``'s signature returning the wrapped transformation, whose
        state is an :class:`InjectHyperparamsState`.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.inject_hyperparams(fnn_optim.sgd)(
        ...     learning_rate=lambda count: 0.1 * 0.5**count, momentum=0.9
        ... )
        >>> params = {"w": torch.zeros(2)}
        >>> state = opt.init(params)
        >>> sorted(fnn_optim.get_hyperparams(state))
        ['dampening', 'learning_rate', 'momentum']
        >>> for _ in range(2):
        ...     updates, state = opt.update({"w": torch.ones(2)}, state, params)
        >>> fnn_optim.get_hyperparams(state)["learning_rate"]  # the value used at step 1
        tensor(0.0500)
        >>> state = fnn_optim.set_hyperparams(state, momentum=0.5)
    """
    if isinstance(static_args, str):
        static_args = (static_args,)
    static = frozenset(static_args)
    name = getattr(inner_factory, "__name__", repr(inner_factory))
    where = f"fnn_optim.inject_hyperparams({name})"
    try:
        signature = inspect.signature(inner_factory)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: cannot read the signature of {inner_factory!r}.") from e
    unknown = static - set(signature.parameters)
    if unknown:
        raise ValueError(
            f"{where}: static_args {sorted(unknown)} are not arguments of the factory; its "
            f"arguments are {list(signature.parameters)}."
        )

    def _check_same(e: Any, built: Any) -> None:
        value = e.value
        if torch.compiler.is_compiling() or not isinstance(value, Tensor):
            return
        expected = _as_scalar(built, value.dtype, value.device, e.name)
        if not torch.equal(value, expected):
            raise ValueError(
                f"{where}: the optimizer keeps {e.name!r} = {value.item()!r} at "
                f"{e.path!r} in its state, not the argument {e.name}={built!r} it was built with "
                "(the factory transforms it), so it cannot be injected by name; pass "
                f"static_args=({e.name!r},) to keep it static."
            )

    @functools.wraps(inner_factory)
    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        schedules: dict[str, Any] = {}
        numbers_: dict[str, Any] = {}
        built_with: dict[str, Any] = {}
        for arg, value in bound.arguments.items():
            kind = signature.parameters[arg].kind
            if arg in static or kind in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD):
                continue
            if isinstance(value, bool):
                continue
            if _is_schedule(value):
                default = signature.parameters[arg].default
                if not (
                    default is inspect.Parameter.empty
                    or (isinstance(default, numbers.Real) and not isinstance(default, bool))
                ):
                    continue  # a function for a non-numeric argument, e.g. adamw's mask
                try:
                    first = _resolve(value, torch.zeros((), dtype=torch.int64))
                    built_with[arg] = float(first)
                except Exception as e:
                    raise TypeError(
                        f"{where}: the function given as {arg!r} is taken as a schedule (a "
                        f"function of the int64 step count returning a number), but calling it "
                        f"at count 0 failed: {e!r}. If it is not a schedule, pass "
                        f"static_args=({arg!r},)."
                    ) from e
                schedules[arg] = value
            elif isinstance(value, numbers.Real) or (
                isinstance(value, Tensor) and value.numel() == 1
            ):
                numbers_[arg] = value
                built_with[arg] = float(value) if isinstance(value, Tensor) else value
        bound.arguments.update(built_with)
        inner = inner_factory(*bound.args, **bound.kwargs)
        if not isinstance(inner, GradientTransformation):
            raise TypeError(
                f"{where}: the factory must return a GradientTransformation; got "
                f"{type(inner).__name__}."
            )
        inner_update = _accepting_extra(inner.update)
        candidates = {**numbers_, **schedules}
        order = [a for a in bound.arguments if a in candidates]

        def init(params: Params) -> InjectHyperparamsState:
            inner_state = inner.init(params)
            owners: dict[str, list[str]] = {}
            for e in _entries(inner_state):
                if e.name in candidates:
                    owners.setdefault(e.name, []).append(e.owner)
                    _check_same(e, built_with[e.name])
            for arg in order:
                if arg not in owners and (arg in schedules or isinstance(candidates[arg], Tensor)):
                    given = "a schedule" if arg in schedules else "a tensor"
                    available = sorted({e.name for e in _entries(inner_state)})
                    raise ValueError(
                        f"{where}: {arg!r} was given as {given}, but the optimizer built with "
                        f"{arg}={built_with[arg]!r} keeps no hyperparameter named {arg!r} in its "
                        f"state, so its value could not change after `init`. Its "
                        f"hyperparameters are {available}. (A term that is zero at step 0, "
                        "e.g. weight_decay=0 or momentum=0, is not built at all.)"
                    )
            names = [arg for arg in order if arg in owners]
            injected: dict[str, dict[str, None]] = {}
            for arg in names:
                for owner in owners[arg]:
                    injected.setdefault(owner, {})[arg] = None
            count = _zero_count(params)
            values = {
                arg: _resolve(schedules[arg], count, _hyper(0.0, params))
                if arg in schedules
                else candidates[arg]
                for arg in names
            }
            return InjectHyperparamsState(
                count,
                _hyperparams(params, **values),
                _scheduled(*(arg for arg in names if arg in schedules)),
                injected,
                _strip(inner_state, injected),
            )

        def update(
            updates: Updates,
            state: InjectHyperparamsState,
            params: Params | None = None,
            **extra: Any,
        ) -> tuple[Updates, InjectHyperparamsState]:
            if not isinstance(state, InjectHyperparamsState):
                raise ValueError(
                    f"{where}: expected the InjectHyperparamsState made by `init`; got "
                    f"{type(state).__name__}."
                )
            current = {}
            for arg, value in state.hyperparams.items():
                if not isinstance(value, Tensor):  # e.g. a number assigned into the dict
                    value = _hyper(value, params if params is not None else updates)
                current[arg] = (
                    _resolve(schedules[arg], state.count, value) if arg in schedules else value
                )
            inner_state = _insert(state.inner_state, state.injected, current)
            new_updates, inner_state = inner_update(updates, inner_state, params, **extra)
            return new_updates, InjectHyperparamsState(
                state.count + 1,
                current,
                dict(state.scheduled),
                {k: dict(v) for k, v in state.injected.items()},
                _strip(inner_state, state.injected),
            )

        return GradientTransformation(init, update)

    return wrapped


def _strip(inner_state: Any, injected: dict[str, dict[str, None]]) -> Any:
    """``inner_state`` without the injected hyperparams entries (they live in the wrapper)."""

    def strip(owner: str, node: Any) -> Any:
        names = injected.get(owner)
        if not names:
            return node
        return node._replace(
            hyperparams={k: v for k, v in node.hyperparams.items() if k not in names}
        )

    return _map_owners(strip, inner_state)


def _insert(
    inner_state: Any, injected: dict[str, dict[str, None]], current: dict[str, Tensor]
) -> Any:
    """``inner_state`` with the current injected values put back where :func:`_strip` took them."""

    def insert(owner: str, node: Any) -> Any:
        names = injected.get(owner)
        if not names:
            return node
        return node._replace(hyperparams={**node.hyperparams, **{k: current[k] for k in names}})

    return _map_owners(insert, inner_state)


# --------------------------------------------------------------------------------------------
# MultiSteps
# --------------------------------------------------------------------------------------------


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps`.

    ``mini_step``: int64 0-d, micro-steps accumulated since the last inner update.
    ``gradient_step``: int64 0-d, inner updates done. ``inner_opt_state``: the inner state.
    ``acc_grads``: the accumulator, one buffer per parameter (the mean, or the sum with
    ``use_grad_mean=False``, of the gradients since the last inner update).
    """

    mini_step: Tensor
    gradient_step: Tensor
    inner_opt_state: Any
    acc_grads: Any


class MultiSteps(GradientTransformation):
    """Gradient accumulation: apply ``opt`` once every ``k`` calls, to the mean gradient.

    ``MultiSteps(opt, k)`` is a :class:`~fnn_optim.GradientTransformation` (it chains like any
    other). Each call adds the gradient to the accumulator (a running mean
    ``acc += (g - acc) / (mini_step + 1)``, one ``torch._foreach_lerp``); on every ``k``-th call
    the inner optimizer is applied to the accumulated mean, its updates are returned and the
    accumulator is reset to zero; the other calls return zero updates and leave the inner state
    unchanged. ``k`` may be a schedule of ``gradient_step`` (the number of inner updates done).

    **One graph.** The choice is made with ``torch.where`` on a 0-d bool tensor, not a Python
    ``if``: every call runs the inner update and keeps or discards its result, so a compiled
    step (``fnn.jit``) compiles once. The cost is one inner optimizer step per micro-step (Optax
    on an accelerator runs only one branch); the memory is not: **the state holds no full-size
    tensors beyond the accumulator** (exactly the inner state, one accumulator leaf per
    parameter and two int64 counters; the tests check the byte count).

    Args:
        opt: the inner optimizer.
        every_k_schedule: ``k`` (an int >= 1), or a function of ``gradient_step`` (int64 0-d)
            returning it.
        use_grad_mean: accumulate the mean (default, Optax's); ``False`` sums the gradients.

    Methods:
        ``has_updated(state)``: a 0-d bool tensor, True if the last call applied the inner
        optimizer. ``gradient_transformation()``: the plain ``GradientTransformation``.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.MultiSteps(fnn_optim.sgd(1.0), every_k_schedule=2)
        >>> params = {"w": torch.zeros(1)}
        >>> state = opt.init(params)
        >>> for g in (1.0, 3.0):
        ...     updates, state = opt.update({"w": torch.tensor([g])}, state, params)
        ...     print(updates["w"], opt.has_updated(state))
        tensor([0.]) tensor(False)
        tensor([-2.]) tensor(True)
    """

    def __new__(
        cls,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[Tensor], Any],
        use_grad_mean: bool = True,
    ) -> MultiSteps:
        where = "fnn_optim.MultiSteps"
        _check_member("MultiSteps", "opt", opt)
        if not callable(every_k_schedule):
            every_k_schedule = _check_int(where, "every_k_schedule", every_k_schedule, 1)
        inner_update = _accepting_extra(opt.update)
        k_schedule = every_k_schedule

        def init(params: Params) -> MultiStepsState:
            return MultiStepsState(
                _zero_count(params),
                _zero_count(params),
                opt.init(params),
                _tree.map(torch.zeros_like, params),
            )

        def update(
            updates: Updates, state: MultiStepsState, params: Params | None = None, **extra: Any
        ) -> tuple[Updates, MultiStepsState]:
            g, gdef = _flatten(updates)
            acc, adef = _flatten(state.acc_grads)
            _check_tree(where, gdef, adef)
            mini = state.mini_step
            k = k_schedule(state.gradient_step) if callable(k_schedule) else k_schedule
            emit = mini >= k - 1
            if use_grad_mean:
                weight = 1.0 / (mini + 1).to(torch.float64)
                weights = {}
                for a in acc:
                    if a.dtype not in weights:
                        weights[a.dtype] = weight.to(a.dtype)
                acc = _lerp(acc, g, [weights[a.dtype] for a in acc])
            else:
                acc = list(_fe.add(acc, g))
            inner_updates, new_inner = inner_update(
                _unflatten(gdef, acc), state.inner_opt_state, params, **extra
            )
            iu, iudef = _flatten(inner_updates)
            _check_tree(
                where, iudef, gdef, names=("the updates of the inner optimizer", "the updates")
            )
            new_state = MultiStepsState(
                torch.where(emit, torch.zeros_like(mini), mini + 1),
                state.gradient_step + emit.to(state.gradient_step.dtype),
                _select_state(where, emit, new_inner, state.inner_opt_state),
                _unflatten(gdef, [a.masked_fill(emit, 0) for a in acc]),
            )
            return _unflatten(gdef, _zero_unless(emit, iu)), new_state

        self = super().__new__(cls, init, update)
        self.inner_opt = opt
        return self

    @staticmethod
    def has_updated(state: MultiStepsState) -> Tensor:
        """True (a 0-d bool tensor) if the call that produced ``state`` applied the inner update.

        Example:
            >>> import torch, fnn_optim
            >>> opt = fnn_optim.MultiSteps(fnn_optim.sgd(1.0), 3)
            >>> opt.has_updated(opt.init({"w": torch.zeros(1)}))
            tensor(False)
        """
        return (state.mini_step == 0) & (state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformation:
        """This transformation as a plain :class:`~fnn_optim.GradientTransformation`."""
        return GradientTransformation(self.init, self.update)


# --------------------------------------------------------------------------------------------
# apply_if_finite
# --------------------------------------------------------------------------------------------


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`.

    ``notfinite_count``: int64 0-d, consecutive calls with non-finite updates so far;
    ``last_finite``: bool 0-d, whether the last call's updates were finite;
    ``total_notfinite``: int64 0-d, calls with non-finite updates in total;
    ``inner_state``: the inner state (unchanged by skipped calls).
    """

    notfinite_count: Tensor
    last_finite: Tensor
    total_notfinite: Tensor
    inner_state: Any


def _all_finite(leaves: Sequence[Tensor], like: Any) -> Tensor:
    """A 0-d bool tensor: no NaN or inf in any leaf (one ``_foreach_norm(inf)``; NaN propagates)."""
    if not leaves:
        return torch.ones((), dtype=torch.bool, device=_zero_count(like).device)
    norms = list(_fe.norm(list(leaves), float("inf")))
    if len({n.dtype for n in norms}) > 1:
        norms = [n.to(torch.float64) for n in norms]
    return torch.isfinite(torch.stack(norms)).all()


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int
) -> GradientTransformation:
    """Skip the steps whose incoming updates (gradients) contain NaN or inf (Optax's semantics).

    A call whose updates are all finite runs ``inner``. A call with a non-finite value returns
    zero updates and keeps the old inner state (the bad gradient never reaches the moments); the
    counters record it. After more than ``max_consecutive_errors`` non-finite calls in a row the
    update is applied anyway (so a run that only produces NaN does not silently stand still).
    Typical use: mixed-precision training with a loss scale.

    The check and the choice are tensor ops (``torch.where``, no ``.item()``): under ``fnn.jit``
    the step compiles once. The inner update always runs and its result is discarded when
    skipped.

    Args:
        inner: the transformation to protect.
        max_consecutive_errors: non-finite calls in a row to skip before applying anyway.

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.apply_if_finite(fnn_optim.sgd(0.1), max_consecutive_errors=3)
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> updates, state = opt.update({"w": torch.tensor([1.0, float("nan")])}, state)
        >>> updates, state.notfinite_count, state.total_notfinite
        ({'w': tensor([0., 0.])}, tensor(1), tensor(1))
    """
    where = "fnn_optim.apply_if_finite"
    _check_member("apply_if_finite", "inner", inner)
    max_errors = _check_int(where, "max_consecutive_errors", max_consecutive_errors, 0)
    inner_update = _accepting_extra(inner.update)

    def init(params: Params) -> ApplyIfFiniteState:
        return ApplyIfFiniteState(
            _zero_count(params),
            torch.ones((), dtype=torch.bool, device=_zero_count(params).device),
            _zero_count(params),
            inner.init(params),
        )

    def update(
        updates: Updates, state: ApplyIfFiniteState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ApplyIfFiniteState]:
        u, udef = _flatten(updates)
        finite = _all_finite(u, updates)
        notfinite_count = torch.where(
            finite, torch.zeros_like(state.notfinite_count), state.notfinite_count + 1
        )
        apply = finite | (notfinite_count > max_errors)
        new, new_inner = inner_update(updates, state.inner_state, params, **extra)
        n, ndef = _flatten(new)
        _check_tree(
            where, ndef, udef, names=("the updates of the inner transformation", "the updates")
        )
        new_state = ApplyIfFiniteState(
            notfinite_count,
            finite,
            state.total_notfinite + (~finite).to(state.total_notfinite.dtype),
            _select_state(where, apply, new_inner, state.inner_state),
        )
        return _unflatten(ndef, _zero_unless(apply, n)), new_state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# lookahead
# --------------------------------------------------------------------------------------------


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    ``count``: int64 0-d, updates so far. ``slow``: the slow weights (a tree like the params;
    the weights to evaluate with between synchronisations). ``fast_state``: the state of the fast
    optimizer. ``hyperparams``: ``{"slow_step_size": 0-d tensor}``.
    """

    count: Tensor
    slow: Any
    fast_state: Any
    hyperparams: dict[str, Tensor]


def lookahead(
    fast: GradientTransformation, sync_period: int, slow_step_size: float | Tensor
) -> GradientTransformation:
    """Lookahead (Zhang, Lucas, Hinton & Ba, 2019, arXiv:1907.08610) around a fast optimizer.

    The parameters you pass are the *fast* weights; the *slow* weights live in the state
    (``state.slow``, initialised to a copy of the params). Every update runs ``fast``; on every
    ``sync_period``-th update (``k``) the slow weights move towards the fast ones and the
    fast weights are reset to them::

        fast = params + fast_update                       (every step)
        if count % k == 0:  slow = slow + slow_step_size * (fast - slow);  fast = slow

    **The pure variant, not Optax's.** Optax's ``lookahead`` needs the params wrapped in
    ``LookaheadParams(fast, slow)``; here the contract stays ``updates, state =
    opt.update(grads, state, params)`` + ``apply_updates``: on a sync step the returned update is
    ``new_slow - params``, so after ``apply_updates`` the params equal the new slow weights (up to
    one rounding of ``params + (new_slow - params)``). The fast optimizer's state is not reset
    at a sync (Optax's ``reset_state=False``, the paper's choice). Between syncs evaluate with
    ``state.slow`` (the paper's evaluation weights); right after a sync the params are them.

    Args:
        fast: the inner ("fast") optimizer, e.g. ``fnn_optim.adam(1e-3)``.
        sync_period: ``k >= 1``, fast steps per slow step (the paper uses 5 or 10).
        slow_step_size: ``alpha`` in ``[0, 1]`` (the paper uses 0.5); a hyperparameter
            (``get_hyperparams(state)["slow_step_size"]``).

    Example:
        >>> import torch, fnn_optim
        >>> opt = fnn_optim.lookahead(fnn_optim.sgd(1.0), sync_period=2, slow_step_size=0.5)
        >>> params = {"w": torch.zeros(1)}
        >>> state = opt.init(params)
        >>> for _ in range(2):
        ...     updates, state = opt.update({"w": torch.ones(1)}, state, params)
        ...     params = fnn_optim.apply_updates(params, updates)
        >>> params, state.slow  # fast went 0 -> -1 -> -2, slow 0 -> 0 + 0.5 * (-2 - 0)
        ({'w': tensor([-1.])}, {'w': tensor([-1.])})
    """
    where = "fnn_optim.lookahead"
    _check_member("lookahead", "fast", fast)
    k = _check_int(where, "sync_period", sync_period, 1)
    if isinstance(slow_step_size, numbers.Real) and not 0 <= slow_step_size <= 1:
        raise ValueError(f"{where}: slow_step_size must be in [0, 1]; got {slow_step_size}.")
    fast_update = _accepting_extra(fast.update)

    def init(params: Params) -> LookaheadState:
        return LookaheadState(
            _zero_count(params),
            _tree.map(lambda p: p.detach().clone(), params),
            fast.init(params),
            _hyperparams(params, slow_step_size=slow_step_size),
        )

    def update(
        updates: Updates, state: LookaheadState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, LookaheadState]:
        _need_params(where, params)
        fast_updates, fast_state = fast_update(updates, state.fast_state, params, **extra)
        u, udef = _flatten(fast_updates)
        p, pdef = _flatten(params)
        s, sdef = _flatten(state.slow)
        _check_tree(where, udef, pdef, names=("the updates", "the params"))
        _check_tree(where, sdef, pdef, names=("the slow weights", "the params"))
        count = state.count + 1
        sync = (count % k) == 0
        alpha = state.hyperparams["slow_step_size"]
        moved = list(_fe.add(p, u))  # the fast weights after this step
        synced = _lerp(s, moved, alpha)
        to_synced = list(_fe.sub(synced, p))
        new_state = LookaheadState(
            count, _unflatten(sdef, _where_leaves(sync, synced, s)), fast_state, state.hyperparams
        )
        return _unflatten(udef, _where_leaves(sync, to_synced, u)), new_state

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# flatten
# --------------------------------------------------------------------------------------------


def _groups(leaves: Sequence[Tensor]) -> list[list[int]]:
    """Leaf indices grouped by (dtype, device), groups in order of first appearance."""
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, x in enumerate(leaves):
        groups.setdefault((x.dtype, x.device), []).append(i)
    return list(groups.values())


def _concat(leaves: Sequence[Tensor], groups: list[list[int]]) -> list[Tensor]:
    return [torch.cat([leaves[i].reshape(-1) for i in idx]) for idx in groups]


def flatten(inner: GradientTransformation) -> GradientTransformation:
    """Run ``inner`` on one contiguous 1-d buffer holding all leaves (Optax's ``flatten``).

    ``inner`` sees a list of 1-d tensors: one per (dtype, device) of the leaves, so the usual
    float32 model gives it ``[buffer]`` with every parameter concatenated (``torch.cat`` of the
    flattened leaves, in ``fnn.tree`` order). Its state is built on that list (``inner``'s state
    is this transformation's state), and its updates are split and reshaped back to the tree.
    An optimizer then runs as a few large kernels instead of a few per parameter, which helps
    eager steps on models with many small tensors; it costs one concatenation of the gradients
    (and of the params, if given) per step.

    Only for element-wise rules (SGD, Adam, RMSprop, ...): per-tensor statistics (trust ratios,
    factored second moments, block RMS clipping, Muon) would see one big vector.

    Example:
        >>> import torch, fnn_optim
        >>> params = {"b": torch.zeros(2), "w": torch.zeros(2, 3)}
        >>> opt = fnn_optim.flatten(fnn_optim.adam(0.1))
        >>> state = opt.init(params)
        >>> [tuple(t.shape) for t in state[0].mu]  # one buffer for all 8 elements
        [(8,)]
        >>> updates, state = opt.update({"b": torch.ones(2), "w": torch.ones(2, 3)}, state, params)
        >>> updates["w"].shape
        torch.Size([2, 3])
    """
    where = "fnn_optim.flatten"
    _check_member("flatten", "inner", inner)
    inner_update = _accepting_extra(inner.update)

    def init(params: Params) -> OptState:
        leaves = _tree.leaves(params)
        return inner.init(_concat(leaves, _groups(leaves)))

    def update(
        updates: Updates, state: OptState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, OptState]:
        u, udef = _flatten(updates)
        groups = _groups(u)
        flat_params = None
        if params is not None:
            p, pdef = _flatten(params)
            _check_tree(where, udef, pdef, names=("the updates", "the params"))
            flat_params = _concat(p, groups)
        new, state = inner_update(_concat(u, groups), state, flat_params, **extra)
        new = list(new) if isinstance(new, list | tuple) else new
        if not isinstance(new, list) or len(new) != len(groups):
            raise ValueError(
                f"{where}: the inner transformation must return a list of {len(groups)} flat "
                f"update buffers (one per dtype and device); got {type(new).__name__}."
            )
        out: list[Any] = [None] * len(u)
        for flat, idx in zip(new, groups, strict=True):
            pieces = torch.split(flat, [u[i].numel() for i in idx])
            for i, piece in zip(idx, pieces, strict=True):
                out[i] = piece.view(u[i].shape)
        return _unflatten(udef, out), state

    return GradientTransformation(init, update)
