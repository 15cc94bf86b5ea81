"""Loss functions: pure functions of tensors with ``torch.nn.functional``'s defaults and numerics.

Each loss delegates to its ``torch.nn.functional`` twin (fused kernels, identical numbers) and adds
what the twin lacks: checks on shapes and dtypes that say what was expected and what was given.
The checks read only shapes and dtypes, never values, so every loss works under
``torch.func.vmap`` and ``torch.func.grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(name: str, reduction: str, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(
            f"{name}: reduction must be one of {', '.join(map(repr, allowed))}; got {reduction!r}."
        )


def _check_float(name: str, arg: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {arg} must be a torch.Tensor; got {type(x).__name__}.")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(
            f"{name}: {arg} must be a floating-point tensor; got dtype {x.dtype}. "
            f"Convert it first, e.g. `{arg}.float()`."
        )


def _check_same_shape(name: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{name}: input and target must have the same shape; got input "
            f"{tuple(input.shape)} and target {tuple(target.shape)}. (torch.nn.functional "
            f"would broadcast them with a warning, which is almost always a bug.)"
        )


def _check_broadcastable(name: str, arg: str, x: Tensor | None, shape: torch.Size) -> None:
    if x is None:
        return
    try:
        out = torch.broadcast_shapes(x.shape, shape)
    except RuntimeError:
        out = None
    if out != shape:
        raise ValueError(
            f"{name}: {arg} must broadcast to the input's shape {tuple(shape)}; "
            f"got {arg} of shape {tuple(x.shape)}."
        )


def _check_class_targets(name: str, input: Tensor, target: Tensor) -> Tensor:
    """Checks integer class-index targets against ``input`` and returns them as int64."""
    if target.dtype not in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        raise TypeError(
            f"{name}: target must hold integer class indices (e.g. torch.long) or, for "
            f"cross_entropy, class probabilities of input's floating dtype; got dtype "
            f"{target.dtype}."
        )
    expected = _index_shape(input)
    if target.shape != expected:
        raise ValueError(
            f"{name}: with logits of shape {tuple(input.shape)} (classes on dim "
            f"{0 if input.dim() == 1 else 1}), integer targets must have shape "
            f"{tuple(expected)}; got target of shape {tuple(target.shape)}."
        )
    return target.long()


def _check_class_weight(name: str, input: Tensor, weight: Tensor | None) -> None:
    if weight is None:
        return
    classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if weight.shape != (classes,):
        raise ValueError(
            f"{name}: weight must have one entry per class, shape ({classes},); "
            f"got shape {tuple(weight.shape)}."
        )


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy between logits and class indices or class probabilities.

    Same defaults and numbers as :func:`torch.nn.functional.cross_entropy`.

    Args:
        input: logits of shape ``(classes,)``, ``(batch, classes)`` or
            ``(batch, classes, *extra)`` (e.g. ``extra = (height, width)`` for segmentation).
        target: either integer class indices of shape ``()``, ``(batch,)`` or
            ``(batch, *extra)`` -- any integer dtype, converted to ``torch.long`` -- or class
            probabilities of the same shape and floating dtype as ``input``.
        weight: optional per-class rescaling of shape ``(classes,)``.
        ignore_index: class index whose targets contribute neither loss nor gradient (index
            targets only; a non-negative value with probability targets is an error). With
            ``reduction="mean"`` the mean is over the non-ignored targets.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape of the index target).
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution.

    Returns:
        A scalar, or with ``reduction="none"`` a tensor of shape ``(batch, *extra)``.

    Per-example losses come from ``vmap`` over unbatched inputs, like torch::

        >>> import torch, fnn.losses
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> fnn.losses.cross_entropy(logits, torch.tensor([0, 0]))
        tensor(1.1269)
        >>> torch.func.vmap(fnn.losses.cross_entropy)(logits, torch.tensor([0, 0]))
        tensor([0.1269, 2.1269])
    """
    name = "cross_entropy"
    _check_reduction(name, reduction)
    _check_float(name, "input", input)
    if input.dim() == 0:
        raise ValueError(
            f"{name}: input must be logits of shape (classes,), (batch, classes) or "
            f"(batch, classes, *extra); got a scalar."
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1]; got {label_smoothing}.")
    if target.is_floating_point():
        if ignore_index >= 0:
            raise ValueError(
                f"{name}: ignore_index={ignore_index} only applies to integer class-index "
                f"targets; got class probabilities (dtype {target.dtype}). Give ignored "
                f"positions zero probability everywhere, or pass integer targets."
            )
        if target.shape != input.shape:
            raise ValueError(
                f"{name}: class-probability targets must have the same shape as the logits "
                f"{tuple(input.shape)}; got target of shape {tuple(target.shape)}. For class "
                f"indices pass an integer tensor of shape {tuple(_index_shape(input))}."
            )
    else:
        target = _check_class_targets(name, input, target)
    _check_class_weight(name, input, weight)
    if weight is not None and label_smoothing > 0.0 and not target.is_floating_point():
        return _smoothed_weighted_cross_entropy(
            input, target, weight, ignore_index, reduction, label_smoothing
        )
    return F.cross_entropy(
        input,
        target,
        weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def _smoothed_weighted_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """ATen's label-smoothing cross-entropy with class weights, written without ``masked_select``.

    torch's kernel selects the non-ignored targets with ``masked_select`` (a data-dependent
    shape), which ``vmap`` cannot batch; this is the same formula (ATen's own branch for tensor
    subclasses) with masks instead.
    """
    class_dim = 0 if input.dim() == 1 else 1
    classes = input.shape[class_dim]
    log_probs = torch.log_softmax(input, class_dim)
    nll_loss = F.nll_loss(log_probs, target, weight, ignore_index=ignore_index, reduction=reduction)
    ignored = target == ignore_index
    weight_shape = [1] * input.dim()
    weight_shape[class_dim] = classes
    smooth = -(log_probs * weight.reshape(weight_shape)).sum(class_dim)
    smooth = smooth.masked_fill(ignored, 0.0)
    if reduction == "mean":
        target_weight = weight[target.masked_fill(ignored, 0)].masked_fill(ignored, 0.0)
        smooth = smooth.sum() / target_weight.sum()
    elif reduction == "sum":
        smooth = smooth.sum()
    return (1.0 - label_smoothing) * nll_loss + smooth * (label_smoothing / classes)


def _index_shape(input: Tensor) -> torch.Size:
    return input.shape[:0] if input.dim() == 1 else input.shape[:1] + input.shape[2:]


def nll(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of class indices under log-probabilities.

    Same defaults and numbers as :func:`torch.nn.functional.nll_loss`; ``input`` is usually
    ``torch.log_softmax(logits, dim=1)`` (``cross_entropy`` fuses the two).

    Args:
        input: log-probabilities of shape ``(classes,)``, ``(batch, classes)`` or
            ``(batch, classes, *extra)``.
        target: integer class indices of shape ``()``, ``(batch,)`` or ``(batch, *extra)``.
        weight: optional per-class rescaling of shape ``(classes,)``.
        ignore_index: class index whose targets are skipped (and left out of the mean).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape of ``target``).

    >>> import torch, fnn.losses
    >>> logp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    >>> fnn.losses.nll(logp, torch.tensor([0, 1]))
    tensor(0.4904)
    """
    name = "nll"
    _check_reduction(name, reduction)
    _check_float(name, "input", input)
    if input.dim() == 0:
        raise ValueError(f"{name}: input must have a classes dimension; got a scalar.")
    target = _check_class_targets(name, input, target)
    _check_class_weight(name, input, weight)
    return F.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction)


def binary_cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None = None, *, reduction: str = "mean"
) -> Tensor:
    """Binary cross-entropy between probabilities and targets in ``[0, 1]``.

    Same numbers as :func:`torch.nn.functional.binary_cross_entropy` (log clamped at -100).
    Prefer :func:`binary_cross_entropy_with_logits`, which is numerically stable.

    Args:
        input: probabilities of any shape ``(*)``.
        target: floating tensor of the same shape ``(*)``.
        weight: optional rescaling, broadcastable to ``(*)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(*)``).

    >>> import torch, fnn.losses
    >>> fnn.losses.binary_cross_entropy(torch.tensor([0.5, 0.9]), torch.tensor([1.0, 1.0]))
    tensor(0.3993)
    """
    name = "binary_cross_entropy"
    _check_reduction(name, reduction)
    _check_float(name, "input", input)
    _check_float(name, "target", target)
    _check_same_shape(name, input, target)
    _check_broadcastable(name, "weight", weight, input.shape)
    return F.binary_cross_entropy(input, target, weight, reduction=reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Sigmoid plus binary cross-entropy, fused and numerically stable.

    Same defaults and numbers as :func:`torch.nn.functional.binary_cross_entropy_with_logits`.

    Args:
        input: logits of any shape ``(*)``, e.g. ``(batch, labels)``.
        target: floating targets in ``[0, 1]`` of the same shape ``(*)``.
        weight: optional rescaling, broadcastable to ``(*)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(*)``).
        pos_weight: optional weight of positive examples, broadcastable to ``(*)`` -- usually
            of shape ``(labels,)``.

    >>> import torch, fnn.losses
    >>> fnn.losses.binary_cross_entropy_with_logits(torch.tensor([0.0, 2.0]), torch.ones(2))
    tensor(0.4100)
    """
    name = "binary_cross_entropy_with_logits"
    _check_reduction(name, reduction)
    _check_float(name, "input", input)
    _check_float(name, "target", target)
    _check_same_shape(name, input, target)
    _check_broadcastable(name, "weight", weight, input.shape)
    _check_broadcastable(name, "pos_weight", pos_weight, input.shape)
    return F.binary_cross_entropy_with_logits(
        input, target, weight, reduction=reduction, pos_weight=pos_weight
    )


def _regression(name: str, input: Tensor, target: Tensor, reduction: str) -> None:
    _check_reduction(name, reduction)
    _check_float(name, "input", input)
    _check_float(name, "target", target)
    _check_same_shape(name, input, target)


def mse(input: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(input - target) ** 2``, as :func:`torch.nn.functional.mse_loss`.

    Args:
        input, target: floating tensors of the same shape ``(*)`` (no silent broadcasting).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(*)``).

    >>> import torch, fnn.losses
    >>> fnn.losses.mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    tensor(2.5000)
    """
    _regression("mse", input, target, reduction)
    return F.mse_loss(input, target, reduction=reduction)


def l1(input: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Absolute error ``|input - target|``, as :func:`torch.nn.functional.l1_loss`.

    Args:
        input, target: floating tensors of the same shape ``(*)`` (no silent broadcasting).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(*)``).

    >>> import torch, fnn.losses
    >>> fnn.losses.l1(torch.tensor([1.0, -3.0]), torch.tensor([0.0, 0.0]))
    tensor(2.)
    """
    _regression("l1", input, target, reduction)
    return F.l1_loss(input, target, reduction=reduction)


def smooth_l1(
    input: Tensor, target: Tensor, *, reduction: str = "mean", beta: float = 1.0
) -> Tensor:
    """Smooth L1: quadratic ``0.5 d**2 / beta`` below ``beta``, ``|d| - 0.5 beta`` above.

    As :func:`torch.nn.functional.smooth_l1_loss`; equals ``huber(delta=beta) / beta``.

    Args:
        input, target: floating tensors of the same shape ``(*)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(*)``).
        beta: non-negative threshold; ``beta=0`` is the L1 loss.

    >>> import torch, fnn.losses
    >>> fnn.losses.smooth_l1(torch.tensor([0.5, 3.0]), torch.zeros(2))
    tensor(1.3125)
    """
    _regression("smooth_l1", input, target, reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1: beta must be non-negative; got {beta}.")
    return F.smooth_l1_loss(input, target, reduction=reduction, beta=beta)


def huber(input: Tensor, target: Tensor, *, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """Huber loss: ``0.5 d**2`` below ``delta``, ``delta * (|d| - 0.5 delta)`` above.

    As :func:`torch.nn.functional.huber_loss`.

    Args:
        input, target: floating tensors of the same shape ``(*)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(*)``).
        delta: positive threshold.

    >>> import torch, fnn.losses
    >>> fnn.losses.huber(torch.tensor([0.5, 3.0]), torch.zeros(2), delta=2.0)
    tensor(2.0625)
    """
    _regression("huber", input, target, reduction)
    if delta <= 0:
        raise ValueError(f"huber: delta must be positive; got {delta}.")
    return F.huber_loss(input, target, reduction=reduction, delta=delta)


def kl_div(
    input: Tensor, target: Tensor, *, reduction: str = "mean", log_target: bool = False
) -> Tensor:
    """Kullback-Leibler divergence ``KL(target || exp(input))``, summed pointwise.

    As :func:`torch.nn.functional.kl_div`: ``input`` holds *log*-probabilities, and ``target``
    probabilities (or log-probabilities with ``log_target=True``). The default
    ``reduction="mean"`` averages over every element, as torch does; ``"batchmean"`` (the sum
    divided by ``input.shape[0]``) is the mathematical KL divergence per example.

    Args:
        input: log-probabilities of shape ``(batch, *)``.
        target: tensor of the same shape.
        reduction: ``"mean"``, ``"batchmean"``, ``"sum"`` or ``"none"``.
        log_target: whether ``target`` holds log-probabilities.

    >>> import torch, fnn.losses
    >>> p = torch.tensor([[0.5, 0.5]])
    >>> fnn.losses.kl_div(torch.log(torch.tensor([[0.25, 0.75]])), p, reduction="batchmean")
    tensor(0.1438)
    """
    name = "kl_div"
    _check_reduction(name, reduction, ("mean", "batchmean", "sum", "none"))
    _check_float(name, "input", input)
    _check_float(name, "target", target)
    _check_same_shape(name, input, target)
    return F.kl_div(input, target, reduction=reduction, log_target=log_target)


def cosine_embedding(
    input1: Tensor, input2: Tensor, target: Tensor, *, margin: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """``1 - cos(x1, x2)`` for ``target = 1``, ``max(0, cos(x1, x2) - margin)`` for ``-1``.

    As :func:`torch.nn.functional.cosine_embedding_loss`.

    Args:
        input1, input2: embeddings of shape ``(batch, dim)`` or ``(dim,)``.
        target: ``1`` or ``-1``, shape ``(batch,)`` or ``()``.
        margin: in ``[-1, 1]``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(batch,)``).

    >>> import torch, fnn.losses
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    >>> y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> fnn.losses.cosine_embedding(x, y, torch.tensor([1, -1]), reduction="none")
    tensor([0., 0.])
    """
    name = "cosine_embedding"
    _check_reduction(name, reduction)
    _check_float(name, "input1", input1)
    _check_float(name, "input2", input2)
    if input1.shape != input2.shape or input1.dim() not in (1, 2):
        raise ValueError(
            f"{name}: input1 and input2 must both have shape (batch, dim) or (dim,); got "
            f"{tuple(input1.shape)} and {tuple(input2.shape)}."
        )
    if target.shape != input1.shape[:-1]:
        raise ValueError(
            f"{name}: target must have shape {tuple(input1.shape[:-1])} (one +1/-1 per pair); "
            f"got {tuple(target.shape)}."
        )
    return F.cosine_embedding_loss(input1, input2, target, margin=margin, reduction=reduction)


def margin_ranking(
    input1: Tensor, input2: Tensor, target: Tensor, *, margin: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """``max(0, -target * (input1 - input2) + margin)``: ranks ``input1`` above when ``target=1``.

    As :func:`torch.nn.functional.margin_ranking_loss`.

    Args:
        input1, input2: scores of shape ``(batch,)`` or ``()``.
        target: ``1`` or ``-1`` of the same shape.
        margin: the required gap.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(batch,)``).

    >>> import torch, fnn.losses
    >>> fnn.losses.margin_ranking(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]),
    ...                           torch.tensor([1.0, 1.0]), margin=0.5)
    tensor(0.7500)
    """
    name = "margin_ranking"
    _check_reduction(name, reduction)
    if not (input1.shape == input2.shape == target.shape):
        raise ValueError(
            f"{name}: input1, input2 and target must have the same shape; got "
            f"{tuple(input1.shape)}, {tuple(input2.shape)} and {tuple(target.shape)}."
        )
    return F.margin_ranking_loss(input1, input2, target, margin=margin, reduction=reduction)


def triplet_margin(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    margin: float = 1.0,
    p: float = 2.0,
    eps: float = 1e-6,
    swap: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """``max(0, d(anchor, positive) - d(anchor, negative) + margin)`` with ``p``-norm distances.

    As :func:`torch.nn.functional.triplet_margin_loss`.

    Args:
        anchor, positive, negative: embeddings of shape ``(batch, dim)`` or ``(dim,)``.
        margin, p, eps, swap: as in torch (``swap`` uses the closer of the two negatives).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(batch,)``).

    >>> import torch, fnn.losses
    >>> a = torch.tensor([[0.0, 0.0]])
    >>> fnn.losses.triplet_margin(a, torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 0.0]]))
    tensor(0.)
    """
    name = "triplet_margin"
    _check_reduction(name, reduction)
    if not (anchor.shape == positive.shape == negative.shape) or anchor.dim() not in (1, 2):
        raise ValueError(
            f"{name}: anchor, positive and negative must all have shape (batch, dim) or (dim,); "
            f"got {tuple(anchor.shape)}, {tuple(positive.shape)} and {tuple(negative.shape)}."
        )
    return F.triplet_margin_loss(
        anchor, positive, negative, margin=margin, p=p, eps=eps, swap=swap, reduction=reduction
    )


def poisson_nll(
    input: Tensor,
    target: Tensor,
    *,
    log_input: bool = True,
    full: bool = False,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> Tensor:
    """Poisson negative log-likelihood of counts ``target`` with rate ``input``.

    As :func:`torch.nn.functional.poisson_nll_loss`: ``exp(input) - target * input`` when
    ``log_input`` (the default), else ``input - target * log(input + eps)``; ``full`` adds the
    Stirling term.

    Args:
        input, target: floating tensors of the same shape ``(*)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(*)``).

    >>> import torch, fnn.losses
    >>> fnn.losses.poisson_nll(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    tensor(0.8591)
    """
    _regression("poisson_nll", input, target, reduction)
    return F.poisson_nll_loss(
        input, target, log_input=log_input, full=full, eps=eps, reduction=reduction
    )


def ctc(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    *,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    """Connectionist temporal classification loss, as :func:`torch.nn.functional.ctc_loss`.

    Args:
        log_probs: log-probabilities of shape ``(time, batch, classes)`` or ``(time, classes)``.
        targets: integer labels, padded ``(batch, max_target_length)`` or concatenated
            ``(sum(target_lengths),)``.
        input_lengths, target_lengths: integer lengths of shape ``(batch,)`` (or ``()``).
        blank: index of the blank class.
        reduction: ``"mean"`` (each loss divided by its target length, then averaged),
            ``"sum"`` or ``"none"`` (shape ``(batch,)``).
        zero_infinity: replace infinite losses (impossible alignments) and their gradients by 0.

    >>> import torch, fnn.losses
    >>> log_probs = torch.full((3, 1, 2), 0.5).log()
    >>> fnn.losses.ctc(log_probs, torch.tensor([[1]]), torch.tensor([3]), torch.tensor([1]))
    tensor(0.2877)
    """
    name = "ctc"
    _check_reduction(name, reduction)
    _check_float(name, "log_probs", log_probs)
    if log_probs.dim() not in (2, 3):
        raise ValueError(
            f"{name}: log_probs must have shape (time, batch, classes) or (time, classes); "
            f"got {tuple(log_probs.shape)}."
        )
    for arg, x in (("targets", targets), ("input_lengths", input_lengths)):
        if x.is_floating_point() or x.dtype == torch.bool:
            raise TypeError(f"{name}: {arg} must be an integer tensor; got dtype {x.dtype}.")
    if target_lengths.is_floating_point():
        raise TypeError(
            f"{name}: target_lengths must be an integer tensor; got dtype {target_lengths.dtype}."
        )
    return F.ctc_loss(
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
