"""The cross-batch index beside an S3 warehouse (lib/crossbatch_s3.py), against a local S3 server (moto): merges run
from different empty homes decide exactly as one local index, old generations are deleted from the bucket, and a
merge whose download went stale (another merge committed) fails with a clear error and commits nothing."""

import hashlib

import numpy as np
import polars as pl
import pytest

from danqing_assets.lib.crossbatch import CrossBatchIndex
from danqing_assets.lib.crossbatch_s3 import CrossBatchIndexConflict, S3IndexMirror
from danqing_assets.lib.s3 import S3Config
from danqing_assets.lib.warehouse_s3 import S3Warehouse

DIM = 8
BUCKET = "danqing-ix"


def _batch(tags: list[str], seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({"pair_id": [f"p-{t}-{seed}" for t in tags],
                          "image_sha256": [hashlib.sha256(t.encode()).hexdigest() for t in tags],
                          "phash": [None] * len(tags)}, schema={"pair_id": pl.String, "image_sha256": pl.String,
                                                                "phash": pl.String})
    emb = rng.standard_normal((len(tags), DIM)).astype(np.float32)
    return frame, emb / np.linalg.norm(emb, axis=1, keepdims=True)


BATCHES = {"CC.b00000": _batch(["a", "b", "c"], 0), "CC.b00001": _batch(["b", "d", "a", "e"], 1),
           "CC.b00002": _batch(["e", "f"], 2)}


def _merge_on_s3(wh: S3Warehouse, home, partition: str) -> pl.DataFrame:
    mirror = S3IndexMirror(wh, home / "copy")
    try:
        index = CrossBatchIndex(mirror.pull())
        out = index.merge(partition, *BATCHES[partition])
        mirror.push()
    finally:
        mirror.clear()
    return out


@pytest.fixture
def s3wh(tmp_path, local_s3):
    endpoint, make_client = local_s3
    client = make_client()
    client.create_bucket(Bucket=BUCKET)

    def make(home: str) -> S3Warehouse:
        return S3Warehouse(f"s3://{BUCKET}/wh", home=tmp_path / home, s3=S3Config(endpoint_url=endpoint))

    yield make, client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):  # moto's state is per process
        for o in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=o["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _keys(client) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_merges_from_empty_homes_equal_one_local_index(tmp_path, s3wh):
    make, client = s3wh
    local = CrossBatchIndex(tmp_path / "local")
    for i, partition in enumerate(BATCHES):  # each merge on another "machine": its own empty home
        wh = make(f"worker{i}")
        got = _merge_on_s3(wh, wh.home, partition)
        want = local.merge(partition, *BATCHES[partition])
        assert got.equals(want), partition
        assert not (wh.home / "copy").exists()  # the working copy is scratch
    keys = _keys(client)
    assert "wh/crossbatch/manifest.json" in keys
    segments = {k.rsplit("/", 1)[1] for k in keys if k.startswith("wh/crossbatch/segments/")}
    local_files = {p.name for p in (tmp_path / "local" / "segments").iterdir()}
    assert segments == local_files  # old generations deleted, as locally
    reader = S3IndexMirror(make("reader"), tmp_path / "reader-copy")
    index = CrossBatchIndex(reader.pull())
    assert index.partitions() == list(BATCHES)
    assert index.accepted().sort("pair_id").equals(local.accepted().sort("pair_id"))


def test_a_stale_download_fails_clearly_and_commits_nothing(tmp_path, s3wh):
    make, client = s3wh
    wh = make("w0")
    _merge_on_s3(wh, wh.home, "CC.b00000")
    slow = S3IndexMirror(make("slow"), tmp_path / "slow-copy")
    slow_index = CrossBatchIndex(slow.pull())
    _merge_on_s3(make("w1"), tmp_path / "w1", "CC.b00001")  # another merge commits meanwhile
    before = client.get_object(Bucket=BUCKET, Key="wh/crossbatch/manifest.json")["Body"].read()
    slow_index.merge("CC.b00002", *BATCHES["CC.b00002"])
    with pytest.raises(CrossBatchIndexConflict, match="changed by another merge"):
        slow.push()
    assert client.get_object(Bucket=BUCKET, Key="wh/crossbatch/manifest.json")["Body"].read() == before
    reader = CrossBatchIndex(S3IndexMirror(make("reader"), tmp_path / "r").pull())
    assert reader.partitions() == ["CC.b00000", "CC.b00001"]
    # rerun: the merge from a fresh download goes through, and the orphans of the failed one are deleted
    _merge_on_s3(make("w2"), tmp_path / "w2", "CC.b00002")
    reader = CrossBatchIndex(S3IndexMirror(make("reader2"), tmp_path / "r2").pull())
    assert reader.partitions() == list(BATCHES)
    named = set()
    for rec in reader._current().manifest["partitions"].values():
        named |= {v for k, v in rec.items() if k in ("entries", "embeddings", "rejections") and v}
    assert {k.rsplit("/", 1)[1] for k in _keys(client) if "/segments/" in k} == named


def test_first_merges_racing_on_an_empty_bucket(tmp_path, s3wh):
    make, _ = s3wh
    a = S3IndexMirror(make("a"), tmp_path / "a")
    b = S3IndexMirror(make("b"), tmp_path / "b")
    ia, ib = CrossBatchIndex(a.pull()), CrossBatchIndex(b.pull())
    ia.merge("CC.b00000", *BATCHES["CC.b00000"])
    ib.merge("CC.b00001", *BATCHES["CC.b00001"])
    a.push()
    with pytest.raises(CrossBatchIndexConflict):
        b.push()  # IfNoneMatch: the manifest exists now
