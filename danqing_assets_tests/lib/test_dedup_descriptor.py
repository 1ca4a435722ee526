"""The feature-grid dedup descriptor (`lib/dedup_descriptor.py`): pooling, one-pass extraction beside the CLIP
embedding, its centre in a checkpoint, and what stage 3 compares (`decide.dedup_inputs`, text-dominated images)."""

from __future__ import annotations

import copy
import io
import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from danqing_assets.lib import reasons
from danqing_assets.lib.checkpoints import save_checkpoint_dir
from danqing_assets.lib.decide import decide_image, dedup_inputs
from danqing_assets.lib.dedup_descriptor import CENTER_NAME, FeatureGrid, fit_center
from danqing_assets.lib.embed import TINY_MODEL_CONFIG, conv_tower, load_clip, register_model_config
from danqing_assets.lib.tokenizer import open_clip_tokenizer_spec

CONV = "danqing-test-conv-dedup"
MODULE = "visual.trunk.features"


@pytest.fixture(scope="module")
def clip():
    cfg = copy.deepcopy(TINY_MODEL_CONFIG)
    register_model_config(CONV, conv_tower(cfg))
    torch.manual_seed(0)
    return load_clip(CONV, device="cpu", allow_random_init=True)


def _jpegs(n: int, seed: int = 0) -> list[bytes]:
    """Pictures of a square at different places on noise (real JPEG bytes)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = np.clip(rng.normal(120, 25, (80, 96, 3)), 0, 255).astype(np.uint8)
        y, x = 8 + (i * 13) % 40, 8 + (i * 29) % 50
        a[y : y + 24, x : x + 24] = (30 * i % 255, 200, 60)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _manual(clip, grid: FeatureGrid, images: list[bytes]) -> np.ndarray:
    """Descriptors computed by hand from the trunk's feature map (max over each cell, minus centre, unit norm)."""
    from danqing_assets.lib.embed import _decode_rgb

    x = torch.stack([clip.preprocess(_decode_rgb(b, clip.image_size)) for b in images])
    with torch.no_grad():
        fmap = clip.model.visual.trunk.forward_features(x).numpy()
    n, c, h, w = fmap.shape
    g = grid.grid
    pooled = fmap.reshape(n, c, g, h // g, g, w // g).max(axis=(3, 5)).reshape(n, -1)
    if grid.center is not None:
        pooled = pooled - grid.center
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_pooling_centring_and_refusals() -> None:
    fmap = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    fmap[1] = -fmap[1]
    grid = FeatureGrid(MODULE, 4)
    raw = grid.raw(fmap)
    assert raw.shape == (2, 3 * 16)
    # channel-major: channel 0's top-left cell is the max of its 2x2 block
    assert raw[0, 0] == fmap[0, 0, :2, :2].max().item() and raw[1, 0] == fmap[1, 0, :2, :2].max().item()
    out = FeatureGrid(MODULE, 4, center=raw[0]).finish(raw)
    assert np.all(out[0] == 0)  # all zero after centring: stays zero, never NaN
    assert np.linalg.norm(out[1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="48 values per image, the stored centre has 16"):
        FeatureGrid(MODULE, 2, center=np.ones(16, dtype=np.float32)).finish(raw)
    with pytest.raises(ValueError, match="cannot be pooled to 16x16"):
        FeatureGrid(MODULE, 16).raw(fmap)
    with pytest.raises(ValueError, match="not an \\(N, C, H, W\\) feature map"):
        grid.raw(torch.zeros(2, 5))
    for bad in ({"module": ""}, {"module": "visual..x"}, {"module": "a.b-c"}, {"grid": 0}, {"grid": True},
                {"grid": 2.0}, {"center": np.array([1.0, np.nan, 0, 0])}, {"center": np.ones(3)},
                {"max_distance": 0.0}, {"max_distance": 2.5}, {"max_distance": math.nan}):
        with pytest.raises(ValueError, match="dedup descriptor"):
            FeatureGrid(**{"module": MODULE, "grid": 2, **bad})


def test_descriptors_come_with_the_embeddings_from_one_pass(clip) -> None:
    images = _jpegs(6)
    plain = clip.embed_images(images + [b"not an image"], batch_size=4)
    assert clip.embed_images_for_dedup(images)[1] is None  # no descriptor: semantic dedup compares the embeddings
    grid = fit_center(clip, FeatureGrid(MODULE, 4, max_distance=0.2), images)
    clip.dedup = grid
    try:
        emb, desc = clip.embed_images_for_dedup(images + [b"not an image"], batch_size=4)
    finally:
        clip.dedup = None
    np.testing.assert_allclose(emb, plain, atol=1e-6, equal_nan=True)
    assert desc.shape == (7, grid.center.size) and np.isnan(desc[6]).all() and np.isnan(emb[6]).all()
    np.testing.assert_allclose(desc[:6], _manual(clip, grid, images), atol=1e-5)
    assert grid.describe() == "feature_grid 4x4 of visual.trunk.features (centred)" and grid.max_distance == 0.2


def test_fit_center_is_the_mean_raw_descriptor_of_the_images_that_decode(clip) -> None:
    images = _jpegs(5)
    grid = fit_center(clip, FeatureGrid(MODULE, 2), [b"junk", *images, b""], batch_size=2)
    from danqing_assets.lib.embed import _decode_rgb

    x = torch.stack([clip.preprocess(_decode_rgb(b, clip.image_size)) for b in images])
    with torch.no_grad():
        fmap = clip.model.visual.trunk.forward_features(x)
    expect = torch.nn.functional.adaptive_max_pool2d(fmap, 2).flatten(1).mean(0).numpy()
    np.testing.assert_allclose(grid.center, expect, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no image decoded"):
        fit_center(clip, FeatureGrid(MODULE, 2), [b"junk"])
    with pytest.raises(ValueError, match="no module 'visual.trunk.nope'"):
        fit_center(clip, FeatureGrid("visual.trunk.nope", 2), images)


def _save(clip, path, grid):
    return save_checkpoint_dir(clip, path, model_name=CONV, model_config=conv_tower(copy.deepcopy(TINY_MODEL_CONFIG)),
                               tokenizer_spec=open_clip_tokenizer_spec(CONV), lineage={}, dedup=grid)


def test_a_checkpoint_carries_its_descriptor_and_refuses_a_bad_one(clip, tmp_path) -> None:
    images = _jpegs(4)
    grid = fit_center(clip, FeatureGrid(MODULE, 4, max_distance=0.15), images)
    path = _save(clip, tmp_path / "ck", grid)
    card = json.loads((path / "card.json").read_text())
    assert card["dedup"]["descriptor"] == "feature_grid" and card["dedup"]["max_distance"] == 0.15
    assert card["dedup"]["center"]["file"] == CENTER_NAME and card["dedup"]["center"]["dim"] == grid.center.size
    again = load_clip(CONV, str(path), device="cpu")
    assert again.dedup.describe() == grid.describe() and again.dedup.max_distance == 0.15
    np.testing.assert_array_equal(again.dedup.center, grid.center)
    np.testing.assert_allclose(again.embed_images_for_dedup(images)[1], _manual(clip, grid, images), atol=1e-5)

    def broken(edit, match: str) -> None:
        bad = tmp_path / f"bad-{match[:12].replace(' ', '_')}"
        _save(clip, bad, grid)
        edit(bad)
        with pytest.raises(ValueError, match=match):
            load_clip(CONV, str(bad), device="cpu")

    def card_edit(change):
        def edit(folder):
            c = json.loads((folder / "card.json").read_text())
            change(c["dedup"])
            (folder / "card.json").write_text(json.dumps(c))
        return edit

    broken(lambda f: (f / CENTER_NAME).write_bytes((f / CENTER_NAME).read_bytes()[:-4] + b"\0\0\0\1"),
           "does not match the sha256")
    broken(lambda f: (f / CENTER_NAME).unlink(), "does not exist")
    broken(card_edit(lambda d: d["center"].update(file="../card.json")), "must name a file in the checkpoint")
    broken(card_edit(lambda d: d.update(module="visual.trunk.absent")), "no module 'visual.trunk.absent'")
    broken(card_edit(lambda d: d.update(descriptor="pixels")), "dedup must be")
    broken(card_edit(lambda d: d.update(max_distance=3)), "max_distance must be")
    broken(card_edit(lambda d: d["center"].update(dim=7)), "its card says 7")
    # a descriptor naming a module the model lacks is refused before anything is written
    with pytest.raises(ValueError, match="no module 'visual.nope'"):
        _save(clip, tmp_path / "never", FeatureGrid("visual.nope", 2))
    assert not (tmp_path / "never").exists()


def _emb_table(dedup: bool, rows: int = 3) -> pl.DataFrame:
    return pl.DataFrame({
        "image_sha256": [f"{i:064x}" for i in range(rows)],
        "embedding": [[1.0, 0.0]] * rows,
        "dedup_descriptor": ["feature_grid 4x4 of m (centred)" if dedup else None] * rows,
        "dedup_embedding": [[0.0, 1.0, 0.0]] * rows if dedup else [None] * rows,
        "dedup_max_distance": [0.15 if dedup else None] * rows,
    }, schema_overrides={"dedup_embedding": pl.List(pl.Float32), "dedup_max_distance": pl.Float64,
                         "dedup_descriptor": pl.String})


def test_dedup_inputs_pick_the_descriptor_and_its_distance() -> None:
    vec, dist, what = dedup_inputs(_emb_table(True), None)
    assert dist == 0.15 and what.startswith("feature_grid") and len(next(iter(vec.values()))) == 3
    assert dedup_inputs(_emb_table(True), 0.05)[1] == 0.05  # configured distance wins
    vec, dist, what = dedup_inputs(_emb_table(False), None)
    assert dist == 0.1 and what == "CLIP embedding" and next(iter(vec.values())) == [1.0, 0.0]
    assert dedup_inputs(None, None) == (None, 0.1, None)
    assert dedup_inputs(_emb_table(False).drop("dedup_descriptor", "dedup_embedding", "dedup_max_distance"),
                        0.2)[1:] == (0.2, "CLIP embedding")  # a table written before the descriptor columns
    mixed = pl.concat([_emb_table(True, 2), _emb_table(False, 3).slice(2)])
    with pytest.raises(ValueError, match="mixes rows"):
        dedup_inputs(mixed, None)


def test_text_dominated_images_stay_out_of_semantic_merges() -> None:
    """p0/p1 and p2/p3 are each one picture to the model; p2 is a poster (text_heaviness 0.95): it must not absorb
    the photo p3 (both would be lost, p2 to stage 4's band). pHash-distinct, so only embeddings could merge them."""
    shas = [f"{i + 1:064x}" for i in range(4)]
    pairs = pl.DataFrame({"pair_id": [f"p{i}" for i in range(4)], "warc_file": ["a"] * 4, "warc_offset": [0, 1, 2, 3],
                          "img_index": [0] * 4})
    fetched = pl.DataFrame({"pair_id": pairs["pair_id"], "image_sha256": shas})
    scores = pl.DataFrame({
        "image_sha256": shas, "width": [300] * 4, "height": [200] * 4, "shortest_edge": [200] * 4,
        "aspect_ratio": [1.5] * 4, "grey_std": [40.0] * 4, "laplacian_var_native": [2000.0] * 4,
        "blur_score": [0.8] * 4, "entropy_bits": [6.0] * 4,
        "phash": ["0000000000000000", "ffffffffffffffff", "00000000ffffffff", "ffffffff00000000"],
        "nsfw_scorer": [None] * 4, "nsfw_score": [None] * 4, "score_error": [None] * 4,
        "score_error_detail": [None] * 4, "text_heaviness": [0.1, 0.2, 0.95, 0.3],
    }, schema_overrides={"nsfw_scorer": pl.String, "nsfw_score": pl.Float64, "score_error": pl.String,
                         "score_error_detail": pl.String})
    entropy = pl.DataFrame({"pair_id": pairs["pair_id"], "caption_entropy": [3.0] * 4})
    emb = {shas[0]: [1.0, 0.0], shas[1]: [1.0, 0.0], shas[2]: [0.0, 1.0], shas[3]: [0.0, 1.0]}
    params = {"min_shortest_edge": 100, "max_aspect": 3.0, "min_grey_std": 2.0, "blur_measure": "blur_score",
              "min_blur_score": 0.25, "min_laplacian_var": 1000.0, "min_entropy_bits": 3.0, "max_nsfw_score": 0.5,
              "phash_max_hamming": 6, "semantic_max_distance": 0.1, "semantic_dedup": True,
              "semantic_max_text_heaviness": 0.8, "max_cluster_share": 1.0}

    def decided(**kw) -> dict[str, str | None]:
        out, _, _ = decide_image(pairs, fetched, scores, entropy, emb, {**params, **kw})
        return dict(zip(out["pair_id"], out["reason"]))

    assert decided() == {"p0": None, "p1": reasons.SEMANTIC_DUPLICATE, "p2": None, "p3": None}
    assert decided(semantic_max_text_heaviness=None)["p3"] == reasons.SEMANTIC_DUPLICATE  # no exception: merged
    assert decided(semantic_dedup=False) == {"p0": None, "p1": None, "p2": None, "p3": None}
    with pytest.raises(ValueError, match="re-materialize image_scores"):  # a table from before the column
        decide_image(pairs, fetched, scores.drop("text_heaviness"), entropy, emb, params)
