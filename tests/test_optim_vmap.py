"""Every fnn_optim optimizer runs under ``fnn.vmap``: an ensemble steps all its members at once.

``torch._foreach_*`` ops have no vmap batching rule in torch 2.13, so fnn_optim falls back to
per-leaf ops inside torch.func transforms. The reference is a Python loop over the members,
each with its own ``init`` and ``update``: the vmapped update must give the same updates and
states (float32 tolerance).
"""

from __future__ import annotations

import pytest
import torch
from test_optim_torch import _FIXED_EXAMPLES, ROWS

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close

MEMBERS = 4
OTHERS = {
    "lamb": lambda: optim.lamb(1e-2),
    "lars": lambda: optim.lars(1e-2),
    "lion": lambda: optim.lion(1e-3),
    "adafactor": lambda: optim.adafactor(1e-2),
    "adabelief": lambda: optim.adabelief(1e-2),
    "novograd": lambda: optim.novograd(1e-2),
    # bfloat16 Newton-Schulz rounds batched and single matmuls differently: compare in float32
    "muon": lambda: optim.muon(1e-2, ns_dtype=torch.float32),
    "clip + adamw": lambda: optim.chain(optim.clip_by_global_norm(0.5), optim.adamw(1e-2)),
}
MAKERS = {row.name: (lambda row=row: row.fnn(_FIXED_EXAMPLES[row.name])) for row in ROWS}
MAKERS |= OTHERS
MAKERS.pop("lbfgs", None)  # a line search: data-dependent control flow, not vmappable


def _ensemble(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"b": torch.randn(MEMBERS, 3, generator=g), "w": torch.randn(MEMBERS, 4, 3, generator=g)}


def _member(tree: dict, i: int) -> dict:
    return {k: v[i] for k, v in tree.items()}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_vmapped_update_equals_a_loop_over_members(name):
    opt = MAKERS[name]()
    params, grads1, grads2 = _ensemble(0), _ensemble(1), _ensemble(2)

    def two_steps(params, g1, g2):
        state = opt.init(params)
        for g in (g1, g2):
            updates, state = opt.update(g, state, params)
            params = optim.apply_updates(params, updates)
        return params, state

    got_params, got_state = fnn.vmap(two_steps)(params, grads1, grads2)
    for i in range(MEMBERS):
        want_params, want_state = two_steps(
            _member(params, i), _member(grads1, i), _member(grads2, i)
        )
        assert_trees_all_close(_member(got_params, i), want_params, rtol=1e-5, atol=1e-6)
        assert_trees_all_close(
            fnn.tree.map(lambda t, i=i: t[i], got_state), want_state, rtol=1e-5, atol=1e-6
        )
