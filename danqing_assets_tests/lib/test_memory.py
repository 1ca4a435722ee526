"""`lib/memory.trim`: freed memory goes back to the OS between a step's phases."""

import platform

import pytest

from danqing_assets.lib import memory


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"),
                    reason="malloc_trim is glibc's")
def test_trim_gives_freed_heap_memory_back():
    """Many small Python objects freed leave glibc's heap holding their pages (a block at its top keeps the rest in
    place); `trim()` returns them: resident memory falls by at least half of what the objects took."""
    memory.trim()
    before = _rss()
    blocks = [bytearray(600) for _ in range(300_000)]  # ~200 MB through malloc (over pymalloc's 512-byte limit)
    keep = blocks[-1]
    grown = _rss() - before
    del blocks
    held = _rss() - before
    memory.trim()
    after = _rss() - before
    assert grown > 150e6
    assert after < held - grown / 2, (grown, held, after)
    assert len(keep) == 600


def test_trim_leaves_arrow_and_numpy_usable():
    import numpy as np
    import pyarrow as pa

    arr = pa.array(["甲乙丙"] * 100_000)
    memory.trim()
    assert arr[99_999].as_py() == "甲乙丙"
    assert pa.array(np.arange(10)).to_pylist() == list(range(10))
