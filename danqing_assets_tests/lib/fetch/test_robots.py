"""robots.txt as RFC 9309 reads it: longest match, wildcards, merged groups, product-token matching, fractional
Crawl-delay, the 500 KiB parsing limit, and the status / network rules for an unreachable file. Each rule is checked
on the parser and, for the ones that decide what is fetched, end to end against a real server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from danqing_assets.lib import reasons as R
from danqing_assets.lib.fetch.robots import MAX_ROBOTS_BYTES, ROBOTS_UNREACHABLE, parse_robots, user_agent_token
from danqing_assets_tests.httpserver import Resp, ScriptedServer

from .test_fetch import DEFAULT_USER_AGENT, JPEG, cfg, run

TOKEN = user_agent_token(DEFAULT_USER_AGENT)
SITE = "https://example.com"


def allowed(robots: bytes | str, path: str) -> bool:
    body = robots.encode() if isinstance(robots, str) else robots
    return parse_robots(body).can_fetch(TOKEN, SITE + path)


@pytest.fixture
def srv():
    with ScriptedServer() as s:
        yield s


def test_our_token_is_the_product_name() -> None:
    assert TOKEN == "danqing-assets"


def test_the_longest_match_wins_not_the_first() -> None:
    robots = "User-agent: *\nAllow: /\nDisallow: /private/\n"
    assert not allowed(robots, "/private/a.jpg")
    assert allowed(robots, "/public/a.jpg")
    # and the other way round: a longer Allow inside a Disallow
    robots = "User-agent: *\nDisallow: /img/\nAllow: /img/ok/\n"
    assert allowed(robots, "/img/ok/a.jpg") and not allowed(robots, "/img/no/a.jpg")
    # equal length: the least restrictive rule (Allow) wins
    assert allowed("User-agent: *\nDisallow: /a\nAllow: /a\n", "/a")


def test_star_and_dollar_wildcards() -> None:
    robots = "User-agent: *\nDisallow: /*.png$\nDisallow: /tmp*/secret\n"
    assert not allowed(robots, "/a/b.png")
    assert allowed(robots, "/a/b.png?size=2")  # `$` anchors the end of the URL path and query
    assert allowed(robots, "/a/b.jpg")
    assert not allowed(robots, "/tmp-42/secret/x.jpg")
    assert allowed(robots, "/tmp-42/public/x.jpg")


def test_groups_for_the_same_agent_are_merged() -> None:
    robots = (
        "User-agent: danqing-assets\nDisallow: /a/\n\n"
        "User-agent: otherbot\nDisallow: /\n\n"
        "User-agent: danqing-assets\nDisallow: /b/\n"
    )
    assert not allowed(robots, "/a/x.jpg")
    assert not allowed(robots, "/b/x.jpg")
    assert allowed(robots, "/c/x.jpg")


def test_a_group_matches_our_product_token_only() -> None:
    # "assets" is a substring of our token, not our token: that group is someone else's
    assert allowed("User-agent: assets\nDisallow: /\n", "/x.jpg")
    assert allowed("User-agent: qing\nDisallow: /\n", "/x.jpg")
    # case does not matter; our own group replaces "*"
    robots = "User-agent: *\nDisallow: /private/\n\nUser-agent: DanQing-Assets\nDisallow: /nodq/\n"
    assert not allowed(robots, "/nodq/x.jpg") and allowed(robots, "/private/x.jpg")


def test_fractional_crawl_delay_is_kept() -> None:
    rules = parse_robots(b"User-agent: *\nCrawl-delay: 2.5\nDisallow: /x/\n")
    assert rules.crawl_delay(TOKEN) == 2.5
    assert parse_robots(b"User-agent: *\nCrawl-delay: soon\n").crawl_delay(TOKEN) is None


def test_only_the_first_500_kib_are_parsed_and_never_half_a_line() -> None:
    assert MAX_ROBOTS_BYTES == 500 * 1024
    head = b"User-agent: *\nDisallow: /\n"
    pad = b"# " + b"x" * 97 + b"\n"  # 100-byte comment lines
    body = head + pad * ((MAX_ROBOTS_BYTES - len(head)) // len(pad) - 1)  # 100 to 199 bytes short of the limit
    full = body + b"#" * (MAX_ROBOTS_BYTES - len(body) - 1) + b"\n"
    assert len(full) == MAX_ROBOTS_BYTES
    late = full + b"Allow: /late/\n" + pad * 20  # starts past the limit: ignored
    assert not allowed(late, "/late/a.jpg")
    # a line the limit cuts in two is dropped: "Allow: /" (everything!) must not be read out of "Allow: /public/"
    fill = MAX_ROBOTS_BYTES - len(body) - len(b"Allow: /")
    cut = body + b"#" * (fill - 1) + b"\nAllow: /public/\n" + pad * 20
    assert cut[:MAX_ROBOTS_BYTES].endswith(b"\nAllow: /")
    assert not allowed(cut, "/private/a.jpg")


# ---------------------------------------------------------------------------------------------------- end to end


def test_longest_match_and_wildcards_decide_what_is_fetched(srv: ScriptedServer) -> None:
    srv.route(
        "/robots.txt",
        Resp(
            body=b"User-agent: *\nAllow: /\nDisallow: /private/\nDisallow: /*.png$\n\n"
            b"User-agent: assets\nDisallow: /\n",
            content_type="text/plain",
        ),
    )
    paths = ("/private/a.jpg", "/pics/b.png", "/pics/c.jpg")
    for p in paths:
        srv.route(p, Resp(body=JPEG, content_type="image/jpeg"))
    res = run([srv.url(p) for p in paths])
    assert res[srv.url("/private/a.jpg")].reason == R.ROBOTS_DISALLOWED
    assert res[srv.url("/pics/b.png")].reason == R.ROBOTS_DISALLOWED
    assert res[srv.url("/pics/c.jpg")].ok
    assert srv.count("/private/a.jpg") == srv.count("/pics/b.png") == 0


def test_a_fractional_crawl_delay_spaces_requests(srv: ScriptedServer) -> None:
    srv.route("/robots.txt", Resp(body=b"User-agent: danqing-assets\nCrawl-delay: 0.4\n", content_type="text/plain"))
    for i in range(3):
        srv.route(f"/cd/{i}.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    res = run([srv.url(f"/cd/{i}.jpg") for i in range(3)], config=cfg(per_host_concurrency=8))
    assert all(r.ok for r in res.values())
    starts = srv.starts("/cd/")
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.39


def test_robots_txt_over_the_limit_is_read_up_to_it(srv: ScriptedServer) -> None:
    pad = b"# " + b"x" * 97 + b"\n"
    body = b"User-agent: *\nDisallow: /early/\n" + pad * 6000 + b"Disallow: /late/\n"  # ~600 KB
    srv.route("/robots.txt", Resp(body=body, content_type="text/plain"))
    for p in ("/early/a.jpg", "/late/a.jpg"):
        srv.route(p, Resp(body=JPEG, content_type="image/jpeg"))
    res = run([srv.url("/early/a.jpg"), srv.url("/late/a.jpg")])
    assert res[srv.url("/early/a.jpg")].reason == R.ROBOTS_DISALLOWED
    assert res[srv.url("/late/a.jpg")].ok  # past 500 KiB: not parsed


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_disallow_the_whole_host(srv: ScriptedServer, status: int) -> None:
    srv.route("/robots.txt", Resp(status=status))
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    r = run([srv.url("/a.jpg")])[srv.url("/a.jpg")]
    assert r.reason == R.ROBOTS_DISALLOWED and ROBOTS_UNREACHABLE in r.error
    assert srv.count("/a.jpg") == 0


def test_a_robots_txt_timeout_disallows_the_host_with_reason_timeout(srv: ScriptedServer) -> None:
    srv.route("/robots.txt", Resp(body=b"User-agent: *\nAllow: /\n", content_type="text/plain", delay_s=3.0))
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    t0 = time.monotonic()
    r = run([srv.url("/a.jpg")], config=cfg(total_timeout_s=1.0, read_timeout_s=5.0))[srv.url("/a.jpg")]
    assert r.reason == R.TIMEOUT and ROBOTS_UNREACHABLE in r.error, r
    assert srv.count("/a.jpg") == 0
    assert time.monotonic() - t0 < 2.5


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_client_errors_allow_everything(srv: ScriptedServer, status: int) -> None:
    srv.route("/robots.txt", Resp(status=status))
    srv.route("/a.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    assert run([srv.url("/a.jpg")])[srv.url("/a.jpg")].ok
