"""Keep freed host memory in the process, so CPU env steps stop paying page faults (glibc).

On a CPU every env step allocates and frees tensors of a few MiB (a row chunk's masks, logits,
heatmaps, metric planes). glibc serves blocks above its mmap threshold with fresh ``mmap`` pages
and trims freed memory at the top of a heap back to the OS, so each step faults its pages in
again: the README main job spent ~40 % of its wall clock in the kernel (371 s of system time and
173 million minor page faults in a 15-minute run). ``keep_freed_memory()`` sets glibc's mmap
threshold to its maximum (32 MiB) and its trim threshold to 1 GiB with ``mallopt``, so freed
blocks are reused by the next step instead of being returned and faulted in again. The numbers
are unchanged (only where memory comes from changes); peak memory stays what it was, it is
just not handed back between steps.

It changes the whole process, so library code never calls it: the command entry points do
(``sam2click-train``, ``-evaluate``, ``-baselines``, ``-seeds``, ``-bench``). A no-op (returning
False) where the C library has no ``mallopt`` (macOS, musl) or it refuses the values.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Bytes: blocks below this come from the heap (glibc's maximum on 64-bit, HEAP_MAX/2)."""
TRIM_THRESHOLD = 1 << 30
"""Bytes of free memory at the top of a heap kept before glibc returns it to the OS."""

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring). True if both were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
