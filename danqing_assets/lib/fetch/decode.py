"""Validate downloaded image bytes with Pillow, cheaply and safely.

`inspect_image(data)` answers an `ImageInfo` (width, height, format, mode, frames) or a `Reject` with a FETCH reason:
- `decompression_bomb`: the header declares more than `max_pixels` pixels. The size is read from the header, before any
  pixel is decoded, so a 2 KB PNG that claims 100 000 x 100 000 pixels costs nothing.
- `decode_error`: not a supported format, truncated, or corrupt. The first frame is really decoded (JPEG at 1/8 scale
  through libjpeg's DCT scaling, which still reads every scan, so truncation is caught for a fraction of the cost).
Animated images (GIF, WebP, APNG) are validated on their first frame. `to_rgb(img)` turns any mode later stages may meet
(palette, LA / RGBA / PA, CMYK, 16-bit and 32-bit greyscale, float) into 8-bit RGB.

Only the formats in `SAFE_FORMATS` are opened: Pillow plug-ins such as EPS would shell out to Ghostscript. Of those,
only the ones this Pillow build can open are asked for (`openable_formats`; AVIF support is optional in Pillow), and
`accept_header()` names exactly the types that can be validated, so the fetcher never asks for a format it would then
reject.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from danqing_assets.lib.reasons import DECODE_ERROR, DECOMPRESSION_BOMB

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: Default pixel cap: 40 MP (e.g. 8000 x 5000). Lower than Pillow's 89.5 MP because the fetcher decodes on many
#: threads at once; a full-size RGBA decode at the cap is 160 MB.
DEFAULT_MAX_PIXELS = 40_000_000

#: Pillow format names that are opened; everything else is a decode_error. MPO (multi-picture JPEG) has no opener
#: of its own: Pillow's JPEG opener returns MPO images, whose format then reads "mpo".
SAFE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF")

#: Accept header entries in order of preference: (media type, Pillow format that must be openable to ask for it).
_ACCEPT_PREFERENCE: tuple[tuple[str, str], ...] = (
    ("image/avif", "AVIF"),
    ("image/webp", "WEBP"),
    ("image/png", "PNG"),
    ("image/jpeg", "JPEG"),
)
_OPENABLE: dict[tuple[str, ...], tuple[str, ...]] = {}


def openable_formats(formats: tuple[str, ...] = SAFE_FORMATS) -> tuple[str, ...]:
    """The formats of `formats` that this Pillow build can open (names as `Image.open(formats=...)` takes them).

    Asking Pillow for a format it has no opener for raises KeyError inside `Image.open`, for every image that the
    formats listed before it did not accept; so the list is filtered once here.
    """
    got = _OPENABLE.get(formats)
    if got is None:
        from PIL import Image

        Image.init()
        got = _OPENABLE[formats] = tuple(f for f in (x.upper() for x in formats) if f in Image.OPEN)
    return got


def accept_header() -> str:
    """The fetcher's Accept header: the image types it can validate, best first (AVIF only when Pillow opens it)."""
    can = set(openable_formats())
    named = [mime for mime, fmt in _ACCEPT_PREFERENCE if fmt in can]
    return ",".join([*named, "image/*;q=0.9", "*/*;q=0.5"])

# (offset, signature, format) for magic-byte sniffing.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"BM", "bmp"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"\x00\x00\x01\x00", "ico"),
)


def sniff_image_type(head: bytes) -> str | None:
    """The image format the first bytes announce ("jpeg", "png", "gif", "webp", "bmp", "tiff", "ico", "avif",
    "heic"), or None. Needs the first 16 bytes; a shorter prefix answers None unless it is already conclusive."""
    for off, sig, name in _MAGIC:
        if head[off : off + len(sig)] == sig:
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "heic"
    return None


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header and a first-frame decode established about an image."""

    width: int
    height: int
    format: str  # Pillow's name, lower case: "jpeg", "png", "gif", "webp", ...
    mode: str  # Pillow mode as stored ("RGB", "P", "CMYK", "I;16", ...)
    n_frames: int = 1

    @property
    def animated(self) -> bool:
        return self.n_frames > 1


@dataclass(frozen=True, slots=True)
class Reject:
    """A failed validation: a FETCH reason (`decompression_bomb` or `decode_error`) and a human-readable detail."""

    reason: str
    detail: str


class ImageRejected(ValueError):
    """Raised by `open_image` / `load_rgb`; carries the same reason and detail as a `Reject`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _open_checked(data: bytes, max_pixels: int | None, formats: tuple[str, ...]) -> PILImage.Image:
    """Open the header, check the pixel count, and return the (unloaded) image; raise ImageRejected."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data), formats=list(openable_formats(tuple(formats))))
    except Image.DecompressionBombError as exc:
        raise ImageRejected(DECOMPRESSION_BOMB, str(exc)) from None
    except UnidentifiedImageError:
        raise ImageRejected(DECODE_ERROR, "not a recognised image format") from None
    except Exception as exc:  # corrupt headers raise anything from SyntaxError to struct.error
        raise ImageRejected(DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageRejected(DECODE_ERROR, f"invalid size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageRejected(DECOMPRESSION_BOMB, f"{w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}")
    return img


def _decode_first_frame(img: PILImage.Image, *, fast: bool) -> None:
    """Decode the first frame (JPEG at reduced scale when `fast`); raise ImageRejected on failure."""
    from PIL import Image

    try:
        if fast and img.format in ("JPEG", "MPO"):
            img.draft(None, (1, 1))  # DCT scaling: 1/8 linear size, every scan still parsed
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageRejected(DECOMPRESSION_BOMB, str(exc)) from None
    except Exception as exc:  # OSError("image file is truncated"), zlib.error, SyntaxError, ...
        raise ImageRejected(DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None


def inspect_image(
    data: bytes,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decode: bool = True,
    fast: bool = True,
    formats: tuple[str, ...] = SAFE_FORMATS,
) -> ImageInfo | Reject:
    """Validate `data` as an image.

    max_pixels: reject headers declaring more pixels (None disables our cap; Pillow's own 2x89.5 MP error remains).
    decode: also decode the first frame (catches truncation and corrupt data); False checks the header only.
    fast: decode JPEG at 1/8 scale (same validation, ~5x cheaper); False decodes at full size.
    """
    try:
        img = _open_checked(data, max_pixels, formats)
        try:
            fmt = (img.format or "").lower()
            info = ImageInfo(
                width=img.size[0],
                height=img.size[1],
                format=fmt,
                mode=img.mode,
                n_frames=int(getattr(img, "n_frames", 1) or 1),
            )
            if decode:
                if fmt == "png":
                    # PNG: verify() checks chunk CRCs and structure; it leaves the image unusable, so reopen.
                    try:
                        img.verify()
                    except Exception as exc:
                        raise ImageRejected(DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
                    img.close()
                    img = _open_checked(data, max_pixels, formats)
                _decode_first_frame(img, fast=fast)
            return info
        finally:
            img.close()
    except ImageRejected as rej:
        return Reject(rej.reason, rej.detail)
    except Exception as exc:  # defensive: never let a hostile file crash the caller
        return Reject(DECODE_ERROR, f"{type(exc).__name__}: {exc}")


def open_image(
    data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, formats: tuple[str, ...] = SAFE_FORMATS
) -> PILImage.Image:
    """Open and fully decode the first frame at full size; raise ImageRejected (reason + detail) on failure."""
    img = _open_checked(data, max_pixels, formats)
    _decode_first_frame(img, fast=False)
    return img


def to_rgb(
    img: PILImage.Image, *, background: tuple[int, int, int] = (255, 255, 255), exif_transpose: bool = True
) -> PILImage.Image:
    """8-bit RGB version of the current frame of `img`.

    Transparency (RGBA, LA, PA, palette with a transparent index) is composited onto `background`; CMYK goes through
    Pillow's conversion; 16-bit / 32-bit integer greyscale is scaled to 8 bit by its bit depth (not clipped); float
    images are clipped to 0..255. `exif_transpose` applies the EXIF orientation (width and height may swap).
    """
    from PIL import Image, ImageOps

    if exif_transpose:
        try:
            if img.getexif().get(0x0112, 1) not in (1, None):  # Orientation tag; skip the copy when upright
                img = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block must not lose the image
            pass
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        import numpy as np

        arr = np.asarray(img)
        if mode == "I":
            arr = arr.astype(np.int64)
            top = 65535 if arr.max(initial=0) <= 65535 else int(arr.max())
            arr = np.clip(arr, 0, None) * 255 // max(top, 1)
        else:
            arr = arr.astype(np.uint16) >> 8
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        import numpy as np

        arr = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background + (255,))
        base.alpha_composite(rgba)
        return base.convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX, ...


def load_rgb(
    data: bytes,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    formats: tuple[str, ...] = SAFE_FORMATS,
) -> PILImage.Image:
    """Decode the first frame of `data` to 8-bit RGB for later stages; raise ImageRejected.

    draft_size: for JPEG, let libjpeg decode at the smallest DCT scale that still covers this size (e.g. (224, 224)
      before embedding), which is much faster than decoding full size and resizing.
    """
    img = _open_checked(data, max_pixels, formats)
    try:
        if draft_size is not None and img.format in ("JPEG", "MPO"):
            img.draft("RGB", draft_size)
        _decode_first_frame(img, fast=False)
        return to_rgb(img)
    except ImageRejected:
        raise
    except Exception as exc:
        raise ImageRejected(DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
