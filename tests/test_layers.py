"""The layering of DESIGN.md at import time: a layer never loads the layers above it.

``fnn`` loads its layer-3/4 modules (``nn``, ``losses``, ``models``, ``checkpoint``) on first
use, so ``fnn_optim`` (which builds on ``fnn.tree`` and ``fnn.random``) never imports
``fnn.nn``; every way users reach those modules keeps working.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

UPPER = ("fnn.nn", "fnn.losses", "fnn.models", "fnn.checkpoint")


def _modules_after(code: str) -> list[str]:
    probe = f"{code}; import sys; print(sorted(m for m in sys.modules if m.startswith('fnn')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])  # a printed list of str


@pytest.mark.parametrize("code", ["import fnn_optim", "import fnn"])
def test_the_optimizer_layer_and_the_transforms_do_not_load_the_model_layer(code):
    loaded = _modules_after(code)
    assert "fnn.tree" in loaded
    assert not [m for m in loaded if m.startswith(UPPER)], loaded


def test_the_upper_layers_load_on_first_use_every_way_users_reach_them():
    import fnn

    assert {"nn", "losses", "models", "checkpoint"} <= set(dir(fnn))
    assert fnn.nn.Linear is __import__("fnn.nn", fromlist=["Linear"]).Linear
    from fnn import checkpoint, losses, models, nn

    assert (nn, losses, models, checkpoint) == (fnn.nn, fnn.losses, fnn.models, fnn.checkpoint)
    with pytest.raises(AttributeError, match="module 'fnn' has no attribute 'nope'"):
        fnn.nope  # noqa: B018


def test_a_model_builds_after_a_plain_import_fnn():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch, fnn; m = fnn.nn.Linear(3); "
            "p, s = m.init(fnn.random.key(0), torch.ones(2, 4)); print(tuple(p['weight'].shape))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "(3, 4)"
