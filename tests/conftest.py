"""Shared pytest configuration for fnn's test suite."""

import os

from hypothesis import HealthCheck, settings

# The golden-value recorder needs jax, which is not a test dependency.
collect_ignore = ["golden/record_jax_random.py"]

# CI runs derandomised so a red build always reproduces; locally hypothesis explores freely.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
