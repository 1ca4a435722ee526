"""Fault injection for the crash tests: a worker that dies for real, a step that stops at a known point to be killed.

Both hooks read an environment variable that is unset in production (one lookup per call, nothing else):

- `DANQING_TEST_WORKER_CRASH="segv:NAME,exit:NAME,segv_c:NAME"`: the worker process handling NAME (a WARC file's
  name, an image's sha256) dies at once: SIGSEGV, delivered to its own thread as a fault in compiled code would be, or
  `os._exit(137)` as the OOM killer leaves it; `segv_c` only while the compiled HTML tokenizer is in use.
- `DANQING_TEST_PAUSE_AT="POINT:N"`: the N-th time this process reaches POINT it writes the file named by
  `DANQING_TEST_PAUSE_MARKER` (text: `POINT PID`) and sleeps until it is killed. The killed-run tests wait for the
  marker and SIGKILL the run's process group there. Points:

  - `raw_pairs_file`: raw_pairs has extracted N WARC files (their parts written, the tables not yet);
  - `image_put`: the N-th image this process writes to a local image store is half-written to its temporary file;
  - `image_scores_chunk`: image_scores has scored N chunks of images (nothing published yet);
  - `write_<table>`: the warehouse has written the N-th new file of `<table>` under its temporary name, not yet
    renamed into place.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

CRASH_HOOK_ENV = "DANQING_TEST_WORKER_CRASH"
PAUSE_ENV = "DANQING_TEST_PAUSE_AT"
PAUSE_MARKER_ENV = "DANQING_TEST_PAUSE_MARKER"

_reached: Counter[str] = Counter()
_lock = threading.Lock()


def crash_hook(name: str) -> None:
    """Die here for real when `DANQING_TEST_WORKER_CRASH` names `name` (see the module docstring)."""
    spec = os.environ.get(CRASH_HOOK_ENV)
    if not spec:
        return
    for item in spec.split(","):
        how, _, target = item.partition(":")
        if target != name:
            continue
        if how == "segv_c":
            from danqing_assets.lib import html as H

            if H._compiled_scan() is None:
                continue
            how = "segv"
        if how == "segv":  # to this thread, at once, as a fault in compiled code is delivered
            signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
        elif how == "exit":
            os._exit(137)


def pause_point(point: str, *, before: Callable[[], object] | None = None) -> None:
    """Stop here for good (until killed) the N-th time this process passes `point`, when `DANQING_TEST_PAUSE_AT`
    says `point:N`; `before()` runs first (flush a half-written file)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    name, _, count = spec.rpartition(":")
    if name != point:
        return
    with _lock:
        _reached[point] += 1
        if _reached[point] != int(count):
            return
    if before is not None:
        before()
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        partial = f"{marker}.writing"
        with open(partial, "w", encoding="utf-8") as fh:
            fh.write(f"{point} {os.getpid()}\n")
        os.replace(partial, marker)
    while True:
        time.sleep(60)
