"""fnn.nn: pure modules (in progress). Available now: :mod:`fnn.nn.initializers`."""

from fnn.nn import initializers as initializers

__all__ = ["initializers"]
