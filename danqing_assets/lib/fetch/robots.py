"""robots.txt and X-Robots-Tag opt-outs for the image fetcher.

robots.txt (RFC 9309), parsed and matched by `protego` for our User-Agent product token:
- the group for our token is chosen by product-token match, case-insensitively and at a token boundary (a group
  `User-agent: assets` is not ours; `danqing-assets` is), else the `*` group; groups naming the same agent are merged;
- within the group the longest matching path wins (an `Allow` on a tie), and `*` / `$` wildcards work;
- at most the first `MAX_ROBOTS_BYTES` (500 KiB, RFC 9309 section 2.5) are parsed, cut at the last line end before
  that limit so that no rule is read half;
- fetched once per origin (scheme, host, port) and cached for the run (`RobotsCache`); redirects are followed (five
  at most, section 2.3.1.2);
- 2xx: the rules apply; 4xx other than 429 ("unavailable"): everything is allowed;
- 5xx, 429, a network error or a timeout ("unreachable"): everything is disallowed for the run, as RFC 9309 section
  2.3.1.4 requires. Such rejects carry the `ROBOTS_UNREACHABLE` text in their detail, so a resumed run can retry them;
  when the cause was the network (timeout, refused connection, DNS), the reject carries that network reason instead of
  `robots_disallowed`, so dead hosts are not counted as opt-outs.
- `Crawl-delay` of the chosen group (fractions of a second kept) is reported so the fetcher can space requests to that
  host (not part of RFC 9309; a common extension).

X-Robots-Tag: `noai` / `noimageai` opt the resource out of AI training, either bare (`X-Robots-Tag: noai`) or
addressed to our crawler (`X-Robots-Tag: danqing-assets: noai`); directives addressed to other crawlers are ignored.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protego import Protego

from danqing_assets.lib.reasons import ROBOTS_DISALLOWED

ROBOTS_UNREACHABLE = "robots.txt unreachable"
ROBOTS_DISALLOWED_DETAIL = "disallowed by robots.txt"

#: X-Robots-Tag directives that opt a resource out of AI / image-AI training.
OPTOUT_DIRECTIVES: frozenset[str] = frozenset({"noai", "noimageai"})

#: How much of a robots.txt is read and parsed (RFC 9309 section 2.5: a parsing limit of at least 500 KiB).
MAX_ROBOTS_BYTES = 500 * 1024


def user_agent_token(user_agent: str) -> str:
    """The product token robots.txt groups are matched against: "danqing-assets/0.1 (+...)" -> "danqing-assets"."""
    return user_agent.strip().split("/", 1)[0].split(" ", 1)[0].lower() or "*"


@dataclass(frozen=True)
class RobotsRules:
    """The outcome of one robots.txt fetch: a parser, or a blanket allow / disallow with its cause."""

    parser: Protego | None
    allow_all: bool
    detail: str = ""  # why the blanket decision was taken, e.g. "robots.txt unreachable (HTTP 503)"
    reason: str = ROBOTS_DISALLOWED  # the FETCH reason of a blanket disallow (a network reason when that was the cause)

    def can_fetch(self, token: str, url: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return self.parser.can_fetch(url, token)

    def crawl_delay(self, token: str) -> float | None:
        if self.parser is None:
            return None
        try:
            d = self.parser.crawl_delay(token)
        except (ValueError, TypeError):
            return None
        return float(d) if d is not None else None


def parse_robots(body: bytes) -> RobotsRules:
    """Rules from a robots.txt body: UTF-8 (invalid bytes replaced), at most MAX_ROBOTS_BYTES of it, cut at the last
    line end within that limit when the body is longer (the rest is ignored, as RFC 9309 section 2.5 allows)."""
    if len(body) > MAX_ROBOTS_BYTES:
        body = body[:MAX_ROBOTS_BYTES]
        cut = max(body.rfind(b"\n"), body.rfind(b"\r"))
        body = body[: cut + 1] if cut >= 0 else b""
    text = body.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    return RobotsRules(parser=Protego.parse(text), allow_all=True)


def rules_from_response(
    status: int | None, body: bytes | None, error: str = "", *, reason: str = ROBOTS_DISALLOWED
) -> RobotsRules:
    """Apply RFC 9309's status handling. `status` None means the fetch failed (network error, timeout); `reason` is
    then the FETCH reason to report for the host's URLs."""
    if status is None:
        return RobotsRules(
            None, allow_all=False, detail=f"{ROBOTS_UNREACHABLE} ({error or 'network error'})", reason=reason
        )
    if 200 <= status < 300:
        return parse_robots(body or b"")
    if status == 429 or status >= 500:
        return RobotsRules(None, allow_all=False, detail=f"{ROBOTS_UNREACHABLE} (HTTP {status})")
    if 400 <= status < 500:
        return RobotsRules(None, allow_all=True, detail=f"robots.txt unavailable (HTTP {status}): allow all")
    # 1xx / unexpected 3xx left after following redirects: treat as unreachable.
    return RobotsRules(None, allow_all=False, detail=f"{ROBOTS_UNREACHABLE} (HTTP {status})")


RobotsFetcher = Callable[[str, str, int], RobotsRules]


class RobotsCache:
    """robots.txt per origin, fetched at most once per run even when many threads ask at the same time.

    `fetch(scheme, host, port) -> RobotsRules` does the network work (the fetcher supplies it, so robots.txt goes
    through the same address checks, pinning, timeouts and User-Agent as image requests).
    """

    def __init__(self, fetch: RobotsFetcher, token: str, *, max_entries: int = 200_000) -> None:
        self._fetch = fetch
        self.token = token
        self._rules: dict[tuple[str, str, int], RobotsRules] = {}
        self._pending: dict[tuple[str, str, int], threading.Event] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self.fetches = 0  # robots.txt fetches made (for tests and metrics)

    def rules(self, scheme: str, host: str, port: int) -> RobotsRules:
        key = (scheme, host.lower(), port)
        while True:
            with self._lock:
                got = self._rules.get(key)
                if got is not None:
                    return got
                event = self._pending.get(key)
                if event is None:
                    event = self._pending[key] = threading.Event()
                    owner = True
                    self.fetches += 1
                else:
                    owner = False
            if not owner:
                event.wait()
                continue
            try:
                try:
                    got = self._fetch(scheme, host, port)
                except Exception as exc:  # the fetch callable should not raise; fail closed if it does
                    got = RobotsRules(None, allow_all=False, detail=f"{ROBOTS_UNREACHABLE} ({type(exc).__name__})")
                with self._lock:
                    if len(self._rules) >= self._max:
                        self._rules.clear()
                    self._rules[key] = got
                return got
            finally:
                with self._lock:
                    self._pending.pop(key, None)
                event.set()

    def check(self, scheme: str, host: str, port: int, url: str) -> tuple[bool, str, str, float | None]:
        """(allowed, reason, detail, crawl_delay_s) for `url` on that origin; reason and detail are "" when allowed."""
        r = self.rules(scheme, host, port)
        if r.parser is None:
            return (True, "", "", None) if r.allow_all else (False, r.reason, r.detail, None)
        if r.can_fetch(self.token, url):
            return True, "", "", r.crawl_delay(self.token)
        return False, ROBOTS_DISALLOWED, ROBOTS_DISALLOWED_DETAIL, r.crawl_delay(self.token)


_UA_PREFIX = re.compile(r"^\s*([A-Za-z0-9_.*-]+)\s*:\s*(.*)$")
# Directives written as "name: value" that must not be mistaken for a user-agent prefix.
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def x_robots_optout(values: Iterable[str], token: str, directives: frozenset[str] = OPTOUT_DIRECTIVES) -> bool:
    """True when any X-Robots-Tag header value opts the resource out for crawler `token`.

    Each header value is either a comma-separated directive list applying to every crawler, or
    "<agent>: <directives>" applying to that agent only (agent compared case-insensitively; "*" means all).
    """
    token = token.lower()
    for raw in values:
        for part in _split_agent_groups(raw):
            agent, dirs = part
            if agent is not None and agent not in (token, "*"):
                continue
            if any(d in directives for d in dirs):
                return True
    return False


def _split_agent_groups(value: str) -> list[tuple[str | None, list[str]]]:
    """Split one header value into (agent or None, [directives]) groups.

    "googlebot: noindex, otherbot: noai" -> [("googlebot", ["noindex"]), ("otherbot", ["noai"])].
    """
    groups: list[tuple[str | None, list[str]]] = [(None, [])]
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        m = _UA_PREFIX.match(item)
        if m and m.group(1).lower() not in _VALUED_DIRECTIVES:
            groups.append((m.group(1).lower(), []))
            item = m.group(2).strip()
            if not item:
                continue
        groups[-1][1].append(item.lower())
    return groups
