"""Decompression bombs on the WARC read path: 100 MB of zeros behind gzip / brotli Content-Encoding of pages and image
captures, and a WARC record whose own gzip member inflates to 100 MB. Real WARC files written with warcio; every
decoder must stop at its cap (checked by return size, exceptions and the peak of Python allocations)."""

from __future__ import annotations

import io
import tracemalloc
import zlib
from pathlib import Path

import brotli
import pytest
from warcio.archiveiterator import ArchiveIterator as WarcioIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from danqing_assets.lib import warc as W
from danqing_assets.lib.captures import CaptureReader

from .test_warc import SNAPSHOT

BOMB = 100_000_000  # decoded size of every bomb here
MB = 1_000_000
SITE = "http://bomb.example.invalid"


class _Zeros(io.RawIOBase):
    """`n` zero bytes as a stream, never held in memory at once."""

    def __init__(self, n: int) -> None:
        self.n = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        k = min(len(b), self.n)
        b[:k] = bytes(k)
        self.n -= k
        return k


def _gzip_bomb() -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [c.compress(chunk) for _ in range(BOMB // len(chunk))]
    return b"".join([*parts, c.compress(bytes(BOMB % len(chunk))), c.flush()])


def _brotli_bomb() -> bytes:
    c = brotli.Compressor(quality=5)
    chunk = bytes(1 << 20)
    parts = [c.process(chunk) for _ in range(BOMB // len(chunk))]
    return b"".join([*parts, c.process(bytes(BOMB % len(chunk))), c.finish()])


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    out = {"gzip": _gzip_bomb(), "br": _brotli_bomb()}
    assert len(out["br"]) < 1000 and len(out["gzip"]) < 200_000
    return out


@pytest.fixture(scope="module")
def bomb_warc(tmp_path_factory, bombs) -> tuple[Path, dict[str, int]]:
    """A .warc.gz with pages and images whose bodies are bombs, and last a record that is a bomb itself."""
    path = tmp_path_factory.mktemp("bombs") / "bombs.warc.gz"
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)

        def response(url: str, payload: io.IOBase, ctype: str, extra: list[tuple[str, str]], length: int) -> None:
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype), ("Content-Length", str(length)), *extra],
                                    protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=payload, http_headers=http,
                                                warc_headers_dict={"WARC-Identified-Content-Language": "zho"}))

        for enc, body in bombs.items():
            response(f"{SITE}/page-{enc}.html", io.BytesIO(body), "text/html; charset=utf-8",
                     [("Content-Encoding", enc)], len(body))
            response(f"{SITE}/img-{enc}.jpg", io.BytesIO(body), "image/jpeg", [("Content-Encoding", enc)], len(body))
        response(f"{SITE}/record.jpg", io.BufferedReader(_Zeros(BOMB), 1 << 20), "image/jpeg", [], BOMB)
    offsets = {}
    with open(path, "rb") as f:
        it = WarcioIterator(f)
        for rec in it:
            if rec.rec_type == "response":
                offsets[rec.rec_headers.get_header("WARC-Target-URI").rsplit("/", 1)[1]] = it.get_record_offset()
    assert path.stat().st_size < 2 * MB
    return path, offsets


def _peak(fn, *args, **kwargs):
    """(result or exception, peak bytes of Python allocations while `fn` ran)."""
    tracemalloc.start()
    try:
        try:
            got = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - returned for the caller to assert on
            got = e
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("enc", ["br", "gzip"])
def test_decode_http_body_stops_at_its_cap(bombs, enc: str) -> None:
    out, peak = _peak(W.decode_http_body, bombs[enc], None, enc, max_bytes=MB)
    assert len(out) == MB
    assert peak < 10 * MB, peak
    # no cap given: the default one, not the full 100 MB
    assert len(W.decode_http_body(bombs[enc], None, enc)) == W.DEFAULT_MAX_DECODED_BYTES < BOMB


def test_bomb_pages_are_parsed_up_to_max_page_bytes(bomb_warc) -> None:
    path, _ = bomb_warc
    res, peak = _peak(W.extract_file, str(path), path.name, snapshot=SNAPSHOT, max_page_bytes=MB)
    assert not isinstance(res, Exception), res
    truncated = [e for e in res.stats.errors if e.kind == W.PAGE_TRUNCATED]
    assert len(truncated) == 2  # the br page and the gzip page, each cut at max_page_bytes
    assert res.stats.pages_truncated == 2
    assert not [e for e in res.stats.errors if e.kind not in (W.PAGE_TRUNCATED, W.CHARSET_ERRORS)], res.stats.errors
    assert [c["url"].rsplit("/", 1)[1] for c in res.captures] == ["img-gzip.jpg", "img-br.jpg", "record.jpg"]
    # the last record (100 MB in one gzip member) is checked for completeness by streaming it, not by inflating it
    assert peak < 40 * MB, peak


@pytest.mark.parametrize("name", ["img-br.jpg", "img-gzip.jpg", "record.jpg"])
def test_read_record_payload_refuses_bombs(bomb_warc, name: str) -> None:
    path, offsets = bomb_warc
    got, peak = _peak(W.read_record_payload, path, offsets[name], max_bytes=MB)
    assert isinstance(got, W.PayloadTooLarge), got
    assert peak < 10 * MB, peak
    # without max_bytes: the default cap, still far below the 100 MB
    got, peak = _peak(W.read_record_payload, path, offsets[name])
    assert isinstance(got, W.PayloadTooLarge), got
    assert peak < 3 * W.DEFAULT_MAX_PAYLOAD_BYTES, peak


def test_capture_reader_refuses_bombs(bomb_warc) -> None:
    path, offsets = bomb_warc
    caps = [(f"{SITE}/{name}", path.name, off, None) for name, off in offsets.items()]
    with CaptureReader(caps, {path.name: str(path)}, max_bytes=MB) as read:
        for name in ("img-br.jpg", "img-gzip.jpg", "record.jpg"):
            with pytest.raises(W.PayloadTooLarge):
                read(f"{SITE}/{name}")
