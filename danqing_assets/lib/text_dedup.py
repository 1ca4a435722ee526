"""Caption near-duplicate clusters: MinHash over character n-grams, LSH banding, exact-Jaccard verification.

`near_duplicate_clusters(texts)` answers, for each text, the index of its cluster's representative: the smallest index
in the cluster. Callers order the input by keep-priority and keep the rows where `rep == index`.

Method (linear in the number of texts):
1. texts are compared after lower-casing and folding whitespace; exact duplicates are collapsed first, so a caption
   repeated 10,000 times costs one sketch, not a 10,000-member LSH bucket;
2. each distinct text becomes the set of its character n-grams (a text shorter than `ngram` is one shingle: itself),
   sketched with `datasketch.MinHash.generator` (the bulk path: one permutation set, copied per text) with CRC-32 as
   the element hash (C speed; datasketch's affine32 scheme mixes it with MurmurHash3's finaliser before permuting);
3. `datasketch.MinHashLSH(threshold, num_perm)` picks the banding (b bands of r rows minimising its weighted false
   positive / negative probabilities); the bands are hashed to 64-bit keys with numpy and grouped by sorting, which is
   what `MinHashLSH.insert` + `query` compute, without their per-key Python objects (measured here: 9 s and 340 MB per
   100 k texts for insert alone, against well under a second and 8 bytes per band per text);
4. texts sharing a bucket in any band are candidates; a candidate pair joins a cluster only if the exact Jaccard
   similarity of the two n-gram sets is >= threshold (no LSH false positives); clusters are the connected components
   (union-find). Inside a bucket, a text is verified against one member at a time of each cluster already seen there
   (up to `_MAX_TRIES` members per cluster and `_MAX_GROUPS` clusters per bucket), so a bucket of m near-duplicates
   costs O(m) verifications instead of O(m^2); the caps only matter for pathological buckets of mutually dissimilar
   texts, where a few true pairs may be missed.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from typing import Any

_CHUNK = 8192  # texts sketched per numpy block
_MAX_TRIES = 8
_MAX_GROUPS = 64


def _normalize(text: Any) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    return " ".join(text.lower().split())


def shingles(text: str, ngram: int = 3) -> set[str]:
    """Character n-grams of a (normalised) text; a text shorter than `ngram` is a single shingle: itself."""
    if len(text) < ngram:
        return {text}
    return {text[i : i + ngram] for i in range(len(text) - ngram + 1)}


DEFAULT_THRESHOLD = 0.8
"""Jaccard similarity of character n-gram sets at which two captions are near duplicates."""
DEFAULT_NGRAM = 3
"""Character n-gram size."""


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b) if len(a) <= len(b) else len(b & a)
    return inter / (len(a) + len(b) - inter)


def near_duplicate_clusters(
    texts: Sequence[str | None],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ngram: int = DEFAULT_NGRAM,
    num_perm: int = 128,
    seed: int = 1,
) -> list[int]:
    """For each text, the index of its near-duplicate cluster's representative (the smallest index in the cluster).

    Two texts are near duplicates when the Jaccard similarity of their character `ngram` sets is >= `threshold`
    (MinHash LSH finds the candidates, the exact Jaccard confirms them); clusters are the transitive closure. Texts
    are compared lower-cased with whitespace folded; None counts as "". See the module docstring for the method.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    n = len(texts)
    if n == 0:
        return []

    # 1. Exact duplicates (after normalisation) collapse to one distinct text, numbered in first-occurrence order.
    distinct: dict[str, int] = {}
    first_index: list[int] = []
    uid = [0] * n
    for i, t in enumerate(texts):
        key = _normalize(t)
        u = distinct.get(key)
        if u is None:
            u = distinct[key] = len(first_index)
            first_index.append(i)
        uid[i] = u
    uniq = list(distinct)
    del distinct
    m = len(uniq)

    parent = list(range(m))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if m > 1:
        bands = _band_keys(uniq, threshold=threshold, ngram=ngram, num_perm=num_perm, seed=seed)
        _verify_buckets(bands, uniq, parent, find, threshold=threshold, ngram=ngram)

    # 4. Representative of each component: its smallest distinct id = its earliest original index.
    rep_of_root: dict[int, int] = {}
    rep_uid = [0] * m
    for u in range(m):
        r = find(u)
        rep_uid[u] = rep_of_root.setdefault(r, u)
    return [first_index[rep_uid[uid[i]]] for i in range(n)]


def _band_keys(uniq: list[str], *, threshold: float, ngram: int, num_perm: int, seed: int) -> Any:
    """(texts x bands) uint64 keys: MinHash signatures cut into LSH bands, each band hashed to 64 bits."""
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError:  # thresholds near 1 make datasketch's optimum a single band, which it refuses
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(2, num_perm // 2))
    b, r = lsh.b, lsh.r
    rng = np.random.default_rng(seed)
    mult = rng.integers(1, 2**63, size=(b, r), dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
    m = len(uniq)
    keys = np.empty((m, b), dtype=np.uint64)
    for start in range(0, m, _CHUNK):
        part = uniq[start : start + _CHUNK]
        sketches = MinHash.generator(
            ([s.encode("utf-8") for s in shingles(t, ngram)] for t in part),
            num_perm=num_perm,
            seed=seed,
            hashfunc=zlib.crc32,
        )
        sig = np.vstack([mh.hashvalues for mh in sketches]).astype(np.uint64)
        for j in range(b):
            block = sig[:, j * r : (j + 1) * r] * mult[j]  # wraps modulo 2^64
            h = block.sum(axis=1, dtype=np.uint64)
            h ^= h >> np.uint64(29)  # finalise: spread high bits down
            keys[start : start + len(part), j] = h * np.uint64(0xBF58476D1CE4E5B9)
    return keys


def _verify_buckets(bands: Any, uniq: list[str], parent: list[int], find: Any, *, threshold: float, ngram: int) -> None:
    """Union the verified near-duplicate pairs among texts that share a bucket in some band."""
    import numpy as np

    @functools.lru_cache(maxsize=1 << 16)
    def grams(u: int) -> frozenset[str]:
        return frozenset(shingles(uniq[u], ngram))

    m = bands.shape[0]
    for j in range(bands.shape[1]):
        col = bands[:, j]
        order = np.argsort(col, kind="stable")  # stable: members of a bucket come out in ascending id order
        sorted_keys = col[order]
        cut = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [m]))
        for k in np.flatnonzero(ends - starts >= 2).tolist():
            members = order[starts[k] : ends[k]].tolist()
            root0 = find(members[0])
            if all(find(x) == root0 for x in members[1:]):
                continue  # already one cluster (typical in every band after the first)
            groups: list[list[int]] = []
            for x in members:
                joined: list[int] = []
                for gi, g in enumerate(groups[:_MAX_GROUPS]):
                    if find(g[0]) == find(x):
                        joined.append(gi)
                        continue
                    gx = grams(x)
                    for y in g[:_MAX_TRIES]:
                        if jaccard(gx, grams(y)) >= threshold:
                            parent[find(x)] = find(y)
                            joined.append(gi)
                            break
                if not joined:
                    groups.append([x])
                else:
                    merged = groups[joined[0]]
                    for gi in reversed(joined[1:]):
                        merged.extend(groups.pop(gi))
                    merged.append(x)
