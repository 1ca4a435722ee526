"""The warehouse on a real local S3 server (moto on 127.0.0.1): the Warehouse API against objects, DuckDB reading
them through httpfs, and clear errors for a missing bucket or an unreachable endpoint."""

import polars as pl
import pytest

from danqing_assets.defs.common.resources import WarehouseResource
from danqing_assets.lib.s3 import S3Config
from danqing_assets.lib.sql import out_of_core, parquet_literal
from danqing_assets.lib.warehouse import LEDGER
from danqing_assets.lib.warehouse_s3 import S3Warehouse, WarehouseLocationError, parse_s3_location


@pytest.fixture
def s3_wh(local_s3, tmp_path):
    endpoint, make_client = local_s3
    client = make_client()
    client.create_bucket(Bucket="wh-bucket")
    wh = S3Warehouse("s3://wh-bucket/runs/a", home=tmp_path / "home", s3=S3Config(endpoint_url=endpoint))
    return wh, client


def _keys(client, bucket="wh-bucket"):
    return sorted(o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for o in p.get("Contents", []))


def test_partitions_are_objects_and_read_back(s3_wh, tmp_path):
    wh, client = s3_wh
    assert not wh.exists("t", "b1") and wh.count("t", "b1") is None
    wh.write("t", "b1", pl.DataFrame({"pair_id": ["a", "b", "c"], "x": [1, 2, 3]}))
    wh.write("t", "b2", pl.DataFrame({"pair_id": ["d"], "x": [4]}))
    wh.write_rejections("source", "b1", pl.DataFrame({"pair_id": ["z"], "reason": ["too_short"]}))
    wh.write_rejections("text", "b1", pl.DataFrame({"pair_id": ["y"], "reason": ["no_noun"]}))
    assert _keys(client) == [
        "runs/a/tables/rejected_pairs/stage=source/snapshot=b1/part-0.parquet",
        "runs/a/tables/rejected_pairs/stage=text/snapshot=b1/part-0.parquet",
        "runs/a/tables/t/snapshot=b1/part-0.parquet",
        "runs/a/tables/t/snapshot=b2/part-0.parquet",
    ]
    assert wh.exists("t", "b1") and wh.exists(LEDGER, "b1", stage="text") and not wh.exists(LEDGER, "b2", stage="text")
    assert wh.read("t", "b1")["x"].to_list() == [1, 2, 3]
    assert wh.read("t", "b1", columns=["x"]).columns == ["x"]
    assert wh.count("t", "b1") == 3 and wh.count("t", "b1", where=pl.col("x") > 1) == 2
    assert wh.columns("t", "b2") == ["pair_id", "x", "snapshot"]
    assert sorted(wh.read_rejections("b1")["reason"]) == ["no_noun", "too_short"]
    assert wh.read_rejections("b1", stages=["text"])["pair_id"].to_list() == ["y"]
    assert wh.snapshots("t") == ["b1", "b2"] and wh.tables() == ["rejected_pairs", "t"]
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        wh.read("t", "b3")
    # nothing but scratch on the local home: no tables, no views, no DuckDB file
    assert not (wh.home / "tables").exists() and not (wh.home / "warehouse.duckdb").exists()
    assert not any(p.is_file() for p in wh.home.rglob("*"))


def test_streaming_writes_and_reads(s3_wh):
    wh, client = s3_wh
    schema = {"pair_id": pl.String, "x": pl.Int64, "snapshot": pl.String}
    with wh.writer("big", "b1", schema) as w:
        for i in range(3):
            w.write(pl.DataFrame({"pair_id": [f"{i}-{j}" for j in range(5)], "x": list(range(5))}))
        assert not wh.exists("big", "b1")  # nothing visible before commit
        w.commit()
    chunks = list(wh.iter_batches("big", "b1", columns=["x"], batch_rows=4))
    assert sum(c.height for c in chunks) == 15 and all(c.height <= 5 for c in chunks)
    with wh.writer("big", "b1", schema) as w:  # a writer that fails keeps the previous object
        w.write(pl.DataFrame({"pair_id": ["x"], "x": [0]}))
    assert wh.count("big", "b1") == 15
    with pytest.raises(RuntimeError):
        with wh.staged("big", "b1") as out:
            pl.DataFrame({"pair_id": ["q"], "x": [1], "snapshot": ["b1"]}).write_parquet(out.path)
            raise RuntimeError("boom")
    assert wh.count("big", "b1") == 15
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        next(wh.iter_batches("empty", "b1"))
    with wh.writer("empty", "b1", schema) as w:
        w.commit()
    assert [c.shape for c in wh.iter_batches("empty", "b1")] == [(0, 3)]
    assert not any(p.is_file() for p in wh.home.rglob("*"))  # staged and downloaded copies are gone


def test_duckdb_reads_partitions_and_views_through_httpfs(s3_wh, tmp_path):
    wh, _ = s3_wh
    wh.write("t", "b1", pl.DataFrame({"pair_id": ["a", "b"], "x": [1, 2]}))
    wh.write("t", "b2", pl.DataFrame({"pair_id": ["c"], "x": [3]}))
    con = out_of_core(memory_limit_mb=256, temp_directory=tmp_path)
    wh.configure_connection(con)
    path = wh.partition_path("t", "b1")
    assert path == "s3://wh-bucket/runs/a/tables/t/snapshot=b1/part-0.parquet"
    assert con.execute(f"SELECT sum(x) FROM read_parquet({parquet_literal(path)})").fetchone()[0] == 3
    con.close()
    with wh.connect() as view_con:
        assert view_con.execute("SELECT snapshot, count(*) FROM t GROUP BY 1 ORDER BY 1").fetchall() == [("b1", 2), ("b2", 1)]


def test_a_missing_bucket_or_endpoint_is_a_clear_error(local_s3, tmp_path):
    endpoint, _ = local_s3
    res = WarehouseResource(home=str(tmp_path), location="s3://no-such-bucket/x", s3_endpoint_url=endpoint)
    with pytest.raises(WarehouseLocationError, match="'no-such-bucket' does not exist"):
        res.warehouse()
    res = WarehouseResource(home=str(tmp_path), location="s3://wh-bucket/x", s3_endpoint_url="http://127.0.0.1:9")
    with pytest.raises(WarehouseLocationError, match="cannot reach S3 endpoint http://127.0.0.1:9") as err:
        res.warehouse()
    assert "testing" not in str(err.value)  # credentials are never in a message


@pytest.mark.parametrize("bad", ["ftp://b/x", "s3://", "s3://B_ad/x", "s3://ok-bucket/../x", "/local/path"])
def test_bad_locations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_s3_location(bad)
    with pytest.raises(ValueError, match="location"):
        WarehouseResource(location=bad)
    assert parse_s3_location("s3://ok-bucket/a/b/") == ("ok-bucket", "a/b")


def _bucket_and_crawl(local_s3, tmp_path, bucket):
    """(endpoint, client, crawl folder): an empty bucket on the local S3 server and three small WARC-named files."""
    endpoint, make_client = local_s3
    client = make_client()
    client.create_bucket(Bucket=bucket)
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for name in ("a.warc.gz", "b.warc.gz", "c.warc.gz"):
        (crawl / name).write_bytes(b"x" * 10)
    return endpoint, client, crawl


def test_the_registry_lives_in_the_bucket(local_s3, tmp_path):
    """A snapshot registered by one machine is found by another (fresh home): its batches and their WARC files."""
    endpoint, client, crawl = _bucket_and_crawl(local_s3, tmp_path, "wh-bucket")

    def resource(home):
        return WarehouseResource(home=str(tmp_path / home), location="s3://wh-bucket/p", s3_endpoint_url=endpoint)

    snap = resource("one").registry().add("S", str(crawl), batch_size=2)
    assert snap.keys == ("S.b00000", "S.b00001")
    assert {k for k in _keys(client) if "/snapshots/" in k} == {"p/snapshots/S.json", "p/snapshots/S.warcs.parquet"}
    other = resource("two")
    registry = other.registry()
    assert [s.name for s in registry.list()] == ["S"]
    assert registry.batch("S.b00001").index == 1
    assert [r.name for r in registry.warcs("S.b00000")] == ["a.warc.gz", "b.warc.gz"]
    assert other.warehouse().read("snapshot_batches", "S")["warc_files"].to_list() == [2, 1]
    assert resource("one").registry().add("S", str(crawl), batch_size=2) == snap  # the same files: a no-op
    for home in ("one", "two"):  # locally, only the registry's mirror in scratch
        assert all(p.startswith(".scratch/registry/") for p in
                   (str(f.relative_to(tmp_path / home)) for f in (tmp_path / home).rglob("*") if f.is_file()))


def test_the_cli_and_the_code_location_take_the_location_from_the_environment(local_s3, tmp_path, monkeypatch, capsys):
    """DANQING_WAREHOUSE_LOCATION (+ DANQING_S3_ENDPOINT_URL) puts the CLI's registry and tables and the code
    location's default warehouse on S3: `danqing snapshot add` registers the batches in the bucket, a second machine
    (fresh home) lists them; a bad value is a message, not a traceback."""
    from danqing_assets import cli
    from danqing_assets.defs.common.resources import default_resources

    endpoint, client, crawl = _bucket_and_crawl(local_s3, tmp_path, "env-bucket")
    monkeypatch.setenv("DANQING_WAREHOUSE_LOCATION", "s3://env-bucket/env")
    monkeypatch.setenv("DANQING_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("DANQING_HOME", str(tmp_path / "one"))
    assert cli.main(["snapshot", "add", "S", str(crawl), "--batch-size", "2"]) == 0
    assert {k for k in _keys(client, "env-bucket") if "/snapshots/" in k} == {"env/snapshots/S.json", "env/snapshots/S.warcs.parquet"}
    monkeypatch.setenv("DANQING_HOME", str(tmp_path / "two"))
    capsys.readouterr()
    assert cli.main(["snapshot", "list", "--batches"]) == 0
    out = capsys.readouterr().out
    assert "S.b00000" in out and "S.b00001" in out
    wh = default_resources()["warehouse"].warehouse()
    assert wh.location == "s3://env-bucket/env" and wh.read("snapshot_batches", "S")["warc_files"].to_list() == [2, 1]
    monkeypatch.setenv("DANQING_WAREHOUSE_LOCATION", "http://not-s3/x")
    assert cli.main(["snapshot", "list"]) != 0
    assert "DANQING_WAREHOUSE_LOCATION='http://not-s3/x'" in capsys.readouterr().err
