"""One worker of the S3 chain test (test_s3_chain_e2e.py): materializes one batch, in its own process, with the
warehouse and the image store on S3. Usage: python -m danqing_assets_tests.e2e.s3_batch_worker HOME LOCATION ENDPOINT
KEY [THROUGH...]: HOME is the local home (the snapshot registry, scratch), THROUGH the assets to reach (default:
stages 0-3)."""

import sys

import dagster as dg

from danqing_assets.definitions import defs
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import ClipModelResource, S3ClientResource, WarehouseResource, default_resources
from danqing_assets_tests.e2e.conftest import THROUGH_STAGE3

RUN_CONFIG = {"ops": {
    "source_scores": {"config": {"workers": 1}},
    "text_scores": {"config": {"workers": 1}},
    "raw_pairs": {"config": {"workers": 1}},
    "fetched_images": {"config": {"processes": 1, "retries": 0, "connect_timeout_s": 1.0}},
}}
"""Two workers share 2 cores: one process each (the tests of map_chunks cover the pools)."""


def selection(through: list[str]) -> dg.AssetSelection:
    if not through:
        return THROUGH_STAGE3
    return dg.AssetSelection.assets(*through).upstream().required_multi_asset_neighbors() - dg.AssetSelection.groups(
        "s0_bootstrap_model")


def run(home: str, location: str | None, endpoint: str | None, key: str, through: list[str]) -> bool:
    resources = default_resources(home)
    resources["clip"] = ClipModelResource(model_name="none")
    if location:
        resources["warehouse"] = WarehouseResource(home=home, location=location, s3_endpoint_url=endpoint)
        resources["s3"] = S3ClientResource(endpoint_url=endpoint)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(snapshot_partitions.name, [key])
    result = dg.materialize(assets=list(defs.assets), selection=selection(through), partition_key=key,
                            instance=instance, run_config=RUN_CONFIG, resources=resources, raise_on_error=True)
    return result.success


if __name__ == "__main__":
    home, location, endpoint, key, *through = sys.argv[1:]
    sys.exit(0 if run(home, location or None, endpoint or None, key, through) else 1)
