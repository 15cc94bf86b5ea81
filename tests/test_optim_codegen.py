"""What a compiled fnn_optim update turns into: foreach ops in the graph, scalars out of loops.

Two measured slowdowns are pinned here (see ``fnn_optim/_hoist.py`` and ``_foreach.py``):

- dynamo models ``peek_interpreter_stack()`` as never ``None``, which once sent every compiled
  update down the per-leaf path meant for ``vmap`` (one traced op per leaf per foreach op);
- inductor inlined per-step scalars (``1 - b1 ** t``) into the elementwise loops, where the C++
  compiler may not hoist ``powf``: it ran once per vector of 16 floats.
"""

from __future__ import annotations

import re

import torch
from torch._inductor.utils import run_and_get_code

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close
from fnn_optim._hoist import _hoist_op, hoist


def _graph_targets(fn, *args) -> list[str]:
    """The names of the ops in the graph dynamo captures for ``fn(*args)``."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, fullgraph=True)(*args)
    assert len(graphs) == 1
    return [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]


def _params(n: int, seed: int = 0, size: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"p{i}": torch.randn(size, generator=g) for i in range(n)}


def test_compiled_update_traces_one_foreach_op_for_all_leaves():
    opt = optim.adam(1e-3)

    def update(grads, state, params):
        return opt.update(grads, state, params)

    counts = {}
    for n in (2, 12):
        params = _params(n)
        targets = _graph_targets(update, _params(n, seed=1), opt.init(params), params)
        assert any("_foreach_" in t for t in targets), targets
        # left per leaf: unpacking the foreach results, and torch.lerp's branch (a where)
        counts[n] = [t for t in targets if "getitem" not in t and "where" not in t]
    # the per-leaf path would add about 15 ops per leaf
    assert counts[12] == counts[2], counts


def test_compiled_update_under_vmap_still_takes_the_per_leaf_path():
    opt = optim.adam(1e-2)
    params = {"w": torch.randn(3, 4)}
    grads = {"w": torch.randn(3, 4)}
    state = fnn.vmap(opt.init)(params)

    def batched(grads, state, params):
        return fnn.vmap(opt.update)(grads, state, params)

    got = torch.compile(batched, backend="aot_eager", fullgraph=True)(grads, state, params)
    want = batched(grads, state, params)
    assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)


def _loop_bodies(code: str, numel: int) -> list[str]:
    """The C++ of every loop over ``numel`` elements, up to the end of its kernel."""
    starts = [m.start() for m in re.finditer(rf"x0<static_cast<int64_t>\({numel}L\)", code)]
    return [
        code[s : code.find('extern "C"', s) if 'extern "C"' in code[s:] else None] for s in starts
    ]


def test_adam_bias_corrections_are_computed_before_the_elementwise_loop():
    numel = 4096  # distinct from every scalar loop
    opt = optim.adam(1e-3)
    params = {"a": torch.randn(numel), "b": torch.randn(numel)}
    grads = {"a": torch.randn(numel), "b": torch.randn(numel)}
    state = opt.init(params)

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    got, codes = run_and_get_code(compiled, params, state, grads)
    code = "\n".join(codes)
    assert "std::pow" in code, "the bias corrections should be in this kernel"
    bodies = _loop_bodies(code, numel)
    assert bodies, "no loop over the parameters found in the generated code"
    for body in bodies:
        assert "std::pow" not in body, "b ** t is evaluated inside the elementwise loop"
    assert_trees_all_close(got, step(params, state, grads), rtol=1e-6, atol=1e-7)


def test_hoist_is_the_identity_eagerly_and_differentiable():
    t = torch.tensor(0.25)
    assert hoist(t) is t
    assert hoist(1.5) == 1.5
    assert torch.equal(_hoist_op(t), t)
    x = torch.tensor(2.0, requires_grad=True)  # e.g. a learned learning rate
    (grad,) = torch.autograd.grad(_hoist_op(x) * 3.0, x)
    assert grad.item() == 3.0


def test_hoist_leaves_torch_func_transforms_alone_while_compiling():
    def f(x):
        return torch.func.grad(lambda y: (hoist(y * 2.0) * y).sum())(x)

    targets = _graph_targets(f, torch.tensor(3.0))
    assert "fnn_optim.hoist.default" not in targets
    assert torch.compile(f, backend="aot_eager", fullgraph=True)(torch.tensor(3.0)).item() == 12.0


def test_hoist_goes_through_the_op_only_while_compiling():
    t = torch.tensor(2.0)
    targets = _graph_targets(lambda x: hoist(x * 3.0) + hoist(torch.ones(2)), t)
    assert targets.count("fnn_optim.hoist.default") == 1, targets  # only the 0-d one
    assert torch.compile(lambda x: hoist(x * 3.0) + 1.0, fullgraph=True)(t).item() == 7.0
