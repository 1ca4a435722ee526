import json

import dagster as dg

from danqing_assets.defs.common.automation import new_crawl_snapshots
from danqing_assets.defs.common.resources import CrawlFeedResource
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.lib.snapshots import SnapshotRegistry


def test_sensor_registers_new_crawls_and_requests_runs(tmp_path):
    feed = tmp_path / "collinfo.json"
    feed.write_text(json.dumps([{"id": "CC-MAIN-2025-08"}, {"id": "CC-MAIN-2024-51"}, {"id": "CC-MAIN-2023-50"}, {"x": 1}]))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(snapshot_partitions.name, ["CC-MAIN-2024-51"])  # already known
    resources = {
        "crawl_feed": CrawlFeedResource(feed=str(feed), since="CC-MAIN-2024-01", max_files_per_snapshot=3),
        "warehouse": WarehouseResource(home=str(tmp_path / "home")),
    }
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = new_crawl_snapshots(ctx)
    assert [r.partition_key for r in result.run_requests] == ["CC-MAIN-2025-08"]
    assert result.run_requests[0].run_config == {"ops": {"warc_files": {"config": {"max_files": 3}}}}
    assert result.dynamic_partitions_requests[0].partition_keys == ["CC-MAIN-2025-08"]
    snap = SnapshotRegistry(tmp_path / "home").get("CC-MAIN-2025-08")
    assert snap.source == "https://data.commoncrawl.org/crawl-data/CC-MAIN-2025-08/warc.paths.gz"


def test_sensor_skips_when_the_feed_is_down(tmp_path):
    resources = {
        "crawl_feed": CrawlFeedResource(feed=str(tmp_path / "missing.json")),
        "warehouse": WarehouseResource(home=str(tmp_path / "home")),
    }
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as ctx:
        result = new_crawl_snapshots(ctx)
    assert isinstance(result, dg.SkipReason) and "unavailable" in result.skip_message
