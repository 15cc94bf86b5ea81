"""fnn.models: a model zoo of fnn.nn modules, with the names and layouts of their torch twins.

Each model is a function returning an :class:`fnn.nn.Module` (configuration as arguments);
``init`` / ``apply`` as for any module. Models: ``mlp``, ``lenet5``, ``resnet18/34/50`` and
``vit_tiny`` / ``vit_b_16`` (torchvision's exact layouts, parameter names and initialisation, so
torchvision checkpoints load by name with :func:`fnn.nn.from_state_dict`), and the GPT-style
``transformer_lm`` with :func:`generate` (greedy, temperature, top-k, top-p; KV cache in
``state``)::

    >>> import fnn, torch
    >>> model = fnn.models.resnet18(num_classes=10)
    >>> params, state = model.init_shapes(torch.zeros(2, 3, 32, 32))
    >>> list(fnn.nn.to_state_dict(params, state))[:4]
    ['conv1.weight', 'bn1.weight', 'bn1.bias', 'bn1.running_mean']
"""

from fnn.models._lenet import LeNet5 as LeNet5
from fnn.models._lenet import lenet5 as lenet5
from fnn.models._lm import TransformerLM as TransformerLM
from fnn.models._lm import generate as generate
from fnn.models._lm import top_k_filter as top_k_filter
from fnn.models._lm import top_p_filter as top_p_filter
from fnn.models._lm import transformer_lm as transformer_lm
from fnn.models._mlp import MLP as MLP
from fnn.models._mlp import mlp as mlp
from fnn.models._resnet import BasicBlock as BasicBlock
from fnn.models._resnet import Bottleneck as Bottleneck
from fnn.models._resnet import ResNet as ResNet
from fnn.models._resnet import resnet18 as resnet18
from fnn.models._resnet import resnet34 as resnet34
from fnn.models._resnet import resnet50 as resnet50
from fnn.models._vit import VisionTransformer as VisionTransformer
from fnn.models._vit import vit_b_16 as vit_b_16
from fnn.models._vit import vit_tiny as vit_tiny

__all__ = [
    "MLP",
    "BasicBlock",
    "Bottleneck",
    "LeNet5",
    "ResNet",
    "TransformerLM",
    "VisionTransformer",
    "generate",
    "lenet5",
    "mlp",
    "resnet18",
    "resnet34",
    "resnet50",
    "top_k_filter",
    "top_p_filter",
    "transformer_lm",
    "vit_b_16",
    "vit_tiny",
]
