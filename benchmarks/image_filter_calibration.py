"""Calibrate the stage-3 image filters on real photos that ship with installed packages (no download).

For every filter (size, aspect, flat, blur as the paper states it, blur as `blur_score`, entropy) print
- the false-rejection rate on sharp originals (real photos: scikit-image, scikit-learn, matplotlib samples), and
- the rejection rate on Gaussian-blurred copies (sigma 2 and 4 px, JPEG q90): the true-rejection rate for blur filters
  (sigma 1, a mild blur that is a judgement call, is shown for information).
Each photo is measured twice: at its native size, and resized to a typical web size (longest edge 500 px).

    .venv/bin/python benchmarks/image_filter_calibration.py [--verbose]
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from danqing_assets.lib.image_metrics import (  # noqa: E402
    DEFAULT_MIN_BLUR_SCORE,
    PAPER_MAX_ASPECT,
    PAPER_MIN_ENTROPY_BITS,
    PAPER_MIN_GREY_STD,
    PAPER_MIN_LAPLACIAN_VAR,
    PAPER_MIN_SHORTEST_EDGE,
    compute_metrics,
)

SKIMAGE_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "hubble_deep_field",
    "brick", "grass", "gravel", "moon", "coins", "page", "text",
)
KNOWN_BLURRED = ("clock",)  # scikit-image: "taken while moving the camera" (motion blur by design)


def load_photos() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(sharp originals, known-blurred originals) as uint8 RGB or grey arrays, from whatever is installed."""
    sharp: dict[str, np.ndarray] = {}
    blurred: dict[str, np.ndarray] = {}
    try:
        import skimage.data as sd

        for name in SKIMAGE_PHOTOS:
            try:
                sharp[f"skimage:{name}"] = getattr(sd, name)()
            except Exception:  # noqa: BLE001 - some samples need a download
                pass
        sharp["skimage:stereo_motorcycle"] = sd.stereo_motorcycle()[0]
        for name in KNOWN_BLURRED:
            blurred[f"skimage:{name}"] = getattr(sd, name)()
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        for fname, img in zip(load_sample_images().filenames, load_sample_images().images, strict=True):
            sharp[f"sklearn:{Path(fname).name}"] = img
    except ImportError:
        pass
    try:
        import matplotlib.cbook as cbook

        with cbook.get_sample_data("grace_hopper.jpg") as fh:
            sharp["matplotlib:grace_hopper.jpg"] = np.asarray(Image.open(fh).convert("RGB"))
    except Exception:  # noqa: BLE001
        pass
    for d in (sharp, blurred):
        for k, a in d.items():
            if a.ndim == 3 and a.shape[2] == 4:
                d[k] = a[..., :3]
    return sharp, blurred


def gaussian_copy(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    f = a.astype(np.float32)
    if f.ndim == 3:
        out = np.stack([ndimage.gaussian_filter(f[..., c], sigma) for c in range(f.shape[2])], axis=-1)
    else:
        out = ndimage.gaussian_filter(f, sigma)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def web_sized(a: np.ndarray, longest: int = 500) -> np.ndarray:
    im = Image.fromarray(a)
    s = longest / max(im.size)
    if s < 1:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
    return np.asarray(im)


def jpeg_metrics(a: np.ndarray, quality: int = 90) -> dict:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return compute_metrics(buf.getvalue())


FILTERS: dict[str, Callable[[dict], bool]] = {
    f"size: shortest_edge > {PAPER_MIN_SHORTEST_EDGE}": lambda m: m["shortest_edge"] <= PAPER_MIN_SHORTEST_EDGE,
    f"aspect within 1:{PAPER_MAX_ASPECT:g}..{PAPER_MAX_ASPECT:g}:1": lambda m: not (
        1 / PAPER_MAX_ASPECT <= m["aspect_ratio"] <= PAPER_MAX_ASPECT
    ),
    f"flat: grey_std >= {PAPER_MIN_GREY_STD:g}": lambda m: m["grey_std"] < PAPER_MIN_GREY_STD,
    f"blur (paper): laplacian_var_native >= {PAPER_MIN_LAPLACIAN_VAR:g}": lambda m: m["laplacian_var_native"]
    < PAPER_MIN_LAPLACIAN_VAR,
    f"blur (default): blur_score >= {DEFAULT_MIN_BLUR_SCORE:g}": lambda m: m["blur_score"] < DEFAULT_MIN_BLUR_SCORE,
    f"entropy: entropy_bits >= {PAPER_MIN_ENTROPY_BITS:g}": lambda m: m["entropy_bits"] < PAPER_MIN_ENTROPY_BITS,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verbose", action="store_true", help="print every image's scores")
    args = ap.parse_args(argv)
    sharp, known_blurred = load_photos()
    print(f"{len(sharp)} sharp real photos: {', '.join(sharp)}")
    for scale_name, prep in (("native size", lambda a: a), ("web size (longest edge 500 px)", web_sized)):
        rows: dict[str, dict[str, dict]] = {}
        for name, a in sharp.items():
            a = prep(a)
            rows[name] = {
                "orig": jpeg_metrics(a),
                "s1": jpeg_metrics(gaussian_copy(a, 1)),
                "s2": jpeg_metrics(gaussian_copy(a, 2)),
                "s4": jpeg_metrics(gaussian_copy(a, 4)),
            }
        print(f"\n== {scale_name}: {len(rows)} photos, JPEG q90 ==")
        print(
            f"{'filter':52s} {'FRR originals':>14s} {'rej. sigma1':>12s} {'rej. sigma2':>12s} {'rej. sigma4':>12s}"
            "  rejected originals"
        )
        for fname, rejects in FILTERS.items():
            rej = {k: [n for n, r in rows.items() if rejects(r[k])] for k in ("orig", "s1", "s2", "s4")}
            n = len(rows)
            print(
                f"{fname:52s} {len(rej['orig']) / n:14.0%} {len(rej['s1']) / n:12.0%} {len(rej['s2']) / n:12.0%} "
                f"{len(rej['s4']) / n:12.0%}  "
                f"{', '.join(x.split(':')[1] for x in rej['orig']) or '-'}"
            )
        for key, label in (("blur_score", "blur_score"), ("laplacian_var_native", "laplacian_var_native")):
            o = [r["orig"][key] for r in rows.values()]
            b = [max(r["s2"][key], r["s4"][key]) for r in rows.values()]
            print(f"  {label}: originals min {min(o):.3g} median {np.median(o):.3g}; blurred copies max {max(b):.3g}")
        if args.verbose:
            print(f"  {'photo':32s} {'lapvar orig/s2/s4':>24s} {'blur_score orig/s2/s4':>24s} std entropy")
            for name, r in rows.items():
                lv = "/".join(f"{r[k]['laplacian_var_native']:.0f}" for k in ("orig", "s2", "s4"))
                bs = "/".join(f"{r[k]['blur_score']:.3f}" for k in ("orig", "s2", "s4"))
                print(f"  {name:32s} {lv:>24s} {bs:>24s} {r['orig']['grey_std']:.1f} {r['orig']['entropy_bits']:.2f}")
    for name, a in known_blurred.items():
        m = jpeg_metrics(a)
        print(
            f"\nknown motion-blurred original {name}: blur_score {m['blur_score']:.3f} "
            f"(rejected: {m['blur_score'] < DEFAULT_MIN_BLUR_SCORE}), laplacian_var_native "
            f"{m['laplacian_var_native']:.0f} (rejected: {m['laplacian_var_native'] < PAPER_MIN_LAPLACIAN_VAR})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
