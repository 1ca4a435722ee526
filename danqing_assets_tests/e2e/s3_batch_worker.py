"""One worker of the S3 chain test (test_s3_chain_e2e.py): materializes one batch, in its own process, with the
warehouse and the image store on S3. Usage: python -m danqing_assets_tests.e2e.s3_batch_worker HOME LOCATION ENDPOINT
KEY [THROUGH...]: HOME is the local home (the snapshot registry, scratch), THROUGH the assets to reach (default:
stages 0-3). KEY may name several partitions (comma-separated), materialized one after the other; THROUGH starting
with `--only` materializes exactly the assets named after it (not their upstream): the partitioned ones for each KEY
in turn (the serial cross-batch merges), then `funnel_report` / `danqing_dataset` once, unpartitioned. With
$DANQING_TEST_CLIP set (a checkpoint directory of the tiny test model) the `clip` resource loads it, else no model."""

import os
import sys

import dagster as dg

from danqing_assets.definitions import defs
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import ClipModelResource, S3ClientResource, WarehouseResource, default_resources
from danqing_assets.lib.embed import TINY_MODEL_NAME
from danqing_assets_tests.e2e.conftest import THROUGH_STAGE3

UNPARTITIONED = ("funnel_report", "danqing_dataset")

RUN_CONFIG = {"ops": {
    "source_scores": {"config": {"workers": 1}},
    "text_scores": {"config": {"workers": 1}},
    "raw_pairs": {"config": {"workers": 1}},
    "fetched_images": {"config": {"processes": 1, "retries": 0, "connect_timeout_s": 1.0}},
    # the tiny test model has random weights: no semantic decisions on its embeddings
    "visually_diversified_pairs": {"config": {"semantic_dedup": False}},
    "curated_pairs": {"config": {"embedding_dedup": False}},
    "danqing_dataset": {"config": {"image_workers": 1}},
}}
"""Two workers share 2 cores: one process each (the tests of map_chunks cover the pools)."""


def selection(through: list[str]) -> dg.AssetSelection:
    if not through:
        return THROUGH_STAGE3
    return dg.AssetSelection.assets(*through).upstream().required_multi_asset_neighbors() - dg.AssetSelection.groups(
        "s0_bootstrap_model")


def _config(selected: dg.AssetSelection) -> dict:
    keys = {k.to_user_string() for k in selected.resolve(list(defs.assets))}
    return {"ops": {op: cfg for op, cfg in RUN_CONFIG["ops"].items() if op in keys}}


def run(home: str, location: str | None, endpoint: str | None, keys: str, through: list[str]) -> bool:
    resources = default_resources(home)
    clip = os.environ.get("DANQING_TEST_CLIP")
    resources["clip"] = ClipModelResource(model_name=TINY_MODEL_NAME, pretrained=clip, device="cpu") if clip else \
        ClipModelResource(model_name="none")
    if location:
        resources["warehouse"] = WarehouseResource(home=home, location=location, s3_endpoint_url=endpoint)
        resources["s3"] = S3ClientResource(endpoint_url=endpoint)
    instance = dg.DagsterInstance.ephemeral()
    partitions = keys.split(",")
    instance.add_dynamic_partitions(snapshot_partitions.name, partitions)
    only = bool(through) and through[0] == "--only"
    names = through[1:] if only else through
    sel = dg.AssetSelection.assets(*[n for n in names if n not in UNPARTITIONED]) if only else selection(names)
    ok = True
    for key in partitions:
        ok = ok and dg.materialize(assets=list(defs.assets), selection=sel, partition_key=key, instance=instance,
                                   run_config=_config(sel), resources=resources, raise_on_error=True).success
    after = [n for n in names if n in UNPARTITIONED] if only else []
    if after:
        sel = dg.AssetSelection.assets(*after)
        ok = ok and dg.materialize(assets=list(defs.assets), selection=sel, instance=instance, run_config=_config(sel),
                                   resources=resources, raise_on_error=True).success
    return ok


if __name__ == "__main__":
    home, location, endpoint, keys, *through = sys.argv[1:]
    sys.exit(0 if run(home, location or None, endpoint or None, keys, through) else 1)
