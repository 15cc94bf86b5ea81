"""Smoke tests: the examples run end to end and print what they promise."""

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
