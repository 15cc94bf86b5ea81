"""Train a small CNN on handwritten digits that ship offline: fnn's main example.

    pip install -c constraints.txt -e ".[examples]"
    python examples/train_digits.py                # about a minute on 2 CPU cores
    python examples/train_digits.py --resume       # continue a run that was stopped or killed

The data is scikit-learn's bundled digits (1,797 grey 8x8 images; 1,437 to train, 360 to test),
read through ``fnn_data.datasets.digits()``: nothing is downloaded. The program uses every part
of fnn:

- ``fnn.nn``: a CNN with BatchNorm (running statistics in ``state``) and dropout (keys);
- ``fnn_optim``: AdamW on a warmup-cosine schedule, after clipping by the global norm;
- ``fnn_data``: a shuffled, augmented (random 1-pixel shifts, keyed per record), batched and
  prefetched pipeline whose position is saved with the model;
- ``fnn.jit``: the whole train step (forward, backward, optimizer) compiled into one graph, with
  the parameters, BatchNorm state and optimizer state donated (updated in place);
- ``fnn.checkpoint.Manager``: a checkpoint after every epoch; ``--resume`` continues from the
  latest one with the same parameters, optimizer state, data order and keys.

It prints a progress bar per epoch (loss, images/s), the test accuracy after each epoch, and at
the end a summary (test accuracy, steps/s, compile time), and writes ``curves.png`` (loss and
accuracy) and ``summary.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import numpy as np
import torch

import fnn
import fnn_data
import fnn_optim as optim
from fnn import nn


def make_model() -> nn.Module:
    """Two 3x3 conv blocks with BatchNorm, a max-pool, and a dropout MLP head: 8x8 -> 10."""
    return nn.Sequential(
        [
            nn.Conv2d(32, 3, padding=1),
            nn.BatchNorm2d(),
            nn.relu,
            nn.Conv2d(64, 3, padding=1),
            nn.BatchNorm2d(),
            nn.relu,
            nn.MaxPool2d(2),  # (64, 4, 4)
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(128),
            nn.relu,
            nn.Dropout(0.3),
            nn.Linear(10),
        ]
    )


def shift(record: dict, key: torch.Tensor) -> dict:
    """Move the image by up to one pixel in each direction (zeros come in at the border)."""
    bits = key.numpy()
    dy, dx = int(bits[0] % 3) - 1, int(bits[1] % 3) - 1
    padded = np.pad(record["image"], ((0, 0), (1, 1), (1, 1)))
    image = padded[:, 1 + dy : 9 + dy, 1 + dx : 9 + dx]
    return {"image": np.ascontiguousarray(image), "label": record["label"]}


def pipeline(train: dict, batch_size: int, seed: int) -> fnn_data.Dataset:
    """Shuffled every epoch, augmented, batched (full batches), endless, two batches ahead."""
    return (
        fnn_data.from_arrays(image=train["image"], label=train["label"])
        .shuffle(seed)
        .random_map(shift)
        .batch(batch_size, drop_remainder=True)
        .repeat()
        .prefetch(2)
    )


def progress_bar(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        raise SystemExit(
            "This example shows a tqdm progress bar: pip install -e '.[examples]'"
        ) from None
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/train_digits"))
    parser.add_argument("--no-jit", action="store_true", help="run the train step eagerly")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="EPOCHS",
        help="stop after this many epochs, as if the run were killed (then try --resume)",
    )
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    train, test = fnn_data.datasets.digits("train"), fnn_data.datasets.digits("test")
    x_test, y_test = torch.tensor(test["image"]), torch.tensor(test["label"])
    steps_per_epoch = len(train["label"]) // args.batch_size
    total_steps = args.epochs * steps_per_epoch
    print(f"{len(train['label'])} training and {len(test['label'])} test images, ", end="")
    print(f"{steps_per_epoch} steps per epoch, {total_steps} steps")

    model = make_model()
    init_key, dropout_key = fnn.random.split(fnn.random.key(args.seed))
    params, bn_state = model.init(init_key, x_test[:1])
    print(f"{fnn.tree.size(params):,} parameters")
    schedule = optim.warmup_cosine(
        args.lr, warmup_steps=2 * steps_per_epoch, decay_steps=total_steps
    )
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(schedule, weight_decay=1e-4))
    opt_state = opt.init(params)

    def loss_fn(params, bn_state, batch, key):
        logits, bn_state = model.apply(params, batch["image"], state=bn_state, key=key, train=True)
        return fnn.losses.cross_entropy(logits, batch["label"]), bn_state

    def train_step(params, bn_state, opt_state, batch, key):
        (loss, bn_state), grads = fnn.value_and_grad(loss_fn, has_aux=True)(
            params, bn_state, batch, key
        )
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), bn_state, opt_state, loss

    def accuracy(params, bn_state, x, y):
        logits, _ = model.apply(params, x, state=bn_state)
        return (logits.argmax(-1) == y).float().mean()

    if not args.no_jit:
        train_step = fnn.jit(train_step, donate_argnums=(0, 1, 2))
        accuracy = fnn.jit(accuracy)

    data = pipeline(train, args.batch_size, args.seed)
    manager = fnn.checkpoint.Manager(args.out / "checkpoints", max_to_keep=2)
    step, history = 0, {"loss": [], "test_accuracy": []}
    it = data.iter()
    if args.resume and manager.latest_step() is not None:
        step = manager.latest_step()
        like = {
            "params": params,
            "bn_state": bn_state,
            "opt_state": opt_state,
            "data": it.get_state(),
        }
        saved = manager.restore(step, like=like)
        params, bn_state, opt_state = saved["params"], saved["bn_state"], saved["opt_state"]
        it.close()
        it = data.iter_from(saved["data"])
        history = manager.read_metadata(step)["history"]
        print(f"resumed from step {step} (epoch {step // steps_per_epoch})")

    step_times, first_step = [], None
    start = time.perf_counter()
    last_epoch = args.epochs if args.stop_after is None else min(args.epochs, args.stop_after)
    for epoch in range(step // steps_per_epoch, last_epoch):
        bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{args.epochs}")
        losses = []
        for _ in range(steps_per_epoch):
            batch = next(it)
            key = fnn.random.fold_in(dropout_key, step)
            t0 = time.perf_counter()
            params, bn_state, opt_state, loss = train_step(params, bn_state, opt_state, batch, key)
            losses.append(loss.item())  # waits for the step: the timing below is honest
            elapsed = time.perf_counter() - t0
            if first_step is None:
                first_step = elapsed
            else:
                step_times.append(elapsed)
            step += 1
            bar.set_postfix(loss=f"{losses[-1]:.3f}", img_s=f"{args.batch_size / elapsed:,.0f}")
            bar.update()
        bar.close()
        acc = accuracy(params, bn_state, x_test, y_test).item()
        history["loss"].append(statistics.mean(losses))
        history["test_accuracy"].append(acc)
        print(f"epoch {epoch + 1:3d}  loss {history['loss'][-1]:.4f}  test accuracy {acc:.4f}")
        tree = {
            "params": params,
            "bn_state": bn_state,
            "opt_state": opt_state,
            "data": it.get_state(),
        }
        manager.save(step, tree, metadata={"history": history})
    it.close()
    manager.close()
    wall = time.perf_counter() - start

    fnn.testing.assert_tree_all_finite(params)
    steps_per_s = 1 / statistics.median(step_times) if step_times else float("nan")
    compile_s = first_step - statistics.median(step_times) if step_times else float("nan")
    summary = {
        "test_accuracy": history["test_accuracy"][-1] if history["test_accuracy"] else None,
        "steps": step,
        "steps_per_s": steps_per_s,
        "first_step_s": first_step,
        "compile_s": None if args.no_jit else compile_s,
        "wall_s": wall,
        "jit": not args.no_jit,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(history, args.out / "curves.png")
    print(f"test accuracy {summary['test_accuracy']:.4f}")
    print(f"{steps_per_s:.0f} steps/s after the first step; ", end="")
    print("eager, no compile" if args.no_jit else f"compile {compile_s:.1f} s", end="")
    print(f"; {wall:.1f} s in all; curves in {args.out / 'curves.png'}")


def plot(history: dict, path: pathlib.Path) -> None:
    """Training loss and test accuracy per epoch, side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[examples]'): no plot written")
        return
    epochs = range(1, len(history["loss"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, history["loss"])
    left.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss")
    right.plot(epochs, history["test_accuracy"])
    right.set(xlabel="epoch", ylabel="test accuracy", title="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
