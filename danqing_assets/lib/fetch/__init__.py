"""Polite, safe, fast image downloader: URLs in, one `FetchResult` per URL out, images in a content-addressed store.

What it does for each URL (`fetch_images`):
1. `warc_lookup(url)` first: bytes already captured in the crawl's WARC are validated and stored with no request.
   The captured response's `X-Robots-Tag` (carried by a `CapturedImage`) is obeyed as in step 5; robots.txt is not
   fetched for captured images (the capture is the crawler's, made under the crawler's robots.txt check).
2. The host is resolved once and every address checked (`netsafety.AddressPolicy`): private, loopback, link-local,
   metadata, CGNAT, ... destinations are refused (`blocked_address`); the connection goes to the checked IP (pinned,
   so DNS rebinding cannot redirect it), with the original host name in `Host` / TLS SNI and certificate checks.
3. robots.txt of the origin is fetched once per run and obeyed for our User-Agent token as RFC 9309 says, parsed by
   `protego` (`robots_disallowed`); `Crawl-delay` raises the per-host delay (capped by `max_crawl_delay_s`).
4. GET with our User-Agent; redirects are followed by hand (at most `max_redirects`), each hop re-checked (address,
   robots). 429 and 5xx are retried with exponential backoff and jitter (`Retry-After` honoured, as seconds or HTTP
   date, and applied to the whole host); connection errors are retried; other 4xx are not. `total_timeout_s` bounds
   the whole fetch of a URL, however slowly a server sends: connect, TLS handshake, headers, body, every attempt and
   every wait before a retry (a retry that could not start in time is not made).
5. `X-Robots-Tag: noai` / `noimageai` (bare or addressed to our token) -> `optout_header`. The body is streamed with a
   size cap (`too_large`, early on Content-Length), must be an image by Content-Type or magic bytes (`not_an_image`),
   is validated by Pillow (`decompression_bomb`, `decode_error`), hashed (sha256) and stored once per distinct content.

Concurrency: URLs are sharded by host name over `processes` worker processes (so per-host limits are exact), each
running `concurrency / processes` threads over a host-aware scheduler (per-host concurrency and minimum delay between
request starts) with keep-alive connection pools built on `http.client`. Every input URL yields exactly one result, in
completion order; an unexpected exception becomes an error result (`connection_error` for the network phase or the
store, `decode_error` for decoding). A worker process that dies (a segfault in a decoder, the OOM killer) is
replaced, and the URLs it held are fetched again one at a time by an isolation worker: the URL that kills that worker
too is answered `internal_error` (transient: a resumed run tries it again), the others as if nothing had happened.

Resuming: pass `skip_existing=resume_lookup(previous_results)`; it keeps successes and permanent failures and returns
None (fetch again) for transient failures (timeouts, connection / DNS errors, 5xx, 429, robots.txt unreachable).
robots.txt is fetched once per origin and run: when the network fails on it, every URL of that origin fails in this run
with the network reason (timeout, connection_error, dns_error) and no request for the images themselves.

Limits: per-host concurrency and delay apply to the host of the URL as given, not to redirect targets; robots.txt of a
redirect target is cached per worker process, so a target reached from hosts of two shards may be fetched twice.

Modules: `config` (FetchConfig), `results` (FetchResult, resume_lookup), `urls` (parsing, host shards), `connections`
(pinned connections, keep-alive pool), `scheduler` (per-host limits, retry timers), `client` (one worker's requests,
retries and checks), `worker` (threads inside one worker), `parent` (fetch_images: sharding, back-pressure, progress),
and the checks they use: `netsafety` (address guard), `robots` (robots.txt, X-Robots-Tag), `decode` (Pillow validation).
"""

from __future__ import annotations

from danqing_assets.lib.fetch.client import parse_retry_after
from danqing_assets.lib.fetch.config import DEFAULT_USER_AGENT, FetchConfig
from danqing_assets.lib.fetch.parent import fetch_images
from danqing_assets.lib.fetch.results import CapturedImage, FetchResult, resume_lookup
from danqing_assets.lib.fetch.urls import parse_url

__all__ = [
    "CapturedImage",
    "DEFAULT_USER_AGENT",
    "FetchConfig",
    "FetchResult",
    "fetch_images",
    "parse_retry_after",
    "parse_url",
    "resume_lookup",
]
