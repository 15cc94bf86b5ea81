"""Progress bars: tqdm counting records per second, and the error naming the extra without it."""

import builtins

import numpy as np
import pytest

import fnn_data


def test_iterating_with_progress_shows_records_per_second(capsys):
    pytest.importorskip("tqdm")
    ds = fnn_data.from_arrays(np.arange(100)).batch(10)
    assert sum(len(b) for b in ds.iter(progress=True)) == 100
    err = capsys.readouterr().err
    assert "rec/s" in err and "100%" in err  # counts records (not batches) of a known total
    sums = ds.map(lambda b: b.sum()).iter(progress=True)  # items without a batch dimension
    assert [int(s) for s in sums] == [sum(range(i, i + 10)) for i in range(0, 100, 10)]


def test_the_progress_helper_keeps_the_iterator_and_its_state(capsys):
    pytest.importorskip("tqdm")
    ds = fnn_data.from_arrays(np.arange(30)).shuffle(seed=0).batch(4)
    it = fnn_data.progress(ds, desc="train")
    next(it)
    state = it.get_state()
    assert state["offset"] == 4
    rest = list(it)
    assert len(rest) == 7
    # resuming with a bar starts it at the resume position
    resumed = ds.iter(state=state, progress=True)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in rest]
    err = capsys.readouterr().err
    assert "train" in err and err.count("100%") == 2
    # any other iterable gets a plain bar
    assert list(fnn_data.progress(range(3))) == [0, 1, 2]


def test_progress_without_tqdm_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError("No module named 'tqdm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with pytest.raises(ImportError, match=r"pip install 'fnn\[data\]'"):
        fnn_data.from_arrays(np.arange(3)).iter(progress=True)
