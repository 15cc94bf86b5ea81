"""Running one test eagerly and compiled: :func:`variants`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Variant", "variants"]

F = TypeVar("F", bound=Callable[..., Any])


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    # The one place that decides what "jit" means in fnn's tests.
    from fnn._src.jit import jit  # lazily: fnn.testing is imported while fnn is

    return jit(fn)


def _eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


_VARIANTS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "eager": _eager,
    "jit": _jit,
}


class Variant:
    """How a test runs the function under test; call it on the function: ``variant(f)``.

    ``Variant("eager")(f)`` is ``f`` itself; ``Variant("jit")(f)`` is
    ``fnn.jit(f)``, i.e. ``torch.compile(f, fullgraph=True)`` (so a graph break fails the test).

    Example:
        >>> from fnn.testing import Variant
        >>> Variant("eager")(abs) is abs
        True
        >>> Variant("jit")
        Variant('jit')
    """

    def __init__(self, name: str) -> None:
        if name not in _VARIANTS:
            raise ValueError(f"unknown variant {name!r}; the variants are {sorted(_VARIANTS)}")
        self.name = name

    def __call__(self, fn: F) -> F:
        return _VARIANTS[self.name](fn)  # type: ignore[return-value]

    @property
    def is_jit(self) -> bool:
        """Whether the function is compiled (for tests that check something only one way)."""
        return self.name == "jit"

    def __repr__(self) -> str:
        return f"Variant({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Variant) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def variants(*names: str) -> Callable[[F], F]:
    """Decorator running a pytest test once per variant: eagerly and/or compiled.

    The test takes a ``variant`` argument, a :class:`Variant`, and calls it on the function it
    tests. Test ids are the variant names: ``test_add[eager]``, ``test_add[jit]``. It is
    ``pytest.mark.parametrize("variant", ...)``, so it combines with other parametrizations.
    pytest is imported only when this decorator is used.

    Args:
        *names: variant names, out of ``"eager"`` (the function unchanged) and ``"jit"``
            (``fnn.jit``: ``torch.compile(fullgraph=True)``). Default: both.

    Example:
        >>> import torch
        >>> from fnn.testing import Variant, assert_trees_all_close, variants
        >>> @variants("eager", "jit")
        ... def test_add(variant):
        ...     f = variant(lambda x: x + 1)
        ...     assert_trees_all_close(f(torch.zeros(2)), torch.ones(2))
        >>> [mark.kwargs["ids"] for mark in test_add.pytestmark]
        [['eager', 'jit']]
        >>> test_add(Variant("eager"))  # what pytest runs for test_add[eager]
    """
    import pytest  # lazily: fnn.testing must import without pytest

    names = names or ("eager", "jit")
    if len(set(names)) != len(names):
        raise ValueError(f"variants listed twice: {names}")
    params = [Variant(n) for n in names]
    return pytest.mark.parametrize("variant", params, ids=list(names))
