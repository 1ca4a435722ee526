"""Text-safety classifier interface, lexicon matching and classifier spec loading."""

from __future__ import annotations

import random
import textwrap

import pytest

from danqing_assets.lib.safety import (
    DEFAULT_SENSITIVE_LEXICON,
    DEFAULT_UNSAFE_LEXICON,
    Lexicon,
    LexiconClassifier,
    TextSafetyClassifier,
    load_lexicon,
    load_sensitive_lexicon,
    load_text_safety_classifier,
    normalize_for_matching,
    run_classifier,
)


def _write(path, body: str, encoding: str = "utf-8"):
    path.write_text(textwrap.dedent(body), encoding=encoding)
    return path


def test_normalize_for_matching():
    assert normalize_for_matching("色 情網站") == "色情网站"
    assert normalize_for_matching("ＡＶ女優") == "av女优"
    assert normalize_for_matching("赌\u200b博\x00!") == "赌博!"
    assert normalize_for_matching(None) == ""
    assert normalize_for_matching("\ud800賭博") == "\ufffd赌博"


def test_load_lexicon_comments_blank_lines_and_normalised_terms(tmp_path):
    path = _write(
        tmp_path / "lex.txt",
        """\
        # a comment
        賭博

          ＶＩＰ通道
        # 色情 commented out
        赌博
        """,
        encoding="utf-8-sig",  # a BOM must not become part of the first term
    )
    lex = load_lexicon(path)
    assert lex.terms == ("赌博", "vip通道")  # t2s, NFKC, lower-cased, deduplicated, comments skipped
    assert len(lex) == 2


def test_load_lexicon_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_lexicon(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="no terms"):
        load_lexicon(_write(tmp_path / "empty.txt", "# only comments\n\n"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_lexicon(bad)


def test_lexicon_leftmost_longest_non_overlapping_matches():
    lex = Lexicon(["赌", "赌博", "网络赌场", "博彩"])
    assert lex.find_all("赌博网站") == ["赌博"]
    assert lex.find_all("网络赌场和博彩和赌") == ["网络赌场", "博彩", "赌"]
    assert lex.first("正常的句子") is None
    assert lex.find_all("") == []
    assert lex.matches("網絡賭場") == ["网络赌场"]
    with pytest.raises(ValueError):
        Lexicon(["", "  "])


def test_lexicon_agrees_with_naive_substring_search_on_a_large_random_lexicon():
    rng = random.Random(3)
    alphabet = "赌博彩色情网站视频成人毒品枪支代孕血腥的了是我你他ab1"
    terms = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(2, 5))) for _ in range(3000)})
    lex = Lexicon(terms)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        naive = any(t in text for t in lex.terms)
        assert (lex.first(text) is not None) == naive, text
        for m in lex.find_all(text):
            assert m in lex.terms and m in text


def test_default_lexicon_classifier_flags_variants_and_reports_the_term():
    clf = LexiconClassifier()
    assert clf.name == "lexicon" and isinstance(clf, TextSafetyClassifier)
    texts = ["色 情網站大全", "ＡＶ女優合集", "网络赌场百家乐", "美丽的西湖风景", "", None, "春天的花"]
    assert clf.predict(texts) == [
        (True, "色情"),
        (True, "av女优"),
        (True, "网络赌场"),
        (False, None),
        (False, None),
        (False, None),
        (False, None),
    ]


def test_every_shipped_term_matches_itself_and_its_traditional_spelling():
    import opencc

    s2t = opencc.OpenCC("s2t")
    for path in (DEFAULT_UNSAFE_LEXICON, DEFAULT_SENSITIVE_LEXICON):
        lex = load_lexicon(path)
        assert len(lex) >= 15
        for term in lex.terms:
            assert lex.matches(f"前缀{term}后缀"), term
            assert lex.matches(s2t.convert(term).upper()), term


def test_load_sensitive_lexicon_default_and_cache(tmp_path):
    assert load_sensitive_lexicon().matches("性感美女写真") == ["性感美女"]
    path = _write(tmp_path / "s.txt", "小猫\n")
    assert load_sensitive_lexicon(path) is load_sensitive_lexicon(path)


def test_load_text_safety_classifier_lexicon_specs(tmp_path):
    assert isinstance(load_text_safety_classifier("lexicon"), LexiconClassifier)
    assert load_text_safety_classifier(" lexicon ").path == DEFAULT_UNSAFE_LEXICON
    custom = _write(tmp_path / "terms.txt", "小猫\n")
    clf = load_text_safety_classifier(f"lexicon:{custom}")
    assert clf.predict(["一只小貓", "小狗"]) == [(True, "小猫"), (False, None)]
    with pytest.raises(FileNotFoundError):
        load_text_safety_classifier(f"lexicon:{tmp_path / 'missing.txt'}")


def test_load_text_safety_classifier_plugin(tmp_path, monkeypatch):
    _write(
        tmp_path / "my_safety_plugin.py",
        """\
        class LengthClassifier:
            name = "length"

            def predict(self, texts):
                return [(len(t) > 5, f"len={len(t)}") for t in texts]


        class Broken:
            def __init__(self):
                raise RuntimeError("model weights missing")


        class NoPredict:
            name = "nope"


        NOT_CALLABLE = 3
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clf = load_text_safety_classifier("my_safety_plugin:LengthClassifier")
    assert clf.name == "length"
    assert run_classifier(clf, ["短", "这是一个很长的句子", None]) == [
        (False, "len=1"),
        (True, "len=9"),
        (False, "len=0"),
    ]
    with pytest.raises(ValueError, match="model weights missing"):
        load_text_safety_classifier("my_safety_plugin:Broken")
    with pytest.raises(TypeError, match="does not implement TextSafetyClassifier"):
        load_text_safety_classifier("my_safety_plugin:NoPredict")
    with pytest.raises(ValueError, match="not a class"):
        load_text_safety_classifier("my_safety_plugin:NOT_CALLABLE")
    with pytest.raises(ValueError, match="has no attribute 'Missing'"):
        load_text_safety_classifier("my_safety_plugin:Missing")


@pytest.mark.parametrize("spec", ["", "   ", "lexicon:", "lexicon:  ", "nonsense", ":Cls", "module:", None])
def test_load_text_safety_classifier_bad_specs(spec):
    with pytest.raises(ValueError, match="expected"):
        load_text_safety_classifier(spec)


def test_load_text_safety_classifier_import_error():
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        load_text_safety_classifier("no_such_module_xyz:Classifier")


def test_run_classifier_checks_the_contract():
    class WrongLength:
        name = "wrong_length"

        def predict(self, texts):
            return [(False, None)]

    class Malformed:
        name = "malformed"

        def predict(self, texts):
            return [True for _ in texts]

    with pytest.raises(ValueError, match="1 answers for 2 texts"):
        run_classifier(WrongLength(), ["a", "b"])
    with pytest.raises(ValueError, match="not \\(bool, str \\| None\\)"):
        run_classifier(Malformed(), ["a"])
    assert run_classifier(LexiconClassifier(), ["赌博", "好"]) == [(True, "赌博"), (False, None)]
