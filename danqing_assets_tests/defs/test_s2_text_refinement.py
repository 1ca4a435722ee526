"""Stage 2 through its assets on small frames: real scoring, the SQL decision, failing closed, checks before publish."""

import polars as pl
import pytest

from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.defs.stage_harness import SNAPSHOT, ledger, materialize, pair_rows


@pytest.fixture
def home(tmp_path):
    Warehouse(tmp_path).write("source_selected_pairs", SNAPSHOT, pair_rows())
    Warehouse(tmp_path).write("raw_pairs", SNAPSHOT, pair_rows())
    materialize(tmp_path, "text_scores")
    return tmp_path


def test_clean_captions_are_kept_with_their_scores(home):
    materialize(home, "text_refined_pairs")
    kept = Warehouse(home).read("text_refined_pairs", SNAPSHOT)
    assert kept.height == 6 and ledger(home, "text") == {}
    assert kept["noun_count"].min() >= 1 and "caption_clean" in kept.columns


@pytest.mark.parametrize("join_part_rows", [500_000, 2])
def test_missing_nan_or_stale_scores_reject_as_unscored(home, join_part_rows, monkeypatch):
    """Scores not aligned with the pairs are joined by pair_id (in parts split by its hash beyond `_JOIN_PART_ROWS`
    score rows: here also 3 parts of ~2); either way the same decisions."""
    from danqing_assets.lib import decide

    monkeypatch.setattr(decide, "_JOIN_PART_ROWS", join_part_rows)
    wh = Warehouse(home)
    ids = pair_rows()["pair_id"].to_list()
    scores = wh.read("text_scores", SNAPSHOT)
    scores = (
        scores.filter(pl.col("pair_id") != ids[0])  # a stale table: a pair without a score row
        .with_columns(
            pl.when(pl.col("pair_id") == ids[1]).then(float("nan")).otherwise(pl.col("entropy")).alias("entropy"),
            pl.when(pl.col("pair_id") == ids[2]).then(pl.lit("0" * 32)).otherwise(pl.col("caption_md5")).alias("caption_md5"),
        )
    )
    wh.write("text_scores", SNAPSHOT, scores)  # bypasses the asset's own checks, as a broken upstream would
    result = materialize(home, "text_refined_pairs")
    got = ledger(home, "text")
    assert got[ids[0]] == ("unscored", "missing score: no score row,language,han_share,noun_count,unk_count,entropy,sensitive_score")
    assert got[ids[1]] == ("unscored", "missing score: entropy")
    assert got[ids[2]] == ("unscored", "missing score: stale (caption changed)")
    kept = set(wh.read("text_refined_pairs", SNAPSHOT)["pair_id"])
    assert kept == set(ids[3:])
    md = result.asset_materializations_for_node("text_refined_pairs")[0].metadata
    assert md["dropped_unscored"].value == 3 and md["rows_in"].value == 6 and md["rows_out"].value == 3
    assert "| stage-1 survivors | 6 | 3 | 50.0% |" in md["order_vs_paper"].value


def test_a_failing_check_publishes_nothing_and_keeps_the_previous_partition(home):
    wh = Warehouse(home)
    materialize(home, "text_refined_pairs")
    before = wh.read("text_refined_pairs", SNAPSHOT)
    # an upstream table that breaks the kept table's schema: an empty caption_clean
    scores = wh.read("text_scores", SNAPSHOT).with_columns(pl.lit("").alias("caption_clean"))
    wh.write("text_scores", SNAPSHOT, scores)
    result = materialize(home, "text_refined_pairs", raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "text_refined_pairs_schema" in str(failure.event_specific_data.error)
    assert wh.read("text_refined_pairs", SNAPSHOT).equals(before)
    assert ledger(home, "text") == {}
