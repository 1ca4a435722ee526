"""Inside one worker (a process, or a thread when `processes=1`): threads over the scheduler, talking to the parent
through an inbox queue (job batches, None = no more, "abort") and a shared outbox queue (batched results, "done")."""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

from danqing_assets.lib import reasons as R
from danqing_assets.lib.fetch.client import _Client
from danqing_assets.lib.fetch.config import FetchConfig
from danqing_assets.lib.fetch.results import FetchResult
from danqing_assets.lib.fetch.scheduler import _Job, _Scheduler

class _Outbox:
    """Batches results to the parent (one queue message per ~20 ms instead of one per image)."""

    def __init__(self, q: Any, wid: int) -> None:
        self._q = q
        self._wid = wid
        self._buf: list[FetchResult] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"fetch-outbox-{wid}", daemon=True)
        self._thread.start()

    def emit(self, r: FetchResult) -> None:
        with self._cond:
            self._buf.append(r)
            if len(self._buf) >= 512:
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._buf and not self._closed:
                    self._cond.wait(0.02)
                buf, self._buf = self._buf, []
                closed = self._closed
            if buf:
                self._q.put(("results", self._wid, buf))
            if closed and not buf:
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()


def _work_loop(client: _Client, sched: _Scheduler, out: _Outbox) -> None:
    while True:
        job = sched.get()
        if job is None:
            return
        try:
            res = client.run(job)
        except BaseException as exc:  # run() catches Exception; this is the last line of defence
            res = client._result_error(job, R.CONNECTION_ERROR, f"unexpected {type(exc).__name__}: {exc}")
        if isinstance(res, FetchResult):
            out.emit(res)
            sched.finish(job)
        else:
            sched.finish(job, retry_at=res)


def _worker_main(
    cfg: FetchConfig, store: Any, inbox: Any, outbox: Any, wid: int, n_threads: int, parent_pid: int | None = None
) -> None:
    """Entry point of a worker (process or thread): read job batches from `inbox` until None, answer on `outbox`.

    "abort" (sent when the consumer stops early) drops queued work. A worker process whose parent has gone away
    (`parent_pid` no longer its parent) aborts too, so no orphan keeps crawling.
    """

    def next_msg() -> Any:
        while True:
            try:
                return inbox.get(timeout=1.0)
            except queue.Empty:
                if parent_pid is not None and os.getppid() != parent_pid:
                    return "abort"

    sched = _Scheduler(cfg.per_host_concurrency, cfg.per_host_min_delay_s, probe=cfg.respect_robots)
    client = _Client(cfg, store, sched)
    out = _Outbox(outbox, wid)
    threads = [
        threading.Thread(target=_work_loop, args=(client, sched, out), name=f"fetch-{wid}-{i}", daemon=True)
        for i in range(n_threads)
    ]
    for t in threads:
        t.start()
    try:
        while True:
            msg = next_msg()
            if msg is None:
                sched.close()
                break
            if msg == "abort":
                sched.abort()
                break
            for url, host, warc, warc_x_robots_tag in msg:
                sched.add(_Job(url=url, host=host, warc=warc, warc_x_robots_tag=warc_x_robots_tag))
        while any(t.is_alive() for t in threads):
            try:
                if inbox.get(timeout=0.2) == "abort":
                    sched.abort()
            except queue.Empty:
                if parent_pid is not None and os.getppid() != parent_pid:
                    sched.abort()
    finally:
        out.close()
        client.pool.close_all()
        outbox.put(("done", wid, {"robots_fetches": client.robots.fetches}))
