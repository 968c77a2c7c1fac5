"""Handing freed heap memory back to the operating system.

XLA's CPU compiler (LLVM) allocates and frees hundreds of MiB per stage; glibc's
malloc keeps the freed pages in its arenas, so a run's resident memory only grows,
stage after stage. `release_free_memory` asks glibc to return them
(`malloc_trim(0)`): a trim after each stage's compile lowers the peak resident
memory at the same wall time (docs/performance.md, "Where the memory goes").
Elsewhere (another C library, another OS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _trim():
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # musl and others: no malloc_trim
        return None


def release_free_memory() -> bool:
    """Returns freed heap pages to the OS where glibc can; whether it could."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True


def forget_compiled() -> None:
    """Empties JAX's in-memory caches of traced and compiled programs and hands
    the freed pages back. Between two training stages these hold the programs
    of every eager operation and helper the stages before ran (hundreds of MiB
    by the last stage at 64 px); the stage's own programs are compiled ahead of
    time and held elsewhere, and the persistent compilation cache is untouched.
    Figures: docs/performance.md ("What changed memory")."""
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    release_free_memory()


def resident_mib() -> tuple[float, float] | None:
    """(current, peak) resident memory of this process in MiB; None where the
    OS does not say (Linux /proc and getrusage only)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB
        return pages * resource.getpagesize() / 2**20, peak
    except (OSError, ImportError, ValueError, IndexError):
        return None
