"""Run WARC extraction for one file in a worker process (picklable arguments only; no Dagster imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from danqing_assets.lib.snapshots import WarcRef, open_uri


@dataclass(frozen=True)
class ExtractOptions:
    snapshot: str
    language_prefilter: bool = True
    max_page_bytes: int = 2 * 1024 * 1024
    capture_images: bool = True
    s3: dict[str, Any] | None = field(default=None)  # S3ClientResource fields, for s3:// WARCs


def _s3_factory(cfg: dict[str, Any] | None):
    if cfg is None:
        return None

    def make():
        from dagster_aws.s3 import S3Resource

        return S3Resource(**cfg).get_client()

    return make


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
        stream = open_uri(ref.uri, s3_client_factory=_s3_factory(options.s3))
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
