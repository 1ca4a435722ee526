"""Host-aware scheduler: per-host concurrency, minimum delay between request starts, robots.txt probe, retry timers."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

_WARC_HOST = "\x00warc"  # scheduler key for WARC-served jobs: no host limits, no network


@dataclass(eq=False)
class _Job:
    url: str
    host: str
    warc: bytes | None = None
    warc_x_robots_tag: tuple[str, ...] = ()  # X-Robots-Tag values of the captured response (with `warc`)
    attempts: int = 0
    started: float | None = None
    probe: bool = False  # dispatched while its host's robots.txt was unknown: must call end_probe


@dataclass(eq=False)
class _Host:
    limit: int
    min_delay: float
    pending: deque = field(default_factory=deque)
    active: int = 0
    next_time: float = 0.0
    queued: bool = False
    waking: bool = False
    probing: bool = False  # one request at a time until robots.txt (and its Crawl-delay) is known


class _Scheduler:
    """Hands jobs to worker threads so that no host exceeds its concurrency and spacing limits.

    Hosts with work are served round-robin; a host waiting for its delay is parked in a timer heap, so no thread
    sleeps on behalf of one host. Retries re-enter through the same heap at their due time. With `probe`, a new host
    gets one request until `end_probe` reports its robots.txt Crawl-delay, so even the first burst respects it.
    """

    def __init__(self, per_host_concurrency: int, per_host_min_delay_s: float, *, probe: bool = False) -> None:
        self._probe = probe
        self._limit = max(1, per_host_concurrency)
        self._delay = max(0.0, per_host_min_delay_s)
        self._hosts: dict[str, _Host] = {}
        self._ready: deque[str] = deque()
        self._timed: list[tuple[float, int, str, _Job | None]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._outstanding = 0
        self._closed = False
        self._aborted = False

    def _host(self, key: str) -> _Host:
        st = self._hosts.get(key)
        if st is None:
            if key == _WARC_HOST:
                st = _Host(limit=1 << 30, min_delay=0.0)
            else:
                st = _Host(limit=self._limit, min_delay=self._delay, probing=self._probe)
            self._hosts[key] = st
        return st

    def _enqueue(self, key: str, st: _Host) -> None:
        if not st.queued and st.pending:
            st.queued = True
            self._ready.append(key)

    def add(self, job: _Job) -> None:
        with self._cond:
            st = self._host(job.host)
            st.pending.append(job)
            self._outstanding += 1
            self._enqueue(job.host, st)
            self._cond.notify()

    def get(self) -> _Job | None:
        """Next runnable job, blocking; None when closed and everything is finished (or aborted)."""
        with self._cond:
            while True:
                if self._aborted:
                    return None
                now = time.monotonic()
                while self._timed and self._timed[0][0] <= now:
                    _t, _s, key, job = heapq.heappop(self._timed)
                    st = self._host(key)
                    if job is not None:
                        st.pending.appendleft(job)
                    else:
                        st.waking = False
                    self._enqueue(key, st)
                pushed = False
                while self._ready:
                    key = self._ready.popleft()
                    st = self._hosts[key]
                    st.queued = False
                    if not st.pending or st.active >= (1 if st.probing else st.limit):
                        continue  # re-queued by finish() / end_probe()
                    if st.next_time > now:
                        if not st.waking:
                            st.waking = True
                            heapq.heappush(self._timed, (st.next_time, next(self._seq), key, None))
                            pushed = True
                        continue
                    job = st.pending.popleft()
                    job.probe = st.probing
                    st.active += 1
                    st.next_time = now + st.min_delay
                    if st.pending and st.active < (1 if st.probing else st.limit):
                        self._enqueue(key, st)
                    if self._ready or pushed:
                        self._cond.notify()  # let another thread serve the rest / watch the new timer
                    return job
                if self._closed and self._outstanding == 0:
                    self._cond.notify_all()
                    return None
                timeout = (self._timed[0][0] - now) if self._timed else None
                self._cond.wait(timeout)

    def finish(self, job: _Job, retry_at: float | None = None) -> None:
        """The job's attempt is over; `retry_at` (monotonic time) schedules another attempt."""
        with self._cond:
            st = self._hosts[job.host]
            st.active -= 1
            if retry_at is not None and not self._aborted:
                heapq.heappush(self._timed, (retry_at, next(self._seq), job.host, job))
            else:
                self._outstanding -= 1
            self._enqueue(job.host, st)
            self._cond.notify()
            if self._closed and self._outstanding == 0:
                self._cond.notify_all()

    def defer_host(self, key: str, until: float) -> None:
        """No new request to this host before `until` (Retry-After applies to the host, not only one URL)."""
        with self._cond:
            st = self._host(key)
            st.next_time = max(st.next_time, until)

    def end_probe(self, job: _Job, crawl_delay: float | None = None) -> None:
        """The host's robots.txt is known: lift the one-request probe; a Crawl-delay makes the host sequential and
        spaced by at least that delay."""
        job.probe = False
        with self._cond:
            st = self._host(job.host)
            if crawl_delay and crawl_delay > st.min_delay:
                # this job's own request comes right after: the next one waits a full delay from now
                st.next_time = max(st.next_time + crawl_delay - st.min_delay, time.monotonic() + crawl_delay)
                st.min_delay = crawl_delay
                st.limit = 1
            if st.probing:
                st.probing = False
                self._enqueue(job.host, st)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
