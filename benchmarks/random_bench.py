"""fnn.random against torch's global-generator samplers (and jax.random when installed).

    python -m benchmarks.random_bench [--quick]

Workloads, each timed interleaved in one process (medians; ratio to the baseline named):
- 1M float32 normals and uniforms: fnn eager and inside ``torch.compile``, against eager
  ``torch.randn`` / ``torch.rand`` (targets: normal eager <= 10x, compiled <= 2x).
- Initialising ResNet-18's 11.7M parameters (its 62 tensors, torchvision's init rules) from
  keys, against ``torch.nn.init`` on the same shapes (target: < 2 s eager).
"""

from __future__ import annotations

import argparse
import math

import torch

import fnn
from benchmarks.common import interleaved, machine, summarize, write_report

N = 1 << 20


def resnet18_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """(kind, shape) of every parameter of torchvision's resnet18 (11,689,512 numbers)."""
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("conv", (64, 3, 7, 7)),
        ("bn", (64,)),
        ("bn", (64,)),
    ]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            s = stride if block == 0 else 1
            shapes += [("conv", (cout, cin, 3, 3)), ("bn", (cout,)), ("bn", (cout,))]
            shapes += [("conv", (cout, cout, 3, 3)), ("bn", (cout,)), ("bn", (cout,))]
            if block == 0 and (s != 1 or cin != cout):
                shapes += [("conv", (cout, cin, 1, 1)), ("bn", (cout,)), ("bn", (cout,))]
            cin = cout
    shapes += [("linear", (1000, 512)), ("linear_bias", (1000,))]
    return shapes


def init_fnn(key: torch.Tensor, shapes) -> list[torch.Tensor]:
    keys = fnn.random.split(key, len(shapes))
    out = []
    for k, (kind, shape) in zip(keys, shapes, strict=True):
        if kind == "conv":  # kaiming_normal_(mode="fan_out", nonlinearity="relu")
            std = math.sqrt(2.0 / (shape[0] * math.prod(shape[2:])))
            out.append(fnn.random.normal(k, shape) * std)
        elif kind == "bn":
            out.append(torch.ones(shape))
        else:  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
            bound = 1 / math.sqrt(512)
            out.append(fnn.random.uniform(k, shape, minval=-bound, maxval=bound))
    return out


def init_torch(shapes) -> list[torch.Tensor]:
    out = []
    for kind, shape in shapes:
        t = torch.empty(shape)
        if kind == "conv":
            torch.nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
        elif kind == "bn":
            torch.nn.init.ones_(t)
        else:
            bound = 1 / math.sqrt(512)
            torch.nn.init.uniform_(t, -bound, bound)
        out.append(t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 10 if args.quick else 40
    info = machine()
    key = fnn.random.key(0)
    rows = []

    normal_c = torch.compile(lambda k: fnn.random.normal(k, (N,)), fullgraph=True)
    uniform_c = torch.compile(lambda k: fnn.random.uniform(k, (N,)), fullgraph=True)
    randn_c = torch.compile(lambda: torch.randn(N), fullgraph=True)
    variants = {
        "torch.randn (eager)": lambda: torch.randn(N),
        "fnn.random.normal eager": lambda: fnn.random.normal(key, (N,)),
        "fnn.random.normal compiled": lambda: normal_c(key),
        "torch.randn compiled": lambda: randn_c(),
        "torch.rand (eager)": lambda: torch.rand(N),
        "fnn.random.uniform eager": lambda: fnn.random.uniform(key, (N,)),
        "fnn.random.uniform compiled": lambda: uniform_c(key),
    }
    try:
        import jax

        jkey = jax.random.key(0)
        jnormal = jax.jit(lambda k: jax.random.normal(k, (N,)))
        variants["jax.random.normal jit"] = lambda: jnormal(jkey).block_until_ready()
    except ImportError:
        print("jax is missing (pip install 'fnn[bench]'): no jax column")
    times = summarize(interleaved(variants, reps), baseline="torch.randn (eager)")
    targets = {"fnn.random.normal eager": "<= 10x", "fnn.random.normal compiled": "<= 2x"}
    for name, r in times.items():
        baseline = "torch.randn (eager)"
        ratio = r["ratio"]
        if "uniform" in name or name == "torch.rand (eager)":
            baseline = "torch.rand (eager)"
            ratio = r["median_ms"] / times["torch.rand (eager)"]["median_ms"]
        rows.append(
            {
                "workload": "1M float32 samples",
                "variant": name,
                "median_ms": r["median_ms"],
                "ratio": ratio,
                "baseline": baseline,
                "target": targets.get(name, ""),
            }
        )

    shapes = resnet18_shapes()
    count = sum(math.prod(s) for _, s in shapes)
    init_times = summarize(
        interleaved(
            {
                "torch.nn.init": lambda: init_torch(shapes),
                "fnn.random (eager)": lambda: init_fnn(key, shapes),
            },
            max(3, reps // 8),
            warmup=1,
        ),
        baseline="torch.nn.init",
    )
    for name, r in init_times.items():
        rows.append(
            {
                "workload": f"ResNet-18 init ({count / 1e6:.1f}M params)",
                "variant": name,
                "median_ms": r["median_ms"],
                "ratio": r["ratio"],
                "baseline": "torch.nn.init",
                "target": "< 2 s" if name.startswith("fnn") else "",
            }
        )
    table = write_report("random_bench", "fnn.random vs torch's generator", rows, info)
    print(table)


if __name__ == "__main__":
    main()
