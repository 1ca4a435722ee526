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
from danqing_assets.defs.common.resources import GPU_POOL, ClipModelResource, ImageStoreResource, S3ClientResource, WarehouseResource
from danqing_assets.defs.common.stage_end import Table, finish_stage, publish, stage_check_specs, table_check_spec, versioned
from danqing_assets.lib import schemas
from danqing_assets.lib.stages import CROSS_MODAL

TEXT_HEAVY_BAND = 0.8
"""Images at least this text-heavy count as above the band. Higher than textness' own 0.45 cut ("has text lines"):
the band is about images *dominated* by text. Measured on the sample crawl (150 pages): 100 % of its posters score
>= 0.98, 2 % of its kept scenes >= 0.8 (21 % >= 0.45); on textness' calibration set every text-heavy image (posters,
slides, screenshots, 2+ line banners) scores >= 0.879, every photo <= 0.33."""

SCORE_SCHEMA = {"snapshot": pl.String, "pair_id": pl.String, "image_sha256": pl.String, "model": pl.String,
                "similarity_scale": pl.String, "similarity": pl.Float64, "text_heaviness": pl.Float64,
                "text_area_share": pl.Float64}


class CrossModalScoresConfig(dg.Config):
    text_batch_size: int = Field(default=256, ge=1, description="Captions per text-encoder forward pass.")


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=CROSS_MODAL.group,
    code_version=versioned("1", config=CrossModalScoresConfig),
    deps=["visually_diversified_pairs", "image_embeddings", "bootstrap_checkpoint"],
    tags={"danqing/device": "gpu"},
    pool=GPU_POOL,
    check_specs=[table_check_spec("cross_modal_scores")],
)
@each_batch
def cross_modal_scores(
    context: dg.AssetExecutionContext,
    config: CrossModalScoresConfig,
    warehouse: WarehouseResource,
    s3: S3ClientResource,
    image_store: ImageStoreResource,
    clip: ClipModelResource,
) -> dg.MaterializeResult:
    """Per stage-3 survivor: the cosine similarity of its image embedding (reused from `image_embeddings`, never
    computed twice) and its cleaned caption's text embedding, from the `clip` resource's model; and the image's
    text-heaviness (text-like area, no CLIP needed)."""
    from danqing_assets.lib.textness import text_heaviness_batch

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

    store = image_store.store(warehouse, s3)
    shas = pairs["image_sha256"].unique(maintain_order=True).to_list()
    heavy: dict[str, dict] = {}
    for start in range(0, len(shas), 512):
        part = shas[start : start + 512]
        datas = []
        for sha in part:
            try:
                datas.append(store.get(sha))
            except Exception as exc:  # noqa: BLE001 - counted below as an unscored image
                context.log.warning(f"image {sha} unreadable from the store: {exc}")
                datas.append(b"")
        heavy.update(zip(part, text_heaviness_batch(datas)))
    th = [heavy[s].get("text_heaviness") for s in pairs["image_sha256"].to_list()]
    area = [heavy[s].get("text_area_share") for s in pairs["image_sha256"].to_list()]
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
