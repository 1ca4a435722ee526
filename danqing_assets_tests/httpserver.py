"""A real threaded HTTP/1.1 server on 127.0.0.1 with scriptable routes, for tests that need real sockets.

    with ScriptedServer() as srv:
        srv.route("/a.jpg", Resp(body=jpeg_bytes, content_type="image/jpeg"))
        srv.route("/flaky", [Resp(status=500), Resp(body=png)])   # 1st request 500, then 200 forever
        srv.route("/slow", Resp(body=png, delay_s=2))
        srv.route("/x", lambda req: Resp(status=302, headers={"Location": "/x"}))
        url = srv.url("/a.jpg")
        ...
        assert srv.count("/flaky") == 2

`ScriptedServer(tls=ssl_context)` serves https instead. Responses can be delayed (before the status line), streamed
chunked, dripped slowly (the body, or the status line and headers themselves), sent without Content-Length (the
connection is then closed), and carry any header. Every
request is logged (path, headers, start time) and the server tracks how many requests are in flight at once (overall
and per path) for politeness tests. Unknown paths answer 404.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Resp:
    """One scripted response.

    delay_s: sleep before sending anything. chunked: Transfer-Encoding chunked (no Content-Length).
    no_length: neither Content-Length nor chunked; the body ends when the connection closes.
    drip: (chunk_size, interval_s): send the body in small pieces with pauses (a slow server).
    head_drip: (chunk_size, interval_s, max_s): send the status line and headers that way (a trickling server); after
      max_s seconds the server gives up and closes the connection, so a test never hangs on it.
    """

    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    delay_s: float = 0.0
    chunked: bool = False
    no_length: bool = False
    drip: tuple[int, float] | None = None
    head_drip: tuple[int, float, float] | None = None


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    started: float
    client: tuple[str, int]


Route = Resp | list[Resp] | Callable[[Request], Resp]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not stall shutdown
    allow_reuse_address = True


class ScriptedServer:
    """Start with `start()` or a `with` block; `url(path)` builds URLs; `count(path)` reads the request counter."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        self._routes: dict[str, Route] = {}
        self._hits: dict[str, int] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._inflight = 0
        self._inflight_by_path: dict[str, int] = {}
        self.max_inflight = 0
        self.max_inflight_by_path: dict[str, int] = {}
        self._host = host
        self._port = port
        self._tls = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ------------------------------------------------------------------------------------------------------

    def route(self, path: str, response: Route) -> None:
        """Answer requests for `path` (path + query, exactly as sent) with `response`.

        A list is played in order, its last element repeating; a callable receives the Request."""
        with self._lock:
            self._routes[path] = response

    def start(self) -> ScriptedServer:
        handler = self._handler_class()
        self._server = _Server((self._host, self._port), handler)
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return self._host

    def url(self, path: str, host: str | None = None) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host or self._host}:{self.port}{path}"

    def count(self, path: str | None = None) -> int:
        """Requests received for `path` (all paths when None)."""
        with self._lock:
            if path is None:
                return sum(self._hits.values())
            return self._hits.get(path, 0)

    def starts(self, path_prefix: str) -> list[float]:
        with self._lock:
            return sorted(r.started for r in self.requests if r.path.startswith(path_prefix))

    # -- handler -----------------------------------------------------------------------------------------------------

    def _pick(self, req: Request) -> Resp:
        with self._lock:
            route = self._routes.get(req.path)
            n = self._hits.get(req.path, 0)
            self._hits[req.path] = n + 1
            self.requests.append(req)
        if route is None:
            return Resp(status=404, body=b"not found", content_type="text/plain")
        if callable(route):
            return route(req)
        if isinstance(route, list):
            return route[min(n, len(route) - 1)]
        return route

    def _enter(self, path: str) -> None:
        with self._lock:
            self._inflight += 1
            self.max_inflight = max(self.max_inflight, self._inflight)
            k = self._inflight_by_path.get(path, 0) + 1
            self._inflight_by_path[path] = k
            self.max_inflight_by_path[path] = max(self.max_inflight_by_path.get(path, 0), k)

    def _leave(self, path: str) -> None:
        with self._lock:
            self._inflight -= 1
            self._inflight_by_path[path] -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # idle keep-alive connections close after this

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
                pass

            def do_GET(self) -> None:  # noqa: N802
                req = Request(self.path, dict(self.headers.items()), time.monotonic(), self.client_address)
                owner._enter(self.path)
                try:
                    self._serve(owner._pick(req))
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    owner._leave(self.path)

            def _serve(self, r: Resp) -> None:
                if r.delay_s:
                    time.sleep(r.delay_s)
                self.send_response(r.status)
                headers = r.headers.items() if isinstance(r.headers, dict) else r.headers
                for k, v in headers:
                    self.send_header(k, v)
                if r.content_type:
                    self.send_header("Content-Type", r.content_type)
                if r.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                elif r.no_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(r.body)))
                if r.head_drip:
                    if not self._drip_head(*r.head_drip):
                        return
                else:
                    self.end_headers()
                step, pause = r.drip if r.drip else (64 * 1024, 0.0)
                for i in range(0, len(r.body), step):
                    piece = r.body[i : i + step]
                    if r.chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    else:
                        self.wfile.write(piece)
                    self.wfile.flush()
                    if pause:
                        time.sleep(pause)
                if r.chunked:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _drip_head(self, step: int, pause: float, max_s: float) -> bool:
                """Send the buffered status line and headers `step` bytes at a time; False when it gave up."""
                self._headers_buffer.append(b"\r\n")
                head = b"".join(self._headers_buffer)
                self._headers_buffer = []
                t0 = time.monotonic()
                for i in range(0, len(head), step):
                    if time.monotonic() - t0 > max_s:
                        self.close_connection = True
                        return False
                    self.wfile.write(head[i : i + step])
                    self.wfile.flush()
                    time.sleep(pause)
                return True

        return Handler
