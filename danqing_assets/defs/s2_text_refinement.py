"""Stage 2, text refinement: score every caption once, then decide in SQL and drop near-duplicate captions.

The paper downloaded images before refining text; we refine first, so the fetcher downloads only pairs that survive
stage 2 (downloads are the expensive step). The funnel metadata shows the paper's rate beside ours.
"""

from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.common.metadata import markdown_table
from danqing_assets.defs.common.out_of_core import (
    stage_connection,
    chunk_rows_field,
    memory_limit_field,
    temp_directory_field,
    workers_field,
)
from danqing_assets.defs.common.stage_end import (
    finish_stage_out_of_core,
    publish_chunks,
    stage_check_specs,
    table_check_spec,
    versioned,
)
from danqing_assets.defs.common.batches import BATCH_BACKFILL_POLICY, each_batch
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.lib import schemas
from danqing_assets.lib.stages import TEXT
from danqing_assets.lib.text import DEFAULT_MAX_UNK, DEFAULT_MIN_ENTROPY
from danqing_assets.lib.text_dedup import DEFAULT_NGRAM, DEFAULT_ONE_EDIT_MIN_CHARS, DEFAULT_THRESHOLD


class TextScoresConfig(dg.Config):
    vocab_path: str | None = Field(
        default=None,
        description="Chinese BERT WordPiece vocab for counting [UNK] tokens; unset: the vocab.txt of the cn-clip package.",
    )
    text_safety_classifier: str = Field(
        default="safety",
        description="Text-safety classifier whose stage-2 categories (suggestive, spam) give sensitive_score: 'safety' "
        "(shipped lexicon + model), 'safety-lexicon', 'safety:/path/lexicon.txt', or 'package.module:ClassName' with score(texts, stage) "
        "(a classifier without it scores 0 here). Use the same one as stage 1.",
    )
    workers: int | None = workers_field()
    chunk_rows: int = chunk_rows_field()
    memory_limit_mb: int = memory_limit_field()
    temp_directory: str | None = temp_directory_field()


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=TEXT.group,
    code_version=versioned("6", config=TextScoresConfig),  # 4: safety score; 5: chunks on every core, stage-1 nouns; 6: safety model on
    deps=["source_selected_pairs", "source_scores"],
    check_specs=[table_check_spec("text_scores")],
)
@each_batch
def text_scores(
    context: dg.AssetExecutionContext, config: TextScoresConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per pair, every score stage 2 decides on: Traditional->Simplified and cleaned caption, Han share, language,
    noun count, [UNK] count, information entropy, sensitive score / category / evidence, and the md5 of the caption they were computed
    from (so scores of a since-changed caption are detected as stale). Scored in chunks on every core; the noun count
    stage 1 stored for the same caption is reused (a caption is segmented by jieba once)."""
    from danqing_assets.lib.safety import load_text_safety_classifier
    from danqing_assets.lib.sql import parquet_literal, release_memory
    from danqing_assets.lib.text import default_vocab_path
    from danqing_assets.lib.text.batch import TEXT_SCORE_SCHEMA, PoolReport, TextChunk, default_workers, map_chunks
    from danqing_assets.lib.warehouse import iter_parquet_file

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    pairs_path, s1_path = wh.partition_path("source_selected_pairs", snapshot), wh.partition_path("source_scores", snapshot)
    if not wh.exists("source_selected_pairs", snapshot):
        raise FileNotFoundError(f"table 'source_selected_pairs' has no rows for snapshot {snapshot!r} yet ({pairs_path}): "
                                "materialize it first")
    load_text_safety_classifier(config.text_safety_classifier)  # bad specs and paths fail before any worker starts
    if config.vocab_path is None:
        default_vocab_path()
    elif not Path(config.vocab_path).is_file():
        raise FileNotFoundError(f"vocab_path {config.vocab_path!r} is not a file")
    job = TextChunk(snapshot, config.text_safety_classifier, config.vocab_path)
    report = PoolReport()
    with stage_connection(wh, f"text_scores-{snapshot}", memory_limit_mb=config.memory_limit_mb,
                          temp_directory=config.temp_directory) as (con, scratch):
        # one DuckDB thread (the scoring runs in worker processes): with two, the join + sort of 4.2 M captions ran
        # out of 512 MB (per-thread sort and join state did not spill in time; one thread: 14 s, 0.6 GB). At 5 M pairs
        # the step process still peaks at 1.42 GB (1.52 GB with two threads): not yet within 1.5 GB with a worker
        con.execute("SET threads = 1")
        pairs = f"read_parquet({parquet_literal(pairs_path)}, file_row_number = true)"
        if wh.exists("source_scores", snapshot) and "noun_count" in wh.columns("source_scores", snapshot):  # stage 1 stored the noun count
            query = (f"SELECT p.pair_id, p.caption, s.noun_count AS stage1_nouns FROM {pairs} p "
                     f"LEFT JOIN read_parquet({parquet_literal(s1_path)}) s "
                     "ON p.pair_id = s.pair_id AND s.caption_md5 = md5(p.caption) ORDER BY p.file_row_number")
        else:
            query = f"SELECT pair_id, caption FROM {pairs} ORDER BY file_row_number"
        # the join (and its sort) runs to a scratch file before any scoring starts: DuckDB's hash table and sort
        # buffers are given back before jieba and the safety classifier load here and in the workers, instead of all
        # of them being resident at once (1 M pairs: the step process 1.13 GB while it streamed the join)
        joined = scratch / "text_scores_input.parquet"
        con.execute(f"COPY ({query}) TO {parquet_literal(joined)} (FORMAT PARQUET, ROW_GROUP_SIZE {config.chunk_rows})")
        release_memory(con, config.memory_limit_mb)
        chunks = (frame for frame in iter_parquet_file(joined, None, config.chunk_rows) if frame.height)
        check, rows = publish_chunks(
            wh, snapshot, "text_scores", schemas.TextScores, TEXT_SCORE_SCHEMA,
            map_chunks(job, chunks, workers=config.workers or default_workers(), report=report), con,
            step=f"text_scores ({snapshot})")
        scores = f"read_parquet({parquet_literal(wh.partition_path('text_scores', snapshot))})"
        described = _describe(con, scores)
        distinct = con.execute(  # a grouped DISTINCT spills; count(DISTINCT ...) keeps every caption in memory
            f"SELECT count(*) FROM (SELECT DISTINCT caption FROM read_parquet({parquet_literal(pairs_path)}))").fetchone()[0]
    return dg.MaterializeResult(
        metadata={
            "rows_out": rows,
            "distinct_captions": int(distinct),
            "score_summary": dg.MetadataValue.md(markdown_table(described, described.columns, limit=9)),
            "workers": report.workers,
            "chunks": report.chunks,
            "workers_died": report.workers_died,
        },
        check_results=[check],
    )


_SUMMARY_COLUMNS = ("han_share", "noun_count", "unk_count", "entropy", "sensitive_score")
_STATISTICS = ("count", "null_count", "mean", "std", "min", "25%", "50%", "75%", "max")


def _describe(con: Any, scores: str) -> pl.DataFrame:
    """The `describe()` table of the score summary, computed by DuckDB on the written file. The three quantiles of a
    column are one aggregate (`quantile_disc(c, [...])`): DuckDB holds a copy of the column per quantile aggregate,
    outside its memory limit (15 of them at 4.2 M rows: +0.64 GB)."""
    row = con.execute("SELECT " + ", ".join(
        f"count({c}), count(*) - count({c}), avg({c}), stddev_samp({c}), min({c}), "
        f"quantile_disc({c}, [0.25, 0.5, 0.75]), max({c})" for c in _SUMMARY_COLUMNS) + f" FROM {scores}").fetchone()
    columns: dict[str, list[Any]] = {"statistic": list(_STATISTICS)}
    for k, c in enumerate(_SUMMARY_COLUMNS):
        n, nulls, mean, std, lo, quartiles, hi = row[7 * k : 7 * k + 7]
        quartiles = quartiles if quartiles is not None else [None] * 3
        columns[c] = [None if v is None else float(v) for v in (n, nulls, mean, std, lo, *quartiles, hi)]
    return pl.DataFrame(columns, schema={"statistic": pl.String, **{c: pl.Float64 for c in _SUMMARY_COLUMNS}})


class TextRefinementConfig(dg.Config):
    min_han_share: float = Field(
        default=0.1, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Chinese check: besides language = zho, the least share of Han characters among the caption's "
        "letters (low on purpose: 'iPhone 15 Pro Max 手机壳' has 0.2).",
    )
    min_nouns: int = Field(default=1, ge=0, description="Least nouns (jieba POS) a caption must have (paper: 1).")
    max_unk: int = Field(default=DEFAULT_MAX_UNK, ge=0, description="Most [UNK] tokens under the Chinese BERT vocab (paper: 5).")
    min_entropy: float = Field(
        default=DEFAULT_MIN_ENTROPY, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Least information entropy in [0, 1] (definition and calibration: danqing_assets.lib.text, "
        "DEFAULT_MIN_ENTROPY; the paper's 6e-4 is on an unexplained scale).",
    )
    min_sensitive_score: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Reject as sensitive_text at or above this text-safety score (stage-2 categories: suggestive, "
        "spam; lib/safety.py).",
    )
    near_duplicate_threshold: float = Field(
        default=DEFAULT_THRESHOLD, gt=0.0, le=1.0, allow_inf_nan=False,
        description="Caption near-duplicate Jaccard threshold (0..1] on character n-grams (MinHash LSH)."
    )
    near_duplicate_ngram: int = Field(default=DEFAULT_NGRAM, ge=1, description="Character n-gram size for caption near-duplicates.")
    near_duplicate_one_edit_min_chars: int | None = Field(
        default=DEFAULT_ONE_EDIT_MIN_CHARS, ge=3,
        description="Captions with at least this many letters / digits / Han characters are also near duplicates when "
        "one edit apart (a character or two-character word substituted, inserted or deleted, punctuation, a short "
        "word moved; lib/text_dedup.py); null disables this rule.",
    )
    dedup_captions: bool = Field(default=True, description="Remove caption near-duplicates.")
    workers: int | None = workers_field("compute the caption near-duplicate index's MinHash keys")
    truth_path: str | None = Field(
        default=None,
        description="Optional labelled sample (parquet: pair_id, expected_stage, expected_reason): per-reason "
        "precision and recall go into the metadata, to calibrate thresholds.",
    )
    memory_limit_mb: int = memory_limit_field()
    temp_directory: str | None = temp_directory_field()


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=TEXT.group,
    code_version=versioned("4", sql=TEXT.sql, config=TextRefinementConfig),  # 4: out of core (DuckDB on Parquet)
    deps=["source_selected_pairs", "text_scores"],
    check_specs=stage_check_specs(TEXT),
)
@each_batch
def text_refined_pairs(
    context: dg.AssetExecutionContext, config: TextRefinementConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Chinese captions with at least one noun, at most 5 [UNK] tokens, enough information and no sensitive terms;
    of near-duplicate captions, the first in crawl order (warc file, offset, img index) is kept. A pair without
    current scores is rejected as `unscored`."""
    from danqing_assets.lib.decide import text_decided_view
    from danqing_assets.lib.sql import parquet_literal

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    pairs_path, scores_path = wh.partition_path("source_selected_pairs", snapshot), wh.partition_path("text_scores", snapshot)
    for table, path in (("source_selected_pairs", pairs_path), ("text_scores", scores_path)):
        if not wh.exists(table, snapshot):
            raise FileNotFoundError(f"table {table!r} has no rows for snapshot {snapshot!r} yet ({path}): materialize it first")
    kept_columns = [*wh.columns("source_selected_pairs", snapshot),
                    *[c for c in wh.columns("text_scores", snapshot) if c not in ("snapshot", "pair_id")]]
    with stage_connection(wh, f"text_refined_pairs-{snapshot}", memory_limit_mb=config.memory_limit_mb,
                          temp_directory=config.temp_directory) as (con, scratch):
        # one DuckDB thread: its joins and sorts over the decided rows then spill within memory_limit_mb (with two,
        # the ordered copy of 4.2 M passing captions ran out of 512 MB); insertion order kept, so that rows joined by
        # position are written in the order they are read
        con.execute("SET threads = 1; SET preserve_insertion_order = true")
        decided, passing, in_order = text_decided_view(con, pairs_path, scores_path, config.model_dump(), scratch)
        result = finish_stage_out_of_core(
            stage=TEXT,
            snapshot=snapshot,
            wh=wh,
            con=con,
            entering=f"read_parquet({parquet_literal(pairs_path)})",
            decided=decided,
            kept_columns=kept_columns,
            # already in crawl order: written as read, no sort (a sort of the 30-column kept rows ran out of 512 MB)
            order_by=None if in_order else "warc_file, warc_offset, img_index, _row",
            kept_schema=schemas.TextRefinedPairs,
            preview_columns=["caption", "caption_clean"],
            truth_path=config.truth_path,
            extra_metadata={"rules_passed": int(passing)},
        )
    # the counts the stage end already took (no second scan of the decided rows)
    rows_in, kept_rows = int(result.metadata["rows_in"]), int(result.metadata["rows_out"])
    return result._replace(metadata={**result.metadata, "order_vs_paper": dg.MetadataValue.md(
        "| order | step before stage 2 | pairs in | after stage 2 | kept |\n|---|---|---|---|---|\n"
        f"| paper: download, then text | downloaded images | 475.1 M | 397.2 M | {397.2 / 475.1:.1%} |\n"
        f"| here: text, then download | stage-1 survivors | {rows_in} | {kept_rows} | "
        f"{(kept_rows / rows_in if rows_in else 0):.1%} |\n\n"
        "Refining text first means images are fetched only for pairs whose text survives."
    )})
