"""fnn's transforms against the classic PyTorch loop, side by side in one process.

    python -m benchmarks.transforms_bench [--quick]

- eager ``fnn.value_and_grad`` vs ``loss.backward()`` on the same MLP (target <= 1.1x);
- per-example gradients: ``fnn.vmap(fnn.grad)`` (eager and under ``fnn.jit``) vs a Python loop
  of ``torch.autograd.grad``;
- a whole Adam train step under ``fnn.jit`` with donation vs an eager ``nn.Module`` +
  ``torch.optim.Adam(foreach=True)`` step;
- peak memory (VmHWM of a fresh process per variant): the jitted step with and without
  donation, and a deep MLP's gradient with and without ``fnn.remat``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys

import torch

import fnn
from benchmarks.common import interleaved, machine, summarize, write_report

# ------------------------------------------------------------------------------ models


def mlp_params(key: torch.Tensor, sizes: list[int]) -> dict[str, dict[str, torch.Tensor]]:
    params = {}
    keys = fnn.random.split(key, len(sizes) - 1)
    for i in range(len(sizes) - 1):
        kw, kb = fnn.random.split(keys[i])
        bound = 1 / math.sqrt(sizes[i])
        params[str(2 * i)] = {
            "weight": fnn.random.uniform(kw, (sizes[i + 1], sizes[i]), minval=-bound, maxval=bound),
            "bias": fnn.random.uniform(kb, (sizes[i + 1],), minval=-bound, maxval=bound),
        }
    return params


def mlp_apply(params, x: torch.Tensor) -> torch.Tensor:
    n = len(params)
    for i in range(n):
        layer = params[str(2 * i)]
        x = torch.nn.functional.linear(x, layer["weight"], layer["bias"])
        if i < n - 1:
            x = torch.relu(x)
    return x


def torch_mlp(params) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    n = len(params)
    for i in range(n):
        w = params[str(2 * i)]["weight"]
        layers.append(torch.nn.Linear(w.shape[1], w.shape[0]))
        if i < n - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    flat = {f"{k}.{n}": v for k, d in params.items() for n, v in d.items()}
    model.load_state_dict(flat)
    return model


def xent(params, x, y):
    return torch.nn.functional.cross_entropy(mlp_apply(params, x), y)


def data(n: int, d: int, classes: int, seed: int = 0):
    k1, k2 = fnn.random.split(fnn.random.key(seed))
    return fnn.random.normal(k1, (n, d)), fnn.random.randint(k2, (n,), 0, classes)


# --------------------------------------------------------------------------- workloads


def bench_value_and_grad(reps: int, rows: list) -> None:
    for name, sizes, batch in [
        ("MLP 784-512-512-10, batch 128", [784, 512, 512, 10], 128),
        ("tiny MLP 32-64-64-1, batch 32", [32, 64, 64, 1], 32),
    ]:
        params = mlp_params(fnn.random.key(0), sizes)
        x, y = data(batch, sizes[0], max(sizes[-1], 2))
        if sizes[-1] == 1:

            def loss_fn(p, x=x, y=y):
                return (mlp_apply(p, x).squeeze(-1) - y.float()).pow(2).mean()

            def module_loss(m, x=x, y=y):
                return (m(x).squeeze(-1) - y.float()).pow(2).mean()
        else:

            def loss_fn(p, x=x, y=y):
                return xent(p, x, y)

            def module_loss(m, x=x, y=y):
                return torch.nn.functional.cross_entropy(m(x), y)

        model = torch_mlp(params)

        def classic(model=model, module_loss=module_loss):
            model.zero_grad(set_to_none=True)
            loss = module_loss(model)
            loss.backward()
            return loss

        vg = fnn.value_and_grad(loss_fn)
        fg = torch.func.grad_and_value(loss_fn)
        times = summarize(
            interleaved(
                {
                    "nn.Module + loss.backward()": classic,
                    "fnn.value_and_grad (eager)": lambda vg=vg, params=params: vg(params),
                    "torch.func.grad_and_value": lambda fg=fg, params=params: fg(params),
                },
                reps,
            ),
            baseline="nn.Module + loss.backward()",
        )
        for variant, r in times.items():
            rows.append(
                row(f"value_and_grad: {name}", variant, r, "nn.Module + loss.backward()")
                | {"target": "<= 1.1x" if variant.startswith("fnn") else ""}
            )


def bench_per_example(reps: int, rows: list) -> None:
    sizes, batch = [784, 128, 10], 64
    params = mlp_params(fnn.random.key(1), sizes)
    x, y = data(batch, sizes[0], 10)

    def one_loss(p, xi, yi):
        return xent(p, xi[None], yi[None])

    per_example = fnn.vmap(fnn.grad(one_loss), in_axes=(None, 0, 0))
    per_example_jit = fnn.jit(per_example)

    leaves = fnn.tree.leaves(params)

    def loop():
        out = []
        for i in range(batch):
            ps = [p.detach().requires_grad_(True) for p in leaves]
            tree = fnn.tree.unflatten(fnn.tree.structure(params), ps)
            out.append(torch.autograd.grad(one_loss(tree, x[i], y[i]), ps))
        return out

    times = summarize(
        interleaved(
            {
                "Python loop of autograd.grad": loop,
                "fnn.vmap(fnn.grad) eager": lambda: per_example(params, x, y),
                "fnn.jit(fnn.vmap(fnn.grad))": lambda: per_example_jit(params, x, y),
            },
            reps,
        ),
        baseline="Python loop of autograd.grad",
    )
    for variant, r in times.items():
        rows.append(row("per-example grads: MLP 784-128-10, batch 64", variant, r, "Python loop"))


def adam_init(params):
    zeros = fnn.tree.zeros_like(params)
    return {"step": torch.tensor(0), "mu": zeros, "nu": fnn.tree.zeros_like(params)}


def adam_update(params, grads, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    step = state["step"] + 1
    mu = fnn.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state["mu"], grads)
    nu = fnn.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state["nu"], grads)
    c1 = 1 - b1**step
    c2 = 1 - b2**step
    new = fnn.tree.map(
        lambda p, m, v: p - lr * (m / c1) / (torch.sqrt(v / c2) + eps), params, mu, nu
    )
    return new, {"step": step, "mu": mu, "nu": nu}


def make_train_step(donate: bool):
    def train_step(params, opt_state, x, y, lr):
        loss, grads = fnn.value_and_grad(xent)(params, x, y)
        params, opt_state = adam_update(params, grads, opt_state, lr)
        return params, opt_state, loss

    return fnn.jit(train_step, donate_argnums=(0, 1) if donate else ())


def bench_train_step(reps: int, rows: list) -> None:
    sizes, batch = [784, 512, 512, 10], 128
    params = mlp_params(fnn.random.key(2), sizes)
    x, y = data(batch, sizes[0], 10)
    model = torch_mlp(params)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)

    def eager_step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    state = {"params": fnn.tree.map(torch.clone, params), "opt": adam_init(params)}
    step_jit = make_train_step(donate=True)
    lr = torch.tensor(1e-3)

    def jit_step():
        state["params"], state["opt"], loss = step_jit(state["params"], state["opt"], x, y, lr)
        return loss

    times = summarize(
        interleaved({"nn.Module + torch.optim.Adam": eager_step, "fnn.jit step": jit_step}, reps),
        baseline="nn.Module + torch.optim.Adam",
    )
    for variant, r in times.items():
        rows.append(row("Adam train step: MLP 784-512-512-10, b128", variant, r, "eager"))


# ---------------------------------------------------------------------------- memory


def peak_memory_child(kind: str) -> None:
    """Run one memory variant in this (fresh) process and print peak RSS growth in MB."""
    torch.set_num_threads(1)

    def hwm_mb() -> float:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def rss_mb() -> float:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    if kind.startswith("step"):
        sizes = [1024, 2048, 2048, 2048, 10]
        params = mlp_params(fnn.random.key(3), sizes)
        x, y = data(32, sizes[0], 10)
        opt_state = adam_init(params)
        step = make_train_step(donate=kind == "step-donate")
        lr = torch.tensor(1e-3)
        params, opt_state, _ = step(params, opt_state, x, y, lr)  # compile outside the window
        base = rss_mb()
        for _ in range(3):
            params, opt_state, _ = step(params, opt_state, x, y, lr)
    else:
        # Residual MLP blocks (width -> 4 width -> width), as in a transformer: each block
        # keeps two 4x-wide activations for backward unless it is rematerialised.
        depth, width, batch = 8, 512, 2048
        keys = fnn.random.split(fnn.random.key(4), depth)
        params = [
            {
                "up": mlp_params(k, [width, 4 * width])["0"],
                "down": mlp_params(k, [4 * width, width])["0"],
            }
            for k in keys
        ]
        x = fnn.random.normal(fnn.random.key(5), (batch, width))

        def block(layer, h):
            up = torch.nn.functional.linear(h, layer["up"]["weight"], layer["up"]["bias"])
            down = layer["down"]
            return h + torch.nn.functional.linear(
                torch.nn.functional.gelu(up), down["weight"], down["bias"]
            )

        blk = fnn.remat(block) if kind == "remat" else block

        def loss(p):
            h = x
            for layer in p:
                h = blk(layer, h)
            return h.square().mean()

        base = rss_mb()
        fnn.grad(loss)(params)
    print(json.dumps({"peak_growth_mb": hwm_mb() - base}))


def measure_memory(kind: str) -> float:
    # glibc keeps freed large blocks in its arenas, so RSS would track the allocator's history
    # rather than live tensors; mmap-ing every block over 64 KiB returns them on free.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.transforms_bench", "--memory-child", kind],
        capture_output=True,
        text=True,
        check=True,
        cwd=pathlib.Path(__file__).parents[1],
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mb"]


def bench_memory(rows: list) -> None:
    pairs = [
        ("jitted Adam step, MLP 1024-2048x3-10 (8.4M params)", "step-plain", "step-donate"),
        ("fnn.grad of 8 residual MLP blocks, width 512 (x4 inside), batch 2048", "plain", "remat"),
    ]
    for workload, base_kind, kind in pairs:
        base = measure_memory(base_kind)
        new = measure_memory(kind)
        for variant, mb in [(base_kind, base), (kind, new)]:
            rows.append(
                {
                    "workload": f"peak memory: {workload}",
                    "variant": variant,
                    "median_ms": mb,  # reported as MB; see the unit column
                    "unit": "MB",
                    "ratio": mb / base,
                    "baseline": base_kind,
                    "target": "",
                }
            )


def row(workload: str, variant: str, r: dict, baseline: str) -> dict:
    return {
        "workload": workload,
        "variant": variant,
        "median_ms": r["median_ms"],
        "ratio": r["ratio"],
        "baseline": baseline,
        "target": "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(args.memory_child)
        return
    reps = 10 if args.quick else 40
    rows: list[dict] = []
    bench_value_and_grad(reps * 2, rows)
    bench_per_example(reps, rows)
    bench_train_step(reps, rows)
    bench_memory(rows)
    print(write_report("transforms_bench", "fnn transforms vs the classic loop", rows, machine()))


if __name__ == "__main__":
    main()
