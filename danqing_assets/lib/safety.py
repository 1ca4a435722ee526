"""Text safety: a pluggable classifier interface (stage 1) and lexicon matching (stage 1, stage-2 sensitive list).

The paper uses a ~1M-parameter binary text-safety classifier whose weights are not public. The default here is a
lexicon "classifier" (`danqing_assets/data/unsafe_lexicon.txt`); a trained model plugs in through
`load_text_safety_classifier("my.module:MyClassifier")`, as long as it implements `TextSafetyClassifier`.
"""

from __future__ import annotations

import functools
import importlib
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from danqing_assets.lib.text.normalize import as_text, strip_controls, to_simplified

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_UNSAFE_LEXICON = DATA_DIR / "unsafe_lexicon.txt"
DEFAULT_SENSITIVE_LEXICON = DATA_DIR / "sensitive_lexicon.txt"

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


def normalize_simplified(text: str) -> str:
    """`normalize_for_matching` for the stage-2 cleaned caption, which is already Simplified, free of control
    characters and has full-width letters and digits folded: lower-case and whitespace removed only. (NFKC would cost
    ~5 us per caption, mostly to fold full-width punctuation, which no term contains.)"""
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


@functools.cache
def _cached_lexicon(path: str, mtime_ns: int) -> Lexicon:
    return load_lexicon(path)


def load_sensitive_lexicon(path: str | Path | None = None) -> Lexicon:
    """The stage-2 sensitive / NSFW lexicon (default `data/sensitive_lexicon.txt`), cached per file version."""
    p = Path(path) if path is not None else DEFAULT_SENSITIVE_LEXICON
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as err:
        raise FileNotFoundError(f"lexicon file not found: {p}") from err
    return _cached_lexicon(str(p), mtime)


class LexiconClassifier:
    """The default stage-1 text-safety "classifier": unsafe when the caption contains a lexicon term.

    `path` defaults to `data/unsafe_lexicon.txt`. The detail of an unsafe answer is the first matched term.
    """

    name = "lexicon"

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else DEFAULT_UNSAFE_LEXICON
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


_SPEC_HELP = '"lexicon", "lexicon:/path/to/terms.txt" or "package.module:ClassName"'


def load_text_safety_classifier(spec: str) -> TextSafetyClassifier:
    """A text-safety classifier from a configuration string.

    - `"lexicon"`: `LexiconClassifier()` with the shipped lexicon;
    - `"lexicon:/path/to/file.txt"`: `LexiconClassifier(path)`;
    - `"some.module:ClassName"`: the class is imported and instantiated with no arguments; it must have a `name` and a
      `predict(texts)` method (see `TextSafetyClassifier`).
    Raises ValueError (bad spec, import failure, class missing or failing to construct), FileNotFoundError (lexicon
    path) or TypeError (the object does not implement the interface), each naming the spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty text-safety classifier spec; expected {_SPEC_HELP}")
    spec = spec.strip()
    if spec == "lexicon":
        return LexiconClassifier()
    head, sep, tail = spec.partition(":")
    if head == "lexicon":
        if not tail.strip():
            raise ValueError(f"spec {spec!r} names no lexicon file; expected {_SPEC_HELP}")
        return LexiconClassifier(tail.strip())
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
