"""The lazy global shuffle: a bijection, uniform per position, O(batch) memory at 10**9 records.

The statistical checks use fixed seeds (0..S-1) and fixed thresholds, so they are deterministic:
they cannot flake, and a bias large enough to matter fails them by orders of magnitude.
"""

import tracemalloc

import numpy as np
import pytest
import torch

import fnn_data
from fnn_data import _shuffle

# chi-square quantiles at 1 - 1e-6 (scipy.stats.chi2.ppf(1 - 1e-6, dof)): a position whose
# statistic exceeds this is non-uniform beyond any doubt; uniform positions stay far below.
CHI2_1E6 = {2: 27.63, 4: 33.38, 9: 44.81, 16: 58.32}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 65, 100, 4095, 4097, 70_000])
def test_the_shuffle_is_a_bijection_of_the_range(n):
    for seed in (0, 1, 12345):
        perm = _shuffle.permute(np.arange(n), n, _shuffle.round_keys(seed, 0))
        assert perm.dtype == np.int64 and np.array_equal(np.sort(perm), np.arange(n))


def test_large_ranges_evaluate_any_positions_consistently():
    n = 10**9
    keys = _shuffle.round_keys(3, 2)
    positions = np.array([0, 1, 999_999_999, 123_456_789, 5], dtype=np.int64)
    values = _shuffle.permute(positions, n, keys)
    assert ((values >= 0) & (values < n)).all() and len(set(values.tolist())) == 5
    for p, v in zip(positions, values, strict=True):  # one at a time gives the same
        assert _shuffle.permute(np.array([p]), n, keys)[0] == v


@pytest.mark.parametrize("n", [3, 5, 10, 17])
def test_every_position_is_uniform_over_seeds(n):
    seeds = 2000
    counts = np.zeros((n, n))
    for seed in range(seeds):
        perm = _shuffle.permute(np.arange(n), n, _shuffle.round_keys(seed, 0))
        counts[np.arange(n), perm] += 1
    expected = seeds / n
    chi2 = ((counts - expected) ** 2 / expected).sum(axis=1)  # one statistic per position
    assert chi2.max() < CHI2_1E6[n - 1], chi2
    # and not suspiciously perfect either (a fixed rotation would give 0 or huge values)
    assert chi2.mean() > 0.2 * (n - 1)


def test_positions_of_a_large_range_are_uniform_over_seeds():
    n, seeds, bins = 100_003, 1000, 10
    for position in (0, n - 1):
        values = np.array(
            [
                _shuffle.permute(np.array([position]), n, _shuffle.round_keys(s, 0))[0]
                for s in range(seeds)
            ]
        )
        counts = np.bincount(values * bins // n, minlength=bins)
        expected = seeds / bins
        assert ((counts - expected) ** 2 / expected).sum() < CHI2_1E6[9]


def test_epochs_are_independent_permutations():
    n = 1000
    a = _shuffle.permute(np.arange(n), n, _shuffle.round_keys(0, 0))
    b = _shuffle.permute(np.arange(n), n, _shuffle.round_keys(0, 1))
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.15


class _Virtual(torch.utils.data.Dataset):
    """10**9 records that exist only as their index."""

    def __len__(self):
        return 10**9

    def __getitem__(self, i):
        return i


@pytest.mark.parametrize("bits", [6, 7, 16, 17, 30, 31, 32])
def test_looked_up_round_functions_equal_the_arithmetic(bits):
    # up to 32 bits the network looks its round functions up in per-round tables; the values
    # must be the arithmetic's exactly, or every shuffled order would change
    x = np.random.default_rng(bits).integers(0, 1 << bits, 5000, dtype=np.uint64)
    x[:2] = [0, (1 << bits) - 1]
    for seed, epoch in ((0, 0), (11, 4)):
        keys = _shuffle.round_keys(seed, epoch)
        looked_up = _shuffle._network(x, bits, keys)
        tables = _shuffle._tables(bits, keys.tobytes())
        assert looked_up.dtype == np.uint64
        assert all(
            len(t) == 1 << (bits - bits // 2 if r % 2 == 0 else bits // 2)
            for r, t in enumerate(tables)
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_shuffle, "TABLE_BITS", 0)
            computed = _shuffle._network(x, bits, keys)
        assert np.array_equal(looked_up, computed)


def test_a_billion_record_shuffle_reads_a_few_batches_in_o_batch_memory():
    ds = fnn_data.from_torch(_Virtual()).shuffle(seed=0).batch(256).repeat(2)
    it = iter(ds)
    next(it)  # warm caches outside the measurement
    tracemalloc.start()
    try:
        batches = [next(it) for _ in range(4)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a materialised permutation of 10**9 int64 would be 8 GB; one block of indices is 256 KB
    assert peak < 4 * 2**20, peak
    seen = torch.cat(batches)
    assert len(set(seen.tolist())) == 4 * 256
    assert int(seen.min()) >= 0 and int(seen.max()) < 10**9
    # resuming deep inside the second epoch is just arithmetic on the position
    state = {**it.get_state(), "epoch": 1, "offset": 10**9 - 3}
    tail = list(ds.iter_from(state))
    assert [len(b) for b in tail] == [3]


def test_the_order_is_pinned_across_machines_and_versions():
    """Golden values: the shuffle and the record keys are part of the API (a resumed run on
    another machine must read the same records). Changing them must be a deliberate act."""
    ds = fnn_data.from_arrays(np.arange(10)).shuffle(seed=0).repeat(2)
    assert [int(x) for x in ds] == [3, 1, 9, 4, 5, 2, 0, 6, 8, 7, 8, 1, 5, 2, 7, 6, 4, 9, 0, 3]
    first = _shuffle.permute(np.arange(8), 10**6, _shuffle.round_keys(0, 0))
    assert first.tolist() == [959970, 556549, 648719, 917914, 329089, 61959, 942832, 571647]
    keys = fnn_data.from_arrays(np.zeros(2)).random_map(lambda r, k: k, seed=0).batch(2)
    assert next(iter(keys)).tolist() == [[2067023257, 4011464742], [282707546, 681628770]]


@pytest.mark.parametrize("n", [65, 1000, 4096, 50_000])
def test_the_cached_table_and_the_walk_give_the_same_permutation(n):
    """Small ranges read the permutation from a cached table of the whole domain, large ones
    walk each index: both must be the same bijection (here computed both ways for each n)."""
    keys = _shuffle.round_keys(7, 3)
    index = np.arange(n, dtype=np.int64)
    table = _shuffle._small(n, keys.tobytes())
    walked = _shuffle._walk(index, n, keys)
    assert np.array_equal(table, walked)
    assert np.array_equal(np.sort(walked), index)
    assert np.array_equal(_shuffle.permute(index, n, keys), walked)
