"""fnn_data pipeline semantics: stages against plain-Python references, keys against fnn.random,
and the bad-input errors (each says what, where, and the right way)."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import fnn.random
import fnn_data


def _ints(ds):
    """Items of a pipeline over integers, as plain lists/ints."""
    return [x.tolist() for x in ds]


def test_map_filter_batch_equal_the_plain_python_pipeline():
    data = np.arange(23)
    ds = (
        fnn_data.from_arrays(data)
        .map(lambda v: v * 3)
        .filter(lambda v: v % 2 == 0)
        .map(lambda v: {"v": v, "half": v // 2})
        .batch(4)
    )
    kept = [v * 3 for v in data.tolist() if (v * 3) % 2 == 0]
    ref = [kept[i : i + 4] for i in range(0, len(kept), 4)]
    got = list(ds)
    assert [b["v"].tolist() for b in got] == ref
    assert [b["half"].tolist() for b in got] == [[v // 2 for v in r] for r in ref]


def test_drop_remainder_drops_only_the_short_last_batch_and_nothing_else():
    ds = fnn_data.from_arrays(np.arange(10))
    assert _ints(ds.batch(4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert _ints(ds.batch(4, drop_remainder=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert _ints(ds.batch(5, drop_remainder=True)) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_repeat_before_batch_runs_on_and_after_batch_restarts_every_epoch():
    ds = fnn_data.from_arrays(np.arange(5))
    assert _ints(ds.repeat(2).batch(3)) == [[0, 1, 2], [3, 4, 0], [1, 2, 3], [4]]
    assert _ints(ds.batch(3).repeat(2)) == [[0, 1, 2], [3, 4], [0, 1, 2], [3, 4]]
    assert _ints(ds.batch(3, drop_remainder=True).repeat(2)) == [[0, 1, 2], [0, 1, 2]]
    assert len(ds.repeat(2).batch(3)) == 4 and len(ds.batch(3).repeat(2)) == 4
    assert _ints(ds.repeat(0)) == []
    forever = iter(ds.repeat())
    assert [int(next(forever)) for _ in range(12)] == [0, 1, 2, 3, 4] * 2 + [0, 1]
    with pytest.raises(TypeError, match="unknown without reading the data"):
        len(ds.repeat())


def test_shuffle_is_a_permutation_per_epoch_and_each_epoch_differs():
    n = 50
    ds = fnn_data.from_arrays(np.arange(n)).shuffle(seed=7).repeat(3)
    got = [int(x) for x in ds]
    epochs = [got[i * n : (i + 1) * n] for i in range(3)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert got == [int(x) for x in ds]  # the same seed gives the same order
    other = [int(x) for x in fnn_data.from_arrays(np.arange(n)).shuffle(seed=8)]
    assert other != epochs[0]
    # shuffle and repeat commute: the epoch's key decides, not the position of repeat
    assert [int(x) for x in fnn_data.from_arrays(np.arange(n)).repeat(3).shuffle(seed=7)] == got


def test_shard_remainder_rule_and_disjoint_covering_shards():
    for n in (0, 1, 7, 10, 31):
        for count in (1, 2, 3, 4):
            ds = fnn_data.from_arrays(np.arange(n))
            shards = [[int(x) for x in ds.shard(i, count)] for i in range(count)]
            # the documented rule: contiguous blocks, the first n % count shards one longer
            sizes = [n // count + (1 if i < n % count else 0) for i in range(count)]
            assert [len(s) for s in shards] == sizes
            assert list(itertools.chain(*shards)) == list(range(n))


def test_shards_after_a_shared_shuffle_are_disjoint_every_epoch_and_cover_the_data():
    n, count = 101, 4
    base = fnn_data.from_arrays(np.arange(n)).shuffle(seed=3).repeat(2)
    per_rank = [[int(x) for x in base.shard(i, count)] for i in range(count)]
    for epoch in range(2):
        parts = []
        for r in per_rank:
            size = len(r) // 2
            parts.append(r[epoch * size : (epoch + 1) * size])
        flat = list(itertools.chain(*parts))
        assert sorted(flat) == list(range(n))
    # written after batch it still shards records: each rank batches its own
    after = [_ints(fnn_data.from_arrays(np.arange(10)).batch(2).shard(i, 2)) for i in range(2)]
    assert after == [[[0, 1], [2, 3], [4]], [[5, 6], [7, 8], [9]]]
    with_filter = fnn_data.from_arrays(np.arange(12)).filter(lambda v: v % 3 != 0)
    ranks = [[int(x) for x in with_filter.shard(i, 2)] for i in range(2)]
    assert sorted(itertools.chain(*ranks)) == [v for v in range(12) if v % 3 != 0]


def test_random_map_keys_are_fnn_random_fold_ins_of_seed_stage_epoch_and_index():
    seed = 11

    def grab(record, key):
        return {"index": record, "key": key}

    ds = fnn_data.from_arrays(np.arange(6)).shuffle(seed=5).random_map(grab, seed=seed).repeat(2)
    for pos, item in enumerate(ds):
        epoch, index = pos // 6, int(item["index"])
        stage_key = fnn.random.fold_in(fnn.random.key(seed), 1)  # 1 + (no random_map before)
        expected = fnn.random.fold_in(fnn.random.fold_in(stage_key, epoch), index)
        assert torch.equal(item["key"], expected)
        assert item["key"].dtype == torch.uint32 and item["key"].shape == (2,)
    # the default seed is the last shuffle's, and a second random_map gets its own keys
    two = (
        fnn_data.from_arrays(np.arange(3))
        .shuffle(seed=5)
        .random_map(lambda r, k: {"r": r, "a": k})
        .random_map(lambda r, k: {**r, "b": k})
    )
    for item in two:
        i = int(item["r"])
        a = fnn.random.fold_in(fnn.random.fold_in(fnn.random.fold_in(fnn.random.key(5), 1), 0), i)
        b = fnn.random.fold_in(fnn.random.fold_in(fnn.random.fold_in(fnn.random.key(5), 2), 0), i)
        assert torch.equal(item["a"], a) and torch.equal(item["b"], b)


def test_shuffle_round_keys_are_the_documented_fnn_random_bits():
    from fnn_data import _prng, _shuffle

    for seed, epoch in [(0, 0), (3, 1), (2**40 + 5, 7)]:
        key = fnn.random.fold_in(fnn.random.fold_in(fnn.random.key(seed), 0), epoch)
        expected = fnn.random.bits(key, (_shuffle.ROUNDS,), torch.uint64)
        got = _shuffle.round_keys(seed, epoch)
        assert expected.view(torch.int64).numpy().view(np.uint64).tolist() == got.tolist()
        assert torch.equal(
            torch.tensor(_prng.key(seed), dtype=torch.int64).to(torch.int32).view(torch.uint32),
            fnn.random.key(seed),
        )
    many = _prng.fold_in_many((1, 2), np.array([0, 5, 2**32 - 1]))
    k = torch.tensor([1, 2], dtype=torch.int32).view(torch.uint32)
    for row, d in zip(many, [0, 5, 2**32 - 1], strict=True):
        assert row.tolist() == fnn.random.fold_in(k, d).tolist()


def test_batches_are_pytrees_of_tensors_and_nested_records_stack_leafwise():
    ds = fnn_data.from_arrays(x=np.arange(6.0)).map(
        lambda r: {"a": {"b": r["x"], "c": (r["x"], np.ones(2))}, "name": "rec"}
    )
    (batch,) = list(ds.batch(6))
    assert batch["a"]["b"].shape == (6,) and batch["a"]["c"][1].shape == (6, 2)
    assert batch["name"] == ["rec"] * 6  # non-numeric leaves are carried as lists
    assert isinstance(batch["a"]["c"][0], torch.Tensor)


def test_batch_level_map_gets_whole_batches():
    ds = fnn_data.from_arrays(x=np.arange(8.0)).batch(4).map(lambda b: {"mean": b["x"].mean()})
    assert [b["mean"].item() for b in ds] == [1.5, 5.5]
    filtered = fnn_data.from_arrays(x=np.arange(8.0)).filter(lambda r: r["x"] > 0).batch(4)
    assert [b["s"].item() for b in filtered.map(lambda b: {"s": b["x"].sum()})] == [10.0, 18.0]


def test_unbatched_iteration_yields_records_of_tensors_even_of_unequal_shapes():
    ds = fnn_data.from_arrays(np.arange(4)).map(lambda v: {"seq": np.arange(int(v) + 1)})
    recs = list(ds)
    assert [r["seq"].tolist() for r in recs] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    assert all(isinstance(r["seq"], torch.Tensor) for r in recs)


def test_to_device_on_cpu_is_a_no_op_move_and_keeps_the_data():
    ds = fnn_data.from_arrays(x=np.arange(6.0)).batch(3)
    plain = list(ds)
    moved = list(ds.to_device("cpu", pin_memory=True))
    prefetched = list(ds.to_device("cpu").prefetch(2))
    for a, b, c in zip(plain, moved, prefetched, strict=True):
        assert (
            b["x"].device.type == "cpu"
            and torch.equal(a["x"], b["x"])
            and torch.equal(a["x"], c["x"])
        )
    from fnn_data._prefetch import mover

    t = torch.arange(3.0)
    assert mover(torch.device("cpu"), True)({"t": t})["t"] is t  # no copy, no pinning on CPU
    assert mover(None, True) is None


def test_repr_and_len():
    ds = fnn_data.from_arrays(x=np.zeros((10, 3), np.float32)).shuffle(seed=1).batch(4)
    assert repr(ds) == (
        "Dataset(from_arrays(10 records {x: float32[3]}) -> shuffle(seed=1) -> batch(4))"
    )
    assert (
        len(ds) == 3 and len(fnn_data.from_arrays(np.arange(10)).batch(4, drop_remainder=True)) == 2
    )
    with pytest.raises(TypeError, match="unknown without reading the data"):
        len(fnn_data.from_arrays(np.arange(10)).filter(bool).batch(4))


# ---- bad input --------------------------------------------------------------------------------


def test_batch_size_must_be_a_positive_int():
    ds = fnn_data.from_arrays(np.arange(3))
    with pytest.raises(ValueError, match=r"batch: expected a batch_size >= 1, got 0"):
        ds.batch(0)
    with pytest.raises(TypeError, match=r"batch: expected an int batch_size, got float 2.5"):
        ds.batch(2.5)
    with pytest.raises(ValueError, match="already batched"):
        ds.batch(2).batch(2)


def test_seed_must_be_an_int():
    ds = fnn_data.from_arrays(np.arange(3))
    with pytest.raises(TypeError, match=r"shuffle: expected an int seed, got float 1.5"):
        ds.shuffle(1.5)
    with pytest.raises(TypeError, match=r"shuffle: expected an int seed, got bool"):
        ds.shuffle(True)
    with pytest.raises(TypeError, match=r"random_map: expected an int seed, got str"):
        ds.random_map(lambda r, k: r, seed="0")
    assert _ints(ds.shuffle(np.int64(3))) == _ints(ds.shuffle(3))


def test_shard_index_and_count_are_checked():
    ds = fnn_data.from_arrays(np.arange(3))
    with pytest.raises(ValueError, match=r"shard index 2 is out of range for 2 shards"):
        ds.shard(2, 2)
    with pytest.raises(ValueError, match=r"shard index -1 is out of range"):
        ds.shard(-1, 2)
    with pytest.raises(ValueError, match=r"expected count >= 1, got 0"):
        ds.shard(0, 0)


def test_stage_order_errors_say_the_right_order():
    b = fnn_data.from_arrays(np.arange(4)).batch(2)
    with pytest.raises(
        ValueError, match=r"shuffle: cannot follow \.batch\(\).*\.shuffle\(seed\)\.batch"
    ):
        b.shuffle(0)
    with pytest.raises(ValueError, match=r"filter: cannot follow \.batch\(\)"):
        b.filter(bool)
    with pytest.raises(ValueError, match=r"random_map: cannot follow \.batch\(\)"):
        b.random_map(lambda r, k: r, seed=0)
    with pytest.raises(ValueError, match=r"random_map: needs a seed.*random_map\(fn, seed=0\)"):
        fnn_data.from_arrays(np.arange(4)).random_map(lambda r, k: r)
    with pytest.raises(TypeError, match=r"map: expected a function, got int"):
        fnn_data.from_arrays(np.arange(4)).map(3)
    with pytest.raises(ValueError, match=r"repeat: expected epochs >= 0, got -1"):
        fnn_data.from_arrays(np.arange(4)).repeat(-1)
    with pytest.raises(ValueError, match=r"workers: expected n >= 0, got -2"):
        fnn_data.from_arrays(np.arange(4)).workers(-2)
    with pytest.raises(ValueError, match=r"prefetch: expected n >= 0, got -1"):
        fnn_data.from_arrays(np.arange(4)).prefetch(-1)


def test_a_map_returning_different_structures_names_the_stage_and_the_records():
    def uneven(r):
        return {"a": r} if r < 5 else {"b": r}

    ds = fnn_data.from_arrays(np.arange(8)).map(lambda v: v).map(uneven).batch(8)
    with pytest.raises(
        ValueError, match=r"map #2 \(.*uneven\) gave records of different structures"
    ) as e:
        list(ds)
    assert "source index 0" in str(e.value) and "source index 5" in str(e.value)
    # across batches too (each batch alone is consistent)
    with pytest.raises(ValueError, match=r"map #2 \(.*uneven\) gave records of different"):
        list(fnn_data.from_arrays(np.arange(8)).map(lambda v: v).map(uneven).batch(5))
    with pytest.raises(ValueError, match=r"different structures"):
        list(fnn_data.from_arrays(np.arange(8)).map(uneven).filter(lambda r: True).batch(3))


def test_records_of_unequal_shapes_cannot_be_batched_and_the_error_says_where():
    ds = fnn_data.from_arrays(np.arange(4)).map(lambda v: {"seq": np.arange(int(v) + 1)})
    with pytest.raises(ValueError, match=r"cannot stack field 'seq'.*shape \(1,\).*shape \(2,\)"):
        list(ds.batch(2))


def test_an_exception_in_a_map_says_which_stage_and_record():
    def explode(v):
        if v == 3:
            raise ZeroDivisionError("bad record")
        return v

    with pytest.raises(ZeroDivisionError, match="bad record") as e:
        list(fnn_data.from_arrays(np.arange(6)).shuffle(seed=0).map(explode).batch(2))
    assert any("map #1 (" in n and "source index 3" in n for n in e.value.__notes__)


def test_a_state_from_another_pipeline_is_refused_with_both_descriptions():
    a = fnn_data.from_arrays(np.arange(10)).shuffle(seed=1).batch(2)
    b = fnn_data.from_arrays(np.arange(10)).shuffle(seed=2).batch(2)
    it = iter(a)
    next(it)
    state = json.loads(json.dumps(it.get_state()))
    with pytest.raises(ValueError, match=r"saved from a different pipeline") as e:
        b.iter_from(state)
    assert "shuffle(seed=1)" in str(e.value) and "shuffle(seed=2)" in str(e.value)
    with pytest.raises(ValueError, match="different pipeline"):
        iter(b).set_state(state)
    with pytest.raises(ValueError, match=r"expected a state from DataIterator.get_state"):
        a.iter_from({"epoch": 0})
    with pytest.raises(ValueError, match=r"out of range"):
        a.iter_from({**state, "offset": 11})
    # what does not change the data (workers, prefetch, device) does not change the pipeline
    assert [x.tolist() for x in a.workers(2).prefetch(1).iter_from(state)] == [
        x.tolist() for x in it
    ]


def test_process_rank_reads_the_environment_and_torch_distributed(monkeypatch):
    ds = fnn_data.from_arrays(np.arange(10))
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert fnn_data.process_rank() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert fnn_data.process_rank() == (1, 3)
    assert [int(x) for x in fnn_data.shard_for_process(ds)] == [4, 5, 6]
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="found only one of RANK and WORLD_SIZE"):
        fnn_data.shard_for_process(ds)
    monkeypatch.delenv("RANK")
    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert fnn_data.process_rank() == (0, 1)
    finally:
        dist.destroy_process_group()


def test_importing_fnn_data_does_not_import_the_model_layer():
    code = "import sys, fnn_data; print(sorted(m for m in sys.modules if m.split('.')[0] == 'fnn'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # not fnn.nn, not even fnn (keys are computed in numpy)
