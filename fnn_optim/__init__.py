"""fnn_optim: Optax-style gradient transformations, optimizers and schedules (in progress)."""

__all__: list[str] = []
