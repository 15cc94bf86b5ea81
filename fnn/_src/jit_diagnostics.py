"""Argument checks and error messages of :class:`fnn._src.jit.Jitted` (a mixin).

They name arguments and leaves the way users wrote them ("argument 'params' (position 0), leaf
'w'"), say what changed when a function compiles again, and refuse unhashable static arguments,
unhashable leaves and clashing donations. The mixin reads the jitted function's ``_fun``,
``_name``, ``_params``, ``_static_argnums``, ``_donate_argnums``, ``_first_of_structure``,
``_last_key`` and ``_warned_numbers``.
"""

from __future__ import annotations

import numbers
import warnings
from typing import TYPE_CHECKING, Any

import torch

from fnn._src import tree as _tree
from fnn._src.donation import donation_clash
from fnn._src.jit_args import short_repr as _short_repr
from fnn._src.jit_args import signature as _signature
from fnn._src.jit_codegen import is_tensor as _is_tensor

if TYPE_CHECKING:
    from fnn._src.jit import _Entry

__all__ = ["Diagnostics"]


class Diagnostics:
    """Argument names, checks and error messages for a jitted function."""

    _fun: Any
    _name: str
    _params: tuple[str | None, ...]
    _static_argnums: frozenset[int]
    _donate_argnums: frozenset[int]
    _first_of_structure: dict[Any, tuple[Any, ...]]
    _last_key: Any
    _warned_numbers: bool

    def _name_of(self, i: int) -> str | None:
        return self._params[i] if i < len(self._params) else None

    def _check_names(self, names: frozenset[str]) -> None:
        sig = _signature(self._fun)
        if sig is None:
            return
        params = sig.parameters
        takes_var_args = any(p.kind is p.VAR_POSITIONAL for p in params.values())
        takes_var_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for argnums, what in ((self._donate_argnums, "donate"), (self._static_argnums, "static")):
            bad = sorted(i for i in argnums if i >= len(self._params))
            if bad and not takes_var_args:
                raise ValueError(
                    f"fnn.jit({self._name}): {what}_argnums={bad} but {self._name} takes "
                    f"{len(self._params)} positional argument(s) {list(self._params)}."
                )
        unknown = sorted(n for n in names if n not in params)
        if unknown and not takes_var_kwargs:
            raise ValueError(
                f"fnn.jit({self._name}): static_argnames={unknown} are not parameters of "
                f"{self._name}; its parameters are {list(params)}."
            )

    def _hash_statics(self, static_key: tuple[Any, ...]) -> None:
        for part in static_key:
            for where, _, value in part:
                try:
                    hash(value)
                except TypeError:
                    arg = (
                        f"argument {self._describe_position(where)}"
                        if isinstance(where, int)
                        else f"keyword argument {where!r}"
                    )
                    raise TypeError(
                        f"fnn.jit({self._name}): static {arg} must be hashable (it is part of the "
                        f"compile cache key), got an unhashable {type(value).__name__}: "
                        f"{_short_repr(value)}. Pass a tuple instead of a list, a frozen "
                        "dataclass instead of a dict, or make the argument dynamic (tensors "
                        "in a pytree) by removing it from static_argnums/static_argnames."
                    ) from None

    def _describe_position(self, i: int) -> str:
        name = self._name_of(i)
        return f"{name!r} (position {i})" if name else f"at position {i}"

    def _leaf_names(self, dyn_args: tuple[Any, ...], dyn_kwargs: dict[str, Any]) -> list[str]:
        """Human-readable names of the flattened leaves of ``(dyn_args, dyn_kwargs)``."""
        candidates = range(len(dyn_args) + len(self._static_argnums))
        positions = [i for i in candidates if i not in self._static_argnums][: len(dyn_args)]
        names = []
        for path in _tree.paths((dyn_args, dyn_kwargs)):
            which, _, rest = path.partition(".")
            head, _, inner = rest.partition(".")
            if which == "0":
                arg = f"argument {self._describe_position(positions[int(head)])}"
            else:
                arg = f"keyword argument {head!r}"
            names.append(f"{arg}, leaf {inner!r}" if inner else arg)
        return names

    def _check_donation(
        self,
        tensors: list[torch.Tensor],
        entry: _Entry,
        leaves: list[Any],
        dyn_args: tuple[Any, ...],
        dyn_kwargs: dict[str, Any],
    ) -> None:
        """Refuse a tensor donated twice, or donated and also passed in a non-donated place."""
        clash = donation_clash(tensors, entry.donated, entry.kept)
        if clash is None:
            return
        first, second, twice = clash
        names = self._leaf_names(dyn_args, dyn_kwargs)
        tensor_names = [n for n, x in zip(names, leaves, strict=True) if _is_tensor(x)]
        a, b = tensor_names[first], tensor_names[second]
        if twice:
            raise ValueError(
                f"fnn.jit({self._name}): the same tensor is donated twice, as {a} and as {b}; "
                "two results would be written into one buffer. Donate each tensor once (e.g. "
                "untie shared weights, or pass the second use in a non-donated argument)."
            )
        raise ValueError(
            f"fnn.jit({self._name}): a tensor is passed both as donated {a} and as non-donated "
            f"{b}; writing a result into it would change the non-donated argument too. Pass a "
            "copy (x.clone()) as the non-donated argument, or do not donate it."
        )

    def _unhashable_leaf(
        self, leaves: list[Any], dyn_args: tuple[Any, ...], dyn_kwargs: dict[str, Any]
    ) -> TypeError:
        names = self._leaf_names(dyn_args, dyn_kwargs)
        for name, x in zip(names, leaves, strict=True):
            if _is_tensor(x):
                continue
            try:
                hash(x)
            except TypeError:
                hint = " (torch.as_tensor(x) makes it a tensor)" if hasattr(x, "__array__") else ""
                return TypeError(
                    f"fnn.jit({self._name}): {name} is a {type(x).__name__}, which is neither a "
                    f"tensor nor hashable{hint}. Leaves of jitted arguments are tensors or "
                    "hashable constants (numbers, strings) that are compiled in; register "
                    "containers with fnn.tree.register_dataclass / register_pytree_node."
                )
        return TypeError(f"fnn.jit({self._name}): the arguments are not hashable.")

    def _what_changed(
        self, key: Any, leaves: list[Any], dyn_args: tuple[Any, ...], dyn_kwargs: dict[str, Any]
    ) -> str:
        """Say why ``key`` is new (for errors); warn once when a Python number changed."""
        treedef, static_key, consts = key
        first = self._first_of_structure.setdefault((treedef, static_key), consts)
        if self._last_key is None:
            return "first call"
        if first is not consts:
            names = self._leaf_names(dyn_args, dyn_kwargs)
            before = {i: (t, v) for i, t, v in first}
            now = {i: (t, v) for i, t, v in consts}
            changed = [
                (names[i], before[i][1] if i in before else "a tensor", value)
                for i, (_, value) in now.items()
                if before.get(i) != now[i]
            ]
            changed += [
                (names[i], old, "a tensor") for i, (_, old) in before.items() if i not in now
            ]
            number = next(
                (c for c in changed if isinstance(c[2], numbers.Number) and type(c[2]) is not bool),
                None,
            )
            if number is not None and not self._warned_numbers:
                self._warned_numbers = True
                name, old, new = number
                warnings.warn(
                    f"fnn.jit({self._name}) compiles again because the Python "
                    f"{type(new).__name__} in {name} changed from {old!r} to {new!r}. Python "
                    "numbers in arguments are compiled in as constants, so each new value "
                    f"compiles again: pass a 0-d tensor (torch.tensor({new!r})) to change it "
                    "freely, or make the argument static (static_argnums/static_argnames) if "
                    "each value should be compiled, which also silences this warning (given once "
                    "per function).",
                    UserWarning,
                    stacklevel=4,
                )
            return "; ".join(f"{n} changed from {o!r} to {v!r}" for n, o, v in changed[:3])
        last_treedef, last_static, _ = self._last_key
        if static_key != last_static:
            return f"the static arguments changed from {last_static!r} to {static_key!r}"
        return f"the structure of the arguments changed from {last_treedef} to {treedef}"
