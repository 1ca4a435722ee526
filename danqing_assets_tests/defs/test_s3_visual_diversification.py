"""Stage 3 through its assets on small frames and real images: failing closed on missing image and NSFW scores."""

import numpy as np
import polars as pl
import pytest

from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.defs.stage_harness import (
    SNAPSHOT, fetched_rows, ledger, materialize, pair_rows, photo, store_images,
)


class NanForSecondImage:
    """An NSFW plug-in that cannot score one image (returns NaN), as a flaky model would."""

    name = "nan-for-second"

    def score(self, images):
        return [float("nan") if i == 1 else 0.01 for i, _ in enumerate(images)]


class ScoresWithClip:
    """An NSFW plug-in that asks for the CLIP model (a `clip` parameter) and scores from its image embeddings."""

    name = "scores-with-clip"

    def __init__(self, clip):
        if not hasattr(clip, "embed_images"):
            raise TypeError(f"expected a CLIP model, got {clip!r}")
        self.clip = clip

    def score(self, images):
        emb = self.clip.embed_images(images)
        return (emb[:, 0] + 1) / 2  # a probability in [0, 1] that depends on the model's embedding


@pytest.fixture
def home(tmp_path):
    wh = Warehouse(tmp_path)
    pairs = pair_rows()
    shas = store_images(tmp_path, [photo(i) for i in range(pairs.height)])
    wh.write("raw_pairs", SNAPSHOT, pairs)
    wh.write("text_refined_pairs", SNAPSHOT, pairs.with_columns(pl.col("caption").alias("caption_clean"),
                                                                 pl.lit(3).alias("noun_count")))
    wh.write("text_scores", SNAPSHOT, pairs.select("pair_id", entropy=pl.lit(0.9)))
    wh.write("fetched_images", SNAPSHOT, fetched_rows(pairs, shas))
    return tmp_path


def test_distinct_sharp_images_are_kept_and_screening_off_is_stated(home):
    result = materialize(home, "image_scores", "image_embeddings", "visually_diversified_pairs", "image_clusters")
    assert Warehouse(home).read("visually_diversified_pairs", SNAPSHOT).height == 6
    md = result.asset_materializations_for_node("visually_diversified_pairs")[0].metadata
    assert md["nsfw_screening"].value.startswith("OFF")
    assert md["semantic_dedup"].value.startswith("OFF")
    # text heaviness is scored once, here, for every image (photos: far below the text-dominated band)
    scores = Warehouse(home).read("image_scores", SNAPSHOT)
    assert scores["text_heaviness"].null_count() == 0 and scores["text_heaviness"].max() < 0.8
    assert result.asset_materializations_for_node("image_scores")[0].metadata["text_dominated_images"].value == 0


def test_missing_image_scores_reject_as_unscored(home):
    materialize(home, "image_scores", "image_embeddings")
    wh = Warehouse(home)
    ids = pair_rows()["pair_id"].to_list()
    fetched = wh.read("fetched_images", SNAPSHOT)
    stale = fetched.filter(pl.col("pair_id") == ids[0])["image_sha256"][0]
    scores = wh.read("image_scores", SNAPSHOT)
    scores = scores.filter(pl.col("image_sha256") != stale).with_columns(
        pl.when(pl.col("image_sha256") == fetched["image_sha256"][1]).then(float("nan"))
        .otherwise(pl.col("blur_score")).alias("blur_score")
    )
    wh.write("image_scores", SNAPSHOT, scores)
    materialize(home, "visually_diversified_pairs", "image_clusters")
    got = ledger(home, "image")
    assert got[ids[0]] == ("unscored", "missing score: no score row")
    assert got[ids[1]] == ("unscored", "missing score: blur_score")
    assert set(wh.read("visually_diversified_pairs", SNAPSHOT)["pair_id"]) == set(ids[2:])


def test_an_nsfw_scorer_that_cannot_score_rejects_instead_of_keeping(home):
    spec = f"{__name__}:NanForSecondImage"
    result = materialize(home, "image_scores", "image_embeddings", "visually_diversified_pairs", "image_clusters",
                         run_config={"ops": {"image_scores": {"config": {"nsfw_scorer": spec}}}})
    wh = Warehouse(home)
    scores = wh.read("image_scores", SNAPSHOT)
    assert scores["nsfw_scorer"].to_list() == ["nan-for-second"] * 6
    assert scores["nsfw_score"].null_count() == 1
    ids = pair_rows()["pair_id"].to_list()
    assert ledger(home, "image") == {ids[1]: ("unscored", "missing score: nsfw_score (nan-for-second)")}
    md = result.asset_materializations_for_node("image_scores")[0].metadata
    assert md["nsfw_unscored_images"].value == 1
    md = result.asset_materializations_for_node("visually_diversified_pairs")[0].metadata
    assert md["nsfw_screening"].value == "on (nan-for-second)"
    assert np.isclose(md["rejection_rate"].value, 1 / 6, atol=1e-6)


def test_a_degenerate_embedding_model_stops_the_step_instead_of_merging_everything(tmp_path):
    """Sixty distinct images embedded (as a random or undertrained model does) at nearly one point: deciding would
    drop 59 of them as semantic duplicates; the step fails and writes nothing."""
    wh = Warehouse(tmp_path)
    n = 60
    pairs = pair_rows([f"第{i}张图片里有一只红色的小猫和一棵绿色的大树" for i in range(n)])
    shas = store_images(tmp_path, [photo(100 + i, size=200) for i in range(n)])
    wh.write("raw_pairs", SNAPSHOT, pairs)
    wh.write("text_refined_pairs", SNAPSHOT, pairs.with_columns(pl.col("caption").alias("caption_clean"),
                                                                 pl.lit(3).alias("noun_count")))
    wh.write("text_scores", SNAPSHOT, pairs.select("pair_id", entropy=pl.lit(0.9)))
    wh.write("fetched_images", SNAPSHOT, fetched_rows(pairs, shas))
    materialize(tmp_path, "image_scores")
    rng = np.random.default_rng(0)
    base = rng.normal(size=32)
    emb = base + rng.normal(scale=1e-3, size=(n, 32))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    wh.write("image_embeddings", SNAPSHOT, pl.DataFrame(
        {"snapshot": [SNAPSHOT] * n, "image_sha256": shas, "model": ["collapsed"] * n,
         "embedding": pl.Series(emb.astype(np.float32).tolist(), dtype=pl.List(pl.Float32))}))
    result = materialize(tmp_path, "visually_diversified_pairs", "image_clusters", raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "looks degenerate" in str(failure.event_specific_data.error)
    assert not wh.exists("visually_diversified_pairs", SNAPSHOT)
    ok = materialize(tmp_path, "visually_diversified_pairs", "image_clusters",
                     run_config={"ops": {"visually_diversified_pairs": {"config": {"semantic_dedup": False}}}})
    assert ok.success and wh.read("visually_diversified_pairs", SNAPSHOT).height == n


def test_a_plugin_that_asks_for_clip_gets_the_configured_model(home):
    """Before: a `module:Class` plug-in with a `clip` parameter was built with clip=None."""
    from danqing_assets.defs.common.resources import ClipModelResource
    from danqing_assets.lib.embed import TINY_MODEL_NAME
    from danqing_assets.lib.image_store import LocalImageStore

    clip = ClipModelResource(model_name=TINY_MODEL_NAME, allow_random_init=True, device="cpu")
    spec = f"{__name__}:ScoresWithClip"
    result = materialize(home, "image_scores", run_config={"ops": {"image_scores": {"config": {"nsfw_scorer": spec}}}},
                         clip=clip)
    scores = Warehouse(home).read("image_scores", SNAPSHOT)
    assert scores["nsfw_scorer"].to_list() == ["scores-with-clip"] * 6
    model = clip.load()  # the resource's cached model: the one the plug-in was given
    store = LocalImageStore(Warehouse(home).home / "images")
    want = (model.embed_images([store.get(s) for s in scores["image_sha256"]])[:, 0] + 1) / 2
    assert np.allclose(scores["nsfw_score"].to_numpy(), want, atol=1e-5)
    assert scores["nsfw_score"].null_count() == 0
    md = result.asset_materializations_for_node("image_scores")[0].metadata
    assert md["nsfw_screening"].value == "on (scores-with-clip)"


def test_a_plugin_that_asks_for_clip_without_a_model_fails_before_scoring(home):
    spec = f"{__name__}:ScoresWithClip"
    result = materialize(home, "image_scores", run_config={"ops": {"image_scores": {"config": {"nsfw_scorer": spec}}}},
                         raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "needs the CLIP model, but the `clip` resource is 'none'" in str(failure.event_specific_data.error)
    assert not Warehouse(home).exists("image_scores", SNAPSHOT)
