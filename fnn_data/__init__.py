"""fnn_data: Grain-style deterministic, resumable input pipelines (in progress)."""

__all__: list[str] = []
