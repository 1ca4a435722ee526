"""fetch.decode: real images made with Pillow / numpy and real photos from scikit-image; real bombs and truncations."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from danqing_assets.lib import reasons as R
from danqing_assets.lib.fetch.decode import (
    ImageInfo,
    ImageRejected,
    Reject,
    inspect_image,
    load_rgb,
    open_image,
    sniff_image_type,
    to_rgb,
)


def _photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512x512 RGB photograph


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 8-bit greyscale pixels (the IDAT holds a few rows only)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("fmt", "kw", "name"),
    [
        ("JPEG", {"quality": 85}, "jpeg"),
        ("PNG", {}, "png"),
        ("WEBP", {"quality": 80}, "webp"),
        ("GIF", {}, "gif"),
        ("BMP", {}, "bmp"),
        ("TIFF", {}, "tiff"),
    ],
)
def test_good_formats_are_accepted_with_size_and_format(fmt: str, kw: dict, name: str) -> None:
    img = Image.fromarray(_photo()).resize((300, 200))
    data = _encode(img, fmt, **kw)
    info = inspect_image(data)
    assert isinstance(info, ImageInfo)
    assert (info.width, info.height, info.format) == (300, 200, name)
    assert sniff_image_type(data[:16]) == name
    assert to_rgb(open_image(data)).size == (300, 200)


def test_animated_gif_reports_frames_and_decodes_first_frame() -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    info = inspect_image(buf.getvalue())
    assert isinstance(info, ImageInfo) and info.animated and info.n_frames == 3
    rgb = load_rgb(buf.getvalue())
    assert rgb.mode == "RGB" and rgb.getpixel((5, 5))[0] > 200  # the first (red) frame


def test_header_bomb_is_rejected_before_decoding() -> None:
    # 8000 x 8000 = 64 MP: above our 40 MP default, below Pillow's own limit, so our header check must catch it.
    data = bomb_png(8000, 8000)
    assert len(data) < 2000
    rej = inspect_image(data)
    assert isinstance(rej, Reject) and rej.reason == R.DECOMPRESSION_BOMB
    assert "8000x8000" in rej.detail
    # 100k x 100k: Pillow's own DecompressionBombError is mapped to the same reason.
    rej = inspect_image(bomb_png(100_000, 100_000), max_pixels=None)
    assert isinstance(rej, Reject) and rej.reason == R.DECOMPRESSION_BOMB
    # A lower configured cap applies to ordinary images too.
    small = _encode(Image.new("RGB", (100, 100)), "PNG")
    assert inspect_image(small, max_pixels=9_999).reason == R.DECOMPRESSION_BOMB  # type: ignore[union-attr]
    assert isinstance(inspect_image(small, max_pixels=10_000), ImageInfo)
    with pytest.raises(ImageRejected) as exc:
        load_rgb(data)
    assert exc.value.reason == R.DECOMPRESSION_BOMB


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_a_decode_error(progressive: bool) -> None:
    data = _encode(Image.fromarray(_photo()), "JPEG", quality=90, progressive=progressive)
    assert isinstance(inspect_image(data), ImageInfo)
    for cut in (0.5, 0.97):
        rej = inspect_image(data[: int(len(data) * cut)])
        assert isinstance(rej, Reject) and rej.reason == R.DECODE_ERROR, cut
    # header-only mode does not notice truncation (documented trade-off)
    assert isinstance(inspect_image(data[: len(data) // 2], decode=False), ImageInfo)


def test_corrupt_and_non_images_are_decode_errors() -> None:
    png = bytearray(_encode(Image.fromarray(_photo()).resize((64, 64)), "PNG"))
    png[60] ^= 0xFF  # inside IDAT: the CRC no longer matches
    for bad in (bytes(png), b"<html><body>hello</body></html>", b"", b"\xff\xd8\xff" + b"\x00" * 40, b"GIF89a"):
        rej = inspect_image(bad)
        assert isinstance(rej, Reject) and rej.reason == R.DECODE_ERROR, bad[:10]
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert inspect_image(eps).reason == R.DECODE_ERROR  # type: ignore[union-attr]  # EPS is never opened


def test_to_rgb_handles_the_modes_later_stages_meet() -> None:
    rng = np.random.default_rng(0)
    cmyk = Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "CMYK")
    cmyk_jpeg = open_image(_encode(cmyk, "JPEG"))
    assert cmyk_jpeg.mode == "CMYK" and to_rgb(cmyk_jpeg).mode == "RGB"

    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 0
    assert to_rgb(pal).getpixel((0, 0)) == (255, 0, 0)
    pal_t = Image.new("P", (10, 10), 0)
    pal_t.putpalette([0, 0, 0] * 256)
    pal_t.info["transparency"] = 0
    assert to_rgb(pal_t).getpixel((0, 0)) == (255, 255, 255)  # fully transparent -> background

    la = Image.new("LA", (10, 10), (0, 0))
    assert to_rgb(la).getpixel((3, 3)) == (255, 255, 255)
    rgba = Image.new("RGBA", (10, 10), (0, 0, 255, 255))
    assert to_rgb(rgba).getpixel((3, 3)) == (0, 0, 255)

    g16 = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    data16 = _encode(g16, "PNG")
    img16 = open_image(data16)
    assert img16.mode.startswith("I")
    assert to_rgb(img16).getpixel((0, 0)) == (255, 255, 255)  # scaled, not clipped to 255 from the low byte
    half = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert to_rgb(open_image(_encode(half, "PNG"))).getpixel((0, 0)) == (128, 128, 128)

    f = Image.fromarray(np.full((4, 4), 300.0, dtype=np.float32), "F")
    assert to_rgb(f).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("1", (4, 4), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_to_rgb_applies_exif_orientation() -> None:
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    data = _encode(img, "JPEG", exif=exif.tobytes())
    info = inspect_image(data)
    assert isinstance(info, ImageInfo) and (info.width, info.height) == (40, 20)  # as stored
    assert to_rgb(open_image(data)).size == (20, 40)
    assert to_rgb(open_image(data), exif_transpose=False).size == (40, 20)


def test_load_rgb_draft_decodes_jpeg_at_reduced_scale() -> None:
    data = _encode(Image.fromarray(_photo()), "JPEG")
    small = load_rgb(data, draft_size=(128, 128))
    assert small.mode == "RGB" and small.size == (128, 128)  # 512 / 4, the smallest DCT scale covering 128
    assert load_rgb(data).size == (512, 512)


def test_sniff_image_type_signatures() -> None:
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_image_type(b"\x00\x00\x00\x1cftypavif\x00\x00") == "avif"
    assert sniff_image_type(b"\x00\x00\x00\x18ftypheic\x00\x00") == "heic"
    assert sniff_image_type(b"<!DOCTYPE html>") is None
    assert sniff_image_type(b"") is None
