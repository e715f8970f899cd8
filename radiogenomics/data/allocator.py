"""Keep freed memory in the process while volumes are prepared, instead of unmapping it.

glibc serves every allocation over its mmap threshold (at most 32 MB) with a fresh mapping
and unmaps it when freed, so each full-size series (a 200-400 MB float32 stack, then its
resampling passes) first-touches new pages, one fault per 4 kB: ~20% of cache preparation
on the scale benchmark. `keep_freed_memory` turns those mappings off for its duration
(``M_MMAP_MAX = 0``) and stops trimming the heap (``M_TRIM_THRESHOLD``), so the pages of one
patient are reused by the next; on exit it restores glibc's defaults and hands the freed
memory back (``malloc_trim``). The resident peak is the largest patient's, as before. A
no-op where the C library is not glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
"""glibc's mallopt parameters (malloc.h)."""
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
"""glibc's defaults for them."""
KEEP_TRIM_THRESHOLD = 2**31 - 1
"""Trim the heap only when this much (2 GB) lies free at its top."""


@cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``mallopt`` and ``malloc_trim``)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory_for_good() -> bool:
    """Turn the mappings and trimming off for the rest of the process (a worker's); whether
    it could."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD,
                                                            KEEP_TRIM_THRESHOLD))


@contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Within: freed memory stays in the process for the next allocation; after: glibc's
    defaults and the freed memory returned to the system."""
    changed = keep_freed_memory_for_good()
    try:
        yield
    finally:
        if changed:
            libc = _glibc()
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
