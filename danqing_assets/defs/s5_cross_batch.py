"""Stage 4, cross-batch merge: every partition's aligned pairs merged into one index, redundancy across partitions
removed.

The paper processed its crawl in 7 batches and removed the redundancy between them when it merged them. Here each
partition (a batch of a snapshot's WARC files, `defs/common/partitions.py`; a small snapshot is one batch) merges its
aligned pairs into a persistent index
(`lib/crossbatch.py`, under `$DANQING_HOME/crossbatch/`, or `<location>/crossbatch/` beside a warehouse on S3 through
`lib/crossbatch_s3.py`) when its `curated_pairs` partition is materialized: only that
partition's pairs are compared with what is already accepted (exact sha256, pHash within the stage-3 distance,
embeddings within the stage-3 cosine distance), so adding a snapshot costs what that snapshot costs, never all pairs
against all pairs again. The earliest accepted pair wins; re-materializing an old partition never accepts a pair
twice and never evicts a pair that another partition's rejection points to (rule in lib/crossbatch.py).
`curated_pairs` is therefore partitioned like its input, and its partitions together are the curated dataset.

Batches of one snapshot are merged exactly as snapshots are: stages 1-3 deduplicate within a batch only, and this
merge removes the image duplicates between batches (caption-only near duplicates in different batches stay: stage 2's
MinHash dedup is per batch). Earliest merged wins, so the order of merges decides which of two duplicates is kept:
`danqing materialize SNAPSHOT` runs its batches in order, and `danqing backfill --parallel N` runs everything before
this merge in parallel, then the merges one batch at a time in snapshot and batch order, so the result does not depend
on which run finished first. Runs launched elsewhere (the sensor, a Dagster backfill) merge in the order they finish.
"""

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field, field_validator

from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.defs.common.stage_end import finish_stage, stage_check_specs, versioned
from danqing_assets.lib import reasons, schemas
from danqing_assets.lib.clusters import DEFAULT_MAX_DISTANCE, DEFAULT_MAX_HAMMING
from danqing_assets.lib.decide import dedup_inputs
from danqing_assets.lib.stages import CROSS_BATCH
from danqing_assets.lib.warehouse_s3 import S3Warehouse

CROSSBATCH_POOL = "crossbatch"
"""Dagster concurrency pool of the merge: one slot (pools.default_limit), so one merge at a time across every run of
the instance, whichever machine runs it (the index is shared: on S3 it lives beside the warehouse)."""

CRAWL_ORDER = ["warc_file", "warc_offset", "img_index"]


class CuratedPairsConfig(dg.Config):
    phash_max_hamming: int = Field(default=DEFAULT_MAX_HAMMING, ge=0, le=32,
                                   description="pHash near-duplicate distance across partitions, in bits (0: off).")
    max_distance: float | None = Field(default=None, ge=0.0, lt=2.0, allow_inf_nan=False,
                                       description="Cosine distance of duplicates across partitions. Unset: as "
                                       "stage 3 (the checkpoint's dedup descriptor and its recorded distance, else "
                                       f"CLIP embeddings at the paper's {DEFAULT_MAX_DISTANCE}).")
    embedding_dedup: bool = Field(default=True, description="Also compare image embeddings (off: sha256 and pHash "
                                  "only, stated in the metadata).")
    index_dir: str | None = Field(default=None, description="Local folder of the cross-batch index; unset: "
                                  "$DANQING_HOME/crossbatch, or <warehouse location>/crossbatch when the warehouse is "
                                  "on S3.")

    @field_validator("index_dir")
    @classmethod
    def _local_index_dir(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "://" in value):
            raise ValueError("index_dir is a local folder (on S3 leave it unset: the index lives beside the warehouse)")
        return value


@dg.asset(
    partitions_def=snapshot_partitions,
    group_name=CROSS_BATCH.group,
    code_version=versioned("2", config=CuratedPairsConfig),  # 2: dedup descriptors
    deps=["aligned_pairs", "image_embeddings", "image_scores"],
    check_specs=stage_check_specs(CROSS_BATCH),
    pool=CROSSBATCH_POOL,
)
def curated_pairs(
    context: dg.AssetExecutionContext, config: CuratedPairsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """This partition's aligned pairs that duplicate nothing accepted before from any partition (same image bytes,
    pHash or embedding near-duplicate); the others go to the ledger as `cross_batch_duplicate` with the pair they
    duplicate. All partitions of this asset together are the curated dataset."""
    from danqing_assets.lib.crossbatch import CrossBatchIndex

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    pairs = wh.read("aligned_pairs", snapshot).sort(CRAWL_ORDER)
    phash = wh.read("image_scores", snapshot, columns=["image_sha256", "phash"])
    cand = pairs.select("pair_id", "image_sha256").join(phash, on="image_sha256", how="left")
    emb = wh.read("image_embeddings", snapshot) if wh.exists("image_embeddings", snapshot) else None
    embeddings = None
    try:
        vec, distance, vectors = dedup_inputs(emb, config.max_distance)
    except ValueError as exc:
        raise dg.Failure(f"curated_pairs ({snapshot}): {exc}") from exc
    if config.embedding_dedup and vec and pairs.height:
        dim = len(next(iter(vec.values())))
        embeddings = np.array([vec.get(s) or [np.nan] * dim for s in cand["image_sha256"].to_list()], dtype=np.float32)
    mirror = None
    if config.index_dir is None and isinstance(wh, S3Warehouse):  # the index lives beside the warehouse
        from danqing_assets.lib.crossbatch_s3 import S3IndexMirror

        mirror = S3IndexMirror(wh, wh.home / ".scratch" / "crossbatch" / context.run_id)
    try:
        index = CrossBatchIndex(mirror.pull() if mirror else (config.index_dir or wh.home / "crossbatch"),
                                phash_max_hamming=config.phash_max_hamming or None, max_distance=distance)
        merged = index.merge(snapshot, cand.select("pair_id", "image_sha256", "phash"), embeddings)
        stats = index.stats()
        if mirror:
            mirror.push()  # the commit point on S3 (conditional on the manifest pulled)
            stats["directory"] = mirror.url
    finally:
        if mirror:
            mirror.clear()
    decision = merged.select(
        "pair_id",
        reason=pl.when(pl.col("accepted")).then(None).otherwise(pl.lit(reasons.CROSS_BATCH_DUPLICATE)),
        detail=pl.when(pl.col("accepted")).then(None).otherwise(pl.concat_str(
            [pl.lit("duplicate_of="), pl.col("duplicate_of"), pl.lit(" partition="), pl.col("duplicate_of_partition"),
             pl.lit(" kind="), pl.col("duplicate_kind")])),
    )
    kinds = dict(merged.filter(~pl.col("accepted")).group_by("duplicate_kind").len().iter_rows())
    return finish_stage(
        stage=CROSS_BATCH,
        snapshot=snapshot,
        wh=wh,
        entering=pairs["pair_id"],
        decided=pairs.join(decision, on="pair_id", how="left"),
        kept_schema=schemas.AlignedPairs,
        preview_columns=["image_url", "caption"],
        extra_metadata={
            "duplicates_by_kind": dg.MetadataValue.json(kinds),
            "embedding_check": f"on ({vectors}, cosine distance <= {distance})" if embeddings is not None else (
                "OFF by configuration (embedding_dedup=false)" if not config.embedding_dedup
                else "OFF: no image embeddings (sha256 and pHash only)"),
            "index": dg.MetadataValue.json({k: v for k, v in stats.items() if isinstance(v, (int, float, str))}),
        },
    )
