"""Probe of fnn's CPU memory policies on the suite's per-example gradient workload.

    python -m benchmarks.cpu_memory_probe [--reps N]

For each policy (``keep``: fnn's default; ``release``; ``system``: glibc untouched) a fresh
process times the suite's three per-example variants (the autograd loop, eager
``fnn.vmap(fnn.grad)``, ``fnn.jit`` of it) interleaved, then counts the minor page faults of a
call of each (``ru_minflt``, median of 7). The per-example gradients of the 784-512-512-10 MLP
over 32 examples are one 51 MB and one 34 MB tensor per call, above glibc's largest mmap
threshold (32 MiB). This is a probe: it prints a Markdown table and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

POLICIES = ("keep", "release", "system")


def child(reps: int) -> dict:
    """In this process: medians (ms) and page faults per call of the per-example variants."""
    import torch

    import fnn
    from benchmarks.common import faults_per_step, interleaved
    from benchmarks.suite_variants import LOOP, PE_EAGER, PE_JIT, per_example_variant

    torch.set_num_threads(2)
    steps = {name: per_example_variant(name).step for name in (LOOP, PE_EAGER, PE_JIT)}
    times = interleaved(steps, reps, warmup=3)
    return {
        "policy": fnn.cpu_memory_policy(),
        "ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
        "faults": {k: faults_per_step(step) for k, step in steps.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=25, help="timed calls per variant")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.reps)))
        return
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    print("| policy | variant | median | ratio to the loop | page faults per call |")
    print("|---|---|---:|---:|---:|")
    for policy in POLICIES:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.cpu_memory_probe", "--child", f"--reps={args.reps}"],
            env=base | {"FNN_CPU_MEMORY": policy},
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        loop = next(iter(result["ms"].values()))  # the autograd loop comes first
        for name, ms in result["ms"].items():
            print(
                f"| {result['policy']} | {name} | {ms:.2f} ms | {ms / loop:.2f}x | "
                f"{result['faults'][name]:,.0f} |"
            )


if __name__ == "__main__":
    main()
