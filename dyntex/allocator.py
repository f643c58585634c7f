"""Process-wide settings of the memory allocators under PyTorch's CPU tensors (``import dyntex``).

Two settings, both the same values in other memory, each with an environment switch:

* ``THP_MEM_ALLOC_ENABLE=1`` (set in :mod:`dyntex` before torch is imported, unless already set):
  PyTorch backs CPU tensors of 2 MB and more with transparent huge pages, so the hundreds of MB
  that each iteration allocates afresh cost 512x fewer page faults.
* A fixed glibc ``M_MMAP_THRESHOLD`` (:func:`fix_mmap_threshold`, ``DYNTEX_MMAP_THRESHOLD``
  bytes, default 16 MiB, 0 to leave glibc alone). By default glibc raises the threshold to the
  size of every mapped block that is freed (up to 32 MiB), after which blocks of up to that size
  come from the heap, where freed memory stays resident and fragments: a paper-size iteration's
  16-32 MB temporaries then hold hundreds of MB that no tensor uses. With the threshold fixed,
  every block from 16 MiB up is mapped on allocation and returned on free (`dyntex speed --preset
  paper` on 2 cores, ``DYNTEX_MMAP_THRESHOLD=0`` vs unset: peak RSS 4.11 -> 3.83 GB, resident
  between iterations about 3.6 -> 3.3 GB, speed unchanged within the run-to-run noise). Smaller blocks stay on the heap, where reusing them
  costs no page faults: at 4 MiB the fast preset's 8 MB activations were mapped afresh on every
  call and its iteration took 20 % longer.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MMAP_THRESHOLD = 16 << 20
MAX_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
ENV_VAR = "DYNTEX_MMAP_THRESHOLD"
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


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
