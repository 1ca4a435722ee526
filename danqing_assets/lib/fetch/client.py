"""One worker's network client: address checks, robots.txt, GET with redirects followed by hand, retry decisions
(backoff, Retry-After), body checks (X-Robots-Tag, size cap, image signature, Content-Encoding), validation, store."""

from __future__ import annotations

import hashlib
import http.client
import random
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

from danqing_assets.lib import reasons as R
from danqing_assets.lib.fetch.config import FetchConfig
from danqing_assets.lib.fetch.connections import _ConnPool, _PinnedHTTPConnection, _PinnedHTTPSConnection
from danqing_assets.lib.fetch.decode import Reject, accept_header, inspect_image, sniff_image_type
from danqing_assets.lib.fetch.netsafety import AddressPolicy, BlockedAddressError, DNSResolutionError
from danqing_assets.lib.fetch.results import SOURCE_NETWORK, SOURCE_WARC, FetchResult
from danqing_assets.lib.fetch.robots import (
    MAX_ROBOTS_BYTES,
    RobotsCache,
    RobotsRules,
    rules_from_response,
    user_agent_token,
    x_robots_optout,
)
from danqing_assets.lib.fetch.scheduler import _Job, _Scheduler
from danqing_assets.lib.fetch.urls import _URL, _InvalidURL, _origin_url, parse_url

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DRAIN_LIMIT = 64 * 1024  # error / redirect bodies up to this size are read so the connection can be reused


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
        self.accept = accept_header()
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

    def _new_conn(self, u: _URL, ip: str, deadline: float) -> _PinnedHTTPConnection:
        """A connected (TLS: handshaken) connection to `ip`; connect and handshake are bounded by `deadline`."""
        cfg = self.cfg
        if u.scheme == "https":
            conn: _PinnedHTTPConnection = _PinnedHTTPSConnection(
                u.host, u.port, ip, cfg.connect_timeout_s, cfg.read_timeout_s, self._ssl_context(), deadline
            )
        else:
            conn = _PinnedHTTPConnection(u.host, u.port, ip, cfg.connect_timeout_s, cfg.read_timeout_s, deadline)
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

        Every step (connect, TLS handshake, sending, each read of the status line, headers and later the body) ends
        by `deadline` (a `time.monotonic()` value) with TimeoutError, however slowly the server sends.
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
            if conn is not None:
                conn.deadline = deadline  # type: ignore[attr-defined]  # a pooled _PinnedHTTPConnection
            else:
                last: BaseException | None = None
                for ip in ips:  # like socket.create_connection: try each checked address in turn
                    try:
                        conn = self._new_conn(u, ip, deadline)
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
                conn.putheader("Accept", self.accept)
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
                    # one byte over the limit, so that parse_robots sees the cut and drops the half line
                    body = self._read_body(resp, sock, deadline, MAX_ROBOTS_BYTES + 1, truncate=True)
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
        """One attempt at `job`: a final FetchResult, or the monotonic time at which to retry.

        `total_timeout_s` bounds the whole fetch of the URL from its first attempt: every attempt ends by
        `job.started + total_timeout_s`, and a retry whose wait would end past that is not scheduled (the URL fails
        at once with the reason of its last attempt).
        """
        now = time.monotonic()
        if job.started is None:
            job.started = now
        if job.warc is not None:
            return self._from_warc(job)
        job.attempts += 1
        cfg = self.cfg
        deadline = job.started + cfg.total_timeout_s
        try:
            try:
                return self._attempt(job, deadline)
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
                retry_at = time.monotonic() + delay
                if retry_at >= deadline:
                    return self._result_error(
                        job,
                        f.reason,
                        f"{f.detail}; no retry: waiting {delay:.1f}s would pass "
                        f"total_timeout_s={cfg.total_timeout_s:g}",
                        http_status=f.http_status,
                    )
                return retry_at
            if f.retry_after is not None:
                self.sched.defer_host(job.host, time.monotonic() + min(f.retry_after, cfg.retry_after_max_s))
            return self._result_error(job, f.reason, f.detail, http_status=f.http_status)
        except Exception as exc:  # a bug or an exotic failure: a result, never a crash
            return self._result_error(job, R.CONNECTION_ERROR, f"unexpected {type(exc).__name__}: {exc}")

    def _from_warc(self, job: _Job) -> FetchResult:
        """A captured image: its captured X-Robots-Tag is obeyed (`respect_optout`), then it is validated and stored.
        robots.txt is not fetched: the capture is the crawler's, made under the crawler's own robots.txt check."""
        assert job.warc is not None
        try:
            tags = job.warc_x_robots_tag
            if self.cfg.respect_optout and tags and x_robots_optout(tags, self.token):
                return self._result_error(job, R.OPTOUT_HEADER, f"X-Robots-Tag (captured): {', '.join(tags)}"[:300])
            return self._accept(job, job.warc, source=SOURCE_WARC, http_status=None, final_url=job.url, ctype=None)
        except Exception as exc:
            return self._result_error(job, R.DECODE_ERROR, f"unexpected {type(exc).__name__}: {exc}")

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

    def _attempt(self, job: _Job, deadline: float) -> FetchResult:
        """Follow redirects by hand to a 2xx response, checking every hop, all by `deadline`; raise _Fail otherwise."""
        cfg = self.cfg
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
