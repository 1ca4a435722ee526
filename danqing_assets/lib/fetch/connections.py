"""HTTP(S) connections pinned to a checked IP (the Host header / TLS SNI keep the URL's host name), and an LRU pool
of idle keep-alive connections."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import OrderedDict

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
