"""A snapshot read over HTTP, as from https://data.commoncrawl.org: the WARCs stream through a warc.paths listing,
and captured images come out of the remote WARCs with one ranged request per record, not from the web."""

import polars as pl
import pytest

from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import run_pipeline
from danqing_assets_tests.rangeserver import serve

pytestmark = pytest.mark.slow


def test_snapshot_over_http_reads_captures_with_range_requests(sample_crawl, tmp_path):
    crawl_dir, _ = sample_crawl
    names = sorted(p.name for p in crawl_dir.glob("*.warc.gz"))
    listing = tmp_path / "warc.paths"
    listing.write_text("".join(f"{n}\n" for n in names))
    base, counter, stop = serve(crawl_dir)
    try:
        home = tmp_path / "home"
        result = run_pipeline(home, listing, through="fetched_images", base_url=base + "/")
    finally:
        stop()
    assert result.success
    wh = Warehouse(home)
    assert set(wh.read("warc_files", "sample")["uri"]) == {f"{base}/{n}" for n in names}
    fetched = wh.read("fetched_images", "sample")
    ok = fetched.filter(pl.col("status") == "ok")
    assert ok.height > 1000 and set(ok["source"]) == {"warc"}
    full_reads = sum(v for (path, kind), v in counter.items() if kind == "full")
    ranged = sum(v for (path, kind), v in counter.items() if kind == "range")
    assert full_reads == len(names)  # each WARC streamed once by raw_pairs
    assert ranged == ok["image_url"].n_unique()  # one ranged read per captured image

