"""fnn.nn against torch.nn: model init (a ResNet-50, 25.6M parameters) and eager forward cost.

    python -m benchmarks.nn_bench [--quick]

Workloads, timed interleaved in one process (medians; ratio to the torch.nn baseline):
- Initialising ``fnn.models.resnet50`` (torchvision's layout and init, 3x64x64 example input):
  ``model.init`` (draws every weight from keys; the forward runs on meta tensors only),
  ``model.init_shapes`` (shapes only, what ``summary`` and ``from_state_dict`` use), against
  constructing the ``torch.nn`` ResNet-50 below (torchvision's init, drawn from torch's global
  generator). Targets: init
  < 1 s, init_shapes < 50 ms. (fnn draws from counter-based threefry keys, bit-identical to
  JAX; that hash, not the shape pass, is most of fnn's init time.)
- Eager forward: a 3-layer MLP (32-64-64-1, batch 32) and the ResNet-50 (batch 2, 3x64x64,
  eval mode): ``model.apply`` against the ``nn.Module`` call. Target: <= 1.1x.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn as tnn

import fnn
from benchmarks.common import interleaved, machine, summarize, write_report
from fnn import nn
from fnn.models import resnet50


class TorchBottleneck(tnn.Module):
    def __init__(self, cin, planes, stride=1, downsample=False):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(4 * planes)
        self.downsample = None
        if downsample:
            self.downsample = tnn.Sequential(
                tnn.Conv2d(cin, 4 * planes, 1, stride, bias=False), tnn.BatchNorm2d(4 * planes)
            )

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return torch.relu(h + (self.downsample(x) if self.downsample is not None else x))


class TorchResNet50(tnn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, blocks, stride) in enumerate(
            [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1
        ):
            layer = [TorchBottleneck(cin, planes, stride, True)]
            layer += [TorchBottleneck(4 * planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", tnn.Sequential(*layer))
            cin = 4 * planes
        self.fc = tnn.Linear(2048, num_classes)
        for m in self.modules():  # torchvision's init, as fnn.models.resnet50's
            if isinstance(m, tnn.Conv2d):
                tnn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, tnn.BatchNorm2d):
                tnn.init.constant_(m.weight, 1)
                tnn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 3 if args.quick else 9
    torch.manual_seed(0)
    rows = []

    x = torch.randn(2, 3, 64, 64)
    model, twin = resnet50(), TorchResNet50().eval()
    params, state = model.init(fnn.random.key(0), x)
    sd = nn.to_state_dict(params, state)
    assert list(sd) == list(twin.state_dict()), "fnn and torch ResNet-50 names differ"
    twin.load_state_dict(sd)
    out = model.apply(params, x, state=state)[0]
    assert torch.allclose(out, twin(x), atol=1e-4), "fnn and torch ResNet-50 outputs differ"
    n = sum(t.numel() for t in fnn.tree.leaves(params))
    print(f"ResNet-50: {n:,} parameters; names and outputs equal torch's")

    times = interleaved(
        {
            "torch.nn construct + init": lambda: TorchResNet50(),
            "fnn init": lambda: model.init(fnn.random.key(1), x),
            "fnn init_shapes": lambda: model.init_shapes(x),
        },
        reps,
        warmup=1,
    )
    base = "torch.nn construct + init"
    for name, s in summarize(times, base).items():
        target = {"fnn init": "< 1 s", "fnn init_shapes": "< 50 ms"}.get(name, "")
        rows.append(
            dict(workload="ResNet-50 init", variant=name, baseline=base, target=target, **s)
        )

    mlp = nn.Sequential([nn.Linear(64), nn.relu, nn.Linear(64), nn.relu, nn.Linear(1)])
    tmlp = tnn.Sequential(
        tnn.Linear(32, 64), tnn.ReLU(), tnn.Linear(64, 64), tnn.ReLU(), tnn.Linear(64, 1)
    )
    xm = torch.randn(32, 32)
    pm, _ = nn.from_state_dict(mlp, tmlp.state_dict(), xm)

    def repeat(fn, k):
        def run():
            with torch.no_grad():
                for _ in range(k):
                    fn()

        return run

    workloads = {
        "MLP forward x100 (eager)": (
            repeat(lambda: tmlp(xm), 100),
            repeat(lambda: mlp.apply(pm, xm), 100),
        ),
        "ResNet-50 forward (eager, eval)": (
            repeat(lambda: twin(x), 1),
            repeat(lambda: model.apply(params, x, state=state), 1),
        ),
    }
    for workload, (torch_fn, fnn_fn) in workloads.items():
        times = interleaved({"torch.nn": torch_fn, "fnn apply": fnn_fn}, reps * 3)
        for name, s in summarize(times, "torch.nn").items():
            target = "<= 1.1x" if name == "fnn apply" else ""
            rows.append(
                dict(workload=workload, variant=name, baseline="torch.nn", target=target, **s)
            )

    table = write_report("nn_bench", "fnn.nn vs torch.nn", rows, machine())
    print(table)


if __name__ == "__main__":
    main()
