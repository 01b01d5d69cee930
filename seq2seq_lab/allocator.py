"""Keep freed memory in the process (glibc malloc), for the NumPy reference's large temporaries.

A Transformer step allocates and frees tens of arrays of tens of MB.  By default glibc serves each
one over 128 KB-32 MB (its adaptive threshold) from a fresh mmap and returns it to the OS when freed,
so every step page-faults all of them in again: on this project's 2-core machine that was a third of
the NumPy Transformer's `seed` training step (2.0 s -> 1.35 s with this; benchmarks/README.md).  Raising
the mmap threshold to glibc's maximum (32 MB) and the trim threshold to 1 GB keeps such blocks in the
heap for reuse.  It changes no result, only where memory comes from; elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20   # glibc's largest accepted value on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; True when it took effect (glibc), False elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
