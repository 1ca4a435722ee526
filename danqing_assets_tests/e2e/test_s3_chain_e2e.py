"""The chain with no local state: warehouse tables, ledger, images, the snapshot registry, the cross-batch index, the
funnel report and the release on S3 (a real local S3 server, moto on 127.0.0.1), two batches of a snapshot
materialized at the same time by two worker processes, each with its own empty local home, through stage 4's
`aligned_pairs` (ingest, stages 1 and 2 out of core with DuckDB reading s3:// through httpfs, image acquisition,
image scores and embeddings by a tiny CLIP checkpoint, visual diversification, cross-modal scores and the band); then
a third process with another empty home merges the two batches one after the other (`curated_pairs`: the index
downloaded from and committed back to the bucket) and writes the funnel report and the release under the location.

The snapshot (real WARC files of the sample crawl) is registered in 2 batches on S3 through the `warehouse`
resource's registry (what the crawl sensor uses; the command line still registers in the local home only). Afterwards
every table and ledger part is an object in the bucket, no local home holds a table, an image, an index file, a
release or a DuckDB file (only scratch: the registry's mirror, and the human-facing contact sheets of stage 3), and
every row count, the curated pairs and the released pairs equal a local-mode run of the same batches, registered with
`danqing snapshot add --batch-size 2` (also two processes at once, then the merges and the release)."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pytest

from danqing_assets.cli import main
from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.lib.checkpoints import save_checkpoint_dir
from danqing_assets.lib.embed import TINY_MODEL_NAME, load_clip
from danqing_assets.lib.export import open_release
from danqing_assets.lib.tokenizer import open_clip_tokenizer_spec
from danqing_assets.lib.warehouse import LEDGER, Warehouse
from danqing_sample.crawl import write_sample_crawl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SNAPSHOT = "CC-S3"
KEYS = [f"{SNAPSHOT}.b00000", f"{SNAPSHOT}.b00001"]
TABLES = ["warc_files", "raw_pairs", "warc_image_captures", "source_scores", "source_selected_pairs", "text_scores",
          "text_refined_pairs", "fetched_images", "image_scores", "image_embeddings", "visually_diversified_pairs",
          "image_clusters", "cross_modal_scores", "aligned_pairs", "curated_pairs"]
LEDGER_STAGES = ["source", "text", "fetch", "image", "cross_modal", "cross_batch"]
STAGE4 = ["aligned_pairs"]  # both batches at once: everything up to the band
MERGE_AND_RELEASE = ["--only", "curated_pairs", "funnel_report", "danqing_dataset"]  # one process, batches in order


def _worker(home, location, endpoint, env, keys, through):
    cmd = [sys.executable, "-m", "danqing_assets_tests.e2e.s3_batch_worker", str(home), location or "",
           endpoint or "", ",".join(keys), *through]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _workers(homes, location, endpoint, env):
    """Materialize KEYS[i] through stage 4's band in its own process with local home homes[i], both at once."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda i: _worker(homes[i], location, endpoint, env, [KEYS[i]], STAGE4), range(2)))


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_two_batches_at_once_with_everything_on_s3(tmp_path, local_s3, monkeypatch):
    endpoint, make_client = local_s3
    client = make_client()
    client.create_bucket(Bucket="danqing-wh")
    crawl = tmp_path / "crawl"
    write_sample_crawl(crawl, pages=60, files=4, seed=3)

    def on_s3(home):
        return WarehouseResource(home=str(home), location="s3://danqing-wh/prod", s3_endpoint_url=endpoint)

    snap = on_s3(tmp_path / "registrar").registry().add(SNAPSHOT, str(crawl), batch_size=2)
    assert list(snap.keys) == KEYS

    tiny = save_checkpoint_dir(load_clip(TINY_MODEL_NAME, device="cpu", allow_random_init=True), tmp_path / "tiny",
                               model_name=TINY_MODEL_NAME, tokenizer_spec=open_clip_tokenizer_spec(TINY_MODEL_NAME),
                               lineage={})  # one set of random weights for every process (read-only model files)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DANQING_TEST_CLIP": str(tiny)}
    s3_homes = [tmp_path / "worker0", tmp_path / "worker1"]  # empty: nothing local is shared with the registrar
    _workers(s3_homes, "s3://danqing-wh/prod", endpoint, env)
    s3_homes.append(tmp_path / "merger")  # a third machine merges both batches in order, then releases
    _worker(s3_homes[2], "s3://danqing-wh/prod", endpoint, env, KEYS, MERGE_AND_RELEASE)

    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="danqing-wh")
            for o in page.get("Contents", [])]
    tables = {k for k in keys if k.startswith("prod/tables/")}
    expected = {f"prod/tables/{t}/snapshot={b}/part-0.parquet" for t in TABLES for b in KEYS}
    expected |= {f"prod/tables/{LEDGER}/stage={s}/snapshot={b}/part-0.parquet" for s in LEDGER_STAGES for b in KEYS}
    expected.add(f"prod/tables/snapshot_batches/snapshot={SNAPSHOT}/part-0.parquet")  # written by the registry
    assert tables == expected
    index = {k for k in keys if k.startswith("prod/crossbatch/")}
    assert "prod/crossbatch/manifest.json" in index and any(k.startswith("prod/crossbatch/segments/") for k in index)
    assert "prod/reports/funnel.md" in keys
    s3_releases = {k.split("/")[2] for k in keys if k.startswith("prod/releases/")}
    assert len(s3_releases) == 1
    images = {k.rsplit("/", 1)[1] for k in keys if k.startswith("prod/images/")}
    assert images  # the image store defaults to <location>/images

    assert {k for k in keys if k.startswith("prod/snapshots/")} == {
        f"prod/snapshots/{SNAPSHOT}.json", f"prod/snapshots/{SNAPSHOT}.warcs.parquet"}
    for home in s3_homes:  # nothing a later step needs stayed local: scratch (the registry's mirror) and reports
        left = [f for f in _files(home) if not f.startswith((".scratch/registry/", "reports/"))]
        assert left == [], left

    # the same batches in local mode, registered by the command line, two processes at once on one home
    local_home = tmp_path / "local"
    monkeypatch.setenv("DANQING_HOME", str(local_home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    assert main(["snapshot", "add", SNAPSHOT, str(crawl), "--batch-size", "2"]) == 0
    _workers([local_home, local_home], None, None, env)
    _worker(local_home, None, None, env, KEYS, MERGE_AND_RELEASE)
    local = Warehouse(local_home)
    s3 = on_s3(tmp_path / "reader").warehouse()
    for key in KEYS:
        for table in TABLES:
            assert s3.count(table, key) == local.count(table, key), (table, key)
        for stage in LEDGER_STAGES:
            assert s3.read(LEDGER, key, stage=stage).height == local.read(LEDGER, key, stage=stage).height, (stage, key)
        assert s3.read("text_refined_pairs", key)["pair_id"].to_list() == \
            local.read("text_refined_pairs", key)["pair_id"].to_list()
        ok = set(local.read("fetched_images", key).filter(pl.col("status") == "ok")["image_sha256"])
        assert ok and ok <= images
        assert s3.read("curated_pairs", key)["pair_id"].to_list() == \
            local.read("curated_pairs", key)["pair_id"].to_list()
    assert len(images) == len(_files(local_home / "images"))
    assert s3.count("curated_pairs", KEYS[0]) > 0 and s3.count("curated_pairs", KEYS[1]) > 0
    # the releases: on S3 under the location, the same pairs as the local one
    released = open_release(f"s3://danqing-wh/prod/releases/{s3_releases.pop()}", s3_client=client)
    (local_release,) = (local_home / "releases").iterdir()
    local_released = open_release(local_release)
    assert released.verify() == []
    assert released.manifest.total_pairs == local_released.manifest.total_pairs > 0
    assert sorted(released.read_pairs()["pair_id"]) == sorted(local_released.read_pairs()["pair_id"])
    assert s3.count("raw_pairs", KEYS[0]) > 0 and s3.count("text_refined_pairs", KEYS[1]) > 0
    # the views: an in-memory DuckDB on any machine, over the bucket
    with s3.connect() as con:
        rows = con.execute("SELECT snapshot, count(*) FROM raw_pairs GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [(k, local.count("raw_pairs", k)) for k in KEYS]
