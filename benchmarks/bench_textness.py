"""Throughput of `text_heaviness` per CPU core at the 384 px working size, against a bare Pillow decode + resize.

Builds `--n` JPEGs in one process: `--text-frac` of them text-heavy scenes (posters, slides, banners, rendered by the
test module `danqing_assets_tests/lib/test_textness.py`), the rest random 500x400 / 400x500 crops of the real sample
photos (scikit-image). Then times, interleaved in rounds so that load from other processes hits both alike:
- baseline: Pillow open + JPEG draft to luma + resize to a 384 px longest edge (what any scorer must do),
- `text_heaviness` (decode, working copy and detector),
and prints images/s per core (wall and CPU) and the ratio. BLAS is pinned to one thread.

    .venv/bin/python benchmarks/bench_textness.py [--n 2000] [--text-frac 0.2] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # per-core numbers: no BLAS threads
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from danqing_assets.lib.textness import DEFAULT_WORK_SIZE, text_heaviness, text_heaviness_batch  # noqa: E402


def make_images(n: int, text_frac: float) -> tuple[list[bytes], int]:
    """(JPEG bytes, how many are text-heavy): photos cropped like web images, and rendered text-heavy scenes."""
    from danqing_assets_tests.lib import test_textness as scenes

    out: list[bytes] = []
    n_text = round(n * text_frac)
    for i in range(n_text):
        im = scenes.random_text_image(10_000 + i) if i % 2 == 0 else scenes.random_banner(10_000 + i)
        out.append(scenes.encode(im, quality=85))
    photos = scenes._PHOTOS
    for i in range(n - n_text):
        out.append(scenes.encode(scenes.photo_variant(photos[i % len(photos)], 20_000 + i), quality=85))
    return out, n_text


def decode_resize(data: bytes, work_size: int = DEFAULT_WORK_SIZE) -> Image.Image:
    """The floor: decode (JPEG draft to luma at the smallest scale >= the working size) and resize."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    s = work_size / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    im.draft("L", size)
    im = im.convert("L")
    return im.resize(size, Image.BILINEAR, reducing_gap=3.0) if im.size != size else im


def timed(fn, items) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    w0, c0 = time.perf_counter(), time.process_time()
    for x in items:
        fn(x)
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000, help="images (default 2000)")
    ap.add_argument("--text-frac", type=float, default=0.2, help="share of text-heavy images (default 0.2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the best is kept (default 3)")
    ap.add_argument("--workers", type=int, default=0, help="also time text_heaviness_batch with this many processes")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    images, n_text = make_images(args.n, args.text_frac)
    mb = sum(map(len, images)) / 1e6
    print(f"built {len(images)} JPEGs ({n_text} text-heavy; {mb:.0f} MB) in {time.perf_counter() - t0:.1f} s; "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; one process, BLAS 1 thread")

    text_heaviness(images[0])  # warm imports
    decode_resize(images[0])
    best = {"baseline": (float("inf"), float("inf")), "text_heaviness": (float("inf"), float("inf"))}
    for _ in range(args.rounds):
        for name, fn in (("baseline", decode_resize), ("text_heaviness", text_heaviness)):
            wall, cpu = timed(fn, images)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    n = len(images)
    for name, label in (("baseline", "Pillow decode + resize to 384 px"), ("text_heaviness", "text_heaviness")):
        wall, cpu = best[name]
        print(f"{label:34s} {n / wall:7.0f} img/s wall {n / cpu:7.0f} img/s CPU  ({1e3 * cpu / n:.2f} ms CPU/img)")
    ratio = best["text_heaviness"][1] / best["baseline"][1]
    print(f"text_heaviness costs {ratio:.1f}x the bare decode + resize (CPU time)")

    if args.workers > 1:
        w0 = time.perf_counter()
        text_heaviness_batch(images, workers=args.workers)
        print(f"text_heaviness_batch, {args.workers} processes: {n / (time.perf_counter() - w0):7.0f} img/s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
