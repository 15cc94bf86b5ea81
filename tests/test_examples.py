"""Smoke tests: the examples run end to end and print what they promise."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_trains_on_digits_and_learns():
    out = run_example("demo.py", "--epochs", "3")
    assert "1437 training and 360 test images" in out
    accuracy = float(out.split("test accuracy")[-1].split()[0])
    assert accuracy > 0.85, out


def test_train_digits_trains_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ("--epochs", "4", "--no-jit", "--out", str(out))
    first = run_example("train_digits.py", *args, "--stop-after", "2")  # as if killed
    assert "1437 training and 360 test images" in first
    assert (out / "curves.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 44 and summary["test_accuracy"] > 0.5, summary
    # the last two epochs from the checkpoint: the run goes on at step 44, not from scratch
    resumed = run_example("train_digits.py", *args, "--resume")
    assert "resumed from step 44 (epoch 2)" in resumed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 88 and summary["test_accuracy"] > 0.8, summary
