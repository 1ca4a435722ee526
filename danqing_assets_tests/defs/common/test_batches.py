"""Several batches in one run (`defs/common/batches.py`): the per-batch assets' backfill policy groups batches, and
a run over a range of batches writes, for each batch, what a run of that batch alone writes."""

import dagster as dg
import pytest

from danqing_assets.definitions import defs
from danqing_assets.defs.common.batches import BATCH_BACKFILL_POLICY, BATCHES_PER_RUN, _merged_checks, each_batch
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import ClipModelResource, default_resources
from danqing_assets.lib.snapshots import SnapshotRegistry
from danqing_assets.lib.warehouse import Warehouse

CHAIN = ["warc_files", "raw_pairs", "warc_image_captures", "source_scores", "source_selected_pairs", "text_scores",
         "text_refined_pairs"]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def test_every_per_batch_asset_groups_batches_and_the_merge_does_not():
    """The assets partitioned by batch run up to BATCHES_PER_RUN batches per run in a backfill, except the cross-batch
    merge, which takes one batch per run (it accepts pairs in the order batches arrive)."""
    graph = defs.resolve_asset_graph()
    policies = {key.to_user_string(): graph.get(key).backfill_policy for key in graph.get_all_asset_keys()
                if graph.get(key).partitions_def == snapshot_partitions}
    assert policies.pop("curated_pairs") is None
    assert len(policies) >= 13 and set(policies.values()) == {BATCH_BACKFILL_POLICY}
    assert BATCH_BACKFILL_POLICY.max_partitions_per_run == BATCHES_PER_RUN


def test_a_backfill_of_six_batches_is_two_runs_and_six_merges():
    """What Dagster's backfill daemon launches for 6 batches of every per-batch asset (its own run-request builder,
    an internal API: this test pins the behaviour the deployment relies on): 2 runs over partition ranges of 4 and 2
    batches for the per-batch assets, and 6 one-batch runs of the cross-batch merge."""
    from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests_with_backfill_policies
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.definitions.partitions.context import partition_loading_context

    graph = defs.resolve_asset_graph()
    instance = dg.DagsterInstance.ephemeral()
    keys = [f"s.b{i:05d}" for i in range(6)]
    instance.add_dynamic_partitions(snapshot_partitions.name, keys)
    assets = [k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def == snapshot_partitions]
    with partition_loading_context(dynamic_partitions_store=instance):
        requests = build_run_requests_with_backfill_policies(
            [AssetKeyPartitionKey(a, k) for a in assets for k in keys], graph, instance)
    ranges = sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests if RANGE_START in r.tags)
    assert ranges == [("s.b00000", "s.b00003"), ("s.b00004", "s.b00005")]
    grouped = [r for r in requests if RANGE_START in r.tags]
    assert all({a.to_user_string() for a in r.asset_selection} == {a.to_user_string() for a in assets} - {"curated_pairs"}
               for r in grouped)
    merges = [r for r in requests if RANGE_START not in r.tags]
    assert sorted(r.partition_key for r in merges) == keys
    assert all([a.to_user_string() for a in r.asset_selection] == ["curated_pairs"] for r in merges)


def _chain(home, instance, **kwargs):
    resources = default_resources(str(home))
    resources["clip"] = ClipModelResource(model_name="none")
    return dg.materialize(assets=list(defs.assets), selection=CHAIN, instance=instance, resources=resources, **kwargs)


def _metadata(instance, asset, key):
    rec = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records
    return {name: value.value for name, value in rec[0].asset_materialization.metadata.items()}


@pytest.mark.slow
def test_a_run_of_three_batches_writes_what_three_runs_of_one_batch_write(tmp_path):
    """The sample crawl registered in 3 batches: stages 0-2 for all three in one run (a range, as the backfill daemon
    launches it) and, in another home, one run per batch. Same tables, same ledger parts, and each batch's own
    metadata (rows in and out, the funnel counts) on its own materialization."""
    from danqing_sample.crawl import write_sample_crawl

    crawl = tmp_path / "crawl"
    write_sample_crawl(crawl, pages=24, seed=3, files=3)
    homes, instances = {}, {}
    for mode in ("range", "single"):
        homes[mode] = tmp_path / mode
        SnapshotRegistry(homes[mode]).add("s", str(crawl), batch_size=1)
        instances[mode] = dg.DagsterInstance.ephemeral()
        instances[mode].add_dynamic_partitions(snapshot_partitions.name, ["s.b00000", "s.b00001", "s.b00002"])
    keys = ["s.b00000", "s.b00001", "s.b00002"]

    result = _chain(homes["range"], instances["range"], tags={RANGE_START: keys[0], RANGE_END: keys[-1]})
    assert result.success
    for key in keys:
        assert _chain(homes["single"], instances["single"], partition_key=key).success

    ranged, single = Warehouse(homes["range"]), Warehouse(homes["single"])
    for table in ("raw_pairs", "source_selected_pairs", "text_scores", "text_refined_pairs"):
        for key in keys:
            a, b = ranged.read(table, key), single.read(table, key)
            assert a.height > 0 and a.equals(b), (table, key)
    for key in keys:
        a, b = ranged.read_rejections(key, stages=["source", "text"]), single.read_rejections(key, stages=["source", "text"])
        assert a.height > 0 and a.equals(b), key
    per_batch = {}
    for asset in ("raw_pairs", "source_selected_pairs", "text_refined_pairs"):
        for key in keys:
            got, want = _metadata(instances["range"], asset, key), _metadata(instances["single"], asset, key)
            assert got["batches_in_run"] == 3
            for name in ("rows_out", "rows_in", "rejected"):
                if name in want:
                    assert got[name] == want[name], (asset, key, name)
            per_batch.setdefault(asset, []).append(got["rows_out"])
    assert len(set(per_batch["raw_pairs"])) > 1  # the batches differ, and each kept its own counts


def test_a_failed_check_in_one_batch_fails_the_run_and_names_that_batch():
    """The merged check result passes only when every batch passed; it names the batches that failed, and a blocking
    check that failed for one batch stops the step for all of them."""
    parts = dg.DynamicPartitionsDefinition(name="toy_batches")
    bodies = []

    @dg.asset(partitions_def=parts, backfill_policy=BATCH_BACKFILL_POLICY,
              check_specs=[dg.AssetCheckSpec("rows_ok", asset="toy", blocking=True)])
    @each_batch
    def toy(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        bodies.append(context.partition_key)
        return dg.MaterializeResult(metadata={"rows_out": len(context.partition_key)}, check_results=[
            dg.AssetCheckResult(check_name="rows_ok", passed=context.partition_key != "bad",
                                metadata={"rows": len(context.partition_key)})])

    @dg.asset(partitions_def=parts, deps=[toy], backfill_policy=BATCH_BACKFILL_POLICY)
    @each_batch
    def after(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        bodies.append("after " + context.partition_key)
        return dg.MaterializeResult()

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("toy_batches", ["a", "bb", "bad"])
    ok = dg.materialize([toy, after], instance=instance, tags={RANGE_START: "a", RANGE_END: "bb"})
    assert ok.success and bodies == ["a", "bb", "after a", "after bb"]
    assert [_metadata(instance, "toy", k)["rows_out"] for k in ("a", "bb")] == [1, 2]

    bodies.clear()
    failed = dg.materialize([toy, after], instance=instance, raise_on_error=False, tags={RANGE_START: "bb", RANGE_END: "bad"})
    assert not failed.success and bodies == ["bb", "bad"]  # `after` never ran
    evaluation = next(e.event_specific_data for e in failed.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert not evaluation.passed
    assert evaluation.metadata["failed_batches"].value == ["bad"] and evaluation.metadata["batches"].value == 2
    assert evaluation.metadata["bad: rows"].value == 3


def test_merged_checks_keep_the_most_severe_failure():
    warn = dg.AssetCheckResult(check_name="c", passed=False, severity=dg.AssetCheckSeverity.WARN)
    error = dg.AssetCheckResult(check_name="c", passed=False, severity=dg.AssetCheckSeverity.ERROR)
    good = dg.AssetCheckResult(check_name="c", passed=True)
    [merged] = _merged_checks([("x", warn), ("y", error), ("z", good)])
    assert not merged.passed and merged.severity == dg.AssetCheckSeverity.ERROR
    assert merged.metadata["failed_batches"].value == ["x", "y"]
    [fine] = _merged_checks([("x", good), ("y", good)])
    assert fine.passed and fine.metadata["batches_failed"].value == 0
