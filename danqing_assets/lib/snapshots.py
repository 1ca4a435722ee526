"""Crawl snapshots: where a snapshot's WARC files are, and how to open them.

A snapshot is registered with a SOURCE, one of:

- a local directory: every `*.warc` / `*.warc.gz` below it (sorted by relative path);
- a `warc.paths.gz` (or plain `warc.paths`) listing, as a local file or an http(s) URL, whose relative paths are joined
  to a base URL (default `https://data.commoncrawl.org/`, as Common Crawl publishes them);
- `s3://bucket/prefix`: the WARC objects under the prefix, or, when the key ends in `warc.paths.gz`, that listing with
  its paths joined to `s3://<bucket>/` (Common Crawl: `s3://commoncrawl/crawl-data/CC-MAIN-YYYY-WW/warc.paths.gz`).

A listing names keys below its base: a line that is an absolute path, a URL of any scheme (`http:`, `s3:`, `file:`,
...), or a relative path that climbs out of the base (`..`) could make the pipeline read any local file or any
server. Such lines are not used unless the snapshot was registered with `allow_foreign_paths=True`; they are counted,
logged as a warning and handed to the caller (`list_warcs(..., rejected=[])`), and a listing with nothing else is a
`SourceError`.

The registry is one small JSON file per snapshot under `$DANQING_HOME/snapshots/`, so registering never contends
with a running materialization.

Batches. A Common Crawl snapshot has 90,000-100,000 WARC files (~52 M raw pairs), far too much for one partition, so
registering a snapshot lists its WARC files once and cuts them, in listing order, into *batches* of `batch_size` files
(default `DEFAULT_BATCH_SIZE`). A batch is the unit every per-pair asset runs on: its key is the Dagster partition key
and the warehouse partition. A snapshot whose files fit in one batch keeps one key equal to its name (the demo, small
samples: nothing changes for them); a bigger one gets keys `<name>.b00000`, `<name>.b00001`, ... Which snapshot a key
belongs to is looked up in the registry (`SnapshotRegistry.batch`), never parsed out of the key. The file list is
fixed at registration (`<name>.warcs.parquet` beside the JSON: batch, uri, name, bytes), so a batch's content never
changes under its tables; registering the same snapshot again with the same files is a no-op, with other files it is
refused unless `replace=True` (a snapshot of one batch is replaced, as before batches existed).

An entry written before batches existed (no `batch_size`) is one batch keyed by its name whose files are listed when it
is materialized, as they were then.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, replace as dc_replace
from pathlib import Path
from typing import IO, Any, Callable
from urllib.parse import unquote, urljoin, urlparse
from urllib.request import url2pathname

import polars as pl

from danqing_assets.lib.warehouse import validate_snapshot_name

COMMON_CRAWL_HTTPS = "https://data.commoncrawl.org/"
WARC_SUFFIXES = (".warc", ".warc.gz")

DEFAULT_BATCH_SIZE = 500
"""WARC files per batch: ~550 raw pairs per file makes ~276 k pairs per batch, 190 batches for a 95,000-file
snapshot and 3,800 partitions for the paper's 20 snapshots (docs/scaling.md section 5 gives the reasoning)."""
MAX_BATCHES_PER_SNAPSHOT = 10_000
"""More batches than this is refused (choose a larger batch size): thousands of partitions per snapshot at most, so
20 snapshots stay far below the partition counts Dagster handles well."""
BATCH_KEY_FORMAT = "{name}.b{index:05d}"

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """A snapshot source that cannot be used, with a message a user can act on."""


@dataclass(frozen=True)
class Snapshot:
    name: str
    source: str
    base_url: str | None = None
    added_at: float = 0.0
    allow_foreign_paths: bool = False  # use listing lines that are absolute paths / URLs / climb out of the base
    batch_size: int | None = None  # None: registered before batches (one batch, its files listed when materialized)
    files: int | None = None  # WARC files listed at registration
    batches: tuple[str, ...] = ()  # the batch keys (partition keys), in listing order

    @property
    def keys(self) -> tuple[str, ...]:
        """Its partition keys: its batches, or its name alone (one batch)."""
        return self.batches or (self.name,)

    @property
    def listed(self) -> bool:
        """Whether its files were listed (and cut into batches) at registration."""
        return self.batch_size is not None


@dataclass(frozen=True)
class Batch:
    key: str  # the partition key
    snapshot: str  # the snapshot it belongs to
    index: int  # its position among the snapshot's batches
    count: int  # how many batches the snapshot has


class RegistryError(ValueError):
    """A registration that would break the registry (a changed batch, a key taken by another snapshot)."""


def validate_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a whole number of WARC files >= 1, got {batch_size!r}")
    return batch_size


def batch_keys(name: str, files: int, batch_size: int) -> tuple[str, ...]:
    """The batch keys of a snapshot of `files` WARC files: its name alone when they fit in one batch."""
    validate_batch_size(batch_size)
    if files <= batch_size:
        return (name,)
    count = math.ceil(files / batch_size)
    if count > MAX_BATCHES_PER_SNAPSHOT:
        raise ValueError(f"{files} WARC files in batches of {batch_size} make {count} batches, more than "
                         f"{MAX_BATCHES_PER_SNAPSHOT}: choose a batch size of at least "
                         f"{math.ceil(files / MAX_BATCHES_PER_SNAPSHOT)}")
    keys = tuple(BATCH_KEY_FORMAT.format(name=name, index=i) for i in range(count))
    try:
        validate_snapshot_name(keys[-1])
    except ValueError:
        raise ValueError(f"snapshot name {name!r} is too long to name its batches ({keys[-1]!r} is over 128 "
                         "characters): use a shorter name") from None
    return keys


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


def first_files(snap: Snapshot, max_files: int) -> list[tuple[str, int]]:
    """(batch key, files to use) for a sample of a snapshot's first `max_files` WARC files: only the batches that hold
    them, the last one cut short (warc_files' `max_files`)."""
    out, left = [], max_files
    per_batch = snap.batch_size or max_files
    for key in snap.keys:
        if left <= 0:
            break
        out.append((key, min(left, per_batch)))
        left -= per_batch
    return out


# ------------------------------------------------------------------------------------------------- registry
_FILES_SCHEMA = {"batch": pl.String, "uri": pl.String, "name": pl.String, "bytes": pl.Int64}


class SnapshotRegistry:
    def __init__(self, home: str | os.PathLike, *, warehouse: Any = None):
        self.dir = Path(home).expanduser().resolve() / "snapshots"
        self.warehouse = warehouse  # where `snapshot_batches` is written; None: the Warehouse of `home`

    def add(
        self, name: str, source: str, *, base_url: str | None = None, allow_foreign_paths: bool = False,
        batch_size: int | None = None, replace: bool = False, s3_client_factory: Callable[[], Any] | None = None,
    ) -> Snapshot:
        """Register `name`: validate the source, list its WARC files and cut them into batches of `batch_size` (unset:
        as registered before, else `DEFAULT_BATCH_SIZE`). Registering it again with the same files is a no-op."""
        validate_snapshot_name(name)
        if batch_size is not None:
            validate_batch_size(batch_size)
        kind = source_kind(source)  # validates the source now, not at materialization time
        if kind == "directory":
            source = str(Path(source).expanduser().resolve())
        elif kind == "listing" and "://" not in source:
            source = str(Path(source).expanduser().resolve())
        previous = self._load(name)
        if batch_size is None:
            batch_size = previous.batch_size if previous is not None and previous.batch_size else DEFAULT_BATCH_SIZE
        snap = Snapshot(name=name, source=source, base_url=base_url, added_at=time.time(),
                        allow_foreign_paths=allow_foreign_paths, batch_size=batch_size)
        refs = list_warcs(snap, s3_client_factory=s3_client_factory)
        keys = batch_keys(name, len(refs), batch_size)
        snap = dc_replace(snap, files=len(refs), batches=keys)
        files = pl.DataFrame(
            {"batch": [keys[i // batch_size] for i in range(len(refs))], "uri": [r.uri for r in refs],
             "name": [r.name for r in refs], "bytes": [r.bytes for r in refs]}, schema=_FILES_SCHEMA)
        if previous is not None and previous.listed:
            same = (previous.source, previous.base_url, previous.allow_foreign_paths, previous.batches) == (
                source, base_url, allow_foreign_paths, keys) and self._files(name).select("batch", "uri", "name").equals(
                files.select("batch", "uri", "name"))
            if same:
                return previous
            if not replace and (len(previous.keys) > 1 or len(keys) > 1):
                raise RegistryError(
                    f"snapshot {name!r} is already registered as {len(previous.keys)} batch(es) of "
                    f"{previous.batch_size} WARC files from {previous.source}; registering it with other files or "
                    "batches would change what its materialized batches hold: pass replace (--replace) to cut it "
                    "again, or register the new files under another name")
        self._check_keys_free(name, keys)
        self.dir.mkdir(parents=True, exist_ok=True)
        # the file list first, then the JSON (the commit point: `list` and `get` only read JSON files)
        tmp = self.dir / f".{name}.warcs.parquet.tmp"
        files.write_parquet(tmp, compression="zstd")
        os.replace(tmp, self._files_path(name))
        tmp = self.dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(asdict(snap), indent=2), encoding="utf-8")
        os.replace(tmp, self.dir / f"{name}.json")
        self._publish_batches(snap, files)
        return snap

    def _publish_batches(self, snap: Snapshot, files: pl.DataFrame) -> None:
        """The warehouse table `snapshot_batches` (batch, snapshot, batch_index, warc_files, first_warc, last_warc):
        the per-pair tables' `snapshot` column holds the partition key, so SQL joins it on `batch` to get the
        snapshot of a batch. Best effort: the registry JSON is what the pipeline reads."""
        from danqing_assets.lib.warehouse import Warehouse

        per = files.group_by("batch", maintain_order=True).agg(
            warc_files=pl.len(), first_warc=pl.col("name").first(), last_warc=pl.col("name").last())
        df = pl.DataFrame({"batch": list(snap.keys)}).join(per, on="batch", how="left").with_columns(
            snapshot=pl.lit(snap.name), batch_index=pl.int_range(pl.len(), dtype=pl.Int64),
            warc_files=pl.col("warc_files").fill_null(0).cast(pl.Int64))
        df = df.select("batch", "snapshot", "batch_index", "warc_files", "first_warc", "last_warc")
        try:
            (self.warehouse or Warehouse(self.dir.parent)).write("snapshot_batches", snap.name, df)
        except Exception as exc:  # noqa: BLE001 - a locked or read-only warehouse: the registration stands
            log.warning("could not write table snapshot_batches for %s: %s", snap.name, exc)

    def _check_keys_free(self, name: str, keys: tuple[str, ...]) -> None:
        """No other snapshot may have a name or batch key equal to one of `name`'s keys (or to `name`)."""
        mine = set(keys) | {name}
        for other in self.list():
            if other.name == name:
                continue
            taken = mine & (set(other.keys) | {other.name})
            if taken:
                raise RegistryError(f"snapshot {name!r}: {sorted(taken)[0]!r} is already a name or batch of snapshot "
                                    f"{other.name!r}; choose another name")

    def _load(self, name: str) -> Snapshot | None:
        path = self.dir / f"{name}.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        data["batches"] = tuple(data.get("batches") or ())
        return Snapshot(**data)

    def _files_path(self, name: str) -> Path:
        return self.dir / f"{name}.warcs.parquet"

    def _files(self, name: str) -> pl.DataFrame:
        path = self._files_path(name)
        return pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=_FILES_SCHEMA)

    def get(self, name: str) -> Snapshot:
        validate_snapshot_name(name)
        snap = self._load(name)
        if snap is None:
            raise KeyError(f"snapshot {name!r} is not registered: run `danqing snapshot add {name} SOURCE`")
        return snap

    def list(self) -> list[Snapshot]:
        if not self.dir.exists():
            return []
        return [s for p in sorted(self.dir.glob("*.json")) if (s := self._load(p.stem)) is not None]

    def batch(self, key: str) -> Batch:
        """The batch with partition key `key` (a snapshot of one batch: its name). KeyError when no registered
        snapshot has it. Looked up, never parsed: the snapshot named like the key's prefix is tried first."""
        validate_snapshot_name(key)
        guesses = [key] + ([key.rsplit(".b", 1)[0]] if ".b" in key else [])
        tried = set()
        for snap in [s for g in guesses if (s := self._load(g)) is not None] + self.list():
            if snap.name in tried:
                continue
            tried.add(snap.name)
            if key in snap.keys:
                return Batch(key=key, snapshot=snap.name, index=snap.keys.index(key), count=len(snap.keys))
        raise KeyError(f"{key!r} is not registered, neither as a snapshot nor as a batch of one: run `danqing snapshot "
                       f"add {key} SOURCE` (`danqing snapshot list --batches` lists the batch keys)")

    def snapshot_of(self, key: str) -> str:
        """The snapshot a partition key belongs to (a key no snapshot has: the key itself, e.g. a partition run with
        a `source` in its config)."""
        try:
            return self.batch(key).snapshot
        except (KeyError, ValueError):
            return key

    def resolve(self, name: str, batches: list[str] | None = None) -> list[str]:
        """Partition keys for a user's NAME: every batch of snapshot NAME in order (or only `batches` of it, each a
        key of NAME); NAME may also be one batch's key. KeyError with a clear message otherwise."""
        try:
            snap = self.get(name)
        except KeyError:
            if batches:
                raise
            return [self.batch(name).key]
        if not batches:
            return list(snap.keys)
        unknown = [b for b in batches if b not in snap.keys]
        if unknown:
            shown = ", ".join(snap.keys[:3]) + (f", ... ({len(snap.keys)} in all)" if len(snap.keys) > 3 else "")
            raise KeyError(f"{unknown[0]!r} is not a batch of snapshot {name!r}; its batches: {shown}")
        return [k for k in snap.keys if k in set(batches)]

    def warcs(self, key: str) -> list[WarcRef] | None:
        """The WARC files of batch `key`, as fixed at registration; None for a snapshot registered before batches
        (its files are listed when it is materialized)."""
        batch = self.batch(key)
        snap = self.get(batch.snapshot)
        if not snap.listed:
            return None
        files = self._files(snap.name).filter(pl.col("batch") == key)
        return [WarcRef(uri=r["uri"], name=r["name"], bytes=r["bytes"]) for r in files.iter_rows(named=True)]


# ------------------------------------------------------------------------------------------------- listing
def list_warcs(snapshot: Snapshot, *, s3_client_factory: Callable[[], Any] | None = None,
               rejected: list[str] | None = None) -> list[WarcRef]:
    """The WARC files of a snapshot, in a stable order.

    A listing's lines that are not keys below its base (absolute paths, URLs, `..`) are left out unless
    `snapshot.allow_foreign_paths`; they are appended to `rejected` when it is given, and logged."""
    kind = source_kind(snapshot.source)
    if kind == "directory":
        root = Path(snapshot.source)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WARC_SUFFIXES))
        return [WarcRef(uri=str(p), name=str(p.relative_to(root)), bytes=p.stat().st_size) for p in files]
    if kind == "listing":
        with open_uri(snapshot.source, s3_client_factory=s3_client_factory) as fh:
            lines = _read_listing(fh, snapshot.source)
        base = snapshot.base_url or COMMON_CRAWL_HTTPS
        return _listing_refs(lines, base, snapshot, rejected)
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
        return _listing_refs(lines, base, snapshot, rejected)
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


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # also a Windows drive ("C:")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
"""A relative key of plain segments, none starting with '.' (Common Crawl's listing lines): below any base, and
joined to it by concatenation. Registering a 95,000-line listing checks and joins most lines by this alone."""


def foreign_path(line: str) -> str | None:
    """Why a listing line is not a key below the listing's base (None when it is one)."""
    if _PLAIN_KEY.fullmatch(line):
        return None
    if _CONTROL.search(line):
        return "control character"
    if line.startswith(("/", "\\")):
        return "absolute path"
    if _SCHEME.match(line):
        return "URL"
    segments = re.split(r"[/\\]", unquote(line.split("?", 1)[0]))
    if ".." in segments:
        return "climbs out of the base"
    return None


def _listing_refs(lines: list[str], base: str, snapshot: Snapshot, rejected: list[str] | None) -> list[WarcRef]:
    refs, foreign = [], []
    scheme = urlparse(base).scheme.lower()
    prefix = base.rstrip("/") + "/" if scheme in ("http", "https", "s3") else (
        str(Path(base).expanduser().resolve()).rstrip("/") + "/")
    for line in lines:
        if _PLAIN_KEY.fullmatch(line):  # the common case: what _join would give, without parsing URLs per line
            refs.append(WarcRef(uri=prefix + line, name=line, bytes=None))
            continue
        if not snapshot.allow_foreign_paths and foreign_path(line) is not None:
            foreign.append(line)
            continue
        refs.append(WarcRef(uri=_join(base, line), name=line, bytes=None))
    if foreign:
        if rejected is not None:
            rejected.extend(foreign)
        example = foreign[0][:120]
        log.warning("listing %s: %d of %d lines are not paths below the base %s (e.g. %r: %s) and are not used; "
                    "register the snapshot with allow_foreign_paths to use them", snapshot.source, len(foreign),
                    len(lines), base, example, foreign_path(foreign[0]))
        if not refs:
            raise SourceError(f"listing {snapshot.source!r}: none of its {len(lines)} lines is a path below the base "
                              f"{base!r} (e.g. {example!r}: {foreign_path(foreign[0])}); set allow_foreign_paths "
                              "to use absolute paths or URLs")
    return refs


def _join(base: str, line: str) -> str:
    scheme = urlparse(line).scheme.lower()
    if scheme == "file":  # only with allow_foreign_paths
        return url2pathname(urlparse(line).path)
    if scheme in ("http", "https", "s3") or line.startswith("/"):
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
