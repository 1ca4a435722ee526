"""A worker process that dies (a real SIGSEGV in the extraction worker, in the fetch worker, in an image scoring
worker) does not take its step down: the file or image is retried or counted with reason `internal_error`, and
everything else goes on."""

import dagster as dg
import polars as pl
import pytest

from danqing_assets.lib import reasons as R
from danqing_assets.lib.extract_jobs import CRASH_HOOK_ENV
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import run_pipeline
from danqing_assets_tests.lib.test_warc import Warc, html_page
from danqing_sample.crawl import write_sample_crawl

pytestmark = pytest.mark.slow

CAPTION = "一只橘色的小猫在阳光明媚的窗台上安静地睡觉"


def _crawl(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for name in ("a", "b", "c"):
        wf = Warc(crawl / f"{name}.warc.gz")
        for i in range(2):
            wf.response(f"http://{name}.example.cn/{i}.html",
                        html_page(f'<img src="/{i}.jpg" alt="{CAPTION}{name}{i}">').encode())
        wf.close()
    return crawl


def _raw_pairs_md(result):
    return next(m.materialization.metadata for m in result.get_asset_materialization_events()
                if m.asset_key.to_user_string() == "raw_pairs")


@pytest.mark.parametrize("hook, retried, lost", [("segv_c:b.warc.gz", 1, 0), ("segv:b.warc.gz", 1, 1)])
def test_raw_pairs_survives_a_segfaulting_extraction_worker(tmp_path, monkeypatch, hook, retried, lost):
    """Before: the dead worker broke the process pool and raw_pairs failed with BrokenProcessPool (no rows at all);
    with one worker the segfault took down the step's own process."""
    from danqing_assets.lib import html as H

    if hook.startswith("segv_c") and H._compiled_scan() is None:
        pytest.skip("the compiled tokenizer is not built here")
    monkeypatch.setenv(CRASH_HOOK_ENV, hook)
    home = tmp_path / "home"
    result = run_pipeline(home, _crawl(tmp_path), through="raw_pairs",
                          run_config={"ops": {"raw_pairs": {"config": {"workers": 2}}}})
    assert result.success
    md = _raw_pairs_md(result)
    assert md["warc_files_retried_after_worker_death"].value == retried
    assert md["warc_errors_by_kind"].value == ({R.INTERNAL_ERROR: 1} if lost else {})
    raw = Warehouse(home).read("raw_pairs", "sample")
    assert sorted(set(raw["warc_file"])) == (["a.warc.gz", "c.warc.gz"] if lost else ["a.warc.gz", "b.warc.gz",
                                                                                         "c.warc.gz"])
    assert raw.height == 6 - 2 * lost


def test_image_scores_survives_an_image_that_kills_its_scoring_worker(tmp_path, monkeypatch):
    """One image kills (a real SIGSEGV) every image_scores worker that decodes it: that image alone is scored
    `internal_error` and its pairs go to the ledger with that reason; every other image is scored and stage 3 ends.
    Before: BrokenProcessPool failed image_scores, so nothing after fetch was written."""
    crawl = tmp_path / "crawl"
    write_sample_crawl(crawl, pages=12, files=1, seed=0)
    kept = pl.read_parquet(crawl / "truth.parquet").filter(pl.col("expected_stage") == "keep")
    killer = kept["image_sha256"][0]
    monkeypatch.setenv(CRASH_HOOK_ENV, f"segv:{killer}")
    home = tmp_path / "home"
    result = run_pipeline(home, crawl, through="visually_diversified_pairs",
                          run_config={"ops": {"image_scores": {"config": {"workers": 2}}}})
    assert result.success
    wh = Warehouse(home)
    scores = wh.read("image_scores", "sample")
    fetched = wh.read("fetched_images", "sample").filter(pl.col("status") == "ok")
    assert scores.height == fetched["image_sha256"].n_unique() > 10
    failed = scores.filter(pl.col("score_error") == R.INTERNAL_ERROR)
    assert failed["image_sha256"].to_list() == [killer]
    assert "exit code -11" in failed["score_error_detail"][0]
    assert scores.filter(pl.col("image_sha256") != killer)["phash"].null_count() == scores.filter(
        pl.col("score_error").is_not_null()).height - 1
    ledger = wh.read_rejections("sample", stages=["image"])
    of_killer = fetched.filter(pl.col("image_sha256") == killer)["pair_id"].to_list()
    assert sorted(ledger.filter(pl.col("reason") == R.INTERNAL_ERROR)["pair_id"].to_list()) == sorted(of_killer)
    assert wh.read("visually_diversified_pairs", "sample").height > 0
