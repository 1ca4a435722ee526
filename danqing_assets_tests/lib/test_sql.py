import polars as pl
import pytest

from danqing_assets.lib.sql import SQL_DIR, run_sql, sql_parameters, string_literals

S1 = "s1_source_selection/source_selected_pairs.sql"
PARAMS = {"require_chinese_page": True, "min_words": 5, "max_words": 60, "min_unsafe_score": 0.5}


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
        "unsafe_score": 0.0,
        "unsafe_category": None,
        "unsafe_term": None,
        "caption_norm": "一只橘猫在窗台上晒太阳",
    }
    row.update(overrides)
    return row


def decide(rows, **params):
    import hashlib

    rows = [{"caption_md5": hashlib.md5((r["caption"] or "").encode()).hexdigest(), **r} for r in rows]
    df = pl.DataFrame(rows, schema_overrides={"caption_md5": pl.String, "word_count": pl.Int64, "unsafe_score": pl.Float64, "unsafe_category": pl.String, "caption_norm": pl.String, "blacklisted_by": pl.String, "unsafe_term": pl.String, "page_language": pl.String})
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
        ({"unsafe_score": 1.0, "unsafe_category": "gambling", "unsafe_term": "赌博"}, "unsafe_text",
         "gambling score=1.0 赌博"),
        ({"unsafe_score": 0.5, "unsafe_category": "drugs", "unsafe_term": "大麻"}, "unsafe_text", "drugs score=0.5 大麻"),
        ({"unsafe_score": 0.49, "unsafe_category": "drugs", "unsafe_term": "大麻"}, None, None),
        ({"unsafe_score": 0.3, "unsafe_category": "gambling", "unsafe_term": "赌博|ctx:警方"}, None, None),
        # the first failing rule wins
        ({"page_language": "eng", "word_count": 1, "unsafe_score": 1.0}, "not_chinese_page", "page_language=eng"),
    ],
)
def test_each_stage1_rule_gives_its_reason(overrides, reason, detail):
    assert decide([scored(**overrides)])["p0"] == (reason, detail)


def test_thresholds_are_parameters():
    assert decide([scored(word_count=4)], min_words=3)["p0"] == (None, None)
    assert decide([scored(unsafe_score=0.3, unsafe_category="gambling")], min_unsafe_score=0.25)["p0"] == (
        "unsafe_text", "gambling score=0.3 ")
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



@pytest.mark.parametrize(
    "text, params",
    [
        ("select $a, '$b' -- $c\n, $d", {"a", "d"}),
        ("select 'it''s $x', $y", {"y"}),  # an escaped quote does not end the literal
        ('select "$col" from t where v = $v', {"v"}),  # a quoted identifier is not a parameter
        ("select /* $hidden */ $shown", {"shown"}),
        ("select $a1, $_b, x::int", {"a1", "_b"}),
    ],
)
def test_sql_parameters_are_exactly_the_named_ones(text, params):
    assert sql_parameters(text) == params


def test_string_literals_skip_comments():
    assert string_literals("select 'a', 'it''s' -- 'not'\n") == ["a", "it's"]


# --- stage 2 and 3 decision queries: each rule, and failing closed -------------------------------------------------

import hashlib  # noqa: E402
import math  # noqa: E402

S2 = "s2_text_refinement/text_refined_pairs.sql"
S2_PARAMS = {"min_han_share": 0.1, "min_nouns": 1, "max_unk": 5, "min_entropy": 0.5, "min_sensitive_score": 0.5}
CAPTION = "一只橘猫在窗台上晒太阳"


def text_row(**overrides):
    row = {
        "pair_id": "p0", "warc_file": "a", "warc_offset": 0, "img_index": 0, "caption": CAPTION,
        "caption_md5": hashlib.md5(CAPTION.encode()).hexdigest(), "language": "zho", "han_share": 1.0,
        "noun_count": 2, "unk_count": 0, "entropy": 0.9, "sensitive_hits": 0, "sensitive_terms": "",
        "sensitive_score": 0.0, "sensitive_category": None,
    }
    row.update(overrides)
    return row


def decide_text(row):
    schema = {"caption_md5": pl.String, "language": pl.String, "han_share": pl.Float64, "noun_count": pl.Int64,
              "unk_count": pl.Int64, "entropy": pl.Float64, "sensitive_hits": pl.Int64, "sensitive_terms": pl.String,
              "sensitive_score": pl.Float64, "sensitive_category": pl.String}
    out = run_sql(S2, tables={"scored": pl.DataFrame([row], schema_overrides=schema)}, params=S2_PARAMS)
    assert out.columns == ["pair_id", "reason", "detail"]
    return out.row(0)[1:]


NO_TEXT_SCORES = {k: None for k in ("caption_md5", "language", "han_share", "noun_count", "unk_count", "entropy",
                                    "sensitive_hits", "sensitive_terms", "sensitive_score", "sensitive_category")}


@pytest.mark.parametrize(
    "overrides, reason, detail",
    [
        ({}, None, None),
        ({"language": "jpn"}, "not_chinese_caption", "han_share=1.0 language=jpn"),
        ({"noun_count": 0}, "no_noun", "nouns=0"),
        ({"unk_count": 6}, "too_many_unk", "unk=6"),
        ({"entropy": 0.49}, "low_information", "entropy=0.49"),
        ({"sensitive_score": 0.86, "sensitive_category": "spam", "sensitive_terms": "加微信|mobile_number"},
         "sensitive_text", "spam score=0.86 加微信|mobile_number"),
        ({"sensitive_score": 0.4, "sensitive_category": "suggestive", "sensitive_terms": "诱惑"}, None, None),
        ({"sensitive_score": math.nan}, "unscored", "missing score: sensitive_score"),
        # fail closed: no score row (left join), NaN, or scores of another caption
        (NO_TEXT_SCORES, "unscored", "missing score: no score row,language,han_share,noun_count,unk_count,entropy,sensitive_score"),
        ({"entropy": math.nan}, "unscored", "missing score: entropy"),
        ({"han_share": math.nan, "noun_count": None}, "unscored", "missing score: han_share,noun_count"),
        ({"caption_md5": hashlib.md5(b"old caption").hexdigest()}, "unscored", "missing score: stale (caption changed)"),
    ],
)
def test_text_rules_and_failing_closed(overrides, reason, detail):
    assert decide_text(text_row(**overrides)) == (reason, detail)


S3 = "s3_visual_diversification/visually_diversified_pairs.sql"
S3_PARAMS = {"min_shortest_edge": 100, "max_aspect": 3.0, "min_grey_std": 2.0, "blur_measure": "blur_score",
             "min_blur_score": 0.25, "min_laplacian_var": 1000.0, "min_entropy_bits": 3.0, "max_nsfw_score": 0.5}


def image_row(**overrides):
    row = {"pair_id": "p0", "scored_image": "a" * 64, "shortest_edge": 300, "aspect_ratio": 1.5, "grey_std": 40.0,
           "blur_score": 0.8, "laplacian_var_native": 2000.0, "entropy_bits": 6.5, "nsfw_scorer": None,
           "nsfw_score": None, "score_error": None, "score_error_detail": None, "text_heaviness": 0.1}
    row.update(overrides)
    return row


def decide_image(row, **params):
    schema = {"scored_image": pl.String, "shortest_edge": pl.Int64, "aspect_ratio": pl.Float64, "grey_std": pl.Float64,
              "blur_score": pl.Float64, "laplacian_var_native": pl.Float64, "entropy_bits": pl.Float64,
              "nsfw_scorer": pl.String, "nsfw_score": pl.Float64, "score_error": pl.String,
              "score_error_detail": pl.String, "text_heaviness": pl.Float64}
    out = run_sql(S3, tables={"scored": pl.DataFrame([row], schema_overrides=schema)}, params={**S3_PARAMS, **params})
    assert out.columns == ["pair_id", "reason", "detail"]
    return out.row(0)[1:]


NO_IMAGE_SCORES = {k: None for k in ("scored_image", "shortest_edge", "aspect_ratio", "grey_std", "blur_score",
                                     "laplacian_var_native", "entropy_bits", "text_heaviness")}


@pytest.mark.parametrize(
    "overrides, reason, detail",
    [
        ({}, None, None),
        ({"shortest_edge": 100}, "too_small", "shortest_edge=100"),
        ({"aspect_ratio": 3.5}, "extreme_aspect", "aspect=3.5"),
        ({"grey_std": 1.0}, "flat_image", "grey_std=1.0"),
        ({"blur_score": 0.2}, "blurry_image", "blur_score=0.2"),
        ({"entropy_bits": 2.0}, "low_entropy_image", "entropy_bits=2.0"),
        ({"nsfw_scorer": "probe", "nsfw_score": 0.7}, "nsfw_image", "nsfw=0.7"),
        ({"nsfw_scorer": "probe", "nsfw_score": 0.1}, None, None),
        ({"score_error": "decode_error", "score_error_detail": "truncated", **NO_IMAGE_SCORES, "scored_image": "a" * 64},
         "decode_error", "truncated"),
        # fail closed: no score row, NaN metric, missing NSFW score while screening was on
        (NO_IMAGE_SCORES, "unscored", "missing score: no score row"),
        ({"blur_score": math.nan}, "unscored", "missing score: blur_score"),
        ({"grey_std": None, "entropy_bits": math.nan}, "unscored", "missing score: grey_std,entropy_bits"),
        ({"nsfw_scorer": "probe", "nsfw_score": None}, "unscored", "missing score: nsfw_score (probe)"),
        ({"nsfw_scorer": "probe", "nsfw_score": math.nan}, "unscored", "missing score: nsfw_score (probe)"),
        ({"text_heaviness": None}, "unscored", "missing score: text_heaviness"),
        ({"text_heaviness": math.nan}, "unscored", "missing score: text_heaviness"),
        ({"text_heaviness": 0.99}, None, None),  # text-dominated images pass the rules (stage 4 bands them)
    ],
)
def test_image_rules_and_failing_closed(overrides, reason, detail):
    assert decide_image(image_row(**overrides)) == (reason, detail)


def test_image_rules_check_the_blur_measure_in_use():
    row = image_row(blur_score=math.nan, laplacian_var_native=1500.0)
    assert decide_image(row, blur_measure="laplacian_native") == (None, None)
    assert decide_image(image_row(laplacian_var_native=999.0), blur_measure="laplacian_native") == (
        "blurry_image", "laplacian_var=999.0")


def test_stage1_fails_closed_on_missing_scores():
    assert decide([scored(word_count=None)])["p0"] == ("unscored", "missing score: word_count")
    assert decide([scored(unsafe_score=None)])["p0"] == ("unscored", "missing score: unsafe_score")
    assert decide([scored(unsafe_score=math.nan)])["p0"] == ("unscored", "missing score: unsafe_score")
    no_row = scored(caption_md5=None, word_count=None, unsafe_score=None, caption_norm=None, blacklisted_by=None)
    assert decide([no_row])["p0"] == ("unscored", "missing score: no score row,word_count,unsafe_score,caption_norm")
    assert decide([scored(caption_md5="0" * 32)])["p0"] == ("unscored", "missing score: stale (caption changed)")


def test_python_filter_reason_agrees_with_the_stage3_sql():
    """lib/image_metrics.filter_reason (used by calibration scripts) is a copy of the SQL rules: they must agree."""
    import numpy as np

    from danqing_assets.lib.image_metrics import filter_reason

    rng = np.random.default_rng(0)
    rows, metrics = [], []
    for i in range(400):
        m = {"shortest_edge": int(rng.integers(50, 200)), "aspect_ratio": float(rng.uniform(0.2, 4.0)),
             "grey_std": float(rng.uniform(0, 5)), "blur_score": float(rng.uniform(0, 0.6)),
             "laplacian_var_native": float(rng.uniform(0, 3000)), "entropy_bits": float(rng.uniform(1, 6))}
        metrics.append(m)
        rows.append(image_row(pair_id=f"p{i}", **m))
    schema = {"scored_image": pl.String, "nsfw_scorer": pl.String, "nsfw_score": pl.Float64, "score_error": pl.String,
              "score_error_detail": pl.String, "text_heaviness": pl.Float64}
    out = run_sql(S3, tables={"scored": pl.DataFrame(rows, schema_overrides=schema)}, params=S3_PARAMS)
    sql = dict(zip(out["pair_id"], out["reason"]))
    assert len(set(sql.values())) >= 5  # the sample reaches most rules
    for i, m in enumerate(metrics):
        assert filter_reason(m) == sql[f"p{i}"], m


# --- stage 4 band ---------------------------------------------------------------------------------------------------

S4 = "s4_cross_modal/aligned_pairs.sql"
S4_PARAMS = {"band_mode": "absolute", "min_similarity": 0.2, "max_similarity": 0.9, "low_quantile": 0.1,
             "high_quantile": 0.9, "max_text_heaviness": 0.3}


def decide_band(rows, **params):
    df = pl.DataFrame(rows, schema={"pair_id": pl.String, "warc_file": pl.String, "warc_offset": pl.Int64,
                                    "img_index": pl.Int64, "similarity": pl.Float64, "text_heaviness": pl.Float64})
    out = run_sql(S4, tables={"scored": df}, params={**S4_PARAMS, **params})
    assert out.columns == ["pair_id", "reason", "detail"] and out.height == len(rows)
    return {p: (r, d) for p, r, d in out.iter_rows()}


def band_row(i, sim, th=0.0):
    return {"pair_id": f"p{i}", "warc_file": "a", "warc_offset": i, "img_index": 0, "similarity": sim,
            "text_heaviness": th}


def test_band_absolute_mode_text_heaviness_and_failing_closed():
    got = decide_band([band_row(0, 0.5), band_row(1, 0.1), band_row(2, 0.95), band_row(3, 0.5, th=0.4),
                       band_row(4, 0.05, th=0.35), band_row(5, None), band_row(6, math.nan), band_row(7, 0.5, th=None)])
    assert got["p0"] == (None, None)
    assert got["p1"] == ("low_similarity", "similarity=0.1 < 0.2")
    assert got["p2"] == ("high_similarity", "similarity=0.95 > 0.9")
    assert got["p3"] == ("high_similarity", "text_heaviness=0.4 similarity=0.5")
    assert got["p4"][0] == "high_similarity"  # a text-heavy image is above the band even when scored low
    assert got["p5"] == ("unscored", "missing score: similarity")
    assert got["p6"] == ("unscored", "missing score: similarity")
    assert got["p7"] == ("unscored", "missing score: text_heaviness")


def test_band_quantile_mode_is_per_snapshot():
    rows = [band_row(i, i / 100) for i in range(101)]  # similarities 0.00 .. 1.00
    got = decide_band(rows, band_mode="quantile", low_quantile=0.1, high_quantile=0.95)
    low = sorted(p for p, (r, _) in got.items() if r == "low_similarity")
    high = sorted(p for p, (r, _) in got.items() if r == "high_similarity")
    assert len(low) == 10 and "p9" in low and "p10" not in low
    assert len(high) == 5 and "p96" in high and "p95" not in high
    assert decide_band([], band_mode="quantile") == {}  # an empty snapshot decides nothing and loses nothing


def test_release_memory_gives_the_cache_back_and_keeps_the_limit(tmp_path):
    """After a sort of 2 M rows, `release_memory` brings DuckDB's resident memory down at once (not after its
    background threads' 1-2 s) and leaves the connection with the limit it was given."""
    from danqing_assets.lib.sql import out_of_core, release_memory

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    con = out_of_core(memory_limit_mb=256, temp_directory=tmp_path)
    con.execute("SET allocator_flush_threshold = '32MB'; SET allocator_background_threads = false")
    before = rss()
    con.execute(f"COPY (SELECT md5(range::VARCHAR) AS h FROM range(2000000) ORDER BY h) TO '{tmp_path / 'x.parquet'}'")
    held = rss() - before
    release_memory(con, 256)
    assert rss() - before < held / 2, (held, rss() - before)
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "244.1 MiB"  # 256 MB
    assert con.execute(f"SELECT count(*) FROM '{tmp_path / 'x.parquet'}'").fetchone()[0] == 2_000_000
