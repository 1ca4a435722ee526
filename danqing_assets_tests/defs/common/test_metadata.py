import polars as pl

from danqing_assets.defs.common.metadata import ledger_identity_check, stage_metadata


def ids(*xs):
    return pl.DataFrame({"pair_id": list(xs), "reason": ["r"] * len(xs)})


def test_ledger_identity_holds_only_when_every_pair_is_accounted_for_once():
    entering = pl.Series(["a", "b", "c"])
    assert ledger_identity_check("x", entering, ids("a"), ids("b", "c")).passed
    assert not ledger_identity_check("x", entering, ids("a"), ids("b")).passed  # c lost
    assert not ledger_identity_check("x", entering, ids("a", "b"), ids("b", "c")).passed  # b twice
    assert not ledger_identity_check("x", entering, ids("a", "d"), ids("b")).passed  # d from nowhere


def test_stage_metadata_counts_every_reason_including_zeros():
    kept = pl.DataFrame({"pair_id": ["a"], "caption": ["猫"]})
    rejected = pl.DataFrame({"pair_id": ["b", "c"], "reason": ["no_noun", "no_noun"], "caption": ["x", "y"], "detail": [None, None]})
    md = stage_metadata(stage="text", reasons=["not_chinese_caption", "no_noun"], rows_in=3, kept=kept,
                        rejected=rejected, raw_rows=6, preview_columns=["caption"])
    assert md["dropped_no_noun"] == 2 and md["dropped_not_chinese_caption"] == 0
    assert md["rows_in"] == 3 and md["rows_out"] == 1 and md["rejection_rate"].value == round(2 / 3, 6)
    assert md["cumulative_retention"].value == round(1 / 6, 6)
