"""glibc's allocator, set up for the CPU engine's large tensors.

glibc hands every allocation above its mmap threshold (which it raises, as frees happen, up
to 32 MB) a fresh mapping of zero pages and returns it when freed: a 1080p frame's
intermediate tensors then cost page faults on every use, and glibc's own heuristics decide
how much freed memory it keeps. The CPU engine fixes the threshold at 32 MB and keeps up to
1 GiB freed at the top of the heap (measured: the CPU path 20-30% faster, peak memory
+0.7 GB at 1080p, see bench/RESULTS.md). Nothing changes where a ``MALLOC_*`` environment
variable already tunes glibc (the user's choice wins) or the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

__all__ = ["SETTINGS", "tune"]

log = logging.getLogger("vsdsfn")

#: mallopt(3) parameter -> value: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD
SETTINGS = {-3: 32 * 2**20, -1: 2**30, -2: 2**30}


@functools.cache
def tune() -> bool:
    """Apply :data:`SETTINGS` once per process; whether they were applied."""
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version   # only glibc has the second
    except (OSError, AttributeError, TypeError):   # not glibc (musl, macOS, Windows)
        return False
    ok = all(mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in SETTINGS.items())
    log.debug("glibc's allocator tuned for large tensors: %s", ok)
    return ok
