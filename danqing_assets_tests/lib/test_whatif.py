"""What-if decides like the assets: with the defaults it reproduces the stored funnel; other thresholds move it."""

import polars as pl

from danqing_assets.lib.funnel import funnel
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets.lib.whatif import NOT_SCORED_YET, what_if
from danqing_assets_tests.defs.stage_harness import CAPTIONS, SNAPSHOT, materialize, pair_rows


def test_defaults_reproduce_the_stored_funnel_and_thresholds_move_it(tmp_path):
    from danqing_assets.cli import whatif_params

    captions = [*CAPTIONS, "短句子", "猫", CAPTIONS[0]]  # two short captions and an exact duplicate pair
    raw = pair_rows(captions).with_columns(pl.col("image_url").str.replace(r"/8\.jpg$", "/0.jpg"))
    wh = Warehouse(tmp_path)
    wh.write("raw_pairs", SNAPSHOT, raw.drop("word_count", "caption_norm"))
    materialize(tmp_path, "source_scores", "source_selected_pairs", "text_scores", "text_refined_pairs")

    stored = {(s.table, s.rows): s.dropped for s in funnel(wh, SNAPSHOT)}
    again = {(s.table, s.rows): s.dropped for s in what_if(wh, SNAPSHOT, whatif_params([]))}
    assert again == stored
    assert stored[("source_selected_pairs", 6)] == {"caption_too_short": 2, "duplicate_pair": 1}

    loose = what_if(wh, SNAPSHOT, whatif_params(["source_selected_pairs.min_words=1"]))
    by_table = {s.table: s for s in loose}
    assert by_table["source_selected_pairs"].rows == 8
    # the two newly admitted captions were never scored by stage 2: counted, not decided
    assert by_table["text_refined_pairs"].dropped.get(NOT_SCORED_YET) == 2
    assert wh.read("source_selected_pairs", SNAPSHOT).height == 6  # nothing was written


def test_funnel_set_on_the_command_line_decides_out_of_core_and_leaves_no_scratch(tmp_path, monkeypatch, capsys):
    """`danqing funnel NAME --set ...` prints the what-if funnel; stages 1 and 2 decide in DuckDB over the files with
    a scratch folder that is gone afterwards, and nothing in the warehouse changes."""
    from danqing_assets.cli import main

    monkeypatch.setenv("DANQING_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    captions = [*CAPTIONS, "短句子", "猫"]
    wh = Warehouse(tmp_path)
    wh.write("raw_pairs", SNAPSHOT, pair_rows(captions).drop("word_count", "caption_norm"))
    materialize(tmp_path, "source_scores", "source_selected_pairs", "text_scores", "text_refined_pairs")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "tables").rglob("*.parquet")}
    assert main(["funnel", SNAPSHOT, "--set", "source_selected_pairs.min_words=1",
                 "--set", "text_refined_pairs.min_nouns=0"]) == 0
    out = capsys.readouterr().out
    assert "What-if funnel (source_selected_pairs.min_words=1, text_refined_pairs.min_nouns=0)" in out
    assert NOT_SCORED_YET in out  # the two short captions reach stage 2 unscored
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "tables").rglob("*.parquet")} == before
    scratch = tmp_path / ".scratch"
    assert not scratch.exists() or not any(scratch.iterdir())
