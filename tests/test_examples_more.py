"""Smoke tests of the examples people copy, and of the code in the translation guides.

Each example runs as a subprocess with small flags (eagerly: compiling takes longer than the
run; ``fnn.jit`` has its own tests) and the test checks what it prints. In the guides
``examples/jax_to_fnn.md`` and ``examples/torch_to_fnn.md``, each code block is labelled by the
line before it (``**fnn**``, ``**PyTorch**`` or ``**JAX**``); the blocks of one label run in
order in one namespace, so every fnn snippet a reader copies is known to work.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import types

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str) -> str:
    # One intra-op thread: these models are tiny, and when another process keeps a core busy,
    # MKL's two threads wait for each other (a (25, 10, 40) @ (40, 40) matmul took 7 ms instead
    # of 19 us on the 2-core CI machine). The checks below do not depend on the thread count.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def number_after(text: str, label: str) -> float:
    """The number printed right after the last occurrence of ``label``."""
    match = re.findall(re.escape(label) + r"\s*([-+0-9.e]+)", text)
    assert match, f"{label!r} not in the output:\n{text}"
    return float(match[-1])


def test_per_example_grads_vmap_equals_the_loop_and_dp_sgd_learns():
    out = run_example("per_example_grads.py", "--epochs", "3", "--repeats", "2", "--no-jit")
    assert "private gradients equal: loop and vmap agree" in out, out
    assert "Python loop over examples" in out and "fnn.vmap(fnn.grad)" in out, out
    assert number_after(out, "final test accuracy") > 0.5, out  # chance is 0.1


def test_ensemble_trains_eight_members_and_reports_each_and_the_ensemble():
    out = run_example("ensemble.py", "--epochs", "2")
    assert "stacked parameters: {'0': {'weight': (8, 16, 1, 3, 3)" in out, out
    members = [float(a) for a in re.findall(r"member \d  test accuracy ([0-9.]+)", out)]
    assert len(members) == 8, out
    assert min(members) > 0.5, out
    assert number_after(out, "ensemble test accuracy") > 0.5, out


def test_maml_meta_training_lowers_the_post_adaptation_loss():
    out = run_example("maml.py", "--steps", "150")
    before, after = re.search(
        r"after 1 inner step\(s\): ([0-9.]+) before meta-training, ([0-9.]+) after", out
    ).groups()
    assert float(after) < 0.9 * float(before), out


def test_char_lm_loss_goes_down_and_it_samples_text():
    out = run_example(
        "char_lm.py", "--steps", "60", "--d-model", "32", "--layers", "1", "--sample-length", "40"
    )
    before, after = re.search(r"validation loss ([0-9.]+) -> ([0-9.]+)", out).groups()
    assert float(after) < float(before) - 0.5, out
    sample = out.split("sample:\n", 1)[1]
    assert sample.startswith("Return the ") and len(sample.rstrip("\n")) >= 40, out


def test_from_torch_fine_tunes_and_the_torch_model_gives_the_same_logits():
    out = run_example("from_torch.py", "--pretrain-epochs", "1", "--epochs", "1")
    assert "same logits as fnn" in out, out
    assert number_after(out, "torch.nn model test accuracy") > 0.5, out


# --------------------------------------------------------------------------------------------
# The translation guides
# --------------------------------------------------------------------------------------------

_BLOCK = re.compile(r"^\*\*(?P<label>[^*\n]+)\*\*\n\n```python\n(?P<code>.*?)^```$", re.M | re.S)


def guide_blocks(name: str, label: str) -> list[str]:
    text = (EXAMPLES / name).read_text()
    blocks = [m["code"] for m in _BLOCK.finditer(text) if m["label"] == label]
    assert blocks, f"no **{label}** blocks in {name}"
    return blocks


def run_blocks(name: str, label: str) -> dict:
    """Run the blocks in order as one module (registered, so dataclasses can find it)."""
    module = types.ModuleType(f"guide_{name[:-3]}_{label.lower()}")
    sys.modules[module.__name__] = module
    try:
        for i, code in enumerate(guide_blocks(name, label)):
            where = f"<{name}, {label} block {i + 1}>"
            exec(compile(code, where, "exec", dont_inherit=True), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


@pytest.fixture
def one_thread():
    """Run on one intra-op thread (see run_example), then restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["jax_to_fnn.md", "torch_to_fnn.md"])
def test_every_python_block_in_the_guides_is_labelled(name):
    text = (EXAMPLES / name).read_text()
    labelled = {m.start("code") for m in _BLOCK.finditer(text)}
    fences = {m.end() for m in re.finditer(r"^```python\n", text, re.M)}
    assert fences == labelled, f"{name}: a ```python block without a **label** line before it"


# fnn.hessian's forward-mode pass makes torch load its jvp decompositions through the
# deprecated torch.jit.script: torch's warning, not fnn's.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", ["jax_to_fnn.md", "torch_to_fnn.md"])
def test_guide_fnn_blocks_run_and_train(name, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # the torch guide saves a checkpoint
    monkeypatch.setenv("FNN_DISABLE_JIT", "1")  # jitted functions run eagerly: no compiling
    namespace = run_blocks(name, "fnn")
    assert namespace["accuracy"] > 0.9, namespace["accuracy"]


def test_torch_guide_pytorch_blocks_run_and_train(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks("torch_to_fnn.md", "PyTorch")
    assert namespace["accuracy"] > 0.9, namespace["accuracy"]


def test_jax_guide_jax_blocks_are_valid_python():
    # Running them needs jax, flax and optax (the bench extra, not a test dependency; the suite
    # never skips). With them installed, run_blocks("jax_to_fnn.md", "JAX") runs and trains them.
    for i, code in enumerate(guide_blocks("jax_to_fnn.md", "JAX")):
        compile(code, f"<jax_to_fnn.md, JAX block {i + 1}>", "exec", dont_inherit=True)
