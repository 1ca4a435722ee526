"""The sample crawl: real WARC bytes read back with warcio, an independent reference extraction (selectolax) compared
with the truth, captions re-checked with jieba / the lexicons / a BERT vocabulary, images decoded with Pillow, and the
scenes the images show parsed back from their captions."""

from __future__ import annotations

from danqing_assets.lib import stages

import functools
import hashlib
import importlib.util
import io
import math
import os
import re
import subprocess
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np
import polars as pl
import pytest

from danqing_assets.lib import reasons as R
from danqing_assets.lib.ids import pair_id
from danqing_sample import scenes as SC
from danqing_sample.crawl import (
    DEFAULT_PAGES,
    MIN_PHASH_DISTANCE,
    TRUTH_COLUMNS,
    WARC_PREFIX,
    laplacian_variance,
    phash64,
    working_copy,
    write_sample_crawl,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_PAGES = 60
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------------------------------
# Readers (independent of the generator).


def _read_warcs(paths: list[str]) -> list[dict]:
    """Every record of the files, in order, with digests verified."""
    from warcio.archiveiterator import ArchiveIterator

    out = []
    for path in paths:
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, check_digests="raise"):
                http = rec.http_headers
                out.append({
                    "file": Path(path).name,
                    "type": rec.rec_type,
                    "id": rec.rec_headers.get_header("WARC-Record-ID"),
                    "uri": rec.rec_headers.get_header("WARC-Target-URI"),
                    "lang": rec.rec_headers.get_header("WARC-Identified-Content-Language"),
                    "concurrent": rec.rec_headers.get_header("WARC-Concurrent-To"),
                    "ctype": http.get_header("Content-Type") if http is not None else None,
                    "body": rec.content_stream().read(),
                })
    return out


_META_CHARSET = re.compile(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_-]+)", re.I)


def _decode_page(ctype: str, body: bytes) -> tuple[str, str]:
    m = re.search(r"charset=([\w-]+)", ctype or "")
    label = m.group(1) if m else None
    if label is None:
        mm = _META_CHARSET.search(body[:4096])
        label = mm.group(1).decode() if mm else "utf-8"
    codec = {"gb2312": "gbk"}.get(label.lower(), label.lower())  # WHATWG: the gb2312 label means GBK
    return body.decode(codec), label


def _reference_pairs(records: list[dict]) -> list[dict]:
    """The pairs an extractor following the contract emits: every <img> counts for img_index; srcset (largest w) >
    data-src > src; data: / javascript: / missing URLs give no pair; URLs resolved against <base href> or the page."""
    from selectolax.lexbor import LexborHTMLParser

    out = []
    for rec in records:
        if rec["type"] != "response" or not (rec["ctype"] or "").startswith("text/html"):
            continue
        text, _ = _decode_page(rec["ctype"], rec["body"])
        tree = LexborHTMLParser(text)
        base_el = tree.css_first("base")
        base = urljoin(rec["uri"], base_el.attributes["href"]) if base_el is not None else rec["uri"]
        for i, img in enumerate(tree.css("img")):
            a = img.attributes
            cand = None
            if a.get("srcset"):
                parts = [c.strip().rsplit(" ", 1) for c in a["srcset"].split(",")]
                cand = max(parts, key=lambda p: int(p[1].rstrip("w")))[0]
            elif a.get("data-src"):
                cand = a["data-src"]
            else:
                cand = a.get("src")
            if not cand or cand.startswith(("data:", "javascript:")):
                continue
            out.append({"pair_id": pair_id(rec["id"], i), "page_url": rec["uri"], "image_url": urljoin(base, cand),
                        "caption": (a.get("alt") or "").strip()})
    return out


@functools.cache
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _jieba_words(text: str) -> int:
    import jieba

    folded = _t2s().convert(unicodedata.normalize("NFKC", text))
    return sum(1 for t in jieba.lcut(folded) if any(ch.isalnum() for ch in t))


def _fold(text: str) -> str:
    return _t2s().convert(unicodedata.normalize("NFKC", text)).lower()


def _terms(name: str) -> list[str]:
    text = (REPO / "danqing_assets" / "data" / name).read_text(encoding="utf-8")
    return [t for t in (line.split("#", 1)[0].strip().lower() for line in text.splitlines()) if t]


def _grams(text: str) -> set[str]:
    s = "".join(_fold(text).split())
    return {s[i : i + 3] for i in range(max(1, len(s) - 2))}


def _bert_tokenizer():
    """cn_clip's own BERT tokenizer, loaded from its file (importing cn_clip would import torch); None if absent."""
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "clip"
    mod_spec = importlib.util.spec_from_file_location("_cn_clip_bert_tokenizer", root / "bert_tokenizer.py")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.FullTokenizer(vocab_file=str(root / "vocab.txt"))


def _grey(data: bytes):
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img, np.asarray(img.convert("L"), dtype=np.float64)


def _entropy(g: np.ndarray) -> float:
    hist = np.bincount(g.astype(np.uint8).ravel(), minlength=256).astype(float)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_small")
    summary = write_sample_crawl(out, pages=SMALL_PAGES, seed=11)
    truth = pl.read_parquet(summary.truth_path)
    records = _read_warcs(summary.warc_files)
    images = {r["uri"]: r for r in records if r["type"] == "response" and (r["ctype"] or "").startswith("image/")}
    return summary, truth, records, images


# ---------------------------------------------------------------------------------------------------------------------
# Determinism and arguments.


def test_same_seed_is_byte_identical_across_processes(tmp_path):
    a = write_sample_crawl(tmp_path / "a", pages=14, seed=5, files=2)
    code = ("import sys; from danqing_sample.crawl import write_sample_crawl; "
            "write_sample_crawl(sys.argv[1], pages=14, seed=5, files=2)")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], check=True, env=env, cwd=REPO, timeout=300)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert len([n for n in names if n.endswith(".warc.gz")]) == 2
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    ids_a = [r["id"] for r in _read_warcs(a.warc_files)]
    assert len(ids_a) == len(set(ids_a))
    assert pl.read_parquet(a.truth_path).equals(pl.read_parquet(tmp_path / "b" / "truth.parquet"))


def test_different_seed_differs(tmp_path):
    a = write_sample_crawl(tmp_path / "a", pages=14, seed=5)
    b = write_sample_crawl(tmp_path / "b", pages=14, seed=6)
    ta, tb = pl.read_parquet(a.truth_path), pl.read_parquet(b.truth_path)
    assert not set(ta["pair_id"]) & set(tb["pair_id"])
    assert set(ta["caption"]) != set(tb["caption"])
    ids_a = {r["id"] for r in _read_warcs(a.warc_files)}
    assert not ids_a & {r["id"] for r in _read_warcs(b.warc_files)}


def test_bad_arguments_and_rewrites(tmp_path):
    with pytest.raises(ValueError):
        write_sample_crawl(tmp_path, pages=0)
    with pytest.raises(ValueError):
        write_sample_crawl(tmp_path, pages=3, files=4)
    (tmp_path / "keep.txt").write_text("not ours")
    write_sample_crawl(tmp_path, pages=6, seed=1, files=3)
    s = write_sample_crawl(tmp_path, pages=6, seed=2, files=1)
    assert sorted(p.name for p in tmp_path.glob("*.warc.gz")) == [Path(s.warc_files[0]).name]
    assert (tmp_path / "keep.txt").read_text() == "not ours"
    assert not list(tmp_path.glob(".*tmp"))


# ---------------------------------------------------------------------------------------------------------------------
# WARC shape.


def test_warc_records_are_common_crawl_shaped(small):
    summary, truth, records, images = small
    by_file = defaultdict(list)
    for r in records:
        by_file[r["file"]].append(r)
    assert sorted(by_file) == sorted(Path(p).name for p in summary.warc_files) and len(by_file) == 3
    for recs in by_file.values():
        assert recs[0]["type"] == "warcinfo"
        assert all(r["type"] != "warcinfo" for r in recs[1:])
    assert {r["type"] for r in records} == {"warcinfo", "request", "response", "metadata"}
    pages = [i for i, r in enumerate(records) if r["type"] == "response" and r["ctype"].startswith("text/html")]
    assert len(pages) == SMALL_PAGES == summary.pages
    for i in pages:  # request, response, metadata per page, tied by WARC-Concurrent-To
        req, resp, meta = records[i - 1], records[i], records[i + 1]
        assert req["type"] == "request" and req["uri"] == resp["uri"] and resp["concurrent"] == req["id"]
        assert meta["type"] == "metadata" and meta["concurrent"] == resp["id"]
        assert b"charset-detected" in meta["body"]
    # Page record ids and language headers are those of the truth; some pages carry no header (detection needed).
    page_info = truth.unique("warc_record_id").select("warc_record_id", "language_header", "page_language", "page_url")
    by_id = {r["id"]: r for r in records if r["type"] == "response"}
    for row in page_info.iter_rows(named=True):
        rec = by_id[row["warc_record_id"]]
        assert rec["uri"] == row["page_url"] and rec["lang"] == row["language_header"]
    headers = Counter(r["lang"] for r in (records[i] for i in pages))
    assert headers[None] >= 1 and headers["zho"] + headers["zho,eng"] >= SMALL_PAGES // 2
    assert any(h and h.startswith("jpn") for h in headers) and "eng" in headers
    # Image captures: image content types, bytes that really are that format.
    magic = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG", "image/webp": b"RIFF"}
    assert {r["ctype"] for r in images.values()} == set(magic)
    for r in images.values():
        assert r["body"].startswith(magic[r["ctype"]])
    assert len(images) == summary.images


def test_reference_extraction_matches_truth(small):
    summary, truth, records, _ = small
    assert tuple(truth.columns) == TRUTH_COLUMNS
    ref = pl.DataFrame(_reference_pairs(records))
    assert len(ref) == len(truth) == summary.pairs
    joined = truth.join(ref, on="pair_id", how="full", suffix="_ref")
    assert joined["pair_id"].null_count() == 0 and joined["pair_id_ref"].null_count() == 0
    for col in ("page_url", "image_url", "caption"):
        bad = joined.filter(pl.col(col) != pl.col(f"{col}_ref"))
        assert bad.is_empty(), bad.select(col, f"{col}_ref").head(5)
    assert truth["pair_id"].n_unique() == len(truth)
    # Every URL form and <img> trap is present; pages hold <img> elements that yield no pair.
    assert set(truth["url_form"]) == {"src", "srcset", "data-src", "relative", "base-href", "protocol-relative"}
    html = b"".join(r["body"] for r in records if r["type"] == "response" and r["ctype"].startswith("text/html"))
    needles = (b"javascript:void(0)", b'src="data:image/gif', b"<figcaption>", b"title=", b"<base href=", b"<!-- <img")
    for needle in needles:
        assert needle in html, needle


def test_legacy_encodings_are_real(small):
    _, truth, records, _ = small
    by_id = {r["id"]: r for r in records if r["type"] == "response"}
    pages = truth.unique("warc_record_id", keep="first").sort("warc_record_id")
    seen = Counter()
    raw_captions = 0
    for row in pages.iter_rows(named=True):
        rec = by_id[row["warc_record_id"]]
        enc = row["encoding"]
        text, label = _decode_page(rec["ctype"], rec["body"])
        assert label.lower() == enc
        assert text == rec["body"].decode({"gb2312": "gbk"}.get(enc, enc))
        if enc != "utf-8":
            seen[enc] += 1
            with pytest.raises(UnicodeDecodeError):
                rec["body"].decode("utf-8")
            if row["charset_declared"] == "meta":
                assert "charset" not in rec["ctype"]
                seen[f"{enc}-meta-only"] += 1
            # Captions sit in the payload as bytes of that encoding (or as character references where not encodable).
            for cap in truth.filter((pl.col("warc_record_id") == row["warc_record_id"]) & (pl.col("caption") != ""))[
                    "caption"]:
                try:
                    raw = cap.encode(enc)
                except UnicodeEncodeError:
                    continue
                if "&" not in cap and "'" not in cap and '"' not in cap:
                    assert raw in rec["body"]
                    raw_captions += 1
    assert seen["gbk"] and seen["gb2312"] and seen["big5"] and seen["gbk-meta-only"] + seen["gb2312-meta-only"]
    assert raw_captions >= 20
    big5 = truth.filter((pl.col("encoding") == "big5") & (pl.col("script") == "traditional"))["caption"].to_list()
    assert big5 and sum(_fold(c) != c.lower() for c in big5) >= 0.9 * len(big5)  # really Traditional
    simp = truth.filter(pl.col("script") == "simplified")["caption"].to_list()
    assert sum(_fold(c) == unicodedata.normalize("NFKC", c).lower() for c in simp) >= 0.95 * len(simp)


# ---------------------------------------------------------------------------------------------------------------------
# Labels.


def test_every_reason_is_present_and_valid(small):
    summary, truth, _, _ = small
    counts = Counter(zip(truth["expected_stage"], truth["expected_reason"]))
    assert counts == Counter(summary.counts)
    for stage, reason in counts:
        assert (stage, reason) == (R.KEEP, R.KEEP) or stages.stage_of(reason) == stage
    expected = {
        (R.SOURCE, r) for r in (R.NOT_CHINESE_PAGE, R.BLACKLISTED_DOMAIN, R.CAPTION_MISSING, R.CAPTION_TOO_SHORT,
                                R.CAPTION_TOO_LONG, R.UNSAFE_TEXT, R.DUPLICATE_PAIR)
    } | {(R.TEXT, r) for r in (R.NOT_CHINESE_CAPTION, R.NO_NOUN, R.TOO_MANY_UNK, R.LOW_INFORMATION, R.SENSITIVE_TEXT,
                               R.NEAR_DUPLICATE_CAPTION)} | {
        (R.FETCH, R.DNS_ERROR), (R.CROSS_MODAL, R.HIGH_SIMILARITY), (R.CROSS_MODAL, R.LOW_SIMILARITY), (R.KEEP, R.KEEP)
    } | {(R.IMAGE, r) for r in (R.TOO_SMALL, R.EXTREME_ASPECT, R.FLAT_IMAGE, R.BLURRY_IMAGE, R.DUPLICATE_IMAGE,
                                R.NEAR_DUPLICATE_IMAGE, R.SEMANTIC_DUPLICATE)}
    assert set(counts) == expected
    assert 0.35 <= counts[(R.KEEP, R.KEEP)] / len(truth) <= 0.55


def test_source_labels(small):
    _, truth, _, _ = small
    blacklist = _terms("domain_blacklist.txt")

    def listed(host: str) -> bool:
        labels = host.split(".")
        return any(".".join(labels[i:]) in blacklist for i in range(len(labels)))

    for row in truth.iter_rows(named=True):
        host = urlsplit(row["page_url"]).hostname
        header = row["language_header"]
        if row["expected_reason"] == R.NOT_CHINESE_PAGE:
            assert row["page_language"] != "zho" and (header is None or "zho" not in header.split(","))
        else:
            assert row["page_language"] == "zho" and (header is None or "zho" in header.split(","))
        assert listed(host) == (row["expected_reason"] == R.BLACKLISTED_DOMAIN)
    # Near-miss hosts (a blacklisted name as a plain suffix, not a subdomain: also.com vs so.com) stay clean.
    hosts = {urlsplit(u).hostname for u in truth["page_url"]}
    assert any(h in ("www.also.com", "news.tsm.cn", "www.mybing.com", "img.notbaidu.com") for h in hosts)
    missing_kinds = {"missing_alt", "empty_alt", "blank_alt"}
    for row in truth.iter_rows(named=True):
        assert (row["caption"] == "") == (row["caption_kind"] in missing_kinds)
        if row["expected_reason"] == R.CAPTION_MISSING:
            assert row["caption"] == ""
    assert {"missing_alt", "empty_alt", "blank_alt"} <= set(truth["caption_kind"])


def test_caption_word_counts_far_from_bounds(small):
    _, truth, _, _ = small
    zh = truth.filter((pl.col("page_language") == "zho") & (pl.col("expected_reason") != R.BLACKLISTED_DOMAIN)
                      & (pl.col("expected_reason") != R.CAPTION_MISSING))
    for row in zh.iter_rows(named=True):
        n = _jieba_words(row["caption"])
        reason = row["expected_reason"]
        if reason == R.CAPTION_TOO_SHORT:
            assert 1 <= n <= 3, row["caption"]
        elif reason == R.CAPTION_TOO_LONG:
            assert 75 <= n <= 100, row["caption"]
        else:
            assert 8 <= n <= 40, (n, row["caption"])


def test_unsafe_labels(small):
    """Unsafe captions carry a planted hand-written snippet (never the filter's own lexicon terms), and only they do."""
    from danqing_sample import vocab as V

    _, truth, _, _ = small
    unsafe = [_fold(t) for t in V.UNSAFE_SNIPPETS]
    sensitive = [_fold(t) for t in V.SENSITIVE_SNIPPETS]
    for row in truth.filter(pl.col("caption") != "").iter_rows(named=True):
        folded = _fold(row["caption"])
        has_unsafe = any(t in folded for t in unsafe)
        has_sensitive = any(t in folded for t in sensitive)
        assert has_unsafe == (row["expected_reason"] == R.UNSAFE_TEXT), row["caption"]
        assert has_sensitive == (row["expected_reason"] == R.SENSITIVE_TEXT), row["caption"]


def test_text_labels(small):
    import jieba.posseg

    _, truth, _, _ = small
    zh = truth.filter((pl.col("page_language") == "zho") & (pl.col("expected_stage") != R.SOURCE))
    text_order = list(stages.TEXT.reasons)

    def after(row, reason: str) -> bool:  # the pair reaches the `reason` check of stage 2
        if row["expected_stage"] != R.TEXT:
            return True
        return text_order.index(row["expected_reason"]) > text_order.index(reason)

    tok = _bert_tokenizer()
    for row in zh.iter_rows(named=True):
        cap, reason = row["caption"], row["expected_reason"]
        han = sum(1 for ch in cap if "\u4e00" <= ch <= "\u9fff" or ord(ch) >= 0x20000)
        letters = sum(1 for ch in cap if ch.isalpha())
        if reason == R.NOT_CHINESE_CAPTION:
            assert han == 0 and cap.isascii()
            continue
        assert han / letters >= 0.65, cap
        nouns = [p for p in jieba.posseg.lcut(_fold(cap)) if p.flag.startswith("n") or p.flag == "vn"]
        assert (not nouns) == (reason == R.NO_NOUN), (cap, nouns)
        if tok is not None and after(row, R.NO_NOUN):
            unk = tok.tokenize(cap).count("[UNK]")
            assert (unk > 5) == (reason == R.TOO_MANY_UNK), (unk, cap)
            assert unk >= 7 if reason == R.TOO_MANY_UNK else unk <= 2
        if after(row, R.TOO_MANY_UNK):
            chars = [ch for ch in _fold(cap) if ch.isalnum()]
            n = len(chars)
            h = -sum(c / n * math.log2(c / n) for c in Counter(chars).values()) / math.log2(n)
            assert (h < 0.4) == (reason == R.LOW_INFORMATION), (h, cap)
    # Near-duplicate captions: high Jaccard with their (kept) original; other captions reaching the check are far apart.
    by_id = {r["pair_id"]: r for r in truth.iter_rows(named=True)}
    near = truth.filter(pl.col("expected_reason") == R.NEAR_DUPLICATE_CAPTION)
    assert len(near)
    for row in near.iter_rows(named=True):
        orig = by_id[row["duplicate_of"]]
        assert orig["expected_reason"] == R.KEEP and orig["image_url"] != row["image_url"]
        ga, gb = _grams(row["caption"]), _grams(orig["caption"])
        assert len(ga & gb) / len(ga | gb) >= 0.85
        assert (orig["warc_file"], orig["warc_record_id"]) != (row["warc_file"], row["warc_record_id"]) or orig[
            "img_index"] < row["img_index"]
    reach = [r for r in zh.iter_rows(named=True) if after(r, R.SENSITIVE_TEXT) and r["expected_reason"] !=
             R.NEAR_DUPLICATE_CAPTION]
    index: dict[str, list[int]] = defaultdict(list)
    sets = [_grams(r["caption"]) for r in reach]
    for i, g in enumerate(sets):
        for x in g:
            index[x].append(i)
    for i, g in enumerate(sets):
        inter = Counter(j for x in g for j in index[x] if j != i)
        worst = max((k / (len(g) + len(sets[j]) - k) for j, k in inter.items()), default=0.0)
        assert worst < 0.5, reach[i]["caption"]


def test_duplicate_pairs(small):
    _, truth, _, _ = small
    by_id = {r["pair_id"]: r for r in truth.iter_rows(named=True)}
    dups = truth.filter(pl.col("expected_reason") == R.DUPLICATE_PAIR)
    assert len(dups)

    def norm(s: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", s).lower().split())

    for row in dups.iter_rows(named=True):
        orig = by_id[row["duplicate_of"]]
        assert orig["expected_reason"] == R.KEEP and orig["page_url"] != row["page_url"]
        assert orig["image_url"] == row["image_url"] and norm(orig["caption"]) == norm(row["caption"])
    # Originals come first in WARC order (truth rows follow it: see test_truth_rows_follow_warc_order).
    order = {pid: i for i, pid in enumerate(truth["pair_id"])}
    for row in truth.filter(pl.col("duplicate_of").is_not_null()).iter_rows(named=True):
        assert order[row["duplicate_of"]] < order[row["pair_id"]]
    # No accidental duplicate pairs.
    keyed = Counter((r["image_url"], norm(r["caption"])) for r in truth.iter_rows(named=True) if r["caption"])
    assert sum(c - 1 for c in keyed.values()) == len(dups)


def test_truth_rows_follow_warc_order(small):
    _, truth, records, _ = small
    page_order = [r["id"] for r in records if r["type"] == "response" and r["ctype"].startswith("text/html")]
    seen = list(dict.fromkeys(truth["warc_record_id"]))
    assert seen == page_order
    for _, grp in truth.group_by("warc_record_id", maintain_order=True):
        assert grp["img_index"].to_list() == sorted(grp["img_index"].to_list())


# ---------------------------------------------------------------------------------------------------------------------
# Images.


def test_fetch_labels(small):
    _, truth, _, images = small
    for row in truth.iter_rows(named=True):
        host = urlsplit(row["image_url"]).hostname
        if row["expected_reason"] == R.DNS_ERROR:
            assert host.endswith(".invalid") and not row["captured"] and row["image_kind"] == "uncaptured"
        else:
            assert not host.endswith(".invalid")
        if row["expected_stage"] in (R.IMAGE, R.CROSS_MODAL, R.KEEP):
            assert row["captured"]
        assert row["captured"] == (row["image_url"] in images)
    assert truth["captured"].mean() > 0.75


def test_image_properties_match_truth(small):
    _, truth, _, images = small
    normal_laps, blurred_laps = [], []
    hashes = {}
    for row in truth.filter(pl.col("captured")).iter_rows(named=True):
        data = images[row["image_url"]]["body"]
        assert hashlib.sha256(data).hexdigest() == row["image_sha256"]
        img, g = _grey(data)
        assert img.size == (row["image_width"], row["image_height"])
        fmt = img.format.lower()
        assert fmt == row["image_format"] and images[row["image_url"]]["ctype"] == f"image/{fmt}"
        w, h = img.size
        kind, stage = row["image_kind"], row["expected_stage"]
        if kind == "tiny":
            assert min(w, h) <= 64
            continue
        assert min(w, h) > 100 * 1.5
        if kind == "wide":
            assert max(w / h, h / w) > 4
            continue
        assert max(w / h, h / w) <= 2.2
        if kind == "flat":
            assert g.std() < 1
            continue
        assert g.std() > 8 and _entropy(g) > 4.5
        lap = laplacian_variance(g)
        if kind == "blurred":
            blurred_laps.append(lap)
            continue
        if stage in (R.IMAGE, R.CROSS_MODAL, R.KEEP):
            work = laplacian_variance(np.asarray(working_copy(img), dtype=np.float64))
            assert lap > 1000 and work > 1000, (kind, lap, work)
            if kind in ("normal", "mismatch", "semantic_duplicate"):
                normal_laps.append(lap)
                assert _entropy(g) > 5
            hashes[row["pair_id"]] = phash64(img)
    assert max(blurred_laps) < 0.1 * min(normal_laps)
    # Stage-3 survivors are pHash-distinct, except the designed near and exact duplicates of their originals.
    designed = truth.filter(pl.col("image_kind").is_in(["near_duplicate", "exact_duplicate"]))
    for row in designed.iter_rows(named=True):
        orig = truth.filter(pl.col("pair_id") == row["duplicate_of"]).row(0, named=True)
        assert orig["expected_reason"] == R.KEEP and orig["image_url"] != row["image_url"]
        a, b = images[row["image_url"]]["body"], images[orig["image_url"]]["body"]
        if row["image_kind"] == "exact_duplicate":
            assert a == b
        else:
            assert a != b and int(np.bitwise_count(np.uint64(hashes[row["pair_id"]] ^ hashes[orig["pair_id"]]))) <= 4
    others = [h for pid, h in hashes.items() if pid not in set(designed["pair_id"])]
    arr = np.array(others, dtype=np.uint64)
    dist = np.bitwise_count(arr[:, None] ^ arr[None, :])
    np.fill_diagonal(dist, 64)
    assert dist.min() >= 12


# ---------------------------------------------------------------------------------------------------------------------
# Scenes: what the images show and the captions name.

_SCENE_COPIES = (R.DUPLICATE_PAIR, R.DUPLICATE_IMAGE, R.NEAR_DUPLICATE_IMAGE, R.SEMANTIC_DUPLICATE)


def _luma_phash(data: bytes) -> int:
    """pHash of the luma a filter sees (JPEG decoded straight to grey, as the generator checks it)."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("L", img.size)
    return phash64(img.convert("L"))


def test_images_reaching_stage_3_show_the_scene_their_caption_names(small):
    _, truth, _, _ = small
    reach = truth.filter(pl.col("expected_stage").is_in([R.IMAGE, R.CROSS_MODAL, R.KEEP]))
    assert reach.height > 100
    for row in reach.iter_rows(named=True):
        kind, reason = row["image_kind"], row["expected_reason"]
        assert (row["scene"] is None) == (kind in ("flat", "text_heavy")), row
        named = SC.Scene.parse(row["caption_scene"])
        folded = _fold(row["caption"])
        things, colours, backgrounds = SC.named_in(folded)
        assert set(things) == set(named.things) and set(colours) == set(named.colours), (row["caption"], str(named))
        assert set(backgrounds) == {named.background}, (row["caption"], str(named))
        for g in named.groups:
            if g.count > 1:
                assert f"{SC.NUMERALS[g.count]}{SC.THING_BY_KEY[g.thing].measure}" in folded, (row["caption"], str(g))
            assert any(p in folded for p in SC.POSITIONS[g.position]), (row["caption"], str(g))
        if reason == R.LOW_SIMILARITY:  # another scene: no thing and not the background in common
            shown = SC.Scene.parse(row["scene"])
            assert shown.background != named.background and not set(shown.things) & set(named.things)
        elif reason == R.HIGH_SIMILARITY:  # a poster printing the pinyin its caption starts with
            assert row["caption"].split(" ")[0].isascii()
            assert any(SC.THING_BY_KEY[t].pinyin in row["caption"] for t in named.things), row["caption"]
        elif row["scene"] is not None:
            assert row["scene"] == row["caption_scene"]


def test_every_scene_is_used_once_except_by_designed_copies(small):
    _, truth, _, _ = small
    by_id = {r["pair_id"]: r for r in truth.iter_rows(named=True)}
    users: Counter[str] = Counter()
    for row in truth.iter_rows(named=True):
        if row["expected_reason"] in _SCENE_COPIES:
            orig = by_id[row["duplicate_of"]]
            assert row["caption_scene"] == orig["caption_scene"] is not None
            assert row["scene"] == orig["scene"] is not None
            continue
        for scene in {row["scene"], row["caption_scene"]} - {None}:
            users[scene] += 1
    assert len(users) > 150 and max(users.values()) == 1


def test_semantic_duplicates_are_the_same_scene_far_in_phash(small):
    _, truth, _, images = small
    by_id = {r["pair_id"]: r for r in truth.iter_rows(named=True)}
    sem = truth.filter(pl.col("expected_reason") == R.SEMANTIC_DUPLICATE)
    assert sem.height >= 3
    for row in sem.iter_rows(named=True):
        orig = by_id[row["duplicate_of"]]
        assert orig["expected_reason"] == R.KEEP and row["expected_stage"] == R.IMAGE
        assert row["image_kind"] == "semantic_duplicate" and row["scene"] == orig["scene"]
        assert row["caption"] != orig["caption"]
        a, b = images[row["image_url"]]["body"], images[orig["image_url"]]["body"]
        assert a != b
        distance = int(np.bitwise_count(np.uint64(_luma_phash(a) ^ _luma_phash(b))))
        assert distance >= MIN_PHASH_DISTANCE, distance


# ---------------------------------------------------------------------------------------------------------------------
# Default size.


@pytest.mark.slow
def test_default_size_counts_and_time(tmp_path):
    t0 = time.perf_counter()
    summary = write_sample_crawl(tmp_path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 120, elapsed
    assert summary.pages == DEFAULT_PAGES and 1700 <= summary.pairs <= 2300
    truth = pl.read_parquet(summary.truth_path)
    counts = Counter(zip(truth["expected_stage"], truth["expected_reason"]))
    for (stage, reason), n in counts.items():
        if stage in (R.TEXT, R.IMAGE):
            assert n >= 25, (reason, n)
        else:
            assert n >= 15, (reason, n)
    assert 0.40 <= counts[(R.KEEP, R.KEEP)] / len(truth) <= 0.50
    assert len(counts) == 24  # 23 reasons + keep
    assert sorted(Path(p).name for p in summary.warc_files) == [f"{WARC_PREFIX}-s0-{i:05d}.warc.gz" for i in range(3)]


def test_prints_nothing(tmp_path):
    code = ("import sys; from danqing_sample.crawl import write_sample_crawl; "
            "write_sample_crawl(sys.argv[1], pages=3, seed=0, files=1)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, cwd=REPO, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done.stderr[-500:]
