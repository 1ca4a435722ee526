"""Time, peak memory and recall of `cluster_embeddings` on structured synthetic embeddings; projection to 178 M images.

Data (seeded): unit vectors around n/100 random centres (each point at cosine similarity ~1/(1+tau^2), tau in
[0.5, 1.0] per centre, so neighbours are close but farther apart than 0.1), plus planted duplicate groups (10 % of the
rows, 2-8 copies each) whose members lie within cosine distance ~0.05 of each other. Truth: each planted group is one
cluster, every other row is a singleton.

Also clusters `--phash-n` pHashes (random plus planted near copies). Reports for each method: wall time, peak traced
memory beyond the input (numpy buffers, tracemalloc), group recall (planted groups recovered whole), pair recall, and
false merges (true groups wrongly joined to another).

    .venv/bin/python benchmarks/bench_clusters.py                 # 100 k (exact + ann), 1 M (ann), 1 M pHashes
    .venv/bin/python benchmarks/bench_clusters.py --n 20000 --dim 512 --exact-max 20000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from danqing_assets.lib.clusters import DEFAULT_MAX_HAMMING, cluster_embeddings, phash_clusters  # noqa: E402

TARGET_IMAGES = 178_600_000  # stage-3 output size in the paper


def make_embeddings(n: int, dim: int, *, seed: int = 0, dup_fraction: float = 0.10) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32 (n, dim) L2-normalised, truth labels: planted group id or own row index)."""
    rng = np.random.default_rng(seed)
    n_centres = max(1, n // 100)
    centres = rng.standard_normal((n_centres, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    tau = rng.uniform(0.5, 1.0, n_centres).astype(np.float32)
    emb = np.empty((n, dim), dtype=np.float32)
    truth = np.arange(n, dtype=np.int64)
    n_dup_rows = int(n * dup_fraction)
    n_seed_rows = n - n_dup_rows
    chunk = 65536
    for s in range(0, n_seed_rows, chunk):  # background rows around the centres
        e = min(s + chunk, n_seed_rows)
        c = rng.integers(0, n_centres, e - s)
        noise = rng.standard_normal((e - s, dim), dtype=np.float32)
        noise *= (tau[c] / np.sqrt(dim))[:, None]
        noise += centres[c]
        emb[s:e] = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    # planted groups: a background row plus 1..7 copies within cosine distance ~0.05 of each other
    row = n_seed_rows
    while row < n:
        src = int(rng.integers(0, n_seed_rows))
        copies = min(int(rng.integers(1, 8)), n - row)
        eps = rng.uniform(0.05, 0.2, copies).astype(np.float32)
        noise = rng.standard_normal((copies, dim), dtype=np.float32) * (eps / np.sqrt(dim))[:, None]
        # the source moves a little too, so the copies are not all at one distance from it
        noise += emb[src]
        emb[row : row + copies] = noise / np.linalg.norm(noise, axis=1, keepdims=True)
        truth[row : row + copies] = truth[src]
        row += copies
    perm = rng.permutation(n)  # planted rows must not sit in one block
    emb = emb[perm]
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    truth = inv[truth[perm]]  # relabel group ids into the permuted row space (any canonical id works)
    return emb, truth


def score(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Group recall, pair recall and false merges of predicted labels against the planted truth."""
    # pair counts from the contingency table (truth group x predicted cluster)
    pair = lambda c: (c * (c - 1) // 2).sum()  # noqa: E731
    _, t_counts = np.unique(truth, return_counts=True)
    _, p_counts = np.unique(labels, return_counts=True)
    key = truth.astype(np.int64) * (labels.max() + 1) + labels
    _, both = np.unique(key, return_counts=True)
    true_pairs, found_true_pairs, pred_pairs = pair(t_counts), pair(both), pair(p_counts)
    # group recall: planted groups (size >= 2) that map to exactly one predicted cluster
    order = np.argsort(truth, kind="stable")
    t_sorted, l_sorted = truth[order], labels[order]
    start = np.r_[True, t_sorted[1:] != t_sorted[:-1]]
    gid = np.cumsum(start) - 1
    lo = np.minimum.reduceat(l_sorted, np.nonzero(start)[0])
    hi = np.maximum.reduceat(l_sorted, np.nonzero(start)[0])
    sizes = np.bincount(gid)
    planted = sizes >= 2
    # false merges: rows that share a predicted cluster with rows of another true group
    cluster_truths = np.unique(np.stack([labels, truth], axis=1), axis=0)
    groups_per_cluster = np.bincount(np.unique(cluster_truths[:, 0], return_inverse=True)[1])
    return {
        "planted_groups": int(planted.sum()),
        "group_recall": float((lo[planted] == hi[planted]).mean()) if planted.any() else 1.0,
        "pair_recall": float(found_true_pairs / true_pairs) if true_pairs else 1.0,
        "false_pairs": int(pred_pairs - found_true_pairs),
        "false_merges": int((groups_per_cluster - 1).sum()),
        "clusters": int(p_counts.size),
    }


def make_phashes(n: int, *, seed: int = 0, dup_fraction: float = 0.10) -> tuple[list[str], np.ndarray]:
    """n hex pHashes: random 64-bit values plus planted copies within 0..DEFAULT_MAX_HAMMING bits of a source."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    values |= rng.integers(0, 2, n).astype(np.uint64)
    truth = np.arange(n, dtype=np.int64)
    n_src = n - int(n * dup_fraction)
    src = rng.integers(0, n_src, n - n_src)
    flips = np.zeros(n - n_src, dtype=np.uint64)
    for k, nbits in enumerate(rng.integers(0, DEFAULT_MAX_HAMMING + 1, n - n_src)):
        for b in rng.choice(64, nbits, replace=False):
            flips[k] |= np.uint64(1) << np.uint64(b)
    values[n_src:] = values[src] ^ flips
    truth[n_src:] = src
    return [format(int(v), "016x") for v in values], truth


def run(emb: np.ndarray, truth: np.ndarray, method: str, **kw) -> dict[str, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    labels = cluster_embeddings(emb, 0.1, method, **kw)
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = score(labels, truth)
    out.update(seconds=wall, peak_mb=peak / 2**20)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000], help="row counts (default 100k 1M)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--exact-max", type=int, default=100_000, help="run the exact method up to this n")
    ap.add_argument("--nprobe", type=int, default=4)
    ap.add_argument("--list-size", type=int, default=1000)
    ap.add_argument("--two-level", action="store_true", help="force the two-level assignment (as at 178 M)")
    ap.add_argument("--phash-n", type=int, default=1_000_000, help="pHash clustering size (0: skip)")
    args = ap.parse_args(argv)
    print(f"cpu count {os.cpu_count()}, BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
          f"dim {args.dim}, threshold cosine distance 0.1")
    ann_kw = dict(nprobe=args.nprobe, list_size=args.list_size)
    if args.two_level:
        ann_kw["flat_max_lists"] = 1
    last_ann: tuple[int, dict] | None = None
    exact_ref: tuple[int, dict] | None = None
    for n in args.n:
        t0 = time.perf_counter()
        emb, truth = make_embeddings(n, args.dim)
        print(f"\nn={n:,}: generated in {time.perf_counter() - t0:.1f} s ({emb.nbytes / 2**20:.0f} MB embeddings)")
        methods = (["exact"] if n <= args.exact_max else []) + ["ann"]
        for method in methods:
            r = run(emb, truth, method, **(ann_kw if method == "ann" else {}))
            print(f"  {method:5s} {r['seconds']:8.1f} s  peak {r['peak_mb']:7.0f} MB  "
                  f"planted groups {r['planted_groups']:,}"
                  f"  group recall {r['group_recall']:.4f}  pair recall {r['pair_recall']:.4f}"
                  f"  false merges {r['false_merges']}  clusters {r['clusters']:,}")
            if method == "ann":
                last_ann = (n, r)
            else:
                exact_ref = (n, r)
        del emb, truth
    if args.phash_n:
        hashes, truth = make_phashes(args.phash_n)
        tracemalloc.start()
        t0 = time.perf_counter()
        labels = phash_clusters(hashes)
        wall = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        r = score(labels, truth)
        print(f"\npHash clusters, n={args.phash_n:,}, max_hamming {DEFAULT_MAX_HAMMING} (random hashes + 10 % planted "
              f"copies at 0-{DEFAULT_MAX_HAMMING} bits): {wall:.1f} s  peak {peak / 2**20:.0f} MB  group recall "
              f"{r['group_recall']:.4f}  false merges {r['false_merges']}")
    print(f"\nprojection to {TARGET_IMAGES / 1e6:.1f} M images (wall time on this machine class, one process):")
    if exact_ref:
        n, r = exact_ref
        sec = r["seconds"] * (TARGET_IMAGES / n) ** 2
        print(f"  exact (O(n^2 d)): {sec / 86400 / 365:,.1f} years from {n:,} rows in {r['seconds']:.0f} s")
    if last_ann:
        n, r = last_ann
        sec = r["seconds"] * TARGET_IMAGES / n
        emb_gb = TARGET_IMAGES * args.dim * 4 / 1e9
        print(f"  ann (~linear: fixed list size {args.list_size}, nprobe {args.nprobe}; two-level cells above 4096): "
              f"{sec / 3600:,.1f} hours from {n:,} rows in {r['seconds']:.0f} s; embeddings {emb_gb:,.0f} GB "
              f"float32 ({emb_gb / 2:,.0f} GB fp16): shard by cell (cells are independent) to fit memory")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
