"""Caption text scores for stage 1 (source selection) and stage 2 (text refinement).

This module computes scores; it decides nothing. The thresholds (5-60 words, at least one noun, at most 5 `[UNK]`,
minimum entropy, sensitive hits) are applied afterwards in SQL, so they can be re-tuned without re-scoring.

Stage 1 helpers: `normalize_caption` (key for exact dedup), `count_words` / `count_words_many` (jieba words),
`han_share`, `detect_language`.
Stage 2: `score_captions` returns one row of scores per caption (see its docstring for every column).

Every public function accepts bad input (None, empty, control characters, lone surrogates, 100 KB strings) and returns
scores that the default thresholds reject, instead of raising. Heavy dependencies (jieba, OpenCC, lingua, polars) are
imported lazily on first use, so importing this module is cheap.

Modules: `normalize` (sanitation, t2s, the dedup key; shared with `lib/safety.py`), `language` (`han_share`,
`detect_language`, also used for unlabelled pages by `lib/html.py`), `clean` (`clean_caption`), `tokens` (jieba words
and nouns, BERT `[UNK]` counting), `segment` (jieba with its blocks cached: a caption is segmented once for both
stages), `scoring` (`score_captions`, `caption_entropy`, the recommended thresholds), `batch` (the per-chunk scores of
`source_scores` and `text_scores` and the worker pool that runs them on every core).
"""

from __future__ import annotations

from danqing_assets.lib.text.clean import clean_caption
from danqing_assets.lib.text.language import detect_language, han_share
from danqing_assets.lib.text.normalize import as_text, normalize_caption, strip_controls, to_simplified
from danqing_assets.lib.text.scoring import (
    DEFAULT_MAX_UNK,
    DEFAULT_MIN_ENTROPY,
    SCORE_COLUMNS,
    caption_entropy,
    clean_noun_counts,
    score_captions,
)
from danqing_assets.lib.text.tokens import (
    WordPieceUnkCounter,
    count_nouns,
    count_unk,
    count_words,
    count_words_many,
    default_vocab_path,
)

__all__ = [
    "DEFAULT_MAX_UNK",
    "DEFAULT_MIN_ENTROPY",
    "SCORE_COLUMNS",
    "WordPieceUnkCounter",
    "as_text",
    "caption_entropy",
    "clean_noun_counts",
    "clean_caption",
    "count_nouns",
    "count_unk",
    "count_words",
    "count_words_many",
    "default_vocab_path",
    "detect_language",
    "han_share",
    "normalize_caption",
    "score_captions",
    "strip_controls",
    "to_simplified",
]
