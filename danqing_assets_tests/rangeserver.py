"""A static file server on 127.0.0.1 that honours `Range: bytes=a-b` (Python's SimpleHTTPRequestHandler does not),
as Common Crawl's https and S3 endpoints do. Counts requests per path."""

import os
import re
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeHandler(SimpleHTTPRequestHandler):
    counter: Counter

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.counter[(self.path, "range" if self.headers.get("Range") else "full")] += 1
        m = _RANGE.match(self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if not m or not os.path.isfile(path):
            return super().do_GET()
        size = os.path.getsize(path)
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(directory):
    """Start the server; returns (base_url, counter, stop)."""
    counter: Counter = Counter()
    handler = type("Handler", (RangeHandler,), {"counter": counter})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", counter, server.shutdown
