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


_HEAP_PROBE = """
import sys
import numpy as np
from cxnlp.memory import bound_heap
bounded = sys.argv[1] == "1" and bound_heap()
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) / 1024 for l in fh if l.startswith("VmRSS"))
big = np.ones(4_000_000); del big  # 32 MB, freed: glibc raises its mmap threshold to 32 MB
blocks = [np.ones(1_000_000) for _ in range(40)]  # 40 x 8 MB, under that threshold: from the heap
before = rss(); del blocks[::2]  # 160 MB freed between live blocks
print(bounded, before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or _libc() is None, reason="glibc only")
@pytest.mark.parametrize("bounded", [True, False])
def test_memory_bound_heap_returns_large_freed_blocks_at_once(bounded, monkeypatch):
    import subprocess

    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    out = subprocess.run(
        [sys.executable, "-c", _HEAP_PROBE, "1" if bounded else "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == str(bounded)
    freed = float(out[1])
    if bounded:  # each 8 MB block had its own mapping, unmapped when freed
        assert freed > 120
    else:  # glibc's default: the 160 MB stay in the heap (this is what bound_heap is for)
        assert freed < 40


def test_memory_bound_heap_leaves_a_tuned_malloc_alone(monkeypatch):
    from cxnlp.memory import bound_heap

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert bound_heap() is False
