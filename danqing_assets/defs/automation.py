"""Jobs, and the sensor that turns newly published crawl snapshots into partitions and runs."""


import json
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field

from danqing_assets.defs.partitions import snapshot_partitions
from danqing_assets.defs.resources import WarehouseResource

curation_job = dg.define_asset_job(
    "curation_job",
    selection=dg.AssetSelection.all(),
    partitions_def=snapshot_partitions,
    description="Materialize the whole chain for one snapshot partition.",
)


class CrawlFeedResource(dg.ConfigurableResource):
    """Where new crawl snapshots are announced: Common Crawl's `collinfo.json` (a JSON list of {"id": ...}),
    or a local file in that format. Each new id becomes a partition whose source is its warc.paths.gz listing."""

    feed: str = Field(default="https://index.commoncrawl.org/collinfo.json", description="URL or path of the feed.")
    listing_template: str = Field(
        default="https://data.commoncrawl.org/crawl-data/{id}/warc.paths.gz",
        description="SOURCE registered for a new snapshot; `{id}` is the crawl id (use s3://commoncrawl/... on AWS).",
    )
    max_files_per_snapshot: int | None = Field(
        default=None, description="Pass `max_files` to warc_files for scheduled runs (sample instead of all files)."
    )
    since: str | None = Field(default=None, description="Ignore crawl ids that sort before this one, e.g. CC-MAIN-2024-10.")

    def crawl_ids(self) -> list[str]:
        if urlparse(self.feed).scheme in ("http", "https"):
            import requests

            resp = requests.get(self.feed, timeout=30)
            resp.raise_for_status()
            entries = resp.json()
        else:
            with open(self.feed, encoding="utf-8") as fh:
                entries = json.load(fh)
        ids = sorted({str(e["id"]) for e in entries if isinstance(e, dict) and e.get("id")})
        return [i for i in ids if self.since is None or i >= self.since]


@dg.sensor(
    job=curation_job,
    minimum_interval_seconds=24 * 3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Daily: register crawl snapshots that appeared in the feed and run the pipeline on each.",
)
def new_crawl_snapshots(context: dg.SensorEvaluationContext, crawl_feed: CrawlFeedResource, warehouse: WarehouseResource):
    try:
        ids = crawl_feed.crawl_ids()
    except Exception as exc:  # noqa: BLE001 - a feed outage skips this tick, it must not kill the daemon
        return dg.SkipReason(f"crawl feed unavailable: {type(exc).__name__}: {exc}")
    existing = set(context.instance.get_dynamic_partitions(snapshot_partitions.name))
    new = [i for i in ids if i not in existing]
    if not new:
        return dg.SkipReason(f"no new snapshots among {len(ids)} in the feed")
    registry = warehouse.registry()
    for crawl_id in new:
        registry.add(crawl_id, crawl_feed.listing_template.format(id=crawl_id))
    run_config = {}
    if crawl_feed.max_files_per_snapshot is not None:
        run_config = {"ops": {"warc_files": {"config": {"max_files": crawl_feed.max_files_per_snapshot}}}}
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=i, run_key=f"snapshot:{i}", run_config=run_config) for i in new],
        dynamic_partitions_requests=[snapshot_partitions.build_add_request(new)],
    )
