"""Ingest: a batch's WARC files -> every image-text pair on its HTML pages (+ an index of captured images).

The partition key is a batch of a snapshot (`lib/snapshots.py`): the snapshot's name when it is one batch, else
`<snapshot>.bNNNNN`; its WARC files were fixed when the snapshot was registered."""


import os
import time
from collections import Counter

import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.common.metadata import markdown_table
from danqing_assets.defs.common.stage_end import Table, publish, table_check_spec, versioned
from danqing_assets.defs.common.batches import BATCH_BACKFILL_POLICY, each_batch
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import S3ClientResource, WarehouseResource
from danqing_assets.lib import schemas
from danqing_assets.lib.extract_jobs import CAPTURE_SCHEMA, PAIR_SCHEMA, ExtractOptions, extract_files
from danqing_assets.lib.s3 import S3Config
from danqing_assets.lib.snapshots import Snapshot, WarcRef, list_warcs
from danqing_assets.lib.stages import INGEST
from danqing_assets.lib.tempfiles import SCRATCH_DIR, scratch_dir
from danqing_assets.lib.warc import merge_stats

MAX_LOGGED_ERRORS = 200
"""Folder of the warehouse home where steps keep their intermediate files while they run."""


class WarcFilesConfig(dg.Config):
    max_files: int | None = Field(
        default=None, ge=1, description="Use only the first N WARC files of the batch (sample a real crawl on a "
        "laptop). `danqing materialize SNAPSHOT` and the sensor read it as the snapshot's first N files: they run only "
        "the batches that hold them."
    )
    source: str | None = Field(
        default=None, description="List the files of this SOURCE instead (directory, warc.paths.gz, s3://): only for a "
        "snapshot of one batch or a partition no snapshot has; a batch of a bigger snapshot keeps its registered files.",
    )
    base_url: str | None = Field(default=None, description="Base URL that a listing's relative paths are joined to "
                                 "(lists the source again, as `source` does).")
    allow_foreign_paths: bool | None = Field(
        default=None,
        description="Use warc.paths lines that are absolute paths, URLs or climb out of the base with `..` (lists the "
        "source again, as `source` does); unset: as registered (default no: they are counted and skipped).",
    )


def _batch_refs(key: str, config: WarcFilesConfig, registry, s3: S3ClientResource) -> tuple[list[WarcRef], dict]:
    """The WARC files of partition `key`: the batch's files as registered, or listed now from a source (a snapshot
    registered before batches, a config override, a partition no snapshot has)."""
    try:
        batch = registry.batch(key)
    except KeyError:
        batch = None
    relist = config.source is not None or config.base_url is not None or config.allow_foreign_paths is not None
    if batch is not None and batch.count > 1 and relist:
        raise dg.Failure(f"{key!r} is batch {batch.index + 1} of {batch.count} of snapshot {batch.snapshot!r}: its "
                         "WARC files were fixed when the snapshot was registered, so `source`, `base_url` and "
                         "`allow_foreign_paths` cannot change them; register the snapshot again instead")
    if batch is not None and not relist:
        refs = registry.warcs(key)
        if refs is not None:
            registered = registry.get(batch.snapshot)
            return refs, {"source": registered.source, "snapshot": batch.snapshot,
                          "batch": f"{batch.index + 1} of {batch.count}", "files_listed": len(refs),
                          "listing_lines_rejected": 0}
    if batch is None and config.source is None:
        raise dg.Failure(
            f"{key!r} is neither a registered snapshot nor a batch of one: run `danqing snapshot add {key} SOURCE` "
            "or set `source` in this asset's config"
        )
    registered = registry.get(batch.snapshot) if batch is not None else Snapshot(name=key, source=config.source)
    snap = Snapshot(
        name=key,
        source=config.source or registered.source,
        base_url=config.base_url or registered.base_url,
        allow_foreign_paths=registered.allow_foreign_paths if config.allow_foreign_paths is None
        else config.allow_foreign_paths,
    )
    rejected: list[str] = []
    refs = list_warcs(snap, s3_client_factory=s3.client, rejected=rejected)
    return refs, {"source": snap.source, "snapshot": batch.snapshot if batch is not None else key,
                  "batch": "1 of 1, listed now", "files_listed": len(refs), "listing_lines_rejected": len(rejected)}


def _local_size(ref: WarcRef) -> int | None:
    """A local file's size now (it may have been rewritten since registration); the registered size otherwise."""
    if "://" in ref.uri:
        return ref.bytes
    try:
        return os.stat(ref.uri).st_size
    except OSError:
        return ref.bytes


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=INGEST.group,
    code_version=versioned("2", config=WarcFilesConfig),  # 2: a batch's files as fixed at registration
    check_specs=[table_check_spec("warc_files")],
)
@each_batch
def warc_files(
    context: dg.AssetExecutionContext, config: WarcFilesConfig, warehouse: WarehouseResource, s3: S3ClientResource
) -> dg.MaterializeResult:
    """The WARC files of the batch (uri, name, bytes), as fixed when its snapshot was registered."""
    key = context.partition_key
    wh = warehouse.warehouse()
    refs, info = _batch_refs(key, config, warehouse.registry(), s3)
    if config.max_files is not None:
        refs = refs[: config.max_files]
    df = pl.DataFrame(
        {
            "snapshot": [key] * len(refs),
            "uri": [r.uri for r in refs],
            "name": [r.name for r in refs],
            "bytes": [_local_size(r) for r in refs],
        },
        schema={"snapshot": pl.String, "uri": pl.String, "name": pl.String, "bytes": pl.Int64},
    )
    checks = publish(wh, key, [Table("warc_files", df, schemas.WarcFiles)], step=f"warc_files ({key})")
    known = df["bytes"].drop_nulls()
    return dg.MaterializeResult(
        metadata={
            **info,
            "files": df.height,
            "bytes_known": int(known.sum()) if known.len() else 0,
            "preview": dg.MetadataValue.md(markdown_table(df, ["name", "bytes"])),
        },
        check_results=checks,
    )


class RawPairsConfig(dg.Config):
    language_prefilter: bool = Field(
        default=True,
        description=(
            "Skip pages whose Common Crawl language label lacks `zho` without parsing their HTML (counted per "
            "language in `pages_skipped_language`). Only ~5% of CC pages are zho, so this is where speed comes from. "
            "False extracts every page; stage 1 then drops other languages pair by pair."
        ),
    )
    max_page_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1, description="Parse at most this many bytes of a page (larger ones are counted)."
    )
    workers: int | None = Field(default=None, ge=1,
                                description="Worker processes (default: CPU count, at most one per file).")


@dg.multi_asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=INGEST.group,
    specs=[
        dg.AssetSpec(
            "raw_pairs",
            deps=["warc_files"],
            # 3: pages answered by the compiled tokenizer, which tokenizes every tag (an <img> written inside
            # another tag's attribute value is no longer a pair); rows otherwise identical
            code_version=versioned("4", config=RawPairsConfig),  # 4: one language detector for pages and captions
            description="Every image-text pair (<img> with its alt text) on the snapshot's HTML pages.",
        ),
        dg.AssetSpec(
            "warc_image_captures",
            deps=["warc_files"],
            code_version=versioned("1", config=RawPairsConfig),
            description="Index of image responses captured in the snapshot's WARCs (url -> file, offset): "
            "the fetcher reads these instead of the web.",
        ),
    ],
    check_specs=[table_check_spec("raw_pairs"), table_check_spec("warc_image_captures")],
)
@each_batch
def raw_pairs(context: dg.AssetExecutionContext, config: RawPairsConfig, warehouse: WarehouseResource, s3: S3ClientResource):
    """Decode each page with the right charset, resolve image URLs, and keep alt text, title and figcaption."""
    snapshot = context.partition_key
    wh = warehouse.warehouse()
    files = wh.read("warc_files", snapshot)
    refs = [WarcRef(uri=r["uri"], name=r["name"], bytes=r["bytes"]) for r in files.iter_rows(named=True)]
    options = ExtractOptions(
        snapshot=snapshot,
        language_prefilter=config.language_prefilter,
        max_page_bytes=config.max_page_bytes,
        s3=S3Config(**s3.model_dump()) if any(r.uri.startswith("s3://") for r in refs) else None,
    )
    started = time.monotonic()
    # the scratch folders of killed runs are removed first (lib/tempfiles.py): their parts never pile up
    with scratch_dir(wh.home / SCRATCH_DIR, f"raw_pairs-{snapshot}") as parts:
        stats_list, retried = _extract_all(context, refs, options, config.workers, str(parts))
        pairs = pl.read_parquet(f"{parts}/pairs-*.parquet") if refs else pl.DataFrame(schema=PAIR_SCHEMA)
        captures = pl.read_parquet(f"{parts}/captures-*.parquet") if refs else pl.DataFrame(schema=CAPTURE_SCHEMA)
    elapsed = time.monotonic() - started
    pairs = pairs.sort(["warc_file", "warc_offset", "img_index"])
    checks = publish(
        wh, snapshot,
        [Table("raw_pairs", pairs, schemas.RawPairs), Table("warc_image_captures", captures, schemas.ImageCaptures)],
        step=f"raw_pairs ({snapshot})",
    )
    merged = merge_stats([st.to_dict() for st in stats_list])
    errors = merged["errors"]
    for err in errors[:MAX_LOGGED_ERRORS]:
        context.log.warning(f"WARC error {err['kind']} in {err['file']} at offset {err['offset']}: {err['message']}")
    if len(errors) > MAX_LOGGED_ERRORS:
        context.log.warning(f"{len(errors) - MAX_LOGGED_ERRORS} more WARC errors not logged individually")
    bytes_read = merged["bytes_read"]
    mb = bytes_read / 1e6
    yield dg.MaterializeResult(
        asset_key="raw_pairs",
        metadata={
            "rows_out": pairs.height,
            "warc_files": len(refs),
            "warc_errors": len(errors),
            "warc_errors_by_kind": dg.MetadataValue.json(merged["errors_by_kind"]),
            # files whose extraction worker died (a crash in compiled code, the OOM killer): extracted again in pure
            # Python; those that killed that worker too count as `internal_error` in warc_errors_by_kind, no rows
            "warc_files_retried_after_worker_death": len(retried),
            "records": merged["records"],
            "html_pages": merged["html_pages"],
            # pages the compiled tokenizer handed to Lexbor (inline svg, figures with rich markup, ...): a share
            # near 1 means the C extension is not built, or the crawl is unusual; extraction is slower, not wrong
            "html_pages_parsed_by_lexbor": merged["html_pages_lexbor"],
            "pages_truncated": merged["pages_truncated"],
            "pages_skipped_language": int(sum(merged["pages_skipped_language"].values())),
            "pages_skipped_by_language": dg.MetadataValue.json(
                dict(Counter(merged["pages_skipped_language"]).most_common(30))
            ),
            "images_without_pair": dg.MetadataValue.json(merged["skipped_images"]),
            "pairs_by_language_source": dg.MetadataValue.json(
                dict(pairs.group_by("language_source").len().iter_rows()) if pairs.height else {}
            ),
            "megabytes_read": dg.MetadataValue.float(round(mb, 3)),
            "throughput_mb_s": dg.MetadataValue.float(round(mb / elapsed, 2) if elapsed > 0 else 0.0),
            "preview": dg.MetadataValue.md(markdown_table(pairs, ["page_language", "domain", "image_url", "caption"])),
        },
        check_results=[c for c in checks if c.check_name == "raw_pairs_schema"],
    )
    yield dg.MaterializeResult(
        asset_key="warc_image_captures",
        metadata={
            "rows_out": captures.height,
            "by_content_type": dg.MetadataValue.json(
                dict(captures.group_by("content_type").len().iter_rows()) if captures.height else {}
            ),
        },
        check_results=[c for c in checks if c.check_name == "warc_image_captures_schema"],
    )


def _extract_all(context: dg.AssetExecutionContext, refs: list[WarcRef], options: ExtractOptions, workers: int | None,
                 parts: str):
    """Extract every file into Parquet parts under `parts` in worker processes (a worker that dies takes down its
    file only: see `extract_jobs.extract_files`); returns the files' stats in file order and the retried files."""
    n = max(1, min(workers or os.cpu_count() or 1, len(refs)))
    every = max(1, len(refs) // 20)

    def on_done(done: int, total: int, ref: WarcRef) -> None:
        if done % every == 0 or done == total:
            context.log.info(f"extracted {done}/{total} WARC files ({ref.name})")

    stats, retried = extract_files(refs, options, parts, workers=n, on_done=on_done)
    for name in retried:
        context.log.warning(f"the worker extracting {name} died: extracted again in pure Python (no C tokenizer)")
    return stats, retried
