"""The optimizers and blocks of fnn_optim without a full torch.optim twin, against their rules.

- Every optimizer of ``_more_alias`` (lamb, lars, lion, adafactor, adabelief, novograd, muon)
  runs 25 steps on a least-squares problem in float64 next to its paper's update rule written
  out below per tensor in plain torch, with hypothesis-chosen hyperparameters; the parameters
  must agree to 1e-9.
- ``muon`` also runs next to its torch twins (``torch.optim.Muon`` for the matrix, ``AdamW`` for
  the bias) in float32 with bfloat16 Newton-Schulz.
- ``lbfgs`` equals ``torch.optim.LBFGS(max_iter=1)`` step for step (fixed step and strong Wolfe,
  float64), its first steps equal the two-loop recursion written out, and it converges on a
  convex quadratic (also with the backtracking line search).
- The blocks (clipping, ema, centralize, trust ratio, factored moments on a 3-d tensor,
  adaptive clipping, zero_nans, add_noise) against direct formulas; add_noise against
  fnn.random draws from the seed.
- Each optimizer compiles once under ``fnn.jit`` for a 10-step loop (with a
  ``set_hyperparams`` in the middle) and equals the eager loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
import fnn_optim as optim
from fnn.testing import assert_trees_all_close

STEPS = 25
TWIN_STEPS = 20
EXAMPLES = settings(max_examples=4, deadline=None)
F64 = torch.float64

Params = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------
# The problem: least squares with a 4x3 matrix and a (3,) bias
# --------------------------------------------------------------------------------------------


def problem(seed: int = 0, dtype: torch.dtype = F64) -> tuple[Params, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=gen, dtype=dtype)
    y = torch.randn(16, 3, generator=gen, dtype=dtype)
    params = {
        "b": torch.randn(3, generator=gen, dtype=dtype),
        "w": torch.randn(4, 3, generator=gen, dtype=dtype),
    }
    return params, x, y


def loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x @ params["w"] + params["b"] - y) ** 2).mean()


def grads_at(params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        gs = torch.autograd.grad(loss(leaves, x, y), list(leaves.values()))
    return dict(zip(leaves, gs, strict=True))


def run_ours(opt: optim.GradientTransformation, params: Params, x, y, steps: int) -> Params:
    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update(grads_at(params, x, y), state, params)
        params = optim.apply_updates(params, updates)
    return params


def norm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t)


def rms(t: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((t * t).mean())


def ratio(p_norm: torch.Tensor, u_norm: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The trust ratio, 1 where a norm is zero."""
    if p_norm == 0 or u_norm == 0:
        return torch.ones_like(p_norm)
    return scale * p_norm / u_norm


# --------------------------------------------------------------------------------------------
# The papers' rules, per tensor. ``step(p, g, s, hp, t)`` updates the dicts ``p`` (params) and
# ``s`` (per-name state dicts) in place; ``t`` counts from 1.
# --------------------------------------------------------------------------------------------


def lamb_step(p, g, s, hp, t):
    for k in p:
        st_ = s.setdefault(k, {"m": torch.zeros_like(p[k]), "v": torch.zeros_like(p[k])})
        st_["m"] = hp["b1"] * st_["m"] + (1 - hp["b1"]) * g[k]
        st_["v"] = hp["b2"] * st_["v"] + (1 - hp["b2"]) * g[k] ** 2
        m_hat = st_["m"] / (1 - hp["b1"] ** t)
        v_hat = st_["v"] / (1 - hp["b2"] ** t)
        r = m_hat / (torch.sqrt(v_hat + hp["eps_root"]) + hp["eps"]) + hp["weight_decay"] * p[k]
        p[k] = p[k] - hp["learning_rate"] * ratio(norm(p[k]), norm(r)) * r


def lars_step(p, g, s, hp, t):
    for k in p:
        gk = g[k] + hp["weight_decay"] * p[k]
        trust = ratio(norm(p[k]), norm(gk) + hp["eps"], hp["trust_coefficient"])
        u = -hp["learning_rate"] * trust * gk
        buf = s.get(k, torch.zeros_like(u))
        buf = u + hp["momentum"] * buf
        s[k] = buf
        p[k] = p[k] + (u + hp["momentum"] * buf if hp["nesterov"] else buf)


def lion_step(p, g, s, hp, t):
    for k in p:
        m = s.get(k, torch.zeros_like(p[k]))
        c = hp["b1"] * m + (1 - hp["b1"]) * g[k]
        p[k] = p[k] - hp["learning_rate"] * (torch.sign(c) + hp["weight_decay"] * p[k])
        s[k] = hp["b2"] * m + (1 - hp["b2"]) * g[k]


def adabelief_step(p, g, s, hp, t):
    for k in p:
        st_ = s.setdefault(k, {"m": torch.zeros_like(p[k]), "s": torch.zeros_like(p[k])})
        st_["m"] = hp["b1"] * st_["m"] + (1 - hp["b1"]) * g[k]
        st_["s"] = hp["b2"] * st_["s"] + (1 - hp["b2"]) * (g[k] - st_["m"]) ** 2 + hp["eps_root"]
        m_hat = st_["m"] / (1 - hp["b1"] ** t)
        s_hat = st_["s"] / (1 - hp["b2"] ** t)
        p[k] = p[k] - hp["learning_rate"] * m_hat / (torch.sqrt(s_hat) + hp["eps"])


def novograd_step(p, g, s, hp, t):
    for k in p:
        n2 = norm(g[k]) ** 2
        v = n2 if t == 1 else hp["b2"] * s[k]["v"] + (1 - hp["b2"]) * n2
        a = g[k] / (torch.sqrt(v + hp["eps_root"]) + hp["eps"]) + hp["weight_decay"] * p[k]
        m = a if t == 1 else hp["b1"] * s[k]["m"] + a
        s[k] = {"v": v, "m": m}
        p[k] = p[k] - hp["learning_rate"] * m


def adafactor_step(p, g, s, hp, t):
    """Shazeer & Stern, Algorithms 4-5: row/column sums of G**2 + eps1 for factored matrices."""
    beta2 = 1 - t ** (-hp["decay_rate"])
    for k in p:
        g2 = g[k] ** 2 + hp["eps"]
        factored = g2.ndim == 2 and min(g2.shape) >= hp["min_dim_size_to_factor"]
        if factored:
            row = g2.sum(1)  # R: one entry per row
            col = g2.sum(0)  # C: one entry per column
            st_ = s.setdefault(k, {"R": torch.zeros_like(row), "C": torch.zeros_like(col)})
            st_["R"] = beta2 * st_["R"] + (1 - beta2) * row
            st_["C"] = beta2 * st_["C"] + (1 - beta2) * col
            v = torch.outer(st_["R"], st_["C"]) / st_["R"].sum()
        else:
            st_ = s.setdefault(k, {"V": torch.zeros_like(g2)})
            st_["V"] = beta2 * st_["V"] + (1 - beta2) * g2
            v = st_["V"]
        u = g[k] / torch.sqrt(v)
        u = u / torch.clamp_min(rms(u) / hp["clipping_threshold"], 1.0)
        step = hp["learning_rate"] * torch.clamp_min(rms(p[k]), 1e-3)
        p[k] = p[k] - step * u


def newton_schulz(m: torch.Tensor, steps: int, eps: float) -> torch.Tensor:
    a, b, c = 3.4445, -4.7750, 2.0315
    x = m.T if m.shape[0] > m.shape[1] else m
    x = x / max(float(norm(x)), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if m.shape[0] > m.shape[1] else x


def muon_step(p, g, s, hp, t):
    """Keller Jordan's Muon on the matrix (torch.optim.Muon's form), AdamW on the bias."""
    lr = hp["learning_rate"]
    buf = s.get("w", torch.zeros_like(p["w"]))
    buf = hp["beta"] * buf + (1 - hp["beta"]) * g["w"]
    s["w"] = buf
    m = (1 - hp["beta"]) * g["w"] + hp["beta"] * buf if hp["nesterov"] else buf
    o = newton_schulz(m, hp["ns_steps"], 1e-7)
    rows, cols = p["w"].shape
    p["w"] = p["w"] - lr * (hp["weight_decay"] * p["w"] + math.sqrt(max(1, rows / cols)) * o)
    st_ = s.setdefault("b", {"m": torch.zeros_like(p["b"]), "v": torch.zeros_like(p["b"])})
    st_["m"] = 0.9 * st_["m"] + 0.1 * g["b"]
    st_["v"] = 0.999 * st_["v"] + 0.001 * g["b"] ** 2
    d = (st_["m"] / (1 - 0.9**t)) / (torch.sqrt(st_["v"] / (1 - 0.999**t)) + 1e-8)
    p["b"] = p["b"] - lr * (d + hp["adam_weight_decay"] * p["b"])


@dataclass(frozen=True)
class Rule:
    """``hp`` draws hyperparameters; ``ours(hp)`` builds the optimizer; ``step`` is the rule."""

    name: str
    hp: st.SearchStrategy[dict[str, Any]]
    ours: Callable[[dict[str, Any]], optim.GradientTransformation]
    step: Callable[..., None]


lrs = st.floats(1e-3, 0.1)
b1s = st.floats(0.5, 0.95)
b2s = st.floats(0.9, 0.999)
decays = st.floats(0.0, 0.1)

RULES = [
    Rule(
        "lamb",
        st.fixed_dictionaries(
            {
                "learning_rate": lrs,
                "b1": b1s,
                "b2": b2s,
                "eps": st.sampled_from([1e-6, 1e-3]),
                "eps_root": st.sampled_from([0.0, 1e-8]),
                "weight_decay": decays,
            }
        ),
        lambda hp: optim.lamb(**hp),
        lamb_step,
    ),
    Rule(
        "lars",
        st.fixed_dictionaries(
            {
                "learning_rate": st.floats(0.1, 10.0),
                "weight_decay": decays,
                "trust_coefficient": st.floats(1e-3, 0.1),
                "eps": st.sampled_from([0.0, 1e-3]),
                "momentum": st.floats(0.0, 0.95),
                "nesterov": st.booleans(),
            }
        ),
        lambda hp: optim.lars(**hp),
        lars_step,
    ),
    Rule(
        "lion",
        st.fixed_dictionaries({"learning_rate": lrs, "b1": b1s, "b2": b2s, "weight_decay": decays}),
        lambda hp: optim.lion(**hp),
        lion_step,
    ),
    Rule(
        "adabelief",
        st.fixed_dictionaries(
            {
                "learning_rate": lrs,
                "b1": b1s,
                "b2": b2s,
                "eps": st.sampled_from([1e-16, 1e-8]),
                "eps_root": st.sampled_from([1e-16, 1e-10]),
            }
        ),
        lambda hp: optim.adabelief(**hp),
        adabelief_step,
    ),
    Rule(
        "novograd",
        st.fixed_dictionaries(
            {
                "learning_rate": lrs,
                "b1": b1s,
                "b2": st.floats(0.1, 0.9),
                "eps": st.sampled_from([1e-6, 1e-3]),
                "eps_root": st.sampled_from([0.0, 1e-8]),
                "weight_decay": decays,
            }
        ),
        lambda hp: optim.novograd(**hp),
        novograd_step,
    ),
    Rule(
        "adafactor",
        st.fixed_dictionaries(
            {
                "learning_rate": lrs,
                "decay_rate": st.floats(0.5, 1.0),
                "clipping_threshold": st.floats(0.5, 2.0),
                "min_dim_size_to_factor": st.sampled_from([2, 3, 128]),
                "eps": st.sampled_from([1e-30, 1e-6]),
            }
        ),
        lambda hp: optim.adafactor(**hp),
        adafactor_step,
    ),
    Rule(
        "muon",
        st.fixed_dictionaries(
            {
                "learning_rate": lrs,
                "weight_decay": decays,
                "beta": st.floats(0.5, 0.99),
                "nesterov": st.booleans(),
                "ns_steps": st.integers(1, 6),
                "adam_weight_decay": decays,
            }
        ),
        lambda hp: optim.muon(**hp, ns_dtype=F64),
        muon_step,
    ),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
@EXAMPLES
@given(data=st.data())
def test_optimizer_follows_its_papers_rule(rule: Rule, data: st.DataObject) -> None:
    hp = data.draw(rule.hp, label="hyperparameters")
    params, x, y = problem(data.draw(st.integers(0, 2**16), label="seed"))
    ours = run_ours(rule.ours(hp), params, x, y, STEPS)
    ref, state = dict(params), {}
    for t in range(1, STEPS + 1):
        rule.step(ref, grads_at(ref, x, y), state, hp, t)
    # Muon's Newton-Schulz polynomial amplifies float64 rounding step by step: hypothesis found
    # a 2e-9 relative difference (lr 0.086, beta 0.5, 5 iterations, seed 864)
    rtol = 1e-7 if rule.name == "muon" else 1e-9
    assert_trees_all_close(ours, ref, rtol=rtol, atol=1e-10)


def test_optimizers_with_masks_leave_unmasked_leaves_alone() -> None:
    params, x, y = problem()
    only_w = {"b": False, "w": True}
    ours = run_ours(
        optim.lars(1.0, weight_decay=0.1, weight_decay_mask=only_w, trust_ratio_mask=only_w),
        params,
        x,
        y,
        3,
    )
    ref, buf = dict(params), {}
    for _ in range(3):
        g = grads_at(ref, x, y)
        for k in ref:
            gk = g[k] + 0.1 * ref[k] if k == "w" else g[k]
            trust = ratio(norm(ref[k]), norm(gk), 0.001) if k == "w" else 1.0
            buf[k] = -trust * gk + 0.9 * buf.get(k, 0.0)
            ref[k] = ref[k] + buf[k]
    assert_trees_all_close(ours, ref, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Muon against torch.optim.Muon and AdamW
# --------------------------------------------------------------------------------------------


@settings(max_examples=3, deadline=None)
@given(
    lr=st.floats(1e-3, 0.05),
    weight_decay=st.floats(0.0, 0.2),
    beta=st.floats(0.8, 0.99),
    nesterov=st.booleans(),
    adjust=st.sampled_from([None, "match_rms_adamw"]),
)
def test_muon_matches_torch_muon_and_adamw(lr, weight_decay, beta, nesterov, adjust) -> None:
    params, x, y = problem(1, torch.float32)
    opt = optim.muon(
        lr, weight_decay, beta, nesterov, adjust_lr_fn=adjust, adam_weight_decay=weight_decay
    )
    ours = run_ours(opt, params, x, y, TWIN_STEPS)
    w = torch.nn.Parameter(params["w"].clone())
    b = torch.nn.Parameter(params["b"].clone())
    muon = torch.optim.Muon(
        [w], lr=lr, weight_decay=weight_decay, momentum=beta, nesterov=nesterov, adjust_lr_fn=adjust
    )
    adamw = torch.optim.AdamW([b], lr=lr, weight_decay=weight_decay)
    for _ in range(TWIN_STEPS):
        g = grads_at({"b": b.detach(), "w": w.detach()}, x, y)
        w.grad, b.grad = g["w"], g["b"]
        muon.step()
        adamw.step()
    # The Newton-Schulz iteration runs in bfloat16, as torch's: float32 roundings that differ
    # (torch multiplies by Python floats, we by 0-d tensors) can flip a bfloat16 rounding of the
    # orthogonalised update (entries about 1), which then moves both leaves by about lr / 100.
    tol = TWIN_STEPS * lr * 1e-2
    assert_trees_all_close(ours, {"b": b.detach(), "w": w.detach()}, rtol=0, atol=tol)


# --------------------------------------------------------------------------------------------
# L-BFGS
# --------------------------------------------------------------------------------------------


def quadratic(n: int = 7, seed: int = 0) -> tuple[Callable[[Params], torch.Tensor], Params]:
    """A convex quadratic 0.5 x^T A x - b^T x over x = concat(w, b) (condition number ~ 100)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    a = q @ torch.diag(torch.logspace(0, 2, n, dtype=F64)) @ q.T
    c = torch.randn(n, generator=gen, dtype=F64)

    def f(p: Params) -> torch.Tensor:
        v = torch.cat([p["b"], p["w"].reshape(-1)])
        return 0.5 * v @ a @ v - c @ v

    params = {
        "b": torch.randn(1, generator=gen, dtype=F64),
        "w": torch.randn(2, 3, generator=gen, dtype=F64),
    }
    return f, params


def lbfgs_run(opt, f, params, steps):
    state = opt.init(params)
    out = []
    for _ in range(steps):
        value, grads = fnn.value_and_grad(f)(params)
        updates, state = opt.update(grads, state, params, value=value, grad=grads, value_fn=f)
        params = optim.apply_updates(params, updates)
        out.append(params)
    return out


@EXAMPLES
@given(
    lr=st.floats(0.05, 1.0),
    memory_size=st.integers(1, 6),
    line_search=st.sampled_from([None, "strong_wolfe"]),
    seed=st.integers(0, 100),
)
def test_lbfgs_matches_torch_lbfgs_step_for_step(lr, memory_size, line_search, seed) -> None:
    f, params = quadratic(seed=seed)
    ours = lbfgs_run(
        optim.lbfgs(lr, memory_size=memory_size, linesearch=line_search), f, params, 20
    )
    b = torch.nn.Parameter(params["b"].clone())  # torch's flat order = ours (sorted keys)
    w = torch.nn.Parameter(params["w"].clone())
    # max_iter=1: one iteration per step, as ours; max_eval=26: the line search may evaluate
    # 25 more times (torch's default max_eval=max_iter*5//4 would allow none).
    opt = torch.optim.LBFGS(
        [b, w], lr=lr, max_iter=1, max_eval=26, history_size=memory_size, line_search_fn=line_search
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = f({"b": b, "w": w})
        value.backward()
        return value

    for k in range(20):
        opt.step(closure)
        assert_trees_all_close(ours[k], {"b": b.detach(), "w": w.detach()}, rtol=1e-9, atol=1e-10)


def test_lbfgs_first_steps_equal_the_two_loop_recursion() -> None:
    f, params = quadratic(seed=3)
    lr, m = 0.5, 2
    ours = lbfgs_run(optim.lbfgs(lr, memory_size=m), f, params, 5)

    def flat(p: Params) -> torch.Tensor:
        return torch.cat([p["b"], p["w"].reshape(-1)])

    def grad(v: torch.Tensor) -> torch.Tensor:
        return flat(fnn.grad(f)({"b": v[:1], "w": v[1:].reshape(2, 3)}))

    x, pairs, x_prev, g_prev = flat(params), [], None, None
    for k in range(5):
        g = grad(x)
        if k == 0:
            d = g * min(1.0, 1.0 / float(g.abs().sum()))
        else:
            s, y = x - x_prev, g - g_prev
            pairs = [*pairs, (s, y)][-m:]
            gamma = (s @ y) / (y @ y)
            q, alphas = g.clone(), []
            for s_i, y_i in reversed(pairs):
                alpha = (s_i @ q) / (y_i @ s_i)
                q = q - alpha * y_i
                alphas.append(alpha)
            r = gamma * q
            for (s_i, y_i), alpha in zip(pairs, reversed(alphas), strict=True):
                beta = (y_i @ r) / (y_i @ s_i)
                r = r + (alpha - beta) * s_i
            d = r
        x_prev, g_prev = x, g
        x = x - lr * d
        assert torch.allclose(flat(ours[k]), x, rtol=1e-12, atol=1e-12), k


@pytest.mark.parametrize("line_search", [None, "strong_wolfe", "backtracking"])
def test_lbfgs_converges_on_a_convex_quadratic(line_search) -> None:
    f, params = quadratic(n=7, seed=5)
    v = torch.linalg.solve(*_normal_equations(f, params))
    # torch's default tolerances stop where g . d < 1e-9 (here |x - x*| ~ 1e-5): lower them.
    opt = optim.lbfgs(
        memory_size=10, tolerance_grad=1e-12, tolerance_change=0.0, linesearch=line_search
    )
    out = lbfgs_run(opt, f, params, 40)
    got = torch.cat([out[-1]["b"], out[-1]["w"].reshape(-1)])
    assert torch.allclose(got, v, rtol=0, atol=1e-6), (got - v).abs().max()
    # With the defaults it stops early but stays put (no NaN, no drift).
    out = lbfgs_run(optim.lbfgs(memory_size=10, linesearch=line_search), f, params, 60)
    got = torch.cat([out[-1]["b"], out[-1]["w"].reshape(-1)])
    assert torch.allclose(got, v, rtol=0, atol=1e-4), (got - v).abs().max()


def _normal_equations(f, params) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` and ``b`` of the quadratic ``f`` (its Hessian and minus its gradient at 0)."""

    def fv(v: torch.Tensor) -> torch.Tensor:
        return f({"b": v[:1], "w": v[1:].reshape(2, 3)})

    zero = torch.zeros(7, dtype=F64)
    return torch.func.hessian(fv)(zero), -torch.func.grad(fv)(zero)


def test_lbfgs_takes_no_step_at_a_stationary_point() -> None:
    _, params = quadratic(seed=1)
    opt = optim.lbfgs()
    state = opt.init(params)
    zero = {k: torch.zeros_like(v) for k, v in params.items()}
    updates, new_state = opt.update(zero, state, params)
    assert all(bool((u == 0).all()) for u in updates.values())
    assert int(new_state[0].count) == 0


def test_line_searches_need_value_fn() -> None:
    f, params = quadratic()
    opt = optim.lbfgs(linesearch="strong_wolfe")
    with pytest.raises(ValueError, match="value_fn"):
        opt.update(fnn.grad(f)(params), opt.init(params), params)


# --------------------------------------------------------------------------------------------
# Blocks against direct formulas
# --------------------------------------------------------------------------------------------


def tree_like(seed: int, scale: float = 1.0) -> Params:
    gen = torch.Generator().manual_seed(seed)
    return {
        "b": scale * torch.randn(3, generator=gen, dtype=F64),
        "conv": scale * torch.randn(5, 2, 6, generator=gen, dtype=F64),
        "w": scale * torch.randn(4, 3, generator=gen, dtype=F64),
    }


@EXAMPLES
@given(max_norm=st.floats(0.1, 20.0), scale=st.floats(0.01, 10.0))
def test_clip_by_global_norm_formula(max_norm, scale) -> None:
    g = tree_like(0, scale)
    total = math.sqrt(sum(float((v**2).sum()) for v in g.values()))
    factor = 1.0 if total < max_norm else max_norm / total
    opt = optim.clip_by_global_norm(max_norm)
    got, _ = opt.update(g, opt.init(g))
    assert_trees_all_close(got, {k: v * factor for k, v in g.items()}, rtol=1e-12)


@EXAMPLES
@given(threshold=st.floats(0.1, 5.0), scale=st.floats(0.01, 10.0), delta=st.floats(0.01, 3.0))
def test_clip_and_clip_by_block_rms_formulas(threshold, scale, delta) -> None:
    g = tree_like(1, scale)
    opt = optim.clip_by_block_rms(threshold)
    got, _ = opt.update(g, opt.init(g))
    want = {k: v / max(1.0, float(rms(v)) / threshold) for k, v in g.items()}
    assert_trees_all_close(got, want, rtol=1e-12)
    opt = optim.clip(delta)
    got, _ = opt.update(g, opt.init(g))
    assert_trees_all_close(got, {k: v.clamp(-delta, delta) for k, v in g.items()})


@EXAMPLES
@given(clipping=st.floats(0.01, 1.0), scale=st.floats(0.01, 10.0))
def test_adaptive_grad_clip_unitwise_formula(clipping, scale) -> None:
    params, g = tree_like(2), tree_like(3, scale)
    params["w"][1] = 0.0  # a unit whose parameter norm is below eps
    opt = optim.adaptive_grad_clip(clipping, eps=1e-3)
    got, _ = opt.update(g, opt.init(params), params)
    for k in g:
        rows = g[k].reshape(g[k].shape[0], -1) if g[k].ndim > 1 else g[k].reshape(1, -1)
        prow = params[k].reshape(rows.shape)
        want = []
        for gi, pi in zip(rows, prow, strict=True):
            limit = clipping * max(float(norm(pi)), 1e-3)
            gn = float(norm(gi))
            want.append(gi if gn < limit else gi * limit / max(gn, 1e-6))
        assert_trees_all_close(got[k], torch.stack(want).reshape(g[k].shape), rtol=1e-12)


@EXAMPLES
@given(min_norm=st.floats(0.0, 2.0), coef=st.floats(0.01, 2.0), eps=st.floats(0.0, 0.1))
def test_scale_by_trust_ratio_formula_with_mask(min_norm, coef, eps) -> None:
    params, g = tree_like(4), tree_like(5)
    g["b"] = torch.zeros_like(g["b"])  # zero update norm: ratio 1
    opt = optim.scale_by_trust_ratio(
        min_norm, coef, eps, mask=lambda p: {**dict.fromkeys(p, True), "w": False}
    )
    got, _ = opt.update(g, opt.init(params), params)
    want = dict(g)
    for k in ("b", "conv"):
        p_norm = max(float(norm(params[k])), min_norm)
        u_norm = max(float(norm(g[k])), min_norm)
        r = 1.0 if p_norm == 0 or u_norm == 0 else coef * p_norm / (u_norm + eps)
        want[k] = g[k] * r
    assert_trees_all_close(got, want, rtol=1e-12)


def test_scale_by_factored_rms_on_a_3d_tensor() -> None:
    """Shape (5, 2, 6): factored over its largest axes 2 (size 6) and 0 (size 5)."""
    g1, g2 = tree_like(6)["conv"], tree_like(7)["conv"]
    opt = optim.scale_by_factored_rms(min_dim_size_to_factor=5, decay_rate=0.8, epsilon=1e-30)
    state = opt.init({"c": g1})
    assert state.v_row["c"].shape == (5, 2) and state.v_col["c"].shape == (2, 6)
    out1, state = opt.update({"c": g1}, state)
    out2, state = opt.update({"c": g2}, state)
    vr = vc = None
    for t, g in ((1, g1), (2, g2)):
        rho = 1 - t**-0.8
        sq = g**2 + 1e-30
        vr = (1 - rho) * sq.mean(2) + (rho * vr if vr is not None else 0)  # over axis 2
        vc = (1 - rho) * sq.mean(0) + (rho * vc if vc is not None else 0)  # over axis 0
    # v[i, j, k] ~ vr[i, j] * vc[j, k] / mean_i vr[i, j]
    v = vr[:, :, None] * vc[None, :, :] / vr.mean(0)[None, :, None]
    assert_trees_all_close(out2["c"], g2 / torch.sqrt(v), rtol=1e-12)
    small = optim.scale_by_factored_rms()  # min_dim_size_to_factor=128: nothing factored
    out, _ = small.update({"c": g1}, small.init({"c": g1}))
    assert_trees_all_close(out["c"], g1 / torch.sqrt(g1**2 + 1e-30), rtol=1e-12)
    del out1


@EXAMPLES
@given(decay=st.floats(0.0, 0.99), debias=st.booleans())
def test_ema_formula(decay, debias) -> None:
    opt = optim.ema(decay, debias=debias)
    gs = [tree_like(10 + i) for i in range(5)]
    state = opt.init(gs[0])
    acc = {k: torch.zeros_like(v) for k, v in gs[0].items()}
    for t, g in enumerate(gs, start=1):
        got, state = opt.update(g, state)
        acc = {k: decay * acc[k] + (1 - decay) * g[k] for k in g}
        want = {k: v / (1 - decay**t) for k, v in acc.items()} if debias else acc
        # atol: a lerp and the written-out sum differ by an ulp of the O(1) inputs, which is a
        # large relative error where the average cancels to ~1e-5 (found by hypothesis)
        assert_trees_all_close(got, want, rtol=1e-12, atol=1e-14)


def test_centralize_and_zero_nans() -> None:
    g = tree_like(20)
    opt = optim.centralize()
    got, _ = opt.update(g, opt.init(g))
    assert_trees_all_close(got["b"], g["b"])
    assert_trees_all_close(got["conv"], g["conv"] - g["conv"].mean((1, 2), keepdim=True))
    assert_trees_all_close(got["w"], g["w"] - g["w"].mean(1, keepdim=True))

    g["w"][0, 1] = float("nan")
    opt = optim.zero_nans()
    got, state = opt.update(g, opt.init(g))
    assert got["w"][0, 1] == 0 and torch.isfinite(got["w"]).all()
    assert {k: bool(v) for k, v in state.found_nan.items()} == {
        "b": False,
        "conv": False,
        "w": True,
    }


@EXAMPLES
@given(eta=st.floats(0.01, 2.0), gamma=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_add_noise_reproducible_from_the_seed(eta, gamma, seed) -> None:
    g = tree_like(30)
    opt = optim.add_noise(eta, gamma, seed)
    state = opt.init(g)
    key = fnn.random.key(seed)
    for t in range(1, 4):
        got, state = opt.update(g, state)
        key, sample = fnn.random.split(key)
        leaf_keys = fnn.random.split(sample, 3)  # leaves in flatten order: b, conv, w
        std = math.sqrt(eta / t**gamma)
        want = {
            k: g[k] + std * fnn.random.normal(leaf_keys[i], g[k].shape, dtype=F64)
            for i, k in enumerate(("b", "conv", "w"))
        }
        assert_trees_all_close(got, want, rtol=1e-6, atol=1e-12)
        assert torch.equal(state.rng_key, key)
    again, _ = opt.update(g, opt.init(g))
    first, _ = optim.add_noise(eta, gamma, seed).update(g, opt.init(g))
    assert_trees_all_close(again, first, rtol=0, atol=0)


def test_get_and_set_hyperparams_reach_the_new_blocks() -> None:
    params, _, _ = problem()
    state = optim.lamb(0.1, weight_decay=0.01).init(params)
    hp = optim.get_hyperparams(state)
    assert {"b1", "b2", "weight_decay", "trust_coefficient", "learning_rate"} <= set(hp)
    state = optim.set_hyperparams(state, lr=0.5, trust_coefficient=2.0)
    assert float(optim.get_hyperparams(state)["trust_coefficient"]) == 2.0


# --------------------------------------------------------------------------------------------
# Compiled: one compilation for a 10-step loop, equal to eager. Dynamo's "eager" backend (as in
# test_jit.py): it traces the whole step as one graph with its guards, which is what "compiles
# once" is about, without inductor's code generation (tens of seconds per graph on CPU).
# test_lbfgs_compiles_with_inductor runs the most unusual graph through inductor.
# --------------------------------------------------------------------------------------------

COMPILED = {
    "lamb": lambda: optim.lamb(0.05, weight_decay=0.01),
    "lars": lambda: optim.lars(1.0, weight_decay=0.01, nesterov=True),
    "lion": lambda: optim.lion(0.01),
    "adafactor": lambda: optim.adafactor(0.05, min_dim_size_to_factor=3, momentum=0.9),
    "adabelief": lambda: optim.adabelief(0.05),
    "novograd": lambda: optim.novograd(0.05, weight_decay=0.01),
    "muon": lambda: optim.muon(0.02),
    "lbfgs": lambda: optim.lbfgs(0.5, memory_size=3),
    "lbfgs_backtracking": lambda: optim.lbfgs(
        memory_size=3, linesearch=optim.scale_by_backtracking_linesearch(4)
    ),
    "blocks": lambda: optim.chain(
        optim.zero_nans(),
        optim.add_noise(0.01, 0.55, 3),
        optim.adaptive_grad_clip(0.5),
        optim.centralize(),
        optim.clip_by_global_norm(1.0),
        optim.clip(0.5),
        optim.ema(0.9),
        optim.scale_by_learning_rate(0.1),
    ),
}


def compiled_loop(opt: optim.GradientTransformation, **jit_options: Any) -> None:
    params, x, y = problem(2, torch.float32)

    def step(params, state, grads, x, y):
        updates, state = opt.update(
            grads, state, params, value=loss(params, x, y), value_fn=lambda p: loss(p, x, y)
        )
        return optim.apply_updates(params, updates), state

    def grads_then(step_fn):
        return lambda params, state, x, y: step_fn(params, state, grads_at(params, x, y), x, y)

    compiled = fnn.jit(step, donate_argnums=(0, 1), **jit_options)
    eager_p, eager_s = params, opt.init(params)
    comp_p = {k: v.clone() for k, v in params.items()}  # donated: written in place
    comp_s = opt.init(comp_p)
    first = sorted(optim.get_hyperparams(eager_s))[0]
    for k in range(10):
        if k == 5:  # a new hyperparameter value must not compile again
            value = float(optim.get_hyperparams(eager_s)[first]) * 0.9
            eager_s = optim.set_hyperparams(eager_s, **{first: value})
            comp_s = optim.set_hyperparams(comp_s, **{first: value})
        eager_p, eager_s = grads_then(step)(eager_p, eager_s, x, y)
        comp_p, comp_s = grads_then(compiled)(comp_p, comp_s, x, y)
    assert compiled.num_compiles == 1
    # bfloat16 Newton-Schulz in muon; float32 otherwise
    tol = 2e-2 if any(isinstance(s, optim.ScaleByMuonState) for s in comp_s) else 1e-5
    assert_trees_all_close(comp_p, eager_p, rtol=tol, atol=tol)
    assert_trees_all_close(comp_s, eager_s, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_compiled_loop_compiles_once_and_equals_eager(name: str) -> None:
    compiled_loop(COMPILED[name](), backend="eager")


def test_lbfgs_compiles_with_inductor() -> None:
    compiled_loop(optim.lbfgs(0.5, memory_size=1))


def test_lbfgs_refuses_leaves_of_different_dtypes() -> None:
    params = {"a": torch.zeros(2), "b": torch.zeros(2, dtype=F64)}
    with pytest.raises(TypeError, match="one dtype and device"):
        optim.lbfgs().init(params)
