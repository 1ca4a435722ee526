"""Read images that a crawl captured in its own WARC files, by URL (`warc_image_captures` is the index).

Common Crawl stores some image responses next to the pages; taking those bytes costs no request to the site. Local
WARC files are read by offset through one open handle per file; remote ones (https, s3) with one ranged request per
record, sized by the payload length plus `RECORD_HEADROOM` for the WARC and HTTP headers and the gzip framing.

What comes back is a `CapturedImage`: the body (bytes) carrying the captured response's `X-Robots-Tag` values, so the
fetcher can honour an opt-out the site sent to the crawler. Bodies are read and decoded up to `max_bytes`; a record
over it (a decompression bomb, or just a huge image) raises `PayloadTooLarge` (the fetcher then asks the network,
where its own size cap applies).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from danqing_assets.lib.fetch.results import CapturedImage
from danqing_assets.lib.snapshots import read_range
from danqing_assets.lib.warc import DEFAULT_MAX_PAYLOAD_BYTES, PayloadTooLarge, read_http_response

RECORD_HEADROOM = 64 * 1024


class CaptureReader:
    """url -> captured image (a `CapturedImage`, i.e. bytes; None when the crawl has no capture of it). Use as a
    context manager."""

    def __init__(self, captures: Iterable[tuple[str, str, int, int | None]], files: dict[str, str], *,
                 s3_client_factory: Callable[[], Any] | None = None,
                 max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        """captures: (url, warc file name, offset, payload length) of 200 responses; files: name -> uri;
        max_bytes: the most body bytes read or decoded for one capture."""
        self.index: dict[str, tuple[str, int, int]] = {}
        for url, name, offset, length in captures:
            uri = files.get(name)
            if uri:
                self.index.setdefault(url, (uri, offset, length or 0))
        self._s3 = s3_client_factory
        self.max_bytes = max_bytes
        self._handles: dict[str, Any] = {}

    def __call__(self, url: str) -> CapturedImage | None:
        hit = self.index.get(url)
        if hit is None:
            return None
        uri, offset, length = hit
        if "://" in uri:
            if length > self.max_bytes + RECORD_HEADROOM:  # its body is over max_bytes: do not download it
                raise PayloadTooLarge(f"{url}: captured record of {length} bytes, over max_bytes={self.max_bytes}")
            data = read_range(uri, offset, length + RECORD_HEADROOM, s3_client_factory=self._s3)
            got = read_http_response(io.BytesIO(data), 0, max_bytes=self.max_bytes)
        else:
            fh = self._handles.get(uri)
            if fh is None:
                fh = self._handles[uri] = open(uri, "rb")
            got = read_http_response(fh, offset, max_bytes=self.max_bytes)
        return CapturedImage(got.body, x_robots_tag=got.values("x-robots-tag"))

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
