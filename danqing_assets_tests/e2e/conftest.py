import dagster as dg
import pytest

from danqing_assets.definitions import defs
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import default_resources
from danqing_assets.lib.sample_crawl import write_sample_crawl
from danqing_assets.lib.snapshots import SnapshotRegistry


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory):
    """The default-size sample crawl, generated once per test session."""
    out = tmp_path_factory.mktemp("sample-crawl")
    summary = write_sample_crawl(out, seed=0)
    return out, summary


def run_pipeline(home, crawl_dir, snapshot="sample", *, through=None, run_config=None, instance=None, selection=None,
                 resources=None, base_url=None):
    """Register `crawl_dir` as `snapshot` under warehouse `home` and materialize up to `through`."""
    SnapshotRegistry(home).add(snapshot, str(crawl_dir), base_url=base_url)
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(snapshot_partitions.name, [snapshot])
    selection = selection or dg.AssetSelection.all()
    if through:
        selection = dg.AssetSelection.assets(through).upstream().required_multi_asset_neighbors()
    return dg.materialize(
        assets=list(defs.assets),
        selection=selection,
        partition_key=snapshot,
        instance=instance,
        run_config=run_config or {},
        resources={**default_resources(str(home)), **(resources or {})},
        raise_on_error=True,
    )
