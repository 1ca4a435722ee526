"""Precision and recall of a stage's reject reasons against a labelled truth file (e.g. the sample crawl's
truth.parquet, or a user's own labelled sample with columns pair_id, expected_stage, expected_reason)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

TRUTH_COLUMNS = ("pair_id", "expected_stage", "expected_reason")


def load_truth(path: str | Path) -> pl.DataFrame:
    df = pl.read_parquet(path)
    missing = [c for c in TRUTH_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"truth file {path} lacks columns {missing}")
    return df.select(TRUTH_COLUMNS)


def reason_quality(
    *, stage: str, entering: pl.Series, rejected: pl.DataFrame, truth: pl.DataFrame
) -> pl.DataFrame:
    """Per reason: truth count, predicted count, true positives, precision, recall.

    Only pairs that entered the stage (`entering`: their pair ids) and are labelled in the truth are scored; a pair
    counts for reason R when the truth says this stage rejects it for R.
    """
    labelled = truth.filter(pl.col("pair_id").is_in(entering.implode()))
    actual = labelled.filter(pl.col("expected_stage") == stage).select("pair_id", truth_reason="expected_reason")
    predicted = rejected.filter(pl.col("pair_id").is_in(labelled["pair_id"].implode())).select("pair_id", "reason")
    reasons = sorted(set(actual["truth_reason"]) | set(predicted["reason"]))
    rows = []
    for r in reasons:
        a = set(actual.filter(pl.col("truth_reason") == r)["pair_id"])
        p = set(predicted.filter(pl.col("reason") == r)["pair_id"])
        tp = len(a & p)
        rows.append(
            {
                "reason": r,
                "truth": len(a),
                "predicted": len(p),
                "true_positives": tp,
                "precision": tp / len(p) if p else None,
                "recall": tp / len(a) if a else None,
            }
        )
    return pl.DataFrame(
        rows,
        schema={"reason": pl.String, "truth": pl.Int64, "predicted": pl.Int64, "true_positives": pl.Int64,
                "precision": pl.Float64, "recall": pl.Float64},
    )
