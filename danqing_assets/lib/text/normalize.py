"""Input sanitation and normalisation shared by the text scores and the safety lexicons.

`as_text` (any input -> a valid Unicode string), `strip_controls`, `to_simplified` (OpenCC t2s) and
`normalize_caption` (the stage-1 exact-dedup key), plus the character-class machinery the other modules build on
(`_CharRuns`, `_unicode_tables`). This module imports nothing from the rest of the project, so `lib/safety.py` can use
it without an import cycle.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterable
from typing import Any

# A jieba token "counts as a word" when it contains a letter, a digit or a Han character (\w minus "_").
_WORDLIKE_RE = re.compile(r"[^\W_]")


def _ranges_to_class(codepoints: Iterable[int]) -> str:
    """A regex character-class body for a set of code points, compressed into ranges."""
    cps = sorted(set(codepoints))
    parts: list[str] = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        a, b = cps[i], cps[j]
        esc_a = re.escape(chr(a)) if a > 0x20 else f"\\x{a:02x}"
        esc_b = re.escape(chr(b)) if b > 0x20 else f"\\x{b:02x}"
        parts.append(esc_a if a == b else f"{esc_a}-{esc_b}")
        i = j + 1
    return "".join(parts)


_ASTRAL_RE = re.compile("[\U00010000-\U0010ffff]")


def _has_astral(text: str) -> bool:
    return not text.isascii() and _ASTRAL_RE.search(text) is not None


def _sub(rx: re.Pattern[str], repl: Any, text: str) -> str:
    """`rx.sub`, but a failed `search` first: `sub` costs ~1 us even when nothing matches, `search` a fraction."""
    return rx.sub(repl, text) if rx.search(text) is not None else text


class _CharRuns:
    """Regexes for runs of characters from a set, fast in Python's `re`.

    A class of BMP characters compiles to an O(1) bitmap, but astral ranges are appended as a list that every
    non-member character walks; and `[c]+` gets no fast prefix scan while `[c][c]*` does. So there are two patterns:
    `bmp` (BMP members only, for text without astral characters: the common case) and `full` (exact, slower).
    """

    def __init__(self, codepoints: Iterable[int], *, single: bool = False) -> None:
        cps = set(codepoints)
        bmp = _ranges_to_class(c for c in cps if c < 0x10000)
        full = _ranges_to_class(cps)
        self.bmp = re.compile(("[{0}]" if single else "[{0}][{0}]*").format(bmp) if bmp else "(?!)")
        self.full = re.compile(("[{0}]" if single else "[{0}][{0}]*").format(full) if full else "(?!)")

    def pick(self, text: str) -> re.Pattern[str]:
        return self.full if _has_astral(text) else self.bmp


@functools.cache
def _unicode_tables() -> dict[str, Any]:
    """Character classes derived from the Unicode database (built once, ~0.2 s)."""
    punct: list[int] = []
    control: list[int] = []
    mn: list[int] = []
    symbols: list[int] = []
    fmt: list[int] = []
    ascii_punct = set(range(33, 48)) | set(range(58, 65)) | set(range(91, 97)) | set(range(123, 127))
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat[0] == "P" or cp in ascii_punct:
            punct.append(cp)
        if cat in ("Cc", "Cf") and cp not in (9, 10, 13):
            control.append(cp)
        if cat == "Cf":
            fmt.append(cp)
        if cat == "Mn":
            mn.append(cp)
        if cat in ("So", "Sk", "Co"):
            symbols.append(cp)
    return {"punct": punct, "control": control, "mn": mn, "symbols": symbols, "format": fmt}


def _class_ranges(rx: re.Pattern[str]) -> list[tuple[int, int]]:
    """The (first, last) code point ranges of a single-character-class pattern such as `[a-z\u4e00-\u9fff]`."""
    body = rx.pattern[1:-1]
    out, i = [], 0
    while i < len(body):
        a = ord(body[i])
        if i + 2 < len(body) and body[i + 1] == "-":
            out.append((a, ord(body[i + 2])))
            i += 3
        else:
            out.append((a, a))
            i += 1
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Input sanitation and lazy singletons.


def as_text(x: Any) -> str:
    """Any input as a valid Unicode string: None -> "", bytes decoded as UTF-8 (errors replaced), other objects via str;
    lone surrogates become U+FFFD (a valid surrogate pair becomes the character it encodes)."""
    if x is None:
        return ""
    if not isinstance(x, str):
        if isinstance(x, (bytes, bytearray, memoryview)):
            return bytes(x).decode("utf-8", "replace")
        x = str(x)
    try:
        x.encode("utf-8")
    except UnicodeEncodeError:
        x = x.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return x


@functools.cache
def _opencc_t2s() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """OpenCC Traditional -> Simplified (`t2s`) conversion of `text` (None / invalid input sanitised first)."""
    text = as_text(text)
    if not text or text.isascii():
        return text
    return _opencc_t2s().convert(text)


@functools.cache
def _control_runs() -> tuple[_CharRuns, _CharRuns]:
    tables = _unicode_tables()
    fmt = set(tables["format"])
    return _CharRuns(fmt), _CharRuns(cp for cp in tables["control"] if cp not in fmt)


def strip_controls(text: str) -> str:
    """Format characters (zero-width space, BOM, direction marks) removed, other control characters -> space."""
    fmt, ctl = _control_runs()
    astral = _has_astral(text)
    text = _sub(fmt.full if astral else fmt.bmp, "", text)
    return _sub(ctl.full if astral else ctl.bmp, " ", text)


def _fold_nfkc_t2s(text: str) -> str:
    """Sanitise, control characters -> space / removed, NFKC, Traditional -> Simplified."""
    text = as_text(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", strip_controls(text))
        return _opencc_t2s().convert(text)
    if not text.isprintable():
        text = strip_controls(text)
    return text


# ---------------------------------------------------------------------------------------------------------------------
# Stage 1: the exact-dedup key.


def normalize_caption(s: str | None) -> str:
    """Key for exact caption dedup on (image_url, normalised caption).

    Steps: sanitise (None -> "", lone surrogates -> U+FFFD), control characters -> space and format characters
    (zero-width space, BOM, direction marks) removed, NFKC (full-width letters, digits and punctuation -> ASCII,
    compatibility ideographs -> unified), OpenCC Traditional -> Simplified, lower-case, every run of whitespace -> one
    space, then leading and trailing punctuation, symbols (emoji included) and whitespace stripped. So "【春天的花】！"
    and "春天的花" share a key, as do the Traditional and Simplified spellings of one caption.
    """
    text = _fold_nfkc_t2s(s).lower()
    text = " ".join(text.split())
    if not text:
        return ""
    edge = _edge_strip_chars()
    start, end = 0, len(text)
    while start < end and text[start] in edge:
        start += 1
    while end > start and text[end - 1] in edge:
        end -= 1
    return text[start:end]


@functools.cache
def _edge_strip_chars() -> frozenset[str]:
    """Punctuation (P*), symbols (S*: emoji included), whitespace and U+FFFD: stripped from the ends of a key."""
    return frozenset(
        chr(cp)
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp))[0] in "PS" or chr(cp).isspace() or cp == 0xFFFD
    )
