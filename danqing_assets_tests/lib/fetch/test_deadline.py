"""`total_timeout_s` bounds the whole fetch of a URL against real slow servers on 127.0.0.1: headers sent one byte at a
time, a TLS handshake that never completes, retries and the waits before them. Every server here gives up by itself
after a few seconds, so a regression shows as a slow failing test, never a hang."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from danqing_assets.lib import reasons as R
from danqing_assets_tests.httpserver import Resp, ScriptedServer

from .test_fetch import JPEG, cfg, run

TOTAL = 2.0
SLACK = 1.0  # scheduling, thread start, robots.txt: the fetch must end within TOTAL + SLACK


@pytest.fixture
def srv():
    with ScriptedServer() as s:
        yield s


def test_headers_trickled_one_byte_at_a_time_end_at_the_total_deadline(srv: ScriptedServer) -> None:
    # one byte of status line / headers per second: each socket read is quick, the response never completes
    srv.route("/trickle.jpg", Resp(body=JPEG, content_type="image/jpeg", head_drip=(1, 1.0, 6.0)))
    t0 = time.monotonic()
    r = run([srv.url("/trickle.jpg")], config=cfg(total_timeout_s=TOTAL, read_timeout_s=5.0, retries=1))[
        srv.url("/trickle.jpg")
    ]
    elapsed = time.monotonic() - t0
    assert r.reason == R.TIMEOUT, r
    assert elapsed < TOTAL + SLACK, elapsed
    assert r.elapsed_ms / 1000 < TOTAL + SLACK


def test_body_trickle_on_a_reused_connection_gets_the_new_deadline(srv: ScriptedServer) -> None:
    # the first image leaves a keep-alive connection in the pool; the second, reusing it, must still stop in time
    srv.route("/fast.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    srv.route("/drip.jpg", Resp(body=JPEG, content_type="image/jpeg", drip=(64, 0.4)))
    c = cfg(total_timeout_s=TOTAL, read_timeout_s=5.0, concurrency=1, per_host_concurrency=1)
    first = run([srv.url("/fast.jpg")], config=c)
    assert first[srv.url("/fast.jpg")].ok
    t0 = time.monotonic()
    res = run([srv.url("/fast.jpg"), srv.url("/drip.jpg")], config=c)
    assert res[srv.url("/drip.jpg")].reason == R.TIMEOUT
    assert time.monotonic() - t0 < TOTAL + SLACK + 0.5


class _TricklingTCPServer:
    """Accepts connections and sends `payload` one byte every `pause` seconds, giving up after `max_s` (a TLS server
    whose handshake never completes)."""

    def __init__(self, payload: bytes, pause: float, max_s: float) -> None:
        self.payload, self.pause, self.max_s = payload, pause, max_s
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> _TricklingTCPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _accept(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - t0 < 30:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        t0 = time.monotonic()
        with conn:
            for b in self.payload:
                if self._stop.is_set() or time.monotonic() - t0 > self.max_s:
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    return
                time.sleep(self.pause)


def test_a_tls_handshake_that_never_completes_ends_at_the_total_deadline() -> None:
    # a TLS record header announcing 16 KB of ServerHello, then one byte every 0.3 s
    payload = b"\x16\x03\x03\x40\x00" + b"\x02" * 200
    with _TricklingTCPServer(payload, pause=0.3, max_s=10.0) as ts:
        url = f"https://127.0.0.1:{ts.port}/a.jpg"
        t0 = time.monotonic()
        c = cfg(total_timeout_s=TOTAL, connect_timeout_s=5.0, read_timeout_s=5.0, respect_robots=False)
        r = run([url], config=c)[url]
        elapsed = time.monotonic() - t0
    assert r.reason == R.TIMEOUT, r
    assert elapsed < TOTAL + SLACK, elapsed


def test_a_retry_whose_wait_would_pass_the_deadline_is_not_made(srv: ScriptedServer) -> None:
    srv.route("/busy.jpg", Resp(status=503, headers={"Retry-After": "4"}))
    srv.route("/down.jpg", Resp(status=500))
    c = cfg(total_timeout_s=TOTAL, retries=3, retry_after_max_s=10.0, backoff_base_s=5.0, backoff_max_s=10.0)
    for path in ("/busy.jpg", "/down.jpg"):  # one run each: Retry-After holds back the whole host
        t0 = time.monotonic()
        r = run([srv.url(path)], config=c)[srv.url(path)]
        elapsed = time.monotonic() - t0
        assert (r.reason, r.attempts) == (R.HTTP_SERVER_ERROR, 1), r
        assert "total_timeout_s" in r.error
        assert srv.count(path) == 1
        assert elapsed < TOTAL + SLACK, (path, elapsed)


def test_slow_failing_attempts_share_one_deadline(srv: ScriptedServer) -> None:
    # each attempt takes 0.8 s and fails with 500: retries run only while the URL's 2 s last
    srv.route("/slow500.jpg", Resp(status=500, delay_s=0.8))
    c = cfg(total_timeout_s=TOTAL, retries=5, backoff_base_s=0.01, backoff_max_s=0.02)
    t0 = time.monotonic()
    r = run([srv.url("/slow500.jpg")], config=c)[srv.url("/slow500.jpg")]
    elapsed = time.monotonic() - t0
    assert elapsed < TOTAL + SLACK, elapsed
    assert r.reason in (R.TIMEOUT, R.HTTP_SERVER_ERROR), r
    assert r.attempts <= 3 and srv.count("/slow500.jpg") <= 3
