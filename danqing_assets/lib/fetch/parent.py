"""The parent side of `fetch_images`: sharding URLs by host over worker processes, back-pressure, progress, and
crash containment: a worker process that dies (a segfault in a decoder, the OOM killer) is restarted, and the URLs it
held are fetched again one at a time in a separate isolation worker, so the URL that kills a worker is named exactly:
it alone becomes an `internal_error` result when it kills the isolation worker too."""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Any

from danqing_assets.lib import reasons as R
from danqing_assets.lib.fetch.config import FetchConfig
from danqing_assets.lib.fetch.results import SOURCE_WARC, FetchResult
from danqing_assets.lib.fetch.scheduler import _WARC_HOST
from danqing_assets.lib.fetch.urls import _InvalidURL, parse_url, shard_of
from danqing_assets.lib.fetch.worker import _worker_main

class _Progress:
    def __init__(self, total: int | None, callback: Callable[[dict], None] | None, every: int) -> None:
        self.total = total
        self.cb = callback
        self.every = max(1, every)
        self.t0 = time.monotonic()
        self.done = self.ok = self.skipped = self.warc = 0
        self.by_reason: dict[str, int] = {}
        self._next = self.every

    def add(self, r: FetchResult, *, skipped: bool = False) -> None:
        self.done += 1
        if skipped:
            self.skipped += 1
        if r.status == "ok":
            self.ok += 1
        elif r.reason:
            self.by_reason[r.reason] = self.by_reason.get(r.reason, 0) + 1
        if r.source == SOURCE_WARC:
            self.warc += 1
        if self.cb is not None and self.done >= self._next:
            self._next += self.every
            self.emit()

    def snapshot(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if self.total is not None and rate > 0 else None
        return {
            "done": self.done,
            "total": self.total,
            "ok": self.ok,
            "error": self.done - self.ok,
            "skipped": self.skipped,
            "warc": self.warc,
            "rate_per_s": round(rate, 2),
            "elapsed_s": round(elapsed, 3),
            "eta_s": None if eta is None else round(eta, 1),
            "by_reason": dict(sorted(self.by_reason.items())),
        }

    def emit(self) -> None:
        if self.cb is not None:
            try:
                self.cb(self.snapshot())
            except Exception:
                pass  # a progress printer must not stop the download


class _Workers:
    """N workers (threads when N == 1, else processes), each with its own inbox and one shared outbox; with processes,
    slot N is the isolation worker (started on first use), which the parent feeds one URL at a time."""

    def __init__(self, cfg: FetchConfig, store: Any) -> None:
        self.cfg = cfg
        self.store = store
        self.n = cfg.n_processes()
        self.threads_each = max(1, math.ceil(cfg.concurrency / self.n))
        self.in_process = self.n == 1
        if self.in_process:
            self.outbox: Any = queue.Queue()
            self._ctx = None
        else:
            import multiprocessing

            self._ctx = multiprocessing.get_context(cfg.mp_start_method)
            self.outbox = self._ctx.Queue()
        slots = self.n if self.in_process else self.n + 1
        self.iso = None if self.in_process else self.n  # the isolation worker's slot
        self.inboxes: list[Any] = [None] * slots
        self.procs: list[Any] = [None] * slots
        self.finished = [False] * slots
        self.stats: dict[int, dict] = {}
        self.inputs_closed = False
        for i in range(self.n):
            self._start(i)

    def _start(self, i: int) -> None:
        if self.in_process:
            inbox: Any = queue.Queue()
            p: Any = threading.Thread(
                target=_worker_main,
                args=(self.cfg, self.store, inbox, self.outbox, i, self.threads_each),
                name=f"fetch-worker-{i}",
                daemon=True,
            )
        else:
            assert self._ctx is not None
            inbox = self._ctx.Queue()
            p = self._ctx.Process(
                target=_worker_main,
                args=(self.cfg, self.store, inbox, self.outbox, i, self.threads_each, os.getpid()),
                name=f"fetch-worker-{i}",
                daemon=True,
            )
        p.start()
        self.inboxes[i] = inbox
        self.procs[i] = p
        self.finished[i] = False

    def send(self, i: int, batch: list) -> None:
        self.inboxes[i].put(batch)

    def send_isolated(self, job: tuple) -> None:
        """Send one job to the isolation worker (started now if it is not running)."""
        assert self.iso is not None
        if self.procs[self.iso] is None or self.finished[self.iso]:
            self._start(self.iso)
        self.inboxes[self.iso].put([job])

    def dead(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p is not None and not self.finished[i] and not p.is_alive()]

    def exit_code(self, i: int) -> int | None:
        return getattr(self.procs[i], "exitcode", None)

    def restart(self, i: int) -> None:
        if i == self.iso:  # started again by the next send_isolated
            self.finished[i] = True
            return
        self._start(i)
        if self.inputs_closed:
            self.inboxes[i].put(None)

    def close_inputs(self) -> None:
        """No more jobs for the sharded workers (the isolation worker is told at shutdown)."""
        self.inputs_closed = True
        for i in range(self.n):
            self.inboxes[i].put(None)

    def shutdown(self, *, abort: bool) -> None:
        for i, q in enumerate(self.inboxes):
            if q is not None and not self.finished[i] and (abort or i == self.iso):
                try:
                    q.put("abort" if abort else None)
                except Exception:
                    pass
        deadline = time.monotonic() + (self.cfg.total_timeout_s + 5 if abort else 30)
        procs = [p for p in self.procs if p is not None]
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        if not self.in_process:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
            for q in [*(q for q in self.inboxes if q is not None), self.outbox]:
                q.close()
                q.cancel_join_thread()


def fetch_images(
    urls: Iterable[str],
    store: Any,
    config: FetchConfig | None = None,
    *,
    warc_lookup: Callable[[str], bytes | None] | None = None,
    progress: Callable[[dict], None] | None = None,
    skip_existing: Callable[[str], FetchResult | None] | None = None,
) -> Iterator[FetchResult]:
    """Download, check and store the images at `urls`; yield one FetchResult per input URL, in completion order.

    store: an image store (`LocalImageStore`, `S3ImageStore`, anything with exists/put) or None to validate only.
      With several worker processes it must pickle (both built-in stores do).
    warc_lookup(url): the image bytes from the crawl's WARC, or None; bytes are used without any request. A
      `CapturedImage` (what `captures.CaptureReader` answers) also carries the captured X-Robots-Tag values, which
      are obeyed like a live response's (`optout_header`, unless `respect_optout` is off); robots.txt is not fetched
      for a captured image (the capture is the crawler's, made under its robots.txt). A lookup that raises (a
      broken record, one over its size cap) falls back to the network.
    skip_existing(url): a previous FetchResult to yield unchanged instead of fetching (see `resume_lookup`).
    progress(dict): called every `config.progress_every` results and at the end with done / total / ok / error /
      skipped / warc counts, rate_per_s, elapsed_s, eta_s (when the total is known) and by_reason.
    Duplicate URLs are fetched once and answered once per occurrence. Closing the generator early stops the workers.
    """
    cfg = config or FetchConfig()
    total = len(urls) if hasattr(urls, "__len__") else None  # type: ignore[arg-type]
    prog = _Progress(total, progress, cfg.progress_every)
    workers: _Workers | None = None
    # url -> [occurrences, shard (the isolation slot once retried), bytes of WARC payload in flight, job tuple]
    pending: dict[str, list] = {}
    isolate: list[str] = []  # URLs a dead worker held, waiting for the isolation worker (one at a time)
    isolated: str | None = None  # the URL the isolation worker holds
    buffers: dict[int, list] = {}
    in_flight_bytes = 0
    clean = False

    def start() -> _Workers:
        nonlocal workers
        if workers is None:
            workers = _Workers(cfg, store)
        return workers

    def flush_all() -> None:
        if workers is None:
            return
        for i, buf in list(buffers.items()):
            if buf:
                workers.send(i, buf)
                buffers[i] = []

    def drain(block: bool) -> Iterator[FetchResult]:
        """Yield results from the outbox; when `block`, wait until at least one message arrives."""
        nonlocal in_flight_bytes
        assert workers is not None
        while True:
            try:
                msg = workers.outbox.get(timeout=1.0) if block else workers.outbox.get_nowait()
            except queue.Empty:
                if not block:
                    return
                yield from reap_dead()
                if not pending:
                    return
                continue
            kind, wid, payload = msg
            if kind == "done":
                workers.finished[wid] = True
                workers.stats[wid] = payload
            else:
                for r in payload:
                    if wid == workers.iso and r.url == isolated:
                        feed_isolation(answered=True)
                    ent = pending.pop(r.url, None)
                    if ent is None:
                        continue  # already answered (e.g. declared lost with a dead worker)
                    in_flight_bytes -= ent[2]
                    for k in range(ent[0]):
                        out = r if k == 0 else FetchResult(**{f.name: getattr(r, f.name) for f in fields(FetchResult)})
                        prog.add(out)
                        yield out
            block = False

    def feed_isolation(*, answered: bool = False) -> None:
        """Give the isolation worker its next URL once it holds none (`answered`: its URL was just answered)."""
        nonlocal isolated
        assert workers is not None
        if answered:
            isolated = None
        while isolated is None and isolate:
            u = isolate.pop(0)
            ent = pending.get(u)
            if ent is not None:  # else answered meanwhile (a late message of the dead worker)
                isolated = u
                workers.send_isolated(ent[3])

    def reap_dead() -> Iterator[FetchResult]:
        """Handle workers that died without saying "done": a sharded worker is replaced and the URLs it held go to
        the isolation worker; the URL the isolation worker died on is answered `internal_error`."""
        nonlocal in_flight_bytes, isolated
        assert workers is not None
        dead = workers.dead()
        if not dead:
            return
        yield from drain(block=False)  # its last messages may have landed after the timeout: use them first
        for i in dead:
            if workers.finished[i]:
                continue
            code = workers.exit_code(i)
            if i == workers.iso or workers.iso is None:  # threads share the parent's fate: no isolation to go to
                lost = [isolated] if i == workers.iso and isolated is not None else (
                    [u for u, ent in pending.items() if ent[1] == i])
                isolated = None if i == workers.iso else isolated
                why = "died again when it was fetched alone" if i == workers.iso else "died"
                for u in lost:
                    ent = pending.pop(u, None)
                    if ent is None:
                        continue
                    in_flight_bytes -= ent[2]
                    for _ in range(ent[0]):
                        r = FetchResult(url=u, status="error", reason=R.INTERNAL_ERROR,
                                        error=f"the fetch worker holding this URL {why} (exit code {code})")
                        prog.add(r)
                        yield r
            else:
                unsent = {job[0] for job in buffers.get(i, ())}  # still in the parent: they go to the replacement
                for u, ent in pending.items():
                    if ent[1] == i and u not in unsent:
                        ent[1] = workers.iso
                        isolate.append(u)
            workers.restart(i)
        feed_isolation()

    try:
        n = cfg.n_processes()
        batch_size = 64
        since_drain = 0
        for url in urls:
            if skip_existing is not None:
                try:
                    prev = skip_existing(url)
                except Exception:
                    prev = None
                if prev is not None:
                    prog.add(prev, skipped=True)
                    yield prev
                    continue
            ent = pending.get(url) if isinstance(url, str) else None
            if ent is not None:
                ent[0] += 1
                continue
            try:
                u = parse_url(url)
            except _InvalidURL as exc:
                r = FetchResult(
                    url=url if isinstance(url, str) else repr(url), status="error", reason=R.INVALID_URL, error=str(exc)
                )
                prog.add(r)
                yield r
                continue
            warc = None
            warc_tags: tuple[str, ...] = ()
            if warc_lookup is not None:
                try:
                    warc = warc_lookup(url)
                except Exception:  # a broken WARC record falls back to the network
                    warc = None
                if isinstance(warc, (bytes, bytearray, memoryview)):
                    warc_tags = tuple(str(t) for t in getattr(warc, "x_robots_tag", ()) or ())
                    warc = bytes(warc)
                else:
                    warc = None
            ws = start()
            shard = shard_of(u.host, n)
            job = (url, _WARC_HOST if warc is not None else u.host, warc, warc_tags)
            pending[url] = [1, shard, len(warc) if warc is not None else 0, job]
            if warc is not None:
                in_flight_bytes += len(warc)
            buf = buffers.setdefault(shard, [])
            buf.append(job)
            if len(buf) >= batch_size:
                ws.send(shard, buf)
                buffers[shard] = []
            since_drain += 1
            if since_drain >= 256:  # a slow input iterator must not leave URLs waiting in half-full batches
                since_drain = 0
                flush_all()
                yield from drain(block=False)
            while len(pending) >= cfg.max_in_flight or in_flight_bytes > 512 * 2**20:
                flush_all()
                yield from drain(block=True)
        if workers is not None:
            flush_all()
            workers.close_inputs()
            while pending:
                yield from drain(block=True)
        clean = True
    finally:
        if workers is not None:
            workers.shutdown(abort=not clean)
        prog.emit()
