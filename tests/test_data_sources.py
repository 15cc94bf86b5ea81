"""fnn_data sources: arrays, .npy memory maps, torch datasets, streams, image folders, digits."""

import numpy as np
import pytest
import torch

import fnn_data


def test_from_arrays_numpy_fields_give_rows_and_batches_of_tensors():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    ds = fnn_data.from_arrays(x=x, y=y)
    assert len(ds) == 10
    rec = ds.source.record(3)
    np.testing.assert_array_equal(rec["x"], x[3])
    assert rec["x"].base is not None  # a view into the source, not a copy
    batches = list(ds.batch(4))
    assert [len(b["y"]) for b in batches] == [4, 4, 2]
    assert all(isinstance(v, torch.Tensor) for b in batches for v in b.values())
    np.testing.assert_array_equal(torch.cat([b["x"] for b in batches]).numpy(), x)
    assert batches[0]["x"].dtype == torch.float32 and batches[0]["y"].dtype == torch.int64


def test_from_arrays_accepts_tensors_a_dict_a_tuple_and_a_single_array():
    t = torch.arange(12.0).reshape(6, 2)
    y = torch.arange(6)
    by_fields = next(iter(fnn_data.from_arrays(x=t, y=y).batch(6)))
    by_dict = next(iter(fnn_data.from_arrays({"x": t, "y": y}).batch(6)))
    assert torch.equal(by_fields["x"], t) and torch.equal(by_dict["y"], y)
    pair = next(iter(fnn_data.from_arrays((t, y)).batch(6)))
    assert isinstance(pair, tuple) and torch.equal(pair[0], t)
    single = next(iter(fnn_data.from_arrays(t.numpy()).batch(6)))
    assert torch.equal(single, t)
    # a record of a tensor field is a tensor (the source's own type)
    assert isinstance(fnn_data.from_arrays(x=t).source.record(0)["x"], torch.Tensor)


def test_from_arrays_gathers_a_batch_with_one_vectorised_index_per_field(monkeypatch):
    ds = fnn_data.from_arrays(x=np.arange(10.0), y=np.arange(10)).shuffle(seed=1).batch(5)
    source = ds.source

    def no_per_record_access(*args):
        raise AssertionError("a per-record read on the fast path")

    monkeypatch.setattr(type(source), "record", no_per_record_access)
    monkeypatch.setattr(type(source), "records", no_per_record_access)
    calls = []
    gather = type(source).gather

    def counted(self, index, alloc):
        calls.append(len(index))
        return gather(self, index, alloc)

    monkeypatch.setattr(type(source), "gather", counted)
    batches = list(ds)
    assert calls == [5, 5]  # one gather (one fancy index per field) per batch
    assert sorted(torch.cat([b["y"] for b in batches]).tolist()) == list(range(10))


def test_from_arrays_bad_input_errors():
    with pytest.raises(ValueError, match=r"same number of records.*x: 10, y: 9"):
        fnn_data.from_arrays(x=np.zeros(10), y=np.zeros(9))
    with pytest.raises(ValueError, match=r"'x' is a scalar"):
        fnn_data.from_arrays(x=np.array(3.0))
    with pytest.raises(TypeError, match=r"expected numpy arrays or torch tensors, got int"):
        fnn_data.from_arrays(x=[1, 2, 3])
    with pytest.raises(TypeError, match="either one pytree of arrays or keyword fields"):
        fnn_data.from_arrays()
    with pytest.raises(TypeError, match="either one pytree of arrays or keyword fields"):
        fnn_data.from_arrays({"x": np.zeros(2)}, y=np.zeros(2))


def test_from_npy_memory_maps_and_reads_in_place(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    y = np.arange(20)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ds = fnn_data.from_npy(x=tmp_path / "x.npy", y=tmp_path / "y.npy")
    assert isinstance(ds.source._leaves[0], np.memmap)
    assert not ds.source._leaves[0].flags.writeable
    got = list(ds.shuffle(seed=2).batch(7))
    ref = list(fnn_data.from_arrays(x=x, y=y).shuffle(seed=2).batch(7))
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    single = fnn_data.from_npy(tmp_path / "x.npy", mmap=False)
    assert torch.equal(next(iter(single.batch(20))), torch.from_numpy(x))
    with pytest.raises(TypeError, match="either one path or named paths"):
        fnn_data.from_npy()


class _Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 9

    def __getitem__(self, i):
        return torch.tensor([float(i)]), i * i


class _Batched(_Squares):
    def __init__(self):
        self.fetches = []

    def __getitems__(self, indices):
        self.fetches.append(list(indices))
        return [self[i] for i in indices]


def test_from_torch_keeps_the_record_structure_and_uses_getitems():
    batches = list(fnn_data.from_torch(_Squares()).batch(4))
    assert [tuple(b[1].tolist()) for b in batches] == [(0, 1, 4, 9), (16, 25, 36, 49), (64,)]
    assert batches[0][0].shape == (4, 1)
    ref = list(torch.utils.data.DataLoader(_Squares(), batch_size=4))
    for a, b in zip(batches, ref, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    batched = _Batched()
    list(fnn_data.from_torch(batched).shuffle(seed=0).batch(5))
    assert [len(f) for f in batched.fetches] == [5, 4]  # a chunk per fetch
    with pytest.raises(TypeError, match=r"map-style torch\.utils\.data\.Dataset"):
        fnn_data.from_torch(iter([1, 2]))


def test_from_iterable_reads_a_stream_and_resumes_by_replaying_it():
    opened = []

    def stream():
        opened.append(1)
        return ({"v": np.int64(i)} for i in range(10))

    ds = fnn_data.from_iterable(stream).batch(3)
    full = [b["v"].tolist() for b in ds]
    assert full == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    it = iter(ds)
    next(it)
    state = it.get_state()
    assert (state["epoch"], state["offset"]) == (0, 3)
    assert [b["v"].tolist() for b in ds.iter_from(state)] == full[1:]
    # the documented resumability: a resume calls the factory again and skips what was read
    count = len(opened)
    list(ds.iter_from(state))
    assert len(opened) == count + 1
    # a stream can't know its length, can't be shuffled, shards every k-th record
    with pytest.raises(TypeError, match="unknown without reading the data"):
        len(ds)
    with pytest.raises(ValueError, match="cannot be shuffled globally"):
        fnn_data.from_iterable(stream).shuffle(seed=0)
    shards = [[int(r["v"]) for r in fnn_data.from_iterable(stream).shard(i, 3)] for i in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_from_iterable_repeats_by_reopening_and_refuses_a_spent_one_shot_iterator():
    ds = fnn_data.from_iterable(lambda: iter(range(3))).repeat(2)
    assert [int(x) for x in ds] == [0, 1, 2, 0, 1, 2]
    once = fnn_data.from_iterable(iter(range(3)))
    assert [int(x) for x in once] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="one-shot iterator that was already read"):
        list(once)
    # an empty stream ends even when repeated forever
    assert list(fnn_data.from_iterable(lambda: iter([])).repeat()) == []


def _write_images(root, size=(5, 7)):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("zebra", "ant"):
        (root / cls).mkdir()
        for k in range(3):
            a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / cls / f"img{k}.png")
            pixels[(cls, k)] = a
    (root / "ant" / "notes.txt").write_text("not an image")
    return pixels


def test_from_image_folder_decodes_pngs_with_labels_from_folder_names(tmp_path):
    pytest.importorskip("PIL")
    pixels = _write_images(tmp_path)
    ds = fnn_data.from_image_folder(tmp_path)
    assert ds.source.classes == ["ant", "zebra"] and len(ds) == 6
    (batch,) = list(ds.batch(6))
    assert batch["image"].shape == (6, 3, 5, 7) and batch["image"].dtype == torch.uint8
    assert batch["label"].tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(batch["image"][4].permute(1, 2, 0).numpy(), pixels[("zebra", 1)])
    grey = next(iter(fnn_data.from_image_folder(tmp_path, mode="L", size=(4, 4)).batch(2)))
    assert grey["image"].shape == (2, 1, 4, 4)
    with_workers = list(ds.shuffle(seed=0).batch(4).workers(2))
    without = list(ds.shuffle(seed=0).batch(4))
    for a, b in zip(with_workers, without, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_from_image_folder_errors(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        fnn_data.from_image_folder(tmp_path / "missing")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="found no images"):
        fnn_data.from_image_folder(tmp_path)


def test_from_image_folder_without_pillow_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(ImportError, match=r"pip install 'fnn\[data\]'"):
        fnn_data.from_image_folder(tmp_path)


def test_digits_feed_a_pipeline():
    train = fnn_data.datasets.digits("train")
    ds = fnn_data.from_arrays(train).shuffle(seed=0).batch(128, drop_remainder=True)
    batches = list(ds)
    assert len(batches) == len(train["label"]) // 128
    assert batches[0]["image"].shape == (128, 1, 8, 8)
    seen = torch.cat([b["label"] for b in batches])
    assert set(seen.tolist()) == set(range(10))


@pytest.mark.parametrize(
    "dtype", ["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "uint32", ">f4"]
)
def test_batches_equal_numpy_fancy_indexing_for_every_dtype_and_layout(dtype, tmp_path):
    """torch's index_select gathers writable native arrays; the rest go through numpy."""
    a = (np.arange(60) % 7).astype(dtype).reshape(10, 3, 2)
    views = {"plain": a, "strided": a[:, ::2], "reversed": a[::-1]}
    np.save(tmp_path / "a.npy", a)
    for name, x in views.items():
        got = [b["x"] for b in fnn_data.from_arrays(x=x).shuffle(seed=3).batch(4)]
        order = np.concatenate(
            [
                b["i"].numpy()
                for b in fnn_data.from_arrays(x=x, i=np.arange(10)).shuffle(seed=3).batch(4)
            ]
        )
        want = np.ascontiguousarray(x[order]).astype(x.dtype.newbyteorder("="))
        assert np.array_equal(torch.cat(got).numpy(), want), name
    mapped = [b["x"] for b in fnn_data.from_npy(x=tmp_path / "a.npy").batch(4)]
    assert np.array_equal(torch.cat(mapped).numpy(), a.astype(a.dtype.newbyteorder("=")))
