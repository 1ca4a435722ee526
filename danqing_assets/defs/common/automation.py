"""Jobs, and the sensor that turns newly published crawl snapshots into batches (partitions) and runs."""

import json

import dagster as dg

from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import CrawlFeedResource, S3ClientResource, WarehouseResource

from danqing_assets.lib.snapshots import first_files
from danqing_assets.lib.stages import BOOTSTRAP, EVALUATION, PRETRAIN, RELEASE

MODEL_GROUPS = (BOOTSTRAP.group, EVALUATION.group)
JOB_GROUPS = {"models_job": MODEL_GROUPS, "release_job": (RELEASE.group,), "pretraining_job": (PRETRAIN.group,)}

curation_job = dg.define_asset_job(
    "curation_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(*MODEL_GROUPS, RELEASE.group, PRETRAIN.group),
    partitions_def=snapshot_partitions,
    description="Materialize the whole curation chain for one batch of a snapshot (a partition; a snapshot of one batch: "
    "the snapshot itself).",
)

release_job = dg.define_asset_job(
    "release_job",
    selection=dg.AssetSelection.groups(RELEASE.group),
    description="Write a new release of every curated snapshot, with the funnel report.",
)

pretraining_job = dg.define_asset_job(
    "pretraining_job",
    selection=dg.AssetSelection.groups(PRETRAIN.group),
    description="Continued pretraining on the newest release and on the raw pairs of the same snapshots (same start, "
    "recipe and samples), decontaminated against the eval sets; then the ablation report.",
)

models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.groups(*MODEL_GROUPS),
    description="Train the embedded default's bootstrap model and evaluate it on the held-out demo eval sets.",
)


SENSOR_TRIGGER = "sensor:new_crawl_snapshots"


def _first_tick_selection(ids: list[str], feed: CrawlFeedResource) -> tuple[list[str], str]:
    """What a first tick (no cursor) registers, and how to say so."""
    if feed.start == "newest":
        return ids[-1:], f"start=newest: only the newest crawl, {ids[-1]} ({len(ids) - 1} older ones left out)"
    if feed.start == "since":
        return ids, f"start=since: every crawl from {feed.since} on ({len(ids)})"
    return ids, f"start=all: every crawl in the feed ({len(ids)})"


def _runs_for(snap, max_files: int | None) -> list[tuple[str, dict]]:
    """(batch key, run config) of the runs a newly registered snapshot gets: every batch, or with `max_files` only
    the batches that hold its first `max_files` WARC files (the last of them cut with warc_files' max_files)."""
    if max_files is None:
        return [(k, {}) for k in snap.keys]
    return [(key, {"ops": {"warc_files": {"config": {"max_files": n}}}}) for key, n in first_files(snap, max_files)]


@dg.sensor(
    job=curation_job,
    minimum_interval_seconds=24 * 3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Daily: register crawl snapshots that appeared in the crawl feed (resource `crawl_feed`), with their "
    "batches of WARC files (crawl_feed.batch_size), and run the curation job on each batch. The first tick registers "
    "only the newest crawl in the feed (crawl_feed.start: 'newest'; 'since' with crawl_feed.since, or 'all', registers "
    "more); later ticks register crawls published since the previous tick. A crawl whose listing cannot be read is "
    "tried again on the next tick. Each run is tagged danqing/trigger, danqing/crawl_selection and danqing/snapshot; "
    "the cursor lists the ids seen.",
)
def new_crawl_snapshots(context: dg.SensorEvaluationContext, crawl_feed: CrawlFeedResource,
                        warehouse: WarehouseResource, s3: S3ClientResource):
    try:
        ids = crawl_feed.crawl_ids()
    except Exception as exc:  # noqa: BLE001 - a feed outage or a malformed feed skips this tick, never kills the daemon
        return dg.SkipReason(f"crawl feed {crawl_feed.feed} unavailable or malformed: {type(exc).__name__}: {exc}")
    since = f" from {crawl_feed.since} on" if crawl_feed.since else ""
    if not ids:
        return dg.SkipReason(f"no crawl in the feed {crawl_feed.feed}{since}")
    seen = _seen(context.cursor)
    if seen is None:
        wanted, selection = _first_tick_selection(ids, crawl_feed)
        selection = f"first tick, {selection}"
    else:
        wanted = [i for i in ids if i not in seen]
        selection = f"published since the previous tick ({len(wanted)})"
    existing = set(context.instance.get_dynamic_partitions(snapshot_partitions.name))
    registry = warehouse.registry()

    def registered_before(crawl_id: str) -> bool:
        if crawl_id in existing:  # a snapshot of one batch, or a partition added by hand
            return True
        try:
            return all(k in existing for k in registry.get(crawl_id).keys)
        except (KeyError, ValueError):
            return False

    new = [i for i in wanted if not registered_before(i)]
    if not new:
        cursor = json.dumps({"seen": sorted(set(ids) | (seen or set()))})
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"no new snapshot: {len(ids)} crawls in the feed{since}, {selection}, already registered"), cursor=cursor)
    registered, refused, retry = [], [], set()
    for crawl_id in new:
        try:
            registered.append(registry.add(crawl_id, crawl_feed.listing_template.format(id=crawl_id),
                                           batch_size=crawl_feed.batch_size, s3_client_factory=s3.client))
        except OSError as exc:  # the listing cannot be read now (network, S3): not marked seen, tried next tick
            retry.add(crawl_id)
            refused.append(f"{crawl_id!r} (tried again next tick): {exc}")
        except ValueError as exc:  # a malformed id or listing, a name taken: counted and said, the others go on
            refused.append(f"{crawl_id!r}: {exc}")
    # crawls the cursor lists are never registered by a later tick
    cursor = json.dumps({"seen": sorted((set(ids) | (seen or set())) - retry)})
    batches = sum(len(s.keys) for s in registered)
    message = f"{selection}: registering {', '.join(s.name for s in registered) or 'none'}"
    if registered:
        message += f" ({batches} batch{'es' if batches != 1 else ''} of at most {crawl_feed.batch_size} WARC files)"
    if refused:
        message += f"; refused {len(refused)}: " + "; ".join(refused[:5])
    context.log.info(message)
    if not registered:
        return dg.SensorResult(skip_reason=dg.SkipReason(message), cursor=cursor)
    tags = {"danqing/trigger": SENSOR_TRIGGER,
            "danqing/crawl_selection": f"first_tick:{crawl_feed.start}" if seen is None else "new_since_previous_tick"}
    requests = [dg.RunRequest(partition_key=key, run_key=f"snapshot:{key}", run_config=run_config,
                              tags={**tags, "danqing/snapshot": snap.name})
                for snap in registered for key, run_config in _runs_for(snap, crawl_feed.max_files_per_snapshot)]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[snapshot_partitions.build_add_request(
            [k for snap in registered for k in snap.keys if k not in existing])],
        cursor=cursor,
    )


def _seen(cursor: str | None) -> set[str] | None:
    """Crawl ids the sensor has seen (None: no cursor yet, this is the first tick). A cursor that is not this
    sensor's JSON counts as a first tick, so the sensor never falls back to registering everything."""
    if not cursor:
        return None
    try:
        seen = json.loads(cursor).get("seen")
    except (ValueError, AttributeError):
        return None
    return {str(i) for i in seen} if isinstance(seen, list) else None
