"""Union-find, embedding near-duplicate pairs (exact and ANN), pHash clusters and representative choice."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from danqing_assets.lib.clusters import (
    DEFAULT_MAX_HAMMING,
    UnionFind,
    choose_representatives,
    cluster_embeddings,
    hamming_pairs,
    labels_from_pairs,
    near_duplicate_pairs,
    phash_clusters,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _structured(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Points around n/50 centres, tight enough that many pairs fall within cosine distance 0.1."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((max(1, n // 50), d)))
    which = rng.integers(0, centres.shape[0], n)
    scale = rng.uniform(0.2, 0.6, n)[:, None] / np.sqrt(d)
    return _unit(centres[which] + scale * rng.standard_normal((n, d)))


def _brute_pairs(emb: np.ndarray, max_distance: float) -> set[tuple[int, int]]:
    close = np.triu(emb @ emb.T >= np.float32(1 - max_distance), 1)
    return set(zip(*map(np.ndarray.tolist, np.nonzero(close)), strict=True))


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# --- union-find -----------------------------------------------------------------------------------------------------


def test_union_find_scalar_operations() -> None:
    uf = UnionFind(6)
    assert uf.union(0, 1) and uf.union(2, 3) and uf.union(1, 3)
    assert not uf.union(0, 2)  # already joined
    assert uf.find(0) == uf.find(3) != uf.find(4)
    assert uf.labels().tolist() == [0, 0, 0, 0, 4, 5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_union_pairs_matches_connected_components(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    i = rng.integers(0, n, 4000)
    j = rng.integers(0, n, 4000)
    # adversarial shapes too: a long chain and a big star
    chain = np.arange(1000, 1999)
    i = np.concatenate([i, chain, np.full(300, 4999)])
    j = np.concatenate([j, chain + 1, np.arange(300)])
    labels = labels_from_pairs(n, i, j)
    _, cc = connected_components(coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)), directed=False)
    assert _same_partition(labels, cc)
    assert (labels <= np.arange(n)).all() and (labels[labels] == labels).all()  # canonical: smallest member
    # mixing scalar and vectorised unions keeps the forest valid
    uf = UnionFind(n)
    for a, b in zip(i[:500].tolist(), j[:500].tolist(), strict=True):
        uf.union(a, b)
    uf.union_pairs(i[500:], j[500:])
    assert np.array_equal(uf.labels(), labels)


def test_union_pairs_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        UnionFind(3).union_pairs(np.array([0, 1]), np.array([1]))


# --- embeddings -------------------------------------------------------------------------------------------------------


def test_exact_pairs_equal_brute_force_across_block_boundaries() -> None:
    emb = _structured(1500, 32)
    i, j = near_duplicate_pairs(emb, max_distance=0.1, block=256)
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    assert got == _brute_pairs(emb, 0.1)
    assert len(got) > 1000 and (i < j).all()
    assert i.dtype == np.int64 and j.dtype == np.int64


def test_ann_pairs_are_exact_and_recall_is_high() -> None:
    emb = _structured(6000, 48, seed=3)
    truth = _brute_pairs(emb, 0.1)
    for kw in ({}, {"flat_max_lists": 4}):  # flat and two-level assignment
        i, j = near_duplicate_pairs(emb, max_distance=0.1, method="ann", list_size=300, **kw)
        got = set(zip(i.tolist(), j.tolist(), strict=True))
        assert got <= truth  # never a pair beyond the threshold
        assert len(got) >= 0.98 * len(truth), (kw, len(got), len(truth))


def test_cluster_embeddings_recovers_planted_duplicates() -> None:
    rng = np.random.default_rng(4)
    base = _unit(rng.standard_normal((800, 64)))  # random directions: far apart in 64-d
    groups = rng.integers(0, 800, 150)
    copies = _unit(base[groups] + 0.15 / np.sqrt(64) * rng.standard_normal((150, 64)))  # cos distance ~0.01
    emb = np.concatenate([base, copies])
    truth = np.concatenate([np.arange(800), groups])
    for method in ("exact", "ann", "auto"):
        labels = cluster_embeddings(emb, 0.1, method, list_size=100)
        assert labels.dtype == np.int64
        assert _same_partition(labels, truth), method
    # a threshold of 0 joins nothing; a huge one joins everything
    assert len(set(cluster_embeddings(emb, 0.0, "exact").tolist())) == emb.shape[0]
    assert len(set(cluster_embeddings(emb, 2.0, "exact").tolist())) == 1


def test_cluster_embeddings_chains_transitively_like_union_find() -> None:
    angles = np.deg2rad([0.0, 20.0, 40.0, 60.0, 150.0])  # neighbours 20 deg apart: cos distance 0.06 < 0.1
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    assert cluster_embeddings(emb, 0.1, "exact").tolist() == [0, 0, 0, 0, 4]


def test_bad_embeddings_are_clear_errors_or_isolated() -> None:
    with pytest.raises(ValueError, match="L2-normalised"):
        near_duplicate_pairs(np.full((10, 4), 3.0, dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        near_duplicate_pairs(np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError, match="method"):
        cluster_embeddings(_structured(10, 4), method="nope")
    emb = _unit(np.ones((4, 8)))
    emb[2] = np.nan  # an image that failed to embed joins nobody
    assert cluster_embeddings(emb, 0.1).tolist() == [0, 0, 2, 0]
    big = _structured(3000, 16, seed=5)
    big[::7] = np.nan
    exact = cluster_embeddings(big, 0.1, "exact")
    ann = cluster_embeddings(big, 0.1, "ann", list_size=200)
    assert (exact[::7] == np.arange(0, 3000, 7)).all() and (ann[::7] == np.arange(0, 3000, 7)).all()
    assert len(set(exact.tolist())) <= len(set(ann.tolist())) <= len(set(exact.tolist())) * 1.02 + 5
    assert len(set(zip(ann.tolist(), exact.tolist(), strict=True))) == len(set(ann.tolist()))  # ANN refines exact
    assert cluster_embeddings(np.zeros((0, 8), np.float32)).size == 0


# --- pHash ------------------------------------------------------------------------------------------------------------


def _random_hashes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(
        np.uint64
    )


def _flip(value: int, bits: np.ndarray) -> int:
    for b in bits:
        value ^= 1 << int(b)
    return value


@pytest.mark.parametrize("max_hamming", [0, 3, 6, 10])
def test_multi_index_hamming_pairs_equal_brute_force(max_hamming: int) -> None:
    rng = np.random.default_rng(max_hamming)
    values = _random_hashes(8000, seed=1)
    for k in range(1500):  # plant neighbours at 0..12 bits
        src = int(rng.integers(1500, 8000))
        values[k] = np.uint64(_flip(int(values[src]), rng.choice(64, rng.integers(0, 13), replace=False)))
    i, j = hamming_pairs(values, max_hamming)
    got = {(int(a), int(b)) for a, b in zip(i, j, strict=True)}
    expected = set()
    for s in range(0, values.size, 1000):
        d = np.bitwise_count(values[s : s + 1000, None] ^ values[None, :])
        a, b = np.nonzero(d <= max_hamming)
        a = a + s
        expected |= {(int(x), int(y)) for x, y in zip(a, b, strict=True) if x < y}
    assert got == expected and len(expected) > 100


def test_phash_clusters_on_real_image_hashes() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    from danqing_assets.lib.image_metrics import compute_metrics

    def phash(im: Image.Image, **kw) -> str:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", **kw)
        return compute_metrics(buf.getvalue())["phash"]

    photos = [Image.fromarray(getattr(skimage_data, n)()) for n in ("astronaut", "coffee", "rocket", "chelsea")]
    hashes = []
    for im in photos:
        hashes += [phash(im, quality=95), phash(im.resize((im.width // 2, im.height // 2)), quality=50)]
    hashes += [None, "not-hex", hashes[0]]
    labels = phash_clusters(hashes)
    assert labels.tolist() == [0, 0, 2, 2, 4, 4, 6, 6, 8, 9, 0]
    assert phash_clusters(hashes, max_hamming=0).tolist()[-1] == 0  # identical hashes always join
    assert DEFAULT_MAX_HAMMING == 6
    with pytest.raises(ValueError):
        phash_clusters(hashes, max_hamming=65)


# --- representatives ----------------------------------------------------------------------------------------------


def test_choose_representatives_priority_ties_and_nan() -> None:
    labels = np.array([0, 0, 0, 3, 3, 5, 0])
    priority = np.array([1.0, 5.0, 5.0, np.nan, 0.5, np.nan, 2.0])
    keep = choose_representatives(labels, priority)
    assert keep.tolist() == [False, True, False, False, True, True, False]
    assert choose_representatives(labels).tolist() == [True, False, False, True, False, True, False]
    with pytest.raises(ValueError):
        choose_representatives(labels, priority[:3])
