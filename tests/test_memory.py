"""agan_jax.memory: freed heap pages go back to the OS (glibc on Linux)."""

from __future__ import annotations

import os
import sys

import pytest

from agan_jax.memory import release_free_memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc on Linux")
def test_release_free_memory_returns_freed_small_blocks():
    # 1 KiB blocks stay below malloc's mmap threshold: freed, they stay in the heap.
    blocks = [bytearray(1024) for _ in range(150_000)]
    keep = blocks[-1]  # the last block pins the heap's top: free() cannot shrink it
    del blocks
    before = _rss_bytes()
    assert release_free_memory()
    after = _rss_bytes()
    assert before - after > 100 * 2**20, (before, after)
    del keep
