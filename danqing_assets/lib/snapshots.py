"""Crawl snapshots: where a snapshot's WARC files are, and how to open them.

A snapshot is registered with a SOURCE, one of:

- a local directory: every `*.warc` / `*.warc.gz` below it (sorted by relative path);
- a `warc.paths.gz` (or plain `warc.paths`) listing, as a local file or an http(s) URL, whose relative paths are joined
  to a base URL (default `https://data.commoncrawl.org/`, as Common Crawl publishes them);
- `s3://bucket/prefix`: the WARC objects under the prefix, or, when the key ends in `warc.paths.gz`, that listing with
  its paths joined to `s3://<bucket>/` (Common Crawl: `s3://commoncrawl/crawl-data/CC-MAIN-YYYY-WW/warc.paths.gz`).

The registry is one small JSON file per snapshot under `$DANQING_HOME/snapshots/`, so registering never contends
with a running materialization.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable
from urllib.parse import urljoin, urlparse

from danqing_assets.lib.warehouse import validate_snapshot_name

COMMON_CRAWL_HTTPS = "https://data.commoncrawl.org/"
WARC_SUFFIXES = (".warc", ".warc.gz")


class SourceError(ValueError):
    """A snapshot source that cannot be used, with a message a user can act on."""


@dataclass(frozen=True)
class Snapshot:
    name: str
    source: str
    base_url: str | None = None
    added_at: float = 0.0


@dataclass(frozen=True)
class WarcRef:
    uri: str  # local absolute path, http(s) URL or s3:// URI
    name: str  # stable name recorded in rows: path relative to the source, or the listing's relative path
    bytes: int | None  # size when cheaply known


def source_kind(source: str) -> str:
    scheme = urlparse(source).scheme.lower()
    if scheme == "s3":
        return "s3"
    if scheme in ("http", "https"):
        if _is_listing(source):
            return "listing"
        raise SourceError(f"an http(s) source must be a warc.paths(.gz) listing, got {source!r}")
    path = Path(source).expanduser()
    if path.is_dir():
        return "directory"
    if path.is_file() and _is_listing(source):
        return "listing"
    if not path.exists():
        raise SourceError(f"source {source!r} does not exist (expected a directory, warc.paths.gz listing, or s3:// URI)")
    raise SourceError(f"source {source!r} is neither a directory nor a warc.paths(.gz) listing")


def _is_listing(source: str) -> bool:
    name = urlparse(source).path.rsplit("/", 1)[-1]
    return name.endswith((".paths", ".paths.gz", ".txt", ".txt.gz"))


# ------------------------------------------------------------------------------------------------- registry
class SnapshotRegistry:
    def __init__(self, home: str | os.PathLike):
        self.dir = Path(home).expanduser().resolve() / "snapshots"

    def add(self, name: str, source: str, *, base_url: str | None = None) -> Snapshot:
        validate_snapshot_name(name)
        kind = source_kind(source)  # validates the source now, not at materialization time
        if kind == "directory":
            source = str(Path(source).expanduser().resolve())
        elif kind == "listing" and "://" not in source:
            source = str(Path(source).expanduser().resolve())
        snap = Snapshot(name=name, source=source, base_url=base_url, added_at=time.time())
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(asdict(snap), indent=2), encoding="utf-8")
        os.replace(tmp, self.dir / f"{name}.json")
        return snap

    def get(self, name: str) -> Snapshot:
        validate_snapshot_name(name)
        path = self.dir / f"{name}.json"
        if not path.exists():
            raise KeyError(f"snapshot {name!r} is not registered: run `danqing snapshot add {name} SOURCE`")
        return Snapshot(**json.loads(path.read_text(encoding="utf-8")))

    def list(self) -> list[Snapshot]:
        if not self.dir.exists():
            return []
        return [Snapshot(**json.loads(p.read_text(encoding="utf-8"))) for p in sorted(self.dir.glob("*.json"))]


# ------------------------------------------------------------------------------------------------- listing
def list_warcs(snapshot: Snapshot, *, s3_client_factory: Callable[[], Any] | None = None) -> list[WarcRef]:
    """The WARC files of a snapshot, in a stable order."""
    kind = source_kind(snapshot.source)
    if kind == "directory":
        root = Path(snapshot.source)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WARC_SUFFIXES))
        return [WarcRef(uri=str(p), name=str(p.relative_to(root)), bytes=p.stat().st_size) for p in files]
    if kind == "listing":
        with open_uri(snapshot.source, s3_client_factory=s3_client_factory) as fh:
            lines = _read_listing(fh, snapshot.source)
        base = snapshot.base_url or COMMON_CRAWL_HTTPS
        return [WarcRef(uri=_join(base, line), name=line, bytes=None) for line in lines]
    # s3
    parsed = urlparse(snapshot.source)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if s3_client_factory is None:
        raise SourceError("an s3:// source needs an S3 client (configure the `s3` resource)")
    client = s3_client_factory()
    if _is_listing(snapshot.source):
        body = client.get_object(Bucket=bucket, Key=prefix)["Body"]
        lines = _read_listing(body, snapshot.source)
        base = snapshot.base_url or f"s3://{bucket}/"
        return [WarcRef(uri=_join(base, line), name=line, bytes=None) for line in lines]
    refs = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(WARC_SUFFIXES):
                name = obj["Key"][len(prefix):].lstrip("/") or obj["Key"]
                refs.append(WarcRef(uri=f"s3://{bucket}/{obj['Key']}", name=name, bytes=int(obj["Size"])))
    return sorted(refs, key=lambda r: r.name)


def _read_listing(fh: IO[bytes], source: str) -> list[str]:
    raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise SourceError(f"listing {source!r} is not a valid gzip file: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"listing {source!r} is not UTF-8 text: {exc}") from exc
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    bad = [ln for ln in lines if not ln.split("?", 1)[0].endswith(WARC_SUFFIXES)]
    if bad:
        raise SourceError(f"listing {source!r} has {len(bad)} lines that are not WARC paths, e.g. {bad[0][:120]!r}")
    return lines


def _join(base: str, line: str) -> str:
    if urlparse(line).scheme in ("http", "https", "s3") or line.startswith("/"):
        return line
    if urlparse(base).scheme in ("http", "https", "s3"):
        return base.rstrip("/") + "/" + line.lstrip("/") if urlparse(base).scheme == "s3" else urljoin(base.rstrip("/") + "/", line)
    return str(Path(base).expanduser().resolve() / line)


# ------------------------------------------------------------------------------------------------- opening
def open_uri(uri: str, *, s3_client_factory: Callable[[], Any] | None = None, timeout_s: float = 60.0) -> IO[bytes]:
    """A readable binary stream over a local path, an http(s) URL or an s3:// URI (raw bytes, no decompression)."""
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("http", "https"):
        import requests

        resp = requests.get(uri, stream=True, timeout=timeout_s, headers={"User-Agent": "danqing-assets/0.1"})
        if resp.status_code != 200:
            resp.close()
            raise OSError(f"GET {uri}: HTTP {resp.status_code}")
        resp.raw.decode_content = False
        return _Closing(resp.raw, resp.close)
    if scheme == "s3":
        if s3_client_factory is None:
            raise OSError(f"{uri}: no S3 client configured")
        parsed = urlparse(uri)
        body = s3_client_factory().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
        return _Closing(body, body.close)
    return open(Path(uri).expanduser(), "rb")


class _Closing(io.RawIOBase):
    """Wraps a stream so it works as a context manager and a plain readable."""

    def __init__(self, stream, close):
        self._stream, self._close = stream, close

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._stream.read() if size is None or size < 0 else self._stream.read(size)

    def readinto(self, b) -> int:
        data = self._stream.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._close()
        finally:
            super().close()


def read_range(
    uri: str, offset: int, length: int, *, s3_client_factory: Callable[[], Any] | None = None, timeout_s: float = 60.0
) -> bytes:
    """Bytes [offset, offset + length) of a local file, an http(s) URL (HTTP Range request) or an s3:// object.

    Fewer bytes come back near the end of the file. Reading one WARC record out of a remote Common Crawl file this
    way costs one request instead of downloading a gigabyte.
    """
    if length <= 0:
        return b""
    scheme = urlparse(uri).scheme.lower()
    last = offset + length - 1
    if scheme in ("http", "https"):
        import requests

        resp = requests.get(uri, headers={"Range": f"bytes={offset}-{last}", "User-Agent": "danqing-assets/0.1"},
                            timeout=timeout_s)
        if resp.status_code == 206:
            return resp.content
        if resp.status_code == 200:  # the server ignored Range: take the slice
            return resp.content[offset : offset + length]
        raise OSError(f"GET {uri} bytes={offset}-{last}: HTTP {resp.status_code}")
    if scheme == "s3":
        if s3_client_factory is None:
            raise OSError(f"{uri}: no S3 client configured")
        parsed = urlparse(uri)
        try:
            obj = s3_client_factory().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"),
                                                 Range=f"bytes={offset}-{last}")
        except Exception as exc:  # noqa: BLE001 - e.g. InvalidRange past the end
            raise OSError(f"{uri} bytes={offset}-{last}: {exc}") from exc
        return obj["Body"].read()
    with open(Path(uri).expanduser(), "rb") as fh:
        fh.seek(offset)
        return fh.read(length)
