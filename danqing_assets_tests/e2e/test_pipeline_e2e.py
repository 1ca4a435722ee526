"""The whole chain on the sample crawl: every check passes, every reason of stages 2 and 3 meets precision >= 0.95
and recall >= 0.9 against truth.parquet, the ledger accounts for every raw pair, and a re-run fetches nothing.

Without an embedding model (stage 3 metadata `semantic_dedup` not "on ...") stage 3 cannot find the crawl's
`semantic_duplicate` pairs (re-renders of a kept scene, far from it in pHash): the truth then expects them kept
(`_truth_as_decidable`), and `test_semantic_duplicates_are_kept_without_a_model` says so. With a model switched on,
they are held to their label like every other reason."""

import dagster as dg
import numpy as np
import polars as pl
import pytest

from danqing_assets.defs.common.resources import ClipModelResource
from danqing_assets.lib import reasons
from danqing_assets.lib.embed import TINY_MODEL_NAME
from danqing_assets.lib.funnel import format_funnel, funnel
from danqing_assets.lib.quality import reason_quality
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(sample_crawl, tmp_path_factory):
    crawl_dir, _ = sample_crawl
    home = tmp_path_factory.mktemp("home")
    truth = str(crawl_dir / "truth.parquet")
    run_config = {
        "ops": {
            "text_refined_pairs": {"config": {"truth_path": truth}},
            "visually_diversified_pairs": {"config": {"truth_path": truth}},
        }
    }
    result = run_pipeline(home, crawl_dir, run_config=run_config)
    return home, crawl_dir, result


def _metadata(result, key):
    for m in result.get_asset_materialization_events():
        if m.asset_key.to_user_string() == key:
            return {k: getattr(v, "value", v) for k, v in m.materialization.metadata.items()}
    raise KeyError(key)


def test_every_check_passes(pipeline):
    _, _, result = pipeline
    failed = [(c.check_name, c.metadata) for c in result.get_asset_check_evaluations() if not c.passed]
    assert result.success and not failed, failed


@pytest.mark.parametrize("stage, table_before", [(reasons.TEXT, "source_selected_pairs"), (reasons.IMAGE, "fetched_images")])
def test_stage_reasons_match_the_truth(pipeline, stage, table_before):
    home, crawl_dir, result = pipeline
    wh = Warehouse(home)
    entering = wh.read(table_before, "sample")
    if table_before == "fetched_images":
        entering = entering.filter(pl.col("status") == "ok")
    quality = reason_quality(
        stage=stage,
        entering=entering["pair_id"],
        rejected=wh.read_rejections("sample", stages=[stage]),
        truth=_truth_as_decidable(pl.read_parquet(crawl_dir / "truth.parquet"), result),
    )
    print(quality)
    labelled = quality.filter(pl.col("truth") > 0)
    assert labelled.height >= 5
    for row in labelled.iter_rows(named=True):
        assert row["precision"] >= 0.95 and row["recall"] >= 0.9, row


def _semantic_dedup_on(result) -> bool:
    """Stage 3 says "on (<model>, ...)" when it deduplicates by embeddings, "off" / "OFF: <why>" otherwise."""
    return _metadata(result, "visually_diversified_pairs")["semantic_dedup"].startswith("on")


def _truth_as_decidable(truth: pl.DataFrame, result) -> pl.DataFrame:
    """The truth as stage 3 can meet it: without an embedding model semantic duplicates are expected kept."""
    if _semantic_dedup_on(result):
        return truth
    semantic = pl.col("expected_reason") == reasons.SEMANTIC_DUPLICATE
    return truth.with_columns(
        expected_stage=pl.when(semantic).then(pl.lit(reasons.KEEP)).otherwise(pl.col("expected_stage")),
        expected_reason=pl.when(semantic).then(pl.lit(reasons.KEEP)).otherwise(pl.col("expected_reason")),
    )


def test_semantic_duplicates_are_kept_without_a_model(pipeline):
    home, crawl_dir, result = pipeline
    if _semantic_dedup_on(result):
        pytest.skip("an embedding model is on: test_stage_reasons_match_the_truth holds them to their label")
    truth = pl.read_parquet(crawl_dir / "truth.parquet")
    semantic = set(truth.filter(pl.col("expected_reason") == reasons.SEMANTIC_DUPLICATE)["pair_id"])
    assert len(semantic) >= 25
    kept = set(Warehouse(home).read("visually_diversified_pairs", "sample")["pair_id"])
    assert semantic <= kept


def test_the_ledger_accounts_for_every_raw_pair(pipeline):
    home, _, _ = pipeline
    wh = Warehouse(home)
    raw = set(wh.read("raw_pairs", "sample")["pair_id"])
    final = set(wh.read("visually_diversified_pairs", "sample")["pair_id"])
    ledger = wh.read_rejections("sample")
    assert ledger["pair_id"].n_unique() == ledger.height  # rejected once
    assert final.isdisjoint(ledger["pair_id"])
    assert final | set(ledger["pair_id"]) == raw
    assert set(ledger["stage"]) == {reasons.SOURCE, reasons.TEXT, reasons.FETCH, reasons.IMAGE}


def test_metadata_shows_the_funnel(pipeline):
    home, _, result = pipeline
    fetched = _metadata(result, "fetched_images")
    assert fetched["from_warc"] > 0 and fetched["dropped_dns_error"] > 0
    table = Warehouse(home).read("fetched_images", "sample")
    # every image the sample crawl captured comes from the WARC, never the network
    assert set(table.filter(pl.col("status") == "ok")["source"]) == {"warc"}
    assert 0 < fetched["success_rate"] < 1 and fetched["paper_success_rate"] == pytest.approx(0.673, abs=1e-3)
    image = _metadata(result, "visually_diversified_pairs")
    assert image["semantic_dedup"].startswith("OFF") and image["dropped_blurry_image"] > 0
    assert image["dropped_contact_sheet"]
    text = _metadata(result, "text_refined_pairs")
    assert text["precision_no_noun"] >= 0.95
    report = format_funnel(funnel(Warehouse(home), "sample"), "sample")
    assert "visually_diversified_pairs" in report and "dropped near_duplicate_image" in report


def test_rematerializing_fetch_skips_stored_images(pipeline):
    home, crawl_dir, _ = pipeline
    before = Warehouse(home).read("fetched_images", "sample")
    again = run_pipeline(home, crawl_dir, selection=dg.AssetSelection.assets("fetched_images"))
    md = _metadata(again, "fetched_images")
    assert md["skipped_already_done"] == before.filter(pl.col("status") == "ok")["image_url"].n_unique()
    assert md["from_warc"] == 0  # nothing was read again
    after = Warehouse(home).read("fetched_images", "sample")
    assert after.sort("pair_id").select("pair_id", "status", "image_sha256").equals(
        before.sort("pair_id").select("pair_id", "status", "image_sha256")
    )


class HashScorer:
    """A plug-in NSFW scorer for the test: flags the images whose sha256 starts with 0 or 1 (about 1 in 8)."""

    name = "hash-scorer"

    def score(self, images):
        import hashlib

        return np.array([1.0 if hashlib.sha256(bytes(b)).hexdigest()[0] in "01" else 0.0 for b in images])


def test_a_plugged_in_nsfw_scorer_drops_what_it_flags(pipeline):
    home, crawl_dir, _ = pipeline
    result = run_pipeline(
        home,
        crawl_dir,
        selection=dg.AssetSelection.assets("image_scores", "visually_diversified_pairs", "image_clusters"),
        run_config={"ops": {"image_scores": {"config": {"nsfw_scorer": f"{__name__}:HashScorer"}}}},
    )
    assert _metadata(result, "image_scores")["nsfw_screening"] == "on (hash-scorer)"
    wh = Warehouse(home)
    flagged = set(wh.read("image_scores", "sample").filter(pl.col("nsfw_score") == 1.0)["image_sha256"])
    assert flagged
    kept = wh.read("visually_diversified_pairs", "sample")
    assert flagged.isdisjoint(kept["image_sha256"])
    ledger = wh.read_rejections("sample", stages=[reasons.IMAGE])
    assert ledger.filter(pl.col("reason") == reasons.NSFW_IMAGE).height > 0


def test_embeddings_and_semantic_dedup_with_a_small_local_model(pipeline, tmp_path):
    home, crawl_dir, _ = pipeline
    clip = ClipModelResource(model_name=TINY_MODEL_NAME, allow_random_init=True)
    result = run_pipeline(
        home,
        crawl_dir,
        selection=dg.AssetSelection.assets("image_embeddings", "visually_diversified_pairs", "image_clusters"),
        resources={"clip": clip},
        run_config={"ops": {"visually_diversified_pairs": {"config": {"semantic_max_distance": 0.0001}}}},
    )
    wh = Warehouse(home)
    emb = wh.read("image_embeddings", "sample")
    assert emb.height == wh.read("image_scores", "sample").height
    vectors = np.array(emb["embedding"].to_list(), dtype=np.float32)
    assert vectors.shape[1] > 0 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    md = _metadata(result, "visually_diversified_pairs")
    assert md["semantic_dedup"].startswith("on (danqing-tiny-clip")
    assert md["semantic_balance_curve"]
