"""Interop with ``torch.nn``: state dicts in and out, and wrapping an ``nn.Module``."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch.func import functional_call

from fnn._src.prng import bits
from fnn.nn._module import Module, Scope, _where

__all__ = ["TorchModule", "from_state_dict", "from_torch", "to_state_dict"]


def _merge(params: Mapping, state: Mapping, prefix: str, out: OrderedDict) -> None:
    # torch's order: a module's own parameters, then its own buffers, then its children.
    for tree in (params, state):
        for k, v in tree.items():
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v
    children = [k for k, v in params.items() if isinstance(v, Mapping)]
    children += [k for k, v in state.items() if isinstance(v, Mapping) and k not in children]
    for k in children:
        _merge(params.get(k, {}), state.get(k, {}), f"{prefix}{k}.", out)


def to_state_dict(params: Mapping, state: Mapping | None = None) -> OrderedDict[str, torch.Tensor]:
    """Flatten ``params`` and ``state`` into a ``torch.nn`` ``state_dict`` (dotted names).

    The keys are those of the matching ``torch.nn`` model's ``state_dict()``, in its order
    (each module's parameters, then its buffers, then its children), so
    ``torch_model.load_state_dict(fnn.nn.to_state_dict(params, state))`` loads the weights.
    Tensors are shared, not copied.

    Args:
        params: nested dict of parameters (from ``init``).
        state: nested dict of state (BatchNorm statistics) or ``None``.

    Returns:
        An ``OrderedDict`` mapping dotted names to tensors.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.Sequential([fnn.nn.Linear(4), fnn.nn.BatchNorm1d()])
        >>> params, state = model.init(fnn.random.key(0), torch.zeros(2, 3))
        >>> list(fnn.nn.to_state_dict(params, state))  # doctest: +NORMALIZE_WHITESPACE
        ['0.weight', '0.bias', '1.weight', '1.bias', '1.running_mean', '1.running_var',
         '1.num_batches_tracked']
        >>> torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        >>> torch_model.load_state_dict(fnn.nn.to_state_dict(params, state))
        <All keys matched successfully>
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            "fnn.nn.to_state_dict: expected params to be a nested dict, got "
            f"{type(params).__name__}."
        )
    if state is not None and not isinstance(state, Mapping):
        raise TypeError(
            f"fnn.nn.to_state_dict: expected state to be a nested dict or None, got "
            f"{type(state).__name__}."
        )
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    _merge(params, state or {}, "", out)
    return out


def _nest(flat: Mapping[str, torch.Tensor]) -> dict:
    out: dict = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _flat(tree: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def from_state_dict(
    model: Module, state_dict: Mapping[str, torch.Tensor], *example_inputs: Any, **kwargs: Any
) -> tuple[dict, dict]:
    """Load a ``torch.nn`` ``state_dict`` into ``(params, state)`` for the fnn ``model``.

    The expected names, shapes and dtypes come from ``model.init_shapes(*example_inputs)``
    (shapes only, nothing computed), because an fnn model infers its input sizes from its
    inputs. Every missing key, unexpected key, and shape mismatch is reported at once, by name.
    Floating tensors are cast to the expected dtype (like ``load_state_dict``); tensors are
    copied, so later changes to the torch model do not reach the fnn parameters.

    Args:
        model: the fnn model.
        state_dict: a mapping of dotted names to tensors (``torch_model.state_dict()``).
        *example_inputs: inputs shaped like the model's inputs (only shapes and dtypes used).
        **kwargs: passed to ``model.init_shapes`` (e.g. ``train=``).

    Returns:
        ``(params, state)`` as ``model.init`` returns them.

    Example:
        >>> import fnn, torch
        >>> torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
        ...                                   torch.nn.Linear(4, 2))
        >>> model = fnn.nn.Sequential([fnn.nn.Linear(4), fnn.nn.relu, fnn.nn.Linear(2)])
        >>> x = torch.randn(5, 3)
        >>> params, state = fnn.nn.from_state_dict(model, torch_model.state_dict(), x)
        >>> torch.equal(model.apply(params, x), torch_model(x))
        True
    """
    if not isinstance(model, Module):
        raise TypeError(
            f"fnn.nn.from_state_dict: expected an fnn.nn.Module, got {type(model).__name__}; "
            "to wrap a torch.nn.Module use fnn.nn.from_torch(module)."
        )
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "fnn.nn.from_state_dict: expected a mapping of dotted names to tensors, got "
            f"{type(state_dict).__name__}."
        )
    if not example_inputs:
        raise TypeError(
            "fnn.nn.from_state_dict: pass example inputs after the state_dict "
            "(from_state_dict(model, sd, x)); fnn models infer their sizes from their inputs."
        )
    p_like, s_like = model.init_shapes(*example_inputs, **kwargs)
    expected = {**_flat(p_like), **_flat(s_like)}
    given = dict(state_dict)
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    problems = []
    for k, like in expected.items():
        if k not in given:
            continue
        v = given[k]
        if not isinstance(v, torch.Tensor):
            problems.append(f"  {k}: expected a tensor, got {type(v).__name__}")
        elif tuple(v.shape) != tuple(like.shape):
            problems.append(
                f"  {k}: shape {tuple(v.shape)} in the state_dict, the model expects "
                f"{tuple(like.shape)}"
            )
        elif v.dtype.is_floating_point != like.dtype.is_floating_point:
            problems.append(f"  {k}: dtype {v.dtype} in the state_dict, expected {like.dtype}")
    if missing or unexpected or problems:
        lines = [f"fnn.nn.from_state_dict: the state_dict does not match {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys: {missing}")
        if unexpected:
            lines.append(f"  unexpected keys: {unexpected}")
        lines += problems
        raise ValueError("\n".join(lines))

    def load(like: torch.Tensor, name: str) -> torch.Tensor:
        v = given[name].detach()
        return v.to(like.dtype, copy=True) if v.dtype != like.dtype else v.clone()

    params = _nest({k: load(v, k) for k, v in _flat(p_like).items()})
    state = _nest({k: load(v, k) for k, v in _flat(s_like).items()})
    return params, state


def _copy_module(module: torch.nn.Module, train: bool) -> torch.nn.Module:
    # A copy of the module tree that shares every tensor (functional_call swaps them anyway),
    # fixed in train or eval mode, so apply never toggles the user's module.
    memo = {id(t): t for t in module.parameters()}
    memo.update({id(t): t for t in module.buffers()})
    clone = copy.deepcopy(module, memo)
    return clone.train(train)


class TorchModule(Module):
    """An existing ``torch.nn.Module`` as an fnn model; made by :func:`from_torch`."""

    module: torch.nn.Module

    def __post_init__(self) -> None:
        if not isinstance(self.module, torch.nn.Module):
            raise TypeError(
                f"fnn.nn.from_torch: expected a torch.nn.Module, got {type(self.module).__name__}."
            )
        self._train_copy = _copy_module(self.module, True)
        self._eval_copy = _copy_module(self.module, False)
        # the names, listed once here rather than walking the module tree on every apply
        self._param_names = tuple(n for n, _ in self.module.named_parameters())
        self._buffer_names = tuple(n for n, _ in self.module.named_buffers())

    def forward(self, scope: Scope, *args: Any, **kwargs: Any) -> Any:
        run = scope._run
        net = self._train_copy if scope.train else self._eval_copy
        names, buffers = self._param_names, self._buffer_names
        if run.mode != "apply":
            meta = {}
            for n, t in self.module.named_parameters():
                value = t.detach().clone() if run.mode == "init" else t.detach().to("meta")
                _set(scope.params, n, value)
                meta[n] = t.detach().to("meta")
            for n, t in self.module.named_buffers():
                value = t.detach().clone() if run.mode == "init" else t.detach().to("meta")
                _set(scope._state, n, value)
                meta[n] = t.detach().to("meta")
            return functional_call(net, meta, args, kwargs)
        flat_p = _flat(scope.params)
        missing = [n for n in names if n not in flat_p]
        if missing:
            raise KeyError(
                f"{_where(self, scope.path)}: missing parameters {missing}; were the params made "
                "by init of this model?"
            )
        tensors = dict(flat_p)
        new_buffers = {}
        if buffers:
            if scope._state is None:
                raise ValueError(
                    f"{_where(self, scope.path)} wraps a module with buffers {list(buffers)}; pass "
                    "state= to apply (the state returned by init)."
                )
            flat_s = _flat(scope._state)
            for n in buffers:
                if n not in flat_s:
                    raise KeyError(f"{_where(self, scope.path)}: missing state entry '{n}'.")
                # torch updates buffers (BatchNorm statistics) in place: give it copies and
                # return them as the new state, so the caller's state is never mutated.
                new_buffers[n] = flat_s[n].clone() if scope.train else flat_s[n]
            tensors.update(new_buffers)
        key = scope.key
        seeded = (
            key is not None
            and scope.train
            and not torch.compiler.is_compiling()
            and torch._C._functorch.maybe_current_level() is None
        )
        if seeded:  # eager: torch's own dropout draws from a generator seeded by the key
            seed = int(bits(key, (2,), torch.uint32).to(torch.int64)[0])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = functional_call(net, tensors, args, kwargs)
        else:
            out = functional_call(net, tensors, args, kwargs)
        if scope.train:
            for n, value in new_buffers.items():
                run.updates[(*scope._names, *n.split("."))] = value
        return out


def _set(tree: dict, dotted: str, value: torch.Tensor) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def from_torch(module: torch.nn.Module) -> TorchModule:
    """Wrap any ``torch.nn.Module`` as an fnn model with pure ``init`` / ``apply``.

    ``init(key, *inputs)`` returns copies of the module's current parameters (``params``) and
    buffers (``state``), nested by their ``state_dict()`` names; the key is not used (re-draw
    weights on the torch side with ``reset_parameters`` if wanted). ``apply`` runs the module
    through ``torch.func.functional_call`` on the given tensors, in train or eval mode as asked
    (on private copies of the module tree, so the user's module is never toggled or changed).
    Buffers that torch updates in place (BatchNorm statistics) are updated on copies and
    returned as the new ``state``. Works under ``fnn.grad``, ``fnn.vmap`` (eval mode; torch's
    BatchNorm cannot update statistics under vmap) and ``fnn.jit``.

    Randomness: in eager mode with ``key`` given and ``train=True``, torch's own dropout draws
    from a generator seeded by the key (reproducible); under ``fnn.jit`` or a transform it uses
    torch's global generator.

    Args:
        module: any ``torch.nn.Module`` (torchvision, Hugging Face, your own).

    Returns:
        An fnn model (``TorchModule``).

    Example:
        >>> import fnn, torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        >>> model = fnn.nn.from_torch(net)
        >>> x = torch.randn(8, 3)
        >>> params, state = model.init(fnn.random.key(0), x)
        >>> sorted(fnn.nn.to_state_dict(params, state)) == sorted(net.state_dict())
        True
        >>> y, new_state = model.apply(params, x, state=state, train=True)
        >>> int(new_state["1"]["num_batches_tracked"]), int(state["1"]["num_batches_tracked"])
        (1, 0)
    """
    return TorchModule(module)
