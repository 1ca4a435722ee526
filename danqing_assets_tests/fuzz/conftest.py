"""Bounds every fuzz target is held to, besides "never raises": time (`time_limit`: an endless loop in Python code
becomes a failing, shrinkable example instead of a stuck CI job; hypothesis' per-example deadline, set by the
profiles in danqing_assets_tests/conftest.py, catches the merely slow) and memory (`peak_memory`: the traced peak of one call, which counts
Python objects and the C tokenizer's PyMem buffers; Lexbor's, Pillow's and zlib's own mallocs are not traced)."""

from __future__ import annotations

import signal
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"


def corpus(prefix: str) -> list[bytes]:
    """The kept findings and seeds of one target: `corpus/<prefix>-*` (bytes as found)."""
    return [p.read_bytes() for p in sorted(CORPUS.glob(f"{prefix}-*"))]


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block after `seconds` (SIGALRM; a loop inside C code is only stopped when it returns
    to Python). pytest-timeout's own alarm, when set, is put back with its remaining time."""

    def on_alarm(signum, frame):  # noqa: ANN001, ANN202
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_left, _ = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_left:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, old_left - (time.monotonic() - started)))


@pytest.fixture
def peak_memory() -> Iterator:
    """`with peak_memory(limit):` fails when the block's traced allocations peak above `limit` bytes."""
    tracemalloc.start()

    @contextmanager
    def bounded(limit: int) -> Iterator[None]:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        yield
        peak = tracemalloc.get_traced_memory()[1] - base
        assert peak <= limit, f"peak traced memory {peak / 1e6:.1f} MB > {limit / 1e6:.1f} MB"

    try:
        yield bounded
    finally:
        tracemalloc.stop()
