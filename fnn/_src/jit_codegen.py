"""The flat function ``fnn.jit`` compiles for one cache key, written as Python source.

For a key (the structure of the arguments, the static arguments and the non-tensor leaves),
:func:`generate` writes ``def f(*a)`` that rebuilds the argument trees from literals and the
flat tensors (``{'w': a[0], 'b': a[1]}``), calls the user's function through
:func:`fnn._src.donation.run` with the donated tensors, and ``exec`` s it. Dynamo then guards
only on the tensors in ``a``, and each key has its own code object (its own dynamo cache).
"""

from __future__ import annotations

import itertools
import keyword
import linecache
import math
from collections.abc import Callable, Container
from typing import Any

import optree
import torch

from fnn._src import tree as _tree
from fnn._src.donation import run

OPTS: dict[str, Any] = {"namespace": _tree.NAMESPACE, "none_is_leaf": False}
# Keys whose literal ``repr`` evaluates back to an equal value of the same type.
_LITERAL_TYPES = (str, int, bool, type(None))
_generated = itertools.count()


class Slot:
    """Placeholder for the ``index``-th tensor leaf when generating the rebuild code."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def layout(
    treedef: Any,
    leaves: list[Any],
    *,
    static_argnums: Container[int],
    donate_argnums: Container[int],
    donate_argnames: Container[str],
) -> tuple[Any, dict[str, Any], list[int]]:
    """The argument trees with tensors replaced by :class:`Slot` s, and the donated slots.

    ``treedef`` and ``leaves`` are the flattened ``(dynamic args, dynamic kwargs)``; positions
    count the static arguments too, as ``donate_argnums`` does.
    """
    counter = itertools.count()
    slots = [Slot(next(counter)) if is_tensor(x) else x for x in leaves]
    template_args, template_kwargs = treedef.unflatten(slots)
    positions = (i for i in itertools.count() if i not in static_argnums)
    donated: list[int] = []
    for i, arg in zip(positions, template_args, strict=False):
        if i in donate_argnums:
            donated += _slots_in(arg)
    for n, arg in template_kwargs.items():
        if n in donate_argnames:
            donated += _slots_in(arg)
    return template_args, template_kwargs, donated


def generate(
    fun: Callable[..., Any],
    name: str,
    template: tuple[Any, dict[str, Any], list[int]],
    static_key: Any,
    *,
    donate: bool,
) -> tuple[Callable[..., Any], list[int]]:
    """Write and ``exec`` the flat function ``f(*tensors)`` for one key; which are donated.

    ``template`` is what :func:`layout` returned for the key, ``static_key`` its static
    arguments (``((position, type, value), ...), ((name, type, value), ...)`` or empty), and
    ``name`` the jitted function's name for the generated code's file name.
    """
    template_args, template_kwargs, donated = template
    static_pos, static_kw = static_key or ((), ())
    statics = {i: v for i, _, v in static_pos}
    gen = _Codegen()
    dyn = iter(template_args)
    args_exprs = [
        gen.const(statics[i], "s") if i in statics else gen.tree(next(dyn))
        for i in range(len(template_args) + len(statics))
    ]
    kwargs_exprs = [f"{n!r}: {gen.const(v, 's')}" for n, _, v in static_kw]
    kwargs_exprs += [f"{n!r}: {gen.tree(arg)}" for n, arg in template_kwargs.items()]
    donated = donated if donate else []
    fname = _identifier(f"fnn_jit_{getattr(fun, '__name__', 'fun')}")
    filename = f"<fnn.jit {name} #{next(_generated)}>"
    src = (
        f"def {fname}(*a):\n"
        f"    return _run(_fun, ({''.join(e + ', ' for e in args_exprs)}), "
        f"{{{', '.join(kwargs_exprs)}}}, ({''.join(f'a[{k}], ' for k in donated)}))\n"
    )
    namespace = {"_run": run, "_fun": fun, **gen.globals}
    exec(compile(src, filename, "exec"), namespace)
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    return namespace[fname], donated


class _Codegen:
    """Python expressions rebuilding a tree from ``a`` (the flat tensors) and constants."""

    def __init__(self) -> None:
        self.globals: dict[str, Any] = {}

    def const(self, value: Any, prefix: str) -> str:
        if type(value) in _LITERAL_TYPES or (type(value) is float and math.isfinite(value)):
            return repr(value)
        name = f"_{prefix}{len(self.globals)}"
        self.globals[name] = value
        return name

    def tree(self, node: Any) -> str:
        if isinstance(node, Slot):
            return f"a[{node.index}]"
        if node is None:
            return "None"
        if optree.tree_is_leaf(node, **OPTS):
            return self.const(node, "c")
        kind = type(node)
        if kind is tuple:
            return "(" + "".join(f"{self.tree(c)}, " for c in node) + ")"
        if kind is list:
            return "[" + ", ".join(self.tree(c) for c in node) + "]"
        if kind is dict:
            items = (f"{self.const(k, 'k')}: {self.tree(v)}" for k, v in node.items())
            return "{" + ", ".join(items) + "}"
        children, metadata, _, unflatten = optree.tree_flatten_one_level(node, **OPTS)
        if optree.is_namedtuple_instance(node):
            return f"{self.const(kind, 't')}({', '.join(self.tree(c) for c in children)})"
        rebuilt = ", ".join(self.tree(c) for c in children)
        return f"{self.const(unflatten, 'u')}({self.const(metadata, 'm')}, [{rebuilt}])"


def _slots_in(tree: Any) -> list[int]:
    return [x.index for x in optree.tree_leaves(tree, **OPTS) if isinstance(x, Slot)]


def _identifier(name: str) -> str:
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return name + "_" if keyword.iskeyword(name) else name
