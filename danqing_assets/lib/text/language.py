"""Script shares and language identification: `han_share` and `detect_language` (captions and pages)."""

from __future__ import annotations

import functools
import re
from typing import Any

from danqing_assets.lib.text.normalize import _CharRuns, _class_ranges, as_text

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


def han_share(s: str | None) -> float:
    """Share of Han characters among letter-like characters, in [0, 1].

    Letter-like = alphabetic characters (Unicode categories L*: Latin, Cyrillic, kana, Hangul, Han ...) plus the few
    Han-script numerals that are not alphabetic (〇). Digits, punctuation, symbols, emoji and whitespace are ignored, so
    "2024年新款！" is 1.0 and "iPhone 手机壳" is 3 / 9. No letter-like character at all -> 0.0.
    """
    return _han_share(*_script_counts(as_text(s)))


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

JAPANESE_MIN_KANA_SHARE: float = 0.1
"""The kana rule: a text is Japanese when kana are at least this share of its Han + kana characters.

Japanese running text is mostly kana (about half or more of its Han + kana characters); Chinese text borrows a few: a
stray "の" ("小清新の早餐"), a katakana brand name, never the particles and inflections that make Japanese kana-rich.
Below the share, kana do not stop the Chinese rules, so a long Chinese page or caption that quotes one Japanese word
stays Chinese (lingua, asked instead, calls any text with a kana in it Japanese). The katakana middle dot U+30FB is not
kana here: Chinese writes transliterated names with it ("列奥纳多・达・芬奇"). Kanji-heavy Japanese with fewer kana
(addresses, headlines) is taken for Chinese: its characters are Han text all the same.
"""


@functools.cache
def _lingua_detector() -> Any:
    from lingua import Language, LanguageDetectorBuilder

    langs = [getattr(Language, name) for name in _LINGUA_LANGUAGES]
    # low-accuracy mode (trigram models only): 16 MB resident instead of ~200 MB in every scoring process (issue 13:
    # text_scores at 5 M pairs ran past 1.5 GB over its two processes). Only text the script rules leave open reaches
    # lingua, text whose Han characters are under a third of its words, so it is rejected as not Chinese whichever
    # language lingua names. `detect_language` gave the same answer in both modes for all 2.79 M distinct captions of
    # the 5 M-pair benchmark (a sample-crawl replica: few kinds of foreign text)
    return LanguageDetectorBuilder.from_languages(*langs).with_low_accuracy_mode().build()


def detect_language(text: str | None) -> str:
    """ISO-639-3 code of a text's language (`zho`, `jpn`, `kor`, `eng`, `fra`, ... or `und`), offline.

    The one detector of the project: stage 2 runs it on every caption (`score_captions`), extraction on the visible
    text of pages Common Crawl did not label (`html.guess_page_language`).
    Script rules first, lingua (restricted to `_LINGUA_LANGUAGES`) only for what they leave open:
    - no letter at all -> `und`;
    - kana >= `JAPANESE_MIN_KANA_SHARE` (10 %) of Han + kana characters -> `jpn` (the kana rule, see there);
    - Han share (see `han_share`) >= 0.5 -> `zho` (the fast path for almost all captions);
    - counting units (a Han, kana or Hangul character is one unit, a run of other letters - an English word - is one):
      Hangul >= 50 % of units -> `kor`; Han >= 1/3 of units -> `zho`, so product captions such as
      "Nike Air Max 90 男鞋" and Chinese pages with English menus stay Chinese;
    - fewer than 3 letters left -> `und`; otherwise lingua decides on the first 2,000 characters; no answer -> `und`.
    """
    t = as_text(text)
    return _detect_language(t, *_script_counts(t))


def _detect_language(t: str, han: int, letters: int) -> str:
    if not letters and not han:
        return "und"
    kana = len(_KANA_RE.findall(t))
    if kana and kana >= JAPANESE_MIN_KANA_SHARE * (han + kana):
        return "jpn"
    if letters and han / letters >= 0.5:
        return "zho"
    hangul = len(_HANGUL_RE.findall(t))
    other_words = len(_LETTER_RUN_RE.findall(_NON_OTHER_SCRIPT_RE.sub(" ", t)))
    units = han + kana + hangul + other_words
    if units and hangul / units >= 0.5:
        return "kor"
    if units and han / units >= 1 / 3:
        return "zho"
    if letters < 3:
        return "und"  # too little text for a statistical guess
    try:
        lang = _lingua_detector().detect_language_of(t[:_LINGUA_MAX_CHARS])
    except Exception:  # noqa: BLE001 - a detector failure must not stop scoring
        return "und"
    return lang.iso_code_639_3.name.lower() if lang is not None else "und"
