"""Peak memory of a deep MLP's gradient with and without ``fnn.remat`` (a probe, not a test).

Each variant runs in a fresh subprocess, which builds the parameters, records its resident set
size (``VmRSS``) as the baseline, resets the high-water mark (``/proc/self/clear_refs``) and
computes one gradient; it reports ``VmHWM - baseline`` (peak) and the memory still held when
the forward pass returns (classic ``loss.backward()`` only: what autograd saved). glibc is told
to ``mmap`` large blocks (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the resident
set and the numbers follow the live tensors. Step times are medians over ``--reps`` steps,
the variants timed round-robin in one more subprocess with glibc's default settings
(``benchmarks.common.interleaved``).

The model is ``depth`` layers ``x = gelu(x @ W.T + b)`` of width ``width`` on a batch of
``batch`` rows, float32; ``fnn.remat`` wraps nothing, each layer, or each block of ``block``
layers. The peak includes the gradients themselves (``depth * width * (width + 1) * 4`` bytes).

Run (a few minutes on 2 cores)::

    python benchmarks/remat_probe.py                 # 32 layers, width 1024, batch 512
    python benchmarks/remat_probe.py --batch 2048    # activations dominate the gradients
    python benchmarks/remat_probe.py --compile       # also the torch.compile'd variants
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
from collections.abc import Callable


def _status(field: str) -> float:
    """A ``/proc/self/status`` field in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def make_step(
    args: argparse.Namespace, mode: str, remat: str, compiled: bool
) -> Callable[[], float]:
    """One gradient computation of the MLP; returns the RSS (MiB) right after the forward pass
    (``nan`` for ``torch.func.grad``, which has no such moment)."""
    import torch

    import fnn

    torch.manual_seed(0)
    width, depth, batch = args.width, args.depth, args.batch
    params = [
        {"weight": torch.randn(width, width) / width**0.5, "bias": torch.zeros(width)}
        for _ in range(depth)
    ]
    x = torch.randn(batch, width)

    def layer(p: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(torch.addmm(p["bias"], h, p["weight"].t()))

    def block(ps: list[dict[str, torch.Tensor]], h: torch.Tensor) -> torch.Tensor:
        for p in ps:
            h = layer(p, h)
        return h

    size = {"none": depth, "layer": 1, "block": args.block}[remat]
    run_block = block if remat == "none" else fnn.remat(block)

    def loss_fn(params: list[dict[str, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(0, depth, size):
            h = run_block(params[i : i + size], h)
        return h.pow(2).mean()

    leaves = [t for p in params for t in p.values()]
    if mode == "backward":
        for t in leaves:
            t.requires_grad_(True)
        forward = torch.compile(loss_fn, fullgraph=True) if compiled else loss_fn

        def step() -> float:
            loss = forward(params, x)
            held = _status("VmRSS")
            loss.backward()
            for t in leaves:
                t.grad = None
            return held

        return step

    grad_fn = torch.func.grad(loss_fn)
    if compiled:
        grad_fn = torch.compile(grad_fn, fullgraph=True)

    def func_step() -> float:
        grads = grad_fn(params, x)
        del grads
        return float("nan")

    return func_step


def measure_memory(args: argparse.Namespace, mode: str, remat: str, compiled: bool) -> dict:
    step = make_step(args, mode, remat, compiled)
    # Warm up (and compile) outside the measurement: the first call also pages in the code of
    # libtorch it runs, tens of MiB of resident set that are not tensors.
    step()
    baseline = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    held = step() - baseline
    peak = _status("VmHWM") - baseline
    return {"peak_mib": round(peak), "held_mib": None if held != held else round(held)}


def measure_time(args: argparse.Namespace, compiled: bool) -> dict[str, float]:
    """Median seconds per step of every variant, timed round-robin in this one process."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from benchmarks.common import interleaved

    steps = {f"{m} {r}": make_step(args, m, r, compiled) for m in MODES for r in REMATS}
    times = interleaved(steps, reps=args.reps, warmup=1)
    return {name: round(statistics.median(ts), 3) for name, ts in times.items()}


MODES = ("backward", "func_grad")
REMATS = ("none", "layer", "block")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--block", type=int, default=4, help="layers per remat block")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also the compiled variants")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "REMAT", "COMPILED"))
    args = parser.parse_args()
    if args.child:
        mode, remat, compiled = args.child
        if mode == "time":
            print(json.dumps(measure_time(args, compiled == "1")))
        else:
            print(json.dumps(measure_memory(args, mode, remat, compiled == "1")))
        return

    def run_child(mode: str, remat: str, compiled: str, env: dict | None) -> dict:
        cmd = [sys.executable, __file__, "--child", mode, remat, compiled]
        cmd += ["--width", str(args.width), "--depth", str(args.depth)]
        cmd += ["--batch", str(args.batch), "--block", str(args.block)]
        cmd += ["--reps", str(args.reps)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    # glibc: mmap every block over 64 KiB and trim at once, so freed tensors leave the RSS.
    mem_env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    grads_mib = args.depth * args.width * (args.width + 1) * 4 / 2**20
    print(
        f"MLP: {args.depth} layers of width {args.width}, batch {args.batch}, float32; "
        f"parameters and gradients {grads_mib:.0f} MiB each; {os.cpu_count()} cores"
    )
    print(
        "| gradient by | compiled | remat | peak - baseline (MiB) | held after forward (MiB) "
        "| step (s) |"
    )
    print("|---|---|---|---:|---:|---:|")
    names = {"none": "none", "layer": "each layer", "block": f"each {args.block} layers"}
    for compiled in ("0", "1") if args.compile else ("0",):
        times = run_child("time", "-", compiled, None)
        for mode in MODES:
            for remat in REMATS:
                mem = run_child(mode, remat, compiled, mem_env)
                by = "loss.backward()" if mode == "backward" else "torch.func.grad"
                held = "" if mem["held_mib"] is None else mem["held_mib"]
                print(
                    f"| {by} | {'yes' if compiled == '1' else 'no'} | {names[remat]} "
                    f"| {mem['peak_mib']} | {held} | {times[f'{mode} {remat}']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
