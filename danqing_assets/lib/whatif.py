"""What-if: the funnel other thresholds would give, decided again from the stored scores, without materializing.

Each stage's decision (`lib/decide.py`) is re-run, in pipeline order, on the snapshot's stored tables with the
thresholds given; nothing is written to the warehouse. Stages 1 and 2 decide out of core, as their assets do: DuckDB
over the Parquet files under the stage's `memory_limit_mb`, spilling to a scratch folder (removed after), and the
caption near-duplicate index streamed from a scratch file; only the pair ids and crawl order of stage 2's survivors
come into memory for the image stages. Scores exist only for pairs that reached a stage when it last ran, so pairs
that looser thresholds let further than before have no scores (or no fetched image) downstream: they are counted as
`not_scored_yet` (or `not_fetched_yet`) instead of being decided, and materializing with the new thresholds decides
them for real.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from danqing_assets.lib.decide import decide_aligned, decide_image, dedup_inputs
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
    return FunnelStep(table, kept.height, _in_ledger_order(counts, ledger)), kept


def _in_ledger_order(counts: Mapping[str, int], ledger: str) -> dict[str, int]:
    order = reason_order(ledger)
    return dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], 99)))


def _sql_step(con: Any, table: str, decided: str, ledger: str, reason: str = "reason") -> FunnelStep:
    kept = con.execute(f"SELECT count(*) FROM {decided} WHERE {reason} IS NULL").fetchone()[0]
    counts = dict(con.execute(f"SELECT {reason}, count(*) FROM {decided} WHERE {reason} IS NOT NULL GROUP BY 1").fetchall())
    return FunnelStep(table, int(kept), _in_ledger_order(counts, ledger))


def what_if(wh: Warehouse, snapshot: str, params: Mapping[str, Mapping[str, Any]]) -> list[FunnelStep]:
    """The funnel of `snapshot` under `params` (asset name -> the thresholds of its Config, every field given)."""
    from danqing_assets.lib.decide import source_decided_view, source_kept_columns, text_decided_view
    from danqing_assets.lib.sql import out_of_core, parquet_literal
    from danqing_assets.lib.tempfiles import SCRATCH_DIR, scratch_dir

    steps = [FunnelStep("raw_pairs", wh.count("raw_pairs", snapshot) or 0, {})]
    if not wh.exists("source_scores", snapshot):
        return steps
    p1, p2 = params[SOURCE.table], params[TEXT.table]
    with scratch_dir(p1["temp_directory"] or wh.home / SCRATCH_DIR, f"what-if-{snapshot}") as scratch:
        con = out_of_core(memory_limit_mb=p1["memory_limit_mb"], temp_directory=scratch, threads=1)
        try:
            con.execute("SET allocator_flush_threshold = '32MB'; SET preserve_insertion_order = true")
            wh.configure_connection(con)
            decided = source_decided_view(con, wh.partition_path("raw_pairs", snapshot),
                                          wh.partition_path("source_scores", snapshot), p1, scratch)
            steps.append(_sql_step(con, SOURCE.table, decided, SOURCE.ledger))
            if not wh.exists("text_scores", snapshot):
                return steps
            # stage 1's survivors, as source_selected_pairs would hold them, in their order
            survivors = scratch / "what_if_source_selected_pairs.parquet"
            columns = source_kept_columns(wh.columns("raw_pairs", snapshot), wh.columns("source_scores", snapshot))
            quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
            con.execute(f"COPY (SELECT {quoted} FROM {decided} WHERE reason IS NULL ORDER BY _row) "
                        f"TO {parquet_literal(survivors)} (FORMAT PARQUET)")
            decided, _, _ = text_decided_view(con, survivors, wh.partition_path("text_scores", snapshot), p2, scratch)
            # a survivor stage 2 never scored (no text_scores row) is not decided here
            con.execute(f"CREATE OR REPLACE TEMP VIEW what_if_text AS SELECT *, CASE WHEN caption_md5 IS NULL "
                        f"THEN '{NOT_SCORED_YET}' ELSE reason END AS what_if_reason FROM {decided}")
            steps.append(_sql_step(con, TEXT.table, "what_if_text", TEXT.ledger, reason="what_if_reason"))
            kept = con.execute("SELECT pair_id, warc_file, warc_offset, img_index FROM what_if_text "
                               "WHERE what_if_reason IS NULL").pl()
        finally:
            con.close()
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
    embeddings, distance, _ = dedup_inputs(emb, params[IMAGE.table].get("semantic_max_distance"))
    pairs = kept.drop("image_sha256", "status", "fetch_reason", "reason", "detail", strict=False)
    entropy = wh.read("text_scores", snapshot, columns=["pair_id", "entropy"]).rename({"entropy": "caption_entropy"})
    d4, _, _ = decide_image(pairs, kept.select("pair_id", "image_sha256"), wh.read("image_scores", snapshot),
                            entropy, embeddings, {**params[IMAGE.table], "semantic_max_distance": distance})
    step, kept = _step(IMAGE.table, d4, IMAGE.ledger, no_row=pl.col("scored_image").is_null())
    steps.append(step)
    if not wh.exists("cross_modal_scores", snapshot) or CROSS_MODAL.table not in params:
        return steps
    pairs = kept.drop("reason", "detail", "scored_image", strict=False)
    d5 = decide_aligned(pairs, wh.read("cross_modal_scores", snapshot), params[CROSS_MODAL.table])
    step, kept = _step(CROSS_MODAL.table, d5, CROSS_MODAL.ledger, no_row=pl.col("model").is_null())
    steps.append(step)
    return steps
