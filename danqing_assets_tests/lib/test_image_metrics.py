"""Stage-3 image scores on real photos (scikit-image samples), their blurred copies and malformed files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, signal

from danqing_assets.lib import reasons
from danqing_assets.lib.image_metrics import (
    DEFAULT_MIN_BLUR_SCORE,
    METRIC_KEYS,
    PAPER_MIN_LAPLACIAN_VAR,
    compute_metrics,
    compute_metrics_batch,
    filter_reason,
    hamming_distance,
    iter_metrics,
    laplacian_variance,
)

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "brick", "grass", "coins")


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(name: str) -> np.ndarray:
    return getattr(skimage_data, name)()


def _blurred(a: np.ndarray, sigma: float) -> np.ndarray:
    f = a.astype(np.float32)
    if f.ndim == 3:
        out = np.stack([ndimage.gaussian_filter(f[..., c], sigma) for c in range(f.shape[2])], axis=-1)
    else:
        out = ndimage.gaussian_filter(f, sigma)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _assert_schema(m: dict) -> None:
    assert tuple(m) == METRIC_KEYS
    for key in ("grey_std", "entropy_bits", "laplacian_var_native", "blur_score", "aspect_ratio"):
        v = m[key]
        assert v is None or (isinstance(v, float) and np.isfinite(v)), (key, v)


# --- definitions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "camera"])
def test_metric_definitions_match_independent_computation(name: str) -> None:
    png = _encode(Image.fromarray(_photo(name)), "PNG")
    m = compute_metrics(png)
    _assert_schema(m)
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert (m["width"], m["height"]) == (grey.shape[1], grey.shape[0])
    assert m["shortest_edge"] == min(grey.shape)
    assert m["aspect_ratio"] == pytest.approx(grey.shape[1] / grey.shape[0])
    assert m["grey_std"] == pytest.approx(grey.astype(np.float64).std(), rel=1e-9)
    p = np.bincount(grey.ravel(), minlength=256) / grey.size
    p = p[p > 0]
    assert m["entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-9)
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
    lap = signal.convolve2d(grey.astype(np.float64), kernel, mode="valid")
    assert m["laplacian_var_native"] == pytest.approx(lap.var(), rel=1e-9)


def test_paper_laplacian_threshold_rejects_sharp_photos() -> None:
    """The documented motivation for `blur_score`: chelsea and astronaut are sharp but score < 1000 natively."""
    values = {n: compute_metrics(_encode(Image.fromarray(_photo(n)), "PNG"))["laplacian_var_native"] for n in PHOTOS}
    assert values["chelsea"] == pytest.approx(401.5, abs=1)
    assert values["astronaut"] == pytest.approx(861.9, abs=1)
    assert values["chelsea"] < PAPER_MIN_LAPLACIAN_VAR and values["astronaut"] < PAPER_MIN_LAPLACIAN_VAR


def test_laplacian_variance_chunking_is_exact() -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, size=(1500, 300), dtype=np.uint8)  # > one 512-row chunk
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
    expected = signal.convolve2d(big.astype(np.float64), kernel, mode="valid").var()
    assert laplacian_variance(big) == pytest.approx(expected, rel=1e-12)
    assert laplacian_variance(np.zeros((2, 50), np.uint8)) == 0.0


# --- blur ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOS)
def test_blur_score_separates_sharp_photos_from_blurred_copies(name: str) -> None:
    a = _photo(name)
    sharp = compute_metrics(_encode(Image.fromarray(a), "JPEG", quality=90))
    assert sharp["blur_score"] >= DEFAULT_MIN_BLUR_SCORE, sharp
    assert filter_reason(sharp) is None
    for sigma in (2, 4):
        soft = compute_metrics(_encode(Image.fromarray(_blurred(a, sigma)), "JPEG", quality=90))
        assert soft["blur_score"] < DEFAULT_MIN_BLUR_SCORE, (sigma, soft)
        assert soft["blur_score"] < sharp["blur_score"] / 2
        assert filter_reason(soft) == reasons.BLURRY_IMAGE


def test_blur_score_ignores_contrast_and_moderate_resampling() -> None:
    a = _photo("camera")
    base = compute_metrics(_encode(Image.fromarray(a), "PNG"))["blur_score"]
    low_contrast = (a.astype(np.float32) * 0.3 + 90).astype(np.uint8)
    lc = compute_metrics(_encode(Image.fromarray(low_contrast), "PNG"))
    assert lc["laplacian_var_native"] < 0.15 * PAPER_MIN_LAPLACIAN_VAR  # the paper's measure collapses
    assert lc["blur_score"] == pytest.approx(base, rel=0.1)  # the default one does not
    resized = Image.fromarray(a).resize((480, 480), Image.LANCZOS)  # a CMS-style resample of a sharp photo
    assert compute_metrics(_encode(resized, "JPEG", quality=85))["blur_score"] >= DEFAULT_MIN_BLUR_SCORE


# --- pHash -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket", "camera"])
def test_phash_equals_imagededup_on_the_same_grey_pixels(name: str) -> None:
    from imagededup.methods import PHash

    phasher = PHash(verbose=False)
    a = _photo(name)
    png = _encode(Image.fromarray(a), "PNG")
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert compute_metrics(png)["phash"] == phasher.encode_image(image_array=grey)
    # JPEG: decoded straight to luma; the hash is imagededup's on exactly those pixels ...
    jpg = _encode(Image.fromarray(a), "JPEG", quality=90)
    im = Image.open(io.BytesIO(jpg))
    im.draft("L", im.size)
    mj = compute_metrics(jpg)
    assert mj["phash"] == phasher.encode_image(image_array=np.asarray(im))
    # ... and within a few bits of imagededup's own RGB-resize-then-grey pipeline on the file.
    rgb = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
    assert hamming_distance(mj["phash"], phasher.encode_image(image_array=rgb)) <= 4


def test_phash_is_stable_under_reencoding_and_differs_between_photos() -> None:
    a = Image.fromarray(_photo("coffee"))
    h1 = compute_metrics(_encode(a, "PNG"))["phash"]
    h2 = compute_metrics(_encode(a.resize((300, 200), Image.BILINEAR), "JPEG", quality=60))["phash"]
    other = compute_metrics(_encode(Image.fromarray(_photo("rocket")), "PNG"))["phash"]
    assert len(h1) == 16 and int(h1, 16) >= 0
    assert hamming_distance(h1, h2) <= 6
    assert hamming_distance(h1, other) > 16


# --- quality filters ---------------------------------------------------------------------------------------------


def test_filter_reasons_for_size_aspect_flat_and_entropy() -> None:
    rng = np.random.default_rng(0)
    noise = lambda h, w: Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))  # noqa: E731
    assert filter_reason(compute_metrics(_encode(noise(100, 300), "PNG"))) == reasons.TOO_SMALL
    assert filter_reason(compute_metrics(_encode(noise(101, 304), "PNG"))) == reasons.EXTREME_ASPECT
    assert filter_reason(compute_metrics(_encode(noise(101, 303), "PNG"))) is None
    flat = np.full((200, 200), 128, np.uint8)
    flat[::7, ::5] = 129  # std < 2 but not constant
    m = compute_metrics(_encode(Image.fromarray(flat), "PNG"))
    assert 0 < m["grey_std"] < 2 and filter_reason(m) == reasons.FLAT_IMAGE
    # Four grey levels in sharp stripes: contrasty and sharp, but only 2 bits of entropy.
    stripes = (np.indices((200, 200))[1] % 4 * 60).astype(np.uint8)
    m = compute_metrics(_encode(Image.fromarray(stripes), "PNG"))
    assert m["entropy_bits"] == pytest.approx(2.0, abs=0.01) and m["grey_std"] > 40
    assert filter_reason(m) == reasons.LOW_ENTROPY_IMAGE
    assert filter_reason(m, min_entropy_bits=None) is None
    photo = compute_metrics(_encode(Image.fromarray(_photo("chelsea")), "PNG"))
    assert filter_reason(photo, min_blur_score=None, min_laplacian_var_native=1000) == reasons.BLURRY_IMAGE


# --- malformed and unusual input ----------------------------------------------------------------------------------


def test_one_pixel_image_scores_without_error() -> None:
    m = compute_metrics(_encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"))
    _assert_schema(m)
    assert m["error"] is None and (m["width"], m["height"]) == (1, 1)
    assert m["grey_std"] == 0.0 and m["entropy_bits"] == 0.0 and m["laplacian_var_native"] == 0.0
    assert m["blur_score"] == 0.0 and len(m["phash"]) == 16
    assert filter_reason(m) == reasons.TOO_SMALL


def test_extreme_strip_scores() -> None:
    rng = np.random.default_rng(2)
    m = compute_metrics(_encode(Image.fromarray(rng.integers(0, 256, (20, 20000), dtype=np.uint8)), "PNG"))
    _assert_schema(m)
    assert m["error"] is None and m["aspect_ratio"] == 1000.0 and m["blur_score"] > 1.0
    assert filter_reason(m) == reasons.TOO_SMALL
    assert filter_reason(m, min_shortest_edge=None) == reasons.EXTREME_ASPECT


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    ramp = (np.linspace(0, 65535, 256 * 256).reshape(256, 256)).astype(np.uint16)
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    m = compute_metrics(_encode(img, "PNG"))
    assert m["error"] is None
    expected = np.round(ramp.astype(np.float64) / 257.0)
    assert m["grey_std"] == pytest.approx(expected.std(), rel=1e-3)  # clipping at 255 would give std ~ 0
    assert m["entropy_bits"] == pytest.approx(8.0, abs=0.01)


def test_cmyk_jpeg_scores_like_its_rgb_source() -> None:
    rgb = Image.fromarray(_photo("coffee"))
    m_cmyk = compute_metrics(_encode(rgb.convert("CMYK"), "JPEG", quality=95))
    m_rgb = compute_metrics(_encode(rgb, "JPEG", quality=95))
    assert m_cmyk["error"] is None and m_cmyk["format"] == "JPEG"
    assert m_cmyk["grey_std"] == pytest.approx(m_rgb["grey_std"], rel=0.05)
    assert hamming_distance(m_cmyk["phash"], m_rgb["phash"]) <= 6


def test_palette_with_transparency_is_composited_on_white() -> None:
    a = np.zeros((150, 150), np.uint8)  # palette index 0 everywhere (black) ...
    a[50:100, 50:100] = 1  # ... except a square of index 1 (red)
    im = Image.fromarray(a, "P")
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    m = compute_metrics(_encode(im, "PNG", transparency=0))  # index 0 is transparent: white page background
    assert m["error"] is None
    grey_red = round(255 * 299 / 1000)
    expected = np.full((150, 150), 255.0)
    expected[50:100, 50:100] = grey_red
    assert m["grey_std"] == pytest.approx(expected.std(), abs=0.6)
    opaque = compute_metrics(_encode(im, "PNG"))
    assert opaque["grey_std"] == pytest.approx(np.where(a == 1, grey_red, 0).std(), abs=0.6)


def test_animated_gif_scores_first_frame_and_counts_frames() -> None:
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 256, (120, 160), dtype=np.uint8)).convert("P") for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    m = compute_metrics(buf.getvalue())
    first = compute_metrics(_encode(frames[0], "GIF"))
    assert m["error"] is None and m["n_frames"] == 3 and first["n_frames"] == 1
    assert m["phash"] == first["phash"] and m["grey_std"] == pytest.approx(first["grey_std"])


def test_large_png_near_the_pixel_cap() -> None:
    rng = np.random.default_rng(4)
    tile = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    big = np.tile(tile, (1990 // 64 + 1, 2000 // 64 + 1))[:1990, :2000]  # 3.98 MP
    data = _encode(Image.fromarray(big), "PNG", compress_level=1)
    ok = compute_metrics(data, max_pixels=4_000_000)
    assert ok["error"] is None and (ok["width"], ok["height"]) == (2000, 1990)
    bomb = compute_metrics(data, max_pixels=3_980_000 - 1)
    assert bomb["error"] == reasons.DECOMPRESSION_BOMB and bomb["width"] == 2000 and bomb["phash"] is None


def test_decompression_bombs_are_not_decoded() -> None:
    m = compute_metrics(_png_header_only(8000, 6000))  # 48 MP declared > 40 MP default cap
    assert m["error"] == reasons.DECOMPRESSION_BOMB and m["shortest_edge"] == 6000
    huge = compute_metrics(_png_header_only(100_000, 100_000))  # beyond Pillow's own hard limit too
    assert huge["error"] == reasons.DECOMPRESSION_BOMB
    # Under the cap, the same kind of lying file is a decode error (its data is far too short).
    assert compute_metrics(_png_header_only(3000, 2000))["error"] == reasons.DECODE_ERROR


@pytest.mark.parametrize(
    "make",
    [
        lambda good_png, good_jpg, rng: good_png[:60] + bytes(rng.integers(0, 256, 3000, dtype=np.uint8)),
        lambda good_png, good_jpg, rng: good_jpg[: len(good_jpg) // 2],
        lambda good_png, good_jpg, rng: good_jpg[:400] + bytes(rng.integers(0, 256, 5000, dtype=np.uint8)),
        lambda good_png, good_jpg, rng: b"GIF89a" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)),
        lambda good_png, good_jpg, rng: b"<html>not an image</html>",
        lambda good_png, good_jpg, rng: b"",
        lambda good_png, good_jpg, rng: None,
        lambda good_png, good_jpg, rng: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS: never opened
    ],
    ids=["png_garbage_after_header", "jpeg_truncated", "jpeg_garbage_after_header", "gif_garbage", "html",
         "empty", "none", "eps"],
)
def test_corrupt_input_is_a_decode_error(make) -> None:
    rng = np.random.default_rng(5)
    photo = Image.fromarray(_photo("chelsea"))
    data = make(_encode(photo, "PNG"), _encode(photo, "JPEG", quality=90), rng)
    m = compute_metrics(data)
    _assert_schema(m)
    assert m["error"] == reasons.DECODE_ERROR and m["error_detail"]
    assert m["phash"] is None and m["blur_score"] is None
    assert filter_reason(m) == reasons.DECODE_ERROR


# --- batches --------------------------------------------------------------------------------------------------------


def test_batch_keeps_order_across_processes() -> None:
    photos = [_encode(Image.fromarray(_photo(n)), "JPEG", quality=85) for n in ("chelsea", "coffee", "rocket")]
    datas = [photos[i % 3] if i % 5 else b"broken" for i in range(40)]
    serial = list(iter_metrics(datas))
    parallel = compute_metrics_batch(datas, workers=2, chunk_size=7)
    assert parallel == serial
    assert [m["error"] for m in serial].count(reasons.DECODE_ERROR) == 8
    assert serial[1]["phash"] == serial[4]["phash"] and serial[1]["phash"] != serial[2]["phash"]


@pytest.mark.parametrize("how, exit_code", [("segv", -11), ("exit", 137)])
def test_an_image_that_kills_its_worker_is_an_internal_error_and_the_batch_goes_on(monkeypatch, how, exit_code):
    """The worker scoring one image dies for real (SIGSEGV as a codec fault delivers it; os._exit(137) as the OOM
    killer leaves it), in its chunk and again alone: that image alone is `internal_error`, every other image of its
    chunk and of the other chunks is scored as in one process (before: BrokenProcessPool failed the whole batch, and
    with it image_scores)."""
    import hashlib

    from danqing_assets.lib.faults import CRASH_HOOK_ENV

    photos = [_encode(Image.fromarray(_photo(n)), "JPEG", quality=85) for n in ("chelsea", "coffee", "rocket")]
    killer = _encode(Image.fromarray(_photo("astronaut")), "PNG")
    datas = [photos[0], photos[1], killer, photos[2], b"broken", photos[0], photos[2]]
    monkeypatch.setenv(CRASH_HOOK_ENV, f"{how}:{hashlib.sha256(killer).hexdigest()}")
    got = compute_metrics_batch(datas, workers=2, chunk_size=3)
    want = list(iter_metrics(datas))
    assert [m["error"] for m in got] == [None, None, reasons.INTERNAL_ERROR, None, reasons.DECODE_ERROR, None, None]
    assert f"exit code {exit_code}" in got[2]["error_detail"]
    assert got[2]["phash"] is None and filter_reason(got[2]) == reasons.INTERNAL_ERROR
    assert got[:2] + got[3:] == want[:2] + want[3:]
