"""The inductor backend ``fnn.jit`` compiles with: fnn's defaults under the user's options.

See ``fnn.jit``'s docstring for what each default does and what it was measured to change.
"""

from __future__ import annotations

from typing import Any

import torch

from fnn._src.onednn_matmul import linear_pass
from fnn._src.vec_isa import vec_isa_ok

# Why: see jit's docstring. size_asserts re-checks every input's sizes and strides in Python on
# each call, which dynamo's tensor guards have just checked (85 us a call with 450 tensors).
_INDUCTOR_DEFAULTS = {"cpp.max_horizontal_fusion_size": 1, "size_asserts": False}


def with_defaults(compile_options: dict[str, Any], dynamic: bool | None = None) -> dict[str, Any]:
    """``compile_options`` with fnn's inductor defaults under the user's ``options``.

    With inductor and no ``mode``, the backend becomes :class:`_Inductor` (inductor itself, which
    turns off channels-last layout optimization for graphs that train BatchNorm) holding
    :data:`_INDUCTOR_DEFAULTS` under the user's options, plus ``cpp.vec_isa_ok=True`` once
    inductor's vector-ISA probes are known to pass on this machine (:mod:`fnn._src.vec_isa`)
    and, where PyTorch has oneDNN, the post-grad pass that moves large float32 CPU matrix
    products to oneDNN's linear kernel (:mod:`fnn._src.onednn_matmul`).
    """
    backend = compile_options.get("backend", "inductor")
    if backend != "inductor" or "mode" in compile_options:  # torch.compile: mode xor options
        return compile_options
    defaults = dict(_INDUCTOR_DEFAULTS)
    if vec_isa_ok():
        defaults["cpp.vec_isa_ok"] = True
    linear = linear_pass()
    if linear is not None:
        defaults["post_grad_custom_post_pass"] = linear
    options = {**defaults, **(compile_options.get("options") or {})}
    if _Inductor is None:
        return {**compile_options, "options": options}
    rest = {k: v for k, v in compile_options.items() if k not in ("backend", "options")}
    return {**rest, "backend": _Inductor(options, dynamic)}


_BATCH_NORM_TRAINING_ARG = 5  # F.batch_norm, torch.batch_norm, aten.native_batch_norm: `training`


def _trains_batch_norm(gm: torch.fx.GraphModule) -> bool:
    """Whether a dynamo graph calls a batch norm in training mode (or with an unknown mode)."""
    for node in gm.graph.nodes:
        if node.op != "call_function" or "batch_norm" not in getattr(node.target, "__name__", ""):
            continue
        training = node.kwargs.get("training")
        if training is None and len(node.args) > _BATCH_NORM_TRAINING_ARG:
            training = node.args[_BATCH_NORM_TRAINING_ARG]
        if training is not False:
            return True
    return False


_InductorWrapper: Any = getattr(torch, "_TorchCompileInductorWrapper", None)


if _InductorWrapper is not None:

    class _Inductor(_InductorWrapper):  # type: ignore[misc, valid-type]
        """Inductor, with channels-last layout optimization off for graphs training BatchNorm.

        On CPU, inductor converts every convolution graph to channels-last when oneDNN is
        available. Measured here (``fnn.jit`` train steps, 2 threads): a conv32-pool-conv64-
        pool-fc128-fc10 net on 64 images of 3x32x32 took 32.4 ms with it and 40.7 ms without;
        the same net with BatchNorm after each convolution 36.3 ms with it and 31.0 ms without,
        and ResNet-18 on 16 images of 3x64x64 182 ms against 146 ms (eager ``torch.nn``:
        133 ms). An explicit ``layout_optimization`` in ``options`` always wins.
        """

        def __init__(self, options: dict[str, Any], dynamic: bool | None) -> None:
            super().__init__(None, options, dynamic)

        def __call__(self, model_: Any, inputs_: Any, **kwargs: Any) -> Any:
            chosen = "layout_optimization" in self.config or "layout_optimization" in (
                kwargs.get("config_patches") or {}
            )
            gm = isinstance(model_, torch.fx.GraphModule)
            if chosen or not gm or not _trains_batch_norm(model_):
                return super().__call__(model_, inputs_, **kwargs)
            from torch._inductor import config

            with config.patch({"layout_optimization": False}):  # seen by compile_fx and its cache
                return super().__call__(model_, inputs_, **kwargs)

else:  # a torch without this wrapper: inductor by name, with the options as given
    _Inductor = None  # type: ignore[assignment, misc]
