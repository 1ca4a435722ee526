"""Text safety: one classifier for stages 1 and 2, with categories per stage, behind a pluggable interface.

The paper uses a ~1M-parameter binary text-safety classifier (weights not public) in stage 1 and "NSFW and
sensitive-word filtering" (lists not public) in stage 2. Here one classifier scores every caption per category; each
category belongs to one stage (`SafetyClassifier.stages`): sexual, gambling, drugs, weapons, fraud and violence feed
stage 1 (`unsafe_text`), suggestive (soft NSFW) and spam (contact / promotion) feed stage 2 (`sensitive_text`). The
stages store the score, the top category and the evidence (`SafetyScore`), and decide in SQL with a threshold, so the
cut is re-tunable without re-scoring.

The default, `SafetyClassifier`, is a weighted lexicon with context rules (`danqing_assets/data/safety_lexicon.txt`,
written for this project; its header states source, licence and format):

1. the caption is folded (NFKC: full-width -> ASCII; OpenCC Traditional -> Simplified; lower case) and reduced to its
   skeleton: Han characters, Latin letters and digits only ("+" reads as 加), so symbols, spaces and emoji inserted
   between the characters of a term ("色*情", "博 彩") do not hide it; `[allow]` phrases (血腥玛丽, 金枪鱼, 溜冰场)
   are blanked out first;
2. terms match anywhere in the skeleton (at every start position the longest term there, unless it lies inside an
   earlier match: 内衣诱惑 does not count 诱惑 again; a single Han character such as 枪 or 赌 is allowed only as a weak
   term, weight <= 0.5, and counts only where no longer term covers it); a term with a Latin edge matches
   only at a Latin-token boundary ("av" not in "java"); a term of three or more Han characters also matches its
   homophones (same toneless pinyin syllables, first reading: 六和彩 for 六合彩), and every strong term of two or
   more Han characters also matches with one of its characters written in pinyin (luo聊, 冰du) (pypinyin, MIT);
3. per category, score = 1 - prod(1 - w) over the distinct matched terms and, when a term of the category matched,
   its sales / solicitation cues (`[cue:NAME]`, `[cue]`); a term's weight is 1.0 when it alone is enough, less when it
   needs company (包夜 0.6, 快餐 0.2);
4. context clears news, court, public-service, educational and medical use: the `[context]` words that match (警方,
   缴获, 判处, 禁毒, 宣传, 科普, 医生 ...) add up their weights into a strength; every score is multiplied by
   `context_factor` (0.3: a 1.0 term drops below the 0.5 threshold) when the strength is >= 0.5, nothing gives a way
   to reach a seller (a `[contact]` cue such as 私聊, 加微信, 货到付款, or a contact-handle / phone spam term), and
   either nothing sells (no `[cue]`, no cue of weight >= 0.4 of a matched category: 下载, 出售 ...) or the strength is
   >= 1 (a police or court event, or several context words: news about an illegal sale names the sale, never the
   dealer's WeChat).

5. a learned model (`CharNgramModel`, `data/safety_model.json`: logistic regressions over character 1-3-grams of the
   same skeleton (a pinyin-syllable view exists, `MODEL_VIEWS`; the shipped model does not use it), pure-Python
   inference, no pickle; trained by `benchmarks/bench_safety.py --train-model` on the labelled sets named in its
   `trained_on`: ~7,200 captions, unsafe cases, safe look-alikes and ordinary captions written for this project) has
   the last word:
   - it clears a category the lexicon flagged when its local P(unsafe) (the caption's, or its most unsafe window's, so
     an ad pasted into ordinary text is still judged as an ad) is below its `veto`: a film review naming a scam, game
     talk, a cocktail;
   - it flags, in its most likely category, a caption the lexicon passed when P(unsafe) >= its `threshold` (evidence
     "model:p") and the caption has enough distinct characters for a linear model to go on.
   Both cut-offs are chosen on sets the lexicon was never tuned on, each scored by a model trained without it, for at
   most 1.5 % of their safe captions flagged. It is on by default (spec "safety"); "safety-lexicon" is the lexicon
   alone. The measured effect, per held-out set, is printed by `bench_safety.py --loso` (README).

Any other classifier plugs in through `load_text_safety_classifier("my.module:MyClassifier")`: it needs `name` and
`predict(texts) -> [(unsafe, detail)]` (`TextSafetyClassifier`); with a `score(texts, stage)` method as well it feeds
per-category scores to both stages, without it its verdict is stage 1's score (1.0 / 0.0, category "unsafe") and it
adds nothing in stage 2 (`stage_scores`).
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from danqing_assets.lib.text.normalize import as_text, strip_controls, to_simplified

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_SAFETY_LEXICON = DATA_DIR / "safety_lexicon.txt"

STAGES = ("source", "text")
"""The stages a category can feed: stage 1 (`unsafe_text`) and stage 2 (`sensitive_text`)."""
DEFAULT_THRESHOLD = 0.5
"""Score at or above which a caption is unsafe for its stage (the stage Configs' default; re-tunable in SQL)."""

_MAX_TERM_CHARS = 200


@runtime_checkable
class TextSafetyClassifier(Protocol):
    """A text-safety classifier: `predict` answers, for each text, (unsafe?, detail) - the detail is free text such as
    the matched term or a score, or None. It must return exactly one answer per input, in input order."""

    name: str

    def predict(self, texts: list[str]) -> list[tuple[bool, str | None]]: ...


def normalize_for_matching(text: str | None) -> str:
    """The form lexicon terms and texts are compared in: sanitised, control / format characters removed, NFKC
    (full-width -> ASCII), OpenCC Traditional -> Simplified, lower-case, all whitespace removed (so "色 情" and
    "ＡＶ女優" match "色情" and "av女优")."""
    text = as_text(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", strip_controls(text))
        text = to_simplified(text)
    return "".join(text.lower().split())


def _trie_pattern(node: dict[str, Any]) -> str:
    """A regex for the terms of a character trie; longer matches are preferred at each position."""
    ends = "" in node
    branches = []
    for ch in sorted(k for k in node if k):
        branches.append(re.escape(ch) + _trie_pattern(node[ch]))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if ends else body


class Lexicon:
    """A set of terms matched as substrings in one pass (one compiled trie-shaped regex alternation: the engine checks
    the first character against a set, then walks the trie; leftmost, then longest, non-overlapping matches)."""

    def __init__(self, terms: Sequence[str], *, source: str = "<terms>") -> None:
        normalized: dict[str, None] = {}
        for term in terms:
            t = normalize_for_matching(term)
            if not t:
                continue
            if len(t) > _MAX_TERM_CHARS:
                raise ValueError(f"{source}: term longer than {_MAX_TERM_CHARS} characters: {t[:40]!r}...")
            normalized[t] = None
        if not normalized:
            raise ValueError(f"{source}: the lexicon has no terms")
        self.terms: tuple[str, ...] = tuple(normalized)
        self.source = source
        trie: dict[str, Any] = {}
        for t in self.terms:
            node = trie
            for ch in t:
                node = node.setdefault(ch, {})
            node[""] = {}
        self._re = re.compile(_trie_pattern(trie))

    def __len__(self) -> int:
        return len(self.terms)

    normalize = staticmethod(normalize_for_matching)

    def find_all(self, normalized_text: str) -> list[str]:
        """Every non-overlapping match in an already normalised text (see `normalize_for_matching`)."""
        return self._re.findall(normalized_text) if normalized_text else []

    def first(self, normalized_text: str) -> str | None:
        m = self._re.search(normalized_text) if normalized_text else None
        return m.group() if m else None

    def matches(self, text: str | None) -> list[str]:
        """Every non-overlapping match in a raw text (normalised here)."""
        return self.find_all(normalize_for_matching(text))


def load_lexicon(path: str | Path) -> Lexicon:
    """A lexicon file: UTF-8, one term per line; blank lines and lines starting with "#" are skipped; terms are
    normalised with `normalize_for_matching` (so Traditional, full-width and upper-case spellings all match).
    Raises FileNotFoundError for a missing file and ValueError for a file without terms or not UTF-8."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"lexicon file not found: {p}")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"lexicon {p} is not UTF-8: {err}") from err
    terms = [s for line in lines if (s := line.strip()) and not s.startswith("#")]
    return Lexicon(terms, source=str(p))


class LexiconClassifier:
    """A flat term list as a stage-1 classifier: unsafe (category "unsafe", score 1.0) when the caption contains a
    term. For user lists (`"lexicon:/path/terms.txt"`); the default is `SafetyClassifier`. The detail of an unsafe
    answer is the first matched term."""

    name = "lexicon"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lexicon = load_lexicon(self.path)

    def predict(self, texts: list[str]) -> list[tuple[bool, str | None]]:
        cache: dict[Any, tuple[bool, str | None]] = {}
        out: list[tuple[bool, str | None]] = []
        for t in texts:
            key = t if isinstance(t, str) else as_text(t)
            ans = cache.get(key)
            if ans is None:
                term = self.lexicon.first(normalize_for_matching(key))
                ans = cache[key] = (term is not None, term)
            out.append(ans)
        return out


# ---------------------------------------------------------------------------------------------------------------------
# The learned model.

DEFAULT_SAFETY_MODEL = DATA_DIR / "safety_model.json"
MODEL_FORMAT = "danqing-safety-charngram-2"
MODEL_VIEWS = ("chars", "syllables")
"""The views the model reads a skeleton in: its characters, and its characters mapped to their toneless pinyin
syllable (`_syllables`: 博彩 and 菠菜 are the same two syllables), each as 1-3-grams."""


def _view(sk: str, view: str) -> str:
    if view == "chars":
        return sk
    if view == "syllables":
        return sk.translate(_syllables()[0])
    raise ValueError(f"unknown model view {view!r} (known: {MODEL_VIEWS})")


class CharNgramModel:
    """Logistic regressions over character 1-3-grams of a caption's skeleton (`SafetyClassifier.matching_form`), read
    in each of `views` (`MODEL_VIEWS`), TF-IDF weighted (1 + log tf, times idf, L2-normalised per view over the known
    n-grams), from a JSON file written by `benchmarks/bench_safety.py --train-model` (no pickle).

    `predict(sk)`: P(unsafe) (a binary regression over safe and unsafe captions) and the most likely unsafe category (a
    multinomial regression over the unsafe captions); `local_probability(sk)`: the highest P(unsafe) of the whole
    skeleton and of its windows of `window` characters (every `stride`), so that an ad pasted into ordinary text is
    judged on its own. The file states the sets it was trained on (`trained_on`) and the cut-offs chosen on held-out
    sets (see bench_safety.py): `threshold`, the P(unsafe) from which the model flags a caption the lexicon passed, and
    `veto`, the local P(unsafe) below which it clears a caption the lexicon flagged; it does neither on a caption of
    fewer than `min_distinct` distinct characters (a short or repetitive one gives a linear model too little to go
    on)."""

    def __init__(self, data: dict[str, Any], *, source: str = "<model>") -> None:
        if data.get("format") != MODEL_FORMAT:
            raise ValueError(f"{source}: not a {MODEL_FORMAT} model (format {data.get('format')!r})")
        try:
            self.threshold = float(data["threshold"])
            self.veto = float(data["veto"])
            self.window, self.stride = (int(x) for x in data["window"])
            self.min_distinct = int(data["min_distinct"])
            self.views: tuple[str, ...] = tuple(data["views"])
            self.intercept = float(data["intercept"])
            self.categories: tuple[str, ...] = tuple(data["categories"])
            self.cat_intercept = [float(x) for x in data["cat_intercept"]]
            self.trained_on: tuple[str, ...] = tuple(data.get("trained_on", ()))
            k = len(self.categories)
            self._feats: list[dict[str, tuple[float, float, tuple[float, ...]]]] = []
            for view in self.views:
                if view not in MODEL_VIEWS:
                    raise ValueError(f"unknown view {view!r}")
                table = {}
                for g, row in data["features"][view].items():
                    if len(row) != 2 + k:
                        raise ValueError(f"feature {g!r} has {len(row)} values, expected {2 + k}")
                    idf = float(row[0])
                    table[g] = (idf, idf * float(row[1]), tuple(float(x) for x in row[2:]))  # idf x binary weight
                self._feats.append(table)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{source}: malformed safety model: {err}") from err
        ok = (0.0 < self.threshold < 1.0 and 0.0 <= self.veto <= self.threshold and self.views
              and 0 < self.stride <= self.window and self.min_distinct >= 0
              and len(self.cat_intercept) == len(self.categories)
              and all(map(math.isfinite, (self.intercept, *self.cat_intercept))))
        if not ok:
            raise ValueError(f"{source}: malformed safety model (threshold {self.threshold}, veto {self.veto}, "
                             f"views {self.views})")
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> CharNgramModel:
        import json

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"safety model not found: {p}")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"safety model {p} is not UTF-8 JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{p}: malformed safety model (not a JSON object)")
        return cls(data, source=str(p))

    def _rows(self, sk: str) -> list[tuple[list[tuple[float, tuple[float, float, tuple[float, ...]]]], float]]:
        """Per view: (1 + log tf, the n-gram's (idf, idf x binary weight, category weights)) of each known n-gram, and
        the view's L2 norm of the tf-idf values."""
        out = []
        for view, table in zip(self.views, self._feats):
            text = _view(sk, view)
            grams = list(text)
            grams += [text[i : i + 2] for i in range(len(text) - 1)]
            grams += [text[i : i + 3] for i in range(len(text) - 2)]
            counts = Counter(grams)
            rows = []
            sq = 0.0
            for g in counts.keys() & table.keys():
                hit = table[g]
                c = counts[g]
                tf = 1.0 + math.log(c) if c > 1 else 1.0
                rows.append((tf, hit))
                sq += (tf * hit[0]) ** 2
            out.append((rows, math.sqrt(sq)))
        return out

    def _probability(self, rows) -> float:
        z = self.intercept
        for view_rows, norm in rows:
            if norm > 0:
                z += sum(tf * hit[1] for tf, hit in view_rows) / norm
        return 1.0 / (1.0 + math.exp(-z)) if z > -50 else 0.0

    def _category(self, rows) -> str:
        zc = list(self.cat_intercept)
        for view_rows, norm in rows:
            if norm > 0:
                for tf, (idf, _, cw) in view_rows:
                    v = tf * idf / norm
                    for j, x in enumerate(cw):
                        zc[j] += v * x
        return self.categories[max(range(len(zc)), key=zc.__getitem__)]

    def predict(self, sk: str) -> tuple[float, str]:
        """(P(unsafe), the most likely unsafe category) of a skeleton."""
        rows = self._rows(sk)
        return self._probability(rows), self._category(rows)

    def unsafe_probability(self, sk: str) -> float:
        return self._probability(self._rows(sk))

    def flag(self, sk: str) -> tuple[float, str | None]:
        """(P(unsafe), the most likely unsafe category when P >= `threshold`, else None): the category regression
        runs only for a flagged caption."""
        rows = self._rows(sk)
        p = self._probability(rows)
        return p, (self._category(rows) if p >= self.threshold else None)

    def local_probability(self, sk: str) -> float:
        """The highest P(unsafe) of `sk` and of its windows of `window` characters, every `stride` characters."""
        p = self.unsafe_probability(sk)
        w, step = self.window, self.stride
        if len(sk) > w:
            for i in range(0, len(sk) - w + step, step):
                p = max(p, self.unsafe_probability(sk[i : i + w]))
        return p


@functools.cache
def _load_model(path: str, mtime_ns: int) -> CharNgramModel:
    return CharNgramModel.load(path)


def load_model(path: str | Path | None = None) -> CharNgramModel:
    """The shipped `CharNgramModel` (or one at `path`), loaded once per process and file version."""
    p = Path(path) if path is not None else DEFAULT_SAFETY_MODEL
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as err:
        raise FileNotFoundError(f"safety model not found: {p}") from err
    return _load_model(str(p), mtime)


# ---------------------------------------------------------------------------------------------------------------------
# The default classifier.


@dataclass(frozen=True)
class SafetyScore:
    """One caption's verdict for one stage: the highest score among the stage's categories (0.0 when nothing
    matched), that category (None when the score is 0), and the evidence ("term|term|ctx:word", "" when none)."""

    score: float
    category: str | None
    evidence: str


NO_SCORE = SafetyScore(0.0, None, "")

_KEEP = "0-9a-z\\u3400-\\u4dbf\\u4e00-\\u9fff\\uf900-\\ufaff"
_GAP_RE = re.compile(f"(?<=[0-9a-z])[^{_KEEP}]+(?=[0-9a-z])")  # between two Latin characters: a token boundary
_DROP_RE = re.compile(f"[^{_KEEP}\\x1f]+")
_HAN_RE = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+$")
_LATIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_MASK = "\u25a1"  # what an [allow] phrase is replaced with: matches no term


def fold(text: Any) -> str:
    """NFKC (full-width -> ASCII), control / format characters removed, OpenCC Traditional -> Simplified, lower case;
    whitespace kept (it separates Latin tokens)."""
    t = as_text(text)
    if not t.isascii():
        t = to_simplified(unicodedata.normalize("NFKC", strip_controls(t)))
    return t.lower()


def skeleton(folded: str) -> str:
    """The matching form of a folded caption (`fold`): "+" read as 加, then everything but Han characters, Latin
    letters and digits removed, except that one space stays between two Latin tokens ("java av" keeps its boundary,
    "色*情" becomes 色情)."""
    if "+" in folded:
        folded = folded.replace("+", "加")
    return _DROP_RE.sub("", _GAP_RE.sub("\x1f", folded)).replace("\x1f", " ")


def _bigram_index(terms) -> dict[str, tuple[str, ...]]:
    """First two characters -> the terms starting with them, longest first."""
    index: dict[str, list[str]] = {}
    for t in terms:
        index.setdefault(t[:2], []).append(t)
    return {k: tuple(sorted(v, key=len, reverse=True)) for k, v in index.items()}


@dataclass
class _Entry:
    category: str
    kind: str  # "term" | "cue" | "context"
    weight: float
    source: str  # the term as written in the lexicon (evidence); pinyin forms carry their origin


@functools.cache
def _syllables() -> tuple[dict[int, str], int]:
    """Han code point -> one private-use character per toneless pinyin syllable (first reading), from pypinyin."""
    from pypinyin.pinyin_dict import pinyin_dict

    ids: dict[str, str] = {}
    table: dict[int, str] = {}
    for cp, readings in pinyin_dict.items():
        syl = _strip_tone(readings.split(",")[0])
        if not syl:
            continue
        ch = ids.get(syl)
        if ch is None:
            ch = ids[syl] = chr(0xF0000 + len(ids))  # supplementary private use area A
        table[cp] = ch
    return table, len(ids)


_TONES = str.maketrans("āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜüńňǹḿ", "aaaaeeeeiiiioooouuuuvvvvvnnnm")


def _strip_tone(s: str) -> str:
    return s.translate(_TONES).strip()


def _pinyin_of(term: str) -> list[str] | None:
    from pypinyin.pinyin_dict import pinyin_dict

    out = []
    for ch in term:
        readings = pinyin_dict.get(ord(ch))
        if not readings:
            return None
        out.append(_strip_tone(readings.split(",")[0]))
    return out


def _trie_regex(terms: Sequence[str]) -> re.Pattern[str] | None:
    """A regex matching, at one position, the longest of `terms` (a character trie, see `_trie_pattern`)."""
    trie: dict[str, Any] = {}
    for t in terms:
        node = trie
        for ch in t:
            node = node.setdefault(ch, {})
        node[""] = {}
    if not trie:
        return None
    return re.compile(_trie_pattern(trie))


class SafetyClassifier:
    """The default text-safety classifier: a weighted lexicon with evasion handling and context rules, and a learned
    model that has the last word (module docstring). `path`: a lexicon in the format of `data/safety_lexicon.txt`
    (default that file); `threshold`: the score at which `predict` answers unsafe (stage 1's categories);
    `context_factor`: what a news / public-service context (or the model's veto) multiplies the scores by; `model`:
    True for the shipped model, a path for another, False for the lexicon alone (`default_classifier()`, spec
    "safety", is the shipped lexicon with the shipped model). Raises FileNotFoundError / ValueError (with the line) for
    a bad lexicon or model."""

    name = "safety"

    def __init__(self, path: str | Path | None = None, *, threshold: float = DEFAULT_THRESHOLD,
                 context_factor: float = 0.3, model: str | Path | bool = False) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if not 0.0 <= context_factor <= 1.0:
            raise ValueError(f"context_factor must be in [0, 1], got {context_factor}")
        self.path = Path(path) if path is not None else DEFAULT_SAFETY_LEXICON
        self.threshold = threshold
        self.context_factor = context_factor
        self.stages: dict[str, str] = {}
        """category -> the stage it feeds ("source" or "text")."""
        self._load(self.path)
        # model: True for the shipped `CharNgramModel`, a path for another, False for the lexicon alone (this class is
        # also the building block for other lexicons, whose categories the shipped model may not know)
        if model is True:
            model = DEFAULT_SAFETY_MODEL
        self.model: CharNgramModel | None = load_model(model) if model else None
        if self.model is not None:
            unknown = [c for c in self.model.categories if c not in self.stages]
            if unknown:
                raise ValueError(f"{self.model.source}: categories {unknown} are missing from the lexicon")

    # -- loading -----------------------------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"safety lexicon not found: {path}")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"safety lexicon {path} is not UTF-8: {err}") from err
        section: str | None = None
        entries: dict[str, list[_Entry]] = {}
        patterns: list[tuple[re.Pattern[str], _Entry]] = []
        allow: list[str] = []
        raw_terms: list[tuple[str, _Entry]] = []
        for no, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{path}:{no}"
            if text.startswith("[") and text.endswith("]"):
                section = text[1:-1].strip()
                if section.startswith("cue:") or section not in ("categories", "cue", "contact", "context", "allow"):
                    name = section.split(":", 1)[-1]
                    if name not in self.stages:
                        raise ValueError(f"{where}: section [{section}] names a category missing from [categories]")
                continue
            if section is None:
                raise ValueError(f"{where}: line outside a section: {text!r}")
            if section == "categories":
                parts = text.split()
                if len(parts) != 2 or parts[1] not in STAGES or not re.fullmatch(r"[a-z][a-z0-9_]*", parts[0]):
                    raise ValueError(f"{where}: expected 'category stage' (stage one of {STAGES}), got {text!r}")
                self.stages[parts[0]] = parts[1]
                continue
            weight = 1.0
            label = ""
            if text.startswith("re:"):
                fields = text[3:].split("\t")
                if len(fields) not in (2, 3) or not fields[0].strip() or not fields[1]:
                    raise ValueError(f"{where}: expected 're:name<TAB>pattern[<TAB>weight]', got {text!r}")
                label, body, w = fields[0].strip(), fields[1], (fields[2] if len(fields) == 3 else "")
            else:
                parts = text.split()
                if len(parts) > 2:
                    raise ValueError(f"{where}: expected 'term' or 'term weight', got {text!r}")
                body, w = parts[0], (parts[1] if len(parts) == 2 else "")
            if w.strip():
                try:
                    weight = float(w)
                except ValueError:
                    raise ValueError(f"{where}: weight {w!r} is not a number") from None
                if not 0.0 < weight <= 1.0 or math.isnan(weight):
                    raise ValueError(f"{where}: weight {weight} outside (0, 1]")
            if section == "allow":
                allow.append(skeleton(fold(body)))
                continue
            shown = label or body
            if section == "context":
                entry = _Entry("*", "context", weight, shown)
            elif section == "contact":
                entry = _Entry("*", "contact", weight, shown)
            elif section == "cue":
                entry = _Entry("*", "cue", weight, shown)
            elif section.startswith("cue:"):
                entry = _Entry(section[4:], "cue", weight, shown)
            else:
                entry = _Entry(section, "term", weight, shown)
            if text.startswith("re:"):
                try:
                    patterns.append((re.compile(body), entry))
                except re.error as err:
                    raise ValueError(f"{where}: bad regular expression: {err}") from err
                continue
            key = skeleton(fold(body))
            # a single Han character (枪, 赌, 弩) is allowed as a weak term only: it needs a cue or another term, and
            # it counts only where no longer term covers it (手枪 is one match, not 手枪 + 枪)
            single = len(key) == 1 and entry.kind == "term" and weight <= 0.5 and _HAN_RE.match(key) is not None
            if len(key) < 2 and not single:
                raise ValueError(f"{where}: term {body!r} has fewer than two letters, digits or Han characters "
                                 "(a single Han character only as a term of weight <= 0.5)")
            if len(key) > _MAX_TERM_CHARS:
                raise ValueError(f"{where}: term longer than {_MAX_TERM_CHARS} characters")
            raw_terms.append((key, entry))
        if not any(e.kind == "term" for _, e in raw_terms) and not patterns:
            raise ValueError(f"{path}: the safety lexicon has no terms")
        for key, entry in raw_terms:
            entries.setdefault(key, []).append(entry)
        # pinyin forms: strong Han terms with one character spelled in pinyin (luo聊, 冰du)
        for key, entry in raw_terms:
            if entry.kind != "term" or entry.weight < 0.6 or len(key) < 2 or not _HAN_RE.match(key):
                continue
            syl = _pinyin_of(key)
            if syl is None:
                continue
            for i in range(len(key)):
                variant = key[:i] + syl[i] + key[i + 1 :]
                if variant not in entries:
                    entries[variant] = [_Entry(entry.category, "term", entry.weight, f"{entry.source}~{variant}")]
        self._entries = entries
        self._latin_edge = {t: (t[0] in _LATIN, t[-1] in _LATIN) for t in entries}
        self._by_bigram = _bigram_index(k for k in entries if len(k) >= 2)
        self._singles = {k: v for k, v in entries.items() if len(k) == 1}
        self._allow_re = _trie_regex([a for a in allow if a])
        self._patterns = patterns
        # homophones: Han terms of 3+ characters, in syllable space
        table, _ = _syllables()
        self._syl_table = table
        homo: dict[str, list[_Entry]] = {}
        for key, entry in raw_terms:
            if entry.kind == "term" and entry.weight >= 0.6 and len(key) >= 3 and _HAN_RE.match(key):
                sk = key.translate(table)
                homo.setdefault(sk, []).append(_Entry(entry.category, "term", entry.weight * 0.9, f"{entry.source}~homophone"))
        self._homo = homo
        self._homo_by_bigram = _bigram_index(homo)
        # a caption can hold a homophone only where two adjacent characters sound like a term's first two: checked in
        # syllable space (the caption translated by `table`, one character per character), which holds one entry per
        # term instead of every pair of characters that sound like it (4 M strings, 0.5 GB per process)
        self._homo_syl_pairs = frozenset(k[:2] for k in homo)

    # -- scoring -----------------------------------------------------------------------------------------------------
    def _matches(self, sk: str) -> list[_Entry]:
        found: list[_Entry] = []
        by_bigram, entries, edges = self._by_bigram, self._entries, self._latin_edge
        homo_at = -1
        pairs = self._homo_syl_pairs
        syl_sk = sk.translate(self._syl_table)  # same length: the table maps a character to one character
        n = len(sk)
        covered = 0  # end of the furthest-reaching match so far: a term inside it is part of it, not another hit
        singles = self._singles
        for i in range(n - 1):
            bg = sk[i : i + 2]
            cands = by_bigram.get(bg)
            if cands is None:
                if i >= covered and bg[0] in singles:
                    found.extend(singles[bg[0]])
                    covered = i + 1
            else:
                hit = False
                for term in cands:  # longest first: the longest term starting here
                    end = i + len(term)
                    if end <= covered:
                        break
                    if sk.startswith(term, i):
                        lead, trail = edges[term]
                        if (lead and i > 0 and sk[i - 1] in _LATIN) or (trail and end < n and sk[end] in _LATIN):
                            continue
                        found.extend(entries[term])
                        covered = end
                        hit = True
                        break
                if not hit and i >= covered and sk[i] in singles:
                    found.extend(singles[sk[i]])
                    covered = i + 1
            if homo_at < 0 and syl_sk[i : i + 2] in pairs:
                homo_at = i
        if n and n - 1 >= covered and sk[-1] in singles:
            found.extend(singles[sk[-1]])
        for rx, entry in self._patterns:
            if rx.search(sk):
                found.append(entry)
        if homo_at >= 0:
            syl = syl_sk[homo_at:]
            for i in range(len(syl) - 1):
                for key in self._homo_by_bigram.get(syl[i : i + 2], ()):
                    if syl.startswith(key, i):
                        found.extend(self._homo[key])
                        break
        return found

    def matching_form(self, text: Any, *, folded: bool = False) -> str:
        """The skeleton terms and the model see: folded, reduced to Han / Latin / digits, [allow] phrases blanked."""
        sk = skeleton(as_text(text).lower() if folded else fold(text))
        if sk and self._allow_re is not None and self._allow_re.search(sk):
            sk = self._allow_re.sub(lambda m: _MASK * len(m.group()), sk)
        return sk

    def explain(self, text: Any, *, folded: bool = False) -> dict[str, tuple[float, list[str]]]:
        """Per category with a non-zero score: (score, evidence). `folded`: the text is already NFKC-folded,
        Simplified and lower-cased (stage 2's cleaned caption), so only whitespace is removed."""
        sk = self.matching_form(text, folded=folded)
        if not sk:
            return {}
        found = self._matches(sk)
        out = self._explain_lexicon(found)
        if self.model is not None:
            self._second_opinion(sk, out)
        return out

    def _second_opinion(self, sk: str, out: dict[str, tuple[float, list[str]]]) -> None:
        """The model's say (`CharNgramModel`), only for a caption of at least `min_distinct` distinct characters (a
        shorter or repetitive one gives a linear model too little to go on: the lexicon's scores stand):
        - when the lexicon flagged a category and the model's local P(unsafe) (the highest of the caption and of its
          windows) is below its `veto`, every flagged category is cleared as context clears it (score times
          `context_factor`, evidence "model-cleared:p"): the caption uses a flagged word the way safe text does (a film
          review naming a scam, a cocktail, game talk); an ad pasted into ordinary text is judged on its own window;
        - when nothing reached 0.5 and P(unsafe) p >= the model's `threshold` t, the model's category scores
          0.5 + 0.5 * (p - t) / (1 - t) (>= 0.5, so its stage flags it), evidence "model:p";
        - otherwise the lexicon's scores stand (the flagged ones carry "model:p")."""
        model = self.model
        flagged = [c for c, (sc, _) in out.items() if sc >= DEFAULT_THRESHOLD]
        enough = len(set(sk)) >= model.min_distinct
        if flagged:
            if not enough:
                return
            p = model.local_probability(sk)
            for c in flagged:
                sc, ev = out[c]
                out[c] = (round(sc * self.context_factor, 4), [*ev, f"model-cleared:{p:.2f}"]) if p < model.veto \
                    else (sc, [*ev, f"model:{p:.2f}"])
            return
        p, cat = model.flag(sk)
        if cat is not None and enough:
            t = model.threshold
            prev = out.get(cat, (0.0, []))[1]
            out[cat] = (round(0.5 + 0.5 * (p - t) / (1.0 - t), 4), [*prev, f"model:{p:.2f}"])

    def _explain_lexicon(self, found: list[_Entry]) -> dict[str, tuple[float, list[str]]]:
        if not any(e.kind == "term" for e in found):
            return {}  # cues and context alone score nothing
        terms: dict[str, dict[str, float]] = {}
        terms_seen = {e.category for e in found if e.kind == "term"}
        cues: dict[str, dict[str, float]] = {}
        context: dict[str, float] = {}
        # Context clearing. News, court and public-service captions use the sales words of the ads they report on
        # ("非法出售枪支被判刑"), but never a way to reach a seller: so a contact cue ([contact]: 私聊, 加微信, 货到付款,
        # or a contact-handle / phone spam term) always keeps the score; a sales cue ([cue], or a cue of weight >= 0.4
        # of a matched category: 出售, 下载) keeps it only against weak context (one generic word such as 提醒, 宣传,
        # 教育: weight < 1), not against strong context (a law-enforcement / court event such as 缴获, 判处, or
        # several context words whose weights sum to >= 1). Context words of weight < 0.5 (比赛) need company.
        contact = sales = False
        for e in found:
            if e.kind == "context":
                context[e.source] = max(e.weight, context.get(e.source, 0.0))
            elif e.kind in ("cue", "contact"):
                cues.setdefault(e.category, {})[e.source] = max(e.weight, cues.get(e.category, {}).get(e.source, 0.0))
                contact = contact or e.kind == "contact"
                sales = sales or e.category == "*" or (e.category in terms_seen and e.weight >= 0.4)
            else:
                bucket = terms.setdefault(e.category, {})
                if e.source.endswith("~homophone") and e.source[: -len("~homophone")] in bucket:
                    continue  # the term itself matched: its homophone index found the same place
                bucket[e.source] = max(e.weight, bucket.get(e.source, 0.0))
                contact = contact or (e.category == "spam" and e.weight >= 0.5)
        strength = sum(context.values())  # a lone weak word (比赛 0.4) is no context; two are
        clear = strength >= 0.5 and not contact and (not sales or strength >= 1.0)
        out: dict[str, tuple[float, list[str]]] = {}
        for cat, ts in terms.items():
            evidence = sorted(ts, key=lambda k: -ts[k])
            weights = list(ts.values())
            for pool in (cues.get(cat, {}), cues.get("*", {}) if cat != "spam" else {}):
                for k, w in pool.items():
                    if k not in ts:
                        weights.append(w)
                        evidence.append(f"cue:{k}")
            score = 1.0 - math.prod(1.0 - w for w in weights)
            if clear:
                score *= self.context_factor
                evidence.append("ctx:" + "|".join(dict.fromkeys(context)))
            out[cat] = (round(score, 4), evidence)
        return out

    def score(self, texts: Sequence[Any], stage: str, *, folded: bool = False) -> list[SafetyScore]:
        """Per text, the `SafetyScore` of `stage` ("source" or "text"): the best of that stage's categories.
        Repeated texts are scored once. `folded`: see `explain`."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        cache: dict[Any, SafetyScore] = {}
        out: list[SafetyScore] = []
        for t in texts:
            key = t if isinstance(t, str) else as_text(t)
            ans = cache.get(key)
            if ans is None:
                best = NO_SCORE
                for cat, (sc, ev) in self.explain(key, folded=folded).items():
                    if self.stages.get(cat) == stage and sc > best.score:
                        best = SafetyScore(sc, cat, "|".join(ev))
                ans = cache[key] = best
            out.append(ans)
        return out

    def predict(self, texts: list[str]) -> list[tuple[bool, str | None]]:
        """The `TextSafetyClassifier` answer: stage 1's score >= `threshold`, with "category:evidence"."""
        return [(s.score >= self.threshold, f"{s.category}:{s.evidence}" if s.category else None)
                for s in self.score(texts, "source")]


def stage_scores(classifier: TextSafetyClassifier, texts: Sequence[str | None], stage: str, *,
                 folded: bool = False) -> list[SafetyScore]:
    """Per text, the classifier's `SafetyScore` for `stage`, with the contract checked (one score per text, a score
    in [0, 1] that is not NaN, a str or None category). A classifier without `score` answers through `predict`:
    stage "source" gets 1.0 / 0.0 with category "unsafe" and its detail as evidence, stage "text" gets 0.0."""
    clean = [as_text(t) for t in texts]
    name = getattr(classifier, "name", type(classifier).__name__)
    scorer = getattr(classifier, "score", None)
    if not callable(scorer):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if stage != "source":
            return [NO_SCORE] * len(clean)
        return [SafetyScore(1.0, "unsafe", detail or "") if unsafe else NO_SCORE
                for unsafe, detail in run_classifier(classifier, clean)]
    kwargs = {"folded": True} if folded and isinstance(classifier, SafetyClassifier) else {}
    answers = list(scorer(clean, stage, **kwargs))
    if len(answers) != len(clean):
        raise ValueError(f"text-safety classifier {name!r} returned {len(answers)} scores for {len(clean)} texts")
    for a in answers:
        ok = isinstance(a, SafetyScore) and isinstance(a.score, (int, float)) and 0.0 <= a.score <= 1.0
        if not ok or (a.category is not None and not isinstance(a.category, str)):
            raise ValueError(f"text-safety classifier {name!r} returned {a!r}, not a SafetyScore with score in [0, 1]")
    return answers


@functools.cache
def _default_classifier(path: str, mtime_ns: int, model: bool) -> SafetyClassifier:
    return SafetyClassifier(path, model=model)


def default_classifier(path: str | Path | None = None, *, model: bool = True) -> SafetyClassifier:
    """The shipped `SafetyClassifier` (or one over `path`), cached per lexicon file version; `model`: with the shipped
    learned model (`CharNgramModel`; its categories must all be in the lexicon at `path`)."""
    p = Path(path) if path is not None else DEFAULT_SAFETY_LEXICON
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as err:
        raise FileNotFoundError(f"safety lexicon not found: {p}") from err
    return _default_classifier(str(p), mtime, model)


_SPEC_HELP = ('"safety", "safety-lexicon", "safety:/path/to/lexicon.txt", "lexicon:/path/to/terms.txt" or '
              '"package.module:ClassName"')


def load_text_safety_classifier(spec: str) -> TextSafetyClassifier:
    """A text-safety classifier from a configuration string.

    - `"safety"`: the shipped `SafetyClassifier` (the default of both stages): lexicon and learned model;
    - `"safety-lexicon"`: the shipped lexicon alone (no model: its rules only, as before the model shipped);
    - `"safety:/path/to/lexicon.txt"`: a `SafetyClassifier` over another lexicon in the same format, no model;
    - `"lexicon:/path/to/file.txt"`: `LexiconClassifier(path)`, a flat term list (stage 1 only);
    - `"some.module:ClassName"`: the class is imported and instantiated with no arguments; it must have a `name` and a
      `predict(texts)` method (see `TextSafetyClassifier`), and may have `score(texts, stage)` (see `stage_scores`).
    Raises ValueError (bad spec, import failure, class missing or failing to construct), FileNotFoundError (lexicon
    path) or TypeError (the object does not implement the interface), each naming the spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty text-safety classifier spec; expected {_SPEC_HELP}")
    spec = spec.strip()
    if spec == "safety":
        return default_classifier()
    if spec == "safety-lexicon":
        return default_classifier(model=False)
    head, sep, tail = spec.partition(":")
    if head in ("lexicon", "safety"):
        if not tail.strip():
            raise ValueError(f"spec {spec!r} names no lexicon file; expected {_SPEC_HELP}")
        return LexiconClassifier(tail.strip()) if head == "lexicon" else default_classifier(tail.strip(), model=False)
    if not sep or not head or not tail:
        raise ValueError(f"bad text-safety classifier spec {spec!r}; expected {_SPEC_HELP}")
    module_name, class_name = head.strip(), tail.strip()
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ValueError(f"spec {spec!r}: cannot import module {module_name!r}: {err}") from err
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"spec {spec!r}: module {module_name!r} has no attribute {class_name!r}")
    if not callable(cls):
        raise ValueError(f"spec {spec!r}: {module_name}.{class_name} is not a class or factory")
    try:
        obj = cls()
    except Exception as err:
        raise ValueError(f"spec {spec!r}: {module_name}.{class_name}() failed: {err}") from err
    if not callable(getattr(obj, "predict", None)) or not isinstance(getattr(obj, "name", None), str):
        raise TypeError(
            f"spec {spec!r}: {module_name}.{class_name} does not implement TextSafetyClassifier "
            "(needs a str attribute `name` and a method `predict(texts) -> list[tuple[bool, str | None]]`)"
        )
    return obj


def run_classifier(classifier: TextSafetyClassifier, texts: Sequence[str | None]) -> list[tuple[bool, str | None]]:
    """`classifier.predict` with the contract checked: sanitised str inputs, one (bool, str | None) answer per text.

    A plug-in that returns the wrong number of answers or malformed ones raises ValueError naming the classifier,
    instead of silently misaligning verdicts with captions.
    """
    clean = [as_text(t) for t in texts]
    answers = classifier.predict(clean)
    name = getattr(classifier, "name", type(classifier).__name__)
    try:
        answers = list(answers)
    except TypeError as err:
        raise ValueError(f"text-safety classifier {name!r} returned {type(answers).__name__}, not a list") from err
    if len(answers) != len(clean):
        raise ValueError(f"text-safety classifier {name!r} returned {len(answers)} answers for {len(clean)} texts")
    out: list[tuple[bool, str | None]] = []
    for a in answers:
        try:
            unsafe, detail = a
        except (TypeError, ValueError) as err:
            raise ValueError(f"text-safety classifier {name!r} returned {a!r}, not (bool, str | None)") from err
        out.append((bool(unsafe), None if detail is None else str(detail)))
    return out
