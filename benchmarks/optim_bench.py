"""fnn_optim against torch.optim: one optimizer step on ~10M parameters in 150 tensors.

    python -m benchmarks.optim_bench [--quick]

For Adam, AdamW and SGD with momentum, timed interleaved in one process (medians, ratios):
- ``torch.optim`` with ``foreach=True`` (the eager baseline) and ``fused=True`` (the compiled
  baseline: torch's hand-written fused CPU kernel);
- fnn_optim eager, functional: ``opt.update`` (new moment buffers) then ``apply_updates_``;
- fnn_optim eager, in place: ``fnn_optim.step_`` (torch's memory behaviour: the parameters and the
  state are overwritten; for these three optimizers it runs torch's fused kernels);
- fnn_optim compiled: ``fnn.jit`` of the whole update + ``apply_updates`` with the parameters
  and the state donated (written back in place inside the graph).
Targets: compiled <= 1.1x torch fused; eager <= 1.2x torch foreach (both eager variants are
reported). After the timing, each variant runs a few more steps to count the minor page faults
per step (``getrusage``): a step that writes freshly mapped memory pays about 2 us per 4 KB page
here, and which variants fault depends on how glibc's heap happens to lie, so the notes under
the table give the counts next to the times.
"""

from __future__ import annotations

import argparse

import torch

import fnn
import fnn_optim
from benchmarks.common import faults_per_step, interleaved, machine, summarize, write_report

WIDTH, LAYERS = 362, 75  # 75 weights (362, 362) + 75 biases: 150 tensors, 9.85M parameters


def make_params(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = {}
    for i in range(LAYERS):
        params[f"{i}.weight"] = torch.randn(WIDTH, WIDTH, generator=g) * 0.05
        params[f"{i}.bias"] = torch.randn(WIDTH, generator=g) * 0.05
    return params


OPTIMIZERS = {
    "Adam": (
        lambda ps, **kw: torch.optim.Adam(ps, lr=1e-3, **kw),
        lambda: fnn_optim.adam(1e-3),
    ),
    "AdamW": (
        lambda ps, **kw: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, **kw),
        lambda: fnn_optim.adamw(1e-3, weight_decay=1e-2),
    ),
    "SGD momentum": (
        lambda ps, **kw: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, **kw),
        lambda: fnn_optim.sgd(1e-2, momentum=0.9),
    ),
}


def torch_variant(make, **kw):
    params = [p.clone().requires_grad_(True) for p in make_params(0).values()]
    grads = list(make_params(1).values())
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt = make(params, **kw)

    def step():
        opt.step()

    return step


def fnn_eager_variant(make_opt):
    opt = make_opt()
    params = make_params(0)
    grads = make_params(1)
    box = {"state": opt.init(params)}

    def step():
        updates, box["state"] = opt.update(grads, box["state"], params)
        fnn_optim.apply_updates_(params, updates)

    return step


def fnn_inplace_variant(make_opt):
    opt = make_opt()
    params = make_params(0)
    grads = make_params(1)
    box = {"state": opt.init(params)}

    def step():
        box["state"] = fnn_optim.step_(opt, grads, box["state"], params)

    return step


def fnn_jit_variant(make_opt):
    opt = make_opt()
    grads = make_params(1)
    box = {"params": make_params(0)}
    box["state"] = opt.init(box["params"])

    @fnn.jit(donate_argnums=(0, 1))
    def train_step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return fnn_optim.apply_updates(params, updates), state

    def step():
        box["params"], box["state"] = train_step(box["params"], box["state"], grads)

    step()  # compile outside the timing
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--only", nargs="*", choices=sorted(OPTIMIZERS), help="run only these optimizers"
    )
    args = parser.parse_args()
    reps = 10 if args.quick else 40
    n = sum(t.numel() for t in make_params(0).values())
    print(f"{2 * LAYERS} tensors, {n:,} parameters")
    rows, notes = [], []
    for name, (make_torch, make_fnn) in OPTIMIZERS.items():
        if args.only and name not in args.only:
            continue
        variants = {
            "torch.optim foreach": torch_variant(make_torch, foreach=True),
            "torch.optim fused": torch_variant(make_torch, fused=True),
            "fnn_optim eager": fnn_eager_variant(make_fnn),
            "fnn_optim eager step_": fnn_inplace_variant(make_fnn),
            "fnn_optim jit": fnn_jit_variant(make_fnn),
        }
        times = interleaved(variants, reps, warmup=3)
        faults = {variant: faults_per_step(step) for variant, step in variants.items()}
        notes.append(
            f"Page faults per {name} step: "
            + ", ".join(f"{variant} {count:,.0f}" for variant, count in faults.items())
            + "."
        )
        stats = summarize(times, "torch.optim foreach")
        fused = stats["torch.optim fused"]["median_ms"]
        for variant, s in stats.items():
            row = dict(workload=f"{name} step, {n / 1e6:.1f}M params", variant=variant, **s)
            row["faults_per_step"] = faults[variant]
            if variant == "fnn_optim jit":
                row.update(ratio=s["median_ms"] / fused, baseline="torch.optim fused")
                row["target"] = "<= 1.1x"
            else:
                row["baseline"] = "torch.optim foreach"
                row["target"] = "<= 1.2x" if variant.startswith("fnn_optim eager") else ""
            rows.append(row)
        print(name, {k: round(v["median_ms"], 2) for k, v in stats.items()}, flush=True)
        # written after each optimizer: compiling a 150-tensor step takes minutes here
        table = write_report("optim_bench", "fnn_optim vs torch.optim", rows, machine(), notes)
    print(table)


if __name__ == "__main__":
    main()
