"""Move training between ``torch.optim`` and fnn_optim mid-run: convert optimizer states.

:func:`from_torch_state` turns ``torch_optimizer.state_dict()`` into the state of the matching
fnn_optim optimizer; :func:`to_torch_state` turns an fnn_optim state into a dict that
``torch_optimizer.load_state_dict(...)`` accepts. After either conversion both libraries take
the same next steps (tested to float64 rounding for every optimizer below).

**Which optimizers.** ``opt`` is recognised by the layout of its state (the chain of block
states the alias builds), and paired with its torch twin (per-parameter entries in brackets):

- ``sgd`` (momentum, dampening, nesterov): ``SGD`` (``momentum_buffer``);
- ``adam``, ``amsgrad``: ``Adam`` (``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``
  with amsgrad); ``adamw``: ``AdamW`` (the same entries);
- ``adamax``: ``Adamax`` (``step``, ``exp_avg``, ``exp_inf``);
- ``nadam``: ``NAdam`` (``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``);
- ``radam``: ``RAdam`` (``step``, ``exp_avg``, ``exp_avg_sq``);
- ``adagrad``: ``Adagrad`` (``step``, ``sum``);
- ``adadelta``: ``Adadelta`` (``step``, ``square_avg``, ``acc_delta``);
- ``rmsprop``: ``RMSprop`` (``step``, ``square_avg``, ``momentum_buffer`` with momentum,
  ``grad_avg`` when centered);
- ``rprop``: ``Rprop`` (``step``, ``prev``, ``step_size``);
- ``asgd``: ``ASGD`` (``step``, ``eta``, ``mu``, ``ax``).

Anything else (``lbfgs``, optimizers torch does not have, wrappers such as ``inject_hyperparams``
or ``MultiSteps``, chains with extra transforms) raises a ``ValueError`` saying why; convert the
state of the inner optimizer yourself in that case.

**Parameters.** torch numbers parameters by their position in ``param_groups[0]["params"]``;
fnn params are a nested dict. ``names`` lists the dotted parameter names in torch's order, e.g.
``[n for n, _ in model.named_parameters()]``. By default the dotted names of ``params`` in the
dicts' *insertion* order are used (for ``fnn.nn`` models that is ``torch.nn``'s order), or, in
:func:`from_torch_state`, the ``param_names`` torch stores when the optimizer was built from
``model.named_parameters()`` (when they name exactly the parameters of ``params``). Only one
param group is supported: an fnn_optim optimizer has one set of hyperparameters.

**Hyperparameters** of the param group (``lr``, ``betas``, ``eps``, ``weight_decay``,
``momentum``, ...) are written into the fnn state's ``hyperparams`` (as
:func:`~fnn_optim.set_hyperparams` would) and back. A hyperparameter driven by a schedule is left
to its schedule (torch's value is not copied); :func:`to_torch_state` writes the value the
schedule gave at the last step. Options that change the *structure* of the state (``amsgrad``,
``centered``, ``nesterov``, decoupled weight decay, and whether ``momentum``, ``weight_decay`` or
``lr_decay`` is zero, in which case the alias adds no transform for it) cannot be changed by a
conversion: ``opt`` must be built with the same options, else a ``ValueError`` names the option.

**Step count.** torch keeps ``step`` per parameter (a float tensor, or a number in old
checkpoints): they must all be equal and become the int64 ``count`` of every block.
``torch.optim.SGD`` keeps no step count: pass ``count=`` (needed when the learning rate is a
schedule), otherwise ``count`` is 1 when torch holds momentum buffers and 0 when it does not.

**Check.** With ``check=True`` (the default) both functions also run ``opt`` and the torch twin
for three steps on a tiny float64 problem from the same converted state and raise if they
differ: this catches options the state does not show (e.g. ``nesterov``, or a hand-made chain
that differs from the alias). :func:`to_torch_state` always runs it for ``sgd`` with momentum,
to find ``nesterov``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fnn import tree as _tree
from fnn_optim._base import GradientTransformation, OptState, Params, set_hyperparams
from fnn_optim._transforms import (
    AddDecayedWeightsState,
    ScaleByAdaDeltaState,
    ScaleByAdamaxState,
    ScaleByAdamState,
    ScaleByAsgdState,
    ScaleByLearningRateState,
    ScaleByNadamState,
    ScaleByRAdamState,
    ScaleByRmsState,
    ScaleByRpropState,
    ScaleByRssState,
    ScaleByRStdDevState,
    ScaleByTimeDecayState,
    TraceState,
)

__all__ = ["from_torch_state", "to_torch_state"]

# --------------------------------------------------------------------------------------------
# The table: how each optimizer's state maps
# --------------------------------------------------------------------------------------------


class _Hyper(NamedTuple):
    """A torch param-group entry (``group[key]``, or ``group[key][index]`` for tuples) stored as
    ``hyperparams[name]`` of the block state ``owner``.

    ``mode`` says what happens when ``owner`` is not in the chain (the alias adds no transform
    for a zero value): ``"required"`` (always there), ``"optional"`` (torch's value must be 0),
    ``"switch"`` (torch's value must be 0, and must be nonzero when ``owner`` is there: it has
    state, e.g. momentum buffers), ``"ignored"`` (torch ignores the value then, e.g. dampening
    without momentum).
    """

    key: str
    index: int | None
    owner: type
    name: str
    mode: str = "required"


class _Entry(NamedTuple):
    """A torch per-parameter state entry ``key`` stored in field ``field`` of block ``owner``.

    ``per_param``: a tensor like the parameter (a tree like the params in fnn), else a 0-d
    scalar torch repeats for every parameter (one 0-d tensor in fnn). ``init``: torch's initial
    value, a number or the name of a group entry (``"lr"``). ``lazy``: torch creates it only at
    the first step (SGD's ``momentum_buffer``).
    """

    key: str
    owner: type
    field: str
    per_param: bool = True
    init: float | str = 0.0
    lazy: bool = False


class _Kind(NamedTuple):
    alias: str  # the fnn_optim alias, for messages
    torch_name: str  # the torch.optim class, for messages
    ctor: Callable[..., torch.optim.Optimizer]
    pattern: tuple[tuple[type, bool], ...]  # (block state type, optional) in chain order
    hypers: tuple[_Hyper, ...]
    entries: tuple[_Entry, ...]
    has_step: bool = True
    # torch group flags fixed by the layout: name -> function of the chain's states
    flags: tuple[tuple[str, Callable[[dict[type, Any]], Any]], ...] = ()
    # fnn-only hyperparameters torch does not have: (owner, name, torch's fixed value)
    fixed: tuple[tuple[type, str, float], ...] = ()
    # torch group entries read from a fresh `opt.init` (initial values): key -> (owner, field)
    extras: tuple[tuple[str, type, str], ...] = ()


_LR, _WD, _TRACE = ScaleByLearningRateState, AddDecayedWeightsState, TraceState
_ADAM, _ADAMAX, _NADAM, _RADAM = (
    ScaleByAdamState,
    ScaleByAdamaxState,
    ScaleByNadamState,
    ScaleByRAdamState,
)
_RSS, _TD, _ADADELTA = ScaleByRssState, ScaleByTimeDecayState, ScaleByAdaDeltaState
_RMS, _STDDEV, _RPROP, _ASGD = (
    ScaleByRmsState,
    ScaleByRStdDevState,
    ScaleByRpropState,
    ScaleByAsgdState,
)

_H_LR = _Hyper("lr", None, _LR, "learning_rate")
_H_WD = _Hyper("weight_decay", None, _WD, "weight_decay", "optional")


def _betas(owner: type) -> tuple[_Hyper, ...]:
    return (
        _Hyper("betas", 0, owner, "b1"),
        _Hyper("betas", 1, owner, "b2"),
        _Hyper("eps", None, owner, "eps"),
    )


def _moments(owner: type) -> tuple[_Entry, ...]:
    return (_Entry("exp_avg", owner, "mu"), _Entry("exp_avg_sq", owner, "nu"))


def _amsgrad(layout: dict[type, Any]) -> bool:
    return layout[_ADAM].nu_max is not None


_OPT, _REQ = True, False
_ADAM_ENTRIES = (*_moments(_ADAM), _Entry("max_exp_avg_sq", _ADAM, "nu_max"))
_RMS_HYPERS = (
    _H_LR,
    _Hyper("momentum", None, _TRACE, "momentum", "switch"),
    _H_WD,
)

_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "sgd",
        "SGD",
        torch.optim.SGD,
        ((_WD, _OPT), (_TRACE, _OPT), (_LR, _REQ)),
        (
            _H_LR,
            _Hyper("momentum", None, _TRACE, "momentum", "switch"),
            _Hyper("dampening", None, _TRACE, "dampening", "ignored"),
            _H_WD,
        ),
        (_Entry("momentum_buffer", _TRACE, "trace", lazy=True),),
        has_step=False,
    ),
    _Kind(
        "adam",
        "Adam",
        torch.optim.Adam,
        ((_WD, _OPT), (_ADAM, _REQ), (_LR, _REQ)),
        (_H_LR, *_betas(_ADAM), _H_WD),
        _ADAM_ENTRIES,
        flags=(("amsgrad", _amsgrad), ("decoupled_weight_decay", lambda _: False)),
        fixed=((_ADAM, "eps_root", 0.0),),
    ),
    _Kind(
        "adamw",
        "AdamW",
        torch.optim.Adam,  # torch.optim.AdamW is Adam(decoupled_weight_decay=True)
        ((_ADAM, _REQ), (_WD, _REQ), (_LR, _REQ)),
        (_H_LR, *_betas(_ADAM), _H_WD),
        _ADAM_ENTRIES,
        flags=(("amsgrad", _amsgrad), ("decoupled_weight_decay", lambda _: True)),
        fixed=((_ADAM, "eps_root", 0.0),),
    ),
    _Kind(
        "adamax",
        "Adamax",
        torch.optim.Adamax,
        ((_WD, _OPT), (_ADAMAX, _REQ), (_LR, _REQ)),
        (_H_LR, *_betas(_ADAMAX), _H_WD),
        (_Entry("exp_avg", _ADAMAX, "mu"), _Entry("exp_inf", _ADAMAX, "nu")),
    ),
    _Kind(
        "nadam",
        "NAdam",
        torch.optim.NAdam,
        ((_WD, _OPT), (_NADAM, _REQ), (_LR, _REQ)),
        (_H_LR, *_betas(_NADAM), _Hyper("momentum_decay", None, _NADAM, "momentum_decay"), _H_WD),
        (_Entry("mu_product", _NADAM, "mu_product", False, 1.0), *_moments(_NADAM)),
        flags=(("decoupled_weight_decay", lambda _: False),),
    ),
    _Kind(
        "nadam",
        "NAdam",
        torch.optim.NAdam,
        ((_NADAM, _REQ), (_WD, _REQ), (_LR, _REQ)),
        (_H_LR, *_betas(_NADAM), _Hyper("momentum_decay", None, _NADAM, "momentum_decay"), _H_WD),
        (_Entry("mu_product", _NADAM, "mu_product", False, 1.0), *_moments(_NADAM)),
        flags=(("decoupled_weight_decay", lambda _: True),),
    ),
    _Kind(
        "radam",
        "RAdam",
        torch.optim.RAdam,
        ((_WD, _OPT), (_RADAM, _REQ), (_LR, _REQ)),
        (_H_LR, *_betas(_RADAM), _H_WD),
        _moments(_RADAM),
        flags=(("decoupled_weight_decay", lambda _: False),),
        fixed=((_RADAM, "threshold", 5.0),),
    ),
    _Kind(
        "radam",
        "RAdam",
        torch.optim.RAdam,
        ((_RADAM, _REQ), (_WD, _REQ), (_LR, _REQ)),
        (_H_LR, *_betas(_RADAM), _H_WD),
        _moments(_RADAM),
        flags=(("decoupled_weight_decay", lambda _: True),),
        fixed=((_RADAM, "threshold", 5.0),),
    ),
    _Kind(
        "adagrad",
        "Adagrad",
        torch.optim.Adagrad,
        ((_WD, _OPT), (_RSS, _REQ), (_TD, _OPT), (_LR, _REQ)),
        (
            _H_LR,
            _Hyper("lr_decay", None, _TD, "lr_decay", "optional"),
            _Hyper("eps", None, _RSS, "eps"),
            _H_WD,
        ),
        (_Entry("sum", _RSS, "sum_of_squares", init="initial_accumulator_value"),),
        extras=(("initial_accumulator_value", _RSS, "sum_of_squares"),),
    ),
    _Kind(
        "adadelta",
        "Adadelta",
        torch.optim.Adadelta,
        ((_WD, _OPT), (_ADADELTA, _REQ), (_LR, _REQ)),
        (
            _H_LR,
            _Hyper("rho", None, _ADADELTA, "rho"),
            _Hyper("eps", None, _ADADELTA, "eps"),
            _H_WD,
        ),
        (_Entry("square_avg", _ADADELTA, "e_g"), _Entry("acc_delta", _ADADELTA, "e_x")),
    ),
    _Kind(
        "rmsprop",
        "RMSprop",
        torch.optim.RMSprop,
        ((_WD, _OPT), (_RMS, _REQ), (_TRACE, _OPT), (_LR, _REQ)),
        (*_RMS_HYPERS, _Hyper("alpha", None, _RMS, "decay"), _Hyper("eps", None, _RMS, "eps")),
        (_Entry("square_avg", _RMS, "nu"), _Entry("momentum_buffer", _TRACE, "trace")),
        flags=(("centered", lambda _: False),),
        fixed=((_TRACE, "dampening", 0.0),),
    ),
    _Kind(
        "rmsprop",
        "RMSprop",
        torch.optim.RMSprop,
        ((_WD, _OPT), (_STDDEV, _REQ), (_TRACE, _OPT), (_LR, _REQ)),
        (
            *_RMS_HYPERS,
            _Hyper("alpha", None, _STDDEV, "decay"),
            _Hyper("eps", None, _STDDEV, "eps"),
        ),
        (
            _Entry("square_avg", _STDDEV, "nu"),
            _Entry("momentum_buffer", _TRACE, "trace"),
            _Entry("grad_avg", _STDDEV, "mu"),
        ),
        flags=(("centered", lambda _: True),),
        fixed=((_TRACE, "dampening", 0.0),),
    ),
    _Kind(
        "rprop",
        "Rprop",
        torch.optim.Rprop,
        ((_RPROP, _REQ),),
        (
            _Hyper("etas", 0, _RPROP, "eta_minus"),
            _Hyper("etas", 1, _RPROP, "eta_plus"),
            _Hyper("step_sizes", 0, _RPROP, "min_step_size"),
            _Hyper("step_sizes", 1, _RPROP, "max_step_size"),
        ),
        (_Entry("prev", _RPROP, "prev"), _Entry("step_size", _RPROP, "step_sizes", init="lr")),
        extras=(("lr", _RPROP, "step_sizes"),),
    ),
    _Kind(
        "asgd",
        "ASGD",
        torch.optim.ASGD,
        ((_WD, _OPT), (_ASGD, _REQ)),
        (
            _Hyper("lr", None, _ASGD, "learning_rate"),
            _Hyper("lambd", None, _ASGD, "lambd"),
            _Hyper("alpha", None, _ASGD, "alpha"),
            _Hyper("t0", None, _ASGD, "t0"),
            _H_WD,
        ),
        (
            _Entry("eta", _ASGD, "eta", False, "lr"),
            _Entry("mu", _ASGD, "mu", False, 1.0),
            _Entry("ax", _ASGD, "ax"),
        ),
    ),
)

_SUPPORTED = (
    "sgd, adam, adamw, amsgrad, adamax, nadam, radam, adagrad, adadelta, rmsprop, rprop, asgd"
)
# torch group entries that only change how torch computes, not what: the probe turns them off.
_IMPLEMENTATION_FLAGS = {
    "foreach": False,
    "fused": None,
    "capturable": False,
    "differentiable": False,
}


# --------------------------------------------------------------------------------------------
# Recognising the optimizer
# --------------------------------------------------------------------------------------------


def _match(types: Sequence[type], pattern: tuple[tuple[type, bool], ...]) -> bool:
    i = 0
    for t, optional in pattern:
        if i < len(types) and types[i] is t:
            i += 1
        elif not optional:
            return False
    return i == len(types)


def _describe(state: Any) -> str:
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        return "a chain of (" + ", ".join(type(s).__name__ for s in state) + ")"
    return f"a {type(state).__name__}"


def _identify(where: str, state: OptState) -> tuple[_Kind, tuple[Any, ...]]:
    """The kind of ``state`` (a chain's tuple of block states) and the tuple itself."""
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        types = [type(s) for s in state]
        for kind in _KINDS:
            if _match(types, kind.pattern):
                return kind, state
    names = _describe(state)
    reason = ""
    if "Lbfgs" in names or "Linesearch" in names:
        reason = (
            " torch.optim.LBFGS runs several iterations and its own closure-driven line search "
            "inside one step() and keeps a different state (d, t, old_dirs, old_stps, ro, "
            "H_diag, prev_flat_grad, prev_loss, func_evals, n_iter), so the two states do not "
            "map one to one."
        )
    raise ValueError(
        f"{where}: cannot map this optimizer to a torch.optim one: its state is {names}. "
        f"Supported: the optimizers made by fnn_optim.{{{_SUPPORTED}}} (each has a torch.optim "
        "twin). Optimizers torch does not have, wrappers (inject_hyperparams, MultiSteps, "
        "masked, ...) and chains with extra transforms are not supported; convert the state of "
        f"the inner optimizer instead.{reason}"
    )


def _by_type(chain_state: tuple[Any, ...]) -> dict[type, Any]:
    return {type(s): s for s in chain_state}


def _index_of(chain_state: tuple[Any, ...], owner: type) -> int:
    return next(i for i, s in enumerate(chain_state) if type(s) is owner)


def _present(kind: _Kind, layout: dict[type, Any]) -> list[_Entry]:
    """The entries torch keeps for this layout (the owner block is there and the field set)."""
    return [
        e
        for e in kind.entries
        if e.owner in layout and getattr(layout[e.owner], e.field) is not None
    ]


def _scheduled(comp: Any) -> dict[str, None]:
    return getattr(comp, "scheduled", None) or {}


def _ctor_names(ctor: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(ctor).parameters) - {"self", "params"}


# --------------------------------------------------------------------------------------------
# Parameters: torch's order and fnn's leaves
# --------------------------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _insertion_order_names(params: Params) -> list[str]:
    """Dotted names of the leaves of ``params`` with dicts in insertion order (not sorted)."""
    out: list[str] = []

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                visit(v, _join(prefix, str(k)))
        elif isinstance(node, tuple) and hasattr(node, "_fields"):
            for f in node._fields:
                visit(getattr(node, f), _join(prefix, f))
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                visit(v, _join(prefix, str(i)))
        else:
            out.extend(_join(prefix, p) for p in _tree.paths(node))

    visit(params, "")
    return out


def _order(
    where: str, params: Params, names: Sequence[str] | None, torch_names: Any = None
) -> list[tuple[str, int]]:
    """``[(name, index of the leaf in fnn.tree.leaves(params)), ...]`` in torch's order."""
    pairs, _ = _tree.flatten_with_path(params)
    for path, leaf in pairs:
        if not isinstance(leaf, Tensor):
            raise TypeError(
                f"{where}: params must be a tree of tensors; {path!r} is {type(leaf).__name__}."
            )
    paths = [p for p, _ in pairs]
    index = {p: i for i, p in enumerate(paths)}
    if len(index) != len(paths):
        raise ValueError(f"{where}: the dotted names of params are not unique: {paths}.")
    if names is None:
        if torch_names is not None and sorted(map(str, torch_names)) == sorted(paths):
            names = [str(n) for n in torch_names]
        else:
            names = _insertion_order_names(params)
            if sorted(names) != sorted(paths):  # an unusual tree: no insertion order to read
                raise ValueError(
                    f"{where}: cannot read the order of the parameters of this tree; pass "
                    "names=[...] (the dotted names in torch's order)."
                )
    else:
        names = list(names)
        bad = [n for n in names if not isinstance(n, str)]
        unknown = [n for n in names if n not in index]
        missing = [p for p in paths if p not in set(names)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if bad or unknown or missing or repeated:
            raise ValueError(
                f"{where}: names must list every parameter of params once, in torch's order "
                "(e.g. [n for n, _ in model.named_parameters()]); "
                + "; ".join(
                    f"{what}: {items}"
                    for what, items in (
                        ("not strings", bad),
                        ("unknown", unknown),
                        ("missing", missing),
                        ("repeated", repeated),
                    )
                    if items
                )
                + f". The dotted names of params are {paths}."
            )
    return [(n, index[n]) for n in names]


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def _number(where: str, what: str, value: Any) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{where}: {what} must be a number or a one-element tensor; got {value!r}.")


def _step(where: str, name: str, value: Any) -> int:
    v = _number(where, f"the 'step' of parameter {name!r}", value)
    if not (math.isfinite(v) and v >= 0 and v == int(v)):
        raise ValueError(
            f"{where}: the 'step' of parameter {name!r} must be a whole number >= 0; got {v}."
        )
    return int(v)


def _group_value(group: dict[str, Any], h: _Hyper) -> Any:
    value = group[h.key]
    return value if h.index is None else value[h.index]


def _scalar_dtype() -> torch.dtype:
    # torch.optim keeps its per-parameter scalars (step, ...) in this dtype (_get_scalar_dtype).
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _common_count(where: str, chain_state: tuple[Any, ...]) -> int:
    counts = {
        f"{i}.count ({type(s).__name__})": int(s.count)
        for i, s in enumerate(chain_state)
        if "count" in s._fields
    }
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"{where}: the step counts of the blocks of this state differ ({counts}); torch "
            "keeps one step count per parameter. Was the state changed by hand?"
        )
    return next(iter(counts.values()), 0)


# --------------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------------


def _check_group(where: str, kind: _Kind, layout: dict[type, Any], group: dict[str, Any]) -> None:
    """Raise unless the torch param group fits ``opt``'s layout (keys, flags, optional terms)."""
    cls = f"torch.optim.{kind.torch_name}"
    known = set().union(*(_ctor_names(k.ctor) for k in _KINDS))
    own = _ctor_names(kind.ctor)
    keys = set(group) - {"params", "param_names"}
    foreign = sorted((keys & known) - own)
    if foreign:
        like = sorted({k.torch_name for k in _KINDS if (keys & known) <= _ctor_names(k.ctor)})
        raise ValueError(
            f"{where}: `opt` is fnn_optim.{kind.alias}, whose twin is {cls}, but the torch param "
            f"group has entries {foreign} that {cls} does not have"
            + (f"; it looks like the state of torch.optim.{' or '.join(like)}" if like else "")
            + ". Build opt with the fnn_optim optimizer that matches the torch one."
        )
    for h in kind.hypers:
        if h.key not in group:
            raise ValueError(
                f"{where}: the torch param group has no entry {h.key!r}: expected the "
                f"state_dict() of {cls} (the twin of fnn_optim.{kind.alias}); its entries are "
                f"{sorted(keys)}."
            )
    if group.get("maximize", False):
        raise ValueError(
            f"{where}: the torch optimizer maximizes (maximize=True); fnn_optim always "
            "minimizes. Negate the loss instead and build torch's optimizer with maximize=False."
        )
    for h in kind.hypers:
        value = _number(where, f"the torch param group's {h.key!r}", _group_value(group, h))
        present = h.owner in layout
        if not present and h.mode in ("optional", "switch") and value != 0:
            raise ValueError(
                f"{where}: the torch param group has {h.key}={value}, but `opt` has no "
                f"{h.key} term (fnn_optim.{kind.alias} built with {h.key}=0 adds no transform "
                f"for it). Build opt with {h.key}={value}."
            )
        if present and h.mode == "switch" and value == 0:
            raise ValueError(
                f"{where}: the torch param group has {h.key}=0 (torch keeps no buffers for it), "
                f"but `opt` was built with a nonzero {h.key}. Build opt with {h.key}=0."
            )
    wd = _number(where, "weight_decay", group.get("weight_decay", 0))
    for name, expected in kind.flags:
        if name not in group:
            continue  # an older torch: its state entries are checked instead
        if name == "decoupled_weight_decay" and wd == 0:
            continue  # coupled and decoupled decay of 0 are the same
        want = expected(layout)
        if bool(group[name]) != want:
            raise ValueError(
                f"{where}: the torch param group has {name}={group[name]!r}, but `opt` "
                f"(fnn_optim.{kind.alias}) was built with {name}={want}"
                + (
                    " (fnn_optim.adamw decouples weight decay, fnn_optim.adam couples it)"
                    if name == "decoupled_weight_decay" and kind.alias in ("adam", "adamw")
                    else ""
                )
                + ". Build opt with the same option."
            )


def _check_fixed(where: str, kind: _Kind, layout: dict[type, Any]) -> None:
    for owner, name, value in kind.fixed:
        if owner in layout:
            got = float(layout[owner].hyperparams[name])
            if got != value:
                raise ValueError(
                    f"{where}: `opt` has {name}={got:.7g}, which torch.optim.{kind.torch_name} "
                    f"does not have (it computes as {name}={value:g}). Build opt with "
                    f"{name}={value:g} to move between the two."
                )


def _set_hypers(kind: _Kind, chain_state: tuple[Any, ...], group: dict[str, Any]) -> Any:
    """``set_hyperparams`` with the torch group's values (schedule-driven entries are skipped)."""
    values: dict[str, float] = {}
    for h in kind.hypers:
        if not any(type(s) is h.owner for s in chain_state):
            continue
        i = _index_of(chain_state, h.owner)
        if h.name in _scheduled(chain_state[i]):
            continue
        values[f"{i}.{h.name}"] = _number("", h.key, _group_value(group, h))
    return set_hyperparams(chain_state, **values)


def _torch_kwargs(kind: _Kind, chain_state: tuple[Any, ...], initial: tuple[Any, ...]) -> dict:
    """The torch constructor arguments for the hyperparameters of an fnn state."""
    layout = _by_type(chain_state)
    kwargs: dict[str, Any] = {}
    tuples: dict[str, dict[int, float]] = {}
    for h in kind.hypers:
        value = float(layout[h.owner].hyperparams[h.name]) if h.owner in layout else 0.0
        if h.index is None:
            kwargs[h.key] = value
        else:
            tuples.setdefault(h.key, {})[h.index] = value
    for key, parts in tuples.items():
        kwargs[key] = tuple(parts[i] for i in sorted(parts))
    own = _ctor_names(kind.ctor)
    kwargs.update({name: fn(layout) for name, fn in kind.flags if name in own})
    first = _by_type(initial)
    for key, owner, field in kind.extras:
        kwargs[key] = float(_tree.leaves(getattr(first[owner], field))[0].flatten()[0])
    return kwargs


def _torch_group(where: str, kind: _Kind, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A complete torch param group (every entry torch's constructor sets), without params."""
    try:
        made = kind.ctor([torch.zeros(1, requires_grad=True)], **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{where}: torch.optim.{kind.torch_name} refuses the hyperparameters of this state "
            f"({kwargs}): {e}"
        ) from None
    return {k: v for k, v in made.param_groups[0].items() if k != "params"}


# --------------------------------------------------------------------------------------------
# States
# --------------------------------------------------------------------------------------------


def _to_torch_entries(
    where: str,
    kind: _Kind,
    chain_state: tuple[Any, ...],
    params: Params,
    order: list[tuple[str, int]],
) -> dict[int, dict[str, Any]]:
    """torch's per-parameter state dicts ``{position: {key: tensor}}`` (new tensors)."""
    layout = _by_type(chain_state)
    count = _common_count(where, chain_state) if kind.has_step else 0
    treedef = _tree.structure(params)
    # A lazy entry (SGD's momentum buffer) exists in torch once its block has stepped.
    entries = [
        e for e in _present(kind, layout) if not (e.lazy and int(layout[e.owner].count) == 0)
    ]
    leaves: dict[str, list[Tensor]] = {}
    for e in entries:
        value = getattr(layout[e.owner], e.field)
        if e.per_param:
            if _tree.structure(value) != treedef:
                i = _index_of(chain_state, e.owner)
                raise ValueError(
                    f"{where}: the state's {i}.{e.field} ({e.owner.__name__}) does not have the "
                    "structure of params: "
                    + _tree.structure_mismatch(_tree.structure(value), treedef)
                    + ". Pass the params the state was made for."
                )
            leaves[e.key] = _tree.leaves(value)
        else:
            leaves[e.key] = [value]
    out: dict[int, dict[str, Any]] = {}
    for position, (_, leaf) in enumerate(order):
        entry: dict[str, Any] = {}
        if kind.has_step:
            entry["step"] = torch.tensor(float(count), dtype=_scalar_dtype())
        for e in entries:
            value = leaves[e.key][leaf] if e.per_param else leaves[e.key][0]
            entry[e.key] = value.detach().clone()
        if entry:
            out[position] = entry
    return out


def _torch_initial_entry(
    kind: _Kind, layout: dict[type, Any], group: dict[str, Any], like: Tensor
) -> dict[str, Any]:
    """The state torch creates for a parameter at its first step (before stepping)."""
    entry: dict[str, Any] = {"step": torch.zeros(())} if kind.has_step else {}
    for e in _present(kind, layout):
        if e.lazy:
            continue
        init = group[e.init] if isinstance(e.init, str) else e.init
        value = _number("", e.key, init)
        entry[e.key] = torch.full_like(like, value) if e.per_param else torch.tensor(value)
    return entry


def _from_torch_entries(
    where: str,
    kind: _Kind,
    template: tuple[Any, ...],
    group: dict[str, Any],
    torch_state: dict[Any, Any],
    params: Params,
    order: list[tuple[str, int]],
    count: int | None,
) -> tuple[Any, ...]:
    """The fnn chain state holding torch's per-parameter entries (hyperparams untouched)."""
    cls = f"torch.optim.{kind.torch_name}"
    layout = _by_type(template)
    present = _present(kind, layout)
    p_leaves, treedef = _tree.flatten(params)
    ids = list(group["params"])
    raw = []
    for (name, _), i in zip(order, ids, strict=True):
        entry = torch_state.get(i)
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise TypeError(
                f"{where}: torch's state for parameter {name!r} (index {i}) must be a dict; got "
                f"{type(entry).__name__}."
            )
        raw.append({k: v for k, v in entry.items() if v is not None})
    empty = [name for (name, _), e in zip(order, raw, strict=True) if not e]
    if empty and len(empty) < len(raw):
        has = next(name for (name, _), e in zip(order, raw, strict=True) if e)
        raise ValueError(
            f"{where}: torch has no state for parameter {empty[0]!r} but has state for {has!r}: "
            "torch.optim skips the parameters whose .grad is None, so their states fell behind. "
            "fnn_optim keeps one step count for all parameters and cannot represent this; drop "
            "those parameters from params (and names) or give them gradients."
        )
    if empty:  # torch has not stepped yet: the state its first step would start from
        raw = [_torch_initial_entry(kind, layout, group, p_leaves[leaf]) for _, leaf in order]
    # Keys
    lazy_absent = all(not any(e.key in r for r in raw) for e in present if e.lazy)
    want = {e.key for e in present if not (e.lazy and lazy_absent)}
    if kind.has_step:
        want.add("step")
    for (name, _), i, r in zip(order, ids, raw, strict=True):
        missing = sorted(want - set(r))
        extra = sorted(set(r) - want)
        if missing or extra:
            raise ValueError(
                f"{where}: torch's state for parameter {name!r} (index {i}) has entries "
                f"{sorted(r)}; fnn_optim.{kind.alias} as built maps {sorted(want)} ({cls})"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
                + ". Is this the state of another optimizer, or was opt built with other options "
                "(amsgrad, momentum, centered)?"
            )
    # Step count
    if kind.has_step:
        steps = {
            name: _step(where, name, r["step"]) for (name, _), r in zip(order, raw, strict=True)
        }
        if len(set(steps.values())) > 1:
            raise ValueError(
                f"{where}: torch's 'step' differs between parameters ({steps}); fnn_optim keeps "
                "one step count for all parameters, so this state cannot be converted."
            )
        step = next(iter(steps.values()), 0)
        if count is not None and count != step:
            raise ValueError(
                f"{where}: count={count} was given but torch's state records step {step}; leave "
                "count out (it is for optimizers whose torch state has no step, i.e. SGD)."
            )
    else:
        has_buffers = any(e.lazy for e in present) and not lazy_absent
        if count is None:
            if any(_scheduled(s) for s in template):
                raise ValueError(
                    f"{where}: {cls} keeps no step count, and `opt` has a schedule: pass "
                    "count=<the number of steps taken> so the schedule continues where torch is."
                )
            count = 1 if has_buffers else 0
        elif has_buffers and count < 1:
            raise ValueError(
                f"{where}: count={count}, but torch holds momentum buffers, so at least one "
                "step was taken."
            )
        step = count
    # Tensors
    per_field: dict[tuple[type, str], Any] = {}
    for e in present:
        if e.lazy and lazy_absent:
            continue
        if e.per_param:
            tmpl = _tree.leaves(getattr(layout[e.owner], e.field))
            out: list[Tensor | None] = [None] * len(tmpl)
            for (name, leaf), r in zip(order, raw, strict=True):
                value = r[e.key]
                like = tmpl[leaf]
                if not isinstance(value, Tensor):
                    raise TypeError(
                        f"{where}: torch's entry {e.key!r} of parameter {name!r} must be a "
                        f"tensor; got {type(value).__name__}."
                    )
                if tuple(value.shape) != tuple(like.shape):
                    raise ValueError(
                        f"{where}: torch's entry {e.key!r} of parameter {name!r} has shape "
                        f"{tuple(value.shape)}; the parameter has shape {tuple(like.shape)}. Are "
                        "names in torch's order (pass names=[...])?"
                    )
                out[leaf] = value.detach().to(device=like.device, dtype=like.dtype, copy=True)
            per_field[(e.owner, e.field)] = _tree.unflatten(treedef, out)
        else:
            values = {
                name: _number(where, f"torch's entry {e.key!r} of {name!r}", r[e.key])
                for (name, _), r in zip(order, raw, strict=True)
            }
            first = next(iter(values.values()))
            if any(not math.isclose(v, first, rel_tol=1e-12, abs_tol=0.0) for v in values.values()):
                raise ValueError(
                    f"{where}: torch's entry {e.key!r} differs between parameters ({values}); "
                    "fnn_optim keeps one value for all parameters."
                )
            like = getattr(layout[e.owner], e.field)
            per_field[(e.owner, e.field)] = torch.tensor(
                first, dtype=like.dtype, device=like.device
            )
    comps = []
    for s in template:
        repl = {f: v for (owner, f), v in per_field.items() if owner is type(s)}
        if "count" in s._fields:
            # Without momentum buffers SGD's next step starts them afresh: its trace's count is 0.
            fresh_trace = type(s) is _TRACE and not kind.has_step and lazy_absent
            repl["count"] = torch.full_like(s.count, 0 if fresh_trace else step)
        comps.append(s._replace(**repl))
    return tuple(comps)


# --------------------------------------------------------------------------------------------
# The check: both take the same steps on a tiny problem
# --------------------------------------------------------------------------------------------

_PROBE_PARAM = (0.5, -1.5, 2.0, -0.25)
_PROBE_GRADS = ((1.0, -2.0, 0.5, 3.0), (0.7, 1.5, -0.4, 2.5), (-1.2, 0.9, 0.6, 1.1))


def _probe_params() -> dict[str, Tensor]:
    return {"w": torch.tensor(_PROBE_PARAM, dtype=torch.float64)}


def _probe(opt: GradientTransformation, kind: _Kind, group: dict[str, Any]) -> str | None:
    """Run ``opt`` and torch's twin (with ``group``) for 3 steps from the same converted state.

    Returns ``None`` when they agree, else a description of the difference.
    """
    where = "probe"
    params = _probe_params()
    try:
        state = _set_hypers(kind, opt.init(params), group)
        group = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        group.update({k: v for k, v in _IMPLEMENTATION_FLAGS.items() if k in group})
        if "lr" in group and _number(where, "lr", group["lr"]) == 0:
            group["lr"] = 0.1  # a learning rate of 0 would hide every difference
        entries = _to_torch_entries(where, kind, state, params, [("w", 0)])
        w = params["w"].clone().requires_grad_(True)
        own = _ctor_names(kind.ctor)
        made = kind.ctor([w], **{k: v for k, v in group.items() if k in own})
        made.load_state_dict({"state": entries, "param_groups": [{**group, "params": [0]}]})
        lr_at = next((i for i, s in enumerate(state) if "learning_rate" in _scheduled(s)), None)
        p = params
        for g in _PROBE_GRADS:
            grad = torch.tensor(g, dtype=torch.float64)
            updates, state = opt.update({"w": grad}, state, p)
            p = {"w": p["w"] + updates["w"]}
            if lr_at is not None:  # torch follows the schedule's value
                made.param_groups[0]["lr"] = float(state[lr_at].hyperparams["learning_rate"])
            w.grad = grad.clone()
            made.step()
    except Exception as e:  # any failure means that the two do not match
        return f"running them failed ({type(e).__name__}: {e})"
    want = w.detach() - params["w"]
    got = p["w"] - params["w"]
    err = float((got - want).abs().max())
    if err <= 1e-5 * float(want.abs().max()) + 1e-12:
        return None
    return f"after 3 steps fnn_optim moved by {got.tolist()}, torch by {want.tolist()}"


def _summary(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in group.items() if k not in ("params", "param_names"))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _single_group(where: str, torch_state_dict: Any) -> tuple[dict[str, Any], dict[Any, Any]]:
    if not (
        isinstance(torch_state_dict, dict)
        and "state" in torch_state_dict
        and "param_groups" in torch_state_dict
    ):
        raise TypeError(
            f"{where}: expected a torch optimizer's state_dict() (a dict with 'state' and "
            f"'param_groups'); got {type(torch_state_dict).__name__}"
            + (
                f" with keys {sorted(torch_state_dict)}"
                if isinstance(torch_state_dict, dict)
                else ""
            )
            + "."
        )
    groups = torch_state_dict["param_groups"]
    if len(groups) != 1:
        raise ValueError(
            f"{where}: the torch state has {len(groups)} param groups; only one can be converted "
            "(an fnn_optim optimizer has one set of hyperparameters). Build the torch optimizer "
            "with a single group, or convert each group's parameters with its own fnn_optim "
            "optimizer (fnn_optim.partition) by hand."
        )
    return groups[0], torch_state_dict["state"]


def from_torch_state(
    opt: GradientTransformation,
    torch_state_dict: dict[str, Any],
    params: Params,
    names: Sequence[str] | None = None,
    *,
    count: int | None = None,
    check: bool = True,
) -> OptState:
    """The fnn_optim state of ``opt`` equal to a ``torch.optim`` optimizer's ``state_dict()``.

    Continue training with ``opt`` from where the torch optimizer stopped. The result has the
    structure of ``opt.init(params)``, holds copies of torch's tensors (cast to the dtype and
    device of ``params``, as ``load_state_dict`` does), torch's step count and the param group's
    hyperparameters. See the module docstring for the mapping of every optimizer.

    Args:
        opt: an optimizer made by ``fnn_optim.sgd``, ``adam``, ``adamw``, ``amsgrad``,
            ``adamax``, ``nadam``, ``radam``, ``adagrad``, ``adadelta``, ``rmsprop``, ``rprop``
            or ``asgd`` with the same structural options as the torch one (``amsgrad``,
            ``nesterov``, ``centered``, zero or nonzero ``momentum``/``weight_decay``/...).
            Its numeric hyperparameters are replaced by torch's.
        torch_state_dict: ``torch_optimizer.state_dict()`` with one param group.
        params: the parameters (a tree of tensors), the same as torch's (values not read).
        names: the dotted names of ``params`` in torch's order; by default the torch group's
            ``param_names`` if they name exactly the parameters of ``params``, else the names
            in the dicts' insertion order.
        count: the number of steps taken, for ``torch.optim.SGD``, which does not record it.
        check: also run both for three steps on a tiny problem and raise if they differ.

    Returns:
        The state (a tuple of block states, like ``opt.init(params)``).

    Raises:
        ValueError: for an optimizer with no torch twin, more than one param group, a torch
            state of another optimizer or built with other options, missing or extra state
            entries, shapes that differ from the parameters (the message names the parameter
            and the entry), or per-parameter step counts that differ.

    Example:
        >>> import torch, fnn_optim
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> torch_opt = torch.optim.Adam([w], lr=0.1, betas=(0.8, 0.9))
        >>> w.grad = torch.tensor([0.5, -3.0]); torch_opt.step()
        >>> params = {"w": w.detach().clone()}
        >>> state = fnn_optim.from_torch_state(fnn_optim.adam(), torch_opt.state_dict(), params)
        >>> state[0].count, state[0].mu
        (tensor(1), {'w': tensor([ 0.1000, -0.6000])})
        >>> hyperparams = fnn_optim.get_hyperparams(state)
        >>> hyperparams["b1"], hyperparams["learning_rate"]
        (tensor(0.8000), tensor(0.1000))
    """
    where = "fnn_optim.from_torch_state"
    group, torch_state = _single_group(where, torch_state_dict)
    template = opt.init(params)
    kind, template = _identify(where, template)
    layout = _by_type(template)
    _check_group(where, kind, layout, group)
    _check_fixed(where, kind, layout)
    order = _order(where, params, names, group.get("param_names"))
    if len(group["params"]) != len(order):
        raise ValueError(
            f"{where}: the torch param group has {len(group['params'])} parameters but params "
            f"has {len(order)} ({[n for n, _ in order]})."
        )
    if count is not None and (not isinstance(count, int) or count < 0):
        raise ValueError(f"{where}: count must be an int >= 0; got {count!r}.")
    state = _from_torch_entries(where, kind, template, group, torch_state, params, order, count)
    state = _set_hypers(kind, state, group)
    if check:
        problem = _probe(opt, kind, group)
        if problem is not None:
            hint = ""
            if kind.alias == "sgd" and _TRACE in layout and "nesterov" in group:
                flipped = {**group, "nesterov": not group["nesterov"]}
                if _probe(opt, kind, flipped) is None:
                    hint = (
                        f" The torch group has nesterov={group['nesterov']}, but `opt` was built "
                        f"with nesterov={not group['nesterov']}."
                    )
            raise ValueError(
                f"{where}: `opt` does not step like torch.optim.{kind.torch_name}("
                f"{_summary(group)}): {problem}.{hint} Build opt with "
                f"fnn_optim.{kind.alias} and the same options (pass check=False to skip this "
                "check)."
            )
    return state


def to_torch_state(
    opt: GradientTransformation,
    state: OptState,
    params: Params,
    names: Sequence[str] | None = None,
    *,
    check: bool = True,
) -> dict[str, Any]:
    """A ``state_dict`` that ``torch_optimizer.load_state_dict`` accepts, equal to ``state``.

    ``torch_optimizer`` is the torch twin of ``opt`` (e.g. ``torch.optim.Adam`` for
    ``fnn_optim.adam``, ``AdamW`` for ``adamw``) built on the same parameters in ``names``'
    order, with one param group and any hyperparameters: the dict carries a complete param
    group (the state's hyperparameters, plus every entry torch's constructor sets, at torch's
    defaults, e.g. ``foreach=None``, ``maximize=False``), which replaces the optimizer's. The
    tensors are copies (torch steps in place; ``state`` stays unchanged). ``torch.optim.SGD``
    keeps no step count, so ``count`` is lost there.

    Args:
        opt: the optimizer that made ``state`` (see :func:`from_torch_state`).
        state: its state.
        params: the parameters ``state`` was made for (a tree of tensors; values not read).
        names: the dotted names of ``params`` in torch's order; by default the names in the
            dicts' insertion order.
        check: also run both for three steps on a tiny problem and raise if they differ
            (always done for ``sgd`` with momentum, to find ``nesterov``).

    Returns:
        ``{"state": {index: {entry: tensor}}, "param_groups": [group]}``.

    Raises:
        ValueError: for an optimizer with no torch twin, a state not made by ``opt``, a state
            whose structure differs from ``params``, or hyperparameters torch does not have
            (``eps_root`` of Adam, RAdam's ``threshold``).

    Example:
        >>> import torch, fnn_optim
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> opt = fnn_optim.sgd(0.1, momentum=0.9)
        >>> updates, state = opt.update({"w": torch.tensor([0.5, -3.0])}, opt.init(params))
        >>> params = fnn_optim.apply_updates(params, updates)
        >>> w = torch.nn.Parameter(params["w"].clone())
        >>> torch_opt = torch.optim.SGD([w])
        >>> torch_opt.load_state_dict(fnn_optim.to_torch_state(opt, state, params))
        >>> torch_opt.param_groups[0]["momentum"], torch_opt.state[w]["momentum_buffer"]
        (0.8999999761581421, tensor([ 0.5000, -3.0000]))
    """
    where = "fnn_optim.to_torch_state"
    kind, chain_state = _identify(where, state)
    initial = opt.init(_probe_params())
    _, initial = _identify(where, initial)
    if [type(s) for s in initial] != [type(s) for s in chain_state]:
        raise ValueError(
            f"{where}: state is {_describe(state)} but opt.init makes {_describe(initial)}: pass "
            "the state made by this optimizer."
        )
    layout = _by_type(chain_state)
    _check_fixed(where, kind, layout)
    order = _order(where, params, names)
    entries = _to_torch_entries(where, kind, chain_state, params, order)
    group = _torch_group(where, kind, _torch_kwargs(kind, chain_state, initial))
    candidates = [group]
    if kind.alias == "sgd" and _TRACE in layout and layout[_TRACE].hyperparams["dampening"] == 0:
        candidates.append({**group, "nesterov": True})
    if check or len(candidates) > 1:
        problems = []
        for candidate in candidates:
            problem = _probe(opt, kind, candidate)
            if problem is None:
                group = candidate
                break
            problems.append(problem)
        else:
            raise ValueError(
                f"{where}: `opt` does not step like torch.optim.{kind.torch_name}("
                f"{_summary(group)})"
                + (" with nesterov=False or True" if len(candidates) > 1 else "")
                + f": {problems[0]}. Was opt made by fnn_optim.{kind.alias}? (pass check=False "
                "to skip this check)."
            )
    return {"state": entries, "param_groups": [{**group, "params": list(range(len(order)))}]}
