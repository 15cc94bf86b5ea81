"""fnn.checkpoint.Manager: retention, interval, skipping broken checkpoints, asynchronous save.

References: the list of steps each policy must leave (worked out by hand in each test), the
files of a synchronous save (an asynchronous one must write the same bytes), and the tree as it
was when ``save`` returned.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

import fnn
from fnn.checkpoint import CorruptCheckpointError, Manager


def tree_at(step: int) -> dict:
    return {
        "params": {"w": torch.full((3, 2), float(step)), "b": torch.arange(3) * step},
        "key": fnn.random.fold_in(fnn.random.key(0), step),
        "step": step,
    }


def assert_same(a: dict, b: dict) -> None:
    leaves_a, def_a = fnn.tree.flatten(a)
    leaves_b, def_b = fnn.tree.flatten(b)
    assert def_a == def_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if torch.is_tensor(x):
            assert x.dtype == y.dtype and torch.equal(x, y)
        else:
            assert type(x) is type(y) and x == y


def dir_names(mgr: Manager) -> list[str]:
    return sorted(p.name for p in mgr.directory.iterdir())


def test_max_to_keep_keeps_the_newest_and_nothing_else(tmp_path):
    mgr = Manager(tmp_path, max_to_keep=3)
    for step in range(1, 8):
        assert mgr.save(step, tree_at(step))
    assert mgr.all_steps() == [5, 6, 7]
    assert dir_names(mgr) == ["step_00000005", "step_00000006", "step_00000007"]
    assert_same(mgr.restore(5), tree_at(5))


def test_keep_every_n_steps_keeps_the_multiples_forever(tmp_path):
    mgr = Manager(tmp_path, max_to_keep=2, keep_every_n_steps=3)
    for step in range(1, 11):
        mgr.save(step, tree_at(step))
    assert mgr.all_steps() == [3, 6, 9, 10]  # the newest two (9, 10) and the multiples of 3


def test_max_to_keep_none_keeps_everything(tmp_path):
    mgr = Manager(tmp_path, max_to_keep=None)
    for step in range(5):
        mgr.save(step, tree_at(step))
    assert mgr.all_steps() == [0, 1, 2, 3, 4]


def test_save_interval_skips_other_steps_unless_forced(tmp_path):
    mgr = Manager(tmp_path, save_interval_steps=5, max_to_keep=None)
    saved = [step for step in range(1, 13) if mgr.save(step, tree_at(step))]
    assert saved == [5, 10]
    assert mgr.save(12, tree_at(12), force=True)
    assert mgr.all_steps() == [5, 10, 12]


def test_steps_not_newer_than_the_latest_are_skipped_and_force_overwrites(tmp_path):
    mgr = Manager(tmp_path)
    assert mgr.save(torch.tensor(4), tree_at(4))  # an integer 0-d tensor is a step too
    assert not mgr.save(4, tree_at(40))
    assert not mgr.save(3, tree_at(3))
    assert mgr.save(4, tree_at(40), force=True)
    assert mgr.all_steps() == [4]
    assert_same(mgr.restore(4), tree_at(40))
    assert dir_names(mgr) == ["step_00000004"]  # the replaced one is gone, no leftovers


def test_restore_latest_with_like_and_metadata(tmp_path):
    mgr = Manager(tmp_path)
    for step in (1, 2):
        mgr.save(step, tree_at(step), metadata={"loss": step / 4})
    assert mgr.latest_step() == 2
    assert_same(mgr.restore(like=tree_at(0)), tree_at(2))
    assert mgr.read_metadata() == {"loss": 0.5}
    assert mgr.read_metadata(1) == {"loss": 0.25}


def test_an_empty_directory_has_no_latest_step(tmp_path):
    mgr = Manager(tmp_path / "new")
    assert mgr.latest_step() is None and mgr.all_steps() == []
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        mgr.restore()


@pytest.mark.parametrize(
    "damage",
    ["delete_manifest", "truncate", "empty_dir"],
)
def test_latest_step_skips_a_broken_newest_checkpoint_and_names_it(tmp_path, damage):
    mgr = Manager(tmp_path)
    for step in (1, 2, 3):
        mgr.save(step, tree_at(step))
    newest = mgr.step_path(3)
    if damage == "delete_manifest":
        (newest / "manifest.json").unlink()
    elif damage == "truncate":
        file = newest / "tensors.safetensors"
        file.write_bytes(file.read_bytes()[:50])
    else:
        shutil.rmtree(newest)
        newest.mkdir()
    with pytest.warns(UserWarning, match=r"skipping incomplete or corrupt .*step_00000003"):
        assert mgr.latest_step() == 2
    with pytest.warns(UserWarning, match="step_00000003"):
        assert mgr.all_steps() == [1, 2]
    with pytest.warns(UserWarning, match="step_00000003"):
        assert_same(mgr.restore(), tree_at(2))
    # the next save goes on from the newest complete step, replacing the broken one
    with pytest.warns(UserWarning, match="step_00000003"):
        assert mgr.save(3, tree_at(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mgr.all_steps() == [1, 2, 3]


def test_restore_falls_back_past_a_checkpoint_with_a_changed_byte(tmp_path):
    mgr = Manager(tmp_path)
    for step in (1, 2):
        mgr.save(step, tree_at(step))
    file = mgr.step_path(2) / "tensors.safetensors"
    data = bytearray(file.read_bytes())
    data[-3] ^= 0xFF
    file.write_bytes(bytes(data))
    assert mgr.latest_step() == 2  # sizes are fine: only the checksum can tell
    with pytest.warns(UserWarning, match=r"skipping step 2, .*sha256"):
        assert_same(mgr.restore(), tree_at(1))
    with pytest.raises(CorruptCheckpointError, match="step_00000002"):
        mgr.restore(2)  # an explicit step never falls back


def test_leftovers_of_interrupted_saves(tmp_path):
    mgr = Manager(tmp_path)
    mgr.save(1, tree_at(1))
    # an incomplete tmp directory (a save killed while writing) is ignored, then cleaned up
    (tmp_path / "step_00000002.tmp-0123abcd").mkdir()
    (tmp_path / "step_00000002.tmp-0123abcd" / "tensors.safetensors").write_bytes(b"partial")
    assert mgr.all_steps() == [1]
    # a complete one whose rename never happened counts, and the next save moves it into place
    shutil.copytree(mgr.step_path(1), tmp_path / "step_00000003.tmp-89abcdef")
    with pytest.warns(UserWarning, match="interrupted"):
        assert mgr.all_steps() == [1, 3]
        assert_same(mgr.restore(3), tree_at(1))
    assert not mgr.save(3, tree_at(3))  # 3 is not newer than the latest
    assert mgr.save(4, tree_at(4))
    assert dir_names(mgr) == ["step_00000001", "step_00000003", "step_00000004"]


def test_async_save_writes_the_same_files_as_a_sync_save(tmp_path):
    sync, asyn = Manager(tmp_path / "sync"), Manager(tmp_path / "async", async_save=True)
    with sync, asyn:
        for step in range(1, 6):
            assert sync.save(step, tree_at(step), metadata={"step": step})
            assert asyn.save(step, tree_at(step), metadata={"step": step})
    assert sync.all_steps() == asyn.all_steps() == [3, 4, 5]
    for step in (3, 4, 5):
        for name in ("tensors.safetensors", "manifest.json"):
            a = (sync.step_path(step) / name).read_bytes()
            b = (asyn.step_path(step) / name).read_bytes()
            assert a == b, (step, name)


def test_async_save_copies_the_tensors_before_returning(tmp_path):
    with Manager(tmp_path, async_save=True) as mgr:
        tree = tree_at(1)
        expected = fnn.tree.map(lambda x: x.clone() if torch.is_tensor(x) else x, tree)
        mgr.save(1, tree)
        for leaf in fnn.tree.leaves(tree):  # the caller reuses (donates) its buffers at once
            if torch.is_tensor(leaf):
                leaf.fill_(7)
        mgr.wait()
        assert_same(mgr.restore(1), expected)


def test_an_async_error_surfaces_on_the_next_save_then_is_cleared(tmp_path):
    mgr = Manager(tmp_path / "ckpts", async_save=True)
    shutil.rmtree(tmp_path / "ckpts")
    (tmp_path / "ckpts").write_text("a file where the directory was")
    assert mgr.save(1, tree_at(1), force=True)  # starts; fails in the background
    with pytest.raises(OSError) as info:
        mgr.save(2, tree_at(2), force=True)
    assert "asynchronous save of step 1" in "\n".join(getattr(info.value, "__notes__", []))
    mgr.wait()  # reported once
    (tmp_path / "ckpts").unlink()
    mgr.save(3, tree_at(3), force=True)
    mgr.close()
    assert mgr.all_steps() == [3]


@pytest.mark.parametrize("how", ["wait", "close", "with"])
def test_an_async_error_surfaces_on_wait_close_and_leaving_with(tmp_path, how):
    mgr = Manager(tmp_path / "ckpts", async_save=True)
    shutil.rmtree(tmp_path / "ckpts")
    (tmp_path / "ckpts").write_text("not a directory")
    with pytest.raises(OSError):
        if how == "with":
            with mgr:
                mgr.save(1, tree_at(1), force=True)
        else:
            mgr.save(1, tree_at(1), force=True)
            getattr(mgr, how)()


def test_manager_arguments_are_checked(tmp_path):
    for kwargs in ({"max_to_keep": 0}, {"keep_every_n_steps": -1}, {"save_interval_steps": None}):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            Manager(tmp_path, **kwargs)
    mgr = Manager(tmp_path)
    with pytest.raises(ValueError, match="step must be >= 0"):
        mgr.save(-1, {})
    with pytest.raises(TypeError, match="step must be an int"):
        mgr.save(1.5, {})
    mgr.close()
    with pytest.raises(RuntimeError, match="closed"):
        mgr.save(1, {})
