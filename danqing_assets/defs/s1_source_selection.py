"""Stage 1, data source selection: Chinese pages, no blacklisted domains, 5-60 word safe captions, no exact dups."""


import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.common.stage_end import finish_stage, stage_check_specs, versioned
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.lib import schemas
from danqing_assets.lib.domains import blacklist_match, load_domain_list
from danqing_assets.lib.sql import run_sql
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


SQL = SOURCE.sql[0]


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=SOURCE.group,
    code_version=versioned("1", sql=SOURCE.sql, config=SourceSelectionConfig),
    deps=["raw_pairs"],
    check_specs=stage_check_specs(SOURCE),
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
    decision = run_sql(
        SQL,
        tables={"scored": scored},
        params={
            "require_chinese_page": config.require_chinese_page,
            "min_words": config.min_words,
            "max_words": config.max_words,
        },
    )
    return finish_stage(
        stage=SOURCE,
        snapshot=snapshot,
        wh=wh,
        entering=raw["pair_id"],
        decided=scored.join(decision, on="pair_id", how="left"),
        kept_schema=schemas.SourceSelectedPairs,
        drop_columns=["blacklisted_by", "unsafe", "unsafe_term"],
        preview_columns=["domain", "page_language", "caption"],
    )
