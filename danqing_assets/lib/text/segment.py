"""jieba segmentation with a per-process cache of its blocks, so a caption is segmented once for both stages.

`jieba.lcut(text)` (accurate mode, HMM on) splits `text` into blocks with `jieba.re_han_default` (runs of Han
characters, ASCII letters, digits and `+#&._%-`); each such block is cut on its own (`Tokenizer.__cut_DAG`), and every
other character is a token of its own (whitespace runs by `re_skip_default`). The tokens of a block depend on the block
alone, so caching them per block gives exactly `jieba.lcut`'s answer (`cut`; tests compare the two on real captions).

Stage 1 counts words on the NFKC + Traditional->Simplified caption; stage 2 counts nouns on the cleaned caption. The
two strings differ in their noise (emoji, site suffixes, repeated punctuation) but mostly share their Han blocks, so
when `source_scores` computes both (`lib/text/batch.py`), the second cut is mostly cache hits; site suffixes and other
strings repeated across captions hit too. The cache is bounded (`MAX_BLOCKS` entries, cleared when full).
"""

from __future__ import annotations

import functools
from typing import Any

MAX_BLOCKS = 200_000
"""Most cached blocks per process (a few tens of MB); the cache is emptied when it is full."""


@functools.cache
def _segmenter() -> tuple[Any, Any, Any, dict[str, tuple[str, ...]]]:
    from danqing_assets.lib.text.tokens import _jieba

    jieba = _jieba()
    tokenizer = jieba.dt
    tokenizer.check_initialized()
    cut_block = tokenizer._Tokenizer__cut_DAG  # the HMM block cutter `Tokenizer.cut` uses (accurate mode)
    return jieba.re_han_default, jieba.re_skip_default, cut_block, {}


def cut(text: str) -> list[str]:
    """`jieba.lcut(text)` (accurate mode, HMM on), with the Han blocks' cuts cached."""
    re_han, re_skip, cut_block, cache = _segmenter()
    out: list[str] = []
    for blk in re_han.split(text):
        if not blk:
            continue
        if re_han.match(blk):
            words = cache.get(blk)
            if words is None:
                if len(cache) >= MAX_BLOCKS:
                    cache.clear()
                words = cache[blk] = tuple(cut_block(blk))
            out.extend(words)
        else:
            for x in re_skip.split(blk):
                if re_skip.match(x):
                    out.append(x)
                else:
                    out.extend(x)
    return out


def cache_size() -> int:
    return len(_segmenter()[3])
