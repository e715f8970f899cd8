"""Cache preparation keeps freed memory for the next patient, and gives it back after."""

from __future__ import annotations

import os

import numpy as np
import pytest

from radiogenomics.data import allocator

pytestmark = pytest.mark.skipif(
    allocator._glibc() is None or not os.path.exists("/proc/self/statm"),
    reason="glibc's allocator on Linux only")


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _touch_and_free(mb: int) -> None:
    array = np.ones(mb * 2**20 // 8)  # every page written
    del array


def test_freed_volumes_stay_in_the_process_while_preparing_and_leave_after() -> None:
    before = _resident_mb()
    with allocator.keep_freed_memory():
        _touch_and_free(300)
        kept = _resident_mb()  # freed, yet still the process's: the next patient reuses it
        _touch_and_free(300)
        assert _resident_mb() < kept + 50  # reused, not mapped anew
    after = _resident_mb()
    assert kept > before + 250
    assert after < kept - 250  # handed back on the way out
    _touch_and_free(300)  # glibc's defaults again: a large array is unmapped when freed
    assert _resident_mb() < after + 50
