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


def trim_heap() -> None:
    """Hand the heap's free memory back to the kernel (glibc ``malloc_trim``); nothing elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
