"""How a single-worker process pool's worker ended: the exit code behind a `BrokenProcessPool`.

Used by the steps that run each job in a one-process pool and retry or name the input when its worker dies
(`lib/extract_jobs.py`, `lib/image_metrics.py`). Two races make the code hard to read after the fact:

- once the pool breaks, its manager thread may already have cleared the pool's own process table, so the processes
  are taken right after a submit (which starts them), with `pool_processes`;
- the manager thread may reap the process first; its waitpid then sets the exit code a moment later, so
  `exit_code` polls for up to `timeout` seconds.
"""

from __future__ import annotations

import time
from typing import Any


def pool_processes(ex: Any) -> list[Any]:
    """A pool's worker processes (`multiprocessing.Process`), read right after a submit."""
    return list((getattr(ex, "_processes", None) or {}).values())


def exit_code(procs: list[Any], timeout: float = 5.0) -> int | None:
    """The exit code of the first of `procs` (negative: the signal), polled for up to `timeout` s; None if unknown."""
    for p in procs:
        deadline = time.monotonic() + timeout
        p.join(0.1)
        while p.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.05)
            p.join(0.1)
        return p.exitcode
    return None
