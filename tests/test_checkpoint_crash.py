"""Crash test: processes saving checkpoints are killed with SIGKILL; what is left always restores.

pytest runs this file once as a script, in a subprocess (the *driver*): it imports torch once
and forks the saving processes, since a fresh interpreter per kill costs seconds each. The
driver then kills them and checks, after every kill, that the latest complete checkpoint
restores with its checksums verified and holds exactly the tree of the step it claims (every
tree is a pure function of its step, ``tree_at``). Three parts:

- ``manager``: a process saving steps 1, 2, 3, ... through ``Manager`` (retention on) is killed
  at random moments (seeded delays; every other time only after it saved a new step, so that
  the runs progress on any disk), ``KILLS`` times, each new process resuming from the latest
  step; every listed checkpoint must restore and match.
- ``single``: the same with ``fnn.checkpoint.save`` overwriting one path.
- ``points``: a save (a first one, and an overwrite) is killed exactly at each point of the save
  sequence (``fnn.checkpoint._save.write``), which proves each crash window of its docstring:
  the previous checkpoint before the old one is renamed aside, the new one from then on.

The driver prints one JSON report; the tests below check it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fnn
from fnn.checkpoint import Manager

KILLS = 8
SEED = 8  # the kill delays are drawn from random.Random(SEED): the same run every time
SIZE = 1 << 18  # 1 MiB of float32 per checkpoint, so that a save takes a few milliseconds
POINTS = ["tensors_written", "tmp_complete", "old_renamed_aside", "renamed_in", "old_deleted"]
LEFTOVER = re.compile(r"\.(tmp|old|del)-[0-9a-f]{8}$")


def tree_at(step: int) -> dict:
    """The tree saved at ``step``: every leaf depends on the step."""
    return {
        "step": step,
        "params": {
            "w": torch.arange(SIZE, dtype=torch.float32) + step,
            "b": torch.full((7,), step, dtype=torch.bfloat16),
        },
        "count": torch.tensor(step, dtype=torch.int64),
        "key": fnn.random.fold_in(fnn.random.key(0), step),
        "data": {"epoch": step // 3, "position": 32 * step},
        "np": np.full(5, step, dtype=np.int64),
    }


def check(tree: Any, step: int) -> None:
    """``tree`` is exactly ``tree_at(step)``: structure, types, dtypes and bytes."""
    expected = tree_at(step)
    got_leaves, got_def = fnn.tree.flatten(tree)
    exp_leaves, exp_def = fnn.tree.flatten(expected)
    assert got_def == exp_def, (got_def, exp_def)
    for got, exp in zip(got_leaves, exp_leaves, strict=True):
        assert type(got) is type(exp)
        if isinstance(got, torch.Tensor):
            assert got.dtype == exp.dtype and torch.equal(got, exp), step
        elif isinstance(got, np.ndarray):
            assert got.dtype == exp.dtype and got.tobytes() == exp.tobytes(), step
        else:
            assert got == exp, (got, exp)


# --------------------------------------------------------------------------------------------
# The driver (runs in a subprocess)
# --------------------------------------------------------------------------------------------


def _fork(target: Any, crash_point: str | None = None) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        if crash_point is not None:
            from fnn.checkpoint import _save

            def hook(name: str) -> None:
                if name == crash_point:
                    os.kill(os.getpid(), signal.SIGKILL)

            _save._crash_hook = hook
        warnings.simplefilter("ignore")
        target()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _wait(pid: int) -> str:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if LEFTOVER.search(p.name))


def _manager(directory: Path) -> Manager:
    return Manager(directory, max_to_keep=2, keep_every_n_steps=4)


def _save_forever_with_manager(directory: Path) -> None:
    mgr = _manager(directory)
    step = mgr.latest_step() + 1
    while True:
        mgr.save(step, tree_at(step))
        step += 1


def _save_forever_to_one_path(path: Path) -> None:
    step = fnn.checkpoint.restore(path)["step"] + 1
    while True:
        fnn.checkpoint.save(path, tree_at(step), metadata={"step": step})
        step += 1


def _saved_step(root: Path, mode: str) -> int:
    """The newest complete step on disk, read cheaply (manifests only) while a child saves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if mode == "manager":
                return _manager(root).latest_step()
            return fnn.checkpoint.read_metadata(root / "ckpt").get("step", 0)
        except (OSError, fnn.checkpoint.CheckpointError):  # caught between two renames
            return -1


def _kill_at_random(pid: int, root: Path, mode: str, rng: random.Random, patient: bool) -> None:
    """SIGKILL ``pid`` after a random delay; if ``patient``, only once it has saved a new step
    (so that every run makes progress however slow the disk is)."""
    if patient:
        before = _saved_step(root, mode)
        deadline = time.monotonic() + 120
        while _saved_step(root, mode) <= before and time.monotonic() < deadline:
            time.sleep(0.002)
    time.sleep(rng.uniform(0.01, 0.3))
    os.kill(pid, signal.SIGKILL)


def random_kills(root: Path, mode: str, rng: random.Random) -> list[dict]:
    """Kill a saving process ``KILLS`` times at random; check what it left after each kill."""
    root.mkdir()
    path = root / "ckpt"
    if mode == "manager":
        _manager(root).save(0, tree_at(0))
        target = lambda: _save_forever_with_manager(root)  # noqa: E731
    else:
        fnn.checkpoint.save(path, tree_at(0), metadata={"step": 0})
        target = lambda: _save_forever_to_one_path(path)  # noqa: E731
    kills, last = [], 0
    for i in range(KILLS):
        pid = _fork(target)
        _kill_at_random(pid, root, mode, rng, patient=i % 2 == 1)
        status = _wait(pid)
        assert status == f"signal {signal.SIGKILL}", f"the saving process ended by itself: {status}"
        leftovers = _leftovers(root)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if mode == "manager":
                mgr = _manager(root)
                steps = mgr.all_steps()
                latest = mgr.latest_step()
                assert steps and latest == steps[-1], (steps, latest)
                for step in steps:  # every complete checkpoint restores, verified, and matches
                    check(mgr.restore(step), step)
            else:
                tree = fnn.checkpoint.restore(path)
                latest = steps = tree["step"]
                check(tree, latest)
        assert latest >= last, f"the latest step went back from {last} to {latest}"
        kills.append(
            {
                "latest": latest,
                "steps": steps,
                "leftovers": leftovers,
                "path_missing": not path.exists() if mode == "single" else None,
                "warnings": [str(w.message)[:120] for w in caught],
            }
        )
        last = latest
    if mode == "manager":  # one more save, not killed: retention and cleanup catch up
        mgr = _manager(root)
        mgr.save(last + 1, tree_at(last + 1))
        kills.append({"final_steps": mgr.all_steps(), "leftovers": _leftovers(root)})
    return kills


def crash_points(root: Path) -> list[dict]:
    """Kill a save exactly at each point of its sequence, as a first save and as an overwrite."""
    root.mkdir()
    out = []
    for overwrite in (False, True):
        for point in POINTS:
            path = root / f"{'overwrite' if overwrite else 'first'}-{point}"
            if overwrite:
                fnn.checkpoint.save(path, tree_at(1))
            pid = _fork(lambda path=path: fnn.checkpoint.save(path, tree_at(2)), point)
            status = _wait(pid)
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                try:
                    tree = fnn.checkpoint.restore(path)
                except FileNotFoundError:
                    tree = None
            if tree is not None:
                check(tree, tree["step"])
            leftovers = [n for n in _leftovers(root) if n.startswith(path.name + ".")]
            # the next save after the crash works and cleans up
            fnn.checkpoint.save(path, tree_at(3))
            check(fnn.checkpoint.restore(path), 3)
            after = [n for n in _leftovers(root) if n.startswith(path.name + ".")]
            out.append(
                {
                    "overwrite": overwrite,
                    "point": point,
                    "status": status,
                    "restored": None if tree is None else tree["step"],
                    "leftovers": [LEFTOVER.search(n)[1] for n in leftovers],
                    "leftovers_after_next_save": after,
                }
            )
    return out


def driver(root: Path) -> dict:
    torch.set_num_threads(1)  # no OpenMP threads in the process that forks
    rng = random.Random(SEED)
    report: dict[str, Any] = {}
    for name, run in (
        ("manager", lambda: random_kills(root / "manager", "manager", rng)),
        ("single", lambda: random_kills(root / "single", "single", rng)),
        ("points", lambda: crash_points(root / "points")),
    ):
        try:
            report[name] = run()
        except BaseException:
            report[name] = {"error": traceback.format_exc()}
    return report


# --------------------------------------------------------------------------------------------
# The tests (run the driver once, check its report)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    result = subprocess.run(
        [sys.executable, __file__, str(root)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _part(report: dict, name: str) -> Any:
    part = report[name]
    assert not (isinstance(part, dict) and "error" in part), part.get("error")
    return part


def test_a_manager_killed_at_random_moments_always_leaves_checkpoints_that_restore(report):
    *kills, final = _part(report, "manager")
    assert len(kills) == KILLS
    latest = [k["latest"] for k in kills]
    assert latest == sorted(latest) and latest[-1] >= KILLS // 2  # progress, never backwards
    # A kill between a save and its retention pass may leave one step too many; the next save
    # catches up: the newest two plus the multiples of 4, and no leftovers.
    steps = final["final_steps"]
    assert steps[-1] == latest[-1] + 1
    assert steps == sorted({s for s in range(steps[-1] + 1) if s % 4 == 0} | set(steps[-2:]))
    assert final["leftovers"] == []


def test_a_save_to_one_path_killed_at_random_moments_always_restores(report):
    kills = _part(report, "single")
    assert len(kills) == KILLS
    latest = [k["latest"] for k in kills]
    assert latest == sorted(latest) and latest[-1] >= KILLS // 2


# What restore(path) must give after a kill at each point: 1 is the previous checkpoint, 2 the
# new one, None nothing (a first save killed before its tmp directory was complete).
EXPECTED = {
    (False, "tensors_written"): (None, ["tmp"]),
    (False, "tmp_complete"): (2, ["tmp"]),  # path missing: the complete tmp is read
    (False, "old_renamed_aside"): (2, []),  # a first save never reaches this point: completes
    (False, "renamed_in"): (2, []),
    (False, "old_deleted"): (2, []),
    (True, "tensors_written"): (1, ["tmp"]),
    (True, "tmp_complete"): (1, ["tmp"]),
    (True, "old_renamed_aside"): (2, ["old", "tmp"]),  # path missing: the complete tmp is read
    (True, "renamed_in"): (2, ["old"]),
    (True, "old_deleted"): (2, []),
}


def test_a_kill_at_each_point_of_the_save_sequence_leaves_the_old_or_the_new_checkpoint(report):
    points = _part(report, "points")
    assert len(points) == len(EXPECTED)
    for p in points:
        restored, leftovers = EXPECTED[(p["overwrite"], p["point"])]
        reached = p["overwrite"] or p["point"] not in ("old_renamed_aside", "old_deleted")
        assert p["status"] == (f"signal {signal.SIGKILL}" if reached else "exit 0"), p
        assert p["restored"] == restored, p
        assert sorted(p["leftovers"]) == leftovers, p
        assert p["leftovers_after_next_save"] == [], p


if __name__ == "__main__":
    print(json.dumps(driver(Path(sys.argv[1]))))
