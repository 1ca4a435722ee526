"""Images stored on S3 (a real local S3 server) through the dagster-aws backed `s3` resource, then read back by
stage 3."""

import polars as pl
import pytest

from danqing_assets.defs.common.resources import ImageStoreResource, S3ClientResource
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import run_pipeline

pytestmark = pytest.mark.slow


def test_fetched_images_go_to_s3_and_stage3_reads_them(sample_crawl, tmp_path, local_s3):
    crawl_dir, _ = sample_crawl
    s3_endpoint, make_client = local_s3
    client = make_client()
    client.create_bucket(Bucket="danqing")
    resources = {
        "s3": S3ClientResource(endpoint_url=s3_endpoint),
        "image_store": ImageStoreResource(location="s3://danqing/images"),
    }
    home = tmp_path / "home"
    result = run_pipeline(home, crawl_dir, through="image_scores", resources=resources)
    assert result.success
    wh = Warehouse(home)
    ok = wh.read("fetched_images", "sample").filter(pl.col("status") == "ok")
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="danqing", Prefix="images/"):
        keys |= {o["Key"].rsplit("/", 1)[1] for o in page.get("Contents", [])}
    assert keys == set(ok["image_sha256"])
    assert not (home / "images").exists()  # nothing went to the local default
    scores = wh.read("image_scores", "sample")
    assert scores.height == len(keys) and scores["score_error"].null_count() == scores.height
