"""`FetchConfig`: every knob of the image fetcher, with its default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from danqing_assets.lib.fetch.decode import DEFAULT_MAX_PIXELS

DEFAULT_USER_AGENT = "danqing-assets/0.1 (+https://github.com/danqing-assets; image-text research crawler)"


@dataclass
class FetchConfig:
    """Every knob of the fetcher, with its default. Picklable (it travels to worker processes).

    concurrency: total simultaneous requests over all processes.
    processes: worker processes (URLs sharded by host); None = os.cpu_count() capped at 8; 1 = threads in the
      calling process (needed when a test monkeypatches `socket.getaddrinfo`).
    per_host_concurrency / per_host_min_delay_s: politeness per host name (min delay is between request starts).
    connect_timeout_s / read_timeout_s: per socket operation; total_timeout_s: the whole fetch of one URL, from its
      first attempt to its result: connect, TLS handshake, status line and headers, body, redirect hops, every retry
      and every wait before one (a retry that would start after it is not made: the URL fails with its last reason).
      Enforced on every socket read, so a server sending one byte at a time cannot stretch it.
    retries: extra attempts after the first for connection errors, 429 and 5xx (and timeouts when retry_timeouts).
    backoff_base_s / backoff_max_s: delay before retry n is min(max, base * 2**(n-1)), with 50-100 % jitter.
    retry_after_max_s: a Retry-After longer than this is not waited for: the URL fails as rate_limited at once.
    max_redirects: hops followed; one more is too_many_redirects.
    max_bytes: body size cap (Content-Length checked before reading; streamed bodies cut off).
    max_pixels: decompression-bomb cap from the image header (None: only Pillow's own limit).
    decode_check: decode the first frame to catch truncated / corrupt images (False: header only).
    respect_robots / respect_optout / honour_crawl_delay: the opt-out checks; max_crawl_delay_s caps Crawl-delay.
      Images from `warc_lookup` get only the X-Robots-Tag check (on the captured headers), not robots.txt.
    allow_networks / allow_hosts: exceptions to the address guard (CIDRs; host names, ".suffix" for subdomains).
    verify_tls / ca_bundle: certificate checks for https (ca_bundle: a PEM file used instead of the system CAs).
    progress_every: call `progress` every this many results (and at the end).
    max_in_flight: URLs handed to workers and not yet answered (the scheduling window).
    mp_start_method: multiprocessing start method for worker processes ("spawn" is safe in threaded parents).
    """

    concurrency: int = 64
    processes: int | None = None
    per_host_concurrency: int = 8
    per_host_min_delay_s: float = 0.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0
    retries: int = 3
    retry_timeouts: bool = False
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0
    max_redirects: int = 5
    max_bytes: int = 20 * 2**20
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    decode_check: bool = True
    user_agent: str = DEFAULT_USER_AGENT
    respect_robots: bool = True
    respect_optout: bool = True
    honour_crawl_delay: bool = True
    max_crawl_delay_s: float = 10.0
    allow_networks: list[str] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)
    verify_tls: bool = True
    ca_bundle: str | None = None
    dns_cache_ttl_s: float = 300.0
    progress_every: int = 1000
    max_in_flight: int = 20_000
    mp_start_method: str = "spawn"

    def n_processes(self) -> int:
        if self.processes is None:
            return max(1, min(os.cpu_count() or 1, 8))
        return max(1, int(self.processes))
