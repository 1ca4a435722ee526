"""Stage-2 scores for a batch of captions (`score_captions`), the entropy score and the recommended thresholds.

The scores decide nothing: the thresholds are applied afterwards in SQL, so they can be re-tuned without re-scoring.
"""

from __future__ import annotations

import functools
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from danqing_assets.lib.text.clean import _clean_with_retention
from danqing_assets.lib.text.language import _HAN_RE, _KANA_RE, _detect_language, _han_share
from danqing_assets.lib.text.normalize import _class_ranges, _opencc_t2s, as_text
from danqing_assets.lib.text.tokens import WordPieceUnkCounter, _noun_count, _unk_counter, _word_tag_tab

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
# Stage 2: scores for a batch.

_CHUNK = 4096  # captions scored phase by phase: each phase's tables stay in the CPU caches (~25 % faster)


def _t2s_many(raws: list[str]) -> list[str]:
    """OpenCC Traditional -> Simplified of sanitised captions (ASCII ones unchanged): `caption_t2s`."""
    t2s = _opencc_t2s().convert
    return [t2s(r) if not r.isascii() else r for r in raws]


def clean_noun_counts(captions: Sequence[str | None]) -> list[int]:
    """The `noun_count` that `score_captions` gives each caption: nouns of its cleaned Simplified form.

    `source_scores` computes it while the caption's jieba blocks are in the segmentation cache (`lib/text/segment`)
    from counting its words, and `text_scores` takes it from there instead of segmenting the caption again."""
    cleans = [_clean_with_retention(t)[0] for t in _t2s_many([as_text(c) for c in captions])]
    return _noun_counts(cleans)


def _noun_counts(cleans: list[str]) -> list[int]:
    from danqing_assets.lib.text.segment import cut

    tags = _word_tag_tab()
    return [_noun_count(cut(c), tags) if c else 0 for c in cleans]


def _score_chunk(raws: list[str], cols: dict[str, list[Any]], unk: WordPieceUnkCounter, safety: Any,
                 known_nouns: list[int | None] | None = None) -> None:
    """Scores of distinct, sanitised captions, appended to `cols`; one phase at a time over the whole chunk.
    `known_nouns`: per caption, its `clean_noun_counts` value when already known (None: segment it here)."""
    from danqing_assets.lib.safety import stage_scores  # lazy: safety imports this package (normalize)

    t2s_texts = _t2s_many(raws)
    cleaned = [_clean_with_retention(t) for t in t2s_texts]
    cleans = [c for c, _ in cleaned]
    han, letters, kana, entropy = _chunk_stats(cleans, [r for _, r in cleaned])
    if known_nouns is None:
        nouns = _noun_counts(cleans)
    else:
        missing = [i for i, n in enumerate(known_nouns) if n is None]
        nouns = list(known_nouns)
        for i, n in zip(missing, _noun_counts([cleans[i] for i in missing])):
            nouns[i] = n
    sensitive = stage_scores(safety, cleans, "text", folded=True)
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
    cols["sensitive_score"].extend(s.score for s in sensitive)
    cols["sensitive_category"].extend(s.category for s in sensitive)
    cols["sensitive_terms"].extend(s.evidence for s in sensitive)
    not_terms = ("cue:", "ctx:", "model:", "model-cleared:")
    cols["sensitive_hits"].extend(sum(not e.startswith(not_terms) for e in s.evidence.split("|")) if s.evidence else 0
                                  for s in sensitive)


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
    "sensitive_score",
    "sensitive_category",
)


def score_captions(
    captions: Sequence[str | None],
    *,
    vocab_path: str | Path | None = None,
    safety_classifier: Any = "safety",
    nouns: Sequence[int | None] | None = None,
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
    - `sensitive_score` (f64, 0..1) / `sensitive_category` (str or None) / `sensitive_terms` (str, the evidence: terms,
      "cue:", "ctx:", "model:" and "model-cleared:" entries "|"-joined, "" when none) / `sensitive_hits` (i64, matched
      terms in the evidence): the text-safety classifier's verdict on the cleaned caption for the stage-2 categories
      (suggestive, spam; see `lib/safety.py`). `safety_classifier` is a classifier object or a spec for `load_text_safety_classifier`.

    `nouns`: per caption, its noun count when already known (`clean_noun_counts`, stored by stage 1), or None; those
    captions are not segmented again.

    Repeated captions are scored once. Bad input never raises: empty / None / symbol-only captions get zero counts and
    entropy 0, which the thresholds reject.
    """
    import polars as pl

    from danqing_assets.lib.safety import load_text_safety_classifier  # lazy, see `_score_chunk`

    unk = _unk_counter(str(vocab_path) if vocab_path is not None else None)
    safety = (load_text_safety_classifier(safety_classifier) if isinstance(safety_classifier, str)
              else safety_classifier)

    if nouns is not None and len(nouns) != len(captions):
        raise ValueError(f"{len(nouns)} noun counts for {len(captions)} captions")
    index: dict[Any, int] = {}
    inverse: list[int] = []
    uniques: list[str] = []
    known: list[int | None] = []
    for j, c in enumerate(captions):
        key = c if isinstance(c, str) else as_text(c)
        i = index.get(key)
        if i is None:
            i = index[key] = len(uniques)
            uniques.append(as_text(key))
            known.append(None)
        if nouns is not None and known[i] is None and nouns[j] is not None:
            known[i] = int(nouns[j])
        inverse.append(i)

    cols: dict[str, list[Any]] = {name: [] for name in SCORE_COLUMNS}
    for start in range(0, len(uniques), _CHUNK):
        _score_chunk(uniques[start : start + _CHUNK], cols, unk, safety,
                     known[start : start + _CHUNK] if nouns is not None else None)

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
        "sensitive_score": pl.Float64,
        "sensitive_category": pl.String,
    }
    df = pl.DataFrame(cols, schema=schema)
    if len(uniques) == len(inverse):
        return df
    return df[pl.Series(inverse, dtype=pl.UInt32)]
