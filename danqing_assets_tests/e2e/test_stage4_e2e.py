"""Stage 4 and the release on the sample crawl, with a small bootstrap model: the band decides, the same crawl
registered twice adds nothing the second time, and the release is written, complete, and honest about what was OFF.

The small model (a minute of training) is too weak to decide semantic duplicates (stage 3 would stop on it: see
test_a_degenerate_embedding_model_stops_the_step...), so, as the demo does for a model below its quality gate, this
run switches embedding dedup off in stages 3 and 4 and the card must say so."""

import dagster as dg
import polars as pl
import pytest

from danqing_assets.definitions import defs
from danqing_assets.defs.common.resources import default_resources
from danqing_assets.lib import reasons
from danqing_assets.lib.export import open_release
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import run_pipeline, with_bootstrap

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

THROUGH_CURATED = (dg.AssetSelection.assets("curated_pairs").upstream().required_multi_asset_neighbors()
                   - dg.AssetSelection.groups("s0_bootstrap_model"))


CURATED_INSTANCE: dict = {}


@pytest.fixture(scope="module")
def curated(sample_crawl, small_bootstrap, tmp_path_factory):
    crawl_dir, _ = sample_crawl
    home = tmp_path_factory.mktemp("home4")
    with_bootstrap(home, small_bootstrap)
    resources = {"clip": default_resources(str(home))["clip"]}
    truth = str(crawl_dir / "truth.parquet")
    config = {"ops": {"aligned_pairs": {"config": {"truth_path": truth}},
                      "visually_diversified_pairs": {"config": {"semantic_dedup": False}},
                      "curated_pairs": {"config": {"embedding_dedup": False}}}}
    instance = CURATED_INSTANCE["instance"] = dg.DagsterInstance.ephemeral()
    first = run_pipeline(home, crawl_dir, "sample", selection=THROUGH_CURATED, resources=resources, run_config=config,
                         instance=instance)
    second = run_pipeline(home, crawl_dir, "sample_copy", selection=THROUGH_CURATED, resources=resources,
                          run_config=config, instance=instance)
    return home, crawl_dir, first, second


def _md(result, key):
    for m in result.get_asset_materialization_events():
        if m.asset_key.to_user_string() == key:
            return {k: getattr(v, "value", v) for k, v in m.materialization.metadata.items()}
    raise KeyError(key)


def test_every_check_passes_and_models_are_on(curated):
    _, _, first, second = curated
    for result in (first, second):
        failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
        assert result.success and not failed, failed
    assert _md(first, "visually_diversified_pairs")["semantic_dedup"].startswith("OFF by configuration")
    assert _md(first, "curated_pairs")["embedding_check"].startswith("OFF by configuration")
    scores = _md(first, "cross_modal_scores")
    assert scores["model"].startswith("danqing-bootstrap-clip") and scores["missing_image_embeddings"] == 0
    # the bootstrap checkpoint declares its dedup descriptor: image_embeddings stores it beside every embedding
    emb = Warehouse(curated[0]).read("image_embeddings", "sample")
    assert emb["dedup_descriptor"].unique().to_list() == ["feature_grid 4x4 of visual.trunk.features (centred)"]
    assert emb["dedup_max_distance"].unique().to_list() == [0.15]
    assert {len(v) for v in emb["dedup_embedding"].to_list()} == {128 * 16}
    assert _md(first, "image_embeddings")["dedup_descriptor"].startswith("feature_grid")


def test_the_band_rejects_text_heavy_posters_and_the_weakest_matches(curated):
    home, crawl_dir, first, _ = curated
    wh = Warehouse(home)
    truth = pl.read_parquet(crawl_dir / "truth.parquet")
    ledger = wh.read_rejections("sample", stages=[reasons.CROSS_MODAL])
    entering = set(wh.read("visually_diversified_pairs", "sample")["pair_id"])
    posters = set(truth.filter(pl.col("expected_reason") == reasons.HIGH_SIMILARITY)["pair_id"]) & entering
    high = set(ledger.filter(pl.col("reason") == reasons.HIGH_SIMILARITY)["pair_id"])
    assert len(posters) >= 20
    assert len(posters & high) / len(posters) >= 0.8  # the text-heaviness signal needs no model to find them
    keep = set(truth.filter(pl.col("expected_reason") == reasons.KEEP)["pair_id"]) & entering
    assert len(keep & set(ledger["pair_id"])) / len(keep) <= 0.10
    md = _md(first, "aligned_pairs")
    assert md["band_mode"] == "quantile" and "recall_high_similarity" in md


def test_the_same_crawl_twice_adds_nothing(curated):
    home, _, _, second = curated
    wh = Warehouse(home)
    aligned = wh.read("aligned_pairs", "sample_copy")
    assert aligned.height > 0
    assert wh.read("curated_pairs", "sample_copy").height == 0
    ledger = wh.read_rejections("sample_copy", stages=[reasons.CROSS_BATCH])
    assert set(ledger["pair_id"]) == set(aligned["pair_id"])
    assert set(ledger["reason"]) == {reasons.CROSS_BATCH_DUPLICATE}
    assert ledger["detail"].str.contains("partition=sample kind=sha256").all()
    assert _md(second, "curated_pairs")["dropped_cross_batch_duplicate"] == aligned.height


def test_the_release_is_complete_and_states_what_was_off(curated):
    home, _, _, _ = curated
    instance = CURATED_INSTANCE["instance"]
    result = dg.materialize(assets=list(defs.assets), selection=dg.AssetSelection.groups("s6_release"),
                            instance=instance, resources=default_resources(str(home)))
    md = _md(result, "danqing_dataset")
    release = open_release(md["location"])
    assert release.verify() == []
    pairs = release.read_pairs()
    assert pairs.height == Warehouse(home).read("curated_pairs", "sample").height == md["pairs"]
    assert {"pair_id", "caption", "caption_original", "similarity", "text_heaviness", "sha256"} <= set(pairs.columns)
    card = (release.read_bytes("README.md")).decode()
    assert "NSFW NOT SCREENED" in card and "sample_copy" in card
    assert "semantic (embedding) duplicates" in card and "OFF by configuration" in card
    again = dg.materialize(assets=list(defs.assets), selection=dg.AssetSelection.groups("s6_release"),
                           instance=instance, resources=default_resources(str(home)))
    assert _md(again, "danqing_dataset")["location"] != md["location"]  # a new release, the old one untouched
    assert open_release(md["location"]).verify() == []


PRETRAIN_CONFIG = {"steps": 6, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 3, "workers": 0}


def test_continued_pretraining_and_the_raw_baseline_train_alike_and_are_compared(curated, small_bootstrap):
    """pretraining_job end to end on the release of the sample crawl: the same start, recipe and samples for the
    curated model and the raw baseline; decontamination ran; cards carry the lineage; the ablation report has every
    model on every eval set and its check ran (WARN severity: a few steps prove nothing either way)."""
    from danqing_assets.lib.checkpoints import read_card

    home, _, _, _ = curated
    instance = CURATED_INSTANCE["instance"]
    resources = default_resources(str(home))
    dg.materialize(assets=list(defs.assets), selection=dg.AssetSelection.groups("s6_release"), instance=instance,
                   resources=resources)
    selection = (dg.AssetSelection.groups("s7_pretraining")
                 | dg.AssetSelection.assets("bootstrap_checkpoint", "demo_eval_sets", "danqing_dataset",
                                            "funnel_report"))
    from danqing_assets_tests.e2e.conftest import SMALL_BOOTSTRAP

    cfg = {"ops": {"bootstrap_checkpoint": {"config": {**SMALL_BOOTSTRAP, "steps": 4, "warmup_steps": 1,
                                                       "seed_crawl_pages": 20}},
                   "demo_eval_sets": {"config": {}},
                   "siglip_checkpoint": {"config": PRETRAIN_CONFIG},
                   "raw_baseline_checkpoint": {"config": PRETRAIN_CONFIG}}}
    result = dg.materialize(assets=list(defs.assets), selection=selection, instance=instance, resources=resources,
                            run_config=cfg)
    assert result.success
    release = _md(result, "danqing_dataset")
    dec = _md(result, "training_decontamination")
    assert dec["eval_images"] > 300 and dec["curated_pairs"] == release["pairs"]
    assert dec["raw_pairs"] > dec["curated_pairs"]  # stages 3 and 4 removed pairs the raw set keeps
    cards = {a: read_card(_md(result, a)["checkpoint"]) for a in ("siglip_checkpoint", "raw_baseline_checkpoint")}
    start = read_card(_md(result, "pretrained_checkpoint")["checkpoint"])
    for asset, card in cards.items():
        lin = card["lineage"]
        assert lin["start_checkpoint"]["weights_sha256"] == start["weights"]["sha256"]
        assert lin["samples_seen"] == 6 * 16 and lin["train_steps"] == 6
        assert "dedup" in start and "dedup" not in card  # the start's descriptor centre would be stale: not carried
    assert cards["siglip_checkpoint"]["lineage"]["recipe"] == cards["raw_baseline_checkpoint"]["lineage"]["recipe"]
    assert cards["siglip_checkpoint"]["lineage"]["data"]["release_id"] == release["release_id"]
    assert cards["raw_baseline_checkpoint"]["lineage"]["data"]["examples"] == dec["raw_pairs"] - dec["raw_removed"]
    table = Warehouse(home).read("ablation_metrics", "siglip_checkpoint")
    assert set(table["model"]) == {"start", "raw_baseline", "curated"}
    assert set(table["eval_set"]) == {"zero_shot", "retrieval:test"}
    checks = [c for c in result.get_asset_check_evaluations() if c.check_name == "curated_beats_start_and_raw_baseline"]
    assert len(checks) == 1 and checks[0].severity == dg.AssetCheckSeverity.WARN
