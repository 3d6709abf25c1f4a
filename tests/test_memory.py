from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest

from cxnlp.memory import POOL_ENV, _libc, system_arrow_pool, trim_heap


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_system_arrow_pool_is_used_inside_the_block_and_restored(monkeypatch):
    monkeypatch.delenv(POOL_ENV, raising=False)
    before = pa.default_memory_pool().backend_name
    with system_arrow_pool():
        assert pa.default_memory_pool().backend_name == "system"
        made = pa.array(np.arange(10_000))
    assert pa.default_memory_pool().backend_name == before
    assert made.to_numpy().sum() == 49_995_000  # a buffer made inside stays valid outside


def test_memory_a_pool_the_user_chose_is_left_alone(monkeypatch):
    monkeypatch.setenv(POOL_ENV, "mimalloc")
    before = pa.default_memory_pool().backend_name
    with system_arrow_pool():
        assert pa.default_memory_pool().backend_name == before


@pytest.mark.skipif(not sys.platform.startswith("linux") or _libc() is None, reason="glibc only")
def test_memory_trim_heap_hands_freed_heap_memory_back():
    # 4,000 blocks of 64 KB (below glibc's mmap threshold: they come from the heap); every other one is
    # freed, so the free memory lies between live blocks, where free() alone never returns it.
    blocks = [np.ones(8192) for _ in range(4000)]
    del blocks[::2]
    held = _rss_mb()
    trim_heap()
    assert held - _rss_mb() > 60  # about 125 MB were free
    assert sum(float(b[0]) for b in blocks) == 2000.0
