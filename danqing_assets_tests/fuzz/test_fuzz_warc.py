"""Fuzzing the WARC reader (`lib/warc.py`): arbitrary bytes, real warcio-written files with bytes flipped, cut or
inserted, and response records whose HTTP framing and encodings are generated. The reader reports problems as
counted errors; an unforeseen exception (`extract_error`, or a `record_error` from inside a record) is a bug."""

from __future__ import annotations

import gzip
import io
import zlib

import brotli
from hypothesis import example, given
from hypothesis import strategies as st
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from danqing_assets.lib import warc as W
from danqing_assets_tests.fuzz.conftest import corpus, time_limit
from danqing_assets_tests.lib.test_warc import html_page, raw_response_record

PAGE = html_page('<figure><img src="/a.jpg" alt="一只橘猫在窗台上晒太阳"><figcaption>橘猫</figcaption></figure>'
                 '<img srcset="b.jpg 2x, c.jpg 1x" alt="西湖的柳树">').encode()


def _base(gz: bool) -> bytes:
    """A small real WARC: warcinfo, an HTML page, a gzip-encoded page, an image capture (written with warcio)."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warcinfo_record("fuzz.warc", {"software": "fuzz"}))
    for url, body, headers in (
        ("http://example.cn/p.html", PAGE, [("Content-Type", "text/html; charset=utf-8")]),
        ("http://example.cn/z.html", gzip.compress(PAGE), [("Content-Type", "text/html"),
                                                             ("Content-Encoding", "gzip")]),
        ("http://example.cn/a.jpg", b"\xff\xd8\xff\xe0" + bytes(200), [("Content-Type", "image/jpeg"),
                                                                         ("X-Robots-Tag", "noai")]),
    ):
        rec = w.create_warc_record(url, "response", payload=io.BytesIO(body),
                                   http_headers=StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1"),
                                   warc_headers_dict={"WARC-Identified-Content-Language": "zho"})
        w.write_record(rec)
    return buf.getvalue()


BASES = (_base(True), _base(False))


def check(data: bytes, **kw) -> W.ExtractResult:
    """Extract `data` as a file and hold the result to the reader's contract."""
    with time_limit(10):
        res = W.extract_file(io.BytesIO(data), "fuzz.warc.gz", snapshot="fuzz", **kw)
    for e in res.stats.errors:
        assert e.kind != W.EXTRACT_ERROR, e
        assert e.kind != W.RECORD_ERROR or e.message.startswith("reading stopped"), e  # from inside a record: a bug
    assert 0 <= res.stats.bytes_read <= len(data)
    for row in res.pairs:
        assert isinstance(row["caption"], str) and row["image_url"].startswith(("http://", "https://")), row
        assert 0 <= row["warc_offset"] < len(data)
    for cap in res.captures:
        assert 0 <= cap["warc_offset"] < len(data)
    return res


def test_the_bases_extract_cleanly() -> None:
    """The seeds the mutations start from are good files (else the mutation tests would prove little)."""
    for base in BASES:
        res = check(base)
        assert res.stats.errors == [] and len(res.pairs) == 4 and len(res.captures) == 1


@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


_mutation = st.tuples(st.sampled_from(["flip", "cut", "insert", "delete", "repeat"]), st.integers(0, 1 << 30),
                      st.binary(min_size=1, max_size=16))


def mutate(base: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(base)
    for op, at, chunk in ops:
        i = at % max(1, len(data))
        if op == "flip" and data:
            data[i] ^= chunk[0] or 1
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = chunk
        elif op == "delete":
            del data[i:i + len(chunk)]
        elif op == "repeat":
            data[i:i] = data[i:i + 64]
    return bytes(data)


@given(st.sampled_from(BASES), st.lists(_mutation, min_size=1, max_size=6), st.booleans())
def test_mutated_real_files(base: bytes, ops, prefilter: bool) -> None:
    check(mutate(base, ops), language_prefilter=prefilter)


def _chunked(parts: list[tuple[str, bytes]], end: str) -> bytes:
    return b"".join(f"{size}\r\n".encode() + data + b"\r\n" for size, data in parts) + end.encode()


_chunk_size = st.one_of(st.integers(-16, 64).map(lambda n: f"{n:x}"),
                        st.sampled_from(["+3", "1_0", " 5", "ffffffffffff", "0x5", "", "zz", "5;ext=1"]))
_body = st.one_of(
    st.builds(lambda b: gzip.compress(b)[: len(b)], st.binary(max_size=64)),
    st.builds(lambda b, cut: zlib.compress(b)[:cut], st.binary(max_size=256), st.integers(0, 300)),
    st.builds(lambda b, cut: brotli.compress(b)[:cut], st.binary(max_size=256), st.integers(0, 300)),
    st.builds(_chunked, st.lists(st.tuples(_chunk_size, st.binary(max_size=16)), max_size=5),
              st.sampled_from(["0\r\n\r\n", "", "0\r\n", "\r\n"])),
    st.binary(max_size=128),
)


@given(_body, st.sampled_from([None, "chunked", "gzip, chunked"]),
       st.sampled_from([None, "gzip", "x-gzip", "deflate", "br", "identity", "compress", "GZIP "]),
       st.integers(1, 4096))
# found: a negative chunk size sent _dechunk back to the same size line, forever (a WARC holding this response
# hung raw_pairs); chunk sizes are now hex digits only
@example(body=b"1\r\nx\r\n-6\r\nabcd\r\n0\r\n\r\n", te="chunked", ce=None, cap=100)
def test_http_body_decoding(body: bytes, te, ce, cap: int) -> None:
    """`decode_http_body` decodes or raises ValueError, never more than its cap (nor, for chunked framing, more than
    the body), and ends."""
    try:
        with time_limit(5):
            out = W.decode_http_body(body, te, ce, max_bytes=cap)
    except ValueError:
        return
    assert len(out) <= max(cap, len(body))


@given(st.lists(st.tuples(st.sampled_from(["Content-Type", "Content-Encoding", "Transfer-Encoding", "Content-Length",
                                           "X-Robots-Tag", "Location", "content-type"]),
                          st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40)),
                max_size=6),
       st.sampled_from(["HTTP/1.1 200 OK", "HTTP/1.1 301 Moved", "HTTP/1.0 200", "HTTP/1.1 abc", "garbage", ""]),
       _body, st.sampled_from(["zho", "zho,eng", "eng", ""]))
def test_generated_http_responses(headers, status: str, body: bytes, lang: str) -> None:
    head = status + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    block = head.encode("utf-8", "surrogateescape") + body + PAGE[: len(body) % 200]
    check(raw_response_record("http://example.cn/g.html", block, lang=lang))


def test_corpus() -> None:
    """Every kept finding and seed (danqing_assets_tests/fuzz/corpus/warc-*) still reads within the contract."""
    found = corpus("warc")
    assert found
    for data in found:
        check(data)
