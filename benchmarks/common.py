"""Shared helpers for fnn's benchmarks: interleaved timing, machine info, and report writing.

Every benchmark times its variants in one process, round-robin (so drift of the machine hits
all variants alike), and reports medians and ratios to a named baseline as JSON, a Markdown
table and a PNG bar chart under ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import torch

RESULTS = pathlib.Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


def interleaved(
    variants: dict[str, Callable[[], object]], reps: int, warmup: int = 2, number: int = 1
) -> dict[str, list[float]]:
    """Time each variant ``reps`` times, round-robin; returns seconds per call for each.

    Each of the ``reps`` samples times ``number`` consecutive calls and records their mean, so
    calls far shorter than the timer's noise (sub-millisecond train steps) are measured over a
    longer window while the variants still alternate often.
    """
    for _ in range(warmup):
        for fn in variants.values():
            for _ in range(number):
                fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - start) / number)
    return times


def faults_per_step(step: Callable[[], object], steps: int = 7) -> float:
    """Median minor page faults of one call of ``step``."""
    counts = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(counts)


def summarize(times: dict[str, list[float]], baseline: str) -> dict[str, dict[str, float]]:
    """Median, spread and ratio to ``baseline`` of each variant's times."""
    base = statistics.median(times[baseline])
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {
            "median_ms": med * 1e3,
            "min_ms": min(ts) * 1e3,
            "max_ms": max(ts) * 1e3,
            "ratio": med / base,
            "reps": len(ts),
        }
    return out


def _format_value(value: float, unit: str) -> str:
    """A table cell: ``ms`` (default) and ``s`` with two decimals (one for ``s`` >= 10),
    ``MB`` without decimals from 10 MB up and with one below."""
    if unit == "MB":
        return f"{value:.0f} MB" if abs(value) >= 10 else f"{value:.1f} MB"
    if unit == "s":
        return f"{value:.1f} s" if abs(value) >= 10 else f"{value:.2f} s"
    return f"{value:.2f} ms"


def write_report(
    name: str,
    title: str,
    rows: list[dict[str, object]],
    info: dict,
    notes: Sequence[str] = (),
) -> str:
    """Write ``results/<name>.json``, ``.md`` and ``.png``; return the Markdown table.

    A row's ``unit`` (``"ms"`` by default, ``"s"`` or ``"MB"``) says what ``median_ms`` holds.
    ``notes`` are Markdown lines written under the table (and kept in the JSON).
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload: dict[str, object] = {"machine": info, "rows": rows}
    if notes:
        payload["notes"] = list(notes)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    lines = [
        f"### {title}",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}.",
        "",
        "| workload | variant | median (time or peak memory) | ratio to baseline | target |",
        "|---|---|---:|---:|---|",
    ]
    for r in rows:
        value = _format_value(float(r["median_ms"]), str(r.get("unit", "ms")))
        lines.append(
            f"| {r['workload']} | {r['variant']} | {value} | "
            f"{r['ratio']:.2f}x (vs {r['baseline']}) | {r.get('target', '')} |"
        )
    if notes:
        lines += ["", *notes]
    table = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(table)
    _chart(RESULTS / f"{name}.png", title, rows)
    return table


def _chart(path: pathlib.Path, title: str, rows: list[dict[str, object]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install 'fnn[bench]'): no chart written")
        return
    labels = [f"{r['workload']}: {r['variant']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    ypos = list(range(len(rows)))[::-1]
    ax.barh(ypos, ratios, color="#4878a8")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ypos, labels, fontsize=8)
    ax.set_xlabel("time / baseline time (lower is faster)")
    ax.set_title(title)
    for y, v in zip(ypos, ratios, strict=True):
        ax.text(v, y, f" {v:.2f}x", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
