"""fnn_data against torch.utils.data.DataLoader: records per second, same process, interleaved.

    python -m benchmarks.data_bench [--quick]

Each variant keeps one iterator alive across timed calls (worker start-up is not timed); a call
reads a fixed number of batches; the variants alternate call by call. Records/s come from the
median call; the ratio to DataLoader (same number of workers) is the median of the per-round
ratios, with their range, because other processes on a shared machine change its speed from
round to round but hardly within one. With workers, each timed call starts after a short idle
pause, so that the worker processes of the variant timed before have finished their read-ahead
and do not steal the CPU (on 2 cores they otherwise do, in whichever direction the order of the
variants favours). Workloads:
- (a) in-memory arrays, 50,000 x 3x32x32 float32 images + int64 labels, shuffled, batches of
  256. DataLoader: ``TensorDataset`` + ``DataLoader(shuffle=True)``. fnn_data:
  ``from_arrays(...).shuffle(seed).batch(256)``. Target: >= 5x DataLoader's records/s.
- (b) a CPU-heavy per-record map: each 32x32 image is padded by 4 (reflect), randomly cropped
  back to 32x32, randomly flipped and normalised, by the same numpy function for both (its
  random words come from ``np.random`` in the DataLoader dataset, from the record's key in
  fnn_data's ``random_map``). With 0 and 2 workers. Target: >= DataLoader's records/s.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import fnn_data
from benchmarks.common import RESULTS, interleaved, machine, write_report

N, BATCH = 50_000, 256
MEAN = np.array([0.49, 0.48, 0.45], np.float32)[:, None, None]
STD = np.array([0.25, 0.24, 0.26], np.float32)[:, None, None]


def make_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((N, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, N).astype(np.int64)
    return x, y


def augment(image: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Pad 4 (reflect), crop 32x32 at a random offset, flip half the time, normalise.

    ``words``: two random uint32 values; the crop offsets and the flip come from their bits.
    """
    dy, dx = int(words[0] % 9), int((words[0] >> 8) % 9)
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4)), mode="reflect")
    crop = padded[:, dy : dy + 32, dx : dx + 32]
    if words[1] & 1:
        crop = crop[:, :, ::-1]
    return (crop - MEAN) / STD


class AugmentedDataset(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        words = np.random.randint(0, 2**32, size=2, dtype=np.uint32)
        return {"image": augment(self.x[i], words), "label": self.y[i]}


def _forever(loader: torch.utils.data.DataLoader):
    while True:
        yield from loader


def _reader(iterator, batches: int):
    def read() -> int:
        n = 0
        for b in itertools.islice(iterator, batches):
            n += len(b["label"] if isinstance(b, dict) else b[1])
        return n

    return read


def interleaved_idle(
    variants: dict[str, Callable[[], object]], reps: int, idle: float
) -> dict[str, list[float]]:
    """``benchmarks.common.interleaved`` with an untimed pause before every call."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            time.sleep(idle)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def timed(variants: dict[str, Callable[[], object]], workers: int, reps: int):
    if workers == 0:
        return interleaved(variants, reps=reps, warmup=1)
    return interleaved_idle(variants, reps=reps, idle=0.5)


def arrays_workload(x, y, workers: int, batches: int, reps: int) -> dict[str, list[float]]:
    tds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    dl = torch.utils.data.DataLoader(
        tds, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    ds = fnn_data.from_arrays(image=x, label=y).shuffle(seed=0).batch(BATCH).repeat()
    variants = {
        "DataLoader": _reader(_forever(dl), batches),
        "fnn_data": _reader(iter(ds.workers(workers)), batches),
    }
    return timed(variants, workers, reps)


def augment_workload(x, y, workers: int, batches: int, reps: int) -> dict[str, list[float]]:
    dl = torch.utils.data.DataLoader(
        AugmentedDataset(x, y),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )

    def aug(record, key):
        return {"image": augment(record["image"], key.numpy()), "label": record["label"]}

    ds = (
        fnn_data.from_arrays(image=x, label=y)
        .shuffle(seed=0)
        .random_map(aug)
        .batch(BATCH)
        .repeat()
        .workers(workers)
    )
    variants = {
        "DataLoader": _reader(_forever(dl), batches),
        "fnn_data": _reader(iter(ds), batches),
    }
    return timed(variants, workers, reps)


def rows_for(workload: str, times: dict[str, list[float]], records: int, target: str) -> list:
    """Records/s (from median times) and the ratio to DataLoader as the median of the per-round
    ratios: the two variants of a round ran back to back, so a change in the machine's load
    (other processes) between rounds cancels out of each round's ratio."""
    base = times["DataLoader"]
    rows = []
    for name, ts in times.items():
        ratios = [b / t for b, t in zip(base, ts, strict=True)]
        rows.append(
            {
                "workload": workload,
                "variant": name,
                "records_per_s": records / statistics.median(ts),
                "median_ms": statistics.median(ts) * 1e3,
                "ratio": statistics.median(ratios),
                "ratio_spread": [min(ratios), max(ratios)],
                "target": target if name == "fnn_data" else "",
            }
        )
    return rows


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        "### fnn_data vs torch.utils.data.DataLoader (records/s, higher is better)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}.",
        "",
        "| workload | variant | records/s | ratio to DataLoader (median, range) | target |",
        "|---|---|---:|---:|---|",
    ]
    for r in rows:
        lo, hi = r["ratio_spread"]
        spread = f" ({lo:.2f}-{hi:.2f})" if r["variant"] != "DataLoader" else ""
        lines.append(
            f"| {r['workload']} | {r['variant']} | {r['records_per_s']:,.0f} | "
            f"{r['ratio']:.2f}x{spread} | {r['target']} |"
        )
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


NOTES = [
    "(a) with 2 workers: a pipeline without per-record stages starts no worker processes in "
    "fnn_data (one vectorised gather per field in the calling process beats any hand-off), "
    "so the row compares that against DataLoader's 2 workers.",
    "Ratios: median of per-round ratios (range in brackets); the machine is shared with other "
    "jobs, so single rounds vary widely.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 3 if args.quick else 15
    x, y = make_data()
    rows = []
    for workers in (0, 2):
        batches = 20 if args.quick else 40
        times = arrays_workload(x, y, workers, batches, reps)
        name = f"(a) arrays -> batches of {BATCH}, {workers} workers"
        rows += rows_for(name, times, batches * BATCH, ">= 5x")
        print(name, {k: round(batches * BATCH / statistics.median(v)) for k, v in times.items()})
    for workers in (0, 2):
        batches = 8 if args.quick else 24
        times = augment_workload(x, y, workers, batches, reps)
        name = f"(b) crop+flip+normalise map, {workers} workers"
        rows += rows_for(name, times, batches * BATCH, ">= 1x")
        print(name, {k: round(batches * BATCH / statistics.median(v)) for k, v in times.items()})
    info = machine()
    # The shared writer (JSON + chart) takes time ratios (lower is faster); the Markdown table
    # is rewritten in records/s, the natural unit for input pipelines.
    timed = [
        dict(r, ratio=1.0 / r["ratio"], baseline="DataLoader", unit="ms", target=r["target"])
        for r in rows
    ]
    write_report("data_bench", "fnn_data vs DataLoader (time per call)", timed, info)
    table = markdown(rows, info)
    (RESULTS / "data_bench.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
