"""Jobs, and the sensor that turns newly published crawl snapshots into partitions and runs."""


import dagster as dg

from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import CrawlFeedResource, WarehouseResource

from danqing_assets.lib.stages import BOOTSTRAP, EVALUATION, RELEASE

MODEL_GROUPS = (BOOTSTRAP.group, EVALUATION.group)
JOB_GROUPS = {"models_job": MODEL_GROUPS, "release_job": (RELEASE.group,)}

curation_job = dg.define_asset_job(
    "curation_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(*MODEL_GROUPS, RELEASE.group),
    partitions_def=snapshot_partitions,
    description="Materialize the whole curation chain for one snapshot partition.",
)

release_job = dg.define_asset_job(
    "release_job",
    selection=dg.AssetSelection.groups(RELEASE.group),
    description="Write a new release of every curated snapshot, with the funnel report.",
)

models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.groups(*MODEL_GROUPS),
    description="Train the embedded default's bootstrap model and evaluate it on the held-out demo eval sets.",
)


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
