"""fnn.losses: every loss equals its torch.nn twin in value and gradient, and composes with vmap."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fnn.losses

pytestmark = pytest.mark.filterwarnings(
    "ignore:There is a performance drop:UserWarning",
    "ignore:reduction. 'mean' divides the total loss:UserWarning",
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g, dtype=F64)


@dataclasses.dataclass
class Case:
    """One loss: the fnn function, its torch.nn module twin, and how to make a batch for it."""

    fn: Callable[..., torch.Tensor]
    module: type[nn.Module]
    make: Callable[[torch.Generator, int], tuple[torch.Tensor, ...]]  # (g, batch) -> args
    grad_args: tuple[int, ...]  # positions of the arguments to differentiate
    kwargs: dict = dataclasses.field(default_factory=dict)
    batch_dims: tuple[int, ...] | None = None  # batch dim of each arg (default: 0 for all)


def _ctc_make(g: torch.Generator, b: int) -> tuple[torch.Tensor, ...]:
    log_probs = torch.log_softmax(_randn(g, 6, b, 4), -1)
    targets = torch.randint(1, 4, (b, 3), generator=g)
    return log_probs, targets, torch.full((b,), 6), torch.randint(1, 4, (b,), generator=g)


CASES: dict[str, Case] = {
    "cross_entropy": Case(
        fnn.losses.cross_entropy,
        nn.CrossEntropyLoss,
        lambda g, b: (_randn(g, b, 5), torch.randint(0, 5, (b,), generator=g)),
        (0,),
    ),
    "cross_entropy_spatial_weighted_smoothed_ignore": Case(
        fnn.losses.cross_entropy,
        nn.CrossEntropyLoss,
        lambda g, b: (_randn(g, b, 4, 3, 2), torch.randint(0, 4, (b, 3, 2), generator=g)),
        (0,),
        dict(
            weight=torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=F64),
            label_smoothing=0.2,
            ignore_index=1,
        ),
    ),
    "cross_entropy_probabilities": Case(
        fnn.losses.cross_entropy,
        nn.CrossEntropyLoss,
        lambda g, b: (_randn(g, b, 5), torch.softmax(_randn(g, b, 5), -1)),
        (0, 1),
        dict(label_smoothing=0.1, weight=torch.linspace(0.5, 2.0, 5, dtype=F64)),
    ),
    "nll": Case(
        fnn.losses.nll,
        nn.NLLLoss,
        lambda g, b: (
            torch.log_softmax(_randn(g, b, 5), 1),
            torch.randint(0, 5, (b,), generator=g),
        ),
        (0,),
        dict(weight=torch.linspace(0.5, 2.0, 5, dtype=F64), ignore_index=2),
    ),
    "binary_cross_entropy": Case(
        fnn.losses.binary_cross_entropy,
        nn.BCELoss,
        lambda g, b: (_rand(g, b, 3) * 0.9 + 0.05, _rand(g, b, 3)),
        (0, 1),
        dict(weight=torch.tensor([1.0, 2.0, 0.5], dtype=F64)),
    ),
    "binary_cross_entropy_with_logits": Case(
        fnn.losses.binary_cross_entropy_with_logits,
        nn.BCEWithLogitsLoss,
        lambda g, b: (_randn(g, b, 3), _rand(g, b, 3)),
        (0, 1),
        dict(pos_weight=torch.tensor([1.0, 3.0, 0.5], dtype=F64)),
    ),
    "mse": Case(
        fnn.losses.mse, nn.MSELoss, lambda g, b: (_randn(g, b, 3), _randn(g, b, 3)), (0, 1)
    ),
    "l1": Case(fnn.losses.l1, nn.L1Loss, lambda g, b: (_randn(g, b, 3), _randn(g, b, 3)), (0, 1)),
    "smooth_l1": Case(
        fnn.losses.smooth_l1,
        nn.SmoothL1Loss,
        lambda g, b: (_randn(g, b, 3), _randn(g, b, 3)),
        (0, 1),
        dict(beta=0.5),
    ),
    "huber": Case(
        fnn.losses.huber,
        nn.HuberLoss,
        lambda g, b: (_randn(g, b, 3), _randn(g, b, 3)),
        (0, 1),
        dict(delta=0.7),
    ),
    "kl_div": Case(
        fnn.losses.kl_div,
        nn.KLDivLoss,
        lambda g, b: (torch.log_softmax(_randn(g, b, 4), 1), torch.log_softmax(_randn(g, b, 4), 1)),
        (0, 1),
        dict(log_target=True),
    ),
    "cosine_embedding": Case(
        fnn.losses.cosine_embedding,
        nn.CosineEmbeddingLoss,
        lambda g, b: (
            _randn(g, b, 4),
            _randn(g, b, 4),
            torch.randint(0, 2, (b,), generator=g) * 2 - 1,
        ),
        (0, 1),
        dict(margin=0.1),
    ),
    "margin_ranking": Case(
        fnn.losses.margin_ranking,
        nn.MarginRankingLoss,
        lambda g, b: (
            _randn(g, b),
            _randn(g, b),
            (torch.randint(0, 2, (b,), generator=g) * 2 - 1).to(F64),
        ),
        (0, 1),
        dict(margin=0.3),
    ),
    "triplet_margin": Case(
        fnn.losses.triplet_margin,
        nn.TripletMarginLoss,
        lambda g, b: (_randn(g, b, 4), _randn(g, b, 4), _randn(g, b, 4)),
        (0, 1, 2),
        dict(margin=2.0, swap=True),
    ),
    "poisson_nll": Case(
        fnn.losses.poisson_nll,
        nn.PoissonNLLLoss,
        lambda g, b: (_randn(g, b, 3), _rand(g, b, 3) * 4),
        (0,),
        dict(full=True),
    ),
    "ctc": Case(fnn.losses.ctc, nn.CTCLoss, _ctc_make, (0,), batch_dims=(1, 0, 0, 0)),
}

REDUCTIONS = ["mean", "sum", "none"]


def _value_and_grads(f: Callable, args: tuple, grad_args: tuple[int, ...]):
    args = tuple(a.clone().requires_grad_(i in grad_args) for i, a in enumerate(args))
    out = f(*args)
    grads = torch.autograd.grad(out.sum(), [args[i] for i in grad_args])
    return out.detach(), grads


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradient_equal_the_torch_module(name: str, reduction: str) -> None:
    case = CASES[name]
    args = case.make(_gen(), 5)
    kwargs = dict(case.kwargs, reduction=reduction)
    got = _value_and_grads(lambda *a: case.fn(*a, **kwargs), args, case.grad_args)
    want = _value_and_grads(case.module(**kwargs), args, case.grad_args)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", list(CASES))
def test_torch_func_grad_equals_autograd(name: str) -> None:
    case = CASES[name]
    args = case.make(_gen(1), 4)
    i = case.grad_args[0]

    def loss(x: torch.Tensor) -> torch.Tensor:
        return case.fn(*args[:i], x, *args[i + 1 :], **case.kwargs)

    _, (want,) = _value_and_grads(case.module(**case.kwargs), args, (i,))
    torch.testing.assert_close(torch.func.grad(loss)(args[i]), want)


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_per_example_losses_equal_reduction_none(name: str) -> None:
    case = CASES[name]
    args = case.make(_gen(2), 4)
    dims = case.batch_dims or (0,) * len(args)
    kwargs = dict(case.kwargs, reduction="none")

    def per_example(*a: torch.Tensor) -> torch.Tensor:
        batched = [x.unsqueeze(d) for x, d in zip(a, dims, strict=True)]
        return case.fn(*batched, **kwargs).squeeze(0)

    got = torch.func.vmap(per_example, in_dims=dims)(*args)
    torch.testing.assert_close(got, case.fn(*args, **kwargs))


UNBATCHED = ["cross_entropy", "cross_entropy_probabilities", "nll", "cosine_embedding"]
UNBATCHED += ["triplet_margin", "margin_ranking", "mse", "binary_cross_entropy_with_logits"]


@pytest.mark.parametrize("name", UNBATCHED)
def test_vmap_over_unbatched_inputs_equals_reduction_none(name: str) -> None:
    case = CASES[name]
    args = case.make(_gen(3), 4)
    dims = case.batch_dims or (0,) * len(args)
    kwargs = dict(case.kwargs, reduction="sum")
    got = torch.func.vmap(lambda *a: case.fn(*a, **kwargs), in_dims=dims)(*args)
    want = case.fn(*args, **dict(case.kwargs, reduction="none"))
    if want.dim() > 1:  # elementwise losses: each unbatched call sums its example
        want = want.sum(tuple(range(1, want.dim())))
    torch.testing.assert_close(got, want)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 6),
    classes=st.integers(2, 5),
    extra=st.lists(st.integers(1, 3), max_size=2),
    reduction=st.sampled_from(REDUCTIONS),
    label_smoothing=st.sampled_from([0.0, 0.1, 0.5]),
    ignore=st.booleans(),
    weighted=st.booleans(),
    probabilities=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_matches_torch_over_shapes_and_options(
    batch, classes, extra, reduction, label_smoothing, ignore, weighted, probabilities, seed
) -> None:
    g = _gen(seed)
    logits = _randn(g, batch, classes, *extra)
    if probabilities:
        target = torch.softmax(_randn(g, batch, classes, *extra), 1)
    else:
        target = torch.randint(0, classes, (batch, *extra), generator=g)
        target.view(-1)[0] = 0  # at least one target survives ignore_index=classes - 1 ...
        target.view(-1)[-1] = classes - 1  # ... and at least one is ignored
    kwargs = dict(reduction=reduction, label_smoothing=label_smoothing)
    if ignore and not probabilities:
        kwargs["ignore_index"] = classes - 1
    if weighted:
        kwargs["weight"] = _rand(g, classes) + 0.1
    grad_args = (0, 1) if probabilities else (0,)
    got = _value_and_grads(
        lambda x, t: fnn.losses.cross_entropy(x, t, **kwargs), (logits, target), grad_args
    )
    want = _value_and_grads(nn.CrossEntropyLoss(**kwargs), (logits, target), grad_args)
    torch.testing.assert_close(got, want, equal_nan=True)  # every target ignored: nan, as torch
    per_example = torch.func.vmap(
        lambda x, t: fnn.losses.cross_entropy(x[None], t[None], **dict(kwargs, reduction="none"))
    )(logits, target)
    torch.testing.assert_close(
        per_example.squeeze(1),
        fnn.losses.cross_entropy(logits, target, **dict(kwargs, reduction="none")),
        equal_nan=True,
    )


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    reduction=st.sampled_from(REDUCTIONS),
    weighted=st.booleans(),
    pos_weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bce_with_logits_matches_torch_over_shapes_and_weights(
    shape, reduction, weighted, pos_weighted, seed
) -> None:
    g = _gen(seed)
    x, t = _randn(g, *shape), _rand(g, *shape)
    kwargs: dict = dict(reduction=reduction)
    if weighted:
        kwargs["weight"] = _rand(g, *shape)
    if pos_weighted:
        kwargs["pos_weight"] = _rand(g, shape[-1]) * 3
    got = _value_and_grads(
        lambda a, b: fnn.losses.binary_cross_entropy_with_logits(a, b, **kwargs), (x, t), (0, 1)
    )
    want = _value_and_grads(nn.BCEWithLogitsLoss(**kwargs), (x, t), (0, 1))
    torch.testing.assert_close(got, want)


def test_cross_entropy_accepts_any_integer_target_dtype() -> None:
    logits, target = torch.randn(3, 4), torch.tensor([0, 3, 1])
    torch.testing.assert_close(
        fnn.losses.cross_entropy(logits, target.int()), fnn.losses.cross_entropy(logits, target)
    )


_L, _T = torch.randn(3, 4), torch.tensor([0, 3, 1])
L = fnn.losses

ERRORS = [
    (lambda: L.cross_entropy(_L, _T.float()), ValueError, r"same shape as the logits \(3, 4\)"),
    (lambda: L.cross_entropy(_L, _T.bool()), TypeError, r"integer class indices.*torch.bool"),
    (lambda: L.cross_entropy(_L, _T[:2]), ValueError, r"must have shape \(3,\); got .*\(2,\)"),
    (lambda: L.cross_entropy(_L, _T[:, None]), ValueError, r"shape \(3,\); got .*\(3, 1\)"),
    (lambda: L.cross_entropy(_L.long(), _T), TypeError, r"input must be a floating.*int64"),
    (lambda: L.cross_entropy(_L, _T, torch.ones(3)), ValueError, r"shape \(4,\); got .*\(3,\)"),
    (lambda: L.cross_entropy(_L, _T, reduction="avg"), ValueError, r"'mean', 'sum'.*'avg'"),
    (lambda: L.cross_entropy(_L, _T, label_smoothing=1.5), ValueError, r"\[0, 1\]; got 1.5"),
    (lambda: L.cross_entropy(torch.tensor(1.0), _T), ValueError, r"got a scalar"),
    (
        lambda: L.cross_entropy(_L, _L.softmax(1), ignore_index=0),
        ValueError,
        r"ignore_index=0 only applies to integer class-index targets; got class probabilities",
    ),
    (lambda: L.nll(_L, _T.float()), TypeError, r"integer class indices"),
    (lambda: L.mse(_L, _L[0]), ValueError, r"same shape; got input \(3, 4\) and target \(4,\)"),
    (lambda: L.l1(_L, _T), TypeError, r"target must be a floating"),
    (lambda: L.binary_cross_entropy(_L.sigmoid(), _L[:, :2]), ValueError, r"same shape"),
    (
        lambda: L.binary_cross_entropy_with_logits(_L, _L, pos_weight=torch.ones(3)),
        ValueError,
        r"pos_weight must broadcast to the input's shape \(3, 4\); got .*\(3,\)",
    ),
    (lambda: L.smooth_l1(_L, _L, beta=-1.0), ValueError, r"beta must be non-negative"),
    (lambda: L.huber(_L, _L, delta=0.0), ValueError, r"delta must be positive"),
    (lambda: L.kl_div(_L, _L, reduction="avg"), ValueError, r"'batchmean'"),
    (lambda: L.cosine_embedding(_L, _L, _L), ValueError, r"target must have shape \(3,\)"),
    (lambda: L.margin_ranking(_L[0], _L[1], _T), ValueError, r"same shape"),
    (lambda: L.triplet_margin(_L, _L, _L[0]), ValueError, r"\(batch, dim\) or \(dim,\)"),
    (lambda: L.poisson_nll(_L, _L.T), ValueError, r"same shape"),
    (lambda: L.ctc(_L[0], _T, _T, _T), ValueError, r"log_probs must have shape"),
    (
        lambda: L.ctc(_L[:, None], _T.float(), _T, _T),
        TypeError,
        r"targets must be an integer tensor",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), ERRORS)
def test_errors_say_what_was_expected_and_what_was_given(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_public_module_exports_every_loss() -> None:
    names = {n.split("_spatial")[0].split("_probabilities")[0] for n in CASES}
    assert set(fnn.losses.__all__) == names
