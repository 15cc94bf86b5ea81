"""Differentially private SGD on the digits: per-example gradients with ``fnn.vmap(fnn.grad)``.

DP-SGD (Abadi et al., 2016, arXiv:1607.00133) bounds how much any one training example can move
the model. Each step it needs the gradient of every example in the batch *separately*: each is
clipped to a norm of at most ``C``, the clipped gradients are summed, Gaussian noise of standard
deviation ``noise * C`` is added, and the result, divided by the batch size, goes to the
optimizer. In fnn the per-example gradients are one line,

    per_example_grads = fnn.vmap(fnn.grad(loss_of_one_example), in_axes=(None, 0, 0))

and the private gradient (per-example gradients, clipping, and noise from an ``fnn.random``
key) compiles into one graph with ``fnn.jit``. Before training with it and an ``fnn_optim``
optimizer, the program checks that the vectorised private gradient equals the one computed
with a Python loop over the examples, and times the three variants:

    python examples/per_example_grads.py [--epochs 15] [--clip 1.0] [--noise 1.0] [--seed 0]

The compiled variant's first call compiles (15 s to a minute on a 2-core CPU); ``--no-jit``
leaves it out and trains with the eager ``vmap``.

With ``--noise 0`` and a large ``--clip`` this is ordinary (non-private) training. Two
simplifications, as in many DP-SGD tutorials: batches are a shuffled partition of the data
rather than Poisson samples, and no privacy accountant turns (noise, batch size, steps) into an
(epsilon, delta) guarantee; use one (e.g. Opacus's RDP accountant) before publishing a number.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import fnn
import fnn_data
import fnn_optim as optim
from fnn import nn

Params = dict[str, dict[str, torch.Tensor]]

model = nn.Sequential([nn.Flatten(), nn.Linear(128), nn.tanh, nn.Linear(10)])


def loss_of_one_example(params: Params, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The loss of one ``(1, 8, 8)`` image: the model takes batches, so give it a batch of one."""
    logits = model.apply(params, image[None])
    return fnn.losses.cross_entropy(logits, label[None])


# (params, images (B, 1, 8, 8), labels (B,)) -> a tree of gradients, each leaf (B, *param.shape)
per_example_grads = fnn.vmap(fnn.grad(loss_of_one_example), in_axes=(None, 0, 0))


def per_example_grads_loop(params: Params, images: torch.Tensor, labels: torch.Tensor) -> Params:
    """The same per-example gradients from a Python loop: one backward pass per example."""
    grads = [
        fnn.grad(loss_of_one_example)(params, x, y) for x, y in zip(images, labels, strict=True)
    ]
    return fnn.tree.map(lambda *g: torch.stack(g), *grads)


def make_private_grad(per_example_fn: Callable[..., Params], clip: float, noise: float):
    """DP-SGD's gradient of a batch, from per-example gradients: clip each example's gradient
    to norm ``clip``, sum, add Gaussian noise of std ``noise * clip``, divide by the batch size."""

    def private_grad(params, images, labels, key):
        grads = per_example_fn(params, images, labels)  # each leaf (B, *param.shape)
        leaves, treedef = fnn.tree.flatten(grads)
        # the L2 norm of each example's whole gradient (all parameters together): shape (B,)
        norms = torch.stack([g.flatten(1).square().sum(1) for g in leaves]).sum(0).sqrt()
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        noise_keys = fnn.random.split(key, len(leaves))
        noisy = [
            torch.einsum("b,b...->...", factor, g)  # sum of the clipped gradients
            + noise * clip * fnn.random.normal(k, g.shape[1:], dtype=g.dtype)
            for g, k in zip(leaves, noise_keys, strict=True)
        ]
        return fnn.tree.unflatten(treedef, [g / images.shape[0] for g in noisy])

    return private_grad


def accuracy(params: Params, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model.apply(params, images).argmax(-1) == labels).float().mean().item()


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate")
    parser.add_argument("--clip", type=float, default=1.0, help="per-example gradient norm C")
    parser.add_argument("--noise", type=float, default=1.0, help="noise std as a multiple of C")
    parser.add_argument("--repeats", type=int, default=20, help="timing runs of each variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-jit", action="store_true", help="skip the compiled variant")
    args = parser.parse_args()

    train, test = fnn_data.datasets.digits("train"), fnn_data.datasets.digits("test")
    x_train, y_train = torch.tensor(train["image"]), torch.tensor(train["label"])
    x_test, y_test = torch.tensor(test["image"]), torch.tensor(test["label"])
    init_key, shuffle_key, noise_key = fnn.random.split(fnn.random.key(args.seed), 3)
    params, _ = model.init(init_key, x_train[:1])
    opt = optim.adam(args.lr)
    opt_state = opt.init(params)

    # The private gradient computed three ways. The same key gives the same noise, so all
    # three must agree; then time them.
    B = args.batch_size
    variants = {
        "Python loop over examples": make_private_grad(
            per_example_grads_loop, args.clip, args.noise
        ),
        "fnn.vmap(fnn.grad)": make_private_grad(per_example_grads, args.clip, args.noise),
    }
    if not args.no_jit:  # per-example gradients, clipping and noise compiled into one graph
        variants["fnn.jit(fnn.vmap(fnn.grad))"] = fnn.jit(variants["fnn.vmap(fnn.grad)"])
    batch = (params, x_train[:B], y_train[:B], fnn.random.key(123))
    start = time.perf_counter()
    results = {name: fn(*batch) for name, fn in variants.items()}
    print(f"first call of each variant (compiling included): {time.perf_counter() - start:.1f} s")
    reference = results["Python loop over examples"]
    max_diff = 0.0
    for result in results.values():
        fnn.testing.assert_trees_all_close(result, reference, rtol=1e-4, atol=1e-6)
        for a, b in zip(fnn.tree.leaves(result), fnn.tree.leaves(reference), strict=True):
            max_diff = max(max_diff, (a - b).abs().max().item())
    print(f"private gradients equal: loop and vmap agree (max |difference| {max_diff:.1e})")

    print(f"private gradient of a batch of {B} (median of {args.repeats} runs):")
    loop_ms = None
    for name, fn in variants.items():
        ms = median_ms(lambda fn=fn: fn(*batch), args.repeats)
        loop_ms = loop_ms or ms
        print(f"  {name:<30s} {ms:8.2f} ms  {loop_ms / ms:5.1f}x the loop's speed")

    # DP-SGD training: the fastest private gradient, then an Adam update.
    private = list(variants.values())[-1]
    steps_per_epoch = len(x_train) // B  # full batches only: one compiled shape
    print(
        f"DP-SGD: {args.epochs} epochs of {steps_per_epoch} steps, batch {B}, "
        f"clip C={args.clip}, noise {args.noise} C"
    )
    start, step = time.perf_counter(), 0
    for epoch in range(args.epochs):
        order = fnn.random.permutation(fnn.random.fold_in(shuffle_key, epoch), len(x_train))
        for i in range(steps_per_epoch):
            idx = order[i * B : (i + 1) * B]
            step_key = fnn.random.fold_in(noise_key, step)  # fresh noise every step
            grads = private(params, x_train[idx], y_train[idx], step_key)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optim.apply_updates(params, updates)
            step += 1
        if (epoch + 1) % 5 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  test accuracy {accuracy(params, x_test, y_test):.3f}")
    elapsed = time.perf_counter() - start
    print(f"{step} private steps in {elapsed:.1f} s ({step / elapsed:.0f} steps/s)")
    print(f"final test accuracy {accuracy(params, x_test, y_test):.3f}")


if __name__ == "__main__":
    main()
