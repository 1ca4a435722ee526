"""fetch_images against a real threaded HTTP server on 127.0.0.1 (danqing_assets_tests.httpserver).

Every test asserts the FETCH reason, the attempts made and, where it matters, what the server saw (request counters,
robots.txt fetches, concurrency), so politeness and safety are checked on the wire, not only in the results.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import io
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from danqing_assets.lib import reasons as R
from danqing_assets.lib.fetch import (
    DEFAULT_USER_AGENT,
    FetchConfig,
    FetchResult,
    fetch_images,
    parse_retry_after,
    parse_url,
    resume_lookup,
)
from danqing_assets.lib.fetch.robots import ROBOTS_UNREACHABLE, x_robots_optout
from danqing_assets.lib.image_store import LocalImageStore
from danqing_assets_tests.httpserver import Resp, ScriptedServer

from .test_decode import bomb_png


def _img(fmt: str, size: tuple[int, int] = (120, 80), seed: int = 0, **kw) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


JPEG = _img("JPEG", seed=1)
PNG = _img("PNG", seed=2)
WEBP = _img("WEBP", seed=3)
GIF = _img("GIF", seed=4)


def cfg(**kw) -> FetchConfig:
    base = dict(
        processes=1,
        concurrency=8,
        allow_networks=["127.0.0.1/32"],
        connect_timeout_s=5.0,  # generous: a loaded CI machine must not turn into timeouts; timeout tests set their own
        read_timeout_s=5.0,
        total_timeout_s=10.0,
        retries=2,
        backoff_base_s=0.02,
        backoff_max_s=0.1,
        retry_after_max_s=5.0,
    )
    base.update(kw)
    return FetchConfig(**base)


def run(urls, store=None, config: FetchConfig | None = None, **kw) -> dict[str, FetchResult]:
    results = list(fetch_images(urls, store, config or cfg(), **kw))
    assert sorted(r.url for r in results) == sorted(urls)  # one result per input URL, none dropped
    return {r.url: r for r in results}


@pytest.fixture
def srv():
    with ScriptedServer() as s:
        yield s


@pytest.fixture
def store(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(tmp_path / "images")


# ---------------------------------------------------------------------------------------------------------- success


def test_good_images_are_validated_hashed_and_stored(srv: ScriptedServer, store: LocalImageStore) -> None:
    bodies = {
        "/a.jpg": (JPEG, "image/jpeg", "jpeg"),
        "/b.png": (PNG, "image/png", "png"),
        "/c.webp": (WEBP, "image/webp", "webp"),
        "/d.gif": (GIF, "image/gif", "gif"),
        "/e": (JPEG, "application/octet-stream", "jpeg"),
    }  # wrong type, right magic bytes
    for path, (body, ctype, _) in bodies.items():
        srv.route(path, Resp(body=body, content_type=ctype))
    res = run([srv.url(p) for p in bodies], store)
    for path, (body, _, fmt) in bodies.items():
        r = res[srv.url(path)]
        assert r.status == "ok" and r.reason is None, r
        assert (r.width, r.height, r.format, r.bytes, r.attempts) == (120, 80, fmt, len(body), 1)
        assert r.image_sha256 == hashlib.sha256(body).hexdigest()
        assert store.get(r.image_sha256) == body
        assert r.final_url == srv.url(path) and r.source == "network" and r.http_status == 200
    assert srv.count("/robots.txt") == 1  # once per origin, 404 -> allow all
    seen = [q for q in srv.requests if q.path == "/a.jpg"][0]
    assert seen.headers["User-Agent"] == DEFAULT_USER_AGENT


def test_gzip_content_encoding_and_chunked_bodies(srv: ScriptedServer) -> None:
    srv.route("/gz", Resp(body=gzip.compress(PNG), content_type="image/png", headers={"Content-Encoding": "gzip"}))
    srv.route("/chunked", Resp(body=JPEG, content_type="image/jpeg", chunked=True))
    srv.route("/eof", Resp(body=JPEG, content_type="image/jpeg", no_length=True))
    res = run([srv.url("/gz"), srv.url("/chunked"), srv.url("/eof")])
    assert all(r.ok for r in res.values()), res
    assert res[srv.url("/gz")].image_sha256 == hashlib.sha256(PNG).hexdigest()


def test_non_ascii_urls_are_percent_encoded_on_the_wire(srv: ScriptedServer) -> None:
    srv.route("/%E5%9B%BE%E7%89%87/%E7%8C%AB%201.jpg?w=%E5%A4%A7", Resp(body=JPEG, content_type="image/jpeg"))
    url = srv.url("/图片/猫 1.jpg?w=大")
    r = run([url])[url]
    assert r.ok and r.url == url


def test_duplicate_urls_are_fetched_once_and_answered_each_time(srv: ScriptedServer) -> None:
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    url = srv.url("/a.jpg")
    results = list(fetch_images([url, url, url], None, cfg()))
    assert len(results) == 3 and all(r.ok for r in results)
    assert srv.count("/a.jpg") == 1


# ---------------------------------------------------------------------------------------------------- HTTP statuses


def test_404_and_4xx_are_not_retried(srv: ScriptedServer) -> None:
    srv.route("/gone", Resp(status=410))
    srv.route("/forbidden", Resp(status=403, body=b"no"))
    res = run([srv.url("/missing"), srv.url("/gone"), srv.url("/forbidden")])
    assert res[srv.url("/missing")].reason == R.HTTP_NOT_FOUND
    assert res[srv.url("/gone")].reason == R.HTTP_NOT_FOUND
    f = res[srv.url("/forbidden")]
    assert (f.reason, f.http_status, f.attempts) == (R.HTTP_CLIENT_ERROR, 403, 1)
    assert srv.count("/missing") == srv.count("/forbidden") == 1


def test_500_then_200_is_retried(srv: ScriptedServer) -> None:
    srv.route("/flaky", [Resp(status=500), Resp(body=PNG, content_type="image/png")])
    srv.route("/down", Resp(status=503))
    res = run([srv.url("/flaky"), srv.url("/down")])
    assert res[srv.url("/flaky")].ok and res[srv.url("/flaky")].attempts == 2
    d = res[srv.url("/down")]
    assert (d.reason, d.http_status, d.attempts) == (R.HTTP_SERVER_ERROR, 503, 3)
    assert srv.count("/down") == 3  # 1 + retries=2


def test_429_honours_retry_after_seconds_and_http_date(srv: ScriptedServer) -> None:
    srv.route("/rl", [Resp(status=429, headers={"Retry-After": "1"}), Resp(body=JPEG, content_type="image/jpeg")])
    # An HTTP date is absolute (1 s resolution): the retry may not start before it, however late the first request
    # was answered (on a loaded machine the first request can come after the date, and then no wait is due).
    when = time.time() + 3
    date = email.utils.formatdate(when, usegmt=True)
    not_before = time.monotonic() + (int(when) - time.time())  # the date as written, on the server's clock
    srv.route("/rld", [Resp(status=429, headers={"Retry-After": date}), Resp(body=PNG, content_type="image/png")])
    res = run([srv.url("/rl"), srv.url("/rld")])
    for path in ("/rl", "/rld"):
        assert res[srv.url(path)].ok and res[srv.url(path)].attempts == 2
    rl = [q.started for q in srv.requests if q.path == "/rl"]
    assert rl[1] - rl[0] >= 0.95  # waited the Retry-After seconds
    rld = [q.started for q in srv.requests if q.path == "/rld"]
    assert rld[1] >= not_before - 0.05  # not before the date
    assert parse_retry_after("120") == 120 and parse_retry_after("soon") is None


def test_429_beyond_the_cap_or_forever_gives_rate_limited(srv: ScriptedServer) -> None:
    srv.route("/hour", Resp(status=429, headers={"Retry-After": "3600"}))
    srv.route("/always", Resp(status=429))
    # Retry-After also holds back the whole host (up to the cap), so keep the cap short here
    res = run([srv.url("/hour"), srv.url("/always")], config=cfg(per_host_concurrency=2, retry_after_max_s=0.3))
    h = res[srv.url("/hour")]
    assert (h.reason, h.attempts) == (R.RATE_LIMITED, 1) and "exceeds" in h.error
    assert res[srv.url("/always")].reason == R.RATE_LIMITED and res[srv.url("/always")].attempts == 3


def test_slow_response_times_out_without_retry(srv: ScriptedServer) -> None:
    srv.route("/slow", Resp(body=JPEG, content_type="image/jpeg", delay_s=1.5))
    srv.route("/drip", Resp(body=PNG, content_type="image/png", drip=(200, 0.3)))  # each read fast, total slow
    t0 = time.monotonic()
    res = run([srv.url("/slow"), srv.url("/drip")], config=cfg(read_timeout_s=0.5, total_timeout_s=1.0))
    assert res[srv.url("/slow")].reason == R.TIMEOUT and res[srv.url("/slow")].attempts == 1
    assert res[srv.url("/drip")].reason == R.TIMEOUT
    assert time.monotonic() - t0 < 2.5
    assert srv.count("/slow") == 1


def test_connection_refused_and_dns_failure(srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    real = socket.getaddrinfo

    def fake(host, *a, **kw):
        if host == "nxdomain.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    res = run([f"http://127.0.0.1:{closed_port}/x.jpg", "http://nxdomain.test/x.jpg"])
    c = res[f"http://127.0.0.1:{closed_port}/x.jpg"]
    # robots.txt unreachable: RFC 9309 forbids the fetch; the reason names the network failure, not an opt-out
    assert (c.reason, c.attempts) == (R.CONNECTION_ERROR, 1) and ROBOTS_UNREACHABLE in c.error
    res = run([f"http://127.0.0.1:{closed_port}/x.jpg"], config=cfg(respect_robots=False))
    c = res[f"http://127.0.0.1:{closed_port}/x.jpg"]
    assert (c.reason, c.attempts) == (R.CONNECTION_ERROR, 3)
    assert res.get("http://nxdomain.test/x.jpg") is None
    d = run(["http://nxdomain.test/x.jpg"])["http://nxdomain.test/x.jpg"]
    assert d.reason == R.DNS_ERROR


# ----------------------------------------------------------------------------------------------- redirects and size


def test_redirects_are_followed_and_loops_stopped(srv: ScriptedServer) -> None:
    srv.route("/r1", Resp(status=301, headers={"Location": "/r2"}))
    srv.route("/r2", Resp(status=307, headers={"Location": srv.url("/final.png")}))
    srv.route("/final.png", Resp(body=PNG, content_type="image/png"))
    srv.route("/loop", Resp(status=302, headers={"Location": "/loop"}))
    srv.route("/noloc", Resp(status=302))
    res = run([srv.url("/r1"), srv.url("/loop"), srv.url("/noloc")])
    ok = res[srv.url("/r1")]
    assert ok.ok and ok.final_url == srv.url("/final.png")
    loop = res[srv.url("/loop")]
    assert loop.reason == R.TOO_MANY_REDIRECTS and loop.attempts == 1
    assert srv.count("/loop") == 6  # the request plus 5 followed hops
    assert res[srv.url("/noloc")].reason == R.HTTP_CLIENT_ERROR


def test_size_cap_streamed_and_by_content_length(srv: ScriptedServer) -> None:
    big = JPEG + os.urandom(300_000)
    srv.route("/chunked", Resp(body=big, content_type="image/jpeg", chunked=True))
    srv.route("/eof", Resp(body=big, content_type="image/jpeg", no_length=True))
    srv.route("/declared", Resp(body=big, content_type="image/jpeg"))
    res = run([srv.url(p) for p in ("/chunked", "/eof", "/declared")], config=cfg(max_bytes=100_000))
    for p in ("/chunked", "/eof", "/declared"):
        assert res[srv.url(p)].reason == R.TOO_LARGE, p
    assert "Content-Length" in res[srv.url("/declared")].error
    assert "streamed" in res[srv.url("/chunked")].error


def test_html_body_is_not_an_image(srv: ScriptedServer) -> None:
    srv.route("/page", Resp(body=b"<!doctype html><html><body>" + b"x" * 200_000, content_type="text/html"))
    srv.route("/empty", Resp(body=b"", content_type="image/jpeg"))
    res = run([srv.url("/page"), srv.url("/empty")])
    assert res[srv.url("/page")].reason == R.NOT_AN_IMAGE
    assert res[srv.url("/empty")].reason == R.NOT_AN_IMAGE


def test_bomb_and_truncated_images(srv: ScriptedServer, store: LocalImageStore) -> None:
    bomb = bomb_png(20_000, 20_000)
    assert len(bomb) < 100_000
    srv.route("/bomb.png", Resp(body=bomb, content_type="image/png"))
    srv.route("/trunc.jpg", Resp(body=JPEG[: len(JPEG) * 2 // 3], content_type="image/jpeg"))
    res = run([srv.url("/bomb.png"), srv.url("/trunc.jpg")], store)
    assert res[srv.url("/bomb.png")].reason == R.DECOMPRESSION_BOMB
    assert res[srv.url("/trunc.jpg")].reason == R.DECODE_ERROR
    assert not store.root.exists() or not any(store.root.rglob("*"))  # nothing stored


# ------------------------------------------------------------------------------------------------ opt-out, robots


def test_robots_txt_disallow_is_obeyed_and_fetched_once(srv: ScriptedServer) -> None:
    srv.route(
        "/robots.txt",
        Resp(
            body=b"User-agent: *\nDisallow: /private/\n\nUser-agent: danqing-assets\nDisallow: /nodq/\n",
            content_type="text/plain",
        ),
    )
    for p in ("/private/a.jpg", "/nodq/b.jpg", "/public/c.jpg", "/public/d.jpg"):
        srv.route(p, Resp(body=JPEG, content_type="image/jpeg"))
    res = run([srv.url(p) for p in ("/private/a.jpg", "/nodq/b.jpg", "/public/c.jpg", "/public/d.jpg")])
    assert res[srv.url("/nodq/b.jpg")].reason == R.ROBOTS_DISALLOWED  # our own group
    assert res[srv.url("/public/c.jpg")].ok and res[srv.url("/public/d.jpg")].ok
    # our group replaces "*" (RFC 9309): /private/ is allowed for us
    assert res[srv.url("/private/a.jpg")].ok
    assert srv.count("/robots.txt") == 1 and srv.count("/nodq/b.jpg") == 0
    # disabled: everything is fetched
    res = run([srv.url("/nodq/b.jpg")], config=cfg(respect_robots=False))
    assert res[srv.url("/nodq/b.jpg")].ok


def test_crawl_delay_makes_the_host_sequential_and_spaced(srv: ScriptedServer) -> None:
    srv.route("/robots.txt", Resp(body=b"User-agent: *\nCrawl-delay: 5\n", content_type="text/plain"))
    for i in range(4):
        srv.route(f"/cd/{i}.jpg", Resp(body=JPEG, content_type="image/jpeg", delay_s=0.05))
    res = run([srv.url(f"/cd/{i}.jpg") for i in range(4)], config=cfg(per_host_concurrency=8, max_crawl_delay_s=0.3))
    assert all(r.ok for r in res.values())
    starts = srv.starts("/cd/")
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.29  # 5 s capped to 0.3 s
    assert srv.max_inflight == 1  # even the first burst waited for robots.txt


def test_robots_txt_server_error_disallows_the_host(srv: ScriptedServer) -> None:
    srv.route("/robots.txt", Resp(status=503))
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    r = run([srv.url("/a.jpg")])[srv.url("/a.jpg")]
    assert r.reason == R.ROBOTS_DISALLOWED and ROBOTS_UNREACHABLE in r.error
    assert srv.count("/a.jpg") == 0


def test_x_robots_tag_optout(srv: ScriptedServer) -> None:
    srv.route("/noai", Resp(body=JPEG, content_type="image/jpeg", headers={"X-Robots-Tag": "noai"}))
    srv.route(
        "/ours", Resp(body=JPEG, content_type="image/jpeg", headers={"X-Robots-Tag": "danqing-assets: noimageai"})
    )
    srv.route(
        "/other", Resp(body=JPEG, content_type="image/jpeg", headers={"X-Robots-Tag": "otherbot: noai, noimageai"})
    )
    srv.route(
        "/multi",
        Resp(body=JPEG, content_type="image/jpeg", headers=[("X-Robots-Tag", "noindex"), ("X-Robots-Tag", "NoAI")]),
    )
    res = run([srv.url(p) for p in ("/noai", "/ours", "/other", "/multi")])
    assert res[srv.url("/noai")].reason == R.OPTOUT_HEADER
    assert res[srv.url("/ours")].reason == R.OPTOUT_HEADER
    assert res[srv.url("/multi")].reason == R.OPTOUT_HEADER
    assert res[srv.url("/other")].ok
    assert run([srv.url("/noai")], config=cfg(respect_optout=False))[srv.url("/noai")].ok
    assert x_robots_optout(["googlebot: noindex, danqing-assets: noai"], "danqing-assets")
    assert not x_robots_optout(["unavailable_after: 25 Jun 2010 15:00:00 PST"], "danqing-assets")


# ---------------------------------------------------------------------------------------------------------- safety


def _record_connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = socket.create_connection

    def spy(address, *a, **kw):
        seen.append(address[0])
        return real(address, *a, **kw)

    monkeypatch.setattr(socket, "create_connection", spy)
    return seen


def _map_host(monkeypatch: pytest.MonkeyPatch, table: dict[str, str]) -> None:
    real = socket.getaddrinfo

    def fake(host, port, *a, **kw):
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_private_and_metadata_addresses_are_refused_without_traffic(
    srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _map_host(monkeypatch, {"intranet.test": "10.0.0.1", "rebind.test": "127.0.0.1"})
    connects = _record_connects(monkeypatch)
    urls = [
        "http://intranet.test/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/x.jpg",  # 169.254.169.254 spelled as one number
        "http://[::ffff:10.0.0.1]/x.jpg",
        "http://100.64.1.1/x.jpg",
        f"http://rebind.test:{srv.port}/x.jpg",  # public-looking name, loopback address: not in the allowlist here
    ]
    res = run(urls, config=cfg(allow_networks=[]))
    for u in urls:
        assert res[u].reason == R.BLOCKED_ADDRESS, u
    assert connects == []  # not one packet
    assert srv.count() == 0


def test_redirect_to_a_blocked_address_is_refused(srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _map_host(monkeypatch, {"intranet.test": "10.0.0.1"})
    connects = _record_connects(monkeypatch)
    srv.route("/to-meta", Resp(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
    srv.route("/to-intranet", Resp(status=301, headers={"Location": "http://intranet.test/secret.png"}))
    res = run([srv.url("/to-meta"), srv.url("/to-intranet")])
    for p in ("/to-meta", "/to-intranet"):
        assert res[srv.url(p)].reason == R.BLOCKED_ADDRESS and "redirect" in res[srv.url(p)].error
    assert set(connects) == {"127.0.0.1"}


def test_invalid_urls(srv: ScriptedServer) -> None:
    bad = ["ftp://example.com/a.jpg", "not a url", "", "http://", "javascript:alert(1)", "http://exa mple.com/x"]
    res = run(bad)
    for u in bad:
        assert res[u].reason == R.INVALID_URL, u
    u = parse_url("http://例子.测试/图片 1.jpg?q=猫")
    assert u.host == "xn--fsqu00a.xn--0zwm56d" and u.target == "/%E5%9B%BE%E7%89%87%201.jpg?q=%E7%8C%AB"


# ------------------------------------------------------------------------------------ resume, WARC, robustness


def test_resumed_run_fetches_nothing_new_and_retries_only_transient_failures(
    srv: ScriptedServer, store: LocalImageStore
) -> None:
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    srv.route("/b.png", Resp(body=PNG, content_type="image/png"))
    srv.route(
        "/flaky", [Resp(status=500), Resp(status=500), Resp(status=500), Resp(body=GIF, content_type="image/gif")]
    )
    urls = [srv.url(p) for p in ("/a.jpg", "/b.png", "/missing", "/flaky")]
    first = list(fetch_images(urls, store, cfg()))
    assert {r.url: r.reason for r in first}[srv.url("/flaky")] == R.HTTP_SERVER_ERROR
    before = srv.count()
    lookup = resume_lookup([r.as_dict() for r in first])  # as rows, like a Parquet ledger read back
    second = run(urls, store, skip_existing=lookup)
    # only /flaky again (its 4th response is a 200), plus robots.txt: it is cached per run, and this is a new run
    assert srv.count() == before + 2 and srv.count("/flaky") == 4
    assert second[srv.url("/flaky")].ok
    assert second[srv.url("/missing")].reason == R.HTTP_NOT_FOUND  # permanent failure kept, not retried
    third = run(urls, store, skip_existing=resume_lookup(second.values()))
    assert srv.count() == before + 2  # a complete run resumed: no request at all
    assert all(r.ok or r.reason == R.HTTP_NOT_FOUND for r in third.values())


def test_warc_lookup_bytes_need_no_request(srv: ScriptedServer, store: LocalImageStore) -> None:
    captured = {srv.url("/w.png"): PNG, srv.url("/broken.jpg"): JPEG[:100]}
    res = run(list(captured) + [srv.url("/absent.jpg")], store, warc_lookup=captured.get)
    ok = res[srv.url("/w.png")]
    assert ok.ok and ok.source == "warc" and ok.attempts == 0 and store.get(ok.image_sha256) == PNG
    assert res[srv.url("/broken.jpg")].reason == R.DECODE_ERROR and res[srv.url("/broken.jpg")].source == "warc"
    assert res[srv.url("/absent.jpg")].reason == R.HTTP_NOT_FOUND  # not in the WARC: fetched
    assert srv.count("/w.png") == srv.count("/broken.jpg") == 0


class ExplodingStore:
    """A store whose writes fail: the error must become a result, not a crash."""

    def exists(self, sha: str) -> bool:
        return False

    def put(self, sha: str, data: bytes) -> None:
        raise OSError("disk full")


def test_store_failure_becomes_a_result(srv: ScriptedServer) -> None:
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    r = run([srv.url("/a.jpg")], ExplodingStore())[srv.url("/a.jpg")]
    assert r.reason == R.CONNECTION_ERROR and "disk full" in r.error


def test_progress_reports_counts_rate_and_eta(srv: ScriptedServer) -> None:
    for i in range(12):
        srv.route(f"/{i}.jpg", Resp(body=_img("JPEG", (40, 40), seed=i), content_type="image/jpeg"))
    seen: list[dict] = []
    run(
        [srv.url(f"/{i}.jpg") for i in range(12)] + [srv.url("/nope")],
        config=cfg(progress_every=5),
        progress=seen.append,
    )
    assert [s["done"] for s in seen] == [5, 10, 13]
    last = seen[-1]
    assert (last["total"], last["ok"], last["error"], last["by_reason"]) == (13, 12, 1, {R.HTTP_NOT_FOUND: 1}), last
    assert last["rate_per_s"] > 0 and last["eta_s"] == 0


def test_per_host_concurrency_and_delay(srv: ScriptedServer) -> None:
    for i in range(6):
        srv.route(f"/slow/{i}.jpg", Resp(body=JPEG, content_type="image/jpeg", delay_s=0.15))
        srv.route(f"/paced/{i}.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    run([srv.url(f"/slow/{i}.jpg") for i in range(6)], config=cfg(per_host_concurrency=2, concurrency=8))
    assert srv.max_inflight == 2
    run([srv.url(f"/paced/{i}.jpg") for i in range(4)], config=cfg(per_host_min_delay_s=0.2))
    starts = srv.starts("/paced/")
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.19


# ------------------------------------------------------------------------------------------ worker processes


class DyingStore:
    """Kills its worker process on the first write (a segfault stand-in)."""

    def exists(self, sha: str) -> bool:
        return False

    def put(self, sha: str, data: bytes) -> None:
        os._exit(3)


def test_worker_processes_shard_hosts_and_survive_a_dead_worker(srv: ScriptedServer, tmp_path: Path) -> None:
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    srv.route("/b.png", Resp(body=PNG, content_type="image/png"))
    urls = [srv.url("/a.jpg"), srv.url("/b.png"), srv.url("/a.jpg", host="localhost"), srv.url("/nope")]
    conf = cfg(processes=2, allow_networks=["127.0.0.1/32", "::1/128"])
    store = LocalImageStore(tmp_path / "mp")
    res = run(urls, store, conf)
    assert [res[u].ok for u in urls] == [True, True, True, False]
    assert store.get(hashlib.sha256(PNG).hexdigest()) == PNG  # written by a worker process
    dead = run([srv.url("/a.jpg")], DyingStore(), conf)[srv.url("/a.jpg")]
    assert dead.reason == R.INTERNAL_ERROR and "died again when it was fetched alone (exit code 3)" in dead.error


class SegfaultingStore(LocalImageStore):
    """A real store whose worker process dies of a real SIGSEGV when it is asked to write one given image (a crash in
    a decoder stand-in: the process dies between download and answer, holding every URL its shard had queued)."""

    def __init__(self, root: Path, poison_sha: str) -> None:
        super().__init__(root)
        self.poison_sha = poison_sha

    def __reduce__(self):  # noqa: ANN204 - travels to the worker processes as itself, not as a LocalImageStore
        return (SegfaultingStore, (str(self.root), self.poison_sha))

    def put(self, sha: str, data: bytes) -> None:
        if sha == self.poison_sha:  # delivered to this thread at once, as a fault in a decoder would be
            import signal
            import threading

            signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
        super().put(sha, data)


def test_a_segfaulting_worker_costs_only_the_url_that_kills_it(srv: ScriptedServer, tmp_path: Path) -> None:
    """The PNG kills its worker while the same shard's JPEGs are downloading or queued. Before: every URL the dead
    worker held came back `connection_error` (images never fetched). Now the JPEGs are fetched again, one at a
    time, by an isolation worker; the PNG, which kills that worker too, alone is `internal_error` (both of its
    occurrences); the other shard is untouched."""
    jpegs = [_img("JPEG", seed=10 + i) for i in range(6)]
    for i, body in enumerate(jpegs):
        srv.route(f"/slow/{i}.jpg", Resp(body=body, content_type="image/jpeg", delay_s=0.3))
    srv.route("/poison.png", Resp(body=PNG, content_type="image/png"))
    srv.route("/other.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    poison = srv.url("/poison.png")
    same_host = [srv.url(f"/slow/{i}.jpg") for i in range(6)]
    other = srv.url("/other.jpg", host="localhost")
    urls = [poison, *same_host, poison, other]
    store = SegfaultingStore(tmp_path / "store", hashlib.sha256(PNG).hexdigest())
    results = list(fetch_images(urls, store, cfg(processes=2, per_host_concurrency=2,
                                                 allow_networks=["127.0.0.1/32", "::1/128"])))
    assert sorted(r.url for r in results) == sorted(urls)
    by_url: dict[str, list[FetchResult]] = {}
    for r in results:
        by_url.setdefault(r.url, []).append(r)
    assert [(r.status, r.reason) for r in by_url[poison]] == [("error", R.INTERNAL_ERROR)] * 2
    assert f"exit code {-11}" in by_url[poison][0].error
    assert all(by_url[u][0].ok for u in [*same_host, other]), [by_url[u][0] for u in same_host]
    for body in [*jpegs, JPEG]:
        assert store.get(hashlib.sha256(body).hexdigest()) == body
    assert not store.exists(hashlib.sha256(PNG).hexdigest())


def test_closing_the_generator_early_stops_the_work(srv: ScriptedServer) -> None:
    for i in range(30):
        srv.route(f"/s/{i}.jpg", Resp(body=JPEG, content_type="image/jpeg", delay_s=0.2))
    gen = fetch_images([srv.url(f"/s/{i}.jpg") for i in range(30)], None, cfg(per_host_concurrency=2))
    first = next(gen)
    assert first.ok
    t0 = time.monotonic()
    gen.close()
    assert time.monotonic() - t0 < 2.0
    settled = srv.count()
    time.sleep(0.5)
    assert srv.count() == settled < 31  # no request after the close


def test_worker_processes_write_to_s3(srv: ScriptedServer, local_s3) -> None:
    """The S3 store travels to spawned worker processes (client rebuilt there) and receives the images."""
    from danqing_assets.lib.image_store import S3ImageStore

    client = local_s3[1]()
    client.create_bucket(Bucket="imgs")
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    srv.route("/b.png", Resp(body=PNG, content_type="image/png"))
    store = S3ImageStore(client, "imgs", "raw")
    res = run(
        [srv.url("/a.jpg"), srv.url("/b.png", host="localhost")],
        store,
        cfg(processes=2, allow_networks=["127.0.0.0/8", "::1/128"]),
    )
    for r in res.values():
        assert r.ok and store.get(r.image_sha256) in (JPEG, PNG)


def _make_ca_and_leaf(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1, written as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "danqing test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_pem, cert_pem, key_pem


def test_https_is_pinned_and_verified_against_the_host_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    ca, cert, key = _make_ca_and_leaf(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    connects = _record_connects(monkeypatch)
    with ScriptedServer(tls=server_ctx) as tls_srv:
        tls_srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
        tls_srv.route("/r", Resp(status=302, headers={"Location": "/a.jpg"}))
        by_name = tls_srv.url("/a.jpg", host="localhost")
        conf = cfg(allow_networks=["127.0.0.1/32", "::1/128"], ca_bundle=str(ca))
        res = run([by_name, tls_srv.url("/r", host="localhost")], config=conf)
        assert all(r.ok for r in res.values()), res
        assert set(connects) <= {"127.0.0.1", "::1"}  # connected to the checked IP, verified as "localhost"
        # without our CA the certificate is refused, and that is not retried
        bad = run([by_name], config=cfg(allow_networks=["127.0.0.1/32", "::1/128"]))[by_name]
        assert bad.reason == R.CONNECTION_ERROR and "certificate" in bad.error.lower() and bad.attempts == 1
        bad = run([by_name], config=cfg(allow_networks=["127.0.0.1/32", "::1/128"], respect_robots=False))[by_name]
        assert bad.reason == R.CONNECTION_ERROR and "certificate" in bad.error.lower() and bad.attempts == 1
        assert run([by_name], config=cfg(allow_networks=["127.0.0.1/32", "::1/128"], verify_tls=False))[by_name].ok
