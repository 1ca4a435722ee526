"""fetch.netsafety: the address classification table, IPv6 transition forms, allowlists and the resolve-once contract."""

from __future__ import annotations

import socket

import pytest

from danqing_assets.lib.fetch.netsafety import (
    AddressPolicy,
    BlockedAddressError,
    DNSResolutionError,
    blocked_reason,
    is_public_address,
)

BLOCKED = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "127.5.6.7",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",
    "::",
    "fe80::1",  # link-local
    "fc00::1",  # ULA
    "fd12:3456::1",
    "fec0::1",  # site-local
    "ff02::1",  # multicast
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:db8::1",  # documentation
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",
    "100.128.0.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize("ip", BLOCKED)
def test_non_public_addresses_are_blocked(ip: str) -> None:
    assert blocked_reason(ip) is not None
    assert not is_public_address(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    assert blocked_reason(ip) is None


def _fake_resolver(table: dict[str, list[str]], calls: list[str]):
    def resolve(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - getaddrinfo's signature
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for ip in table[host]:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            out.append((fam, socket.SOCK_STREAM, 6, "", (ip, port) if fam == socket.AF_INET else (ip, port, 0, 0)))
        return out

    return resolve


def test_resolve_checks_every_address_and_caches() -> None:
    calls: list[str] = []
    pol = AddressPolicy(
        resolver=_fake_resolver(
            {
                "good.test": ["93.184.216.34"],
                "evil.test": ["93.184.216.34", "10.0.0.1"],
                "meta.test": ["169.254.169.254"],
            },
            calls,
        )
    )
    assert pol.resolve("good.test", 80) == ["93.184.216.34"]
    assert pol.resolve("good.test", 80) == ["93.184.216.34"]
    assert calls.count("good.test") == 1  # pinned for the TTL: no second lookup (no rebinding window)
    with pytest.raises(BlockedAddressError, match="10.0.0.1"):
        pol.resolve("evil.test", 80)  # one private record taints the host
    with pytest.raises(BlockedAddressError, match="link-local"):
        pol.resolve("meta.test", 80)
    with pytest.raises(DNSResolutionError) as exc:
        pol.resolve("missing.test", 80)
    assert not exc.value.transient


def test_numeric_host_spellings_are_checked_after_resolution() -> None:
    pol = AddressPolicy()
    for host in ("2852039166", "0xa9.0xfe.0xa9.0xfe", "127.1", "0177.0.0.1"):  # real getaddrinfo, no network needed
        with pytest.raises(BlockedAddressError):
            pol.resolve(host, 80)


def test_allowlists() -> None:
    calls: list[str] = []
    res = _fake_resolver({"intranet.example": ["10.1.2.3"], "cdn.corp.example": ["192.168.0.9"]}, calls)
    pol = AddressPolicy(allow_networks=["127.0.0.1/32", "10.1.0.0/16"], allow_hosts=[".corp.example"], resolver=res)
    assert pol.check_ip("127.0.0.1") is None
    assert pol.check_ip("::ffff:127.0.0.1") is None  # mapped form of an allowed address
    assert pol.check_ip("127.0.0.2") is not None
    assert pol.check_ip("10.2.0.1") is not None
    assert pol.resolve("intranet.example", 80) == ["10.1.2.3"]
    assert pol.resolve("cdn.corp.example", 443) == ["192.168.0.9"]
    assert pol.host_allowed("corp.example") and not pol.host_allowed("evilcorp.example")


def test_policy_pickles_without_its_cache() -> None:
    import pickle

    pol = AddressPolicy(allow_networks=["127.0.0.1/32"])
    pol.resolve("127.0.0.1", 80)
    clone = pickle.loads(pickle.dumps(pol))
    assert clone.check_ip("127.0.0.1") is None and clone._cache == {}
