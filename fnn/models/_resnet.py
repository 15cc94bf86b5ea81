"""ResNet-18/34/50 with torchvision's exact layout, names and initialisation.

The parameter and state names are the ``state_dict()`` keys of ``torchvision.models.resnet*``
(``conv1.weight``, ``layer1.0.bn1.running_mean``, ``layer2.0.downsample.0.weight``, ``fc.bias``,
...), in the same order, so a torchvision checkpoint loads by name with
:func:`fnn.nn.from_state_dict`. Bottleneck is torchvision's "v1.5": the stride is on the 3x3
convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fnn.nn import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Linear,
    MaxPool2d,
    Module,
    Scope,
    Sequential,
    relu,
)
from fnn.nn._module import _where
from fnn.nn.initializers import Initializer, kaiming_normal, zeros

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]

#: torchvision's conv init: ``kaiming_normal_(w, mode="fan_out", nonlinearity="relu")``.
_CONV_INIT: Initializer = kaiming_normal(mode="fan_out", nonlinearity="relu")


def _conv3x3(features: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> Conv2d:
    """torchvision's ``conv3x3`` (input channels inferred)."""
    return Conv2d(
        features,
        3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
        weight_init=_CONV_INIT,
    )


def _conv1x1(features: int, stride: int = 1) -> Conv2d:
    """torchvision's ``conv1x1`` (input channels inferred)."""
    return Conv2d(features, 1, stride=stride, bias=False, weight_init=_CONV_INIT)


def _residual(block: Module, scope: Scope, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``relu(out + identity)``, ``identity`` being ``x`` or ``downsample(x)``."""
    identity = x if block.downsample is None else scope.downsample(x)
    if identity.shape != out.shape:
        fix = (
            "pass downsample= (a 1x1 conv + BatchNorm2d to the block's output shape), as ResNet "
            "does when the stride is not 1 or the channel count changes"
            if block.downsample is None
            else "the downsample module must give the block's output shape"
        )
        raise ValueError(
            f"{_where(block, scope.path)}: the residual branch has shape {tuple(identity.shape)} "
            f"but the block's output has shape {tuple(out.shape)} (input {tuple(x.shape)}); "
            f"{fix}."
        )
    return relu(out + identity)


def _check_int(owner: str, name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"fnn.models.{owner}: {name} must be an int >= {minimum}, got {value!r}.")


class BasicBlock(Module):
    """torchvision's ``BasicBlock``: two 3x3 convolutions with a residual connection.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)`` with ``identity = x``, or
    ``downsample(x)`` when ``downsample`` is given. Input channels are inferred. The
    convolutions are initialised as :class:`ResNet` does (``kaiming_normal``, ``fan_out``,
    ``relu``), the BatchNorms with weight 1 and bias 0.

    Args:
        planes: the output channels of both convolutions (the block's output channels).
        stride: the stride of ``conv1``.
        downsample: the module applied to the input for the residual (torchvision uses
            ``Sequential([Conv2d(planes, 1, stride=stride, bias=False), BatchNorm2d()])``),
            or ``None`` for the identity; required when the stride is not 1 or the channel
            count changes.
        groups, base_width: must be 1 and 64 (as in torchvision; they exist so that
            :class:`ResNet` can build either block).
        dilation: must be 1 (as in torchvision).
        zero_init_residual: initialise ``bn2.weight`` with zeros, so the block starts as the
            identity.

    Shapes:
        input ``(N, C, H, W)``, output ``(N, planes, H', W')`` with
        ``H' = (H - 1) // stride + 1``; ``conv1.weight (planes, C, 3, 3)``,
        ``conv2.weight (planes, planes, 3, 3)``, ``bn1``/``bn2`` ``weight``, ``bias`` and state
        ``(planes,)``.

    Example:
        >>> import fnn, torch
        >>> from fnn import nn
        >>> down = nn.Sequential([nn.Conv2d(128, 1, stride=2, bias=False), nn.BatchNorm2d()])
        >>> block = fnn.models.BasicBlock(128, stride=2, downsample=down)
        >>> params, state = block.init_shapes(torch.zeros(2, 64, 8, 8))
        >>> shapes = fnn.tree.map(lambda t: tuple(t.shape), params)
        >>> shapes["conv1"], shapes["conv2"], shapes["downsample"]["0"]
        ({'weight': (128, 64, 3, 3)}, {'weight': (128, 128, 3, 3)}, {'weight': (128, 64, 1, 1)})
    """

    expansion = 1

    planes: int
    stride: int = 1
    downsample: Module | None = None
    groups: int = 1
    base_width: int = 64
    dilation: int = 1
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        _check_int("BasicBlock", "planes", self.planes, 1)
        _check_int("BasicBlock", "stride", self.stride, 1)
        if self.groups != 1 or self.base_width != 64:
            raise ValueError(
                "fnn.models.BasicBlock only supports groups=1 and base_width=64 (as torchvision), "
                f"got groups={self.groups!r}, base_width={self.base_width!r}; use Bottleneck."
            )
        if self.dilation != 1:
            raise ValueError(
                f"fnn.models.BasicBlock: dilation > 1 is not supported (as torchvision), got "
                f"dilation={self.dilation!r}; use Bottleneck."
            )
        self.conv1 = _conv3x3(self.planes, self.stride)
        self.bn1 = BatchNorm2d()
        self.conv2 = _conv3x3(self.planes)
        self.bn2 = BatchNorm2d(weight_init=zeros if self.zero_init_residual else None)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        out = relu(scope.bn1(scope.conv1(x)))
        out = scope.bn2(scope.conv2(out))
        return _residual(self, scope, out, x)


class Bottleneck(Module):
    """torchvision's ``Bottleneck`` (ResNet v1.5: the stride is on the 3x3 convolution).

    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + identity)``: a 1x1 convolution to
    ``width = planes * base_width // 64 * groups`` channels, a 3x3 (strided, grouped, dilated)
    convolution, and a 1x1 convolution to ``4 * planes`` channels. ``identity`` is ``x`` or
    ``downsample(x)``. Input channels are inferred; init as :class:`ResNet` (convolutions
    ``kaiming_normal`` ``fan_out`` ``relu``, BatchNorm weight 1 and bias 0).

    Args:
        planes: the block's base width; the output has ``4 * planes`` channels.
        stride: the stride of ``conv2``.
        downsample: the module applied to the input for the residual (torchvision uses
            ``Sequential([Conv2d(4 * planes, 1, stride=stride, bias=False), BatchNorm2d()])``),
            or ``None`` for the identity.
        groups: the groups of ``conv2`` (ResNeXt).
        base_width: the width per group at ``planes = 64`` (64 for ResNet, 4 for ResNeXt
            32x4d, 128 for Wide ResNet-50-2).
        dilation: the dilation (and padding) of ``conv2``.
        zero_init_residual: initialise ``bn3.weight`` with zeros, so the block starts as the
            identity.

    Shapes:
        input ``(N, C, H, W)``, output ``(N, 4 * planes, H', W')`` with
        ``H' = (H - 1) // stride + 1``; ``conv1.weight (width, C, 1, 1)``,
        ``conv2.weight (width, width / groups, 3, 3)``, ``conv3.weight (4 * planes, width, 1, 1)``.

    Example:
        >>> import fnn, torch
        >>> block = fnn.models.Bottleneck(64)
        >>> params, state = block.init_shapes(torch.zeros(2, 256, 8, 8))
        >>> {k: v["weight"] for k, v in fnn.tree.map(lambda t: tuple(t.shape), params).items()}
        ... # doctest: +NORMALIZE_WHITESPACE
        {'conv1': (64, 256, 1, 1), 'bn1': (64,), 'conv2': (64, 64, 3, 3), 'bn2': (64,),
         'conv3': (256, 64, 1, 1), 'bn3': (256,)}
    """

    expansion = 4

    planes: int
    stride: int = 1
    downsample: Module | None = None
    groups: int = 1
    base_width: int = 64
    dilation: int = 1
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        for name in ("planes", "stride", "groups", "base_width", "dilation"):
            _check_int("Bottleneck", name, getattr(self, name), 1)
        width = int(self.planes * (self.base_width / 64.0)) * self.groups
        self.conv1 = _conv1x1(width)
        self.bn1 = BatchNorm2d()
        self.conv2 = _conv3x3(width, self.stride, self.groups, self.dilation)
        self.bn2 = BatchNorm2d()
        self.conv3 = _conv1x1(self.planes * self.expansion)
        self.bn3 = BatchNorm2d(weight_init=zeros if self.zero_init_residual else None)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        out = relu(scope.bn1(scope.conv1(x)))
        out = relu(scope.bn2(scope.conv2(out)))
        out = scope.bn3(scope.conv3(out))
        return _residual(self, scope, out, x)


class ResNet(Module):
    """torchvision's ``ResNet``: layout, names, forward and initialisation.

    ``conv1`` (7x7, stride 2) → ``bn1`` → relu → ``maxpool`` (3x3, stride 2) → ``layer1`` …
    ``layer4`` (``Sequential`` s of blocks with 64, 128, 256, 512 planes; the first block of
    ``layer2``-``layer4`` has stride 2) → ``avgpool`` (adaptive, to 1x1) → flatten → ``fc``.
    A block gets ``downsample = Sequential([conv1x1(stride), BatchNorm2d()])`` when its stride
    is not 1 or its channel count changes, as in torchvision.

    Init (torchvision's): every convolution ``kaiming_normal`` with ``mode="fan_out"``,
    ``nonlinearity="relu"`` (std ``sqrt(2 / fan_out)``); BatchNorm weight 1, bias 0; ``fc``
    ``torch.nn.Linear``'s default; with ``zero_init_residual`` the last BatchNorm weight of each
    block is 0.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck` (the class).
        layers: the number of blocks in ``layer1`` … ``layer4``, e.g. ``(2, 2, 2, 2)``.
        num_classes: the output size of ``fc``.
        zero_init_residual: start every residual block as the identity.
        groups, width_per_group: the grouped-convolution options of :class:`Bottleneck`
            (ResNeXt, Wide ResNet); :class:`BasicBlock` supports only 1 and 64.
        replace_stride_with_dilation: three bools for ``layer2``-``layer4``: replace the
            stride 2 with dilation (the output stride stays larger; for segmentation).

    Shapes:
        input ``(N, C, H, W)`` (``C = 3`` for images; inferred), output ``(N, num_classes)``;
        ``conv1.weight (64, C, 7, 7)``, ``fc.weight (num_classes, 512 * block.expansion)``.

    Example:
        >>> import fnn, torch
        >>> from fnn.models import BasicBlock, ResNet
        >>> model = ResNet(BasicBlock, (1, 1, 1, 1), num_classes=10)
        >>> params, state = model.init_shapes(torch.zeros(2, 3, 32, 32))
        >>> list(params)
        ['conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4', 'fc']
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)["layer2"]["0"]["downsample"]
        {'0': {'weight': (128, 64, 1, 1)}, '1': {'weight': (128,), 'bias': (128,)}}
    """

    block: type[BasicBlock] | type[Bottleneck]
    layers: Sequence[int]
    num_classes: int = 1000
    zero_init_residual: bool = False
    groups: int = 1
    width_per_group: int = 64
    replace_stride_with_dilation: Sequence[bool] | None = None

    def __post_init__(self) -> None:
        block = self.block
        if not (
            isinstance(block, type) and issubclass(block, Module) and hasattr(block, "expansion")
        ):
            raise TypeError(
                "fnn.models.ResNet: block must be a block class such as fnn.models.BasicBlock "
                f"or fnn.models.Bottleneck (with an `expansion` attribute), got {block!r}."
            )
        self.layers = tuple(self.layers)
        if len(self.layers) != 4:
            raise ValueError(
                "fnn.models.ResNet: layers must give the block counts of the 4 stages, e.g. "
                f"(2, 2, 2, 2), got {self.layers!r}."
            )
        for n in self.layers:
            _check_int("ResNet", "every entry of layers", n, 1)
        _check_int("ResNet", "num_classes", self.num_classes, 1)
        dilate = self.replace_stride_with_dilation
        dilate = (False, False, False) if dilate is None else tuple(bool(d) for d in dilate)
        if len(dilate) != 3:
            raise ValueError(
                "fnn.models.ResNet: replace_stride_with_dilation should be None or a 3-element "
                f"sequence (layer2, layer3, layer4), got {self.replace_stride_with_dilation!r}."
            )
        self.replace_stride_with_dilation = dilate

        self.conv1 = Conv2d(64, 7, stride=2, padding=3, bias=False, weight_init=_CONV_INIT)
        self.bn1 = BatchNorm2d()
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        inplanes, dilation = 64, 1
        stages = zip((64, 128, 256, 512), self.layers, (1, 2, 2, 2), (False, *dilate), strict=True)
        for i, (planes, blocks, stride, dilate_stage) in enumerate(stages, start=1):
            # torchvision's _make_layer, inplanes tracked here since channels are inferred.
            previous_dilation = dilation
            if dilate_stage:
                dilation *= stride
                stride = 1
            out = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != out:
                downsample = Sequential([_conv1x1(out, stride), BatchNorm2d()])
            options = dict(
                groups=self.groups,
                base_width=self.width_per_group,
                zero_init_residual=self.zero_init_residual,
            )
            stage = [block(planes, stride, downsample, dilation=previous_dilation, **options)]
            stage += [block(planes, dilation=dilation, **options) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", Sequential(stage))
            inplanes = out
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(self.num_classes)

    def forward(self, scope: Scope, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{_where(self, scope.path)}: expected images of shape (N, C, H, W), got {got}."
            )
        x = scope.maxpool(relu(scope.bn1(scope.conv1(x))))
        x = scope.layer4(scope.layer3(scope.layer2(scope.layer1(x))))
        return scope.fc(torch.flatten(scope.avgpool(x), 1))


def resnet18(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (11.7M parameters at 1000 classes), torchvision's ``resnet18(weights=None)``.

    ``ResNet(BasicBlock, (2, 2, 2, 2))``; see :class:`ResNet` for the layout and init.

    Args:
        num_classes: the output size.
        zero_init_residual: start every residual block as the identity.

    Shapes:
        input ``(N, 3, H, W)`` (224x224 for ImageNet; any size >= 1 works), output
        ``(N, num_classes)``.

    Example:
        >>> import fnn, torch
        >>> params, state = fnn.models.resnet18().init_shapes(torch.zeros(1, 3, 224, 224))
        >>> sum(t.numel() for t in fnn.tree.leaves(params))
        11689512
        >>> shapes = fnn.tree.map(lambda t: tuple(t.shape), params)
        >>> shapes["conv1"], shapes["layer4"]["1"]["conv2"], shapes["fc"]
        ... # doctest: +NORMALIZE_WHITESPACE
        ({'weight': (64, 3, 7, 7)}, {'weight': (512, 512, 3, 3)},
         {'weight': (1000, 512), 'bias': (1000,)})
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, zero_init_residual)


def resnet34(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 (21.8M parameters at 1000 classes), torchvision's ``resnet34(weights=None)``.

    ``ResNet(BasicBlock, (3, 4, 6, 3))``; see :class:`ResNet` for the layout and init.

    Args:
        num_classes: the output size.
        zero_init_residual: start every residual block as the identity.

    Shapes:
        input ``(N, 3, H, W)``, output ``(N, num_classes)``.

    Example:
        >>> import fnn, torch
        >>> params, state = fnn.models.resnet34(num_classes=10).init_shapes(
        ...     torch.zeros(1, 3, 32, 32))
        >>> sum(t.numel() for t in fnn.tree.leaves(params))
        21289802
        >>> [len(params[f"layer{i}"]) for i in range(1, 5)]
        [3, 4, 6, 3]
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)["fc"]
        {'weight': (10, 512), 'bias': (10,)}
    """
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, zero_init_residual)


def resnet50(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 (25.6M parameters at 1000 classes), torchvision's ``resnet50(weights=None)``.

    ``ResNet(Bottleneck, (3, 4, 6, 3))`` with the stride on the 3x3 convolution (v1.5); see
    :class:`ResNet` for the layout and init.

    Args:
        num_classes: the output size.
        zero_init_residual: start every residual block as the identity (``bn3.weight = 0``).

    Shapes:
        input ``(N, 3, H, W)``, output ``(N, num_classes)``.

    Example:
        >>> import fnn, torch
        >>> params, state = fnn.models.resnet50().init_shapes(torch.zeros(1, 3, 224, 224))
        >>> sum(t.numel() for t in fnn.tree.leaves(params))
        25557032
        >>> shapes = fnn.tree.map(lambda t: tuple(t.shape), params)
        >>> shapes["layer1"]["0"]["conv3"], shapes["layer1"]["0"]["downsample"]["0"]
        ({'weight': (256, 64, 1, 1)}, {'weight': (256, 64, 1, 1)})
        >>> sorted(state["layer1"]["0"]["bn3"])
        ['num_batches_tracked', 'running_mean', 'running_var']
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, zero_init_residual)
