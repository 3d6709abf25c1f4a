"""Keeping a long batch run's resident memory close to what it holds.

Two things make the resident set of a run over millions of reviews grow past its live data: Arrow's
default allocator (mimalloc) keeps freed pages for reuse, and glibc's ``malloc`` keeps freed memory
below the top of its heap (and raises its mmap threshold after large blocks are freed, so later large
temporaries land on that heap too). Measured on the reduce phase of 1M reviews in
``benchmarks/README.md``: the reduce columns of 1M reviews' chunks (585 MB of Arrow data) took 869 MB of
resident memory to load with mimalloc and 660 MB with the system allocator.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import pyarrow as pa

POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


@contextlib.contextmanager
def system_arrow_pool() -> Iterator[None]:
    """Arrow allocates from the system allocator inside the block (buffers made there keep it when
    freed later), unless the user chose a pool with ``ARROW_DEFAULT_MEMORY_POOL``."""
    if os.environ.get(POOL_ENV):
        yield
        return
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


@lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    return libc


# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Blocks this large or larger get their own mapping, returned to the kernel when freed. glibc starts at
#: 128 KB and raises it to the largest block freed (up to 32 MB); fixed here. Not lower: at 128 KB every
#: array of a cluster's members was mapped and faulted in afresh, and the cluster step of 100k reviews
#: took 24 s instead of 18 (``benchmarks/README.md``).
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Free memory at the heap's top kept for reuse rather than handed back at each ``free`` (fixing the mmap
#: threshold would otherwise fix this at 128 KB too); :func:`trim_heap` hands it back between phases.
TRIM_THRESHOLD = 64 * 1024 * 1024
#: malloc arenas: Arrow's and NumPy's worker threads would otherwise each get one, up to 8 per core,
#: and every arena keeps its own freed memory.
ARENA_MAX = 2
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")


def bound_heap() -> bool:
    """For the rest of the process, glibc gives blocks of :data:`MMAP_THRESHOLD` or more their own
    mapping and uses at most :data:`ARENA_MAX` arenas. By default glibc raises the mmap threshold to the
    size of the largest block freed (up to 32 MB), so after the first large temporary, arrays of up to
    that size come from the heap, where memory freed between live blocks is never returned; on the
    reduce phase of 1M reviews that kept well over 100 MB more resident (``benchmarks/README.md``).

    Nothing is changed where the user tuned malloc through its environment variables. Returns whether
    the settings were made (glibc only)."""
    libc = _libc()
    if libc is None or any(os.environ.get(k) for k in _MALLOC_ENV):
        return False
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_ARENA_MAX, ARENA_MAX),
    )
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def trim_heap() -> None:
    """Hand the heap's free memory back to the kernel (glibc ``malloc_trim``); nothing elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
