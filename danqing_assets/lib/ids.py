"""Stable identifiers.

`pair_id` is derived from the WARC-Record-ID of the page's response record and the position of the `<img>` element in
the page (0-based, counting every `<img>` element in document order, including ones that yield no pair). Record IDs are
globally unique UUID URNs, so the id is stable across re-runs, machines and file moves, and distinct for the same image
and caption on two pages.
"""

from __future__ import annotations

import hashlib


def pair_id(warc_record_id: str, img_index: int) -> str:
    """16 hex characters identifying one image-text pair."""
    key = f"{warc_record_id.strip()}#{img_index}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
