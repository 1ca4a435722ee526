"""Stage 1, data source selection: Chinese pages, no blacklisted domains, 5-60 word safe captions, no exact dups."""


import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.common.stage_end import Table, finish_stage, publish, stage_check_specs, table_check_spec, versioned
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.lib import schemas
from danqing_assets.lib.domains import blacklist_match, load_domain_list
from danqing_assets.lib.stages import SOURCE


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
        description="Text-safety classifier: 'safety' (the shipped lexicon classifier, categories per stage), "
        "'safety:/path/lexicon.txt', 'lexicon:/path/terms.txt' (flat list), or 'package.module:ClassName' "
        "implementing predict(texts) -> [(unsafe, detail)] and optionally score(texts, stage).",
    )


class SourceScoresConfig(dg.Config):
    domain_blacklist_path: str | None = Field(
        default=None, description="Text file of blacklisted domains (subdomains match); unset: the shipped list."
    )
    text_safety_classifier: str = Field(
        default="safety",
        description="Text-safety classifier: 'safety' (the shipped lexicon classifier, categories per stage), "
        "'safety:/path/lexicon.txt', 'lexicon:/path/terms.txt' (flat list), or 'package.module:ClassName' "
        "implementing predict(texts) -> [(unsafe, detail)] and optionally score(texts, stage).",
    )


SCORE_SCHEMA = {"snapshot": pl.String, "pair_id": pl.String, "caption_md5": pl.String, "blacklisted_by": pl.String,
                "word_count": pl.Int64, "unsafe_score": pl.Float64, "unsafe_category": pl.String,
                "unsafe_term": pl.String, "caption_norm": pl.String}


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=SOURCE.group,
    code_version=versioned("2", config=SourceScoresConfig),  # 2: safety score + category (one classifier, 2 stages)
    deps=["raw_pairs"],
    check_specs=[table_check_spec("source_scores")],
)
def source_scores(
    context: dg.AssetExecutionContext, config: SourceScoresConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per raw pair, every score stage 1 decides on: the blacklist entry its domain matches, the caption's jieba word
    count, the text-safety score, category and evidence (stage-1 categories), the normalised caption (exact dedup), and the caption's md5 (stale scores
    are detected). Stored so thresholds are re-tunable without recomputing."""
    from danqing_assets.lib.decide import caption_md5
    from danqing_assets.lib.safety import load_text_safety_classifier, stage_scores
    from danqing_assets.lib.text import count_words_many, normalize_caption

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    raw = wh.read("raw_pairs", snapshot, columns=["pair_id", "domain", "caption"])
    blacklist = load_domain_list(config.domain_blacklist_path)
    classifier = load_text_safety_classifier(config.text_safety_classifier)
    captions = raw["caption"].fill_null("").to_list()
    domains = raw["domain"].to_list()
    matches = {d: blacklist_match(d, blacklist) for d in set(domains)}
    verdicts = stage_scores(classifier, captions, "source") if captions else []
    norm_of = {c: normalize_caption(c) for c in set(captions)}
    scores = pl.DataFrame(
        {
            "snapshot": [snapshot] * raw.height,
            "pair_id": raw["pair_id"],
            "caption_md5": caption_md5(raw["caption"].to_list()),
            "blacklisted_by": [matches[d] for d in domains],
            "word_count": count_words_many(captions) if captions else [],
            "unsafe_score": [float(v.score) for v in verdicts],
            "unsafe_category": [v.category for v in verdicts],
            "unsafe_term": [v.evidence or None for v in verdicts],
            "caption_norm": [norm_of[c] for c in captions],
        },
        schema=SCORE_SCHEMA,
    )
    checks = publish(wh, snapshot, [Table("source_scores", scores, schemas.SourceScores)], step=f"source_scores ({snapshot})")
    return dg.MaterializeResult(
        metadata={"rows_out": scores.height, "unsafe_at_0.5": int((scores["unsafe_score"] >= 0.5).sum()),
                  "blacklisted": int(scores["blacklisted_by"].is_not_null().sum()),
                  "text_safety_classifier": config.text_safety_classifier},
        check_results=checks,
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


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=SOURCE.group,
    code_version=versioned("3", sql=SOURCE.sql, config=SourceSelectionConfig),  # 3: unsafe_score threshold
    deps=["raw_pairs", "source_scores"],
    check_specs=stage_check_specs(SOURCE),
)
def source_selected_pairs(
    context: dg.AssetExecutionContext, config: SourceSelectionConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Pairs from Chinese pages on non-blacklisted domains whose caption has 5-60 words, is safe, and is not an
    exact duplicate of an earlier (image_url, caption). Drops go to `rejected_pairs` with stage `source`; a pair
    without current scores is rejected as `unscored`."""
    from danqing_assets.lib.decide import decide_source

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    raw = wh.read("raw_pairs", snapshot)
    decided = decide_source(raw, wh.read("source_scores", snapshot), config.model_dump())
    return finish_stage(
        stage=SOURCE,
        snapshot=snapshot,
        wh=wh,
        entering=raw["pair_id"],
        decided=decided,
        kept_schema=schemas.SourceSelectedPairs,
        drop_columns=["blacklisted_by", "unsafe_score", "unsafe_category", "unsafe_term", "caption_md5"],
        preview_columns=["domain", "page_language", "caption"],
    )
