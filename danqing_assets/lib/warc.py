"""WARC side of the `raw_pairs` stage: read a (Common Crawl) WARC file with fastwarc and turn every `<img>` of its HTML
responses into an image-text pair row, every image response into a capture row.

Speed comes from not touching what cannot matter: non-response records are skipped unread; with
`language_prefilter=True` a response whose `WARC-Identified-Content-Language` list lacks `zho` is skipped before its
HTTP headers are parsed (about 95 % of Common Crawl pages); pages are not decoded in full (UTF-8 goes to Lexbor as
bytes, GBK / Big5 in a passthrough form, see `charset.DecodedPage`), and `html.extract_images` answers most pages
with a compiled tokenizer, parsing only the rest with Lexbor (on a skeleton of the page, see `html.skeleton_html`).

Malformed input never raises out of `extract_file`: each problem becomes a `WarcError` (file, offset, kind) and the
rest of the file is still read. Plain library code (no Dagster).

Every decoder of untrusted bytes has an output cap, so a small input cannot become a large allocation: pages are read
up to `max_page_bytes` (decoded, after gzip / deflate / br Content-Encoding; a little more of the encoded record), an
image capture read by `read_http_response` up to its `max_bytes` (over it: `PayloadTooLarge`), and the last gzip
member, decompressed again to check it is complete, is streamed and only counted.
"""

from __future__ import annotations

import bisect
import gc
import io
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from hashlib import blake2b
from typing import Any, BinaryIO

from danqing_assets.lib import html as H
from danqing_assets.lib.charset import count_invalid, decode_page
from danqing_assets.lib.ids import pair_id

DEFAULT_MAX_PAGE_BYTES = 2 * 1024 * 1024
#: Cap on a record payload read by `read_http_response` / `read_record_payload` when the caller sets none (bytes of
#: the record's HTTP body and of that body once its Content-Encoding is undone).
DEFAULT_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024
#: Cap on `decode_http_body`'s output when the caller sets none.
DEFAULT_MAX_DECODED_BYTES = DEFAULT_MAX_PAYLOAD_BYTES
#: A page with Content-Encoding / Transfer-Encoding: this many times `max_page_bytes` of the encoded body is read
#: (the first `max_page_bytes` decoded bytes never need more, framing included).
_ENCODED_READ_FACTOR = 8
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
LANGUAGE_HEADER = "WARC-Identified-Content-Language"
CHINESE = "zho"

# WarcError kinds
TRUNCATED_GZIP = "truncated_gzip"  # the file ends inside a gzip member: records before it are kept
CORRUPT_GZIP = "corrupt_gzip"  # undecompressible data in the middle of the file: reading stops there
TRUNCATED_RECORD = "truncated_record"  # an uncompressed file ends inside a record
CORRUPT_RECORD = "corrupt_record"  # a record whose Content-Length overruns its gzip member: reading stops there
NOT_A_WARC = "not_a_warc"  # neither WARC nor gzipped WARC (e.g. a PNG renamed .warc.gz)
EMPTY_FILE = "empty_file"
UNREADABLE_FILE = "unreadable_file"  # missing, permission denied, I/O error
BAD_HTTP_HEADER = "bad_http_header"  # response record whose HTTP status line / headers do not parse
BAD_CONTENT_ENCODING = "bad_content_encoding"  # Content-Encoding / Transfer-Encoding that does not decode
PAGE_TRUNCATED = "page_truncated"  # page over max_page_bytes (only its head is parsed) or WARC-Truncated
CHARSET_ERRORS = "charset_errors"  # invalid bytes for the page's charset (decoded with U+FFFD)
HTML_TOO_DEEP = "html_too_deep"  # nesting beyond max_html_depth: parsed up to that point
HTML_PARSE_ERROR = "html_parse_error"
RECORD_ERROR = "record_error"  # anything else that went wrong with one record
EXTRACT_ERROR = "extract_error"  # an unexpected failure outside any one record (a bug: please report)
INTERNAL_ERROR = "internal_error"  # the worker process extracting the file died twice (see extract_jobs.extract_files)

PAIR_COLUMNS: tuple[str, ...] = (
    "pair_id", "snapshot", "warc_file", "warc_offset", "warc_record_id", "page_url", "domain", "image_url", "caption",
    "title", "figcaption", "img_index", "page_language", "language_source", "charset", "fetch_time",
)
CAPTURE_COLUMNS: tuple[str, ...] = (
    "snapshot", "url", "warc_file", "warc_offset", "content_type", "content_length", "http_status",
)


@dataclass
class WarcError:
    file: str
    offset: int | None  # start offset of the record concerned (None: the file as a whole)
    kind: str
    message: str


@dataclass
class ExtractStats:
    warc_file: str
    bytes_read: int = 0  # bytes of the (compressed) file consumed
    records: int = 0  # WARC records of every type
    responses: int = 0
    html_pages: int = 0  # HTML responses parsed for pairs
    html_pages_lexbor: int = 0  # of which the compiled tokenizer could not answer: parsed by Lexbor (see html.py)
    pages_skipped_language: Counter[str] = field(default_factory=Counter)  # by CC primary language label
    pages_truncated: int = 0  # over max_page_bytes, or marked WARC-Truncated by the crawler
    pairs: int = 0
    skipped_images: Counter[str] = field(default_factory=Counter)  # <img> without a pair, by reason
    errors: list[WarcError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pages_skipped_language"] = dict(self.pages_skipped_language)
        d["skipped_images"] = dict(self.skipped_images)
        return d


def merge_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum `ExtractStats.to_dict()` results of several files (counters added, errors concatenated)."""
    out: dict[str, Any] = {"files": len(stats), "bytes_read": 0, "records": 0, "responses": 0, "html_pages": 0,
                           "html_pages_lexbor": 0,
                           "pages_skipped_language": Counter(), "pages_truncated": 0, "pairs": 0,
                           "skipped_images": Counter(), "errors": [], "errors_by_kind": Counter()}
    for s in stats:
        for k in ("bytes_read", "records", "responses", "html_pages", "html_pages_lexbor", "pages_truncated", "pairs"):
            out[k] += s.get(k, 0)
        out["pages_skipped_language"].update(s.get("pages_skipped_language", {}))
        out["skipped_images"].update(s.get("skipped_images", {}))
        out["errors"].extend(s.get("errors", []))
        out["errors_by_kind"].update(e["kind"] for e in s.get("errors", []))
    for k in ("pages_skipped_language", "skipped_images", "errors_by_kind"):
        out[k] = dict(out[k])
    return out


# The columns that vary per image; the others (`PAGE_COLUMNS`) are the same for every pair of a page.
IMAGE_COLUMNS: tuple[str, ...] = ("pair_id", "image_url", "caption", "title", "figcaption", "img_index")
PAGE_COLUMNS: tuple[str, ...] = tuple(c for c in PAIR_COLUMNS if c not in IMAGE_COLUMNS)


class PairRows(Sequence):
    """The pair rows of one file, stored by column: one tuple of `PAGE_COLUMNS` values per page and one list per
    `IMAGE_COLUMNS` column (a page of 25 images costs one `list.extend` per column instead of 25 dicts).

    Reads as a sequence of row dicts in `PAIR_COLUMNS` order (built when read, so tests and small callers see
    plain rows); `to_polars` builds a DataFrame from the columns directly.
    """

    __slots__ = ("pages", "page_ends", "cols")

    def __init__(self) -> None:
        self.pages: list[tuple[Any, ...]] = []  # PAGE_COLUMNS values per page
        self.page_ends: list[int] = []  # rows up to and including each page
        self.cols: tuple[list[Any], ...] = tuple([] for _ in IMAGE_COLUMNS)

    def add_page(self, page: tuple[Any, ...], pair_ids: list[str], urls: tuple[str, ...], captions: tuple[str, ...],
                 titles: tuple[str | None, ...], figcaptions: tuple[str | None, ...], idxs: tuple[int, ...]) -> None:
        n = len(pair_ids)
        if not n:
            return
        self.pages.append(page)
        self.page_ends.append((self.page_ends[-1] if self.page_ends else 0) + n)
        c = self.cols
        c[0].extend(pair_ids)
        c[1].extend(urls)
        c[2].extend(captions)
        c[3].extend(titles)
        c[4].extend(figcaptions)
        c[5].extend(idxs)

    def truncate(self, n: int) -> None:
        """Keep the first `n` rows only."""
        n = max(0, min(n, len(self)))
        for col in self.cols:
            del col[n:]
        while self.page_ends and self.page_ends[-1] > n:
            prev = self.page_ends[-2] if len(self.page_ends) > 1 else 0
            if prev < n:
                self.page_ends[-1] = n
                break
            self.pages.pop()
            self.page_ends.pop()

    def __len__(self) -> int:
        return self.page_ends[-1] if self.page_ends else 0

    def _row(self, i: int) -> dict[str, Any]:
        page = self.pages[bisect.bisect_right(self.page_ends, i)]
        row = dict(zip(PAGE_COLUMNS, page))
        for name, col in zip(IMAGE_COLUMNS, self.cols):
            row[name] = col[i]
        return {c: row[c] for c in PAIR_COLUMNS}

    def __getitem__(self, i):  # noqa: ANN001, ANN204 - int or slice, as for a list
        if isinstance(i, slice):
            return [self._row(k) for k in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("pair row index out of range")
        return self._row(i)

    def __iter__(self):  # noqa: ANN204
        return (self._row(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PairRows, list)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"PairRows({len(self)} rows, {len(self.pages)} pages)"

    def to_polars(self, schema: dict[str, Any]):  # noqa: ANN201 - polars.DataFrame
        """The rows as a polars DataFrame with `schema` (its columns in `PAIR_COLUMNS` order)."""
        import polars as pl

        if not self.page_ends:
            return pl.DataFrame(schema=schema)
        import numpy as np

        ends = np.asarray(self.page_ends, dtype=np.int64)
        counts = np.diff(ends, prepend=0)
        pages = pl.DataFrame(list(zip(*self.pages)), schema={c: schema[c] for c in PAGE_COLUMNS}, orient="col")
        pages = pages[np.repeat(np.arange(len(counts)), counts)]  # each page's row once per pair
        images = pl.DataFrame(list(self.cols), schema={c: schema[c] for c in IMAGE_COLUMNS}, orient="col")
        return pl.concat([pages, images], how="horizontal").select(list(schema))


@dataclass
class ExtractResult:
    pairs: PairRows | list[dict[str, Any]]  # PAIR_COLUMNS (a PairRows from `extract_file`)
    captures: list[dict[str, Any]]  # CAPTURE_COLUMNS
    stats: ExtractStats


# ------------------------------------------------------------------------------------------------ input stream
class _TrackingReader:
    """Read-only file-like object handed to fastwarc.

    Counts the bytes read, serves an already-read head first (used to sniff the format), and keeps the bytes from
    the start of the most recent record on, so that the last record can be verified once fastwarc stops (fastwarc
    ends silently on a truncated gzip member).
    """

    def __init__(self, raw: BinaryIO, head: bytes, start: int) -> None:
        self.raw = raw
        self.error: BaseException | None = None  # what the underlying stream raised, if it did
        self.pos = start  # absolute offset of the next byte returned
        self._pending = head
        self._kept: list[tuple[int, bytes]] = []  # (absolute offset, chunk) from `_mark` on
        self._mark = start

    def read(self, n: int = -1) -> bytes:
        if self._pending:
            data = self._pending if n < 0 else self._pending[:n]
            self._pending = self._pending[len(data):]
        else:
            try:
                data = self.raw.read(n) if n is not None and n >= 0 else self.raw.read()
            except Exception as e:
                self.error = e
                raise
            if not data:
                return b""
        self._kept.append((self.pos, data))
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("stream is read sequentially")

    def close(self) -> None:  # the owner closes the underlying file
        pass

    def mark(self, offset: int) -> None:
        """Forget the bytes before `offset` (the start of the record just yielded)."""
        self._mark = offset
        kept = self._kept
        i = 0
        while i < len(kept) and kept[i][0] + len(kept[i][1]) <= offset:
            i += 1
        if i:
            del kept[:i]

    def tail(self, n_more: int = 1 << 20) -> bytes:
        """Bytes from the mark to the end of what was read, plus up to `n_more` not yet read."""
        data = b"".join(c for _, c in self._kept)
        if self._kept:
            data = data[self._mark - self._kept[0][0]:]
        rest = self._pending + (self.raw.read(n_more) or b"")
        self._pending = b""
        return data + rest


def _open_source(source: Any) -> tuple[BinaryIO, bool]:
    """(binary stream, whether we own it and must close it)."""
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb"), True
    if hasattr(source, "read"):
        return source, False
    raise TypeError(f"expected a path or a binary file-like object, got {type(source).__name__}")


def _sniff(head: bytes) -> tuple[str | None, str]:
    """(error kind or None, description) for the first bytes of a file that should be a WARC."""
    if not head:
        return EMPTY_FILE, "file is empty"
    if head[:2] == b"\x1f\x8b":
        try:
            first = zlib.decompressobj(31).decompress(head, 64)
        except zlib.error as e:
            return NOT_A_WARC, f"gzip data that does not decompress: {e}"
        if first.lstrip(b"\r\n")[:5] == b"WARC/" or len(first) < 5:
            return None, "gzip"
        return NOT_A_WARC, f"gzip member does not start with a WARC header: {first[:16]!r}"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return None, "zstd"
    if head.lstrip(b"\r\n")[:5] == b"WARC/":
        return None, "warc"
    signatures = {b"\x89PNG": "PNG image", b"\xff\xd8\xff": "JPEG image", b"GIF8": "GIF image", b"%PDF": "PDF",
                  b"PK\x03\x04": "zip archive", b"<!DO": "HTML", b"<htm": "HTML", b"BZh": "bzip2 data"}
    what = next((name for sig, name in signatures.items() if head.startswith(sig)), None)
    return NOT_A_WARC, f"not a WARC file ({what or 'starts with ' + repr(head[:16])})"


_BLANK_LINE = re.compile(rb"\r*\n\r*\n")  # end of a WARC header (CRLF per spec; some writers differ)


def _verify_last_record(tail: bytes, compression: str) -> tuple[str, str] | None:
    """(kind, message) when the last record fastwarc read (starting at `tail`) is incomplete or is followed by data
    fastwarc did not read, else None. (fastwarc ends silently on a truncated gzip member.)"""
    if not tail:
        return None
    rest = b""
    member_complete = False
    if compression == "gzip":
        try:
            block, size, eof, rest = _gunzip_member_head(tail)
        except zlib.error as e:
            return CORRUPT_GZIP, f"last gzip member does not decompress: {e}"
        if not eof:
            return TRUNCATED_GZIP, f"file ends inside a gzip member ({len(tail)} compressed bytes, no gzip trailer)"
        member_complete = True
    elif compression == "warc":
        block, size = tail, len(tail)
    else:
        return None
    incomplete = CORRUPT_RECORD if member_complete else (
        TRUNCATED_GZIP if compression == "gzip" else TRUNCATED_RECORD)
    m = _BLANK_LINE.search(block)
    if m is None:  # no end of the WARC header: cut short, unless it is a quirky header fastwarc still read
        return (incomplete, "record ends inside its WARC header") if b"\n" not in block[-4:] else None
    length = None
    for line in block[:m.start()].split(b"\n"):
        if line[:15].lower() == b"content-length:":
            try:
                length = int(line[15:].strip())
            except ValueError:
                return None
    if length is not None and size - m.end() < length:
        what = "its gzip member ends" if member_complete else "the file ends"
        return incomplete, f"{what} inside the record ({size - m.end()} of {length} content bytes)"
    if rest.strip(b"\0\r\n\t "):
        return CORRUPT_RECORD, f"reading stopped here: {len(rest)}+ bytes after this record were not read"
    return None


_MEMBER_HEAD = 1 << 20  # decompressed bytes of the last gzip member kept to find its WARC header


def _gunzip_member_head(data: bytes) -> tuple[bytes, int, bool, bytes]:
    """(first `_MEMBER_HEAD` decompressed bytes, decompressed size, whether the member ended, bytes after it) of the
    gzip member at the start of `data`; the rest of the output is counted in pieces, never held (a gzip member of
    100 KB can hold 100 MB of zeros). Raises zlib.error."""
    d = zlib.decompressobj(31)
    head: list[bytes] = []
    kept = size = 0
    pending = data
    while True:
        out = d.decompress(pending, 1 << 20)
        size += len(out)
        if kept < _MEMBER_HEAD and out:
            head.append(out[:_MEMBER_HEAD - kept])
            kept += len(head[-1])
        if d.eof:
            return b"".join(head), size, True, d.unused_data
        pending = d.unconsumed_tail
        if not pending and not out:
            return b"".join(head), size, False, b""


# ------------------------------------------------------------------------------------------------ HTTP bodies
def _read_upto(reader: Any, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = reader.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _dechunk(body: bytes) -> bytes:
    """Body of a `Transfer-Encoding: chunked` message. Crawlers often store the de-chunked body and keep the header:
    a body that does not start with a chunk-size line is returned as is. Raises ValueError on framing broken later."""
    first = body[:body.find(b"\r\n")] if b"\r\n" in body[:1024] else b""
    size = first.split(b";", 1)[0].strip()
    if not size or len(size) > 16 or not all(c in _HEX for c in size):
        return body
    out, i = [], 0
    while True:
        j = body.find(b"\r\n", i)
        if j < 0:
            raise ValueError("chunked body: chunk size line without CRLF")
        size = body[i:j].split(b";", 1)[0].strip()
        # hex digits only: int() would also take "-6" (which sent the loop back to this line, forever), "+6", "1_0"
        if not size or len(size) > 16 or not all(c in _HEX for c in size):
            raise ValueError(f"chunked body: bad chunk size {body[i:j][:20]!r}")
        size_n = int(size, 16)
        if size_n == 0:
            return b"".join(out)
        out.append(body[j + 2:j + 2 + size_n])
        i = j + 2 + size_n + 2
        if i > len(body):
            return b"".join(out)  # truncated capture: keep what is there


def decode_http_body(body: bytes, transfer_encoding: str | None, content_encoding: str | None, *,
                     max_bytes: int | None = None) -> bytes:
    """Undo `Transfer-Encoding: chunked` and `Content-Encoding` gzip / deflate / br. Common Crawl has already done so
    (and renamed the headers); other crawlers often did too but kept the headers, so a body that is visibly not
    encoded is returned as is. Raises ValueError when an encoded body does not decode.

    At most `max_bytes` (default `DEFAULT_MAX_DECODED_BYTES`) decoded bytes come back; the decoders stop there, so a
    165-byte brotli body that would expand to 100 MB costs about `max_bytes`. A caller that must tell a complete body
    from a cut one asks for one byte more than it accepts."""
    if transfer_encoding and "chunked" in transfer_encoding.lower():
        body = _dechunk(body)
    enc = (content_encoding or "").strip().lower()
    if enc in ("", "identity", "none") or not body:
        return body
    limit = DEFAULT_MAX_DECODED_BYTES if max_bytes is None else max(1, int(max_bytes))
    try:
        if enc in ("gzip", "x-gzip"):
            if body[:2] != b"\x1f\x8b":
                return body  # stored decoded
            return zlib.decompressobj(31).decompress(body, limit)
        if enc == "deflate":
            try:
                return zlib.decompressobj(15).decompress(body, limit)
            except zlib.error:
                return zlib.decompressobj(-15).decompress(body, limit)  # raw deflate, as some servers send it
        if enc == "br":
            return _unbrotli(body, limit)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad body
        raise ValueError(f"Content-Encoding {enc} does not decode: {type(e).__name__}: {e}") from e
    raise ValueError(f"unsupported Content-Encoding {enc!r}")


def _unbrotli(body: bytes, limit: int) -> bytes:
    """The first `limit` bytes of a brotli body (a truncated body gives what it holds, as zlib does)."""
    import brotli  # type: ignore[import-not-found]

    d = brotli.Decompressor()
    try:
        out = d.process(body, output_buffer_limit=limit)
    except TypeError:  # brotli < 1.2 cannot bound its output: refuse rather than risk the whole expansion
        raise ValueError("this brotli module cannot cap its output (brotli >= 1.2 is needed)") from None
    return out[:limit]


# ------------------------------------------------------------------------------------------------ extraction
def extract_file(source: str | os.PathLike | BinaryIO, warc_name: str, *, snapshot: str,
                 language_prefilter: bool = True, max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
                 capture_images: bool = True, max_html_depth: int | None = H.DEFAULT_MAX_DEPTH,
                 full_decode: bool = False) -> ExtractResult:
    """Pairs and image captures of one WARC file (`.warc` or `.warc.gz`, path or binary stream).

    `warc_name` is recorded in every row. `language_prefilter`: skip responses whose CC language list lacks `zho`
    without reading them. `max_page_bytes`: parse only this much of a page. `max_html_depth`: cut pages nested
    deeper (None: no guard). `full_decode`: decode (UTF-8: validate) every page in full and report invalid bytes
    anywhere in it. By default pages are not decoded in full (see `charset.DecodedPage`: UTF-8 goes to Lexbor as
    is, GBK / Big5 / ... in passthrough form) and only the extracted strings are decoded and checked, which is
    what the pairs contain: `charset_errors` then reports invalid bytes in extracted text only.
    """
    stats = ExtractStats(warc_file=warc_name)
    result = ExtractResult(PairRows(), [], stats)
    try:
        raw, owned = _open_source(source)
    except (OSError, TypeError) as e:
        stats.errors.append(WarcError(warc_name, None, UNREADABLE_FILE, f"{type(e).__name__}: {e}"))
        return result
    gc_was_enabled = gc.isenabled()
    gc.disable()  # tens of thousands of row dicts, no reference cycles: collection passes would be pure overhead
    try:
        _extract_stream(raw, warc_name, snapshot, result, language_prefilter=language_prefilter,
                        max_page_bytes=max_page_bytes, capture_images=capture_images,
                        max_html_depth=max_html_depth, full_decode=full_decode)
    except Exception as e:  # noqa: BLE001 - the contract: problems are reported, never raised
        stats.errors.append(WarcError(warc_name, None, EXTRACT_ERROR, f"{type(e).__name__}: {e}"))
    finally:
        if gc_was_enabled:
            gc.enable()
        if owned:
            raw.close()
    stats.pairs = len(result.pairs)
    return result


def _extract_stream(raw: BinaryIO, name: str, snapshot: str, result: ExtractResult, *, language_prefilter: bool,
                    max_page_bytes: int, capture_images: bool, max_html_depth: int | None,
                    full_decode: bool) -> None:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    stats = result.stats
    try:
        start = raw.tell()
    except (OSError, AttributeError, ValueError):
        start = 0
    try:
        head = raw.read(64 * 1024) or b""
    except Exception as e:  # noqa: BLE001 - any failure of the source is an unreadable file
        stats.errors.append(WarcError(name, None, UNREADABLE_FILE, f"{type(e).__name__}: {e}"))
        return
    kind, compression = _sniff(head)
    if kind is not None:
        stats.bytes_read = len(head)
        stats.errors.append(WarcError(name, None, kind, compression))
        return
    reader = _TrackingReader(raw, head, start)
    response_type = WarcRecordType.response
    ctx = _PageContext(name, snapshot, result, language_prefilter, max_page_bytes, capture_images, max_html_depth,
                       full_decode)
    last_offset: int | None = None
    marks = (0, 0, 0)  # rows and errors before the most recent record: dropped if that record turns out truncated
    stopped_by_error = False
    try:
        it = ArchiveIterator(reader, parse_http=False, quirks_mode=True)
    except BaseException as e:  # fastwarc raises Rust panics as BaseException subclasses
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        stats.errors.append(WarcError(name, None, NOT_A_WARC, f"{type(e).__name__}: {e}"))
        return
    while True:
        try:
            rec = next(it)
        except StopIteration:
            break
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            if reader.error is not None:
                kind, e = UNREADABLE_FILE, reader.error
            else:
                kind = CORRUPT_GZIP if compression == "gzip" and "ecompress" in str(e) else RECORD_ERROR
            stats.errors.append(WarcError(name, last_offset, kind, f"reading stopped after this record, at byte "
                                                                   f"{reader.pos}: {type(e).__name__}: {e}"))
            stopped_by_error = True
            break
        stats.records += 1
        last_offset = rec.stream_pos
        reader.mark(last_offset)
        marks = (len(result.pairs), len(result.captures), len(stats.errors))
        if rec.record_type != response_type:
            continue
        stats.responses += 1
        try:
            ctx.response(rec, last_offset)
        except Exception as e:  # noqa: BLE001 - one bad record must not stop the file
            stats.errors.append(WarcError(name, last_offset, RECORD_ERROR, f"{type(e).__name__}: {e}"))
    stats.bytes_read = reader.pos
    if last_offset is None:
        if not stopped_by_error:
            stats.errors.append(WarcError(name, None, NOT_A_WARC, "no WARC record could be read"))
        return
    if not stopped_by_error:
        try:
            problem = _verify_last_record(reader.tail(), compression)
        except Exception as e:  # noqa: BLE001
            problem = (UNREADABLE_FILE, f"{type(e).__name__}: {e}")
        stats.bytes_read = reader.pos
        if problem is not None:
            # the incomplete record's rows (a partial page) and errors are dropped; everything before it is kept
            result.pairs.truncate(marks[0])
            del result.captures[marks[1]:]
            del stats.errors[marks[2]:]
            stats.records -= 1
            stats.errors.append(WarcError(name, last_offset, problem[0], problem[1]))


class _PageContext:
    """Per-file settings and the handling of one response record."""

    def __init__(self, name: str, snapshot: str, result: ExtractResult, language_prefilter: bool,
                 max_page_bytes: int, capture_images: bool, max_html_depth: int | None, full_decode: bool) -> None:
        self.name = name
        self.snapshot = snapshot
        self.result = result
        self.stats = result.stats
        self.prefilter = language_prefilter
        self.max_page_bytes = max_page_bytes
        self.capture_images = capture_images
        self.max_html_depth = max_html_depth
        self.full_decode = full_decode

    def error(self, offset: int | None, kind: str, message: str) -> None:
        self.stats.errors.append(WarcError(self.name, offset, kind, message))

    def response(self, rec: Any, offset: int) -> None:
        headers = rec.headers
        lang = headers.get(LANGUAGE_HEADER)
        if lang is not None:
            lang = lang.strip() or None
        if self.prefilter and lang is not None and CHINESE not in lang:
            self.stats.pages_skipped_language[lang.split(",", 1)[0].strip() or "und"] += 1
            return
        try:
            rec.parse_http(quirks_mode=True)
        except Exception as e:  # noqa: BLE001
            self.error(offset, BAD_HTTP_HEADER, f"{type(e).__name__}: {e}")
            return
        http = rec.http_headers
        status = http.status_code if http is not None else None
        if status is None:
            line = http.status_line if http is not None else None
            self.error(offset, BAD_HTTP_HEADER, f"no parsable HTTP status line (got {line!r})")
            return
        ctype = (rec.http_content_type or headers.get("WARC-Identified-Payload-Type") or "").strip().lower()
        if ctype.startswith("image/"):
            if self.capture_images:
                self.result.captures.append({
                    "snapshot": self.snapshot, "url": _target_uri(headers), "warc_file": self.name,
                    "warc_offset": offset, "content_type": ctype, "content_length": rec.content_length,
                    "http_status": status,
                })
            return
        if ctype not in HTML_TYPES or not 200 <= status < 300:
            return
        self.page(rec, offset, headers, http, lang)

    def page(self, rec: Any, offset: int, warc_headers: Any, http: Any, lang: str | None) -> None:
        stats = self.stats
        headers = _Headers(warc_headers)
        max_bytes = self.max_page_bytes
        te, ce = http.get("Transfer-Encoding"), http.get("Content-Encoding")
        data = _read_upto(rec.reader, max_bytes + 1 if not (te or ce) else _ENCODED_READ_FACTOR * max_bytes + 1)
        if te or ce:
            try:
                data = decode_http_body(data, te, ce, max_bytes=max_bytes + 1)
            except ValueError as e:
                self.error(offset, BAD_CONTENT_ENCODING, str(e))
                return
        truncated = False
        if len(data) > max_bytes:
            stats.pages_truncated += 1
            self.error(offset, PAGE_TRUNCATED, f"page over max_page_bytes: parsed the first {max_bytes} bytes")
            data = data[:max_bytes]
            truncated = True
        elif headers.get("WARC-Truncated"):
            stats.pages_truncated += 1
            self.error(offset, PAGE_TRUNCATED, f"truncated by the crawler (WARC-Truncated: "
                                               f"{headers.get('WARC-Truncated')}), parsed what was captured")
            truncated = True
        page = decode_page(data, rec.http_charset, truncated=truncated, full_decode=self.full_decode)
        if page.errors:
            self._charset_error(offset, page.codec, page.errors, page.error_offset)
        html = page.html
        page_url = _target_uri(headers)
        try:
            found = H.extract_images(html, page_url, max_depth=self.max_html_depth, decoder=page.decoder)
        except Exception as e:  # noqa: BLE001
            self.error(offset, HTML_PARSE_ERROR, f"{type(e).__name__}: {e}")
            return
        if found.cut_at is not None:
            self.error(offset, HTML_TOO_DEEP, f"elements nested ~{found.depth} deep (max_html_depth="
                                              f"{self.max_html_depth}): parsed the first {found.cut_at} bytes")
        stats.html_pages += 1
        if found.parser == H.LEXBOR:
            stats.html_pages_lexbor += 1
        if found.skipped:
            stats.skipped_images.update(found.skipped)
        if page.decoder is not None:
            if page.decoder.errors:
                self._charset_error(offset, page.codec, page.decoder.errors, None, "in extracted text")
        elif page.errors is None and found.replacement_chars:
            n, first = count_invalid(html)  # unchecked UTF-8 page whose extracted text shows U+FFFD
            if n:
                self._charset_error(offset, page.codec, n, first)
        if not found.images:
            return
        if lang is not None:
            language, source = lang, "cc"
        else:
            text_html = html
            if page.decoder is not None:  # legacy charset (GBK, Big5, ...): detection needs the decoded text
                text_html = html.decode(page.codec, errors="replace").encode("utf-8")
            language, source = H.guess_page_language(text_html, max_depth=self.max_html_depth), "detected"
        record_id = headers.get("WARC-Record-ID") or ""
        page_row = (self.snapshot, self.name, offset, record_id, page_url, _domain(page_url), language, source,
                    page.codec, headers.get("WARC-Date") or "")  # PAGE_COLUMNS
        idxs, urls, captions, titles, figcaptions = zip(*found.images)
        prefix = _pair_id_prefix(record_id)
        if prefix is None:  # the shared pair id definition changed: use it as is
            make_id = _pair_id_maker(record_id)
            ids = [make_id(idx) for idx in idxs]
        else:
            # the pair id is `ids.pair_id` inlined (checked once): the hash state after the per-page prefix is copied
            new_hash = blake2b(prefix, digest_size=8).copy
            digits, n_digits = _DIGITS, len(_DIGITS)
            ids = []
            for idx in idxs:
                h = new_hash()
                h.update(digits[idx] if idx < n_digits else b"%d" % idx)
                ids.append(h.hexdigest())
        self.result.pairs.add_page(page_row, ids, urls, captions, titles, figcaptions, idxs)

    def _charset_error(self, offset: int, codec: str, n: int, first: int | None, where: str = "") -> None:
        at = f" (first at payload byte {first})" if first is not None else ""
        self.error(offset, CHARSET_ERRORS, f"{n} invalid byte sequence(s) for {codec}{' ' + where if where else ''}"
                                           f"{at}; decoded with U+FFFD")


_shortcut_checked: set[str] = set()
_DIGITS: tuple[bytes, ...] = tuple(b"%d" % i for i in range(1024))  # img_index as hashed by ids.pair_id


def _pair_id_prefix(record_id: str) -> bytes | None:
    """The bytes that `ids.pair_id(record_id, i)` hashes before `i` (None if the shortcut disagrees with it)."""
    prefix = f"{record_id.strip()}#".encode()
    if not _shortcut_checked:
        _pair_id_maker(record_id)
    return prefix if _shortcut_checked else None


def _pair_id_maker(record_id: str) -> Callable[[int], str]:
    """`lambda i: ids.pair_id(record_id, i)` with the per-page part hoisted out (pair ids are made for every
    image). The shortcut is checked against `ids.pair_id` once per process; if it ever disagreed (the shared
    definition changed), `ids.pair_id` itself would be used."""
    prefix = f"{record_id.strip()}#".encode()

    def fast(i: int) -> str:
        return blake2b(prefix + b"%d" % i, digest_size=8).hexdigest()

    if _shortcut_checked:
        return fast
    if fast(0) == pair_id(record_id, 0) and fast(12) == pair_id(record_id, 12):
        _shortcut_checked.add("ok")
        return fast
    return lambda i: pair_id(record_id, i)


class _Headers:
    """WARC headers read through one `items()` call (fastwarc's `get` scans the header list on every call);
    names not found as written fall back to fastwarc's case-insensitive `get`."""

    __slots__ = ("raw", "items")

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.items = dict(raw.items())

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.items.get(name)
        return value if value is not None else self.raw.get(name, default)


def _target_uri(headers: Any) -> str:
    uri = (headers.get("WARC-Target-URI") or "").strip()
    if uri.startswith("<") and uri.endswith(">"):  # WARC 1.0 examples wrap it in angle brackets
        uri = uri[1:-1]
    return uri


def _domain(url: str) -> str:
    host = H.simple_hostname(url)
    if host is not None:
        return host.rstrip(".")
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


# ------------------------------------------------------------------------------------------------ random access
class PayloadTooLarge(ValueError):
    """A record's HTTP body, or that body once decoded, is over the reader's `max_bytes`."""


@dataclass(frozen=True)
class HttpPayload:
    """The HTTP message of one response record: status, headers as captured (lower-cased names, in order, a header
    sent twice kept twice) and the body with its transfer and content encodings undone."""

    status: int
    header_list: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased name -> value; repeated headers joined with ", "."""
        out: dict[str, str] = {}
        for k, v in self.header_list:
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    def values(self, name: str) -> tuple[str, ...]:
        """Every value of header `name` (any case), each as sent."""
        name = name.lower()
        return tuple(v for k, v in self.header_list if k == name)


def read_record_payload(source: str | os.PathLike | BinaryIO, offset: int, *,
                        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> tuple[dict[str, str], bytes]:
    """(lower-cased HTTP headers, HTTP body) of the response record starting at byte `offset`; see
    `read_http_response` (repeated headers are joined with ", " here)."""
    got = read_http_response(source, offset, max_bytes=max_bytes)
    return got.headers, got.body


def read_http_response(source: str | os.PathLike | BinaryIO, offset: int, *,
                       max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> HttpPayload:
    """The HTTP message of the response record starting at byte `offset`.

    Works on `.warc` and on `.warc.gz` written one gzip member per record (as Common Crawl does), from a path or a
    seekable binary stream. Chunked transfer and gzip / deflate / br content encodings are undone. Raises
    `PayloadTooLarge` (a ValueError) when the body as stored or as decoded is over `max_bytes` (neither is read or
    decoded past that), ValueError when no WARC record with an HTTP message starts there, OSError when the file
    cannot be read.
    """
    from fastwarc.warc import ArchiveIterator

    raw, owned = _open_source(source)
    try:
        raw.seek(offset)
        head = raw.read(64 * 1024)
        kind, compression = _sniff(head)
        if kind is not None:
            raise ValueError(f"no WARC record at offset {offset}: {compression}")
        reader = _TrackingReader(raw, head, offset)
        try:
            rec = next(iter(ArchiveIterator(reader, parse_http=False, quirks_mode=True)))
        except StopIteration:
            raise ValueError(f"no WARC record at offset {offset}") from None
        if rec.stream_pos != offset:
            raise ValueError(f"no WARC record at offset {offset} (next one starts at {rec.stream_pos})")
        rec.parse_http(quirks_mode=True)
        http = rec.http_headers
        if http is None or http.status_code is None:
            raise ValueError(f"record at offset {offset} has no parsable HTTP message")
        status = http.status_code
        header_list = tuple((k.lower(), v) for k, v in http.items())
        body = _read_upto(rec.reader, max_bytes + 1)  # the record itself may be a gzip member of a bomb
    finally:
        if owned:
            raw.close()
    payload = HttpPayload(status, header_list, body)
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"record at offset {offset}: HTTP body over max_bytes={max_bytes}")
    hdrs = payload.headers
    body = decode_http_body(body, hdrs.get("transfer-encoding"), hdrs.get("content-encoding"), max_bytes=max_bytes + 1)
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"record at offset {offset}: decoded body over max_bytes={max_bytes} "
                              f"(Content-Encoding {hdrs.get('content-encoding')})")
    return HttpPayload(status, header_list, body)


__all__ = [
    "CAPTURE_COLUMNS", "PAIR_COLUMNS", "ExtractResult", "ExtractStats", "HttpPayload", "PayloadTooLarge", "WarcError",
    "decode_http_body", "extract_file", "merge_stats", "read_http_response", "read_record_payload",
]

