"""Image acquisition: the image of every pair that survived the text stages, from the crawl's own WARC captures when
it has them, else over HTTP(S): politely (robots.txt, opt-out headers, per-host limits), safely (no private addresses),
validated (decodable, not a bomb) and stored content-addressed, once per distinct image."""

import dataclasses
import time
from collections import Counter
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field, field_validator

from danqing_assets.defs.common.metadata import markdown_table
from danqing_assets.defs.common.stage_end import finish_stage, stage_check_specs, versioned
from danqing_assets.defs.common.batches import BATCH_BACKFILL_POLICY, each_batch
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import ImageStoreResource, S3ClientResource, WarehouseResource
from danqing_assets.lib import reasons, schemas
from danqing_assets.lib.stages import FETCH

FETCHED_COLUMNS = {
    "snapshot": pl.String,
    "pair_id": pl.String,
    "image_url": pl.String,
    "image_sha256": pl.String,
    "width": pl.Int64,
    "height": pl.Int64,
    "format": pl.String,
    "bytes": pl.Int64,
    "source": pl.String,
    "status": pl.String,
    "reason": pl.String,
    "error": pl.String,
    "http_status": pl.Int64,
    "elapsed_ms": pl.Float64,
}


class FetchImagesConfig(dg.Config):
    mode: Literal["resume", "retry_failures", "refetch"] = Field(
        default="resume",
        description="resume: skip images already fetched and stored, fetch the rest; retry_failures: keep the "
        "previous run's results and refetch only its transient failures (timeouts, connection/DNS errors, 5xx, 429); "
        "refetch: fetch everything again.",
    )
    use_warc_captures: bool = Field(
        default=True,
        description="Take image bytes from the snapshot's WARC captures first (no request to the site). A captured "
        "image gets the X-Robots-Tag opt-out check on the captured response's headers (when respect_optout), the size "
        "cap (max_bytes, also on the decoded WARC record and its Content-Encoding) and the image checks; robots.txt is "
        "not fetched for it: the capture is the crawler's own, made under the crawler's robots.txt check.",
    )
    concurrency: int = Field(default=64, ge=1, description="Simultaneous requests over all worker processes.")
    processes: int | None = Field(default=None, ge=1, description="Worker processes (URLs sharded by host); unset: CPU count.")
    per_host_concurrency: int = Field(default=8, ge=1, description="Simultaneous requests per host.")
    per_host_min_delay_s: float = Field(default=0.0, ge=0.0, allow_inf_nan=False, description="Least delay between request starts per host.")
    connect_timeout_s: float = Field(default=5.0, gt=0.0, allow_inf_nan=False, description="Connect timeout per attempt.")
    read_timeout_s: float = Field(default=10.0, gt=0.0, allow_inf_nan=False, description="Read timeout per socket read.")
    total_timeout_s: float = Field(
        default=30.0, gt=0.0, allow_inf_nan=False,
        description="Most seconds one image URL may take from its first request to its result: connect, TLS, "
        "headers, body, redirects, every retry and every wait before one (enforced on each socket read, so a server "
        "trickling bytes cannot stretch it; a retry that would start later is not made).",
    )
    retries: int = Field(default=3, ge=0, le=20, description="Retries on connection errors, 429 and 5xx (exponential backoff, jitter).")
    max_bytes: int = Field(
        default=20 * 2**20, ge=1,
        description="Largest body accepted (bytes), after any Content-Encoding is undone; also caps how much of a WARC "
        "capture is read and decoded (a larger capture is fetched over the network instead, under the same cap).",
    )
    max_pixels: int = Field(default=40_000_000, ge=1, description="Decompression-bomb guard: most pixels an image may have.")
    user_agent: str | None = Field(default=None, description="User-Agent; unset: the project's, naming itself.")
    respect_robots: bool = Field(
        default=True,
        description="Obey robots.txt as RFC 9309 reads it (reason robots_disallowed; unreachable robots.txt: the host "
        "is skipped). Network fetches only: robots.txt is not fetched for images taken from WARC captures.",
    )
    respect_optout: bool = Field(
        default=True,
        description="Obey X-Robots-Tag noai / noimageai, bare or addressed to our User-Agent token (reason "
        "optout_header), on live responses and on the captured response of images taken from WARC captures.",
    )
    allow_networks: list[str] = Field(
        default_factory=list, description="CIDRs exempt from the private-address guard (e.g. 127.0.0.1/32 in tests)."
    )
    progress_every: int = Field(default=1000, ge=1, description="Log progress every N images.")

    @field_validator("allow_networks")
    @classmethod
    def _cidrs(cls, nets: list[str]) -> list[str]:
        import ipaddress

        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not a CIDR network ({exc})") from None
        return nets

    @field_validator("user_agent")
    @classmethod
    def _header_safe(cls, agent: str | None) -> str | None:
        if agent is not None and (not agent.strip() or any(ord(c) < 32 or ord(c) == 127 for c in agent)):
            raise ValueError("user_agent must be non-empty printable text (no control characters or line breaks)")
        return agent


def _capture_reader(wh, snapshot: str, s3: S3ClientResource, max_bytes: int):
    """The snapshot's captured 200 image responses, readable by URL (None when it has no capture index); each read
    and decoded up to `max_bytes`."""
    from danqing_assets.lib.captures import CaptureReader

    if not wh.exists("warc_image_captures", snapshot):
        return None
    caps = wh.read("warc_image_captures", snapshot).filter(pl.col("http_status") == 200)
    files = dict(wh.read("warc_files", snapshot).select("name", "uri").iter_rows())
    rows = caps.select("url", "warc_file", "warc_offset", "content_length").iter_rows()
    return CaptureReader(rows, files, s3_client_factory=s3.client, max_bytes=max_bytes)


@dg.asset(
    partitions_def=snapshot_partitions,
    backfill_policy=BATCH_BACKFILL_POLICY,
    group_name=FETCH.group,
    code_version=versioned("3", config=FetchImagesConfig),  # 3: opt-outs on captures, AVIF, RFC 9309 robots, deadline
    deps=["text_refined_pairs", "warc_image_captures"],
    check_specs=stage_check_specs(FETCH),
    tags={"danqing/io": "network"},
)
@each_batch
def fetched_images(
    context: dg.AssetExecutionContext,
    config: FetchImagesConfig,
    warehouse: WarehouseResource,
    s3: S3ClientResource,
    image_store: ImageStoreResource,
) -> dg.MaterializeResult:
    """One row per text-refined pair: its image's sha256, size and format, or why it could not be had. Images come
    from the WARC captures of the same snapshot when present, else over HTTP(S); each distinct image is stored once."""
    from danqing_assets.lib.fetch import FetchConfig, FetchResult, fetch_images, resume_lookup

    snapshot = context.partition_key
    wh = warehouse.warehouse()
    store = image_store.store(warehouse, s3)
    if hasattr(store, "remove_orphans"):  # half-written images of a killed run (S3 objects appear whole or not at all)
        store.remove_orphans()
    pairs = wh.read("text_refined_pairs", snapshot, columns=["pair_id", "image_url", "domain"])
    urls = pairs["image_url"].unique(maintain_order=True).to_list()

    skip_existing = None
    if config.mode != "refetch" and wh.exists("fetched_images", snapshot):
        previous = wh.read("fetched_images", snapshot).unique("image_url", keep="first")
        rows = [
            {**r, "url": r["image_url"], "source": "network" if r["source"] == "http" else r["source"]}
            for r in previous.iter_rows(named=True)
        ]
        if config.mode == "retry_failures":
            skip_existing = resume_lookup(rows)
        else:  # resume: a stored success is skipped; everything else is fetched again
            done = {r["url"]: FetchResult.from_dict(r) for r in rows if r["status"] == "ok" and store.exists(r["image_sha256"])}
            skip_existing = done.get

    # FetchImagesConfig exposes FetchConfig's knobs under the same names; unset user_agent keeps the default.
    shared = {f.name for f in dataclasses.fields(FetchConfig)} & set(FetchImagesConfig.model_fields)
    fcfg = FetchConfig(**{k: getattr(config, k) for k in shared if not (k == "user_agent" and config.user_agent is None)})

    def progress(p: dict) -> None:
        eta = p.get("eta_s")
        context.log.info(
            f"fetched {p.get('done')}/{p.get('total')} images: ok {p.get('ok')}, errors {p.get('error')}, "
            f"from WARC {p.get('warc')}, skipped {p.get('skipped')}, {p.get('rate_per_s', 0):.1f}/s"
            + (f", ETA {eta:.0f}s" if eta is not None else "")
        )

    captures = _capture_reader(wh, snapshot, s3, config.max_bytes) if config.use_warc_captures else None
    started = time.monotonic()
    results: dict[str, FetchResult] = {}
    try:
        for r in fetch_images(urls, store, fcfg, warc_lookup=captures, progress=progress, skip_existing=skip_existing):
            results[r.url] = r
    finally:
        if captures is not None:
            captures.close()
    elapsed = time.monotonic() - started
    skipped_urls = {u for u in urls if skip_existing is not None and skip_existing(u) is not None}

    out_rows = []
    for pair_id, url in pairs.select("pair_id", "image_url").iter_rows():
        r = results.get(url)
        if r is None:  # never silently lost: a URL without an answer is an error with a reason
            r = FetchResult(url=url, status="error", reason=reasons.CONNECTION_ERROR, error="no result from fetcher")
        out_rows.append(
            {
                "snapshot": snapshot,
                "pair_id": pair_id,
                "image_url": url,
                "image_sha256": r.image_sha256,
                "width": r.width,
                "height": r.height,
                "format": r.format,
                "bytes": r.bytes,
                "source": "http" if r.source == "network" else r.source,
                "status": r.status,
                "reason": r.reason,
                "error": r.error or None,
                "http_status": r.http_status,
                "elapsed_ms": float(r.elapsed_ms or 0.0),
            }
        )
    table = pl.DataFrame(out_rows, schema=FETCHED_COLUMNS) if out_rows else pl.DataFrame(schema=FETCHED_COLUMNS)
    decided = table.with_columns(
        pl.when(pl.col("status") == "ok").then(None).otherwise(pl.col("reason")).alias("reason"),
        pl.when(pl.col("status") == "ok").then(None).otherwise(pl.col("error")).alias("detail"),
    )
    kept = table.filter(pl.col("status") == "ok")
    by_url = list(results.values())
    ok_urls = sum(1 for r in by_url if r.ok)
    fail_domains = Counter(
        d for d, s in table.join(pairs.select("pair_id", "domain"), on="pair_id").select("domain", "status").iter_rows()
        if s != "ok"
    )
    metadata = (
        {
            "distinct_urls": len(urls),
            "success_rate": dg.MetadataValue.float(round(ok_urls / len(urls), 4) if urls else 0.0),
            "paper_success_rate": dg.MetadataValue.float(round(FETCH.paper_kept, 4)),
            "from_warc": sum(1 for r in by_url if r.source == "warc" and r.url not in skipped_urls),
            "from_http": sum(1 for r in by_url if r.source == "network" and r.attempts > 0 and r.url not in skipped_urls),
            "skipped_already_done": len(skipped_urls),
            "distinct_images": kept["image_sha256"].n_unique(),
            "megabytes": dg.MetadataValue.float(round(sum((r.bytes or 0) for r in by_url if r.ok) / 1e6, 3)),
            "images_per_s": dg.MetadataValue.float(round(len(urls) / elapsed, 1) if elapsed > 0 else 0.0),
            "top_failing_domains": dg.MetadataValue.md(
                markdown_table(pl.DataFrame(fail_domains.most_common(10), schema=["domain", "failures"], orient="row"),
                               ["domain", "failures"])
            ),
            "image_store": repr(store),
        }
    )
    return finish_stage(
        stage=FETCH,
        snapshot=snapshot,
        wh=wh,
        entering=pairs["pair_id"],
        decided=decided,
        kept_schema=schemas.FetchedImages,
        table_frame=table,
        preview_columns=["image_url", "source", "width", "height", "error"],
        extra_metadata=metadata,
    )
