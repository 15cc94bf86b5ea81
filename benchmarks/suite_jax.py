"""The JAX/Flax/Optax variant of each workload of the benchmark suite (the ``bench`` extra).

Each model is written in ``flax.linen`` the way a Flax user would (NHWC images, ``Dense``
kernels ``(in, out)``), loaded with the torch twin's initial weights (transposed or permuted as
the layouts need), trained with the same ``optax`` optimizer under one ``jax.jit`` with the
parameters and optimizer state donated. ``available()`` says whether the extra is installed;
nothing here is imported by the suite otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.suite_models import (
    LM_CONTEXT,
    LM_D,
    LM_HEADS,
    LM_LAYERS,
    LM_VOCAB,
    MLP_SIZES,
    OPTIMIZERS,
    Workload,
    _loaded,
    _mlp_torch,
)
from benchmarks.suite_variants import Variant

Tensor = torch.Tensor


def available() -> str | None:
    """None when jax, flax and optax import; otherwise why not (for the printed note)."""
    try:
        import flax.linen  # noqa: F401
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError as e:
        return f"{e} (pip install 'fnn[bench]')"
    return None


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _scalar(x: Any) -> Tensor:
    return torch.tensor(float(np.asarray(x)))


def _jax_bytes(tree: Any) -> int:
    """Bytes of the JAX arrays in ``tree`` (the params and optimizer state a step holds)."""
    import jax

    return sum(int(a.nbytes) for a in jax.tree.leaves(tree) if hasattr(a, "nbytes"))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@functools.cache
def _modules() -> dict[str, Any]:
    """The Flax modules, defined on first use so that importing this file needs no JAX."""
    import flax.linen as fnn_
    import jax
    import jax.numpy as jnp

    class MLP(fnn_.Module):
        """Dense layers named after the torch Sequential's indices (m0, m2, m4)."""

        features: tuple[int, ...]

        @fnn_.compact
        def __call__(self, x):
            for i, f in enumerate(self.features):
                x = fnn_.Dense(f, name=f"m{2 * i}")(x)
                if i < len(self.features) - 1:
                    x = fnn_.relu(x)
            return x

    class CNN(fnn_.Module):
        """conv32-pool-conv64-pool-fc128-fc10 on NHWC images."""

        @fnn_.compact
        def __call__(self, x):
            x = fnn_.relu(fnn_.Conv(32, (3, 3), padding=1, name="m0")(x))
            x = fnn_.max_pool(x, (2, 2), (2, 2))
            x = fnn_.relu(fnn_.Conv(64, (3, 3), padding=1, name="m3")(x))
            x = fnn_.max_pool(x, (2, 2), (2, 2))
            x = x.reshape(x.shape[0], -1)
            x = fnn_.relu(fnn_.Dense(128, name="m7")(x))
            return fnn_.Dense(10, name="m9")(x)

    class Block(fnn_.Module):
        """Pre-LayerNorm GPT block with causal ``jax.nn.dot_product_attention``."""

        d: int
        heads: int

        @fnn_.compact
        def __call__(self, x):
            n, length, d = x.shape
            h = fnn_.LayerNorm(epsilon=1e-5, name="norm1")(x)
            q, k, v = jnp.split(fnn_.Dense(3 * d, name="in_proj")(h), 3, axis=-1)
            shape = (n, length, self.heads, d // self.heads)
            a = jax.nn.dot_product_attention(
                q.reshape(shape), k.reshape(shape), v.reshape(shape), is_causal=True
            )
            x = x + fnn_.Dense(d, name="out_proj")(a.reshape(n, length, d))
            h = fnn_.LayerNorm(epsilon=1e-5, name="norm2")(x)
            h = fnn_.gelu(fnn_.Dense(4 * d, name="linear1")(h), approximate=False)
            return x + fnn_.Dense(d, name="linear2")(h)

    class LM(fnn_.Module):
        @fnn_.compact
        def __call__(self, tokens):
            x = fnn_.Embed(LM_VOCAB, LM_D, name="tok_emb")(tokens)
            x = x + fnn_.Embed(LM_CONTEXT, LM_D, name="pos_emb")(jnp.arange(tokens.shape[1]))
            for i in range(LM_LAYERS):
                x = Block(LM_D, LM_HEADS, name=f"layers_{i}")(x)
            x = fnn_.LayerNorm(epsilon=1e-5, name="norm")(x)
            return fnn_.Dense(LM_VOCAB, use_bias=False, name="head")(x)

    def bn(name: str) -> Any:
        return fnn_.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name=name)

    class BasicBlock(fnn_.Module):
        features: int
        stride: int

        @fnn_.compact
        def __call__(self, x):
            s = (self.stride, self.stride)
            identity = x
            if self.stride != 1 or x.shape[-1] != self.features:
                identity = fnn_.Conv(self.features, (1, 1), s, use_bias=False, name="downsample_0")(
                    x
                )
                identity = bn("downsample_1")(identity)
            out = fnn_.Conv(self.features, (3, 3), s, padding=1, use_bias=False, name="conv1")(x)
            out = fnn_.relu(bn("bn1")(out))
            out = fnn_.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(out)
            return fnn_.relu(bn("bn2")(out) + identity)

    class ResNet18(fnn_.Module):
        @fnn_.compact
        def __call__(self, x):
            x = fnn_.Conv(64, (7, 7), (2, 2), padding=3, use_bias=False, name="conv1")(x)
            x = fnn_.relu(bn("bn1")(x))
            x = fnn_.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
            for i, f in enumerate((64, 128, 256, 512)):
                x = BasicBlock(f, 1 if i == 0 else 2, name=f"layer{i + 1}_0")(x)
                x = BasicBlock(f, 1, name=f"layer{i + 1}_1")(x)
            return fnn_.Dense(10, name="fc")(x.mean(axis=(1, 2)))

    return {"MLP": MLP, "CNN": CNN, "LM": LM, "ResNet18": ResNet18}


def _flax_variables(sd: dict[str, Tensor], nhwc_flatten: dict[str, tuple] | None = None) -> dict:
    """A torch ``state_dict`` as Flax variables ``{"params": ..., "batch_stats": ...}``.

    Module paths map by joining the torch path with ``_`` except at known container names
    (``layers.0`` → ``layers_0``, ``layer1.0`` → ``layer1_0``, ``downsample.0`` →
    ``downsample_0``; a leading Sequential index ``0`` → ``m0``). ``nhwc_flatten`` names Dense
    layers fed by a flattened NCHW map ``(C, H, W)``: their input rows are permuted to NHWC order.
    """
    out: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for name, t in sd.items():
        if name.endswith("num_batches_tracked"):
            continue
        *path, leaf = name.split(".")
        if path and path[0].isdigit():
            path[0] = f"m{path[0]}"
        merged: list[str] = []
        for part in path:
            if part.isdigit() and merged:
                merged[-1] = f"{merged[-1]}_{part}"
            elif part != "encoder" and part != "self_attn":
                merged.append(part)
        if leaf in ("in_proj_weight", "in_proj_bias"):
            merged.append("in_proj")
            leaf = leaf[len("in_proj_") :]
        collection = "params"
        if leaf in ("running_mean", "running_var"):
            collection, value = "batch_stats", _np(t)
            leaf = "mean" if leaf == "running_mean" else "var"
        elif leaf == "bias":
            value = _np(t)
        elif merged[-1] in ("tok_emb", "pos_emb"):
            leaf, value = "embedding", _np(t)
        elif t.ndim == 1:  # LayerNorm / BatchNorm weight
            leaf, value = "scale", _np(t)
        elif t.ndim == 4:
            leaf, value = "kernel", _np(t.permute(2, 3, 1, 0))
        else:
            w = t
            if nhwc_flatten and merged[-1] in nhwc_flatten:
                c, h, wd = nhwc_flatten[merged[-1]]
                w = t.reshape(t.shape[0], c, h, wd).permute(0, 2, 3, 1).reshape(t.shape[0], -1)
            leaf, value = "kernel", _np(w.T)
        node = out[collection]
        for part in merged:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _optax(kind: str) -> Any:
    import optax

    h = OPTIMIZERS[kind]
    if kind == "adam":
        return optax.adam(h["lr"])
    if kind == "adamw":
        return optax.adamw(h["lr"], weight_decay=h["weight_decay"])
    return optax.sgd(h["lr"], momentum=h["momentum"])


def _loss(kind: str) -> Callable[[Any, Any], Any]:
    import jax.numpy as jnp
    import optax

    if kind == "mse":
        return lambda out, y: jnp.mean((out[..., 0] - y) ** 2)
    return lambda out, y: optax.softmax_cross_entropy_with_integer_labels(out, y).mean()


# --------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------


def train(w: Workload) -> Variant:
    """One ``jax.jit`` train step of ``w`` with Flax and Optax, params and state donated."""
    import jax
    import jax.numpy as jnp
    import optax

    mods = _modules()
    sd = w.torch_model().state_dict()
    x, y = jnp.asarray(_np(w.x)), jnp.asarray(_np(w.y))
    flatten = None
    if w.key in ("tiny", "mlp"):
        sizes = [int(t.shape[0]) for n, t in sd.items() if n.endswith("bias")]
        model = mods["MLP"](tuple(sizes))
    elif w.key == "cnn":
        model, flatten = mods["CNN"](), {"m7": (64, 8, 8)}
    elif w.key == "transformer":
        model = mods["LM"]()
    elif w.key == "resnet18":
        model = mods["ResNet18"]()
    else:
        raise ValueError(f"no JAX variant for workload {w.key!r}")
    if x.ndim == 4:
        x = jnp.transpose(x, (0, 2, 3, 1))
    variables = jax.tree.map(jnp.asarray, _flax_variables(sd, flatten))
    params, stats = variables["params"], variables["batch_stats"]
    opt = _optax(w.optimizer)
    loss_of = _loss(w.loss)

    if stats:

        def step_bn(params, opt_state, stats, x, y):
            def loss_fn(p):
                out, new = model.apply(
                    {"params": p, "batch_stats": stats}, x, mutable=["batch_stats"]
                )
                return loss_of(out, y), new["batch_stats"]

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, stats, loss

        jitted = jax.jit(step_bn, donate_argnums=(0, 1, 2))
        box = [params, opt.init(params), stats]
    else:

        def step_plain(params, opt_state, x, y):
            def loss_fn(p):
                return loss_of(model.apply({"params": p}, x), y)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        jitted = jax.jit(step_plain, donate_argnums=(0, 1))
        box = [params, opt.init(params)]

    def step() -> Any:
        out = jitted(*box, x, y)
        box[:] = out[:-1]
        return out[-1].block_until_ready()

    return Variant(step, _scalar, lambda: _jax_bytes(box))


def per_example(params: dict, x: Tensor, y: Tensor) -> Variant:
    """``jax.jit(jax.vmap(jax.grad(loss)))`` of one example's loss (the MLP)."""
    import jax
    import jax.numpy as jnp

    model = _modules()["MLP"](tuple(MLP_SIZES[1:]))
    p = jax.tree.map(
        jnp.asarray, _flax_variables(_loaded(_mlp_torch(MLP_SIZES), params).state_dict())["params"]
    )
    loss_of = _loss("xent")

    def one(p, xi, yi):
        return loss_of(model.apply({"params": p}, xi[None]), yi[None])

    fn = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0, 0)))
    xj, yj = jnp.asarray(_np(x)), jnp.asarray(_np(y))

    def step() -> Any:
        return jax.block_until_ready(fn(p, xj, yj))

    def check(g: Any) -> Tensor:
        first, last = np.asarray(g["m0"]["bias"]), np.asarray(g["m4"]["bias"])
        return torch.from_numpy(np.concatenate([first, last], 1))

    return Variant(step, check)


def ensemble(stacked: dict, x: Tensor, y: Tensor) -> Variant:
    """8 MLPs trained at once: ``jax.vmap(jax.value_and_grad)`` over stacked params, Adam."""
    import jax
    import jax.numpy as jnp
    import optax

    model = _modules()["MLP"](tuple(MLP_SIZES[1:]))
    members = fnn_unstack(stacked)
    per_member = [
        _flax_variables(_loaded(_mlp_torch(MLP_SIZES), m).state_dict())["params"] for m in members
    ]
    params = jax.tree.map(lambda *a: jnp.stack([jnp.asarray(v) for v in a]), *per_member)
    loss_of = _loss("xent")
    opt = _optax("adam")

    def loss_fn(p, xb, yb):
        return loss_of(model.apply({"params": p}, xb), yb)

    vg = jax.vmap(jax.value_and_grad(loss_fn), in_axes=(0, None, None))

    def step_fn(p, s, xb, yb):
        losses, grads = vg(p, xb, yb)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, losses.sum()

    jitted = jax.jit(step_fn, donate_argnums=(0, 1))
    box = [params, opt.init(params)]
    xj, yj = jnp.asarray(_np(x)), jnp.asarray(_np(y))

    def step() -> Any:
        box[0], box[1], loss = jitted(box[0], box[1], xj, yj)
        return loss.block_until_ready()

    return Variant(step, _scalar, lambda: _jax_bytes(box))


def fnn_unstack(stacked: dict) -> list[dict]:
    """The members of a stacked fnn params tree (leading axis) as separate trees."""
    import fnn

    n = fnn.tree.leaves(stacked)[0].shape[0]
    return [fnn.tree.map(lambda t, i=i: t[i].clone(), stacked) for i in range(n)]
