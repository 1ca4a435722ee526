"""pretrain: training sets read from a real release (local and on a real local S3), decontamination against eval
images (a re-encoded, resized eval image is found; distinct images are not), continued training from a checkpoint
directory that open_clip loads afterwards, and the recipe key that makes two runs comparable."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from danqing_assets.lib.checkpoints import load_checkpoint_dir, read_card, save_checkpoint_dir
from danqing_assets.lib.embed import chinese_clip_config, register_model_config
from danqing_assets.lib.evalsets import write_retrieval_set, write_zero_shot_set
from danqing_assets.lib.export import write_release
from danqing_assets.lib.pretrain import (
    PretrainError,
    continue_training,
    decontaminate,
    eval_image_hashes,
    raw_examples,
    recipe_key,
    release_examples,
)
from danqing_assets.lib.tokenizer import ChineseTokenizer
from danqing_assets.lib.train import TrainConfig

NAME = "danqing-test-pretrain-clip"
CONFIG = chinese_clip_config(embed_dim=32, image_size=32, patch_size=8, vision_layers=2, vision_width=64,
                             text_layers=2, text_width=64, head_width=32, context_length=24)


def _picture(i: int, size=(96, 80)) -> Image.Image:
    """A distinct structured picture per i (random blocks; pHash tells them apart)."""
    rng = np.random.default_rng(1000 + i)
    blocks = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.NEAREST)


def _jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _release(root, n: int = 10, extra: list[bytes] = (), **kw):
    images = [_jpeg(_picture(i)) for i in range(n)] + list(extra)
    store = {hashlib.sha256(d).hexdigest(): d for d in images}
    df = pl.DataFrame({
        "pair_id": [f"p{i:03d}" for i in range(len(images))],
        "image_url": [f"https://img.example.cn/{i}.jpg" for i in range(len(images))],
        "page_url": [f"https://www.example.cn/{i}.html" for i in range(len(images))],
        "caption": [f"第{i}张红色的圆球" for i in range(len(images))],
        "caption_original": [f"第{i}張紅色的圓球" for i in range(len(images))],
        "snapshot": ["s1"] * len(images),
        "width": [96] * len(images), "height": [80] * len(images),
        "sha256": [hashlib.sha256(d).hexdigest() for d in images],
    })
    write_release(root, "rel-1", df, store.__getitem__, card={"title": "t", "funnel": "-", "filters": [],
                                                               "rebuild": []},
                  created_at=datetime(2026, 1, 1, tzinfo=UTC), fsync=False, **kw)
    return df, store


def test_release_examples_read_every_pair_with_its_id_and_caption(tmp_path) -> None:
    df, store = _release(tmp_path, shard_max_samples=4)
    ts = release_examples(str(tmp_path / "rel-1"))
    assert sorted(ts.ids) == df["pair_id"].to_list() and len(ts.description["shards"]) == 3
    by_id = {pid: ts.get(i) for i, pid in enumerate(ts.ids)}
    row = df.row(3, named=True)
    data, caption = by_id[row["pair_id"]]
    assert caption == row["caption"] and hashlib.sha256(data).hexdigest() == row["sha256"] == ts.sha256[
        ts.ids.index(row["pair_id"])]


def test_an_incomplete_or_tampered_release_is_refused(tmp_path) -> None:
    _release(tmp_path, shard_max_samples=4)
    shard = next((tmp_path / "rel-1" / "wds").glob("shard-*.tar"))
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # same size, one byte of the first image changed
    shard.write_bytes(bytes(data))
    with pytest.raises(PretrainError, match="differs from the manifest"):
        release_examples(str(tmp_path / "rel-1"))
    (tmp_path / "rel-1" / "_SUCCESS").unlink()
    with pytest.raises(PretrainError, match="incomplete"):
        release_examples(str(tmp_path / "rel-1"))


def test_a_release_on_s3_is_cached_locally_and_verified(tmp_path, local_s3) -> None:
    _, make_client = local_s3
    client = make_client()
    client.create_bucket(Bucket="rel")
    df, _ = _release("s3://rel/danqing", s3_client=client, staging_dir=tmp_path, shard_max_samples=4)
    cache = tmp_path / "cache"
    ts = release_examples("s3://rel/danqing/rel-1", cache_dir=cache, s3_client=client)
    assert sorted(ts.ids) == df["pair_id"].to_list()
    assert sorted(p.name for p in (cache / "rel-1" / "wds").glob("*.tar")) == ts.description["shards"]
    with pytest.raises(PretrainError, match="cache directory"):
        release_examples("s3://rel/danqing/rel-1", s3_client=client)


def _eval_sets(root, images: list[Image.Image]):
    zs = write_zero_shot_set(root / "zs", {"ball": "圆球", "box": "箱子"},
                             {"ball": [_jpeg(images[0])], "box": [_jpeg(images[1])]})
    rt = root / "rt"
    write_retrieval_set(rt, "test", {0: _jpeg(images[2])}, [(0, "一个红色的圆球", [0])])
    return zs, rt


def test_decontamination_finds_re_encoded_resized_eval_images_only(tmp_path) -> None:
    evals_src = [_picture(100 + k) for k in range(3)]
    zs, rt = _eval_sets(tmp_path, evals_src)
    evals = eval_image_hashes([zs], [(rt, "test")])
    assert len(evals) == 3 and {e.eval_set for e in evals} == {"zs", "rt:test"}
    # the training set: 10 distinct pictures + eval picture 0 resized and re-encoded at low quality + eval picture 2
    # cropped by 2 pixels
    copies = [_jpeg(evals_src[0].resize((150, 125)), quality=60),
              _jpeg(evals_src[2].crop((2, 2, 94, 78)).resize((96, 80)), quality=80)]
    _release(tmp_path / "r", extra=copies)
    ts = release_examples(str(tmp_path / "r" / "rel-1"))
    d = decontaminate(ts, evals)
    assert sorted(r["pair_id"] for r in d.removed) == ["p010", "p011"]
    assert {r["eval_set"] for r in d.removed} == {"zs", "rt:test"} and all(r["hamming"] <= 6 for r in d.removed)
    assert len(d.keep) == 10 and d.unhashable == 0
    kept = ts.subset(d.keep)
    assert "p010" not in kept.ids and len(kept) == 10 and kept.get(0) == ts.get(d.keep[0])
    exact = decontaminate(ts, evals, max_hamming=0)  # a tighter radius removes a subset, each at distance 0
    assert {r["pair_id"] for r in exact.removed} < {r["pair_id"] for r in d.removed}
    assert all(r["hamming"] == 0 for r in exact.removed)
    with pytest.raises(ValueError, match="max_hamming"):
        decontaminate(ts, evals, max_hamming=-1)


def test_raw_examples_use_stored_phashes_and_read_images_lazily(tmp_path) -> None:
    images = [_jpeg(_picture(i)) for i in range(4)]
    store = {hashlib.sha256(d).hexdigest(): d for d in images}
    reads: list[str] = []

    def get(sha):
        reads.append(sha)
        return store[sha]

    pairs = pl.DataFrame({"pair_id": ["b", "a", "c", "d"], "caption": ["乙", "甲", "丙", "丁"],
                          "image_sha256": list(store), "phash": [None, "ffffffffffffffff", None, None]})
    ts = raw_examples(pairs, get)
    assert ts.ids == ["a", "b", "c", "d"] and reads == []
    assert ts.get(0) == (images[1], "甲")
    with pytest.raises(PretrainError, match="caption"):
        raw_examples(pairs.drop("caption"), get)
    d = decontaminate(ts, [])
    assert d.removed == [] and len(d.keep) == 4


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory):
    import open_clip

    register_model_config(NAME, CONFIG)
    torch.manual_seed(0)
    model = open_clip.create_model(NAME)
    out = tmp_path_factory.mktemp("start") / "ckpt"
    return save_checkpoint_dir(model, out, model_name=NAME, model_config=CONFIG,
                               tokenizer_spec=ChineseTokenizer(context_length=24).spec(),
                               lineage={"asset": "test-start"})


def _cfg(**kw) -> TrainConfig:
    base = dict(total_steps=4, batch_size=8, lr=1e-3, warmup_steps=1, workers=0, seed=3, checkpoint_every=2,
                log_every=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_continued_training_writes_a_loadable_checkpoint_with_its_lineage(tmp_path, start_dir) -> None:
    import open_clip

    _release(tmp_path / "r", n=24)
    ts = release_examples(str(tmp_path / "r" / "rel-1"))
    res = continue_training(start_dir, ts, tmp_path / "out", tmp_path / "work", train_config=_cfg(),
                            lineage={"asset": "siglip_checkpoint"})
    card = read_card(res.checkpoint)
    lin = card["lineage"]
    assert lin["start_checkpoint"]["weights_sha256"] == read_card(start_dir)["weights"]["sha256"]
    assert lin["data"]["release_id"] == "rel-1" and lin["data"]["examples"] == 24
    assert lin["samples_seen"] == 32 and lin["train_steps"] == 4 and lin["asset"] == "siglip_checkpoint"
    assert card["weights"]["sha256"] != read_card(start_dir)["weights"]["sha256"]  # it did train
    # open_clip alone loads it (architecture from open_clip_config.json, weights from the directory)
    oc = open_clip.create_model(f"local-dir:{res.checkpoint}")
    ours = load_checkpoint_dir(res.checkpoint).model
    for (k, a), (_, b) in zip(oc.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(PretrainError, match="empty"):
        continue_training(start_dir, ts.subset([]), tmp_path / "o2", tmp_path / "w2", train_config=_cfg(),
                          lineage={})


def test_recipe_key_ignores_plumbing_but_not_the_recipe_or_the_start() -> None:
    start = {"weights_sha256": "a" * 64}
    assert recipe_key(_cfg(), start) == recipe_key(_cfg(workers=3, log_every=7, checkpoint_every=1), start)
    assert recipe_key(_cfg(), start) != recipe_key(_cfg(lr=2e-3), start)
    assert recipe_key(_cfg(), start) != recipe_key(_cfg(), {"weights_sha256": "b" * 64})
    assert json.loads(json.dumps(recipe_key(_cfg(), start)))  # a plain string
