"""Deterministic sample crawl: Common-Crawl-shaped WARC files plus a truth table of what every stage must decide.

`write_sample_crawl(out_dir)` writes `out_dir/CC-MAIN-SAMPLE-s<seed>-<n>.warc.gz` (gzipped WARC, one gzip member per
record, written with warcio: a `warcinfo` record, then per page `request` / `response` / `metadata` records and, for
most image URLs, captured image `request` / `response` records) and `out_dir/truth.parquet`: one row per image-text
pair the extractor must emit, with the first stage that must reject it and why (names from `reasons.py`), or keep/keep.

Images a model can learn from: every image that reaches stage 3 is a rendered `scenes.Scene` (things of a colour and
count at a position on a background), and its caption names that scene in varied Chinese (`scenes.caption_for`); the
truth says which scene each image shows (`scene`) and which its caption names (`caption_scene`, canonical
`Scene.__str__` text). Every scene is drawn once per crawl, except for the designed copies: `duplicate_image` (the same
bytes), `near_duplicate_image` (the same pixels resized / re-encoded: pHash within 4 bits) and `semantic_duplicate`
(the same scene and layout re-rendered over a differently lit background, shifted a little, another JPEG quality: at
least MIN_PHASH_DISTANCE bits from every other image, so only an embedding model can find it). `low_similarity`
pairs show one scene and name another (different things and background); `high_similarity` pairs are posters that
print their caption's words in large type (`scenes.render_poster`: pinyin in Latin letters and pseudo-glyphs, since no
font able to draw Chinese is assumed). Pairs rejected before stage 3 keep procedural "photos" and generic captions.

Extraction contract the truth follows: `pair_id = ids.pair_id(<page response WARC-Record-ID, angle brackets included>,
<index of the <img> among all <img> elements of the page>)`; the image URL is `src` when it is a usable URL, else
`data-src`, else the largest `w` candidate of `srcset` (srcset images here carry no src or a data: placeholder),
resolved against `<base href>` or the page URL; `data:` / `javascript:` / missing URLs
give no pair (but count for the index); the caption is the HTML-decoded `alt` attribute with leading / trailing
whitespace stripped ("" when there is no alt: `caption_missing`). Page bytes are decoded with the charset of the
HTTP Content-Type header, else of the `<meta>` tag (the `gb2312` label means GBK, as in WHATWG).

Every defect is built to be unambiguous: each generated caption is checked with jieba (word counts far from the 5-60
bounds, noun / no-noun under both POS readings), the planted unsafe snippets (`vocab.UNSAFE_SNIPPETS` /
`SENSITIVE_SNIPPETS`: hand-written whole ads; the crawl no longer plants the filter's own lexicon terms), a character
3-gram near-duplicate index and the target encoding; every "normal" image is checked after encoding (3x3 Laplacian variance at native size
and at a 256 px
working size, grey entropy, pHash distance to every other image). The same seed gives byte-identical WARC files and
truth: record ids, dates, captions and pixels all derive from the seed.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import math
import os
import random
import time
import unicodedata
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

import numpy as np

from danqing_assets.lib import reasons as R
from danqing_assets.lib.ids import pair_id, sha256_hex
from danqing_sample import scenes as SC
from danqing_sample import vocab as V

DEFAULT_PAGES = 250
"""About 8 pairs per page: the default gives roughly 2,000 pairs."""
DEFAULT_FILES = 3
WARC_PREFIX = "CC-MAIN-SAMPLE"
TRUTH_FILE = "truth.parquet"

# Share of all pairs that each slot-level defect gets (pairs on clean Chinese pages). Page-level defects (Japanese /
# English pages, blacklisted domains) come from PAGE_FRACTIONS. What is left is kept: about 42 % at the default size.
SLOT_FRACTIONS: dict[tuple[str, str], float] = {
    (R.SOURCE, R.CAPTION_MISSING): 0.030,
    (R.SOURCE, R.CAPTION_TOO_SHORT): 0.030,
    (R.SOURCE, R.CAPTION_TOO_LONG): 0.022,
    (R.SOURCE, R.UNSAFE_TEXT): 0.022,
    (R.SOURCE, R.DUPLICATE_PAIR): 0.025,
    (R.TEXT, R.NOT_CHINESE_CAPTION): 0.020,
    (R.TEXT, R.NO_NOUN): 0.020,
    (R.TEXT, R.TOO_MANY_UNK): 0.020,
    (R.TEXT, R.LOW_INFORMATION): 0.020,
    (R.TEXT, R.SENSITIVE_TEXT): 0.020,
    (R.TEXT, R.NEAR_DUPLICATE_CAPTION): 0.025,
    (R.FETCH, R.DNS_ERROR): 0.020,
    (R.IMAGE, R.TOO_SMALL): 0.020,
    (R.IMAGE, R.EXTREME_ASPECT): 0.020,
    (R.IMAGE, R.FLAT_IMAGE): 0.020,
    (R.IMAGE, R.BLURRY_IMAGE): 0.020,
    (R.IMAGE, R.DUPLICATE_IMAGE): 0.020,
    (R.IMAGE, R.NEAR_DUPLICATE_IMAGE): 0.020,
    (R.IMAGE, R.SEMANTIC_DUPLICATE): 0.020,
    (R.CROSS_MODAL, R.HIGH_SIMILARITY): 0.022,
    (R.CROSS_MODAL, R.LOW_SIMILARITY): 0.012,
}
PAGE_FRACTIONS: dict[str, float] = {"ja": 0.05, "en": 0.05, "blacklisted": 0.035}

# Reasons whose pair copies an earlier kept pair (its caption, image or both).
_DUP_REASONS = (R.DUPLICATE_PAIR, R.NEAR_DUPLICATE_CAPTION, R.DUPLICATE_IMAGE, R.NEAR_DUPLICATE_IMAGE,
                R.SEMANTIC_DUPLICATE)
_MAX_CHILDREN = 2  # an original has at most two copies of one kind

# Caption word-count bands (jieba words that contain a letter, digit or Han character).
NORMAL_WORDS = (8, 40)
SHORT_WORDS = (1, 3)
LONG_WORDS = (75, 100)
_MAX_NEAR_DUP_JACCARD = 0.5  # captions meant to be distinct stay below this 3-gram Jaccard
_MIN_DESIGNED_JACCARD = 0.88  # designed near-duplicate captions reach at least this

# Image checks (grey 0-255, 3x3 4-neighbour Laplacian, interior only).
NORMAL_EDGE = (300, 640)
MIN_LAPLACIAN_NATIVE = 1500.0
MIN_LAPLACIAN_WORK = 1300.0
WORK_SIZE = 256
MIN_ENTROPY_BITS = 5.0
MIN_PHASH_DISTANCE = 14
MAX_BLURRED_LAPLACIAN = 150.0

_TRUTH_SCHEMA: dict[str, str] = {
    "pair_id": "str",
    "page_url": "str",
    "image_url": "str",
    "caption": "str",
    "page_language": "str",
    "encoding": "str",
    "script": "str",
    "url_form": "str",
    "image_kind": "str",
    "captured": "bool",
    "expected_stage": "str",
    "expected_reason": "str",
    "warc_file": "str",
    "warc_record_id": "str",
    "img_index": "int",
    "language_header": "str?",
    "charset_declared": "str",
    "caption_kind": "str",
    "image_format": "str?",
    "image_width": "int?",
    "image_height": "int?",
    "image_sha256": "str?",
    "duplicate_of": "str?",
    "scene": "str?",  # the scene the image shows (`scenes.Scene` text form); None for posters, flat and filler images
    "caption_scene": "str?",  # the scene the caption names; None for generic and defective captions
}
TRUTH_COLUMNS: tuple[str, ...] = tuple(_TRUTH_SCHEMA)


@dataclass(frozen=True)
class SampleCrawlSummary:
    """What `write_sample_crawl` wrote."""

    warc_files: list[str]
    pairs: int
    pages: int
    truth_path: str
    seconds: float
    images: int  # captured image responses
    counts: dict[tuple[str, str], int]  # pairs by (expected_stage, expected_reason), keep included as ("keep", "keep")


# ---------------------------------------------------------------------------------------------------------------------
# Seeds and ids.


def _h64(*parts: object) -> int:
    key = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def _record_id(seed: int, key: str) -> str:
    digest = hashlib.blake2b(f"sample-crawl|{seed}|{key}".encode(), digest_size=16).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest, version=4)}>"


def _read_terms(name: str) -> tuple[str, ...]:
    text = resources.files("danqing_assets.data").joinpath(name).read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        term = line.split("#", 1)[0].strip().lower()
        if term:
            out.append(term)
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------------
# Text checks.


class _TextKit:
    """jieba (a private tokenizer, so other code adding words cannot shift the counts), OpenCC and the planted unsafe
    snippets."""

    _NO_NOUN_TAGS = frozenset(
        "v vd vi vg a ad ag d dg c p u uj ul uz ug uv ud r rr rz m q y z zg x e o k h".split()
    )

    def __init__(self) -> None:
        import jieba
        import jieba.posseg
        import opencc

        jieba.setLogLevel(logging.WARNING)
        self.tok = jieba.Tokenizer()
        self.tok.initialize()
        # A POSTokenizer over the private tokenizer, sharing a copy of the module's dictionary tags (loading them again
        # costs a second).
        self.pos = jieba.posseg.POSTokenizer.__new__(jieba.posseg.POSTokenizer)
        self.pos.tokenizer = self.tok
        self.word_tag: dict[str, str] = dict(jieba.posseg.dt.word_tag_tab)
        self.pos.word_tag_tab = self.word_tag
        self.cc = {name: opencc.OpenCC(name) for name in ("t2s", "s2t", "s2tw", "s2hk")}
        self._fold_cache: dict[str, str] = {}
        self.unsafe = tuple(self.fold(t) for t in V.UNSAFE_SNIPPETS)
        self.sensitive = tuple(self.fold(t) for t in V.SENSITIVE_SNIPPETS)
        self.blacklist = frozenset(_read_terms("domain_blacklist.txt"))

    def fold(self, text: str) -> str:
        """NFKC, Traditional -> Simplified, lower case: the form the filters compare."""
        out = self._fold_cache.get(text)
        if out is None:
            out = self.cc["t2s"].convert(unicodedata.normalize("NFKC", text)).lower()
            self._fold_cache[text] = out
        return out

    def to_traditional(self, text: str, variant: str) -> str:
        return self.cc[variant].convert(text)

    @staticmethod
    def _wordlike(tok: str) -> bool:
        return any(ch.isalnum() for ch in tok)

    @staticmethod
    def _loose(tok: str) -> bool:
        return bool(tok.strip()) and not all(unicodedata.category(ch)[0] in "PZ" for ch in tok)

    def word_counts(self, text: str) -> tuple[int, ...]:
        """Word counts under the readings a stage-1 implementation may use: on the folded text (letters/digits/Han
        tokens; any non-punctuation token) and on the raw text (letters/digits/Han tokens)."""
        folded = self.tok.lcut(self.fold(text))
        raw = self.tok.lcut(unicodedata.normalize("NFKC", text))
        return (
            sum(map(self._wordlike, folded)),
            sum(map(self._loose, folded)),
            sum(map(self._wordlike, raw)),
        )

    def words_in(self, text: str, lo: int, hi: int) -> bool:
        return all(lo <= n <= hi for n in self.word_counts(text))

    def has_noun(self, text: str) -> bool:
        """A noun under jieba.posseg (tag n*) and under a dictionary-tag lookup of jieba.lcut words."""
        folded = self.fold(text)
        if not any(p.flag.startswith("n") for p in self.pos.lcut(folded)):
            return False
        return any(self.word_tag.get(w, "").startswith("n") for w in self.tok.lcut(folded))

    def has_no_noun(self, text: str) -> bool:
        """No noun under jieba.posseg, and every word of jieba.lcut is a dictionary word with a non-noun tag (so no
        reading counts one: not n*, not vn, not an unknown Han name)."""
        folded = self.fold(text)
        if not all(p.flag in self._NO_NOUN_TAGS for p in self.pos.lcut(folded)):
            return False
        for w in self.tok.lcut(folded):
            if not self._wordlike(w):
                continue
            tag = self.word_tag.get(w)
            if tag is None or tag not in self._NO_NOUN_TAGS:
                return False
        return True

    def hits(self, text: str, terms: tuple[str, ...]) -> list[str]:
        folded = self.fold(text)
        plain = unicodedata.normalize("NFKC", text).lower()
        return [t for t in terms if t in folded or t in plain]

    def safe(self, text: str) -> bool:
        return not self.hits(text, self.unsafe) and not self.hits(text, self.sensitive)

    def blacklisted(self, host: str) -> bool:
        labels = host.lower().strip(".").split(".")
        return any(".".join(labels[i:]) in self.blacklist for i in range(len(labels)))

    def grams(self, text: str) -> frozenset[str]:
        s = "".join(self.fold(text).split())
        return frozenset(s[i : i + 3] for i in range(max(1, len(s) - 2)))


def _char_entropy_ratio(text: str) -> float:
    """Shannon entropy of the letter / digit / Han characters over log2 of their count (1 = no repetition)."""
    chars = [ch for ch in text if ch.isalnum()]
    n = len(chars)
    if n < 2:
        return 0.0
    counts = Counter(chars).values()
    h = math.log2(n) - sum(c * math.log2(c) for c in counts) / n
    return h / math.log2(n)


def _han_share(text: str) -> float:
    """Han characters among letters (Latin words in a Chinese caption lower it)."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for ch in letters if unicodedata.name(ch, "").startswith("CJK")) / len(letters)


class _ShingleIndex:
    """Inverted index of character 3-grams: the highest Jaccard of a caption against every registered caption."""

    def __init__(self) -> None:
        self.sets: list[frozenset[str]] = []
        self.index: dict[str, list[int]] = defaultdict(list)

    def max_jaccard(self, grams: frozenset[str], ignore: set[int] = frozenset()) -> float:  # type: ignore[assignment]
        inter: Counter[int] = Counter()
        for g in grams:
            for j in self.index.get(g, ()):
                inter[j] += 1
        best = 0.0
        for j, k in inter.items():
            if j in ignore:
                continue
            best = max(best, k / (len(grams) + len(self.sets[j]) - k))
        return best

    def add(self, grams: frozenset[str]) -> int:
        i = len(self.sets)
        self.sets.append(grams)
        for g in grams:
            self.index[g].append(i)
        return i


# ---------------------------------------------------------------------------------------------------------------------
# Plan.


@dataclass(eq=False)
class _Image:
    kind: str
    fmt: str  # jpeg / png / webp
    width: int
    height: int
    data: bytes
    array: Any = None  # RGB pixels before encoding (originals of near duplicates)
    layout_seed: int | None = None  # the stream that placed a scene's things (re-used by its semantic duplicates)

    @property
    def mime(self) -> str:
        return f"image/{self.fmt}"


@dataclass(eq=False)
class _Page:
    index: int
    kind: str  # zh / ja / en / blacklisted
    lang: str  # zho / jpn / eng
    encoding: str  # utf-8 / gbk / gb2312 / big5
    script: str  # simplified / traditional / none
    trad_variant: str
    header_lang: str | None
    charset_mode: str  # header+meta / meta / header / none
    scheme: str
    host: str
    site: str
    url: str
    base_href: str | None
    file_index: int = 0
    record_id: str = ""
    slots: list[_Slot] = field(default_factory=list)
    n_extra: int = 0
    commented_img: bool = False


@dataclass(eq=False)
class _Slot:
    page: _Page
    pos: int
    stage: str
    reason: str
    role: str | None = None
    orig: _Slot | None = None
    children: int = 0
    caption: str = ""
    caption_kind: str = ""
    script: str = "none"
    shingle_id: int | None = None
    url_form: str = ""
    image_url: str = ""
    image_kind: str = ""
    captured: bool = False
    image: _Image | None = None
    img_index: int = -1
    alt_mode: str = "value"  # value / absent / empty / blank
    rel_src: str = ""  # the attribute value of relative / base-href forms
    title: str = ""  # Latin text printed on a text-heavy image and quoted by its caption
    scene: SC.Scene | None = None  # what the image shows
    caption_scene: SC.Scene | None = None  # what the caption names


# ---------------------------------------------------------------------------------------------------------------------
# Captions.


class _Captions:
    """Caption generators; every result is verified and regenerated until it carries exactly its intended defect."""

    def __init__(self, rng: random.Random, kit: _TextKit) -> None:
        self.r = rng
        self.kit = kit
        self.shingles = _ShingleIndex()

    # -- building blocks --------------------------------------------------------------------------------------------
    def _n(self) -> str:
        return self.r.choice(V.NOUNS)[0]

    def _thing(self) -> str:
        """A noun that is not a person (the object of a transitive verb)."""
        while True:
            noun = self.r.choice(V.NOUNS)[0]
            if noun not in V.PERSON_NOUNS:
                return noun

    def _clause(self) -> str:
        r = self.r
        noun, mw = r.choice(V.NOUNS)
        a, p, t = r.choice(V.ADJECTIVES), r.choice(V.PLACES), r.choice(V.TIMES)
        num = r.choice(V.MEASURE_NUMBERS)
        forms: list[Callable[[], str]] = [
            lambda: f"{p}的{a}{noun}",
            lambda: f"{num}{mw}{a}的{noun}",
            lambda: f"{t}在{p}{r.choice(V.VERBS_T)}{self._thing()}",
            lambda: f"{r.choice(V.PEOPLE)}在{r.choice(V.PLACE_NOUNS)}里{r.choice(V.VERBS_I)}",
            lambda: f"{a}的{noun}和{self._n()}",
            lambda: f"{self._n()}旁边的{num}{mw}{noun}",
            lambda: f"{p}{t}的{noun}",
            lambda: f"{r.choice(V.VERBS_T)}{a}的{self._thing()}",
            lambda: f"{a}{noun}特写",
            lambda: f"{r.choice(V.PEOPLE)}{r.choice(V.VERBS_T)}的{self._thing()}",
            lambda: f"{noun}与{self._n()}",
            lambda: f"{p}{noun}高清图片",
            lambda: f"{t}的{a}{noun}",
            lambda: f"{r.choice(V.PEOPLE)}和{noun}",
        ]
        return r.choice(forms)()

    def _join(self, clauses: list[str], sep: str | None = None) -> str:
        if sep is None:
            sep = self.r.choices(["，", " ", "；", "、"], weights=[70, 18, 6, 6])[0]
        return sep.join(clauses)

    def _fresh(self, text: str, ignore: set[int] | None = None) -> bool:
        return self.shingles.max_jaccard(self.kit.grams(text), ignore or set()) < _MAX_NEAR_DUP_JACCARD

    def register(self, slot: _Slot) -> None:
        slot.shingle_id = self.shingles.add(self.kit.grams(slot.caption))

    def _finish(self, simplified: str, page: _Page) -> str:
        return self.kit.to_traditional(simplified, page.trad_variant) if page.script == "traditional" else simplified

    @staticmethod
    def _encodable(text: str, page: _Page) -> bool:
        try:
            text.encode(page.encoding)
        except UnicodeEncodeError:
            return False
        return True

    def _retry(self, make: Callable[[], str | None], what: str, tries: int = 400) -> str:
        for _ in range(tries):
            out = make()
            if out is not None:
                return out
        raise RuntimeError(f"sample crawl: could not generate a {what} caption")  # pragma: no cover

    # -- caption kinds ----------------------------------------------------------------------------------------------
    def valid(self, page: _Page, *, n_clauses: tuple[int, int] = (2, 6)) -> str:
        """A generic caption every filter keeps (10-38 words, a noun, safe, distinct from every registered caption),
        naming no scene: for pairs a page-level rule rejects."""
        kit = self.kit

        def make() -> str | None:
            text = self._finish(self._join([self._clause() for _ in range(self.r.randint(*n_clauses))]), page)
            if not kit.words_in(text, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2):
                return None
            if not kit.has_noun(text) or not kit.safe(text) or _char_entropy_ratio(kit.fold(text)) < 0.75:
                return None
            if _han_share(text) < 0.65:
                return None
            if page.encoding != "utf-8" and not self._encodable(text, page):
                return None
            return text if self._fresh(text) else None

        return self._retry(make, "valid")

    def scene_caption(self, page: _Page, scene: SC.Scene, *, decorate: str = "plain", sep: str | None = None,
                      title: str = "", tail: str = "", min_chars: int = 0, tries: int = 60) -> str | None:
        """A caption every filter keeps (10-38 words, a noun, safe, distinct from every registered caption) that
        names `scene` (`scenes.caption_parts`, decorated); None when `tries` phrasings all fail a check (the caller then
        takes another scene).

        decorate: plain / latin (a Latin product or file-type token) / entity (an "&") / emoji / ad_suffix ("-XX网") /
        poster (starts with `title`, the pinyin printed on a text-heavy image, followed by a poster noun).
        tail: a numbered ending ("第3张") after the scene's words, for the originals of near-duplicate captions;
        min_chars: the least length without whitespace (neutral phrases are added to reach it).
        """
        kit, r = self.kit, self.r

        def make() -> str | None:
            parts = SC.caption_parts(scene, r)
            extras = [e for e in SC.EXTRA_PHRASES if e not in parts]
            r.shuffle(extras)
            while extras and (len("".join(parts)) + len(tail) < min_chars or (decorate == "entity" and len(parts) < 2)):
                parts.append(extras.pop())
            if decorate == "entity":
                parts[-2:] = [parts[-2] + r.choice([" & ", "&"]) + parts[-1]]
            base = (sep if sep is not None else r.choices(["，", " ", "；"], weights=[82, 12, 6])[0]).join(parts)
            if tail:
                base = f"{base}，{tail}"
            if decorate == "poster":
                base = f"{title} {r.choice(SC.POSTER_NOUNS)}，{base}"
            elif decorate == "latin":
                tok = r.choice(SC.LATIN_TAGS)
                base = f"{tok} {base}" if r.random() < 0.5 else f"{base} {tok}"
            text = self._finish(base, page)
            if decorate == "emoji":
                emo = "".join(r.sample(V.CLEAN_EMOJI, r.randint(1, 2)))
                text = f"{text}{emo}" if r.random() < 0.7 else f"{emo}{text}"
            elif decorate == "ad_suffix":
                text = text + r.choice(V.SITE_SUFFIXES).format(r.choice(V.SITE_NAMES))
            if len("".join(text.split())) < min_chars:
                return None
            if not kit.words_in(text, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2):
                return None
            if decorate in ("emoji", "ad_suffix") and not kit.words_in(base, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2):
                return None
            if not kit.has_noun(text) or not kit.safe(text) or _char_entropy_ratio(kit.fold(text)) < 0.75:
                return None
            if _han_share(text) < 0.65:
                return None
            if page.encoding != "utf-8" and decorate != "emoji" and not self._encodable(text, page):
                return None
            return text if self._fresh(text) else None

        for _ in range(tries):
            out = make()
            if out is not None:
                return out
        return None

    def short(self, page: _Page) -> str:
        r = self.r

        def make() -> str | None:
            noun = self._n()
            text = r.choice([noun, f"{r.choice(V.ADJECTIVES)}{noun}", f"{r.choice(V.PLACES)}{noun}", f"高清{noun}",
                             f"{noun}图片", f"{r.choice(V.PLACES)}"])
            text = self._finish(text, page)
            if not self.kit.words_in(text, *SHORT_WORDS) or not self.kit.safe(text):
                return None
            return text if self._encodable(text, page) or page.encoding == "utf-8" else None

        return self._retry(make, "short")

    def long(self, page: _Page) -> str:
        def make() -> str | None:
            text = self._finish(self._join([self._clause() for _ in range(self.r.randint(17, 21))], "，"), page)
            if not self.kit.words_in(text, LONG_WORDS[0], LONG_WORDS[1]):
                return None
            if not self.kit.safe(text) or not self.kit.has_noun(text):
                return None
            return text if self._fresh(text) else None

        return self._retry(make, "long")

    def with_term(self, page: _Page, terms: tuple[str, ...], other: tuple[str, ...]) -> str:
        """A valid caption that contains one planted snippet of `terms` (and none of `other`)."""
        r = self.r

        def make() -> str | None:
            term = r.choice(terms)
            clauses = [self._clause() for _ in range(r.randint(2, 4))]
            shape = r.randrange(3)
            if shape == 0:
                clauses.insert(r.randrange(len(clauses) + 1), term)
            elif shape == 1:
                clauses[0] = term + clauses[0]
            else:
                clauses.append(f"{term}{self._n()}")
            text = self._finish(self._join(clauses, "，"), page)
            if not self.kit.hits(text, terms) or self.kit.hits(text, other):
                return None
            if not self.kit.words_in(text, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2) or not self.kit.has_noun(text):
                return None
            return text if self._fresh(text) else None

        return self._retry(make, "lexicon")

    def english(self) -> str:
        r = self.r

        def sentence() -> str:
            forms = [
                lambda: f"a {r.choice(V.EN_ADJECTIVES)} {r.choice(V.EN_NOUNS)} {r.choice(V.EN_VERBS)} in "
                        f"{r.choice(V.EN_PLACES)} {r.choice(V.EN_TIMES)}",
                lambda: f"the {r.choice(V.EN_ADJECTIVES)} {r.choice(V.EN_NOUNS)} near the {r.choice(V.EN_NOUNS)}",
                lambda: f"{r.choice(V.EN_ADJECTIVES)} {r.choice(V.EN_NOUNS)} and {r.choice(V.EN_ADJECTIVES)} "
                        f"{r.choice(V.EN_NOUNS)} {r.choice(V.EN_TIMES)}",
                lambda: f"view of {r.choice(V.EN_PLACES)} with a {r.choice(V.EN_NOUNS)}",
            ]
            return r.choice(forms)()

        def make() -> str | None:
            text = ", ".join(sentence() for _ in range(r.randint(1, 4)))
            text = text[0].upper() + text[1:]
            if not self.kit.words_in(text, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2) or not self.kit.safe(text):
                return None
            return text if self._fresh(text) else None

        return self._retry(make, "English")

    def japanese(self) -> str:
        r = self.r
        forms = [
            lambda: f"{r.choice(V.JA_PLACES)}の{r.choice(V.JA_ADJECTIVES)}{r.choice(V.JA_NOUNS)}のしゃしんです",
            lambda: f"{r.choice(V.JA_ADJECTIVES)}{r.choice(V.JA_NOUNS)}と{r.choice(V.JA_NOUNS)}",
            lambda: f"{r.choice(V.JA_NOUNS)}をたのしむひとたち",
            lambda: f"{r.choice(V.JA_PLACES)}で{r.choice(V.JA_NOUNS)}をみました",
        ]
        return "、".join(r.choice(forms)() for _ in range(r.randint(1, 3)))

    def no_noun(self, page: _Page) -> str:
        r = self.r

        def phrase() -> str:
            adv, adj, verb = r.choice(V.NO_NOUN_ADVERBS), r.choice(V.NO_NOUN_ADJECTIVES), r.choice(V.NO_NOUN_VERBS)
            pron = r.choice(V.NO_NOUN_PRONOUNS)
            forms = [
                f"{adv}{adj}地{verb}",
                f"{pron}{adv}{verb}了",
                f"{adj}又{r.choice(V.NO_NOUN_ADJECTIVES)}",
                f"{verb}得{adv}{adj}",
                f"{pron}都{adv}{verb}",
                f"{adv}{verb}过",
                f"{pron}觉得{adv}{adj}",
            ]
            return r.choice(forms)

        def make() -> str | None:
            text = self._finish("，".join(phrase() for _ in range(r.randint(3, 6))), page)
            if not self.kit.words_in(text, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2):
                return None
            if not self.kit.has_no_noun(text) or not self.kit.safe(text):
                return None
            return text if self._fresh(text) else None

        return self._retry(make, "no-noun")

    def rare(self, page: _Page) -> str:
        """A valid caption with 7-9 CJK Extension B characters (one [UNK] each under a Chinese BERT vocabulary)."""
        r = self.r

        def make() -> str | None:
            base = self._finish(self._join([self._clause() for _ in range(r.randint(3, 5))], "，"), page)
            rare = "".join(r.sample(V.RARE_CHARS, r.randint(7, 9)))
            cut = r.randint(2, len(rare) - 2)
            text = r.choice([
                f"{rare[:cut]}{base}{rare[cut:]}",
                f"{base}，{rare}",
                f"{rare[:cut]}村{base}，{rare[cut:]}",
            ])
            han = sum(1 for ch in base if "\u4e00" <= ch <= "\u9fff")
            if han < 3 * len(rare):
                return None
            if not self.kit.words_in(text, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2) or not self.kit.has_noun(base):
                return None
            if not self.kit.safe(text):
                return None
            return text if self._fresh(text) else None

        return self._retry(make, "rare-character")

    def low_info(self, page: _Page) -> str:
        """One promotion word repeated 10-16 times, wrapped in emoji and symbol runs (a noun, 10+ words)."""
        r = self.r

        def make() -> str | None:
            word = self._finish(r.choice(V.PROMO_WORDS), page)
            body = word * r.randint(10, 16)
            emo = r.choice(V.LOW_INFO_EMOJI) * r.randint(1, 3)
            sym = r.choice(V.LOW_INFO_SYMBOLS)
            sym2 = r.choice(V.LOW_INFO_SYMBOLS)
            text = r.choice([f"{emo}{sym}{body}{sym}", f"{body}{sym}{emo}", f"{sym}{body}{sym2}"])
            if not self.kit.words_in(text, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2):
                return None
            if not self.kit.has_noun(text) or not self.kit.safe(text):
                return None
            if _char_entropy_ratio(self.kit.fold(text)) > 0.35:
                return None
            return text

        return self._retry(make, "low-information")

    def near_variant(self, orig: _Slot, siblings: list[_Slot]) -> str:
        """The original with its trailing number changed or one word near the end replaced."""
        r = self.r
        kit = self.kit
        ignore = {s.shingle_id for s in [orig, *siblings] if s.shingle_id is not None}
        g0 = kit.grams(orig.caption)
        taken = {orig.caption, *(s.caption for s in siblings)}

        def make() -> str | None:
            text = orig.caption
            digits = [i for i, ch in enumerate(text) if ch.isdigit()]
            if digits and r.random() < 0.7:
                i = digits[-1]
                text = text[:i] + str((int(text[i]) + r.randint(1, 8)) % 10) + text[i + 1 :]
            else:
                nouns = [n for n, _ in V.NOUNS if n in text]
                if not nouns:
                    return None
                last = max(nouns, key=text.rfind)
                i = text.rfind(last)
                new = self._finish(self._n(), orig.page)
                text = text[:i] + new + text[i + len(last) :]
            if text in taken:
                return None
            g = kit.grams(text)
            if len(g0 & g) / len(g0 | g) < _MIN_DESIGNED_JACCARD:
                return None
            if not kit.words_in(text, NORMAL_WORDS[0] + 2, NORMAL_WORDS[1] - 2) or not kit.has_noun(text):
                return None
            if not kit.safe(text) or not self._fresh(text, ignore):
                return None
            return text

        return self._retry(make, "near-duplicate")

    def pair_variant(self, orig: _Slot) -> tuple[str, str]:
        """A caption that normalises (NFKC, case, whitespace) to the original's."""
        text = orig.caption
        options = ["exact_copy"]
        if " " in text:
            options += ["whitespace_variant", "ideographic_space_variant"]
        if "，" in text or "；" in text:
            options.append("fullwidth_variant")
        if any(ch.isascii() and ch.isalpha() for ch in text):
            options.append("case_variant")
        kind = self.r.choice(options)
        if kind == "whitespace_variant":
            text = text.replace(" ", "  ", 1)
        elif kind == "ideographic_space_variant":
            text = text.replace(" ", "\u3000", 1)
        elif kind == "fullwidth_variant":
            text = text.replace("，", ",").replace("；", ";")
        elif kind == "case_variant":
            text = text.upper() if self.r.random() < 0.5 else text.lower()
            if text == orig.caption:
                text, kind = orig.caption.swapcase(), "case_variant"
        return text, kind


# ---------------------------------------------------------------------------------------------------------------------
# Images.


def _grey(img: Any) -> np.ndarray:
    """0-255 luma as uint8 (the checks below take it as is)."""
    return np.asarray(img.convert("L"))


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 3x3 4-neighbour Laplacian over the interior of a 0-255 grey array.

    8-bit input is filtered in int16 (exact: the Laplacian of 0-255 values lies in -1020..1020, and 4x less memory
    traffic than float64), other input in float64; the variance is taken in float64 either way."""
    g = np.asarray(grey)
    g = g.astype(np.int16) if g.dtype == np.uint8 else g.astype(np.float64, copy=False)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var(dtype=np.float64))


def working_copy(img: Any, size: int = WORK_SIZE) -> Any:
    """Grey copy whose shortest edge is `size` (box filter; never upscaled)."""
    from PIL import Image

    grey = img.convert("L")
    w, h = grey.size
    s = size / min(w, h)
    if s >= 1:
        return grey
    return grey.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BOX)


def grey_entropy(grey: np.ndarray) -> float:
    hist = np.bincount(np.asarray(grey, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


_DCT32 = np.cos(np.pi * (2 * np.arange(32)[None, :] + 1) * np.arange(8)[:, None] / 64.0)


def phash64(img: Any) -> int:
    """imagededup-style pHash (32x32 Lanczos grey, DCT-II, top-left 8x8, >= median of the 63 AC terms) as an int."""
    from PIL import Image

    small = np.asarray(img.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64)
    coef = _DCT32 @ small @ _DCT32.T
    bits = coef.ravel() >= np.median(coef.ravel()[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


class _Images:
    """Rendered scenes (and their defective, duplicate and semantic copies), posters, flat images, and procedural
    photo-like fillers (gradients, hard-edged shapes, fine texture, mild noise) for pairs rejected before stage 3."""

    def __init__(self, seed: int) -> None:
        from PIL import Image, ImageDraw, ImageFilter

        self.Image, self.ImageDraw, self.ImageFilter = Image, ImageDraw, ImageFilter
        self.seed = seed
        # Mild grey noise, stored offset by 128 so that ImageChops.add(img, crop, 1, -128) adds it in C.
        noise = np.random.default_rng(_h64(seed, "noise")).integers(123, 134, (1440, 1440), dtype=np.uint8)
        self.noise = Image.fromarray(np.repeat(noise[..., None], 3, axis=2))
        self.hashes = np.zeros(0, dtype=np.uint64)

    def rng(self, *key: object) -> np.random.Generator:
        return np.random.default_rng(_h64(self.seed, "img", *key))

    # -- drawing ----------------------------------------------------------------------------------------------------
    def _background(self, rng: np.random.Generator, w: int, h: int, lo: float = 0, hi: float = 255) -> Any:
        s = 48
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        ang = rng.uniform(0, 2 * np.pi)
        t = np.cos(ang) * xx + np.sin(ang) * yy
        t = (t - t.min()) / (t.max() - t.min() + 1e-6)
        c1, c2, c3 = rng.uniform(lo, hi, (3, 3))
        base = c1 * (1 - t[..., None]) + c2 * t[..., None]
        cx, cy = rng.uniform(0, 1, 2)
        d = np.clip(np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.3, 0.8), 0, 1)[..., None]
        base = base * d + (0.6 * c3 + 0.4 * base) * (1 - d)
        return self.Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((w, h), self.Image.BILINEAR)

    def _add_noise(self, rng: np.random.Generator, img: Any) -> Any:
        from PIL import ImageChops

        w, h = img.size
        nw, nh = self.noise.size
        ox, oy = int(rng.integers(0, max(1, nw - w + 1))), int(rng.integers(0, max(1, nh - h + 1)))
        patch = self.noise.crop((ox, oy, ox + w, oy + h))  # zero-padded (-128) outside the tile: clipped to black
        if w > nw or h > nh:
            patch = self.noise.resize((w, h), self.Image.NEAREST)
        return ImageChops.add(img, patch, 1.0, -128)

    def draw_photo(self, rng: np.random.Generator, w: int, h: int, detail: float = 1.0) -> Any:
        """Smooth gradients + large hard-edged shapes + striped texture patches + ~1,400 small shapes + mild noise."""
        img = self._background(rng, w, h)
        dr = self.ImageDraw.Draw(img)
        for _ in range(int(rng.integers(5, 10))):
            x0, y0 = rng.uniform(-0.2, 1) * w, rng.uniform(-0.2, 1) * h
            sw, sh = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.5) * h
            col = tuple(rng.integers(0, 256, 3).tolist())
            k = int(rng.integers(0, 3))
            if k == 0:
                dr.rectangle([x0, y0, x0 + sw, y0 + sh], fill=col)
            elif k == 1:
                dr.ellipse([x0, y0, x0 + sw, y0 + sh], fill=col)
            else:
                dr.polygon([(x0, y0), (x0 + sw, y0 + rng.uniform(0, 1) * sh), (x0 + rng.uniform(0, 1) * sw, y0 + sh)],
                           fill=col)
        scale = max(w, h) / 256
        for _ in range(2):
            x0, y0 = rng.uniform(0, 0.6) * w, rng.uniform(0, 0.6) * h
            rw, rh = rng.uniform(0.25, 0.4) * w, rng.uniform(0.25, 0.4) * h
            period = max(3, int(rng.uniform(3, 5) * scale))
            col = tuple(rng.integers(0, 256, 3).tolist())
            if rng.random() < 0.5:
                for x in np.arange(x0, x0 + rw, period):
                    dr.rectangle([x, y0, x + period / 2, y0 + rh], fill=col)
            else:
                for y in np.arange(y0, y0 + rh, period):
                    dr.rectangle([x0, y, x0 + rw, y + period / 2], fill=col)
        n = int(rng.integers(1200, 1600) * max(0.2, w * h / 250_000) ** 0.5 * detail)
        xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
        ss, asp = rng.uniform(1.5, 6, n) * scale, rng.uniform(0.5, 2, n)
        boxes = np.stack([xs, ys, xs + ss, ys + ss * asp], axis=1).tolist()
        cols = [tuple(c) for c in rng.integers(0, 256, (n, 3)).tolist()]
        kinds = (rng.random(n) < 0.5).tolist()
        rect, ell = dr.rectangle, dr.ellipse
        for box, col, is_rect in zip(boxes, cols, kinds):
            (rect if is_rect else ell)(box, fill=col)
        return self._add_noise(rng, img)

    # -- encoding and checks ----------------------------------------------------------------------------------------
    def encode(self, img: Any, fmt: str, quality: int = 88) -> bytes:
        buf = io.BytesIO()
        if fmt == "jpeg":
            img.save(buf, "JPEG", quality=quality)
        elif fmt == "webp":
            img.save(buf, "WEBP", quality=quality, method=0)
        else:
            img.save(buf, "PNG", compress_level=1)
        return buf.getvalue()

    def decode(self, data: bytes) -> Any:
        """The grey (L) image a filter sees (JPEG decoded straight to luma)."""
        img = self.Image.open(io.BytesIO(data))
        if img.format == "JPEG":
            img.draft("L", img.size)
        return img.convert("L")

    def sharp_enough(self, img: Any, min_entropy: float = MIN_ENTROPY_BITS) -> bool:
        g = _grey(img)
        if laplacian_variance(g) < MIN_LAPLACIAN_NATIVE or grey_entropy(g) < min_entropy or g.std() < 10:
            return False
        return laplacian_variance(_grey(working_copy(img))) >= MIN_LAPLACIAN_WORK

    def distinct(self, img: Any) -> int | None:
        """The pHash if it is at least MIN_PHASH_DISTANCE bits from every registered image, else None."""
        h = phash64(img)
        if self.hashes.size:
            d = np.bitwise_count(self.hashes ^ np.uint64(h))
            if int(d.min()) < MIN_PHASH_DISTANCE:
                return None
        return h

    def register(self, h: int) -> None:
        self.hashes = np.append(self.hashes, np.uint64(h))

    def _size(self, rng: np.random.Generator, lo: int = NORMAL_EDGE[0], hi: int = NORMAL_EDGE[1]) -> tuple[int, int]:
        while True:
            w, h = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
            if 0.5 <= w / h <= 2.0:
                return w, h

    # -- kinds ------------------------------------------------------------------------------------------------------
    def scene(self, key: object, scene: SC.Scene, fmt: str, *, keep_array: bool = False,
              kind: str = "normal") -> _Image:
        """`scene` rendered, sharp and at least MIN_PHASH_DISTANCE bits from every registered image."""
        for attempt in range(30):
            rng = self.rng(key, attempt)
            w, h = self._size(rng)
            layout_seed = int(rng.integers(0, 2**63))
            img = SC.render_scene(scene, w, h, rng, layout=np.random.default_rng(layout_seed))
            data = self.encode(img, fmt, int(rng.integers(78, 86)))
            dec = self.decode(data)
            if not self.sharp_enough(dec):
                continue
            ph = self.distinct(dec)
            if ph is None:
                continue
            self.register(ph)
            return _Image(kind, fmt, w, h, data, np.asarray(img) if keep_array else None, layout_seed)
        raise RuntimeError(f"sample crawl: could not draw a distinct sharp image of {scene}")  # pragma: no cover

    def semantic_copy(self, key: object, orig: _Image, scene: SC.Scene) -> _Image:
        """The original's scene and layout re-rendered over another backdrop, texture and noise, shifted by 1-4 %
        (two edges trimmed), as JPEG at another quality: the same picture to the eye, far from every image in pHash.
        A scene whose big things fix its pHash whatever the backdrop (rare) is laid out afresh after 15 tries."""
        assert orig.layout_seed is not None
        w, h = orig.width, orig.height
        for attempt in range(30):
            rng = self.rng(key, attempt)
            layout = np.random.default_rng(orig.layout_seed) if attempt < 15 else None
            img = SC.render_scene(scene, w, h, rng, layout=layout)
            dx = int(rng.integers(max(1, w // 100), max(2, w // 25) + 1)) * (1 if rng.random() < 0.5 else -1)
            dy = int(rng.integers(max(1, h // 100), max(2, h // 25) + 1)) * (1 if rng.random() < 0.5 else -1)
            img = img.crop((max(0, dx), max(0, dy), w + min(0, dx), h + min(0, dy)))
            data = self.encode(img, "jpeg", int(rng.integers(88, 96)))
            dec = self.decode(data)
            if not self.sharp_enough(dec):
                continue
            ph = self.distinct(dec)
            if ph is None:
                continue
            self.register(ph)
            return _Image("semantic_duplicate", "jpeg", img.size[0], img.size[1], data)
        raise RuntimeError(f"sample crawl: could not re-render {scene} far from every image")  # pragma: no cover

    def text_heavy(self, key: object, fmt: str, title: str, text: str) -> _Image:
        for attempt in range(30):
            rng = self.rng(key, attempt)
            w, h = self._size(rng, 360, 640)
            img = SC.render_poster(title, text, w, h, rng)
            data = self.encode(img, fmt, 92)
            dec = self.decode(data)
            if not self.sharp_enough(dec, min_entropy=4.5):
                continue
            ph = self.distinct(dec)
            if ph is None:
                continue
            self.register(ph)
            return _Image("text_heavy", fmt, w, h, data)
        raise RuntimeError("sample crawl: could not draw a text-heavy image")  # pragma: no cover

    def tiny(self, key: object, fmt: str, scene: SC.Scene) -> _Image:
        rng = self.rng(key)
        w, h = int(rng.integers(16, 65)), int(rng.integers(16, 65))
        return _Image("tiny", fmt, w, h, self.encode(SC.render_scene(scene, w, h, rng), fmt, 90))

    def wide(self, key: object, fmt: str, scene: SC.Scene) -> _Image:
        rng = self.rng(key)
        long_edge, short_edge = int(rng.integers(1000, 1401)), int(rng.integers(160, 241))
        w, h = (long_edge, short_edge) if rng.random() < 0.75 else (short_edge, long_edge)
        return _Image("wide", fmt, w, h, self.encode(SC.render_scene(scene, w, h, rng), fmt, 88))

    def flat(self, key: object, fmt: str) -> _Image:
        rng = self.rng(key)
        w, h = self._size(rng)
        img = self.Image.new("RGB", (w, h), tuple(rng.integers(0, 256, 3).tolist()))
        data = self.encode(img, fmt, 90)
        if _grey(self.decode(data)).std() >= 1.0:  # pragma: no cover - a constant image stays constant
            fmt, data = "png", self.encode(img, "png")
        return _Image("flat", fmt, w, h, data)

    def blurred(self, key: object, fmt: str, scene: SC.Scene) -> _Image:
        for attempt in range(10):
            rng = self.rng(key, attempt)
            w, h = self._size(rng, 400, 600)
            img = SC.render_scene(scene, w, h, rng).filter(self.ImageFilter.GaussianBlur(float(rng.uniform(6, 9))))
            data = self.encode(img, fmt, 90)
            g = _grey(self.decode(data))
            if laplacian_variance(g) <= MAX_BLURRED_LAPLACIAN and g.std() >= 8 and grey_entropy(g) >= 4:
                return _Image("blurred", fmt, w, h, data)
        raise RuntimeError("sample crawl: could not draw a blurred image")  # pragma: no cover

    def near_copy(self, key: object, orig: _Image) -> _Image:
        """The original's pixels resized by 3-6 % and/or re-encoded as JPEG at a lower quality."""
        for attempt in range(12):
            rng = self.rng(key, attempt)
            img = self.Image.fromarray(orig.array)
            if rng.random() < 0.75 and attempt < 8:
                f = float(rng.uniform(0.94, 0.97) if rng.random() < 0.5 else rng.uniform(1.03, 1.06))
                img = img.resize((round(orig.width * f), round(orig.height * f)), self.Image.LANCZOS)
                if attempt % 2:  # resampling softens the finest detail: restore it
                    img = img.filter(self.ImageFilter.UnsharpMask(radius=1, percent=60, threshold=2))
            data = self.encode(img, "jpeg", int(rng.integers(60, 72)))
            if data == orig.data:  # pragma: no cover
                continue
            dec = self.decode(data)
            d = int(np.bitwise_count(np.uint64(phash64(dec)) ^ np.uint64(phash64(self.decode(orig.data)))))
            if d <= 4 and self.sharp_enough(dec):
                return _Image("near_duplicate", "jpeg", img.size[0], img.size[1], data)
        raise RuntimeError("sample crawl: could not make a near-duplicate image")  # pragma: no cover

    def filler(self, key: object, fmt: str) -> _Image:
        """An image for a pair rejected before stage 3: photo-like (with less fine detail: it is never scored), not
        checked, and unrelated to its caption."""
        rng = self.rng(key)
        w, h = self._size(rng, 300, 440)
        return _Image("normal", fmt, w, h, self.encode(self.draw_photo(rng, w, h, detail=0.4), fmt, 82))


# ---------------------------------------------------------------------------------------------------------------------
# The generator.


class _Generator:
    def __init__(self, seed: int, n_pages: int, n_files: int) -> None:
        self.seed = seed
        self.n_pages = n_pages
        self.n_files = n_files
        self.r = random.Random(_h64("sample-crawl", seed))
        self.kit = _TextKit()
        self.captions = _Captions(random.Random(_h64("captions", seed)), self.kit)
        self.images = _Images(seed)
        self.scene_rng = random.Random(_h64("scenes", seed))
        self._scenes: set[SC.Scene] = set()  # every scene drawn or named so far: each is used once
        self.pages: list[_Page] = []
        self.base_date = datetime(2024, 1, 1) + timedelta(days=seed % 600, seconds=_h64("t", seed) % 86_400)
        self._used_hosts: set[str] = set()
        self._children: dict[int, list[_Slot]] = {}  # near-duplicate captions made so far, by id() of their original

    # -- pages ------------------------------------------------------------------------------------------------------
    def _host(self, kind: str, script: str, i: int) -> tuple[str, str]:
        r = self.r
        while True:
            if kind == "ja":
                site = f"{r.choice(V.JA_SITE_WORDS)}{r.choice(['', 'no', '-jp'])}{i}"
                host = f"www.{site}.{r.choice(['jp', 'co.jp', 'ne.jp'])}"
            elif kind == "en":
                site = f"{r.choice(V.EN_SITE_WORDS)}{r.choice(['', 'hub', 'world'])}{i}"
                host = f"www.{site}.{r.choice(['com', 'co.uk', 'org', 'net'])}"
            elif kind == "blacklisted":
                host = r.choice([
                    "image.baidu.com", "tieba.baidu.com", "zhidao.baidu.com", "baike.baidu.com", "www.sogou.com",
                    "pic.sogou.com", "www.so.com", "image.so.com", "m.sm.cn", "cn.bing.com", "www.bing.com",
                ])
                site = host.split(".")[-2]
                return host, site
            else:
                site = f"{r.choice(V.SITE_WORDS_PINYIN)}{i}"
                tld = r.choice(["com.tw", "tw", "com.hk", "hk"]) if script == "traditional" else r.choice(
                    ["com", "cn", "com.cn", "net", "org.cn", "net.cn"])
                host = f"{r.choice(['www', 'www', 'www', 'm', 'news', 'bbs'])}.{site}.{tld}"
            if host not in self._used_hosts and not self.kit.blacklisted(host):
                self._used_hosts.add(host)
                return host, site

    def plan_pages(self) -> None:
        r, n = self.r, self.n_pages
        counts = {k: (round(n * f) if n >= 12 else 0) for k, f in PAGE_FRACTIONS.items()}
        kinds = [k for k, c in counts.items() for _ in range(c)]
        kinds += ["zh"] * (n - len(kinds))
        r.shuffle(kinds)
        if n >= 12 and kinds[0] != "zh":  # start with a Chinese page (a realistic first capture)
            j = kinds.index("zh")
            kinds[0], kinds[j] = kinds[j], kinds[0]
        zh_idx = [i for i, k in enumerate(kinds) if k == "zh"]
        encs = (["gbk"] * round(len(zh_idx) * 0.17) + ["gb2312"] * round(len(zh_idx) * 0.08)
                + ["big5"] * round(len(zh_idx) * 0.14))
        encs += ["utf-8"] * (len(zh_idx) - len(encs))
        r.shuffle(encs)
        enc_of = dict(zip(zh_idx, encs))
        trap_hosts = ["www.also.com", "news.tsm.cn", "www.mybing.com", "img.notbaidu.com"]
        traps = set(r.sample([i for i in zh_idx if enc_of[i] == "utf-8"], min(len(trap_hosts), len(zh_idx) // 20)))
        for i, kind in enumerate(kinds):
            if kind == "zh":
                encoding = enc_of[i]
                script = "traditional" if encoding == "big5" or (encoding == "utf-8" and r.random() < 0.1) else (
                    "simplified")
                header_lang = r.choices(["zho", "zho,eng", None], weights=[70, 22, 8])[0]
                lang = "zho"
            elif kind == "blacklisted":
                encoding, script, lang = r.choice(["utf-8", "utf-8", "gbk"]), "simplified", "zho"
                header_lang = r.choice(["zho", "zho,eng"])
            elif kind == "ja":
                encoding, script, lang = "utf-8", "none", "jpn"
                header_lang = r.choices(["jpn", "jpn,eng"], weights=[80, 20])[0]
            else:
                encoding, script, lang = "utf-8", "none", "eng"
                header_lang = r.choices(["eng", None], weights=[60, 40])[0]
            if encoding == "utf-8":
                charset_mode = r.choices(["header+meta", "meta", "header", "none"], weights=[50, 20, 15, 15])[0]
            else:
                charset_mode = r.choices(["header+meta", "meta", "header"], weights=[40, 40, 20])[0]
            if i in traps:
                host = trap_hosts[len([t for t in traps if t < i])]
                site = host.split(".")[-2]
                self._used_hosts.add(host)
            else:
                host, site = self._host(kind, script, i)
            scheme = r.choices(["https", "http"], weights=[75, 25])[0]
            path = r.choice([
                f"/{r.choice(V.SECTIONS)}/{2023 + i % 3}/{i % 12 + 1:02d}{i * 7 % 28 + 1:02d}/{100000 + i * 37}.html",
                f"/{r.choice(V.SECTIONS)}/{10000 + i}.shtml",
                f"/thread-{200000 + i * 13}-1-1.html",
                f"/{r.choice(V.SECTIONS)}/{r.choice(V.SECTIONS)}/p{i}.htm",
            ])
            url = f"{scheme}://{host}{path}"
            base_href = None
            if kind in ("zh", "blacklisted") and r.random() < 0.1:
                tld, folder = r.choice(["com", "cn", "net"]), r.choice(["cms", "assets", "res"])
                base_href = f"{scheme}://static.{site}.{tld}/{folder}/"
                if self.kit.blacklisted(urlsplit(base_href).hostname or ""):
                    base_href = f"{scheme}://{host}/static/"
            page = _Page(
                index=i, kind=kind, lang=lang, encoding=encoding, script=script,
                trad_variant=("s2tw" if encoding == "big5" or host.endswith("tw") else "s2hk"),
                header_lang=header_lang, charset_mode=charset_mode, scheme=scheme, host=host, site=site, url=url,
                base_href=base_href, file_index=i * self.n_files // n,
                record_id=_record_id(self.seed, f"page{i}/response"),
                n_extra=r.choice([0, 0, 1, 1, 2]), commented_img=r.random() < 0.15,
            )
            n_pairs = r.randint(5, 11)
            if kind in ("ja", "en"):
                page.slots = [_Slot(page, j, R.SOURCE, R.NOT_CHINESE_PAGE) for j in range(n_pairs)]
            elif kind == "blacklisted":
                page.slots = [_Slot(page, j, R.SOURCE, R.BLACKLISTED_DOMAIN) for j in range(n_pairs)]
            else:
                page.slots = [_Slot(page, j, R.KEEP, R.KEEP) for j in range(n_pairs)]
            self.pages.append(page)

    def deal_reasons(self) -> None:
        """Spread the slot-level defects over the Chinese pages; give every copy an earlier kept original."""
        r = self.r
        total = sum(len(p.slots) for p in self.pages)
        zh_slots = [s for p in self.pages if p.kind == "zh" for s in p.slots]
        want = {k: round(f * total) for k, f in SLOT_FRACTIONS.items()}
        if total >= 40:
            want = {k: max(1, v) for k, v in want.items()}
        budget = int(len(zh_slots) * 0.6)
        if sum(want.values()) > budget:
            scale = budget / sum(want.values())
            want = {k: int(v * scale) for k, v in want.items()}
        deck = [k for k, c in want.items() for _ in range(c)]
        deck += [(R.KEEP, R.KEEP)] * (len(zh_slots) - len(deck))
        r.shuffle(deck)
        for s, (stage, reason) in zip(zh_slots, deck):
            s.stage, s.reason = stage, reason
        # Originals: each copy needs a kept pair earlier in WARC order (same script for caption copies; another page
        # for duplicate_pair).
        keeps_before: list[_Slot] = []
        for i, s in enumerate(zh_slots):
            if s.reason in _DUP_REASONS:
                cands = [k for k in keeps_before
                         if (k.role is None or (k.role == s.reason and k.children < _MAX_CHILDREN))
                         and (s.reason not in (R.DUPLICATE_PAIR, R.NEAR_DUPLICATE_CAPTION)
                              or (k.page.script == s.page.script and k.page.encoding == s.page.encoding))
                         and (s.reason != R.DUPLICATE_PAIR or k.page is not s.page)]
                if cands:
                    k = r.choice(cands)
                    k.role, s.orig = s.reason, k
                    k.children += 1
                    continue
                later = next((t for t in zh_slots[i + 1 :] if t.reason == R.KEEP), None)
                if later is not None:
                    later.stage, later.reason = s.stage, s.reason
                s.stage, s.reason = R.KEEP, R.KEEP
            if s.reason == R.KEEP:
                keeps_before.append(s)

    # -- captions ---------------------------------------------------------------------------------------------------
    def write_captions(self) -> None:
        c, r = self.captions, self.r
        for page in self.pages:
            for s in page.slots:
                s.script = page.script
                if page.kind in ("ja", "en"):
                    s.script = "none"
                    if r.random() < 0.15:
                        self._missing(s)
                    elif page.kind == "ja":
                        s.caption, s.caption_kind = c.japanese(), "japanese"
                    else:
                        s.caption, s.caption_kind = c.english(), "english"
                        c.register(s)
                    continue
                if page.kind == "blacklisted":
                    x = r.random()
                    if x < 0.1:
                        self._missing(s)
                    elif x < 0.2:
                        s.caption, s.caption_kind = c.short(page), "short"
                    else:
                        s.caption, s.caption_kind = c.valid(page), "plain"
                        c.register(s)
                    continue
                self._zh_caption(s)

    def _missing(self, s: _Slot) -> None:
        s.caption, s.script = "", "none"
        s.alt_mode = self.r.choice(["absent", "absent", "empty", "blank"])
        s.caption_kind = {"absent": "missing_alt", "empty": "empty_alt", "blank": "blank_alt"}[s.alt_mode]

    def _zh_caption(self, s: _Slot) -> None:
        c, r, page, reason = self.captions, self.r, s.page, s.reason
        register = True
        if reason == R.CAPTION_MISSING:
            self._missing(s)
            return
        if reason == R.CAPTION_TOO_SHORT:
            s.caption, s.caption_kind = c.short(page), "short"
            register = False
        elif reason == R.CAPTION_TOO_LONG:
            s.caption, s.caption_kind = c.long(page), "long"
        elif reason == R.UNSAFE_TEXT:
            s.caption, s.caption_kind = c.with_term(page, self.kit.unsafe, ()), "unsafe_term"
        elif reason == R.DUPLICATE_PAIR:
            assert s.orig is not None
            s.caption, s.caption_kind = c.pair_variant(s.orig)
            s.scene, s.caption_scene = s.orig.scene, s.orig.caption_scene
            register = False
        elif reason == R.NOT_CHINESE_CAPTION:
            s.caption, s.caption_kind, s.script = c.english(), "english", "none"
        elif reason == R.NO_NOUN:
            s.caption, s.caption_kind = c.no_noun(page), "no_noun"
        elif reason == R.TOO_MANY_UNK:
            s.caption, s.caption_kind = c.rare(page), "rare_chars"
        elif reason == R.LOW_INFORMATION:
            s.caption, s.caption_kind = c.low_info(page), "low_information"
            register = False
        elif reason == R.SENSITIVE_TEXT:
            s.caption, s.caption_kind = c.with_term(page, self.kit.sensitive, self.kit.unsafe), "sensitive_term"
        elif reason == R.NEAR_DUPLICATE_CAPTION:
            assert s.orig is not None
            siblings = list(self._children.get(id(s.orig), []))
            s.caption, s.caption_kind = c.near_variant(s.orig, siblings), "near_copy"
            self._children.setdefault(id(s.orig), []).append(s)
        elif reason == R.HIGH_SIMILARITY:  # a poster printing the words of a caption about a scene
            self._scene_caption(s, decorate="poster", image=False)
        elif s.role == R.NEAR_DUPLICATE_CAPTION:
            tail = r.choice(V.SERIES_TAILS).format(r.randint(1, 9))
            self._scene_caption(s, kind="series", tail=tail, min_chars=56)
        elif s.role == R.DUPLICATE_PAIR:
            deco = r.choice(["latin", "latin", "plain"])
            self._scene_caption(s, decorate=deco, sep=" " if r.random() < 0.4 else "，")
        elif reason in (R.DUPLICATE_IMAGE, R.NEAR_DUPLICATE_IMAGE, R.SEMANTIC_DUPLICATE):
            assert s.orig is not None and s.orig.scene is not None
            self._scene_caption(s, decorate=self._decoration(), scene=s.orig.scene)
        elif reason == R.LOW_SIMILARITY:  # the image shows one scene, the caption names another
            s.scene = self._new_scene()
            self._scene_caption(s, decorate=self._decoration(), image=False, unlike=s.scene)
        else:  # keep, and the image defects (the image of flat_image and dns_error pairs shows no scene)
            self._scene_caption(s, decorate=self._decoration(), image=reason not in (R.FLAT_IMAGE, R.DNS_ERROR))
        if register:
            c.register(s)

    def _decoration(self) -> str:
        return self.r.choices(["plain", "emoji", "ad_suffix", "entity", "latin"], weights=[66, 9, 12, 5, 8])[0]

    def _new_scene(self, unlike: SC.Scene | None = None) -> SC.Scene:
        """A scene not used before in this crawl; with `unlike`, one sharing neither a thing nor the background."""
        while True:
            scene = SC.sample_scene(self.scene_rng)
            if scene in self._scenes:
                continue
            if unlike is not None and (scene.background == unlike.background or set(scene.things) & set(unlike.things)):
                continue
            self._scenes.add(scene)
            return scene

    def _scene_caption(self, s: _Slot, *, decorate: str = "plain", kind: str | None = None, image: bool = True,
                       scene: SC.Scene | None = None, unlike: SC.Scene | None = None, **kw: Any) -> None:
        """Give `s` a caption naming `scene` (default: a new one, unlike `unlike`) and, with `image`, that scene as
        what its image shows. A scene no phrasing fits (rare) is replaced by another one, except a given scene."""
        for _ in range(50):
            named = scene or self._new_scene(unlike)
            title = SC.poster_title(named, self.r) if decorate == "poster" else ""
            caption = self.captions.scene_caption(s.page, named, decorate=decorate, title=title, **kw)
            if caption is not None:
                s.caption, s.caption_kind, s.caption_scene, s.title = caption, kind or decorate, named, title
                if image:
                    s.scene = named
                return
        raise RuntimeError("sample crawl: could not caption a scene")  # pragma: no cover

    # -- images and URLs --------------------------------------------------------------------------------------------
    def _fmt(self, weights: tuple[int, int, int] = (85, 12, 3)) -> str:
        return self.r.choices(["jpeg", "webp", "png"], weights=weights)[0]

    def make_images(self) -> None:
        im, r = self.images, self.r
        for page in self.pages:
            for s in page.slots:
                key = (page.index, s.pos)
                reason = s.reason
                if reason == R.DUPLICATE_PAIR:
                    assert s.orig is not None
                    s.image, s.image_kind, s.captured = s.orig.image, s.orig.image_kind, s.orig.captured
                    continue
                if reason == R.DNS_ERROR:
                    s.image_kind, s.captured = "uncaptured", False
                    continue
                s.captured = True
                if reason == R.KEEP or reason == R.LOW_SIMILARITY:
                    assert s.scene is not None
                    keep_array = s.role == R.NEAR_DUPLICATE_IMAGE
                    fmt = self._fmt((88, 12, 0)) if keep_array else self._fmt()
                    s.image = im.scene(key, s.scene, fmt, keep_array=keep_array,
                                       kind="mismatch" if reason == R.LOW_SIMILARITY else "normal")
                elif reason == R.TOO_SMALL:
                    assert s.scene is not None
                    s.image = im.tiny(key, self._fmt((50, 20, 30)), s.scene)
                elif reason == R.EXTREME_ASPECT:
                    assert s.scene is not None
                    s.image = im.wide(key, self._fmt((75, 20, 5)), s.scene)
                elif reason == R.FLAT_IMAGE:
                    s.image = im.flat(key, self._fmt((50, 10, 40)))
                elif reason == R.BLURRY_IMAGE:
                    assert s.scene is not None
                    s.image = im.blurred(key, self._fmt((85, 15, 0)), s.scene)
                elif reason == R.DUPLICATE_IMAGE:
                    assert s.orig is not None and s.orig.image is not None
                    o = s.orig.image
                    s.image = _Image("exact_duplicate", o.fmt, o.width, o.height, o.data)
                elif reason == R.NEAR_DUPLICATE_IMAGE:
                    assert s.orig is not None and s.orig.image is not None
                    s.image = im.near_copy(key, s.orig.image)
                elif reason == R.SEMANTIC_DUPLICATE:
                    assert s.orig is not None and s.orig.image is not None and s.scene is not None
                    s.image = im.semantic_copy(key, s.orig.image, s.scene)
                elif reason == R.HIGH_SIMILARITY:
                    s.image = im.text_heavy(key, self._fmt((75, 10, 15)), s.title, s.caption)
                elif r.random() < 0.3:  # rejected before stage 3: Common Crawl did not capture every image
                    s.image_kind, s.captured = "uncaptured", False
                    continue
                else:
                    s.image = im.filler(key, self._fmt((85, 15, 0)))
                s.image_kind = s.image.kind

    _EXT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}

    def assign_urls(self) -> None:
        r = self.r
        for page in self.pages:
            for s in page.slots:
                if s.reason == R.DUPLICATE_PAIR:
                    assert s.orig is not None
                    s.image_url = s.orig.image_url
                    forms = ["src", "srcset", "data-src"]
                    if urlsplit(s.image_url).scheme == page.scheme:
                        forms.append("protocol-relative")
                    s.url_form = r.choice(forms)
                    continue
                token = hashlib.blake2b(f"{self.seed}|{page.index}|{s.pos}".encode(), digest_size=6).hexdigest()
                fmt = s.image.fmt if s.image is not None else "jpeg"
                ext = self._EXT[fmt] if r.random() < 0.9 or fmt != "jpeg" else ".jpeg"
                if s.reason == R.DNS_ERROR:
                    form = r.choice(["src", "src", "protocol-relative", "srcset", "data-src"])
                    host = f"img.{page.site}-cdn.invalid" if r.random() < 0.5 else f"pic{s.pos}.{page.site}.invalid"
                else:
                    form = r.choices(["src", "srcset", "data-src", "relative", "protocol-relative"],
                                     weights=[30, 14, 14, 28, 14])[0]
                    host = r.choice([f"img.{page.site}cdn.com", f"pic{page.index % 5 + 1}.{page.site}.com",
                                     f"static.{page.site}img.cn", f"img{page.index % 3}.{page.site}.net"])
                year, month = 2023 + page.index % 3, page.index % 12 + 1
                dirs = r.choice(["uploads", "images", "upload/image", "attachment", "d/file", "pic"])
                path = f"/{dirs}/{year}/{month:02d}/{token}{ext}"
                if r.random() < 0.06:
                    path = f"/img.php?id={token}&w=640&fmt={fmt}"
                if form == "relative":
                    if page.base_href:
                        form = "base-href"
                    rel = r.choice([path, path.lstrip("/"), "./" + path.lstrip("/"), "../" + path.lstrip("/")])
                    s.image_url = urljoin(page.base_href or page.url, rel)
                    s.rel_src = rel
                else:
                    scheme = page.scheme if form == "protocol-relative" else r.choice(["https", "https", "http"])
                    s.image_url = f"{scheme}://{host}{path}"
                s.url_form = form

    # -- HTML -------------------------------------------------------------------------------------------------------
    def _attr(self, name: str, value: str, quote: str) -> str:
        return f"{name}={quote}{html.escape(value, quote=True)}{quote}"

    def _img_html(self, s: _Slot) -> str:
        r, page = self.r, s.page
        quote = "'" if r.random() < 0.08 else '"'
        attrs: list[str] = []
        url, form = s.image_url, s.url_form
        if form in ("relative", "base-href"):
            attrs.append(self._attr("src", s.rel_src, quote))
        elif form == "protocol-relative":
            attrs.append(self._attr("src", "//" + url.split("://", 1)[1], quote))
        elif form == "src":
            attrs.append(self._attr("src", url, quote))
        elif form == "data-src":
            attrs.append(self._attr("src", _PLACEHOLDER_GIF, quote))
            value = url
            if r.random() < 0.3 and urlsplit(url).scheme == page.scheme:
                value = "//" + url.split("://", 1)[1]
            attrs.append(self._attr("data-src", value, quote))
            attrs.append('class="lazyload"')
        elif form == "srcset":
            widths = sorted(r.sample([240, 320, 480, 640, 800, 960, 1200, 1600], r.randint(2, 4)))
            stem, _, ext = url.rpartition(".")
            if "?" in url:
                small = [f"{url}&size={w}" for w in widths[:-1]]
            else:
                small = [f"{stem}_{w}w.{ext}" for w in widths[:-1]]
            cands = [f"{u} {w}w" for u, w in zip(small, widths[:-1])] + [f"{url} {widths[-1]}w"]
            r.shuffle(cands)
            if r.random() < 0.6:  # the lazy-loading pattern: a data: placeholder in src, the real image in srcset
                attrs.append(self._attr("src", _PLACEHOLDER_GIF, quote))
            attrs.append(self._attr("srcset", ", ".join(cands), quote))
            attrs.append(self._attr("sizes", "(max-width: 640px) 100vw, 640px", quote))
        if s.alt_mode == "value":
            attrs.append(self._attr("alt", s.caption, quote))
        elif s.alt_mode == "empty":
            attrs.append('alt=""')
        elif s.alt_mode == "blank":
            attrs.append('alt="   "')
        if s.image is not None and r.random() < 0.5:
            attrs += [f'width="{s.image.width}"', f'height="{s.image.height}"']
        if s.alt_mode == "value" and r.random() < 0.1:
            attrs.append(self._attr("title", r.choice(["点击查看大图", "查看原图", "图片来源网络", "放大"]), quote))
        if r.random() < 0.3:
            attrs.append('loading="lazy"')
        if r.random() < 0.5:
            r.shuffle(attrs)
        tag = "IMG" if r.random() < 0.03 else "img"
        img = f"<{tag} {' '.join(attrs)}>"
        x = r.random()
        if s.alt_mode == "value" and x < 0.1:
            cap = html.escape(self.captions._clause() if page.lang == "zho" else "Photo")
            return f'<figure class="pic">{img}<figcaption>{cap}</figcaption></figure>'
        if x < 0.2:
            return f'<p><a href="{html.escape(url)}" target="_blank">{img}</a></p>'
        return f'<div class="pic">{img}</div>' if x < 0.6 else f"<p>{img}</p>"

    def _extra_img(self) -> str:
        r = self.r
        return r.choice([
            f'<img src="{_PLACEHOLDER_GIF}" alt="logo" class="icon">',
            f'<img src="{_PLACEHOLDER_PNG}" alt="占位图">',
            '<img src="javascript:void(0)" alt="广告">',
            '<img alt="加载中" class="lazy-missing">',
            '<img class="spacer" width="1" height="1">',
        ])

    def _paragraph(self, page: _Page) -> str:
        r = self.r
        if page.lang == "jpn":
            text = "。".join(self.captions.japanese() for _ in range(r.randint(3, 6))) + "。"
        elif page.lang == "eng":
            text = ". ".join(self.captions.english() for _ in range(r.randint(2, 4))) + "."
        else:
            text = "。".join("，".join(self.captions._clause() for _ in range(r.randint(2, 4)))
                            for _ in range(r.randint(3, 5))) + "。"
            if page.script == "traditional":
                text = self.kit.to_traditional(text, page.trad_variant)
        return f"<p>{html.escape(text, quote=False)}</p>"

    def page_html(self, page: _Page) -> str:
        r = self.r
        items: list[tuple[str, _Slot | None]] = [("pair", s) for s in page.slots]
        for _ in range(page.n_extra):
            items.insert(r.randint(0, len(items)), ("extra", None))
        body: list[str] = []
        idx = 0
        for kind, s in items:
            if r.random() < 0.5:
                body.append(self._paragraph(page))
            if s is not None:
                s.img_index = idx
                body.append(self._img_html(s))
            else:
                body.append(self._extra_img())
            idx += 1
        body.append(self._paragraph(page))
        if page.commented_img:
            body.insert(r.randint(0, len(body)), '<!-- <img src="/static/old/banner.jpg" alt="旧版横幅图片"> -->')
        label = {"utf-8": "utf-8", "gbk": "gbk", "gb2312": "gb2312", "big5": "big5"}[page.encoding]
        label = label.upper() if r.random() < 0.4 else label
        meta = ""
        if "meta" in page.charset_mode:
            meta = (f'<meta charset="{label}">' if r.random() < 0.6
                    else f'<meta http-equiv="Content-Type" content="text/html; charset={label}">')
        lang_attr = {"zho": "zh-CN" if page.script != "traditional" else "zh-TW", "jpn": "ja", "eng": "en"}[page.lang]
        if page.lang == "zho":
            title = self.captions._clause()
            if page.script == "traditional":
                title = self.kit.to_traditional(title, page.trad_variant)
            nav = "首页 | 图片 | 资讯 | 生活" if page.script != "traditional" else "首頁 | 圖片 | 資訊 | 生活"
        elif page.lang == "jpn":
            title, nav = self.captions.japanese(), "ホーム | しゃしん | おしらせ"
        else:
            title, nav = self.captions.english(), "Home | Photos | News"
        base = f'<base href="{html.escape(page.base_href)}">' if page.base_href else ""
        head = "\n".join(x for x in (meta, f"<title>{html.escape(title)}</title>", base,
                                     '<meta name="viewport" content="width=device-width, initial-scale=1">',
                                     '<link rel="stylesheet" href="/static/css/main.css">') if x)
        return (
            f'<!DOCTYPE html>\n<html lang="{lang_attr}">\n<head>\n{head}\n</head>\n<body>\n'
            f'<div class="nav">{html.escape(nav)}</div>\n<div class="content">\n<h1>{html.escape(title)}</h1>\n'
            + "\n".join(body)
            + f'\n</div>\n<div class="footer">&copy; {2023 + page.index % 3} {html.escape(page.host)}</div>\n'
            "</body>\n</html>\n"
        )

    # -- WARC -------------------------------------------------------------------------------------------------------
    def _date(self, page: _Page, offset: int) -> datetime:
        return self.base_date + timedelta(seconds=page.index * 11 + offset)

    @staticmethod
    def _ip(host: str) -> str:
        h = _h64("ip", host)
        return f"{(h >> 24) % 200 + 20}.{(h >> 16) % 256}.{(h >> 8) % 256}.{h % 254 + 1}"

    def write(self, out_dir: Path) -> tuple[list[Path], int]:
        from warcio.statusandheaders import StatusAndHeaders
        from warcio.warcwriter import WARCWriter

        paths: list[Path] = []
        captured: set[str] = set()
        n_images = 0
        by_file: dict[int, list[_Page]] = defaultdict(list)
        for p in self.pages:
            by_file[p.file_index].append(p)
        for fi in range(self.n_files):
            name = f"{WARC_PREFIX}-s{self.seed}-{fi:05d}.warc.gz"
            path = out_dir / name
            tmp = out_dir / f".{name}.tmp"
            pages = by_file.get(fi, [])
            with open(tmp, "wb") as fh:
                writer = WARCWriter(fh, gzip=True)
                info_id = _record_id(self.seed, f"file{fi}/warcinfo")
                d0 = self._date(pages[0], -1) if pages else self.base_date
                info = (
                    f"isPartOf: {WARC_PREFIX}\r\npublisher: danqing-assets sample crawl (synthetic)\r\n"
                    f"description: Deterministic sample crawl, seed {self.seed}, file {fi + 1} of {self.n_files}\r\n"
                    "operator: danqing-assets\r\nsoftware: danqing_sample.crawl\r\n"
                    "format: WARC File Format 1.0\r\nrobots: checked via crawler-commons\r\n"
                ).encode()
                wh = StatusAndHeaders("", [("WARC-Type", "warcinfo"), ("WARC-Record-ID", info_id),
                                           ("WARC-Filename", name), ("WARC-Date", _iso(d0))], protocol="WARC/1.0")
                writer.write_record(writer.create_warc_record("", "warcinfo", payload=io.BytesIO(info),
                                                              length=len(info), warc_headers=wh))
                for page in pages:
                    self._write_page(writer, page, info_id, StatusAndHeaders)
                    offset = 5
                    for s in page.slots:
                        if not s.captured or s.image is None or s.image_url in captured:
                            continue
                        captured.add(s.image_url)
                        self._write_image(writer, page, s, info_id, offset, StatusAndHeaders)
                        n_images += 1
                        offset += 1
            os.replace(tmp, path)
            paths.append(path)
        return paths, n_images

    def _request(self, writer: Any, url: str, when: datetime, rid: str, info_id: str, accept: str,
                 SH: Any, referer: str | None = None) -> None:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = [("Host", parts.netloc), ("User-Agent", "CCBot/2.0 (https://commoncrawl.org/faq/)"),
                   ("Accept", accept), ("Accept-Language", "en-US,en;q=0.5"), ("Accept-Encoding", "br,gzip"),
                   ("Connection", "Keep-Alive")]
        if referer:
            headers.append(("Referer", referer))
        rec = writer.create_warc_record(url, "request", payload=io.BytesIO(b""), length=0,
                                        http_headers=SH(f"GET {target or '/'} HTTP/1.1", headers, is_http_request=True),
                                        warc_headers_dict={"WARC-Record-ID": rid, "WARC-Date": _iso(when),
                                                           "WARC-Warcinfo-ID": info_id,
                                                           "WARC-IP-Address": self._ip(parts.hostname or "")})
        writer.write_record(rec)

    def _write_page(self, writer: Any, page: _Page, info_id: str, SH: Any) -> None:
        when = self._date(page, 0)
        body = self.page_html(page).encode(page.encoding, errors="xmlcharrefreplace")
        req_id = _record_id(self.seed, f"page{page.index}/request")
        self._request(writer, page.url, when, req_id, info_id,
                      "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", SH)
        label = {"utf-8": "UTF-8", "gbk": "GBK", "gb2312": "GB2312", "big5": "Big5"}[page.encoding]
        ctype = f"text/html; charset={label}" if "header" in page.charset_mode else "text/html"
        http = SH("200 OK", [("Date", _http_date(when)), ("Server", self.r.choice(["nginx", "Apache", "Tengine"])),
                             ("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")],
                  protocol="HTTP/1.1")
        warc = {"WARC-Record-ID": page.record_id, "WARC-Date": _iso(when), "WARC-Warcinfo-ID": info_id,
                "WARC-Concurrent-To": req_id, "WARC-IP-Address": self._ip(page.host),
                "WARC-Identified-Payload-Type": "text/html"}
        if page.header_lang:
            warc["WARC-Identified-Content-Language"] = page.header_lang
        writer.write_record(writer.create_warc_record(page.url, "response", payload=io.BytesIO(body),
                                                      length=len(body), http_headers=http, warc_headers_dict=warc))
        detected = {"utf-8": "UTF-8", "gbk": "GB18030", "gb2312": "GB18030", "big5": "Big5"}[page.encoding]
        fields = f"fetchTimeMs: {50 + _h64('fetch', page.index) % 900}\r\ncharset-detected: {detected}\r\n"
        if page.header_lang:
            langs = [{"code": c[:2], "code-iso-639-3": c, "text-covered": 0.9 if k == 0 else 0.05}
                     for k, c in enumerate(page.header_lang.split(","))]
            fields += "languages-cld2: " + json.dumps({"reliable": True, "text-bytes": len(body),
                                                         "languages": langs}, separators=(",", ":")) + "\r\n"
        meta = fields.encode()
        writer.write_record(writer.create_warc_record(
            page.url, "metadata", payload=io.BytesIO(meta), length=len(meta),
            warc_content_type="application/warc-fields",
            warc_headers_dict={"WARC-Record-ID": _record_id(self.seed, f"page{page.index}/metadata"),
                               "WARC-Date": _iso(when), "WARC-Warcinfo-ID": info_id,
                               "WARC-Concurrent-To": page.record_id}))

    def _write_image(self, writer: Any, page: _Page, s: _Slot, info_id: str, offset: int, SH: Any) -> None:
        assert s.image is not None
        when = self._date(page, offset)
        key = f"image/{s.image_url}"
        req_id = _record_id(self.seed, key + "/request")
        self._request(writer, s.image_url, when, req_id, info_id, "image/avif,image/webp,image/*,*/*;q=0.8", SH,
                      referer=page.url)
        data = s.image.data
        http = SH("200 OK", [("Date", _http_date(when)), ("Server", "nginx"), ("Content-Type", s.image.mime),
                             ("Content-Length", str(len(data))), ("Cache-Control", "max-age=2592000"),
                             ("Connection", "close")], protocol="HTTP/1.1")
        warc = {"WARC-Record-ID": _record_id(self.seed, key + "/response"), "WARC-Date": _iso(when),
                "WARC-Warcinfo-ID": info_id, "WARC-Concurrent-To": req_id,
                "WARC-IP-Address": self._ip(urlsplit(s.image_url).hostname or ""),
                "WARC-Identified-Payload-Type": s.image.mime}
        writer.write_record(writer.create_warc_record(s.image_url, "response", payload=io.BytesIO(data),
                                                      length=len(data), http_headers=http, warc_headers_dict=warc))

    # -- truth ------------------------------------------------------------------------------------------------------
    def truth_rows(self, warc_names: list[str]) -> list[dict[str, Any]]:
        rows = []
        for page in self.pages:
            for s in sorted(page.slots, key=lambda x: x.img_index):
                img = s.image if s.captured else None
                rows.append({
                    "pair_id": pair_id(page.record_id, s.img_index),
                    "page_url": page.url,
                    "image_url": s.image_url,
                    "caption": s.caption,
                    "page_language": page.lang,
                    "encoding": page.encoding,
                    "script": s.script,
                    "url_form": s.url_form,
                    "image_kind": s.image_kind,
                    "captured": s.captured,
                    "expected_stage": s.stage,
                    "expected_reason": s.reason,
                    "warc_file": warc_names[page.file_index],
                    "warc_record_id": page.record_id,
                    "img_index": s.img_index,
                    "language_header": page.header_lang,
                    "charset_declared": page.charset_mode,
                    "caption_kind": s.caption_kind,
                    "image_format": img.fmt if img else None,
                    "image_width": img.width if img else None,
                    "image_height": img.height if img else None,
                    "image_sha256": sha256_hex(img.data) if img else None,
                    "duplicate_of": (pair_id(s.orig.page.record_id, s.orig.img_index)
                                     if s.orig is not None else None),
                    "scene": str(s.scene) if s.scene is not None and img is not None else None,
                    "caption_scene": str(s.caption_scene) if s.caption_scene is not None else None,
                })
        return rows

    def run(self, out_dir: Path) -> tuple[list[Path], list[dict[str, Any]], int]:
        self.plan_pages()
        self.deal_reasons()
        self.write_captions()
        self.make_images()
        self.assign_urls()
        paths, n_images = self.write(out_dir)  # builds the HTML (img_index) while writing
        return paths, self.truth_rows([p.name for p in paths]), n_images


_PLACEHOLDER_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
_PLACEHOLDER_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)


def _iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_date(d: datetime) -> str:
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return f"{days[d.weekday()]}, {d.day:02d} {months[d.month - 1]} {d.year} {d:%H:%M:%S} GMT"


def _truth_frame(rows: list[dict[str, Any]]) -> Any:
    import polars as pl

    types = {"str": pl.String, "str?": pl.String, "bool": pl.Boolean, "int": pl.Int64, "int?": pl.Int64}
    schema = {k: types[v] for k, v in _TRUTH_SCHEMA.items()}
    return pl.DataFrame(rows, schema=schema)


def write_sample_crawl(
    out_dir: str | Path,
    *,
    pages: int = DEFAULT_PAGES,
    seed: int = 0,
    files: int = DEFAULT_FILES,
) -> SampleCrawlSummary:
    """Write a deterministic sample crawl (WARC files + truth.parquet) into `out_dir` and describe it.

    `pages` Chinese, Japanese and English pages (about 8 image-text pairs each) are spread in order over `files` WARC
    files. Earlier sample-crawl files (`CC-MAIN-SAMPLE-*.warc.gz`, truth.parquet) in `out_dir` are replaced; other
    files are left alone. The same `seed` gives byte-identical output.
    """
    if pages < 1:
        raise ValueError(f"pages must be >= 1, got {pages}")
    if files < 1 or files > pages:
        raise ValueError(f"files must be between 1 and pages ({pages}), got {files}")
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{WARC_PREFIX}-*.warc.gz"):
        old.unlink()
    gen = _Generator(seed, pages, files)
    paths, rows, n_images = gen.run(out)
    frame = _truth_frame(rows)
    truth_path = out / TRUTH_FILE
    tmp = out / f".{TRUTH_FILE}.tmp"
    frame.write_parquet(tmp, statistics=False)
    os.replace(tmp, truth_path)
    counts = Counter((r["expected_stage"], r["expected_reason"]) for r in rows)
    return SampleCrawlSummary(
        warc_files=[str(p) for p in paths],
        pairs=len(rows),
        pages=pages,
        truth_path=str(truth_path),
        seconds=time.perf_counter() - t0,
        images=n_images,
        counts=dict(sorted(counts.items())),
    )
