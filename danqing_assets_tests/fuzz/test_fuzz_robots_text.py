"""Fuzzing the robots.txt parser (`fetch/robots.py`, protego underneath) and the stage-2 caption scorer
(`lib/text/scoring.score_captions`): generated robots.txt files (every directive, wildcards, odd bytes, long lines)
and arbitrary captions (any Unicode, surrogates, controls, long repeats). Held: answers of the right type, no
exception, no hang, bounded memory."""

from __future__ import annotations

import math

import pytest

from hypothesis import given
from hypothesis import strategies as st

from danqing_assets.lib.fetch.robots import parse_robots, rules_from_response, x_robots_optout
from danqing_assets_tests.fuzz.conftest import corpus, time_limit

_path = st.text(st.sampled_from("/*$?=&%.-_~aZ09中\\ \t#"), max_size=30)
_line = st.one_of(
    st.builds("{}: {}".format, st.sampled_from(["User-agent", "user-AGENT", "Allow", "Disallow", "Crawl-delay",
                                                "Sitemap", "Request-rate", "Host", "Noindex", "Clean-param", ""]),
              st.one_of(_path, st.sampled_from(["*", "danqing-assets", "2.5", "-1", "nan", "inf", "1e999", "1/0",
                                                "0x10", "  ", "danqing-assets/0.1"]))),
    st.text(max_size=40),
)
_robots = st.one_of(st.lists(_line, max_size=30).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
                    st.binary(max_size=1024))
_urls = st.builds("http://example.cn{}".format, _path)


@given(body=_robots, urls=st.lists(_urls, min_size=1, max_size=4),
       token=st.sampled_from(["danqing-assets", "*", "", "googlebot"]))
def test_robots_txt(body: bytes, urls: list[str], token: str) -> None:
    with time_limit(10):
        rules = parse_robots(body)
        for url in urls:
            assert isinstance(rules.can_fetch(token, url), bool)
        delay = rules.crawl_delay(token)
    assert delay is None or isinstance(delay, float)


@given(status=st.one_of(st.none(), st.integers(-1, 999)), body=st.one_of(st.none(), st.binary(max_size=64)))
def test_robots_status_handling(status, body) -> None:
    rules = rules_from_response(status, body)
    assert isinstance(rules.can_fetch("danqing-assets", "http://example.cn/a.jpg"), bool)


@given(values=st.lists(st.text(max_size=60), max_size=5))
def test_x_robots_tag(values: list[str]) -> None:
    assert isinstance(x_robots_optout(values, "danqing-assets"), bool)


_caption = st.one_of(st.none(), st.text(max_size=200),
                     st.text(st.characters(codec="utf-8"), max_size=80),
                     st.builds(str.__mul__, st.sampled_from(["哈", "😀", "\u200b", "ab", "[UNK]", "的"]),
                               st.integers(0, 3000)),
                     st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=8))


@pytest.fixture(scope="module")
def warm_scorer() -> None:
    """First use loads jieba, the vocabulary, the lexicon and the language models (seconds, hundreds of MB): done
    once, before memory is traced, so the bound measures one call's own allocations."""
    from danqing_assets.lib.text.scoring import score_captions

    score_captions(["预热：词典和词表只载入一次", "an English caption", None, "😀😀", "かな漢字", "\ud800"])


@given(captions=st.lists(_caption, min_size=1, max_size=8))
def test_caption_scores(warm_scorer, captions: list[str | None], peak_memory) -> None:
    from danqing_assets.lib.text.scoring import SCORE_COLUMNS, score_captions

    with peak_memory(64 * 2**20), time_limit(20):
        scores = score_captions(captions)
    assert scores.height == len(captions) and tuple(scores.columns[: len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    for row in scores.iter_rows(named=True):
        assert 0.0 <= row["han_share"] <= 1.0 and 0.0 <= row["entropy"] <= 1.0, row
        assert not math.isnan(row["entropy"]) and row["noun_count"] >= 0 and row["unk_count"] >= 0, row


def test_corpus() -> None:
    """Kept robots.txt seeds and findings (corpus/robots-*)."""
    found = corpus("robots")
    assert found
    for body in found:
        rules = parse_robots(body)
        assert isinstance(rules.can_fetch("danqing-assets", "http://example.cn/private/a.jpg"), bool)
