"""A small end-to-end demo of what fnn has today: pytrees, explicit PRNG keys, fnn.testing.

Trains a two-layer MLP on scikit-learn's bundled handwritten digits (1,797 8x8 images, shipped
inside the package: nothing is downloaded) with pure functions of a parameter tree:

    python examples/demo.py [--epochs 30] [--seed 0]

Parameters are a plain dict initialised from keys, the loss is a pure function, the update is
``fnn.tree`` math, and dropout draws its mask from a key folded with the step number, so the
whole run is a deterministic function of ``--seed``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import torch

import fnn


def load_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise SystemExit(
            "This demo reads scikit-learn's bundled digits: pip install -e '.[data]'"
        ) from None
    data = sk_load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    order = fnn.random.permutation(fnn.random.key(1234), x.shape[0])  # a fixed split
    x, y = x[order], y[order]
    n_test = 360
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def init_mlp(key: torch.Tensor, sizes: list[int]) -> dict[str, dict[str, torch.Tensor]]:
    """torch.nn.Linear's initialisation, from keys; names match a torch.nn.Sequential."""
    params = {}
    for i, (key_i, (fan_in, fan_out)) in enumerate(
        zip(fnn.random.split(key, len(sizes) - 1), itertools.pairwise(sizes), strict=True)
    ):
        kw, kb = fnn.random.split(key_i)
        bound = 1 / math.sqrt(fan_in)
        params[str(2 * i)] = {
            "weight": fnn.random.uniform(kw, (fan_out, fan_in), minval=-bound, maxval=bound),
            "bias": fnn.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound),
        }
    return params


def apply_mlp(params, x: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
    layers = [params[name] for name in sorted(params, key=int)]
    for i, layer in enumerate(layers):
        x = x @ layer["weight"].T + layer["bias"]
        if i < len(layers) - 1:
            x = torch.relu(x)
            if key is not None:  # dropout, rate 0.2, with an explicit key
                keep = fnn.random.bernoulli(fnn.random.fold_in(key, i), 0.8, x.shape)
                x = torch.where(keep, x / 0.8, 0.0)
    return x


def loss_fn(params, x, y, key):
    return torch.nn.functional.cross_entropy(apply_mlp(params, x, key), y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x_train, y_train, x_test, y_test = load_digits()
    key = fnn.random.key(args.seed)
    init_key, shuffle_key, dropout_key = fnn.random.split(key, 3)
    params = init_mlp(init_key, [64, 128, 10])
    print(f"{len(x_train)} training and {len(x_test)} test images")
    print("parameters:", fnn.tree.map(lambda t: tuple(t.shape), params))
    print(f"{fnn.tree.size(params):,} numbers, {fnn.tree.bytes(params):,} bytes")

    momentum = fnn.tree.zeros_like(params)
    step = 0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        order = fnn.random.permutation(fnn.random.fold_in(shuffle_key, epoch), len(x_train))
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            idx = order[i : i + args.batch_size]
            p_leaves, treedef = fnn.tree.flatten(params)
            for leaf in p_leaves:
                leaf.requires_grad_(True)
            step_key = fnn.random.fold_in(dropout_key, step)
            loss = loss_fn(params, x_train[idx], y_train[idx], step_key)
            grads = treedef.unflatten(list(torch.autograd.grad(loss, p_leaves)))
            with torch.no_grad():
                params = fnn.tree.map(torch.Tensor.detach, params)
                momentum = fnn.tree.add(fnn.tree.scale(momentum, 0.9), grads)
                params = fnn.tree.sub(params, fnn.tree.scale(momentum, args.lr))
            step += 1
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            with torch.no_grad():
                acc = (apply_mlp(params, x_test).argmax(-1) == y_test).float().mean().item()
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  test accuracy {acc:.3f}")
    elapsed = time.perf_counter() - start
    fnn.testing.assert_tree_all_finite(params)
    print(f"{step} steps in {elapsed:.1f} s ({step / elapsed:.0f} steps/s)")


if __name__ == "__main__":
    main()
