"""Stage 3, visual diversification: image quality scores, NSFW screening, and near-duplicate clustering.

Scores are stored per image (by sha256, computed once even when many pairs share it); the keep/drop decision is SQL
over them (`sql/s3_visual_diversification/`), so thresholds can be re-tuned without decoding images again.
"""

import base64
import time

import dagster as dg
import numpy as np
import pandera.polars as pa
import polars as pl
from pydantic import Field

from danqing_assets.defs.metadata import (
    check_from_validation,
    ledger_identity_check,
    markdown_table,
    stage_metadata,
    truth_quality_metadata,
)
from danqing_assets.defs.partitions import snapshot_partitions
from danqing_assets.defs.resources import ClipModelResource, ImageStoreResource, S3ClientResource, WarehouseResource
from danqing_assets.lib import reasons, schemas
from danqing_assets.lib.sql import run_sql

GROUP = "s3_visual_diversification"
STAGE = reasons.IMAGE

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
    "nsfw_score": pl.Float64,
}


class ImageScores(pa.DataFrameModel):
    snapshot: str
    image_sha256: str = pa.Field(unique=True, str_matches=r"^[0-9a-f]{64}$")
    width: int = pa.Field(nullable=True, gt=0)
    height: int = pa.Field(nullable=True, gt=0)
    grey_std: float = pa.Field(nullable=True, ge=0)
    entropy_bits: float = pa.Field(nullable=True, ge=0, le=8)
    phash: str = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{16}$")
    nsfw_score: float = pa.Field(nullable=True, ge=0, le=1)

    class Config:
        strict = False


class ImageScoresConfig(dg.Config):
    work_size: int = Field(default=256, description="Working size (short side, px) of the blur measure.")
    max_pixels: int = Field(default=40_000_000, description="Images with more pixels are not decoded (bomb guard).")
    nsfw_scorer: str = Field(
        default="none",
        description="'none' (screening OFF, reported in metadata), 'clip-zero-shot' (prompts on the `clip` resource's "
        "model), a linear-probe checkpoint path (.npz/.pt, on CLIP embeddings), or 'package.module:Class'.",
    )
    workers: int = Field(default=1, description="Processes computing image metrics.")


def _fetched_ok(wh, snapshot: str) -> pl.DataFrame:
    return wh.read("fetched_images", snapshot).filter(pl.col("status") == "ok")


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=GROUP,
    code_version="1",
    deps=["fetched_images"],
    check_specs=[dg.AssetCheckSpec("image_scores_schema", asset="image_scores", blocking=True)],
)
def image_scores(
    context: dg.AssetExecutionContext,
    config: ImageScoresConfig,
    warehouse: WarehouseResource,
    s3: S3ClientResource,
    image_store: ImageStoreResource,
    clip: ClipModelResource,
) -> dg.MaterializeResult:
    """Per distinct image: size, aspect, grey std, Laplacian variance (native, the paper's) and the default blur score
    (at a ~256 px working size), grey entropy (native), pHash, and an NSFW score when a scorer is configured."""
    from danqing_assets.lib.image_metrics import compute_metrics_batch
    from danqing_assets.lib.nsfw import load_nsfw_scorer

    snapshot = context.partition_key
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
        for sha, m in zip(part, metrics):
            rows.append({**{k: m.get(k) for k in SCORE_COLUMNS}, "image_sha256": sha, "snapshot": snapshot,
                         "score_error": m.get("error"), "score_error_detail": m.get("error_detail")})
        context.log.info(f"scored {min(start + chunk, len(shas))}/{len(shas)} images")
    elapsed = time.monotonic() - started
    scores = pl.DataFrame(rows, schema=SCORE_COLUMNS) if rows else pl.DataFrame(schema=SCORE_COLUMNS)

    scorer = load_nsfw_scorer(config.nsfw_scorer, clip=clip.load() if config.nsfw_scorer == "clip-zero-shot" or
                              config.nsfw_scorer.endswith((".npz", ".pt", ".pth")) else None)
    if scorer is not None and scores.height:
        ok = scores.filter(pl.col("score_error").is_null())["image_sha256"].to_list()
        nsfw = {}
        for start in range(0, len(ok), chunk):  # bounded memory: a chunk of images at a time
            part = ok[start : start + chunk]
            values = np.asarray(scorer.score([store.get(s) for s in part]), dtype=np.float64)
            nsfw.update(zip(part, [None if np.isnan(v) else float(v) for v in values]))
        scores = scores.with_columns(pl.col("image_sha256").replace_strict(nsfw, default=None, return_dtype=pl.Float64).alias("nsfw_score"))
    wh.write("image_scores", snapshot, scores)
    summary = scores.select("shortest_edge", "aspect_ratio", "grey_std", "laplacian_var_native", "blur_score", "entropy_bits").describe()
    return dg.MaterializeResult(
        metadata={
            "rows_out": scores.height,
            "score_errors": dg.MetadataValue.json(
                dict(scores.filter(pl.col("score_error").is_not_null()).group_by("score_error").len().iter_rows())
            ),
            "nsfw_screening": f"on ({getattr(scorer, 'name', type(scorer).__name__)})" if scorer else
            "OFF: no NSFW scorer configured (set nsfw_scorer), nsfw_score is null",
            "images_per_s": dg.MetadataValue.float(round(len(shas) / elapsed, 1) if elapsed > 0 else 0.0),
            "score_summary": dg.MetadataValue.md(markdown_table(summary, summary.columns, limit=9)),
        },
        check_results=[check_from_validation("image_scores_schema", schemas.validate(ImageScores, scores))],
    )


class ImageEmbeddingsConfig(dg.Config):
    batch_size: int = Field(default=64, description="Images per forward pass.")


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=GROUP,
    code_version="1",
    deps=["fetched_images"],
    tags={"danqing/device": "gpu"},
)
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
    if not clip.model_name:
        wh.write("image_embeddings", snapshot, pl.DataFrame(schema={"snapshot": pl.String, "image_sha256": pl.String,
                                                                     "model": pl.String, "embedding": pl.List(pl.Float32)}))
        return dg.MaterializeResult(metadata={"rows_out": 0, "model": "OFF: no CLIP model configured (resource `clip`)"})
    model = clip.load()
    started = time.monotonic()
    vectors = []
    for start in range(0, len(shas), 1024):
        part = shas[start : start + 1024]
        vectors.append(model.embed_images([store.get(s) for s in part], batch_size=config.batch_size))
        context.log.info(f"embedded {min(start + 1024, len(shas))}/{len(shas)} images")
    emb = np.concatenate(vectors) if vectors else np.zeros((0, model.embed_dim), dtype=np.float32)
    elapsed = time.monotonic() - started
    table = pl.DataFrame(
        {"snapshot": [snapshot] * len(shas), "image_sha256": shas, "model": [clip.describe()] * len(shas),
         "embedding": pl.Series(emb.tolist(), dtype=pl.List(pl.Float32))}
    )
    wh.write("image_embeddings", snapshot, table)
    return dg.MaterializeResult(
        metadata={
            "rows_out": table.height,
            "model": clip.describe(),
            "dim": int(emb.shape[1]) if emb.ndim == 2 else 0,
            "device": str(model.device),
            "failed_images": int(np.isnan(emb).any(axis=1).sum()) if emb.size else 0,
            "images_per_s": dg.MetadataValue.float(round(len(shas) / elapsed, 1) if elapsed > 0 else 0.0),
        }
    )


class VisualDiversificationConfig(dg.Config):
    min_shortest_edge: int = Field(default=100, description="Drop images whose shortest edge is <= this (paper: 100).")
    max_aspect: float = Field(default=3.0, description="Keep aspect ratios within 1:max .. max:1 (paper: 3).")
    min_grey_std: float = Field(default=2.0, description="Least grey-level standard deviation (paper: 2).")
    blur_measure: str = Field(
        default="blur_score",
        description="'blur_score' (default; separates sharp photos from blurred copies) or 'laplacian_native' "
        "(the paper's literal rule, which rejects about half of sharp real photos: see lib/image_metrics.py).",
    )
    min_blur_score: float = Field(default=0.25, description="Least blur_score (blur_measure=blur_score).")
    min_laplacian_var: float = Field(default=1000.0, description="Least native Laplacian variance (paper: 1000).")
    min_entropy_bits: float = Field(default=3.0, description="Least grey histogram entropy in bits (paper: 3).")
    max_nsfw_score: float = Field(default=0.5, description="Drop images whose NSFW score is at least this.")
    phash_max_hamming: int = Field(default=6, description="pHash near-duplicate distance in bits (0 disables).")
    semantic_max_distance: float = Field(
        default=0.1, description="Embedding cosine distance for union-find semantic duplicates (paper: 0.1)."
    )
    semantic_dedup: bool = Field(default=True, description="Use image_embeddings (when present) for semantic dedup.")
    representative: str = Field(
        default="first_seen",
        description="Which member represents a duplicate cluster: 'first_seen' (earliest in crawl order: stable, so "
        "a later batch never displaces an image already kept) or 'best_quality' (highest resolution, then the "
        "caption with the highest information entropy, then crawl order).",
    )
    balance_clusters: int = Field(default=100, description="k of the k-means behind the semantic-balance curve.")
    truth_path: str | None = Field(
        default=None, description="Optional labelled sample (pair_id, expected_stage, expected_reason) for precision/recall."
    )


@dg.multi_asset(
    partitions_def=snapshot_partitions,
    group_name=GROUP,
    specs=[
        dg.AssetSpec(
            "visually_diversified_pairs",
            deps=["fetched_images", "image_scores", "image_embeddings", "text_scores"],
            code_version="1",
            description="Pairs whose image passes the quality rules and represents its duplicate cluster.",
        ),
        dg.AssetSpec(
            "image_clusters",
            deps=["fetched_images", "image_scores", "image_embeddings"],
            code_version="1",
            description="Per image: its redundancy cluster (exact, pHash, embedding) and whether it represents it.",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec("visually_diversified_pairs_schema", asset="visually_diversified_pairs", blocking=True),
        dg.AssetCheckSpec("image_ledger_identity", asset="visually_diversified_pairs", blocking=True),
    ],
)
def visually_diversified_pairs(
    context: dg.AssetExecutionContext,
    config: VisualDiversificationConfig,
    warehouse: WarehouseResource,
    s3: S3ClientResource,
    image_store: ImageStoreResource,
):
    """Keep aspect 1:3..3:1, shortest edge > 100 px, grey std >= 2, sharp, entropy >= 3 bits, not NSFW; then one pair
    per redundancy cluster (exact sha256, pHash near-duplicates, embedding union-find at cosine distance <= 0.1),
    the representative being the first seen in crawl order (or, configured, the highest-resolution image)."""
    from danqing_assets.lib.clusters import UnionFind, cluster_embeddings, phash_clusters
    from danqing_assets.lib.report_images import balance_curve_png, contact_sheet, kmeans_cluster_sizes

    if config.representative not in ("first_seen", "best_quality"):
        raise dg.Failure(f"representative must be first_seen or best_quality, not {config.representative!r}")
    if config.blur_measure not in ("blur_score", "laplacian_native"):
        raise dg.Failure(f"blur_measure must be blur_score or laplacian_native, not {config.blur_measure!r}")
    snapshot = context.partition_key
    wh = warehouse.warehouse()
    pairs = wh.read("text_refined_pairs", snapshot)
    fetched = _fetched_ok(wh, snapshot).select("pair_id", "image_sha256")
    scores = wh.read("image_scores", snapshot).drop("snapshot")
    caption_entropy = wh.read("text_scores", snapshot, columns=["pair_id", "entropy"]).rename({"entropy": "caption_entropy"})
    scored = (
        pairs.join(fetched, on="pair_id", how="inner")
        .join(scores, on="image_sha256", how="left")
        .join(caption_entropy, on="pair_id", how="left")
    )
    rules = run_sql(
        "s3_visual_diversification/image_rules.sql",
        tables={"scored": scored},
        params={
            "min_shortest_edge": config.min_shortest_edge,
            "max_aspect": config.max_aspect,
            "min_grey_std": config.min_grey_std,
            "blur_measure": config.blur_measure,
            "min_blur_score": config.min_blur_score,
            "min_laplacian_var": config.min_laplacian_var,
            "min_entropy_bits": config.min_entropy_bits,
            "max_nsfw_score": config.max_nsfw_score,
        },
    )
    decided = scored.join(rules, on="pair_id", how="left")
    passing = decided.filter(pl.col("rule_reason").is_null()).with_columns(
        (pl.col("width") * pl.col("height")).alias("pixels")
    )
    crawl_order = ["warc_file", "warc_offset", "img_index"]
    if config.representative == "first_seen":
        passing = passing.sort(crawl_order)
    else:  # highest resolution, then the more informative caption, then crawl order
        passing = passing.sort(["pixels", "caption_entropy", *crawl_order], descending=[True, True, False, False, False],
                               nulls_last=True)

    # Redundancy over distinct images (in priority order of their best pair), then one pair per image.
    images = passing.unique("image_sha256", keep="first", maintain_order=True).select("image_sha256", "phash")
    n_img = images.height
    uf = UnionFind(n_img)
    cause = np.array([None] * n_img, dtype=object)
    if config.phash_max_hamming > 0 and n_img:
        labels = phash_clusters(images["phash"].to_list(), max_hamming=config.phash_max_hamming)
        for i in np.nonzero(labels != np.arange(n_img))[0]:
            cause[i] = reasons.NEAR_DUPLICATE_IMAGE
            uf.union(int(i), int(labels[i]))
    semantic = "off"
    emb_table = wh.read("image_embeddings", snapshot) if wh.exists("image_embeddings", snapshot) else None
    emb_matrix = None
    if config.semantic_dedup and emb_table is not None and emb_table.height and n_img:
        vec = dict(zip(emb_table["image_sha256"].to_list(), emb_table["embedding"].to_list()))
        dim = len(next(iter(vec.values())))
        emb_matrix = np.array([vec.get(s) or [np.nan] * dim for s in images["image_sha256"]], dtype=np.float32)
        good = ~np.isnan(emb_matrix).any(axis=1)
        idx = np.nonzero(good)[0]
        if idx.size:
            sem = cluster_embeddings(emb_matrix[idx], max_distance=config.semantic_max_distance)
            for local, rep in enumerate(sem):
                if rep != local:
                    i, j = int(idx[local]), int(idx[rep])
                    if uf.find(i) != uf.find(j):
                        cause[i] = cause[i] or reasons.SEMANTIC_DUPLICATE
                    uf.union(i, j)
        semantic = f"on ({emb_table['model'][0]}, cosine distance <= {config.semantic_max_distance})"
    roots = np.array([uf.find(i) for i in range(n_img)], dtype=np.int64)
    # the representative of a cluster is its member with the best priority, i.e. the lowest row index
    rep_of_root: dict[int, int] = {}
    for i, r in enumerate(roots):
        rep_of_root.setdefault(int(r), i)
    shas = images["image_sha256"].to_list()
    rep_sha = [shas[rep_of_root[int(r)]] for r in roots]
    is_rep = [rep_of_root[int(r)] == i for i, r in enumerate(roots)]
    image_reason = [None if is_rep[i] else (cause[i] or reasons.NEAR_DUPLICATE_IMAGE) for i in range(n_img)]
    clusters = pl.DataFrame(
        {"snapshot": [snapshot] * n_img, "image_sha256": shas, "cluster_id": rep_sha, "is_representative": is_rep,
         "dup_reason": image_reason},
        schema={"snapshot": pl.String, "image_sha256": pl.String, "cluster_id": pl.String,
                "is_representative": pl.Boolean, "dup_reason": pl.String},
    )
    passing = passing.join(clusters.select("image_sha256", "cluster_id", "dup_reason"), on="image_sha256", how="left")
    first_of_image = passing.with_columns(pl.int_range(pl.len()).over("image_sha256").alias("rank_in_image"))
    first_of_image = first_of_image.with_columns(
        pl.when(pl.col("rank_in_image") > 0).then(pl.lit(reasons.DUPLICATE_IMAGE))
        .otherwise(pl.col("dup_reason")).alias("dup_reason")
    )
    keep_mask = pl.col("dup_reason").is_null()
    kept = first_of_image.filter(keep_mask).drop("rule_reason", "detail", "dup_reason", "rank_in_image", "pixels")
    dup_rejects = first_of_image.filter(~keep_mask).select(
        "pair_id", "image_sha256", "image_url", "width", "height", "caption", reason="dup_reason",
        detail=pl.concat_str([pl.lit("cluster="), pl.col("cluster_id")]),
    )
    rule_rejects = decided.filter(pl.col("rule_reason").is_not_null()).select(
        "pair_id", "image_sha256", "image_url", "width", "height", "caption", reason="rule_reason", detail="detail"
    )
    rejected = pl.concat([rule_rejects, dup_rejects])
    wh.write("visually_diversified_pairs", snapshot, kept)
    wh.write("image_clusters", snapshot, clusters.drop("dup_reason"))
    wh.write_rejections(STAGE, snapshot, rejected.select("pair_id", "reason", "detail"))

    metadata = stage_metadata(
        stage=STAGE,
        reasons=reasons.IMAGE_REASONS,
        rows_in=fetched.height,
        kept=kept,
        rejected=rejected,
        raw_rows=wh.count("raw_pairs", snapshot),
        preview_columns=["image_url", "width", "height", "caption"],
    )
    sizes = clusters.group_by("cluster_id").len()["len"]
    metadata.update(
        {
            "blur_measure": config.blur_measure,
            "semantic_dedup": semantic,
            "clusters": int(sizes.len()),
            "multi_image_clusters": int((sizes > 1).sum()),
            "largest_cluster": int(sizes.max()) if sizes.len() else 0,
            "cluster_size_distribution": dg.MetadataValue.json(
                {str(k): v for k, v in sorted(sizes.value_counts().iter_rows())}
            ),
        }
    )
    report_dir = wh.home / "reports" / snapshot
    report_dir.mkdir(parents=True, exist_ok=True)
    store = image_store.store(warehouse, s3)
    examples = []
    for reason in reasons.IMAGE_REASONS + (reasons.DECODE_ERROR, reasons.DECOMPRESSION_BOMB):
        sample = rejected.filter(pl.col("reason") == reason).head(8)["image_sha256"].to_list()
        if sample:
            examples.append((f"{reason} ({rejected.filter(pl.col('reason') == reason).height})", [_safe_get(store, s) for s in sample]))
    if examples:
        png = contact_sheet(examples)
        (report_dir / "dropped_contact_sheet.png").write_bytes(png)
        metadata["dropped_contact_sheet"] = dg.MetadataValue.path(str(report_dir / "dropped_contact_sheet.png"))
        metadata["dropped_examples"] = dg.MetadataValue.md(f"![dropped](data:image/png;base64,{base64.b64encode(png).decode()})")
    if emb_matrix is not None and kept.height:
        kept_idx = [i for i, s in enumerate(shas) if is_rep[i]]
        kept_emb = emb_matrix[kept_idx]
        kept_emb = kept_emb[~np.isnan(kept_emb).any(axis=1)]
        if len(kept_emb):
            csizes = kmeans_cluster_sizes(kept_emb, config.balance_clusters)
            png = balance_curve_png(csizes, title=f"semantic balance, k={len(csizes)}")
            (report_dir / "semantic_balance.png").write_bytes(png)
            metadata["semantic_balance_curve"] = dg.MetadataValue.path(str(report_dir / "semantic_balance.png"))
            metadata["semantic_balance"] = dg.MetadataValue.md(f"![balance](data:image/png;base64,{base64.b64encode(png).decode()})")
            metadata["balance_max_over_median"] = dg.MetadataValue.float(float(csizes[0] / max(1.0, np.median(csizes))))
    if config.truth_path:
        metadata.update(truth_quality_metadata(STAGE, fetched["pair_id"], rejected, config.truth_path))
    yield dg.MaterializeResult(
        asset_key="visually_diversified_pairs",
        metadata=metadata,
        check_results=[
            check_from_validation(
                "visually_diversified_pairs_schema",
                schemas.validate(schemas.SourceSelectedPairs, kept),
                asset_key="visually_diversified_pairs",
            ),
            ledger_identity_check(
                "image_ledger_identity", fetched["pair_id"], kept, rejected, asset_key="visually_diversified_pairs"
            ),
        ],
    )
    yield dg.MaterializeResult(asset_key="image_clusters", metadata={"rows_out": clusters.height, "clusters": int(sizes.len())})


def _safe_get(store, sha: str) -> bytes:
    try:
        return store.get(sha)
    except Exception:  # noqa: BLE001 - drawn as a grey tile
        return b""
