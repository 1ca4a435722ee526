"""Token counts: jieba words (stage 1), jieba nouns and BERT WordPiece `[UNK]` tokens (stage 2)."""

from __future__ import annotations

import functools
import importlib.util
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from danqing_assets.lib.text.language import _HAN_WORD_RE
from danqing_assets.lib.text.normalize import (
    _WORDLIKE_RE,
    _CharRuns,
    _fold_nfkc_t2s,
    _has_astral,
    _ranges_to_class,
    _sub,
    _unicode_tables,
    as_text,
)

# ---------------------------------------------------------------------------------------------------------------------
# Stage 1: jieba words.


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

def _count_wordlike(tokens: Iterable[str]) -> int:
    search = _WORDLIKE_RE.search
    return sum(1 for t in tokens if search(t))


def count_words(s: str | None) -> int:
    """Number of jieba words in a caption: the paper's 5-60 word filter counts these.

    The caption is sanitised, NFKC-normalised and converted Traditional -> Simplified (jieba's dictionary is
    Simplified; Traditional text would split into single characters), then cut by `jieba.lcut` (accurate mode, HMM on,
    so unknown names are kept whole; `segment.cut`, which caches jieba's blocks). A token counts when it contains at least one letter, digit or Han character:
    whitespace, punctuation and emoji tokens do not count. Empty / None -> 0.
    """
    text = _fold_nfkc_t2s(s)
    if not text.strip():
        return 0
    from danqing_assets.lib.text.segment import cut

    return _count_wordlike(cut(text))


def count_words_many(texts: Sequence[str | None]) -> list[int]:
    """`count_words` for many captions; each distinct string is segmented once."""
    cache: dict[Any, int] = {}
    out: list[int] = []
    for t in texts:
        key = t if isinstance(t, str) else as_text(t)
        n = cache.get(key)
        if n is None:
            n = cache[key] = count_words(key)
        out.append(n)
    return out


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
        text = as_text(text)
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
    return _unk_counter(str(vocab_path) if vocab_path is not None else None).count(as_text(text))


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
    text = as_text(text)
    if not text.strip():
        return 0
    from danqing_assets.lib.text.segment import cut

    return _noun_count(cut(text), _word_tag_tab())
