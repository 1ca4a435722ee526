"""Text-heaviness scores on real photos (scikit-image / scikit-learn samples), textures and noise, and text-heavy
images (posters, slides, screenshots, caption banners) rendered here with the fonts this machine has.

Fonts: DejaVu (Sans, Sans Bold, Serif, Mono, Condensed) from /usr/share/fonts or matplotlib's copy, else Pillow's
built-in scalable font (`ImageFont.load_default(size)`); Pillow's bitmap font scaled up 3x for one slide. No CJK font
is assumed (the reference machine has none): Chinese text is stood in for by procedural Hanzi-like glyphs (square
cells of horizontal, vertical and falling strokes, boxes and dots, in left-right / top-bottom layouts, regular and
bold); a real CJK font found by `fc-list :lang=zh` adds one more case.

The calibration table (`CASES`, printed by `test_named_cases_separate_at_the_threshold` under `pytest -s`) labels
every named case `text` (must score >= DEFAULT_TEXT_HEAVY_THRESHOLD), `photo` (must score below) or `near` (a
judgement call, asserted only to fall between the two groups), with its provenance: "first" = the set the detector
was designed on, "second" = built afterwards. The seeded random scenes are the unseen check.

The benchmark `benchmarks/bench_textness.py` imports the scene builders from here.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from danqing_assets.lib import reasons
from danqing_assets.lib.textness import DEFAULT_TEXT_HEAVY_THRESHOLD as THRESHOLD
from danqing_assets.lib.textness import (
    TEXTNESS_KEYS,
    _close_rows,
    _long_column_runs,
    _otsu,
    load_work_grey,
    score_grey,
    text_heaviness,
    text_heaviness_batch,
)

skimage_data = pytest.importorskip("skimage.data")

# --- fonts ---------------------------------------------------------------------------------------------------------

_FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/TTF"), Path("/usr/share/fonts/dejavu")]


@functools.cache
def _font_dirs() -> tuple[Path, ...]:
    dirs = [d for d in _FONT_DIRS if d.is_dir()]
    try:
        import matplotlib

        dirs.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf")
    except ImportError:
        pass
    return tuple(dirs)


@functools.cache
def font(size: int, style: str = "DejaVuSans") -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A DejaVu face (`style` is its file stem) at `size` px, else Pillow's built-in scalable font."""
    for d in _font_dirs():
        p = d / f"{style}.ttf"
        if p.is_file():
            return ImageFont.truetype(str(p), size)
    return ImageFont.load_default(size=size)


def font_source() -> str:
    for d in _font_dirs():
        if (d / "DejaVuSans.ttf").is_file():
            return f"DejaVu ({d})"
    return "Pillow built-in (load_default)"


@functools.cache
def cjk_font_path() -> str | None:
    """A real CJK font file if fontconfig knows one (none on the reference machine)."""
    if shutil.which("fc-list") is None:
        return None
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
    return files[0] if files else None


# --- Hanzi-like glyphs -----------------------------------------------------------------------------------------------


def _part_strokes(rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float) -> list[tuple]:
    """Strokes of one glyph component inside (x0, y0, x1, y1): ('line', pts) or ('box', rect)."""
    w, h = x1 - x0, y1 - y0
    strokes: list[tuple] = []
    kind = rng.integers(0, 4)
    if kind == 0:  # 口-like box with an inner stroke
        m = 0.15
        strokes.append(("box", (x0 + m * w, y0 + m * h, x1 - m * w, y1 - m * h)))
        if rng.random() < 0.6:
            yy = y0 + h / 2
            strokes.append(("line", [(x0 + m * w, yy), (x1 - m * w, yy)]))
    n_h = int(rng.integers(1, 4)) if kind != 0 else 0
    for k in range(n_h):  # horizontal strokes, evenly spread
        yy = y0 + h * (k + 1) / (n_h + 1) + rng.uniform(-0.05, 0.05) * h
        a, b = rng.uniform(0.05, 0.25), rng.uniform(0.75, 0.95)
        strokes.append(("line", [(x0 + a * w, yy), (x0 + b * w, yy)]))
    if kind in (1, 2):  # a vertical stroke crossing them
        xx = x0 + w * rng.uniform(0.35, 0.65)
        strokes.append(("line", [(xx, y0 + 0.08 * h), (xx, y1 - 0.05 * h)]))
    if kind in (2, 3):  # left-falling and right-falling strokes
        strokes.append(("line", [(x0 + 0.55 * w, y0 + 0.35 * h), (x0 + 0.1 * w, y1 - 0.08 * h)]))
        strokes.append(("line", [(x0 + 0.5 * w, y0 + 0.45 * h), (x1 - 0.08 * w, y1 - 0.05 * h)]))
    if rng.random() < 0.4:  # a dot
        cx, cy = x0 + w * rng.uniform(0.3, 0.7), y0 + 0.08 * h
        strokes.append(("line", [(cx - 0.05 * w, cy), (cx + 0.06 * w, cy + 0.1 * h)]))
    return strokes


def draw_hanzi_like(draw: ImageDraw.ImageDraw, xy: tuple[float, float], size: int, n: int, fill, seed: int,
                    bold: bool = False, spacing: float = 0.08) -> float:
    """Draw `n` Hanzi-like glyphs of em `size` from `xy` (top left) to the right; return the x after the last."""
    rng = np.random.default_rng(seed)
    x, y = xy
    sw = max(1, round(size / (7 if bold else 11)))
    for _ in range(n):
        g0, g1 = x + 0.06 * size, x + 0.94 * size
        t0, t1 = y + 0.06 * size, y + 0.94 * size
        layout = rng.integers(0, 3)
        if layout == 0:
            parts = [(g0, t0, g1, t1)]
        elif layout == 1:
            s = g0 + (g1 - g0) * rng.uniform(0.35, 0.5)
            parts = [(g0, t0, s, t1), (s, t0, g1, t1)]
        else:
            s = t0 + (t1 - t0) * rng.uniform(0.35, 0.5)
            parts = [(g0, t0, g1, s), (g0, s, g1, t1)]
        for part in parts:
            for kind, geom in _part_strokes(rng, *part):
                if kind == "box":
                    draw.rectangle(geom, outline=fill, width=sw)
                else:
                    draw.line(geom, fill=fill, width=sw)
        x += size * (1 + spacing)
    return x


# --- scenes ----------------------------------------------------------------------------------------------------------

LATIN = (
    "Spring Festival sale starts on 2025-01-18",
    "Free shipping for orders above 99 yuan",
    "Scan the QR code to join the member club",
    "Opening hours 9:00 - 21:30, Monday to Sunday",
    "Hotline 400-820-8820 / www.example.cn",
    "All prices include VAT. Terms apply.",
)


def _photo(name: str) -> Image.Image:
    a = getattr(skimage_data, name)()
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    im = Image.fromarray(a)
    return im.convert("RGB")


def _gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    w, h = size
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    arr = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return Image.fromarray(np.broadcast_to(arr, (h, w, 3)).astype(np.uint8))


def slide_latin() -> Image.Image:
    im = Image.new("RGB", (800, 600), (250, 250, 247))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 800, 90), fill=(20, 60, 130))
    d.text((40, 22), "Quarterly results 2025 Q2", font=font(42, "DejaVuSans-Bold"), fill=(255, 255, 255))
    for i, line in enumerate(LATIN[:5]):
        d.ellipse((44, 137 + i * 80, 56, 149 + i * 80), fill=(20, 60, 130))
        d.text((72, 125 + i * 80), line[:34], font=font(28), fill=(30, 30, 30))
    return im


def poster_latin() -> Image.Image:
    im = _gradient((600, 800), (200, 30, 40), (250, 150, 40))
    d = ImageDraw.Draw(im)
    d.text((40, 60), "SUMMER", font=font(110, "DejaVuSans-Bold"), fill=(255, 250, 230))
    d.text((40, 190), "SALE 50%", font=font(110, "DejaVuSans-Bold"), fill=(255, 250, 230))
    for i, line in enumerate(LATIN):
        d.text((40, 360 + i * 60), line[:30], font=font(30), fill=(255, 255, 255))
    d.text((40, 730), "2025.06.18 - 2025.06.30", font=font(34, "DejaVuSans-Bold"), fill=(60, 0, 0))
    return im


def poster_hanzi_like() -> Image.Image:
    im = _gradient((600, 800), (250, 235, 200), (240, 200, 150))
    d = ImageDraw.Draw(im)
    draw_hanzi_like(d, (40, 50), 120, 4, (170, 20, 20), seed=1, bold=True)
    for i in range(7):
        draw_hanzi_like(d, (40, 240 + i * 70), 40, 12, (40, 30, 20), seed=10 + i)
    d.text((40, 740), "2025.06.18", font=font(32, "DejaVuSans-Bold"), fill=(170, 20, 20))
    return im


def slide_bitmap_font() -> Image.Image:
    """Pillow's bitmap font (the no-font fallback), drawn at 1x and scaled up 3x with nearest neighbour."""
    small = Image.new("RGB", (267, 200), (255, 255, 255))
    d = ImageDraw.Draw(small)
    bmp = ImageFont.load_default_imagefont()
    d.text((10, 8), "MEETING AGENDA 2025-03-14", font=bmp, fill=(180, 0, 0))
    for i, line in enumerate(LATIN):
        d.text((10, 34 + i * 26), line[:40], font=bmp, fill=(0, 0, 0))
    return small.resize((801, 600), Image.NEAREST)


def screenshot_document() -> Image.Image:
    """A desktop window: title bar, side bar, 28 lines of 14 px text on white."""
    im = Image.new("RGB", (1000, 700), (236, 236, 236))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 1000, 36), fill=(45, 45, 48))
    d.text((14, 9), "report_final_v3.docx - Editor", font=font(15), fill=(220, 220, 220))
    d.rectangle((0, 36, 200, 700), fill=(246, 246, 246))
    for i in range(22):
        d.text((16, 52 + i * 28), f"Section {i + 1}.{i % 4}", font=font(13), fill=(60, 60, 60))
    d.rectangle((220, 52, 980, 690), fill=(255, 255, 255))
    rng = np.random.default_rng(3)
    for i in range(28):
        words = " ".join(LATIN[int(k)] for k in rng.integers(0, len(LATIN), 3))
        n = int(rng.integers(60, 88)) if i % 7 != 6 else int(rng.integers(15, 40))
        d.text((240, 66 + i * 22), words[:n], font=font(14), fill=(20, 20, 20))
    return im


def screenshot_chat() -> Image.Image:
    """A phone chat screenshot: bubbles of Hanzi-like text (the common WeChat-screenshot image)."""
    im = Image.new("RGB", (720, 1280), (237, 237, 237))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 720, 120), fill=(247, 247, 247))
    draw_hanzi_like(d, (290, 50), 34, 4, (0, 0, 0), seed=99)
    rng = np.random.default_rng(5)
    y = 150
    for i in range(9):
        n_lines = int(rng.integers(1, 3))
        n_chars = int(rng.integers(5, 15)) if n_lines == 1 else 15
        w = n_chars * 34 + 40
        right = i % 2 == 1
        x0 = 720 - 110 - w if right else 110
        d.rectangle((20 if not right else 630, y, 90 if not right else 700, y + 70), fill=(120, 150, 190))
        d.rounded_rectangle((x0, y, x0 + w, y + 24 + 46 * n_lines), 10, fill=(149, 236, 105) if right else (255,) * 3)
        for k in range(n_lines):
            draw_hanzi_like(d, (x0 + 20, y + 14 + 46 * k), 30, n_chars, (20, 20, 20), seed=100 + 10 * i + k,
                            spacing=0.1)
        y += 24 + 46 * n_lines + 40
    return im


def screenshot_code() -> Image.Image:
    """A dark-theme code editor: many short coloured monospace lines."""
    im = Image.new("RGB", (900, 600), (30, 30, 30))
    d = ImageDraw.Draw(im)
    colours = [(86, 156, 214), (206, 145, 120), (156, 220, 254), (220, 220, 170), (106, 153, 85)]
    rng = np.random.default_rng(7)
    for i in range(30):
        indent = int(rng.integers(0, 4)) * 4
        d.text((10, 8 + i * 19), f"{i + 1:3d}", font=font(14, "DejaVuSansMono"), fill=(110, 110, 110))
        line = " " * indent + LATIN[i % len(LATIN)].lower().replace(" ", "_")[: int(rng.integers(12, 60))]
        d.text((60, 8 + i * 19), line, font=font(14, "DejaVuSansMono"), fill=colours[i % len(colours)])
    return im


def banner_over_photo(photo: str = "coffee", share: float = 0.42) -> Image.Image:
    """A photo with an opaque caption banner over its lower `share` (the e-commerce/news thumbnail layout)."""
    im = _photo(photo).resize((600, 400))
    d = ImageDraw.Draw(im)
    top = round(400 * (1 - share))
    d.rectangle((0, top, 600, 400), fill=(150, 20, 25))
    d.text((24, top + 14), "New arrivals 2025", font=font(44, "DejaVuSans-Bold"), fill=(255, 255, 255))
    draw_hanzi_like(d, (24, top + 76), 38, 13, (255, 230, 120), seed=21, bold=True)
    return im


def meme_over_photo() -> Image.Image:
    """Outlined white captions at the top and bottom of a photo (no banner): text over texture."""
    im = _photo("chelsea").resize((600, 400))
    d = ImageDraw.Draw(im)
    f = font(48, "DejaVuSans-Bold")
    d.text((20, 12), "WHEN THE CODE", font=f, fill=(255, 255, 255), stroke_width=3, stroke_fill=(0, 0, 0))
    d.text((20, 330), "FINALLY COMPILES", font=f, fill=(255, 255, 255), stroke_width=3, stroke_fill=(0, 0, 0))
    return im


def watermark_photo(photo: str = "astronaut") -> Image.Image:
    """A small semi-transparent watermark in the corner: not text-heavy."""
    im = _photo(photo).resize((600, 600)).convert("RGBA")
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    d.text((380, 568), "(c) photos.example.cn", font=font(16), fill=(255, 255, 255, 170))
    return Image.alpha_composite(im, layer).convert("RGB")


def real_cjk_poster() -> Image.Image | None:
    path = cjk_font_path()
    if path is None:
        return None
    im = Image.new("RGB", (600, 800), (255, 245, 230))
    d = ImageDraw.Draw(im)
    d.text((40, 50), "春节大促销", font=ImageFont.truetype(path, 100), fill=(180, 20, 20))
    body = ImageFont.truetype(path, 36)
    for i, line in enumerate(["全场商品满九十九元包邮", "扫码加入会员俱乐部", "营业时间早九点至晚九点", "咨询热线四零零八二零",
                              "活动最终解释权归本店所有", "地址北京市朝阳区某某路"]):
        d.text((40, 240 + i * 70), line, font=body, fill=(40, 30, 20))
    return im


def noise(kind: str, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        a = rng.integers(0, 256, size=(400, 400, 3), dtype=np.uint8)
    elif kind == "gaussian":
        a = np.clip(rng.normal(128, 40, size=(400, 400)), 0, 255).astype(np.uint8)
    elif kind == "fabric":  # a woven pattern: crossed gratings + noise
        y, x = np.mgrid[0:400, 0:400]
        warp = np.sin(2 * np.pi * x / 7.0) * (np.sin(2 * np.pi * y / 14.0) > 0)
        weft = np.sin(2 * np.pi * y / 7.0) * (np.sin(2 * np.pi * y / 14.0) <= 0)
        a = np.clip(128 + 60 * (warp + weft) + rng.normal(0, 12, size=(400, 400)), 0, 255).astype(np.uint8)
    elif kind == "blobs":  # smoothed noise: foliage-like mottling at several scales
        from scipy import ndimage

        a = sum(ndimage.gaussian_filter(rng.normal(0, 1, size=(400, 400)), s) * s for s in (1.0, 2.0, 4.0))
        a = np.clip(128 + a / a.std() * 50, 0, 255).astype(np.uint8)
    else:
        raise ValueError(kind)
    return Image.fromarray(a)


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        kw.setdefault("quality", 88)
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# --- second set of scenes (built after the first design; screenshot_hd then led to looser stroke tests) -----------


def slide_dark_serif() -> Image.Image:
    """Light serif text on a dark slide (inverse polarity)."""
    im = Image.new("RGB", (960, 540), (25, 32, 48))
    d = ImageDraw.Draw(im)
    d.text((50, 40), "Roadmap 2026", font=font(56, "DejaVuSerif-Bold"), fill=(250, 210, 90))
    for i, line in enumerate(LATIN[1:6]):
        d.text((70, 150 + i * 70), "- " + line[:36], font=font(30, "DejaVuSerif"), fill=(235, 235, 235))
    return im


def product_card() -> Image.Image:
    """E-commerce card: product photo on the left half, name, price and selling points on the right."""
    im = Image.new("RGB", (800, 500), (255, 255, 255))
    im.paste(_photo("coffee").crop((100, 40, 460, 400)).resize((360, 360)), (20, 70))
    d = ImageDraw.Draw(im)
    draw_hanzi_like(d, (410, 60), 36, 8, (30, 30, 30), seed=301, bold=True)
    d.text((410, 120), "RMB 39.90", font=font(48, "DejaVuSans-Bold"), fill=(220, 30, 30))
    for i in range(5):
        draw_hanzi_like(d, (410, 200 + i * 52), 26, 13, (90, 90, 90), seed=310 + i)
    return im


def infographic_hanzi() -> Image.Image:
    """Coloured boxes, each holding a heading and two lines of Hanzi-like text."""
    im = Image.new("RGB", (700, 900), (245, 245, 240))
    d = ImageDraw.Draw(im)
    colours = [(230, 80, 60), (60, 140, 220), (90, 170, 90), (240, 170, 40)]
    for i, c in enumerate(colours):
        y = 30 + i * 215
        d.rectangle((30, y, 670, y + 190), fill=c)
        draw_hanzi_like(d, (55, y + 20), 44, 6, (255, 255, 255), seed=400 + i, bold=True)
        for k in range(2):
            draw_hanzi_like(d, (55, y + 90 + k * 45), 30, 17, (255, 255, 255), seed=410 + 10 * i + k)
    return im


def screenshot_hd() -> Image.Image:
    """A 1600x900 web page screenshot, 16 px text: about 4 px high at the 384 px working size (the detection limit)."""
    im = Image.new("RGB", (1600, 900), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 1600, 60), fill=(30, 100, 200))
    d.text((30, 14), "example.cn  News  Sports  Finance  Tech", font=font(26, "DejaVuSans-Bold"), fill=(255, 255, 255))
    rng = np.random.default_rng(11)
    for col in range(2):
        for i in range(30):
            words = " ".join(LATIN[int(k)] for k in rng.integers(0, len(LATIN), 2))
            d.text((40 + col * 800, 90 + i * 26), words[: int(rng.integers(40, 75))], font=font(16), fill=(30, 30, 30))
    return im


def photo_variant(name: str, seed: int) -> Image.Image:
    """A random crop / rescale / mirror of a sample photo (the benchmark's "real-sized JPEG" recipe)."""
    rng = np.random.default_rng(seed)
    src = _photo(name)
    tw, th = (500, 400) if rng.random() < 0.5 else (400, 500)
    cover = max(tw / src.width, th / src.height) * rng.uniform(1.0, 1.8)
    w, h = max(tw, round(src.width * cover)), max(th, round(src.height * cover))
    im = src.resize((w, h), Image.BILINEAR)
    x, y = int(rng.integers(0, w - tw + 1)), int(rng.integers(0, h - th + 1))
    im = im.crop((x, y, x + tw, y + th))
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else im


def logo_watermark(photo: str = "coffee") -> Image.Image:
    """A bolder watermark: a site name in 22 px bold over the bottom-left corner."""
    im = _photo(photo).resize((640, 427))
    d = ImageDraw.Draw(im)
    d.text((14, 390), "www.example-shop.cn", font=font(22, "DejaVuSans-Bold"), fill=(255, 255, 255),
           stroke_width=1, stroke_fill=(60, 60, 60))
    return im


# --- random scenes (seeded). Seeds 100-129 were used to choose the final score formula and the border ramp; seeds
# 200-259 were first scored after the last parameter change, and none was changed since (the "unseen" numbers). ---

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins", "camera", "hubble_deep_field", "immunohistochemistry",
           "grass", "gravel", "brick", "retina", "moon", "cell")
_FACES = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSansMono", "DejaVuSansCondensed")


def random_text_image(seed: int) -> Image.Image:
    """A poster/slide/notice: flat or gradient ground, 3-12 lines of Latin or Hanzi-like text of random size."""
    rng = np.random.default_rng(seed)
    w, h = [(800, 600), (600, 800), (1000, 700), (720, 1280), (640, 640)][int(rng.integers(0, 5))]
    light = rng.random() < 0.6
    ground = tuple(int(v) for v in (rng.integers(200, 256, 3) if light else rng.integers(0, 70, 3)))
    im = _gradient((w, h), ground, tuple(max(0, min(255, c + int(rng.integers(-40, 40)))) for c in ground))
    d = ImageDraw.Draw(im)
    ink = tuple(int(v) for v in (rng.integers(0, 90, 3) if light else rng.integers(190, 256, 3)))
    y = int(rng.integers(20, 60))
    n_lines = int(rng.integers(3, 13))
    for i in range(n_lines):
        size = int(rng.integers(max(14, w // 45), max(15, w // (10 if i == 0 else 22))))
        x = int(rng.integers(20, max(21, w // 8)))
        if rng.random() < 0.5:
            n_chars = max(2, min(int((w - x - 20) / (size * 1.08)), int(rng.integers(4, 20))))
            draw_hanzi_like(d, (x, y), size, n_chars, ink, seed=seed * 100 + i, bold=bool(rng.random() < 0.3))
        else:
            face = _FACES[int(rng.integers(0, len(_FACES)))]
            text = LATIN[int(rng.integers(0, len(LATIN)))]
            f = font(size, face)
            while len(text) > 4 and d.textlength(text, font=f) > w - x - 20:
                text = text[:-1]
            d.text((x, y), text, font=f, fill=ink)
        y += int(size * rng.uniform(1.3, 2.0))
        if y > h - size - 10:
            break
    return im


def random_banner(seed: int, lines: tuple[int, int] = (2, 3)) -> Image.Image:
    """A sample photo with an opaque banner over 35-50 % of it holding `lines` (inclusive range) lines of caption."""
    rng = np.random.default_rng(seed)
    im = photo_variant(_PHOTOS[int(rng.integers(0, len(_PHOTOS)))], seed)
    w, h = im.size
    share = rng.uniform(0.35, 0.5)
    top = round(h * (1 - share)) if rng.random() < 0.7 else 0
    d = ImageDraw.Draw(im)
    d.rectangle((0, top, w, top + round(h * share)), fill=tuple(int(v) for v in rng.integers(0, 200, 3)))
    y = top + 12
    for i in range(int(rng.integers(lines[0], lines[1] + 1))):
        size = int(rng.integers(26, 44))
        if rng.random() < 0.5:
            draw_hanzi_like(d, (16, y), size, min(12, int((w - 40) / (size * 1.08))), (255, 255, 255),
                            seed=seed * 10 + i, bold=True)
        else:
            d.text((16, y), LATIN[i][:22], font=font(size, "DejaVuSans-Bold"), fill=(255, 255, 255))
        y += int(size * 1.5)
    return im


def random_watermark(seed: int) -> Image.Image:
    """A sample photo with a 12-20 px site name or (c) line in a random corner."""
    rng = np.random.default_rng(seed)
    im = photo_variant(_PHOTOS[int(rng.integers(0, len(_PHOTOS)))], seed).convert("RGBA")
    w, h = im.size
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    f = font(int(rng.integers(12, 21)), "DejaVuSans-Bold" if rng.random() < 0.5 else "DejaVuSans")
    text = ["(c) photos.example.cn", "weibo.com/example", "@example_studio", "www.example.com.cn"][int(rng.integers(0, 4))]
    tw = d.textlength(text, font=f)
    x = 10 if rng.random() < 0.5 else int(w - tw - 10)
    y = 8 if rng.random() < 0.3 else h - f.size - 12
    d.text((x, y), text, font=f, fill=(255, 255, 255, int(rng.integers(140, 256))))
    return Image.alpha_composite(im, layer).convert("RGB")


# --- the calibration table ---------------------------------------------------------------------------------------------


def _sklearn(name: str) -> Callable[[], Image.Image]:
    def build() -> Image.Image:
        datasets = pytest.importorskip("sklearn.datasets")
        ds = datasets.load_sample_images()
        for fname, img in zip(ds.filenames, ds.images, strict=True):
            if os.path.basename(fname) == name:
                return Image.fromarray(img)
        pytest.skip(f"{name} not in scikit-learn's sample images")

    return build


def _sk(name: str) -> Callable[[], Image.Image]:
    return lambda: _photo(name)


# name -> (builder, label, provenance). Every image is scored as a JPEG (quality 88), as the pipeline sees it.
# "first": the set the detector was designed on; "second": built afterwards (screenshot_hd then changed the stroke ramps).
CASES: dict[str, tuple[Callable[[], Image.Image], str, str]] = {
    # real photos: scikit-image samples (public-domain / CC0 photographs shipped with the package)
    "sk:astronaut": (_sk("astronaut"), "photo", "first; NASA portrait with mission patches (small real text)"),
    "sk:chelsea": (_sk("chelsea"), "photo", "first; cat, whiskers = thin one-orientation strokes"),
    "sk:coffee": (_sk("coffee"), "photo", "first"),
    "sk:rocket": (_sk("rocket"), "photo", "first"),
    "sk:coins": (_sk("coins"), "photo", "first; rows of round objects"),
    "sk:camera": (_sk("camera"), "photo", "first"),
    "sk:hubble_deep_field": (_sk("hubble_deep_field"), "photo",
                             "first; the hardest photo: small bright galaxies on a flat black ground"),
    "sk:immunohistochemistry": (_sk("immunohistochemistry"), "photo", "first; dense tissue texture"),
    "sk:retina": (_sk("retina"), "photo", "first"),
    "sk:moon": (_sk("moon"), "photo", "first"),
    "sk:cell": (_sk("cell"), "photo", "first"),
    "sk:clock": (_sk("clock"), "photo", "first; motion-blurred clock, thin hands"),
    "sk:colorwheel": (_sk("colorwheel"), "photo", "first; smooth colour, no edges"),
    "sk:cat": (_sk("cat"), "photo", "second"),
    "skl:china.jpg": (_sklearn("china.jpg"), "photo", "first; scikit-learn sample, temple roofs and foliage"),
    "skl:flower.jpg": (_sklearn("flower.jpg"), "photo", "first; scikit-learn sample"),
    "v:coffee#2": (lambda: photo_variant("coffee", 2), "photo", "second; web-sized crop"),
    "v:rocket#2": (lambda: photo_variant("rocket", 2), "photo", "second; web-sized crop"),
    "v:hubble_deep_field#2": (lambda: photo_variant("hubble_deep_field", 2), "photo", "second; web-sized crop"),
    # textures and noise (the brief's "must not score as text")
    "sk:grass": (_sk("grass"), "photo", "first; foliage texture"),
    "sk:gravel": (_sk("gravel"), "photo", "first; gravel texture"),
    "sk:brick": (_sk("brick"), "photo", "first; brick wall: rows of horizontal edges"),
    "noise:uniform": (lambda: noise("uniform"), "photo", "first; uniform RGB noise"),
    "noise:gaussian": (lambda: noise("gaussian"), "photo", "first; Gaussian grey noise"),
    "noise:fabric": (lambda: noise("fabric"), "photo", "first; bands of fine vertical threads (a grating: the known "
                     "failure mode) alternating with horizontal ones; 0.0 or 0.33 depending on JPEG quality"),
    "noise:blobs": (lambda: noise("blobs"), "photo", "first; multi-scale mottling, foliage-like"),
    # photos with a small watermark: real text, but not text-heavy
    "watermark_photo": (watermark_photo, "photo", "first; 16 px semi-transparent (c) line on astronaut"),
    "logo_watermark": (logo_watermark, "photo", "second; 22 px bold outlined site name on coffee"),
    "watermark_coffee": (lambda: watermark_photo("coffee"), "photo", "second"),
    # text-heavy: rendered here
    "slide_latin": (slide_latin, "text", "first; DejaVu Sans title bar + 5 bullets"),
    "poster_latin": (poster_latin, "text", "first; 110 px bold title over a red-orange gradient + 7 lines"),
    "poster_hanzi_like": (poster_hanzi_like, "text", "first; 120 px bold Hanzi-like title + 7 lines of 12 glyphs"),
    "slide_bitmap_font": (slide_bitmap_font, "text", "first; Pillow bitmap font scaled 3x (blocky)"),
    "screenshot_document": (screenshot_document, "text", "first; 1000x700 editor, 28 lines of 14 px text"),
    "screenshot_chat": (screenshot_chat, "text", "first; 720x1280 phone chat, bubbles of Hanzi-like text"),
    "screenshot_code": (screenshot_code, "text", "first; dark editor, 30 lines of 14 px monospace"),
    "banner_over_photo": (banner_over_photo, "text", "first; coffee under a 42 % banner, 2 lines"),
    "meme_over_photo": (meme_over_photo, "text", "first; 48 px outlined captions over chelsea, no banner"),
    "sk:page": (_sk("page"), "text", "first; real photo of a printed book page (scikit-image)"),
    "slide_dark_serif": (slide_dark_serif, "text", "second; light serif text on a dark slide"),
    "product_card": (product_card, "text", "second; e-commerce card, photo left, Hanzi-like text and price right"),
    "infographic_hanzi": (infographic_hanzi, "text", "second; four coloured boxes of Hanzi-like text"),
    "screenshot_hd": (screenshot_hd, "text", "second; 1600x900 page, 16 px text = ~4 px at work size (the limit)"),
    "banner30_rocket": (lambda: banner_over_photo("rocket", 0.30), "text", "second; 30 % banner, 2 lines"),
    "banner42_astronaut": (lambda: banner_over_photo("astronaut", 0.42), "text", "second; 42 % banner, 2 lines"),
    # near the cut: judgement calls
    "sk:text": (_sk("text"), "near", "first; photo of handwritten maths on slanted paper (scikit-image): text, but "
                "handwritten and sparse; 0.34-0.43 with the JPEG quality; asserted between the photos and the print"),
    "banner20_chelsea": (lambda: banner_over_photo("chelsea", 0.20), "near", "second; a 20 % banner, its second line "
                         "cut off by the frame; asserted between the photos and the print"),
}


@functools.cache
def _scores() -> dict[str, dict]:
    out = {}
    for name, (build, label, _) in CASES.items():
        try:
            im = build()
        except pytest.skip.Exception:
            continue
        out[name] = text_heaviness(encode(im))
    return out


def score_table() -> str:
    rows = sorted(_scores().items(), key=lambda kv: -kv[1]["text_heaviness"])
    lines = [f"{'case':26s} {'label':5s} {'heavi':>6s} {'area':>6s} {'edgesh':>6s} {'stroke':>6s} {'edges':>6s} lines"]
    for name, r in rows:
        lines.append(f"{name:26s} {CASES[name][1]:5s} {r['text_heaviness']:6.3f} {r['text_area_share']:6.3f} "
                     f"{r['text_edge_share']:6.3f} {r['stroke_score']:6.3f} {r['edge_density']:6.3f} {r['text_lines']:5d}")
    return "\n".join(lines)


def test_named_cases_separate_at_the_threshold() -> None:
    scores = _scores()
    table = score_table()
    print(f"\nfonts: {font_source()}; CJK font: {cjk_font_path()}\n{table}")
    text = {n: r["text_heaviness"] for n, r in scores.items() if CASES[n][1] == "text"}
    photo = {n: r["text_heaviness"] for n, r in scores.items() if CASES[n][1] == "photo"}
    assert len(text) >= 16 and len(photo) >= 27, table
    for n, v in text.items():
        assert v >= THRESHOLD, (n, v, table)
    for n, v in photo.items():
        assert v < THRESHOLD, (n, v, table)
    # margins when the cut was chosen: text >= 0.88, photos <= 0.33 (the fabric grating; real photos <= 0.29)
    assert min(text.values()) >= THRESHOLD + 0.3, table
    assert max(photo.values()) <= THRESHOLD - 0.05, table
    for n in ("sk:text", "banner20_chelsea"):  # near: between the two groups
        assert max(photo.values()) < scores[n]["text_heaviness"] < min(text.values()), (n, table)


def test_textures_and_noise_find_no_text() -> None:
    scores = _scores()
    for n in ("sk:grass", "sk:gravel", "sk:brick", "noise:uniform", "noise:gaussian", "noise:blobs",
              "sk:immunohistochemistry", "skl:china.jpg"):  # not noise:fabric: a grating, the known failure mode
        if n in scores:
            assert scores[n]["text_heaviness"] < 0.1, (n, scores[n])


def test_scores_are_well_formed() -> None:
    for n, r in _scores().items():
        assert tuple(r) == TEXTNESS_KEYS
        assert r["error"] is None and r["error_detail"] is None
        for key in ("text_heaviness", "text_area_share", "text_edge_share", "stroke_score", "edge_density"):
            assert isinstance(r[key], float) and 0.0 <= r[key] <= 1.0, (n, key, r[key])
        assert isinstance(r["text_lines"], int) and r["text_lines"] >= 0
        assert r["text_heaviness"] == pytest.approx(1 - np.exp(-r["text_area_share"] / 0.05))


def test_more_text_scores_higher() -> None:
    """On one photo: no text and a small watermark both ~0 < a 1-line banner < 2 lines < 3 lines; a poster scores
    above its own upper half."""
    base = photo_variant("rocket", 7)
    with_mark = base.copy()
    ImageDraw.Draw(with_mark).text((10, base.height - 26), "(c) photos.example.cn", font=font(16),
                                   fill=(255, 255, 255))
    values = [text_heaviness(encode(base))["text_heaviness"], text_heaviness(encode(with_mark))["text_heaviness"]]
    for n_lines in (1, 2, 3):
        im = base.copy()
        d = ImageDraw.Draw(im)
        d.rectangle((0, 260, base.width, base.height), fill=(20, 40, 110))
        for k in range(n_lines):
            draw_hanzi_like(d, (16, 272 + 44 * k), 34, 11, (255, 255, 255), seed=50 + k, bold=True)
        values.append(text_heaviness(encode(im))["text_heaviness"])
    assert values[0] < 0.1 and values[1] < 0.1, values
    assert values[1] < values[2] < values[3] < values[4], values
    assert values[3] >= THRESHOLD, values

    full = poster_hanzi_like()
    half = full.copy()
    ImageDraw.Draw(half).rectangle((0, 450, 600, 800), fill=(240, 210, 165))  # paint out the lower lines
    assert text_heaviness(encode(half))["text_heaviness"] < text_heaviness(encode(full))["text_heaviness"]
    assert text_heaviness(encode(half))["text_lines"] < text_heaviness(encode(full))["text_lines"]


@pytest.mark.parametrize(
    ("kind", "build", "want_text"),
    [
        ("text layout", random_text_image, True),
        ("2-3 line banner", random_banner, True),
        ("watermarked photo", random_watermark, False),
        ("photo crop", lambda s: photo_variant(_PHOTOS[s % len(_PHOTOS)], s), False),
    ],
)
def test_random_scenes(kind: str, build: Callable[[int], Image.Image], want_text: bool) -> None:
    """Seeds 200-211 of the unseen check (scored once after the last parameter change): at most one per class on the
    wrong side of the cut (seed 204, a sparse text layout, scores 0.47: near)."""
    values = {s: text_heaviness(encode(build(s), quality=85))["text_heaviness"] for s in range(200, 212)}
    wrong = {s: v for s, v in values.items() if (v >= THRESHOLD) != want_text}
    assert len(wrong) <= 1, (kind, values)


# --- invariances ---------------------------------------------------------------------------------------------------


def test_polarity_scale_and_format_invariance() -> None:
    slide = slide_latin()
    inverted = Image.fromarray(255 - np.asarray(slide))
    ref = text_heaviness(encode(slide))["text_heaviness"]
    assert text_heaviness(encode(inverted))["text_heaviness"] == pytest.approx(ref, abs=0.1)
    for factor in (0.6, 2.0):  # 480 px and 1600 px wide: the working copy is 384 px either way
        im = slide.resize((round(slide.width * factor), round(slide.height * factor)), Image.LANCZOS)
        assert text_heaviness(encode(im))["text_heaviness"] == pytest.approx(ref, abs=0.1), factor
    assert text_heaviness(encode(slide, "PNG"))["text_heaviness"] == pytest.approx(ref, abs=0.1)
    assert text_heaviness(encode(slide, "WEBP", quality=80))["text_heaviness"] == pytest.approx(ref, abs=0.1)


def test_bytes_pil_and_array_inputs_agree() -> None:
    im = poster_latin()
    png = encode(im, "PNG")
    from_bytes = text_heaviness(png)
    assert text_heaviness(im) == from_bytes
    assert text_heaviness(np.asarray(im)) == from_bytes
    assert text_heaviness(np.asarray(im.convert("L"))) == from_bytes  # grey is what is scored


def test_exif_orientation_is_applied() -> None:
    im = slide_latin()
    rotated = im.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says "rotate back"
    exif = Image.Exif()
    exif[0x0112] = 8  # Orientation: rotate 270 CW to view = undo ROTATE_90
    data = encode(rotated, exif=exif.tobytes())
    upright = text_heaviness(encode(im))["text_heaviness"]
    assert text_heaviness(data)["text_heaviness"] == pytest.approx(upright, abs=0.05)
    assert text_heaviness(encode(rotated))["text_heaviness"] < upright - 0.3  # vertical lines are not read


def test_work_size_is_a_parameter() -> None:
    for build, want_text in ((slide_latin, True), (poster_hanzi_like, True), (lambda: _photo("chelsea"), False)):
        r = text_heaviness(encode(build()), work_size=256)
        assert (r["text_heaviness"] >= THRESHOLD) == want_text, r


@pytest.mark.skipif(cjk_font_path() is None, reason="no CJK font known to fontconfig (fc-list :lang=zh)")
def test_real_cjk_font_poster() -> None:
    assert text_heaviness(encode(real_cjk_poster()))["text_heaviness"] >= THRESHOLD


# --- inputs and errors ----------------------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", reasons.DECODE_ERROR),
        (b"not an image at all", reasons.DECODE_ERROR),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", reasons.DECODE_ERROR),  # never handed to Ghostscript
        (_png_header_only(50_000, 50_000), reasons.DECOMPRESSION_BOMB),  # 2.5 GP declared, nothing decoded
    ],
)
def test_bad_input_is_an_error_not_an_exception(data: bytes, reason: str) -> None:
    r = text_heaviness(data)
    assert tuple(r) == TEXTNESS_KEYS
    assert r["error"] == reason, r
    assert r["error_detail"] and "0x" not in r["error_detail"]
    assert all(r[k] is None for k in TEXTNESS_KEYS[:6])


def test_truncated_jpeg_and_pixel_cap() -> None:
    data = encode(slide_latin())
    assert text_heaviness(data[: len(data) // 3])["error"] == reasons.DECODE_ERROR
    assert text_heaviness(data, max_pixels=1000)["error"] == reasons.DECOMPRESSION_BOMB
    assert text_heaviness(slide_latin(), max_pixels=1000)["error"] == reasons.DECOMPRESSION_BOMB
    assert text_heaviness(data, max_pixels=None)["error"] is None
    with pytest.raises(ValueError):
        load_work_grey(b"junk")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F"])
def test_any_mode_scores(mode: str) -> None:
    im = poster_latin()
    if mode in ("I;16", "I"):
        arr = np.asarray(im.convert("L")).astype(np.uint16) * 257
        im = Image.fromarray(arr).convert("I") if mode == "I" else Image.fromarray(arr)
        assert im.mode == mode
    elif mode == "F":
        im = Image.fromarray(np.asarray(im.convert("L")).astype(np.float32), "F")
    else:
        im = im.convert(mode)
    r = text_heaviness(im)
    assert r["error"] is None, r
    if mode not in ("1", "P"):  # dithering / palette quantisation change the picture itself
        assert r["text_heaviness"] >= THRESHOLD, (mode, r)


@pytest.mark.parametrize("size", [(1, 1), (2, 50), (50, 2), (3, 3), (120, 90)])
def test_tiny_and_flat_images(size: tuple[int, int]) -> None:
    flat = Image.new("RGB", size, (200, 120, 40))
    r = text_heaviness(encode(flat, "PNG"))
    assert r["error"] is None and r["text_heaviness"] == 0.0 and r["text_lines"] == 0, r


def test_animated_gif_scores_its_first_frame() -> None:
    frames = [slide_latin().convert("P"), Image.new("P", (800, 600), 0)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert text_heaviness(buf.getvalue())["text_heaviness"] >= THRESHOLD


def test_batch_keeps_order_with_workers() -> None:
    items = [encode(slide_latin()), b"junk", encode(_photo("coffee")), encode(poster_hanzi_like()), b""]
    single = [text_heaviness(x) for x in items]
    assert text_heaviness_batch(items) == single
    assert text_heaviness_batch(items, workers=2, chunk_size=2) == single


# --- building blocks against reference implementations -------------------------------------------------------------


def test_otsu_matches_scikit_image() -> None:
    filters = pytest.importorskip("skimage.filters")
    for name in ("camera", "coins", "page"):
        a = _photo(name).convert("L")
        arr = np.asarray(a)
        # skimage: foreground is > threshold; ours returns the last level of the lower class
        assert _otsu(np.bincount(arr.ravel(), minlength=256)) == int(filters.threshold_otsu(arr)), name


def test_row_closing_and_column_runs_match_scipy() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(3)
    m = rng.random((60, 90)) < 0.3
    for r in (1, 2, 4, 6):
        seg = np.ones((1, 2 * r + 1), bool)
        ref = ndimage.binary_closing(np.pad(m, ((0, 0), (r, r)), constant_values=False), seg)[:, r:-r] | m
        # ours does not erode from the image border: compare away from it
        assert (_close_rows(m, r)[:, r:-r] == ref[:, r:-r]).all(), r
    m = rng.random((120, 40)) < 0.8
    for length in (1, 2, 3, 8, 13, 33, 120, 121):
        ref = ndimage.binary_opening(m, np.ones((length, 1), bool)) if 1 < length <= 120 else (m if length == 1 else
                                                                                            np.zeros_like(m))
        assert (_long_column_runs(m, length) == ref).all(), length


def test_score_grey_details_are_consistent() -> None:
    g = load_work_grey(encode(poster_latin()))
    r = score_grey(g, details=True)
    comps = r["components"]
    share = sum(c["area"] * c["text_likeness"] for c in comps) / g.size
    assert share == pytest.approx(r["text_area_share"])
    assert max(c["text_likeness"] for c in comps) == pytest.approx(1.0)
