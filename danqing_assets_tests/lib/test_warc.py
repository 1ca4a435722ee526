"""Tests for `danqing_assets.lib.warc`: real WARC files written with warcio (and raw bytes for the broken cases)."""

from __future__ import annotations

import gzip
import io
import json
import os
import time
import uuid
import zlib
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator as WarcioIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from danqing_assets.lib import warc as W
from danqing_assets.lib.ids import pair_id

SNAPSHOT = "CC-MAIN-2024-51"


# ---------------------------------------------------------------------------------------------- WARC building
def html_page(body: str, *, head: str = "", title: str = "测试页面") -> str:
    return f"<!DOCTYPE html><html><head>{head}<title>{title}</title></head><body>{body}</body></html>"


class Warc:
    """Writes a Common Crawl-shaped WARC (warcinfo, request / response / metadata per capture) with warcio."""

    def __init__(self, path: Path, *, gz: bool = True) -> None:
        self.path = path
        self.f = open(path, "wb")
        self.w = WARCWriter(self.f, gzip=gz)
        self.w.write_record(self.w.create_warcinfo_record(path.name, {"software": "test", "isPartOf": SNAPSHOT}))

    def response(self, url: str, payload: bytes, *, content_type: str = "text/html; charset=utf-8",
                 lang: str | None = "zho", status: str = "200 OK", extra_http: list | None = None,
                 extra_warc: dict | None = None) -> str:
        self.w.write_record(self.w.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=(
            StatusAndHeaders("GET / HTTP/1.1", [("Host", "x")], is_http_request=True))))
        http = [("Content-Type", content_type), ("Content-Length", str(len(payload)))] + (extra_http or [])
        warc_headers = dict(extra_warc or {})
        if lang is not None:
            warc_headers["WARC-Identified-Content-Language"] = lang
        rec = self.w.create_warc_record(url, "response", payload=io.BytesIO(payload),
                                        http_headers=StatusAndHeaders(status, http, protocol="HTTP/1.1"),
                                        warc_headers_dict=warc_headers)
        self.w.write_record(rec)
        self.w.write_record(self.w.create_warc_record(url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 12\r\n"),
                                                      warc_content_type="application/warc-fields"))
        return rec.rec_headers.get_header("WARC-Record-ID")

    def raw(self, data: bytes) -> None:
        self.f.write(data)

    def close(self) -> Path:
        self.f.close()
        return self.path


def record_offsets(path: Path) -> dict[str, int]:
    """{WARC-Record-ID: start offset} of every response record, as warcio (the reference reader) sees them."""
    out = {}
    with open(path, "rb") as f:
        it = WarcioIterator(f)
        for rec in it:
            if rec.rec_type == "response":
                out[rec.rec_headers.get_header("WARC-Record-ID")] = it.get_record_offset()
    return out


def raw_response_record(url: str, block: bytes, lang: str = "zho") -> bytes:
    """One gzip member holding a response record whose block is `block`, byte for byte (for broken HTTP)."""
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{uuid.uuid4()}>\r\n"
            f"WARC-Date: 2024-12-01T10:00:00Z\r\nWARC-Target-URI: {url}\r\n"
            f"WARC-Identified-Content-Language: {lang}\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(block)}\r\n\r\n").encode()
    return gzip.compress(head + block + b"\r\n\r\n")


def extract(path, **kw) -> W.ExtractResult:
    return W.extract_file(path, Path(path).name if isinstance(path, (str, Path)) else "stream.warc.gz",
                          snapshot=SNAPSHOT, **kw)


def kinds(res: W.ExtractResult) -> list[str]:
    return [e.kind for e in res.stats.errors]


# ---------------------------------------------------------------------------------------------- encodings
ENCODED_PAGES = [
    # (declared charset, where declared, codec to encode with, caption)
    ("utf-8", "http", "utf-8", "北京故宫的雪景，红墙金瓦"),
    ("gbk", "http", "gbk", "上海外滩夜景与黄浦江游船"),
    ("gbk", "meta", "gbk", "杭州西湖断桥残雪"),
    ("gb2312", "meta", "gb2312", "广州塔在珠江边上"),
    ("gb2312", "http", "gbk", "镕基与喆字：不在GB2312中的汉字"),  # mislabelled GBK page: decoded as GB18030
    ("gb18030", "http", "gb18030", "罕见字𠀀与㐀以及欧元符号€"),  # four-byte GB18030 sequences
    ("big5", "http", "big5", "臺灣風景：日月潭與阿里山"),
    ("big5", "meta", "big5", "香港維多利亞港的夜景"),
    ("big5", "meta", "big5hkscs", "香港字：嘅、咗、噉"),
    ("utf-8", "none", "utf-8", "未声明编码的网页"),
]


@pytest.mark.parametrize("full_decode", [False, True])
def test_extraction_per_encoding(tmp_path, full_decode):
    wf = Warc(tmp_path / "enc.warc.gz")
    expected = {}
    for i, (label, where, codec, caption) in enumerate(ENCODED_PAGES):
        head = f'<meta charset="{label}">' if where == "meta" else ""
        trad = codec.startswith("big5")
        body = f'<p>{caption}。{"正文內容" if trad else "正文内容"}。</p><img src="/img/{i}.jpg" alt="{caption}" ' \
               f'title="{caption}{"標題" if trad else "标题"}">'
        payload = html_page(body, head=head, title="測試頁面" if trad else "测试页面").encode(codec)
        ctype = f"text/html; charset={label}" if where == "http" else "text/html"
        rid = wf.response(f"http://enc.example.cn/{i}.html", payload, content_type=ctype)
        expected[rid] = (i, caption, "標題" if trad else "标题")
    res = extract(wf.close(), full_decode=full_decode)
    assert res.stats.errors == []
    got = {r["warc_record_id"]: r for r in res.pairs}
    assert len(got) == len(ENCODED_PAGES)
    for rid, (i, caption, title) in expected.items():
        assert got[rid]["caption"] == caption
        assert got[rid]["title"] == caption + title
        assert got[rid]["image_url"] == f"http://enc.example.cn/img/{i}.jpg"
    charsets = [got[rid]["charset"] for rid in expected]
    assert charsets == ["utf-8", "gb18030", "gb18030", "gb18030", "gb18030", "gb18030", "big5hkscs", "big5hkscs",
                        "big5hkscs", "utf-8"]


def test_invalid_bytes_in_declared_charset(tmp_path):
    wf = Warc(tmp_path / "bad.warc.gz")
    good = wf.response("http://a.cn/ok.html", html_page('<img src="/ok.jpg" alt="正常">').encode())
    bad_utf8 = html_page('<img src="/u.jpg" alt="坏\xffX">').encode("utf-8", errors="surrogateescape")
    bad_utf8 = bad_utf8.replace("\xff".encode(), b"\xff")
    wf.response("http://a.cn/u.html", bad_utf8)
    bad_gbk = html_page('<img src="/g.jpg" alt="坏字节">').encode("gbk").replace("字".encode("gbk"), b"\xff\xff")
    wf.response("http://a.cn/g.html", bad_gbk, content_type="text/html; charset=gbk")
    path = wf.close()
    offsets = record_offsets(path)
    for full_decode in (False, True):
        res = extract(path, full_decode=full_decode)
        caps = {r["page_url"]: r["caption"] for r in res.pairs}
        assert caps["http://a.cn/ok.html"] == "正常"
        assert caps["http://a.cn/u.html"] == "坏\ufffdX"
        assert caps["http://a.cn/g.html"].startswith("坏") and "\ufffd" in caps["http://a.cn/g.html"]
        errs = [e for e in res.stats.errors if e.kind == W.CHARSET_ERRORS]
        assert len(errs) == 2 and all(e.file == "bad.warc.gz" for e in errs)
        rows = {r["page_url"]: r for r in res.pairs}
        assert sorted(e.offset for e in errs) == sorted(
            [rows["http://a.cn/u.html"]["warc_offset"], rows["http://a.cn/g.html"]["warc_offset"]])
        assert good in offsets


# ---------------------------------------------------------------------------------------------- URL forms, rows
def test_url_forms_figcaption_title_and_row_schema(tmp_path):
    body = """
    <img src="/abs-root.jpg" alt="根路径">
    <img src="rel/pic.png" alt="相对路径">
    <img src="//cdn.example.com/proto.jpg" alt="协议相对">
    <img src="https://img.other.cn/full.jpg?x=1&amp;y=2#frag" alt="绝对地址">
    <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/lazy.jpg" alt="懒加载">
    <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" srcset="/s.jpg 480w, /xl.jpg 1920w, /m.jpg 960w" alt="响应式">
    <img data-original="/orig.jpg" alt="原图">
    <img src="data:image/png;base64,iVBORw0KGgo=" alt="只有占位图">
    <img src="javascript:void(0)" alt="脚本">
    <img alt="无地址">
    <figure><img src="/fig.jpg" alt="图" title=" 图片标题 "><figcaption>图一：<b>长城</b>的秋天</figcaption></figure>
    """
    wf = Warc(tmp_path / "urls.warc.gz")
    rid = wf.response("https://WWW.Example.CN:8443/news/2024/page.html?id=3",
                      html_page(body, head='<base href="/static/">').encode())
    path = wf.close()
    res = extract(path)
    rows = res.pairs
    assert [r["image_url"] for r in rows] == [
        "https://www.example.cn:8443/abs-root.jpg",
        "https://www.example.cn:8443/static/rel/pic.png",
        "https://cdn.example.com/proto.jpg",
        "https://img.other.cn/full.jpg?x=1&y=2",
        "https://www.example.cn:8443/lazy.jpg",
        "https://www.example.cn:8443/xl.jpg",
        "https://www.example.cn:8443/orig.jpg",
        "https://www.example.cn:8443/fig.jpg",
    ]
    assert [r["img_index"] for r in rows] == [0, 1, 2, 3, 4, 5, 6, 10]
    assert res.stats.skipped_images == {"data_uri": 1, "javascript_uri": 1, "no_src": 1}
    fig = rows[-1]
    assert (fig["caption"], fig["title"], fig["figcaption"]) == ("图", "图片标题", "图一： 长城 的秋天")
    assert all(r["figcaption"] is None and r["title"] is None for r in rows[:-1])
    first = rows[0]
    assert list(first) == list(W.PAIR_COLUMNS)
    assert first["pair_id"] == pair_id(rid, 0) and rows[-1]["pair_id"] == pair_id(rid, 10)
    assert len({r["pair_id"] for r in rows}) == len(rows)
    assert first["warc_offset"] == record_offsets(path)[rid]
    assert (first["snapshot"], first["warc_file"], first["warc_record_id"]) == (SNAPSHOT, "urls.warc.gz", rid)
    assert first["page_url"] == "https://WWW.Example.CN:8443/news/2024/page.html?id=3"
    assert first["domain"] == "www.example.cn"
    assert (first["page_language"], first["language_source"], first["charset"]) == ("zho", "cc", "utf-8")
    assert first["fetch_time"].startswith("20") and first["fetch_time"].endswith("Z")
    assert isinstance(first["warc_offset"], int) and isinstance(first["img_index"], int)
    assert res.stats.pairs == 8 and res.stats.html_pages == 1
    json.dumps(res.stats.to_dict())


def test_pair_rows_read_as_row_dicts_and_as_one_dataframe(tmp_path):
    """`extract_file` stores rows by column (`PairRows`); read as dicts and as polars they must say the same."""
    import polars as pl

    from danqing_assets.lib.extract_jobs import PAIR_SCHEMA

    wf = Warc(tmp_path / "cols.warc.gz")
    for p in range(3):
        wf.response(f"https://p{p}.example.cn/page.html",
                    html_page("".join(f'<img src="/{p}-{i}.jpg" alt="第{p}页第{i}张图">' for i in range(p + 1))).encode())
    wf.response("https://none.example.cn/", html_page("<p>没有图片</p>").encode())  # a page without pairs
    res = extract(wf.close())
    rows = res.pairs
    assert isinstance(rows, W.PairRows) and len(rows) == 6 and len(rows.pages) == 3
    dicts = list(rows)
    assert rows == dicts and rows[-1] == dicts[-1] and rows[1:3] == dicts[1:3] and rows != dicts[:-1]
    assert [r["image_url"].rsplit("/", 1)[1] for r in dicts] == ["0-0.jpg", "1-0.jpg", "1-1.jpg", "2-0.jpg",
                                                                  "2-1.jpg", "2-2.jpg"]
    assert [r["domain"] for r in dicts] == ["p0.example.cn"] + ["p1.example.cn"] * 2 + ["p2.example.cn"] * 3
    with pytest.raises(IndexError):
        rows[6]
    frame = rows.to_polars(PAIR_SCHEMA)
    assert frame.columns == list(W.PAIR_COLUMNS)
    assert frame.equals(pl.DataFrame(dicts, schema=PAIR_SCHEMA))
    rows.truncate(2)  # mid-page: the page keeps its first rows
    assert [r["image_url"].rsplit("/", 1)[1] for r in rows] == ["0-0.jpg", "1-0.jpg"] and len(rows.pages) == 2
    assert rows.to_polars(PAIR_SCHEMA).equals(pl.DataFrame(dicts[:2], schema=PAIR_SCHEMA))
    rows.truncate(0)
    assert len(rows) == 0 and rows == [] and rows.to_polars(PAIR_SCHEMA).height == 0


# ---------------------------------------------------------------------------------------------- language
def _language_warc(tmp_path: Path) -> Path:
    wf = Warc(tmp_path / "lang.warc.gz")
    zh = html_page('<p>这是一个关于北京旅游的中文网页，介绍故宫和长城。</p><img src="/zh.jpg" alt="故宫">')
    en = html_page('<p>This is an English page about travelling in London and Paris.</p><img src="/en.jpg" alt="x">')
    wf.response("http://l.example/zho.html", zh.encode(), lang="zho")
    wf.response("http://l.example/zho-eng.html", zh.encode(), lang="eng,zho")
    wf.response("http://l.example/eng.html", en.encode(), lang="eng")
    wf.response("http://l.example/eng-fra.html", en.encode(), lang="eng,fra")
    wf.response("http://l.example/jpn.html", html_page('<img src="/jp.jpg">').encode(), lang="jpn")
    wf.response("http://l.example/unlabelled-zh.html", zh.encode(), lang=None)
    wf.response("http://l.example/unlabelled-en.html", en.encode(), lang=None)
    ja = html_page('<p>これは日本語のページです。東京の写真をお届けします。</p><img src="/ja.jpg" alt="東京">')
    wf.response("http://l.example/unlabelled-ja.html", ja.encode(), lang=None)
    return wf.close()


def test_language_prefilter_on(tmp_path):
    res = extract(_language_warc(tmp_path))
    langs = {r["page_url"].rsplit("/", 1)[1]: (r["page_language"], r["language_source"]) for r in res.pairs}
    assert langs == {"zho.html": ("zho", "cc"), "zho-eng.html": ("eng,zho", "cc"),
                     "unlabelled-zh.html": ("zho", "detected"), "unlabelled-en.html": ("eng", "detected"),
                     "unlabelled-ja.html": ("jpn", "detected")}
    assert res.stats.pages_skipped_language == {"eng": 2, "jpn": 1}
    assert res.stats.html_pages == 5 and res.stats.responses == 8


def test_language_prefilter_off(tmp_path):
    res = extract(_language_warc(tmp_path), language_prefilter=False)
    langs = {r["page_url"].rsplit("/", 1)[1]: r["page_language"] for r in res.pairs}
    assert langs["eng.html"] == "eng" and langs["eng-fra.html"] == "eng,fra" and langs["jpn.html"] == "jpn"
    assert len(langs) == 8 and res.stats.pages_skipped_language == {}


@pytest.mark.parametrize("codec, text", [
    ("gbk", "这是一个关于北京旅游的中文网页，介绍故宫和长城的历史与风景。"),
    ("big5", "這是一個關於臺北旅遊的中文網頁，介紹故宮與陽明山的歷史與風景。"),
])
def test_unlabelled_legacy_charset_pages_are_detected_as_chinese(tmp_path, codec, text):
    """Detection must run on decoded text: raw GBK / Big5 bytes once came out as 'vie' or 'por'."""
    wf = Warc(tmp_path / "legacy.warc.gz")
    page = html_page(f'<p>{text}</p><img src="/a.jpg" alt="故宮">', head=f'<meta charset="{codec}">', title="旅遊")
    wf.response("http://legacy.example.cn/p.html", page.encode(codec), content_type="text/html", lang=None)
    (row,) = extract(wf.close()).pairs
    assert (row["page_language"], row["language_source"]) == ("zho", "detected")


# ---------------------------------------------------------------------------------------------- captures
def _jpeg(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, (40 + seed, 60, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("gz", [True, False])
def test_captures_and_read_record_payload_round_trip(tmp_path, gz):
    name = "cap.warc.gz" if gz else "cap.warc"
    wf = Warc(tmp_path / name, gz=gz)
    images = {f"http://img.example.cn/{i}.jpg": _jpeg(i) for i in range(4)}
    html_rid = wf.response("http://img.example.cn/page.html", html_page('<img src="/0.jpg" alt="图片">').encode())
    for i, (url, data) in enumerate(images.items()):
        wf.response(url, data, content_type="image/jpeg", lang=None, status="404 Not Found" if i == 3 else "200 OK")
    wf.response("http://img.example.cn/style.css", b"body{}", content_type="text/css", lang=None)
    path = wf.close()
    res = extract(path)
    assert [c["url"] for c in res.captures] == list(images)
    offsets = {}
    with open(path, "rb") as f:
        it = WarcioIterator(f)
        for rec in it:
            if rec.rec_type == "response":
                offsets[rec.rec_headers.get_header("WARC-Target-URI")] = it.get_record_offset()
    for cap in res.captures:
        assert list(cap) == list(W.CAPTURE_COLUMNS)
        assert cap["warc_offset"] == offsets[cap["url"]]
        assert cap["content_length"] == len(images[cap["url"]])
        assert cap["content_type"] == "image/jpeg" and cap["snapshot"] == SNAPSHOT and cap["warc_file"] == name
        headers, body = W.read_record_payload(path, cap["warc_offset"])
        assert body == images[cap["url"]]
        assert headers["content-type"] == "image/jpeg"
        with open(path, "rb") as f:  # also from an open binary stream
            assert W.read_record_payload(f, cap["warc_offset"])[1] == body
    assert [c["http_status"] for c in res.captures] == [200, 200, 200, 404]
    assert extract(path, capture_images=False).captures == []
    headers, body = W.read_record_payload(path, offsets["http://img.example.cn/page.html"])
    assert "图片".encode() in body and headers["content-length"] == str(len(body))
    assert html_rid
    with pytest.raises(ValueError):
        W.read_record_payload(path, offsets["http://img.example.cn/page.html"] + 7)


def test_extract_from_a_non_seekable_stream(tmp_path):
    wf = Warc(tmp_path / "s.warc.gz")
    for i in range(5):
        wf.response(f"http://s.cn/{i}.html", html_page(f'<img src="/{i}.jpg" alt="第{i}张">').encode())
    path = wf.close()

    class Body:  # like an HTTP streaming body: read() only
        def __init__(self, data: bytes) -> None:
            self.buf = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self.buf.read(min(n, 1000) if n and n > 0 else -1)

    res = W.extract_file(Body(path.read_bytes()), "s.warc.gz", snapshot=SNAPSHOT)
    ref = extract(path)
    assert res.pairs == ref.pairs and len(res.pairs) == 5 and res.stats.errors == []
    assert res.stats.bytes_read == path.stat().st_size == ref.stats.bytes_read


def test_stream_failing_midway(tmp_path):
    path, rids = _three_pages(tmp_path)
    data = path.read_bytes()
    cut = record_offsets(path)[rids[2]] + 50

    class Flaky:
        def __init__(self) -> None:
            self.buf = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            if self.buf.tell() >= cut:
                raise ConnectionResetError("peer went away")
            return self.buf.read(min(n, 100) if n and n > 0 else 100)

    res = W.extract_file(Flaky(), "flaky.warc.gz", snapshot=SNAPSHOT)
    assert {r["warc_record_id"] for r in res.pairs} >= set(rids[:2])
    assert kinds(res) == [W.UNREADABLE_FILE] and "peer went away" in res.stats.errors[0].message


def test_content_and_transfer_encodings_are_undone(tmp_path):
    page = html_page('<img src="/gz.jpg" alt="压缩页面">').encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(page[i:i + 50]), page[i:i + 50]) for i in range(0, len(page), 50))
    wf = Warc(tmp_path / "enc.warc.gz")
    wf.response("http://e.cn/gzip.html", gzip.compress(page), extra_http=[("Content-Encoding", "gzip")])
    wf.response("http://e.cn/deflate.html", zlib.compress(page), extra_http=[("Content-Encoding", "deflate")])
    wf.response("http://e.cn/chunked.html", chunked + b"0\r\n\r\n", extra_http=[("Transfer-Encoding", "chunked")])
    wf.response("http://e.cn/stored-decoded.html", page, extra_http=[("Content-Encoding", "gzip"),
                                                                      ("Transfer-Encoding", "chunked")])
    wf.response("http://e.cn/broken.html", b"\x1f\x8b\x08\x00 corrupt gzip", extra_http=[("Content-Encoding", "gzip")])
    wf.response("http://e.cn/after.html", page)
    path = wf.close()
    res = extract(path)
    assert [r["page_url"].rsplit("/", 1)[1] for r in res.pairs] == [
        "gzip.html", "deflate.html", "chunked.html", "stored-decoded.html", "after.html"]
    assert all(r["caption"] == "压缩页面" for r in res.pairs)
    assert kinds(res) == [W.BAD_CONTENT_ENCODING]


# ---------------------------------------------------------------------------------------------- bad input
def _three_pages(tmp_path: Path, name: str = "t.warc.gz") -> tuple[Path, list[str]]:
    wf = Warc(tmp_path / name)
    rids = [wf.response(f"http://t.cn/{i}.html", html_page(f'<img src="/{i}.jpg" alt="第{i}页">' * 3).encode())
            for i in range(3)]
    return wf.close(), rids


def test_truncated_gzip_member_keeps_everything_before(tmp_path):
    path, rids = _three_pages(tmp_path)
    offsets = record_offsets(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: offsets[rids[2]] + 120])  # inside the last response's gzip member
    res = extract(cut)
    assert {r["warc_record_id"] for r in res.pairs} == set(rids[:2]) and len(res.pairs) == 6
    assert kinds(res) == [W.TRUNCATED_GZIP]
    err = res.stats.errors[0]
    assert err.file == "cut.warc.gz" and err.offset == offsets[rids[2]]
    # cut inside the metadata record after the second page: that page's pairs are kept
    meta_cut = tmp_path / "cut2.warc.gz"
    meta_cut.write_bytes(data[: offsets[rids[2]] - 30])
    res = extract(meta_cut)
    assert {r["warc_record_id"] for r in res.pairs} == set(rids[:2])
    assert kinds(res) == [W.TRUNCATED_GZIP]


def test_truncated_uncompressed_warc(tmp_path):
    wf = Warc(tmp_path / "t.warc", gz=False)
    rids = [wf.response(f"http://t.cn/{i}.html", html_page(f'<img src="/{i}.jpg">').encode()) for i in range(2)]
    path = wf.close()
    offsets = record_offsets(path)
    data = path.read_bytes()
    (tmp_path / "cut.warc").write_bytes(data[: offsets[rids[1]] + 400])
    res = extract(tmp_path / "cut.warc")
    assert [r["warc_record_id"] for r in res.pairs] == [rids[0]]
    assert kinds(res) == [W.TRUNCATED_RECORD]


def test_corrupt_gzip_in_the_middle(tmp_path):
    path, rids = _three_pages(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "corrupt.warc.gz"
    bad.write_bytes(data + b"\x1f\x8b\x08\x00garbage-that-is-not-deflate" + data)
    res = extract(bad)
    assert len(res.pairs) == 9  # the intact copy before the garbage
    assert kinds(res) == [W.CORRUPT_GZIP]


def test_record_with_a_wrong_content_length(tmp_path):
    path, rids = _three_pages(tmp_path)
    data, cut = path.read_bytes(), record_offsets(path)[rids[1]]
    bad = gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 999999\r\n\r\nxx\r\n\r\n")
    (tmp_path / "cl.warc.gz").write_bytes(data[:cut] + bad + data[cut:])
    res = extract(tmp_path / "cl.warc.gz")
    assert {r["warc_record_id"] for r in res.pairs} == {rids[0]}
    assert kinds(res) == [W.CORRUPT_RECORD] and res.stats.errors[0].offset == cut


@pytest.mark.parametrize("content, kind", [
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20, W.NOT_A_WARC),
    (b"just a text file\nrenamed to .warc.gz\n" * 10, W.NOT_A_WARC),
    (gzip.compress(b"hello world, gzip but no WARC inside\n" * 10), W.NOT_A_WARC),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not deflate at all", W.NOT_A_WARC),
    (b"", W.EMPTY_FILE),
])
def test_not_a_warc(tmp_path, content, kind):
    path = tmp_path / "fake.warc.gz"
    path.write_bytes(content)
    res = extract(path)
    assert res.pairs == [] and res.captures == []
    assert kinds(res) == [kind] and res.stats.errors[0].file == "fake.warc.gz"
    assert res.stats.errors[0].offset is None


def test_unreadable_file(tmp_path):
    res = extract(tmp_path / "missing.warc.gz")
    assert kinds(res) == [W.UNREADABLE_FILE] and "missing.warc.gz" == res.stats.errors[0].file
    res = W.extract_file(tmp_path, "dir.warc.gz", snapshot=SNAPSHOT)  # a directory
    assert kinds(res) == [W.UNREADABLE_FILE]


def test_broken_http_header_is_counted_and_reading_goes_on(tmp_path):
    path, rids = _three_pages(tmp_path)
    good = html_page('<img src="/after.jpg" alt="之后">').encode()
    blocks = [b"<html>no HTTP status line at all</html>",
              b"HTTP/1.1 abc\r\nContent-Type: text/html\r\n\r\n<img src=/x.jpg>",
              b"\x00\x01\x02\xff\r\n\r\nbinary junk",
              b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n<img src=/y.jpg>"]
    with open(path, "ab") as f:
        for i, block in enumerate(blocks):
            f.write(raw_response_record(f"http://broken.cn/{i}.html", block))
        f.write(raw_response_record("http://broken.cn/after.html",
                                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + good))
    res = extract(path)
    assert kinds(res) == [W.BAD_HTTP_HEADER] * 4
    assert all(e.offset is not None and e.file == "t.warc.gz" for e in res.stats.errors)
    assert len({e.offset for e in res.stats.errors}) == 4
    assert [r["page_url"] for r in res.pairs][-1] == "http://broken.cn/after.html"
    assert len(res.pairs) == 10


def test_huge_page_is_parsed_up_to_max_page_bytes(tmp_path):
    filler = "<p>" + "很长的网页内容。" * 40 + "</p>"
    body = '<img src="/early.jpg" alt="开头">' + filler * (11 * 1024 * 1024 // len(filler.encode())) + \
           '<img src="/late.jpg" alt="结尾">'
    page = html_page(body).encode()
    assert len(page) > 10 * 1024 * 1024
    wf = Warc(tmp_path / "big.warc.gz")
    wf.response("http://big.cn/huge.html", page)
    wf.response("http://big.cn/small.html", html_page('<img src="/s.jpg">').encode())
    path = wf.close()
    t = time.perf_counter()
    res = extract(path)
    assert time.perf_counter() - t < 10
    assert [r["image_url"].rsplit("/", 1)[1] for r in res.pairs] == ["early.jpg", "s.jpg"]
    assert kinds(res) == [W.PAGE_TRUNCATED] and res.stats.pages_truncated == 1
    res = extract(path, max_page_bytes=20 * 1024 * 1024)
    assert [r["image_url"].rsplit("/", 1)[1] for r in res.pairs] == ["early.jpg", "late.jpg", "s.jpg"]
    assert res.stats.errors == []


def test_crawler_truncated_page_is_flagged(tmp_path):
    wf = Warc(tmp_path / "cc.warc.gz")
    page = html_page('<img src="/a.jpg" alt="被截断"><p>正文</p>').encode()[:-18]  # cut inside "正文"
    wf.response("http://cc.cn/t.html", page, extra_warc={"WARC-Truncated": "length"})
    res = extract(wf.close())
    assert [r["caption"] for r in res.pairs] == ["被截断"]
    assert kinds(res) == [W.PAGE_TRUNCATED] and res.stats.pages_truncated == 1


def test_html_nested_5000_deep(tmp_path):
    deep = "<div>" * 5000 + '<img src="/deep.jpg" alt="深层嵌套">' + "</div>" * 5000
    figs = "<figure>" * 20000 + '<img src="/figs.jpg">' + "</figure>" * 20000
    wf = Warc(tmp_path / "deep.warc.gz")
    wf.response("http://deep.cn/divs.html", html_page(deep).encode())
    wf.response("http://deep.cn/figures.html", html_page('<img src="/first.jpg">' + figs).encode())
    path = wf.close()
    t = time.perf_counter()
    res = extract(path)
    assert time.perf_counter() - t < 10
    assert [r["image_url"].rsplit("/", 1)[1] for r in res.pairs] == ["deep.jpg", "first.jpg"]
    assert kinds(res) == [W.HTML_TOO_DEEP]


def test_non_html_and_non_2xx_responses_are_not_parsed(tmp_path):
    wf = Warc(tmp_path / "misc.warc.gz")
    img_html = html_page('<img src="/x.jpg">').encode()
    wf.response("http://m.cn/404.html", img_html, status="404 Not Found")
    wf.response("http://m.cn/301.html", b"", status="301 Moved Permanently")
    wf.response("http://m.cn/a.json", b'{"img": "<img src=/j.jpg>"}', content_type="application/json", lang=None)
    wf.response("http://m.cn/x.xhtml", img_html, content_type="application/xhtml+xml")
    res = extract(wf.close())
    assert [r["page_url"] for r in res.pairs] == ["http://m.cn/x.xhtml"]
    assert res.stats.records == 13 and res.stats.responses == 4 and res.stats.html_pages == 1


def test_stats_merge_and_json(tmp_path):
    a, _ = _three_pages(tmp_path, "a.warc.gz")
    (tmp_path / "b.warc.gz").write_bytes(b"not a warc")
    sa, sb = extract(a).stats.to_dict(), extract(tmp_path / "b.warc.gz").stats.to_dict()
    merged = W.merge_stats([sa, sb])
    assert merged["files"] == 2 and merged["pairs"] == 9 and merged["errors_by_kind"] == {W.NOT_A_WARC: 1}
    assert json.loads(json.dumps(merged)) == merged
    assert sa["bytes_read"] == a.stat().st_size


# ---------------------------------------------------------------------------------------------- real files
@pytest.mark.slow
def test_real_world_warcs_from_the_pywb_sdist(tmp_path):
    """Real WARC files written by other crawlers (wget, wpull, warcprox, ...): shipped in the pywb sdist (GPL, so
    fetched at test time, never committed)."""
    import subprocess
    import sys
    import tarfile

    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                           "pywb==2.10.0", "-d", str(tmp_path), "-q"], capture_output=True, timeout=300)
    sdists = list(tmp_path.glob("pywb-*.tar.gz"))
    if proc.returncode != 0 or not sdists:
        pytest.skip(f"pywb sdist not downloadable here: {proc.stderr[-300:]!r}")
    with tarfile.open(sdists[0]) as tar:
        members = [m for m in tar.getmembers() if "/sample_archive/warcs/" in m.name and m.isfile()]
        tar.extractall(tmp_path, members=members, filter="data")
    files = {p.name: p for p in tmp_path.rglob("sample_archive/warcs/*")}
    assert len(files) >= 10
    results = {name: W.extract_file(p, name, snapshot=SNAPSHOT, language_prefilter=False)
               for name, p in files.items()}
    for name in ("example.arc", "example.arc.gz", "bad.arc"):  # ARC, the WARC predecessor: not read
        assert kinds(results[name]) == [W.NOT_A_WARC]
    assert kinds(results["example-extra.warc"]) == [W.BAD_HTTP_HEADER]  # "HTTPX/1.1 200 OK"
    assert results["missing-status-text.warc"].stats.errors == []
    iana = results["iana.warc.gz"]
    assert iana.stats.errors == [] and iana.stats.html_pages >= 10 and len(iana.pairs) >= 10
    assert all(r["image_url"].startswith("http") and r["language_source"] == "detected" for r in iana.pairs)
    assert {c["content_type"] for c in iana.captures} >= {"image/png", "image/svg+xml"}
    for cap in iana.captures:
        headers, body = W.read_record_payload(files["iana.warc.gz"], cap["warc_offset"])
        assert len(body) == cap["content_length"] and headers["content-type"] == cap["content_type"]
    for res in results.values():
        json.dumps(res.stats.to_dict())


def test_sample_crawl_rows_are_the_same_with_and_without_the_compiled_tokenizer(tmp_path, monkeypatch):
    """Every page of the sample crawl through the compiled tokenizer, then every page through Lexbor: same rows."""
    from danqing_assets.lib import html as H
    from danqing_sample.crawl import write_sample_crawl

    if H._compiled_scan() is None:
        pytest.skip("danqing_assets._html (C) is not built here")
    summary = write_sample_crawl(tmp_path, pages=120, seed=3, files=2)
    fast = [W.extract_file(p, Path(p).name, snapshot=SNAPSHOT) for p in summary.warc_files]
    monkeypatch.setattr(H, "_compiled_scanner", [None])
    slow = [W.extract_file(p, Path(p).name, snapshot=SNAPSHOT) for p in summary.warc_files]
    for a, b in zip(fast, slow):
        assert a.pairs == b.pairs and len(a.pairs) > 100
        assert a.stats.skipped_images == b.stats.skipped_images and a.stats.html_pages == b.stats.html_pages
        assert b.stats.html_pages_lexbor == b.stats.html_pages  # every page parsed by Lexbor
        assert a.stats.html_pages_lexbor < a.stats.html_pages / 2  # most answered by the tokenizer
    assert sum(len(r.pairs) for r in fast) == sum(len(r.pairs) for r in slow)


def test_extraction_without_the_c_extension_gives_the_same_rows(tmp_path):
    """`DANQING_PURE_PYTHON=1` is the path of an install without a C compiler: same rows, in another process."""
    import subprocess
    import sys

    from danqing_sample.crawl import write_sample_crawl

    summary = write_sample_crawl(tmp_path, pages=60, seed=5, files=1)
    path = summary.warc_files[0]
    here = W.extract_file(path, "f.warc.gz", snapshot=SNAPSHOT)
    code = ("import json, sys; from danqing_assets.lib import html as H, warc as W; "
            "assert H._compiled_skeleton() is None and H._compiled_scan() is None; "
            f"r = W.extract_file({str(path)!r}, 'f.warc.gz', snapshot={SNAPSHOT!r}); "
            "json.dump([list(r.pairs), r.stats.html_pages_lexbor], sys.stdout)")
    env = {**os.environ, "DANQING_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True)
    rows, lexbor_pages = json.loads(out.stdout)
    assert rows == list(here.pairs) and len(rows) > 50
    assert lexbor_pages == here.stats.html_pages  # every page parsed by Lexbor on the numpy skeleton
