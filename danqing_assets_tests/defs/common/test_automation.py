import json

import dagster as dg
import pytest

from danqing_assets.defs.common.automation import new_crawl_snapshots
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import MAX_FEED_BYTES, CrawlFeedResource, S3ClientResource, WarehouseResource
from danqing_assets.lib.snapshots import SnapshotRegistry
from danqing_assets_tests.httpserver import Resp, ScriptedServer


def collinfo(until: tuple[int, int] = (2025, 8)) -> list[dict]:
    """A crawl feed in the form of Common Crawl's collinfo.json (newest first), from CC-MAIN-2013-20 to `until`:
    the weeks Common Crawl published in, four to twelve crawls a year."""
    entries = []
    for year in range(2013, until[0] + 1):
        for week in (5, 8, 10, 13, 18, 22, 26, 30, 33, 38, 42, 47, 51)[: 4 if year < 2017 else 13]:
            if (year, week) > until or (year, week) < (2013, 20):
                continue
            cid = f"CC-MAIN-{year}-{week:02d}"
            entries.append({"id": cid, "name": f"Week {week} of {year} Index",
                            "timegate": f"https://index.commoncrawl.org/{cid}/",
                            "cdx-api": f"https://index.commoncrawl.org/{cid}-index",
                            "from": f"{year}-01-01T00:00:00", "to": f"{year}-12-31T00:00:00"})
    return entries[::-1]


def listings(root, ids, files: int = 3) -> str:
    """A warc.paths listing of `files` WARC files per crawl id under `root`, laid out like Common Crawl's; returns the
    `listing_template` that points at them (registering a snapshot lists its files)."""
    for cid in ids:
        path = root / "crawl-data" / cid / "warc.paths"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"crawl-data/{cid}/segments/{k}/warc/f{k}.warc.gz\n" for k in range(files)))
    return str(root / "crawl-data" / "{id}" / "warc.paths")


def ids_of(entries) -> list[str]:
    return [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]


def tick(instance, feed: CrawlFeedResource, home, cursor=None):
    """One sensor evaluation; applies its partition requests to the instance as the daemon does."""
    resources = {"crawl_feed": feed, "warehouse": WarehouseResource(home=str(home)), "s3": S3ClientResource()}
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        result = new_crawl_snapshots(ctx)
    if isinstance(result, dg.SensorResult):
        for req in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


def test_first_tick_with_defaults_registers_only_the_newest_crawl_then_only_new_ones(tmp_path, instance):
    """Before: switched on with its defaults, the first tick queued a full run for each of the 100-odd crawls."""
    history = collinfo()
    assert len(history) > 100
    with ScriptedServer() as srv:
        srv.route("/collinfo.json", Resp(body=json.dumps(history).encode(), content_type="application/json"))
        feed = CrawlFeedResource(feed=srv.url("/collinfo.json"),
                                 listing_template=listings(tmp_path / "cc", ids_of(collinfo((2025, 13)))))
        first = tick(instance, feed, tmp_path)
        assert [r.partition_key for r in first.run_requests] == ["CC-MAIN-2025-08"]
        assert first.run_requests[0].tags == {"danqing/trigger": "sensor:new_crawl_snapshots",
                                              "danqing/crawl_selection": "first_tick:newest",
                                              "danqing/snapshot": "CC-MAIN-2025-08"}
        assert first.dynamic_partitions_requests[0].partition_keys == ["CC-MAIN-2025-08"]
        assert [s.name for s in SnapshotRegistry(tmp_path).list()] == ["CC-MAIN-2025-08"]
        assert len(json.loads(first.cursor)["seen"]) == len(history)

        same = tick(instance, feed, tmp_path, cursor=first.cursor)
        assert not same.run_requests and "no new snapshot" in same.skip_reason.skip_message

        srv.route("/collinfo.json", Resp(body=json.dumps(collinfo((2025, 13))).encode()))
        later = tick(instance, feed, tmp_path, cursor=same.cursor)
    assert [r.partition_key for r in later.run_requests] == ["CC-MAIN-2025-10", "CC-MAIN-2025-13"]
    assert later.run_requests[0].tags["danqing/crawl_selection"] == "new_since_previous_tick"
    assert set(instance.get_dynamic_partitions(snapshot_partitions.name)) == {
        "CC-MAIN-2025-08", "CC-MAIN-2025-10", "CC-MAIN-2025-13"}
    assert "first tick registers only the newest crawl" in new_crawl_snapshots.description


def test_first_tick_registers_the_crawls_since_the_given_id_or_all_when_asked(tmp_path, instance):
    feed_file = tmp_path / "collinfo.json"
    feed_file.write_text(json.dumps(collinfo()))
    template = listings(tmp_path / "cc", ids_of(collinfo()))
    since = tick(instance, CrawlFeedResource(feed=str(feed_file), start="since", since="CC-MAIN-2024-42",
                                             max_files_per_snapshot=3, listing_template=template), tmp_path / "a")
    assert [r.partition_key for r in since.run_requests] == [
        "CC-MAIN-2024-42", "CC-MAIN-2024-47", "CC-MAIN-2024-51", "CC-MAIN-2025-05", "CC-MAIN-2025-08"]
    assert since.run_requests[0].run_config == {"ops": {"warc_files": {"config": {"max_files": 3}}}}
    assert since.run_requests[0].tags["danqing/crawl_selection"] == "first_tick:since"
    (tmp_path / "other").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "other")) as other:
        everything = tick(other, CrawlFeedResource(feed=str(feed_file), start="all", listing_template=template),
                          tmp_path / "b")
    assert len(everything.run_requests) == len(collinfo())


def test_crawls_already_registered_are_not_run_again(tmp_path, instance):
    feed_file = tmp_path / "collinfo.json"
    feed_file.write_text(json.dumps(collinfo()))
    instance.add_dynamic_partitions(snapshot_partitions.name, ["CC-MAIN-2025-08"])  # added by hand before
    result = tick(instance, CrawlFeedResource(feed=str(feed_file)), tmp_path)
    assert not result.run_requests
    assert "already registered" in result.skip_reason.skip_message and json.loads(result.cursor)["seen"]


@pytest.mark.parametrize("body, expect", [
    (b"<html>maintenance</html>", "JSONDecodeError"),
    (b'{"id": "CC-MAIN-2025-08"}', "not a JSON list"),
    (b"[" + b" " * (MAX_FEED_BYTES + 10) + b"]", "larger than"),
    (b"[]", "no crawl in the feed"),
])
def test_a_malformed_feed_skips_the_tick_and_says_why(tmp_path, instance, body, expect):
    with ScriptedServer() as srv:
        srv.route("/collinfo.json", Resp(body=body))
        result = tick(instance, CrawlFeedResource(feed=srv.url("/collinfo.json")), tmp_path)
    assert isinstance(result, dg.SkipReason) and expect in result.skip_message


def test_malformed_ids_are_refused_one_by_one(tmp_path, instance):
    feed_file = tmp_path / "collinfo.json"
    feed_file.write_text(json.dumps([{"id": "CC-MAIN-2025-08"}, {"id": "../../etc"}, {"id": None}, {"x": 1}, 7]))
    template = listings(tmp_path / "cc", ["CC-MAIN-2025-08"])
    result = tick(instance, CrawlFeedResource(feed=str(feed_file), start="all", listing_template=template), tmp_path)
    assert [r.partition_key for r in result.run_requests] == ["CC-MAIN-2025-08"]
    assert [s.name for s in SnapshotRegistry(tmp_path).list()] == ["CC-MAIN-2025-08"]


def test_the_sensor_skips_when_the_feed_is_down(tmp_path, instance):
    result = tick(instance, CrawlFeedResource(feed=str(tmp_path / "missing.json")), tmp_path)
    assert isinstance(result, dg.SkipReason) and "unavailable" in result.skip_message


def test_feed_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="start='since' needs `since`"):
        CrawlFeedResource(start="since")
    with pytest.raises(ValueError, match="has no {id}"):
        CrawlFeedResource(listing_template="https://data.commoncrawl.org/warc.paths.gz")
    with pytest.raises(ValueError, match="Input should be 'newest', 'since' or 'all'"):
        CrawlFeedResource(start="everything")
    with pytest.raises(ValueError, match="invalid snapshot name"):
        CrawlFeedResource(since="../x")


def test_a_new_crawl_is_registered_with_its_batches_and_each_batch_gets_a_run(tmp_path, instance):
    """5 WARC files in batches of 2: three partitions (CC-MAIN-2025-08.b00000 .. b00002), a run for each, and the
    registry maps every key back to the crawl."""
    feed_file = tmp_path / "collinfo.json"
    feed_file.write_text(json.dumps([{"id": "CC-MAIN-2025-08"}]))
    settings = {"feed": str(feed_file), "batch_size": 2,
                "listing_template": listings(tmp_path / "cc", ["CC-MAIN-2025-08"], files=5)}
    feed = CrawlFeedResource(**settings)
    result = tick(instance, feed, tmp_path)
    keys = [f"CC-MAIN-2025-08.b0000{i}" for i in range(3)]
    assert [r.partition_key for r in result.run_requests] == keys
    assert {r.run_key for r in result.run_requests} == {f"snapshot:{k}" for k in keys}
    assert all(r.tags["danqing/snapshot"] == "CC-MAIN-2025-08" for r in result.run_requests)
    assert sorted(instance.get_dynamic_partitions(snapshot_partitions.name)) == keys
    registry = SnapshotRegistry(tmp_path)
    assert [len(registry.warcs(k)) for k in keys] == [2, 2, 1]
    assert {registry.batch(k).snapshot for k in keys} == {"CC-MAIN-2025-08"}
    again = tick(instance, feed, tmp_path)  # a new cursor-less tick: already registered, nothing queued
    assert not again.run_requests and "already registered" in again.skip_reason.skip_message
    # a sample of the first 3 files: the first two batches run, the second cut to 1 file
    (tmp_path / "other").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "other")) as other:
        sample = tick(other, CrawlFeedResource(**settings, max_files_per_snapshot=3), tmp_path / "b")
    assert [(r.partition_key, r.run_config) for r in sample.run_requests] == [
        (keys[0], {"ops": {"warc_files": {"config": {"max_files": 2}}}}),
        (keys[1], {"ops": {"warc_files": {"config": {"max_files": 1}}}})]


def test_a_crawl_whose_listing_cannot_be_read_is_tried_again_next_tick(tmp_path, instance):
    feed_file = tmp_path / "collinfo.json"
    feed_file.write_text(json.dumps([{"id": "CC-MAIN-2025-08"}]))
    with ScriptedServer() as srv:
        listing = b"crawl-data/CC-MAIN-2025-08/segments/0/warc/a.warc.gz\n"
        srv.route("/crawl-data/CC-MAIN-2025-08/warc.paths", [Resp(status=503, body=b"slow down"), Resp(body=listing)])
        feed = CrawlFeedResource(feed=str(feed_file), listing_template=srv.url("/crawl-data/{id}/warc.paths"))
        first = tick(instance, feed, tmp_path)
        assert not first.run_requests and "tried again next tick" in first.skip_reason.skip_message
        assert "CC-MAIN-2025-08" not in json.loads(first.cursor)["seen"]
        second = tick(instance, feed, tmp_path, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["CC-MAIN-2025-08"]
    assert "CC-MAIN-2025-08" in json.loads(second.cursor)["seen"]
