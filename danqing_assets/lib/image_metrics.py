"""Stage-3 image scores: size, aspect, contrast, sharpness, entropy and an imagededup-compatible pHash from one decode.

Scores first, decisions later: `compute_metrics` returns numbers only; thresholds are applied afterwards (in SQL by the
pipeline, or with `filter_reason` here), so they can be re-tuned without decoding 100 M images again.

Where each metric is measured (blur and entropy depend on scale):

- `width`, `height`, `aspect_ratio` (w/h), `shortest_edge`: native size, from the header.
- `grey_std`, `entropy_bits` (Shannon, bits): the native-size grey histogram (256 bins, exact).
- `laplacian_var_native`: native-size grey, 3x3 Laplacian `[[0,1,0],[1,-4,1],[0,1,0]]` over the interior (no padding):
  the paper's measure, threshold 1000 (`PAPER_MIN_LAPLACIAN_VAR`).
- `blur_score`: a working copy, the native grey box-reduced by an integer factor k = max(2, round(shortest_edge /
  work_size)) (see below).
- `phash`: native-size grey, resized to 32x32 (Lanczos) exactly as `imagededup.methods.PHash` does.

"Grey" is 0-255 luma (ITU-R 601, what Pillow's ``convert("L")`` computes). JPEGs are decoded straight to their luma
channel (`Image.draft("L", native size)`: no chroma upsampling or colour conversion, same scale, ~25 % faster);
16-bit images are scaled to 0-255; transparent pixels are composited on white (what a web page shows); animated
images are scored on their first frame (`n_frames` says how many there are).

Why `blur_score` and not only the paper's Laplacian variance: measured with a 3x3 Laplacian on 0-255 grey at native
size, sharp real photos score far below 1000 (scikit-image `chelsea` 401, `astronaut` 862, `rocket` 812), and the value
depends on resolution and contrast as much as on focus. `blur_score` is

    blur_score = min(E(W) / E(W2), NORM_WEIGHT * E(W) / var(W))

with W the working copy, W2 = W box-reduced by 2, E = variance of the 3x3 Laplacian. The first term (an "octave
ratio") compares the detail energy of the finest octave with that of the next one: natural images are roughly
scale-invariant (ratio ~0.3-2), blur removes the finest octave first (ratio < 0.22 for Gaussian sigma >= 2 px copies of
the calibration photos). It is contrast-free and content-robust (textures and smooth portraits score alike), but
near-flat images made only of compression noise can fool it, so it is capped by the contrast-normalised Laplacian
energy. The working copy is reduced at least 2x because web images are often resampled, which softens their finest
pixel level without making them look blurred; reducing to about `work_size` makes large images comparable to small
ones (and costs little: box reduction by an integer factor).
On 19 sharp real photos (scikit-image, scikit-learn, matplotlib samples; `benchmarks/image_filter_calibration.py`)
`blur_score >= DEFAULT_MIN_BLUR_SCORE` rejects none of the originals and all of their Gaussian sigma 2 and 4 copies,
at native and at web size; the paper's `laplacian_var_native >= 1000` also rejects all copies but 53 % of the originals.

Bad input never raises: the result then has `error` = `decode_error` or `decompression_bomb` (reason names from
`reasons.py`) with `error_detail`, and metric fields set to None; in `compute_metrics_batch` an image that kills its
worker process (twice: in its chunk, then alone) gets `internal_error`.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from danqing_assets.lib.faults import CRASH_HOOK_ENV, crash_hook
from danqing_assets.lib.worker_exit import exit_code, pool_processes
from danqing_assets.lib.reasons import (
    BLURRY_IMAGE,
    DECODE_ERROR,
    DECOMPRESSION_BOMB,
    EXTREME_ASPECT,
    FLAT_IMAGE,
    INTERNAL_ERROR,
    LOW_ENTROPY_IMAGE,
    TOO_SMALL,
)

DEFAULT_WORK_SIZE = 256
"""Target shortest edge of the `blur_score` working copy (large images): the paper's SigLIP2 training resolution."""
DEFAULT_MAX_PIXELS = 40_000_000
"""Images whose header declares more pixels are not decoded (`decompression_bomb`); same cap as the fetcher's."""
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF")
"""Formats decoded. Others (EPS would call Ghostscript, PDF, ...) become `decode_error`."""

# Thresholds: the paper's (stage 3) and the calibrated default for `blur_score`.
PAPER_MIN_SHORTEST_EDGE = 100  # keep shortest_edge > 100
PAPER_MAX_ASPECT = 3.0  # keep 1/3 <= aspect_ratio <= 3
PAPER_MIN_GREY_STD = 2.0  # keep grey_std >= 2
PAPER_MIN_LAPLACIAN_VAR = 1000.0  # keep laplacian_var_native >= 1000 (drops many sharp photos: see module docstring)
PAPER_MIN_ENTROPY_BITS = 3.0  # keep entropy_bits >= 3
DEFAULT_MIN_BLUR_SCORE = 0.25
"""Keep blur_score >= 0.25: on the calibration photos (`benchmarks/image_filter_calibration.py`) every sharp original
scores >= 0.29 and every Gaussian sigma 2 or 4 copy <= 0.22."""
NORM_WEIGHT = 4.0
"""Weight of the contrast-normalised Laplacian energy in `blur_score` (a near-flat noise image cannot pass)."""

METRIC_KEYS: tuple[str, ...] = (
    "width",
    "height",
    "aspect_ratio",
    "shortest_edge",
    "format",
    "n_frames",
    "grey_std",
    "entropy_bits",
    "laplacian_var_native",
    "blur_score",
    "phash",
    "error",
    "error_detail",
)
"""Every result dict has exactly these keys (a stable schema for a DataFrame)."""

_LEVELS = np.arange(256, dtype=np.float64)
_LEVELS_SQ = _LEVELS * _LEVELS
_LAPLACIAN_ROWS_PER_CHUNK = 512  # bounds memory on large images (int16/float64 temporaries per chunk)


_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>")
_FORMATS_CACHE: dict[tuple[str, ...], list[str]] = {}


def _available_formats(formats: Sequence[str]) -> list[str]:
    """The requested formats that this Pillow build can open (plugins such as AVIF are optional)."""
    key = tuple(formats)
    if key not in _FORMATS_CACHE:
        from PIL import Image

        Image.init()
        _FORMATS_CACHE[key] = [f for f in key if f.upper() in Image.OPEN]
    return _FORMATS_CACHE[key]


def _empty_result() -> dict[str, Any]:
    return dict.fromkeys(METRIC_KEYS)


def _error(result: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    for key in ("grey_std", "entropy_bits", "laplacian_var_native", "blur_score", "phash"):
        result[key] = None
    result["error"] = reason
    result["error_detail"] = _OBJECT_REPR.sub("<bytes>", detail)[:300]  # no memory addresses: stable across runs
    return result


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour 3x3 Laplacian of a 2-D 0-255 array over its interior (0.0 below 3x3).

    Equals OpenCV's ``cv2.Laplacian(grey, cv2.CV_64F).var()`` up to the border (OpenCV pads; this does not). Computed
    in int16 row chunks (exact: |value| <= 1020), so memory stays bounded on large images.
    """
    h, w = grey.shape
    if h < 3 or w < 3:
        return 0.0
    n = (h - 2) * (w - 2)
    total = 0.0
    total_sq = 0.0
    step = _LAPLACIAN_ROWS_PER_CHUNK
    for r0 in range(0, h - 2, step):
        r1 = min(r0 + step, h - 2)
        f = grey[r0 : r1 + 2].astype(np.int16)
        lap = f[:-2, 1:-1] + f[2:, 1:-1]
        lap += f[1:-1, :-2]
        lap += f[1:-1, 2:]
        lap -= f[1:-1, 1:-1] << 2
        flat = lap.astype(np.float64).ravel()  # integer-valued: sums below 2**53 are exact in any order
        total += float(flat.sum())
        total_sq += float(np.dot(flat, flat))
    mean = total / n
    return max(total_sq / n - mean * mean, 0.0)


def _histogram_stats(hist: Sequence[int]) -> tuple[float, float]:
    """(std, Shannon entropy in bits) of a 256-bin grey histogram."""
    counts = np.asarray(hist, dtype=np.float64)
    n = counts.sum()
    if n <= 0:
        return 0.0, 0.0
    p = counts / n
    mean = float(p @ _LEVELS)
    var = max(float(p @ _LEVELS_SQ) - mean * mean, 0.0)
    nz = p[p > 0]
    entropy = max(float(-(nz * np.log2(nz)).sum()), 0.0) + 0.0  # + 0.0: no "-0.0" for one-level images
    return math.sqrt(var), entropy


def phash_from_grey(grey_image: Any) -> str:
    """imagededup's PHash of a Pillow 'L' image: 32x32 Lanczos, 2-D DCT-II, top-left 8x8, >= median of 63 AC terms.

    Bit-for-bit ``imagededup.methods.PHash().encode_image(image_array=np.asarray(grey_image))``.
    """
    from PIL import Image
    from scipy.fftpack import dct

    small = np.array(grey_image.resize((32, 32), Image.LANCZOS)).astype("uint8")
    coef = dct(dct(small, axis=0), axis=1)[:8, :8]
    bits = coef >= np.median(coef.ravel()[1:])
    return "".join("%0.2x" % x for x in np.packbits(bits))


def blur_score_of(grey_image: Any, *, work_size: int = DEFAULT_WORK_SIZE) -> float:
    """`blur_score` of a Pillow 'L' image (see the module docstring); 0.0 for images with no measurable detail."""
    w, h = grey_image.size
    k = max(2, round(min(w, h) / work_size))
    work = grey_image.reduce(k) if min(w, h) >= 2 else grey_image
    arr = np.asarray(work)
    e1 = laplacian_variance(arr)
    var = _histogram_stats(work.histogram())[0] ** 2
    if e1 <= 0.0 or var <= 0.0:
        return 0.0
    norm_term = NORM_WEIGHT * e1 / var
    if min(work.size) < 6:
        return float(norm_term)
    e2 = laplacian_variance(np.asarray(work.reduce(2)))
    octave = e1 / e2 if e2 > 0.0 else math.inf
    return float(min(octave, norm_term))


def _to_grey(im: Any) -> Any:
    """Pillow image of any mode -> 'L' (0-255 luma); alpha composited on white; 16/32-bit scaled to 0-255."""
    from PIL import Image

    mode = im.mode
    if mode == "L":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im).astype(np.int64)
        if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            arr = np.clip(arr, 0, 65535)
        grey = (arr * 255 + 32767) // 65535
        return Image.fromarray(grey.astype(np.uint8), "L")
    if mode == "F":
        return Image.fromarray(np.clip(np.nan_to_num(np.asarray(im), nan=0.0), 0, 255).astype(np.uint8), "L")
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("L", rgba.size, 255)
        white.paste(rgba.convert("L"), mask=rgba.getchannel("A"))
        return white
    try:
        return im.convert("L")
    except (ValueError, OSError):
        return im.convert("RGB").convert("L")


def compute_metrics(
    data: bytes | bytearray | memoryview | None,
    *,
    work_size: int = DEFAULT_WORK_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] | None = DEFAULT_FORMATS,
) -> dict[str, Any]:
    """Decode an encoded image once and return all stage-3 scores (keys: `METRIC_KEYS`; see the module docstring).

    Never raises on bad bytes: undecodable or truncated data gives ``error="decode_error"``, a header declaring more
    than `max_pixels` pixels (None: no cap) gives ``error="decompression_bomb"`` without decoding the pixels.
    Pillow's warnings about odd files (palette transparency, EXIF, ...) are silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _compute_metrics(data, work_size=work_size, max_pixels=max_pixels, formats=formats)


def _compute_metrics(
    data: bytes | bytearray | memoryview | None,
    *,
    work_size: int,
    max_pixels: int | None,
    formats: Sequence[str] | None,
) -> dict[str, Any]:
    from PIL import Image

    result = _empty_result()
    if not data:
        return _error(result, DECODE_ERROR, "empty payload")
    try:
        im = Image.open(io.BytesIO(data), formats=_available_formats(formats) if formats else None)
    except Image.DecompressionBombError as exc:
        return _error(result, DECOMPRESSION_BOMB, str(exc))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a counted reject, not a crash
        return _error(result, DECODE_ERROR, f"{type(exc).__name__}: {exc}")
    try:
        w, h = im.size
        result["width"], result["height"] = int(w), int(h)
        result["format"] = im.format
        result["n_frames"] = int(getattr(im, "n_frames", 1) or 1)
        if w <= 0 or h <= 0:
            return _error(result, DECODE_ERROR, f"invalid size {w}x{h}")
        result["aspect_ratio"] = w / h
        result["shortest_edge"] = int(min(w, h))
        if max_pixels is not None and w * h > max_pixels:
            return _error(result, DECOMPRESSION_BOMB, f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
        if im.format in ("JPEG", "MPO"):
            im.draft("L", (w, h))  # luma only, native scale
        im.load()
        grey = _to_grey(im)
        if grey.size != (w, h):  # a decoder that disagrees with its header
            return _error(result, DECODE_ERROR, f"decoded size {grey.size} != header size {(w, h)}")
        std, entropy = _histogram_stats(grey.histogram())
        result["grey_std"] = std
        result["entropy_bits"] = entropy
        result["laplacian_var_native"] = laplacian_variance(np.asarray(grey))
        result["blur_score"] = blur_score_of(grey, work_size=work_size)
        result["phash"] = phash_from_grey(grey)
    except Image.DecompressionBombError as exc:
        return _error(result, DECOMPRESSION_BOMB, str(exc))
    except MemoryError as exc:
        return _error(result, DECOMPRESSION_BOMB, f"MemoryError: {exc}")
    except Exception as exc:  # noqa: BLE001
        return _error(result, DECODE_ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        im.close()
    return result


def iter_metrics(
    datas: Iterable[bytes | bytearray | memoryview | None],
    *,
    work_size: int = DEFAULT_WORK_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] | None = DEFAULT_FORMATS,
) -> Iterator[dict[str, Any]]:
    """`compute_metrics` over a stream, in order, with Pillow's warnings (palette transparency, EXIF, ...) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for data in datas:
            yield _compute_metrics(data, work_size=work_size, max_pixels=max_pixels, formats=formats)


def _metrics_chunk(args: tuple[list[Any], int, int | None, Sequence[str] | None]) -> list[dict[str, Any]]:
    """Worker side of `compute_metrics_batch`: one chunk's metrics, in order."""
    datas, work_size, max_pixels, formats = args
    if os.environ.get(CRASH_HOOK_ENV):  # fault injection for the tests: die on the image with this sha256
        for data in datas:
            if data:
                crash_hook(hashlib.sha256(data).hexdigest())
    return list(iter_metrics(datas, work_size=work_size, max_pixels=max_pixels, formats=formats))


def compute_metrics_batch(
    datas: Sequence[bytes | bytearray | memoryview | None],
    *,
    work_size: int = DEFAULT_WORK_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] | None = DEFAULT_FORMATS,
    workers: int = 1,
    chunk_size: int = 256,
    mp_start_method: str = "spawn",
) -> list[dict[str, Any]]:
    """`compute_metrics` for many images, in input order; `workers` > 1 spreads chunks over worker processes.

    Decoders are compiled code reading hostile bytes: an image can kill its worker (a segfault in a codec, the OOM
    killer) where no `except` can catch it. Each worker process holds one chunk at a time, so a worker that dies names
    its chunk; that chunk's images are then scored again one image per job, and the image that kills its worker then
    too gets ``error="internal_error"`` (no metrics); the other images and chunks go on. With `workers` <= 1
    everything runs in this process (no containment: a segfault there ends the step)."""
    datas = list(datas)
    if workers <= 1 or not datas:
        return list(iter_metrics(datas, work_size=work_size, max_pixels=max_pixels, formats=formats))
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    ctx = get_context(mp_start_method)
    size = max(1, min(chunk_size, math.ceil(len(datas) / workers)))
    todo = [(i, min(i + size, len(datas))) for i in range(0, len(datas), size)]  # [start, end) of each job
    todo.reverse()
    n = min(workers, len(todo))
    out: list[dict[str, Any] | None] = [None] * len(datas)
    idle: list[ProcessPoolExecutor] = []
    running: dict[Any, tuple[int, int, ProcessPoolExecutor, list[Any]]] = {}
    try:
        while todo or running:
            while todo and len(running) < n:
                lo, hi = todo.pop()
                ex = idle.pop() if idle else ProcessPoolExecutor(max_workers=1, mp_context=ctx)
                job = (datas[lo:hi], work_size, max_pixels, formats)
                fut = ex.submit(_metrics_chunk, job)
                running[fut] = (lo, hi, ex, pool_processes(ex))  # now: a broken pool forgets its processes
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                lo, hi, ex, procs = running.pop(fut)
                try:
                    out[lo:hi] = fut.result()
                except BrokenProcessPool:
                    code = exit_code(procs)
                    ex.shutdown(wait=True, cancel_futures=True)
                    if hi - lo > 1:  # the chunk again, one image per job (next): a worker that dies names its image
                        todo.extend((i, i + 1) for i in reversed(range(lo, hi)))
                        continue
                    out[lo] = _error(_empty_result(), INTERNAL_ERROR,
                                     f"the image scoring worker died on this image, in its chunk and alone "
                                     f"(exit code {code})")
                else:
                    idle.append(ex)
    finally:
        for ex in [*idle, *(ex for _, _, ex, _ in running.values())]:
            ex.shutdown(wait=True, cancel_futures=True)
    return out  # type: ignore[return-value]


def filter_reason(
    metrics: dict[str, Any],
    *,
    min_shortest_edge: int | None = PAPER_MIN_SHORTEST_EDGE,
    max_aspect: float | None = PAPER_MAX_ASPECT,
    min_grey_std: float | None = PAPER_MIN_GREY_STD,
    min_blur_score: float | None = DEFAULT_MIN_BLUR_SCORE,
    min_laplacian_var_native: float | None = None,
    min_entropy_bits: float | None = PAPER_MIN_ENTROPY_BITS,
) -> str | None:
    """First stage-3 quality reason (order of `stages.IMAGE.reasons`) that rejects these metrics, or None to keep.

    A metrics dict with an `error` returns that error's reason. None disables a rule. Pass
    ``min_laplacian_var_native=1000`` (and ``min_blur_score=None``) for the paper's literal blur rule.
    """
    if metrics.get("error"):
        return str(metrics["error"])
    if min_shortest_edge is not None and metrics["shortest_edge"] <= min_shortest_edge:
        return TOO_SMALL
    if max_aspect is not None and not (1.0 / max_aspect <= metrics["aspect_ratio"] <= max_aspect):
        return EXTREME_ASPECT
    if min_grey_std is not None and metrics["grey_std"] < min_grey_std:
        return FLAT_IMAGE
    if min_blur_score is not None and metrics["blur_score"] < min_blur_score:
        return BLURRY_IMAGE
    if min_laplacian_var_native is not None and metrics["laplacian_var_native"] < min_laplacian_var_native:
        return BLURRY_IMAGE
    if min_entropy_bits is not None and metrics["entropy_bits"] < min_entropy_bits:
        return LOW_ENTROPY_IMAGE
    return None


def hamming_distance(hash1: str, hash2: str) -> int:
    """Bits that differ between two hex pHashes."""
    return (int(hash1, 16) ^ int(hash2, 16)).bit_count()
