"""Probe of fnn.jit's oneDNN pass on the suite's training steps: with it against without.

    python -m benchmarks.onednn_probe [--only mlp cnn transformer] [--reps N] [--mkl-first]

For each workload, in one process: the eager ``torch.nn`` + ``torch.optim`` step (the suite's
baseline), ``fnn.jit`` of the step compiled with ``FNN_ONEDNN_MATMUL=1`` (large products on oneDNN,
whatever the CPU) and with ``FNN_ONEDNN_MATMUL=0`` (MKL for every product; the pass's other rewrites
run in both), timed interleaved (medians, ratios to the baseline). Before timing, it checks that the
two compiled steps give the same loss to float rounding. ``--mkl-first`` compiles the MKL version
first (the order the steps are compiled in decides where their buffers land; this checks that the
order is not what the comparison shows). This is a probe: it prints a Markdown table and writes
nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable

import torch

from benchmarks.common import interleaved, machine
from benchmarks.suite_models import TRAIN_WORKLOADS, Workload
from benchmarks.suite_variants import BASE, FNN_JIT, train_variant

WITH, WITHOUT = "fnn.jit, oneDNN", "fnn.jit, MKL"


def compiled(workload: Workload, onednn: bool) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
    """The suite's ``fnn.jit`` step for ``workload``, compiled now with or without the pass, and
    the loss its first (compiling) call returned."""
    before = os.environ.get("FNN_ONEDNN_MATMUL")
    os.environ["FNN_ONEDNN_MATMUL"] = "1" if onednn else "0"
    try:
        variant = train_variant(workload, FNN_JIT)
        first_loss = variant.step()  # compiles, reading the variable
    finally:
        if before is None:
            del os.environ["FNN_ONEDNN_MATMUL"]
        else:
            os.environ["FNN_ONEDNN_MATMUL"] = before
    return variant.step, first_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["mlp", "cnn", "transformer"])
    parser.add_argument("--reps", type=int, default=50, help="timed samples per variant")
    parser.add_argument("--mkl-first", action="store_true", help="compile the MKL step first")
    args = parser.parse_args()
    torch.set_num_threads(2)
    info = machine()
    print(f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}.\n")
    print(f"| workload | eager | {WITH} | {WITHOUT} |")
    print("|---|---:|---:|---:|")
    for key in args.only:
        workload = TRAIN_WORKLOADS[key]()
        if args.mkl_first:
            without, loss_without = compiled(workload, onednn=False)
            with_pass, loss_with = compiled(workload, onednn=True)
        else:
            with_pass, loss_with = compiled(workload, onednn=True)
            without, loss_without = compiled(workload, onednn=False)
        torch.testing.assert_close(loss_with, loss_without, rtol=1e-4, atol=1e-5)
        steps = {BASE: train_variant(workload, BASE).step, WITH: with_pass, WITHOUT: without}
        times = interleaved(steps, args.reps, warmup=5, number=3)
        ms = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        base = ms[BASE]
        print(
            f"| {workload.title} | {base:.2f} ms | {ms[WITH]:.2f} ms ({ms[WITH] / base:.3f}x) "
            f"| {ms[WITHOUT]:.2f} ms ({ms[WITHOUT] / base:.3f}x) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
