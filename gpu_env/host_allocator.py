"""Keep freed host memory in the process, so CPU training stops paying page faults (glibc).

On a CPU every PPO minibatch and env step allocates and frees tensors of tens of MiB (the
minibatch's observation planes, their activations and gradients, a row chunk's masks and
logits). glibc serves every block above its mmap threshold (at most 32 MiB) with fresh ``mmap``
pages and unmaps them on free, and trims freed memory at the top of its heap, so each
iteration faults the same gigabytes in again: the README main job took 208 million minor page
faults and 435 s of system time in a 19-minute run (2026-11-30, 2 threads). ``keep_freed_memory()``
tells glibc (``mallopt``) to serve every block from its heaps (``M_MMAP_MAX = 0``) and to keep up
to 1 GiB of free memory at the top of a heap (``M_TRIM_THRESHOLD``), so freed blocks are reused
by the next step instead of being returned and faulted in again: three PPO iterations of the
main job went from 3.7 million minor faults and 6.7 s of system time to 12 faults and 0.07 s.
Results are unchanged (only where memory comes from changes; ``tests/test_host_allocator.py``
trains twice and compares the weights bit for bit); peak resident memory rose ~5 %.

Heap-only allocation also keeps the one-off temporaries of building a run (generating and
resizing 1,024 images, precomputing their first clicks) resident and fragments the heap: the
main job's peak went from 4.8 to 7.0 GB when it was set before the trainer was built. So the
commands that build a large dataset set it after the build, for the work that repeats
(``freed_memory_kept()`` around training, the mask prior and evaluation: peak 4.9 GB, the same
speed), and hand the memory back when the block ends.

It changes the whole process, so library code never calls it: the commands do
(``sam2click-train`` and ``-seeds`` around each run's training and evaluation, ``-baselines``
around its prior training and evaluation, ``-evaluate`` at its entry point, its setup being
small), and so do the benchmarks, which measure what those commands get
(``--bench-system-allocator`` measures without it). Library code
may ask ``keeps_freed_memory()``: ``ClickEnv`` then runs its CPU steps over the whole batch
instead of 32-row chunks, since a whole-batch working set no longer costs page faults. A no-op
returning False where the C library has no ``mallopt`` (macOS, musl) or refuses the values.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator

__all__ = ["freed_memory_kept", "keep_freed_memory", "keeps_freed_memory", "TRIM_THRESHOLD"]

TRIM_THRESHOLD = 1 << 30
"""Bytes of free memory at the top of a heap kept before glibc returns it to the OS."""

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's defaults, restored when a freed_memory_kept() block ends
_DEFAULT_TRIM_THRESHOLD = 128 * 1024

_keeping = False  # set by keep_freed_memory(), cleared when the freed_memory_kept() block that
# set it ends


@functools.cache
def _libc():
    """glibc's ``mallopt``/``malloc_trim`` holder, or None where there is none (loaded once)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Serve every allocation from glibc's heaps and keep freed memory (see the module
    docstring). True if both settings were accepted."""
    libc = _libc()
    if libc is None:
        return False
    global _keeping
    _keeping = (bool(libc.mallopt(_M_MMAP_MAX, 0))
                and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    return _keeping


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Keep freed memory inside the block (``keep_freed_memory``, yielding whether it took
    effect); after it, glibc's default settings again and the free heap memory handed back to the
    OS (``malloc_trim``). For the repeated work of a command, after its one-off setup. Inside a
    process that already keeps freed memory (an entry point's ``keep_freed_memory()``, an
    enclosing block) it changes nothing, and leaves that choice in place when it ends."""
    global _keeping
    if _keeping:
        yield True
        return
    on = keep_freed_memory()
    try:
        yield on
    finally:
        libc = _libc() if on else None
        if libc is not None:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
            _keeping = False


def keeps_freed_memory() -> bool:
    """Whether ``keep_freed_memory()`` took effect in this process (an entry point called it)."""
    return _keeping
