"""Outbound address safety for the image fetcher (SSRF guard).

Image URLs come from arbitrary web pages, so a URL may point at the crawler's own network: `http://10.0.0.1/`,
`http://169.254.169.254/latest/meta-data/` (cloud metadata), `http://localhost:6379/`, a host name whose DNS record is
private, or a public URL that redirects to one of those. `AddressPolicy.resolve` resolves a host once, refuses it when
*any* of its addresses is not a public unicast address (unless an explicit allowlist permits it) and returns the checked
addresses; the fetcher then connects to exactly those IPs (never resolving the name again), so a DNS answer that changes
between check and connect (DNS rebinding) cannot slip through. Redirect targets go through the same check.

Blocked: private (10/8, 172.16/12, 192.168/16), loopback, link-local (169.254/16 incl. metadata, fe80::/10),
multicast, reserved (240/4, ...), unspecified (0.0.0.0, ::), CGNAT 100.64/10, documentation and benchmark ranges,
IPv6 unique-local fc00::/7 and site-local, and the IPv4 address embedded in IPv4-mapped (::ffff:a.b.c.d), NAT64
(64:ff9b::/96), 6to4 (2002::/16) and Teredo forms. Numeric host spellings (`http://2852039166/`, `http://0x7f.1/`)
are caught because the check runs on what the resolver returns, not on the text of the URL.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class BlockedAddressError(Exception):
    """The host resolves to an address the policy refuses."""


class DNSResolutionError(Exception):
    """The host name could not be resolved. `transient` is True for temporary resolver failures (EAI_AGAIN)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client address; the server address is public by construction
    return None


def blocked_reason(ip: IPAddress | str) -> str | None:
    """Why `ip` is not a public unicast address (e.g. "private", "loopback"), or None when it is fine to contact."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = blocked_reason(inner)
            return f"embedded IPv4 {inner} is {why}" if why else None
        if ip.is_site_local:
            return "site-local"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return name
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared address space (CGNAT)"
    if not ip.is_global:
        return "not globally routable"
    return None


def is_public_address(ip: IPAddress | str) -> bool:
    """True for a public unicast address that a crawler may contact."""
    return blocked_reason(ip) is None


Resolver = Callable[..., list]


@dataclass
class AddressPolicy:
    """Which destinations the fetcher may contact.

    allow_networks: CIDRs (or single addresses) that are allowed although not public, e.g. ["127.0.0.1/32"] in tests.
    allow_hosts: host names that skip the address check entirely ("example.org" matches that name only,
      ".example.org" matches every subdomain too). Use sparingly: the check is the SSRF guard.
    dns_cache_ttl_s: how long a checked resolution is reused (also the pin lifetime); 0 disables the cache.
    resolver: the getaddrinfo-compatible function to use; None means `socket.getaddrinfo`, looked up at call time.
    """

    allow_networks: Iterable[str] = ()
    allow_hosts: Iterable[str] = ()
    dns_cache_ttl_s: float = 300.0
    resolver: Resolver | None = None
    _nets: list = field(init=False, repr=False)
    _exact: frozenset = field(init=False, repr=False)
    _suffixes: tuple = field(init=False, repr=False)
    _cache: dict = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._nets = [ipaddress.ip_network(n.strip(), strict=False) for n in self.allow_networks]
        hosts = [h.strip().lower().rstrip(".") for h in self.allow_hosts if h.strip()]
        self._exact = frozenset(h for h in hosts if not h.startswith("."))
        self._suffixes = tuple(h for h in hosts if h.startswith("."))
        self._cache = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {
            "allow_networks": list(self.allow_networks),
            "allow_hosts": list(self.allow_hosts),
            "dns_cache_ttl_s": self.dns_cache_ttl_s,
            "resolver": self.resolver,
        }

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self.__post_init__()

    def host_allowed(self, host: str) -> bool:
        h = host.lower().rstrip(".")
        return h in self._exact or any(h.endswith(s) or h == s[1:] for s in self._suffixes)

    def check_ip(self, ip: IPAddress | str) -> str | None:
        """None when `ip` may be contacted under this policy, else why not."""
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip.split("%", 1)[0])
        why = blocked_reason(ip)
        if why is None:
            return None
        probe = ip
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            probe = ip.ipv4_mapped
        for net in self._nets:
            if probe.version == net.version and probe in net:
                return None
        return why

    def resolve(self, host: str, port: int) -> list[str]:
        """Resolve `host` once and return its addresses, all checked; raise BlockedAddressError or DNSResolutionError.

        The caller must connect to one of the returned IPs, not to the name.
        """
        key = (host.lower(), port)
        now = time.monotonic()
        if self.dns_cache_ttl_s > 0:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                if isinstance(hit[1], Exception):
                    raise hit[1]
                return hit[1]
        try:
            ips = self._resolve_uncached(host, port)
        except BlockedAddressError as exc:
            self._store(key, now, exc)
            raise
        except DNSResolutionError as exc:
            if not exc.transient:
                self._store(key, now, exc, ttl=min(self.dns_cache_ttl_s, 60.0))
            raise
        self._store(key, now, ips)
        return ips

    def _store(self, key: tuple, now: float, value: object, ttl: float | None = None) -> None:
        ttl = self.dns_cache_ttl_s if ttl is None else ttl
        if ttl > 0:
            with self._lock:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[key] = (now + ttl, value)

    def _resolve_uncached(self, host: str, port: int) -> list[str]:
        resolver = self.resolver or socket.getaddrinfo
        try:
            infos = resolver(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise DNSResolutionError(
                f"cannot resolve {host!r}: {exc}", transient=exc.errno == socket.EAI_AGAIN
            ) from None
        except (UnicodeError, ValueError, OSError) as exc:
            raise DNSResolutionError(f"cannot resolve {host!r}: {exc}") from None
        ips: list[str] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = sockaddr[0]
            if ip not in ips:
                ips.append(ip)
        if not ips:
            raise DNSResolutionError(f"no IPv4/IPv6 address for {host!r}")
        if self.host_allowed(host):
            return ips
        for ip in ips:
            why = self.check_ip(ip)
            if why is not None:
                raise BlockedAddressError(f"{host} resolves to {ip} ({why})")
        return ips
