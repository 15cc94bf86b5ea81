"""MAML on sine waves: learn an initialisation that adapts to a new task in one gradient step.

Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, 2017, arXiv:1703.03400), the paper's
regression benchmark. Each task is a sine wave ``y = A sin(x - phase)`` with amplitude ``A`` in
[0.1, 5] and phase in [0, pi], drawn from ``fnn.random`` keys; the model sees ``K = 10`` points
of it (the support set), takes ``--inner-steps`` SGD steps on them, and is scored on 10 new
points of the same wave (the query set). Meta-training moves the *initial* parameters so that
this post-adaptation loss is low, which needs the gradient *through* the inner SGD steps
(second order). In fnn that is ``fnn.grad`` inside ``fnn.vmap`` (over tasks) inside
``fnn.value_and_grad`` (over the initial parameters), composed like any function:

    python examples/maml.py [--steps 3000] [--inner-steps 1] [--seed 0] [--jit]

It prints the post-adaptation loss on 100 held-out tasks before and after meta-training.
``--jit`` compiles the meta-step with ``fnn.jit`` (a long compile for a step this small).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import fnn
import fnn_optim as optim
from fnn import nn

model = nn.Sequential([nn.Linear(40), nn.relu, nn.Linear(40), nn.relu, nn.Linear(1)])


def sample_tasks(key: torch.Tensor, num_tasks: int, k: int) -> tuple[torch.Tensor, ...]:
    """``num_tasks`` sine waves with ``k`` support and ``k`` query points each, ``(T, k, 1)``."""
    amp_key, phase_key, x_key = fnn.random.split(key, 3)
    amplitude = fnn.random.uniform(amp_key, (num_tasks, 1, 1), minval=0.1, maxval=5.0)
    phase = fnn.random.uniform(phase_key, (num_tasks, 1, 1), minval=0.0, maxval=math.pi)
    x = fnn.random.uniform(x_key, (num_tasks, 2 * k, 1), minval=-5.0, maxval=5.0)
    y = amplitude * torch.sin(x - phase)
    return x[:, :k], y[:, :k], x[:, k:], y[:, k:]


def mse(params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model.apply(params, x) - y) ** 2).mean()


def adapt(params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float):
    """The inner loop: plain SGD on one task's support set, differentiable end to end."""
    for _ in range(steps):
        grads = fnn.grad(mse)(params, x, y)
        params = fnn.tree.map(lambda p, g: p - lr * g, params, grads)
    return params


def post_adaptation_loss(params, tasks, steps: int, lr: float) -> torch.Tensor:
    """The mean query loss over a batch of tasks, each after adapting on its support set."""

    def one_task(x_support, y_support, x_query, y_query):
        return mse(adapt(params, x_support, y_support, steps, lr), x_query, y_query)

    return fnn.vmap(one_task)(*tasks).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="meta-training steps")
    parser.add_argument("--tasks", type=int, default=25, help="tasks per meta-batch")
    parser.add_argument("--k", type=int, default=10, help="support (and query) points per task")
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=3e-3, help="the meta-optimizer's (Adam)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit", action="store_true", help="compile the meta-step")
    args = parser.parse_args()

    init_key, train_key, test_key = fnn.random.split(fnn.random.key(args.seed), 3)
    params, _ = model.init(init_key, torch.zeros(args.k, 1))
    test_tasks = sample_tasks(test_key, 100, args.k)  # held out: never used for meta-training

    def evaluate(params, inner_steps: int) -> float:
        return post_adaptation_loss(params, test_tasks, inner_steps, args.inner_lr).item()

    before = {n: evaluate(params, n) for n in (0, args.inner_steps, 10)}

    opt = optim.adam(args.lr)
    opt_state = opt.init(params)

    def meta_step(params, opt_state, tasks):
        # the gradient flows through the inner SGD steps: second-order MAML
        loss, grads = fnn.value_and_grad(post_adaptation_loss)(
            params, tasks, args.inner_steps, args.inner_lr
        )
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, loss

    if args.jit:
        meta_step = fnn.jit(meta_step, donate_argnums=(0, 1))

    print(
        f"meta-training on {args.tasks} sine tasks per step, {args.k}-shot, "
        f"{args.inner_steps} inner SGD step(s) of lr {args.inner_lr}"
    )
    start, running = time.perf_counter(), None
    for step in range(args.steps):
        tasks = sample_tasks(fnn.random.fold_in(train_key, step), args.tasks, args.k)
        params, opt_state, loss = meta_step(params, opt_state, tasks)
        if step == 0:
            first = time.perf_counter() - start
            if args.jit:
                print(f"first step (compiling included): {first:.1f} s")
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % max(1, args.steps // 5) == 0:
            print(f"step {step + 1:5d}  post-adaptation training loss {running:.3f}")
    elapsed = time.perf_counter() - start
    rate = (args.steps - 1) / max(elapsed - first, 1e-9)
    print(f"{args.steps} meta-steps in {elapsed:.1f} s ({rate:.0f} steps/s after the first)")

    after = {n: evaluate(params, n) for n in before}
    print("query loss on 100 held-out tasks (mean squared error):")
    print("  inner SGD steps   random init   meta-learned init")
    for n in before:
        print(f"  {n:15d}   {before[n]:11.3f}   {after[n]:17.3f}")
    n = args.inner_steps
    print(
        f"post-adaptation loss after {n} inner step(s): {before[n]:.3f} before meta-training, "
        f"{after[n]:.3f} after"
    )


if __name__ == "__main__":
    main()
