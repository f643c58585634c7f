"""Process-wide settings of the memory allocators under PyTorch's CPU tensors.

Nothing here runs on import. The ``dyntex`` command calls :func:`configure` first thing; a
library user who wants the same settings calls it before importing torch::

    from dyntex import allocator
    allocator.configure()
    import torch

Both settings keep the same values in other memory; each has an environment switch:

* ``THP_MEM_ALLOC_ENABLE=1``: PyTorch backs CPU tensors of 2 MB and more with transparent huge
  pages (fewer page faults on the hundreds of MB each paper-size iteration allocates afresh).
  Torch reads it once, at its first allocation, so it is set only if torch is not imported yet,
  and only if the user has not set it (0 turns it off).
* glibc's ``M_MMAP_THRESHOLD`` fixed at 16 MiB (:func:`fix_mmap_threshold`,
  ``DYNTEX_MMAP_THRESHOLD`` bytes, 0 leaves glibc's own dynamic threshold): glibc otherwise
  raises the threshold up to 32 MiB as mapped blocks are freed, and the paper iteration's
  16-32 MB temporaries then stay resident on a fragmented heap. Smaller blocks stay on the heap,
  where reusing them costs no page faults. Measurements: docs/performance.md.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

THP_ENV_VAR = "THP_MEM_ALLOC_ENABLE"
MMAP_THRESHOLD = 16 << 20
MAX_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
ENV_VAR = "DYNTEX_MMAP_THRESHOLD"
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def configure() -> dict[str, bool]:
    """Make both settings for this process; returns whether each is in force for torch's
    allocations (``huge_pages``: the switch is on and torch was not imported before it was set
    here; ``mmap_threshold``: glibc accepted it)."""
    if "torch" not in sys.modules:
        os.environ.setdefault(THP_ENV_VAR, "1")
    return {"huge_pages": huge_pages_requested(), "mmap_threshold": fix_mmap_threshold()}


def huge_pages_requested() -> bool:
    """Whether ``THP_MEM_ALLOC_ENABLE`` asks torch for huge pages (it takes effect only if it was
    set before torch's first allocation)."""
    return os.environ.get(THP_ENV_VAR, "0").strip() not in ("", "0")


def fix_mmap_threshold(nbytes: int | None = None) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (default: ``DYNTEX_MMAP_THRESHOLD`` or 16 MiB).

    Returns whether it was set: False with ``nbytes`` 0, above glibc's cap of 32 MiB, off glibc
    (macOS, Windows, musl), or when ``mallopt`` refuses."""
    if nbytes is None:
        raw = os.environ.get(ENV_VAR, "").strip()
        try:
            nbytes = int(raw) if raw else MMAP_THRESHOLD
        except ValueError:
            nbytes = MMAP_THRESHOLD
    if not 0 < nbytes <= MAX_THRESHOLD or platform.system() != "Linux" \
            or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(nbytes)))
    except (OSError, AttributeError):
        return False
