"""Stages 1 and 2 through their assets in chunks on two workers, with DuckDB under a small memory limit: malformed
captions get counted, reasoned rejects; a pair_id repeated across chunks fails the blocking check and writes nothing;
the tables equal those of one chunk in the step's own process."""

import polars as pl
import pytest

from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.defs.stage_harness import CAPTIONS, SNAPSHOT, ledger, materialize, pair_rows

BAD = [
    None,  # no caption
    "",
    "   \t ",
    "\x00\x01\x02控制字符\x7f",
    "零宽\u200b空格\u202e和方向标记的图片标题文字",
    "🔥🔥🔥!!!【特价】【特价】【特价】~~~~###",
    "好" * 50_000,  # 100 KB of one character
    "Mary had a little lamb, its fleece was white as snow",
    "一二",
]

STAGES_1_2 = ("source_scores", "source_selected_pairs", "text_scores", "text_refined_pairs")


def _raw(captions) -> pl.DataFrame:
    rows = pair_rows([c if c is not None else "x" for c in captions]).drop("word_count", "caption_norm")
    rows = rows.with_columns(pl.Series("caption", captions, dtype=pl.String))
    return rows.with_columns(pl.Series("pair_id", [f"{i + 1:016x}" for i in range(rows.height)]),
                             pl.Series("warc_offset", list(range(0, 100 * rows.height, 100))))


def _config(chunk_rows: int, workers: int, memory_mb: int = 1024) -> dict:
    scores = {"chunk_rows": chunk_rows, "workers": workers}
    return {"ops": {"source_scores": {"config": scores},
                    "source_selected_pairs": {"config": {"memory_limit_mb": memory_mb}},
                    "text_scores": {"config": {**scores, "memory_limit_mb": memory_mb}},
                    "text_refined_pairs": {"config": {"memory_limit_mb": memory_mb}}}}


def _tables(home) -> dict[str, pl.DataFrame]:
    wh = Warehouse(home)
    out = {t: wh.read(t, SNAPSHOT) for t in STAGES_1_2}
    out["ledger"] = wh.read_rejections(SNAPSHOT)
    return out


@pytest.fixture(scope="module")
def chunked_and_whole(tmp_path_factory):
    raw = _raw([*CAPTIONS, *BAD, *CAPTIONS])  # the repeated captions, with the same image URLs: exact duplicates
    urls = raw["image_url"].to_list()
    raw = raw.with_columns(pl.Series("image_url", urls[: len(CAPTIONS) + len(BAD)] + urls[: len(CAPTIONS)]))
    homes = {}
    for name, cfg in (("chunked", _config(2, 2, memory_mb=64)), ("whole", _config(10_000, 1))):
        home = tmp_path_factory.mktemp(name)
        Warehouse(home).write("raw_pairs", SNAPSHOT, raw)
        result = materialize(home, *STAGES_1_2, run_config=cfg)
        homes[name] = (home, result)
    return raw, homes


def test_chunks_on_two_workers_give_the_tables_of_one_chunk(chunked_and_whole):
    _, homes = chunked_and_whole
    chunked, whole = _tables(homes["chunked"][0]), _tables(homes["whole"][0])
    for name in chunked:
        assert chunked[name].equals(whole[name]), name
    md = homes["chunked"][1].asset_materializations_for_node("source_scores")[0].metadata
    assert md["workers"].value == 2 and md["chunks"].value == 11
    assert homes["whole"][1].asset_materializations_for_node("source_scores")[0].metadata["chunks"].value == 1


def test_malformed_captions_are_counted_reasoned_rejects(chunked_and_whole):
    raw, homes = chunked_and_whole
    home, result = homes["chunked"]
    got = ledger(home, "source")
    ids = raw["pair_id"].to_list()
    bad = dict(zip(ids[len(CAPTIONS):len(CAPTIONS) + len(BAD)], BAD))
    text = ledger(home, "text")
    kept = set(Warehouse(home).read("text_refined_pairs", SNAPSHOT)["pair_id"])
    for pid in bad:  # each is kept (the zero-width-space one, cleaned) or rejected with a registered reason
        assert (pid in kept) != (pid in got or pid in text)
        assert pid in kept or (got.get(pid) or text.get(pid))[0]
    assert ids[len(CAPTIONS) + 4] in kept
    assert got[ids[len(CAPTIONS)]][0] == "caption_missing"
    assert got[ids[len(CAPTIONS) + 6]][0] == "caption_too_long"
    assert got[ids[len(CAPTIONS) + 8]][0] == "caption_too_short"
    assert ledger(home, "text")[ids[len(CAPTIONS) + 7]][0] == "not_chinese_caption"
    dups = [pid for pid, (reason, _) in got.items() if reason == "duplicate_pair"]
    assert sorted(dups) == sorted(ids[len(CAPTIONS) + len(BAD):])
    md = result.asset_materializations_for_node("source_selected_pairs")[0].metadata
    assert md["rows_in"].value == raw.height
    assert md["rows_in"].value == md["rows_out"].value + md["rows_dropped"].value
    assert md["dropped_duplicate_pair"].value == len(CAPTIONS)


def test_a_pair_id_repeated_across_chunks_is_refused_and_nothing_is_written(tmp_path):
    raw = _raw(CAPTIONS)
    raw = raw.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit(raw["pair_id"][0]))
                           .otherwise(pl.col("pair_id")).alias("pair_id"))
    wh = Warehouse(tmp_path)
    wh.write("raw_pairs", SNAPSHOT, raw)
    result = materialize(tmp_path, "source_scores", run_config={"ops": {"source_scores": {"config": {"chunk_rows": 2}}}},
                         raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "source_scores_schema" in str(failure.event_specific_data.error)
    assert not wh.exists("source_scores", SNAPSHOT)
    assert not list(wh.partition_path("source_scores", SNAPSHOT).parent.iterdir())  # no temporary left either
