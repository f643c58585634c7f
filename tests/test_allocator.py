"""dyntex.allocator: freed large blocks go back to the system instead of staying resident."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from dyntex import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# After one 28 MB block is freed, glibc's default dynamic threshold serves the next blocks of up to
# 28 MB from the heap; with a small live block after each, the freed 24 MB blocks stay resident.
PROBE = """
import dyntex, torch
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
first = torch.ones(7 << 20); del first
before = rss()
keep = []
for _ in range(3):
    a = torch.ones(6 << 20)
    keep.append(torch.ones(1 << 10))
    del a
print(rss() - before)
"""


def _retained(threshold: str | None) -> int:
    env = dict(os.environ)
    env.pop(allocator.ENV_VAR, None)
    if threshold is not None:
        env[allocator.ENV_VAR] = threshold
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the mmap threshold is a glibc setting")
def test_freed_blocks_are_returned_with_the_fixed_threshold():
    assert _retained(None) < 4 << 20          # import dyntex fixes it at 16 MiB
    assert _retained("0") >= 20 << 20         # glibc's own dynamic threshold keeps them


@pytest.mark.skipif(not GLIBC, reason="the mmap threshold is a glibc setting")
def test_fix_mmap_threshold_reports_what_it_did():
    assert allocator.fix_mmap_threshold(allocator.MMAP_THRESHOLD) is True
    assert allocator.fix_mmap_threshold(0) is False
    assert allocator.fix_mmap_threshold(allocator.MAX_THRESHOLD + 1) is False  # above the cap
    allocator.fix_mmap_threshold()  # back to the default for the rest of the session
