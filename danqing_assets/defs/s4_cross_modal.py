"""Stage 4, cross-modal band: image-text similarity per pair, then keep the pairs inside the band.

Below the band the caption does not describe the image; above it the image is usually text-heavy (posters,
screenshots) and the caption its OCR. Scores are stored first (`cross_modal_scores`), the band is SQL over them, so
it is re-tunable (absolute or per-snapshot quantiles) without scoring again.
"""

import time
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field, model_validator

from danqing_assets.defs.common.metadata import markdown_table
from danqing_assets.defs.common.batches import BATCH_BACKFILL_POLICY, each_batch
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import GPU_POOL, ClipModelResource, WarehouseResource
from danqing_assets.defs.common.stage_end import Table, finish_stage, publish, stage_check_specs, table_check_spec, versioned
from danqing_assets.lib import schemas
from danqing_assets.lib.decide import require_text_heaviness
from danqing_assets.lib.stages import CROSS_MODAL
from danqing_assets.lib.textness import TEXT_HEAVY_BAND

SCORE_SCHEMA = {"snapshot": pl.String, "pair_id": pl.String, "image_sha256": pl.String, "model": pl.String,
                "similarity_scale": pl.String, "similarity": pl.Float64, "text_heaviness": pl.Float64,
                "text_area_share": pl.Float64}


class CrossModalScoresConfig(dg.Config):
    text_batch_size: int = Field(default=256, ge=1, description="Captions per text-encoder forward pass.")


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=CROSS_MODAL.group,
    code_version=versioned("2", config=CrossModalScoresConfig),  # 2: text heaviness read from image_scores
    deps=["visually_diversified_pairs", "image_embeddings", "image_scores", "bootstrap_checkpoint"],
    tags={"danqing/device": "gpu"},
    pool=GPU_POOL,
    check_specs=[table_check_spec("cross_modal_scores")],
)
@each_batch
def cross_modal_scores(
    context: dg.AssetExecutionContext,
    config: CrossModalScoresConfig,
    warehouse: WarehouseResource,
    clip: ClipModelResource,
) -> dg.MaterializeResult:
    """Per stage-3 survivor: the cosine similarity of its image embedding (reused from `image_embeddings`, never
    computed twice) and its cleaned caption's text embedding, from the `clip` resource's model; and the image's
    text-heaviness (text-like area, no CLIP needed; computed once, by `image_scores`)."""
    snapshot = context.partition_key
    wh = warehouse.warehouse()
    pairs = wh.read("visually_diversified_pairs", snapshot, columns=["pair_id", "image_sha256", "caption_clean"])
    if not clip.enabled:
        raise dg.Failure("stage 4 needs a CLIP model: the `clip` resource is 'none' (use the default bootstrap model "
                         "or configure one)")
    label = clip.describe()
    emb = wh.read("image_embeddings", snapshot)
    made_by = set(emb["model"].unique().to_list())
    if pairs.height and made_by != {label}:
        raise dg.Failure(f"image_embeddings of {snapshot!r} were made by {sorted(made_by) or 'no model'}, the clip "
                         f"resource is {label}: re-materialize image_embeddings with the same model")
    model = clip.load()
    started = time.monotonic()
    vec = dict(zip(emb["image_sha256"].to_list(), emb["embedding"].to_list()))
    dim = len(next(iter(vec.values()))) if vec else 0
    image_emb = np.array([vec.get(s) or [np.nan] * dim for s in pairs["image_sha256"].to_list()], dtype=np.float32)
    captions = pairs["caption_clean"].to_list()
    distinct = list(dict.fromkeys(captions))
    text_emb = model.embed_texts(distinct, batch_size=config.text_batch_size) if distinct else np.zeros((0, dim))
    row = {c: i for i, c in enumerate(distinct)}
    text_rows = text_emb[[row[c] for c in captions]] if captions else np.zeros((0, dim), dtype=np.float32)
    similarity = (image_emb * text_rows).sum(axis=1) if captions else np.zeros(0)
    encode_s = time.monotonic() - started

    image_scores = wh.read("image_scores", snapshot)
    try:
        require_text_heaviness(image_scores)
    except ValueError as exc:
        raise dg.Failure(f"cross_modal_scores ({snapshot}): {exc}") from exc
    text = pairs.select("image_sha256").join(
        image_scores.select("image_sha256", "text_heaviness", "text_area_share"), on="image_sha256", how="left",
        maintain_order="left")
    th, area = text["text_heaviness"].to_list(), text["text_area_share"].to_list()
    scores = pl.DataFrame(
        {"snapshot": [snapshot] * pairs.height, "pair_id": pairs["pair_id"], "image_sha256": pairs["image_sha256"],
         "model": [label] * pairs.height, "similarity_scale": ["cosine"] * pairs.height,
         "similarity": [None if not np.isfinite(v) else float(v) for v in similarity],
         "text_heaviness": th, "text_area_share": area},
        schema=SCORE_SCHEMA,
    )
    checks = publish(wh, snapshot, [Table("cross_modal_scores", scores, schemas.CrossModalScores)],
                     step=f"cross_modal_scores ({snapshot})")
    described = scores.select("similarity", "text_heaviness").describe()
    return dg.MaterializeResult(
        metadata={
            "rows_out": scores.height,
            "model": label,
            "similarity_scale": "cosine of L2-normalised embeddings (the paper's [1.06, 1.24] is on another scale)",
            "device": str(model.device),
            "distinct_captions": len(distinct),
            "captions_truncated_by_tokenizer": int(model.count_truncated(distinct)) if distinct else 0,
            "missing_image_embeddings": int(np.isnan(similarity).sum()) if captions else 0,
            "pairs_per_s": dg.MetadataValue.float(round(len(captions) / encode_s, 1) if encode_s > 0 else 0.0),
            "score_summary": dg.MetadataValue.md(markdown_table(described, described.columns, limit=9)),
        },
        check_results=checks,
    )


class AlignedPairsConfig(dg.Config):
    band_mode: Literal["absolute", "quantile"] = Field(
        default="quantile",
        description="'quantile': the band is this snapshot's low_quantile..high_quantile of similarities; "
        "'absolute': min_similarity..max_similarity (cosine; calibrate on your model: the paper's [1.06, 1.24] is on "
        "an unexplained scale).",
    )
    low_quantile: float = Field(default=0.05, ge=0.0, le=1.0, allow_inf_nan=False, description="Drop pairs below this quantile (quantile mode).")
    high_quantile: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False,
                                 description="Drop pairs above this quantile (quantile mode; 1.0: none by similarity).")
    min_similarity: float = Field(default=0.0, ge=-1.0, le=1.0, allow_inf_nan=False,
                                  description="Lowest cosine kept (absolute mode), -1..1.")
    max_similarity: float = Field(default=1.0, ge=-1.0, le=1.0, allow_inf_nan=False,
                                  description="Highest cosine kept (absolute mode), -1..1.")
    max_text_heaviness: float = Field(
        default=TEXT_HEAVY_BAND, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Images at least this text-heavy count as above the band (a small model cannot read them).",
    )
    truth_path: str | None = Field(
        default=None, description="Optional labelled sample (pair_id, expected_stage, expected_reason) for precision/recall."
    )

    @model_validator(mode="after")
    def _ordered(self):
        if self.low_quantile > self.high_quantile:
            raise ValueError(f"low_quantile ({self.low_quantile}) is above high_quantile ({self.high_quantile})")
        if self.min_similarity > self.max_similarity:
            raise ValueError(f"min_similarity ({self.min_similarity}) is above max_similarity ({self.max_similarity})")
        return self


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=CROSS_MODAL.group,
    code_version=versioned("1", sql=CROSS_MODAL.sql, config=AlignedPairsConfig),
    deps=["visually_diversified_pairs", "cross_modal_scores"],
    check_specs=stage_check_specs(CROSS_MODAL),
)
@each_batch
def aligned_pairs(
    context: dg.AssetExecutionContext, config: AlignedPairsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Stage-3 survivors whose image-text similarity lies inside the band and whose image is not text-heavy; drops are
    `low_similarity` (weak match) and `high_similarity` (above the band, or text-heavy), and `unscored` when a score
    is missing."""
    from danqing_assets.lib.decide import decide_aligned

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    pairs = wh.read("visually_diversified_pairs", snapshot)
    scores = wh.read("cross_modal_scores", snapshot)
    decided = decide_aligned(pairs, scores, config.model_dump())
    sims = decided["similarity"].drop_nulls()
    return finish_stage(
        stage=CROSS_MODAL,
        snapshot=snapshot,
        wh=wh,
        entering=pairs["pair_id"],
        decided=decided,
        kept_schema=schemas.AlignedPairs,
        drop_columns=["lo", "hi", "missing"],
        preview_columns=["image_url", "caption", "similarity", "text_heaviness"],
        truth_path=config.truth_path,
        extra_metadata={
            "band_mode": config.band_mode,
            "band": (f"quantiles {config.low_quantile}..{config.high_quantile}" if config.band_mode == "quantile"
                     else f"cosine {config.min_similarity}..{config.max_similarity}"),
            "similarity_p05_p50_p95": dg.MetadataValue.json(
                [round(float(sims.quantile(q)), 4) for q in (0.05, 0.5, 0.95)] if sims.len() else []),
        },
    )
