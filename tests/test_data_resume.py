"""Resuming: from the state after any item, the iterator continues with exactly the items of the
uninterrupted run — for any pipeline shape, with workers, and in a fresh process."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn_data

REPO = Path(__file__).resolve().parents[1]


def _plain(tree):
    """An item as nested Python lists (tensors compared exactly)."""
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_plain(v) for v in tree]
    return tree.tolist() if isinstance(tree, torch.Tensor) else tree


def _run(it):
    """Items and the state after each (states[0] is the state before the first item)."""
    states, items = [it.get_state()], []
    for item in it:
        items.append(_plain(item))
        states.append(json.loads(json.dumps(it.get_state())))  # JSON round trip
    return items, states


@st.composite
def pipelines(draw):
    n = draw(st.integers(0, 20))
    ds = fnn_data.from_arrays(x=np.arange(n), y=np.arange(n) * 10)
    shard = draw(
        st.none()
        | st.integers(1, 3).flatmap(lambda k: st.tuples(st.integers(0, k - 1), st.just(k)))
    )
    shard_after_batch = draw(st.booleans())
    if draw(st.booleans()):
        ds = ds.shuffle(draw(st.integers(0, 2**32 - 1)))
    if shard is not None and not shard_after_batch:
        ds = ds.shard(*shard)
    modulus = draw(st.none() | st.integers(2, 4))
    if modulus is not None:
        ds = ds.filter(lambda r, m=modulus: r["x"] % m != 0)
    if draw(st.booleans()):
        ds = ds.random_map(lambda r, key: {**r, "k": key}, seed=draw(st.integers(0, 99)))
    repeat_before = draw(st.none() | st.integers(0, 2))
    if repeat_before is not None:
        ds = ds.repeat(repeat_before)
    if draw(st.booleans()):
        ds = ds.batch(draw(st.integers(1, 5)), drop_remainder=draw(st.booleans()))
        repeat_after = draw(st.none() | st.integers(1, 2))
        if repeat_after is not None:
            ds = ds.repeat(repeat_after)
    if shard is not None and shard_after_batch:
        ds = ds.shard(*shard)
    return ds


@settings(max_examples=150, deadline=None)
@given(pipelines())
def test_resuming_from_every_position_continues_the_uninterrupted_sequence(ds):
    items, states = _run(iter(ds))
    for k, state in enumerate(states):
        assert [_plain(x) for x in ds.iter_from(state)] == items[k:], (ds, k)
    # set_state on a running iterator rewinds or skips to the same place
    it = iter(ds)
    for k in (len(states) - 1, 0, len(states) // 2):
        it.set_state(states[k])
        assert [_plain(x) for x in it] == items[k:]


def test_resuming_with_workers_and_prefetch_at_every_position():
    ds = (
        fnn_data.from_arrays(x=np.arange(40, dtype=np.float32), y=np.arange(40))
        .shuffle(seed=4)
        .filter(lambda r: r["y"] % 5 != 1)
        .random_map(lambda r, key: {**r, "x": r["x"] + float(int(key[0]) % 100)})
        .batch(6)
        .repeat(2)
    )
    items, states = _run(iter(ds))
    for k, state in enumerate(states):
        assert [_plain(x) for x in ds.workers(2).prefetch(1).iter_from(state)] == items[k:]
    # the state of a prefetching, multi-worker iterator counts delivered items only
    it = iter(ds.workers(2).prefetch(3))
    for k in range(1, 4):
        next(it)
        assert it.get_state() == states[k]
    it.close()


def test_resuming_a_stream_at_every_position():
    ds = (
        fnn_data.from_iterable(lambda: ({"v": np.int64(i)} for i in range(17)))
        .shard(1, 2)
        .filter(lambda r: r["v"] % 3 != 0)
        .batch(2)
        .repeat(2)
    )
    items, states = _run(iter(ds))
    assert len(items) == 6
    for k, state in enumerate(states):
        assert [_plain(x) for x in ds.iter_from(state)] == items[k:]
        assert [_plain(x) for x in ds.workers(1).iter_from(state)] == items[k:]


PIPELINE = textwrap.dedent(
    """
    import numpy as np
    import fnn_data

    def augment(record, key):
        noise = (int(key[1]) % 1000) / 1000
        return {"x": record["x"] + noise, "y": record["y"]}

    def pipeline():
        x = np.arange(200, dtype=np.float32).reshape(100, 2)
        return (
            fnn_data.from_arrays(x=x, y=np.arange(100))
            .shuffle(seed=123)
            .filter(lambda r: r["y"] % 7 != 0)
            .random_map(augment)
            .batch(8)
            .repeat(3)
        )
    """
)

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    exec(open(sys.argv[1]).read())
    state = json.load(open(sys.argv[2]))
    batches = list(pipeline().workers(2).iter_from(state))
    np.savez(sys.argv[3], *[b["x"].numpy() for b in batches], *[b["y"].numpy() for b in batches])
    """
)


def test_resuming_in_a_fresh_process_continues_bit_exactly(tmp_path):
    namespace = {}
    exec(PIPELINE, namespace)
    ds = namespace["pipeline"]()
    it = iter(ds)
    for _ in range(13):  # stop mid-epoch (an epoch has ~11 batches)
        next(it)
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    (tmp_path / "state.json").write_text(json.dumps(it.get_state()))
    (tmp_path / "child.py").write_text(CHILD)
    rest = list(it)
    subprocess.run(
        [sys.executable, tmp_path / "child.py", tmp_path / "pipeline.py", tmp_path / "state.json",
         tmp_path / "out.npz"],
        check=True, cwd=REPO, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    saved = np.load(tmp_path / "out.npz")
    arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    xs, ys = arrays[: len(arrays) // 2], arrays[len(arrays) // 2 :]
    assert len(xs) == len(rest) > 0
    for b, x, y in zip(rest, xs, ys, strict=True):
        np.testing.assert_array_equal(b["x"].numpy(), x)  # bit-exact, augmentation included
        np.testing.assert_array_equal(b["y"].numpy(), y)
