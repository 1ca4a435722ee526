"""Domain blacklist: a host matches a listed domain when it equals it or is one of its subdomains."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_BLACKLIST = "domain_blacklist.txt"


def load_domain_list(path: str | Path | None = None) -> frozenset[str]:
    """Domains from a text file (one per line, `#` comments); None loads the shipped default list."""
    if path is None:
        text = resources.files("danqing_assets.data").joinpath(DEFAULT_BLACKLIST).read_text(encoding="utf-8")
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"domain blacklist {str(p)!r} does not exist")
        text = p.read_text(encoding="utf-8")
    out = set()
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip().lower().strip(".")
        if entry:
            out.add(entry.encode("idna").decode("ascii") if not entry.isascii() else entry)
    return frozenset(out)


def blacklist_match(host: str | None, blacklist: frozenset[str]) -> str | None:
    """The listed domain that `host` falls under, or None. Walks the host's suffixes: O(labels), not O(list)."""
    if not host:
        return None
    labels = host.lower().strip(".").split(".")
    for i in range(len(labels)):
        candidate = ".".join(labels[i:])
        if candidate in blacklist:
            return candidate
    return None
