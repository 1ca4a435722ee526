"""The pipeline's steps, described once: everything else that needs to know the stages is derived from `PIPELINE`.

Each `Stage` says which assets it owns, which Dagster group and `sql/` folder it lives in (the same name as its
module under `danqing_assets/defs/`), which ledger stage name its rejections carry, its reasons in decision order,
and where the paper's funnel stood before and after it. From this one table come:

- the reason vocabulary per ledger stage (`REASONS_BY_STAGE`, `stage_of`), used by the ledger schema;
- the funnel (`danqing funnel`, `lib/funnel.py`) and the paper comparison in every stage's metadata;
- the list of modules Dagster loads (`defs/__init__.py`), so a new stage is one registry entry plus its module.

Tests hold the registry to the code: every reason a stage's SQL files can return is registered for that stage, every
registered reason is produced somewhere (by its SQL, or in code for `code_reasons`), and every listed asset exists.

Adding a stage: write `defs/<group>.py` and `sql/<group>/<asset>.sql`, register it here, add its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from danqing_assets.lib import reasons as R


@dataclass(frozen=True)
class Stage:
    group: str
    """Dagster group = module under `danqing_assets/defs/` = folder under `sql/`."""
    assets: tuple[str, ...]
    """Every asset the stage's module defines, in the order they run."""
    table: str | None = None
    """The asset whose rows are the pairs that go on (the funnel reads its row count)."""
    ledger: str | None = None
    """The `stage` its rejections carry in `rejected_pairs` (None: the step rejects nothing)."""
    reasons: tuple[str, ...] = ()
    """Rejection reasons in decision order: a pair failing several rules is recorded under the first."""
    code_reasons: frozenset[str] = frozenset()
    """The reasons decided in Python rather than by the stage's SQL (dedup, fetch errors, decode errors)."""
    kept_where: tuple[str, str] | None = None
    """(column, value) selecting the rows that go on, for tables that keep every input row with a status."""
    paper_in: float | None = None
    """Pairs (millions) entering the paper's version of this step."""
    paper_out: float | None = None
    """Pairs (millions) after it."""
    description: str = ""
    sql: tuple[str, ...] = field(default=())
    """Decision queries, `sql/<group>/<asset>.sql`; each returns `pair_id, reason, detail` (reason NULL = passes)."""

    @property
    def paper_kept(self) -> float | None:
        """The paper's kept share at this step."""
        if self.paper_in is None or self.paper_out is None:
            return None
        return self.paper_out / self.paper_in


# The paper's funnel (DANQING.md), in millions of pairs. The paper downloaded images before refining text; we refine
# first (only images of surviving captions are fetched), so per-step rates compare with the paper's steps, not rows.
PAPER_RAW = 1050.0
PAPER_RELEASED = 99.9
PAPER_REMOVED = 0.9046

BOOTSTRAP = Stage(
    group="s0_bootstrap_model",
    assets=("bootstrap_checkpoint", "demo_eval_sets"),
    description="the embedded default's own Chinese CLIP, trained on a seed crawl; held-out demo eval sets",
)
INGEST = Stage(
    group="s0_ingest",
    assets=("warc_files", "raw_pairs", "warc_image_captures"),
    table="raw_pairs",
    paper_out=PAPER_RAW,
    description="WARC files -> every <img> with its alt text on Chinese-labelled pages",
)
SOURCE = Stage(
    group="s1_source_selection",
    assets=("source_scores", "source_selected_pairs"),
    table="source_selected_pairs",
    ledger=R.SOURCE,
    reasons=(
        R.NOT_CHINESE_PAGE,
        R.BLACKLISTED_DOMAIN,
        R.CAPTION_MISSING,
        R.UNSCORED,
        R.CAPTION_TOO_SHORT,
        R.CAPTION_TOO_LONG,
        R.UNSAFE_TEXT,
        R.DUPLICATE_PAIR,
    ),
    paper_in=PAPER_RAW,
    paper_out=706.0,
    description="Chinese pages, no blacklisted domains, 5-60 words, safe, no exact dups",
    sql=("s1_source_selection/source_selected_pairs.sql",),
)
TEXT = Stage(
    group="s2_text_refinement",
    assets=("text_scores", "text_refined_pairs"),
    table="text_refined_pairs",
    ledger=R.TEXT,
    reasons=(
        R.UNSCORED,
        R.NOT_CHINESE_CAPTION,
        R.NO_NOUN,
        R.TOO_MANY_UNK,
        R.LOW_INFORMATION,
        R.SENSITIVE_TEXT,
        R.NEAR_DUPLICATE_CAPTION,
    ),
    code_reasons=frozenset({R.NEAR_DUPLICATE_CAPTION}),
    paper_in=475.1,
    paper_out=397.2,
    description="Chinese, >= 1 noun, <= 5 [UNK], information, sensitive terms, MinHash dups",
    sql=("s2_text_refinement/text_refined_pairs.sql",),
)
FETCH = Stage(
    group="s3_image_acquisition",
    assets=("fetched_images",),
    table="fetched_images",
    ledger=R.FETCH,
    reasons=(
        R.INVALID_URL,
        R.BLOCKED_ADDRESS,
        R.ROBOTS_DISALLOWED,
        R.DNS_ERROR,
        R.CONNECTION_ERROR,
        R.TIMEOUT,
        R.TOO_MANY_REDIRECTS,
        R.HTTP_NOT_FOUND,
        R.RATE_LIMITED,
        R.HTTP_CLIENT_ERROR,
        R.HTTP_SERVER_ERROR,
        R.OPTOUT_HEADER,
        R.TOO_LARGE,
        R.NOT_AN_IMAGE,
        R.DECOMPRESSION_BOMB,
        R.DECODE_ERROR,
        R.INTERNAL_ERROR,
    ),
    code_reasons=frozenset(
        {
            R.INTERNAL_ERROR,
            R.INVALID_URL, R.BLOCKED_ADDRESS, R.ROBOTS_DISALLOWED, R.DNS_ERROR, R.CONNECTION_ERROR, R.TIMEOUT,
            R.TOO_MANY_REDIRECTS, R.HTTP_NOT_FOUND, R.RATE_LIMITED, R.HTTP_CLIENT_ERROR, R.HTTP_SERVER_ERROR,
            R.OPTOUT_HEADER, R.TOO_LARGE, R.NOT_AN_IMAGE, R.DECOMPRESSION_BOMB, R.DECODE_ERROR,
        }
    ),
    kept_where=("status", "ok"),
    paper_in=706.0,
    paper_out=475.1,
    description="WARC captures first, then a polite, SSRF-safe HTTP fetcher",
)
IMAGE = Stage(
    group="s3_visual_diversification",
    assets=("image_scores", "image_embeddings", "visually_diversified_pairs", "image_clusters"),
    table="visually_diversified_pairs",
    ledger=R.IMAGE,
    reasons=(
        R.DECODE_ERROR,
        R.DECOMPRESSION_BOMB,
        R.INTERNAL_ERROR,
        R.UNSCORED,
        R.TOO_SMALL,
        R.EXTREME_ASPECT,
        R.FLAT_IMAGE,
        R.BLURRY_IMAGE,
        R.LOW_ENTROPY_IMAGE,
        R.NSFW_IMAGE,
        R.DUPLICATE_IMAGE,
        R.NEAR_DUPLICATE_IMAGE,
        R.SEMANTIC_DUPLICATE,
    ),
    # decode errors come from image_scores' score_error column; duplicates from the clustering in Python
    code_reasons=frozenset(
        {R.DECODE_ERROR, R.DECOMPRESSION_BOMB, R.INTERNAL_ERROR, R.DUPLICATE_IMAGE, R.NEAR_DUPLICATE_IMAGE,
         R.SEMANTIC_DUPLICATE}
    ),
    paper_in=397.2,
    paper_out=178.6,
    description="size, aspect, flat, blur, entropy, NSFW; exact / pHash / embedding duplicates",
    sql=("s3_visual_diversification/visually_diversified_pairs.sql",),
)
CROSS_MODAL = Stage(
    group="s4_cross_modal",
    assets=("cross_modal_scores", "aligned_pairs"),
    table="aligned_pairs",
    ledger=R.CROSS_MODAL,
    reasons=(R.UNSCORED, R.HIGH_SIMILARITY, R.LOW_SIMILARITY),
    # the paper: the band removes ~25 M of 178.6 M, the cross-batch merge ~53 M more (99.9 M rows released)
    paper_in=178.6,
    paper_out=178.6 - 25.0,
    description="image-text similarity band (plus text-heaviness for text-heavy images)",
    sql=("s4_cross_modal/aligned_pairs.sql",),
)
CROSS_BATCH = Stage(
    group="s5_cross_batch",
    assets=("curated_pairs",),
    table="curated_pairs",
    ledger=R.CROSS_BATCH,
    reasons=(R.CROSS_BATCH_DUPLICATE,),
    code_reasons=frozenset({R.CROSS_BATCH_DUPLICATE}),
    paper_in=178.6 - 25.0,
    paper_out=PAPER_RELEASED,
    description="every partition's aligned pairs merged; exact, pHash and embedding duplicates across them removed",
)
RELEASE = Stage(
    group="s6_release",
    assets=("funnel_report", "danqing_dataset"),
    description="the funnel beside the paper's; the dataset as Parquet + WebDataset shards with its card",
)
PRETRAIN = Stage(
    group="s7_pretraining",
    assets=("pretrained_checkpoint", "training_decontamination", "siglip_checkpoint", "raw_baseline_checkpoint",
            "ablation_report"),
    description="continued pretraining on the release, the raw-data baseline trained alike, and the ablation",
)
EVALUATION = Stage(
    group="s8_evaluation",
    assets=("zero_shot_metrics", "retrieval_metrics"),
    description="zero-shot classification and retrieval of a checkpoint (clip_benchmark metrics)",
)

PIPELINE: tuple[Stage, ...] = (BOOTSTRAP, INGEST, SOURCE, TEXT, FETCH, IMAGE, CROSS_MODAL, CROSS_BATCH, RELEASE, PRETRAIN,
                             EVALUATION)
"""Every step, in the order it runs here."""

LEDGER_STAGES: tuple[str, ...] = tuple(s.ledger for s in PIPELINE if s.ledger)
REASONS_BY_STAGE: dict[str, tuple[str, ...]] = {s.ledger: s.reasons for s in PIPELINE if s.ledger}
ALL_REASONS: frozenset[str] = frozenset(r for rs in REASONS_BY_STAGE.values() for r in rs)


def by_ledger(name: str) -> Stage:
    """The stage whose rejections carry ledger stage `name`."""
    for s in PIPELINE:
        if s.ledger == name:
            return s
    raise KeyError(f"no stage writes ledger stage {name!r}")


def by_group(group: str) -> Stage:
    for s in PIPELINE:
        if s.group == group:
            return s
    raise KeyError(f"no stage in group {group!r}")


def stage_of(reason: str) -> str:
    """The first ledger stage (in pipeline order) that can reject for `reason`."""
    for s in PIPELINE:
        if reason in s.reasons:
            return s.ledger  # type: ignore[return-value]
    raise KeyError(f"unknown reason {reason!r}")


def reason_order(ledger: str) -> dict[str, int]:
    """reason -> its position in the stage's decision order (for sorting reports)."""
    try:
        return {r: i for i, r in enumerate(by_ledger(ledger).reasons)}
    except KeyError:
        return {}
