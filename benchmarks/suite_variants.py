"""The benchmark suite's variants: one training step written each way a user would write it.

Every builder returns a :class:`Variant`: ``step()`` runs one step on the variant's own copy of
the workload's weights and returns something that ``check`` turns into a CPU tensor (the loss,
or for per-example gradients a slice of them), compared across variants at step 0 so that
nothing times a wrong program. The torch variants are the baselines; the fnn variants are what
the README shows; the JAX variant lives in :mod:`benchmarks.suite_jax`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

import fnn
import fnn_optim
from benchmarks.suite_models import (
    MLP_SIZES,
    OPTIMIZERS,
    Workload,
    _loaded,
    _mlp_fnn,
    _mlp_torch,
    clone_tree,
    fnn_loss,
    torch_loss,
)

Tensor = torch.Tensor

BASE = "eager + torch.optim foreach"
FUSED = "eager + torch.optim fused"
COMPILE = "torch.compile(model) + torch.optim foreach"
FNN_EAGER = "fnn eager (value_and_grad + step_)"
FNN_JIT = "fnn.jit step (donated)"
JAX = "jax.jit (Flax + Optax)"
TRAIN_VARIANTS = [BASE, FUSED, COMPILE, FNN_EAGER, FNN_JIT, JAX]

LOOP = "Python loop of autograd.grad"
PE_EAGER = "fnn.vmap(fnn.grad) eager"
PE_JIT = "fnn.jit(fnn.vmap(fnn.grad))"
PE_JAX = "jax.jit(jax.vmap(jax.grad))"
PER_EXAMPLE_VARIANTS = [LOOP, PE_EAGER, PE_JIT, PE_JAX]

ENSEMBLE_MEMBERS = 8
ENSEMBLE_BATCH = 128
PER_EXAMPLE_BATCH = 32


class Variant(NamedTuple):
    """``step()`` runs one step; ``check(step())`` is a CPU tensor compared across variants.

    ``live()`` is the number of bytes of training state the variant holds between steps: its
    parameters, optimizer state and model state, plus the ``.grad`` tensors ``torch.optim``
    loops keep alive from one step to the next (peak memory adds the growth during a step).
    """

    step: Callable[[], Any]
    check: Callable[[Any], Tensor]
    live: Callable[[], int] = lambda: 0


def _same(out: Tensor) -> Tensor:
    return out.detach().cpu()


def tree_bytes(*trees: Any) -> int:
    """Bytes held by the distinct tensor leaves of ``trees``."""
    seen: dict[int, int] = {}
    for tree in trees:
        for t in fnn.tree.leaves(tree):
            if isinstance(t, Tensor):
                seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def module_bytes(module: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Parameters, buffers, ``.grad`` tensors and optimizer state of a torch training loop."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)]
    return tree_bytes(list(module.parameters()), list(module.buffers()), grads, state)


# --------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------


def torch_optimizer(kind: str, params: Any, impl: str) -> torch.optim.Optimizer:
    """``torch.optim`` twin of the workload's optimizer; ``impl`` is ``foreach`` or ``fused``."""
    h = OPTIMIZERS[kind]
    flag = {"foreach": True} if impl == "foreach" else {"fused": True}
    if kind == "adam":
        return torch.optim.Adam(params, lr=h["lr"], **flag)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=h["lr"], weight_decay=h["weight_decay"], **flag)
    return torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"], **flag)


def fnn_optimizer(kind: str) -> fnn_optim.GradientTransformation:
    """The same optimizer in ``fnn_optim`` (torch.optim's defaults and update rules)."""
    h = OPTIMIZERS[kind]
    if kind == "adam":
        return fnn_optim.adam(h["lr"])
    if kind == "adamw":
        return fnn_optim.adamw(h["lr"], weight_decay=h["weight_decay"])
    return fnn_optim.sgd(h["lr"], momentum=h["momentum"])


# --------------------------------------------------------------------------------------------
# Training steps
# --------------------------------------------------------------------------------------------


def torch_train(w: Workload, impl: str = "foreach", compiled: bool = False) -> Variant:
    """The classic loop: ``zero_grad``, forward, ``backward()``, ``opt.step()``."""
    model = w.torch_model().train()
    forward = torch.compile(model) if compiled else model
    opt = torch_optimizer(w.optimizer, model.parameters(), impl)
    x, y, kind = w.x, w.y, w.loss

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = torch_loss(kind, forward(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return Variant(step, _same, lambda: module_bytes(model, opt))


def _fnn_loss_fn(w: Workload) -> Callable[..., Any]:
    model, kind = w.model, w.loss
    if w.stateful:

        def loss_with_state(params: dict, state: dict, x: Tensor, y: Tensor) -> Any:
            out, state = model.apply(params, x, state=state, train=True)
            return fnn_loss(kind, out, y), state

        return loss_with_state

    def loss_fn(params: dict, x: Tensor, y: Tensor) -> Tensor:
        return fnn_loss(kind, model.apply(params, x), y)

    return loss_fn


def fnn_eager(w: Workload) -> Variant:
    """``fnn.value_and_grad`` then ``fnn_optim.step_`` (in place, torch's fused kernels)."""
    opt = fnn_optimizer(w.optimizer)
    params = clone_tree(w.params)
    opt_state = opt.init(params)
    box = {"state": clone_tree(w.state)}
    x, y = w.x, w.y
    loss_fn = _fnn_loss_fn(w)
    if w.stateful:
        vg_aux = fnn.value_and_grad(loss_fn, has_aux=True)

        def step_with_state() -> Tensor:
            (loss, box["state"]), grads = vg_aux(params, box["state"], x, y)
            fnn_optim.step_(opt, grads, opt_state, params)
            return loss

        return Variant(step_with_state, _same, lambda: tree_bytes(params, opt_state, box))
    vg = fnn.value_and_grad(loss_fn)

    def step() -> Tensor:
        loss, grads = vg(params, x, y)
        fnn_optim.step_(opt, grads, opt_state, params)
        return loss

    return Variant(step, _same, lambda: tree_bytes(params, opt_state))


def fnn_jit_step(w: Workload) -> tuple[Callable[..., Any], Callable[[], tuple]]:
    """The README's train step under ``fnn.jit`` with the params and states donated.

    Returns the jitted function and a function making fresh arguments for it (a copy of the
    initial params, a new optimizer state, and with BatchNorm the model state).
    """
    opt = fnn_optimizer(w.optimizer)
    loss_fn = _fnn_loss_fn(w)
    if w.stateful:

        def train_step_with_state(params, opt_state, state, x, y):
            (loss, state), grads = fnn.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
            updates, opt_state = opt.update(grads, opt_state, params)
            return fnn_optim.apply_updates(params, updates), opt_state, state, loss

        jitted = fnn.jit(train_step_with_state, donate_argnums=(0, 1, 2))

        def fresh_with_state() -> tuple:
            params = clone_tree(w.params)
            return params, opt.init(params), clone_tree(w.state)

        return jitted, fresh_with_state

    def train_step(params, opt_state, x, y):
        loss, grads = fnn.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return fnn_optim.apply_updates(params, updates), opt_state, loss

    def fresh() -> tuple:
        params = clone_tree(w.params)
        return params, opt.init(params)

    return fnn.jit(train_step, donate_argnums=(0, 1)), fresh


def fnn_jit(w: Workload) -> Variant:
    """One ``fnn.jit`` of the whole step (forward, backward, optimizer), donating its state."""
    jitted, fresh = fnn_jit_step(w)
    box = list(fresh())
    x, y = w.x, w.y

    def step() -> Tensor:
        out = jitted(*box, x, y)
        box[:] = out[:-1]
        return out[-1]

    return Variant(step, _same, lambda: tree_bytes(box))


def train_variant(w: Workload, name: str) -> Variant:
    """Build the variant ``name`` (one of :data:`TRAIN_VARIANTS`) of a training workload."""
    if name == BASE:
        return torch_train(w, "foreach")
    if name == FUSED:
        return torch_train(w, "fused")
    if name == COMPILE:
        return torch_train(w, "foreach", compiled=True)
    if name == FNN_EAGER:
        return fnn_eager(w)
    if name == FNN_JIT:
        return fnn_jit(w)
    if name == JAX:
        from benchmarks import suite_jax

        return suite_jax.train(w)
    raise ValueError(f"unknown variant {name!r}; expected one of {TRAIN_VARIANTS}")


# --------------------------------------------------------------------------------------------
# Per-example gradients of the MLP
# --------------------------------------------------------------------------------------------


def per_example_data() -> tuple[dict, Tensor, Tensor]:
    """The MLP's initial params and a batch of :data:`PER_EXAMPLE_BATCH` examples."""
    k_init, k_x, k_y = fnn.random.split(fnn.random.key(5), 3)
    x = fnn.random.normal(k_x, (PER_EXAMPLE_BATCH, MLP_SIZES[0]))
    y = fnn.random.randint(k_y, (PER_EXAMPLE_BATCH,), 0, MLP_SIZES[-1])
    params, _ = _mlp_fnn(MLP_SIZES).init(k_init, x)
    return params, x, y


def _pe_fingerprint(first_bias: Tensor, last_bias: Tensor) -> Tensor:
    """Per-example gradients of the first and last biases, ``(N, 512 + 10)``."""
    return torch.cat([first_bias, last_bias], 1).detach().cpu()


def per_example_variant(name: str) -> Variant:
    """Per-example gradients of the MLP's cross-entropy, one of :data:`PER_EXAMPLE_VARIANTS`."""
    params, x, y = per_example_data()
    if name == LOOP:
        model = _loaded(_mlp_torch(MLP_SIZES), params)
        weights = list(model.parameters())

        def loop() -> list[tuple[Tensor, ...]]:
            out = []
            for i in range(x.shape[0]):
                loss = torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
                out.append(torch.autograd.grad(loss, weights))
            return out

        def check_loop(out: list) -> Tensor:
            return _pe_fingerprint(
                torch.stack([g[1] for g in out]), torch.stack([g[-1] for g in out])
            )

        return Variant(loop, check_loop)
    if name == PE_JAX:
        from benchmarks import suite_jax

        return suite_jax.per_example(params, x, y)
    model = _mlp_fnn(MLP_SIZES)

    def one_loss(p: dict, xi: Tensor, yi: Tensor) -> Tensor:
        return fnn.losses.cross_entropy(model.apply(p, xi[None]), yi[None])

    per_example = fnn.vmap(fnn.grad(one_loss), in_axes=(None, 0, 0))
    if name == PE_JIT:
        per_example = fnn.jit(per_example)
    elif name != PE_EAGER:
        raise ValueError(f"unknown variant {name!r}; expected one of {PER_EXAMPLE_VARIANTS}")

    def check(grads: dict) -> Tensor:
        return _pe_fingerprint(grads["0"]["bias"], grads["4"]["bias"])

    return Variant(lambda: per_example(params, x, y), check)


# --------------------------------------------------------------------------------------------
# An ensemble of 8 MLPs
# --------------------------------------------------------------------------------------------


def ensemble_data() -> tuple[dict, Tensor, Tensor]:
    """Stacked initial params of :data:`ENSEMBLE_MEMBERS` MLPs (leading axis) and one batch."""
    k_init, k_x, k_y = fnn.random.split(fnn.random.key(6), 3)
    x = fnn.random.normal(k_x, (ENSEMBLE_BATCH, MLP_SIZES[0]))
    y = fnn.random.randint(k_y, (ENSEMBLE_BATCH,), 0, MLP_SIZES[-1])
    model = _mlp_fnn(MLP_SIZES)
    keys = fnn.random.split(k_init, ENSEMBLE_MEMBERS)
    stacked = fnn.vmap(lambda k: model.init(k, x[:1])[0])(keys)
    return stacked, x, y


class _TorchEnsemble(torch.nn.Module):
    """8 ``nn.Sequential`` MLPs in a ``ModuleList``; ``forward`` returns the summed loss."""

    def __init__(self, stacked: dict) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(
            _loaded(_mlp_torch(MLP_SIZES), fnn.tree.map(lambda t, i=i: t[i].clone(), stacked))
            for i in range(ENSEMBLE_MEMBERS)
        )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = torch.zeros(())
        for m in self.members:
            total = total + torch.nn.functional.cross_entropy(m(x), y)
        return total


def ensemble_variant(name: str) -> Variant:
    """Train 8 MLPs on one batch with Adam: a loop of 8 modules, or ``fnn.vmap`` over stacks.

    The reported loss is the sum of the members' losses.
    """
    stacked, x, y = ensemble_data()
    if name in (BASE, FUSED, COMPILE):
        ens = _TorchEnsemble(stacked)
        forward = torch.compile(ens) if name == COMPILE else ens
        opt = torch_optimizer("adam", ens.parameters(), "fused" if name == FUSED else "foreach")

        def step_torch() -> Tensor:
            opt.zero_grad(set_to_none=True)
            loss = forward(x, y)
            loss.backward()
            opt.step()
            return loss.detach()

        return Variant(step_torch, _same, lambda: module_bytes(ens, opt))
    if name == JAX:
        from benchmarks import suite_jax

        return suite_jax.ensemble(stacked, x, y)
    model = _mlp_fnn(MLP_SIZES)
    opt = fnn_optimizer("adam")

    def loss_fn(p: dict, xb: Tensor, yb: Tensor) -> Tensor:
        return fnn.losses.cross_entropy(model.apply(p, xb), yb)

    vg = fnn.vmap(fnn.value_and_grad(loss_fn), in_axes=(0, None, None))
    params = clone_tree(stacked)
    opt_state = opt.init(params)
    if name == FNN_EAGER:

        def step_eager() -> Tensor:
            losses, grads = vg(params, x, y)
            fnn_optim.step_(opt, grads, opt_state, params)
            return losses.sum()

        return Variant(step_eager, _same, lambda: tree_bytes(params, opt_state))
    if name != FNN_JIT:
        raise ValueError(f"unknown variant {name!r}; expected one of {TRAIN_VARIANTS}")

    @fnn.jit(donate_argnums=(0, 1))
    def train_step(p, s, xb, yb):
        losses, grads = vg(p, xb, yb)
        updates, s = opt.update(grads, s, p)
        return fnn_optim.apply_updates(p, updates), s, losses.sum()

    box = [params, opt_state]

    def step_jit() -> Tensor:
        box[0], box[1], loss = train_step(box[0], box[1], x, y)
        return loss

    return Variant(step_jit, _same, lambda: tree_bytes(box))
