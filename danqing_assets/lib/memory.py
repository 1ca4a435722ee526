"""Giving freed memory back to the operating system between the phases of a large step.

Python's allocator, glibc's malloc and Arrow's memory pool (mimalloc) keep memory a step has freed, for reuse: after the
caption near-duplicate index of 1.3 M captions had returned, its process held 0.32 GB more than before it started,
of which `trim()` gave back 0.25 GB. Left there, that memory stacks under the DuckDB queries that follow (each up to
its own memory limit), and the step's peak is the sum.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def trim() -> None:
    """Return the free memory of Arrow's pool and of glibc's heap to the OS (a no-op where neither applies)."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception as exc:  # noqa: BLE001 - releasing is an optimisation; a failure must not fail the step
        log.debug("Arrow pool release failed: %s", exc)
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
