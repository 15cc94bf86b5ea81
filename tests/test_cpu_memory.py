"""fnn's CPU allocator policy: large blocks are reused under "keep", and the user's choice wins.

The policy is process-wide, so each claim runs in a fresh interpreter. The checks read glibc's
own counters (``mallinfo2().hblks``: blocks served by mmap) and the page-fault count of the
process; nothing is timed.
"""

import json
import os
import subprocess
import sys

import pytest

import fnn

# Allocates a 64 MiB tensor, writes it and frees it, five times; reports the policy, how many
# mmap-ed blocks the live tensor added, and the minor page faults of the last round. (Under "keep"
# the first two rounds may grow the heap: small allocations can take the start of a freed block.)
PROBE = r"""
import ctypes, json, resource, sys
import fnn, torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if len(sys.argv) > 1:
    fnn.set_cpu_memory_policy(sys.argv[1])

def round_trip():
    before = libc.mallinfo2().hblks
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    big = torch.empty(16 << 20)
    big.fill_(1.0)
    mmapped = libc.mallinfo2().hblks - before
    del big
    return mmapped, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

for _ in range(4):
    round_trip()
mmapped, faults = round_trip()
print(json.dumps({"policy": fnn.cpu_memory_policy(), "mmapped": mmapped, "faults": faults}))
"""

FAULTS_OF_64_MIB = (64 << 20) // 4096


def _probe(*args: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "FNN_CPU"))}
    clean.pop("GLIBC_TUNABLES", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_by_default_a_freed_large_tensor_is_reused_without_page_faults():
    keep = _probe()
    assert keep["policy"] == "keep"
    assert keep["mmapped"] == 0
    # A fresh 64 MiB mapping would fault 16,384 pages in; the reused heap block faults none.
    assert keep["faults"] < FAULTS_OF_64_MIB // 10, keep


def test_release_policy_and_opt_out_give_large_blocks_back_to_the_system():
    released = _probe("release")
    assert released["policy"] == "release"
    assert released["mmapped"] == 1
    system = _probe(FNN_CPU_MEMORY="system")
    assert (system["policy"], system["mmapped"]) == ("system", 1)


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_MMAP_THRESHOLD_": "65536"},
        {"MALLOC_ARENA_MAX": "2"},
        {"MALLOC_CONF": "background_thread:true"},  # jemalloc's variable: a tuned allocator
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
    ],
)
def test_an_environment_that_tunes_malloc_is_left_alone(env):
    assert _probe(**env)["policy"] == "system"


def test_a_bad_environment_value_is_an_error_naming_the_variable():
    done = subprocess.run(
        [sys.executable, "-c", "import fnn"],
        env=dict(os.environ, FNN_CPU_MEMORY="fast"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "FNN_CPU_MEMORY='fast'" in done.stderr
    assert "'keep'" in done.stderr


def test_a_bad_policy_is_an_error_listing_the_choices():
    with pytest.raises(ValueError, match=r"expected 'keep' or 'release', got 'system'"):
        fnn.set_cpu_memory_policy("system")


def test_freed_memory_stays_until_release_cpu_memory_returns_it():
    script = r"""
import fnn, torch
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) // 1024
big = torch.ones(64 << 20)          # 256 MiB
pin = torch.ones(1 << 10)           # the freed block may or may not end up at the heap's top
peak = rss_mb()
del big
before = rss_mb()
released = fnn.release_cpu_memory()
print(fnn.cpu_memory_policy(), released, peak - before, before - rss_mb())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "FNN_CPU"))}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    policy, released, dropped_on_del_mb, dropped_on_release_mb = done.stdout.split()
    assert (policy, released) == ("keep", "True")
    assert int(dropped_on_del_mb) < 50  # "keep": the 256 MiB stay in the process for reuse
    assert int(dropped_on_release_mb) >= 200
