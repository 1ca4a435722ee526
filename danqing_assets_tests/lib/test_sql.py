import polars as pl
import pytest

from danqing_assets.lib.sql import SQL_DIR, run_sql, sql_parameters

S1 = "s1_source_selection/source_selected_pairs.sql"
PARAMS = {"require_chinese_page": True, "min_words": 5, "max_words": 60}


def scored(**overrides):
    row = {
        "pair_id": "p0",
        "snapshot": "s",
        "warc_file": "a.warc.gz",
        "warc_offset": 0,
        "img_index": 0,
        "page_url": "https://x.cn/",
        "domain": "x.cn",
        "image_url": "https://x.cn/1.jpg",
        "caption": "一只 橘猫 在 窗台 上 晒 太阳",
        "page_language": "zho",
        "blacklisted_by": None,
        "word_count": 10,
        "unsafe": False,
        "unsafe_term": None,
        "caption_norm": "一只橘猫在窗台上晒太阳",
    }
    row.update(overrides)
    return row


def decide(rows, **params):
    df = pl.DataFrame(rows, schema_overrides={"blacklisted_by": pl.String, "unsafe_term": pl.String, "page_language": pl.String})
    out = run_sql(S1, tables={"scored": df}, params={**PARAMS, **params})
    return dict(zip(out["pair_id"], zip(out["reason"], out["detail"])))


@pytest.mark.parametrize(
    "overrides, reason, detail",
    [
        ({}, None, None),
        ({"page_language": "zho,eng"}, None, None),
        ({"page_language": "eng,zho"}, None, None),  # zho anywhere in CC's list counts
        ({"page_language": "jpn"}, "not_chinese_page", "page_language=jpn"),
        ({"page_language": None}, "not_chinese_page", "page_language="),
        ({"blacklisted_by": "baidu.com", "domain": "image.baidu.com"}, "blacklisted_domain", "domain=image.baidu.com listed=baidu.com"),
        ({"caption": "  ", "word_count": 0}, "caption_missing", None),
        ({"word_count": 4}, "caption_too_short", "words=4"),
        ({"word_count": 5}, None, None),
        ({"word_count": 60}, None, None),
        ({"word_count": 61}, "caption_too_long", "words=61"),
        ({"unsafe": True, "unsafe_term": "赌博"}, "unsafe_text", "赌博"),
        # the first failing rule wins
        ({"page_language": "eng", "word_count": 1, "unsafe": True}, "not_chinese_page", "page_language=eng"),
    ],
)
def test_each_stage1_rule_gives_its_reason(overrides, reason, detail):
    assert decide([scored(**overrides)])["p0"] == (reason, detail)


def test_thresholds_are_parameters():
    assert decide([scored(word_count=4)], min_words=3)["p0"] == (None, None)
    assert decide([scored(page_language="eng")], require_chinese_page=False)["p0"] == (None, None)


def test_exact_duplicates_keep_the_first_in_file_order_among_passing_pairs():
    rows = [
        scored(pair_id="late", warc_file="b.warc.gz", warc_offset=0),
        scored(pair_id="first", warc_file="a.warc.gz", warc_offset=900),
        scored(pair_id="second", warc_file="a.warc.gz", warc_offset=900, img_index=3),
        # an earlier copy that fails another rule does not make the passing ones duplicates
        scored(pair_id="rejected_early", warc_file="a.warc.gz", warc_offset=1, word_count=2),
        scored(pair_id="other_image", image_url="https://x.cn/2.jpg"),
    ]
    got = decide(rows)
    assert got["first"] == (None, None)
    assert got["second"] == ("duplicate_pair", "duplicate_of=first")
    assert got["late"] == ("duplicate_pair", "duplicate_of=first")
    assert got["rejected_early"][0] == "caption_too_short"
    assert got["other_image"] == (None, None)


def test_parameters_must_match_exactly():
    with pytest.raises(ValueError, match="missing parameters"):
        run_sql(S1, tables={"scored": pl.DataFrame([scored()])}, params={"min_words": 5})
    with pytest.raises(ValueError, match="unused"):
        run_sql(S1, tables={"scored": pl.DataFrame([scored()])}, params={**PARAMS, "bogus": 1})


def test_every_sql_file_uses_named_parameters_only():
    for path in SQL_DIR.rglob("*.sql"):
        text = path.read_text()
        assert "{" not in text.replace("{}", ""), f"{path} looks like a format string"
        assert "?" not in text, f"{path} uses positional parameters"
    assert sql_parameters("select $a, '$b' -- $c\n, $d") >= {"a", "d"}
