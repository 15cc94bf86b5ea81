"""Smoke test of the benchmark suite (``python -m benchmarks.run``): one workload, cheap variants.

No timing assertions and nothing compiled: it checks that a workload builds, that its variants
agree at steps 0 and 1 (``run_workload`` raises otherwise) and that the rows are well formed.
"""

from __future__ import annotations

import math

from benchmarks import run
from benchmarks.suite_variants import BASE, FNN_EAGER


def test_tiny_mlp_eager_variants_run_and_agree() -> None:
    rows, facts = run.run_workload("tiny", variants=[BASE, FNN_EAGER], reps=2, sample_s=0.001)
    assert [r["variant"] for r in rows] == [BASE, FNN_EAGER]
    base, eager = rows
    assert base["ratio"] == 1.0
    assert math.isfinite(eager["ratio"]) and eager["ratio"] > 0
    assert eager["target"].startswith("<= 1.05x: ")
    assert facts["reps"] == 2 and facts["number"] >= 1
