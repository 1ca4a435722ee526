"""Run WARC extraction for one file in a worker process (picklable arguments only; no Dagster imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import polars as pl

from danqing_assets.lib.s3 import S3Config
from danqing_assets.lib.snapshots import WarcRef, open_uri

# Column types of the `raw_pairs` and `warc_image_captures` tables.
PAIR_SCHEMA = {
    "pair_id": pl.String,
    "snapshot": pl.String,
    "warc_file": pl.String,
    "warc_offset": pl.Int64,
    "warc_record_id": pl.String,
    "page_url": pl.String,
    "domain": pl.String,
    "image_url": pl.String,
    "caption": pl.String,
    "title": pl.String,
    "figcaption": pl.String,
    "img_index": pl.Int32,
    "page_language": pl.String,
    "language_source": pl.String,
    "charset": pl.String,
    "fetch_time": pl.String,
}
CAPTURE_SCHEMA = {
    "snapshot": pl.String,
    "url": pl.String,
    "warc_file": pl.String,
    "warc_offset": pl.Int64,
    "content_type": pl.String,
    "content_length": pl.Int64,
    "http_status": pl.Int32,
}


@dataclass(frozen=True)
class ExtractOptions:
    snapshot: str
    language_prefilter: bool = True
    max_page_bytes: int = 2 * 1024 * 1024
    capture_images: bool = True
    s3: S3Config | None = field(default=None)  # for s3:// WARCs


def extract_ref(ref: WarcRef, options: ExtractOptions):
    """Extract one WARC file; a file that cannot be opened becomes an `unreadable_file` error, not an exception."""
    from danqing_assets.lib.warc import ExtractResult, ExtractStats, WarcError, extract_file

    kwargs = dict(
        snapshot=options.snapshot,
        language_prefilter=options.language_prefilter,
        max_page_bytes=options.max_page_bytes,
        capture_images=options.capture_images,
    )
    if "://" not in ref.uri:
        return _guarded(extract_file, ref, ref.uri, kwargs)
    try:
        stream = open_uri(ref.uri, s3_client_factory=options.s3.client if options.s3 else None)
    except Exception as exc:  # noqa: BLE001 - network and permission errors are counted per file
        stats = ExtractStats(warc_file=ref.name)
        stats.errors.append(WarcError(file=ref.name, offset=None, kind="unreadable_file", message=f"{type(exc).__name__}: {exc}"))
        return ExtractResult(pairs=[], captures=[], stats=stats)
    with stream:
        return _guarded(extract_file, ref, stream, kwargs)


def _guarded(extract_file, ref: WarcRef, source, kwargs):
    """The extractor reports bad records itself; anything it did not foresee fails this file only, counted."""
    from danqing_assets.lib.warc import ExtractResult, ExtractStats, WarcError

    try:
        return extract_file(source, ref.name, **kwargs)
    except Exception as exc:  # noqa: BLE001
        stats = ExtractStats(warc_file=ref.name)
        stats.errors.append(WarcError(file=ref.name, offset=None, kind="extract_failed", message=f"{type(exc).__name__}: {exc}"))
        return ExtractResult(pairs=[], captures=[], stats=stats)


def extract_ref_to_parquet(ref: WarcRef, options: ExtractOptions, out_dir: str, index: int):
    """Extract one WARC file into `out_dir/pairs-<index>.parquet` and `captures-<index>.parquet`; return its stats.

    Rows leave the worker as compact Parquet instead of millions of pickled dicts, so the parent holds one Arrow
    table per snapshot rather than every file's Python objects at once."""
    res = extract_ref(ref, options)
    out = Path(out_dir)
    if hasattr(res.pairs, "to_polars"):  # warc.PairRows, from extract_file
        pairs = res.pairs.to_polars(PAIR_SCHEMA)
    else:
        pairs = pl.DataFrame(res.pairs, schema=PAIR_SCHEMA) if res.pairs else pl.DataFrame(schema=PAIR_SCHEMA)
    captures = pl.DataFrame(res.captures, schema=CAPTURE_SCHEMA) if res.captures else pl.DataFrame(schema=CAPTURE_SCHEMA)
    pairs.sort("warc_offset", "img_index").write_parquet(out / f"pairs-{index:06d}.parquet")
    captures.write_parquet(out / f"captures-{index:06d}.parquet")
    return res.stats
