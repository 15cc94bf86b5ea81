"""``fnn.jit``'s post-grad pass for float32 CPU matrix products: oneDNN on AMD, small ones fused.

In a compiled graph, inductor lowers ``aten.mm`` and ``aten.addmm`` on CPU to the same MKL sgemm
that eager PyTorch calls. PyTorch also ships oneDNN, whose linear kernel inductor itself picks
for float32 inference (frozen weights). Which of the two is faster depends on the CPU: MKL's
sgemm is Intel's own, tuned for Intel cores. Timed (2 threads, torch 2.13; ratio of oneDNN's
time to MKL's for the same product, ``+ bias`` as ``addmm``):

=====================================================  =====================  ================
product ``(M, K) @ (K, N)``                            AMD EPYC (AVX-512)     Intel Xeon
                                                       fastest of 200 calls   median of 600
=====================================================  =====================  ================
MLP forward, 128x784 by 784x512 (+ bias)               0.91 (MKL 537 µs)      1.02 (334 µs)
MLP backward ``dz @ W2``, 128x512 by 512x512           0.88 (368 µs)          1.04 (318 µs)
transformer, 1024x512 by 512x128 (+ bias)              0.93 (668 µs)          0.97 (423 µs)
transformer backward, 1024x384 by 384x128              0.92 (500 µs)          1.01 (345 µs)
CNN head, 64x4096 by 4096x128 (+ bias)                 0.80 (434 µs)          1.01 (271 µs)
1024x128 by 128x256                                    0.98 (334 µs)          1.08 (192 µs)
256x256 by 256x256 (+ bias)                            1.01 (176 µs)          1.05 (110 µs)
64x256 by 256x256 (+ bias)                             1.23 (63 µs)           1.24 (39 µs)
=====================================================  =====================  ================

Inside the compiled training steps of ``benchmarks.run`` (``python -m benchmarks.onednn_probe``,
ratios to the eager baseline, with oneDNN against MKL): on the AMD EPYC the transformer went from
0.771x to 0.717x, the CNN from 0.774x to 0.745x, and the MLP was faster with oneDNN in ten of
twelve runs (median 0.718x against 0.739x). On the Intel Xeon (2026-11-23, two runs, the second
compiling the MKL step first) oneDNN was slower on all three: MLP 0.685x and 0.701x against
0.614x and 0.623x, CNN 0.698x and 0.678x against 0.687x and 0.666x, transformer 0.749x and
0.742x against 0.699x and 0.711x. So :func:`onednn_products` moves products to oneDNN on AMD
CPUs only, unless ``FNN_ONEDNN_MATMUL`` says otherwise (``1``: any CPU, ``0``: never).

:func:`linear_pass` is the post-grad pass ``fnn.jit`` installs as inductor's
``post_grad_custom_post_pass``. Where :func:`onednn_products` holds, it moves to oneDNN the float32
CPU products ``x @ w`` and ``bias + x @ w`` with ``x`` 2-D and row-major (oneDNN's linear reads its
input that way; the weight-gradient products ``dz.T @ h`` stay on MKL, where oneDNN was slower),
``w`` dense in either order, a 1-D bias, ``alpha = beta = 1``, and at least :data:`MIN_MACS`
multiply-adds. That rule is fixed rather than timed while compiling: inductor starts its compile
workers at that moment, and timings taken then picked MKL for products that are 10% faster on
oneDNN; it also makes the choice reproducible. On every CPU the pass then rewrites the ``addmm``
left on MKL whose uses are all pointwise or reductions as ``mm`` plus the bias, which inductor adds
inside the kernels it generates for those uses (:func:`_bias_to_consumers`), and turns products with
a dimension of 1 into pointwise and reduction code (:func:`_degenerate_products`). Results differ
from MKL's by float rounding (another summation order), except for the outer products, which are
exact. ``options={"post_grad_custom_post_pass": None}`` turns the whole pass off for one function.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

__all__ = ["MAX_GEMV_MACS", "MIN_MACS", "cpu_vendor", "linear_pass", "onednn_products"]

# Smaller products stay on MKL (about 33.5M multiply-adds, 0.35 ms here).
MIN_MACS = 1 << 25
# Larger matrix-vector products stay on MKL (see ``_degenerate_products``).
MAX_GEMV_MACS = 1 << 16
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


def _static_2d(*vals: torch.Tensor | None) -> bool:
    return all(
        v is not None and v.dim() == 2 and all(type(d) is int for d in (*v.shape, *v.stride()))
        for v in vals
    )


def _node(graph: torch.fx.Graph, target: Any, args: tuple, val: torch.Tensor) -> torch.fx.Node:
    node = graph.call_function(target, args)
    node.meta["val"] = val
    return node


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
    if not _static_2d(xv, m2v) or not xv.is_contiguous():
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


def _reduction(op: Any) -> bool:
    return torch.Tag.reduction in getattr(op, "tags", ())


def _bias_to_consumers(graph: torch.fx.Graph) -> None:
    """``addmm(b, x, w)`` left on MKL becomes ``mm(x, w) + b`` when every use of it is
    pointwise or a reduction (float32 CPU, 1-D bias, ``alpha = beta = 1``), so that inductor
    adds the bias in the kernel it generates for those uses (a ReLU, a residual sum, the
    ``amax`` and ``sum`` of a log-softmax).

    MKL's ``addmm`` first copies the broadcast bias into its output; on the suite's tiny MLP
    those copies took about 5 of the jitted step's 112 µs (AMD EPYC); on the MLP's 128x10
    output layer ``addmm`` took 43 µs plus 12 µs of copying in a profile (Intel Xeon).
    Inductor does the same rewrite on GPUs only. The results differ from ``addmm``'s by float
    rounding: MKL's gemm accumulates the product onto the copied bias, here the bias is added
    to the finished product.
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
        if not all(is_pointwise_use(use, _reduction) for use in node.users):
            continue
        with graph.inserting_before(node):
            product = _node(graph, _aten.mm.default, (x, m2), outv.new_empty(outv.shape))
            biased = graph.call_function(_aten.add.Tensor, (product, bias))
        biased.meta = dict(node.meta)
        node.replace_all_uses_with(biased)
        graph.erase_node(node)


def _degenerate_products(graph: torch.fx.Graph) -> None:
    """Float32 CPU products with a dimension of 1 become pointwise and reduction code.

    ``(M, 1) @ (1, N)`` (an outer product: the gradient flowing into a one-unit output layer,
    a weight gradient of batch 1), of any size, becomes ``a * b`` broadcast, bit for bit the
    product's value; ``(1, K) @ (K, N)`` and ``(M, K) @ (K, 1)`` (a one-unit layer's forward
    pass and its weight gradient, a single example) with at most :data:`MAX_GEMV_MACS`
    multiply-adds become ``(a[:, :, None] * b[None]).sum(1)``, which sums in another order than
    MKL. An ``addmm`` of such a shape becomes the product plus its bias. Inductor then fuses
    them with their neighbours, where MKL's path copies a stride-0 operand and pays its
    per-call overhead: the suite's tiny MLP's jitted step went from 134 to 120 µs (Intel Xeon).
    Each alone in a jitted function, over all four operand layouts, eight row and column
    products took 0.80-1.06x of MKL's time (above 1 only at 2048 multiply-adds, 16 µs a call
    either way) and four outer products 0.52-0.85x. Products with another small
    dimension stay on MKL: as inductor reductions some operand layouts ran up to 12x slower.
    """
    for node in list(graph.nodes):
        if node.op != "call_function" or node.kwargs:
            continue
        if node.target is _aten.mm.default and len(node.args) == 2:
            bias, (a, b) = None, node.args
        elif node.target is _aten.addmm.default and len(node.args) == 3:
            bias, a, b = node.args
        else:
            continue
        av, bv, outv = _val(a), _val(b), _val(node)
        if not _float32_cpu(av, bv, outv) or not _static_2d(av, bv):
            continue
        biasv = None if bias is None else _val(bias)
        if bias is not None and not (_float32_cpu(biasv) and biasv.dim() <= 2):
            continue
        (m, k), n = av.shape, bv.shape[1]
        with graph.inserting_before(node):
            if k == 1:
                product = _node(graph, _aten.mul.Tensor, (a, b), outv.new_empty(outv.shape))
            elif (m == 1 or n == 1) and m * k * n <= MAX_GEMV_MACS:
                a3 = _node(graph, _aten.unsqueeze.default, (a, 2), av.unsqueeze(2))
                b3 = _node(graph, _aten.unsqueeze.default, (b, 0), bv.unsqueeze(0))
                terms = _node(graph, _aten.mul.Tensor, (a3, b3), av.new_empty((m, k, n)))
                product = _node(
                    graph, _aten.sum.dim_IntList, (terms, [1]), outv.new_empty(outv.shape)
                )
            else:
                continue
            if bias is not None:
                product = _node(graph, _aten.add.Tensor, (product, bias), outv)
        product.meta = {**node.meta, "val": product.meta["val"]}
        node.replace_all_uses_with(product)
        graph.erase_node(node)


_LIB, _OP = _define_op() if _available() else (None, None)


def cpu_vendor() -> str:
    """The CPU's vendor string from ``/proc/cpuinfo`` (``"GenuineIntel"``, ``"AuthenticAMD"``,
    ...), or ``""`` where there is none (another OS, another architecture).

    Example:
        >>> from fnn._src.onednn_matmul import cpu_vendor
        >>> isinstance(cpu_vendor(), str)
        True
    """
    return _cpu_vendor()


@functools.cache
def _cpu_vendor() -> str:
    return _read_vendor("/proc/cpuinfo")


def _read_vendor(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip()
    except OSError:
        pass
    return ""


def onednn_products() -> bool:
    """Whether ``fnn.jit`` moves large float32 CPU products to oneDNN, from
    ``FNN_ONEDNN_MATMUL``: ``auto`` (the default) on AMD CPUs only, ``1`` on any CPU, ``0``
    never; always False where PyTorch has no oneDNN linear kernel.

    Raises:
        ValueError: ``FNN_ONEDNN_MATMUL`` is set to something other than ``auto``, ``0``
            or ``1``.

    Example:
        >>> import os
        >>> from fnn._src.onednn_matmul import cpu_vendor, onednn_products
        >>> auto = os.environ.get("FNN_ONEDNN_MATMUL", "auto") == "auto"
        >>> if auto and cpu_vendor() != "AuthenticAMD":  # Intel, ARM, ...: MKL (or torch's BLAS)
        ...     assert not onednn_products()
    """
    setting = os.environ.get(_ENV, "auto")
    if setting not in ("auto", "0", "1"):
        raise ValueError(
            f"{_ENV} must be auto (the default: fnn.jit runs large float32 CPU products on "
            f"oneDNN on AMD CPUs, on MKL elsewhere), 1 (oneDNN on any CPU) or 0 (MKL); "
            f"got {setting!r}."
        )
    if _OP is None or setting == "0":
        return False
    return setting == "1" or _cpu_vendor() == "AuthenticAMD"


def linear_pass() -> Any:
    """The post-grad pass ``fnn.jit`` installs: large products to oneDNN where
    :func:`onednn_products` says so, then the ``addmm`` bias and small-product rewrites.

    Raises:
        ValueError: ``FNN_ONEDNN_MATMUL`` holds something else than ``auto``, ``0`` or ``1``.

    Example:
        >>> from fnn._src.onednn_matmul import linear_pass, onednn_products
        >>> linear_pass().onednn == onednn_products()
        True
    """
    return _pass(onednn_products())


@functools.cache
def _pass(onednn: bool) -> Any:
    # Defined here: importing torch._inductor takes about a second, which fnn's import and
    # fnn.jit's decoration do not pay (compiling imports it anyway).
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

    class MatmulPass(CustomGraphPass):
        """Moves large float32 CPU products (module docstring) to ``fnn::onednn_linear`` when
        ``onednn``, adds the bias of the remaining ``addmm`` in their pointwise and reduction uses,
        and
        turns products with a dimension of 1 into pointwise and reduction code."""

        def __init__(self) -> None:
            self.onednn = onednn

        def __call__(self, graph: torch.fx.Graph) -> None:
            if self.onednn:
                _to_onednn(graph)
            _bias_to_consumers(graph)
            _degenerate_products(graph)

        def uuid(self) -> bytes:
            extra = f"{MIN_MACS} {MAX_GEMV_MACS} {self.onednn}"
            return get_hash_for_files((__file__,), extra=extra)

    return MatmulPass()


def _to_onednn(graph: torch.fx.Graph) -> None:
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
