"""The keep/drop decision of each filtering stage, from stored scores: one function per stage, used by the stage's
asset and by the what-if funnel (`danqing funnel NAME --set ...`), so both always decide the same way.

Each function takes the stage's input rows joined with their stored scores and the thresholds (a mapping with the
stage Config's field names), and returns the input rows with `reason` (NULL = kept) and `detail`. Rules are SQL
(`sql/<group>/<asset>.sql`, returning `pair_id, reason, detail`); redundancy among the rows that pass the rules is
removed here afterwards (caption MinHash near-duplicates, image pHash / embedding clusters), so a rejected row never
decides which copy survives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from danqing_assets.lib import reasons
from danqing_assets.lib.sql import run_sql
from danqing_assets.lib.stages import IMAGE, SOURCE, TEXT

CRAWL_ORDER = ["warc_file", "warc_offset", "img_index"]


def caption_md5(captions: Sequence[str | None]) -> list[str | None]:
    """md5 of each caption's UTF-8 bytes (what DuckDB's md5() gives): scores carry it so stale ones are detected."""
    return [None if c is None else hashlib.md5(c.encode("utf-8")).hexdigest() for c in captions]


def _pick(params: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"missing thresholds {missing}")
    return {n: params[n] for n in names}


def decide_source(raw: pl.DataFrame, scores: pl.DataFrame, params: Mapping[str, Any]) -> pl.DataFrame:
    """Stage 1: raw pairs LEFT JOIN their stored `source_scores`; see sql/s1_source_selection/."""
    scored = raw.join(scores.drop("snapshot", strict=False), on="pair_id", how="left")
    decision = run_sql(SOURCE.sql[0], tables={"scored": scored},
                       params=_pick(params, ("require_chinese_page", "min_words", "max_words", "min_unsafe_score")))
    return scored.join(decision, on="pair_id", how="left")


def decide_text(pairs: pl.DataFrame, scores: pl.DataFrame, params: Mapping[str, Any]) -> pl.DataFrame:
    """Stage 2: stage-1 survivors LEFT JOIN `text_scores`, the SQL rules, then caption near-duplicates (MinHash LSH
    and the one-edit rule, lib/text_dedup; the first in crawl order keeps)."""
    from danqing_assets.lib.text_dedup import near_duplicate_clusters

    scored = pairs.join(scores.drop("snapshot", strict=False), on="pair_id", how="left").sort(CRAWL_ORDER)
    rules = run_sql(TEXT.sql[0], tables={"scored": scored},
                    params=_pick(params, ("min_han_share", "min_nouns", "max_unk", "min_entropy",
                                                 "min_sensitive_score")))
    decided = scored.join(rules, on="pair_id", how="left")
    passing = decided.filter(pl.col("reason").is_null())
    if params.get("dedup_captions", True) and passing.height:
        reps = near_duplicate_clusters(passing["caption_clean"].to_list(),
                                       threshold=params["near_duplicate_threshold"], ngram=params["near_duplicate_ngram"],
                                       one_edit_min_chars=params["near_duplicate_one_edit_min_chars"])
        ids = passing["pair_id"].to_list()
        dups = {ids[i]: f"near_duplicate_of={ids[rep]}" for i, rep in enumerate(reps) if rep != i}
        is_dup = pl.col("pair_id").is_in(list(dups))
        decided = decided.with_columns(
            pl.when(is_dup).then(pl.lit(reasons.NEAR_DUPLICATE_CAPTION)).otherwise(pl.col("reason")).alias("reason"),
            pl.when(is_dup).then(pl.col("pair_id").replace_strict(dups, default=None, return_dtype=pl.String))
            .otherwise(pl.col("detail")).alias("detail"),
        )
    return decided


class DegenerateClusters(ValueError):
    """One redundancy cluster holds an implausible share of a partition's images: the embedding model (or the
    threshold) merges distinct images. Deciding anyway would drop most of the data as duplicates."""


MIN_IMAGES_FOR_CLUSTER_CHECK = 50


def check_cluster_sizes(reps: np.ndarray, max_share: float, *, semantic: bool) -> None:
    """Fail when the largest cluster holds more than `max_share` of the distinct images (checked from 50 images on).

    A randomly initialised or undertrained CLIP maps distinct images to nearly the same embedding, so union-find at
    cosine distance 0.1 chains them into one cluster; a real crawl's largest near-duplicate cluster is a tiny share.
    """
    n = len(reps)
    if n < MIN_IMAGES_FOR_CLUSTER_CHECK or max_share >= 1.0:
        return
    largest = int(np.bincount(np.asarray(reps, dtype=np.int64)).max()) if n else 0
    if largest > max_share * n:
        hint = ("the embedding model looks degenerate (undertrained or random): use a trained checkpoint, or set "
                "semantic_dedup: false to run without semantic dedup" if semantic else
                "pHash merges distinct images: lower phash_max_hamming")
        raise DegenerateClusters(f"one redundancy cluster holds {largest} of {n} distinct images "
                                 f"({largest / n:.0%} > max_cluster_share {max_share:.0%}): {hint}")


IMAGE_RULE_PARAMS = ("min_shortest_edge", "max_aspect", "min_grey_std", "blur_measure", "min_blur_score",
                     "min_laplacian_var", "min_entropy_bits", "max_nsfw_score")


def decide_image(
    pairs: pl.DataFrame,
    fetched: pl.DataFrame,
    scores: pl.DataFrame,
    caption_entropy: pl.DataFrame,
    embeddings: Mapping[str, Sequence[float]] | None,
    params: Mapping[str, Any],
) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray | None]:
    """Stage 3: text-refined pairs with a fetched image, LEFT JOIN `image_scores` by sha256, the SQL rules, then one
    pair per redundancy cluster (exact sha256, pHash, embeddings; `lib.clusters.redundancy_clusters`).

    Returns (decided rows in stage-3 priority order, the clusters table per distinct passing image, the embedding
    matrix of those images in the same order or None)."""
    from danqing_assets.lib.clusters import redundancy_clusters

    scores = scores.drop("snapshot", strict=False).with_columns(pl.col("image_sha256").alias("scored_image"))
    scored = (
        pairs.join(fetched.select("pair_id", "image_sha256"), on="pair_id", how="inner")
        .join(scores, on="image_sha256", how="left")
        .join(caption_entropy, on="pair_id", how="left")
    )
    rules = run_sql(IMAGE.sql[0], tables={"scored": scored}, params=_pick(params, IMAGE_RULE_PARAMS))
    decided = scored.join(rules, on="pair_id", how="left")
    passing = decided.filter(pl.col("reason").is_null()).with_columns((pl.col("width") * pl.col("height")).alias("pixels"))
    if params.get("representative", "first_seen") == "first_seen":
        passing = passing.sort(CRAWL_ORDER)
    else:  # highest resolution, then the more informative caption, then crawl order
        passing = passing.sort(["pixels", "caption_entropy", *CRAWL_ORDER], descending=[True, True, False, False, False],
                               nulls_last=True)
    images = passing.unique("image_sha256", keep="first", maintain_order=True).select("image_sha256", "phash")
    shas = images["image_sha256"].to_list()
    emb_matrix = None
    if params.get("semantic_dedup", True) and embeddings and shas:
        dim = len(next(iter(embeddings.values())))
        emb_matrix = np.array([embeddings.get(s) or [np.nan] * dim for s in shas], dtype=np.float32)
    reps, dup_reasons = redundancy_clusters(
        images["phash"].to_list(), emb_matrix, phash_max_hamming=params["phash_max_hamming"],
        max_distance=params["semantic_max_distance"], near_duplicate=reasons.NEAR_DUPLICATE_IMAGE,
        semantic_duplicate=reasons.SEMANTIC_DUPLICATE,
    )
    check_cluster_sizes(reps, params.get("max_cluster_share", 1.0), semantic=emb_matrix is not None)
    clusters = pl.DataFrame(
        {"image_sha256": shas, "cluster_id": [shas[r] for r in reps],
         "is_representative": [int(r) == i for i, r in enumerate(reps)], "dup_reason": dup_reasons},
        schema={"image_sha256": pl.String, "cluster_id": pl.String, "is_representative": pl.Boolean,
                "dup_reason": pl.String},
    )
    # a pair is a duplicate when its image does not represent its cluster, or is a later pair of the same image
    ranked = passing.join(clusters.select("image_sha256", "cluster_id", "dup_reason"), on="image_sha256", how="left")
    ranked = ranked.with_columns(pl.int_range(pl.len()).over("image_sha256").alias("rank_in_image")).with_columns(
        pl.when(pl.col("rank_in_image") > 0).then(pl.lit(reasons.DUPLICATE_IMAGE)).otherwise(pl.col("dup_reason"))
        .alias("dup_reason")
    )
    dups = ranked.select("pair_id", "cluster_id", "dup_reason",
                         dup_detail=pl.concat_str([pl.lit("cluster="), pl.col("cluster_id")]))
    decided = decided.join(dups, on="pair_id", how="left").with_columns(
        pl.coalesce("reason", "dup_reason").alias("reason"),
        pl.when(pl.col("dup_reason").is_not_null()).then(pl.col("dup_detail")).otherwise(pl.col("detail")).alias("detail"),
    ).drop("dup_reason", "dup_detail")
    order = ranked.select("pair_id").with_row_index("_order")
    decided = decided.join(order, on="pair_id", how="left").sort("_order", nulls_last=True, maintain_order=True).drop("_order")
    return decided, clusters.drop("dup_reason"), emb_matrix


ALIGNED_PARAMS = ("band_mode", "min_similarity", "max_similarity", "low_quantile", "high_quantile",
                  "max_text_heaviness")


def decide_aligned(pairs: pl.DataFrame, scores: pl.DataFrame, params: Mapping[str, Any]) -> pl.DataFrame:
    """Stage 4, band: stage-3 survivors LEFT JOIN `cross_modal_scores`; see sql/s4_cross_modal/aligned_pairs.sql."""
    from danqing_assets.lib.stages import CROSS_MODAL

    scored = pairs.join(scores.drop("snapshot", "image_sha256", strict=False), on="pair_id", how="left")
    rules = run_sql(CROSS_MODAL.sql[0], tables={"scored": scored}, params=_pick(params, ALIGNED_PARAMS))
    return scored.join(rules, on="pair_id", how="left")
