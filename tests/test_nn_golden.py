"""Golden files: every model's parameter and state names, shapes and dtypes are recorded.

A rename or a layout change fails here, so it is made on purpose (parameter names are public
API once people save checkpoints). After a deliberate change, regenerate with
``FNN_UPDATE_GOLDEN=1 python -m pytest tests/test_nn_golden.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fnn import nn

GOLDEN = Path(__file__).parent / "golden" / "nn"


class Residual(nn.Module):
    channels: int

    def __post_init__(self):
        self.conv1 = nn.Conv2d(self.channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d()
        self.conv2 = nn.Conv2d(self.channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d()

    def forward(self, scope, x):
        h = nn.relu(scope.bn1(scope.conv1(x)))
        return nn.relu(x + scope.bn2(scope.conv2(h)))


class MLP(nn.Module):
    features: tuple[int, ...]

    def __post_init__(self):
        self.layers = [nn.Linear(f) for f in self.features]

    def forward(self, scope, x):
        *hidden, last = scope.layers
        for layer in hidden:
            x = nn.relu(layer(x))
        return last(x)


def cnn() -> nn.Module:
    """The CNN of the docs and of the compiled train-step test."""
    return nn.Sequential(
        [
            nn.Conv2d(8, 3, padding=1),
            nn.BatchNorm2d(),
            nn.relu,
            nn.MaxPool2d(2),
            nn.Dropout(0.2),
            nn.Flatten(),
            nn.Linear(10),
        ]
    )


def _img(c=3, s=8, n=2):
    return (torch.zeros(n, c, s, s),)


MODELS = {
    "mlp": (lambda: MLP((32, 16, 10)), lambda: (torch.zeros(2, 8),)),
    "cnn": (cnn, lambda: _img(1)),
    "residual_block": (lambda: Residual(4), lambda: _img(4)),
    "linear": (lambda: nn.Linear(4), lambda: (torch.zeros(2, 3),)),
    "bilinear": (lambda: nn.Bilinear(4), lambda: (torch.zeros(2, 3), torch.zeros(2, 5))),
    "conv1d": (lambda: nn.Conv1d(4, 3, groups=1), lambda: (torch.zeros(2, 2, 9),)),
    "conv2d_groups": (lambda: nn.Conv2d(4, 3, groups=2), lambda: _img(4)),
    "conv3d": (lambda: nn.Conv3d(2, 3), lambda: (torch.zeros(1, 3, 4, 4, 4),)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(6, 3, groups=3), lambda: _img(3)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(), lambda: (torch.zeros(4, 6),)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(), lambda: _img(3)),
    "layernorm": (lambda: nn.LayerNorm(), lambda: (torch.zeros(2, 5, 6),)),
    "groupnorm": (lambda: nn.GroupNorm(2), lambda: _img(4)),
    "instancenorm2d_tracked": (
        lambda: nn.InstanceNorm2d(affine=True, track_running_stats=True),
        lambda: _img(3),
    ),
    "rmsnorm": (lambda: nn.RMSNorm(), lambda: (torch.zeros(2, 6),)),
    "embedding": (lambda: nn.Embedding(10, 4), lambda: (torch.zeros(2, 3, dtype=torch.long),)),
    "prelu": (lambda: nn.PReLU(3), lambda: _img(3)),
}


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = [list(v.shape), str(v.dtype).removeprefix("torch.")]
    return out


def _record(name: str) -> dict:
    make, inputs = MODELS[name]
    params, state = make().init_shapes(*inputs())
    return {"params": _flat(params), "state": _flat(state)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_names_shapes_and_dtypes_match_the_golden_file(name):
    path = GOLDEN / f"{name}.json"
    got = _record(name)
    if os.environ.get("FNN_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=1) + "\n")
    assert path.exists(), f"no golden file {path}; run with FNN_UPDATE_GOLDEN=1 and review it"
    want = json.loads(path.read_text())
    assert got == want, (
        f"{name}: parameter layout changed.\n  golden: {want}\n  now:    {got}\n"
        "If deliberate, regenerate with FNN_UPDATE_GOLDEN=1 and review the diff."
    )


def test_golden_files_have_no_strays():
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == sorted(MODELS)
