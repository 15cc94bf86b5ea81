"""fnn_data: Grain-style deterministic, resumable input pipelines (in progress)."""

from fnn_data import datasets as datasets

__all__ = ["datasets"]
