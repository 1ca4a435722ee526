"""Caption text scores for stage 1 (source selection) and stage 2 (text refinement).

This module computes scores; it decides nothing. The thresholds (5-60 words, at least one noun, at most 5 `[UNK]`,
minimum entropy, sensitive hits) are applied afterwards in SQL, so they can be re-tuned without re-scoring.

Stage 1 helpers: `normalize_caption` (key for exact dedup), `count_words` / `count_words_many` (jieba words),
`han_share`, `detect_language`.
Stage 2: `score_captions` returns one row of scores per caption (see its docstring for every column).

Every public function accepts bad input (None, empty, control characters, lone surrogates, 100 KB strings) and returns
scores that the default thresholds reject, instead of raising. Heavy dependencies (jieba, OpenCC, lingua, polars) are
imported lazily on first use, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import math
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

# ---------------------------------------------------------------------------------------------------------------------
# Recommended thresholds (the decisions themselves are made in SQL; these are the documented defaults).

DEFAULT_MIN_ENTROPY: float = 0.5
"""Recommended minimum of the `entropy` score of `score_captions` (keep entropy >= this).

The paper keeps captions with "text entropy H >= 6e-4" and ties the filter to emoji and special characters, without
defining H. Our H lies in [0, 1] (see `caption_entropy`): normalised character entropy of the cleaned caption times the
share of its characters that survive emoji / symbol / repeated-punctuation removal. On that scale 6e-4 would only drop
empty or one-character captions, so the paper's number cannot be transferred. Measured (see the tests): normal Chinese
captions of 8-40 words score 0.85-1.0, a few emoji included, and down to 0.65 when a real sentence repeats itself
("我爱我家，我爱我的家人，我爱我的祖国" 0.65, "好好好，这家餐厅的菜真的很好吃，服务也好，下次还来！！！" 0.79); a
repeated word scores 0.28-0.39 ("好看好看好看"), a repeated character 0, and emoji / symbol spam 0-0.24 because most
of its characters are removed. 0.5 sits in the middle of that gap.
"""

DEFAULT_MAX_UNK: int = 5
"""The paper's limit on `[UNK]` tokens under a Chinese BERT vocabulary (keep unk_count <= this)."""

# ---------------------------------------------------------------------------------------------------------------------
# Character classes.

# Han ideographs (Unicode "Han" script letters): iteration marks, CJK Unified Ideographs and extensions A-H,
# compatibility ideographs.
_HAN_CLASS = (
    "\u3005\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0002fa1f\U00030000-\U000323af"
)
_HAN_RE = re.compile(f"[{_HAN_CLASS}]")
_HAN_RUN_RE = re.compile(f"[{_HAN_CLASS}]+")
_HAN_WORD_RE = re.compile(f"[{_HAN_CLASS}]{{2,}}")
# Japanese kana (the katakana middle dot U+30FB is excluded: Chinese text uses it in transliterated names).
_KANA_RE = re.compile("[\u3041-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HANGUL_RE = re.compile("[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_NON_OTHER_SCRIPT_RE = re.compile(
    f"[{_HAN_CLASS}\u3041-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d"
    "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+"
)
_LETTER_RUN_RE = re.compile(r"[^\W\d_]+")
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


# ---------------------------------------------------------------------------------------------------------------------
# Input sanitation and lazy singletons.


def _as_text(x: Any) -> str:
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
    text = _as_text(text)
    if not text or text.isascii():
        return text
    return _opencc_t2s().convert(text)


@functools.cache
def _jieba() -> Any:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@functools.cache
def _word_tag_tab() -> dict[str, str]:
    """jieba's POS tag per dictionary word (`jieba.posseg` reads them from dict.txt once)."""
    _jieba()
    import jieba.posseg

    return jieba.posseg.dt.word_tag_tab


@functools.cache
def _control_runs() -> tuple[_CharRuns, _CharRuns]:
    tables = _unicode_tables()
    fmt = set(tables["format"])
    return _CharRuns(fmt), _CharRuns(cp for cp in tables["control"] if cp not in fmt)


def _strip_controls(text: str) -> str:
    """Format characters (zero-width space, BOM, direction marks) removed, other control characters -> space."""
    fmt, ctl = _control_runs()
    astral = _has_astral(text)
    text = _sub(fmt.full if astral else fmt.bmp, "", text)
    return _sub(ctl.full if astral else ctl.bmp, " ", text)


def _fold_nfkc_t2s(text: str) -> str:
    """Sanitise, control characters -> space / removed, NFKC, Traditional -> Simplified."""
    text = _as_text(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", _strip_controls(text))
        return _opencc_t2s().convert(text)
    if not text.isprintable():
        text = _strip_controls(text)
    return text


# ---------------------------------------------------------------------------------------------------------------------
# Stage 1 helpers.


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


def _count_wordlike(tokens: Iterable[str]) -> int:
    search = _WORDLIKE_RE.search
    return sum(1 for t in tokens if search(t))


def count_words(s: str | None) -> int:
    """Number of jieba words in a caption: the paper's 5-60 word filter counts these.

    The caption is sanitised, NFKC-normalised and converted Traditional -> Simplified (jieba's dictionary is
    Simplified; Traditional text would split into single characters), then cut by `jieba.lcut` (accurate mode, HMM on,
    so unknown names are kept whole). A token counts when it contains at least one letter, digit or Han character:
    whitespace, punctuation and emoji tokens do not count. Empty / None -> 0.
    """
    text = _fold_nfkc_t2s(s)
    if not text.strip():
        return 0
    return _count_wordlike(_jieba().lcut(text))


def count_words_many(texts: Sequence[str | None]) -> list[int]:
    """`count_words` for many captions; each distinct string is segmented once."""
    cache: dict[Any, int] = {}
    out: list[int] = []
    for t in texts:
        key = t if isinstance(t, str) else _as_text(t)
        n = cache.get(key)
        if n is None:
            n = cache[key] = count_words(key)
        out.append(n)
    return out


def han_share(s: str | None) -> float:
    """Share of Han characters among letter-like characters, in [0, 1].

    Letter-like = alphabetic characters (Unicode categories L*: Latin, Cyrillic, kana, Hangul, Han ...) plus the few
    Han-script numerals that are not alphabetic (〇). Digits, punctuation, symbols, emoji and whitespace are ignored, so
    "2024年新款！" is 1.0 and "iPhone 手机壳" is 3 / 9. No letter-like character at all -> 0.0.
    """
    return _han_share(*_script_counts(_as_text(s)))


def _script_counts(text: str) -> tuple[int, int]:
    """(Han characters, letter-like characters) of a text."""
    if not text or text.isascii():
        return 0, sum(map(str.isalpha, text))
    han = sum(map(len, _HAN_RUN_RE.findall(text)))
    letters = sum(map(str.isalpha, text))
    if han:
        letters += len(_han_not_alpha_re().findall(text))  # 〇 and friends count as letter-like too
    return han, letters


@functools.cache
def _han_not_alpha_re() -> re.Pattern[str]:
    """Han-class code points that are not alphabetic (Han numerals such as 〇, unassigned code points)."""
    cps = [cp for a, b in _class_ranges(_HAN_RE) for cp in range(a, b + 1) if not chr(cp).isalpha()]
    return _CharRuns(cps, single=True).full


def _han_share(han: int, letters: int) -> float:
    return min(1.0, han / letters) if han and letters else 0.0


# Languages the detector chooses from: the scripts and languages actually met on Chinese-labelled pages. A small set
# keeps lingua fast and accurate; anything else is forced to its closest member or "und".
_LINGUA_LANGUAGES = (
    "CHINESE", "JAPANESE", "KOREAN", "ENGLISH", "FRENCH", "GERMAN", "SPANISH", "PORTUGUESE", "ITALIAN", "RUSSIAN",
    "VIETNAMESE", "THAI",
)  # fmt: skip


_LINGUA_MAX_CHARS = 2000  # plenty for language ID; lingua takes seconds on a 100 KB caption


@functools.cache
def _lingua_detector() -> Any:
    from lingua import Language, LanguageDetectorBuilder

    langs = [getattr(Language, name) for name in _LINGUA_LANGUAGES]
    return LanguageDetectorBuilder.from_languages(*langs).build()


def detect_language(text: str | None) -> str:
    """ISO-639-3 code of the caption's language (`zho`, `jpn`, `kor`, `eng`, `fra`, ... or `und`), offline.

    Script rules first, lingua (restricted to `_LINGUA_LANGUAGES`) only for what they leave open:
    - no letter at all -> `und`;
    - Han share (see `han_share`) >= 0.5 and no kana -> `zho` (the fast path for almost all captions);
    - kana >= 20 % of Han + kana characters -> `jpn` (Chinese text borrows at most a stray "の");
    - counting units (a Han, kana or Hangul character is one unit, a run of other letters - an English word - is one):
      Hangul >= 50 % of units -> `kor`; Han >= 1/3 of units and no kana -> `zho`, so product captions such as
      "Nike Air Max 90 男鞋" stay Chinese;
    - fewer than 3 letters left -> `und`; otherwise lingua decides on the first 2,000 characters; no answer -> `und`.
    """
    t = _as_text(text)
    return _detect_language(t, *_script_counts(t))


def _detect_language(t: str, han: int, letters: int) -> str:
    if not letters and not han:
        return "und"
    kana = len(_KANA_RE.findall(t))
    if not kana and letters and han / letters >= 0.5:
        return "zho"
    if kana and kana / (han + kana) >= 0.2:
        return "jpn"
    hangul = len(_HANGUL_RE.findall(t))
    other_words = len(_LETTER_RUN_RE.findall(_NON_OTHER_SCRIPT_RE.sub(" ", t)))
    units = han + kana + hangul + other_words
    if units and hangul / units >= 0.5:
        return "kor"
    if units and not kana and han / units >= 1 / 3:
        return "zho"
    if letters < 3:
        return "und"  # too little text for a statistical guess
    try:
        lang = _lingua_detector().detect_language_of(t[:_LINGUA_MAX_CHARS])
    except Exception:  # noqa: BLE001 - a detector failure must not stop scoring
        return "und"
    return lang.iso_code_639_3.name.lower() if lang is not None else "und"


# ---------------------------------------------------------------------------------------------------------------------
# Stage 2: cleaning.

# Full-width ASCII letters / digits and the ideographic space -> ASCII (punctuation stays full-width: it is normal in
# Chinese text).
_FULLWIDTH_TABLE: dict[int, Any] = {
    **{cp: cp - 0xFEE0 for cp in range(0xFF10, 0xFF1A)},
    **{cp: cp - 0xFEE0 for cp in range(0xFF21, 0xFF3B)},
    **{cp: cp - 0xFEE0 for cp in range(0xFF41, 0xFF5B)},
    0x3000: " ",
}

_FULLWIDTH_RE = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\u3000]")
_TAG_RE = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]{0,500})?/?>", re.S)
_ENTITY_RESIDUE_RE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,10}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});?")
_TLDS = "com|cn|net|org|edu|gov|info|biz|cc|tv|top|xyz|io|me|hk|tw|vip|shop|site|co|mobi|club|online|wang|ltd"
_URL_RE = re.compile(
    r"(?:https?|ftp)://[^\s<>\"'，。、；！？）】」》]+"  # scheme URLs (stop at CJK punctuation)
    r"|(?<![A-Za-z0-9])www\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?:[/?#][!-~]*)?"  # www.example.com/...
    r"|[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"  # e-mail addresses
    rf"|(?<![A-Za-z0-9@.-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?i:{_TLDS})(?:\.[a-z]{{2}})?(?![A-Za-z0-9-])"
    r"(?:[/?#][!-~]*)?"  # bare domains: example.com, m.example.com.cn/path
    r"|(?<![A-Za-z0-9])[A-Za-z0-9_-]{1,64}\.(?i:jpe?g|png|gif|webp|bmp|tiff?|heic)(?![A-Za-z0-9])"  # image file names
)
_SEPARATORS = "-_|｜—–－＿~～·•:：/"
# Words that end a site name or an SEO suffix: "_XX网", "|XX官网", "- 百度图片", "_XX商城", "XX旗舰店".
_SITE_WORDS = (  # generic words such as 新闻 or 在线 alone would eat real content ("- 升旗仪式新闻")
    "网|网站|官网|官方网站|商城|论坛|社区|博客|百科|门户|图库|旗舰店|专卖店|官方店"
    "|百度图片|百度|淘宝|天猫|京东|拼多多|搜狐|新浪|新浪新闻|网易|网易新闻|腾讯|腾讯新闻|凤凰|今日头条|知乎|豆瓣|微博"
    "|汽车之家|大众点评|携程|马蜂窝|小红书|抖音|快手|哔哩哔哩|bilibili|搜狗|中关村在线|图片大全|高清大图|免费下载"
    "|在线观看|在线阅读"
)
_SEP = re.escape(_SEPARATORS)
_SUFFIX_RE = re.compile(  # starts with a character class, so `re` scans for separators quickly
    rf"[{_SEP}][{_SEP}]*\s*[^{_SEP}]{{0,20}}?(?:{_SITE_WORDS})\s*$", re.I
)
_PREFIX_SITE_RE = re.compile(rf"^\s*[【\[（(]\s*[^】\]）)]{{0,20}}?(?:{_SITE_WORDS})\s*[】\]）)]", re.I)
_AD_WORDS = (  # anywhere inside a short bracket: 【限时特价】, 【新品推荐】
    "特价|包邮|促销|热卖|爆款|秒杀|限时|抢购|优惠|折扣|打折|清仓|新品|正品|现货|直降|满减|领券|团购|预售|热销|免邮|批发"
    "|代购|厂家直销|顺丰|推荐"
)
_MARKER_WORDS = "图|组图|多图|高清图|高清|视频|转载|原创"  # the whole bracket content: 【图】, [组图], （多图）
_AD_TAG_RE = re.compile(
    rf"[【\[]\s*[^【】\[\]]{{0,8}}?(?:{_AD_WORDS})[^【】\[\]]{{0,8}}\s*[】\]]"
    rf"|[【\[（(]\s*(?:{_MARKER_WORDS})\s*[】\]）)]"
)

_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),  # mahjong, cards, enclosed alphanumerics, regional indicators, pictographs, emoticons ...
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats
    (0x2B00, 0x2BFF),  # miscellaneous symbols and arrows
    (0x2300, 0x23FF),  # miscellaneous technical (⌚ ⏰ ⏩)
    (0x2190, 0x21FF),  # arrows
    (0x2500, 0x25FF),  # box drawing, block elements, geometric shapes (■ ● ◆ ▲)
    (0xFE00, 0xFE0F),  # variation selectors
    (0x200D, 0x200D),  # zero-width joiner
    (0x20E3, 0x20E3),  # combining keycap
    (0xE0020, 0xE007F),  # emoji tag sequences
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x2122, 0x2122), (0x3030, 0x3030), (0x303D, 0x303D),  # © ® ™ 〰 〽
    (0xFFFD, 0xFFFD),  # replacement character (undecodable input)
)  # fmt: skip
# Symbols that carry meaning in captions and stay: letter-like symbols (℃ №) and CJK unit squares (㎡ ㎏ ㏄).
_KEEP_SYMBOL_RANGES = ((0x2100, 0x2121), (0x2123, 0x214F), (0x3300, 0x33FF))


@functools.cache
def _noise_runs() -> _CharRuns:
    tables = _unicode_tables()
    keep = {cp for a, b in _KEEP_SYMBOL_RANGES for cp in range(a, b + 1)}
    noise = {cp for cp in tables["symbols"] if cp not in keep}  # So / Sk / private use (icon fonts)
    noise.update(cp for a, b in _EMOJI_RANGES for cp in range(a, b + 1))
    noise.update(tables["control"])
    return _CharRuns(noise)


_PUNCT_REPEAT_RE = re.compile(r"[!?,;:！？。，、；：](?<=(.))\1+")  # starts with a class: fast scan
_DECOR_RUN_RE = re.compile(r"([#*~=_^+|\\/<>～＃＊＝＿｜＋￣\-·•])\1{2,}")
_HASH_RE = re.compile(r"(?<![A-Za-z0-9])#+")
_DOTS_RE = re.compile(r"\.{4,}")
_LONG_DASH_RE = re.compile(r"([…—])\1{2,}")
_EMPTY_BRACKETS_RE = re.compile(r"[【\[（(《「『〔<{]\s*[】\]）)》」』〕>}]")
_EDGE_SEPARATORS = " " + _SEPARATORS + ",，、;；/\\"


def _noise_replacement(m: re.Match[str]) -> str:
    """Removed noise leaves a space only between two ASCII letters/digits ("nice🔥day" -> "nice day")."""
    s, a, b = m.string, m.start(), m.end()
    if a > 0 and b < len(s) and s[a - 1].isascii() and s[a - 1].isalnum() and s[b].isascii() and s[b].isalnum():
        return " "
    return ""


def _nonspace_len(folded: str) -> int:
    """Characters other than spaces of a whitespace-folded text."""
    return len(folded) - folded.count(" ")


def _clean_structural(text: str) -> str:
    """HTML remnants, URLs / e-mails / file names, site suffixes and ad tags; whitespace folded."""
    if not text.isascii() and _FULLWIDTH_RE.search(text):
        text = text.translate(_FULLWIDTH_TABLE)
    if "&" in text:
        for _ in range(2):  # double-escaped "&amp;nbsp;" needs two rounds
            unescaped = html.unescape(text)
            if unescaped == text:
                break
            text = unescaped
        text = _sub(_ENTITY_RESIDUE_RE, " ", text)
    if "<" in text:
        text = _sub(_TAG_RE, " ", text)
    if "." in text or "@" in text:
        text = _sub(_URL_RE, " ", text)
    text = " ".join(text.split())
    if not text.isascii():
        if "【" in text or "[" in text or "（" in text or "(" in text:
            text = _sub(_AD_TAG_RE, " ", text)
            m = _PREFIX_SITE_RE.search(text)
            if m and _WORDLIKE_RE.search(text, m.end()):
                text = text[m.end() :]
        for _ in range(3):  # "标题_栏目_XX网 - 百度图片": strip up to three stacked suffixes
            m = _SUFFIX_RE.search(text)
            if not m or not _WORDLIKE_RE.search(text, 0, m.start()):
                break
            text = text[: m.start()].rstrip()
        text = " ".join(text.split())
    return text


def _clean_noise(text: str) -> str:
    """Emoji, symbols, control / private-use characters, decorative runs and repeated punctuation; edges trimmed."""
    if not text.isascii():
        text = _sub(_noise_runs().pick(text), _noise_replacement, text)
    elif not text.isprintable():
        text = _strip_controls(text)
    text = _sub(_DECOR_RUN_RE, " ", text)
    if "#" in text:
        text = _sub(_HASH_RE, " ", text)
    text = _sub(_PUNCT_REPEAT_RE, r"\1", text)
    if "...." in text:
        text = _DOTS_RE.sub("...", text)
    if "……" in text or "——" in text:
        text = _LONG_DASH_RE.sub(r"\1\1", text)
    text = _sub(_EMPTY_BRACKETS_RE, " ", text)
    return " ".join(text.split()).strip(_EDGE_SEPARATORS)


def clean_caption(text: str | None) -> str:
    """The stage-2 cleaned caption (input is expected to be Traditional -> Simplified converted already).

    Rules, in order:
    1. sanitise: None -> "", lone surrogates -> U+FFFD (removed in step 7);
    2. full-width letters and digits -> ASCII, ideographic space -> space (full-width punctuation stays);
    3. HTML: entities decoded (twice, for double escaping), undecodable entity residue and tags / comments removed;
    4. URLs (scheme or www.), e-mail addresses, bare domains (example.com, m.example.com.cn/a) and image file names
       (IMG_0001.JPG) removed;
    5. bracketed ad tags (a short 【...】 / [...] containing 特价, 包邮, 新品, 推荐 ...: `_AD_WORDS`) and marker
       tags (the whole bracket is 图, 组图, 多图, 高清, 视频, 转载 or 原创) removed; 【中国地图】 stays; a leading site
       tag ("【XX网】标题") removed;
    6. site / SEO suffixes removed, up to three stacked ones: a separator (- _ | ｜ — · : /) followed by up to 20
       characters ending in a site word (网, 官网, 商城, 论坛, 旗舰店, 百度图片, 淘宝, 知乎, 图片大全 ...: `_SITE_WORDS`),
       at the end of the caption, and only when something remains before it ("春天的花_XX网" -> "春天的花",
       "百度图片" stays). A separated tail that happens to end in 网 ("运动器材 - 羽毛球网") is removed too;
    7. emoji and pictographs, other symbols (categories So / Sk: ★ ● ♥ ♂ box drawing ...), private-use characters
       (icon fonts), control and format characters and U+FFFD removed; kept: letter-like symbols (℃ №) and CJK unit
       squares (㎡ ㎏). Removal leaves a space only between two ASCII letters or digits;
    8. decorative runs of 3+ identical `# * ~ = _ ^ + | \\ / < > -` (and full-width forms) removed, hashtag marks "#"
       not after a letter/digit removed, repeated punctuation (! ? , ; : ！？。，、；：) collapsed ("!!!" -> "!",
       "。。。" -> "。"), "......" -> "...", "………" -> "……", empty brackets removed;
    9. whitespace runs -> one space; separators and commas trimmed from both ends.
    """
    return _clean_noise(_clean_structural(_as_text(text)))


def _clean_with_retention(text: str) -> tuple[str, float]:
    """The cleaned caption and the share of its characters that survived the noise rules (7-8)."""
    structural = _clean_structural(text)
    clean = _clean_noise(structural)
    n_struct = _nonspace_len(structural)
    return clean, (_nonspace_len(clean) / n_struct if n_struct else 0.0)


def caption_entropy(clean: str, retention: float = 1.0) -> float:
    """Information density of a caption, in [0, 1].

    H = (Shannon entropy of the distribution of the non-space characters of the cleaned caption / log2 of their count)
    x retention, where retention is the share of characters that survived the emoji / symbol / repeated-punctuation
    rules of `clean_caption`. The first factor is 1 when no character repeats and 0 for a single repeated character,
    so repetition ("好好好好好", "特价特价特价") scores low; the second ties the score to emoji and special characters
    as the paper does: a caption that is mostly emoji or symbols scores low even if what remains is varied. Fewer than
    two characters -> 0. See `DEFAULT_MIN_ENTROPY` for the threshold.
    """
    chars = clean.replace(" ", "") if clean.isascii() else "".join(clean.split())
    n = len(chars)
    if n < 2 or retention <= 0:
        return 0.0
    distinct = len(set(chars))
    if distinct == 1:
        return 0.0
    retention = min(retention, 1.0)
    if distinct == n:  # no repeated character: H = log2(n), normalised 1
        return retention
    counts = Counter(chars)
    log_n = math.log2(n)
    # H = log2(n) - sum(c log2 c) / n; characters seen once add nothing to the sum, so group counts by value.
    h = log_n - sum(k * m * math.log2(k) for k, m in Counter(counts.values()).items() if k > 1) / n
    return max(0.0, min(1.0, h / log_n * retention))


# ---------------------------------------------------------------------------------------------------------------------
# Stage 2: [UNK] counting under a Chinese BERT WordPiece vocabulary.


def default_vocab_path() -> Path:
    """`vocab.txt` of the installed `cn_clip` package (Chinese-CLIP's BERT vocabulary, 21,128 entries).

    Located with `importlib.util.find_spec`, which does not import cn_clip (and so not torch).
    """
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "cn_clip is not installed, so there is no default BERT vocabulary: install it with "
            "`pip install --no-deps cn-clip` or pass vocab_path="
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "clip" / "vocab.txt"
    if not path.is_file():
        raise FileNotFoundError(f"cn_clip is installed but {path} is missing; pass vocab_path=")
    return path


class WordPieceUnkCounter:
    """Counts `[UNK]` tokens that BERT's tokenizer (BasicTokenizer + WordPiece, lower-cased, as Chinese-CLIP uses it)
    would produce for a text.

    BasicTokenizer: drop NUL, U+FFFD and control / format characters; split on whitespace; put every CJK ideograph
    (BERT's ranges) and every punctuation character (Unicode P* and ASCII symbols) into its own token; lower-case;
    strip accents (NFD, drop combining marks). WordPiece: a token longer than `max_input_chars_per_word` is one [UNK];
    otherwise greedy longest-match-first over the vocabulary with "##" continuation pieces, and a token that cannot be
    fully covered is one [UNK]. Rare characters (CJK Extension B, most emoji) are therefore [UNK].
    """

    def __init__(self, vocab_path: str | Path | None = None, *, max_input_chars_per_word: int = 200) -> None:
        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        with open(path, encoding="utf-8") as fh:
            vocab = {line.strip() for line in fh}
        vocab.discard("")
        if not vocab:
            raise ValueError(f"vocabulary {path} is empty")
        self.vocab: frozenset[str] = frozenset(vocab)
        self.max_input_chars_per_word = max_input_chars_per_word
        self._max_piece = max(len(v[2:] if v.startswith("##") else v) for v in vocab)
        self._drop, self._token_bmp, self._token = _wordpiece_res()
        # CJK ideographs are always tokens of their own, so the ones missing from the vocabulary are counted with one
        # class scan, and only the rest of the text is tokenised.
        cjk = (cp for a, b in _BERT_CJK_RANGES for cp in range(a, b + 1))
        self._unk_cjk = _CharRuns((cp for cp in cjk if chr(cp) not in self.vocab), single=True)
        cjk_bmp = _ranges_to_class(cp for a, b in _BERT_CJK_RANGES if a < 0x10000 for cp in range(a, b + 1))
        cjk_full = _ranges_to_class(cp for a, b in _BERT_CJK_RANGES for cp in range(a, b + 1))
        self._non_cjk_bmp = re.compile(f"[^\\s{cjk_bmp}]+")
        self._non_cjk_full = re.compile(f"[^\\s{cjk_full}]+")

    def count(self, text: str) -> int:
        text = _as_text(text)
        n = 0
        token_re = self._token_bmp
        if not text.isascii():
            astral = _has_astral(text)
            # Controls, NUL, U+FFFD, and accents: NFD then drop combining marks (BERT does NFD per token; same result).
            text = unicodedata.normalize("NFD", text)
            text = _sub(self._drop.full if astral else self._drop.bmp, "", text)
            n = len((self._unk_cjk.full if astral else self._unk_cjk.bmp).findall(text))
            runs = (self._non_cjk_full if astral else self._non_cjk_bmp).findall(text)
            if astral:
                token_re = self._token
        else:
            if not text.isprintable():
                text = _sub(self._drop.bmp, "", text)
            runs = text.split()
        vocab = self.vocab
        for run in runs:  # whitespace-separated runs without CJK ideographs: most are one punctuation mark
            run = run.lower()
            if run in vocab:
                continue
            for tok in token_re.findall(run):
                if tok in vocab:
                    continue
                if len(tok) == 1 or not self._wordpiece_ok(tok):
                    n += 1
        return n

    def _wordpiece_ok(self, word: str) -> bool:
        """True when greedy longest-match-first covers `word` with vocabulary pieces."""
        if len(word) > self.max_input_chars_per_word:
            return False
        vocab, max_piece = self.vocab, self._max_piece
        start, n = 0, len(word)
        while start < n:
            end = min(n, start + max_piece)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            else:
                return False
            start = end
        return True


@functools.cache
def _wordpiece_res() -> tuple[_CharRuns, re.Pattern[str], re.Pattern[str]]:
    """(characters BERT drops, and BERT basic-tokenizer tokens of a text without CJK ideographs or whitespace:
    one punctuation mark | a run of anything else; BMP-only and exact)."""
    tables = _unicode_tables()
    drop = _CharRuns({0, 0xFFFD, *tables["control"], *tables["mn"]})
    punct_bmp = _ranges_to_class(cp for cp in tables["punct"] if cp < 0x10000)
    punct = _ranges_to_class(tables["punct"])
    token_bmp = re.compile(f"[{punct_bmp}]|[^\\s{punct_bmp}]+")
    token = re.compile(f"[{punct}]|[^\\s{punct}]+")
    return drop, token_bmp, token


# BERT's `_is_chinese_char` ranges.
_BERT_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


@functools.cache
def _unk_counter(path: str | None) -> WordPieceUnkCounter:
    return WordPieceUnkCounter(path)


def count_unk(text: str | None, *, vocab_path: str | Path | None = None) -> int:
    """Number of `[UNK]` tokens of `text` under the BERT vocabulary (default: cn_clip's); see `WordPieceUnkCounter`."""
    return _unk_counter(str(vocab_path) if vocab_path is not None else None).count(_as_text(text))


# ---------------------------------------------------------------------------------------------------------------------
# Stage 2: nouns.


def _noun_count(words: list[str], tags: dict[str, str]) -> int:
    """Nouns among jieba words, by dictionary POS tag.

    Counted: tags starting with "n" (n, nr, nrt, nrfg, ns, nt, nz, ng) and "vn" (verbal nouns: jieba's dictionary tags
    many nominal compounds vn, e.g. 服务, 设计, 管理, which in captions name things: "酒店服务", "室内设计").
    Not counted: "an" (adjectival nouns), "j" (abbreviations), "s"/"f"/"t" (place, direction, time words).
    A word missing from the dictionary (found by jieba's HMM: mostly names) counts as a noun when it is 2+ Han
    characters; other unknown tokens (English words, numbers, emoji) do not count.
    """
    n = 0
    for w in words:
        tag = tags.get(w)
        if tag is None:
            if len(w) >= 2 and _HAN_WORD_RE.fullmatch(w):
                n += 1
        elif tag[0] == "n" or tag == "vn":
            n += 1
    return n


def count_nouns(text: str | None) -> int:
    """Nouns in a caption (jieba accurate mode + dictionary POS lookup; see `_noun_count`)."""
    text = _as_text(text)
    if not text.strip():
        return 0
    return _noun_count(_jieba().lcut(text), _word_tag_tab())


# ---------------------------------------------------------------------------------------------------------------------
# Stage 2: scores for a batch.

_CHUNK = 4096  # captions scored phase by phase: each phase's tables stay in the CPU caches (~25 % faster)


def _score_chunk(raws: list[str], cols: dict[str, list[Any]], unk: WordPieceUnkCounter, lexicon: Any) -> None:
    """Scores of distinct, sanitised captions, appended to `cols`; one phase at a time over the whole chunk."""
    from danqing_assets.lib.safety import normalize_simplified

    t2s = _opencc_t2s().convert
    lcut = _jieba().lcut
    tags = _word_tag_tab()
    t2s_texts = [t2s(r) if not r.isascii() else r for r in raws]
    cleaned = [_clean_with_retention(t) for t in t2s_texts]
    cleans = [c for c, _ in cleaned]
    han, letters, kana, entropy = _chunk_stats(cleans, [r for _, r in cleaned])
    nouns = [_noun_count(lcut(c), tags) if c else 0 for c in cleans]
    find_all = lexicon.find_all
    terms = [find_all(normalize_simplified(c)) if c else [] for c in cleans]
    languages = []
    for c, h, n_letters, k in zip(cleans, han, letters, kana):
        if not k and n_letters and h / n_letters >= 0.5:
            languages.append("zho")  # the fast path of `detect_language`
        else:
            languages.append(_detect_language(c, h, n_letters))
    cols["caption_t2s"].extend(t2s_texts)
    cols["caption_clean"].extend(cleans)
    cols["han_share"].extend(_han_share(h, n) for h, n in zip(han, letters))
    cols["language"].extend(languages)
    cols["noun_count"].extend(nouns)
    cols["unk_count"].extend(unk.count(t) for t in t2s_texts)
    cols["entropy"].extend(entropy)
    cols["sensitive_hits"].extend(len(t) for t in terms)
    cols["sensitive_terms"].extend("|".join(dict.fromkeys(t)) for t in terms)


_TAB_ALPHA, _TAB_HAN, _TAB_KANA = 1, 2, 4


@functools.cache
def _char_table() -> Any:
    """uint8 flags per code point: alphabetic, Han (`_HAN_CLASS`), kana (`_KANA_RE`)."""
    import numpy as np

    flags = bytearray(sys.maxunicode + 1)
    for cp in range(sys.maxunicode + 1):
        if chr(cp).isalpha():
            flags[cp] = _TAB_ALPHA
    for rx, bit in ((_HAN_RE, _TAB_HAN), (_KANA_RE, _TAB_KANA)):
        for a, b in _class_ranges(rx):
            for cp in range(a, b + 1):
                flags[cp] |= bit
    return np.frombuffer(bytes(flags), dtype=np.uint8)


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


def _chunk_stats(cleans: list[str], retentions: list[float]) -> tuple[list[int], list[int], list[int], list[float]]:
    """Per cleaned caption, vectorised with numpy over the chunk: Han characters, letter-like characters (alphabetic
    or Han), kana characters, and `caption_entropy` (same definition, computed by sorting (caption, character) keys)."""
    import numpy as np

    m = len(cleans)
    if m == 0:
        return [], [], [], []
    lens = np.fromiter(map(len, cleans), dtype=np.int64, count=m)
    cps = np.frombuffer("".join(cleans).encode("utf-32-le"), dtype=np.uint32)
    ids = np.repeat(np.arange(m, dtype=np.int64), lens)
    flags = _char_table()[cps]
    is_han = (flags & _TAB_HAN) != 0
    han = np.bincount(ids, weights=is_han, minlength=m)
    letters = np.bincount(ids, weights=((flags & _TAB_ALPHA) != 0) | is_han, minlength=m)
    kana = np.bincount(ids, weights=(flags & _TAB_KANA) != 0, minlength=m)

    nonspace = cps != 32  # cleaned captions have single spaces as their only whitespace
    key = np.sort((ids[nonspace].astype(np.uint64) << np.uint64(21)) | cps[nonspace].astype(np.uint64))
    entropy = np.zeros(m)
    if key.size:
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        counts = np.diff(np.append(starts, key.size)).astype(np.float64)
        owner = (key[starts] >> np.uint64(21)).astype(np.int64)
        s = np.bincount(owner, weights=counts * np.log2(counts), minlength=m)
        distinct = np.bincount(owner, minlength=m)
        n = np.bincount(ids[nonspace], minlength=m).astype(np.float64)
        ok = (n >= 2) & (distinct >= 2)
        log_n = np.log2(np.where(ok, n, 2.0))
        h = np.where(ok, (log_n - s / np.where(ok, n, 1.0)) / log_n, 0.0)
        entropy = np.clip(h * np.clip(np.asarray(retentions, dtype=np.float64), 0.0, 1.0), 0.0, 1.0)
    return (
        han.astype(np.int64).tolist(),
        letters.astype(np.int64).tolist(),
        kana.astype(np.int64).tolist(),
        entropy.tolist(),
    )


SCORE_COLUMNS: tuple[str, ...] = (
    "caption_t2s",
    "caption_clean",
    "han_share",
    "language",
    "noun_count",
    "unk_count",
    "entropy",
    "sensitive_hits",
    "sensitive_terms",
)


def score_captions(
    captions: Sequence[str | None],
    *,
    vocab_path: str | Path | None = None,
    sensitive_lexicon_path: str | Path | None = None,
) -> pl.DataFrame:
    """Stage-2 text scores, one row per input caption, in input order. Decisions are left to SQL.

    Columns:
    - `caption_t2s` (str): OpenCC Traditional -> Simplified of the caption (None -> "", lone surrogates -> U+FFFD);
    - `caption_clean` (str): `clean_caption(caption_t2s)`, the caption to keep (rules in `clean_caption`);
    - `han_share` (f64): `han_share(caption_clean)`;
    - `language` (str): `detect_language(caption_clean)` (ISO-639-3, "und" when unknown);
    - `noun_count` (i64): nouns in caption_clean (one `jieba.lcut` + dictionary POS lookup, see `_noun_count`);
    - `unk_count` (i64): BERT `[UNK]` tokens of caption_t2s, counted BEFORE cleaning so rare characters count
      (vocabulary: `vocab_path`, default cn_clip's `vocab.txt`);
    - `entropy` (f64): information density in [0, 1] (`caption_entropy`; recommended keep >= DEFAULT_MIN_ENTROPY);
    - `sensitive_hits` (i64) / `sensitive_terms` (str): non-overlapping matches of the stage-2 lexicon
      (default `danqing_assets/data/sensitive_lexicon.txt`) in the cleaned caption (NFKC, t2s, lower-cased, whitespace
      removed), and the distinct matched terms "|"-joined in order of first match ("" when none).

    Repeated captions are scored once. Bad input never raises: empty / None / symbol-only captions get zero counts and
    entropy 0, which the thresholds reject.
    """
    import polars as pl

    from danqing_assets.lib.safety import load_sensitive_lexicon

    unk = _unk_counter(str(vocab_path) if vocab_path is not None else None)
    lexicon = load_sensitive_lexicon(sensitive_lexicon_path)

    index: dict[Any, int] = {}
    inverse: list[int] = []
    uniques: list[str] = []
    for c in captions:
        key = c if isinstance(c, str) else _as_text(c)
        i = index.get(key)
        if i is None:
            i = index[key] = len(uniques)
            uniques.append(_as_text(key))
        inverse.append(i)

    cols: dict[str, list[Any]] = {name: [] for name in SCORE_COLUMNS}
    for start in range(0, len(uniques), _CHUNK):
        _score_chunk(uniques[start : start + _CHUNK], cols, unk, lexicon)

    schema = {
        "caption_t2s": pl.String,
        "caption_clean": pl.String,
        "han_share": pl.Float64,
        "language": pl.String,
        "noun_count": pl.Int64,
        "unk_count": pl.Int64,
        "entropy": pl.Float64,
        "sensitive_hits": pl.Int64,
        "sensitive_terms": pl.String,
    }
    df = pl.DataFrame(cols, schema=schema)
    if len(uniques) == len(inverse):
        return df
    return df[pl.Series(inverse, dtype=pl.UInt32)]
