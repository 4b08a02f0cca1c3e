"""glibc's allocator, set up for the CPU engine's large tensors.

By default glibc gives each allocation above its mmap threshold (raised as frees happen,
up to 32 MB) fresh zero pages and unmaps it when freed, so a 1080p frame's intermediate
tensors fault in new pages on every pass. A CPU engine fixes the threshold at 32 MB and
keeps up to 1 GiB freed at the top of a heap for reuse: faster, for a higher peak RSS.
Nothing changes where a ``MALLOC_*`` environment variable is set (the user tunes glibc)
or the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

__all__ = ["SETTINGS", "release", "tune"]

log = logging.getLogger("vsdsfn")

#: mallopt(3) parameter -> value: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD
SETTINGS = {-3: 32 * 2**20, -1: 2**30, -2: 2**30}


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library where it is glibc, loaded once; else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version   # only glibc has it
    except (OSError, AttributeError, TypeError):   # not glibc (musl, macOS, Windows)
        return None
    return libc


@functools.cache
def tune() -> bool:
    """Apply :data:`SETTINGS` once per process; whether they were applied."""
    libc = _glibc()
    if libc is None or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    ok = all(libc.mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in SETTINGS.items())
    log.debug("glibc's allocator tuned for large tensors: %s", ok)
    return ok


def release() -> bool:
    """Return the freed memory kept at the top of the heaps (up to 1 GiB with :func:`tune`)
    to the system (glibc's ``malloc_trim``), as a closed CPU engine does; whether it ran."""
    libc = _glibc()
    if libc is None or not tune():
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True
