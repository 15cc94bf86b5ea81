"""The benchmark suite's workloads: each model written twice (``fnn.nn`` and ``torch.nn``).

A :class:`Workload` holds the fnn model with its initial parameters, a function building the
``torch.nn`` twin loaded with the *same* weights (by ``state_dict`` name), one fixed random batch
(generated from fnn keys, nothing is downloaded), the loss and the optimizer. Every variant of
the suite trains a fresh copy of these weights on this batch, so all of them compute the same
program and the same loss at step 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import fnn
from fnn import nn

Tensor = torch.Tensor
TorchBuilder = Callable[[], torch.nn.Module]

#: (optimizer kind, learning rate, extra hyperparameters): the same in torch, fnn_optim, optax.
OPTIMIZERS: dict[str, dict[str, float]] = {
    "adam": {"lr": 1e-3},
    "adamw": {"lr": 1e-3, "weight_decay": 1e-2},
    "sgd": {"lr": 1e-2, "momentum": 0.9},
}


@dataclasses.dataclass
class Workload:
    """One training workload: the same model, weights, batch, loss and optimizer everywhere.

    Attributes:
        key: short name used on the command line (``--only mlp``).
        title: the row label in the report.
        model: the ``fnn.nn`` model.
        params / state: its initial parameters and state (``state`` non-empty with BatchNorm).
        torch_model: builds the ``torch.nn`` twin holding the same initial weights.
        x / y: the fixed batch (inputs, targets).
        loss: ``"xent"`` (classification), ``"mse"`` (regression of one output) or ``"lm"``
            (next-token cross-entropy over ``(N, L, vocab)`` logits).
        optimizer: a key of :data:`OPTIMIZERS`.
        target: the issue's target for the fnn jit ratio (None: no target).
    """

    key: str
    title: str
    model: nn.Module
    params: dict
    state: dict
    torch_model: TorchBuilder
    x: Tensor
    y: Tensor
    loss: str
    optimizer: str
    target: float | None = None

    @property
    def stateful(self) -> bool:
        """True when the model keeps state (BatchNorm statistics) next to its parameters."""
        return bool(fnn.tree.leaves(self.state))

    def num_params(self) -> int:
        return sum(t.numel() for t in fnn.tree.leaves(self.params))


# --------------------------------------------------------------------------------------------
# Losses (torch.nn.functional on the torch side, fnn.losses on the fnn side)
# --------------------------------------------------------------------------------------------


def torch_loss(kind: str, out: Tensor, y: Tensor) -> Tensor:
    """The workload's loss as a ``torch.nn`` user writes it."""
    if kind == "mse":
        return F.mse_loss(out.squeeze(-1), y)
    if kind == "lm":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.cross_entropy(out, y)


def fnn_loss(kind: str, out: Tensor, y: Tensor) -> Tensor:
    """The workload's loss as an fnn user writes it (``fnn.losses``)."""
    if kind == "mse":
        return fnn.losses.mse(out.squeeze(-1), y)
    if kind == "lm":
        return fnn.losses.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return fnn.losses.cross_entropy(out, y)


# --------------------------------------------------------------------------------------------
# torch.nn twins
# --------------------------------------------------------------------------------------------


def _loaded(module: torch.nn.Module, params: dict, state: dict | None = None) -> torch.nn.Module:
    """``module`` with fnn's ``params``/``state`` loaded by name (every key must match)."""
    module.load_state_dict(nn.to_state_dict(params, state), strict=True)
    return module


def _mlp_torch(sizes: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _mlp_fnn(sizes: list[int]) -> nn.Sequential:
    layers: list[Any] = []
    for i, f in enumerate(sizes[1:]):
        layers.append(nn.Linear(f))
        if i < len(sizes) - 2:
            layers.append(nn.relu)
    return nn.Sequential(layers)


def _cnn_torch() -> torch.nn.Sequential:
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(3, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(64 * 8 * 8, 128), tnn.ReLU(), tnn.Linear(128, 10),
    )  # fmt: skip


def _cnn_fnn() -> nn.Sequential:
    return nn.Sequential(
        [
            nn.Conv2d(32, 3, padding=1), nn.relu, nn.MaxPool2d(2),
            nn.Conv2d(64, 3, padding=1), nn.relu, nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(128), nn.relu, nn.Linear(10),
        ]
    )  # fmt: skip


class TorchLM(torch.nn.Module):
    """The ``torch.nn`` twin of ``fnn.models.transformer_lm``: ``nn.TransformerEncoder``.

    Pre-LayerNorm encoder layers (``norm_first=True``, GELU, no dropout) with a causal mask,
    learned position embeddings, a final LayerNorm (the encoder's ``norm``) and a bias-free head:
    the same sizes, parameter count and function as fnn's GPT-style model.
    """

    def __init__(self, vocab: int, context: int, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok_emb = torch.nn.Embedding(vocab, d)
        self.pos_emb = torch.nn.Embedding(context, d)
        layer = torch.nn.TransformerEncoderLayer(
            d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(
            layer, layers, norm=torch.nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.head = torch.nn.Linear(d, vocab, bias=False)
        mask = torch.nn.Transformer.generate_square_subsequent_mask(context)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[1]
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(n, device=tokens.device))
        x = self.encoder(x, mask=self.mask[:n, :n], is_causal=True)
        return self.head(x)


_LM_NAMES = [
    (".ln1.", ".norm1."), (".ln2.", ".norm2."), (".attn.", ".self_attn."),
    (".mlp.0.", ".linear1."), (".mlp.2.", ".linear2."),
]  # fmt: skip


def lm_torch_names(params: dict) -> dict[str, Tensor]:
    """fnn's ``transformer_lm`` state dict renamed to :class:`TorchLM`'s names."""
    out = {}
    for name, t in nn.to_state_dict(params).items():
        if name.startswith("blocks."):
            name = "encoder.layers." + name[len("blocks.") :]
            for a, b in _LM_NAMES:
                name = name.replace(a, b)
        elif name.startswith("ln_f."):
            name = "encoder.norm." + name[len("ln_f.") :]
        out[name] = t
    return out


class _TorchBasicBlock(torch.nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        tnn = torch.nn
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(
                tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TorchResNet18(torch.nn.Module):
    """ResNet-18 written like torchvision's (same names), since torchvision is not installed."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        tnn = torch.nn
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            blocks = [_TorchBasicBlock(cin, cout, stride), _TorchBasicBlock(cout, cout, 1)]
            setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            cin = cout
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# The workloads
# --------------------------------------------------------------------------------------------


def _keys(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    k = fnn.random.split(fnn.random.key(seed), 3)
    return k[0], k[1], k[2]


def _mlp_workload(key: str, title: str, sizes: list[int], batch: int, seed: int) -> Workload:
    k_init, k_x, k_y = _keys(seed)
    x = fnn.random.normal(k_x, (batch, sizes[0]))
    if sizes[-1] == 1:
        y, loss, opt, target = fnn.random.normal(k_y, (batch,)), "mse", "adam", 0.30
    else:
        y, loss, opt, target = fnn.random.randint(k_y, (batch,), 0, sizes[-1]), "xent", "adam", 0.70
    model = _mlp_fnn(sizes)
    params, state = model.init(k_init, x)
    return Workload(
        key, title, model, params, state,
        lambda: _loaded(_mlp_torch(sizes), params), x, y, loss, opt, target,
    )  # fmt: skip


def tiny_mlp() -> Workload:
    """Tiny MLP 32-64-64-1, batch 32, MSE regression, Adam (per-call overhead dominates)."""
    return _mlp_workload("tiny", "tiny MLP 32-64-64-1, b32, Adam", [32, 64, 64, 1], 32, 0)


MLP_SIZES = [784, 512, 512, 10]


def mlp() -> Workload:
    """MLP 784-512-512-10, batch 128, cross-entropy, Adam."""
    return _mlp_workload("mlp", "MLP 784-512-512-10, b128, Adam", MLP_SIZES, 128, 1)


def cnn() -> Workload:
    """conv32-pool-conv64-pool-fc128-fc10 on 3x32x32, batch 64, SGD momentum 0.9."""
    k_init, k_x, k_y = _keys(2)
    x = fnn.random.normal(k_x, (64, 3, 32, 32))
    y = fnn.random.randint(k_y, (64,), 0, 10)
    model = _cnn_fnn()
    params, state = model.init(k_init, x)
    return Workload(
        "cnn", "CNN 3x32x32, b64, SGD momentum", model, params, state,
        lambda: _loaded(_cnn_torch(), params), x, y, "xent", "sgd", 0.75,
    )  # fmt: skip


LM_VOCAB, LM_CONTEXT, LM_D, LM_LAYERS, LM_HEADS = 256, 64, 128, 2, 4


def transformer() -> Workload:
    """2-layer d=128 4-head GPT-style LM (vocab 256), seq 64, batch 16, AdamW."""
    k_init, k_x, _ = _keys(3)
    seq = fnn.random.randint(k_x, (16, LM_CONTEXT + 1), 0, LM_VOCAB)
    x, y = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    model = fnn.models.transformer_lm(LM_VOCAB, LM_CONTEXT, LM_D, LM_LAYERS, LM_HEADS)
    params, state = model.init(k_init, x)

    def build() -> torch.nn.Module:
        m = TorchLM(LM_VOCAB, LM_CONTEXT, LM_D, LM_LAYERS, LM_HEADS)
        m.load_state_dict(lm_torch_names(params), strict=True)
        return m

    return Workload(
        "transformer", "transformer LM 2x128, 4 heads, seq 64, b16, AdamW", model, params,
        state, build, x, y, "lm", "adamw", 0.85,
    )  # fmt: skip


def resnet18() -> Workload:
    """ResNet-18 (10 classes) on 3x64x64, batch 16, SGD momentum; BatchNorm in train mode."""
    k_init, k_x, k_y = _keys(4)
    x = fnn.random.normal(k_x, (16, 3, 64, 64))
    y = fnn.random.randint(k_y, (16,), 0, 10)
    model = fnn.models.resnet18(num_classes=10)
    params, state = model.init(k_init, x)
    return Workload(
        "resnet18", "ResNet-18 3x64x64, b16, SGD momentum", model, params, state,
        lambda: _loaded(TorchResNet18(10), params, state), x, y, "xent", "sgd", None,
    )  # fmt: skip


TRAIN_WORKLOADS: dict[str, Callable[[], Workload]] = {
    "tiny": tiny_mlp,
    "mlp": mlp,
    "cnn": cnn,
    "transformer": transformer,
    "resnet18": resnet18,
}


def clone_tree(tree: Any) -> Any:
    """A copy of a pytree of tensors (each variant trains its own copy)."""
    return fnn.tree.map(lambda t: t.detach().clone(), tree)
