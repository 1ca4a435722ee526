"""Charset resolution and decoding of HTML payloads.

Order (as browsers do, WHATWG "encoding sniffing"): byte-order mark, then the HTTP `Content-Type` charset, then a
`<meta charset>` / `<meta http-equiv="Content-Type" content="...; charset=...">` in the first `META_SNIFF_BYTES`, then
detection (strict UTF-8, else charset-normalizer on a prefix). Labels are mapped to the Python codec that decodes
what pages labelled so really contain: GB2312 / GBK pages are decoded as GB18030 (a superset, so mislabelled GBK
characters in a "gb2312" page still decode), Big5 as Big5-HKSCS (falling back to cp950), Latin-1 / ASCII as cp1252.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import lru_cache

META_SNIFF_BYTES = 4096  # how far into the page to look for a <meta> charset (WHATWG says 1024; real pages exceed it)
DETECT_PREFIX_BYTES = 64 * 1024  # bytes handed to charset-normalizer when nothing is declared

UTF8 = "utf-8"

# WHATWG encoding labels (https://encoding.spec.whatwg.org/#names-and-labels) whose Python meaning differs, or that
# Python does not know, mapped to the codec that decodes such pages correctly.
_ALIASES: dict[str, str] = {
    # Simplified Chinese: every GB label -> GB18030, the superset browsers use for all of them.
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030", "ms936": "gb18030",
    "windows-936": "gb18030", "chinese": "gb18030", "csgb2312": "gb18030", "csiso58gb231280": "gb18030",
    "gb_2312": "gb18030", "gb_2312-80": "gb18030", "iso-ir-58": "gb18030", "euc-cn": "gb18030", "x-euc-cn": "gb18030",
    "gb18030": "gb18030", "gb-18030": "gb18030", "936": "gb18030",
    # Traditional Chinese: Big5 as Big5-HKSCS (superset); cp950 is tried when HKSCS rejects the bytes.
    "big5": "big5hkscs", "big-5": "big5hkscs", "big5-hkscs": "big5hkscs", "big5hkscs": "big5hkscs",
    "cn-big5": "big5hkscs", "csbig5": "big5hkscs", "x-x-big5": "big5hkscs", "cp950": "big5hkscs",
    "ms950": "big5hkscs", "windows-950": "big5hkscs",
    # Western: browsers decode all of these as windows-1252.
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "l1": "cp1252",
    "ascii": "cp1252", "us-ascii": "cp1252", "ansi_x3.4-1968": "cp1252", "windows-1252": "cp1252",
    "x-cp1252": "cp1252", "cp1252": "cp1252", "iso_8859-1": "cp1252",
    # Unicode
    "utf-8": UTF8, "utf8": UTF8, "unicode-1-1-utf-8": UTF8, "x-unicode20utf8": UTF8, "unicode20utf8": UTF8,
    # A page that says UTF-16 in a header or <meta> without a BOM is ASCII-compatible: WHATWG treats it as UTF-8.
    "utf-16": UTF8, "utf-16le": UTF8, "utf-16be": UTF8, "unicode": UTF8, "ucs-2": UTF8, "x-utf-16": UTF8,
    # Japanese / Korean: the Microsoft supersets.
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "ms_kanji": "cp932",
    "windows-31j": "cp932", "csshiftjis": "cp932", "euc-kr": "cp949", "ks_c_5601-1987": "cp949", "korean": "cp949",
    "windows-949": "cp949",
}

# Codec to try when the chosen one rejects some bytes, before decoding with replacement characters.
_FALLBACK: dict[str, str] = {"big5hkscs": "cp950", "cp1252": "latin-1"}

_META_RE = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.+\-]{1,40})", re.IGNORECASE)


def normalize_charset(label: str | bytes | None) -> str | None:
    """Python codec name for a charset label, or None when the label names no usable text encoding."""
    if label is None:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", errors="replace")
    return _normalize(label)


@lru_cache(maxsize=512)
def _normalize(label: str) -> str | None:
    key = label.strip().strip("\"'").strip().lower()
    if not key:
        return None
    mapped = _ALIASES.get(key)
    if mapped:
        return mapped
    try:
        info = codecs.lookup(key)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in ("utf-16", "utf-32", "utf-7"):
        return None  # base64, rot13, ... or a wide / 7-bit encoding no HTML page is really served in
    name = info.name
    return _ALIASES.get(name, name)


def sniff_meta_charset(head: bytes) -> str | None:
    """Raw charset label declared by the first `<meta ... charset=...>` in `head` (a page prefix), or None."""
    m = _META_RE.search(head, 0, META_SNIFF_BYTES)
    return m.group(1).decode("ascii") if m else None


def sniff_bom(payload: bytes) -> str | None:
    if payload[:3] == b"\xef\xbb\xbf":
        return "utf-8-sig"
    if payload[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    return None


def detect_charset(payload: bytes, *, prefix_bytes: int = DETECT_PREFIX_BYTES) -> str:
    """Charset of an undeclared page: UTF-8 if it decodes strictly, else charset-normalizer's guess on a prefix."""
    try:
        payload.decode(UTF8)
        return UTF8
    except UnicodeDecodeError as e:
        if e.start >= len(payload) - 3 and e.reason == "unexpected end of data":
            return UTF8  # only a multi-byte character cut at the end (truncated payload)
    from charset_normalizer import from_bytes

    best = from_bytes(payload[:prefix_bytes]).best()
    codec = normalize_charset(best.encoding) if best is not None else None
    return codec or "cp1252"


# Codecs whose multi-byte sequences can contain ASCII bytes that matter to HTML ("<", "&", quotes, ...): such pages
# must be decoded in full before parsing. In every other codec (GB18030, Big5, Shift_JIS, EUC-*, single-byte sets)
# the ASCII bytes of a page are its markup, so the page can be parsed in "passthrough" form (see `DecodedPage`).
ASCII_UNSAFE_CODECS = frozenset({
    "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-7", "hz", "iso2022_jp",
    "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3", "iso2022_jp_ext", "iso2022_kr",
})
PASSTHROUGH_AMP = b"\x01"  # stands in for "&" in passthrough pages, so Lexbor leaves character references alone


@dataclass
class DecodedPage:
    """A page ready for the HTML parser: `html` is what Lexbor parses, always valid-as-UTF-8 bytes.

    - UTF-8 page: the payload itself, no decode pass (invalid bytes read back as U+FFFD, as errors="replace").
    - Other ASCII-compatible charset, not fully decoded: "passthrough" form. Every byte becomes the character with
      the same number (latin-1), re-encoded as UTF-8, and "&" becomes `PASSTHROUGH_AMP`; markup is unchanged, and
      the strings read from the tree are turned back into the page's bytes and decoded with the page's codec by
      `decoder` (only the few strings extracted, instead of the whole page: ~4x cheaper for a GBK page).
    - Otherwise (full decode asked for, or a codec that is not ASCII-safe): the decoded text, re-encoded as UTF-8.

    `errors` counts invalid byte sequences (None: not checked yet, see `decoder` / the caller); `error_offset` is
    the first one's offset in the payload.
    """

    html: bytes
    codec: str
    source: str  # "bom" | "http" | "meta" | "detected"
    errors: int | None = 0
    error_offset: int | None = None
    decoder: PassthroughDecoder | None = None


class PassthroughDecoder:
    """Decodes strings read from a passthrough page (see `DecodedPage`) with the page's codec, counting errors.

    Returns the decoded text with character references still in place: the caller unescapes them (attribute or text
    rules differ).
    """

    __slots__ = ("codec", "fallback", "errors")

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.fallback = _FALLBACK.get(codec)
        self.errors = 0

    def decode(self, s: str) -> str:
        if s.isascii():
            return s.replace("\x01", "&") if "\x01" in s else s
        raw = s.encode("latin-1", errors="replace").replace(PASSTHROUGH_AMP, b"&")
        try:
            return raw.decode(self.codec)
        except UnicodeDecodeError:
            pass
        if self.fallback:
            try:
                return raw.decode(self.fallback)
            except UnicodeDecodeError:
                pass
        n, _ = count_invalid(raw, self.codec)
        self.errors += n
        return raw.decode(self.codec, errors="replace")


def choose_charset(payload: bytes, http_charset: str | None) -> tuple[str, str]:
    """(codec, source) for a payload: BOM, then HTTP charset, then <meta>, then detection."""
    bom = sniff_bom(payload)
    if bom:
        return bom, "bom"
    codec = normalize_charset(http_charset)
    if codec:
        return codec, "http"
    codec = normalize_charset(sniff_meta_charset(payload))
    if codec:
        return codec, "meta"
    return detect_charset(payload), "detected"


def decode_page(payload: bytes, http_charset: str | None, *, truncated: bool = False,
                full_decode: bool = False) -> DecodedPage:
    """Prepare `payload` for parsing (see `DecodedPage`); invalid bytes become U+FFFD, never an exception.

    `truncated`: the payload was cut, so a multi-byte character split at the very end is dropped, not an error.
    `full_decode`: decode (UTF-8: validate) the whole page now and count its invalid bytes, instead of leaving
    UTF-8 pages unchecked (`errors=None`) and parsing other ASCII-compatible pages in passthrough form.
    """
    codec, source = choose_charset(payload, http_charset)
    if codec == "utf-8-sig":
        payload, codec = payload[3:], UTF8
    if codec == UTF8:
        if truncated:
            payload = _trim_partial_utf8(payload)
        if payload.isascii():
            return DecodedPage(payload, UTF8, source, 0)
        if not full_decode:
            return DecodedPage(payload, UTF8, source, None)
        n, first = count_invalid(payload, UTF8)
        return DecodedPage(payload, UTF8, source, n, first)
    if not full_decode and codec not in ASCII_UNSAFE_CODECS:
        if payload.isascii():
            return DecodedPage(payload, codec, source, 0)
        html = payload.replace(b"&", PASSTHROUGH_AMP).decode("latin-1").encode(UTF8)
        return DecodedPage(html, codec, source, None, None, PassthroughDecoder(codec))
    final = not truncated
    text, n, first = _decode(payload, codec, final)
    if n:
        alt = _FALLBACK.get(codec)
        if alt:
            text2, n2, first2 = _decode(payload, alt, final)
            if n2 < n:
                text, n, first, codec = text2, n2, first2, alt
    return DecodedPage(text.encode(UTF8, errors="replace"), codec, source, n, first)


def _decode(payload: bytes, codec: str, final: bool) -> tuple[str, int, int | None]:
    """(text, number of invalid sequences, offset of the first) decoding with replacement characters."""
    if final:
        try:
            return payload.decode(codec), 0, None
        except UnicodeDecodeError as e:
            first = e.start
        except LookupError:
            return payload.decode(UTF8, errors="replace"), 0, None
        text = payload.decode(codec, errors="replace")
        return text, max(1, text.count("\ufffd") - _count_literal_fffd(payload, codec)), first
    # truncated payload: an incremental decoder keeps a split trailing character pending instead of flagging it
    dec = codecs.getincrementaldecoder(codec)(errors="strict")
    try:
        return dec.decode(payload, final=False), 0, None
    except UnicodeDecodeError as e:
        first = e.start
    text = codecs.getincrementaldecoder(codec)(errors="replace").decode(payload, final=False)
    return text, max(1, text.count("\ufffd") - _count_literal_fffd(payload, codec)), first


def _count_literal_fffd(payload: bytes, codec: str) -> int:
    """U+FFFD characters genuinely present in the page (only UTF-8 pages can carry them as such)."""
    return payload.count("\ufffd".encode()) if codec.startswith("utf") else 0


def count_invalid(payload: bytes, codec: str = UTF8) -> tuple[int, int | None]:
    """(number of invalid byte sequences, offset of the first) of `payload` under `codec`."""
    try:
        payload.decode(codec)
        return 0, None
    except UnicodeDecodeError as e:
        first = e.start
    text = payload.decode(codec, errors="replace")
    return max(1, text.count("\ufffd") - _count_literal_fffd(payload, codec)), first


def _trim_partial_utf8(data: bytes) -> bytes:
    """Drop an incomplete multi-byte UTF-8 sequence at the end of `data` (a payload cut mid-character)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b < 0x80:
            return data  # ASCII: nothing pending
        if b >= 0xC0:  # lead byte: complete only if enough continuation bytes follow
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return data if back >= need else data[: n - back]
    return data
