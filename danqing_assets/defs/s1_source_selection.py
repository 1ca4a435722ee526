"""Stage 1, data source selection: Chinese pages, no blacklisted domains, 5-60 word safe captions, no exact dups."""


import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.metadata import check_from_validation, ledger_identity_check, stage_metadata
from danqing_assets.defs.partitions import snapshot_partitions
from danqing_assets.defs.resources import WarehouseResource
from danqing_assets.lib import reasons, schemas
from danqing_assets.lib.domains import blacklist_match, load_domain_list
from danqing_assets.lib.sql import run_sql

GROUP = "s1_source_selection"
STAGE = reasons.SOURCE


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
        default="lexicon",
        description="Text-safety classifier: 'lexicon' (shipped unsafe-term list), 'lexicon:/path/terms.txt', "
        "or 'package.module:ClassName' implementing predict(texts) -> [(unsafe, detail)].",
    )


def score_source_pairs(raw: pl.DataFrame, config: SourceSelectionConfig) -> pl.DataFrame:
    """The stage-1 scores, one column each, so the decision in SQL can be re-tuned without recomputing them."""
    from danqing_assets.lib.safety import load_text_safety_classifier, run_classifier
    from danqing_assets.lib.text import count_words_many, normalize_caption

    blacklist = load_domain_list(config.domain_blacklist_path)
    classifier = load_text_safety_classifier(config.text_safety_classifier)
    captions = raw["caption"].fill_null("").to_list()
    domains = raw["domain"].to_list()
    matches = {d: blacklist_match(d, blacklist) for d in set(domains)}
    verdicts = run_classifier(classifier, captions) if captions else []
    norm_of = {c: normalize_caption(c) for c in set(captions)}
    return raw.with_columns(
        pl.Series("blacklisted_by", [matches[d] for d in domains], dtype=pl.String),
        pl.Series("word_count", count_words_many(captions) if captions else [], dtype=pl.Int64),
        pl.Series("unsafe", [bool(v[0]) for v in verdicts], dtype=pl.Boolean),
        pl.Series("unsafe_term", [v[1] if v[0] else None for v in verdicts], dtype=pl.String),
        pl.Series("caption_norm", [norm_of[c] for c in captions], dtype=pl.String),
    )


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=GROUP,
    code_version="1",
    deps=["raw_pairs"],
    check_specs=[
        dg.AssetCheckSpec("source_selected_pairs_schema", asset="source_selected_pairs", blocking=True),
        dg.AssetCheckSpec("source_rejections_schema", asset="source_selected_pairs", blocking=True),
        dg.AssetCheckSpec(
            "ledger_identity",
            asset="source_selected_pairs",
            blocking=True,
            description="Every raw pair is either kept by stage 1 or in the ledger with stage `source`, never both.",
        ),
    ],
)
def source_selected_pairs(
    context: dg.AssetExecutionContext, config: SourceSelectionConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Pairs from Chinese pages on non-blacklisted domains whose caption has 5-60 words, is safe, and is not an
    exact duplicate of an earlier (image_url, caption). Drops go to `rejected_pairs` with stage `source`."""
    snapshot = context.partition_key
    wh = warehouse.warehouse()
    raw = wh.read("raw_pairs", snapshot)
    scored = score_source_pairs(raw, config)
    decided = run_sql(
        "s1_source_selection/source_selected_pairs.sql",
        tables={"scored": scored},
        params={
            "require_chinese_page": config.require_chinese_page,
            "min_words": config.min_words,
            "max_words": config.max_words,
        },
    )
    kept = decided.filter(pl.col("reason").is_null()).drop("reason", "detail", "blacklisted_by", "unsafe", "unsafe_term")
    rejected = decided.filter(pl.col("reason").is_not_null())
    ledger = rejected.select("pair_id", "reason", "detail")
    wh.write("source_selected_pairs", snapshot, kept)
    wh.write_rejections(STAGE, snapshot, ledger)

    metadata = stage_metadata(
        stage=STAGE,
        reasons=reasons.SOURCE_REASONS,
        rows_in=raw.height,
        kept=kept,
        rejected=rejected,
        raw_rows=raw.height,
        preview_columns=["domain", "page_language", "caption"],
    )
    ledger_check = schemas.validate(schemas.Rejections, wh.read("rejected_pairs", snapshot, stage=STAGE))
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            check_from_validation("source_selected_pairs_schema", schemas.validate(schemas.SourceSelectedPairs, kept)),
            check_from_validation("source_rejections_schema", ledger_check),
            ledger_identity_check("ledger_identity", raw["pair_id"], kept, ledger),
        ],
    )
