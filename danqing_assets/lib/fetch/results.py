"""`FetchResult` (one per input URL), the transient failure reasons, `resume_lookup` for a resumed run, and
`CapturedImage` (what a `warc_lookup` answers when it knows the captured response's headers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from danqing_assets.lib import reasons as R
from danqing_assets.lib.fetch.robots import ROBOTS_UNREACHABLE

#: Failure reasons worth another try in a later run (`resume_lookup`'s default).
TRANSIENT_REASONS: frozenset[str] = frozenset(
    {R.DNS_ERROR, R.CONNECTION_ERROR, R.TIMEOUT, R.HTTP_SERVER_ERROR, R.RATE_LIMITED, R.INTERNAL_ERROR}
)

SOURCE_NETWORK = "network"
SOURCE_WARC = "warc"


class CapturedImage(bytes):
    """Image bytes that a crawl captured, with the `X-Robots-Tag` values of the captured response.

    It is bytes, so every consumer of captured bytes keeps working; `fetch_images` also reads `x_robots_tag` and
    refuses the image as `optout_header` when one of them opts it out (`noai` / `noimageai`, bare or addressed to our
    token), as it would for the same header on a live response. A plain `bytes` from a `warc_lookup` means "no header
    known".
    """

    x_robots_tag: tuple[str, ...]

    def __new__(cls, body: bytes, *, x_robots_tag: tuple[str, ...] | list[str] = ()) -> CapturedImage:
        obj = super().__new__(cls, body)
        obj.x_robots_tag = tuple(x_robots_tag)
        return obj

    def __repr__(self) -> str:
        return f"CapturedImage({len(self)} bytes, x_robots_tag={self.x_robots_tag!r})"


@dataclass(slots=True)
class FetchResult:
    """The outcome for one URL. `status` is "ok" or "error"; `reason` is a FETCH reason from `reasons.py` or None."""

    url: str
    status: str
    reason: str | None = None
    error: str = ""
    http_status: int | None = None
    image_sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    bytes: int | None = None
    elapsed_ms: float = 0.0  # first attempt start to outcome, retry waits included
    attempts: int = 0  # network attempts (0 for WARC-served or invalid URLs)
    final_url: str | None = None  # after redirects
    source: str = SOURCE_NETWORK  # "network" | "warc"
    content_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> FetchResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def resume_lookup(
    previous: Iterable[FetchResult | Mapping[str, Any]],
    *,
    retry_reasons: Iterable[str] = TRANSIENT_REASONS,
    retry_robots_unreachable: bool = True,
) -> Callable[[str], FetchResult | None]:
    """A `skip_existing` callable for `fetch_images` from an earlier run's results.

    Successes and permanent failures are returned as they were (no request); URLs that failed for one of
    `retry_reasons` (and, when `retry_robots_unreachable`, robots rejects caused by an unreachable robots.txt) answer
    None, so only they are fetched again.
    """
    retry = frozenset(retry_reasons)
    known: dict[str, FetchResult] = {}
    for item in previous:
        r = item if isinstance(item, FetchResult) else FetchResult.from_dict(item)
        if r.status != "ok":
            if r.reason in retry:
                continue
            if retry_robots_unreachable and r.reason == R.ROBOTS_DISALLOWED and ROBOTS_UNREACHABLE in (r.error or ""):
                continue
        known[r.url] = r
    return known.get
