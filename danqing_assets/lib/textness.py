"""Text heaviness of an image without a CLIP model: how much of it is covered by lines of printed text.

Why: stage 4 drops pairs whose image-text similarity is *above* a band because those are mostly text-heavy images
(posters, slides, screenshots, caption banners) whose alt text is OCR of the image. Stored beside the CLIP similarity,
this score lets the band decision (or an audit of it) tell "similar because the caption reads the image" from
"similar because the caption describes it". Scores first, decisions later: `text_heaviness` returns numbers only;
`DEFAULT_TEXT_HEAVY_THRESHOLD` is the calibrated default cut, applied afterwards.

Method: the classic morphological text-line detector (gradient, Otsu, horizontal closing, connected components,
geometric filters on the components: the recipe of Wu, Manmatha & Riseman's TextFinder and of the common OpenCV
"morphological gradient + Otsu + close with a 9x1 kernel + keep boxes with > 45 % edge pixels"). It looks for lines of
strokes, not for letters, so Chinese and Latin are found alike; extra tests reject the textures such detectors fall
for. On the grey image resized so that its longest edge is `work_size` (384 px):

1. Edges: 3x3 morphological gradient (dilation - erosion), binarised at Otsu's threshold, never below `MIN_GRADIENT`
   grey levels (JPEG noise on a flat ground is no edge). Vertical edge runs longer than `RULE_LENGTH_FRAC` of the
   height are removed (table rules, frames, poles: they would tie the lines of a table into one blob).
2. Line blobs: a horizontal closing `CLOSE_WIDTH` px wide joins the strokes of a line; `scipy.ndimage.label`
   (4-connected) gives the blobs. A paragraph whose lines touch stays one blob and is measured per line (below).
3. Per blob, vectorised with `np.bincount` (a cheap prefilter on area and bounding box first):
   - line height `hl`: rows with fewer edge pixels than `BAND_FRAC` of the blob's busiest row separate bands (lines);
     `hl` = band rows / bands;
   - geometry: `hl` between `MIN_LINE_HEIGHT` px and `MAX_LINE_HEIGHT_FRAC` of the shorter side, elongation
     `width / hl`, fill (area / bounding box: a line is a rectangle), edge ratio (edge pixels / area: a line is dense
     in strokes), border (pixels just above and below the blob per column and band: ~1 for a line, large for a ragged
     blob);
   - strokes: the blob is binarised at its own mean grey, the minority side being the ink (dark-on-light and
     light-on-dark alike); along rows, ink runs per line height ("runs per em", ~0.7-3 for text of any size and
     script) and the mean ink-run length / `hl` (stroke width: strokes are thin against the line);
   - background: `flat` = mean gradient on the pixels just above and below the blob / mean gradient inside it. Text
     sits on a locally flat ground (0.05-0.4 on the calibration text), a patch of texture on more texture (0.45-0.8).
   Each test is a linear ramp to 0..1 (`RAMP_*`); a blob's text-likeness is their product.
4. `text_area_share` = sum(area x text-likeness) / image area (0..1). `text_heaviness` = 1 - exp(-share /
   `SHARE_SCALE`): 0.5 at 3.5 % of the image in text lines, 0.9 at 11.5 %. Also stored: `text_edge_share` (the same
   weighting over the edge pixels: how much of the image's structure is text), `stroke_score` (area-weighted mean of
   the stroke tests over line-shaped blobs, 0 without any), `edge_density` (edge pixels / pixels, rules removed),
   `text_lines` (lines in blobs of text-likeness >= 0.5).
   Weighting `text_heaviness` by `text_edge_share` was tried and dropped: it sank caption banners over busy photos
   (grass, tissue) below watermarked photos.

Calibration (`danqing_assets_tests/lib/test_textness.py`, images scored as JPEG q88): 28 scikit-image /
scikit-learn photos, crops, textures, noise and watermarked photos score <= 0.29 (the hardest real photo: the Hubble
deep field, small galaxies on black), except a synthetic grating of threads at 0.33 (0 at other JPEG qualities); 16 rendered posters, slides,
screenshots, an infographic, a product card, a meme and photos under a 30-42 % two-line caption banner score >= 0.88.
The cut 0.45 sits between. On 60 unseen random scenes per class (seeds no parameter was tuned on; JPEG q85 / q50):
text layouts 59/60 >= 0.45 (the miss: three small lines on an empty poster, 0.36), two-to-three-line banners 60/60,
watermarked photos and photo crops 0/120 (max 0.34 / 0.37 and 0.25 / 0.32). One-line caption bands are a judgement
call and straddle the cut (median 0.51).

Failure modes (known; this is a cheap signal beside CLIP, not OCR):
- Regular rows of small high-contrast motifs on a flat ground pass every test: a starfield, pin headers and labels
  on a circuit board, keyboards, window grids, barcodes, railings, gratings of threads, fabric with small motifs in
  rows. Irregular textures (grass, gravel, foliage, fur, tissue, noise, brick) fail `flat`, fill or the stroke tests.
- Text directly on a busy photo without a banner or outline fails `flat` and is missed. A mixed screenshot where
  strong graphics (filled highlight boxes) raise the Otsu threshold above faint small text loses that text. Text
  below ~4 px at the working size (a 16 px font in a 1600 px-wide screenshot is at the limit) merges into bars.
- A single huge glyph (one CJK character filling the image) is no line; vertical CJK text (columns) is mostly missed;
  colour-only contrast (red on green of equal luma) is invisible in grey; handwriting and slanted text score low.

Speed (`benchmarks/bench_textness.py`, one process, 384 px, 500x400 JPEGs and rendered scenes): ~4 ms of detector
on top of the ~1.2 ms of a bare Pillow decode + resize, 170-195 images/s per core in CPU time (4.4x the bare decode;
measured on a shared 2-core machine at load ~3.5). Bad input never raises: `error` is then `decode_error` or
`decompression_bomb` (names from `reasons.py`) and the scores are None.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from danqing_assets.lib.reasons import DECODE_ERROR, DECOMPRESSION_BOMB

DEFAULT_WORK_SIZE = 384
"""Longest edge of the working copy, px. Pixel-valued parameters below are for this size and scale with it."""
DEFAULT_MAX_PIXELS = 40_000_000
"""Headers declaring more pixels are not decoded (`decompression_bomb`); the fetcher's and stage 3's cap."""
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF")
"""Formats decoded; others (EPS would call Ghostscript, PDF, ...) become `decode_error`."""

DEFAULT_TEXT_HEAVY_THRESHOLD = 0.45
"""`text_heaviness >= 0.45` (about 3 % of the image covered by text lines) calls an image text-heavy; see the module
docstring for the calibration."""

TEXT_HEAVY_BAND = 0.8
"""Images at least this text-heavy are *text-dominated*: stage 4 counts them as above its similarity band, and
stage 3's semantic dedup leaves them out of its merges. Higher than textness' own 0.45 cut ("has text lines"):
the band is about images *dominated* by text. Measured on the sample crawl (150 pages): 100 % of its posters score
>= 0.98, 2 % of its kept scenes >= 0.8 (21 % >= 0.45); on textness' calibration set every text-heavy image (posters,
slides, screenshots, 2+ line banners) scores >= 0.879, every photo <= 0.33."""

# Detector parameters (at DEFAULT_WORK_SIZE).
MIN_GRADIENT = 24
"""Floor of the Otsu edge threshold on the 3x3 morphological gradient, grey levels."""
CLOSE_WIDTH = 9
"""Horizontal closing width joining the strokes of a line, px."""
BAND_FRAC = 0.3
"""A row of a blob with fewer edge pixels than this share of its busiest row separates two text lines."""
RULE_LENGTH_FRAC = 0.2
"""Vertical edge runs longer than this share of the image height (table rules, frames, poles) are removed before the
closing: they would tie the lines of a table or a code listing into one blob."""
MIN_LINE_HEIGHT = 4.0
"""Lines lower than this (px) are not text (the ramp reaches 1 at MIN_LINE_HEIGHT + 1.5)."""
MAX_LINE_HEIGHT_FRAC = 0.45
"""Lines taller than this share of the shorter side are not text (ramp from 0.3)."""
SHARE_SCALE = 0.05
"""text_heaviness = 1 - exp(-text_area_share / SHARE_SCALE): 5 % of the image in text lines gives 0.63, 3.5 % 0.5."""

# Soft tests: (value at which the membership is 0, value at which it is 1); reversed pairs are decreasing ramps.
RAMP_ELONGATION = (1.5, 3.0)  # w / hl
RAMP_FILL = (0.35, 0.5)  # area / bbox area
RAMP_EDGE_RATIO = (0.4, 0.55)  # edge pixels / area
RAMP_FLAT = (0.45, 0.35)  # border gradient / inner gradient
RAMP_BORDER = (3.5, 2.5)  # border pixels / (2 x width x bands)
RAMP_RUNS_LOW = (0.25, 0.5)  # ink runs per line height
RAMP_RUNS_HIGH = (4.0, 3.0)
RAMP_STROKE_WIDTH = (1.3, 0.9)  # mean ink-run length / line height

TEXTNESS_KEYS: tuple[str, ...] = (
    "text_heaviness",
    "text_area_share",
    "text_edge_share",
    "stroke_score",
    "edge_density",
    "text_lines",
    "error",
    "error_detail",
)
"""Every result dict has exactly these keys (a stable schema for a DataFrame)."""

_SCORE_KEYS = TEXTNESS_KEYS[:6]
_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>")


def _ramp(x: np.ndarray, zero: float, one: float) -> np.ndarray:
    """0 at `zero`, 1 at `one`, linear between, clipped (decreasing when zero > one)."""
    return np.clip((x - zero) / (one - zero), 0.0, 1.0)


def _otsu(hist: np.ndarray) -> int:
    """Otsu's threshold of a histogram: the level t maximising the between-class variance of (<= t, > t)."""
    hist = hist.astype(np.float64)
    w0 = np.cumsum(hist)
    total = w0[-1]
    if total <= 0:
        return 0
    m0 = np.cumsum(hist * np.arange(hist.size))
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - total * m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0.0
    return int(np.argmax(between))


def _max3(a: np.ndarray) -> np.ndarray:
    """3x3 grey dilation with edge replication (separable, in uint8)."""
    p = np.pad(a, 1, mode="edge")
    r = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return np.maximum(np.maximum(r[:-2], r[1:-1]), r[2:])


def _min3(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, 1, mode="edge")
    r = np.minimum(np.minimum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return np.minimum(np.minimum(r[:-2], r[1:-1]), r[2:])


def _close_rows(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary closing along rows with a 1 x (2r + 1) segment (dilation, then erosion; the image border does not
    erode). Shifted boolean ORs and ANDs: several times faster than scipy's 1-D rank filters at this size."""
    H, W = mask.shape
    p = np.zeros((H, W + 2 * r), dtype=bool)
    p[:, r : r + W] = mask
    d = p.copy()
    for s in range(1, r + 1):
        d[:, s:] |= p[:, :-s]
        d[:, :-s] |= p[:, s:]
    d[:, :r] = True
    d[:, r + W :] = True
    out = d[:, r : r + W].copy()
    for s in range(1, r + 1):
        out &= d[:, r - s : r - s + W]
        out &= d[:, r + s : r + s + W]
    return out


def _long_column_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """The pixels of `mask` lying in a vertical run of at least `length` pixels (a binary opening with a vertical
    segment), by doubling: O(log length) shifted ANDs and ORs."""
    H = mask.shape[0]
    if length <= 1 or length > H:
        return mask.copy() if length <= 1 else np.zeros_like(mask)
    # runs[k][r] = mask[r .. r + 2**k - 1] all set (rows past the end count as unset)
    eroded = np.ones_like(mask)
    pieces: list[tuple[int, np.ndarray]] = []
    cur = mask
    step = 1
    while step <= length:
        pieces.append((step, cur))
        nxt = np.zeros_like(cur)
        nxt[: H - step] = cur[: H - step] & cur[step:]
        cur = nxt
        step *= 2
    offset = 0
    for step, run in reversed(pieces):
        if offset + step <= length:
            eroded[: H - offset] &= run[offset:]
            eroded[H - offset :] = False
            offset += step
    # dilate the run starts back over `length` rows
    out = eroded.copy()
    span = 1
    while span < length:
        k = min(span, length - span)
        out[k:] |= out[:-k]
        span += k
    return out


def _empty_scores(edge_density: float, details: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "text_heaviness": 0.0,
        "text_area_share": 0.0,
        "text_edge_share": 0.0,
        "stroke_score": 0.0,
        "edge_density": edge_density,
        "text_lines": 0,
    }
    if details:
        out["components"] = []
    return out


def score_grey(grey: np.ndarray, *, work_size: int = DEFAULT_WORK_SIZE, details: bool = False) -> dict[str, Any]:
    """The scores of a 2-D uint8 grey array already at working size (longest edge ~`work_size`).

    `details=True` adds `components`: one dict of features and `text_likeness` per component (for calibration).
    """
    from scipy import ndimage

    g = np.ascontiguousarray(grey, dtype=np.uint8)
    H, W = g.shape
    if H < 3 or W < 3:
        return _empty_scores(0.0, details)
    scale = work_size / DEFAULT_WORK_SIZE

    # 1. edges
    grad = _max3(g) - _min3(g)
    thr = max(_otsu(np.bincount(grad.ravel(), minlength=256)), MIN_GRADIENT)
    edge = grad > thr
    edge &= ~_long_column_runs(edge, max(round(RULE_LENGTH_FRAC * H), round(16 * scale)))
    n_edge = int(np.count_nonzero(edge))
    edge_density = n_edge / (H * W)
    if n_edge == 0:
        return _empty_scores(edge_density, details)

    # 2. line blobs
    k = max(3, round(CLOSE_WIDTH * scale) | 1)
    closed = _close_rows(edge, k // 2)
    labels, n = ndimage.label(closed)
    if n == 0:
        return _empty_scores(edge_density, details)

    # 3. per-component features. First a cheap prefilter on area and bounding box (necessary conditions for a
    # non-zero text-likeness), then every feature over the pixels of the remaining candidates only, as flat indices
    # into arrays padded with a zero row above and below and a zero column on the right (so the neighbours
    # idx - Wp, idx + 1 and idx + Wp always exist, and padding is "outside every blob").
    min_h = MIN_LINE_HEIGHT * scale
    slices = ndimage.find_objects(labels)
    hw = np.array([(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in slices], dtype=np.float64)
    area_all = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    cand = (
        (hw[:, 0] >= min_h)
        & (hw[:, 1] >= RAMP_ELONGATION[0] * min_h)
        & (area_all >= RAMP_FILL[0] * hw[:, 0] * hw[:, 1])
    )
    m = int(np.count_nonzero(cand)) + 1
    if m == 1:
        return _empty_scores(edge_density, details)
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[1:][cand] = np.arange(1, m, dtype=np.int32)
    bh = np.concatenate(([1.0], hw[cand, 0]))
    bw = np.concatenate(([1.0], hw[cand, 1]))
    area = np.concatenate(([0.0], area_all[cand]))
    safe_area = np.maximum(area, 1.0)

    Wp = W + 1
    lab_p = np.zeros((H + 2, Wp), dtype=np.int32)
    lab_p[1:-1, :W] = remap[labels]
    lab_f = lab_p.ravel()
    idx = np.flatnonzero(lab_f)
    lab_in = lab_f[idx]

    def padded(a: np.ndarray) -> np.ndarray:
        out = np.zeros((H + 2, Wp), dtype=a.dtype)
        out[1:-1, :W] = a
        return out.ravel()

    g_f = padded(g)
    grad_f = padded(grad)
    edge_f = padded(edge)
    g_in = g_f[idx].astype(np.float64)
    edge_in = edge_f[idx]
    lab_edge = lab_in[edge_in]
    n_edge_c = np.bincount(lab_edge, minlength=m).astype(np.float64)

    # line height from the per-row edge profile of each blob
    rows_edge = idx[edge_in] // Wp
    prof = np.bincount(lab_edge.astype(np.int64) * (H + 2) + rows_edge, minlength=m * (H + 2)).reshape(m, H + 2)
    busy = prof > BAND_FRAC * prof.max(axis=1, keepdims=True)
    busy[0] = False
    starts = busy[:, 1:] & ~busy[:, :-1]  # row 0 is padding, never busy
    bands = np.maximum(starts.sum(axis=1), 1).astype(np.float64)
    hl = np.maximum(busy.sum(axis=1) / bands, 1.0)

    # line shape and clean top/bottom border (cheap, unweighted counts), then the survivors only go on
    above = idx - Wp
    below = idx + Wp
    top = lab_f[above] != lab_in  # distinct blobs never touch vertically (they would be one 4-connected blob)
    same_v = lab_f[below] == lab_in
    bottom = ~same_v
    b_count = (np.bincount(lab_in[top], minlength=m) + np.bincount(lab_in[bottom], minlength=m)).astype(np.float64)
    border = b_count / (2.0 * bw * bands)
    fill = area / (bh * bw)
    edge_ratio = n_edge_c / safe_area
    elongation = bw / hl
    geometry = (
        _ramp(hl, min_h, min_h + 1.5 * scale)
        * _ramp(hl / min(H, W), MAX_LINE_HEIGHT_FRAC, 0.3)
        * _ramp(elongation, *RAMP_ELONGATION)
        * _ramp(fill, *RAMP_FILL)
        * _ramp(edge_ratio, *RAMP_EDGE_RATIO)
        * _ramp(border, *RAMP_BORDER)
    )
    geometry[0] = 0.0
    sel = geometry[lab_in] > 0
    idx, lab_in, g_in = idx[sel], lab_in[sel], g_in[sel]
    top, same_v, above, below = top[sel], same_v[sel], above[sel], below[sel]
    bottom = ~same_v

    # strokes: ink = minority side of the blob's mean grey
    mean = np.bincount(lab_in, weights=g_in, minlength=m) / safe_area
    dark_in = g_in < mean[lab_in]
    dark_f = np.zeros(lab_f.size, dtype=bool)
    dark_f[idx] = dark_in
    n_dark = np.bincount(lab_in[dark_in], minlength=m).astype(np.float64)
    ink = np.minimum(n_dark, area - n_dark)
    right = idx + 1
    same_h = lab_f[right] == lab_in
    flips = same_h & (dark_f[right] != dark_in)
    transitions = np.bincount(lab_in[flips], minlength=m).astype(np.float64)
    runs_per_em = transitions * hl / (2.0 * safe_area)
    stroke_width = ink / np.maximum(transitions / 2.0, 1.0) / hl

    # background: mean gradient just above and below the blob vs inside it
    b_lab = np.concatenate((lab_in[top], lab_in[bottom]))
    b_grad = np.concatenate((grad_f[above[top]], grad_f[below[bottom]])).astype(np.float64)
    b_mean = np.bincount(b_lab, weights=b_grad, minlength=m) / np.maximum(b_count, 1.0)
    in_mean = np.bincount(lab_in, weights=grad_f[idx].astype(np.float64), minlength=m) / safe_area
    flat = np.where(b_count > 0, b_mean / np.maximum(in_mean, 1.0), 1.0)

    background = _ramp(flat, *RAMP_FLAT)
    strokes = (
        _ramp(runs_per_em, *RAMP_RUNS_LOW)
        * _ramp(runs_per_em, *RAMP_RUNS_HIGH)
        * _ramp(stroke_width, *RAMP_STROKE_WIDTH)
    )
    likeness = geometry * background * strokes

    text_area_share = float(np.dot(likeness, area) / (H * W))
    text_edge_share = float(np.dot(likeness, n_edge_c) / n_edge)
    geo_area = float(np.dot(geometry, area))
    stroke_score = float(np.dot(geometry * strokes, area) / geo_area) if geo_area > 0 else 0.0
    result: dict[str, Any] = {
        "text_heaviness": 1.0 - math.exp(-text_area_share / SHARE_SCALE),
        "text_area_share": text_area_share,
        "text_edge_share": text_edge_share,
        "stroke_score": stroke_score,
        "edge_density": edge_density,
        "text_lines": int(np.dot(likeness >= 0.5, bands)),
    }
    if details:
        cols = {
            "height": bh, "width": bw, "area": area, "line_height": hl, "bands": bands, "fill": fill,
            "edge_ratio": edge_ratio, "elongation": elongation, "runs_per_em": runs_per_em,
            "stroke_width": stroke_width, "flat": flat, "border": border,
            "geometry": geometry, "background": background, "strokes": strokes, "text_likeness": likeness,
        }
        result["components"] = [{k: float(v[i]) for k, v in cols.items()} for i in range(1, m)]
    return result


# --- decoding ----------------------------------------------------------------------------------------------------


class ImageRejected(ValueError):
    """Raised by `load_work_grey`: `reason` is `decode_error` or `decompression_bomb` (`reasons.py`), `detail` why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _available_formats(formats: Sequence[str]) -> list[str]:
    from PIL import Image

    Image.init()
    return [f for f in formats if f.upper() in Image.OPEN]


def _to_grey(im: Any) -> Any:
    """Any Pillow mode -> 'L' exactly as stage 3 does it (alpha composited on white, 16-bit scaled to 8)."""
    from danqing_assets.lib.image_metrics import _to_grey as stage3_grey

    return stage3_grey(im)


def _upright(im: Any) -> Any:
    """Apply the EXIF orientation (text must be horizontal for this detector); a broken EXIF block is ignored."""
    from PIL import ImageOps

    try:
        if im.getexif().get(0x0112, 1) not in (1, None):
            return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001
        pass
    return im


def _work_copy(grey: Any, work_size: int) -> np.ndarray:
    """Resize a Pillow 'L' image so its longest edge is `work_size` (antialiased bilinear), as a uint8 array."""
    from PIL import Image

    w, h = grey.size
    s = work_size / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if size != (w, h):
        grey = grey.resize(size, Image.BILINEAR, reducing_gap=3.0 if s < 1 else None)
    return np.asarray(grey)


def load_work_grey(
    image: Any,
    *,
    work_size: int = DEFAULT_WORK_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] | None = DEFAULT_FORMATS,
) -> np.ndarray:
    """The grey working copy (uint8, longest edge `work_size`) of encoded bytes, a Pillow image or a uint8 array
    (H x W grey or H x W x 3/4 RGB/RGBA). Raises `ImageRejected` on bad input.

    Bytes: the header's size is checked against `max_pixels` before any pixel is decoded (None: no cap of ours;
    Pillow's own bomb check remains); JPEGs are decoded straight to luma at the smallest DCT scale that still covers
    the working size (libjpeg's draft mode); the EXIF orientation is applied; animated images give their first frame.
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
            raise ImageRejected(DECODE_ERROR, f"array must be uint8 HxW or HxWxC, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        w, h = image.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageRejected(DECOMPRESSION_BOMB, f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
        if w <= 0 or h <= 0:
            raise ImageRejected(DECODE_ERROR, f"invalid size {w}x{h}")
        return _work_copy(_to_grey(_upright(image)), work_size)
    if not image:
        raise ImageRejected(DECODE_ERROR, "empty payload")
    try:
        im = Image.open(io.BytesIO(image), formats=_available_formats(formats) if formats else None)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(DECOMPRESSION_BOMB, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a decode_error, not a crash
        raise ImageRejected(DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
    try:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageRejected(DECODE_ERROR, f"invalid size {w}x{h}")
        if max_pixels is not None and w * h > max_pixels:
            raise ImageRejected(DECOMPRESSION_BOMB, f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
        if im.format in ("JPEG", "MPO"):
            s = work_size / max(w, h)
            im.draft("L", (max(1, math.ceil(w * s)), max(1, math.ceil(h * s))))
        im.load()
        return _work_copy(_to_grey(_upright(im)), work_size)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(DECOMPRESSION_BOMB, str(exc)) from None
    except MemoryError as exc:
        raise ImageRejected(DECOMPRESSION_BOMB, f"MemoryError: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise ImageRejected(DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
    finally:
        im.close()


# --- public API --------------------------------------------------------------------------------------------------


def text_heaviness(
    image: Any,
    *,
    work_size: int = DEFAULT_WORK_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] | None = DEFAULT_FORMATS,
) -> dict[str, Any]:
    """Text-heaviness scores of one image (encoded bytes, a Pillow image or a uint8 array); keys `TEXTNESS_KEYS`.

    `text_heaviness` (0..1) is the score to threshold (`DEFAULT_TEXT_HEAVY_THRESHOLD`); `text_area_share` (0..1) the
    share of the image covered by text lines; the module docstring defines the others. Never raises on bad input:
    `error` is then `decode_error` or `decompression_bomb`, with `error_detail`, and every score is None.
    """
    result: dict[str, Any] = dict.fromkeys(TEXTNESS_KEYS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's palette-transparency / EXIF / truncation chatter
        try:
            grey = load_work_grey(image, work_size=work_size, max_pixels=max_pixels, formats=formats)
        except ImageRejected as exc:
            result["error"] = exc.reason
            result["error_detail"] = _OBJECT_REPR.sub("<bytes>", exc.detail)[:300]  # no addresses: stable across runs
            return result
    scores = score_grey(grey, work_size=work_size)
    for key in _SCORE_KEYS:
        result[key] = scores[key]
    return result


def iter_text_heaviness(images: Iterable[Any], **kwargs: Any) -> Iterator[dict[str, Any]]:
    """`text_heaviness` over a stream, in order."""
    for image in images:
        yield text_heaviness(image, **kwargs)


def _chunk(args: tuple[list[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    images, kwargs = args
    return list(iter_text_heaviness(images, **kwargs))


def text_heaviness_batch(
    images: Sequence[Any],
    *,
    workers: int = 1,
    chunk_size: int = 128,
    work_size: int = DEFAULT_WORK_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] | None = DEFAULT_FORMATS,
) -> list[dict[str, Any]]:
    """`text_heaviness` for many images, in input order; `workers` > 1 spreads chunks over processes."""
    kwargs = {"work_size": work_size, "max_pixels": max_pixels, "formats": formats}
    images = list(images)
    if workers <= 1 or len(images) <= chunk_size:
        return list(iter_text_heaviness(images, **kwargs))
    from concurrent.futures import ProcessPoolExecutor

    chunks = [(images[i : i + chunk_size], kwargs) for i in range(0, len(images), chunk_size)]
    out: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_chunk, chunks):
            out.extend(part)
    return out
