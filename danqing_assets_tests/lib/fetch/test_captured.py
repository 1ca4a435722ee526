"""Images taken from the crawl's own WARC captures obey the captured response's `X-Robots-Tag` opt-out, as a live
response's would (a WARC written by warcio, read back through `extract_file` and `CaptureReader`, fetched with no
request to any site)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from danqing_assets.lib import reasons as R
from danqing_assets.lib import warc as W
from danqing_assets.lib.captures import CaptureReader
from danqing_assets.lib.fetch import CapturedImage, fetch_images
from danqing_assets.lib.image_store import LocalImageStore
from danqing_assets_tests.lib.test_warc import SNAPSHOT, Warc

from .test_fetch import cfg

SITE = "http://img.example.invalid"  # never resolvable: a request to it would end as dns_error, not as these reasons

HEADERS = {
    "plain.jpg": [],
    "noai.jpg": [("X-Robots-Tag", "noai")],
    "noimageai.jpg": [("X-Robots-Tag", "noindex, NoImageAI")],
    "ours.jpg": [("X-Robots-Tag", "danqing-assets: noai")],
    "other.jpg": [("X-Robots-Tag", "otherbot: noai, noimageai")],
    # two headers: "noai" is bare (for everyone), not part of googlebot's list
    "two.jpg": [("X-Robots-Tag", "googlebot: noindex"), ("X-Robots-Tag", "noai")],
}
OPTED_OUT = {"noai.jpg", "noimageai.jpg", "ours.jpg", "two.jpg"}


def _jpeg(seed: int) -> bytes:
    arr = (np.random.default_rng(seed).random((40, 60, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def _captured_warc(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    wf = Warc(tmp_path / "cap.warc.gz")
    images = {}
    for i, (name, extra) in enumerate(HEADERS.items()):
        url = f"{SITE}/{name}"
        images[url] = _jpeg(i)
        wf.response(url, images[url], content_type="image/jpeg", lang=None, extra_http=extra)
    return wf.close(), images


def _reader(path: Path) -> CaptureReader:
    res = W.extract_file(str(path), path.name, snapshot=SNAPSHOT)
    caps = [(c["url"], c["warc_file"], c["warc_offset"], c["content_length"]) for c in res.captures]
    assert len(caps) == len(HEADERS)
    return CaptureReader(caps, {path.name: str(path)})


def test_capture_reader_hands_over_the_captured_x_robots_tag(tmp_path: Path) -> None:
    path, images = _captured_warc(tmp_path)
    with _reader(path) as read:
        two = read(f"{SITE}/two.jpg")
        plain = read(f"{SITE}/plain.jpg")
    assert isinstance(two, CapturedImage) and bytes(two) == images[f"{SITE}/two.jpg"]
    assert two.x_robots_tag == ("googlebot: noindex", "noai")  # each header as sent, not joined
    assert plain == images[f"{SITE}/plain.jpg"] and plain.x_robots_tag == ()


def test_captured_images_obey_the_captured_optout_header(tmp_path: Path) -> None:
    path, images = _captured_warc(tmp_path)
    store = LocalImageStore(tmp_path / "images")
    with _reader(path) as read:
        res = {r.url: r for r in fetch_images(list(images), store, cfg(), warc_lookup=read)}
    assert set(res) == set(images)
    for url, r in res.items():
        name = url.rsplit("/", 1)[1]
        assert r.source == "warc" and r.attempts == 0, r
        if name in OPTED_OUT:
            assert (r.status, r.reason) == ("error", R.OPTOUT_HEADER), r
            assert "X-Robots-Tag" in r.error and r.image_sha256 is None
        else:
            assert r.ok, r
            assert store.get(r.image_sha256) == images[url]
    stored = {p.name for p in store.root.rglob("*") if p.is_file()}
    assert len(stored) == len(HEADERS) - len(OPTED_OUT)  # opted-out images are not stored


def test_respect_optout_off_takes_every_capture(tmp_path: Path) -> None:
    path, images = _captured_warc(tmp_path)
    with _reader(path) as read:
        res = list(fetch_images(list(images), None, cfg(respect_optout=False), warc_lookup=read))
    assert all(r.ok and r.source == "warc" for r in res), res


def test_plain_bytes_from_a_lookup_still_work(tmp_path: Path) -> None:
    url = f"{SITE}/x.jpg"
    res = list(fetch_images([url], None, cfg(), warc_lookup={url: _jpeg(9)}.get))
    assert res[0].ok and res[0].source == "warc"
    tagged = CapturedImage(_jpeg(9), x_robots_tag=["noai"])
    res = list(fetch_images([url], None, cfg(processes=2), warc_lookup={url: tagged}.get))  # through a worker process
    assert res[0].reason == R.OPTOUT_HEADER and res[0].source == "warc"
