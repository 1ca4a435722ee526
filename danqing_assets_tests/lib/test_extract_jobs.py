"""Extraction in worker processes reads s3:// WARCs through a plain S3Config (no Dagster resource in the library)."""

import pickle
import subprocess
import sys

import polars as pl
import pytest

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


# ------------------------------------------------------------------ a worker that dies takes down its file only
def _three_files(tmp_path):
    from pathlib import Path

    refs = []
    for name, cap in (("a.warc.gz", "一只橘猫在窗台上晒太阳"), ("b.warc.gz", "两只小狗在草地上奔跑"),
                      ("c.warc.gz", "西湖边的柳树在春风里摇摆")):
        w = Warc(Path(tmp_path) / name)
        w.response(f"https://{name[0]}.example.cn/p", html_page(f'<img src="/{name[0]}.jpg" alt="{cap}">').encode())
        refs.append(WarcRef(uri=str(w.close()), name=name, bytes=None))
    out = Path(tmp_path) / "parts"
    out.mkdir()
    return refs, out


def _pairs(out):
    return pl.read_parquet(out / "pairs-*.parquet").sort("warc_file")["image_url"].to_list()


def test_a_segfault_in_the_compiled_tokenizer_is_retried_in_pure_python(tmp_path, monkeypatch):
    """The worker extracting b.warc.gz is killed by a real SIGSEGV while the C tokenizer is in use: b is extracted
    again in a fresh pure-Python worker and every file's rows arrive (before: BrokenProcessPool failed the step)."""
    from danqing_assets.lib import html as H
    from danqing_assets.lib.extract_jobs import CRASH_HOOK_ENV, extract_files

    if H._compiled_scan() is None:
        pytest.skip("the compiled tokenizer is not built here: segv_c never fires")
    refs, out = _three_files(tmp_path)
    monkeypatch.setenv(CRASH_HOOK_ENV, "segv_c:b.warc.gz")
    stats, retried = extract_files(refs, ExtractOptions(snapshot="s"), str(out), workers=2)
    assert retried == ["b.warc.gz"]
    assert [s.errors for s in stats] == [[], [], []]
    assert _pairs(out) == ["https://a.example.cn/a.jpg", "https://b.example.cn/b.jpg", "https://c.example.cn/c.jpg"]


@pytest.mark.parametrize("how, exit_code", [("segv", -11), ("exit", 137)])
def test_a_file_that_kills_every_worker_is_an_internal_error_and_the_others_go_on(tmp_path, monkeypatch, how,
                                                                                   exit_code):
    """A file whose worker dies on both paths (SIGSEGV; os._exit(137) as the OOM killer leaves it) gets no rows and
    one `internal_error`; the files before and after it are extracted (in one worker and in two)."""
    from danqing_assets.lib.extract_jobs import CRASH_HOOK_ENV, INTERNAL_ERROR, extract_files

    refs, out = _three_files(tmp_path)
    monkeypatch.setenv(CRASH_HOOK_ENV, f"{how}:b.warc.gz")
    for workers in (1, 2):
        stats, retried = extract_files(refs, ExtractOptions(snapshot="s"), str(out), workers=workers)
        assert retried == ["b.warc.gz"]
        assert [[e.kind for e in s.errors] for s in stats] == [[], [INTERNAL_ERROR], []]
        assert f"exit code {exit_code}" in stats[1].errors[0].message
        assert _pairs(out) == ["https://a.example.cn/a.jpg", "https://c.example.cn/c.jpg"]
