"""Cross-batch dedup index: duplicate kinds across and inside partitions, the re-merge rule, persistence, atomicity."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl
import pytest

from danqing_assets.lib import crossbatch
from danqing_assets.lib.crossbatch import KINDS, CrossBatchIndex, _PhashIndex

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _at_distance(u: np.ndarray, d: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at cosine distance exactly d (1 - cos) from unit vector u."""
    w = rng.standard_normal(u.shape[0])
    w -= (w @ u) * u
    w /= np.linalg.norm(w)
    c = 1.0 - d
    return _unit(c * u + np.sqrt(1 - c * c) * w)


def _sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def _hex(v: int) -> str:
    return format(v & (2**64 - 1), "016x")


def _flip(h: str, bits: int, start: int = 0) -> str:
    v = int(h, 16)
    for b in range(start, start + bits):
        v ^= 1 << b
    return _hex(v)


class Batch:
    """Candidate rows built one at a time: frame + aligned embeddings."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.emb: list[np.ndarray] = []

    def add(self, pair_id: str, sha: str | None, phash: str | None, emb: np.ndarray | None) -> Batch:
        self.rows.append({"pair_id": pair_id, "image_sha256": sha, "phash": phash})
        self.emb.append(np.full(DIM, np.nan, np.float32) if emb is None else emb)
        return self

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema={"pair_id": pl.String, "image_sha256": pl.String, "phash": pl.String})

    def embeddings(self) -> np.ndarray:
        return np.stack(self.emb) if self.emb else np.zeros((0, DIM), np.float32)


def _merge(idx: CrossBatchIndex, partition: str, batch: Batch, with_emb: bool = True) -> dict[str, dict]:
    out = idx.merge(partition, batch.frame(), batch.embeddings() if with_emb else None)
    assert out["pair_id"].to_list() == [r["pair_id"] for r in batch.rows]  # candidate order
    return {r["pair_id"]: r for r in out.iter_rows(named=True)}


def _random_features(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """n pHashes pairwise > 6 bits apart and n embeddings pairwise farther than 0.1 (random in 16-d: ~1 apart)."""
    hashes = [_hex(int(v)) for v in rng.integers(0, 2**63, n, dtype=np.int64) * 2 + 1]
    return hashes, _unit(rng.standard_normal((n, DIM)))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


# --- duplicate kinds --------------------------------------------------------------------------------------------------


def test_exact_phash_and_embedding_duplicates_across_partitions(tmp_path, rng) -> None:
    hashes, emb = _random_features(rng, 8)
    idx = CrossBatchIndex(tmp_path / "idx")
    first = Batch()
    for k, name in enumerate("abcd"):
        first.add(name, _sha(name), hashes[k], emb[k])
    res = _merge(idx, "CC-MAIN-2024-10", first)
    assert all(r["accepted"] and r["duplicate_of"] is None and r["duplicate_kind"] is None for r in res.values())

    second = (Batch()
              .add("e", _sha("a"), hashes[4], emb[4])  # same bytes as a
              .add("f", _sha("f"), _flip(hashes[1], 5), emb[5])  # pHash 5 bits from b
              .add("g", _sha("g"), hashes[6], _at_distance(emb[2], 0.05, rng))  # semantic copy of c
              .add("h", _sha("h"), hashes[7], emb[7]))  # new
    res = _merge(idx, "CC-MAIN-2024-18", second)
    assert (res["e"]["accepted"], res["e"]["duplicate_of"], res["e"]["duplicate_kind"]) == (False, "a", "sha256")
    assert (res["f"]["accepted"], res["f"]["duplicate_of"], res["f"]["duplicate_kind"]) == (False, "b", "phash")
    assert (res["g"]["accepted"], res["g"]["duplicate_of"], res["g"]["duplicate_kind"]) == (False, "c", "embedding")
    assert res["h"]["accepted"] and res["h"]["duplicate_of"] is None
    assert {res[p]["duplicate_of_partition"] for p in "efg"} == {"CC-MAIN-2024-10"}
    acc = idx.accepted()
    assert acc["pair_id"].to_list() == ["a", "b", "c", "d", "h"]  # acceptance order
    assert acc.filter(pl.col("pair_id") == "h")["seq"].item() == 2
    rej = idx.rejections()
    assert rej.select("partition", "pair_id", "duplicate_of", "duplicate_of_partition", "duplicate_kind").rows() == [
        ("CC-MAIN-2024-18", "e", "a", "CC-MAIN-2024-10", "sha256"),
        ("CC-MAIN-2024-18", "f", "b", "CC-MAIN-2024-10", "phash"),
        ("CC-MAIN-2024-18", "g", "c", "CC-MAIN-2024-10", "embedding"),
    ]
    last = idx.stats()["last_merge"]
    counts = (last["accepted"], last["rejected_sha256"], last["rejected_phash"], last["rejected_embedding"])
    assert counts == (1, 1, 1, 1)
    assert last["method"] == "exact" and last["missing_embedding"] == 0


def test_near_but_not_duplicate_is_kept_and_thresholds_are_inclusive(tmp_path, rng) -> None:
    hashes, emb = _random_features(rng, 8)
    idx = CrossBatchIndex(tmp_path)
    base = Batch().add("p", _sha("p"), hashes[0], emb[0]).add("q", _sha("q"), hashes[1], emb[1])
    _merge(idx, "old", base)
    new = (Batch()
           .add("p7", _sha("p7"), _flip(hashes[0], 7), emb[2])  # 7 bits: not a pHash duplicate
           .add("p6", _sha("p6"), _flip(hashes[0], 6, start=20), emb[3])  # 6 bits: duplicate
           .add("q12", _sha("q12"), hashes[4], _at_distance(emb[1], 0.12, rng))  # cosine distance 0.12: kept
           .add("q09", _sha("q09"), hashes[5], _at_distance(emb[1], 0.09, rng)))  # 0.09: duplicate
    res = _merge(idx, "new", new)
    assert res["p7"]["accepted"] and res["q12"]["accepted"]
    assert (res["p6"]["duplicate_of"], res["p6"]["duplicate_kind"]) == ("p", "phash")
    assert (res["q09"]["duplicate_of"], res["q09"]["duplicate_kind"]) == ("q", "embedding")


def test_within_batch_duplicates_earliest_accepted_wins(tmp_path, rng) -> None:
    hashes, emb = _random_features(rng, 10)
    a = emb[0]
    b = _at_distance(a, 0.06, rng)
    # c: 0.06 from b, on the far side from a (same plane), so ~0.23 from a
    w = _unit(b - a * (a @ b))
    theta = np.arccos(1 - 0.06)
    c = _unit(np.cos(2 * theta) * a + np.sin(2 * theta) * w)
    assert 1 - float(a @ c) > 0.2 and abs(1 - float(b @ c) - 0.06) < 1e-4
    batch = (Batch()
             .add("x2", _sha("x"), hashes[1], emb[1])  # first copy of x in the given order: wins
             .add("x1", _sha("x"), hashes[1], emb[1])
             .add("y", _sha("y"), hashes[2], emb[2])
             .add("y~", _sha("y~"), _flip(hashes[2], 2), emb[3])
             .add("A", _sha("A"), hashes[4], a)
             .add("B", _sha("B"), hashes[5], b)
             .add("C", _sha("C"), hashes[6], c))  # duplicates only B, which was rejected: kept
    res = _merge(CrossBatchIndex(tmp_path), "solo", batch)
    assert res["x2"]["accepted"] and not res["x1"]["accepted"]
    assert (res["x1"]["duplicate_of"], res["x1"]["duplicate_kind"], res["x1"]["duplicate_of_partition"]) == (
        "x2", "sha256", "solo")
    assert (res["y~"]["duplicate_of"], res["y~"]["duplicate_kind"]) == ("y", "phash")
    assert res["A"]["accepted"] and (res["B"]["duplicate_of"], res["B"]["duplicate_kind"]) == ("A", "embedding")
    assert res["C"]["accepted"]
    idx = CrossBatchIndex(tmp_path)
    assert idx.stats()["last_merge"]["within_batch"] == 3
    assert idx.stats()["pinned"] == 0  # rejections inside a partition pin nothing


def test_same_partition_registered_twice_adds_nothing(tmp_path, rng) -> None:
    hashes, emb = _random_features(rng, 6)
    batch = Batch()
    for k in range(6):
        batch.add(f"id{k}", _sha(f"img{k}"), hashes[k], emb[k])
    idx = CrossBatchIndex(tmp_path)
    _merge(idx, "batch-1", batch)
    res = _merge(idx, "batch-1-again", batch)
    assert not any(r["accepted"] for r in res.values())
    assert all(r["duplicate_of"] == pid and r["duplicate_kind"] == "sha256" and r["duplicate_of_partition"] == "batch-1"
               for pid, r in res.items())
    assert idx.accepted()["partition"].unique().to_list() == ["batch-1"]
    assert idx.accepted()["pinned"].all()  # the copy depends on every pair of the original
    # without image hashes or embeddings the pair id alone still stops it
    bare = Batch()
    for k in range(6):
        bare.add(f"id{k}", None, None, None)
    res = _merge(idx, "batch-1-bare", bare, with_emb=False)
    assert {r["duplicate_kind"] for r in res.values()} == {"pair_id"}
    assert idx.stats()["entries"] == 6


# --- the re-merge rule ------------------------------------------------------------------------------------------------


def test_remerge_accepts_nothing_twice_and_keeps_pinned_entries(tmp_path, rng) -> None:
    hashes, emb = _random_features(rng, 12)
    feats = {name: (_sha(name), hashes[k], emb[k]) for k, name in enumerate("abcdefghijkl")}

    def batch(*names: str, **alias: str) -> Batch:
        out = Batch()
        for name in names:
            src = alias.get(name, name)  # an image copied from another pair
            sha, ph, e = feats[src]
            out.add(name, sha, ph, e)
        return out

    idx = CrossBatchIndex(tmp_path)
    _merge(idx, "P1", batch("a", "b", "c"))
    res = _merge(idx, "P2", batch("a2", "d", a2="a"))  # a2 duplicates a: P2 depends on a
    assert res["a2"]["duplicate_of"] == "a" and res["d"]["accepted"]
    assert idx.accepted("P1").filter(pl.col("pinned"))["pair_id"].to_list() == ["a"]

    # P1 re-materialized without a: a stays (pinned) and is reported orphaned; b, c merged again; e new
    res = _merge(idx, "P1", batch("b", "c", "e"))
    assert all(r["accepted"] for r in res.values())
    acc = idx.accepted()
    assert acc["pair_id"].is_unique().all()
    assert sorted(acc["pair_id"].to_list()) == ["a", "b", "c", "d", "e"]
    a_row = acc.filter(pl.col("pair_id") == "a").row(0, named=True)
    assert a_row["pinned"] and a_row["orphaned"] and a_row["seq"] == 1
    assert acc.filter(pl.col("pair_id") == "b")["seq"].item() == 3  # re-merged: a new merge
    last = idx.stats()["last_merge"]
    assert (last["withdrawn"], last["pinned_absent"], last["reaccepted_pinned"]) == (2, 1, 0)
    dep = idx.rejections("P2").row(0, named=True)
    assert (dep["duplicate_of"], dep["duplicate_of_partition"]) == ("a", "P1")  # still points at a present entry

    # a comes back: accepted as itself (not as a duplicate of its own entry), no longer orphaned; a candidate of P1
    # that copies the pinned a is a duplicate of it; one that copies P2's d is a duplicate of d (merged before)
    res = _merge(idx, "P1", batch("a", "a3", "b", "c", "e", "f", "d1", a3="a", d1="d"))
    assert res["a"]["accepted"] and res["a"]["duplicate_of"] is None
    assert (res["a3"]["duplicate_of"], res["a3"]["duplicate_of_partition"]) == ("a", "P1")
    assert (res["d1"]["duplicate_of"], res["d1"]["duplicate_of_partition"]) == ("d", "P2")
    acc = idx.accepted()
    assert acc["pair_id"].is_unique().all() and sorted(acc["pair_id"].to_list()) == list("abcdef")
    assert not acc.filter(pl.col("pair_id") == "a")["orphaned"].item()
    assert idx.stats()["last_merge"]["reaccepted_pinned"] == 1
    assert acc.filter(pl.col("pair_id") == "d")["pinned"].item()  # P1 now depends on P2's d

    # idempotent: the same candidates again give the same result and the same accepted set
    before = idx.accepted().select("pair_id", "partition").sort("pair_id")
    again = idx.merge("P1", batch("a", "a3", "b", "c", "e", "f", "d1", a3="a", d1="d").frame(),
                      batch("a", "a3", "b", "c", "e", "f", "d1", a3="a", d1="d").embeddings())
    assert again["accepted"].to_list() == [True, False, True, True, True, True, False]
    assert idx.accepted().select("pair_id", "partition").sort("pair_id").equals(before)

    # P2 re-merged without a2: nobody depends on a any more, so P1's next re-merge without a withdraws it;
    # d stays pinned by P1's rejection of d1 even when P2 drops it
    _merge(idx, "P2", Batch())
    assert idx.accepted("P2")["pair_id"].to_list() == ["d"]
    assert idx.accepted("P2")["orphaned"].item()
    _merge(idx, "P1", batch("b", "c"))
    assert sorted(idx.accepted()["pair_id"].to_list()) == ["b", "c", "d"]


def test_remerge_with_an_earlier_partitions_duplicate_of_a_later_one(tmp_path, rng) -> None:
    """Re-merging P1 after P2 counts as a new merge: P1's candidates lose to what P2 holds now."""
    hashes, emb = _random_features(rng, 4)
    idx = CrossBatchIndex(tmp_path)
    _merge(idx, "P1", Batch().add("a", _sha("a"), hashes[0], emb[0]))
    _merge(idx, "P2", Batch().add("b", _sha("b"), hashes[1], emb[1]))
    res = _merge(idx, "P1", Batch().add("a", _sha("a"), hashes[0], emb[0]).add("b1", _sha("b"), hashes[1], emb[1]))
    assert res["a"]["accepted"] and (res["b1"]["duplicate_of"], res["b1"]["duplicate_of_partition"]) == ("b", "P2")
    assert sorted(idx.accepted()["pair_id"].to_list()) == ["a", "b"]


# --- a brute-force reference ------------------------------------------------------------------------------------------


def _reference(batches: list[tuple[str, Batch]], max_hamming: int = 6, max_distance: float = 0.1) -> dict:
    """Greedy by brute force, merges in order, no re-merges: {(partition, pair_id): (accepted, dup_of, kind)}."""
    accepted: list[tuple[str, dict, np.ndarray]] = []
    out = {}

    def match(kind: str, r: dict, e: np.ndarray, a: dict, ae: np.ndarray) -> bool:
        if kind == "sha256":
            return r["image_sha256"] is not None and r["image_sha256"] == a["image_sha256"]
        if kind == "pair_id":
            return r["pair_id"] == a["pair_id"]
        if kind == "phash":
            return (r["phash"] is not None and a["phash"] is not None
                    and bin(int(r["phash"], 16) ^ int(a["phash"], 16)).count("1") <= max_hamming)
        ok = np.isfinite(e).all() and np.isfinite(ae).all()
        return bool(ok and float(e @ ae) >= np.float32(1 - max_distance))

    for part, batch in batches:
        old = list(accepted)
        mine: list[tuple[str, dict, np.ndarray]] = []
        for r, e in zip(batch.rows, batch.emb, strict=True):
            hit = None
            for kind in KINDS:
                found = [(p, a) for p, a, ae in old if match(kind, r, e, a, ae)]
                if found:
                    hit = (found[0][1]["pair_id"], found[0][0], kind)
                    break
            if hit is None:
                for p, a, ae in mine:
                    kinds = [k for k in ("sha256", "phash", "embedding") if match(k, r, e, a, ae)]
                    if kinds:
                        hit = (a["pair_id"], p, kinds[0])
                        break
            out[(part, r["pair_id"])] = (hit is None, *(hit or (None, None, None)))
            if hit is None:
                mine.append((part, r, e))
        accepted.extend(mine)
    return out


def _synthetic(rng: np.random.Generator, parts: int, per: int) -> list[tuple[str, Batch]]:
    """Partitions drawing images from a shared pool: exact copies, pHash near copies, semantic near copies, chains."""
    pool = 40
    hashes, emb = _random_features(rng, pool)
    out = []
    for p in range(parts):
        b = Batch()
        for k in range(per):
            src = int(rng.integers(0, pool))
            r = rng.random()
            sha, ph, e = _sha(f"img{src}"), hashes[src], emb[src]
            if r < 0.3:  # a fresh image near the source, in pHash or embedding or neither
                sha = _sha(f"p{p}k{k}")
                ph = _flip(ph, int(rng.integers(0, 10)), start=int(rng.integers(0, 50)))
                e = _at_distance(e, float(rng.uniform(0.0, 0.2)), rng)
            elif r < 0.4:
                sha, ph, e = _sha(f"p{p}k{k}"), _hex(int(rng.integers(0, 2**62))), _unit(rng.standard_normal(DIM))
            if rng.random() < 0.1:
                e = np.full(DIM, np.nan, np.float32)
            if rng.random() < 0.05:
                ph = None
            b.add(f"p{p}-{k}", sha, ph, e)
        out.append((f"part{p}", b))
    return out


@pytest.mark.parametrize("method", ["exact", "ann"])
def test_matches_brute_force_greedy(tmp_path, rng, method) -> None:
    batches = _synthetic(rng, parts=4, per=60)
    # ann with nprobe >= nlist visits every cell: it must then agree exactly with the brute force
    idx = CrossBatchIndex(tmp_path, method=method, list_size=8, nprobe=64)
    got = {}
    for part, batch in batches:
        out = idx.merge(part, batch.frame(), batch.embeddings())
        for r in out.iter_rows(named=True):
            got[(part, r["pair_id"])] = (r["accepted"], r["duplicate_of"], r["duplicate_of_partition"],
                                         r["duplicate_kind"])
    want = _reference(batches)
    assert got == want
    kinds = {v[3] for v in got.values()}
    assert {"sha256", "phash", "embedding", None} <= kinds  # the data exercises every path
    if method == "ann":
        assert idx.stats()["ivf"] is not None and idx.stats()["last_merge"]["method"] == "ann"
        # reopened: the IVF and the cell-sorted segments load, and a further merge still matches the reference
        extra = _synthetic(np.random.default_rng(99), parts=1, per=60)[0][1]
        out = CrossBatchIndex(tmp_path, method="ann", list_size=8, nprobe=64).merge("more", extra.frame(),
                                                                                  extra.embeddings())
        want2 = _reference([*batches, ("more", extra)])
        got2 = {("more", r["pair_id"]): (r["accepted"], r["duplicate_of"], r["duplicate_of_partition"],
                                         r["duplicate_kind"]) for r in out.iter_rows(named=True)}
        assert got2 == {k: v for k, v in want2.items() if k[0] == "more"}


def test_ann_retrains_as_the_index_grows_and_finds_planted_copies(tmp_path) -> None:
    rng = np.random.default_rng(3)
    idx = CrossBatchIndex(tmp_path, method="ann", list_size=50, nprobe=4, retrain_growth=2.0)
    base = _unit(rng.standard_normal((1200, 32)))
    trained = []
    for p in range(4):
        rows = base[p * 300 : (p + 1) * 300]
        df = pl.DataFrame({"pair_id": [f"{p}-{k}" for k in range(300)], "image_sha256": [None] * 300,
                           "phash": [None] * 300}, schema={c: pl.String for c in ("pair_id", "image_sha256", "phash")})
        idx.merge(f"P{p}", df, rows)
        trained.append(idx.stats()["ivf"]["trained_on"])
    assert trained == [300, 300, 900, 900]  # retrained once the embedded entries more than doubled
    copies = np.stack([_at_distance(v, 0.04, rng) for v in base[::10]])
    m = len(copies)
    df = pl.DataFrame({"pair_id": [f"c{k}" for k in range(m)], "image_sha256": [None] * m, "phash": [None] * m},
                      schema={c: pl.String for c in ("pair_id", "image_sha256", "phash")})
    out = CrossBatchIndex(tmp_path, method="ann", list_size=50, nprobe=4).merge("copies", df, copies)
    want = [f"{k // 300}-{k % 300}" for k in range(0, 1200, 10)]
    found = (out["duplicate_of"] == pl.Series(want)).fill_null(False)
    assert found.mean() >= 0.95  # ANN recall; every reported duplicate is a true one
    assert out.filter(pl.col("duplicate_of").is_not_null())["duplicate_kind"].unique().to_list() == ["embedding"]
    assert found.sum() == out["duplicate_of"].is_not_null().sum()


# --- persistence, missing embeddings, atomicity, empty partitions -----------------------------------------------------


def test_persistence_across_instances(tmp_path, rng) -> None:
    hashes, emb = _random_features(rng, 6)
    first = CrossBatchIndex(tmp_path / "x")
    _merge(first, "2024-10", Batch().add("a", _sha("a"), hashes[0], emb[0]).add("b", _sha("b"), hashes[1], emb[1]))
    _merge(first, "2024-18", Batch().add("b2", _sha("b"), hashes[1], emb[1]).add("c", _sha("c"), hashes[2], emb[2]))
    reopened = CrossBatchIndex(tmp_path / "x")
    assert reopened.accepted().equals(first.accepted())
    assert reopened.rejections().equals(first.rejections())
    assert reopened.partitions() == ["2024-10", "2024-18"]
    assert reopened.stats()["dim"] == DIM and reopened.stats()["merges"] == 2
    res = _merge(reopened, "2024-22", Batch()
                 .add("d", _sha("d"), _flip(hashes[0], 3), emb[3])
                 .add("e", _sha("e"), hashes[4], _at_distance(emb[2], 0.02, rng)))
    assert (res["d"]["duplicate_of"], res["d"]["duplicate_kind"]) == ("a", "phash")
    assert (res["e"]["duplicate_of"], res["e"]["duplicate_kind"], res["e"]["duplicate_of_partition"]) == (
        "c", "embedding", "2024-18")
    # the first instance sees the other's merge when it merges (it re-reads a newer manifest)
    res = _merge(first, "2024-26", Batch().add("f", _sha("f"), hashes[5], emb[5]))
    assert res["f"]["accepted"] and first.stats()["merges"] == 4
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["next_seq"] == 5 and list(manifest["partitions"]) == ["2024-10", "2024-18", "2024-22", "2024-26"]


def test_missing_embeddings_use_hashes_only(tmp_path, rng) -> None:
    hashes, emb = _random_features(rng, 6)
    idx = CrossBatchIndex(tmp_path)
    _merge(idx, "old", Batch().add("a", _sha("a"), hashes[0], emb[0]).add("b", _sha("b"), hashes[1], emb[1])
           .add("n", _sha("n"), hashes[2], None))  # stored without an embedding
    new = (Batch()
           .add("a1", _sha("a"), hashes[3], None)  # exact copy: still found
           .add("b1", _sha("b1"), _flip(hashes[1], 2), None)  # pHash copy: still found
           .add("s1", _sha("s1"), hashes[4], None))  # would only be a semantic copy: cannot be told
    res = _merge(idx, "no-emb", new, with_emb=False)
    assert (res["a1"]["duplicate_kind"], res["b1"]["duplicate_kind"]) == ("sha256", "phash")
    assert res["s1"]["accepted"]
    assert idx.stats()["last_merge"]["missing_embedding"] == 3 and idx.stats()["last_merge"]["method"] == "none"
    # a NaN row among real ones; a stored entry without an embedding is matched by hashes only
    mixed = (Batch().add("m1", _sha("m1"), hashes[5], _at_distance(emb[0], 0.01, rng))
             .add("m2", _sha("m2"), _flip(hashes[2], 1), None))
    res = _merge(idx, "mixed", mixed)
    assert (res["m1"]["duplicate_of"], res["m2"]["duplicate_of"]) == ("a", "n")
    assert idx.stats()["last_merge"]["missing_embedding"] == 1
    assert idx.accepted().filter(pl.col("pair_id") == "s1")["has_embedding"].item() is False


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_crash_between_writes_leaves_the_previous_index(tmp_path, rng, monkeypatch, fail_at) -> None:
    hashes, emb = _random_features(rng, 6)
    idx = CrossBatchIndex(tmp_path)
    _merge(idx, "P1", Batch().add("a", _sha("a"), hashes[0], emb[0]))
    before_acc, before_rej = idx.accepted(), idx.rejections()
    before_manifest = (tmp_path / "manifest.json").read_text()
    real = crossbatch._atomic_write
    calls = {"n": 0}

    def crashing(path, write):  # writes 1..3: P2's entries, embeddings, rejections; 4: the manifest
        calls["n"] += 1
        if calls["n"] == fail_at:
            tmp = path.with_name(f".{path.name}.crash.tmp")
            tmp.write_bytes(b"partial")  # a half-written temporary file, as a killed process leaves it
            raise OSError("disk gone")
        real(path, write)

    monkeypatch.setattr(crossbatch, "_atomic_write", crashing)
    batch = Batch().add("a2", _sha("a"), hashes[0], emb[0]).add("b", _sha("b"), hashes[1], emb[1])
    with pytest.raises(OSError, match="disk gone"):
        idx.merge("P2", batch.frame(), batch.embeddings())
    monkeypatch.setattr(crossbatch, "_atomic_write", real)
    assert (tmp_path / "manifest.json").read_text() == before_manifest
    for reader in (CrossBatchIndex(tmp_path), idx):
        assert reader.accepted().equals(before_acc)
        assert reader.rejections().equals(before_rej)
    res = _merge(idx, "P2", batch)  # the retry succeeds and cleans up
    assert not res["a2"]["accepted"] and res["b"]["accepted"]
    names = {p.name for p in (tmp_path / "segments").iterdir()}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    named = {v for rec in manifest["partitions"].values() for k, v in rec.items()
             if k in ("entries", "embeddings", "rejections") and v}
    assert names == named
    assert not list(tmp_path.glob(".*.tmp"))


def test_empty_partitions(tmp_path, rng) -> None:
    idx = CrossBatchIndex(tmp_path)
    out = idx.merge("empty", pl.DataFrame(), None)
    assert out.height == 0 and out.schema == pl.Schema(crossbatch.RESULT_SCHEMA)
    assert idx.stats()["entries"] == 0 and idx.partitions() == ["empty"]
    hashes, emb = _random_features(rng, 3)
    _merge(idx, "P1", Batch().add("a", _sha("a"), hashes[0], emb[0]).add("b", _sha("b"), hashes[1], emb[1]))
    _merge(idx, "P2", Batch().add("a1", _sha("a"), hashes[2], emb[2]))  # pins a
    out = idx.merge("P1", Batch().frame(), Batch().embeddings())  # P1 now empty: b withdrawn, a pinned
    assert out.height == 0
    assert idx.accepted("P1")["pair_id"].to_list() == ["a"]
    stats = idx.stats()
    assert stats["orphaned"] == 1 and stats["last_merge"]["withdrawn"] == 1
    assert stats["per_partition"]["empty"] == {"seq": 1, "candidates": 0, "accepted": 0, "rejected": 0}
    assert CrossBatchIndex(tmp_path).accepted().equals(idx.accepted())


# --- validation and the pHash index -----------------------------------------------------------------------------------


def test_rejects_bad_input(tmp_path, rng) -> None:
    idx = CrossBatchIndex(tmp_path)
    dup = pl.DataFrame({"pair_id": ["a", "a"], "image_sha256": ["x", "y"], "phash": [None, None]})
    with pytest.raises(ValueError, match="duplicate pair_id"):
        idx.merge("P", dup)
    with pytest.raises(ValueError, match="lack columns"):
        idx.merge("P", pl.DataFrame({"pair_id": ["a"]}))
    ok = pl.DataFrame({"pair_id": ["a"], "image_sha256": ["x"], "phash": [None]})
    with pytest.raises(ValueError, match="L2-normalised"):
        idx.merge("P", ok, np.ones((1, DIM), np.float32))
    idx.merge("P", ok, _unit(rng.standard_normal((1, DIM))))
    with pytest.raises(ValueError, match="dimension"):
        idx.merge("Q", ok.with_columns(pl.lit("b").alias("pair_id")), _unit(rng.standard_normal((1, DIM + 1))))
    assert idx.partitions() == ["P"]


def test_phash_index_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    n, nq = 5000, 800
    base = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    q = base[rng.integers(0, n, nq)].copy()
    for k in range(nq):  # 0..9 flipped bits: some within 6, some beyond
        for b in rng.choice(64, int(rng.integers(0, 10)), replace=False):
            q[k] ^= np.uint64(1) << np.uint64(b)
    q[:50] = rng.integers(0, 2**63, 50, dtype=np.int64).astype(np.uint64)  # unrelated
    rank = rng.permutation(n).astype(np.int64)
    rows = np.arange(n)
    ph = _PhashIndex(base, rows, 6)
    got = ph.best(q, rank, max_candidates=1000)  # small chunks exercise the chunking
    dist = np.bitwise_count(q[:, None] ^ base[None, :])
    want = np.where(dist <= 6, rank[None, :], crossbatch._NONE).min(axis=1)
    assert np.array_equal(got, want)
    assert (want < crossbatch._NONE).sum() > nq // 3


def test_crash_after_an_ivf_retrain_keeps_the_old_segments(tmp_path, monkeypatch) -> None:
    """A retrain rewrites every segment under new names; dying before the manifest leaves the old ones in use."""
    rng = np.random.default_rng(11)
    def frame(prefix: str, n: int) -> pl.DataFrame:
        return pl.DataFrame({"pair_id": [f"{prefix}{k}" for k in range(n)], "image_sha256": [None] * n,
                             "phash": [None] * n}, schema={c: pl.String for c in ("pair_id", "image_sha256", "phash")})

    idx = CrossBatchIndex(tmp_path, method="ann", list_size=20, nprobe=50)
    emb = _unit(rng.standard_normal((400, DIM)))
    idx.merge("P1", frame("a", 100), emb[:100])
    before = idx.accepted()
    real = crossbatch._atomic_write

    def crashing(path, write):
        if path.name == "manifest.json":
            raise OSError("killed")
        real(path, write)

    monkeypatch.setattr(crossbatch, "_atomic_write", crashing)
    with pytest.raises(OSError, match="killed"):  # 300 more entries: the IVF trained on 100 is retrained
        idx.merge("P2", frame("b", 300), emb[100:])
    monkeypatch.setattr(crossbatch, "_atomic_write", real)
    reopened = CrossBatchIndex(tmp_path, method="ann", list_size=20, nprobe=50)
    assert reopened.accepted().equals(before) and reopened.stats()["ivf"]["trained_on"] == 100
    copies = np.stack([_at_distance(v, 0.03, rng) for v in emb[:100:10]])
    out = reopened.merge("P3", frame("c", 10), copies)
    assert out["duplicate_of"].to_list() == [f"a{k}" for k in range(0, 100, 10)]
