"""Near-duplicate clustering for stage 3: union-find over embedding pairs (cosine distance) and pHash pairs (Hamming).

The paper clusters image embeddings with union-find at distance 0.1 and keeps one image per cluster. Clusters are
connected components of the "within threshold" graph (single linkage: a chain of close pairs joins one cluster).

- `near_duplicate_pairs` finds every pair with cosine distance <= max_distance without holding the n x n matrix:
  exactly (blocked matrix products over the upper triangle, O(n^2 d) time, O(block^2) memory), or approximately
  (`method="ann"`): an inverted-file pre-pass (spherical k-means cells of ~`list_size` points, two-level above
  `flat_max_lists` cells so that assignment stays cheap) where each point is compared only with the members of its
  `nprobe` nearest cells. Search work per point is ~`nprobe * list_size` dot products whatever n is; assignment is
  ~11 * sqrt(n / list_size) dot products per point in two-level mode (both ~4-5 k at 178 M rows), so the total grows
  a little faster than linearly. Recall trade-off: a close pair is missed only when neither point's `nprobe` nearest
  cells hold the other; at distance <= 0.1 that is rare (1 M rows: 99.96 % of planted duplicate groups recovered
  whole, see `benchmarks/bench_clusters.py`) and raising `nprobe` buys recall linearly in time. Pairs found are
  always exact (verified by dot product): ANN can only miss pairs, never invent them.
- `phash_clusters` groups 64-bit pHashes within `max_hamming` bits by multi-index hashing: the hash is split into m
  bands; two hashes within k bits agree within floor(k/m) bits on at least one band (pigeonhole), so only hashes
  sharing a band value up to that many flipped bits are compared.
- `choose_representatives` keeps one row per cluster.

Labels are canonical: the smallest row index of each cluster (so they do not depend on the order pairs were found).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import combinations
from typing import Literal

import numpy as np

DEFAULT_MAX_DISTANCE = 0.1
"""Cosine distance (1 - cosine similarity) below which two images are semantic duplicates (the paper's 0.1)."""
DEFAULT_MAX_HAMMING = 6
"""pHash bits within which two images are near-duplicates. imagededup's `find_duplicates` default is 10, but on 64-bit
pHashes that merges unrelated images in collections of millions; re-encoded, resized or slightly cropped copies of a
photo typically stay within 0-6 bits, and the embedding clustering catches looser duplicates afterwards."""
EXACT_MAX_ROWS = 20_000
_UNION_BATCH = 2_000_000  # pairs buffered before a vectorised union
"""`method="auto"` is exact up to this many rows, ANN above."""


# --- union-find ----------------------------------------------------------------------------------------------------


class UnionFind:
    """Disjoint sets over 0..n-1: `find`/`union` (path compression, union by rank) and vectorised `union_pairs`.

    `union_pairs` hooks roots in rounds (each root under the smallest root it is paired with; the nodes touched get
    their path compressed): a few numpy passes instead of a Python loop per pair. It keeps the forest valid (ranks stay
    a heuristic only), so scalar and vectorised calls can be mixed; `labels` flattens the forest by pointer jumping.
    """

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.rank = np.zeros(n, dtype=np.int16)

    def __len__(self) -> int:
        return int(self.parent.size)

    def find(self, x: int) -> int:
        parent = self.parent
        root = int(x)
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:  # path compression
            nxt = int(parent[x])
            parent[x] = root
            x = nxt
        return root

    def union(self, a: int, b: int) -> bool:
        """Merge the sets of a and b; False when they were already one set."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.rank[ra] < self.rank[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if self.rank[ra] == self.rank[rb]:
            self.rank[ra] += 1
        return True

    def compress(self) -> None:
        """Point every node straight at its root (pointer jumping, O(n log depth))."""
        parent = self.parent
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        self.parent = parent

    def find_many(self, xs: np.ndarray) -> np.ndarray:
        """Roots of many nodes at once."""
        xs = np.asarray(xs, dtype=np.int64)
        roots = self.parent[xs]
        while True:
            nxt = self.parent[roots]
            if np.array_equal(nxt, roots):
                return roots
            roots = nxt

    def union_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        """Merge the sets of a[i] and b[i] for every i (vectorised)."""
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        if a.shape != b.shape:
            raise ValueError("a and b must have the same length")
        while a.size:
            ra, rb = self.find_many(a), self.find_many(b)
            self.parent[a], self.parent[b] = ra, rb  # path compression for the nodes touched
            differ = ra != rb
            if not differ.any():
                return
            lo = np.minimum(ra[differ], rb[differ])
            hi = np.maximum(ra[differ], rb[differ])
            order = np.lexsort((lo, hi))
            hi_s, lo_s = hi[order], lo[order]
            first = np.ones(hi_s.size, dtype=bool)
            first[1:] = hi_s[1:] != hi_s[:-1]
            self.parent[hi_s[first]] = lo_s[first]  # each root hooked once, under a smaller root: no cycles
            self.rank[lo_s[first]] = np.maximum(self.rank[lo_s[first]], self.rank[hi_s[first]] + 1)
            a, b = lo, hi  # pairs whose roots were not hooked this round are re-checked

    def labels(self) -> np.ndarray:
        """Canonical label per node: the smallest node index of its set (int64)."""
        self.compress()
        roots = self.parent
        smallest = np.full(roots.size, roots.size, dtype=np.int64)
        np.minimum.at(smallest, roots, np.arange(roots.size, dtype=np.int64))
        return smallest[roots]


def labels_from_pairs(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component labels (smallest member index) of n nodes joined by the pairs (i, j)."""
    uf = UnionFind(n)
    uf.union_pairs(i, j)
    return uf.labels()


# --- embeddings: exact blocked search --------------------------------------------------------------------------------


def _check_embeddings(embeddings: np.ndarray) -> np.ndarray:
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {emb.shape}")
    if emb.shape[0]:
        sample = emb[:: max(1, emb.shape[0] // 1000)]
        norms = np.linalg.norm(sample, axis=1)
        finite = np.isfinite(norms)
        if finite.any() and np.abs(norms[finite] - 1.0).max() > 1e-2:
            raise ValueError("embeddings must be L2-normalised rows (cosine distance = 1 - dot product)")
    return emb


def _exact_pairs_blocks(emb: np.ndarray, min_sim: float, block: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n = emb.shape[0]
    upper = np.triu(np.ones((min(block, n), min(block, n)), dtype=bool), 1)
    for r0 in range(0, n, block):
        rows = emb[r0 : r0 + block]
        for c0 in range(r0, n, block):
            close = (rows @ emb[c0 : c0 + block].T) >= min_sim
            if c0 == r0:  # diagonal block: strict upper triangle only
                close &= upper[: close.shape[0], : close.shape[1]]
            ii, jj = np.nonzero(close)
            if ii.size:
                yield ii.astype(np.int64) + r0, jj.astype(np.int64) + c0


# --- embeddings: inverted-file ANN ---------------------------------------------------------------------------------


def _topk_sims(x: np.ndarray, centroids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and similarities of the k most similar centroids for each row, best first."""
    k = min(k, centroids.shape[0])
    block = max(256, (1 << 24) // max(1, centroids.shape[0]))  # <= 64 MB of similarities at a time
    idx = np.empty((x.shape[0], k), dtype=np.int64)
    val = np.empty((x.shape[0], k), dtype=np.float32)
    for s in range(0, x.shape[0], block):
        sims = x[s : s + block] @ centroids.T
        if k == 1:
            top = sims.argmax(axis=1)[:, None]
        else:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
        idx[s : s + block] = top
        val[s : s + block] = np.take_along_axis(sims, top, axis=1)
    return idx, val


def spherical_kmeans(
    x: np.ndarray, k: int, *, iters: int = 8, seed: int = 0, sample: int | None = None
) -> np.ndarray:
    """k unit-norm centroids of unit-norm rows (cosine k-means), trained on at most `sample` rows."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    k = max(1, min(k, n))
    train = x if sample is None or n <= sample else x[np.sort(rng.choice(n, sample, replace=False))]
    centroids = train[rng.choice(train.shape[0], k, replace=False)].copy()
    for _ in range(iters):
        assign = _topk_sims(train, centroids, 1)[0][:, 0]
        counts = np.bincount(assign, minlength=k)
        order = np.argsort(assign, kind="stable")
        sums = np.zeros_like(centroids)
        nonempty = np.nonzero(counts)[0]
        sums[nonempty] = np.add.reduceat(train[order], (np.cumsum(counts) - counts)[nonempty], axis=0)
        empty = counts == 0
        if empty.any():  # re-seed empty cells on random training points
            sums[empty] = train[rng.choice(train.shape[0], int(empty.sum()), replace=False)]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return centroids


class _InvertedFile:
    """Leaf cells over the embedding space: flat k-means, or two-level (coarse cells split into sub-cells)."""

    def __init__(self, emb: np.ndarray, *, list_size: int, flat_max_lists: int, seed: int, iters: int) -> None:
        n = emb.shape[0]
        self.nlist = max(1, math.ceil(n / list_size))
        train = 64 * self.nlist
        if self.nlist <= flat_max_lists:
            self.coarse = spherical_kmeans(emb, self.nlist, iters=iters, seed=seed, sample=train)
            self.sub: list[np.ndarray] | None = None
            self.nlist = self.coarse.shape[0]
            return
        n_coarse = math.ceil(math.sqrt(self.nlist))
        self.coarse = spherical_kmeans(emb, n_coarse, iters=iters, seed=seed, sample=64 * n_coarse)
        rng = np.random.default_rng(seed + 1)
        sample_idx = np.sort(rng.choice(n, min(n, train), replace=False))
        sample_assign = _topk_sims(emb[sample_idx], self.coarse, 1)[0][:, 0]
        per = math.ceil(self.nlist / n_coarse)
        self.sub = []
        for c in range(self.coarse.shape[0]):
            members = emb[sample_idx[sample_assign == c]]
            if members.shape[0] == 0:
                self.sub.append(self.coarse[c : c + 1].copy())
            else:
                self.sub.append(spherical_kmeans(members, per, iters=iters, seed=seed + 2 + c))
        self.offsets = np.cumsum([0] + [s.shape[0] for s in self.sub])
        self.nlist = int(self.offsets[-1])

    def probe(self, x: np.ndarray, nprobe: int, coarse_probe: int = 10) -> np.ndarray:
        """(n, nprobe) leaf ids, nearest first (column 0 is the point's home cell)."""
        if self.sub is None:
            return _topk_sims(x, self.coarse, nprobe)[0]
        cidx, _ = _topk_sims(x, self.coarse, min(coarse_probe, self.coarse.shape[0]))
        n = x.shape[0]
        best_leaf = np.full((n, nprobe), -1, dtype=np.int64)
        best_sim = np.full((n, nprobe), -np.inf, dtype=np.float32)
        for c in range(self.coarse.shape[0]):
            rows = np.nonzero((cidx == c).any(axis=1))[0]
            if rows.size == 0:
                continue
            leaf, sim = _topk_sims(x[rows], self.sub[c], nprobe)
            leaf = leaf + self.offsets[c]
            all_leaf = np.concatenate([best_leaf[rows], leaf], axis=1)
            all_sim = np.concatenate([best_sim[rows], sim], axis=1)
            order = np.argsort(-all_sim, axis=1, kind="stable")[:, :nprobe]
            best_leaf[rows] = np.take_along_axis(all_leaf, order, axis=1)
            best_sim[rows] = np.take_along_axis(all_sim, order, axis=1)
        return best_leaf


def _ann_pairs_blocks(
    emb: np.ndarray,
    min_sim: float,
    *,
    list_size: int,
    nprobe: int,
    flat_max_lists: int,
    seed: int,
    kmeans_iters: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():  # rows that failed to embed (NaN) join nobody and must not poison the k-means
        rows = np.nonzero(finite)[0]
        for i, j in _ann_pairs_blocks(emb[rows], min_sim, list_size=list_size, nprobe=nprobe,
                                      flat_max_lists=flat_max_lists, seed=seed, kmeans_iters=kmeans_iters):
            yield rows[i], rows[j]
        return
    n = emb.shape[0]
    if n < 2:
        return
    ivf = _InvertedFile(emb, list_size=list_size, flat_max_lists=flat_max_lists, seed=seed, iters=kmeans_iters)
    probes = ivf.probe(emb, min(nprobe, ivf.nlist))
    home = probes[:, 0]
    member_order = np.argsort(home, kind="stable")
    member_bounds = np.searchsorted(home[member_order], np.arange(ivf.nlist + 1))
    vis_point = np.repeat(np.arange(n, dtype=np.int64), probes.shape[1])
    vis_list = probes.ravel()
    keep = vis_list >= 0
    vis_point, vis_list = vis_point[keep], vis_list[keep]
    vis_order = np.argsort(vis_list, kind="stable")
    vis_point = vis_point[vis_order]
    vis_bounds = np.searchsorted(vis_list[vis_order], np.arange(ivf.nlist + 1))
    for cell in range(ivf.nlist):
        members = member_order[member_bounds[cell] : member_bounds[cell + 1]]
        if members.size == 0:
            continue
        visitors = vis_point[vis_bounds[cell] : vis_bounds[cell + 1]]
        sims = emb[visitors] @ emb[members].T
        vi, mi = np.nonzero(sims >= min_sim)
        a, b = visitors[vi], members[mi]
        distinct = a != b
        if distinct.any():
            a, b = a[distinct], b[distinct]
            yield np.minimum(a, b), np.maximum(a, b)


def near_duplicate_pairs(
    embeddings: np.ndarray,
    *,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    block: int = 4096,
    method: Literal["auto", "exact", "ann"] = "exact",
    list_size: int = 1000,
    nprobe: int = 4,
    flat_max_lists: int = 4096,
    seed: int = 0,
    kmeans_iters: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) of L2-normalised rows with cosine distance <= max_distance, as two int64 arrays.

    `method="exact"` checks every pair in `block` x `block` tiles (memory O(block^2)); `"ann"` uses the inverted-file
    pre-pass described in the module docstring (cells of ~`list_size` rows, `nprobe` cells per row); `"auto"` is exact
    up to `EXACT_MAX_ROWS` rows. Pairs are sorted and unique.
    """
    emb = _check_embeddings(embeddings)
    min_sim = np.float32(1.0 - max_distance)
    chunks = _pair_chunks(emb, min_sim, block=block, method=method, list_size=list_size, nprobe=nprobe,
                          flat_max_lists=flat_max_lists, seed=seed, kmeans_iters=kmeans_iters)
    parts_i, parts_j = [], []
    for i, j in chunks:
        parts_i.append(i)
        parts_j.append(j)
    if not parts_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    n = emb.shape[0]
    key = np.unique(np.concatenate(parts_i) * n + np.concatenate(parts_j))
    return key // n, key % n


def _pair_chunks(emb: np.ndarray, min_sim: np.float32, *, block: int, method: str, list_size: int, nprobe: int,
                 flat_max_lists: int, seed: int, kmeans_iters: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if method not in ("auto", "exact", "ann"):
        raise ValueError(f"method must be 'auto', 'exact' or 'ann', not {method!r}")
    n = emb.shape[0]
    if n < 2:
        return iter(())
    if method == "exact" or (method == "auto" and n <= EXACT_MAX_ROWS):
        return _exact_pairs_blocks(emb, float(min_sim), block)
    return _ann_pairs_blocks(emb, float(min_sim), list_size=list_size, nprobe=nprobe, flat_max_lists=flat_max_lists,
                             seed=seed, kmeans_iters=kmeans_iters)


def cluster_embeddings(
    embeddings: np.ndarray,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    method: Literal["auto", "exact", "ann"] = "auto",
    *,
    block: int = 4096,
    list_size: int = 1000,
    nprobe: int = 4,
    flat_max_lists: int = 4096,
    seed: int = 0,
    kmeans_iters: int = 8,
) -> np.ndarray:
    """Union-find cluster id (smallest member row, int64) per row: rows joined by chains of pairs within max_distance.

    Pairs are streamed into the union-find in batches, so memory stays O(block^2 + n) however many pairs exist.
    """
    emb = _check_embeddings(embeddings)
    uf = UnionFind(emb.shape[0])
    min_sim = np.float32(1.0 - max_distance)
    buf_i: list[np.ndarray] = []
    buf_j: list[np.ndarray] = []
    buffered = 0
    for i, j in _pair_chunks(emb, min_sim, block=block, method=method, list_size=list_size, nprobe=nprobe,
                             flat_max_lists=flat_max_lists, seed=seed, kmeans_iters=kmeans_iters):
        buf_i.append(i)
        buf_j.append(j)
        buffered += i.size
        if buffered >= _UNION_BATCH:
            uf.union_pairs(np.concatenate(buf_i), np.concatenate(buf_j))
            buf_i, buf_j, buffered = [], [], 0
    if buf_i:
        uf.union_pairs(np.concatenate(buf_i), np.concatenate(buf_j))
    return uf.labels()


# --- pHash ---------------------------------------------------------------------------------------------------------


def _parse_hashes(phashes: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 values, valid mask); None, empty or non-hex entries are invalid."""
    values = np.zeros(len(phashes), dtype=np.uint64)
    valid = np.zeros(len(phashes), dtype=bool)
    for k, h in enumerate(phashes):
        if not h or not isinstance(h, str) or len(h) > 16:
            continue
        try:
            values[k] = int(h, 16)
        except ValueError:
            continue
        valid[k] = True
    return values, valid


def _flip_masks(width: int, radius: int) -> np.ndarray:
    masks = [0]
    for r in range(1, radius + 1):
        for bits in combinations(range(width), r):
            masks.append(sum(1 << b for b in bits))
    return np.asarray(masks, dtype=np.int64)


def _choose_bands(n: int, max_hamming: int) -> int:
    """Number of bands m (3..8) minimising probes x expected bucket occupancy (bands of <= 22 bits)."""
    best_m, best_cost = 3, math.inf
    for m in range(3, 9):
        width = math.ceil(64 / m)
        radius = max_hamming // m
        probes = sum(math.comb(width, r) for r in range(radius + 1))
        cost = m * probes * (1.0 + n / 2.0**width)
        if cost < best_cost:
            best_m, best_cost = m, cost
    return best_m


def hamming_pairs(
    values: np.ndarray, max_hamming: int, *, max_candidates: int = 4_000_000, bands: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j, possibly repeated) of uint64 hashes within max_hamming bits, by multi-index hashing."""
    values = np.asarray(values, dtype=np.uint64)
    n = values.size
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if n <= 3000:  # brute force is cheaper
        ii, jj = np.triu_indices(n, 1)
        d = np.bitwise_count(values[ii] ^ values[jj])
        close = d <= max_hamming
        return ii[close].astype(np.int64), jj[close].astype(np.int64)
    m = bands or _choose_bands(n, max_hamming)
    radius = max_hamming // m
    widths = [64 // m + (1 if b < 64 % m else 0) for b in range(m)]
    shifts = np.cumsum([0] + widths[:-1])
    out_i, out_j = [], []
    all_idx = np.arange(n, dtype=np.int64)
    for width, shift in zip(widths, shifts, strict=True):
        key = ((values >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(key, kind="stable")
        counts = np.bincount(key, minlength=1 << width)
        starts = np.cumsum(counts) - counts
        for flip in _flip_masks(width, radius):
            q = key ^ flip
            cnt = counts[q]
            if not cnt.any():
                continue
            csum = np.cumsum(cnt)
            lo = 0
            while lo < n:  # chunk the queries so that at most ~max_candidates pairs are expanded at once
                base = csum[lo - 1] if lo else 0
                hi = int(np.searchsorted(csum, base + max_candidates, side="right"))
                hi = max(hi, lo + 1)
                c = cnt[lo:hi]
                total = int(c.sum())
                if total:
                    qi = np.repeat(all_idx[lo:hi], c)
                    first = np.repeat(starts[q[lo:hi]] - (np.cumsum(c) - c), c)
                    tj = order[first + np.arange(total)]
                    keep = qi < tj
                    qi, tj = qi[keep], tj[keep]
                    close = np.bitwise_count(values[qi] ^ values[tj]) <= max_hamming
                    if close.any():
                        out_i.append(qi[close])
                        out_j.append(tj[close])
                lo = hi
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def phash_clusters(phashes: Sequence[str | None], max_hamming: int = DEFAULT_MAX_HAMMING) -> np.ndarray:
    """Cluster id (smallest member index, int64) per hex pHash: union-find over pairs within max_hamming bits.

    Identical hashes always share a cluster; missing or malformed hashes (None, "", non-hex) stay singletons.
    """
    if not 0 <= max_hamming <= 64:
        raise ValueError("max_hamming must be within 0..64")
    n = len(phashes)
    values, valid = _parse_hashes(phashes)
    uf = UnionFind(n)
    valid_idx = np.nonzero(valid)[0]
    if valid_idx.size:
        uniq, first, inverse = np.unique(values[valid_idx], return_index=True, return_inverse=True)
        uf.union_pairs(valid_idx, valid_idx[first][inverse])  # exact duplicates
        if max_hamming > 0 and uniq.size > 1:
            ui, uj = hamming_pairs(uniq, max_hamming)
            uf.union_pairs(valid_idx[first][ui], valid_idx[first][uj])
    return uf.labels()


# --- representatives -----------------------------------------------------------------------------------------------


def choose_representatives(labels: np.ndarray, priority: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask keeping one row per cluster: the highest `priority` (NaN lowest), ties to the lowest row index.

    Without priority, the lowest row index of each cluster is kept.
    """
    labels = np.asarray(labels)
    n = labels.size
    if priority is None:
        prio = np.zeros(n, dtype=np.float64)
    else:
        prio = np.asarray(priority, dtype=np.float64).ravel()
        if prio.size != n:
            raise ValueError("priority must have one value per label")
        prio = np.where(np.isnan(prio), -np.inf, prio)
    order = np.lexsort((np.arange(n), -prio, labels))
    sorted_labels = labels[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    return keep


# --- stage-3 redundancy --------------------------------------------------------------------------------------------


def redundancy_clusters(
    phashes: Sequence[str | None],
    embeddings: np.ndarray | None = None,
    *,
    phash_max_hamming: int = DEFAULT_MAX_HAMMING,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    near_duplicate: str = "near_duplicate_image",
    semantic_duplicate: str = "semantic_duplicate",
) -> tuple[np.ndarray, list[str | None]]:
    """Redundancy clusters of distinct images given in priority order (row 0 is the most wanted).

    Images join one cluster when their pHashes are within `phash_max_hamming` bits (0 disables) or, when
    `embeddings` is given (rows of NaN are left out), their cosine distance is <= `max_distance`; clusters are the
    transitive closure of both. Each cluster is represented by its member with the lowest row index, so whoever
    orders the rows decides the policy (first seen, best quality).

    Returns, per row, the row index of its cluster's representative and the reason it is not one (None for a
    representative): `near_duplicate` when a pHash pair tied it in, else `semantic_duplicate` when only embeddings
    did. The labels do not depend on the order in which pairs were found.
    """
    n = len(phashes)
    uf = UnionFind(n)
    cause: list[str | None] = [None] * n
    if phash_max_hamming > 0 and n:
        labels = phash_clusters(list(phashes), max_hamming=phash_max_hamming)
        for i in np.nonzero(labels != np.arange(n))[0]:
            cause[int(i)] = near_duplicate
            uf.union(int(i), int(labels[i]))
    if embeddings is not None and n:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.shape[0] != n:
            raise ValueError(f"{emb.shape[0]} embedding rows for {n} images")
        idx = np.nonzero(~np.isnan(emb).any(axis=1))[0]
        if idx.size:
            sem = cluster_embeddings(emb[idx], max_distance=max_distance)
            for local, rep in enumerate(sem):
                if rep != local:
                    i, j = int(idx[local]), int(idx[rep])
                    if uf.find(i) != uf.find(j):
                        cause[i] = cause[i] or semantic_duplicate
                    uf.union(i, j)
    roots = [uf.find(i) for i in range(n)]
    rep_of_root: dict[int, int] = {}
    for i, r in enumerate(roots):
        rep_of_root.setdefault(r, i)
    reps = np.array([rep_of_root[r] for r in roots], dtype=np.int64)
    reasons = [None if reps[i] == i else (cause[i] or near_duplicate) for i in range(n)]
    return reps, reasons
