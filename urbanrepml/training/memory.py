"""Process memory settings for full-area training on CPU.

glibc serves allocations below its (dynamic, up to 32 MB) mmap threshold from
the heap, and a heap freed in the middle cannot shrink: a full-batch backward
pass, which frees and allocates many same-sized ``N x D`` buffers, kept its peak
up to twice over until the GCN blocks allocated their kept tensors up front
(:mod:`urbanrepml.models.layers`); cone batches of varying sizes still make the
heap creep with every step. :func:`limit_heap_fragmentation` fixes the threshold at
``threshold_bytes`` (default 64 KiB), so tensors and index arrays are mmapped and go
back to the system when freed; the price is a page fault storm on every large
allocation (about 2x slower full-batch epochs on CPU). The trainer applies it
when ``URBANREPML_LOW_MEMORY=1``. It is a no-op off glibc. Figures in docs/fusion.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3
_applied: int | None = None


def limit_heap_fragmentation(threshold_bytes: int = 64 << 10) -> bool:
    """Set glibc's mmap threshold (once per process); True when applied."""
    global _applied
    if _applied is not None:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        return False
    if ok:
        _applied = threshold_bytes
    return ok
