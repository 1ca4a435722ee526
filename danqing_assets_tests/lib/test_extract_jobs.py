"""Extraction in worker processes reads s3:// WARCs through a plain S3Config (no Dagster resource in the library)."""

import pickle
import subprocess
import sys

import polars as pl

from danqing_assets.lib.extract_jobs import ExtractOptions, extract_ref_to_parquet
from danqing_assets.lib.s3 import S3Config
from danqing_assets.lib.snapshots import WarcRef
from danqing_assets_tests.lib.test_warc import Warc, html_page


def test_s3_warc_is_extracted_by_a_worker_with_a_plain_config(tmp_path, local_s3):
    endpoint, make_client = local_s3
    w = Warc(tmp_path / "one.warc.gz")
    w.response("https://example.cn/a", html_page('<img src="/cat.jpg" alt="一只橘猫在窗台上晒太阳">').encode())
    path = w.close()
    client = make_client()
    client.create_bucket(Bucket="crawl")
    client.upload_file(str(path), "crawl", "one.warc.gz")

    options = ExtractOptions(snapshot="s", s3=S3Config(endpoint_url=endpoint))
    assert pickle.loads(pickle.dumps(options)) == options  # workers receive it pickled
    out = tmp_path / "parts"
    out.mkdir()
    stats = extract_ref_to_parquet(WarcRef(uri="s3://crawl/one.warc.gz", name="one.warc.gz", bytes=None), options,
                                   str(out), 0)
    assert stats.errors == []
    pairs = pl.read_parquet(out / "pairs-000000.parquet")
    assert pairs["image_url"].to_list() == ["https://example.cn/cat.jpg"]
    assert pairs["caption"].to_list() == ["一只橘猫在窗台上晒太阳"]


def test_a_missing_object_is_a_counted_file_error(tmp_path, local_s3):
    endpoint, make_client = local_s3
    make_client().create_bucket(Bucket="crawl")
    options = ExtractOptions(snapshot="s", s3=S3Config(endpoint_url=endpoint))
    stats = extract_ref_to_parquet(WarcRef(uri="s3://crawl/missing.warc.gz", name="missing.warc.gz", bytes=None),
                                   options, str(tmp_path), 0)
    assert [e.kind for e in stats.errors] == ["unreadable_file"]


def test_the_library_does_not_import_dagster():
    code = ("import sys, pkgutil, importlib, danqing_assets.lib as L\n"
            "for m in pkgutil.walk_packages(L.__path__, 'danqing_assets.lib.'):\n"
            "    importlib.import_module(m.name)\n"
            "print('dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_library_source_imports_dagster_even_lazily():
    import re
    from pathlib import Path

    import danqing_assets.lib as L

    offenders = [str(p) for p in Path(L.__file__).parent.rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+dagster", p.read_text(encoding="utf-8"), re.M)]
    assert offenders == []
