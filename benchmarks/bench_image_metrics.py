"""Throughput of `compute_metrics` (all stage-3 scores incl. pHash, one decode) per CPU core on real-sized JPEGs.

Builds `--n` 500x400 JPEGs (quality 70-95) from real photos shipped with scikit-image / scikit-learn / matplotlib,
randomly rescaled, shifted, cropped and mirrored, then measures in one process (BLAS pinned to one thread):
- decode only (luma, native size): the floor,
- `compute_metrics` (size, aspect, grey std, entropy, native Laplacian variance, blur_score, pHash),
- imagededup's `PHash().encode_image(image_file=...)` alone on a subset of the same images (the reference),
and the Hamming distance between our pHash and imagededup's on those images.

    .venv/bin/python benchmarks/bench_image_metrics.py [--n 10000] [--ref-n 2000] [--workers 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # per-core numbers: no BLAS threads
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from image_filter_calibration import load_photos  # noqa: E402

from danqing_assets.lib.image_metrics import compute_metrics, compute_metrics_batch, hamming_distance  # noqa: E402


def make_jpegs(n: int, size: tuple[int, int] = (500, 400), seed: int = 0) -> list[bytes]:
    """`n` distinct JPEGs of `size` cut from the real sample photos (random scale 1-1.8x cover, offset, mirror)."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a).convert("RGB") for a in load_photos()[0].values()]
    out: list[bytes] = []
    tw, th = size
    for i in range(n):
        src = photos[i % len(photos)]
        cover = max(tw / src.width, th / src.height) * rng.uniform(1.0, 1.8)
        w, h = max(tw, round(src.width * cover)), max(th, round(src.height * cover))
        im = src.resize((w, h), Image.BILINEAR)
        x, y = int(rng.integers(0, w - tw + 1)), int(rng.integers(0, h - th + 1))
        im = im.crop((x, y, x + tw, y + th))
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(70, 96)))
        out.append(buf.getvalue())
    return out


def timed(fn, items) -> tuple[float, float, list]:
    """(wall seconds, CPU seconds of this process, results)."""
    w0, c0 = time.perf_counter(), time.process_time()
    res = [fn(x) for x in items]
    return time.perf_counter() - w0, time.process_time() - c0, res


def decode_luma(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.draft("L", im.size)
    im.load()
    return im


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="images for compute_metrics (default 10000)")
    ap.add_argument("--ref-n", type=int, default=2_000, help="images for the imagededup reference (default 2000)")
    ap.add_argument("--workers", type=int, default=0, help="also time compute_metrics_batch with this many processes")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    jpegs = make_jpegs(args.n)
    mb = sum(map(len, jpegs)) / 1e6
    print(f"built {len(jpegs)} 500x400 JPEGs ({mb:.0f} MB, mean {mb * 1e3 / len(jpegs):.0f} KB) "
          f"in {time.perf_counter() - t0:.1f} s; cpu count {os.cpu_count()}, one process, BLAS 1 thread")

    compute_metrics(jpegs[0])  # warm imports
    wall, cpu, _ = timed(decode_luma, jpegs)
    print(f"decode only (luma, native):          {len(jpegs) / wall:7.0f} img/s wall  "
          f"{len(jpegs) / cpu:7.0f} img/s CPU")
    wall, cpu, res = timed(compute_metrics, jpegs)
    errors = sum(1 for r in res if r["error"])
    print(f"compute_metrics (all incl. pHash):   {len(jpegs) / wall:7.0f} img/s wall  {len(jpegs) / cpu:7.0f} img/s CPU"
          f"  ({errors} errors)")

    from imagededup.methods import PHash

    phasher = PHash(verbose=False)
    ref = jpegs[: args.ref_n]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, data in enumerate(ref):
            p = Path(tmp) / f"{i:06d}.jpg"
            p.write_bytes(data)
            paths.append(str(p))
        phasher.encode_image(image_file=paths[0])
        wall, cpu, ref_hashes = timed(lambda p: phasher.encode_image(image_file=p), paths)
    print(f"imagededup PHash alone (reference):  {len(ref) / wall:7.0f} img/s wall  {len(ref) / cpu:7.0f} img/s CPU"
          f"  (on the first {len(ref)})")
    dist = np.array([hamming_distance(r["phash"], h) for r, h in zip(res, ref_hashes, strict=False)])
    print(f"pHash vs imagededup's file pipeline: equal {np.mean(dist == 0):.1%}, mean {dist.mean():.2f} bits, "
          f"p99 {np.percentile(dist, 99):.0f}, max {dist.max()} (ours: luma decode; theirs: RGB resize then grey)")

    if args.workers > 1:
        w0 = time.perf_counter()
        compute_metrics_batch(jpegs, workers=args.workers)
        wall = time.perf_counter() - w0
        print(f"compute_metrics_batch, {args.workers} processes: {len(jpegs) / wall:7.0f} img/s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
