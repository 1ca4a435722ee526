"""Cross-batch dedup (stage 4): an incremental index of accepted pairs that each partition is merged into.

Each partition (a batch of a crawl snapshot's WARC files; a small snapshot is one batch) was deduplicated on its own
in stage 3. Stage 4 merges
the partitions and removes redundancy *across* them. `CrossBatchIndex` keeps every accepted pair in a directory
between runs; `merge(partition, candidates, embeddings)` compares only the new partition's candidates with what is
already accepted and with each other, never the accepted pairs with each other again, then appends the ones it
accepts. The cost of a merge is therefore driven by the size of the new partition, not by the size of the release.

Duplicate kinds, checked in this order (a candidate gets the first kind that matches):

- ``sha256``: the same image bytes (hash join);
- ``pair_id``: the same pair already accepted from another partition with other image bytes (a guard: pair ids are
  derived from the WARC record, so this only happens when the same WARC data is registered twice and re-downloaded);
- ``phash``: 64-bit pHashes within `phash_max_hamming` bits (default 6, as in stage 3), by multi-index hashing over
  the accepted hashes (the hash is split into m bands; pigeonhole: two hashes within k bits agree within k // m bits on
  at least one band, so only hashes whose band value is within that many flips are compared, and every candidate pair
  is verified exactly);
- ``embedding``: cosine distance <= `max_distance` (default 0.1, as in stage 3) between L2-normalised embeddings.
  Rows that are NaN (or an `embeddings` of None) have no embedding: only sha256, pair_id and pHash apply to them
  (counted as ``missing_embedding`` in the merge stats).

Earliest accepted wins. Everything already in the index was accepted before any candidate of the current merge, so a
candidate that duplicates an accepted pair is rejected with `duplicate_of` = that pair (among several matches of the
same kind: the earliest accepted, by merge sequence number then candidate position). Inside a batch the candidates are
taken greedily in the order given: a candidate is accepted unless it duplicates an accepted pair or an earlier
*accepted* candidate of the batch (a duplicate of a rejected candidate does not count: that candidate is not in the
release). The same greedy rule holds across merges, so which pairs are accepted does not depend on how the candidates
are cut into merges, only on their order (with the exact search; `duplicate_of` may name another of several matches).
The caller records rejected pairs under the ledger reason ``cross_batch_duplicate`` with the pair they duplicate in
the detail.

Re-merging a partition (a partition re-materialized upstream, merged again under the same key). Rule:

1. Dependencies. Every rejection is recorded with the pair it points to (`rejections()`: partition, pair_id, seq,
   duplicate_of, duplicate_of_partition, duplicate_kind). An accepted entry of partition P is *pinned* when a rejection
   of another partition points to it: a later pair was dropped in its favour, so removing it would lose that image
   from the release.
2. On re-merge of P, P's previously accepted entries that are not pinned are withdrawn, and P's new candidates are
   merged as a new merge (new sequence number) against every other partition's entries and P's pinned entries. P's
   previous rejections are replaced by the new ones.
3. A candidate whose pair_id is that of one of P's pinned entries is accepted again as itself (accepted, not a
   duplicate); the entry keeps its stored hashes and embedding (those are what its dependants were matched against)
   and its original sequence number. Other candidates of P that duplicate a pinned entry are rejected as usual.
4. A pinned entry whose pair_id is no longer among P's candidates stays accepted and is marked ``orphaned`` in
   `accepted()` and counted in the merge stats (``pinned_absent``), so the caller can keep it in the release or flag it.
   It stays until P is merged again after nothing depends on it any more.

Hence a re-merge never accepts a pair twice (pinned pairs are re-accepted in place, withdrawn ones are merged again
once) and never removes a pair that another partition's rejection points to. Merging an empty frame under P withdraws
everything of P that nobody depends on. Merging the same candidates again is idempotent.

Storage (one directory; one writer at a time, serialised by an advisory `flock` on ``.lock``)::

    manifest.json                       # the commit point: generation, partitions -> files, IVF, merge log
    segments/seg-<h>-g<gen>.parquet     # P's accepted entries (h = hash of the partition key, any key is fine)
    segments/emb-<h>-g<gen>.npy         # their embeddings, float32, row-aligned (NaN rows: none), memory-mapped
    segments/rej-<h>-g<gen>.parquet     # P's rejections and the entries they point to
    segments/ivf-g<gen>.npz             # inverted-file centroids (only once the ANN has been used)

A merge writes only P's files (new names with the new generation), each to a temporary name then `os.replace`, then
replaces ``manifest.json`` the same way, then deletes the files the manifest no longer names. A crash before the
manifest is replaced leaves the previous manifest and every file it names intact; leftovers are removed by the next
successful merge. Embeddings are memory-mapped, so opening an index of 1 M entries reads only the Parquet entries
(0.3-0.6 s on 2 busy cores); the pHash bands are built in memory on the first merge after opening.

Embedding search. `method="exact"` compares the new embeddings with every accepted one in `block` x `block` tiles
(memory O(block^2), never an n_new x n_accepted matrix) and with each other: O(n_new * n_accepted * d) time; measured
6-12 ns per (new x accepted) pair at d=128 on 2 cores, i.e. ~10 min for 100 k new against 1 M accepted (x2 at d=256,
x6 at 768): every accepted pair costs ~0.6 s per 100 k-pair partition merged, for ever. `method="ann"`
uses an inverted file (spherical k-means cells of ~`list_size` accepted embeddings, `lib.clusters`' two-level
variant above 4096 cells): each accepted embedding lives in its nearest cell (the segment files are stored sorted by
cell, so a cell is a contiguous slice of each memory-mapped file), each new embedding is compared only with the members
of its `nprobe` nearest cells, so the work per new pair is ~(nlist + nprobe * list_size) dot products whatever the
index size; new-vs-new pairs use the same cells. Recall trade-off: a duplicate is missed only when the accepted pair's
cell is not among the candidate's `nprobe` nearest cells (only the new side probes, so this is less forgiving than
`lib.clusters`' symmetric pass). Measured on structured synthetic 128-d data, 1 M accepted, copies at cosine distance
0.01-0.09 (`benchmarks/bench_crossbatch.py`): recall 0.975 / 0.990 / 0.994 with nprobe 8 / 12 / 16; the search work
grows linearly with nprobe, so the default 16 costs ~17 k dot products per new pair at 1 M accepted. Matches are always
verified by an exact dot product: the ANN can miss duplicates, never invent them. sha256 and pHash are exact (no
recall loss). `method="auto"` (default) is exact while n_new * (n_accepted + n_new / 2) <= `exact_max_products`.
The centroids are trained once the ANN is first needed and retrained (all segments rewritten in the new cell order)
when the embedded entries have grown `retrain_growth` times since training: amortised, each entry is rewritten a
constant number of times. A retrain assigns every accepted embedding to its cell (O(n_accepted * nlist * d) with flat
cells: ~15-30 s at 1 M here; beyond 4096 cells the two-level cells keep it near O(n_accepted * sqrt(nlist) * d)).

Memory: entries ~150 bytes each in a polars frame, embeddings 4 * d bytes each memory-mapped (page cache, not heap),
pHash bands 8 bytes per entry per band plus 2^width offsets; a merge adds O(n_new * d) plus O(block^2) tiles.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from danqing_assets.lib.clusters import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MAX_HAMMING,
    _flip_masks,
    _InvertedFile,
    hamming_pairs,
    near_duplicate_pairs,
)

log = logging.getLogger(__name__)

KINDS = ("sha256", "pair_id", "phash", "embedding")
"""Duplicate kinds in the order they are checked (a candidate gets the first that matches)."""
_SHA, _PAIR, _PHASH, _EMB = range(4)
_NONE = np.iinfo(np.int64).max  # "no match" rank
_FORMAT = 1
_MANIFEST = "manifest.json"
_SEGMENTS = "segments"

RESULT_SCHEMA = {
    "pair_id": pl.String,
    "accepted": pl.Boolean,
    "duplicate_of": pl.String,
    "duplicate_of_partition": pl.String,
    "duplicate_kind": pl.String,
}
ENTRY_SCHEMA = {
    "pair_id": pl.String,
    "partition": pl.String,
    "seq": pl.Int64,  # sequence number of the merge that accepted it
    "pos": pl.Int64,  # its position among that merge's candidates
    "image_sha256": pl.String,
    "phash": pl.String,
    "has_embedding": pl.Boolean,
    "cell": pl.Int32,  # inverted-file cell (-1: no embedding or no IVF yet); segments are sorted by it
    "orphaned": pl.Boolean,  # pinned, but absent from its partition's latest candidates
}
REJECTION_SCHEMA = {
    "partition": pl.String,
    "pair_id": pl.String,
    "seq": pl.Int64,
    "duplicate_of": pl.String,
    "duplicate_of_partition": pl.String,
    "duplicate_kind": pl.String,
}


# --- files -----------------------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through `write(tmp)` to a temporary name in the same directory, fsync, then `os.replace`."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet(df: pl.DataFrame) -> Callable[[Path], None]:
    return lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=False)


def _write_npy(arr: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr, dtype=np.float32))

    return write


def _write_json(obj: Any) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False))

    return write


def _partition_tag(partition: str) -> str:
    return hashlib.blake2b(partition.encode(), digest_size=6).hexdigest()


# --- pHash multi-index hashing, query side ---------------------------------------------------------------------------


def _query_bands(n: int, max_hamming: int) -> int:
    """Bands m (3..8) minimising probes x bucket occupancy per query, with at most ~2n buckets per band (memory)."""
    max_width = max(8, n.bit_length() + 1)
    best_m, best_cost = 8, math.inf
    for m in range(3, 9):
        width = math.ceil(64 / m)
        if width > max_width:
            continue
        probes = sum(math.comb(width, r) for r in range(max_hamming // m + 1))
        cost = m * probes * (1.0 + n / 2.0**width)
        if cost < best_cost:
            best_m, best_cost = m, cost
    return best_m


class _PhashIndex:
    """Multi-index hashing over the accepted pHashes: per band, the rows sorted by band value and bucket offsets."""

    def __init__(self, values: np.ndarray, rows: np.ndarray, max_hamming: int) -> None:
        self.values = np.asarray(values, dtype=np.uint64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.k = max_hamming
        self.bands: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
        n = self.values.size
        if n == 0:
            return
        m = _query_bands(n, max_hamming)
        shift = 0
        for b in range(m):
            width = 64 // m + (1 if b < 64 % m else 0)
            key = ((self.values >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            order = np.argsort(key, kind="stable")
            starts = np.zeros((1 << width) + 1, dtype=np.int64)
            np.cumsum(np.bincount(key, minlength=1 << width), out=starts[1:])
            self.bands.append((width, shift, order, starts, _flip_masks(width, max_hamming // m)))
            shift += width

    def best(self, q: np.ndarray, rank: np.ndarray, max_candidates: int = 4_000_000) -> np.ndarray:
        """Per query hash, the smallest `rank[row]` over accepted rows within k bits (`_NONE` when none)."""
        q = np.asarray(q, dtype=np.uint64)
        best = np.full(q.size, _NONE, dtype=np.int64)
        all_idx = np.arange(q.size, dtype=np.int64)
        for width, shift, order, starts, flips in self.bands:
            key = ((q >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            for flip in flips:
                qk = key ^ flip
                lo = starts[qk]
                cnt = starts[qk + 1] - lo
                csum = np.cumsum(cnt)
                if not csum.size or csum[-1] == 0:
                    continue
                a = 0
                while a < q.size:  # at most ~max_candidates candidate pairs expanded at once
                    base = csum[a - 1] if a else 0
                    b = max(a + 1, int(np.searchsorted(csum, base + max_candidates, side="right")))
                    c = cnt[a:b]
                    total = int(c.sum())
                    if total:
                        qi = np.repeat(all_idx[a:b], c)
                        pos = np.repeat(lo[a:b] - (np.cumsum(c) - c), c) + np.arange(total)
                        t = order[pos]
                        close = np.bitwise_count(q[qi] ^ self.values[t]) <= self.k
                        if close.any():
                            np.minimum.at(best, qi[close], rank[self.rows[t[close]]])
                    a = b
        return best


def _phash_values(phash: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 values, valid mask) of hex pHashes; null, empty, over-long or non-hex ones are invalid."""
    s = phash.cast(pl.String)
    ok = s.str.len_chars().is_between(1, 16).fill_null(False)
    parsed = s.str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    valid = (ok & parsed.is_not_null()).to_numpy()
    values = parsed.fill_null(0).to_numpy().astype(np.uint64)
    return values, valid


# --- inverted file persistence ---------------------------------------------------------------------------------------


def _save_ivf(ivf: _InvertedFile) -> Callable[[Path], None]:
    sub = ivf.sub or []
    sizes = np.asarray([s.shape[0] for s in sub], dtype=np.int64)
    sub_all = np.concatenate(sub) if sub else np.zeros((0, ivf.coarse.shape[1]), np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, coarse=ivf.coarse, sub=sub_all, sizes=sizes, flat=np.asarray(ivf.sub is None))

    return write


def _load_ivf(path: Path) -> _InvertedFile:
    with np.load(path) as z:
        ivf = _InvertedFile.__new__(_InvertedFile)
        ivf.coarse = z["coarse"].astype(np.float32)
        if bool(z["flat"]):
            ivf.sub = None
            ivf.nlist = int(ivf.coarse.shape[0])
        else:
            sizes = z["sizes"]
            ivf.sub = np.split(z["sub"].astype(np.float32), np.cumsum(sizes)[:-1])
            ivf.offsets = np.cumsum(np.concatenate([[0], sizes]))
            ivf.nlist = int(ivf.offsets[-1])
    return ivf


# --- in-memory state -------------------------------------------------------------------------------------------------


@dataclass
class _Segment:
    """One partition's accepted entries, its embeddings (memory-mapped) and, with an IVF, each cell's row range."""

    partition: str
    entries: pl.DataFrame
    emb: np.ndarray | None  # (rows, dim) float32, NaN rows = no embedding
    bounds: np.ndarray | None  # (nlist + 1,) start row of each cell

    @classmethod
    def make(cls, partition: str, entries: pl.DataFrame, emb: np.ndarray | None, nlist: int | None) -> _Segment:
        bounds = None
        if nlist is not None and entries.height:
            cells = entries["cell"].to_numpy()
            bounds = np.searchsorted(cells, np.arange(nlist + 1), side="left")
        return cls(partition, entries, emb, bounds)


@dataclass
class _View:
    """Everything accepted, concatenated in segment order, plus the arrays a merge searches."""

    segs: list[_Segment]
    entries: pl.DataFrame
    offsets: np.ndarray
    rank: np.ndarray
    has_emb: np.ndarray
    rejections: pl.DataFrame
    _phash: _PhashIndex | None = None
    _rank_order: np.ndarray | None = None

    def row_of_rank(self, ranks: np.ndarray) -> np.ndarray:
        if self._rank_order is None:
            self._rank_order = np.argsort(self.rank, kind="stable")
        return self._rank_order[np.searchsorted(self.rank[self._rank_order], ranks)]

    def phash_index(self, max_hamming: int) -> _PhashIndex:
        if self._phash is None or self._phash.k != max_hamming:
            values, valid = _phash_values(self.entries["phash"])
            rows = np.nonzero(valid)[0]
            self._phash = _PhashIndex(values[rows], rows, max_hamming)
        return self._phash


@dataclass
class _State:
    manifest: dict[str, Any]
    segments: dict[str, _Segment]
    rejections: dict[str, pl.DataFrame]
    ivf: _InvertedFile | None
    view: _View | None = field(default=None)

    def get_view(self) -> _View:
        if self.view is None:
            segs = list(self.segments.values())
            frames = [s.entries for s in segs]
            entries = pl.concat(frames) if frames else pl.DataFrame(schema=ENTRY_SCHEMA)
            sizes = [s.entries.height for s in segs]
            rejections = (pl.concat(list(self.rejections.values())) if self.rejections
                          else pl.DataFrame(schema=REJECTION_SCHEMA))
            self.view = _View(
                segs=segs,
                entries=entries,
                offsets=np.cumsum([0, *sizes]).astype(np.int64),
                rank=(entries["seq"].to_numpy().astype(np.int64) << 32) | entries["pos"].to_numpy().astype(np.int64),
                has_emb=entries["has_embedding"].to_numpy().astype(bool),
                rejections=rejections,
            )
        return self.view


def _empty_manifest() -> dict[str, Any]:
    return {"format": _FORMAT, "generation": 0, "next_seq": 1, "dim": None, "ivf": None, "partitions": {},
            "merges": []}


# --- the index -------------------------------------------------------------------------------------------------------


class CrossBatchIndex:
    """Every accepted pair of every merged partition, kept in `directory`; see the module docstring for the rules.

    `phash_max_hamming` (None disables the pHash check) and `max_distance` (cosine distance, None disables the
    embedding check) are the stage-3 thresholds. `method`, `exact_max_products`, `list_size`, `nprobe`,
    `retrain_growth` and `seed` tune the embedding search; `block` bounds the similarity tiles (block^2 floats).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        phash_max_hamming: int | None = DEFAULT_MAX_HAMMING,
        max_distance: float | None = DEFAULT_MAX_DISTANCE,
        method: Literal["auto", "exact", "ann"] = "auto",
        exact_max_products: float = 1e9,
        list_size: int = 1000,
        nprobe: int = 16,
        retrain_growth: float = 2.0,
        seed: int = 0,
        block: int = 4096,
    ) -> None:
        if phash_max_hamming is not None and not 0 <= phash_max_hamming <= 32:
            raise ValueError("phash_max_hamming must be within 0..32 (or None)")
        if max_distance is not None and not 0.0 <= max_distance < 2.0:
            raise ValueError("max_distance must be within [0, 2) (or None)")
        if method not in ("auto", "exact", "ann"):
            raise ValueError(f"method must be 'auto', 'exact' or 'ann', not {method!r}")
        if list_size < 1 or nprobe < 1 or block < 1 or retrain_growth <= 1.0:
            raise ValueError("list_size, nprobe and block must be >= 1 and retrain_growth > 1")
        self.directory = Path(directory)
        self.phash_max_hamming = phash_max_hamming
        self.max_distance = max_distance
        self.method = method
        self.exact_max_products = float(exact_max_products)
        self.list_size = int(list_size)
        self.nprobe = int(nprobe)
        self.retrain_growth = float(retrain_growth)
        self.seed = int(seed)
        self.block = int(block)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / _SEGMENTS).mkdir(exist_ok=True)
        self._state: _State | None = None

    # ----------------------------------------------------------------- reading
    @property
    def _seg_dir(self) -> Path:
        return self.directory / _SEGMENTS

    @contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        with open(self.directory / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _read_manifest(self) -> dict[str, Any]:
        path = self.directory / _MANIFEST
        if not path.exists():
            return _empty_manifest()
        manifest = json.loads(path.read_text())
        if manifest.get("format") != _FORMAT:
            raise ValueError(f"{path}: unknown cross-batch index format {manifest.get('format')!r}")
        return manifest

    def _load(self) -> _State:
        manifest = self._read_manifest()
        ivf = _load_ivf(self._seg_dir / manifest["ivf"]["file"]) if manifest["ivf"] else None
        nlist = ivf.nlist if ivf is not None else None
        segments: dict[str, _Segment] = {}
        rejections: dict[str, pl.DataFrame] = {}
        for partition, rec in manifest["partitions"].items():
            entries = pl.read_parquet(self._seg_dir / rec["entries"]).cast(ENTRY_SCHEMA).select(list(ENTRY_SCHEMA))
            emb = np.load(self._seg_dir / rec["embeddings"], mmap_mode="r") if rec["embeddings"] else None
            segments[partition] = _Segment.make(partition, entries, emb, nlist)
            rejections[partition] = (pl.read_parquet(self._seg_dir / rec["rejections"]).cast(REJECTION_SCHEMA)
                                     .select(list(REJECTION_SCHEMA)))
        return _State(manifest, segments, rejections, ivf)

    def _current(self) -> _State:
        if self._state is None:
            with self._locked(exclusive=False):
                self._state = self._load()
        return self._state

    def refresh(self) -> None:
        """Re-read the directory (to see merges made by another process since this instance loaded it)."""
        self._state = None

    def accepted(self, partition: str | None = None) -> pl.DataFrame:
        """Accepted pairs (all, or one partition's) in acceptance order: pair_id, partition, seq, image_sha256, phash,
        has_embedding, pinned (another partition's rejection points to it), orphaned (pinned but no longer among its
        partition's candidates)."""
        view = self._current().get_view()
        deps = self._dependencies(view)
        df = view.entries.with_columns(pl.Series("_rank", view.rank))
        if partition is not None:
            df = df.filter(pl.col("partition") == partition)
        df = df.join(deps, left_on=["pair_id", "partition"], right_on=["duplicate_of", "duplicate_of_partition"],
                     how="left").with_columns(pl.col("pinned").fill_null(False))
        return df.sort("_rank").select("pair_id", "partition", "seq", "image_sha256", "phash", "has_embedding",
                                       "pinned", "orphaned")

    def rejections(self, partition: str | None = None) -> pl.DataFrame:
        """Who depends on whom: each rejected candidate (partition, pair_id, seq of its merge) and the accepted pair it
        duplicates (duplicate_of, duplicate_of_partition, duplicate_kind)."""
        df = self._current().get_view().rejections
        if partition is not None:
            df = df.filter(pl.col("partition") == partition)
        return df.sort("seq", "partition", "pair_id")

    def partitions(self) -> list[str]:
        """Merged partition keys, in the order they were first merged."""
        return list(self._current().manifest["partitions"])

    def stats(self) -> dict[str, Any]:
        """Counts of the index, per partition, and the statistics of the latest merge."""
        state = self._current()
        view = state.get_view()
        acc = self.accepted()
        m = state.manifest
        rej_counts = dict(view.rejections.group_by("partition").len().iter_rows())
        return {
            "directory": str(self.directory),
            "generation": m["generation"],
            "merges": len(m["merges"]),
            "partitions": len(m["partitions"]),
            "entries": view.entries.height,
            "with_embedding": int(view.has_emb.sum()),
            "with_phash": int(view.entries["phash"].is_not_null().sum()),
            "with_sha256": int(view.entries["image_sha256"].is_not_null().sum()),
            "pinned": int(acc["pinned"].sum()),
            "orphaned": int(acc["orphaned"].sum()),
            "rejections": view.rejections.height,
            "dim": m["dim"],
            "ivf": m["ivf"],
            "per_partition": {
                p: {"seq": rec["seq"], "candidates": rec["candidates"], "accepted": rec["rows"],
                    "rejected": int(rej_counts.get(p, 0))}
                for p, rec in m["partitions"].items()
            },
            "last_merge": m["merges"][-1] if m["merges"] else None,
        }

    @staticmethod
    def _dependencies(view: _View) -> pl.DataFrame:
        """(duplicate_of, duplicate_of_partition, pinned=True) for entries another partition's rejection points to."""
        return (view.rejections.filter(pl.col("partition") != pl.col("duplicate_of_partition"))
                .select("duplicate_of", "duplicate_of_partition").unique()
                .with_columns(pl.lit(True).alias("pinned")))

    # ----------------------------------------------------------------- merging
    def merge(self, partition: str, candidates: pl.DataFrame, embeddings: np.ndarray | None = None) -> pl.DataFrame:
        """Merge one partition's candidates (in priority order) into the index; persist; return one row per candidate.

        `candidates` has `pair_id` (unique, not null), `image_sha256` and `phash` (16 hex chars; both may be null);
        `embeddings` is None or (n, d) float32 L2-normalised rows aligned with it (NaN rows: no embedding). Returns
        pair_id, accepted, duplicate_of, duplicate_of_partition, duplicate_kind ("sha256" | "pair_id" | "phash" |
        "embedding" | None), in candidate order. Re-merging a partition follows the rule in the module docstring.
        """
        if not isinstance(partition, str) or not partition:
            raise ValueError("partition must be a non-empty string")
        cand = _check_candidates(candidates)
        emb = _check_embeddings(embeddings, cand.height)
        with self._locked(exclusive=True):
            state = self._state
            if state is None or self._read_manifest()["generation"] != state.manifest["generation"]:
                state = self._state = self._load()
            try:
                return self._merge(state, partition, cand, emb)
            except BaseException:
                self._state = None  # the in-memory state may be half-updated: reload the committed one next time
                raise

    def _merge(self, state: _State, partition: str, cand: pl.DataFrame, emb: np.ndarray | None) -> pl.DataFrame:
        t0 = time.perf_counter()
        manifest = json.loads(json.dumps(state.manifest))  # deep copy: committed only at the end
        seq, gen = manifest["next_seq"], manifest["generation"] + 1
        n = cand.height
        dim = manifest["dim"]
        if emb is not None:
            if dim is None:
                dim = manifest["dim"] = int(emb.shape[1])
            elif emb.shape[1] != dim:
                raise ValueError(f"embeddings have dimension {emb.shape[1]}, the index holds dimension {dim}")
        has_emb = np.isfinite(emb).all(axis=1) if emb is not None else np.zeros(n, dtype=bool)
        pair_ids = cand["pair_id"]

        # the re-merge rule: P's entries others depend on are pinned, the rest withdrawn
        view = state.get_view()
        deps = self._dependencies(view).filter(pl.col("duplicate_of_partition") == partition)
        pinned_ids = set(deps["duplicate_of"].to_list())
        is_p = (view.entries["partition"] == partition).to_numpy()
        pinned_rows = np.nonzero(is_p & view.entries["pair_id"].is_in(list(pinned_ids)).to_numpy())[0]
        withdrawn = is_p.copy()
        withdrawn[pinned_rows] = False
        self_mask = pair_ids.is_in(list(pinned_ids)).to_numpy() if pinned_ids else np.zeros(n, dtype=bool)
        alive = ~self_mask

        # embedding method (decided on an upper bound of the queries) and, for the ANN, the inverted file
        n_old_emb = int((view.has_emb & ~withdrawn).sum())
        n_q_max = int((alive & has_emb).sum()) if self.max_distance is not None else 0
        products = n_q_max * (n_old_emb + n_q_max / 2)
        use_ann = n_q_max > 0 and (
            self.method == "ann" or (self.method == "auto" and products > self.exact_max_products))
        retrained = False
        if use_ann:
            total = int(view.has_emb.sum()) + n_q_max
            trained_on = manifest["ivf"]["trained_on"] if manifest["ivf"] else 0
            if state.ivf is None or total > self.retrain_growth * trained_on:
                self._retrain(state, manifest, gen, emb[alive & has_emb], total)
                retrained = True
                view = state.get_view()  # rows were reordered by cell
                is_p = (view.entries["partition"] == partition).to_numpy()
                pinned_rows = np.nonzero(is_p & view.entries["pair_id"].is_in(list(pinned_ids)).to_numpy())[0]
                withdrawn = is_p.copy()
                withdrawn[pinned_rows] = False
        live_rank = np.where(withdrawn, _NONE, view.rank)

        # 1. against the accepted entries: the first kind that matches, the earliest accepted entry of that kind
        best = np.full(n, _NONE, dtype=np.int64)
        kind = np.full(n, -1, dtype=np.int8)

        def settle(idx: np.ndarray, ranks: np.ndarray, k: int) -> None:
            hit = ranks < _NONE
            best[idx[hit]] = ranks[hit]
            kind[idx[hit]] = k

        open_ = lambda: np.nonzero(alive & (kind < 0))[0]  # noqa: E731
        for k, col in ((_SHA, "image_sha256"), (_PAIR, "pair_id")):
            idx = open_()
            if idx.size and view.entries.height:
                settle(idx, _best_by_key(cand[col], idx, view.entries[col], live_rank), k)
        values, valid = _phash_values(cand["phash"])
        if self.phash_max_hamming is not None and view.entries.height:
            idx = np.intersect1d(open_(), np.nonzero(valid)[0])
            if idx.size:
                ph = view.phash_index(self.phash_max_hamming)
                settle(idx, ph.best(values[idx], live_rank), _PHASH)
        q_idx = np.nonzero(alive & (kind < 0) & has_emb)[0] if self.max_distance is not None else np.empty(0, np.int64)
        emb_pairs = (np.empty(0, np.int64), np.empty(0, np.int64))
        home = None
        method_used = "none"
        if q_idx.size:
            embq = np.ascontiguousarray(emb[q_idx])
            min_sim = np.float32(1.0 - self.max_distance)
            if use_ann:
                method_used = "ann"
                ranks, (pi, pj), home = self._ann_search(view, live_rank, state.ivf, embq, min_sim)
            else:
                method_used = "exact"
                ranks = self._exact_search(view, live_rank, embq, min_sim)
                pi, pj = near_duplicate_pairs(embq, max_distance=self.max_distance, method="exact", block=self.block)
            settle(q_idx, ranks, _EMB)
            emb_pairs = (q_idx[pi], q_idx[pj])
        rejected_old = kind >= 0

        # 2. inside the batch: greedy in candidate order among the candidates still standing
        standing = alive & ~rejected_old
        edges_i, edges_j, edges_k = [], [], []
        if self.phash_max_hamming is not None:
            sidx = np.nonzero(standing & valid)[0]
            if sidx.size > 1:
                a, b = hamming_pairs(values[sidx], self.phash_max_hamming)
                edges_i.append(sidx[a])
                edges_j.append(sidx[b])
                edges_k.append(np.full(a.size, _PHASH, np.int8))
        if emb_pairs[0].size:
            keep = standing[emb_pairs[0]] & standing[emb_pairs[1]]
            edges_i.append(emb_pairs[0][keep])
            edges_j.append(emb_pairs[1][keep])
            edges_k.append(np.full(int(keep.sum()), _EMB, np.int8))
        in_dup, in_kind = _greedy(standing, cand["image_sha256"], edges_i, edges_j, edges_k)
        accepted = alive & ~rejected_old & (in_dup < 0)
        accepted |= self_mask

        # 3. the result, in candidate order
        dup_of = np.full(n, None, dtype=object)
        dup_part = np.full(n, None, dtype=object)
        if rejected_old.any():
            rows = view.row_of_rank(best[rejected_old])
            dup_of[rejected_old] = view.entries["pair_id"].to_numpy()[rows]
            dup_part[rejected_old] = view.entries["partition"].to_numpy()[rows]
        inb = in_dup >= 0
        if inb.any():
            dup_of[inb] = pair_ids.to_numpy()[in_dup[inb]]
            dup_part[inb] = partition
            kind[inb] = in_kind[inb]
        kind_names = np.array([*KINDS, None], dtype=object)
        result = pl.DataFrame(
            {"pair_id": pair_ids, "accepted": accepted, "duplicate_of": dup_of.tolist(),
             "duplicate_of_partition": dup_part.tolist(), "duplicate_kind": kind_names[kind].tolist()},
            schema=RESULT_SCHEMA,
        )

        # 4. P's new segment: its pinned entries plus the candidates accepted now; its rejections
        new_idx = np.nonzero(accepted & ~self_mask)[0]
        pinned_entries = view.entries[pinned_rows].with_columns(
            (~pl.col("pair_id").is_in(pair_ids.implode())).alias("orphaned"))
        cells = np.full(new_idx.size, -1, dtype=np.int32)
        if state.ivf is not None:
            q_pos = np.full(n, -1, dtype=np.int64)
            q_pos[q_idx] = np.arange(q_idx.size)
            has = has_emb[new_idx]
            if home is not None:
                cells[has] = home[q_pos[new_idx[has]]]
            elif has.any():
                cells[has] = _assign(state.ivf, emb[new_idx[has]])
        new_entries = pl.DataFrame(
            {"pair_id": pair_ids.gather(new_idx), "partition": [partition] * new_idx.size,
             "seq": np.full(new_idx.size, seq, np.int64), "pos": new_idx.astype(np.int64),
             "image_sha256": cand["image_sha256"].gather(new_idx), "phash": cand["phash"].gather(new_idx),
             "has_embedding": has_emb[new_idx], "cell": cells, "orphaned": np.zeros(new_idx.size, bool)},
            schema=ENTRY_SCHEMA,
        )
        seg_entries = pl.concat([pinned_entries, new_entries])
        seg_emb = None
        if dim is not None and seg_entries["has_embedding"].any():  # no file for a segment without embeddings
            seg_emb = np.full((seg_entries.height, dim), np.nan, dtype=np.float32)
            old_seg = state.segments.get(partition)
            if pinned_rows.size and old_seg is not None and old_seg.emb is not None:
                p_off = view.offsets[list(state.segments).index(partition)]
                seg_emb[: pinned_rows.size] = old_seg.emb[pinned_rows - p_off]
            if emb is not None and new_idx.size:
                seg_emb[pinned_rows.size:] = emb[new_idx]
        if state.ivf is not None and seg_entries.height:
            order = np.argsort(seg_entries["cell"].to_numpy(), kind="stable")
            seg_entries = seg_entries[order]
            seg_emb = seg_emb[order] if seg_emb is not None else None
        rej_mask = ~accepted
        rej = pl.DataFrame(
            {"partition": [partition] * int(rej_mask.sum()), "pair_id": pair_ids.filter(pl.Series(rej_mask)),
             "seq": np.full(int(rej_mask.sum()), seq, np.int64), "duplicate_of": dup_of[rej_mask].tolist(),
             "duplicate_of_partition": dup_part[rej_mask].tolist(),
             "duplicate_kind": kind_names[kind[rej_mask]].tolist()},
            schema=REJECTION_SCHEMA,
        )

        # 5. write P's files, then commit the manifest
        tag = _partition_tag(partition)
        names = {"entries": f"seg-{tag}-g{gen:06d}.parquet", "rejections": f"rej-{tag}-g{gen:06d}.parquet",
                 "embeddings": f"emb-{tag}-g{gen:06d}.npy" if seg_emb is not None else None}
        _atomic_write(self._seg_dir / names["entries"], _write_parquet(seg_entries))
        if seg_emb is not None:
            _atomic_write(self._seg_dir / names["embeddings"], _write_npy(seg_emb))
        _atomic_write(self._seg_dir / names["rejections"], _write_parquet(rej))
        counts = np.bincount(kind[~accepted], minlength=len(KINDS)) if (~accepted).any() else np.zeros(len(KINDS))
        stats = {
            "partition": partition, "seq": seq, "generation": gen, "candidates": n, "accepted": int(accepted.sum()),
            "reaccepted_pinned": int(self_mask.sum()), "rejected": int((~accepted).sum()),
            **{f"rejected_{k}": int(c) for k, c in zip(KINDS, counts, strict=True)},
            "within_batch": int(inb.sum()), "missing_embedding": int((~has_emb).sum()),
            "withdrawn": int(withdrawn.sum()), "pinned_absent": int(pinned_entries["orphaned"].sum()),
            "method": method_used, "ivf_retrained": retrained,
            "phash_max_hamming": self.phash_max_hamming, "max_distance": self.max_distance,
        }
        rec = manifest["partitions"].setdefault(partition, {})
        rec.update(seq=seq, candidates=n, rows=seg_entries.height, **names)
        manifest["generation"], manifest["next_seq"] = gen, seq + 1
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        manifest["merges"].append(stats)
        _atomic_write(self.directory / _MANIFEST, _write_json(manifest))
        _fsync_dir(self.directory)

        # 6. the committed state in memory; old files away
        emb_map = np.load(self._seg_dir / names["embeddings"], mmap_mode="r") if seg_emb is not None else None
        state.segments[partition] = _Segment.make(partition, seg_entries, emb_map,
                                                  state.ivf.nlist if state.ivf is not None else None)
        state.rejections[partition] = rej
        state.manifest = manifest
        state.view = None
        self._collect_garbage(manifest)
        log.info("cross-batch merge of %s: %s", partition, stats)
        return result

    # ----------------------------------------------------------------- embedding search
    def _exact_search(self, view: _View, live_rank: np.ndarray, embq: np.ndarray, min_sim: np.float32) -> np.ndarray:
        """Earliest live accepted rank within the threshold, per query, by `block` x `block` tiles."""
        best = np.full(embq.shape[0], _NONE, dtype=np.int64)
        for seg, off in zip(view.segs, view.offsets[:-1], strict=True):
            if seg.emb is None:
                continue
            for c0 in range(0, seg.emb.shape[0], self.block):
                ranks = live_rank[off + c0 : off + c0 + self.block]
                if (ranks == _NONE).all():
                    continue
                tile = np.asarray(seg.emb[c0 : c0 + self.block])
                for r0 in range(0, embq.shape[0], self.block):
                    qi, mj = _close(embq[r0 : r0 + self.block] @ tile.T, min_sim)
                    if qi.size:
                        np.minimum.at(best, qi + r0, ranks[mj])
        return best

    def _ann_search(
        self, view: _View, live_rank: np.ndarray, ivf: _InvertedFile, embq: np.ndarray, min_sim: np.float32
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
        """(earliest live accepted rank per query, new-vs-new pairs i < j, home cell per query) via the IVF."""
        nq = embq.shape[0]
        best = np.full(nq, _NONE, dtype=np.int64)
        probes = ivf.probe(embq, min(self.nprobe, ivf.nlist))
        home = probes[:, 0].astype(np.int32)
        vis_point = np.repeat(np.arange(nq, dtype=np.int64), probes.shape[1])
        vis_cell = probes.ravel()
        keep = vis_cell >= 0
        order = np.argsort(vis_cell[keep], kind="stable")
        vis_point, vis_cell = vis_point[keep][order], vis_cell[keep][order]
        vis_bounds = np.searchsorted(vis_cell, np.arange(ivf.nlist + 1))
        home_order = np.argsort(home, kind="stable")
        home_bounds = np.searchsorted(home[home_order], np.arange(ivf.nlist + 1))
        segs = [(s, off) for s, off in zip(view.segs, view.offsets[:-1], strict=True)
                if s.emb is not None and s.bounds is not None]
        out_i, out_j = [], []
        budget = self.block * self.block
        for cell in np.nonzero(vis_bounds[1:] > vis_bounds[:-1])[0]:
            visitors = vis_point[vis_bounds[cell] : vis_bounds[cell + 1]]
            parts, ranks = [], []
            for s, off in segs:
                lo, hi = int(s.bounds[cell]), int(s.bounds[cell + 1])
                if hi > lo:
                    parts.append(s.emb[lo:hi])
                    ranks.append(live_rank[off + lo : off + hi])
            old = (np.asarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)) if parts else None
            old_rank = (ranks[0] if len(ranks) == 1 else np.concatenate(ranks)) if parts else None
            members = home_order[home_bounds[cell] : home_bounds[cell + 1]]
            new = embq[members] if members.size else None
            width = max(1, (old.shape[0] if old is not None else 0) + members.size)
            step = max(1, budget // width)
            for v0 in range(0, visitors.size, step):  # bounded tiles even for crowded cells
                vis = visitors[v0 : v0 + step]
                x = embq[vis]
                if old is not None:
                    qi, mj = _close(x @ old.T, min_sim)
                    if qi.size:
                        np.minimum.at(best, vis[qi], old_rank[mj])
                if new is not None:
                    qi, mj = _close(x @ new.T, min_sim)
                    a, b = vis[qi], members[mj]
                    distinct = a != b
                    if distinct.any():
                        out_i.append(np.minimum(a[distinct], b[distinct]))
                        out_j.append(np.maximum(a[distinct], b[distinct]))
        if out_i:
            key = np.unique(np.concatenate(out_i) * nq + np.concatenate(out_j))
            pairs = (key // nq, key % nq)
        else:
            pairs = (np.empty(0, np.int64), np.empty(0, np.int64))
        return best, pairs, home

    def _retrain(self, state: _State, manifest: dict[str, Any], gen: int, new_emb: np.ndarray, total: int) -> None:
        """Train the inverted file on a sample of accepted + new embeddings; rewrite every segment sorted by cell."""
        view = state.get_view()
        nlist = max(1, math.ceil(total / self.list_size))
        n_old = int(view.has_emb.sum())
        sample_size = min(total, 64 * nlist)
        rng = np.random.default_rng(self.seed + gen)
        take = np.sort(rng.choice(total, sample_size, replace=False))
        old_rows = np.nonzero(view.has_emb)[0][take[take < n_old]]
        parts = []
        for s, off, end in zip(view.segs, view.offsets[:-1], view.offsets[1:], strict=True):
            local = old_rows[(old_rows >= off) & (old_rows < end)] - off
            if local.size:
                parts.append(np.asarray(s.emb[local]))
        parts.append(new_emb[take[take >= n_old] - n_old])
        sample = np.concatenate(parts).astype(np.float32, copy=False)
        ivf = _InvertedFile(sample, list_size=max(1, sample.shape[0] // nlist), flat_max_lists=4096,
                            seed=self.seed, iters=8)
        ivf_name = f"ivf-g{gen:06d}.npz"
        _atomic_write(self._seg_dir / ivf_name, _save_ivf(ivf))
        for partition, seg in list(state.segments.items()):
            rec = manifest["partitions"][partition]
            if seg.emb is None or not seg.entries["has_embedding"].any():
                state.segments[partition] = _Segment.make(partition, seg.entries, seg.emb, ivf.nlist)
                continue
            cells = np.full(seg.entries.height, -1, dtype=np.int32)
            idx = np.nonzero(seg.entries["has_embedding"].to_numpy())[0]
            for s0 in range(0, idx.size, 65536):
                cells[idx[s0 : s0 + 65536]] = _assign(ivf, np.asarray(seg.emb[idx[s0 : s0 + 65536]]))
            order = np.argsort(cells, kind="stable")
            entries = seg.entries.with_columns(pl.Series("cell", cells))[order]
            tag = _partition_tag(partition)
            rec["entries"] = f"seg-{tag}-g{gen:06d}.parquet"
            rec["embeddings"] = f"emb-{tag}-g{gen:06d}.npy"
            _atomic_write(self._seg_dir / rec["entries"], _write_parquet(entries))
            src = seg.emb

            def write_permuted(tmp: Path, src: np.ndarray = src, order: np.ndarray = order) -> None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=src.shape)
                for r0 in range(0, order.size, 65536):
                    out[r0 : r0 + 65536] = src[order[r0 : r0 + 65536]]
                out.flush()
                del out

            _atomic_write(self._seg_dir / rec["embeddings"], write_permuted)
            emb_map = np.load(self._seg_dir / rec["embeddings"], mmap_mode="r")
            state.segments[partition] = _Segment.make(partition, entries, emb_map, ivf.nlist)
        state.ivf = ivf
        state.view = None
        manifest["ivf"] = {"file": ivf_name, "trained_on": total, "nlist": ivf.nlist, "generation": gen}

    def _collect_garbage(self, manifest: dict[str, Any]) -> None:
        """Delete segment files the committed manifest no longer names, and temporary files of failed writes."""
        keep = {manifest["ivf"]["file"]} if manifest["ivf"] else set()
        for rec in manifest["partitions"].values():
            keep.update(v for k, v in rec.items() if k in ("entries", "embeddings", "rejections") and v)
        for path in self._seg_dir.iterdir():
            name = path.name
            ours = name.startswith(("seg-", "emb-", "rej-", "ivf-")) or (name.startswith(".") and name.endswith(".tmp"))
            if ours and name not in keep:
                try:
                    path.unlink()
                except OSError:  # pragma: no cover - best effort
                    pass
        for path in self.directory.glob(f".{_MANIFEST}.*.tmp"):
            path.unlink(missing_ok=True)


# --- helpers ---------------------------------------------------------------------------------------------------------


def _close(sims: np.ndarray, min_sim: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the similarities >= min_sim; rows without any are skipped before the full scan."""
    mask = sims >= min_sim
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return rows, rows
    qi, mj = np.nonzero(mask[rows])
    return rows[qi], mj


def _assign(ivf: _InvertedFile, x: np.ndarray) -> np.ndarray:
    return ivf.probe(np.ascontiguousarray(x, dtype=np.float32), 1)[:, 0].astype(np.int32)


def _check_candidates(candidates: pl.DataFrame) -> pl.DataFrame:
    if not isinstance(candidates, pl.DataFrame):
        raise TypeError("candidates must be a polars DataFrame")
    cols = ("pair_id", "image_sha256", "phash")
    if candidates.height == 0:
        return pl.DataFrame(schema={c: pl.String for c in cols})
    missing = [c for c in cols if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack columns {missing}")
    df = candidates.select(pl.col(c).cast(pl.String) for c in cols)
    if df["pair_id"].null_count():
        raise ValueError("candidates have null pair_id")
    if df["pair_id"].n_unique() != df.height:
        raise ValueError("candidates have duplicate pair_id values")
    return df


def _check_embeddings(embeddings: np.ndarray | None, n: int) -> np.ndarray | None:
    if embeddings is None:
        return None
    emb = np.array(embeddings, dtype=np.float32, copy=True)
    if emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] < 1:
        raise ValueError(f"embeddings must have shape ({n}, d), got {emb.shape}")
    finite = np.isfinite(emb).all(axis=1)
    emb[~finite] = np.nan
    if finite.any():
        norms = np.linalg.norm(emb[finite], axis=1)
        if np.abs(norms - 1.0).max() > 1e-2:
            raise ValueError("embeddings must be L2-normalised rows (or NaN rows for missing ones)")
    return emb


def _best_by_key(keys_q: pl.Series, q_idx: np.ndarray, keys_old: pl.Series, live_rank: np.ndarray) -> np.ndarray:
    """Per query row, the smallest live rank among accepted rows with the same (non-null) key; `_NONE` when none."""
    old = (pl.DataFrame({"k": keys_old, "r": live_rank})
           .filter((pl.col("r") < _NONE) & pl.col("k").is_not_null())
           .group_by("k").agg(pl.col("r").min()))
    q = pl.DataFrame({"k": keys_q.gather(q_idx), "i": np.arange(q_idx.size)})
    hit = q.join(old, on="k", how="inner")
    out = np.full(q_idx.size, _NONE, dtype=np.int64)
    out[hit["i"].to_numpy()] = hit["r"].to_numpy()
    return out


def _greedy(
    standing: np.ndarray,
    sha: pl.Series,
    edges_i: list[np.ndarray],
    edges_j: list[np.ndarray],
    edges_k: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Within-batch greedy: in candidate order, each standing candidate not yet rejected is accepted and rejects every
    later standing candidate it duplicates (same sha256, then pHash, then embedding edges). Returns, per candidate,
    the index of the candidate it duplicates (-1: none) and the kind."""
    n = standing.size
    dup = np.full(n, -1, dtype=np.int64)
    kind = np.full(n, -1, dtype=np.int8)
    # same-sha groups among the standing candidates
    idx = np.nonzero(standing & sha.is_not_null().to_numpy())[0]
    groups: dict[int, np.ndarray] = {}
    group_of = np.full(n, -1, dtype=np.int64)
    if idx.size > 1:
        codes = pl.Series(sha.gather(idx)).rank("dense").to_numpy().astype(np.int64)
        order = np.lexsort((idx, codes))
        c_sorted, i_sorted = codes[order], idx[order]
        starts = np.r_[0, np.nonzero(c_sorted[1:] != c_sorted[:-1])[0] + 1, c_sorted.size]
        for a in np.nonzero(np.diff(starts) > 1)[0].tolist():  # only groups of two or more
            lo, hi = int(starts[a]), int(starts[a + 1])
            groups[int(c_sorted[lo])] = i_sorted[lo:hi]
            group_of[i_sorted[lo:hi]] = c_sorted[lo]
    ei = np.concatenate(edges_i) if edges_i else np.empty(0, np.int64)
    ej = np.concatenate(edges_j) if edges_j else np.empty(0, np.int64)
    ek = np.concatenate(edges_k) if edges_k else np.empty(0, np.int8)
    order = np.lexsort((ej, ek, ei))
    ei, ej, ek = ei[order], ej[order], ek[order]
    nodes = np.union1d(np.unique(ei), np.nonzero(group_of >= 0)[0])
    lo_all = np.searchsorted(ei, nodes, side="left")
    hi_all = np.searchsorted(ei, nodes, side="right")
    rejected = np.zeros(n, dtype=bool)
    for node, lo, hi in zip(nodes.tolist(), lo_all.tolist(), hi_all.tolist(), strict=True):
        if rejected[node]:
            continue  # a rejected candidate is not in the release: it rejects nobody
        g = int(group_of[node])
        if g >= 0 and g in groups:
            later = groups.pop(g)
            later = later[(later > node) & ~rejected[later]]
            rejected[later], dup[later], kind[later] = True, node, _SHA
        if hi > lo:
            js, ks = ej[lo:hi], ek[lo:hi]
            fresh = ~rejected[js]
            js, ks = js[fresh], ks[fresh]
            if js.size:
                uj, first = np.unique(js, return_index=True)  # strongest kind first (edges sorted by kind)
                rejected[uj], dup[uj], kind[uj] = True, node, ks[first]
    return dup, kind
