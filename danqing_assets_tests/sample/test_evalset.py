"""The held-out eval sets: the layouts the readers expect, captions naming their images' scenes, determinism, and no
image shared with a sample crawl."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import polars as pl
import pytest

from danqing_assets.lib.evalsets import RetrievalSet, ZeroShotSet
from danqing_sample import scenes as SC
from danqing_sample.crawl import write_sample_crawl
from danqing_sample.evalset import write_demo_eval_sets

N_IMAGES, PER_CLASS = 24, 2


@pytest.fixture(scope="module")
def eval_sets(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    sets = write_demo_eval_sets(out, seed=3, retrieval_images=N_IMAGES, per_class=PER_CLASS)
    assert sets == {"retrieval": out / "retrieval", "zero_shot": out / "zero_shot"}
    return out, sets


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_retrieval_set_has_the_chinese_clip_layout_and_names_its_scenes(eval_sets):
    out, sets = eval_sets
    root = sets["retrieval"]
    assert sorted(p.name for p in root.iterdir()) == ["test_imgs.tsv", "test_scenes.tsv", "test_texts.jsonl"]
    rs = RetrievalSet(root, "test")
    images = dict(item for batch in rs.iter_image_batches() for item in batch)
    texts = rs.read_texts(known_image_ids=set(images))
    assert len(images) == N_IMAGES and not rs.skipped.counts
    assert N_IMAGES < len(texts) < 2 * N_IMAGES  # 1 or 2 captions each
    for line in (root / "test_texts.jsonl").read_text(encoding="utf-8").splitlines():
        assert set(json.loads(line)) == {"text_id", "text", "image_ids"}
    scenes = dict(line.split("\t") for line in (root / "test_scenes.tsv").read_text(encoding="utf-8").splitlines())
    assert set(scenes) == set(images) and len(set(scenes.values())) == N_IMAGES  # distinct scenes
    assert len({t.text for t in texts}) == len(texts)
    for t in texts:
        (image_id,) = t.image_ids
        scene = SC.Scene.parse(scenes[image_id])
        things, colours, backgrounds = SC.named_in(t.text)
        assert set(things) == set(scene.things) and set(colours) == set(scene.colours), (t.text, str(scene))
        assert set(backgrounds) == {scene.background}


def test_zero_shot_set_has_a_folder_per_thing_and_chinese_class_names(eval_sets):
    _, sets = eval_sets
    zs = ZeroShotSet(sets["zero_shot"])
    assert [c.dir_name for c in zs.classes] == sorted(t.key for t in SC.THINGS)
    assert {c.dir_name: c.name for c in zs.classes} == {t.key: t.name for t in SC.THINGS}
    assert zs.classnames_source == "classnames.json"
    labels = [label for batch in zs.iter_image_batches() for label, _ in batch]
    assert len(labels) == PER_CLASS * len(SC.THINGS) and not zs.skipped.counts
    assert all(labels.count(i) == PER_CLASS for i in range(len(zs.classes)))


def test_same_seed_same_bytes_other_seed_other_images(eval_sets, tmp_path):
    out, _ = eval_sets
    write_demo_eval_sets(tmp_path / "a", seed=3, retrieval_images=N_IMAGES, per_class=PER_CLASS)
    write_demo_eval_sets(tmp_path / "b", seed=4, retrieval_images=N_IMAGES, per_class=PER_CLASS)
    assert _files(tmp_path / "a") == _files(out)
    assert _files(tmp_path / "b").keys() == _files(out).keys() and _files(tmp_path / "b") != _files(out)


def test_no_eval_image_is_a_crawl_image(eval_sets, tmp_path):
    """Held out: renders from seeds no crawl stream takes. Checked against crawls with the eval seed and seed 0."""
    from PIL import Image

    out, _ = eval_sets
    rs = RetrievalSet(out / "retrieval", "test")
    eval_images = [data for batch in rs.iter_image_batches() for _, data in batch]
    eval_images += [p.read_bytes() for p in (out / "zero_shot").rglob("*.jpg")]
    eval_shas = {hashlib.sha256(d).hexdigest() for d in eval_images}
    assert len(eval_shas) == len(eval_images)
    for seed in (3, 0):
        crawl = write_sample_crawl(tmp_path / f"crawl{seed}", pages=20, seed=seed, files=1)
        crawl_shas = set(pl.read_parquet(crawl.truth_path)["image_sha256"].drop_nulls())
        assert crawl_shas and not crawl_shas & eval_shas
    assert Image.open(io.BytesIO(eval_images[0])).format == "JPEG"


def test_bad_seed():
    with pytest.raises(ValueError):
        write_demo_eval_sets("/nonexistent-never-written", seed=-1)
