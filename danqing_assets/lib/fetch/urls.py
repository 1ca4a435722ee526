"""URLs: parse and normalise an http(s) URL (`parse_url`), rebuild an origin URL, and the stable host -> shard map."""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple
from urllib.parse import quote, urlsplit

class _InvalidURL(ValueError):
    pass


class _URL(NamedTuple):
    scheme: str
    host: str  # ASCII (IDNA), lower case, no brackets
    port: int
    target: str  # path + query, percent-encoded


_SAFE_TARGET = "!#$%&'()*+,/:;=?@[]~"
_HOST_OK = re.compile(r"^[a-z0-9._\-]+$|^[0-9a-f:.]+$")


def parse_url(url: str) -> _URL:
    """Split and normalise an http(s) URL; raise ValueError for anything we will not fetch."""
    if not isinstance(url, str):
        raise _InvalidURL(f"not a string: {type(url).__name__}")
    url = url.strip()
    if not url or len(url) > 16_384:
        raise _InvalidURL("empty or over-long URL")
    try:
        sp = urlsplit(url)
        port = sp.port
    except ValueError as exc:
        raise _InvalidURL(f"unparsable URL: {exc}") from None
    scheme = sp.scheme.lower()
    if scheme not in ("http", "https"):
        raise _InvalidURL(f"unsupported scheme {scheme!r}")
    host = sp.hostname
    if not host:
        raise _InvalidURL("no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise _InvalidURL(f"bad international host name: {exc}") from None
    host = host.lower().rstrip(".")
    if not host or not _HOST_OK.match(host):
        raise _InvalidURL(f"bad host {host!r}")
    if port == 0:
        raise _InvalidURL("port 0")
    port = port or (443 if scheme == "https" else 80)
    target = quote(sp.path or "/", safe=_SAFE_TARGET)
    if sp.query:
        target += "?" + quote(sp.query, safe=_SAFE_TARGET)
    if not target.startswith("/"):
        target = "/" + target
    return _URL(scheme, host, port, target)


def _origin_url(scheme: str, host: str, port: int, path: str) -> str:
    h = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{h}{'' if port == default else f':{port}'}{path}"


def shard_of(host: str, n: int) -> int:
    """Stable worker index for a host name (crc32, not Python's salted hash)."""
    return zlib.crc32(host.encode()) % n if n > 1 else 0
