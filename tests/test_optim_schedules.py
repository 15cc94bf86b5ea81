"""Schedules of fnn_optim against torch.optim.lr_scheduler and against their formulas.

- Every schedule with a torch twin gives, for ``count = 0..299``, the learning rate torch's
  scheduler puts in ``optimizer.param_groups[0]["lr"]`` before the ``count``-th
  ``optimizer.step()`` (i.e. after ``count`` calls of ``scheduler.step()``), for
  hypothesis-chosen arguments.
- The schedules without a twin are checked against their Optax formulas written out here in
  float64 Python.
- Each family compiles once under ``fnn.jit`` while the count moves.
- ``reduce_on_plateau`` gives torch's ``ReduceLROnPlateau`` learning rates for loss sequences
  with plateaus.
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

N = 300
EXAMPLES = settings(max_examples=6, deadline=None)


def torch_lrs(
    make_scheduler: Callable[[torch.optim.Optimizer], Any], lr: float, n: int = N
) -> torch.Tensor:
    """``param_groups[0]["lr"]`` used by each of ``n`` optimizer steps under a torch scheduler."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(opt)
    out = []
    for _ in range(n):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()  # no grad: a no-op that keeps torch's order check quiet
        scheduler.step()
    return torch.tensor(out, dtype=torch.float64)


def assert_close_to_reference(got: torch.Tensor, want: torch.Tensor, scale: float) -> None:
    """float32 schedule values vs float64 references: relative 1e-5, absolute 1e-6 * scale."""
    assert got.dtype == torch.float32, got.dtype
    torch.testing.assert_close(
        got.double(), want, rtol=1e-5, atol=1e-6 * max(abs(scale), 1e-30), check_dtype=False
    )


# --------------------------------------------------------------------------------------------
# Torch twins
# --------------------------------------------------------------------------------------------

lrs = st.floats(1e-4, 1.0)
sched = torch.optim.lr_scheduler


@dataclass(frozen=True)
class Twin:
    """``args`` draws keyword arguments; ``ours(**args)`` and ``theirs(opt, **args)`` build."""

    name: str
    args: st.SearchStrategy[dict[str, Any]]
    ours: Callable[..., Callable[[torch.Tensor], torch.Tensor]]
    theirs: Callable[..., Any]
    lr: Callable[[dict[str, Any]], float] = lambda a: a["lr"]


def _step_sizes() -> st.SearchStrategy[float]:
    # Integers take the exact integer path of `cyclic`; halves take torch's float path.
    return st.one_of(st.integers(1, 120).map(float), st.integers(2, 200).map(lambda k: k / 2))


TWINS = [
    Twin(
        "step_lr",
        st.fixed_dictionaries(
            {"lr": lrs, "step_size": st.integers(1, 120), "gamma": st.floats(0.05, 0.999)}
        ),
        lambda lr, step_size, gamma: optim.step_lr(lr, step_size, gamma),
        lambda o, lr, step_size, gamma: sched.StepLR(o, step_size, gamma),
    ),
    Twin(
        "multistep_lr",
        st.fixed_dictionaries(
            {
                "lr": lrs,
                "milestones": st.lists(st.integers(0, 320), max_size=5),
                "gamma": st.floats(0.05, 0.999),
            }
        ),
        lambda lr, milestones, gamma: optim.multistep_lr(lr, milestones, gamma),
        lambda o, lr, milestones, gamma: sched.MultiStepLR(o, milestones, gamma),
    ),
    Twin(
        "exponential_lr",
        st.fixed_dictionaries({"lr": lrs, "gamma": st.floats(0.9, 1.005)}),
        lambda lr, gamma: optim.exponential_lr(lr, gamma),
        lambda o, lr, gamma: sched.ExponentialLR(o, gamma),
    ),
    Twin(
        "linear_lr",
        st.fixed_dictionaries(
            {
                "lr": lrs,
                "start_factor": st.floats(0.01, 1.0),
                "end_factor": st.floats(0.0, 1.0),
                "total_iters": st.integers(1, 400),
            }
        ),
        lambda lr, **kw: optim.linear_lr(lr, **kw),
        lambda o, lr, **kw: sched.LinearLR(o, **kw),
    ),
    Twin(
        "constant_lr",
        st.fixed_dictionaries(
            {"lr": lrs, "factor": st.floats(0.01, 1.0), "total_iters": st.integers(1, 400)}
        ),
        lambda lr, **kw: optim.constant_lr(lr, **kw),
        lambda o, lr, **kw: sched.ConstantLR(o, **kw),
    ),
    Twin(
        "cosine_annealing_lr",
        st.fixed_dictionaries(
            {"lr": lrs, "T_max": st.integers(1, 400), "eta_min_frac": st.floats(0.0, 0.5)}
        ),
        lambda lr, T_max, eta_min_frac: optim.cosine_annealing_lr(lr, T_max, eta_min_frac * lr),
        lambda o, lr, T_max, eta_min_frac: sched.CosineAnnealingLR(o, T_max, eta_min_frac * lr),
    ),
    Twin(
        "polynomial_lr",
        st.fixed_dictionaries(
            {"lr": lrs, "total_iters": st.integers(1, 400), "power": st.floats(0.5, 3.0)}
        ),
        lambda lr, **kw: optim.polynomial_lr(lr, **kw),
        lambda o, lr, **kw: sched.PolynomialLR(o, **kw),
    ),
    Twin(
        "cyclic",
        st.fixed_dictionaries(
            {
                "base_lr": st.floats(0.0, 0.1),
                "max_lr": st.floats(0.1, 1.0),
                "step_size_up": _step_sizes(),
                "step_size_down": st.none() | _step_sizes(),
                "mode": st.sampled_from(["triangular", "triangular2", "exp_range"]),
                "gamma": st.floats(0.99, 1.0),
            }
        ),
        lambda **kw: optim.cyclic(**kw),
        lambda o, **kw: sched.CyclicLR(o, cycle_momentum=False, **kw),
        lr=lambda a: a["max_lr"],
    ),
    Twin(
        "onecycle",
        st.fixed_dictionaries(
            {
                "max_lr": lrs,
                "total_steps": st.integers(N, 2 * N),
                "pct_start": st.floats(0.05, 0.95),
                "anneal_strategy": st.sampled_from(["cos", "linear"]),
                "div_factor": st.floats(2.0, 100.0),
                "final_div_factor": st.floats(10.0, 1e4),
                "three_phase": st.booleans(),
            }
        ),
        lambda **kw: optim.onecycle(**kw),
        lambda o, **kw: sched.OneCycleLR(o, cycle_momentum=False, **kw),
        lr=lambda a: a["max_lr"],
    ),
    Twin(
        "cosine_onecycle_schedule",
        st.fixed_dictionaries(
            {
                "peak_value": lrs,
                "transition_steps": st.integers(N, 2 * N),
                "pct_start": st.floats(0.05, 0.95),
            }
        ),
        lambda **kw: optim.cosine_onecycle_schedule(**kw),
        lambda o, peak_value, transition_steps, pct_start: sched.OneCycleLR(
            o, peak_value, transition_steps, pct_start=pct_start, cycle_momentum=False
        ),
        lr=lambda a: a["peak_value"],
    ),
    Twin(
        "cosine_annealing_warm_restarts",
        st.fixed_dictionaries(
            {
                "lr": lrs,
                "T_0": st.integers(1, 100),
                "T_mult": st.integers(1, 3),
                "eta_min_frac": st.floats(0.0, 0.5),
            }
        ),
        lambda lr, T_0, T_mult, eta_min_frac: optim.sgdr(lr, T_0, T_mult, eta_min_frac * lr),
        lambda o, lr, T_0, T_mult, eta_min_frac: sched.CosineAnnealingWarmRestarts(
            o, T_0, T_mult, eta_min_frac * lr
        ),
    ),
    # Optax-named schedules whose arguments can express a torch scheduler.
    Twin(
        "linear_schedule",
        st.fixed_dictionaries(
            {"lr": lrs, "end_frac": st.floats(0.0, 1.0), "steps": st.integers(1, 400)}
        ),
        lambda lr, end_frac, steps: optim.linear_schedule(lr, end_frac * lr, steps),
        lambda o, lr, end_frac, steps: sched.LinearLR(o, 1.0, end_frac, steps),
    ),
    Twin(
        "polynomial_schedule",
        st.fixed_dictionaries(
            {"lr": lrs, "power": st.floats(0.5, 3.0), "steps": st.integers(1, 400)}
        ),
        lambda lr, power, steps: optim.polynomial_schedule(lr, 0.0, power, steps),
        lambda o, lr, power, steps: sched.PolynomialLR(o, steps, power),
    ),
    Twin(
        "cosine_decay_schedule",  # torch's curve rises again after T_max: keep T_max >= N
        st.fixed_dictionaries(
            {"lr": lrs, "steps": st.integers(N, 2 * N), "alpha": st.floats(0.0, 0.5)}
        ),
        lambda lr, steps, alpha: optim.cosine_decay_schedule(lr, steps, alpha),
        lambda o, lr, steps, alpha: sched.CosineAnnealingLR(o, steps, alpha * lr),
    ),
    Twin(
        "exponential_decay",
        st.fixed_dictionaries({"lr": lrs, "gamma": st.floats(0.9, 1.005)}),
        lambda lr, gamma: optim.exponential_decay(lr, 1, gamma),
        lambda o, lr, gamma: sched.ExponentialLR(o, gamma),
    ),
    Twin(
        "exponential_decay_staircase",
        st.fixed_dictionaries(
            {"lr": lrs, "step_size": st.integers(1, 120), "gamma": st.floats(0.05, 0.999)}
        ),
        lambda lr, step_size, gamma: optim.exponential_decay(lr, step_size, gamma, staircase=True),
        lambda o, lr, step_size, gamma: sched.StepLR(o, step_size, gamma),
    ),
    Twin(
        "piecewise_constant_schedule",
        st.fixed_dictionaries(
            {
                "lr": lrs,
                "milestones": st.sets(st.integers(0, 320), max_size=5),
                "gamma": st.floats(0.05, 0.999),
            }
        ),
        lambda lr, milestones, gamma: optim.piecewise_constant(
            lr, dict.fromkeys(milestones, gamma)
        ),
        lambda o, lr, milestones, gamma: sched.MultiStepLR(o, sorted(milestones), gamma),
    ),
]


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t.name)
@EXAMPLES
@given(data=st.data())
def test_schedule_matches_its_torch_scheduler_for_300_steps(twin: Twin, data: Any) -> None:
    args = data.draw(twin.args, label="args")
    lr = twin.lr(args)
    want = torch_lrs(lambda opt: twin.theirs(opt, **args), lr)
    got = twin.ours(**args)(torch.arange(N))
    assert_close_to_reference(got, want, scale=float(want.abs().max()))


# --------------------------------------------------------------------------------------------
# Optax formulas, written out
# --------------------------------------------------------------------------------------------


def optax_polynomial(init, end, power, steps, begin, k):
    if steps <= 0:
        return init
    k = min(max(k - max(begin, 0), 0), steps)
    return (init - end) * (1 - k / steps) ** power + end


def optax_cosine_decay(init, decay_steps, alpha, exponent, k):
    k = min(k, decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * k / decay_steps))
    return init * ((1 - alpha) * cosine**exponent + alpha)


def optax_warmup_cosine(init, peak, warmup, decay_steps, end, exponent, k):
    if k < warmup:
        return init + (peak - init) * k / warmup
    alpha = 0.0 if peak == 0 else end / peak
    return optax_cosine_decay(peak, decay_steps - warmup, alpha, exponent, k - warmup)


def optax_exponential_decay(init, steps, rate, begin, staircase, end, k):
    d = k - begin
    if d <= 0:
        value = init
    else:
        p = d // steps if staircase else d / steps
        value = init * rate**p
    if end is not None:
        value = max(value, end) if rate < 1 else min(value, end)
    return value


def check_formula(schedule, formula, scale: float, n: int = N) -> None:
    want = torch.tensor([formula(k) for k in range(n)], dtype=torch.float64)
    assert_close_to_reference(schedule(torch.arange(n)), want, scale)


@EXAMPLES
@given(
    value=st.floats(-2.0, 2.0),
)
def test_constant_schedule_is_constant(value: float) -> None:
    check_formula(optim.constant(value), lambda k: value, abs(value))


@EXAMPLES
@given(
    init=st.floats(0.0, 1.0),
    end=st.floats(0.0, 1.0),
    power=st.floats(0.5, 3.0),
    steps=st.integers(-2, 300),
    begin=st.integers(-5, 100),
)
def test_polynomial_and_linear_schedules_follow_optax_formula(init, end, power, steps, begin):
    scale = max(init, end)
    check_formula(
        optim.polynomial(init, end, power, steps, begin),
        lambda k: optax_polynomial(init, end, power, steps, begin, k),
        scale,
    )
    check_formula(
        optim.linear(init, end, steps, begin),
        lambda k: optax_polynomial(init, end, 1.0, steps, begin, k),
        scale,
    )


@EXAMPLES
@given(
    init=st.floats(1e-4, 1.0),
    decay_steps=st.integers(1, 400),
    alpha=st.floats(0.0, 1.0),
    exponent=st.floats(0.5, 3.0),
)
def test_cosine_decay_schedule_follows_optax_formula(init, decay_steps, alpha, exponent):
    check_formula(
        optim.cosine_decay(init, decay_steps, alpha, exponent),
        lambda k: optax_cosine_decay(init, decay_steps, alpha, exponent, k),
        init,
    )


@EXAMPLES
@given(
    init=st.floats(0.0, 0.1),
    peak=st.floats(0.0, 1.0),
    warmup=st.integers(0, 100),
    decay=st.integers(1, 300),
    end_frac=st.floats(0.0, 1.0),
    exponent=st.floats(0.5, 2.0),
)
def test_warmup_cosine_decay_schedule_follows_optax_formula(
    init, peak, warmup, decay, end_frac, exponent
):
    decay_steps = warmup + decay
    end = end_frac * peak
    check_formula(
        optim.warmup_cosine_decay_schedule(init, peak, warmup, decay_steps, end, exponent),
        lambda k: optax_warmup_cosine(init, peak, warmup, decay_steps, end, exponent, k),
        max(init, peak, 1e-6),
    )
    # The short form: peak first, warmup from 0 by default.
    check_formula(
        optim.warmup_cosine(peak, warmup, decay_steps),
        lambda k: optax_warmup_cosine(0.0, peak, warmup, decay_steps, 0.0, 1.0, k),
        max(peak, 1e-6),
    )


def test_warmup_cosine_design_example_values() -> None:
    """DESIGN.md's ``optim.warmup_cosine(1e-3, 100, 10_000)``: 0 -> 1e-3 at 100 -> 0 at 10 000."""
    s = optim.warmup_cosine(1e-3, 100, 10_000)
    got = s(torch.tensor([0, 50, 100, 5050, 10_000, 20_000]))
    want = torch.tensor([0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)


@EXAMPLES
@given(
    init=st.floats(1e-3, 1.0),
    steps=st.integers(-1, 50),
    rate=st.floats(0.5, 1.5),
    begin=st.integers(-5, 100),
    staircase=st.booleans(),
    end_frac=st.none() | st.floats(0.1, 2.0),
)
def test_exponential_decay_follows_optax_formula(init, steps, rate, begin, staircase, end_frac):
    end = None if end_frac is None else end_frac * init
    schedule = optim.exponential_decay(init, steps, rate, begin, staircase, end)
    if steps <= 0:  # Optax: a constant schedule

        def formula(k):
            return init
    else:

        def formula(k):
            return optax_exponential_decay(init, steps, rate, max(begin, 0), staircase, end, k)

    want = torch.tensor([formula(k) for k in range(N)], dtype=torch.float64)
    assert_close_to_reference(schedule(torch.arange(N)), want, float(want.abs().max()))


@EXAMPLES
@given(
    init=st.floats(1e-3, 1.0),
    boundaries_and_scales=st.dictionaries(st.integers(0, 320), st.floats(0.0, 2.0), max_size=4),
)
def test_piecewise_constant_schedule_follows_optax_formula(init, boundaries_and_scales):
    def formula(k):
        value = init
        for boundary, scale in sorted(boundaries_and_scales.items()):
            value = value * scale if k >= boundary else value
        return value

    want = torch.tensor([formula(k) for k in range(N)], dtype=torch.float64)
    check_formula(
        optim.piecewise_constant(init, boundaries_and_scales), formula, float(want.abs().max())
    )


@EXAMPLES
@given(cuts=st.lists(st.integers(0, 150), min_size=1, max_size=3))
def test_join_schedules_restarts_each_schedule_at_its_boundary(cuts):
    boundaries = sorted(cuts)
    pieces = [optim.linear(1.0, 0.0, 50), optim.constant(0.3), optim.cosine_decay(0.7, 40)][
        : len(boundaries) + 1
    ]
    pieces += [optim.exponential_lr(0.5, 0.99)] * (len(boundaries) + 1 - len(pieces))
    schedule = optim.join_schedules(pieces, boundaries)

    def formula(k):
        i, start = 0, 0
        for j, b in enumerate(boundaries):
            if k >= b:
                i, start = j + 1, b
        return float(pieces[i](torch.tensor(k - start)))

    check_formula(schedule, formula, 1.0)


def test_sgdr_schedule_joins_warmup_cosine_runs_like_optax() -> None:
    runs = [
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=100),
        dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=80, end_value=0.05),
        dict(init_value=0.0, peak_value=0.25, warmup_steps=5, decay_steps=60, exponent=2.0),
    ]

    def formula(k):
        start = 0
        for i, run in enumerate(runs):
            if k < start + run["decay_steps"] or i == len(runs) - 1:
                r = {"end_value": 0.0, "exponent": 1.0, **run}
                return optax_warmup_cosine(
                    r["init_value"],
                    r["peak_value"],
                    r["warmup_steps"],
                    r["decay_steps"],
                    r["end_value"],
                    r["exponent"],
                    k - start,
                )
            start += run["decay_steps"]
        raise AssertionError

    check_formula(optim.sgdr_schedule(runs), formula, 1.0)


# --------------------------------------------------------------------------------------------
# Calling conventions and errors
# --------------------------------------------------------------------------------------------

EXAMPLE_SCHEDULES = {
    "constant": optim.constant(0.1),
    "linear": optim.linear(0.0, 1.0, 10, 3),
    "polynomial": optim.polynomial(1.0, 0.1, 2.0, 10),
    "cosine_decay": optim.cosine_decay(1.0, 10, 0.1, 2.0),
    "warmup_cosine": optim.warmup_cosine(1.0, 3, 12, end_value=0.1),
    "exponential_decay": optim.exponential_decay(1.0, 3, 0.5, 2, end_value=0.2),
    "exponential_decay_staircase": optim.exponential_decay(1.0, 3, 0.5, staircase=True),
    "piecewise_constant": optim.piecewise_constant(1.0, {3: 0.5, 7: 0.1}),
    "join_schedules": optim.join_schedules([optim.constant(1.0), optim.linear(1.0, 0.0, 5)], [4]),
    "sgdr_schedule": optim.sgdr_schedule(
        [dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=6)] * 2
    ),
    "step_lr": optim.step_lr(1.0, 3, 0.5),
    "multistep_lr": optim.multistep_lr(1.0, [2, 5, 5], 0.5),
    "exponential_lr": optim.exponential_lr(1.0, 0.9),
    "linear_lr": optim.linear_lr(1.0, 0.25, 1.0, 6),
    "constant_lr": optim.constant_lr(1.0, 0.5, 4),
    "cosine_annealing_lr": optim.cosine_annealing_lr(1.0, 5, 0.1),
    "polynomial_lr": optim.polynomial_lr(1.0, 8, 2.0),
    "cyclic_triangular": optim.cyclic(0.1, 1.0, 3),
    "cyclic_triangular2": optim.cyclic(0.1, 1.0, 2, 4, mode="triangular2"),
    "cyclic_exp_range_float_steps": optim.cyclic(0.1, 1.0, 2.5, mode="exp_range", gamma=0.95),
    "onecycle": optim.onecycle(1.0, 20),
    "onecycle_three_phase_linear": optim.onecycle(1.0, 20, 0.25, "linear", three_phase=True),
    "sgdr": optim.sgdr(1.0, 2, 1, 0.1),
    "sgdr_t_mult": optim.sgdr(1.0, 2, 3, 0.1),
}


def test_each_schedule_gives_float32_elementwise_for_any_count_shape() -> None:
    counts = [0, 1, 2, 3, 7, 11, 25]
    for name, schedule in EXAMPLE_SCHEDULES.items():
        batch = schedule(torch.tensor(counts))
        assert batch.dtype == torch.float32 and batch.shape == (len(counts),), name
        for i, k in enumerate(counts):
            one = schedule(torch.tensor(k))
            assert one.shape == () and one.dtype == torch.float32, name
            assert torch.equal(one, batch[i]), (name, k)
            assert torch.equal(schedule(k), one), (name, k)  # a Python int works too


def test_schedules_refuse_float_counts_and_bad_arguments() -> None:
    with pytest.raises(TypeError, match="integer tensor"):
        optim.linear(1.0, 0.0, 10)(torch.tensor(1.0))
    with pytest.raises(ValueError, match="decay_steps is the total length"):
        optim.warmup_cosine(1.0, 100, 100)
    with pytest.raises(ValueError, match="decay_steps must be >= 1"):
        optim.cosine_decay(1.0, 0)
    with pytest.raises(ValueError, match="mode must be"):
        optim.cyclic(0.1, 1.0, mode="triangle")
    with pytest.raises(ValueError, match="anneal_strategy"):
        optim.onecycle(1.0, 100, anneal_strategy="cosine")
    with pytest.raises(ValueError, match="zero length"):
        optim.onecycle(1.0, 10, pct_start=0.1)
    with pytest.raises(ValueError, match="scales must be >= 0"):
        optim.piecewise_constant(1.0, {3: -1.0})
    with pytest.raises(ValueError, match="n - 1 boundaries"):
        optim.join_schedules([optim.constant(1.0)], [3])
    with pytest.raises(TypeError, match="integer number of steps"):
        optim.step_lr(0.1, 2.5)


def test_onecycle_stays_at_its_minimum_after_total_steps() -> None:
    s = optim.onecycle(1.0, 50)
    tail = s(torch.arange(49, 60))
    assert torch.equal(tail, torch.full_like(tail, tail[0].item()))
    torch.testing.assert_close(tail[0], torch.tensor(1.0 / 25 / 1e4))


# --------------------------------------------------------------------------------------------
# Compiled: one compilation per family while the count moves
# --------------------------------------------------------------------------------------------

FAMILIES = {
    "optax": [
        "constant",
        "linear",
        "polynomial",
        "cosine_decay",
        "warmup_cosine",
        "exponential_decay",
        "exponential_decay_staircase",
        "piecewise_constant",
        "join_schedules",
        "sgdr_schedule",
    ],
    "torch": [
        "step_lr",
        "multistep_lr",
        "exponential_lr",
        "linear_lr",
        "constant_lr",
        "cosine_annealing_lr",
        "polynomial_lr",
    ],
    "cycles": [
        "cyclic_triangular",
        "cyclic_triangular2",
        "cyclic_exp_range_float_steps",
        "onecycle",
        "onecycle_three_phase_linear",
        "sgdr",
        "sgdr_t_mult",
    ],
}


def test_families_cover_every_example_schedule() -> None:
    assert sorted(n for names in FAMILIES.values() for n in names) == sorted(EXAMPLE_SCHEDULES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_schedules_compile_once_while_the_count_moves(family: str) -> None:
    schedules = {name: EXAMPLE_SCHEDULES[name] for name in FAMILIES[family]}

    @fnn.jit
    def values(count: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: s(count) for name, s in schedules.items()}

    for k in (0, 1, 2, 5, 9, 13, 40):
        count = torch.tensor(k, dtype=torch.int64)
        got = values(count)
        for name, s in schedules.items():
            torch.testing.assert_close(got[name], s(count), rtol=1e-6, atol=1e-7, msg=name)
    assert values.num_compiles == 1


# --------------------------------------------------------------------------------------------
# reduce_on_plateau vs torch's ReduceLROnPlateau
# --------------------------------------------------------------------------------------------


def loss_sequence(segments: list[tuple[str, int, float]], n: int = N) -> list[float]:
    """Losses made of runs: falling, flat (exact repeats: a plateau), rising, or wobbling."""
    values, v, k = [], 1.0, 0
    while len(values) < n:
        kind, length, rate = segments[k % len(segments)]
        for i in range(length):
            if kind == "down":
                v *= 1.0 - rate
            elif kind == "up":
                v *= 1.0 + rate
            elif kind == "wobble":
                v *= 1.0 + rate * (-1) ** i
            values.append(v)
        k += 1
    return values[:n]


def torch_plateau_lrs(values: list[float], lr: float, **kwargs: Any) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    scheduler = sched.ReduceLROnPlateau(opt, **kwargs)
    out = []
    for v in values:
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        scheduler.step(v)
    return out


def fnn_plateau_lrs(
    values: list[float], lr: float, dtype: torch.dtype = torch.float64, **kwargs: Any
) -> list[float]:
    """``-update`` of ``chain(sgd(lr), reduce_on_plateau(...))`` on a gradient of ones."""
    opt = optim.chain(optim.sgd(lr), optim.reduce_on_plateau(**kwargs))
    params = {"w": torch.zeros(1, dtype=dtype)}
    state = opt.init(params)
    out = []
    for v in values:
        grads = {"w": torch.ones(1, dtype=dtype)}
        updates, state = opt.update(grads, state, params, value=torch.tensor(v, dtype=dtype))
        out.append(-float(updates["w"]))
    return out


segments = st.lists(
    st.tuples(
        st.sampled_from(["down", "flat", "up", "wobble"]),
        st.integers(1, 40),
        st.floats(1e-5, 0.2),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=15, deadline=None)
@given(
    segs=segments,
    lr=lrs,
    factor=st.floats(0.05, 0.9),
    patience=st.integers(0, 12),
    threshold=st.sampled_from([0.0, 1e-4, 1e-3, 3e-2]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    cooldown=st.integers(0, 8),
    min_frac=st.sampled_from([0.0, 1e-3, 0.2]),
    mode=st.sampled_from(["min", "max"]),
    torch_eps=st.sampled_from([0.0, 1e-8, 1e-4]),
)
def test_reduce_on_plateau_gives_torch_learning_rates(
    segs, lr, factor, patience, threshold, threshold_mode, cooldown, min_frac, mode, torch_eps
):
    """float64: the same comparisons as torch's Python floats, so the same decisions."""
    values = loss_sequence(segs)
    common = dict(
        factor=factor,
        patience=patience,
        threshold=threshold,
        threshold_mode=threshold_mode,
        cooldown=cooldown,
        mode=mode,
    )
    want = torch_plateau_lrs(values, lr, min_lr=min_frac * lr, eps=torch_eps, **common)
    got = fnn_plateau_lrs(values, lr, min_scale=min_frac, eps=torch_eps / lr, **common)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-9, atol=0.0)


def test_reduce_on_plateau_float32_default_matches_torch() -> None:
    values = loss_sequence([("down", 20, 0.05), ("flat", 25, 0.0), ("wobble", 15, 1e-6)])
    values = [float(torch.tensor(v, dtype=torch.float32)) for v in values]
    want = torch_plateau_lrs(values, 0.1, patience=5, cooldown=2, eps=0.0)
    got = fnn_plateau_lrs(values, 0.1, torch.float32, patience=5, cooldown=2)
    assert len(set(want)) > 3  # several reductions happened
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-6, atol=0.0)


@settings(max_examples=5, deadline=None)
@given(segs=segments, size=st.integers(2, 7), patience=st.integers(0, 4))
def test_reduce_on_plateau_accumulates_the_mean_of_accumulation_size_values(segs, size, patience):
    """One plateau check per ``size`` updates on their mean = torch stepped with the means."""
    values = loss_sequence(segs, n=size * 40)
    means = [sum(values[i : i + size]) / size for i in range(0, len(values), size)]
    want = torch_plateau_lrs(means, 0.1, patience=patience, eps=0.0)
    got = fnn_plateau_lrs(values, 0.1, patience=patience, accumulation_size=size)
    torch.testing.assert_close(
        torch.tensor(got), torch.tensor(want).repeat_interleave(size), rtol=1e-9, atol=0.0
    )


def test_reduce_on_plateau_compiles_once_and_its_hyperparams_are_settable() -> None:
    opt = optim.chain(optim.sgd(0.1), optim.reduce_on_plateau(factor=0.5, patience=1))
    losses = [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]

    def step(params, state, loss):
        updates, state = opt.update({"w": torch.ones(2)}, state, params, value=loss)
        return optim.apply_updates(params, updates), state

    jitted = fnn.jit(step)
    params = {"w": torch.zeros(2)}
    state = opt.init(params)
    eager_params, eager_state = params, state
    for i, loss in enumerate(losses):
        if i == 5:  # a changed hyperparameter is a new tensor value, not a new graph
            state = optim.set_hyperparams(state, factor=0.25, patience=0)
            eager_state = optim.set_hyperparams(eager_state, factor=0.25, patience=0)
        params, state = jitted(params, state, torch.tensor(loss))
        eager_params, eager_state = step(eager_params, eager_state, torch.tensor(loss))
        fnn.testing.assert_trees_all_close((params, state), (eager_params, eager_state))
    assert jitted.num_compiles == 1
    hyper = optim.get_hyperparams(state)
    assert {k: v.item() for k, v in hyper.items() if k != "learning_rate"} == {
        "cooldown": 0,
        "factor": 0.25,
        "min_scale": 0.0,
        "patience": 0,
        "threshold": pytest.approx(1e-4),
    }
    assert state[1].scale.item() < 0.5 * 0.25  # reduced again after the change


def test_reduce_on_plateau_errors() -> None:
    opt = optim.reduce_on_plateau()
    state = opt.init({"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="value=loss"):
        opt.update({"w": torch.ones(1)}, state)
    with pytest.raises(ValueError, match="one-element"):
        opt.update({"w": torch.ones(1)}, state, value=torch.ones(3))
    with pytest.raises(ValueError, match="factor must be < 1"):
        optim.reduce_on_plateau(factor=1.0)
    with pytest.raises(ValueError, match="mode must be"):
        optim.reduce_on_plateau(mode="maximize")
    with pytest.raises(ValueError, match="threshold_mode"):
        optim.reduce_on_plateau(threshold_mode="relative")
