"""Caption near-duplicate clusters: MinHash LSH over character n-grams, plus a one-edit rule for short captions.

`near_duplicate_clusters(texts)` answers, for each text, the index of its cluster's representative: the smallest index
in the cluster. Callers order the input by keep-priority and keep the rows where `rep == index`.

The rule. Two captions are near duplicates when either
(a) the Jaccard similarity of their character 3-gram sets is >= `threshold` (0.8), or
(b) they are one edit apart (`one_edit`): compared without case, whitespace, punctuation and symbols, the longer has
    at least `one_edit_min_chars` (10) characters and, once their common prefix and suffix are removed, what differs is
    at most two characters on each side (one character substituted, inserted or deleted; one two-character word
    replaced, inserted or deleted; punctuation added or changed), or two adjacent segments swapped, one of at most two
    characters and the other of at most four (a word moved).
Clusters are the transitive closure. Rule (b) exists because (a) fails on short captions: in an 18-character caption
one substituted character changes 3 of 16 trigrams and the Jaccard similarity falls to ~0.68. It keeps apart captions
that share a template but differ in two or more content words ("红色的苹果放在木桌上" / "绿色的香蕉放在木桌上": the
differing stretch spans both words). By design it merges captions that differ in one short word only ("2023年北京
马拉松开跑" / "2024年..."; colour variants of one product): for pre-training captions those are near duplicates.

Method (linear in the number of texts):
1. texts are compared after lower-casing and folding whitespace; exact duplicates are collapsed first, so a caption
   repeated 10,000 times costs one sketch, not a 10,000-member LSH bucket;
2. rule (a): each distinct text becomes the set of its character n-grams (a text shorter than `ngram` is one shingle:
   itself), sketched with `datasketch.MinHash.generator` (one permutation set, copied per text) with CRC-32 as the
   element hash; `datasketch.MinHashLSH(threshold, num_perm)` picks the banding (b bands of r rows); the bands are
   hashed to 64-bit keys with numpy and grouped by sorting, which is what `MinHashLSH.insert` + `query` compute,
   without their per-key Python objects;
3. rule (b): each distinct text's compared form of `one_edit_min_chars` - 2 to `_MAX_EDIT_KEY_CHARS` characters gets
   deletion keys: the form itself and the form with each single character and each pair of adjacent characters
   removed (~2n keys). Two forms one edit apart always share a key (delete the differing block, or the shorter
   swapped segment, from both), so the keys find every such pair; unrelated texts share a key only by hash collision;
   more keys than `keys_in_memory` (1 M captions make ~50 M) are split by key value into parts spilled to a
   scratch folder and grouped one part at a time, so the index is bounded by that count, not by the captions (the
   LSH band keys likewise: past that count each band's keys go to a file of their own and are grouped a band at a
   time);
4. texts sharing a bucket (an LSH band or a deletion key) are candidates; a candidate pair joins a cluster only if the
   rule verifies exactly (no false positives from hashing); clusters are the connected components (union-find).
   Inside a bucket, a text is verified against one member at a time of each cluster already seen there (up to
   `_MAX_TRIES` members per cluster and `_MAX_GROUPS` clusters per bucket), so a bucket of m near-duplicates costs
   O(m) verifications instead of O(m^2); the caps only matter for pathological buckets of mutually dissimilar texts.
Longer forms (over `_MAX_EDIT_KEY_CHARS`) get no deletion keys: one edit there changes few 3-grams, and (a) holds.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_CHUNK = 8192  # texts sketched per numpy block
_POOL_BLOCK = 32_768  # texts whose LSH keys one worker computes at a time
_MAX_TRIES = 8
_MAX_GROUPS = 64
_MAX_EDIT_KEY_CHARS = 64
_KEYS_IN_MEMORY = 2_000_000  # deletion keys (or LSH band keys) grouped in memory at once (more are spilled)
_EDIT_BLOCK = 10_000  # forms whose keys are made and spilled at once
_EDIT_MAX_PARTS = 256  # spilled parts at most (a file each, open together); 4.2 M captions need ~125 of 2 M keys
_DISTINCT_SHIFT = 16
_DISTINCT_BLOCK = 1 << _DISTINCT_SHIFT  # distinct texts per Arrow chunk (indexing is a shift and a mask)
_GRAMS_CACHED = 1 << 12  # n-gram sets cached while buckets are verified (~5 KB each)


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
DEFAULT_ONE_EDIT_MIN_CHARS = 10
"""Shortest compared form (characters) for which one edit makes a near duplicate (rule (b)); None disables the rule."""


_NOT_ALNUM = re.compile(r"[\W_]+")  # re's \w is str.isalnum() or "_" (checked for every code point by a test)


def edit_form(text: str) -> str:
    """What rule (b) compares: a normalised text without whitespace, punctuation and symbols (the characters for which
    `str.isalnum()` holds: letters, digits, Han)."""
    return _NOT_ALNUM.sub("", text)


def one_edit(a: str, b: str, min_chars: int = DEFAULT_ONE_EDIT_MIN_CHARS) -> bool:
    """Rule (b) on two compared forms (`edit_form`): the longer of >= `min_chars` characters and one edit apart (module
    docstring): after the common prefix and suffix, <= 2 characters differ on each side, or the rest is two adjacent
    segments swapped, one of <= 2 characters and the other of <= 4."""
    la, lb = len(a), len(b)
    if max(la, lb) < min_chars or abs(la - lb) > 2:
        return False
    if a == b:
        return True
    n = min(la, lb)
    p = 0
    while p < n and a[p] == b[p]:
        p += 1
    q = 0
    while q < n - p and a[la - 1 - q] == b[lb - 1 - q]:
        q += 1
    ma, mb = a[p : la - q], b[p : lb - q]
    if len(ma) <= 2 and len(mb) <= 2:
        return True
    if len(ma) != len(mb) or len(ma) > 6:
        return False
    m = len(ma)
    for k in range(1, m):  # ma = X + Y, mb = Y + X with |X| = k
        if min(k, m - k) <= 2 and max(k, m - k) <= 4 and ma[:k] == mb[m - k :] and ma[k:] == mb[: m - k]:
            return True
    return False


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
    one_edit_min_chars: int | None = DEFAULT_ONE_EDIT_MIN_CHARS,
    spill_dir: Any = None,
    keys_in_memory: int | None = None,
    workers: int = 1,
) -> list[int]:
    """For each text, the index of its near-duplicate cluster's representative (the smallest index in the cluster).

    Two texts are near duplicates when the Jaccard similarity of their character `ngram` sets is >= `threshold`
    (MinHash LSH finds the candidates, the exact Jaccard confirms them) or, when the longer has >= `one_edit_min_chars`
    letters / digits / Han characters, they are one edit apart (`one_edit`; deletion keys find the candidates; None
    disables this rule); clusters are the transitive closure. Texts are compared lower-cased with whitespace folded;
    None counts as "". See the module docstring for the rule and the method.

    Memory: the one-edit rule's deletion keys (~2 per character) are grouped in memory up to `keys_in_memory` keys
    (default 2 M); beyond that they are spilled, split by key value, to a scratch folder in `spill_dir` (default: the
    system's temporary folder) and grouped a part at a time. The LSH band keys (one per text and band) past that count
    are spilled a band to a file and grouped a band at a time. The clusters are the same either way.

    `workers` > 1 computes the MinHash LSH keys on that many cores: this process and `workers` - 1
    spawned ones; the clusters are the same.
    """
    return near_duplicate_reps(texts, threshold=threshold, ngram=ngram, num_perm=num_perm, seed=seed,
                               one_edit_min_chars=one_edit_min_chars, spill_dir=spill_dir,
                               keys_in_memory=keys_in_memory, workers=workers).tolist()


def near_duplicate_reps(
    texts: Sequence[str | None],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ngram: int = DEFAULT_NGRAM,
    num_perm: int = 128,
    seed: int = 1,
    one_edit_min_chars: int | None = DEFAULT_ONE_EDIT_MIN_CHARS,
    spill_dir: Any = None,
    keys_in_memory: int | None = None,
    workers: int = 1,
) -> Any:
    """`near_duplicate_clusters` as a numpy int64 array (8 bytes a text instead of a list of Python ints). `texts`
    is only iterated (twice, in order) and measured with len(); it may offer `iter_blocks()` (an Arrow column, a
    Parquet file) to be read a block at a time. Held: the distinct normalised texts (as Arrow chunks) and 8-24 bytes a
    text of ids."""
    import numpy as np

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if keys_in_memory is not None and keys_in_memory < 1:
        raise ValueError(f"keys_in_memory must be >= 1, got {keys_in_memory}")
    if one_edit_min_chars is not None and one_edit_min_chars < 3:
        raise ValueError(f"one_edit_min_chars must be >= 3 or None, got {one_edit_min_chars}")
    if len(texts) == 0:
        return np.zeros(0, dtype=np.int64)

    from danqing_assets.lib.memory import trim

    # 1. Exact duplicates (after normalisation) collapse to one distinct text, numbered in first-occurrence order.
    uid, first_index = _exact_groups(texts)
    trim()  # each phase gives back what it freed (its sorts, the texts' Python strings) before the next one grows
    uniq = _distinct_texts(texts, first_index)
    trim()
    m = len(first_index)

    from array import array

    parent = array("q", range(m))  # 8 bytes a text (a list of Python ints costs ~4x)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if m > 1:
        _lsh_pass(uniq, parent, find, threshold=threshold, ngram=ngram, num_perm=num_perm, seed=seed,
                  spill_dir=spill_dir, keys_in_memory=keys_in_memory, workers=workers)
        trim()
        if one_edit_min_chars is not None:
            _one_edit_pass(uniq, parent, find, min_chars=one_edit_min_chars, spill_dir=spill_dir,
                           keys_in_memory=keys_in_memory)

    # 4. Representative of each component: its smallest distinct id = its earliest original index.
    import numpy as np

    roots = np.fromiter((find(u) for u in range(m)), dtype=np.int64, count=m)
    _, first_u, comp = np.unique(roots, return_index=True, return_inverse=True)  # first_u: the smallest u of each root
    rep_uid = first_u[comp]
    del roots, comp, parent, uniq
    reps = first_index[rep_uid[uid]]
    trim()
    return reps


def _exact_groups(texts: Sequence[str | None]) -> tuple[Any, Any]:
    """(uid per text, first index per distinct text): texts equal after `_normalize` share a uid, numbered in order of
    first occurrence. Each normalised text is reduced to a 128-bit BLAKE2b digest (16 bytes a text, no dict of strings;
    two different texts sharing a digest has probability ~ n^2 / 2^129), and the digests are grouped by sorting."""
    import hashlib

    import numpy as np

    n = len(texts)
    digests = bytearray()
    for t in _iter_texts(texts):
        digests += hashlib.blake2b(_normalize(t).encode("utf-8", "surrogatepass"), digest_size=16).digest()
    keys = np.frombuffer(digests, dtype="V16")  # no copy: the digests are done growing
    del digests
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)  # first: the smallest index of a group
    del keys
    order = np.argsort(first, kind="stable")  # distinct ids in first-occurrence order
    u_of_group = np.empty(len(first), dtype=np.int64)
    u_of_group[order] = np.arange(len(first), dtype=np.int64)
    uid = u_of_group[np.asarray(group).reshape(n)]
    return uid, first[order].astype(np.int64)


def _iter_texts(texts: Sequence[str | None]) -> Any:
    """The texts in order; a sequence with `iter_blocks` (an Arrow column) is read a block at a time."""
    blocks = getattr(texts, "iter_blocks", None)
    if blocks is None:
        yield from texts
    else:
        for block in blocks():
            yield from block


class _Distinct(Sequence):
    """The distinct normalised texts, by distinct id, held as Arrow string chunks of `_DISTINCT_BLOCK` texts (their
    UTF-8 bytes and an offset a text, never concatenated: a concatenation would briefly hold them twice) instead of a
    list of Python strings; slices come back as lists."""

    def __init__(self, chunks: list[Any]) -> None:
        import pyarrow as pa

        assert all(len(c) == _DISTINCT_BLOCK for c in chunks[:-1])
        self.chunks = chunks
        self.column = pa.chunked_array(chunks, type=pa.large_string())
        self.n = len(self.column)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            start, stop, step = i.indices(self.n)
            assert step == 1
            return self.column.slice(start, max(0, stop - start)).to_pylist()
        if i < 0:
            i += self.n
        return self.chunks[i >> _DISTINCT_SHIFT][i & (_DISTINCT_BLOCK - 1)].as_py()

    def __iter__(self) -> Any:
        for chunk in self.chunks:
            yield from chunk.to_pylist()


class _Forms(Sequence):
    """`edit_form` of each distinct text, computed when asked (the verifications ask for a few, cached), never held
    as a list."""

    def __init__(self, uniq: Sequence[str]) -> None:
        self.uniq = uniq
        self.one = functools.lru_cache(maxsize=1 << 16)(lambda u: edit_form(uniq[u]))

    def __len__(self) -> int:
        return len(self.uniq)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [edit_form(t) for t in self.uniq[i]]
        return self.one(i)

    def __iter__(self) -> Any:
        for start in range(0, len(self.uniq), 65_536):
            yield from self[start : start + 65_536]


def _distinct_texts(texts: Sequence[str | None], first_index: Any) -> Sequence[str]:
    """The normalised text of each distinct id (`first_index` ascending: one pass over the texts)."""
    import numpy as np
    import pyarrow as pa

    is_first = np.zeros(len(texts), dtype=bool)
    is_first[first_index] = True
    parts, block = [], []
    for i, t in enumerate(_iter_texts(texts)):
        if is_first[i]:
            block.append(_normalize(t))
            if len(block) == _DISTINCT_BLOCK:
                parts.append(pa.array(block, type=pa.large_string()))
                block = []
    if block or not parts:
        parts.append(pa.array(block, type=pa.large_string()))
    return _Distinct(parts)


@functools.cache
def _banding(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's optimal (bands, rows) for the threshold (a numerical optimisation: ~10 ms, so cached)."""
    from datasketch import MinHashLSH

    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError:  # thresholds near 1 make datasketch's optimum a single band, which it refuses
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(2, num_perm // 2))
    return lsh.b, lsh.r


@dataclass(frozen=True)
class _BandKeyJob:
    """The (texts x bands) uint64 LSH keys of a list of distinct texts: MinHash signatures cut into bands, each band
    hashed to 64 bits. A picklable callable, so that worker processes can compute blocks of it."""

    threshold: float
    ngram: int
    num_perm: int
    seed: int

    def __call__(self, texts: list[str]) -> Any:
        import numpy as np
        from datasketch import MinHash

        b, r = _banding(self.threshold, self.num_perm)
        rng = np.random.default_rng(self.seed)
        mult = rng.integers(1, 2**63, size=(b, r), dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
        keys = np.empty((len(texts), b), dtype=np.uint64)
        for start in range(0, len(texts), _CHUNK):
            part = texts[start : start + _CHUNK]
            sketches = MinHash.generator(
                ([s.encode("utf-8") for s in shingles(t, self.ngram)] for t in part),
                num_perm=self.num_perm,
                seed=self.seed,
                hashfunc=zlib.crc32,
            )
            sig = np.vstack([mh.hashvalues for mh in sketches]).astype(np.uint64)
            for j in range(b):
                block = sig[:, j * r : (j + 1) * r] * mult[j]  # wraps modulo 2^64
                h = block.sum(axis=1, dtype=np.uint64)
                h ^= h >> np.uint64(29)  # finalise: spread high bits down
                keys[start : start + len(part), j] = h * np.uint64(0xBF58476D1CE4E5B9)
        return keys


def _band_key_blocks(uniq: Sequence[str], *, threshold: float, ngram: int, num_perm: int, seed: int,
                     workers: int = 1) -> Any:
    """(first id, (texts x bands) uint64 keys) for each block of `_POOL_BLOCK` distinct texts, in order, computed on
    `workers` cores (`map_chunks`: this process and `workers` - 1 spawned ones; a dead worker's blocks are computed
    here)."""
    from danqing_assets.lib.text.batch import map_chunks

    job = _BandKeyJob(threshold, ngram, num_perm, seed)
    starts = range(0, len(uniq), _POOL_BLOCK)
    blocks = (uniq[start : start + _POOL_BLOCK] for start in starts)
    yield from zip(starts, map_chunks(job, blocks, workers=workers), strict=True)


def _band_keys(uniq: Sequence[str], *, threshold: float, ngram: int, num_perm: int, seed: int, workers: int = 1) -> Any:
    """(texts x bands) uint64 keys, all in memory."""
    import numpy as np

    b, _ = _banding(threshold, num_perm)
    keys = np.empty((len(uniq), b), dtype=np.uint64)
    for start, block in _band_key_blocks(uniq, threshold=threshold, ngram=ngram, num_perm=num_perm, seed=seed,
                                         workers=workers):
        keys[start : start + len(block)] = block
    return keys


def _spilled_bands(uniq: Sequence[str], folder: Any, *, threshold: float, ngram: int, num_perm: int, seed: int,
                   workers: int = 1) -> Any:
    """Each band's keys (one uint64 a text, in id order), yielded a band at a time: the keys are made once, a block of
    texts at a time, each band's column appended to a file of its own (`folder/band-<j>.keys`), which is then read
    back alone (texts x 8 bytes in memory instead of texts x bands x 8)."""
    import numpy as np

    b, _ = _banding(threshold, num_perm)
    paths = [folder / f"band-{j}.keys" for j in range(b)]
    files = [open(path, "wb") for path in paths]  # noqa: SIM115 (closed below)
    try:
        for _, block in _band_key_blocks(uniq, threshold=threshold, ngram=ngram, num_perm=num_perm, seed=seed,
                                         workers=workers):
            for j in range(b):
                np.ascontiguousarray(block[:, j]).tofile(files[j])
    finally:
        for f in files:
            f.close()
    for path in paths:
        keys = np.fromfile(path, dtype=np.uint64)
        path.unlink()
        yield keys
        del keys


def _lsh_pass(uniq: Sequence[str], parent: Any, find: Any, *, threshold: float, ngram: int, num_perm: int, seed: int,
              spill_dir: Any = None, keys_in_memory: int | None = None, workers: int = 1) -> None:
    """Rule (a): union the verified pairs among texts sharing a bucket in some LSH band. Up to `keys_in_memory` band
    keys (texts x bands) are held at once; more are spilled a band to a file (same clusters). The keys are computed on
    `workers` cores."""
    import tempfile
    from pathlib import Path

    from danqing_assets.lib.tempfiles import scratch_dir

    b, _ = _banding(threshold, num_perm)
    params = dict(threshold=threshold, ngram=ngram, num_perm=num_perm, seed=seed, workers=workers)
    if len(uniq) * b <= (keys_in_memory or _KEYS_IN_MEMORY):
        bands = _band_keys(uniq, **params)
        _verify_buckets((bands[:, j] for j in range(b)), uniq, parent, find, threshold=threshold, ngram=ngram)
        return
    with scratch_dir(Path(spill_dir or tempfile.gettempdir()), "lsh-band-keys") as folder:
        _verify_buckets(_spilled_bands(uniq, folder, **params), uniq, parent, find, threshold=threshold, ngram=ngram)


def _verify_buckets(bands: Any, uniq: Sequence[str], parent: Any, find: Any, *, threshold: float, ngram: int) -> None:
    """Union the verified near-duplicate pairs among texts that share a bucket in some band (`bands`: each band's keys,
    one a text)."""
    @functools.lru_cache(maxsize=_GRAMS_CACHED)
    def grams(u: int) -> frozenset[str]:
        return frozenset(shingles(uniq[u], ngram))

    def similar(x: int, y: int) -> bool:
        return jaccard(grams(x), grams(y)) >= threshold

    for keys in bands:
        for members in _buckets(keys):
            _union_bucket(members.tolist(), parent, find, similar)


def _buckets(keys: Any) -> Any:
    """The index arrays of the keys that occur at least twice, one per key value, each in ascending index order."""
    import numpy as np

    order = np.argsort(keys, kind="stable")  # stable: members of a bucket come out in ascending id order
    sorted_keys = keys[order]
    cut = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [keys.size]))
    for k in np.flatnonzero(ends - starts >= 2).tolist():
        yield order[starts[k] : ends[k]]


def _union_bucket(members: list[int], parent: list[int], find: Any, same: Any) -> None:
    """Union the members of one bucket that `same(x, y)` verifies, comparing each with at most _MAX_TRIES members of
    at most _MAX_GROUPS groups formed so far (a bucket of one cluster is skipped)."""
    root0 = find(members[0])
    if all(find(x) == root0 for x in members[1:]):
        return  # already one cluster (typical in every band after the first)
    groups: list[list[int]] = []
    for x in members:
        joined: list[int] = []
        for gi, g in enumerate(groups[:_MAX_GROUPS]):
            if find(g[0]) == find(x):
                joined.append(gi)
                continue
            for y in g[:_MAX_TRIES]:
                if same(x, y):
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

def _deletion_keys(forms: Sequence[str], min_chars: int, offset: int = 0) -> tuple[Any, Any]:
    """(key hashes, owner ids): per form of min_chars.._MAX_EDIT_KEY_CHARS characters, the form itself and the form
    with each character and each adjacent pair removed, hashed (Python's str hash: consistent within the process).
    Owner ids are the forms' positions plus `offset`, in ascending order."""
    from array import array

    import numpy as np

    keys = array("q")  # 8 bytes a key (a list of Python ints would cost ~36)
    owners = array("q")
    for u, f in enumerate(forms, start=offset):
        n = len(f)
        if n < min_chars - 2 or n > _MAX_EDIT_KEY_CHARS:
            continue
        ks = {hash(f)}
        ks.update(hash(f[:i] + f[i + 1 :]) for i in range(n))
        ks.update(hash(f[:i] + f[i + 2 :]) for i in range(n - 1))
        keys.extend(ks)
        owners.extend(array("q", [u]) * len(ks))
    return np.frombuffer(keys, dtype=np.int64), np.frombuffer(owners, dtype=np.int64)


def _key_count(uniq: _Distinct, min_chars: int) -> int:
    """An upper bound of the deletion keys `_deletion_keys` makes for the forms of `uniq` (2n per eligible form of n
    chars), from the texts' lengths (a form is never longer than its text; no form is computed)."""
    import pyarrow.compute as pc

    total = 0
    for chunk in uniq.chunks:
        n = pc.utf8_length(chunk)
        eligible = pc.greater_equal(n, min_chars - 2)
        total += 2 * (pc.sum(pc.min_element_wise(pc.filter(n, eligible), _MAX_EDIT_KEY_CHARS)).as_py() or 0)
    return total


def _spilled_key_parts(forms: Sequence[str], min_chars: int, parts: int, folder: Any) -> Any:
    """The deletion keys of `forms` split by key value into `parts` disjoint parts, each yielded as (keys, owners).

    The keys are made once, a block of forms at a time, and each block's keys are appended to one file per part
    (`folder/<part>.keys`, interleaved key, owner as int64); a part is then read back alone. Every key value lies in
    exactly one part, so a part's buckets are whole buckets, and owners stay in ascending order within a part."""
    import numpy as np

    files = [open(folder / f"{k}.keys", "wb") for k in range(parts)]  # noqa: SIM115 (closed below)
    try:
        for start in range(0, len(forms), _EDIT_BLOCK):
            keys, owners = _deletion_keys(forms[start : start + _EDIT_BLOCK], min_chars, offset=start)
            if not keys.size:
                continue
            part = keys % parts  # numpy: the sign of the divisor, so 0..parts-1
            order = np.argsort(part, kind="stable")
            rows = np.stack((keys[order], owners[order]), axis=1)
            bounds = np.searchsorted(part[order], np.arange(parts + 1))
            for k in range(parts):
                if bounds[k + 1] > bounds[k]:
                    rows[bounds[k] : bounds[k + 1]].tofile(files[k])
    finally:
        for f in files:
            f.close()
    for k in range(parts):
        path = folder / f"{k}.keys"
        rows = np.fromfile(path, dtype=np.int64).reshape(-1, 2)
        path.unlink()
        yield np.ascontiguousarray(rows[:, 0]), np.ascontiguousarray(rows[:, 1])
        del rows


def _one_edit_pass(uniq: _Distinct, parent: Any, find: Any, *, min_chars: int,
                   spill_dir: Any = None, keys_in_memory: int | None = None) -> None:
    """Rule (b): union the verified one-edit pairs among texts sharing a deletion key.

    Up to `keys_in_memory` keys (default _KEYS_IN_MEMORY, ~16 MB an array) are grouped in memory; more are
    split by key value into parts spilled to a scratch folder in `spill_dir` (default: the system's temporary folder)
    and grouped one part at a time, so memory stays bounded whatever the number of captions (same clusters)."""
    import tempfile
    from pathlib import Path

    from danqing_assets.lib.tempfiles import scratch_dir

    forms = _Forms(uniq)

    def one_edit_apart(x: int, y: int) -> bool:
        return one_edit(forms[x], forms[y], min_chars)

    limit = keys_in_memory or _KEYS_IN_MEMORY
    parts = min(_EDIT_MAX_PARTS, -(-_key_count(uniq, min_chars) // limit))  # one open file a part
    if parts <= 1:
        _union_key_buckets(*_deletion_keys(forms, min_chars), parent, find, one_edit_apart)
        return
    with scratch_dir(Path(spill_dir or tempfile.gettempdir()), "one-edit-keys") as folder:
        for keys, owners in _spilled_key_parts(forms, min_chars, parts, folder):
            _union_key_buckets(keys, owners, parent, find, one_edit_apart)


def _union_key_buckets(keys: Any, owners: Any, parent: list[int], find: Any, same: Any) -> None:
    if keys.size < 2:
        return
    for idx in _buckets(keys):
        members = sorted(set(owners[idx].tolist()))
        if len(members) >= 2:
            _union_bucket(members, parent, find, same)
