"""Importing fnn turns on torch's huge-page allocation of large CPU tensors (fnn._src.huge_pages).

Each case runs in a fresh process, as torch reads ``THP_MEM_ALLOC_ENABLE`` once per process.
The reference is the kernel's own count of minor page faults while a 64 MB CPU tensor is first
written: 16,384 with 4 KB pages, a few hundred with 2 MB pages (about 570 measured here, as
torch aligns to 4 KB and the ends of the block take small pages).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

VARIABLE = "THP_MEM_ALLOC_ENABLE"
PAGES_4K = (64 << 20) // 4096

PROBE = """
import json, os, resource
{before}
import torch
t = torch.empty(16 << 20, device="cpu")  # 64 MB
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t.fill_(1.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
import sys
mod = sys.modules.get("fnn._src.huge_pages")
print(json.dumps({{"faults": faults, "env": os.environ.get("{var}"),
                  "by_fnn": getattr(mod, "ENABLED_BY_FNN", None)}}))
"""


def _run(before: str, env_value: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    if env_value is not None:
        env[VARIABLE] = env_value
    code = PROBE.format(before=before, var=VARIABLE)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _thp_mode() -> str:
    path = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not path.exists():
        return "never"
    text = path.read_text()
    return text[text.index("[") + 1 : text.index("]")]


# The kernel's mode decides what the variable can change: with "madvise" only memory torch
# marks gets huge pages; with "always" every large mapping does, variable or not; with "never"
# (or off Linux) none does.
MODE = _thp_mode() if sys.platform.startswith("linux") else "never"


def _assert_pages(result: dict, *, asked: bool) -> None:
    """Huge pages where the mode gives them to memory torch ``asked`` for, 4 KB pages elsewhere."""
    if MODE == "always" or (MODE == "madvise" and asked):
        assert result["faults"] < PAGES_4K / 4, result
    else:
        assert result["faults"] >= PAGES_4K * 0.9, result  # one fault per 4 KB page


def _assert_huge_pages(result: dict) -> None:
    _assert_pages(result, asked=True)


def _assert_default_pages(result: dict) -> None:
    _assert_pages(result, asked=False)


def test_import_fnn_first_gives_large_tensors_huge_pages_and_leaves_the_environment_alone():
    with_fnn = _run("import fnn")
    assert with_fnn["env"] is None  # taken out again: child processes see what the user set
    assert with_fnn["by_fnn"] is True
    _assert_huge_pages(with_fnn)


def test_fnn_optim_alone_turns_it_on_too():
    _assert_huge_pages(_run("import fnn_optim"))


def test_an_explicit_setting_of_the_variable_wins():
    off = _run("import fnn", env_value="0")
    assert off["env"] == "0"
    assert off["by_fnn"] is False
    _assert_default_pages(off)


def test_tensors_created_before_fnn_is_imported_lock_in_torch_default():
    # documented limit: c10 read the variable at the first allocation, before fnn could set it
    late = _run("import torch; torch.ones(3); import fnn")
    assert late["env"] is None
    _assert_default_pages(late)


def test_without_fnn_torch_keeps_its_default():
    _assert_default_pages(_run(""))


def test_the_allocation_that_makes_torch_read_it_is_on_the_cpu_whatever_the_default_device():
    # with a default device set first, fnn's one allocation must still reach the CPU allocator
    # (and must not start another device): else large CPU tensors would keep 4 KB pages
    meta = _run("import torch; torch.set_default_device('meta'); import fnn")
    assert meta["by_fnn"] is True
    _assert_huge_pages(meta)
