"""The release: the curated pairs of every snapshot as a dataset (Parquet + WebDataset shards + card), and the funnel
beside the paper's.

`curated_pairs` is partitioned by batch (`defs/common/partitions.py`); the release and the funnel report speak of
snapshots: each row's `snapshot` is the real snapshot name (looked up in the registry) and `batch` its partition key
(the same as `snapshot` for a snapshot of one batch), and the funnel report sums a snapshot's batches.

Each materialization of `danqing_dataset` writes a new release directory (`$DANQING_HOME/releases/<release_id>/`;
`<warehouse location>/releases/<release_id>/` when the warehouse is on S3; or under a configured `root`, an `s3://`
one through the `s3` resource) and never overwrites an earlier one. The funnel report goes to `$DANQING_HOME/reports/`,
or to the objects `<warehouse location>/reports/funnel.md` and `funnel.png` on S3 (and always into the metadata).
"""

import hashlib
from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.common.metadata import png_markdown
from danqing_assets.defs.common.resources import ImageStoreResource, S3ClientResource, WarehouseResource
from danqing_assets.defs.common.stage_end import versioned
from danqing_assets.lib.stages import RELEASE
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets.lib.warehouse_s3 import S3Warehouse

# release columns taken from curated_pairs (renamed), then the scores passed through
RENAMES = {"caption_clean": "caption", "caption": "caption_original", "image_sha256": "sha256"}
SCORES = ["word_count", "han_share", "noun_count", "unk_count", "entropy", "grey_std", "blur_score",
          "laplacian_var_native", "entropy_bits", "phash", "nsfw_score", "similarity", "text_heaviness",
          "text_area_share", "cluster_id"]


def curated_snapshots(wh: Warehouse) -> list[str]:
    """The partition keys (batches) that have curated pairs."""
    return wh.snapshots("curated_pairs")  # a local folder listing, or an S3 listing (lib/warehouse_s3.py)


def _partitions(wh: Warehouse, registry, wanted: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The curated partition keys to release (every one, or those of the `wanted` snapshots / batches) and the
    snapshot each belongs to."""
    curated = curated_snapshots(wh)
    if wanted is None:
        keys = curated
    else:
        keys = []
        for name in wanted:
            try:
                resolved = registry.resolve(name)
            except (KeyError, ValueError):
                resolved = [name]  # a partition no snapshot has (materialized with a `source` in its config)
            done = [k for k in resolved if k in curated]
            if not done:
                raise dg.Failure(f"{name!r} has no curated pairs: materialize curated_pairs for it first")
            keys += [k for k in done if k not in keys]
    return keys, {k: registry.snapshot_of(k) for k in keys}


class FunnelReportConfig(dg.Config):
    snapshots: list[str] | None = Field(default=None, description="Snapshots (all their curated batches) or batch keys "
                                        "to report; unset: every curated one.")


@dg.asset(group_name=RELEASE.group, code_version=versioned("2", config=FunnelReportConfig), deps=["curated_pairs"])
def funnel_report(context: dg.AssetExecutionContext, config: FunnelReportConfig, warehouse: WarehouseResource) -> dict:
    """The funnel per snapshot and over all of them beside the paper's (1.05 B -> 706 M -> 475 M -> 397 M -> 178.6 M
    -> ~100 M), with the main rejection reasons per step: a markdown table and a chart."""
    from danqing_assets.lib.funnel_report import chart_png, funnel_table, markdown, overall

    wh = warehouse.warehouse()
    snaps, snapshot_of = _partitions(wh, warehouse.registry(), config.snapshots)
    table = funnel_table(wh, snaps, snapshot_of)
    total = overall(table)
    md = markdown(table, total)
    png = chart_png(total) if total.height else b""
    if isinstance(wh, S3Warehouse):  # beside the warehouse, where any user of the bucket reads it
        report = f"{wh.location}/reports/funnel.md"
        wh.client.put_object(Bucket=wh.bucket, Key=wh._key("reports", "funnel.md"), Body=md.encode("utf-8"),
                             ContentType="text/markdown; charset=utf-8")
        if png:
            wh.client.put_object(Bucket=wh.bucket, Key=wh._key("reports", "funnel.png"), Body=png,
                                 ContentType="image/png")
    else:
        out = wh.home / "reports"
        out.mkdir(parents=True, exist_ok=True)
        (out / "funnel.md").write_text(md, encoding="utf-8")
        if png:
            (out / "funnel.png").write_bytes(png)
        report = str(out / "funnel.md")
    names = sorted(set(snapshot_of.values()))
    context.add_output_metadata({
        "snapshots": dg.MetadataValue.json(names),
        "batches": len(snaps),
        "funnel": dg.MetadataValue.md(md),
        "chart": png_markdown("funnel", png) if png else dg.MetadataValue.md("-"),
        "removed_share": dg.MetadataValue.float(round(1 - total["kept_of_raw"][-1], 4) if total.height else 0.0),
        "report": dg.MetadataValue.path(report),
    })
    # `snapshots`: the partition keys (batches) the release reads; `snapshot_of`: their snapshots
    return {"markdown": md, "snapshots": snaps, "snapshot_of": snapshot_of}


class ReleaseConfig(dg.Config):
    root: str | None = Field(default=None, description="Directory or s3://bucket/prefix; unset: "
                             "$DANQING_HOME/releases, or <warehouse location>/releases when the warehouse is on S3.")
    release_name: str = Field(default="danqing", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                              description="Prefix of the release id (<name>-<UTC time>-<pairs hash>-<run id>): letters, "
                              "digits, '.', '_' and '-', at most 64 (it names a directory or an S3 prefix).")
    shard_max_samples: int = Field(default=10_000, ge=1, description="Most samples per WebDataset / Parquet shard.")
    shard_max_bytes: int = Field(default=1_000_000_000, ge=1, description="Most bytes per WebDataset shard.")
    image_workers: int = Field(default=4, ge=1, description="Threads reading images from the store.")
    allow_missing_images: bool = Field(default=False, description="Publish even if some images cannot be read "
                                       "(they are listed in the manifest); default: fail the step.")


def _latest_metadata(instance, asset: str, snapshot: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[snapshot]), limit=1).records
    if not records:
        return {}
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def _filters(instance, wh: Warehouse, snaps: list[str]) -> list[dict]:
    """Which filters ran and which were OFF, read from what the stages recorded for these snapshots (their stored
    tables and their last materializations' metadata), not from defaults."""
    scorers, models, semantic, crossbatch = set(), set(), set(), set()
    for s in snaps:
        if wh.exists("image_scores", s):
            scorers |= {n for n in wh.read("image_scores", s, columns=["nsfw_scorer"])["nsfw_scorer"].unique().to_list() if n}
        if wh.exists("cross_modal_scores", s):
            models |= set(wh.read("cross_modal_scores", s, columns=["model"])["model"].unique().to_list())
        semantic.add(str(_latest_metadata(instance, "visually_diversified_pairs", s).get("semantic_dedup", "unknown")))
        crossbatch.add(str(_latest_metadata(instance, "curated_pairs", s).get("embedding_check", "unknown")))
    semantic_on = bool(semantic) and all(v.startswith("on") for v in semantic)
    crossbatch_on = bool(crossbatch) and all(v.startswith("on") for v in crossbatch)
    return [
        {"name": "stage 1: Chinese page, domain blacklist, 5-60 words, text safety, exact duplicates", "status": "on"},
        {"name": "stage 2: Chinese caption, noun, [UNK], information entropy, sensitive terms, near-duplicate captions",
         "status": "on"},
        {"name": "stage 3: size, aspect, flat, blur, entropy; exact and pHash duplicates", "status": "on"},
        {"name": "stage 3: semantic (embedding) duplicates", "status": "on" if semantic_on else "off",
         "detail": "; ".join(sorted(semantic))},
        {"name": "stage 3: image NSFW screening", "status": "on" if scorers else "off", "nsfw": True,
         "detail": ", ".join(sorted(scorers)) or "no NSFW scorer configured (image_scores.nsfw_scorer)"},
        {"name": "stage 4: image-text similarity band and text-heaviness", "status": "on",
         "detail": ", ".join(sorted(models)) or "-"},
        {"name": "stage 4: cross-batch exact and pHash duplicates", "status": "on"},
        {"name": "stage 4: cross-batch embedding duplicates", "status": "on" if crossbatch_on else "off",
         "detail": "; ".join(sorted(crossbatch))},
    ]


@dg.asset(
    group_name=RELEASE.group,
    code_version=versioned("2", config=ReleaseConfig),  # 2: rows carry the real snapshot and their batch
    deps=["curated_pairs"],
    ins={"funnel": dg.AssetIn("funnel_report")},
)
def danqing_dataset(
    context: dg.AssetExecutionContext, config: ReleaseConfig, warehouse: WarehouseResource, s3: S3ClientResource,
    image_store: ImageStoreResource, funnel: dict,
) -> dict:
    """A new release of every curated snapshot: Parquet shards (pair_id, image_url, page_url, caption (simplified,
    cleaned), caption_original, snapshot, batch, width, height, sha256, scores), WebDataset tar shards that open_clip's
    loader reads as they are, a manifest and a dataset card stating which filters ran and which were OFF."""
    from danqing_assets.lib.export import write_release

    wh = warehouse.warehouse()
    snaps = funnel["snapshots"]
    registry = warehouse.registry()
    snapshot_of = funnel.get("snapshot_of") or {k: registry.snapshot_of(k) for k in snaps}
    frames = [wh.read("curated_pairs", k).with_columns(snapshot=pl.lit(snapshot_of[k], dtype=pl.String),
                                                        batch=pl.lit(k, dtype=pl.String)) for k in snaps]
    if not frames:
        raise dg.Failure("no curated snapshot: materialize curated_pairs for at least one snapshot first")
    pairs = pl.concat(frames, how="diagonal_relaxed").rename(RENAMES)
    keep = ["pair_id", "image_url", "page_url", "caption", "caption_original", "snapshot", "batch", "width", "height",
            "sha256"]
    pairs = pairs.select(keep + [c for c in SCORES if c in pairs.columns])
    digest = hashlib.sha256("\n".join(sorted(pairs["pair_id"].to_list())).encode()).hexdigest()[:8]
    # time, content digest and run: two releases in the same second (or of the same pairs) never share an id
    release_id = f"{config.release_name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{digest}-{context.run_id[:8]}"
    on_s3 = isinstance(wh, S3Warehouse)
    root = config.root or (f"{wh.location}/releases" if on_s3 else str(wh.home / "releases"))
    store = image_store.store(warehouse, s3)
    # under the warehouse's bucket: its client (its endpoint and credentials); elsewhere on S3: the `s3` resource
    same_bucket = on_s3 and (root.rstrip("/") + "/").startswith(f"s3://{wh.bucket}/")
    s3_client = (wh.client if same_bucket else s3.client()) if root.startswith("s3://") else None
    manifest = write_release(
        root, release_id, pairs, store.get,
        card={"title": f"DanQing-style Chinese image-text pairs ({release_id})", "funnel": funnel["markdown"],
              "filters": _filters(context.instance, wh, snaps),
              "rebuild": _rebuild(registry, snaps, snapshot_of)},
        shard_max_samples=config.shard_max_samples, shard_max_bytes=config.shard_max_bytes,
        image_workers=config.image_workers, s3_client=s3_client,
    )
    if manifest.missing_images and not config.allow_missing_images:
        raise dg.Failure(f"{len(manifest.missing_images)} images could not be read (see the release manifest "
                         f"{root}/{release_id}); set allow_missing_images to publish without them")
    location = f"{root.rstrip('/')}/{release_id}"
    context.add_output_metadata({
        "release_id": release_id,
        "location": dg.MetadataValue.path(location),
        "pairs": manifest.total_pairs,
        "snapshots": dg.MetadataValue.json(sorted(set(snapshot_of.values()))),
        "batches": len(snaps),
        "wds_megabytes": dg.MetadataValue.float(round(manifest.wds_bytes / 1e6, 2)),
        "missing_images": len(manifest.missing_images),
        "card": dg.MetadataValue.path(f"{location}/README.md"),
    })
    # `snapshots`: the partition keys (batches) released, which continued pretraining reads its raw pairs from
    return {"release_id": release_id, "location": location, "pairs": pairs.height, "snapshots": snaps,
            "snapshot_names": sorted(set(snapshot_of.values()))}


def _rebuild(registry, keys: list[str], snapshot_of: dict[str, str]) -> list[str]:
    """The commands that rebuild the release: register each snapshot (with its batch size when it has several
    batches) and materialize it (every batch, or the released ones when only some are)."""
    adds, runs = [], []
    for name in dict.fromkeys(snapshot_of[k] for k in keys):
        mine = [k for k in keys if snapshot_of[k] == name]
        try:
            snap = registry.get(name)
        except (KeyError, ValueError):
            snap = None
        size = f" --batch-size {snap.batch_size}" if snap is not None and len(snap.keys) > 1 else ""
        adds.append(f"danqing snapshot add {name} SOURCE{size}")
        if snap is None or set(mine) == set(snap.keys) or mine == [name]:
            runs.append(f"danqing materialize {name}")
        else:
            runs.append(f"danqing materialize {name} " + " ".join(f"--batch {k}" for k in mine))
    return adds + runs + ["danqing release"]
