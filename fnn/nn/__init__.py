"""fnn.nn: pure modules (frozen configuration dataclasses with ``init`` / ``apply``) and layers.

See :class:`fnn.nn.Module` for the contract and how to write a model.
"""

from fnn.nn import initializers as initializers
from fnn.nn._activations import *  # noqa: F403
from fnn.nn._conv import *  # noqa: F403
from fnn.nn._dropout import *  # noqa: F403
from fnn.nn._embedding import *  # noqa: F403
from fnn.nn._interop import TorchModule as TorchModule
from fnn.nn._interop import from_state_dict as from_state_dict
from fnn.nn._interop import from_torch as from_torch
from fnn.nn._interop import to_state_dict as to_state_dict
from fnn.nn._linear import Bilinear as Bilinear
from fnn.nn._linear import Identity as Identity
from fnn.nn._linear import Linear as Linear
from fnn.nn._module import Module as Module
from fnn.nn._module import Scope as Scope
from fnn.nn._norm import *  # noqa: F403
from fnn.nn._pool import *  # noqa: F403
from fnn.nn._sequential import Flatten as Flatten
from fnn.nn._summary import summary as summary
from fnn.nn._sequential import Sequential as Sequential
from fnn.nn._sequential import Unflatten as Unflatten
