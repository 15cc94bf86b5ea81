"""Bit-exact resume: training killed after a checkpoint and resumed equals training straight on.

A small CNN (Conv2d, BatchNorm2d, relu, Dropout, Linear) on ``fnn_data.datasets.digits()`` with
AdamW and a warmup-cosine schedule, dropout keys folded with the step, and batches from a
shuffled ``fnn_data`` pipeline whose iterator state is saved in the checkpoint:

- run A trains ``2 * N`` steps in one process;
- run B trains ``N`` steps, saves with a ``Manager`` (asynchronously, then waits), and is killed
  with SIGKILL; a fresh process restores the latest checkpoint and trains ``N`` more.

The final parameters, BatchNorm state, optimizer state and the sequence of the ``2 * N`` losses
must be bitwise identical. This file is also the training script that the runs execute, each in
a fresh interpreter: ``python test_checkpoint_resume.py full|first|resume digits.npz ...``,
which starts when a line arrives on its stdin.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fnn
import fnn_data
import fnn_optim as optim
from fnn import nn

N = 5  # steps before the checkpoint, and after it
BATCH = 32
SUBSET = 100  # training images used: 3 batches an epoch, so a new epoch starts on both sides
SEED = 0


# --------------------------------------------------------------------------------------------
# The data pipeline
# --------------------------------------------------------------------------------------------


def pipeline(data: dict[str, np.ndarray]) -> fnn_data.Dataset:
    """Shuffled every epoch (from ``SEED``), full batches of ``BATCH``, epochs without end.

    The iterator's ``get_state()`` (a small JSON-able dict) goes into the checkpoint tree, and
    ``pipeline(data).iter_from(state)`` continues with exactly the batches that came next.
    """
    return (
        fnn_data.from_arrays(x=data["x"], y=data["y"])
        .shuffle(SEED)
        .batch(BATCH, drop_remainder=True)
        .repeat()
    )


def write_data(path: Path) -> None:
    """The first ``SUBSET`` training digits of ``fnn_data.datasets.digits()``, in an ``.npz``
    file: the test reads them once, so the training processes need not import scikit-learn."""
    train = fnn_data.datasets.digits("train")
    np.savez(path, x=train["image"][:SUBSET], y=train["label"][:SUBSET])


def load_data(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {"x": f["x"], "y": f["y"]}


# --------------------------------------------------------------------------------------------
# The training program
# --------------------------------------------------------------------------------------------

MODEL = nn.Sequential(
    [
        nn.Conv2d(8, 3, padding=1),
        nn.BatchNorm2d(),
        nn.relu,
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(10),
    ]
)
OPTIMIZER = optim.adamw(optim.warmup_cosine(1e-2, 2, 2 * N), weight_decay=1e-2)


def init_state(data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Everything a run needs to go on: params, BatchNorm state, optimizer, keys, data, step."""
    init_key, dropout_key = fnn.random.split(fnn.random.key(SEED))
    params, bn = MODEL.init(init_key, torch.from_numpy(data["x"][:BATCH]))
    with pipeline(data).iter() as it:
        data_state = it.get_state()
    return {
        "params": params,
        "bn": bn,
        "opt": OPTIMIZER.init(params),
        "keys": {"dropout": dropout_key},
        "data": data_state,  # fnn_data's iterator state: {"epoch": 0, "offset": 0, ...}
        "step": 0,
    }


def train_step(state: dict[str, Any], it: fnn_data.DataIterator) -> tuple[dict, torch.Tensor]:
    batch = next(it)
    key = fnn.random.fold_in(state["keys"]["dropout"], state["step"])

    def loss_fn(params: dict) -> tuple[torch.Tensor, dict]:
        logits, bn = MODEL.apply(params, batch["x"], state=state["bn"], key=key, train=True)
        return fnn.losses.cross_entropy(logits, batch["y"]), bn

    (loss, bn), grads = fnn.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = OPTIMIZER.update(grads, state["opt"], state["params"])
    params = optim.apply_updates(state["params"], updates)
    new_state = dict(state, params=params, bn=bn, opt=opt_state, data=it.get_state())
    new_state["step"] = state["step"] + 1
    return new_state, loss.detach()


def train(state: dict, data: dict, steps: int, losses: list[torch.Tensor]) -> dict:
    """``steps`` steps from ``state``, reading the batches from where ``state["data"]`` says."""
    with pipeline(data).iter_from(state["data"]) as it:
        for _ in range(steps):
            state, loss = train_step(state, it)
            losses.append(loss)
    return state


def write_result(path: str, state: dict, losses: list[torch.Tensor]) -> None:
    """The final state and the losses, flattened by dotted path, in a safetensors file."""
    import safetensors.torch

    def as_tensor(x: Any) -> torch.Tensor:
        if isinstance(x, str):  # the data iterator state's pipeline description
            return torch.tensor(list(x.encode()), dtype=torch.uint8)
        return x if torch.is_tensor(x) else torch.tensor(x)

    flat = {p: as_tensor(x) for p, x in fnn.tree.flatten_with_path(state)[0]}
    flat["losses"] = torch.stack(losses)
    safetensors.torch.save_file({k: v.contiguous() for k, v in flat.items()}, path)


def main(mode: str, data_path: str, *args: str) -> None:
    """Run ``mode`` once a line arrives on stdin (the test's go-ahead, see below)."""
    sys.stdin.readline()
    torch.set_num_threads(1)  # the same arithmetic in every run
    data = load_data(data_path)
    losses: list[torch.Tensor] = []
    if mode == "full":
        (out,) = args
        write_result(out, train(init_state(data), data, 2 * N, losses), losses)
    elif mode == "first":
        (directory,) = args
        state = train(init_state(data), data, N, losses)
        mgr = fnn.checkpoint.Manager(directory, async_save=True)
        mgr.save(state["step"], state, metadata={"losses": [loss.item() for loss in losses]})
        mgr.wait()
        print("saved", flush=True)
        time.sleep(600)  # killed here
    elif mode == "resume":
        directory, out = args
        mgr = fnn.checkpoint.Manager(directory)
        step = mgr.latest_step()
        state = mgr.restore(step, like=init_state(data))
        assert state["step"] == step == N
        losses = [torch.tensor(v, dtype=torch.float32) for v in mgr.read_metadata(step)["losses"]]
        write_result(out, train(state, data, N, losses), losses)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def _bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    return (
        t.as_strided((t.numel(),), (1,)).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    )


def _start(*args: str, **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, text=True, **kwargs
    )


def _go(process: subprocess.Popen) -> None:
    process.stdin.write("go\n")
    process.stdin.close()


def test_training_killed_after_a_checkpoint_resumes_bit_for_bit(tmp_path: Path):
    import safetensors.torch

    data, ckpt = str(tmp_path / "digits.npz"), str(tmp_path / "ckpt")
    processes = []
    try:
        # All three start at once so that their imports overlap; each waits for its go-ahead.
        with open(tmp_path / "first.err", "w") as errors:
            full = _start("full", data, str(tmp_path / "a.safetensors"))
            first = _start("first", data, ckpt, stdout=subprocess.PIPE, stderr=errors)
            resume = _start("resume", data, ckpt, str(tmp_path / "b.safetensors"))
            processes = [full, first, resume]
            write_data(tmp_path / "digits.npz")
            _go(full)
            _go(first)
            line = first.stdout.readline()  # "saved" once the checkpoint is complete
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=60) == -signal.SIGKILL
            first.stdout.close()
        assert line == "saved\n", (tmp_path / "first.err").read_text()
        _go(resume)  # a fresh process that has not trained: it restores and goes on
        assert resume.wait(timeout=300) == 0
        assert full.wait(timeout=300) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    a = safetensors.torch.load_file(str(tmp_path / "a.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "b.safetensors"))
    assert sorted(a) == sorted(b)
    assert {"losses", "params.0.weight", "bn.1.running_var", "opt.0.mu.5.weight"} <= set(a)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert _bytes(a[name]) == _bytes(b[name]), name
    assert a["losses"].shape == (2 * N,) and len(set(a["losses"].tolist())) == 2 * N
    assert int(a["step"]) == 2 * N and int(a["opt.0.count"]) == 2 * N
    assert int(a["data.epoch"]) == 3  # the run crossed epoch boundaries on both sides


if __name__ == "__main__":
    main(*sys.argv[1:])
