"""Counting ``torch.compile`` compilations: :func:`assert_max_compiles`."""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["CompileCount", "assert_max_compiles"]


def _dynamo_state() -> tuple[Any, Any]:
    # torch._dynamo takes about a second to import: only pay for it when counting compiles.
    from torch._dynamo.utils import counters, guard_failures

    return counters, guard_failures


def _graphs_so_far() -> int:
    counters, _ = _dynamo_state()
    return int(counters["stats"]["unique_graphs"])


def _short_reason(code: Any, reason: str) -> str:
    """First line of a dynamo guard-failure reason, whitespace collapsed, with the function."""
    first = " ".join(str(reason).splitlines()[0].split()) if reason else "unknown reason"
    name = getattr(code, "co_name", "?")
    where = f"{getattr(code, 'co_filename', '?')}:{getattr(code, 'co_firstlineno', '?')}"
    return f"{name} ({where}): {first}"


class CompileCount:
    """The compilations observed by :func:`assert_max_compiles`; a context manager.

    Attributes:
        limit: the largest number of compilations allowed.
        count: graphs compiled since the context was entered (live inside the block, final
            after it).
        reasons: why dynamo recompiled (its guard-failure messages), in order, e.g.
            ``"f (model.py:3): 0/0: tensor 'x' size mismatch at index 0. expected 2, actual 3"``.
    """

    def __init__(self, limit: int) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"assert_max_compiles needs a count >= 0, got {limit!r}")
        self.limit = limit
        self._start: int | None = None
        self._final: int | None = None
        self._failures_start: dict[Any, int] = {}
        self._reasons: list[str] | None = None

    @property
    def count(self) -> int:
        if self._final is not None:
            return self._final
        if self._start is None:
            return 0
        return _graphs_so_far() - self._start

    @property
    def reasons(self) -> list[str]:
        if self._reasons is not None:
            return list(self._reasons)
        return self._new_reasons()

    def _new_reasons(self) -> list[str]:
        if self._start is None:
            return []
        _, guard_failures = _dynamo_state()
        out: list[str] = []
        for code, reasons in list(guard_failures.items()):
            # torch._dynamo.reset() clears the table: then every entry is new.
            seen = self._failures_start.get(code, 0)
            seen = seen if seen <= len(reasons) else 0
            # On a cache miss dynamo records why each cached graph was rejected, so an old
            # rejection reappears at every later recompile: keep each reason once.
            out.extend(r for r in (_short_reason(code, r) for r in reasons[seen:]) if r not in out)
        return out

    def __enter__(self) -> CompileCount:
        if self._start is not None:
            raise RuntimeError("an assert_max_compiles(...) object cannot be entered twice")
        _, guard_failures = _dynamo_state()
        self._failures_start = {code: len(r) for code, r in guard_failures.items()}
        self._start = _graphs_so_far()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._final = self.count
        self._reasons = self._new_reasons()
        if exc_type is not None or self._final <= self.limit:
            return  # never hide the block's own exception behind a count
        graphs = "1 graph" if self._final == 1 else f"{self._final} graphs"
        msg = (
            f"assert_max_compiles: torch.compile compiled {graphs} inside the block, "
            f"at most {self.limit} allowed."
        )
        if self._reasons:
            msg += "\nRecompile reasons (dynamo guard failures):\n" + "\n".join(
                f"  - {r}" for r in self._reasons
            )
        msg += (
            "\nCommon causes: a Python number that changes between calls (pass a 0-d tensor), "
            "a new input shape or dtype, or a graph break (one function compiled as several "
            "graphs)."
        )
        raise AssertionError(msg)

    def __repr__(self) -> str:
        return f"CompileCount(count={self.count}, limit={self.limit})"


def assert_max_compiles(n: int) -> CompileCount:
    """Context manager asserting that at most ``n`` graphs are compiled by ``torch.compile``.

    Counts every graph dynamo (``torch.compile``'s frontend) produces while the block runs, by
    reading dynamo's ``counters["stats"]["unique_graphs"]`` before and after: the first compile
    of a function, each recompile (a new shape or dtype, a changed Python number), and each extra
    graph caused by a graph break count one. Cache hits count zero. On exit it raises if more than
    ``n`` graphs were compiled, listing dynamo's recompile reasons (its guard failures).

    ``torch.compile`` compiles lazily, on the first call: what counts is calling compiled
    functions inside the block, not wrapping them. The counter is process-wide, so compiles in
    other threads during the block count too; once a function hits dynamo's recompile limit
    (``torch._dynamo.config.recompile_limit``, 8) it runs eagerly and stops being counted.

    Args:
        n: the largest number of compiled graphs allowed (``0`` asserts "no compile at all",
            e.g. for a warmed-up training step).

    Returns:
        A :class:`CompileCount` to use in a ``with`` statement; its ``.count`` is the number of
        graphs compiled so far and ``.reasons`` the recompile reasons.

    Example:
        >>> import torch
        >>> from fnn.testing import assert_max_compiles
        >>> f = torch.compile(lambda x: x * 2, backend="eager", fullgraph=True)
        >>> with assert_max_compiles(1) as compiles:
        ...     _ = f(torch.ones(2))
        ...     _ = f(torch.ones(2))  # same shape: cached, no recompile
        >>> compiles.count
        1
        >>> with assert_max_compiles(0):
        ...     _ = f(torch.ones(2, 2))  # a new number of dimensions recompiles
        Traceback (most recent call last):
        ...
        AssertionError: assert_max_compiles: torch.compile compiled 1 graph inside the block, at most 0 allowed.
        Recompile reasons (dynamo guard failures):
          - <lambda> (...): ...: tensor 'x' rank mismatch. expected 1, actual 2
        ...
    """  # noqa: E501
    return CompileCount(n)
