"""Loss functions: pure functions of tensors, each the twin of a ``torch.nn.functional`` loss.

Same defaults and numbers as torch (they delegate to its fused kernels), the same
``reduction="mean" | "sum" | "none"``, plus errors that say what shape or dtype was expected and
what was given. They read shapes, never values, so they compose with ``torch.func.vmap`` and
``torch.func.grad``; per-example losses are a ``vmap`` over unbatched inputs::

    >>> import torch, fnn.losses
    >>> logits, labels = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
    >>> torch.func.vmap(fnn.losses.cross_entropy)(logits, labels).shape
    torch.Size([4])

Names drop torch's ``_loss`` suffix: ``nll`` is ``nll_loss``, ``mse`` is ``mse_loss``, ``l1`` is
``l1_loss``, ``huber`` is ``huber_loss`` and so on. Unlike torch, the elementwise losses raise
on ``input``/``target`` shapes that differ instead of broadcasting them with a warning.
"""

from fnn._src.losses import binary_cross_entropy as binary_cross_entropy
from fnn._src.losses import binary_cross_entropy_with_logits as binary_cross_entropy_with_logits
from fnn._src.losses import cosine_embedding as cosine_embedding
from fnn._src.losses import cross_entropy as cross_entropy
from fnn._src.losses import ctc as ctc
from fnn._src.losses import huber as huber
from fnn._src.losses import kl_div as kl_div
from fnn._src.losses import l1 as l1
from fnn._src.losses import margin_ranking as margin_ranking
from fnn._src.losses import mse as mse
from fnn._src.losses import nll as nll
from fnn._src.losses import poisson_nll as poisson_nll
from fnn._src.losses import smooth_l1 as smooth_l1
from fnn._src.losses import triplet_margin as triplet_margin

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cosine_embedding",
    "cross_entropy",
    "ctc",
    "huber",
    "kl_div",
    "l1",
    "margin_ranking",
    "mse",
    "nll",
    "poisson_nll",
    "smooth_l1",
    "triplet_margin",
]
