"""dyntex.allocator: an explicit call (made by the CLI, never by an import); with it, freed large
blocks go back to the system instead of staying resident."""
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
from dyntex import allocator
allocator.configure()
import torch
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
    assert _retained(None) < 4 << 20          # configure() fixes it at 16 MiB
    assert _retained("0") >= 20 << 20         # glibc's own dynamic threshold keeps them


@pytest.mark.skipif(not GLIBC, reason="the mmap threshold is a glibc setting")
def test_fix_mmap_threshold_reports_what_it_did():
    assert allocator.fix_mmap_threshold(allocator.MMAP_THRESHOLD) is True
    assert allocator.fix_mmap_threshold(0) is False
    assert allocator.fix_mmap_threshold(allocator.MAX_THRESHOLD + 1) is False  # above the cap
    allocator.fix_mmap_threshold()  # back to the default for the rest of the session


def _run(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != allocator.THP_ENV_VAR}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True,
                          text=True, timeout=120, check=True).stdout.strip()


def test_importing_dyntex_changes_nothing():
    code = "import os, sys, dyntex; print(os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)"
    assert _run(code) == "None False"


def test_configure_turns_on_huge_pages_before_torch_unless_the_user_chose():
    code = ("import os; from dyntex import allocator; done = allocator.configure(); "
            "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), done['huge_pages'])")
    assert _run(code) == "1 True"
    assert _run(code, THP_MEM_ALLOC_ENABLE="0") == "0 False"
    # after torch's import the switch would be a lie: left alone
    late = "import torch; " + code
    assert _run(late) == "None False"


def test_the_command_configures_the_allocator():
    code = ("import os; from click.testing import CliRunner; import cli; "
            "CliRunner().invoke(cli.main, ['report', 'no_such_run']); "
            "print(os.environ.get('THP_MEM_ALLOC_ENABLE'))")
    assert _run(code) == "1"
