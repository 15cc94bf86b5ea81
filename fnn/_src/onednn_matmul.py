"""``fnn.jit``'s large float32 CPU matrix products on oneDNN instead of MKL.

In a compiled graph, inductor lowers ``aten.mm`` and ``aten.addmm`` on CPU to the same MKL sgemm
that eager PyTorch calls. PyTorch also ships oneDNN, whose linear kernel inductor itself picks
for float32 inference (frozen weights). Timed here (AMD EPYC with AVX-512, 2 threads, torch
2.13, 200 interleaved calls each, ratio of oneDNN's fastest call to MKL's), oneDNN won on every
large product of the training steps in ``benchmarks.run`` and lost on small ones, where its
per-call setup (about 15 µs against MKL's 3) dominates:

=====================================================  ===========  ============
product ``(M, K) @ (K, N)``                            MKL          oneDNN/MKL
=====================================================  ===========  ============
MLP forward, 128x784 by 784x512 (+ bias)               537 µs       0.91
MLP backward ``dz @ W2``, 128x512 by 512x512           368 µs       0.88
transformer, 1024x512 by 512x128 (+ bias)              668 µs       0.93
transformer backward, 1024x384 by 384x128              500 µs       0.92
CNN head, 64x4096 by 4096x128 (+ bias)                 434 µs       0.80
1024x128 by 128x256                                    334 µs       0.98
256x256 by 256x256 (+ bias)                            176 µs       1.01
64x256 by 256x256 (+ bias)                             63 µs        1.23
=====================================================  ===========  ============

Inside the compiled steps the gain is smaller and noisier: ``python -m
benchmarks.onednn_probe`` took the suite's transformer step from 0.771x to 0.717x of eager and
the CNN from 0.774x to 0.745x; the MLP was faster with the pass in ten of twelve A/B runs
(median 0.718x against 0.739x) and slower in two (0.726x against 0.714x and 0.716x).

:func:`linear_pass` is the post-grad pass ``fnn.jit`` installs as inductor's
``post_grad_custom_post_pass``: it moves to oneDNN the float32 CPU products ``x @ w`` and
``bias + x @ w`` with ``x`` 2-D and row-major (oneDNN's linear reads its input that way; the
weight-gradient products ``dz.T @ h`` stay on MKL, where oneDNN was slower), ``w`` dense in
either order, a 1-D bias, ``alpha = beta = 1``, and at least :data:`MIN_MACS` multiply-adds.
The pass also rewrites the ``addmm`` it leaves on MKL whose uses are all pointwise as ``mm`` plus
the bias, which inductor then adds inside the kernel it generates for those uses (see
:func:`_bias_to_consumers`). The oneDNN rule is fixed rather than timed while compiling:
inductor starts its compile workers at that moment, and timings taken then picked MKL for
products that are 10% faster on oneDNN. It is also what makes the choice reproducible. The
results differ from MKL's by float rounding (another summation order). ``FNN_ONEDNN_MATMUL=0``
turns the whole pass off (compare on another CPU); so does
``options={"post_grad_custom_post_pass": None}`` for one function.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

__all__ = ["MIN_MACS", "linear_pass"]

# Smaller products stay on MKL (about 33.5M multiply-adds, 0.35 ms here).
MIN_MACS = 1 << 25
_ENV = "FNN_ONEDNN_MATMUL"

_aten = torch.ops.aten


def _available() -> bool:
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and mkldnn is not None
        and hasattr(mkldnn, "_linear_pointwise")
    )


def _define_op() -> Any:
    """``fnn::onednn_linear(x, w, bias)``: ``x @ w.T + bias`` by oneDNN's linear kernel.

    ``x`` is ``(M, K)``, ``w`` is ``(N, K)`` and ``bias`` (optional) ``(N,)``; the result is a
    new row-major ``(M, N)`` tensor. Tagged so that inductor passes the inputs with exactly the
    strides the pass checked.
    """
    lib = torch.library.Library("fnn", "FRAGMENT")  # kept for the process: the op lives in it
    tag = getattr(torch.Tag, "needs_exact_strides", None) or torch.Tag.needs_fixed_stride_order
    lib.define("onednn_linear(Tensor x, Tensor w, Tensor? bias) -> Tensor", tags=(tag,))
    linear = torch.ops.mkldnn._linear_pointwise.default

    def cpu(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return linear(x.contiguous(), w, bias, "none", [], "")

    def fake(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return x.new_empty((x.shape[0], w.shape[0]))

    lib.impl("onednn_linear", cpu, "CPU")
    lib.impl("onednn_linear", fake, "Meta")
    return lib, torch.ops.fnn.onednn_linear.default


def _dense_weight(w: torch.Tensor) -> bool:
    """Whether the ``(N, K)`` weight is row-major or the transpose of a row-major ``(K, N)``
    tensor (any other layout is left to MKL)."""
    n, k = w.shape
    return w.stride() in ((k, 1), (1, n))


def _transposed_arg(node: Any) -> Any:
    """The node ``node`` transposes (``aten.t`` or ``permute(..., [1, 0])``), else None."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return None
    if node.target is _aten.t.default:
        return node.args[0]
    if node.target is _aten.permute.default and list(node.args[1]) == [1, 0]:
        return node.args[0]
    return None


def _val(node: Any) -> torch.Tensor | None:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return val if isinstance(val, torch.Tensor) else None


def _float32_cpu(*vals: torch.Tensor | None) -> bool:
    return all(v is not None and v.dtype == torch.float32 and v.device.type == "cpu" for v in vals)


def _candidate(node: torch.fx.Node) -> tuple[Any, Any, Any] | None:
    """(x node, weight node or None, bias node or None) when ``node`` is a product that goes to
    oneDNN; the weight node is None when it must be made as a transpose of ``node``'s second
    operand."""
    if node.op != "call_function" or node.kwargs:
        return None
    if node.target is _aten.mm.default and len(node.args) == 2:
        bias, (x, m2) = None, node.args
    elif node.target is _aten.addmm.default and len(node.args) == 3:
        bias, x, m2 = node.args
    else:
        return None
    xv, m2v, outv = _val(x), _val(m2), _val(node)
    bv = _val(bias) if bias is not None else None
    if not _float32_cpu(xv, m2v, outv) or (bias is not None and not _float32_cpu(bv)):
        return None
    if xv.dim() != 2 or m2v.dim() != 2:
        return None
    sizes = (*xv.shape, *xv.stride(), *m2v.shape, *m2v.stride())
    if not all(type(d) is int for d in sizes) or not xv.is_contiguous():
        return None  # symbolic sizes (dynamic=True) stay on MKL: no guards from a graph pass
    (m, k), n = xv.shape, m2v.shape[1]
    if bias is not None and tuple(bv.shape) != (n,):
        return None
    if m * k * n < MIN_MACS:
        return None
    if not _dense_weight(m2v.t()):
        return None
    w = _transposed_arg(m2)
    return x, w, bias


def _bias_to_consumers(graph: torch.fx.Graph) -> None:
    """``addmm(b, x, w)`` left on MKL becomes ``mm(x, w) + b`` when every use of it is
    pointwise (float32 CPU, 1-D bias, ``alpha = beta = 1``), so that inductor adds the bias in
    the kernel it generates for those uses (a ReLU, a residual sum, a loss).

    MKL's ``addmm`` first copies the broadcast bias into its output; on the suite's tiny MLP
    those copies took about 5 of the jitted step's 112 µs. Inductor does the same rewrite on
    GPUs only. The results differ from ``addmm``'s by float rounding: MKL's gemm accumulates the
    product onto the copied bias, here the bias is added to the finished product.
    """
    from torch._inductor.utils import is_pointwise_use

    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not _aten.addmm.default:
            continue
        if node.kwargs or len(node.args) != 3 or not node.users:
            continue
        bias, x, m2 = node.args
        bv, outv = _val(bias), _val(node)
        if not _float32_cpu(bv, outv) or bv.dim() != 1:
            continue
        if not all(is_pointwise_use(use) for use in node.users):
            continue
        with graph.inserting_before(node):
            product = graph.call_function(_aten.mm.default, (x, m2))
            product.meta["val"] = outv.new_empty(outv.shape)
            biased = graph.call_function(_aten.add.Tensor, (product, bias))
        biased.meta = dict(node.meta)
        node.replace_all_uses_with(biased)
        graph.erase_node(node)


_LIB, _OP = _define_op() if _available() else (None, None)


def linear_pass() -> Any:
    """The pass ``fnn.jit`` installs; None where PyTorch has no oneDNN linear kernel or
    ``FNN_ONEDNN_MATMUL`` is ``0``.

    Raises:
        ValueError: ``FNN_ONEDNN_MATMUL`` is set to something other than ``0`` or ``1``.

    Example:
        >>> import os, torch
        >>> from fnn._src.onednn_matmul import linear_pass
        >>> off = os.environ.get("FNN_ONEDNN_MATMUL") == "0"
        >>> (linear_pass() is None) == (off or not torch.backends.mkldnn.is_available())
        True
    """
    setting = os.environ.get(_ENV, "1")
    if setting not in ("0", "1"):
        raise ValueError(
            f"{_ENV} must be 0 (float32 CPU products stay on MKL in fnn.jit) or 1 (large "
            f"ones go to oneDNN, the default); got {setting!r}."
        )
    return _pass() if _OP is not None and setting == "1" else None


@functools.cache
def _pass() -> Any:
    # Defined here: importing torch._inductor takes about a second, which fnn's import and
    # fnn.jit's decoration do not pay (compiling imports it anyway).
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

    class OneDnnLinearPass(CustomGraphPass):
        """Moves large float32 CPU products (module docstring) to ``fnn::onednn_linear`` and
        adds the bias of the remaining ``addmm`` in their pointwise uses."""

        def __call__(self, graph: torch.fx.Graph) -> None:
            for node in list(graph.nodes):
                found = _candidate(node)
                if found is None:
                    continue
                x, w, bias = found
                with graph.inserting_before(node):
                    if w is None:
                        second = node.args[-1]
                        w = graph.call_function(_aten.permute.default, (second, [1, 0]))
                        w.meta["val"] = second.meta["val"].t()
                    linear = graph.call_function(_OP, (x, w, bias))
                linear.meta = dict(node.meta)
                node.replace_all_uses_with(linear)
                graph.erase_node(node)
            for node in reversed(list(graph.nodes)):  # transposes nothing reads any more
                if _transposed_arg(node) is not None and not node.users:
                    graph.erase_node(node)
            _bias_to_consumers(graph)

        def uuid(self) -> bytes:
            return get_hash_for_files((__file__,), extra=f"{MIN_MACS}")

    return OneDnnLinearPass()
