"""Weak labels from the training captions themselves: the head nouns of their noun phrases.

A contrastive loss lets a small model tell the captions of a batch apart by whatever is easiest - colour, background,
position - and it may never learn what the things in the picture are (the bootstrap model, trained on pairs alone,
ranked captions well but classified things at chance). An auxiliary loss that asks the image embedding (and the text
embedding) to predict the head nouns its caption names puts the things themselves into the embedding: on the seed
crawl, 600 steps with it took zero-shot top-1 from chance to 0.54 over 31 kinds (issue 10's experiments).

The nouns come from the captions alone (jieba part-of-speech tags; no word list, no truth label): a noun that ends a
noun phrase right after a numeral / measure word ("两个红色的**圆球**") or after "的" ("金黄色的**星星**") is a head noun.
A word becomes a label when it is a head at least `min_count` times and in at least `min_head_share` of its uses as a
noun, which keeps "画面" / "背景" / colour words (nouns that are rarely heads) out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_NOUN = frozenset({"n", "nz", "ng"})
_PHRASE = _NOUN | {"a", "uj", "z", "i", "b", "an"}  # tags inside a noun phrase (adjectives, 的, ...)
_COUNTERS = frozenset({"m", "mq", "q"})  # numerals and measure words


@dataclass(frozen=True)
class HeadNounTargets:
    """`vocab`: the label words; `labels[i]`: the label indices of caption i (empty when it names none)."""

    vocab: tuple[str, ...]
    labels: tuple[tuple[int, ...], ...]

    @property
    def covered(self) -> float:
        """Share of captions with at least one label."""
        return sum(1 for x in self.labels if x) / len(self.labels) if self.labels else 0.0

    def matrix(self) -> object:
        """A float tensor (captions, labels): each labelled row a distribution (1 / its label count), others 0."""
        import torch

        out = torch.zeros(len(self.labels), max(len(self.vocab), 1))
        for i, row in enumerate(self.labels):
            for j in row:
                out[i, j] = 1.0 / len(row)
        return out


def head_nouns(caption: str) -> set[str]:
    """The head nouns of one (Simplified) caption."""
    import jieba.posseg as pseg

    return _heads([(w.word, w.flag) for w in pseg.cut(caption)])


def _heads(seg: list[tuple[str, str]]) -> set[str]:
    heads: set[str] = set()
    k = 0
    while k < len(seg):
        if seg[k][1] not in _PHRASE:
            k += 1
            continue
        j = k
        while j < len(seg) and seg[j][1] in _PHRASE:
            j += 1
        word, tag = seg[j - 1]
        after_counter = k > 0 and seg[k - 1][1] in _COUNTERS
        after_de = j - k >= 2 and seg[j - 2][1] == "uj"
        if tag in _NOUN and (after_counter or after_de):
            heads.add(word)
        k = j
    return heads


def head_noun_targets(captions: Sequence[str], *, min_count: int = 5, min_head_share: float = 0.3) -> HeadNounTargets:
    """The head-noun labels of `captions` (Traditional text is read as Simplified)."""
    import jieba.posseg as pseg

    from danqing_assets.lib.text.normalize import to_simplified
    from danqing_assets.lib.text.tokens import _jieba

    if min_count < 1 or not 0.0 < min_head_share <= 1.0:
        raise ValueError(f"min_count must be >= 1 and min_head_share in (0, 1]; got {min_count}, {min_head_share}")
    _jieba()  # the project's jieba set-up (log level, dictionary loaded once)
    noun_uses: Counter[str] = Counter()
    head_uses: Counter[str] = Counter()
    per_caption: list[set[str]] = []
    for caption in captions:
        seg = [(w.word, w.flag) for w in pseg.cut(to_simplified(caption or ""))]
        noun_uses.update(word for word, tag in seg if tag in _NOUN)
        heads = _heads(seg)
        head_uses.update(heads)
        per_caption.append(heads)
    vocab = tuple(sorted(w for w, c in head_uses.items()
                         if c >= min_count and c / max(noun_uses[w], 1) >= min_head_share))
    index = {w: i for i, w in enumerate(vocab)}
    labels = tuple(tuple(sorted(index[w] for w in heads if w in index)) for heads in per_caption)
    return HeadNounTargets(vocab, labels)
