"""Stage 1, data source selection: Chinese pages, no blacklisted domains, 5-60 word safe captions, no exact dups."""


import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.common.stage_end import (
    finish_stage_out_of_core,
    publish_chunks,
    stage_check_specs,
    table_check_spec,
    versioned,
)
from danqing_assets.defs.common.out_of_core import (
    stage_connection,
    chunk_rows_field,
    memory_limit_field,
    temp_directory_field,
    workers_field,
)
from danqing_assets.defs.common.batches import BATCH_BACKFILL_POLICY, each_batch
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.lib import schemas
from danqing_assets.lib.domains import load_domain_list
from danqing_assets.lib.stages import SOURCE
from danqing_assets.lib.text.batch import SOURCE_SCORE_SCHEMA


class SourceSelectionConfig(dg.Config):
    require_chinese_page: bool = Field(
        default=True, description="Keep only pages whose Common Crawl language list contains `zho` (or detected zho)."
    )
    min_words: int = Field(default=5, description="Fewest jieba words a caption may have (paper: 5).")
    max_words: int = Field(default=60, description="Most jieba words a caption may have (paper: 60).")
    domain_blacklist_path: str | None = Field(
        default=None, description="Text file of blacklisted domains (subdomains match); unset: the shipped list."
    )
    text_safety_classifier: str = Field(
        default="safety",
        description="Text-safety classifier: 'safety' (the shipped lexicon + learned model, categories per stage), "
        "'safety-lexicon' (the shipped lexicon alone), 'safety:/path/lexicon.txt', 'lexicon:/path/terms.txt' (flat "
        "list), or 'package.module:ClassName' "
        "implementing predict(texts) -> [(unsafe, detail)] and optionally score(texts, stage).",
    )


class SourceScoresConfig(dg.Config):
    domain_blacklist_path: str | None = Field(
        default=None, description="Text file of blacklisted domains (subdomains match); unset: the shipped list."
    )
    text_safety_classifier: str = Field(
        default="safety",
        description="Text-safety classifier: 'safety' (the shipped lexicon + learned model, categories per stage), "
        "'safety-lexicon' (the shipped lexicon alone), 'safety:/path/lexicon.txt', 'lexicon:/path/terms.txt' (flat "
        "list), or 'package.module:ClassName' "
        "implementing predict(texts) -> [(unsafe, detail)] and optionally score(texts, stage).",
    )
    workers: int | None = workers_field()
    chunk_rows: int = chunk_rows_field()


SCORE_SCHEMA = SOURCE_SCORE_SCHEMA


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=SOURCE.group,
    code_version=versioned("4", config=SourceScoresConfig),  # 3: chunks on every core, noun_count for stage 2; 4: safety model on
    deps=["raw_pairs"],
    check_specs=[table_check_spec("source_scores")],
)
@each_batch
def source_scores(
    context: dg.AssetExecutionContext, config: SourceScoresConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per raw pair, every score stage 1 decides on: the blacklist entry its domain matches, the caption's jieba word
    count, the text-safety score, category and evidence (stage-1 categories), the normalised caption (exact dedup), and
    the caption's md5 (stale scores are detected); and the noun count of the stage-2 cleaned caption, computed while
    its jieba segmentation is at hand (text_scores reuses it: a caption is segmented once). Stored so thresholds are
    re-tunable without recomputing. Scored in chunks on every core; never holds the partition."""
    from danqing_assets.lib.safety import load_text_safety_classifier
    from danqing_assets.lib.text.batch import PoolReport, SourceChunk, default_workers, map_chunks

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    load_domain_list(config.domain_blacklist_path)  # a bad path fails here, before any worker starts
    load_text_safety_classifier(config.text_safety_classifier)
    job = SourceChunk(snapshot, config.text_safety_classifier, config.domain_blacklist_path)
    chunks = wh.iter_batches("raw_pairs", snapshot, columns=["pair_id", "domain", "caption"], batch_rows=config.chunk_rows)
    report = PoolReport()
    counts = {"unsafe": 0, "blacklisted": 0}

    def tally(chunk: pl.DataFrame) -> None:
        counts["unsafe"] += int((chunk["unsafe_score"] >= 0.5).sum())
        counts["blacklisted"] += int(chunk["blacklisted_by"].is_not_null().sum())

    with stage_connection(wh, f"source_scores-{snapshot}", memory_limit_mb=512,
                          temp_directory=None) as (con, scratch):
        check, rows = publish_chunks(
            wh, snapshot, "source_scores", schemas.SourceScores, SCORE_SCHEMA,
            map_chunks(job, chunks, workers=config.workers or default_workers(), report=report), con,
            step=f"source_scores ({snapshot})", on_chunk=tally)
    return dg.MaterializeResult(
        metadata={"rows_out": rows, "unsafe_at_0.5": counts["unsafe"], "blacklisted": counts["blacklisted"],
                  "text_safety_classifier": config.text_safety_classifier, "workers": report.workers,
                  "chunks": report.chunks, "workers_died": report.workers_died},
        check_results=[check],
    )


class SourceSelectionConfig(dg.Config):
    require_chinese_page: bool = Field(
        default=True, description="Keep only pages whose Common Crawl language list contains `zho` (or detected zho)."
    )
    min_words: int = Field(default=5, ge=0, description="Fewest jieba words a caption may have (paper: 5).")
    max_words: int = Field(default=60, ge=1, description="Most jieba words a caption may have (paper: 60).")
    min_unsafe_score: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Reject as unsafe_text at or above this text-safety score (stage-1 categories: sexual, gambling, "
        "drugs, weapons, fraud, violence; lib/safety.py).",
    )
    memory_limit_mb: int = memory_limit_field()
    temp_directory: str | None = temp_directory_field()


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=SOURCE.group,
    code_version=versioned("4", sql=SOURCE.sql, config=SourceSelectionConfig),  # 4: out of core (DuckDB on Parquet)
    deps=["raw_pairs", "source_scores"],
    check_specs=stage_check_specs(SOURCE),
)
@each_batch
def source_selected_pairs(
    context: dg.AssetExecutionContext, config: SourceSelectionConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Pairs from Chinese pages on non-blacklisted domains whose caption has 5-60 words, is safe, and is not an
    exact duplicate of an earlier (image_url, caption). Drops go to `rejected_pairs` with stage `source`; a pair
    without current scores is rejected as `unscored`."""
    from danqing_assets.lib.decide import source_decided_view, source_kept_columns
    from danqing_assets.lib.sql import parquet_literal

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    raw_path, scores_path = wh.partition_path("raw_pairs", snapshot), wh.partition_path("source_scores", snapshot)
    for table, path in (("raw_pairs", raw_path), ("source_scores", scores_path)):
        if not wh.exists(table, snapshot):
            raise FileNotFoundError(f"table {table!r} has no rows for snapshot {snapshot!r} yet ({path}): materialize it first")
    kept_columns = source_kept_columns(wh.columns("raw_pairs", snapshot), wh.columns("source_scores", snapshot))
    with stage_connection(wh, f"source_selected_pairs-{snapshot}", memory_limit_mb=config.memory_limit_mb,
                          temp_directory=config.temp_directory) as (con, scratch):
        decided = source_decided_view(con, raw_path, scores_path, config.model_dump(), scratch)
        return finish_stage_out_of_core(
            stage=SOURCE,
            snapshot=snapshot,
            wh=wh,
            con=con,
            entering=f"read_parquet({parquet_literal(raw_path)})",
            decided=decided,
            kept_columns=kept_columns,
            order_by="_row",
            kept_schema=schemas.SourceSelectedPairs,
            preview_columns=["domain", "page_language", "caption"],
        )
