"""Scoring in chunks, on worker processes, with a segmentation cache, gives the same scores as scoring at once: on real
captions (the sample crawl's vocabulary and hand-written web alt texts), bad input included."""

import multiprocessing
import os

import jieba
import polars as pl
import pytest

from danqing_assets.lib.text import clean_noun_counts, count_words, score_captions
from danqing_assets.lib.text import segment
from danqing_assets.lib.text.batch import PoolReport, SourceChunk, TextChunk, map_chunks
from danqing_assets.lib.text.normalize import _fold_nfkc_t2s

CAPTIONS = [
    "一只橘色的小猫趴在阳光明媚的窗台上睡觉",
    "湖邊的紅色木屋和遠處的雪山倒映在水中",  # Traditional
    "Apple 2024新款轻薄笔记本电脑 - 京东商城",
    "🔥🔥🔥!!!【特价】【特价】【特价】~~~~###",
    "北京故宫的美丽风景，北京旅游攻略推荐_马蜂窝",
    "iPhone 15 Pro Max 手机壳 男女同款",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３ 全角字符",
    "红烧肉的家常做法\r\n步骤图\t简单易学",
    "   ",
    "",
    None,
    "\ud800 孤立的代理项 \udfff",  # lone surrogates
    "零宽\u200b空格和\u202e方向标记",
    "好好好好好好好好好好",
    "Mary had a little lamb",
    "東京タワーの夜景",  # Japanese
    "+86 138-0000-0000 加微信 看更多",
    "㎡ ℃ № 单位符号 100㎡ 三室两厅",
    "https://www.example.com/a/b.html 图片来源",
    "老人在公园下棋，小朋友放风筝",
    "一" * 3000 + "长长的标题",  # very long
]


def _many(n: int = 400) -> list[str | None]:
    """Real-shaped captions, with repeats, drawn from the sample crawl's own vocabulary."""
    from danqing_sample import vocab

    words = [w for name in dir(vocab) for w in (getattr(vocab, name) if isinstance(getattr(vocab, name), (list, tuple)) else [])
             if isinstance(w, str) and w.strip()]
    assert len(words) > 50
    out: list[str | None] = list(CAPTIONS)
    for i in range(n):
        k = 2 + (i * 7) % 6
        out.append("".join(words[(i * 31 + j * 17) % len(words)] for j in range(k)))
    return out + out[:50]


def test_cut_is_jieba_lcut():
    texts = [_fold_nfkc_t2s(c) for c in _many()] + [c for c in _many() if isinstance(c, str)]
    for t in texts:
        assert segment.cut(t) == jieba.lcut(t), t


def test_cut_is_jieba_lcut_when_the_cache_overflows(monkeypatch):
    monkeypatch.setattr(segment, "MAX_BLOCKS", 3)
    segment._segmenter()[3].clear()
    for t in [c for c in _many(100) if isinstance(c, str)]:
        assert segment.cut(t) == jieba.lcut(t)
    assert segment.cache_size() <= 3


def test_stage1_noun_counts_are_stage2_noun_counts():
    captions = _many()
    assert clean_noun_counts(captions) == score_captions(captions)["noun_count"].to_list()


def test_known_noun_counts_are_used_and_missing_ones_computed():
    captions = _many(60)
    plain = score_captions(captions)
    nouns = clean_noun_counts(captions)
    partial = [n if i % 3 else None for i, n in enumerate(nouns)]
    assert score_captions(captions, nouns=partial).equals(plain)
    assert score_captions(captions, nouns=nouns).equals(plain)
    lied = score_captions(captions[:3], nouns=[99, None, 99])  # the given value is taken as is: stage 1's own
    assert lied["noun_count"].to_list()[0] == 99 and lied["noun_count"].to_list()[2] == 99
    with pytest.raises(ValueError, match="noun counts"):
        score_captions(captions, nouns=nouns[:-1])


def _raw(captions) -> pl.DataFrame:
    captions = [c for c in captions if c is None or not any("\ud800" <= ch <= "\udfff" for ch in c)]  # not in Parquet
    n = len(captions)
    return pl.DataFrame({"pair_id": [f"{i:016x}" for i in range(n)],
                         "domain": [["example.cn", "porn.example.com", None, "a.b.c.cn"][i % 4] for i in range(n)],
                         "caption": captions}, schema={"pair_id": pl.String, "domain": pl.String, "caption": pl.String})


def _chunks(df: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
    return [df.slice(i, rows) for i in range(0, df.height, rows)]


def test_source_scores_in_chunks_on_two_workers_equal_one_chunk():
    raw = _raw(_many(300))
    job = SourceChunk("unit")
    whole = job(raw)
    report = PoolReport()
    parts = pl.concat(list(map_chunks(job, _chunks(raw, 37), workers=2, report=report)))
    assert parts.equals(whole)
    n = len(_chunks(raw, 37))
    assert report.workers == 2 and report.chunks == n and report.chunks_in_process == (n + 1) // 2  # every 2nd here
    assert whole["word_count"].to_list() == [count_words(c or "") for c in raw["caption"].to_list()]


def test_text_scores_in_chunks_with_stage1_nouns_equal_one_chunk_without():
    pairs = _raw(_many(300)).select("pair_id", "caption")
    captions = pairs["caption"].to_list()
    whole = TextChunk("unit")(pairs)
    with_nouns = pairs.with_columns(pl.Series("stage1_nouns", clean_noun_counts(captions), dtype=pl.Int64))
    parts = pl.concat(list(map_chunks(TextChunk("unit"), _chunks(with_nouns, 41), workers=2)))
    assert parts.equals(whole)
    assert whole["noun_count"].to_list() == score_captions(captions)["noun_count"].to_list()


def _square(x: int) -> int:
    return x * x


def _dies_in_a_worker(x: int) -> int:
    if multiprocessing.parent_process() is not None and x == 4:
        os._exit(1)  # a worker killed outright (the OOM killer, a segfault in compiled code)
    return x * x


def test_map_chunks_keeps_order_and_bounds_what_it_holds():
    report = PoolReport()
    assert list(map_chunks(_square, range(20), workers=2, report=report)) == [x * x for x in range(20)]
    assert report.chunks == 20 and report.workers == 2
    one = PoolReport()
    assert list(map_chunks(_square, [5], workers=2, report=one)) == [25]
    assert one.workers == 1 and one.chunks_in_process == 1  # one chunk: no pool to start
    assert list(map_chunks(_square, [], workers=2)) == []


def test_a_dead_worker_does_not_take_the_step_down():
    report = PoolReport()
    got = list(map_chunks(_dies_in_a_worker, range(10), workers=3, report=report))  # chunk 4 goes to a worker
    assert got == [x * x for x in range(10)]
    assert report.workers_died == 1 and report.chunks_in_process > 10 // 3 + 1
