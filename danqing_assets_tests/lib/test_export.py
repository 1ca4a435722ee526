"""export: release layout, shard caps, byte-identical re-runs, no overwrite, no half release, S3 mode, the card, and
open_clip's own WebDataset loader reading the shards as written. Real images (Pillow), real files, a real S3 (moto)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
from argparse import Namespace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from danqing_assets.lib import export
from danqing_assets.lib.export import (
    DECODE_ERROR,
    LOAD_ERROR,
    IncompleteReleaseError,
    ReleaseExistsError,
    open_release,
    read_manifest,
    write_release,
)

WHEN = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
CARD = {
    "title": "DanQing rebuild test",
    "funnel": "| step | pairs |\n|---|---|\n| raw | 100 |\n| released | 12 |",
    "filters": [
        {"name": "caption_length", "status": "on", "detail": "5-60 jieba words"},
        {"name": "domain_blacklist", "status": "off", "detail": "no list configured"},
        {"name": "text_nsfw_words", "status": "on"},
        {"name": "image_nsfw", "status": "off", "detail": "no detector weights"},
    ],
    "rebuild": ["danqing materialize --select 'export*' --partition CC-MAIN-2024-10"],
}


def _color(i: int) -> tuple[int, int, int]:
    return ((i * 53) % 256, (255 - i * 29) % 256, (i * 101 + 40) % 256)


def _image(i: int, *, fmt: str = "JPEG", noise: int = 0, size: tuple[int, int] = (48, 40)) -> bytes:
    """A solid colour (identifies sample i after decoding) or, with noise > 0, random pixels of that many rows."""
    if noise:
        arr = np.random.default_rng(i).integers(0, 256, (noise, size[0], 3), dtype=np.uint8)
        im = Image.fromarray(arr)
    else:
        im = Image.new("RGB", size, _color(i))
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _pairs(images: list[bytes]) -> tuple[pl.DataFrame, dict[str, bytes]]:
    store = {hashlib.sha256(d).hexdigest(): d for d in images}
    shas = [hashlib.sha256(d).hexdigest() for d in images]
    n = len(images)
    df = pl.DataFrame({
        "pair_id": [hashlib.blake2b(f"r{i}".encode(), digest_size=8).hexdigest() for i in range(n)],
        "image_url": [f"https://img.example.cn/{i}.jpg" for i in range(n)],
        "page_url": [f"https://www.example.cn/{i}.html" for i in range(n)],
        "caption": [f"第{i}号图片的简体说明" for i in range(n)],
        "caption_original": [f"第{i}號圖片的說明_網站" for i in range(n)],
        "snapshot": ["CC-MAIN-2024-10" if i % 3 else "CC-MAIN-2024-18" for i in range(n)],
        "width": [48] * n,
        "height": [40] * n,
        "sha256": shas,
        "clip_score": [1.0 + i / 100 for i in range(n)],
        "nsfw_score": [float("nan") if i == 0 else i / 1000 for i in range(n)],
    })
    return df, store


def _write(root, release_id="rel-1", df=None, store=None, **kw):
    if df is None:
        df, store = _pairs([_image(i) for i in range(12)])
    kw.setdefault("card", CARD)
    kw.setdefault("created_at", WHEN)
    kw.setdefault("fsync", False)
    return write_release(root, release_id, df, store.__getitem__, **kw)


def _tar_samples(path: str | Path) -> list[dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return [{"__key__": k, **v} for k, v in samples.items()]


def test_release_layout_contents_and_round_trip(tmp_path: Path) -> None:
    df, store = _pairs([_image(i) for i in range(12)])
    m = _write(tmp_path, df=df, store=store, shard_max_samples=5, fsync=True)
    rel = tmp_path / "rel-1"
    files = sorted(p.relative_to(rel).as_posix() for p in rel.rglob("*") if p.is_file())
    assert files == ["README.md", "_SUCCESS", "manifest.json", "parquet/part-00000.parquet",
                     "parquet/part-00001.parquet", "parquet/part-00002.parquet", "wds/shard-00000.tar",
                     "wds/shard-00001.tar", "wds/shard-00002.tar", "wds/sizes.json"]
    assert sorted(os.listdir(tmp_path)) == ["rel-1"]  # the temporary folder is gone
    assert m.total_pairs == 12 and [s.samples for s in m.shards] == [5, 5, 2]
    assert m.wds_pattern == "wds/shard-{00000..00002}.tar"
    assert m.columns[:9] == list(export.REQUIRED_COLUMNS) and m.score_columns == ["clip_score", "nsfw_score"]
    assert m.snapshots == {"CC-MAIN-2024-10": 8, "CC-MAIN-2024-18": 4} and m.image_formats == {"jpg": 12}
    assert json.loads((rel / "wds" / "sizes.json").read_text()) == {
        "shard-00000.tar": 5, "shard-00001.tar": 5, "shard-00002.tar": 2}

    release = open_release(rel)
    assert release.manifest == m == read_manifest(rel) and release.verify() == []
    got = release.read_pairs()
    want = df.sort("pair_id").with_columns(pl.col("nsfw_score").fill_nan(None))
    assert got.columns == want.columns and got.to_dicts() == want.to_dicts()

    # tar: sorted members per sample, fixed headers; json = the row; txt = caption; image bytes unchanged
    by_id = {r["pair_id"]: r for r in want.to_dicts()}
    keys_in_order = []
    for shard, part in zip(release.wds_urls(), release.parquet_urls(), strict=True):
        with tarfile.open(shard, "r:") as tar:
            members = tar.getmembers()
        assert all(t.mtime == 0 and t.uid == 0 and t.gid == 0 and t.uname == "" and t.mode == 0o644 for t in members)
        names = [t.name for t in members]
        keys = dict.fromkeys(n.split(".")[0] for n in names)
        assert names == [f"{k}.{e}" for k in keys for e in ("jpg", "json", "txt")]
        samples = _tar_samples(shard)
        assert [s["__key__"] for s in samples] == pl.read_parquet(part)["pair_id"].to_list()  # aligned with parquet
        for s in samples:
            row = by_id[s["__key__"]]
            meta = json.loads(s["json"])
            assert meta == {**row, "image_ext": "jpg", "image_reencoded_from": None}
            assert s["txt"].decode() == row["caption"]
            assert s["jpg"] == store[row["sha256"]]
            keys_in_order.append(s["__key__"])
    assert keys_in_order == sorted(by_id)
    assert json.loads((rel / "_SUCCESS").read_text())["release_id"] == "rel-1"

    # the project's own trainer reads the shards too
    from danqing_assets.lib.train_data import TarShardDataset

    ds = TarShardDataset(release.wds_urls())
    assert len(ds) == 12 and ds.get(0) == (store[by_id[ds.keys[0]]["sha256"]], by_id[ds.keys[0]]["caption"])


def test_shards_capped_by_sample_count(tmp_path: Path) -> None:
    df, store = _pairs([_image(i) for i in range(10)])
    m = _write(tmp_path, df=df, store=store, shard_max_samples=4)
    assert [s.samples for s in m.shards] == [4, 4, 2]
    release = open_release(tmp_path / "rel-1")
    assert [len(_tar_samples(p)) for p in release.wds_urls()] == [4, 4, 2]
    assert [pl.read_parquet(p).height for p in release.parquet_urls()] == [4, 4, 2]


def test_shards_capped_by_bytes(tmp_path: Path) -> None:
    images = [_image(i, noise=24 + (i % 4) * 8) for i in range(14)]  # noisy JPEGs, ~2-3 KB each
    images.append(_image(99, noise=200, size=(200, 200)))  # one sample larger than the cap (~37 KB)
    df, store = _pairs(images)
    cap = 20_480
    m = _write(tmp_path, df=df, store=store, shard_max_bytes=cap, shard_max_samples=1000)
    big_key = df.filter(pl.col("sha256") == hashlib.sha256(images[-1]).hexdigest())["pair_id"].item()
    sizes = [(s.samples, s.wds.bytes) for s in m.shards]
    assert len(m.shards) >= 3 and sum(n for n, _ in sizes) == 15
    for s in m.shards:
        path = tmp_path / "rel-1" / s.wds.path
        assert path.stat().st_size == s.wds.bytes and s.wds.bytes % tarfile.RECORDSIZE == 0
        if s.first_key == big_key:
            assert s.samples == 1 and s.wds.bytes > cap  # alone in its shard
        else:
            assert s.wds.bytes <= cap
    # greedy: each shard but the last would have passed the cap with the next sample
    assert any(s.samples > 1 for s in m.shards)


def test_byte_identical_on_rerun_to_another_root(tmp_path: Path) -> None:
    df, store = _pairs([_image(i, noise=8) for i in range(9)] + [_image(9, fmt="GIF")])
    a = _write(tmp_path / "a", df=df, store=store, shard_max_samples=4)
    b = _write(tmp_path / "b", df=df.sample(fraction=1.0, shuffle=True, seed=7), store=store, shard_max_samples=4,
               image_workers=3)  # input order and image threads change nothing
    assert a == b
    for rel in ("manifest.json", "README.md", "_SUCCESS", "wds/sizes.json",
                *(s.wds.path for s in a.shards), *(s.parquet.path for s in a.shards)):
        assert (tmp_path / "a" / "rel-1" / rel).read_bytes() == (tmp_path / "b" / "rel-1" / rel).read_bytes(), rel


def test_refuses_to_overwrite_a_release(tmp_path: Path) -> None:
    _write(tmp_path, shard_max_samples=5)
    before = {p: p.read_bytes() for p in (tmp_path / "rel-1").rglob("*") if p.is_file()}
    df, store = _pairs([_image(i + 50) for i in range(3)])
    with pytest.raises(ReleaseExistsError, match="never overwritten"):
        _write(tmp_path, df=df, store=store)
    assert {p: p.read_bytes() for p in (tmp_path / "rel-1").rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["rel-1"]
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ValueError, match="invalid release id"):
            _write(tmp_path, release_id=bad)


@pytest.mark.parametrize("where", ["tar_add", "parquet", "interrupt"])
def test_no_half_release_after_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    _write(tmp_path, release_id="rel-1")
    df, store = _pairs([_image(i + 20) for i in range(12)])
    get = store.__getitem__
    if where == "tar_add":  # fails in the second shard, after the first one is complete
        calls = {"n": 0}
        real_add = export._TarShard.add

        def add(self, members):
            calls["n"] += 1
            if calls["n"] == 7:
                raise OSError("disk full")
            return real_add(self, members)

        monkeypatch.setattr(export._TarShard, "add", add)
    elif where == "parquet":
        monkeypatch.setattr(pl.DataFrame, "write_parquet", lambda *a, **k: (_ for _ in ()).throw(OSError("no space")))
    else:
        def get(sha: str) -> bytes:  # a BaseException from the image store is not a "missing image"
            if sha == df["sha256"][8]:
                raise KeyboardInterrupt
            return store[sha]

    with pytest.raises((OSError, KeyboardInterrupt)):
        write_release(tmp_path, "rel-2", df, get, card=CARD, shard_max_samples=5, fsync=False)
    assert sorted(os.listdir(tmp_path)) == ["rel-1"]  # nothing else, not even a hidden temporary folder
    assert open_release(tmp_path / "rel-1").verify() == []
    with pytest.raises(FileNotFoundError):
        open_release(tmp_path / "rel-2")


def test_unreadable_images_are_reported_not_dropped_silently(tmp_path: Path) -> None:
    images = [_image(i) for i in range(6)]
    images[1] = _image(1, fmt="PNG")
    images[2] = _image(2, fmt="GIF")
    images[3] = b"GIF89a but truncated"  # not decodable: cannot be re-encoded
    df, store = _pairs(images)
    gone = df["sha256"][4]
    del store[gone]  # get_image raises KeyError
    m = _write(tmp_path, df=df, store=store)
    ids = dict(zip(df["sha256"], df["pair_id"], strict=True))
    bad = hashlib.sha256(images[3]).hexdigest()
    by_reason = {r["reason"]: r for r in m.missing_images}
    assert len(m.missing_images) == 2 and set(by_reason) == {LOAD_ERROR, DECODE_ERROR}
    assert by_reason[LOAD_ERROR] == {"pair_id": ids[gone], "sha256": gone, "reason": LOAD_ERROR,
                                     "detail": f"KeyError: '{gone}'"}
    assert by_reason[DECODE_ERROR]["pair_id"] == ids[bad] and by_reason[DECODE_ERROR]["sha256"] == bad
    assert sorted(m.missing_pair_ids) == sorted([ids[gone], ids[bad]])
    assert m.total_pairs == 4 and m.image_formats == {"jpg": 3, "png": 1} and m.reencoded == {"gif": 1}
    release = open_release(tmp_path / "rel-1")
    assert set(release.read_pairs()["pair_id"]) == set(df["pair_id"]) - set(m.missing_pair_ids)
    samples = {s["__key__"]: s for s in _tar_samples(release.wds_urls()[0])}
    assert set(samples) == set(release.read_pairs()["pair_id"])
    png = samples[ids[hashlib.sha256(images[1]).hexdigest()]]
    assert png["png"] == images[1] and "jpg" not in png  # stored as it is, under its own extension
    gif = samples[ids[hashlib.sha256(images[2]).hexdigest()]]
    assert Image.open(io.BytesIO(gif["jpg"])).format == "JPEG"
    assert json.loads(gif["json"])["image_reencoded_from"] == "gif"
    assert "2 (`missing_images`" in (tmp_path / "rel-1" / "README.md").read_text()


def test_nothing_readable_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    df, _ = _pairs([_image(i) for i in range(3)])
    with pytest.raises(export.ReleaseError, match="no image"):
        write_release(tmp_path, "r", df, lambda sha: {}[sha], card=CARD, fsync=False)
    assert os.listdir(tmp_path) == []


def test_input_validation(tmp_path: Path) -> None:
    df, store = _pairs([_image(i) for i in range(3)])
    with pytest.raises(ValueError, match="no dots"):
        _write(tmp_path, df=df.with_columns(pl.col("pair_id").str.replace(r"^.", "a.")), store=store)
    with pytest.raises(ValueError, match="unique"):
        _write(tmp_path, df=pl.concat([df, df.head(1)]), store=store)
    with pytest.raises(ValueError, match="lacks columns"):
        _write(tmp_path, df=df.drop("caption_original"), store=store)
    with pytest.raises(ValueError, match="non-empty"):
        _write(tmp_path, df=df.with_columns(pl.lit(" ").alias("caption")), store=store)
    with pytest.raises(ValueError, match="unknown"):
        _write(tmp_path, df=df, store=store, card={**CARD, "licence": "mine"})
    with pytest.raises(ValueError, match="reserved"):
        _write(tmp_path, df=df.with_columns(pl.lit("x").alias("image_ext")), store=store)
    with pytest.raises(ValueError, match="status"):
        _write(tmp_path, df=df, store=store, card={**CARD, "filters": [{"name": "x", "status": "skipped"}]})
    assert os.listdir(tmp_path) == []


def test_card_states_off_filters_nsfw_warning_licence_and_rebuild(tmp_path: Path) -> None:
    _write(tmp_path)
    text = (tmp_path / "rel-1" / "README.md").read_text()
    head = text.split("## Contents")[0]
    assert "> [!WARNING]" in head and "NSFW NOT SCREENED" in head and "`image_nsfw` OFF" in head
    assert "Filters OFF in this release:** domain_blacklist, image_nsfw" in head
    assert "| `domain_blacklist` | **OFF** | no list configured |" in text
    assert "| `image_nsfw` | **OFF** | no detector weights |" in text
    assert "| `caption_length` | ran | 5-60 jieba words |" in text
    assert "| image-text pairs | 12 |" in text and "| released | 12 |" in text  # counts and the caller's funnel
    assert "CC-BY-4.0" in text and "CC-BY-NC-4.0" in text and "remain the property of their owners" in text
    assert "inherits the rights" in text
    assert "danqing materialize --select 'export*' --partition CC-MAIN-2024-10" in text
    assert "shard-{00000..00000}.tar" in text

    screened = {**CARD, "filters": [{"name": "image_nsfw", "status": "on"}, {"name": "sensitive", "status": "on",
                                                                             "nsfw": True}]}
    m = read_manifest(tmp_path / "rel-1")
    card = export.render_card(screened, m)
    assert "NSFW NOT SCREENED" not in card and "Filters OFF" not in card
    # no NSFW screen listed at all is unscreened too; so is one of two screens off
    assert "no NSFW filter was listed" in export.render_card({**CARD, "filters": []}, m)
    half = {**CARD, "filters": [{"name": "text_nsfw", "status": "on"}, {"name": "img", "status": "off", "nsfw": True}]}
    assert "NSFW NOT SCREENED" in export.render_card(half, m)


def test_s3_release_objects_manifest_last_and_refusals(tmp_path: Path, local_s3) -> None:
    _, make_client = local_s3
    client = make_client()
    client.create_bucket(Bucket="releases")
    puts: list[str] = []

    def record(params, **_):
        puts.append(params["Key"])

    client.meta.events.register("before-parameter-build.s3.PutObject", record)
    client.meta.events.register("before-parameter-build.s3.CompleteMultipartUpload", record)
    df, store = _pairs([_image(i) for i in range(12)])
    m = _write("s3://releases/danqing/v1", df=df, store=store, s3_client=client, shard_max_samples=5,
               staging_dir=tmp_path)
    base = "danqing/v1/rel-1/"
    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket="releases")["Contents"])
    assert listed == sorted(base + rel for rel in [
        "README.md", "_SUCCESS", "manifest.json", "wds/sizes.json",
        *(s.wds.path for s in m.shards), *(s.parquet.path for s in m.shards)])
    assert puts[-1] == base + "_SUCCESS" and puts[-2] == base + "manifest.json" and len(puts) == len(listed)
    assert os.listdir(tmp_path) == []  # the staging folder is gone

    # same bytes as a local release of the same input
    local = _write(tmp_path / "local", df=df, store=store, shard_max_samples=5)
    assert local == m
    release = open_release("s3://releases/danqing/v1/rel-1", s3_client=client)
    assert release.manifest == m and release.verify() == []
    assert release.read_pairs().to_dicts() == open_release(tmp_path / "local" / "rel-1").read_pairs().to_dicts()
    assert release.wds_pattern() == "pipe:aws s3 cp s3://releases/danqing/v1/rel-1/wds/shard-{00000..00002}.tar -"

    with pytest.raises(ReleaseExistsError, match="never overwritten"):
        _write("s3://releases/danqing/v1", df=df, store=store, s3_client=client, replace_incomplete=True)

    # a failed attempt: no _SUCCESS, its objects cleaned up; a crashed one (objects left) is refused, then replaced
    def flaky(sha: str) -> bytes:
        if sha == df.sort("pair_id")["sha256"][7]:
            raise KeyboardInterrupt
        return store[sha]

    with pytest.raises(KeyboardInterrupt):
        write_release("s3://releases/danqing/v1", "rel-2", df, flaky, card=CARD, s3_client=client,
                      shard_max_samples=5)
    assert "Contents" not in client.list_objects_v2(Bucket="releases", Prefix="danqing/v1/rel-2/")
    client.put_object(Bucket="releases", Key="danqing/v1/rel-2/wds/shard-00000.tar", Body=b"partial")
    with pytest.raises(IncompleteReleaseError):
        open_release("s3://releases/danqing/v1/rel-2", s3_client=client)
    with pytest.raises(ReleaseExistsError, match="incomplete"):
        _write("s3://releases/danqing/v1", "rel-2", df=df, store=store, s3_client=client)
    m2 = _write("s3://releases/danqing/v1", "rel-2", df=df, store=store, s3_client=client, replace_incomplete=True)
    assert open_release("s3://releases/danqing/v1/rel-2", s3_client=client).verify() == [] and m2.total_pairs == 12


def test_open_clip_training_loader_reads_the_shards(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from open_clip_train.data import get_dataset_size, get_wds_dataset
    from torchvision import transforms

    n = 12
    df, store = _pairs([_image(i) for i in range(n)])
    df = df.with_columns(pl.Series("caption", [f"第{i}号图片" for i in range(n)]))
    m = _write(tmp_path, df=df, store=store, shard_max_samples=6)
    release = open_release(tmp_path / "rel-1")
    pattern = release.wds_pattern()
    assert pattern.endswith("wds/shard-{00000..00001}.tar")
    assert get_dataset_size(pattern) == (n, 2)  # from sizes.json

    ctx = 16

    def tokenizer(text: str) -> torch.Tensor:  # invertible: code points, zero padded
        codes = [ord(c) for c in text[:ctx]]
        return torch.tensor([codes + [0] * (ctx - len(codes))])

    preprocess = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    args = Namespace(train_data=pattern, val_data=None, train_num_samples=m.total_pairs, val_num_samples=None,
                     batch_size=4, workers=0, seed=0, world_size=1, rank=0, dataset_resampled=False,
                     train_data_upsampling_factors=None)
    info = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    assert info.dataloader.num_samples == n and info.dataloader.num_batches == math.ceil(n / 4)
    seen: dict[str, torch.Tensor] = {}
    for images, texts in info.dataloader:
        assert images.shape[1:] == (3, 16, 16) and texts.shape[1:] == (ctx,)
        for img, tok in zip(images, texts, strict=True):
            caption = "".join(chr(c) for c in tok.tolist() if c)
            assert caption not in seen
            seen[caption] = img
    assert sorted(seen) == sorted(df["caption"])  # every sample once, caption intact
    for i in range(n):  # and paired with its own image: the solid colour of sample i
        mean = seen[f"第{i}号图片"].mean(dim=(1, 2)).numpy() * 255
        assert np.abs(mean - np.array(_color(i))).max() < 6, (i, mean)


def test_a_writer_killed_outright_leaves_a_folder_the_next_release_removes(tmp_path: Path) -> None:
    """A release process killed by SIGKILL cannot remove its hidden temporary folder; the next release written to
    the same root removes it (its owner no longer runs), and never touches one whose owner still runs."""
    import subprocess
    import sys

    from danqing_assets.lib.tempfiles import temp_name

    code = ("import os, sys; from pathlib import Path; from danqing_assets.lib.tempfiles import temp_name; "
            "d = Path(sys.argv[1]) / temp_name('rel-0.incomplete'); d.mkdir(); (d / 'shard-00000.tar').write_bytes(b'x'); "
            "print(d.name, flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == -9
    dead = proc.stdout.strip()
    alive = temp_name("rel-x.incomplete")  # this process's: still running
    (tmp_path / alive).mkdir()
    assert {dead, alive} <= set(os.listdir(tmp_path))
    _write(tmp_path, release_id="rel-1")
    assert sorted(os.listdir(tmp_path)) == sorted(["rel-1", alive])
