"""Read images that a crawl captured in its own WARC files, by URL (`warc_image_captures` is the index).

Common Crawl stores some image responses next to the pages; taking those bytes costs no request to the site. Local
WARC files are read by offset through one open handle per file; remote ones (https, s3) with one ranged request per
record, sized by the payload length plus `RECORD_HEADROOM` for the WARC and HTTP headers and the gzip framing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from danqing_assets.lib.snapshots import read_range
from danqing_assets.lib.warc import read_record_payload

RECORD_HEADROOM = 64 * 1024


class CaptureReader:
    """url -> captured image bytes (None when the crawl has no capture of it). Use as a context manager."""

    def __init__(self, captures: Iterable[tuple[str, str, int, int | None]], files: dict[str, str], *,
                 s3_client_factory: Callable[[], Any] | None = None) -> None:
        """captures: (url, warc file name, offset, payload length) of 200 responses; files: name -> uri."""
        self.index: dict[str, tuple[str, int, int]] = {}
        for url, name, offset, length in captures:
            uri = files.get(name)
            if uri:
                self.index.setdefault(url, (uri, offset, length or 0))
        self._s3 = s3_client_factory
        self._handles: dict[str, Any] = {}

    def __call__(self, url: str) -> bytes | None:
        hit = self.index.get(url)
        if hit is None:
            return None
        uri, offset, length = hit
        if "://" in uri:
            data = read_range(uri, offset, length + RECORD_HEADROOM, s3_client_factory=self._s3)
            _headers, body = read_record_payload(io.BytesIO(data), 0)
            return body
        fh = self._handles.get(uri)
        if fh is None:
            fh = self._handles[uri] = open(uri, "rb")
        _headers, body = read_record_payload(fh, offset)
        return body

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def __enter__(self) -> "CaptureReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
