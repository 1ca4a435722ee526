import shutil

import dagster as dg
import pytest

from danqing_assets.definitions import defs
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import ClipModelResource, default_resources
from danqing_assets.lib.snapshots import SnapshotRegistry
from danqing_assets.lib.stages import CROSS_BATCH, CROSS_MODAL
from danqing_sample.crawl import write_sample_crawl

# stages 0-3 of a snapshot (what runs without a CLIP model); stage 4 tests select their assets themselves
THROUGH_STAGE3 = dg.AssetSelection.all() - dg.AssetSelection.groups(
    "s0_bootstrap_model", CROSS_MODAL.group, CROSS_BATCH.group, "s6_release", "s7_pretraining", "s8_evaluation")

SMALL_BOOTSTRAP = {"seed_crawl_pages": 120, "steps": 60, "batch_size": 64, "warmup_steps": 10, "lr": 0.002}
"""A bootstrap model small enough for the tests (about a minute): it learns a little, which is all the plumbing
tests need; the demo's full model is measured in the closing notes and by `danqing models`."""


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory):
    """The default-size sample crawl, generated once per test session."""
    out = tmp_path_factory.mktemp("sample-crawl")
    summary = write_sample_crawl(out, seed=0)
    return out, summary


@pytest.fixture(scope="session")
def small_bootstrap(tmp_path_factory):
    """A warehouse home holding a small bootstrap checkpoint, trained once per session by the real asset."""
    home = tmp_path_factory.mktemp("bootstrap-home")
    dg.materialize(
        assets=list(defs.assets),
        selection=dg.AssetSelection.assets("bootstrap_checkpoint"),
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"bootstrap_checkpoint": {"config": SMALL_BOOTSTRAP}}},
        resources=default_resources(str(home)),
        raise_on_error=True,
    )
    return home / "models" / "bootstrap_checkpoint"


def with_bootstrap(home, checkpoint) -> None:
    """Put a trained bootstrap checkpoint where `home`'s default clip resource looks for it."""
    target = home / "models" / "bootstrap_checkpoint"
    if not target.exists():
        shutil.copytree(checkpoint, target)


def run_pipeline(home, crawl_dir, snapshot="sample", *, through=None, run_config=None, instance=None, selection=None,
                 resources=None, base_url=None):
    """Register `crawl_dir` as `snapshot` under warehouse `home` and materialize up to `through` (default: stages
    0-3, with no CLIP model unless `resources` gives one)."""
    SnapshotRegistry(home).add(snapshot, str(crawl_dir), base_url=base_url)
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(snapshot_partitions.name, [snapshot])
    selection = selection or THROUGH_STAGE3
    if through:
        selection = dg.AssetSelection.assets(through).upstream().required_multi_asset_neighbors() - dg.AssetSelection.groups(
            "s0_bootstrap_model")
    defaults = default_resources(str(home))
    if resources is None or "clip" not in resources:
        defaults["clip"] = ClipModelResource(model_name="none")
    return dg.materialize(
        assets=list(defs.assets),
        selection=selection,
        partition_key=snapshot,
        instance=instance,
        run_config=run_config or {},
        resources={**defaults, **(resources or {})},
        raise_on_error=True,
    )
