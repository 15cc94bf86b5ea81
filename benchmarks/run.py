"""fnn's benchmark suite: training steps against eager PyTorch, torch.compile and JAX.

    python -m benchmarks.run [--quick] [--only tiny,mlp,cnn,transformer,...] [--reps N]

Workloads (float32, CPU, ``torch.set_num_threads(2)``; see :mod:`benchmarks.suite_models`):
tiny MLP 32-64-64-1 (Adam), MLP 784-512-512-10 (Adam), a small CNN (SGD momentum), a 2-layer
GPT-style transformer LM (AdamW), ResNet-18 (SGD momentum), per-example gradients of the MLP,
and an ensemble of 8 MLPs (Adam). Variants (see :mod:`benchmarks.suite_variants`), timed
interleaved in one process, medians and ratios to the eager ``nn.Module`` + ``torch.optim``
foreach step: torch.optim fused, ``torch.compile(model)``, fnn eager (``fnn.value_and_grad`` +
``fnn_optim.step_``), one ``fnn.jit`` of the whole step with donation, and ``jax.jit`` with
Flax + Optax when the ``bench`` extra is installed. Before timing, every variant's loss at steps
0 and 1 (per-example gradients for that workload) must equal the baseline's.

Also measured, each in fresh processes: the first call of the fnn.jit step with a cold inductor
cache (a new ``TORCHINDUCTOR_CACHE_DIR``) and warm (a second process on that cache), and the
peak memory of a few steps of each variant (growth of ``VmHWM`` over the RSS after warm-up).
Results: ``benchmarks/results/suite.{json,md,png}`` (``--out`` renames them).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from benchmarks.common import interleaved, machine, summarize, write_report
from benchmarks.suite_models import TRAIN_WORKLOADS
from benchmarks.suite_variants import (
    BASE,
    FNN_EAGER,
    FNN_JIT,
    JAX,
    LOOP,
    PE_EAGER,
    PE_JAX,
    PE_JIT,
    PER_EXAMPLE_BATCH,
    PER_EXAMPLE_VARIANTS,
    TRAIN_VARIANTS,
    Variant,
    ensemble_variant,
    per_example_variant,
    train_variant,
)

ROOT = pathlib.Path(__file__).parents[1]
ALL = [*TRAIN_WORKLOADS, "per_example", "ensemble"]
QUICK = ["tiny", "mlp", "cnn", "transformer", "per_example", "ensemble"]
JIT_TARGET_VS_JAX = ("mlp", "cnn", "transformer")  # fnn jit no slower than jax.jit there
EAGER_TARGET = 1.05
PER_EXAMPLE_TARGET = 0.80
MEMORY_TARGET = 1.1
MEMORY_RESOLUTION_MB = 1.0
WARM_COMPILE_TARGET_S = 5.0
# Step-0 agreement between variants (float32; JAX and torch use different kernels).
RTOL, ATOL = 2e-4, 2e-5


class Spec:
    """How to build one workload's variants: title, variant names, baseline, builder."""

    def __init__(self, key: str) -> None:
        self.key = key
        if key in TRAIN_WORKLOADS:
            workload = TRAIN_WORKLOADS[key]()
            self.title = workload.title
            self.variants = list(TRAIN_VARIANTS)
            self.baseline = BASE
            self.jit_variant = FNN_JIT
            self.jit_target = workload.target
            self.build: Callable[[str], Variant] = lambda name: train_variant(workload, name)
        elif key == "per_example":
            self.title = f"per-example grads, MLP 784-512-512-10, b{PER_EXAMPLE_BATCH}"
            self.variants = list(PER_EXAMPLE_VARIANTS)
            self.baseline = LOOP
            self.jit_variant = PE_JIT
            self.jit_target = PER_EXAMPLE_TARGET
            self.build = per_example_variant
        elif key == "ensemble":
            self.title = "ensemble of 8 MLPs 784-512-512-10, b128, Adam"
            self.variants = list(TRAIN_VARIANTS)
            self.baseline = BASE
            self.jit_variant = FNN_JIT
            self.jit_target = None
            self.build = ensemble_variant
        else:
            raise SystemExit(f"unknown workload {key!r}; expected some of {ALL}")
        self.eager_variant = PE_EAGER if key == "per_example" else FNN_EAGER
        self.jax_variant = PE_JAX if key == "per_example" else JAX


def jax_missing() -> str | None:
    """Why the JAX variants cannot run (None when jax, flax and optax import)."""
    from benchmarks import suite_jax

    return suite_jax.available()


def load() -> str:
    """The 1-minute load average, for the notes beside each measurement."""
    return f"{os.getloadavg()[0]:.2f}"


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def run_workload(
    key: str,
    variants: list[str] | None = None,
    reps: int = 20,
    sample_s: float = 0.05,
) -> tuple[list[dict], dict]:
    """Build, check and time the variants of one workload, interleaved in this process.

    Returns the table rows and facts for the notes (first-call times, load, calls per sample).
    Raises ``AssertionError`` when a variant's loss at step 0 or 1 (per-example gradients for
    that workload) differs from the baseline's: the first checks the model and the loss, the
    second the optimizer's first update.
    """
    spec = Spec(key)
    names = [n for n in (variants or spec.variants) if n in spec.variants]
    if spec.baseline not in names:
        names.insert(0, spec.baseline)
    facts: dict = {"first_call_s": {}, "skipped": []}
    if spec.jax_variant in names and (why := jax_missing()):
        print(f"  skipping {spec.jax_variant}: {why}")
        facts["skipped"].append(f"{spec.jax_variant}: {why}")
        names.remove(spec.jax_variant)
    steps: dict[str, Callable[[], object]] = {}
    checks: dict[str, list[torch.Tensor]] = {}
    for name in names:
        variant = spec.build(name)
        start = time.perf_counter()
        out = variant.step()  # compiles the compiled variants
        facts["first_call_s"][name] = time.perf_counter() - start
        checks[name] = [variant.check(out), variant.check(variant.step())]
        steps[name] = variant.step
        print(f"  {name}: first call {facts['first_call_s'][name]:.2f} s")
    for name in names:  # never time a wrong program: the same loss at steps 0 and 1
        for i in (0, 1):
            torch.testing.assert_close(
                checks[name][i], checks[spec.baseline][i], rtol=RTOL, atol=ATOL,
                msg=lambda m, name=name, i=i: f"{spec.title}: {name} disagrees with "
                f"{spec.baseline} at step {i}: {m}",
            )  # fmt: skip
    number = calls_per_sample(steps[spec.baseline], sample_s)
    facts["load_before"] = load()
    times = interleaved(steps, reps, warmup=1, number=number)
    facts["load_after"] = load()
    facts["number"], facts["reps"] = number, reps
    summary = summarize(times, spec.baseline)
    rows = []
    for name, r in summary.items():
        rows.append(
            {
                "workload": spec.title,
                "variant": name,
                "median_ms": r["median_ms"],
                "min_ms": r["min_ms"],
                "max_ms": r["max_ms"],
                "ratio": r["ratio"],
                "baseline": spec.baseline,
                "target": "",
                "key": key,
                "kind": "time",
                "load": f"{facts['load_before']}->{facts['load_after']}",
            }
        )
    set_time_targets(spec, rows)
    return rows, facts


def calls_per_sample(step: Callable[[], object], sample_s: float) -> int:
    """How many consecutive calls make one timing sample of about ``sample_s`` seconds."""
    ts = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        ts.append(time.perf_counter() - start)
    return max(1, math.ceil(sample_s / statistics.median(ts)))


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def set_time_targets(spec: Spec, rows: list[dict]) -> None:
    """Fill the target column of one workload's time rows with the issue's targets."""
    by = {r["variant"]: r for r in rows}
    jit, eager, jax = by.get(spec.jit_variant), by.get(spec.eager_variant), by.get(spec.jax_variant)
    if eager is not None:
        eager["target"] = f"<= {EAGER_TARGET:.2f}x: {_verdict(eager['ratio'] <= EAGER_TARGET)}"
    if jit is None:
        return
    parts = []
    if spec.jit_target is not None:
        parts.append(f"<= {spec.jit_target:.2f}x: {_verdict(jit['ratio'] <= spec.jit_target)}")
    if jax is not None:
        vs = jit["median_ms"] / jax["median_ms"]
        if spec.key in JIT_TARGET_VS_JAX:
            parts.append(f"{vs:.2f}x jax.jit (<= 1.00): {_verdict(vs <= 1.0)}")
        else:
            parts.append(f"{vs:.2f}x jax.jit (reported)")
    jit["target"] = "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Fresh processes: peak memory and compile time
# --------------------------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(key: str, variant: str, warmup: int = 2, steps: int = 3) -> dict:
    """In a fresh process: peak training memory of ``steps`` steps after ``warmup`` ones.

    The peak is the bytes of training state the variant holds between steps (``Variant.live``:
    parameters, optimizer and model state, and the ``.grad`` tensors a torch.optim loop keeps)
    plus the growth of the RSS high-water mark over the RSS during the steps. The high-water
    mark is reset (``/proc/self/clear_refs``) after the warm-up, so compiling, the compiler's
    own memory and lazily created optimizer state do not count.
    """
    built = Spec(key).build(variant)
    step = built.step
    for _ in range(warmup):
        step()
    gc.collect()
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    base = _status_mb("VmRSS")
    live = built.live() / 2**20
    for _ in range(steps):
        step()
    growth = _status_mb("VmHWM") - base
    return {"peak_mb": live + growth, "live_mb": live, "growth_mb": growth, "hwm_reset": reset}


def compile_child(key: str) -> dict:
    """In a fresh process: the first and second call of the fnn.jit variant, in seconds."""
    spec = Spec(key)
    step = spec.build(spec.jit_variant).step
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    step()
    return {"first_s": first, "second_s": time.perf_counter() - start}


def _child(args: list[str], env: dict[str, str] | None = None) -> dict:
    threads = ["--threads", str(torch.get_num_threads())]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *threads, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, **(env or {})),
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_memory(spec: Spec, variants: list[str]) -> tuple[list[dict], list[str]]:
    """Peak memory rows of ``variants`` (fresh process each), ratios to the baseline's.

    Returns the rows and notes; no rows when the baseline's peak is under
    :data:`MEMORY_RESOLUTION_MB` (the RSS moves in pages; such a model is all noise).
    """
    # glibc keeps freed large blocks in its arenas, so RSS would track the allocator's history
    # rather than live tensors; mmap-ing every block over 64 KiB returns them on free.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    results = {}
    for name in [spec.baseline, *(v for v in variants if v != spec.baseline)]:
        before = load()
        results[name] = _child(["--child", "memory", spec.key, name], env) | {
            "load": f"{before}->{load()}"
        }
        r = results[name]
        print(f"  peak memory {name}: {r['live_mb']:.1f} + {r['growth_mb']:.1f} MB")
        base = results[spec.baseline]["peak_mb"]
        if base < MEMORY_RESOLUTION_MB:
            return [], [
                f"- {spec.title}: peak memory not reported: the baseline's peak is {base:.2f} MB, "
                f"under the {MEMORY_RESOLUTION_MB:.0f} MB this measurement resolves."
            ]
    rows = []
    for name, r in results.items():
        ratio = r["peak_mb"] / base
        target = ""
        if name == spec.jit_variant and spec.jit_variant == FNN_JIT:
            target = f"<= {MEMORY_TARGET:.1f}x: {_verdict(ratio <= MEMORY_TARGET)}"
        rows.append(
            {
                "workload": f"peak memory: {spec.title}",
                "variant": name,
                "median_ms": r["peak_mb"],
                "unit": "MB",
                "ratio": ratio,
                "baseline": spec.baseline,
                "target": target,
                "key": spec.key,
                "kind": "memory",
                "live_mb": r["live_mb"],
                "growth_mb": r["growth_mb"],
                "load": r["load"],
            }
        )
    return rows, []


def measure_compile(spec: Spec) -> list[dict]:
    """First fnn.jit step in a new process: a fresh inductor cache, then the same cache again."""
    cache = tempfile.mkdtemp(prefix="fnn-bench-inductor-")
    try:
        env = {"TORCHINDUCTOR_CACHE_DIR": cache}
        before = load()
        cold = _child(["--child", "compile", spec.key], env)
        warm = _child(["--child", "compile", spec.key], env)
        loads = f"{before}->{load()}"
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"  first fnn.jit step: cold {cold['first_s']:.1f} s, warm {warm['first_s']:.1f} s")
    rows = []
    for name, r in (("cold cache", cold), ("warm cache, new process", warm)):
        target = ""
        if spec.key == "mlp" and name != "cold cache":
            ok = r["first_s"] <= WARM_COMPILE_TARGET_S
            target = f"<= {WARM_COMPILE_TARGET_S:.0f} s: {_verdict(ok)}"
        rows.append(
            {
                "workload": f"first fnn.jit step: {spec.title}",
                "variant": name,
                "median_ms": r["first_s"],
                "unit": "s",
                "ratio": r["first_s"] / cold["first_s"],
                "baseline": "cold cache",
                "target": target,
                "key": spec.key,
                "kind": "compile",
                "second_step_ms": r["second_s"] * 1e3,
                "load": loads,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def notes_for(spec: Spec, facts: dict) -> list[str]:
    first = ", ".join(f"{n} {t:.1f} s" for n, t in facts["first_call_s"].items() if t > 1)
    line = (
        f"- {spec.title}: load {facts['load_before']} -> {facts['load_after']} (1-min average) "
        f"while timing; {facts['reps']} samples of {facts['number']} calls each"
    )
    if first:
        line += f"; first calls in the timing process (compiles; cache may be warm): {first}"
    return [line] + [f"- {spec.title}: skipped {s}" for s in facts["skipped"]]


HEADER_NOTES = [
    f'- Baseline: eager `nn.Module` + `torch.optim` with `foreach=True`. "{FNN_EAGER}" is '
    "`fnn.value_and_grad` then `fnn_optim.step_` (in place, on torch's fused Adam/AdamW/SGD "
    f'kernels); "{FNN_JIT}" is one `fnn.jit` of forward, backward and the functional '
    "`opt.update` + `apply_updates`, with `donate_argnums` for the parameters and the optimizer "
    "(and BatchNorm) state. The JAX variant is Flax linen + Optax under one `jax.jit` with "
    "donation.",
    "- Peak memory (fresh process per variant, 2 warm-up steps, then 3 steps): the bytes of "
    "training state held between steps (parameters, optimizer and BatchNorm state, and the "
    "`.grad` tensors a torch.optim loop keeps alive) plus the growth of `VmHWM` over the RSS "
    "during the steps (the high-water mark is reset after the warm-up, so the compiler's own "
    "memory does not count; glibc is told to `mmap` blocks over 64 KiB so freed tensors leave "
    "the RSS).",
    "- Compile time: the first call of the fnn.jit step in a new process with an empty "
    "`TORCHINDUCTOR_CACHE_DIR` (cold), then in another new process on that cache (warm).",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and workloads")
    parser.add_argument("--only", help=f"comma-separated workloads out of {','.join(ALL)}")
    parser.add_argument("--reps", type=int, help="timing samples per variant")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory")
    parser.add_argument("--no-compile-time", action="store_true", help="skip compile times")
    parser.add_argument("--out", default="suite", help="results/<out>.{json,md,png}")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (the targets assume 2)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        kind, key, *rest = args.child
        result = memory_child(key, rest[0]) if kind == "memory" else compile_child(key)
        print(json.dumps(result))
        return
    keys = args.only.split(",") if args.only else (QUICK if args.quick else ALL)
    reps = args.reps or (8 if args.quick else 25)
    sample_s = 0.02 if args.quick else 0.05
    info = machine() | {"quick": args.quick, "workloads": keys, "load_start": load()}
    rows: list[dict] = []
    notes = list(HEADER_NOTES)
    for key in keys:
        spec = Spec(key)
        print(f"{spec.title} (load {load()})")
        if os.getloadavg()[0] > 0.5 and args.threads > 1:
            print(
                "  warning: other processes are running; multi-threaded torch steps slow down "
                "many-fold when an OpenMP worker thread is descheduled (see the load notes)"
            )
        time_rows, facts = run_workload(key, reps=reps, sample_s=sample_s)
        rows += time_rows
        notes += notes_for(spec, facts)
        gc.collect()
        # --quick: memory (baseline and fnn jit) and compile time of the MLP only
        if not args.no_memory and key != "per_example" and (not args.quick or key == "mlp"):
            if args.quick:
                mem_variants = [spec.baseline, spec.jit_variant]
            else:
                mem_variants = [r["variant"] for r in time_rows]
            mem_rows, mem_notes = measure_memory(spec, mem_variants)
            rows += mem_rows
            notes += mem_notes
        if not args.no_compile_time and (not args.quick or key == "mlp"):
            rows += measure_compile(spec)
        write_report(args.out, "fnn benchmark suite", rows, info, notes)  # after each workload
        time_chart(args.out, rows)
    info["load_end"] = load()
    print(write_report(args.out, "fnn benchmark suite", rows, info, notes))
    time_chart(args.out, rows)


def time_chart(name: str, rows: list[dict], clip: float = 3.0) -> None:
    """Replace ``write_report``'s chart with one of the step-time ratios only, grouped by
    workload (memory and compile rows stay in the table); ratios past ``clip`` are cut and
    labelled."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from benchmarks.common import RESULTS

    timed = [r for r in rows if r.get("kind") == "time"]
    if not timed:
        return
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(timed) + 1.5))
    ypos = list(range(len(timed)))[::-1]
    colors = {"fnn": "#d1603d", "jax": "#6a9f58"}
    for y, r in zip(ypos, timed, strict=True):
        variant = str(r["variant"])
        color = colors.get(variant.split(".")[0].split(" ")[0], "#4878a8")
        ax.barh(y, min(r["ratio"], clip), color=color)
        ax.text(min(r["ratio"], clip), y, f" {r['ratio']:.2f}x", va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    labels = [f"{r['workload'].split(',')[0]}: {r['variant']}" for r in timed]
    ax.set_yticks(ypos, labels, fontsize=7)
    ax.set_xlim(0, clip * 1.12)
    ax.set_xlabel(
        f"time / baseline time (eager torch.optim foreach; per-example: the loop); cut at {clip}x"
    )
    ax.set_title("fnn benchmark suite (fnn orange, JAX green, torch blue)")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
