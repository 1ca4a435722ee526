"""WebDataset writing speed of `write_release` against plain `tarfile` writing the same files, in the same run.

    .venv/bin/python benchmarks/bench_export.py                      # 2,000 JPEGs of ~30-60 KB, 3 rounds
    .venv/bin/python benchmarks/bench_export.py --n 5000 --fsync     # both sides fsync every shard

Images: `--n` distinct JPEGs cut from the real photos shipped with scikit-image / scikit-learn / matplotlib (the
generator of `bench_image_metrics.py`), sized so they weigh ~30-60 KB, held in an in-memory dict that `get_image`
reads. Each round, alternating:
- reference: `tarfile.open(path, "w", format=USTAR)` + `addfile` of exactly the members of the release's shards
  (image, .json, .txt; the same split into shards), taken out of the release beforehand, so nothing but writing is
  timed;
- `write_release` to a fresh local root: sorting, JSON per sample, tar shards with their sha256 (hashed on a helper
  thread), the aligned Parquet parts, sizes.json, manifest, card, `_SUCCESS` and the final rename.
For context (no target): the floor, `os.write` of the finished shard bytes, already in memory.
MB/s = tar bytes / wall seconds (I/O work: wall time is what matters); best of `--rounds` per side. The reference's
files are also checked byte for byte against the release's shards (the writer promises `tarfile`'s own bytes).
Target: write_release >= 0.8 x the reference. Exits 1 when missed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_image_metrics import make_jpegs  # noqa: E402

from danqing_assets.lib.export import open_release, write_release  # noqa: E402

TARGET_RATIO = 0.8
CARD = {"funnel": "| step | pairs |\n|---|---|\n| bench | n |", "filters": [{"name": "image_nsfw", "status": "on"}],
        "rebuild": ["python benchmarks/bench_export.py"]}


def make_inputs(n: int, seed: int = 0) -> tuple[pl.DataFrame, dict[str, bytes]]:
    rng = np.random.default_rng(seed)
    sizes = [(520, 400), (600, 450), (640, 480)]
    jpegs: list[bytes] = []
    for k, size in enumerate(sizes):  # a mix of sizes gives the ~30-60 KB spread
        jpegs += make_jpegs(n // len(sizes) + (k < n % len(sizes)), size=size, seed=seed + k)
    images = {hashlib.sha256(d).hexdigest(): d for d in jpegs}
    shas = list(images)
    df = pl.DataFrame({
        "pair_id": [hashlib.blake2b(f"rec{i}".encode(), digest_size=8).hexdigest() for i in range(len(shas))],
        "image_url": [f"https://img.example.cn/{i}.jpg" for i in range(len(shas))],
        "page_url": [f"https://www.example.cn/page/{i // 7}.html" for i in range(len(shas))],
        "caption": [f"杭州西湖的美丽风景，第{i}张图片" for i in range(len(shas))],
        "caption_original": [f"杭州西湖的美麗風景，第{i}張圖片_旅游网" for i in range(len(shas))],
        "snapshot": ["CC-MAIN-2024-10"] * len(shas),
        "width": [640] * len(shas),
        "height": [480] * len(shas),
        "sha256": shas,
        "clip_score": rng.uniform(1.0, 1.3, len(shas)),
        "text_entropy": rng.uniform(0.001, 0.01, len(shas)),
    })
    return df, images


def shard_members(tar_paths: list[str]) -> list[list[tuple[str, bytes]]]:
    out = []
    for p in tar_paths:
        with tarfile.open(p, "r:") as tar:
            out.append([(m.name, tar.extractfile(m).read()) for m in tar])
    return out


def write_reference(folder: Path, shards: list[list[tuple[str, bytes]]], fsync: bool) -> list[Path]:
    paths = []
    for k, members in enumerate(shards):
        path = folder / f"shard-{k:05d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
                    len(data), 0, 0o644, 0, 0, "", "")
                tar.addfile(info, io.BytesIO(data))
            if fsync:
                tar.fileobj.flush()
                os.fsync(tar.fileobj.fileno())
        paths.append(path)
    return paths


def write_raw(folder: Path, blobs: list[bytes], fsync: bool) -> None:
    for k, blob in enumerate(blobs):
        fd = os.open(folder / f"shard-{k:05d}.tar", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per side, best reported (default 3)")
    ap.add_argument("--shard-mb", type=float, default=32, help="shard_max_bytes in MB (default 32)")
    ap.add_argument("--fsync", action="store_true", help="both sides fsync each shard (default: neither)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    df, images = make_inputs(args.n)
    kb = np.array([len(d) for d in images.values()]) / 1e3
    print(f"built {len(images)} JPEGs in {time.perf_counter() - t0:.1f} s: mean {kb.mean():.0f} KB, "
          f"p5 {np.percentile(kb, 5):.0f} KB, p95 {np.percentile(kb, 95):.0f} KB; cpu count {os.cpu_count()}, "
          f"fsync {'on' if args.fsync else 'off'} on both sides")

    work = Path(tempfile.mkdtemp(prefix="bench_export-", dir=args.dir))
    try:
        kw = dict(card=CARD, shard_max_bytes=int(args.shard_mb * 1e6), fsync=args.fsync)
        probe = write_release(work / "probe", "r", df, images.__getitem__, **kw)  # warm-up and the members
        release = open_release(work / "probe" / "r")
        members = shard_members([str(p) for p in release.wds_urls()])
        blobs = [Path(p).read_bytes() for p in release.wds_urls()]
        total = probe.wds_bytes
        ref_times, ours_times, raw_times = [], [], []
        for r in range(args.rounds):
            folder = work / f"raw{r}"
            folder.mkdir()
            w0 = time.perf_counter()
            write_raw(folder, blobs, args.fsync)
            raw_times.append(time.perf_counter() - w0)
            shutil.rmtree(folder)
            folder = work / f"ref{r}"
            folder.mkdir()
            w0 = time.perf_counter()
            ref_paths = write_reference(folder, members, args.fsync)
            ref_times.append(time.perf_counter() - w0)
            same = [hashlib.sha256(p.read_bytes()).hexdigest() for p in ref_paths] == [
                s.wds.sha256 for s in probe.shards]
            if not same:
                print("FAIL: tarfile's bytes differ from write_release's shards")
                return 1
            shutil.rmtree(folder)
            w0 = time.perf_counter()
            write_release(work / f"ours{r}", "r", df, images.__getitem__, **kw)
            ours_times.append(time.perf_counter() - w0)
            shutil.rmtree(work / f"ours{r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref, ours, raw = min(ref_times), min(ours_times), min(raw_times)
    ratio = ref / ours
    print(f"\n{len(probe.shards)} shards, {probe.total_pairs} samples, {total / 1e6:.1f} MB of tar per run; "
          f"best of {args.rounds}\n")
    print(f"{'writer':<44} {'seconds':>8} {'MB/s':>8} {'ratio':>6}")
    print(f"{'os.write of finished shard bytes (floor)':<44} {raw:8.3f} {total / 1e6 / raw:8.1f} {ref / raw:6.2f}")
    print(f"{'tarfile, same members (reference)':<44} {ref:8.3f} {total / 1e6 / ref:8.1f} {1.0:6.2f}")
    print(f"{'write_release (tar + sha256 + parquet + card)':<44} {ours:8.3f} {total / 1e6 / ours:8.1f} {ratio:6.2f}")
    print(f"\nall rounds (s): floor {', '.join(f'{t:.3f}' for t in raw_times)}; "
          f"reference {', '.join(f'{t:.3f}' for t in ref_times)}; "
          f"write_release {', '.join(f'{t:.3f}' for t in ours_times)}")
    ok = ratio >= TARGET_RATIO
    print(f"{'PASS' if ok else 'FAIL'}: write_release / tarfile = {ratio:.2f} (target >= {TARGET_RATIO})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
