"""HTTP(S) connections pinned to a checked IP (the Host header / TLS SNI keep the URL's host name), and an LRU pool
of idle keep-alive connections.

Deadlines: a socket timeout bounds one socket operation, so a server that sends one byte every few seconds would
never trip it. Each connection therefore carries `deadline` (a `time.monotonic()` value, or None): the TLS handshake
gets at most the time left, and every read of the response (status line, headers, body) is a socket read whose
timeout is the smaller of the read timeout and the time left, refused outright once the deadline has passed.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import threading
import time
from collections import OrderedDict


class _DeadlineSocketIO(socket.SocketIO):
    """`socket.SocketIO` whose every read is bounded by the read timeout and by an absolute deadline."""

    def __init__(self, sock: socket.socket, deadline: float, read_timeout: float) -> None:
        super().__init__(sock, "rb")
        self._deadline = deadline
        self._read_timeout = read_timeout

    def readinto(self, b) -> int | None:  # noqa: ANN001 - a writable buffer, as for io.RawIOBase
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("total timeout")
        timeout = min(self._read_timeout, remaining)
        if self._sock.gettimeout() != timeout:  # settimeout is a system call: skip it while the value holds
            self._sock.settimeout(timeout)
        return super().readinto(b)


class _DeadlineSocket:
    """What `http.client.HTTPResponse` is given instead of the socket: it only calls `makefile("rb")`."""

    def __init__(self, sock: socket.socket, deadline: float, read_timeout: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._read_timeout = read_timeout

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        assert mode == "rb", mode
        raw = _DeadlineSocketIO(self._sock, self._deadline, self._read_timeout)
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile does: close() waits for us
        return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTPResponse reading through `_DeadlineSocketIO` (set up by `_PinnedHTTPConnection.getresponse`)."""

    def __init__(self, sock, debuglevel: int = 0, method: str | None = None, url: str | None = None, *,  # noqa: ANN001
                 deadline: float, read_timeout: float) -> None:
        wrapped = _DeadlineSocket(sock, deadline, read_timeout)
        super().__init__(wrapped, debuglevel, method, url)  # type: ignore[arg-type]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP connection to a fixed IP; `host` is only used for the Host header."""

    def __init__(
        self, host: str, port: int, ip: str, connect_timeout: float, read_timeout: float, deadline: float | None = None
    ) -> None:
        super().__init__(host, port, timeout=read_timeout)
        self._ip = ip
        self._connect_timeout = connect_timeout
        self.deadline = deadline  # monotonic time past which nothing more is read (None: socket timeouts only)

    def _time_left(self, limit: float) -> float:
        """`limit`, or less when the deadline is nearer; TimeoutError when it has passed."""
        if self.deadline is None:
            return limit
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("total timeout")
        return min(limit, remaining)

    def getresponse(self) -> http.client.HTTPResponse:
        if self.deadline is None:
            self.response_class = http.client.HTTPResponse
        else:
            self.response_class = functools.partial(  # type: ignore[assignment]
                _DeadlineResponse, deadline=self.deadline, read_timeout=self.timeout
            )
        return super().getresponse()

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self._time_left(self._connect_timeout))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.settimeout(self.timeout)
        self.sock = sock


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to a fixed IP with SNI and certificate checks for the URL's host name."""

    def __init__(
        self,
        host: str,
        port: int,
        ip: str,
        connect_timeout: float,
        read_timeout: float,
        context,  # noqa: ANN001 - ssl.SSLContext
        deadline: float | None = None,
    ) -> None:
        super().__init__(host, port, ip, connect_timeout, read_timeout, deadline)
        self._context = context

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        try:
            # the handshake as a whole (not each read of it) is bounded by this timeout
            self.sock.settimeout(self._time_left(self._connect_timeout))
        except TimeoutError:
            self.sock.close()
            raise
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
