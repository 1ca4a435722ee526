"""Polite, safe, fast image downloader: URLs in, one `FetchResult` per URL out, images in a content-addressed store.

What it does for each URL (`fetch_images`):
1. `warc_lookup(url)` first: bytes already captured in the crawl's WARC are validated and stored with no request.
2. The host is resolved once and every address checked (`netsafety.AddressPolicy`): private, loopback, link-local,
   metadata, CGNAT, ... destinations are refused (`blocked_address`); the connection goes to the checked IP (pinned,
   so DNS rebinding cannot redirect it), with the original host name in `Host` / TLS SNI and certificate checks.
3. robots.txt of the origin is fetched once per run and obeyed for our User-Agent token (`robots_disallowed`);
   `Crawl-delay` raises the per-host delay (capped by `max_crawl_delay_s`).
4. GET with our User-Agent; redirects are followed by hand (at most `max_redirects`), each hop re-checked (address,
   robots). 429 and 5xx are retried with exponential backoff and jitter (`Retry-After` honoured, as seconds or HTTP
   date, and applied to the whole host); connection errors are retried; other 4xx are not.
5. `X-Robots-Tag: noai` / `noimageai` (bare or addressed to our token) -> `optout_header`. The body is streamed with a
   size cap (`too_large`, early on Content-Length), must be an image by Content-Type or magic bytes (`not_an_image`),
   is validated by Pillow (`decompression_bomb`, `decode_error`), hashed (sha256) and stored once per distinct content.

Concurrency: URLs are sharded by host name over `processes` worker processes (so per-host limits are exact), each
running `concurrency / processes` threads over a host-aware scheduler (per-host concurrency and minimum delay between
request starts) with keep-alive connection pools built on `http.client`. Every input URL yields exactly one result, in
completion order; an unexpected exception becomes an error result (`connection_error` for the network phase or the
store, `decode_error` for decoding), and a worker process that dies turns its outstanding URLs into
`connection_error` results, so a resumed run retries them.

Resuming: pass `skip_existing=resume_lookup(previous_results)`; it keeps successes and permanent failures and returns
None (fetch again) for transient failures (timeouts, connection / DNS errors, 5xx, 429, robots.txt unreachable).
robots.txt is fetched once per origin and run: when the network fails on it, every URL of that origin fails in this run
with the network reason (timeout, connection_error, dns_error) and no request for the images themselves.

Limits: per-host concurrency and delay apply to the host of the URL as given, not to redirect targets; robots.txt of a
redirect target is cached per worker process, so a target reached from hosts of two shards may be fetched twice.
"""

from __future__ import annotations

import hashlib
import heapq
import http.client
import itertools
import math
import os
import queue
import random
import re
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urljoin, urlsplit

from danqing_assets.lib import reasons as R
from danqing_assets.lib.image_decode import DEFAULT_MAX_PIXELS, Reject, inspect_image, sniff_image_type
from danqing_assets.lib.netsafety import AddressPolicy, BlockedAddressError, DNSResolutionError
from danqing_assets.lib.robots import (
    MAX_ROBOTS_BYTES,
    ROBOTS_UNREACHABLE,
    RobotsCache,
    RobotsRules,
    rules_from_response,
    user_agent_token,
    x_robots_optout,
)

DEFAULT_USER_AGENT = "danqing-assets/0.1 (+https://github.com/danqing-assets; image-text research crawler)"

#: Failure reasons worth another try in a later run (`resume_lookup`'s default).
TRANSIENT_REASONS: frozenset[str] = frozenset(
    {R.DNS_ERROR, R.CONNECTION_ERROR, R.TIMEOUT, R.HTTP_SERVER_ERROR, R.RATE_LIMITED}
)

SOURCE_NETWORK = "network"
SOURCE_WARC = "warc"

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DRAIN_LIMIT = 64 * 1024  # error / redirect bodies up to this size are read so the connection can be reused
_WARC_HOST = "\x00warc"  # scheduler key for WARC-served jobs: no host limits, no network


@dataclass
class FetchConfig:
    """Every knob of the fetcher, with its default. Picklable (it travels to worker processes).

    concurrency: total simultaneous requests over all processes.
    processes: worker processes (URLs sharded by host); None = os.cpu_count() capped at 8; 1 = threads in the
      calling process (needed when a test monkeypatches `socket.getaddrinfo`).
    per_host_concurrency / per_host_min_delay_s: politeness per host name (min delay is between request starts).
    connect_timeout_s / read_timeout_s: per socket operation; total_timeout_s: one attempt, all redirect hops and the
      whole body included (checked between reads).
    retries: extra attempts after the first for connection errors, 429 and 5xx (and timeouts when retry_timeouts).
    backoff_base_s / backoff_max_s: delay before retry n is min(max, base * 2**(n-1)), with 50-100 % jitter.
    retry_after_max_s: a Retry-After longer than this is not waited for: the URL fails as rate_limited at once.
    max_redirects: hops followed; one more is too_many_redirects.
    max_bytes: body size cap (Content-Length checked before reading; streamed bodies cut off).
    max_pixels: decompression-bomb cap from the image header (None: only Pillow's own limit).
    decode_check: decode the first frame to catch truncated / corrupt images (False: header only).
    respect_robots / respect_optout / honour_crawl_delay: the opt-out checks; max_crawl_delay_s caps Crawl-delay.
    allow_networks / allow_hosts: exceptions to the address guard (CIDRs; host names, ".suffix" for subdomains).
    verify_tls / ca_bundle: certificate checks for https (ca_bundle: a PEM file used instead of the system CAs).
    progress_every: call `progress` every this many results (and at the end).
    max_in_flight: URLs handed to workers and not yet answered (the scheduling window).
    mp_start_method: multiprocessing start method for worker processes ("spawn" is safe in threaded parents).
    """

    concurrency: int = 64
    processes: int | None = None
    per_host_concurrency: int = 8
    per_host_min_delay_s: float = 0.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0
    retries: int = 3
    retry_timeouts: bool = False
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0
    max_redirects: int = 5
    max_bytes: int = 20 * 2**20
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    decode_check: bool = True
    user_agent: str = DEFAULT_USER_AGENT
    respect_robots: bool = True
    respect_optout: bool = True
    honour_crawl_delay: bool = True
    max_crawl_delay_s: float = 10.0
    allow_networks: list[str] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)
    verify_tls: bool = True
    ca_bundle: str | None = None
    dns_cache_ttl_s: float = 300.0
    progress_every: int = 1000
    max_in_flight: int = 20_000
    mp_start_method: str = "spawn"

    def n_processes(self) -> int:
        if self.processes is None:
            return max(1, min(os.cpu_count() or 1, 8))
        return max(1, int(self.processes))


@dataclass(slots=True)
class FetchResult:
    """The outcome for one URL. `status` is "ok" or "error"; `reason` is a FETCH reason from `reasons.py` or None."""

    url: str
    status: str
    reason: str | None = None
    error: str = ""
    http_status: int | None = None
    image_sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    bytes: int | None = None
    elapsed_ms: float = 0.0  # first attempt start to outcome, retry waits included
    attempts: int = 0  # network attempts (0 for WARC-served or invalid URLs)
    final_url: str | None = None  # after redirects
    source: str = SOURCE_NETWORK  # "network" | "warc"
    content_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> FetchResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def resume_lookup(
    previous: Iterable[FetchResult | Mapping[str, Any]],
    *,
    retry_reasons: Iterable[str] = TRANSIENT_REASONS,
    retry_robots_unreachable: bool = True,
) -> Callable[[str], FetchResult | None]:
    """A `skip_existing` callable for `fetch_images` from an earlier run's results.

    Successes and permanent failures are returned as they were (no request); URLs that failed for one of
    `retry_reasons` (and, when `retry_robots_unreachable`, robots rejects caused by an unreachable robots.txt) answer
    None, so only they are fetched again.
    """
    retry = frozenset(retry_reasons)
    known: dict[str, FetchResult] = {}
    for item in previous:
        r = item if isinstance(item, FetchResult) else FetchResult.from_dict(item)
        if r.status != "ok":
            if r.reason in retry:
                continue
            if retry_robots_unreachable and r.reason == R.ROBOTS_DISALLOWED and ROBOTS_UNREACHABLE in (r.error or ""):
                continue
        known[r.url] = r
    return known.get


# --------------------------------------------------------------------------------------------------------------------
# URLs


class _InvalidURL(ValueError):
    pass


class _URL(NamedTuple):
    scheme: str
    host: str  # ASCII (IDNA), lower case, no brackets
    port: int
    target: str  # path + query, percent-encoded


_SAFE_TARGET = "!#$%&'()*+,/:;=?@[]~"
_HOST_OK = re.compile(r"^[a-z0-9._\-]+$|^[0-9a-f:.]+$")


def parse_url(url: str) -> _URL:
    """Split and normalise an http(s) URL; raise ValueError for anything we will not fetch."""
    if not isinstance(url, str):
        raise _InvalidURL(f"not a string: {type(url).__name__}")
    url = url.strip()
    if not url or len(url) > 16_384:
        raise _InvalidURL("empty or over-long URL")
    try:
        sp = urlsplit(url)
        port = sp.port
    except ValueError as exc:
        raise _InvalidURL(f"unparsable URL: {exc}") from None
    scheme = sp.scheme.lower()
    if scheme not in ("http", "https"):
        raise _InvalidURL(f"unsupported scheme {scheme!r}")
    host = sp.hostname
    if not host:
        raise _InvalidURL("no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise _InvalidURL(f"bad international host name: {exc}") from None
    host = host.lower().rstrip(".")
    if not host or not _HOST_OK.match(host):
        raise _InvalidURL(f"bad host {host!r}")
    if port == 0:
        raise _InvalidURL("port 0")
    port = port or (443 if scheme == "https" else 80)
    target = quote(sp.path or "/", safe=_SAFE_TARGET)
    if sp.query:
        target += "?" + quote(sp.query, safe=_SAFE_TARGET)
    if not target.startswith("/"):
        target = "/" + target
    return _URL(scheme, host, port, target)


def _origin_url(scheme: str, host: str, port: int, path: str) -> str:
    h = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{h}{'' if port == default else f':{port}'}{path}"


def shard_of(host: str, n: int) -> int:
    """Stable worker index for a host name (crc32, not Python's salted hash)."""
    return zlib.crc32(host.encode()) % n if n > 1 else 0


# --------------------------------------------------------------------------------------------------------------------
# Connections pinned to a checked IP


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP connection to a fixed IP; `host` is only used for the Host header."""

    def __init__(self, host: str, port: int, ip: str, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(host, port, timeout=read_timeout)
        self._ip = ip
        self._connect_timeout = connect_timeout

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.settimeout(self.timeout)
        self.sock = sock


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to a fixed IP with SNI and certificate checks for the URL's host name."""

    def __init__(self, host: str, port: int, ip: str, connect_timeout: float, read_timeout: float, context) -> None:
        super().__init__(host, port, ip, connect_timeout, read_timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.settimeout(self._connect_timeout)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)
        self.sock.settimeout(self.timeout)


class _ConnPool:
    """Idle keep-alive connections keyed by (scheme, host, port, ip), LRU-bounded."""

    def __init__(self, per_key: int, total: int = 256, idle_timeout_s: float = 30.0) -> None:
        self._idle: OrderedDict[tuple, list[tuple[http.client.HTTPConnection, float]]] = OrderedDict()
        self._n = 0
        self._per_key = per_key
        self._total = total
        self._idle_timeout = idle_timeout_s
        self._lock = threading.Lock()

    def acquire(self, key: tuple) -> http.client.HTTPConnection | None:
        now = time.monotonic()
        stale = []
        got = None
        with self._lock:
            lst = self._idle.get(key)
            while lst:
                conn, t = lst.pop()
                self._n -= 1
                if now - t < self._idle_timeout:
                    got = conn
                    break
                stale.append(conn)
            if lst is not None and not lst:
                del self._idle[key]
        for c in stale:
            c.close()
        return got

    def release(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        evict = []
        with self._lock:
            lst = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if len(lst) >= self._per_key:
                evict.append(lst.pop(0)[0])
                self._n -= 1
            lst.append((conn, time.monotonic()))
            self._n += 1
            while self._n > self._total:
                k, old = next(iter(self._idle.items()))
                evict.append(old.pop(0)[0])
                self._n -= 1
                if not old:
                    del self._idle[k]
        for c in evict:
            c.close()

    def close_all(self) -> None:
        with self._lock:
            items = [c for lst in self._idle.values() for c, _ in lst]
            self._idle.clear()
            self._n = 0
        for c in items:
            c.close()


# --------------------------------------------------------------------------------------------------------------------
# Host-aware scheduler


@dataclass(eq=False)
class _Job:
    url: str
    host: str
    warc: bytes | None = None
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


# --------------------------------------------------------------------------------------------------------------------
# One worker's network client


class _Fail(Exception):
    """Internal: a final or retryable failure with its reason."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        retry: bool = False,
        retry_after: float | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry = retry
        self.retry_after = retry_after
        self.http_status = http_status


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    wall = time.time() if now is None else now
    return max(0.0, dt.timestamp() - wall)


class _Client:
    """Everything one worker process needs to fetch: address policy, robots cache, connection pool, store."""

    def __init__(self, cfg: FetchConfig, store: Any, sched: _Scheduler) -> None:
        self.cfg = cfg
        self.store = store
        self.sched = sched
        self.token = user_agent_token(cfg.user_agent)
        self.policy = AddressPolicy(cfg.allow_networks, cfg.allow_hosts, dns_cache_ttl_s=cfg.dns_cache_ttl_s)
        self.pool = _ConnPool(per_key=max(1, cfg.per_host_concurrency))
        self.robots = RobotsCache(self._fetch_robots, self.token)
        self._ssl: ssl.SSLContext | None = None
        self._stored: set[str] = set()
        self._stored_lock = threading.Lock()

    # -- low level ---------------------------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.cfg.ca_bundle)
            if not self.cfg.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx
        return self._ssl

    def _new_conn(self, u: _URL, ip: str, remaining: float) -> http.client.HTTPConnection:
        cfg = self.cfg
        ct = min(cfg.connect_timeout_s, remaining)
        if u.scheme == "https":
            conn: http.client.HTTPConnection = _PinnedHTTPSConnection(
                u.host, u.port, ip, ct, cfg.read_timeout_s, self._ssl_context()
            )
        else:
            conn = _PinnedHTTPConnection(u.host, u.port, ip, ct, cfg.read_timeout_s)
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise TimeoutError(f"connect timeout ({ip})") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _request(
        self, u: _URL, deadline: float
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, tuple, socket.socket]:
        """Send GET to a checked, pinned address of `u.host` and read the response head.

        Returns (connection, response, pool key, socket); the caller owns the connection and must hand it to
        `_done` / `_discard` or close it.
        """
        ips = self.policy.resolve(u.host, u.port)  # raises BlockedAddressError / DNSResolutionError
        key = (u.scheme, u.host, u.port)
        cfg = self.cfg
        for attempt in (0, 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("total timeout")
            conn = self.pool.acquire(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                last: BaseException | None = None
                for ip in ips:  # like socket.create_connection: try each checked address in turn
                    try:
                        conn = self._new_conn(u, ip, deadline - time.monotonic())
                        break
                    except (ConnectionError, TimeoutError) as exc:
                        last = exc
                        if time.monotonic() >= deadline:
                            break
                if conn is None:
                    assert last is not None
                    raise last
            sock = conn.sock
            assert sock is not None
            try:
                sock.settimeout(min(cfg.read_timeout_s, max(0.001, deadline - time.monotonic())))
                conn.putrequest("GET", u.target, skip_accept_encoding=True)
                conn.putheader("User-Agent", cfg.user_agent)
                conn.putheader("Accept", "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.9,*/*;q=0.5")
                conn.putheader("Accept-Encoding", "identity")
                conn.endheaders()
                resp = conn.getresponse()
                return conn, resp, key, sock
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.BadStatusLine):
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: retry once on a fresh one
                raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _done(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, key: tuple) -> None:
        """Return a fully read connection to the pool, or close it."""
        if resp.isclosed() and not resp.will_close and conn.sock is not None:
            self.pool.release(key, conn)
        else:
            resp.close()
            conn.close()

    def _discard(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        key: tuple,
        sock: socket.socket,
        deadline: float,
    ) -> None:
        """Throw away a response body: read it if small (keeps the connection), else close."""
        length = resp.length
        if not resp.chunked and length is not None and length <= _DRAIN_LIMIT and not resp.will_close:
            try:
                sock.settimeout(min(self.cfg.read_timeout_s, max(0.001, deadline - time.monotonic())))
                resp.read()
                self._done(conn, resp, key)
                return
            except Exception:
                pass
        resp.close()
        conn.close()

    def _read_body(
        self,
        resp: http.client.HTTPResponse,
        sock: socket.socket,
        deadline: float,
        limit: int,
        *,
        truncate: bool = False,
        head_check: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Stream the body under the size cap and the total deadline.

        Over `limit`: raise too_large, or with `truncate` stop and return the first `limit` bytes (the connection is
        then not reusable). `head_check` sees the first >= 16 bytes (or the whole body if shorter) as soon as they
        arrive, so a large HTML page is refused without downloading it.
        """
        chunks: list[bytes] = []
        total = 0
        checked = head_check is None
        read_timeout = self.cfg.read_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("total timeout while reading the body")
            sock.settimeout(min(read_timeout, remaining))
            chunk = resp.read1(65536)
            if not chunk:
                break
            total += len(chunk)
            chunks.append(chunk)
            if total > limit:
                if truncate:
                    return b"".join(chunks)[:limit]
                raise _Fail(R.TOO_LARGE, f"body exceeds max_bytes={limit} (streamed)", http_status=resp.status)
            if not checked and total >= 16:
                checked = True
                assert head_check is not None
                head_check(chunks[0] if len(chunks[0]) >= 16 else b"".join(chunks))
        if resp.length:  # the server closed before Content-Length bytes arrived
            raise http.client.IncompleteRead(b"", resp.length)
        if not resp.isclosed():
            resp.read()  # nothing left: marks the response complete so the connection can be reused
        data = b"".join(chunks)
        if not checked:
            assert head_check is not None
            head_check(data)
        return data

    # -- robots.txt --------------------------------------------------------------------------------------------------

    def _fetch_robots(self, scheme: str, host: str, port: int) -> RobotsRules:
        url = _origin_url(scheme, host, port, "/robots.txt")
        deadline = time.monotonic() + self.cfg.total_timeout_s
        for _hop in range(6):
            conn = None
            try:
                u = parse_url(url)
                conn, resp, key, sock = self._request(u, deadline)
                status = resp.status
                if status in _REDIRECTS and resp.getheader("Location"):
                    url = urljoin(url, resp.getheader("Location", "").strip())
                    self._discard(conn, resp, key, sock, deadline)
                    continue
                if 200 <= status < 300:
                    body = self._read_body(resp, sock, deadline, MAX_ROBOTS_BYTES, truncate=True)
                    self._done(conn, resp, key)
                    return rules_from_response(status, body)
                self._discard(conn, resp, key, sock, deadline)
                return rules_from_response(status, None)
            except _InvalidURL as exc:
                return rules_from_response(None, None, f"invalid robots.txt URL: {exc}")
            except (BlockedAddressError, DNSResolutionError, OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                if isinstance(exc, TimeoutError):
                    reason = R.TIMEOUT
                elif isinstance(exc, DNSResolutionError):
                    reason = R.DNS_ERROR
                elif isinstance(exc, BlockedAddressError):
                    reason = R.ROBOTS_DISALLOWED  # robots.txt redirected somewhere we will not go
                else:
                    reason = R.CONNECTION_ERROR
                return rules_from_response(None, None, f"{type(exc).__name__}: {exc}"[:200], reason=reason)
        return RobotsRules(None, allow_all=True, detail="robots.txt: more than 5 redirects, treated as unavailable")

    # -- one URL -----------------------------------------------------------------------------------------------------

    def run(self, job: _Job) -> FetchResult | float:
        """One attempt at `job`: a final FetchResult, or the monotonic time at which to retry."""
        now = time.monotonic()
        if job.started is None:
            job.started = now
        if job.warc is not None:
            try:
                return self._accept(job, job.warc, source=SOURCE_WARC, http_status=None, final_url=job.url, ctype=None)
            except Exception as exc:
                return self._result_error(job, R.DECODE_ERROR, f"unexpected {type(exc).__name__}: {exc}")
        job.attempts += 1
        cfg = self.cfg
        try:
            try:
                return self._attempt(job)
            finally:
                if job.probe:  # failed before robots.txt was consulted (DNS, blocked, invalid URL)
                    self.sched.end_probe(job)
        except _Fail as f:
            if f.retry and job.attempts <= cfg.retries:
                if f.retry_after is not None:
                    if f.retry_after > cfg.retry_after_max_s:
                        self.sched.defer_host(job.host, time.monotonic() + cfg.retry_after_max_s)
                        return self._result_error(
                            job,
                            f.reason,
                            f"{f.detail}; Retry-After {f.retry_after:.0f}s exceeds retry_after_max_s",
                            http_status=f.http_status,
                        )
                    delay = f.retry_after
                    self.sched.defer_host(job.host, time.monotonic() + delay)
                else:
                    base = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (job.attempts - 1))
                    delay = base * (0.5 + 0.5 * random.random())
                return time.monotonic() + delay
            if f.retry_after is not None:
                self.sched.defer_host(job.host, time.monotonic() + min(f.retry_after, cfg.retry_after_max_s))
            return self._result_error(job, f.reason, f.detail, http_status=f.http_status)
        except Exception as exc:  # a bug or an exotic failure: a result, never a crash
            return self._result_error(job, R.CONNECTION_ERROR, f"unexpected {type(exc).__name__}: {exc}")

    def _result_error(self, job: _Job, reason: str, detail: str, *, http_status: int | None = None) -> FetchResult:
        return FetchResult(
            url=job.url,
            status="error",
            reason=reason,
            error=detail[:500],
            http_status=http_status,
            elapsed_ms=round((time.monotonic() - (job.started or time.monotonic())) * 1000, 3),
            attempts=job.attempts,
            source=SOURCE_WARC if job.warc is not None else SOURCE_NETWORK,
        )

    def _attempt(self, job: _Job) -> FetchResult:
        """Follow redirects by hand to a 2xx response, checking every hop; raise _Fail otherwise."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.total_timeout_s
        url = job.url
        hops = 0
        try:
            while True:
                try:
                    u = parse_url(url)
                except _InvalidURL as exc:
                    raise _Fail(R.INVALID_URL, f"{'redirect to ' if hops else ''}{exc}") from None
                try:
                    self.policy.resolve(u.host, u.port)
                except BlockedAddressError as exc:
                    raise _Fail(R.BLOCKED_ADDRESS, f"{'redirect: ' if hops else ''}{exc}") from None
                except DNSResolutionError as exc:
                    raise _Fail(R.DNS_ERROR, str(exc), retry=exc.transient) from None
                if cfg.respect_robots:
                    allowed, reason, detail, delay = self.robots.check(u.scheme, u.host, u.port, url)
                    if hops == 0 and (job.probe or (delay and cfg.honour_crawl_delay)):
                        d = min(delay, cfg.max_crawl_delay_s) if delay and cfg.honour_crawl_delay else None
                        self.sched.end_probe(job, d)
                    if not allowed:  # not retried: the robots.txt outcome is cached for the run
                        raise _Fail(reason, f"{detail}: {url}"[:300])
                conn, resp, key, sock = self._request(u, deadline)
                status = resp.status
                if 200 <= status < 300:
                    return self._success(job, conn, resp, key, sock, deadline, url)  # owns conn from here
                loc = resp.getheader("Location") if status in _REDIRECTS else None
                retry_after = parse_retry_after(resp.getheader("Retry-After")) if status in (429, 503) else None
                self._discard(conn, resp, key, sock, deadline)
                if status in _REDIRECTS:
                    if not loc:
                        raise _Fail(R.HTTP_CLIENT_ERROR, f"HTTP {status} without Location", http_status=status)
                    hops += 1
                    if hops > cfg.max_redirects:
                        raise _Fail(
                            R.TOO_MANY_REDIRECTS,
                            f"more than {cfg.max_redirects} redirects (last {url})"[:300],
                            http_status=status,
                        )
                    url = urljoin(url, loc.strip())
                    continue
                if status == 429:
                    raise _Fail(R.RATE_LIMITED, "HTTP 429", retry=True, retry_after=retry_after, http_status=status)
                if status >= 500:
                    raise _Fail(
                        R.HTTP_SERVER_ERROR, f"HTTP {status}", retry=True, retry_after=retry_after, http_status=status
                    )
                if status in (404, 410):
                    raise _Fail(R.HTTP_NOT_FOUND, f"HTTP {status}", http_status=status)
                raise _Fail(R.HTTP_CLIENT_ERROR, f"HTTP {status}", http_status=status)
        except TimeoutError as exc:
            raise _Fail(R.TIMEOUT, str(exc) or "timed out", retry=cfg.retry_timeouts) from None
        except ssl.SSLCertVerificationError as exc:
            raise _Fail(R.CONNECTION_ERROR, f"TLS certificate: {exc}"[:300]) from None
        except (BlockedAddressError, DNSResolutionError) as exc:  # a redirect target changing under us
            raise _Fail(R.BLOCKED_ADDRESS if isinstance(exc, BlockedAddressError) else R.DNS_ERROR, str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Fail(R.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}"[:300], retry=True) from None

    def _success(self, job: _Job, conn, resp, key, sock, deadline: float, url: str) -> FetchResult:
        """Checks on a 2xx response and its body; closes or pools `conn` on every path."""
        cfg = self.cfg
        status = resp.status
        try:
            if cfg.respect_optout:
                tags = resp.headers.get_all("X-Robots-Tag") or []
                if tags and x_robots_optout(tags, self.token):
                    self._discard(conn, resp, key, sock, deadline)
                    conn = None
                    raise _Fail(R.OPTOUT_HEADER, f"X-Robots-Tag: {', '.join(tags)}"[:300], http_status=status)
            ctype = (resp.getheader("Content-Type") or "").split(";", 1)[0].strip().lower() or None
            clen = (resp.getheader("Content-Length") or "").strip()
            if clen.isdigit() and int(clen) > cfg.max_bytes:
                raise _Fail(R.TOO_LARGE, f"Content-Length {clen} exceeds max_bytes={cfg.max_bytes}", http_status=status)
            encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower() or "identity"
            ctype_image = bool(ctype and ctype.startswith("image/"))

            def head_check(head: bytes) -> None:
                if not ctype_image and sniff_image_type(head) is None:
                    raise _Fail(
                        R.NOT_AN_IMAGE, f"Content-Type {ctype or 'missing'} and no image signature", http_status=status
                    )

            data = self._read_body(
                resp, sock, deadline, cfg.max_bytes, head_check=head_check if encoding == "identity" else None
            )
            self._done(conn, resp, key)
            conn = None
        except BaseException:
            if conn is not None:
                resp.close()
                conn.close()
            raise
        if encoding != "identity":
            data = self._decode_content(data, encoding, status)
            head_check(data[:16])
        if not data:
            raise _Fail(R.NOT_AN_IMAGE, "empty body", http_status=status)
        return self._accept(job, data, source=SOURCE_NETWORK, http_status=status, final_url=url, ctype=ctype)

    def _decode_content(self, data: bytes, encoding: str, status: int) -> bytes:
        """Undo gzip / deflate Content-Encoding (servers may send it despite `Accept-Encoding: identity`)."""
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise _Fail(R.DECODE_ERROR, f"unsupported Content-Encoding {encoding!r}", http_status=status)
        attempts = (47,) if encoding != "deflate" else (15, -15)  # 47: gzip or zlib header; -15: raw deflate
        for wbits in attempts:
            try:
                out = zlib.decompressobj(wbits).decompress(data, self.cfg.max_bytes + 1)
            except zlib.error:
                continue
            if len(out) > self.cfg.max_bytes:
                raise _Fail(R.TOO_LARGE, f"decoded body exceeds max_bytes={self.cfg.max_bytes}", http_status=status)
            return out
        raise _Fail(R.DECODE_ERROR, f"bad {encoding} content encoding", http_status=status)

    def _accept(
        self, job: _Job, data: bytes, *, source: str, http_status: int | None, final_url: str, ctype: str | None
    ) -> FetchResult:
        """Validate, hash and store image bytes."""
        base = dict(
            url=job.url,
            http_status=http_status,
            attempts=job.attempts,
            final_url=final_url,
            source=source,
            content_type=ctype,
            bytes=len(data),
        )
        if len(data) > self.cfg.max_bytes:
            return self._finish(
                FetchResult(status="error", reason=R.TOO_LARGE, error=f"{len(data)} bytes exceeds max_bytes", **base),
                job,
            )
        try:
            info = inspect_image(data, max_pixels=self.cfg.max_pixels, decode=self.cfg.decode_check)
        except Exception as exc:
            info = Reject(R.DECODE_ERROR, f"unexpected {type(exc).__name__}: {exc}")
        if isinstance(info, Reject):
            return self._finish(FetchResult(status="error", reason=info.reason, error=info.detail[:500], **base), job)
        sha = hashlib.sha256(data).hexdigest()
        if self.store is not None:
            try:
                with self._stored_lock:
                    known = sha in self._stored
                if not known:
                    if not self.store.exists(sha):
                        self.store.put(sha, data)
                    with self._stored_lock:
                        if len(self._stored) > 1_000_000:
                            self._stored.clear()
                        self._stored.add(sha)
            except Exception as exc:
                return self._finish(
                    FetchResult(
                        status="error",
                        reason=R.CONNECTION_ERROR,
                        error=f"store: {type(exc).__name__}: {exc}"[:500],
                        **base,
                    ),
                    job,
                )
        return self._finish(
            FetchResult(
                status="ok",
                image_sha256=sha,
                width=info.width,
                height=info.height,
                format=info.format,
                mode=info.mode,
                **base,
            ),
            job,
        )

    @staticmethod
    def _finish(r: FetchResult, job: _Job) -> FetchResult:
        r.elapsed_ms = round((time.monotonic() - (job.started or time.monotonic())) * 1000, 3)
        return r


# --------------------------------------------------------------------------------------------------------------------
# Worker: threads over the scheduler; talks to the parent through an inbox and an outbox queue


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
            for url, host, warc in msg:
                sched.add(_Job(url=url, host=host, warc=warc))
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


# --------------------------------------------------------------------------------------------------------------------
# Parent: sharding, back-pressure, progress, crash containment


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
    """N workers (threads when N == 1, else processes), each with its own inbox and one shared outbox."""

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
        self.inboxes: list[Any] = [None] * self.n
        self.procs: list[Any] = [None] * self.n
        self.finished = [False] * self.n
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

    def dead(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if not self.finished[i] and not p.is_alive()]

    def restart(self, i: int) -> None:
        self._start(i)
        if self.inputs_closed:
            self.inboxes[i].put(None)

    def close_inputs(self) -> None:
        self.inputs_closed = True
        for q in self.inboxes:
            q.put(None)

    def shutdown(self, *, abort: bool) -> None:
        if abort:
            for i, q in enumerate(self.inboxes):
                if not self.finished[i]:
                    try:
                        q.put("abort")
                    except Exception:
                        pass
        deadline = time.monotonic() + (self.cfg.total_timeout_s + 5 if abort else 30)
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        if not self.in_process:
            for p in self.procs:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
            for q in [*self.inboxes, self.outbox]:
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
    warc_lookup(url): the image bytes from the crawl's WARC, or None; bytes are used without any request.
    skip_existing(url): a previous FetchResult to yield unchanged instead of fetching (see `resume_lookup`).
    progress(dict): called every `config.progress_every` results and at the end with done / total / ok / error /
      skipped / warc counts, rate_per_s, elapsed_s, eta_s (when the total is known) and by_reason.
    Duplicate URLs are fetched once and answered once per occurrence. Closing the generator early stops the workers.
    """
    cfg = config or FetchConfig()
    total = len(urls) if hasattr(urls, "__len__") else None  # type: ignore[arg-type]
    prog = _Progress(total, progress, cfg.progress_every)
    workers: _Workers | None = None
    # url -> [occurrences, shard, bytes of WARC payload in flight]
    pending: dict[str, list[int]] = {}
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
                    ent = pending.pop(r.url, None)
                    if ent is None:
                        continue  # already answered (e.g. declared lost with a dead worker)
                    in_flight_bytes -= ent[2]
                    for k in range(ent[0]):
                        out = r if k == 0 else FetchResult(**{f.name: getattr(r, f.name) for f in fields(FetchResult)})
                        prog.add(out)
                        yield out
            block = False

    def reap_dead() -> Iterator[FetchResult]:
        """Answer the URLs of a worker that died without saying "done", and start a replacement."""
        nonlocal in_flight_bytes
        assert workers is not None
        dead = workers.dead()
        if not dead:
            return
        yield from drain(block=False)  # its last messages may have landed after the timeout: use them first
        for i in dead:
            if workers.finished[i]:
                continue
            code = getattr(workers.procs[i], "exitcode", None)
            lost = [u for u, ent in pending.items() if ent[1] == i]
            for u in lost:
                ent = pending.pop(u)
                in_flight_bytes -= ent[2]
                for _ in range(ent[0]):
                    r = FetchResult(
                        url=u, status="error", reason=R.CONNECTION_ERROR, error=f"fetch worker died (exit code {code})"
                    )
                    prog.add(r)
                    yield r
            workers.restart(i)

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
            if warc_lookup is not None:
                try:
                    warc = warc_lookup(url)
                except Exception:  # a broken WARC record falls back to the network
                    warc = None
                warc = bytes(warc) if isinstance(warc, (bytes, bytearray, memoryview)) else None
            ws = start()
            shard = shard_of(u.host, n)
            pending[url] = [1, shard, len(warc) if warc is not None else 0]
            if warc is not None:
                in_flight_bytes += len(warc)
            buf = buffers.setdefault(shard, [])
            buf.append((url, _WARC_HOST if warc is not None else u.host, warc))
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
