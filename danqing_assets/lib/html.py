"""HTML side of pair extraction: `<img>` discovery, image URL choice and resolution, `<figcaption>` lookup, a
nesting-depth guard, and a language guess for pages Common Crawl did not label.

Two paths find the `<img>` elements of a page (`extract_images`), with the same result:
- the compiled tokenizer `danqing_assets._html.scan_images` (C, built by `pip install`), which answers most pages
  without building a tree (`images_from_scan`);
- selectolax (Lexbor) on the page's "skeleton" (`skeleton_html`: every tag that cannot matter for `<img>`
  extraction turned into text, found by one pass over the "<" bytes, in C or numpy), for the pages the tokenizer
  hands over and when the extension is not built (`images_from_doc`).
Both are checked against a full Lexbor parse in the tests. Both build no tree for markup outside figures (the
skeleton's semantics), so a formatting element left open before a figure, or `<select>` / `<table>` context, can give
a caption or an image that a full parse would not give. Plain library code (no Dagster); the WARC side lives in
`danqing_assets.lib.warc`, charsets in `danqing_assets.lib.charset`.
"""

from __future__ import annotations

import html as html_lib
import html.entities as html_entities
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urljoin, urlsplit

from danqing_assets.lib.charset import PassthroughDecoder
from danqing_assets.lib.text.language import detect_language

if TYPE_CHECKING:
    from selectolax.lexbor import LexborHTMLParser, LexborNode

# Which path answered a page (PageImages.parser).
SCAN, LEXBOR = "scan", "lexbor"

# Skip reasons for <img> elements that yield no pair (ExtractStats.skipped_images keys).
NO_SRC = "no_src"
DATA_URI = "data_uri"
JAVASCRIPT_URI = "javascript_uri"
INVALID_URL = "invalid_url"
SKIP_REASONS: tuple[str, ...] = (NO_SRC, DATA_URI, JAVASCRIPT_URI, INVALID_URL)

LAZY_SRC_ATTRS: tuple[str, ...] = ("data-src", "data-original", "data-lazy-src")
SRCSET_ATTRS: tuple[str, ...] = ("srcset", "data-srcset")
FIGURE_SEARCH_DEPTH = 64  # ancestors walked from an <img> to find its nearest enclosing <figure>
DEFAULT_MAX_DEPTH = 10_000  # estimated element nesting beyond which the page is cut (Lexbor is quadratic there)

_URL_WS = " \t\n\r\f"
# Values that `UrlResolver.resolve` would return unchanged (absolute http(s) URL, nothing to strip, remove or cut, a
# valid host start, no brackets) / as `origin + value` (root-relative path, no "/." or backslash, ditto): one regex
# call instead of the general path, for the most common forms of <img src>.
_ABS_FAST = re.compile(r"https?://[^/?#:@\\ \t\n\r\[\]][^#\t\n\r\[\]]*(?<![ \f])").fullmatch
_ROOT_FAST = re.compile(r"/(?:[^/#\[\]\t\n\r\\][^#\[\]\t\n\r\\]*(?<![ \f]))?").fullmatch
_PROTO_FAST = re.compile(r"//[^/?#:@\\ \t\n\r\[\]][^#\t\n\r\[\]]*(?<![ \f])").fullmatch  # "http:" + it: _ABS_FAST
_HTTP_PREFIXES = ("https://", "http://")
# A plain http(s) URL (ASCII host and optional port, path without spaces or controls): groups are urlsplit's
# scheme, netloc and path for it (the query or fragment that may follow is not needed).
_SIMPLE_HTTP_URL = re.compile(
    r"(https?)://([A-Za-z0-9.-]+(?::[0-9]*)?)(/[!$%&'()*+,./0-9:;=@A-Z_a-z~-]*)?(?=[?#]|\Z)").match
_DROP_CTRL = str.maketrans("", "", "\t\n\r")  # browsers remove these anywhere inside a URL


def simple_hostname(url: str) -> str | None:
    """`urlsplit(url).hostname` for a plain http(s) URL (see `_SIMPLE_HTTP_URL`), else None (not computed)."""
    m = _SIMPLE_HTTP_URL(url)
    if m is None:
        return None
    return m.group(2).partition(":")[0].lower()


# One `<img>` element that yields a pair, as a plain tuple (built for every image, so kept cheap):
# (img_index: position among ALL <img> elements of the document, 0-based; image_url: absolute http(s) URL without
#  fragment; caption: alt attribute, entities decoded, stripped, "" when absent; title: title attribute or None;
#  figcaption: text of the nearest enclosing <figure>'s <figcaption>, or None)
ImageRef = tuple[int, str, str, "str | None", "str | None"]


@dataclass
class PageImages:
    images: list[ImageRef]
    n_img: int  # all <img> elements, including those that yield no pair
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count of <img> elements without a pair
    replacement_chars: bool = False  # an extracted string contains U+FFFD (invalid bytes, on an unchecked page)
    cut_at: int | None = None  # byte offset where a too deeply nested page was cut
    depth: int = 0  # estimated nesting depth of the skeleton's elements (0 when not measured)
    parser: str = "lexbor"  # SCAN: answered by the compiled tokenizer; LEXBOR: parsed by Lexbor


class UrlResolver:
    """Resolves `src`-like attribute values against a document base URL (page URL or `<base href>`).

    Fast paths for the common forms (absolute http(s), protocol-relative, root-relative); everything else goes
    through `urllib.parse.urljoin`. Returns (url, None) or (None, skip reason).
    """

    __slots__ = ("base", "scheme", "origin", "dir", "root_ok")

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.scheme, self.origin, self.dir = "http", "", ""
        self.root_ok = False  # `origin + path` is a valid result for every path `_ROOT_FAST` accepts
        simple = _SIMPLE_HTTP_URL(base_url)
        if simple is not None:  # what urlsplit would return, without its cost (a page URL is seen once)
            scheme, netloc, path = simple.group(1, 2, 3)
        else:
            try:
                parts = urlsplit(base_url)
            except ValueError:
                return
            scheme, netloc, path = parts.scheme, parts.netloc, parts.path
        self.scheme = scheme.lower() or "http"
        if netloc and self.scheme in ("http", "https"):
            self.origin = f"{self.scheme}://{netloc.lower()}"
            host = self.origin[len(self.scheme) + 3]
            self.root_ok = host not in "/?#:@\\ " and "[" not in self.origin and "]" not in self.origin \
                and "#" not in self.origin
            path = path or "/"
            if "/." not in path:  # the base's directory, for plain relative paths
                self.dir = self.origin + path[: path.rindex("/") + 1] if path.startswith("/") else ""

    def with_base_href(self, href: str | None) -> UrlResolver:
        """The resolver for a document whose `<base href>` is `href` (itself resolved against this base)."""
        if not href:
            return self
        url, _ = self.resolve(href, keep_fragment=True)
        return UrlResolver(url) if url else self

    def resolve(self, raw: str, *, keep_fragment: bool = False) -> tuple[str | None, str | None]:
        u = raw.strip(_URL_WS)
        if not u:
            return None, NO_SRC
        if "\n" in u or "\t" in u or "\r" in u:
            u = u.translate(_DROP_CTRL)
        if u.startswith(_HTTP_PREFIXES):
            url = u
        elif u[0] == "/":
            if u[1:2] == "/":
                url = f"{self.scheme}:{u}"
            elif self.origin and "/." not in u and "\\" not in u:
                url = self.origin + u
            else:
                url = self._join(u)
        else:
            head = u[:11].lower()
            if head.startswith(_HTTP_PREFIXES):
                i = head.index(":")
                url = head[:i] + u[i:]
            elif head.startswith("data:"):
                return None, DATA_URI
            elif head.startswith("javascript:"):
                return None, JAVASCRIPT_URI
            elif self.dir and u[0] not in ".?#" and ":" not in u and "./" not in u and "\\" not in u:
                url = self.dir + u
            else:
                url = self._join(u)
        if url is None:
            return None, INVALID_URL
        if not keep_fragment and "#" in url:
            url = url[: url.index("#")]
        # only http(s) with a non-empty host
        if url.startswith("https://"):
            host_at = 8
        elif url.startswith("http://"):
            host_at = 7
        else:
            return None, INVALID_URL
        if len(url) <= host_at or url[host_at] in "/?#:@\\ ":
            return None, INVALID_URL
        if "[" in url or "]" in url:  # IPv6 literal or garbage: let urllib judge
            try:
                urlsplit(url).port
            except ValueError:
                return None, INVALID_URL
        return url, None

    def resolve_src(self, raw: str) -> tuple[str | None, str | None]:
        """`resolve(raw)`, with one-regex fast paths for the common `<img src>` forms: absolute http(s),
        root-relative and protocol-relative URLs that resolution would not change beyond joining, and `data:`."""
        if _ABS_FAST(raw) is not None:
            return raw, None
        if raw[:1] == "/":
            if self.root_ok and _ROOT_FAST(raw) is not None and "/." not in raw:
                return self.origin + raw, None
            if self.origin and _PROTO_FAST(raw) is not None:  # "//host/..." -> "scheme://host/..."
                return f"{self.scheme}:{raw}", None
        elif raw.startswith("data:"):
            return None, DATA_URI
        return self.resolve(raw)

    def _join(self, u: str) -> str | None:
        try:
            return urljoin(self.base, u)
        except ValueError:
            return None


def parse_srcset(srcset: str) -> list[tuple[str, str]]:
    """[(url, descriptor)] of a `srcset` value, following the HTML candidate grammar (URLs may contain commas)."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(srcset)
    while i < n:
        while i < n and (srcset[i] in _URL_WS or srcset[i] == ","):
            i += 1
        if i >= n:
            break
        j = i
        while j < n and srcset[j] not in _URL_WS:
            j += 1
        url = srcset[i:j]
        i = j
        if url.endswith(","):
            out.append((url.rstrip(","), ""))
            continue
        depth, j = 0, i
        while j < n and (depth or srcset[j] != ","):
            depth += srcset[j] == "("
            depth -= srcset[j] == ")" and depth > 0
            j += 1
        out.append((url, srcset[i:j].strip()))
        i = j + 1
    return out


def best_srcset_url(srcset: str) -> str | None:
    """The largest candidate: by `w` descriptor, else by `x` density, else the first."""
    cands = parse_srcset(srcset)
    if not cands:
        return None
    best_w, best_x, url_w, url_x = -1.0, -1.0, None, None
    for url, desc in cands:
        d = desc.lower()
        try:
            if d.endswith("w"):
                w = float(d[:-1])
                if w > best_w:
                    best_w, url_w = w, url
            else:
                x = float(d[:-1]) if d.endswith("x") else 1.0
                if x > best_x:
                    best_x, url_x = x, url
        except ValueError:
            continue
    return url_w or url_x or cands[0][0]


def choose_image_url(attrs: dict[str, str | None], resolver: UrlResolver, *,
                     src_reason: str | None = None) -> tuple[str | None, str | None]:
    """(absolute URL, None) for an `<img>`'s attributes, or (None, skip reason).

    `src` first; when it is missing or unusable (a `data:` lazy-loading placeholder, `javascript:`, empty), the lazy
    attributes (`data-src`, `data-original`, `data-lazy-src`), then the largest `srcset` candidate. The reason
    reported is that of `src` when present, else of the first fallback tried, else `no_src`. `src_reason`: the
    caller already resolved `src` and got this reason (it is not resolved again).
    """
    reason = src_reason
    src = attrs.get("src") if reason is None else None
    if src:
        url, reason = resolver.resolve_src(src)
        if url:
            return url, None
    return _fallback_url(attrs, resolver, reason)


def parse_html(html: bytes | str) -> LexborHTMLParser:
    """Lexbor document of `html` (UTF-8 bytes or text). Raises on input Lexbor refuses."""
    from selectolax.lexbor import LexborHTMLParser

    return LexborHTMLParser(html)


def extract_images(html: bytes, page_url: str, *, max_depth: int | None = DEFAULT_MAX_DEPTH,
                   decoder: PassthroughDecoder | None = None, scan: bool = True) -> PageImages:
    """Every `<img>` of a page prepared by `charset.decode_page`.

    Two paths give the same rows. First the compiled tokenizer (`danqing_assets._html.scan_images`, when built
    and `scan` is true), which answers most pages without building a tree; pages it cannot answer exactly
    (`<svg>` / `<math>` that hold HTML, figures whose markup does not nest cleanly, deep nesting) and
    every page when it is not built go to Lexbor, which parses the page's skeleton (see `skeleton_html`).

    `max_depth`: nesting of the kept elements beyond which the page is cut (`PageImages.cut_at`); None: no guard.
    `decoder`: the page's `DecodedPage.decoder` (passthrough pages). Raises when Lexbor refuses the input.
    """
    scan = _compiled_scan() if scan else None
    if scan is not None:
        scanned = scan(html, -1 if max_depth is None else max_depth)
        if scanned is not None:
            return images_from_scan(scanned, page_url, decoder=decoder)
    skel = skeleton_html(html, max_depth=max_depth)
    found = images_from_doc(parse_html(skel.html), page_url, has_figcaption=skel.has_figcaption,
                            has_base=skel.has_base, decoder=decoder)
    found.cut_at, found.depth = skel.cut_at, skel.depth
    return found


def images_from_doc(doc: LexborHTMLParser, page_url: str, *, has_figcaption: bool = True,
                    has_base: bool = True, decoder: PassthroughDecoder | None = None) -> PageImages:
    """Every `<img>` element of a parsed document as an `ImageRef`, or a counted skip reason.

    URLs resolve against the first `<base href>` (itself resolved against `page_url`). `has_figcaption=False` /
    `has_base=False`: the caller knows the page has no such element (skips that lookup). `decoder`: the document
    is a passthrough page (see `charset.DecodedPage`); strings read from it are decoded and unescaped with it.
    """
    resolver = UrlResolver(page_url)
    if has_base:
        for base in doc.tags("base"):
            href = base.attributes.get("href")
            if href is not None:
                href = _attr_text(href, decoder) if decoder else href.replace(_MARK, "<")
                resolver = resolver.with_base_href(href)
                break
    imgs = doc.tags("img")
    captions = _figcaptions(doc, decoder) if has_figcaption and imgs else None
    replacement = bool(captions) and any("\ufffd" in c for c in captions.values() if c)
    images: list[ImageRef] = []
    skipped: Counter[str] = Counter()
    if decoder is None:
        items = ((node.attributes, node.mem_id) for node in imgs)
    else:  # passthrough page: every value decoded first (Lexbor saw it with "&" hidden, see charset.DecodedPage)
        items = (({k: _attr_text(v, decoder) if v else v for k, v in node.attributes.items()}, node.mem_id)
                 for node in imgs)
    replacement |= _doc_images(items, resolver, captions, images, skipped)
    return PageImages(images, len(imgs), skipped, replacement)


_MARK = "\x02"  # SKELETON_MARK as text


def images_from_scan(scanned: tuple, page_url: str, *, decoder: PassthroughDecoder | None = None) -> PageImages:
    """`images_from_doc` for the result of the compiled tokenizer (`danqing_assets._html.scan_images`): the same
    rows from the same page, without a Lexbor parse. Attribute values and captions arrive with character
    references undecoded; they are decoded here as Lexbor would (`unescape_attribute`, `unescape_text`)."""
    base_href, imgs, raw_captions = scanned
    resolver = UrlResolver(page_url)
    if base_href is not None:
        resolver = resolver.with_base_href(_scan_attr(base_href, decoder))
    captions: dict[int, str | None] = {}
    images: list[ImageRef] = []
    skipped: Counter[str] = Counter()
    replacement = False
    resolve_src = resolver.resolve_src
    for idx, (attrs, fig, has_amp) in enumerate(imgs):
        if has_amp or decoder is not None:
            attrs = {k: _scan_attr(v, decoder) if v else v for k, v in attrs.items()}
        src = attrs.get("src")
        url, reason = resolve_src(src) if src else (None, None)
        if url is None:
            url, reason = _fallback_url(attrs, resolver, reason)
            if url is None:
                skipped[reason] += 1  # type: ignore[index]
                continue
        alt, title, bad = _alt_title(attrs.get("alt"), attrs.get("title"))
        replacement |= bad
        caption = None
        if fig >= 0:
            if fig in captions:
                caption = captions[fig]
            else:
                raw = raw_captions[fig]
                if raw is not None:
                    if decoder is not None:
                        raw = decoder.decode(raw)
                    caption = " ".join(unescape_text(raw).split()) or None
                    if caption and "\ufffd" in caption:
                        replacement = True
                captions[fig] = caption
        images.append((idx, url, alt, title, caption))
    return PageImages(images, len(imgs), skipped, replacement, parser=SCAN)


def _scan_attr(value: str, decoder: PassthroughDecoder | None) -> str:
    """An attribute value from the compiled tokenizer (character references undecoded), decoded as Lexbor +
    `images_from_doc` would."""
    return _attr_text(value, decoder) if decoder is not None else unescape_attribute(value)


def _fallback_url(attrs: dict[str, str | None], resolver: UrlResolver,
                  reason: str | None) -> tuple[str | None, str | None]:
    """The rest of `choose_image_url` for an `<img>` whose `src` is missing, empty or unusable (`reason`): the lazy
    attributes, then the largest `srcset` candidate. Restores the skeleton mark in the values it reads."""
    for key in LAZY_SRC_ATTRS:
        v = attrs.get(key)
        if v:
            if _MARK in v:
                v = v.replace(_MARK, "<")
            url, r = resolver.resolve_src(v)
            if url:
                return url, None
            reason = reason or r
    for key in SRCSET_ATTRS:
        v = attrs.get(key)
        if v:
            if _MARK in v:
                v = v.replace(_MARK, "<")
            cand = best_srcset_url(v)
            if cand:
                url, r = resolver.resolve(cand)
                if url:
                    return url, None
                reason = reason or r
    return None, reason or NO_SRC


def _doc_images(items: Iterable[tuple[dict[str, str | None], int]], resolver: UrlResolver,
                captions: dict[int, str | None] | None, images: list[ImageRef], skipped: Counter[str]) -> bool:
    """The `images_from_doc` loop over (attributes, node id) of every `<img>`, kept tight: it runs for every
    `<img>`. Appends to `images` / `skipped`; returns whether an extracted string contains U+FFFD."""
    replacement = False
    append = images.append
    cap_get = captions.get if captions else None
    mark = _MARK
    resolve_src = resolver.resolve_src
    for idx, (attrs, node_id) in enumerate(items):
        src = attrs.get("src")
        url = reason = None
        if src:
            if mark in src:
                src = src.replace(mark, "<")
            url, reason = resolve_src(src)
        if url is None:
            url, reason = _fallback_url(attrs, resolver, reason)
            if url is None:
                skipped[reason] += 1  # type: ignore[index]
                continue
        alt, title = attrs.get("alt"), attrs.get("title")
        if alt and mark in alt:
            alt = alt.replace(mark, "<")
        if title and mark in title:
            title = title.replace(mark, "<")
        alt, title, bad = _alt_title(alt, title)
        replacement |= bad
        append((idx, url, alt, title, cap_get(node_id) if cap_get is not None else None))
    return replacement


def _alt_title(alt: str | None, title: str | None) -> tuple[str, str | None, bool]:
    """(caption from `alt`: stripped, "" when absent; title: stripped, None when absent or blank; whether either
    holds U+FFFD)."""
    alt = alt.strip() if alt else ""
    if title is not None:
        title = title.strip() or None
    return alt, title, ("\ufffd" in alt) or (title is not None and "\ufffd" in title)


def _attr_text(value: str, decoder: PassthroughDecoder) -> str:
    """An attribute value of a passthrough page (skeleton mark restored, decoded, character references decoded)."""
    if _MARK in value:
        value = value.replace(_MARK, "<")
    if value.isascii():  # nothing to decode: only the hidden "&" (charset.PASSTHROUGH_AMP) to restore
        if "\x01" in value:
            value = value.replace("\x01", "&")
        return unescape_attribute(value)
    return unescape_attribute(decoder.decode(value))


_CHAR_REF_RE = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)")


def unescape_text(value: str) -> str:
    """Decode character references as the HTML tokenizer does in text (outside attributes): as
    `unescape_attribute`, except that a legacy name decodes whatever follows it (`&copy=2` -> "©=2")."""
    if "&" not in value:
        return value
    return _unescape(value, False)


def unescape_attribute(value: str) -> str:
    """Decode character references exactly as the HTML tokenizer (and Lexbor) does inside an attribute value.

    Named: a full `&name;` match decodes; otherwise the longest legacy name (one valid without ";") decodes unless
    the next character is "=" or alphanumeric, which keeps `?a=1&copy=2`, `&copyright` and `&notit;` as written.
    Numeric: always decoded, with the spec's replacements (NUL, surrogates and > U+10FFFF -> U+FFFD; 0x80-0x9F via
    windows-1252); other control characters are kept, unlike `html.unescape`, which drops them.
    """
    if "&" not in value:
        return value
    return _unescape(value, True)


def _unescape(value: str, attribute: bool) -> str:
    def repl(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref[0] == "#":
            return _numeric_reference(ref)
        if ref[-1] == ";" and ref in _HTML5:
            return _HTML5[ref]
        name = ref.rstrip(";")
        for k in range(min(len(name), _LONGEST_LEGACY), 1, -1):
            legacy = name[:k]
            if legacy in _HTML5:  # keys without ";" are exactly the legacy names
                nxt = name[k] if k < len(name) else (";" if ref[-1] == ";" else value[m.end() : m.end() + 1])
                if attribute and (nxt == "=" or nxt.isalnum()):
                    return m.group(0)
                return _HTML5[legacy] + ref[k:]
        return m.group(0)

    return _CHAR_REF_RE.sub(repl, value)


_HTML5 = html_entities.html5
_LONGEST_LEGACY = max(len(k) for k in _HTML5 if not k.endswith(";"))


def _numeric_reference(ref: str) -> str:
    digits = ref[1:].rstrip(";")
    cp = int(digits[1:], 16) if digits[:1] in ("x", "X") else int(digits)
    if cp in html_lib._invalid_charrefs:  # NUL -> U+FFFD, 0x80-0x9F -> windows-1252, CR stays CR
        return html_lib._invalid_charrefs[cp]
    if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        return "\ufffd"
    return chr(cp)


MAX_FIGURES_MAPPED = 500  # more figures than this (pathological nesting): per-<img> ancestor walk instead


def _figcaptions(doc: LexborHTMLParser, decoder: PassthroughDecoder | None) -> dict[int, str | None]:
    """{img node id: figcaption text of its nearest enclosing figure} for every <img> inside a figure.

    Figures are visited in document order, so an inner figure (visited after its ancestors) overrides them.
    """
    figures = doc.tags("figure")
    if len(figures) > MAX_FIGURES_MAPPED:
        cache: dict[int, str | None] = {}
        return {img.mem_id: _figcaption_of(img, cache, decoder) for img in doc.tags("img")}
    out: dict[int, str | None] = {}
    for fig in figures:
        # one pass over the children: the first <figcaption> child is the caption; <img> children are mapped
        # directly, other elements searched below (the usual figure is just an <img> and a <figcaption>)
        text, found_caption, imgs = None, False, []
        for child in fig.iter():
            tag = child.tag
            if tag == "img":
                imgs.append(child.mem_id)
            elif tag == "figcaption" and not found_caption:
                found_caption = True
                text = _figcaption_text(child, decoder)
                imgs.extend(n.mem_id for n in child.traverse() if n.tag == "img")
            else:
                imgs.extend(n.mem_id for n in child.traverse() if n.tag == "img")
        for key in imgs:
            out[key] = text
    return out


def _caption_text(figure: LexborNode, decoder: PassthroughDecoder | None) -> str | None:
    """Text of the first `<figcaption>` child of `figure`, whitespace collapsed (None: none or empty)."""
    for child in figure.iter():
        if child.tag == "figcaption":
            return _figcaption_text(child, decoder)
    return None


def _figcaption_text(figcaption: LexborNode, decoder: PassthroughDecoder | None) -> str | None:
    """Text of a `<figcaption>`, whitespace collapsed (None: empty)."""
    raw = figcaption.text(deep=True, separator=" ")
    if _MARK in raw:
        raw = raw.replace(_MARK, "<")
    if decoder is not None:
        raw = html_lib.unescape(decoder.decode(raw))
    return " ".join(raw.split()) or None


def _figcaption_of(node: LexborNode, cache: dict[int, str | None],
                   decoder: PassthroughDecoder | None = None) -> str | None:
    """Text of the `<figcaption>` child of the nearest enclosing `<figure>` (None if there is none, or that figure
    has no caption). Walks at most `FIGURE_SEARCH_DEPTH` ancestors, so pathological nesting stays linear."""
    cur = node.parent
    for _ in range(FIGURE_SEARCH_DEPTH):
        if cur is None:
            return None
        tag = cur.tag
        if tag == "figure":
            key = cur.mem_id
            if key not in cache:
                cache[key] = _caption_text(cur, decoder)
            return cache[key]
        if tag == "body":
            return None
        cur = cur.parent
    return None


# ------------------------------------------------------------------------------------------- page skeleton
def _code4(b: bytes) -> int:
    """Little-endian 4-byte code of `b`, every byte OR 0x20 (ASCII lower-case for letters)."""
    return (b[0] | 0x20) | ((b[1] | 0x20) << 8) | ((b[2] | 0x20) << 16) | ((b[3] | 0x20) << 24)


# Tags kept in the skeleton, by the first four bytes after "<" (prefix matches keep a few more tags than needed,
# which is always safe): <img> / <image>, <base>, <figure> / <figcaption>, the elements whose content is not markup
# (script, style, textarea, title, xmp, iframe, noembed, noframes, plaintext, template) and foreign content roots
# (svg, math: inside them <image> is not an <img>), and the end tags of all of these. "<!" (comments, doctype) is
# kept too. Classes: what the skeleton pass needs to know about a kept tag.
_KEPT, _FIGC_OPEN, _FIG_CLOSE, _BASE, _NEST_OPEN, _NEST_CLOSE, _FIG_OPEN = 1, 2, 3, 4, 5, 6, 7
_DELIMS = b" \t\n\r\f/>"
_KEEP_CLASSES: dict[int, int] = {}
for _names, _cls in (
    ((b"imag", b"scri", b"styl", b"text", b"titl", b"ifra", b"noem", b"nofr", b"plai", b"/scr", b"/sty", b"/tex",
      b"/tit", b"/xmp", b"/ifr", b"/noe", b"/nof", b"/pla", *(b"img" + bytes([d]) for d in _DELIMS),
      *(b"xmp" + bytes([d]) for d in _DELIMS)), _KEPT),
    ((b"figc",), _FIGC_OPEN),
    ((b"/fig",), _FIG_CLOSE),
    ((b"base",), _BASE),
    ((b"figu",), _FIG_OPEN),
    ((b"temp", b"math", *(b"svg" + bytes([d]) for d in _DELIMS)), _NEST_OPEN),
    ((b"/tem", b"/mat", b"/svg"), _NEST_CLOSE),
):
    for _name in _names:
        _KEEP_CLASSES[_code4(_name)] = _cls
_np_cache: dict[str, object] = {}
# What replaces the "<" of a dropped tag. A control character no page uses as text, so that where the "<" was not
# a tag start after all (inside an attribute value: alt="a<b") the string read back is restored exactly.
SKELETON_MARK = b"\x02"


def _np_tables():  # numpy tables built once, lazily (numpy import stays off cheap import paths)
    if not _np_cache:
        import numpy as np

        # a collision-free multiplicative hash of the kept codes into 4096 slots: membership is one lookup
        bits = 12
        for mult in range(0x9E3779B1, 0x9E3779B1 + 2 * 100000, 2):
            slots = {((c * mult) & 0xFFFFFFFF) >> (32 - bits) for c in _KEEP_CLASSES}
            if len(slots) == len(_KEEP_CLASSES):
                break
        else:  # pragma: no cover - the table is fixed, this cannot happen
            raise RuntimeError("no collision-free hash for the skeleton tag table")
        codes = np.zeros(1 << bits, dtype=np.uint32)  # a real code is never 0 (every byte has bit 5 set)
        classes = np.zeros(1 << bits, dtype=np.uint8)
        for c, cls in _KEEP_CLASSES.items():
            slot = ((c * mult) & 0xFFFFFFFF) >> (32 - bits)
            codes[slot], classes[slot] = c, cls
        tag_start = np.zeros(256, dtype=bool)  # first byte after "<" (OR 0x20) that starts a tag: letter or "/"
        tag_start[0x61:0x7B] = True
        tag_start[0x2F] = True
        delta = np.zeros(8, dtype=np.int8)
        delta[[_FIGC_OPEN, _NEST_OPEN, _FIG_OPEN]] = 1
        delta[[_FIG_CLOSE, _NEST_CLOSE]] = -1
        _np_cache.update(np=np, codes=codes, classes=classes, mult=np.uint32(mult), shift=np.uint32(32 - bits),
                         lower=np.uint32(0x20202020), byte=np.uint32(0xFF), tag_start=tag_start, delta=delta)
    return _np_cache


_compiled: list = []  # [danqing_assets._html.skeleton or None], resolved on first use
C_API_VERSION = 3  # the `API_VERSION` of danqing_assets/_html.c this module was written against


def _compiled_skeleton():  # noqa: ANN202
    """The C implementation of `skeleton_html` (`danqing_assets/_html.c`, built by `pip install`), or None when
    it is not built or `DANQING_PURE_PYTHON=1`; its tag table is the one `_np_tables` builds."""
    if not _compiled:
        fn = None
        if os.environ.get("DANQING_PURE_PYTHON", "") in ("", "0"):
            import logging

            _ext = None
            try:
                from danqing_assets import _html as _ext
            except ImportError:
                logging.getLogger(__name__).warning(
                    "danqing_assets._html (C) is not built: every page is parsed by Lexbor on a numpy skeleton, "
                    "about 1.6x slower on Chinese pages (same rows). Reinstall with a C compiler present "
                    "(`pip install -e .`) to build it.")
            else:
                if getattr(_ext, "API_VERSION", None) != C_API_VERSION:
                    logging.getLogger(__name__).warning(
                        f"danqing_assets._html is a stale build (API {getattr(_ext, 'API_VERSION', None)}, this code "
                        f"needs {C_API_VERSION}): not used. Rebuild it with `pip install -e .` (make does this).")
                    _ext = None
            if _ext is not None:
                t = _np_tables()
                _ext.set_tables(t["codes"].tobytes(), t["classes"].tobytes(), int(t["mult"]), int(t["shift"]))
                fn = _ext.skeleton
        _compiled.append(fn)
    return _compiled[0]


_compiled_scanner: list = []  # [danqing_assets._html.scan_images or None], resolved on first use


def _compiled_scan():  # noqa: ANN202
    """The compiled tokenizer behind `extract_images` (None: not built, or `DANQING_PURE_PYTHON=1`, or
    `DANQING_HTML_SCAN=0`, which keeps the C skeleton but parses every page with Lexbor)."""
    if not _compiled_scanner:
        fn = None
        if _compiled_skeleton() is not None and os.environ.get("DANQING_HTML_SCAN", "") in ("", "1"):
            from danqing_assets import _html as _ext

            fn = _ext.scan_images
        _compiled_scanner.append(fn)
    return _compiled_scanner[0]


class Skeleton(NamedTuple):
    html: bytes  # the skeleton page
    cut_at: int | None  # byte offset where a too deeply nested page was cut
    depth: int  # estimated nesting depth of the kept elements (0 when not measured)
    has_figcaption: bool  # a <figcaption> start tag was seen
    has_base: bool  # a <base> start tag was seen


def _keep_figure_markup(html: bytes, pos, cls, drop) -> None:  # noqa: ANN001 - numpy arrays
    """Clear `drop` from each outermost `<figure>` to its matching `</figure>` (to the end when unclosed)."""
    # _FIG_OPEN (7) and _FIG_CLOSE (3) are the only classes with both low bits set: one pass finds both
    marks = ((cls & 3) == 3).nonzero()[0]
    if not marks.size:
        return
    kinds = cls[marks].tolist()
    if _FIG_OPEN not in kinds:
        return
    at = pos[marks].tolist()
    a, last = html, len(html) - 1
    depth, start = 0, 0
    for i, kind, p in zip(marks.tolist(), kinds, at):
        if kind == _FIG_OPEN:
            if depth == 0:
                start = i
            depth += 1
        elif depth > 0 and (a[min(p + 5, last)] | 0x20) == 0x75:  # "</figu", not "</figcaption"
            depth -= 1
            if depth == 0:
                drop[start:i] = False
    if depth > 0:
        drop[start:] = False


def skeleton_html(html: bytes, *, max_depth: int | None = DEFAULT_MAX_DEPTH) -> Skeleton:
    """The skeleton of a page (UTF-8 or passthrough bytes, see `charset.DecodedPage`), for `<img>` extraction.

    The skeleton is the page with the "<" of every tag that cannot matter for `<img>` extraction replaced by
    `SKELETON_MARK`, so Lexbor reads those tags as text (strings read from the tree map the mark back to "<").
    Lexbor's time goes mostly into building the tree tag by tag, so the skeleton parses several times faster and
    leaves a tree of a few dozen nodes to search instead of thousands. Kept intact: `<img>`, `<image>`, `<base>`,
    `<figure>` and, on pages with a `<figcaption>`, all markup inside figures (the caption text is wanted),
    comments, doctype, the elements whose content is not markup (so an `<img` inside a script, comment, title or
    textarea stays text), `<template>`, `<svg>` / `<math>`, and their end tags. `img_index` is therefore the
    position among the `<img>` elements of the skeleton, which equals the full document's except in invalid
    markup where a dropped tag would have swallowed an `<img>` into its attributes (`<p>a<b <img src=x>`), or an
    `<img>` is foster-parented out of a table.

    Lexbor's tree building is quadratic in the nesting depth of block elements; only kept elements nest in a
    skeleton, and if those nest deeper than `max_depth` the skeleton is cut at that point.
    """
    if len(html) < 8:
        low = html.lower()
        return Skeleton(html, None, 0, b"<figc" in low, b"<base" in low)
    compiled = _compiled_skeleton()
    if compiled is not None:
        return Skeleton(*compiled(html, -1 if max_depth is None else max_depth))
    return _skeleton_numpy(html, max_depth)


def _skeleton_numpy(html: bytes, max_depth: int | None) -> Skeleton:
    """`skeleton_html` in numpy (pages of 8 bytes or more): the reference for, and fallback of, the C extension."""
    n = len(html)
    t = _np_tables()
    np = t["np"]
    a = np.frombuffer(html, dtype=np.uint8)
    pos = (a[: n - 4] == 0x3C).nonzero()[0]
    if not pos.size:
        return Skeleton(html, None, 0, False, False)
    # the 4 bytes after each "<" as one integer (unaligned strided view), letters lower-cased
    code = np.ndarray(shape=(n - 4,), dtype="<u4", buffer=html, offset=1, strides=(1,))[pos]
    code |= t["lower"]
    slot = code * t["mult"]
    slot >>= t["shift"]
    cls = t["classes"][slot]
    cls[t["codes"][slot] != code] = 0
    drop = t["tag_start"][code & t["byte"]]
    drop &= cls == 0
    counts = np.bincount(cls, minlength=8).tolist()
    has_figcaption = bool(counts[_FIGC_OPEN])
    if has_figcaption:  # keep all markup inside <figure> ... </figure>: the figcaption text is wanted
        _keep_figure_markup(html, pos, cls, drop)
    cut_at, depth = None, 0
    if max_depth is not None and counts[_FIGC_OPEN] + counts[_NEST_OPEN] + counts[_FIG_OPEN] > max_depth:
        s = np.cumsum(t["delta"][cls], dtype=np.int64)
        d = s - np.minimum.accumulate(np.minimum(s, 0))
        depth = int(d.max())
        if depth > max_depth:
            cut_at = int(pos[int(np.argmax(d > max_depth))])
    dropped = pos[drop]
    if cut_at is None:
        out = a.copy()
    else:
        out = a[:cut_at].copy()
        dropped = dropped[dropped < cut_at]
    out[dropped] = SKELETON_MARK[0]
    return Skeleton(out.tobytes(), cut_at, depth, has_figcaption, bool(counts[_BASE]))


# ------------------------------------------------------------------------------------------- full-document guard
_VOID3 = [((t[0] | 0x20) << 16) | ((t[1] | 0x20) << 8) | (t[2] | 0x20)
          for t in (b"img", b"met", b"lin", b"inp", b"sou", b"wbr", b"are", b"col", b"emb", b"par", b"tra", b"opt",
                    b"bas", b"key", b"ima")]


def nesting_cut(html: bytes, max_depth: int | None) -> tuple[int, int | None]:
    """(estimated maximum element nesting depth, byte offset where it first exceeds `max_depth` or None) of a full
    page, for parsing it whole (the skeleton has its own guard). Start tags count +1 and end tags -1 (never below 0);
    void elements and implicitly closed ones (`p`, `li`, `td`, `br`, ...) do not count. Pages with at most `max_depth`
    tags cannot exceed it and are not scanned.
    """
    if max_depth is None or html.count(b"<") <= max_depth or len(html) < 8:
        return 0, None
    np = _np_tables()["np"]
    n = len(html)
    a = np.frombuffer(html, dtype=np.uint8)
    pos = np.flatnonzero(a == 0x3C)
    pos = pos[pos < n - 5]
    closing = a[pos + 1] == 0x2F
    start = pos + 1 + closing
    c0 = (a[start] | 0x20).astype(np.int64)
    c1 = (a[start + 1] | 0x20).astype(np.int64)
    c2 = (a[start + 2] | 0x20).astype(np.int64)
    letter0, letter1, letter2 = ((c >= 0x61) & (c <= 0x7A) for c in (c0, c1, c2))
    code3 = (c0 << 16) | (c1 << 8) | c2
    code2 = (c0 << 8) | c1
    two = [((x[0] | 0x20) << 8) | (x[1] | 0x20) for x in (b"br", b"hr", b"li", b"td", b"th", b"tr", b"dd", b"dt")]
    non_nesting = np.isin(code3, _VOID3) | (np.isin(code2, two) & ~letter2) | ((c0 == 0x70) & ~letter1)
    delta = np.where(letter0 & ~non_nesting, np.where(closing, -1, 1), 0)
    s = np.cumsum(delta)
    depth = s - np.minimum.accumulate(np.minimum(s, 0))
    max_seen = int(depth.max()) if depth.size else 0
    if max_seen <= max_depth:
        return max_seen, None
    return max_seen, int(pos[int(np.argmax(depth > max_depth))])


# ------------------------------------------------------------------------------------------- language guess
# One language detector for pages and captions: `text.language.detect_language` (script rules, then lingua). Its
# kana rule (`JAPANESE_MIN_KANA_SHARE`) is documented there.


def page_text_sample(doc: LexborHTMLParser, max_chars: int = 5000) -> str:
    """`<title>` + visible body text (scripts, styles, templates removed), at most `max_chars`.

    Mutates `doc` (strips the non-visible elements): call it after `extract_images`.
    """
    title = doc.css_first("title")
    parts = [title.text() if title is not None else ""]
    doc.strip_tags(["script", "style", "noscript", "template", "textarea"])
    body = doc.body
    if body is not None:
        parts.append(body.text(separator=" "))
    return " ".join(" ".join(parts).split())[:max_chars]


def guess_page_language(html: bytes, *, max_depth: int | None = DEFAULT_MAX_DEPTH) -> str:
    """`detect_language` of a UTF-8 page's title and visible text (full Lexbor parse; for unlabelled pages only)."""
    _, cut = nesting_cut(html, max_depth)
    try:
        doc = parse_html(html if cut is None else html[:cut])
        return detect_language(page_text_sample(doc))
    except Exception:  # noqa: BLE001 - advisory: stage 1 treats "und" as not Chinese
        return "und"
