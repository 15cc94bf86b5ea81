"""fnn.models: every zoo model equals its torch twin, loads it by name, and keeps its layout.

The ResNet twins below are torchvision's ``resnet.py`` written out (torchvision is not a test
dependency): ``BasicBlock``, ``Bottleneck`` (stride on the 3x3 conv, v1.5), ``ResNet`` with its
``_make_layer``, init loop and forward. When torchvision is importable, resnet18 is also checked
against ``torchvision.models.resnet18(weights=None)`` itself.

Golden files (``tests/golden/models/<name>.json``) record each model's flattened parameter and
state names, shapes and dtypes; after a deliberate change regenerate them with
``FNN_UPDATE_GOLDEN=1 python -m pytest tests/test_models_cnn.py`` and review the diff.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn as tnn

import fnn
from fnn import models, nn
from fnn.models import _lenet, _mlp, _resnet
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

GOLDEN = Path(__file__).parent / "golden" / "models"
KEY = fnn.random.key(0)


# ---------------------------------------------------------------------------------------------
# torch twins
# ---------------------------------------------------------------------------------------------


class TorchMLP(tnn.Module):
    """``self.layers = ModuleList([Linear, ...])``; ``act`` a function or a (shared) module."""

    def __init__(self, sizes, act=torch.relu):
        super().__init__()
        self.layers = tnn.ModuleList(tnn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.activation = act

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class TorchLeNet5(tnn.Module):
    def __init__(self, num_classes=10, padding=2):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 6, 5, padding=padding)
        self.conv2 = tnn.Conv2d(6, 16, 5)
        self.fc1 = tnn.Linear(16 * 5 * 5, 120)
        self.fc2 = tnn.Linear(120, 84)
        self.fc3 = tnn.Linear(84, num_classes)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1):
    return tnn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes, out_planes, stride=1):
    return tnn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class TorchBasicBlock(tnn.Module):
    expansion = 1

    def __init__(
        self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1
    ):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(
        self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = tnn.BatchNorm2d(planes * self.expansion)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TorchResNet(tnn.Module):
    def __init__(
        self,
        block,
        layers,
        num_classes=1000,
        zero_init_residual=False,
        groups=1,
        width_per_group=64,
        replace_stride_with_dilation=None,
    ):
        super().__init__()
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = tnn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = tnn.BatchNorm2d(self.inplanes)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(
            block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0]
        )
        self.layer3 = self._make_layer(
            block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1]
        )
        self.layer4 = self._make_layer(
            block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2]
        )
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, tnn.Conv2d):
                tnn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, tnn.BatchNorm2d | tnn.GroupNorm):
                tnn.init.constant_(m.weight, 1)
                tnn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, TorchBottleneck):
                    tnn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, TorchBasicBlock):
                    tnn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                tnn.BatchNorm2d(planes * block.expansion),
            )
        layers = [
            block(
                self.inplanes,
                planes,
                stride,
                downsample,
                self.groups,
                self.base_width,
                previous_dilation,
            )
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                )
            )
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


TWINS = {
    "resnet18": (models.resnet18, lambda **kw: TorchResNet(TorchBasicBlock, [2, 2, 2, 2], **kw)),
    "resnet34": (models.resnet34, lambda **kw: TorchResNet(TorchBasicBlock, [3, 4, 6, 3], **kw)),
    "resnet50": (models.resnet50, lambda **kw: TorchResNet(TorchBottleneck, [3, 4, 6, 3], **kw)),
}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _images(n=2, c=3, s=32, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, s, s, generator=g, dtype=dtype)


def _torch_grads(twin: tnn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad for k, p in twin.named_parameters()}


def _check_loads_and_matches(model, twin, x, *, grads=False, atol=1e-5, rtol=1e-5):
    """``twin``'s state_dict loads into ``model`` by name (keys in the same order) and the two
    agree in eval mode, and in train mode on the logits (batch statistics) and the updated
    running statistics; with ``grads``, also on the gradients w.r.t. every parameter."""
    p_like, s_like = model.init_shapes(x)
    assert list(nn.to_state_dict(p_like, s_like)) == list(twin.state_dict())
    params, state = nn.from_state_dict(model, twin.state_dict(), x)

    twin.eval()
    with torch.no_grad():
        want = twin(x)
    y, same_state = model.apply(params, x, state=state)
    assert_trees_all_close(y, want, atol=atol, rtol=rtol)
    assert_trees_all_equal(same_state, state)

    twin.train()
    twin.zero_grad()
    w = torch.randn(want.shape, generator=torch.Generator().manual_seed(1), dtype=want.dtype)
    want = twin(x)

    def loss(p):
        y, new_state = model.apply(p, x, state=state, train=True)
        return (y * w).sum(), (y, new_state)

    if grads:
        (want * w).sum().backward()
        g, (y, new_state) = fnn.grad(loss, has_aux=True)(params)
        assert_trees_all_close(dict(nn.to_state_dict(g)), _torch_grads(twin), atol=atol, rtol=1e-4)
    else:
        y, new_state = model.apply(params, x, state=state, train=True)
    assert_trees_all_close(y, want.detach(), atol=atol, rtol=rtol)
    buffers = dict(twin.named_buffers())
    assert list(nn.to_state_dict({}, new_state)) == list(buffers)
    assert_trees_all_close(dict(nn.to_state_dict({}, new_state)), buffers, atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------------------------


ACTIVATIONS = {
    "relu": (nn.relu, torch.relu),
    "tanh": (nn.tanh, torch.tanh),
    "gelu": (nn.gelu, torch.nn.functional.gelu),
}


@settings(max_examples=8, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    act=st.sampled_from(sorted(ACTIVATIONS)),
)
def test_mlp_equals_its_torch_twin_with_the_same_names(sizes, act):
    torch.manual_seed(0)
    fnn_act, torch_act = ACTIVATIONS[act]
    twin = TorchMLP(sizes, torch_act).double()
    model = models.mlp(sizes[1:], activation=fnn_act)
    x = torch.randn(3, sizes[0], dtype=torch.float64, requires_grad=True)
    params, state = nn.from_state_dict(model, twin.state_dict(), x)
    assert state == {}
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())

    def loss(p, x):
        return model.apply(p, x).sin().sum()

    gp, gx = fnn.grad(loss, argnums=(0, 1))(params, x)
    y = twin(x)
    y.sin().sum().backward()
    assert_trees_all_close(model.apply(params, x), y.detach())
    assert_trees_all_close(dict(nn.to_state_dict(gp)), _torch_grads(twin))
    assert_trees_all_close(gx, x.grad)


def test_mlp_with_a_module_activation_shares_it_under_the_name_activation():
    torch.manual_seed(0)
    twin = TorchMLP([5, 8, 8, 3], tnn.PReLU()).double()
    with torch.no_grad():
        twin.activation.weight.fill_(0.1)
    model = models.mlp([8, 8, 3], activation=nn.PReLU())
    x = torch.randn(4, 5, dtype=torch.float64)
    params, _ = nn.from_state_dict(model, twin.state_dict(), x)
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())
    assert_trees_all_close(model.apply(params, x), twin(x).detach())


def test_mlp_dropout_is_active_in_train_mode_only_and_adds_no_parameters():
    x = torch.randn(16, 8)
    model = models.mlp([32, 32, 4], dropout=0.5)
    params, state = model.init(KEY, x)
    assert state == {}
    assert list(nn.to_state_dict(params)) == list(
        nn.to_state_dict(models.mlp([32, 32, 4]).init_shapes(x)[0])
    )
    plain = models.mlp([32, 32, 4]).apply(params, x)
    assert_trees_all_equal(model.apply(params, x), plain)  # eval: no dropout
    k = fnn.random.key(3)
    y1 = model.apply(params, x, key=k, train=True)
    assert_trees_all_equal(y1, model.apply(params, x, key=k, train=True))
    assert not torch.allclose(y1, plain)
    # Everything dropped: each hidden output is zero, so the output is the last bias.
    all_dropped = models.mlp([32, 32, 4], dropout=1.0)
    y = all_dropped.apply(params, x, key=k, train=True)
    assert_trees_all_close(y, params["layers"]["2"]["bias"].expand(16, 4))
    with pytest.raises(ValueError, match=r"Dropout at 'dropouts\.0' needs a PRNG key"):
        model.apply(params, x, train=True)


def test_mlp_under_vmap_is_the_batched_mlp():
    x = torch.randn(6, 5)
    model = models.mlp([7, 2])
    params, _ = model.init(KEY, x)
    per_example = fnn.vmap(lambda xi: model.apply(params, xi[None])[0])(x)
    assert_trees_all_close(per_example, model.apply(params, x), atol=1e-6)


def test_mlp_rejects_bad_configuration():
    with pytest.raises(ValueError, match=r"features must be a non-empty sequence.*got \(\)"):
        models.mlp([])
    with pytest.raises(ValueError, match=r"features must be .*got \(4, 0\)"):
        models.mlp([4, 0])
    with pytest.raises(ValueError, match=r"dropout .* must be in \[0, 1\], got 1.5"):
        models.mlp([4], dropout=1.5)
    with pytest.raises(TypeError, match="activation must be a function"):
        models.mlp([4], activation="relu")


# ---------------------------------------------------------------------------------------------
# LeNet-5
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "padding"), [(28, 2), (32, 0)])
def test_lenet5_equals_its_torch_twin_with_the_same_names(size, padding):
    torch.manual_seed(0)
    twin = TorchLeNet5(num_classes=7, padding=padding).double()
    model = models.lenet5(num_classes=7, padding=padding)
    x = _images(3, 1, size, dtype=torch.float64).requires_grad_()
    params, state = nn.from_state_dict(model, twin.state_dict(), x)
    assert state == {}
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())
    assert params["fc1"]["weight"].shape == (120, 400)

    def loss(p, x):
        return model.apply(p, x).square().sum()

    gp, gx = fnn.grad(loss, argnums=(0, 1))(params, x)
    y = twin(x)
    y.square().sum().backward()
    assert_trees_all_close(model.apply(params, x), y.detach())
    assert_trees_all_close(dict(nn.to_state_dict(gp)), _torch_grads(twin))
    assert_trees_all_close(gx, x.grad)


def test_lenet5_default_init_is_torchs_and_apply_is_pure():
    x = _images(2, 1, 28)
    params, _ = models.lenet5().init(KEY, x)
    for name, fan_in in [("conv1", 25), ("conv2", 150), ("fc1", 400), ("fc2", 120), ("fc3", 84)]:
        for t in params[name].values():
            assert float(t.abs().max()) <= 1 / math.sqrt(fan_in)
    before = fnn.tree.map(torch.clone, (params, x))
    models.lenet5().apply(params, x)
    assert_trees_all_equal((params, x), before)


def test_lenet5_names_the_module_and_the_shape_in_errors():
    with pytest.raises(
        ValueError, match=r"LeNet5 \(the root module\): expected images .*\(1, 28, 28\)"
    ):
        models.lenet5().init_shapes(torch.zeros(1, 28, 28))
    with pytest.raises(ValueError, match="padding must be an int >= 0, got -1"):
        models.lenet5(padding=-1)


# ---------------------------------------------------------------------------------------------
# ResNet: equivalence with the twins (and torchvision when installed)
# ---------------------------------------------------------------------------------------------


def test_resnet18_loads_its_twin_and_matches_in_eval_and_train_with_gradients():
    torch.manual_seed(0)
    x = _images()
    twins = [TWINS["resnet18"][1]()]
    if importlib.util.find_spec("torchvision") is not None:  # not a test dependency
        import torchvision

        twins.append(torchvision.models.resnet18(weights=None))
    for twin in twins:
        _check_loads_and_matches(models.resnet18(), twin, x, grads=True)


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_resnet_loads_its_twin_and_matches_in_eval_and_train(name):
    torch.manual_seed(1)
    make, make_twin = TWINS[name]
    _check_loads_and_matches(make(num_classes=10), make_twin(num_classes=10), _images())


def test_resnext_style_options_match_the_twin():
    # groups / width_per_group (ResNeXt, Wide ResNet) and replace_stride_with_dilation.
    torch.manual_seed(3)
    options = dict(groups=2, width_per_group=16, replace_stride_with_dilation=[False, True, True])
    twin = TorchResNet(TorchBottleneck, [1, 1, 2, 1], num_classes=5, **options)
    model = models.ResNet(models.Bottleneck, (1, 1, 2, 1), num_classes=5, **options)
    _check_loads_and_matches(model, twin, _images(s=24))
    assert model.layer3.layers[0].downsample.layers[0].stride == (1, 1)  # dilated, not strided
    dilations = [b.conv2.dilation for b in (*model.layer3.layers, *model.layer4.layers)]
    assert dilations == [(1, 1), (2, 2), (2, 2)]  # the first block keeps the previous dilation


@pytest.fixture(scope="module")
def resnet18_init():
    """One real init of resnet18 (10 classes), shared: drawing 11M weights takes a while."""
    model = models.resnet18(num_classes=10)
    return model, *model.init(KEY, _images())


def test_resnet_apply_is_pure(resnet18_init):
    model, params, state = resnet18_init
    x = _images(s=16)
    before = fnn.tree.map(torch.clone, (params, state, x))
    _, new_state = model.apply(params, x, state=state, train=True)
    assert_trees_all_equal((params, state, x), before)
    assert int(new_state["layer1"]["0"]["bn1"]["num_batches_tracked"]) == 1


# ---------------------------------------------------------------------------------------------
# ResNet: initialisation
# ---------------------------------------------------------------------------------------------


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _check_kaiming_fan_out(flat):
    """Every conv weight is N(0, 2 / fan_out), fan_out = out_channels * kh * kw (torch's)."""
    convs = [k for k, v in flat.items() if v.ndim == 4]
    assert convs
    for name in convs:
        w = flat[name]
        std = math.sqrt(2.0 / (w.shape[0] * w.shape[2] * w.shape[3]))
        n = w.numel()
        assert abs(float(w.mean())) < 5 * std / math.sqrt(n), name
        assert abs(float(w.std()) / std - 1) < 5 / math.sqrt(2 * n) + 0.01, name
    return convs


def _check_bn_ones_and_zeros(flat, zeroed=()):
    for name, v in flat.items():
        if v.ndim == 1 and not name.startswith("fc."):  # BatchNorm
            want = 1.0 if name.endswith("weight") and name not in zeroed else 0.0
            assert_trees_all_equal(v, torch.full_like(v, want))


def test_resnet18_default_init_is_torchvisions(resnet18_init):
    _, params, state = resnet18_init
    flat = _flat(params)
    convs = _check_kaiming_fan_out(flat)
    assert "layer2.0.downsample.0.weight" in convs and len(convs) == 20
    _check_bn_ones_and_zeros(flat)
    bound = 1 / math.sqrt(512)  # fc: torch.nn.Linear's default, U(-1/sqrt(in), 1/sqrt(in))
    for t in (flat["fc.weight"], flat["fc.bias"]):
        assert float(t.abs().max()) <= bound
    assert float(flat["fc.weight"].abs().max()) > 0.9 * bound  # uniform, not normal
    for k, v in _flat(state).items():
        want = {"running_mean": 0, "running_var": 1, "num_batches_tracked": 0}[k.rsplit(".")[-1]]
        assert_trees_all_equal(v, torch.full_like(v, want))


def test_grouped_bottleneck_default_init_is_torchvisions():
    down = nn.Sequential([nn.Conv2d(128, 1, stride=2, bias=False), nn.BatchNorm2d()])
    block = models.Bottleneck(32, stride=2, downsample=down, groups=4, base_width=32)
    params, _ = block.init(KEY, _images(2, 64, 8))
    flat = _flat(params)
    assert flat["conv2.weight"].shape == (64, 16, 3, 3)  # width 32 * 32 / 64 * 4, per group
    _check_kaiming_fan_out({k: v for k, v in flat.items() if not k.startswith("downsample")})
    _check_bn_ones_and_zeros(flat)


def test_zero_init_residual_zeroes_the_last_bn_weight_of_each_block():
    x = _images(1, 3, 32)
    model = models.ResNet(models.BasicBlock, (1, 2, 1, 1), num_classes=10, zero_init_residual=True)
    params = _flat(model.init(KEY, x)[0])
    plain = models.ResNet(models.BasicBlock, (1, 2, 1, 1), num_classes=10).init_shapes(x)[0]
    assert list(params) == list(_flat(plain))  # same names and order
    blocks = ["layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer4.0"]
    _check_bn_ones_and_zeros(params, zeroed={f"{b}.bn2.weight" for b in blocks})
    assert all(not bool(params[f"{b}.bn2.weight"].any()) for b in blocks)
    # Bottleneck: bn3 (checked on the block itself; ResNet passes the flag to every block).
    block = models.Bottleneck(16, zero_init_residual=True)
    flat = _flat(block.init(KEY, _images(2, 64, 4))[0])
    _check_bn_ones_and_zeros(flat, zeroed={"bn3.weight"})
    resnet = models.ResNet(models.Bottleneck, (1, 2, 1, 1), zero_init_residual=True)
    stages = (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
    assert all(b.zero_init_residual for stage in stages for b in stage.layers)


# ---------------------------------------------------------------------------------------------
# ResNet: errors
# ---------------------------------------------------------------------------------------------


def test_resnet_errors_name_the_module_and_shapes():
    with pytest.raises(ValueError, match=r"ResNet \(the root module\): expected images of shape "):
        models.resnet18().init_shapes(torch.zeros(3, 32, 32))
    block = models.BasicBlock(128, stride=2)
    with pytest.raises(
        ValueError,
        match=r"BasicBlock \(the root module\): the residual branch has shape \(2, 64, 8, 8\) "
        r"but the block's output has shape \(2, 128, 4, 4\).*pass downsample=",
    ):
        block.init_shapes(torch.zeros(2, 64, 8, 8))
    inner = nn.Sequential([models.Bottleneck(16)])
    with pytest.raises(ValueError, match=r"Bottleneck at '0': the residual branch"):
        inner.init_shapes(torch.zeros(2, 32, 8, 8))
    with pytest.raises(ValueError, match="groups=1 and base_width=64"):
        models.ResNet(models.BasicBlock, (1, 1, 1, 1), groups=2)
    with pytest.raises(ValueError, match=r"layers must give the block counts .*got \(2, 2\)"):
        models.ResNet(models.BasicBlock, (2, 2))
    with pytest.raises(TypeError, match="block must be a block class"):
        models.ResNet(models.BasicBlock(64), (1, 1, 1, 1))
    with pytest.raises(ValueError, match="replace_stride_with_dilation should be None or a 3"):
        models.ResNet(models.Bottleneck, (1, 1, 1, 1), replace_stride_with_dilation=[True])


def test_every_public_name_is_documented_with_shapes_an_example_and_type_hints():
    assert fnn.models is models and "models" in fnn.__all__
    for module in (_mlp, _lenet, _resnet):
        for name in module.__all__:
            obj = getattr(models, name)
            assert obj is getattr(module, name), name
            doc = inspect.getdoc(obj) or ""
            assert "Shapes:" in doc and ">>>" in doc, name
            fn = obj.forward if inspect.isclass(obj) else obj
            hints = inspect.signature(fn).parameters
            assert all(
                p.annotation is not inspect.Parameter.empty for k, p in hints.items() if k != "self"
            ), name
            assert inspect.signature(fn).return_annotation is not inspect.Signature.empty, name
            if inspect.isclass(obj):
                assert issubclass(obj, nn.Module), name


# ---------------------------------------------------------------------------------------------
# Golden files
# ---------------------------------------------------------------------------------------------

IMAGENET = (1, 3, 224, 224)
GOLDEN_MODELS = {
    "mlp": (lambda: models.mlp([64, 64, 10]), (2, 784)),
    "lenet5": (models.lenet5, (2, 1, 28, 28)),
    "resnet18": (models.resnet18, IMAGENET),
    "resnet34": (models.resnet34, IMAGENET),
    "resnet50": (models.resnet50, IMAGENET),
}


def _record(name: str) -> dict:
    make, shape = GOLDEN_MODELS[name]
    params, state = make().init_shapes(torch.zeros(shape))
    spec = lambda t: [list(t.shape), str(t.dtype).removeprefix("torch.")]  # noqa: E731
    return {
        "params": {k: spec(v) for k, v in _flat(params).items()},
        "state": {k: spec(v) for k, v in _flat(state).items()},
    }


@pytest.mark.parametrize("name", sorted(GOLDEN_MODELS))
def test_parameter_names_shapes_and_dtypes_match_the_golden_file(name):
    path = GOLDEN / f"{name}.json"
    got = _record(name)
    if os.environ.get("FNN_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n")
    assert path.exists(), f"no golden file {path}; run with FNN_UPDATE_GOLDEN=1 and review it"
    want = json.loads(path.read_text())
    assert got == want, (
        f"{name}: parameter layout changed.\n  golden: {want}\n  now:    {got}\n"
        "If deliberate, regenerate with FNN_UPDATE_GOLDEN=1 and review the diff."
    )


def test_the_golden_resnets_have_torchvisions_names_and_shapes():
    for name, (_, make_twin) in TWINS.items():
        with torch.device("meta"):  # shapes only, nothing drawn
            twin = make_twin()
        want = {k: list(v.shape) for k, v in twin.state_dict().items()}
        golden = json.loads((GOLDEN / f"{name}.json").read_text())
        got = {k: v[0] for k, v in {**golden["params"], **golden["state"]}.items()}
        assert got == want, name


# ---------------------------------------------------------------------------------------------
# The compiled train step (the only compiled test; torch.compile of resnet18 takes a while)
# ---------------------------------------------------------------------------------------------


def _make_step(model):
    def step(params, state, x, y):
        def loss_fn(p):
            logits, new_state = model.apply(p, x, state=state, train=True)
            return fnn.losses.cross_entropy(logits, y).mean(), new_state

        (loss, state), grads = fnn.value_and_grad(loss_fn, has_aux=True)(params)
        # A small step: with lr >= 0.01 a few ReLUs flip sides within 3 steps and float32
        # vs float64 (or eager vs compiled) trajectories part by more than rounding.
        params = fnn.tree.map(lambda p, g: p - 0.002 * g, params, grads)
        return params, state, loss

    return step


def test_resnet18_train_step_compiles_once_and_matches_eager(resnet18_init):
    # 64x64, not 32x32: at 32x32 layer4's BatchNorms see 2 values per channel (1x1 maps, batch
    # 2) and the float32 step itself is ill-conditioned (its gradients differ from float64's by
    # 5%), so any two implementations differ by more than rounding. At 64x64 they see 8 values.
    model, params, state = resnet18_init
    eager = _make_step(model)
    # Compile time (2 cores, cold inductor cache: ~60 s; warm: ~15 s). No donate_argnums:
    # fnn.jit's write-back into donated buffers matches every result leaf against every donated
    # leaf in Python while dynamo traces (~30 s more for resnet18's ~180 leaves). Scalar C++
    # kernels (cpp.simdlen=1): ~25% less compile time than the vectorized ones.
    compiled = fnn.jit(_make_step(model), options={"cpp.simdlen": 1})
    ep, es = params, state
    cp, cs = params, state
    for i in range(3):
        x = _images(s=64, seed=10 + i)
        y = torch.randint(0, 10, (2,), generator=torch.Generator().manual_seed(i))
        ep, es, eloss = eager(ep, es, x, y)
        cp, cs, closs = compiled(cp, cs, x, y)
        assert_trees_all_close(closs, eloss, rtol=1e-4, atol=1e-5)
    assert compiled.num_compiles == 1
    assert_trees_all_close((cp, cs), (ep, es), rtol=1e-4, atol=1e-5)
    assert int(cs["layer4"]["1"]["bn2"]["num_batches_tracked"]) == 3
