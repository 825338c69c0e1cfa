"""Keep a long-lived, many-threaded process's memory from ratcheting up (glibc's malloc).

glibc gives each thread that contends for the heap its own arena (up to 8 per core), and
frees into the arena rather than back to the system; buffers under its mmap threshold, which
rises by itself up to 32 MB as large blocks are freed, come from those arenas. In `toolkit
serve` that meant: a 49-megapixel upload decoded in one worker thread left its 300 MB in that
thread's arena, the next in another's, and eight of them left the server at 3 GB although only
one was ever decoded at a time; steady search traffic over uvicorn's 40 worker threads kept
growing the same way. Two arenas and a fixed 1 MB threshold (so image planes and large arrays
are mapped and unmapped whole) keep the resident size close to what is in use.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def bound_malloc(arenas: int = 2, mmap_threshold: int = 1 << 20) -> bool:
    """Set glibc's arena count and mmap threshold for this process (True if it took). Call
    it early, before threads start; elsewhere than glibc it does nothing."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas)) and bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))

