"""Stage 2, text refinement: score every caption once, then decide in SQL and drop near-duplicate captions.

The paper downloaded images before refining text; we refine first, so the fetcher downloads only pairs that survive
stage 2 (downloads are the expensive step). The funnel metadata shows the paper's rate beside ours.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.common.metadata import markdown_table
from danqing_assets.defs.common.stage_end import Table, finish_stage, publish, stage_check_specs, table_check_spec, versioned
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
        "(shipped), 'safety:/path/lexicon.txt', or 'package.module:ClassName' with score(texts, stage) "
        "(a classifier without it scores 0 here). Use the same one as stage 1.",
    )


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=TEXT.group,
    code_version=versioned("4", config=TextScoresConfig),  # 3: one language detector (kana rule); 4: safety score
    deps=["source_selected_pairs"],
    check_specs=[table_check_spec("text_scores")],
)
def text_scores(
    context: dg.AssetExecutionContext, config: TextScoresConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per pair, every score stage 2 decides on: Traditional->Simplified and cleaned caption, Han share, language,
    noun count, [UNK] count, information entropy, sensitive score / category / evidence, and the md5 of the caption they were computed
    from (so scores of a since-changed caption are detected as stale). Repeated captions are scored once."""
    from danqing_assets.lib.decide import caption_md5
    from danqing_assets.lib.text import score_captions

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    pairs = wh.read("source_selected_pairs", snapshot, columns=["pair_id", "caption"])
    scores = score_captions(
        pairs["caption"].to_list(), vocab_path=config.vocab_path, safety_classifier=config.text_safety_classifier
    )
    md5 = caption_md5(pairs["caption"].to_list())
    out = pl.concat([pairs.select("pair_id"), scores], how="horizontal").with_columns(
        pl.lit(snapshot, dtype=pl.String).alias("snapshot"), pl.Series("caption_md5", md5, dtype=pl.String)
    )
    checks = publish(wh, snapshot, [Table("text_scores", out, schemas.TextScores)], step=f"text_scores ({snapshot})")
    described = out.select("han_share", "noun_count", "unk_count", "entropy", "sensitive_score").describe()
    return dg.MaterializeResult(
        metadata={
            "rows_out": out.height,
            "distinct_captions": pairs["caption"].n_unique(),
            "score_summary": dg.MetadataValue.md(markdown_table(described, described.columns, limit=9)),
        },
        check_results=checks,
    )


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
    truth_path: str | None = Field(
        default=None,
        description="Optional labelled sample (parquet: pair_id, expected_stage, expected_reason): per-reason "
        "precision and recall go into the metadata, to calibrate thresholds.",
    )


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=TEXT.group,
    code_version=versioned("3", sql=TEXT.sql, config=TextRefinementConfig),  # 3: sensitive score; one-edit dedup
    deps=["source_selected_pairs", "text_scores"],
    check_specs=stage_check_specs(TEXT),
)
def text_refined_pairs(
    context: dg.AssetExecutionContext, config: TextRefinementConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Chinese captions with at least one noun, at most 5 [UNK] tokens, enough information and no sensitive terms;
    of near-duplicate captions, the first in crawl order (warc file, offset, img index) is kept. A pair without
    current scores is rejected as `unscored`."""
    from danqing_assets.lib.decide import decide_text

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    pairs = wh.read("source_selected_pairs", snapshot)
    decided = decide_text(pairs, wh.read("text_scores", snapshot), config.model_dump())
    kept_rows = decided.filter(pl.col("reason").is_null()).height
    return finish_stage(
        stage=TEXT,
        snapshot=snapshot,
        wh=wh,
        entering=pairs["pair_id"],
        decided=decided,
        kept_schema=schemas.TextRefinedPairs,
        preview_columns=["caption", "caption_clean"],
        truth_path=config.truth_path,
        extra_metadata={
            "order_vs_paper": dg.MetadataValue.md(
                "| order | step before stage 2 | pairs in | after stage 2 | kept |\n|---|---|---|---|---|\n"
                f"| paper: download, then text | downloaded images | 475.1 M | 397.2 M | {397.2 / 475.1:.1%} |\n"
                f"| here: text, then download | stage-1 survivors | {pairs.height} | {kept_rows} | "
                f"{(kept_rows / pairs.height if pairs.height else 0):.1%} |\n\n"
                "Refining text first means images are fetched only for pairs whose text survives."
            ),
        },
    )
