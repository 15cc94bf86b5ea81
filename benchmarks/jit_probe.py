"""Probe of fnn.jit: per-call overhead, and step time and peak memory with and without donation.

    python -m benchmarks.jit_probe [--quick] [--only overhead|time|memory]

- overhead: a tiny MLP Adam step (5-32-3, batch 16), where the per-call cost dominates:
  ``torch.compile(fullgraph=True)`` called on the trees directly (baseline) against ``fnn.jit``
  with and without donation.
- time: the same hand-written Adam step on a ~10M-parameter MLP (1024-2048-2048-1792-10, batch
  64), ``fnn.jit`` with ``donate_argnums=(0, 1)`` against without, and the uncompiled step; then
  the Adam update alone (given gradients), where donation matters most.
- memory: each variant of ``time`` in its own subprocess, with glibc told to mmap blocks of
  64 KiB and more (so freed tensors leave the RSS): after compiling and three warm-up steps the
  peak RSS is reset (``/proc/self/clear_refs``), five steps run, and the report gives the RSS
  before the steps and the new peak (``VmHWM``) minus it, i.e. what a step needs on top of the
  live parameters and optimizer state (together 120 MB at float32).

Timings are interleaved in one process (medians, ratios to the baseline). This is a probe: it
prints a Markdown table and writes nothing.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import pathlib
import re
import subprocess
import sys

import torch

import fnn
from benchmarks.common import interleaved, machine, summarize

AdamState = collections.namedtuple("AdamState", ["count", "mu", "nu"])
BIG = (1024, 2048, 2048, 1792, 10)
TINY = (5, 32, 3)
# Large blocks straight from mmap and back to the OS when freed, so RSS follows live tensors
# instead of what glibc keeps cached.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def init_mlp(sizes: tuple[int, ...], seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "layers": [
            {
                "weight": torch.randn(n_out, n_in, generator=gen) / n_in**0.5,
                "bias": torch.zeros(n_out),
            }
            for n_in, n_out in itertools.pairwise(sizes)
        ]
    }


def loss_fn(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    *hidden, last = params["layers"]
    for layer in hidden:
        x = torch.relu(x @ layer["weight"].T + layer["bias"])
    logits = x @ last["weight"].T + last["bias"]
    return torch.nn.functional.cross_entropy(logits, y)


def adam_init(params: dict) -> AdamState:
    zeros = fnn.tree.zeros_like
    return AdamState(torch.zeros((), dtype=torch.int64), zeros(params), zeros(params))


def adam_step(params, opt_state, x, y, lr):
    """One hand-written Adam step; ``lr`` and the step count are 0-d tensors."""
    grads, loss = torch.func.grad_and_value(loss_fn)(params, x, y)
    params, opt_state = adam_update(params, opt_state, grads, lr)
    return params, opt_state, loss


def adam_update(params, opt_state, grads, lr):
    """The optimizer part alone: Adam's update of ``params`` and its state from ``grads``."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    count = opt_state.count + 1
    mu = fnn.tree.map(lambda m, g: b1 * m + (1 - b1) * g, opt_state.mu, grads)
    nu = fnn.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, opt_state.nu, grads)
    c1, c2 = 1 - b1**count, 1 - b2**count
    params = fnn.tree.map(
        lambda p, m, v: p - lr * (m / c1) / (torch.sqrt(v / c2) + eps), params, mu, nu
    )
    return params, AdamState(count, mu, nu)


def make_variant(name: str, sizes: tuple[int, ...], batch: int, update_only: bool = False):
    """A closure running one training step (or only the Adam update) of variant ``name``."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (batch,), generator=gen)
    lr = torch.tensor(1e-3)
    fn = adam_update if update_only else adam_step
    step = {
        "eager": fn,
        "torch.compile": torch.compile(fn, fullgraph=True),
        "fnn.jit": fnn.jit(fn),
        "fnn.jit donate": fnn.jit(fn, donate_argnums=(0, 1)),
    }[name]
    params = init_mlp(sizes)
    state = [params, adam_init(params)]
    grads = fnn.tree.map(torch.randn_like, params)

    def run() -> None:
        if update_only:
            state[0], state[1] = step(state[0], state[1], grads, lr)
        else:
            state[0], state[1], _ = step(state[0], state[1], x, y, lr)

    return run


def rss_mb(field: str) -> float:
    status = pathlib.Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1)) / 1024


def memory_child(name: str) -> None:
    """Run in a subprocess: print the peak RSS a step needs on top of the live state."""
    run = make_variant(name, BIG, 64)
    run(), run(), run()  # compile and warm up
    base = rss_mb("VmRSS")
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    for _ in range(5):
        run()
    print(json.dumps({"peak_extra_mb": rss_mb("VmHWM") - base, "rss_mb": base}))


def memory(variants: list[str]) -> list[dict]:
    rows = []
    for name in variants:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.jit_probe", "--memory-child", name],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **MALLOC_ENV},
        )
        rows.append({"variant": name, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def timing(sizes, batch, variants, reps, baseline, update_only=False):
    runs = {name: make_variant(name, sizes, batch, update_only) for name in variants}
    return summarize(interleaved(runs, reps=reps, warmup=3), baseline)


def table(title: str, stats: dict[str, dict[str, float]], baseline: str) -> str:
    lines = [f"#### {title}", "", "| variant | median | ratio |", "|---|---:|---:|"]
    for name, s in stats.items():
        lines.append(f"| {name} | {s['median_ms']:.3f} ms | {s['ratio']:.2f}x (vs {baseline}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", choices=["overhead", "time", "memory"])
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['date']}\n")
    if args.only in (None, "overhead"):
        variants = ["torch.compile", "fnn.jit", "fnn.jit donate"]
        stats = timing(TINY, 16, variants, 100 if args.quick else 500, "torch.compile")
        print(table(f"tiny MLP {TINY} Adam step (per-call overhead)", stats, "torch.compile"))
    if args.only in (None, "time"):
        variants = ["eager", "fnn.jit", "fnn.jit donate"]
        stats = timing(BIG, 64, variants, 10 if args.quick else 30, "fnn.jit")
        n = fnn.tree.size(init_mlp(BIG)) / 1e6
        print(table(f"{n:.1f}M-parameter MLP Adam step, batch 64", stats, "fnn.jit"))
        stats = timing(BIG, 64, variants, 20 if args.quick else 60, "fnn.jit", update_only=True)
        print(table(f"the Adam update alone ({n:.1f}M parameters)", stats, "fnn.jit"))
    if args.only in (None, "memory"):
        rows = memory(["eager", "fnn.jit", "fnn.jit donate"])
        print("#### peak memory of a step on top of the live state (RSS, subprocess each)\n")
        print("| variant | peak extra | RSS before the steps |\n|---|---:|---:|")
        for r in rows:
            print(f"| {r['variant']} | {r['peak_extra_mb']:.0f} MB | {r['rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
