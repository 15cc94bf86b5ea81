"""fnn.nn: pure modules (frozen configuration dataclasses with ``init`` / ``apply``) and layers.

See :class:`fnn.nn.Module` for the contract and how to write a model, :func:`fnn.nn.summary`
for a table of a model, and :func:`fnn.nn.from_state_dict` / :func:`fnn.nn.from_torch` for
PyTorch interop. Every layer is the twin of the ``torch.nn`` layer of the same name: same
defaults, numerics, parameter names and layouts (so ``state_dict()`` keys match).
"""

from fnn.nn import initializers as initializers
from fnn.nn._activations import CELU as CELU
from fnn.nn._activations import ELU as ELU
from fnn.nn._activations import GELU as GELU
from fnn.nn._activations import GLU as GLU
from fnn.nn._activations import SELU as SELU
from fnn.nn._activations import Hardsigmoid as Hardsigmoid
from fnn.nn._activations import Hardswish as Hardswish
from fnn.nn._activations import Hardtanh as Hardtanh
from fnn.nn._activations import LeakyReLU as LeakyReLU
from fnn.nn._activations import LogSoftmax as LogSoftmax
from fnn.nn._activations import Mish as Mish
from fnn.nn._activations import PReLU as PReLU
from fnn.nn._activations import ReLU as ReLU
from fnn.nn._activations import ReLU6 as ReLU6
from fnn.nn._activations import Sigmoid as Sigmoid
from fnn.nn._activations import SiLU as SiLU
from fnn.nn._activations import Softmax as Softmax
from fnn.nn._activations import Softplus as Softplus
from fnn.nn._activations import Softsign as Softsign
from fnn.nn._activations import Tanh as Tanh
from fnn.nn._activations import celu as celu
from fnn.nn._activations import elu as elu
from fnn.nn._activations import gelu as gelu
from fnn.nn._activations import glu as glu
from fnn.nn._activations import hardsigmoid as hardsigmoid
from fnn.nn._activations import hardswish as hardswish
from fnn.nn._activations import hardtanh as hardtanh
from fnn.nn._activations import leaky_relu as leaky_relu
from fnn.nn._activations import log_softmax as log_softmax
from fnn.nn._activations import mish as mish
from fnn.nn._activations import relu as relu
from fnn.nn._activations import relu6 as relu6
from fnn.nn._activations import selu as selu
from fnn.nn._activations import sigmoid as sigmoid
from fnn.nn._activations import silu as silu
from fnn.nn._activations import softmax as softmax
from fnn.nn._activations import softplus as softplus
from fnn.nn._activations import softsign as softsign
from fnn.nn._activations import tanh as tanh
from fnn.nn._attention import MultiheadAttention as MultiheadAttention
from fnn.nn._attention import dot_product_attention as dot_product_attention
from fnn.nn._attention import make_causal_mask as make_causal_mask
from fnn.nn._attention import make_padding_mask as make_padding_mask
from fnn.nn._conv import Conv1d as Conv1d
from fnn.nn._conv import Conv2d as Conv2d
from fnn.nn._conv import Conv3d as Conv3d
from fnn.nn._conv import ConvTranspose1d as ConvTranspose1d
from fnn.nn._conv import ConvTranspose2d as ConvTranspose2d
from fnn.nn._conv import ConvTranspose3d as ConvTranspose3d
from fnn.nn._dropout import AlphaDropout as AlphaDropout
from fnn.nn._dropout import Dropout as Dropout
from fnn.nn._dropout import Dropout1d as Dropout1d
from fnn.nn._dropout import Dropout2d as Dropout2d
from fnn.nn._dropout import Dropout3d as Dropout3d
from fnn.nn._embedding import Embedding as Embedding
from fnn.nn._interop import TorchModule as TorchModule
from fnn.nn._interop import from_state_dict as from_state_dict
from fnn.nn._interop import from_torch as from_torch
from fnn.nn._interop import to_state_dict as to_state_dict
from fnn.nn._linear import Bilinear as Bilinear
from fnn.nn._linear import Identity as Identity
from fnn.nn._linear import Linear as Linear
from fnn.nn._module import Module as Module
from fnn.nn._module import Scope as Scope
from fnn.nn._norm import BatchNorm1d as BatchNorm1d
from fnn.nn._norm import BatchNorm2d as BatchNorm2d
from fnn.nn._norm import BatchNorm3d as BatchNorm3d
from fnn.nn._norm import GroupNorm as GroupNorm
from fnn.nn._norm import InstanceNorm1d as InstanceNorm1d
from fnn.nn._norm import InstanceNorm2d as InstanceNorm2d
from fnn.nn._norm import InstanceNorm3d as InstanceNorm3d
from fnn.nn._norm import LayerNorm as LayerNorm
from fnn.nn._norm import LocalResponseNorm as LocalResponseNorm
from fnn.nn._norm import RMSNorm as RMSNorm
from fnn.nn._pool import AdaptiveAvgPool1d as AdaptiveAvgPool1d
from fnn.nn._pool import AdaptiveAvgPool2d as AdaptiveAvgPool2d
from fnn.nn._pool import AdaptiveAvgPool3d as AdaptiveAvgPool3d
from fnn.nn._pool import AdaptiveMaxPool1d as AdaptiveMaxPool1d
from fnn.nn._pool import AdaptiveMaxPool2d as AdaptiveMaxPool2d
from fnn.nn._pool import AdaptiveMaxPool3d as AdaptiveMaxPool3d
from fnn.nn._pool import AvgPool1d as AvgPool1d
from fnn.nn._pool import AvgPool2d as AvgPool2d
from fnn.nn._pool import AvgPool3d as AvgPool3d
from fnn.nn._pool import MaxPool1d as MaxPool1d
from fnn.nn._pool import MaxPool2d as MaxPool2d
from fnn.nn._pool import MaxPool3d as MaxPool3d
from fnn.nn._recurrent import GRU as GRU
from fnn.nn._recurrent import LSTM as LSTM
from fnn.nn._recurrent import RNN as RNN
from fnn.nn._recurrent import GRUCell as GRUCell
from fnn.nn._recurrent import LSTMCell as LSTMCell
from fnn.nn._recurrent import RNNCell as RNNCell
from fnn.nn._sequential import Flatten as Flatten
from fnn.nn._sequential import Sequential as Sequential
from fnn.nn._sequential import Unflatten as Unflatten
from fnn.nn._summary import summary as summary
from fnn.nn._transformer import Transformer as Transformer
from fnn.nn._transformer import TransformerDecoder as TransformerDecoder
from fnn.nn._transformer import TransformerDecoderLayer as TransformerDecoderLayer
from fnn.nn._transformer import TransformerEncoder as TransformerEncoder
from fnn.nn._transformer import TransformerEncoderLayer as TransformerEncoderLayer

__all__ = [
    "CELU",
    "ELU",
    "GELU",
    "GLU",
    "GRU",
    "LSTM",
    "RNN",
    "SELU",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AlphaDropout",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Bilinear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "Embedding",
    "Flatten",
    "GRUCell",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LSTMCell",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LocalResponseNorm",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Mish",
    "Module",
    "MultiheadAttention",
    "PReLU",
    "RMSNorm",
    "RNNCell",
    "ReLU",
    "ReLU6",
    "Scope",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Softsign",
    "Tanh",
    "TorchModule",
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "Unflatten",
    "celu",
    "dot_product_attention",
    "elu",
    "from_state_dict",
    "from_torch",
    "gelu",
    "glu",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "initializers",
    "leaky_relu",
    "log_softmax",
    "make_causal_mask",
    "make_padding_mask",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "summary",
    "tanh",
    "to_state_dict",
]
