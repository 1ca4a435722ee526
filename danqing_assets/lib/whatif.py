"""What-if: the funnel other thresholds would give, decided again from the stored scores, without materializing.

Each stage's decision (`lib/decide.py`) is re-run in memory, in pipeline order, on the snapshot's stored tables with
the thresholds given; nothing is written. Scores exist only for pairs that reached a stage when it last ran, so pairs
that looser thresholds let further than before have no scores (or no fetched image) downstream: they are counted as
`not_scored_yet` (or `not_fetched_yet`) instead of being decided, and materializing with the new thresholds decides
them for real.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from danqing_assets.lib.decide import decide_aligned, decide_image, decide_source, decide_text
from danqing_assets.lib.funnel import FunnelStep
from danqing_assets.lib.stages import CROSS_MODAL, FETCH, IMAGE, SOURCE, TEXT, reason_order
from danqing_assets.lib.warehouse import Warehouse

NOT_SCORED_YET = "not_scored_yet"
NOT_FETCHED_YET = "not_fetched_yet"


def _step(table: str, decided: pl.DataFrame, ledger: str, *, no_row: pl.Expr | None = None) -> tuple[FunnelStep, pl.DataFrame]:
    if no_row is not None:
        decided = decided.with_columns(
            pl.when(no_row).then(pl.lit(NOT_SCORED_YET)).otherwise(pl.col("reason")).alias("reason"))
    kept = decided.filter(pl.col("reason").is_null())
    counts = dict(decided.filter(pl.col("reason").is_not_null()).group_by("reason").len().iter_rows())
    order = reason_order(ledger)
    dropped = dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], 99)))
    return FunnelStep(table, kept.height, dropped), kept


def what_if(wh: Warehouse, snapshot: str, params: Mapping[str, Mapping[str, Any]]) -> list[FunnelStep]:
    """The funnel of `snapshot` under `params` (asset name -> the thresholds of its Config, every field given)."""
    raw = wh.read("raw_pairs", snapshot)
    steps = [FunnelStep("raw_pairs", raw.height, {})]
    if not wh.exists("source_scores", snapshot):
        return steps
    d1 = decide_source(raw, wh.read("source_scores", snapshot), params[SOURCE.table])
    step, kept = _step(SOURCE.table, d1, SOURCE.ledger)
    steps.append(step)
    if not wh.exists("text_scores", snapshot):
        return steps
    text_scores = wh.read("text_scores", snapshot)
    d2 = decide_text(kept.drop("reason", "detail", "blacklisted_by", "unsafe_score", "unsafe_category", "unsafe_term",
                               "caption_md5",
                               strict=False), text_scores, params[TEXT.table])
    step, kept = _step(TEXT.table, d2, TEXT.ledger, no_row=pl.col("caption_md5").is_null())
    steps.append(step)
    if not wh.exists("fetched_images", snapshot):
        return steps
    fetched = wh.read("fetched_images", snapshot).select("pair_id", "image_sha256", "status", "reason")
    joined = kept.drop("reason", "detail", strict=False).join(fetched.rename({"reason": "fetch_reason"}), on="pair_id",
                                                              how="left")
    d3 = joined.with_columns(
        pl.when(pl.col("status").is_null()).then(pl.lit(NOT_FETCHED_YET))
        .when(pl.col("status") != "ok").then(pl.col("fetch_reason")).otherwise(None).alias("reason"))
    step, kept = _step(FETCH.table, d3, FETCH.ledger)
    steps.append(step)
    if not wh.exists("image_scores", snapshot):
        return steps
    emb = wh.read("image_embeddings", snapshot) if wh.exists("image_embeddings", snapshot) else None
    embeddings = dict(zip(emb["image_sha256"].to_list(), emb["embedding"].to_list())) if emb is not None and emb.height else None
    pairs = kept.drop("image_sha256", "status", "fetch_reason", "reason", "detail", strict=False)
    d4, _, _ = decide_image(pairs, kept.select("pair_id", "image_sha256"), wh.read("image_scores", snapshot),
                            text_scores.select("pair_id", caption_entropy="entropy"), embeddings, params[IMAGE.table])
    step, kept = _step(IMAGE.table, d4, IMAGE.ledger, no_row=pl.col("scored_image").is_null())
    steps.append(step)
    if not wh.exists("cross_modal_scores", snapshot) or CROSS_MODAL.table not in params:
        return steps
    pairs = kept.drop("reason", "detail", "scored_image", strict=False)
    d5 = decide_aligned(pairs, wh.read("cross_modal_scores", snapshot), params[CROSS_MODAL.table])
    step, kept = _step(CROSS_MODAL.table, d5, CROSS_MODAL.ledger, no_row=pl.col("model").is_null())
    steps.append(step)
    return steps
