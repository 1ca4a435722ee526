"""Stage 3, visual diversification: image quality scores, NSFW screening, and near-duplicate clustering.

Scores are stored per image (by sha256, computed once even when many pairs share it); the keep/drop decision is SQL
over them (`sql/s3_visual_diversification/`), so thresholds can be re-tuned without decoding images again.
"""

import time
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field, field_validator

from danqing_assets.defs.common.metadata import markdown_table, png_markdown
from danqing_assets.defs.common.stage_end import Table, finish_stage, publish, stage_check_specs, table_check_spec, versioned
from danqing_assets.defs.common.batches import BATCH_BACKFILL_POLICY, each_batch
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import GPU_POOL, ClipModelResource, ImageStoreResource, S3ClientResource, WarehouseResource
from danqing_assets.lib import schemas
from danqing_assets.lib.faults import pause_point
from danqing_assets.lib.clusters import DEFAULT_MAX_DISTANCE, DEFAULT_MAX_HAMMING
from danqing_assets.lib.image_metrics import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_BLUR_SCORE,
    DEFAULT_WORK_SIZE,
    PAPER_MAX_ASPECT,
    PAPER_MIN_ENTROPY_BITS,
    PAPER_MIN_GREY_STD,
    PAPER_MIN_LAPLACIAN_VAR,
    PAPER_MIN_SHORTEST_EDGE,
)
from danqing_assets.lib.stages import IMAGE
from danqing_assets.lib.textness import TEXT_HEAVY_BAND

SCORE_COLUMNS = {
    "snapshot": pl.String,
    "image_sha256": pl.String,
    "width": pl.Int64,
    "height": pl.Int64,
    "aspect_ratio": pl.Float64,
    "shortest_edge": pl.Int64,
    "grey_std": pl.Float64,
    "laplacian_var_native": pl.Float64,
    "blur_score": pl.Float64,
    "entropy_bits": pl.Float64,
    "phash": pl.String,
    "n_frames": pl.Int64,
    "format": pl.String,
    "score_error": pl.String,
    "score_error_detail": pl.String,
    "nsfw_scorer": pl.String,
    "nsfw_score": pl.Float64,
    "text_heaviness": pl.Float64,
    "text_area_share": pl.Float64,
}


NsfwScorer = str  # 'none' | 'clip-zero-shot' | a probe checkpoint path | 'package.module:Class'


class ImageScoresConfig(dg.Config):
    work_size: int = Field(default=DEFAULT_WORK_SIZE, ge=8, description="Working size (short side, px) of the blur measure.")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, description="Images with more pixels are not decoded (bomb guard).")
    nsfw_scorer: NsfwScorer = Field(
        default="none",
        description="'none' (screening OFF: stated in this asset's metadata and carried to the release card), "
        "'clip-zero-shot' (prompts on the `clip` resource's model), a linear-probe checkpoint path (.npz/.pt, on CLIP "
        "embeddings), or 'package.module:Class'. With a scorer, an image it cannot score is rejected as `unscored`.",
    )
    workers: int = Field(default=1, ge=1, description="Processes computing image metrics.")

    @field_validator("nsfw_scorer")
    @classmethod
    def _known_scorer(cls, spec: str) -> str:
        from danqing_assets.lib.nsfw import check_nsfw_spec

        return check_nsfw_spec(spec)


def _fetched_ok(wh, snapshot: str) -> pl.DataFrame:
    return wh.read("fetched_images", snapshot).filter(pl.col("status") == "ok")


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=IMAGE.group,
    code_version=versioned("4", config=ImageScoresConfig),  # 3: a plug-in taking `clip` gets the model, not None;
    # 4: text heaviness (moved here from cross_modal_scores)
    deps=["fetched_images"],
    pool=GPU_POOL,  # a CLIP-based NSFW scorer puts the model on the GPU
    check_specs=[table_check_spec("image_scores")],
)
@each_batch
def image_scores(
    context: dg.AssetExecutionContext,
    config: ImageScoresConfig,
    warehouse: WarehouseResource,
    s3: S3ClientResource,
    image_store: ImageStoreResource,
    clip: ClipModelResource,
) -> dg.MaterializeResult:
    """Per distinct image: size, aspect, grey std, Laplacian variance (native, the paper's) and the default blur score
    (at a ~256 px working size), grey entropy (native), pHash, text heaviness (`lib/textness.py`: semantic dedup here
    leaves text-dominated images out, stage 4 bands them), and an NSFW score when a scorer is configured."""
    from danqing_assets.lib.image_metrics import compute_metrics_batch
    from danqing_assets.lib.textness import text_heaviness_batch

    snapshot = context.partition_key
    scorer = _nsfw_scorer(config.nsfw_scorer, clip)  # first: a scorer that cannot be built fails before any work
    wh = warehouse.warehouse()
    store = image_store.store(warehouse, s3)
    shas = _fetched_ok(wh, snapshot)["image_sha256"].unique(maintain_order=True).to_list()
    started = time.monotonic()
    rows = []
    chunk = 512
    for start in range(0, len(shas), chunk):
        part = shas[start : start + chunk]
        datas = []
        for sha in part:
            try:
                datas.append(store.get(sha))
            except Exception as exc:  # noqa: BLE001 - a missing blob is a counted decode error, not a crash
                context.log.warning(f"image {sha} unreadable from the store: {exc}")
                datas.append(None)
        metrics = compute_metrics_batch(datas, work_size=config.work_size, max_pixels=config.max_pixels, workers=config.workers)
        # only images that decoded for the metrics (the others are rejected by their score_error anyway)
        texts = iter(text_heaviness_batch([d for d, m in zip(datas, metrics) if d and not m.get("error")],
                                          max_pixels=config.max_pixels, workers=config.workers))
        for sha, data, m in zip(part, datas, metrics):
            text = next(texts) if data and not m.get("error") else {}
            rows.append({**{k: m.get(k) for k in SCORE_COLUMNS}, "image_sha256": sha, "snapshot": snapshot,
                         "score_error": m.get("error"), "score_error_detail": m.get("error_detail"),
                         "text_heaviness": text.get("text_heaviness"), "text_area_share": text.get("text_area_share")})
        context.log.info(f"scored {min(start + chunk, len(shas))}/{len(shas)} images")
        pause_point("image_scores_chunk")  # killed-run tests: stop after N chunks (no-op otherwise)
    elapsed = time.monotonic() - started
    scores = pl.DataFrame(rows, schema=SCORE_COLUMNS) if rows else pl.DataFrame(schema=SCORE_COLUMNS)

    scorer_name = getattr(scorer, "name", type(scorer).__name__) if scorer is not None else None
    unscored = 0
    if scorer is not None and scores.height:
        ok = scores.filter(pl.col("score_error").is_null())["image_sha256"].to_list()
        nsfw = {}
        for start in range(0, len(ok), chunk):  # bounded memory: a chunk of images at a time
            part = ok[start : start + chunk]
            values = np.asarray(scorer.score([store.get(s) for s in part]), dtype=np.float64)
            nsfw.update(zip(part, [None if not np.isfinite(v) else float(v) for v in values]))
        unscored = sum(v is None for v in nsfw.values())
        scores = scores.with_columns(
            pl.col("image_sha256").replace_strict(nsfw, default=None, return_dtype=pl.Float64).alias("nsfw_score"),
            pl.lit(scorer_name, dtype=pl.String).alias("nsfw_scorer"),
        )
    checks = publish(wh, snapshot, [Table("image_scores", scores, schemas.ImageScores)], step=f"image_scores ({snapshot})")
    summary = scores.select("shortest_edge", "aspect_ratio", "grey_std", "laplacian_var_native", "blur_score", "entropy_bits").describe()
    return dg.MaterializeResult(
        metadata={
            "rows_out": scores.height,
            "score_errors": dg.MetadataValue.json(
                dict(scores.filter(pl.col("score_error").is_not_null()).group_by("score_error").len().iter_rows())
            ),
            "nsfw_screening": f"on ({scorer_name})" if scorer else
            "OFF: no NSFW scorer configured (set nsfw_scorer); images are not screened for NSFW content",
            "nsfw_unscored_images": unscored,
            "text_dominated_images": int((scores["text_heaviness"] >= TEXT_HEAVY_BAND).sum()) if scores.height else 0,
            "images_per_s": dg.MetadataValue.float(round(len(shas) / elapsed, 1) if elapsed > 0 else 0.0),
            "score_summary": dg.MetadataValue.md(markdown_table(summary, summary.columns, limit=9)),
        },
        check_results=checks,
    )


def _nsfw_scorer(spec: str, clip: ClipModelResource):
    """The configured NSFW scorer (None: screening OFF). A scorer that needs the CLIP model (clip-zero-shot, a probe,
    a plug-in whose constructor takes `clip`) gets the `clip` resource's model, loaded only then; with the resource
    set to 'none' the step fails saying so."""
    from danqing_assets.lib.nsfw import load_nsfw_scorer

    def clip_model():
        if not clip.enabled:
            raise dg.Failure(f"image_scores.nsfw_scorer {spec!r} needs the CLIP model, but the `clip` resource is "
                             "'none': configure clip.model_name, or choose a scorer that needs no CLIP model")
        return clip.load()

    try:
        return load_nsfw_scorer(spec, clip_loader=clip_model)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise dg.Failure(f"image_scores: NSFW scorer {spec!r} cannot be built: {exc}") from exc


class ImageEmbeddingsConfig(dg.Config):
    batch_size: int = Field(default=64, ge=1, description="Images per forward pass.")


EMBEDDING_SCHEMA = {"snapshot": pl.String, "image_sha256": pl.String, "model": pl.String,
                    "embedding": pl.List(pl.Float32), "dedup_descriptor": pl.String,
                    "dedup_embedding": pl.List(pl.Float32), "dedup_max_distance": pl.Float64}
"""`dedup_*`: what semantic dedup compares when the checkpoint declares a descriptor (`lib/dedup_descriptor.py`; null
otherwise: it compares `embedding`), and the distance the checkpoint records for it."""


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=IMAGE.group,
    code_version=versioned("2", config=ImageEmbeddingsConfig),  # 2: dedup descriptors
    deps=["fetched_images", "bootstrap_checkpoint"],
    tags={"danqing/device": "gpu"},
    pool=GPU_POOL,
    check_specs=[table_check_spec("image_embeddings")],
)
@each_batch
def image_embeddings(
    context: dg.AssetExecutionContext,
    config: ImageEmbeddingsConfig,
    warehouse: WarehouseResource,
    s3: S3ClientResource,
    image_store: ImageStoreResource,
    clip: ClipModelResource,
) -> dg.MaterializeResult:
    """L2-normalised image embeddings of every distinct fetched image from the `clip` resource's open_clip model,
    stored once so the semantic dedup here and stage 4 reuse them. Without a configured model the table is empty and
    the metadata says semantic dedup is off."""
    snapshot = context.partition_key
    wh = warehouse.warehouse()
    store = image_store.store(warehouse, s3)
    shas = _fetched_ok(wh, snapshot)["image_sha256"].unique(maintain_order=True).to_list()
    if not clip.enabled:
        empty = pl.DataFrame(schema=EMBEDDING_SCHEMA)
        checks = publish(wh, snapshot, [Table("image_embeddings", empty, schemas.ImageEmbeddings)],
                         step=f"image_embeddings ({snapshot})")
        return dg.MaterializeResult(metadata={"rows_out": 0, "model": "OFF: no CLIP model configured (resource `clip`)"},
                                    check_results=checks)
    model = clip.load()
    started = time.monotonic()
    vectors, descriptors = [], []
    for start in range(0, len(shas), 1024):
        part = shas[start : start + 1024]
        emb_part, desc_part = model.embed_images_for_dedup([store.get(s) for s in part], batch_size=config.batch_size)
        vectors.append(emb_part)
        descriptors.append(desc_part)
        context.log.info(f"embedded {min(start + 1024, len(shas))}/{len(shas)} images")
    emb = np.concatenate(vectors) if vectors else np.zeros((0, model.embed_dim), dtype=np.float32)
    elapsed = time.monotonic() - started
    dedup = model.dedup
    n = len(shas)
    table = pl.DataFrame(
        {"snapshot": [snapshot] * n, "image_sha256": shas, "model": [clip.describe()] * n,
         "embedding": pl.Series(emb.tolist(), dtype=pl.List(pl.Float32)),
         "dedup_descriptor": [dedup.describe() if dedup is not None else None] * n,
         "dedup_embedding": pl.Series(np.concatenate(descriptors).tolist() if dedup is not None and n else [None] * n,
                                      dtype=pl.List(pl.Float32)),
         "dedup_max_distance": [dedup.max_distance if dedup is not None else None] * n},
        schema=EMBEDDING_SCHEMA,
    )
    checks = publish(wh, snapshot, [Table("image_embeddings", table, schemas.ImageEmbeddings)],
                     step=f"image_embeddings ({snapshot})")
    return dg.MaterializeResult(
        metadata={
            "rows_out": table.height,
            "model": clip.describe(),
            "dim": int(emb.shape[1]) if emb.ndim == 2 else 0,
            "dedup_descriptor": dedup.describe() if dedup is not None else
            "none: semantic dedup compares the embeddings",
            "device": str(model.device),
            "failed_images": int(np.isnan(emb).any(axis=1).sum()) if emb.size else 0,
            "images_per_s": dg.MetadataValue.float(round(len(shas) / elapsed, 1) if elapsed > 0 else 0.0),
        },
        check_results=checks,
    )


class VisualDiversificationConfig(dg.Config):
    min_shortest_edge: int = Field(default=PAPER_MIN_SHORTEST_EDGE, ge=0, description="Drop images whose shortest edge is <= this (paper: 100).")
    max_aspect: float = Field(default=PAPER_MAX_ASPECT, ge=1.0, allow_inf_nan=False, description="Keep aspect ratios within 1:max .. max:1 (paper: 3).")
    min_grey_std: float = Field(default=PAPER_MIN_GREY_STD, ge=0.0, allow_inf_nan=False, description="Least grey-level standard deviation (paper: 2).")
    blur_measure: Literal["blur_score", "laplacian_native"] = Field(
        default="blur_score",
        description="'blur_score' (default; separates sharp photos from blurred copies) or 'laplacian_native' "
        "(the paper's literal rule, which rejects about half of sharp real photos: see lib/image_metrics.py).",
    )
    min_blur_score: float = Field(default=DEFAULT_MIN_BLUR_SCORE, ge=0.0, allow_inf_nan=False, description="Least blur_score (blur_measure=blur_score).")
    min_laplacian_var: float = Field(default=PAPER_MIN_LAPLACIAN_VAR, ge=0.0, allow_inf_nan=False, description="Least native Laplacian variance (paper: 1000).")
    min_entropy_bits: float = Field(default=PAPER_MIN_ENTROPY_BITS, ge=0.0, le=8.0, allow_inf_nan=False,
                                    description="Least grey histogram entropy in bits, 0..8 (paper: 3).")
    max_nsfw_score: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False,
                                  description="Drop images whose NSFW score (a probability, 0..1) is at least this.")
    phash_max_hamming: int = Field(default=DEFAULT_MAX_HAMMING, ge=0, le=64,
                                   description="pHash near-duplicate distance in bits, 0..64 (0 disables).")
    semantic_max_distance: float | None = Field(
        default=None, ge=0.0, le=2.0, allow_inf_nan=False,
        description="Cosine distance (0..2) for union-find semantic duplicates. Unset: the distance the model's "
        "checkpoint records with its dedup descriptor (the bootstrap model's feature grid: 0.15), else the paper's "
        f"{DEFAULT_MAX_DISTANCE} on CLIP embeddings."
    )
    semantic_dedup: bool = Field(default=True, description="Use image_embeddings (when present) for semantic dedup.")
    semantic_max_text_heaviness: float | None = Field(
        default=TEXT_HEAVY_BAND, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Images at least this text-heavy (image_scores.text_heaviness; stage 4's band, which drops them) "
        "stay out of semantic merges: a model that cannot read them cannot tell whether two say the same, and a poster "
        "must not represent (and so drop) a photo. pHash and sha256 dedup still apply. Unset: no exception.",
    )
    max_cluster_share: float = Field(
        default=0.2, gt=0.0, le=1.0, allow_inf_nan=False,
        description="Stop the step when one redundancy cluster would hold more than this share of the snapshot's "
        "distinct images (checked from 50 images on): a degenerate embedding model would otherwise drop most pairs "
        "as duplicates. 1.0 disables the check.",
    )
    representative: Literal["first_seen", "best_quality"] = Field(
        default="first_seen",
        description="Which member represents a duplicate cluster: 'first_seen' (earliest in crawl order: stable, so "
        "a later batch never displaces an image already kept) or 'best_quality' (highest resolution, then the "
        "caption with the highest information entropy, then crawl order).",
    )
    balance_clusters: int = Field(default=100, ge=1, description="k of the k-means behind the semantic-balance curve.")
    truth_path: str | None = Field(
        default=None, description="Optional labelled sample (pair_id, expected_stage, expected_reason) for precision/recall."
    )


@dg.multi_asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=IMAGE.group,
    specs=[
        dg.AssetSpec(
            "visually_diversified_pairs",
            deps=["fetched_images", "image_scores", "image_embeddings", "text_scores"],
            # 2: fails closed; 3: dedup descriptor, text-dominated images out of semantic merges
            code_version=versioned("3", sql=IMAGE.sql, config=VisualDiversificationConfig),
            description="Pairs whose image passes the quality rules and represents its duplicate cluster.",
        ),
        dg.AssetSpec(
            "image_clusters",
            deps=["fetched_images", "image_scores", "image_embeddings"],
            code_version=versioned("3", sql=IMAGE.sql, config=VisualDiversificationConfig),
            description="Per image: its redundancy cluster (exact, pHash, embedding) and whether it represents it.",
        ),
    ],
    check_specs=[*stage_check_specs(IMAGE), table_check_spec("image_clusters")],
)
@each_batch
def visually_diversified_pairs(
    context: dg.AssetExecutionContext,
    config: VisualDiversificationConfig,
    warehouse: WarehouseResource,
    s3: S3ClientResource,
    image_store: ImageStoreResource,
):
    """Keep aspect 1:3..3:1, shortest edge > 100 px, grey std >= 2, sharp, entropy >= 3 bits, not NSFW; then one pair
    per redundancy cluster (exact sha256, pHash near-duplicates, embedding union-find at cosine distance <= 0.1),
    the representative being the first seen in crawl order (or, configured, the highest-resolution image). A pair
    whose image has no current scores is rejected as `unscored`."""
    from danqing_assets.lib.decide import dedup_inputs
    from danqing_assets.lib.decide import decide_image as _decide_image

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    fetched = _fetched_ok(wh, snapshot).select("pair_id", "image_sha256")
    scores = wh.read("image_scores", snapshot)
    if "nsfw_scorer" not in scores.columns:
        raise dg.Failure(f"image_scores of {snapshot!r} predates the nsfw_scorer column: re-materialize image_scores")
    emb_table = wh.read("image_embeddings", snapshot) if wh.exists("image_embeddings", snapshot) else None
    try:
        embeddings, distance, vectors = dedup_inputs(emb_table, config.semantic_max_distance)
    except ValueError as exc:
        raise dg.Failure(f"visually_diversified_pairs ({snapshot}): {exc}") from exc
    params = {**config.model_dump(), "semantic_max_distance": distance}
    if not config.semantic_dedup:
        semantic = "OFF by configuration (semantic_dedup=false)"
    elif embeddings:
        semantic = f"on ({emb_table['model'][0]}: {vectors}, cosine distance <= {distance}" + (
            f"; images with text_heaviness >= {config.semantic_max_text_heaviness} left out)"
            if config.semantic_max_text_heaviness is not None else ")")
    else:
        semantic = "OFF: image_embeddings is empty (no CLIP model configured)"
    try:
        decided, clusters, emb_matrix = _decide_image(
            wh.read("text_refined_pairs", snapshot),
            fetched,
            scores,
            wh.read("text_scores", snapshot, columns=["pair_id", "entropy"]).rename({"entropy": "caption_entropy"}),
            embeddings,
            params,
        )
    except ValueError as exc:  # degenerate clusters, image_scores from before text heaviness: nothing is written
        raise dg.Failure(f"visually_diversified_pairs ({snapshot}): {exc}; nothing was written") from exc
    clusters = clusters.with_columns(pl.lit(snapshot, dtype=pl.String).alias("snapshot")).select(
        "snapshot", "image_sha256", "cluster_id", "is_representative")
    sizes = clusters.group_by("cluster_id").len()["len"]
    extra = {
        "blur_measure": config.blur_measure,
        "semantic_dedup": semantic,
        "nsfw_screening": _nsfw_state(scores),
        "clusters": int(sizes.len()),
        "multi_image_clusters": int((sizes > 1).sum()),
        "largest_cluster": int(sizes.max()) if sizes.len() else 0,
        "cluster_size_distribution": dg.MetadataValue.json({str(k): v for k, v in sorted(sizes.value_counts().iter_rows())}),
    }
    rejected = decided.filter(pl.col("reason").is_not_null())
    extra.update(_reports(wh, snapshot, image_store.store(warehouse, s3), rejected, emb_matrix, clusters, config))
    result = finish_stage(
        stage=IMAGE,
        snapshot=snapshot,
        wh=wh,
        entering=fetched["pair_id"],
        decided=decided,
        kept_schema=schemas.SourceSelectedPairs,
        drop_columns=["scored_image", "pixels"],
        preview_columns=["image_url", "width", "height", "caption"],
        side_tables=[Table("image_clusters", clusters, schemas.ImageClusters)],
        truth_path=config.truth_path,
        extra_metadata=extra,
    )
    yield result
    yield dg.MaterializeResult(
        asset_key="image_clusters",
        metadata={"rows_out": clusters.height, "clusters": int(sizes.len())},
        check_results=[dg.AssetCheckResult(check_name="image_clusters_schema", asset_key="image_clusters", passed=True)],
    )


def _nsfw_state(scores: pl.DataFrame) -> str:
    names = [n for n in scores["nsfw_scorer"].unique().to_list() if n]
    if names:
        return f"on ({', '.join(sorted(names))})"
    return "OFF: no NSFW scorer was configured for image_scores; kept images were NOT screened for NSFW content"


def _reports(wh, snapshot, store, rejected, emb_matrix, clusters, config) -> dict:
    """Contact sheet of dropped images per reason, and the semantic-balance curve of the kept images."""
    from danqing_assets.lib.report_images import balance_curve_png, contact_sheet, kmeans_cluster_sizes

    md: dict = {}
    report_dir = wh.home / "reports" / snapshot
    report_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    for reason in IMAGE.reasons:
        of_reason = rejected.filter(pl.col("reason") == reason)
        sample = of_reason.head(8)["image_sha256"].to_list()
        if sample:
            examples.append((f"{reason} ({of_reason.height})", [_safe_get(store, s) for s in sample]))
    if examples:
        png = contact_sheet(examples)
        (report_dir / "dropped_contact_sheet.png").write_bytes(png)
        md["dropped_contact_sheet"] = dg.MetadataValue.path(str(report_dir / "dropped_contact_sheet.png"))
        md["dropped_examples"] = png_markdown("dropped", png)
    if emb_matrix is not None:
        kept_emb = emb_matrix[clusters["is_representative"].to_numpy()]
        kept_emb = kept_emb[~np.isnan(kept_emb).any(axis=1)]
        if len(kept_emb):
            csizes = kmeans_cluster_sizes(kept_emb, config.balance_clusters)
            png = balance_curve_png(csizes, title=f"semantic balance, k={len(csizes)}")
            (report_dir / "semantic_balance.png").write_bytes(png)
            md["semantic_balance_curve"] = dg.MetadataValue.path(str(report_dir / "semantic_balance.png"))
            md["semantic_balance"] = png_markdown("balance", png)
            md["balance_max_over_median"] = dg.MetadataValue.float(float(csizes[0] / max(1.0, np.median(csizes))))
    return md


def _safe_get(store, sha: str) -> bytes:
    try:
        return store.get(sha)
    except Exception:  # noqa: BLE001 - drawn as a grey tile
        return b""
