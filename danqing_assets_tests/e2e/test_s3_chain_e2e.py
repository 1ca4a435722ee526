"""The chain with no local state: warehouse tables, ledger, images and the snapshot registry on S3 (a real local S3
server, moto on 127.0.0.1), two batches of a snapshot materialized at the same time by two worker processes, each
with its own empty local home, through stage 3 (ingest, stages 1 and 2 out of core with DuckDB reading s3:// through
httpfs, image acquisition, image scores, visual diversification).

The snapshot (real WARC files of the sample crawl) is registered in 2 batches on S3 through the `warehouse`
resource's registry (what the crawl sensor uses; the command line still registers in the local home only). Afterwards
every table and ledger part is an object in the bucket, no local home holds a table, an image or a DuckDB file (only
scratch: the registry's mirror, and the human-facing contact sheets of stage 3), and every row count equals a
local-mode run of the same batches, registered with `danqing snapshot add --batch-size 2` (also two processes at
once)."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pytest

from danqing_assets.cli import main
from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.lib.warehouse import LEDGER, Warehouse
from danqing_sample.crawl import write_sample_crawl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SNAPSHOT = "CC-S3"
KEYS = [f"{SNAPSHOT}.b00000", f"{SNAPSHOT}.b00001"]
TABLES = ["warc_files", "raw_pairs", "warc_image_captures", "source_scores", "source_selected_pairs", "text_scores",
          "text_refined_pairs", "fetched_images", "image_scores", "image_embeddings", "visually_diversified_pairs",
          "image_clusters"]
LEDGER_STAGES = ["source", "text", "fetch", "image"]


def _workers(homes, location, endpoint, env):
    """Materialize KEYS[i] in its own process with local home homes[i], both at once; return their outputs."""
    def one(i):
        cmd = [sys.executable, "-m", "danqing_assets_tests.e2e.s3_batch_worker", str(homes[i]), location or "",
               endpoint or "", KEYS[i]]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=800)

    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(one, range(2)))
    for proc in done:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return done


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

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    s3_homes = [tmp_path / "worker0", tmp_path / "worker1"]  # empty: nothing local is shared with the registrar
    _workers(s3_homes, "s3://danqing-wh/prod", endpoint, env)

    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="danqing-wh")
            for o in page.get("Contents", [])]
    tables = {k for k in keys if k.startswith("prod/tables/")}
    expected = {f"prod/tables/{t}/snapshot={b}/part-0.parquet" for t in TABLES for b in KEYS}
    expected |= {f"prod/tables/{LEDGER}/stage={s}/snapshot={b}/part-0.parquet" for s in LEDGER_STAGES for b in KEYS}
    expected.add(f"prod/tables/snapshot_batches/snapshot={SNAPSHOT}/part-0.parquet")  # written by the registry
    assert tables == expected
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
    assert len(images) == len(_files(local_home / "images"))
    assert s3.count("raw_pairs", KEYS[0]) > 0 and s3.count("text_refined_pairs", KEYS[1]) > 0
    # the views: an in-memory DuckDB on any machine, over the bucket
    with s3.connect() as con:
        rows = con.execute("SELECT snapshot, count(*) FROM raw_pairs GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [(k, local.count("raw_pairs", k)) for k in KEYS]
