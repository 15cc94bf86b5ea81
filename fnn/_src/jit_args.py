"""Checking and describing the arguments of ``fnn.jit``: argnums, argnames, signatures."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def argnums(what: str, value: int | Sequence[int]) -> frozenset[int]:
    nums = (value,) if isinstance(value, int) else tuple(value)
    for i in nums:
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise TypeError(
                f"fnn.jit: {what} must be an int or a sequence of ints >= 0 (argument "
                f"positions), got {value!r}."
            )
    return frozenset(nums)


def argnames(value: str | Iterable[str]) -> frozenset[str]:
    names = (value,) if isinstance(value, str) else tuple(value)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(
                f"fnn.jit: static_argnames must be a string or a sequence of strings, got "
                f"{value!r}."
            )
    return frozenset(names)


def signature(fun: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fun)
    except (TypeError, ValueError):
        return None


def positional_names(fun: Callable[..., Any]) -> tuple[str | None, ...]:
    """Names of the parameters that can be passed by position (``None``: position-only)."""
    sig = signature(fun)
    if sig is None:
        return ()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(
        None if p.kind is inspect.Parameter.POSITIONAL_ONLY else p.name
        for p in sig.parameters.values()
        if p.kind in kinds
    )
