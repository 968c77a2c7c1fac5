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


def test_forget_compiled_empties_jax_caches_and_results_stay():
    import jax
    import jax.numpy as jnp

    from agan_jax.memory import forget_compiled

    f = jax.jit(lambda x: jnp.sin(x) * 2.0)
    x = jnp.arange(4.0)
    before = f(x)
    assert f._cache_size() == 1
    forget_compiled()
    assert f._cache_size() == 0
    assert (f(x) == before).all() and f._cache_size() == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc on Linux")
def test_resident_mib_reads_current_and_peak():
    from agan_jax.memory import resident_mib

    current, peak = resident_mib()
    assert 10 < current <= peak + 1
    held = bytearray(64 * 2**20)  # 64 MiB, touched
    held[::4096] = b"\1" * len(held[::4096])
    now, peak_now = resident_mib()
    assert now > current + 50 and peak_now >= now - 1
    del held
