"""Fuzzing the image decoders: the fetcher's check (`fetch/decode.inspect_image`) and stage 3's metrics
(`image_metrics.compute_metrics`) on real images of every accepted format with bytes flipped, cut or inserted, and on
arbitrary bytes behind each format's magic. Held: an answer (info or a registered reason), never an exception, no
hang, bounded memory (a small file never decodes into a large buffer: the pixel cap holds)."""

from __future__ import annotations

import io
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from danqing_assets.lib import reasons as R
from danqing_assets.lib.fetch.decode import ImageInfo, Reject, inspect_image
from danqing_assets.lib.image_metrics import compute_metrics
from danqing_assets_tests.fuzz.conftest import corpus, time_limit
from danqing_assets_tests.fuzz.test_fuzz_warc import _mutation, mutate

MAX_PIXELS = 4_000_000  # small, so a header that lies about its size is refused, not decoded


def _encode(fmt: str, **kw) -> bytes:
    rng = np.random.default_rng(len(fmt))
    arr = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


SEEDS = [_encode("JPEG"), _encode("PNG"), _encode("GIF"), _encode("WEBP"), _encode("BMP"), _encode("TIFF"),
         _encode("ICO"), _encode("JPEG", progressive=True)] + corpus("image")
MAGIC = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM", b"II*\x00",
         b"\x00\x00\x01\x00", b"\x00\x00\x00\x1cftypavif"]
_images = st.one_of(st.builds(mutate, st.sampled_from(SEEDS), st.lists(_mutation, min_size=1, max_size=6)),
                    st.builds(bytes.__add__, st.sampled_from(MAGIC), st.binary(max_size=512)))


def check(data: bytes) -> None:
    with time_limit(10):
        info = inspect_image(data, max_pixels=MAX_PIXELS)
        metrics = compute_metrics(data, max_pixels=MAX_PIXELS)
    if isinstance(info, Reject):
        assert info.reason in (R.DECODE_ERROR, R.DECOMPRESSION_BOMB, R.NOT_AN_IMAGE), info
    else:
        assert isinstance(info, ImageInfo) and info.width * info.height <= MAX_PIXELS
    if metrics.get("error") is not None:
        assert metrics["error"] in (R.DECODE_ERROR, R.DECOMPRESSION_BOMB), metrics
    else:
        assert metrics["width"] * metrics["height"] <= MAX_PIXELS
        for key, value in metrics.items():
            assert not (isinstance(value, float) and math.isnan(value)), (key, metrics)


def test_the_seeds_decode() -> None:
    for data in SEEDS:
        assert isinstance(inspect_image(data), ImageInfo)
        assert compute_metrics(data).get("error") is None


@given(data=_images)
def test_mutated_and_made_up_images(data: bytes, peak_memory) -> None:
    with peak_memory(64 * 2**20):
        check(data)


@given(data=st.binary(max_size=1024))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)
