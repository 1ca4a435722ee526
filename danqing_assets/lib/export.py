"""The release writer: the curated pairs as Parquet + WebDataset shards, a manifest and a dataset card, written once.

Layout of a release (`root` is a local folder or `s3://bucket/prefix`)::

    <root>/<release_id>/
      parquet/part-00000.parquet ...   # pair_id, image_url, page_url, caption, caption_original, snapshot, width,
                                       # height, sha256, then every other column of `pairs` (the release adds `batch`,
                                       # the partition a pair was curated in, then the scores), as given
      wds/shard-00000.tar ...          # uncompressed tar: <pair_id>.jpg|.png|.webp, <pair_id>.json (the Parquet row
                                       # plus image_ext, image_reencoded_from), <pair_id>.txt (caption, UTF-8)
      wds/sizes.json                   # {"shard-00000.tar": n, ...}: open_clip reads it (--train-num-samples optional)
      manifest.json                    # release id, shards (samples, bytes, sha256 of each file), totals, missing
      README.md                        # the dataset card
      _SUCCESS                         # written last: a release without it is incomplete and is never opened

Shards are aligned: `part-0000k.parquet` holds exactly the rows of `shard-0000k.tar`, in the same order, so a sample
found in one is found in the other by shard number and `pair_id`. Rows are sorted by `pair_id` (a hash, so the order is
unrelated to content or source) and a shard is closed before it would pass `shard_max_samples` samples or
`shard_max_bytes` tar bytes (a single sample larger than the cap gets a shard of its own).

Why written this way:
- Never overwrite. Each call writes a new `<root>/<release_id>/` and refuses when it exists. Locally the release is
  built under a hidden temporary folder beside it (`.<release_id>.incomplete.<random>.<pid>@<host>.tmp`, the rule of
  `lib/tempfiles.py`: the next release written to the same root removes those of processes that no longer run, so a
  writer killed outright leaves nothing for long) and renamed into place at the end (removed on error), so a reader never sees half a release and a rename onto an existing, non-empty release cannot succeed. On
  S3, where nothing is atomic, shards are built in a local staging folder, uploaded as each one is finished, and
  `_SUCCESS` is written last with `If-None-Match: *`; `open_release` refuses a prefix without it.
- Byte-identical re-runs. Tar headers are fixed (USTAR, mtime 0, uid/gid 0, no user names, mode 0644), members of a
  sample are in name order, samples in `pair_id` order, the JSON has sorted keys: the same input gives the same
  shards, byte for byte (the bytes `tarfile` itself writes for those headers), and the same sha256 in the manifest.
  Only `created_at` (manifest, card) changes, unless the caller fixes it.
- Image members. JPEG, PNG and WebP bytes are stored as they are (`.jpg`, `.png`, `.webp`; an MPO is a JPEG): these
  are what open_clip's loader (`jpg;png;jpeg;webp`) and `lib.train_data` read, and the `sha256` column stays the digest
  of the stored member. Any other format the fetcher accepted (GIF, BMP, TIFF, ICO, AVIF) is decoded (first frame,
  8-bit RGB) and re-encoded as JPEG quality 95 under `.jpg`; its JSON then says `"image_reencoded_from": "<format>"`
  and `sha256` remains the digest of the original, content-addressed image.
- Keys are the `pair_id`s: globally unique and stable, and free of dots and slashes (WebDataset splits a member name
  at the first dot of its base name), which is checked.
- An image that cannot be read (`get_image` raises, or a non-JPEG/PNG/WebP cannot be decoded) is not written, in
  neither the tar nor the Parquet shards, and is listed in `manifest.missing_images` with its `pair_id` and a stable
  reason (`load_error`, `decode_error`): the caller decides whether that fails the step.
- Non-finite floats (NaN, inf) become nulls in both Parquet and JSON (JSON has no NaN).
- SHA-256 of a tar shard is computed on a helper thread while the bytes are written (hashlib and `os.write` both
  release the GIL), which keeps the writer near plain `tarfile` speed (`benchmarks/bench_export.py`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from danqing_assets.lib.tempfiles import remove_orphans, temp_name

FORMAT_VERSION = 1
SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
CARD = "README.md"
SIZES = "sizes.json"

DEFAULT_SHARD_MAX_BYTES = 1_000_000_000  # the usual WebDataset shard size
DEFAULT_SHARD_MAX_SAMPLES = 10_000

STRING_COLUMNS: tuple[str, ...] = ("pair_id", "image_url", "page_url", "caption", "caption_original", "snapshot")
INT_COLUMNS: tuple[str, ...] = ("width", "height")
REQUIRED_COLUMNS: tuple[str, ...] = (*STRING_COLUMNS, *INT_COLUMNS, "sha256")

LOAD_ERROR = "load_error"  # get_image raised
DECODE_ERROR = "decode_error"  # a non-JPEG/PNG/WebP image could not be decoded for re-encoding

TAR_MTIME = 0
_BLOCK = tarfile.BLOCKSIZE  # 512
_RECORD = tarfile.RECORDSIZE  # 10240: tarfile pads the archive to a multiple of this
_FLUSH_BYTES = 1 << 20  # tar bytes gathered before one write + one hash update
_REENCODE_QUALITY = 95

_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CARD_KEYS = {"title", "description", "funnel", "filters", "rebuild", "notes"}
_CARD_REQUIRED = {"funnel", "filters", "rebuild"}
_FILTER_KEYS = {"name", "status", "detail", "nsfw"}
_JSON_ADDED = ("image_ext", "image_reencoded_from")


class ReleaseError(Exception):
    """A release cannot be written or opened."""


class ReleaseExistsError(ReleaseError, FileExistsError):
    """The release folder or prefix already exists (complete or not): releases are never overwritten."""


class IncompleteReleaseError(ReleaseError):
    """The release has no `_SUCCESS` marker: its writer failed or is still running."""


# ---------------------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the release folder, "/" separated
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardInfo:
    index: int
    samples: int
    wds: FileInfo
    parquet: FileInfo
    first_key: str
    last_key: str


@dataclass
class ReleaseManifest:
    release_id: str
    created_at: str
    total_pairs: int
    shards: list[ShardInfo]
    missing_images: list[dict[str, str]]  # {"pair_id", "sha256", "reason", "detail"}
    columns: list[str]
    score_columns: list[str]
    image_formats: dict[str, int]  # member extension -> samples
    reencoded: dict[str, int]  # original format -> samples re-encoded to JPEG
    snapshots: dict[str, int]
    shard_max_bytes: int
    shard_max_samples: int
    wds_pattern: str  # relative brace pattern, e.g. "wds/shard-{00000..00003}.tar"
    format_version: int = FORMAT_VERSION
    generator: str = "danqing_assets.lib.export"

    @property
    def missing_pair_ids(self) -> list[str]:
        return [m["pair_id"] for m in self.missing_images]

    @property
    def wds_bytes(self) -> int:
        return sum(s.wds.bytes for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReleaseManifest:
        if d.get("format_version") != FORMAT_VERSION:
            raise ReleaseError(f"unsupported release format_version {d.get('format_version')!r}")
        d = dict(d)
        d["shards"] = [
            ShardInfo(**{**s, "wds": FileInfo(**s["wds"]), "parquet": FileInfo(**s["parquet"])}) for s in d["shards"]
        ]
        return cls(**d)


# ------------------------------------------------------------------------------------------------------------ places


@dataclass(frozen=True)
class _S3Place:
    bucket: str
    key: str  # release prefix, ends with "/" (or "" for the bucket root)

    def uri(self, rel: str = "") -> str:
        return f"s3://{self.bucket}/{self.key}{rel}"


def _parse_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def _is_s3(root: str | os.PathLike[str]) -> bool:
    return isinstance(root, str) and root.startswith("s3://")


# ------------------------------------------------------------------------------------------------------ file writing


class _HashedFile:
    """A file written with os.write whose sha256 is computed on `pool`'s single thread, in order, meanwhile."""

    def __init__(self, path: Path, pool: ThreadPoolExecutor) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._hash = hashlib.sha256()
        self._pool = pool
        self._pending: deque[Future[None]] = deque()
        self._closed = False
        self.size = 0

    def write(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(self._hash.update, block))
        view = memoryview(block)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(block)
        while len(self._pending) > 4:  # bounds the memory held by blocks waiting to be hashed
            self._pending.popleft().result()

    def close(self, fsync: bool) -> FileInfo:
        try:
            while self._pending:
                self._pending.popleft().result()
            if fsync:
                os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)
        return FileInfo(self.path.name, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        for f in self._pending:
            f.cancel()
        if not self._closed:
            self._closed = True
            os.close(self._fd)


def _member_size(n: int) -> int:
    return _BLOCK + -(-n // _BLOCK) * _BLOCK


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, TAR_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


class _TarShard:
    """One uncompressed tar shard: samples appended whole, the size the closed archive will have known in advance."""

    def __init__(self, path: Path, pool: ThreadPoolExecutor) -> None:
        self.file = _HashedFile(path, pool)
        self.samples = 0
        self.body = 0  # bytes of members so far (written or buffered)
        self._buf: list[bytes] = []
        self._buffered = 0

    def closed_size(self, extra: int = 0) -> int:
        """Archive size after adding `extra` member bytes and closing (two zero blocks, padded to a record)."""
        end = self.body + extra + 2 * _BLOCK
        return -(-end // _RECORD) * _RECORD

    def add(self, members: Sequence[tuple[str, bytes]]) -> None:
        for name, data in members:
            self._buf.append(_tar_header(name, len(data)))
            self._buf.append(data)
            pad = -len(data) % _BLOCK
            if pad:
                self._buf.append(b"\0" * pad)
            n = _member_size(len(data))
            self.body += n
            self._buffered += n
        self.samples += 1
        if self._buffered >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self.file.write(b"".join(self._buf))
            self._buf, self._buffered = [], 0

    def close(self, fsync: bool) -> FileInfo:
        self._buf.append(b"\0" * (self.closed_size() - self.body))
        self._flush()
        return self.file.close(fsync)


def _file_info(path: Path, rel: str) -> FileInfo:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return FileInfo(rel, path.stat().st_size, h.hexdigest())


def _write_small(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


# ------------------------------------------------------------------------------------------------------------ images


def _image_kind(data: bytes) -> str | None:
    """Member extension for bytes stored as they are, or None when they must be re-encoded."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _reencode(data: bytes) -> tuple[bytes, str]:
    """(JPEG bytes, original format) of the first frame; raises ImageRejected."""
    from danqing_assets.lib.fetch.decode import load_rgb, sniff_image_type

    img = load_rgb(data)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=_REENCODE_QUALITY)
    return buf.getvalue(), sniff_image_type(data[:16]) or "unknown"


def _prefetch(get_image: Callable[[str], bytes], shas: Sequence[str], workers: int) -> Iterator[bytes | Exception]:
    """get_image(sha) for each sha, in order; an exception is yielded in place of the bytes."""

    def load(sha: str) -> bytes | Exception:
        try:
            return get_image(sha)
        except Exception as exc:  # noqa: BLE001 - reported as a missing image, never raised
            return exc

    if workers <= 1:
        for sha in shas:
            yield load(sha)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="export-get-image") as pool:
        window: deque[Future[bytes | Exception]] = deque()
        it = iter(shas)
        for sha in it:
            window.append(pool.submit(load, sha))
            if len(window) >= 4 * workers:
                break
        for sha in it:
            yield window.popleft().result()
            window.append(pool.submit(load, sha))
        while window:
            yield window.popleft().result()


# ------------------------------------------------------------------------------------------------------- validation


def validate_release_id(release_id: str) -> str:
    if not isinstance(release_id, str) or not _RELEASE_ID.match(release_id) or release_id in {".", ".."}:
        raise ValueError(
            f"invalid release id {release_id!r}: 1-128 letters, digits, '_', '.' or '-', starting with a letter or "
            "digit"
        )
    return release_id


def _check_card(card: dict[str, Any]) -> None:
    if not isinstance(card, dict):
        raise TypeError("card must be a dict")
    unknown, missing = set(card) - _CARD_KEYS, _CARD_REQUIRED - set(card)
    if unknown or missing:
        raise ValueError(
            f"card keys: unknown {sorted(unknown)}, missing {sorted(missing)}; allowed {sorted(_CARD_KEYS)}")
    if not isinstance(card["funnel"], str):
        raise ValueError("card['funnel'] must be a markdown string (the funnel table)")
    if not isinstance(card["rebuild"], list | tuple) or not all(isinstance(c, str) for c in card["rebuild"]):
        raise ValueError("card['rebuild'] must be a list of command lines")
    if not isinstance(card["filters"], list | tuple):
        raise ValueError("card['filters'] must be a list of {'name', 'status': 'on'|'off', 'detail'?, 'nsfw'?}")
    for f in card["filters"]:
        if not isinstance(f, dict) or set(f) - _FILTER_KEYS or not isinstance(f.get("name"), str):
            raise ValueError(f"bad filter entry {f!r}: keys {sorted(_FILTER_KEYS)}, 'name' a string")
        if f.get("status") not in ("on", "off"):
            raise ValueError(f"filter {f['name']!r}: status must be 'on' or 'off', not {f.get('status')!r}")


def _prepare(pairs: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """The release rows, sorted by pair_id, with the required columns first and typed; plus the score column names."""
    missing = [c for c in REQUIRED_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs lacks columns {missing}; required {list(REQUIRED_COLUMNS)}")
    if pairs.is_empty():
        raise ValueError("pairs is empty: nothing to release")
    extras = [c for c in pairs.columns if c not in REQUIRED_COLUMNS]
    reserved = [c for c in extras if c in _JSON_ADDED]
    if reserved:
        raise ValueError(f"pairs columns {reserved} are reserved: the writer adds them to each sample's JSON")
    df = pairs.select(
        *(pl.col(c).cast(pl.String) for c in STRING_COLUMNS),
        *(pl.col(c).cast(pl.Int64) for c in INT_COLUMNS),
        pl.col("sha256").cast(pl.String),
        *extras,
    )
    floats = [c for c, t in df.schema.items() if t in (pl.Float32, pl.Float64)]
    if floats:
        df = df.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c) for c in floats)

    def bad(expr: pl.Expr) -> list[str]:
        return df.filter(expr)["pair_id"].head(5).to_list()

    checks = {
        "pair_id must match [A-Za-z0-9_-]{1,64} (a WebDataset key: no dots)": pl.col("pair_id").is_null()
        | ~pl.col("pair_id").str.contains(_KEY.pattern),
        "pair_id must be unique": pl.col("pair_id").is_duplicated(),
        "caption must be a non-empty string": pl.col("caption").is_null() | (pl.col("caption").str.strip_chars() == ""),
        "sha256 must be a lower-case hex digest": pl.col("sha256").is_null()
        | ~pl.col("sha256").str.contains(_SHA256.pattern),
    }
    for what, expr in checks.items():
        ids = bad(expr)
        if ids:
            raise ValueError(f"{what}; first offending pair_ids: {ids}")
    return df.sort("pair_id"), extras


# ------------------------------------------------------------------------------------------------------------ writing


def write_release(
    root: str | os.PathLike[str],
    release_id: str,
    pairs: pl.DataFrame,
    get_image: Callable[[str], bytes],
    *,
    card: dict[str, Any],
    shard_max_bytes: int = DEFAULT_SHARD_MAX_BYTES,
    shard_max_samples: int = DEFAULT_SHARD_MAX_SAMPLES,
    s3_client: Any = None,
    image_workers: int = 1,
    created_at: datetime | None = None,
    fsync: bool = True,
    replace_incomplete: bool = False,
    staging_dir: str | os.PathLike[str] | None = None,
) -> ReleaseManifest:
    """Write `pairs` as release `root/release_id` (see the module docstring for the layout) and return its manifest.

    pairs: one row per pair with `REQUIRED_COLUMNS` (`caption` the cleaned, simplified caption; `caption_original` the
      alt text as found; `sha256` the image's digest, the argument to `get_image`); every other column is passed
      through to Parquet and JSON as a score column, in the order given.
    get_image: sha256 -> image bytes (an image store's `get`); called from `image_workers` threads when > 1 (use
      that for a remote store).
    card: {"funnel": markdown table, "filters": [{"name", "status": "on"|"off", "detail"?, "nsfw"?}], "rebuild":
      [command lines], "title"?, "description"?, "notes"?}. A filter is an NSFW screen when `nsfw` is true or its name
      contains "nsfw"; unless at least one ran and none is off, the card opens with a warning.
    s3_client: a boto3 S3 client, required when `root` is `s3://bucket/prefix`.
    created_at: recorded in the manifest and card (default now, UTC); fix it for fully reproducible manifests.
    fsync: flush every file to disk before the local rename (crash safety against power loss, not just process death).
    replace_incomplete: on S3, delete the objects of an earlier failed attempt at the same release id (no
      `_SUCCESS`) instead of refusing. A complete release is never replaced.
    """
    validate_release_id(release_id)
    _check_card(card)
    if shard_max_bytes < _RECORD or shard_max_samples < 1:
        raise ValueError(f"shard_max_bytes must be >= {_RECORD} (one tar record) and shard_max_samples >= 1")
    df, extras = _prepare(pairs)
    stamp = (created_at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    job = _Job(release_id, df, extras, get_image, card, stamp, shard_max_bytes, shard_max_samples, image_workers)

    if _is_s3(root):
        if s3_client is None:
            raise ValueError(f"{root}: an s3_client is required for an s3:// root")
        bucket, prefix = _parse_s3(str(root))
        place = _S3Place(bucket, f"{prefix}/{release_id}/" if prefix else f"{release_id}/")
        _claim_s3(s3_client, place, replace_incomplete)
        return _write_s3(s3_client, place, job, staging_dir)

    root_path = Path(root).absolute()
    final = root_path / release_id
    if final.exists():
        raise ReleaseExistsError(f"release {final} already exists; releases are never overwritten: choose a new id")
    root_path.mkdir(parents=True, exist_ok=True)
    remove_orphans(root_path)  # the folders of writers killed outright (SIGKILL, OOM) on this host
    tmp = root_path / temp_name(f"{release_id}.incomplete")
    tmp.mkdir()
    try:
        manifest = _build(tmp, job, fsync, on_shard=None)
        _write_small(tmp / SUCCESS, _success_bytes(tmp, release_id), fsync)
        try:
            os.rename(tmp, final)  # fails on an existing non-empty folder: a release written meanwhile survives
        except OSError as exc:
            raise ReleaseExistsError(f"release {final} appeared while this one was written; not replaced") from exc
        if fsync:
            _fsync_dir(root_path)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _success_bytes(folder: Path, release_id: str) -> bytes:
    digest = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    return (json.dumps({"release_id": release_id, "manifest_sha256": digest}) + "\n").encode()


@dataclass(frozen=True)
class _Job:
    release_id: str
    df: pl.DataFrame  # validated, sorted by pair_id
    extras: list[str]
    get_image: Callable[[str], bytes]
    card: dict[str, Any]
    stamp: str
    max_bytes: int
    max_samples: int
    image_workers: int


def _build(out: Path, job: _Job, fsync: bool, on_shard: Callable[[list[Path]], None] | None) -> ReleaseManifest:
    """Write shards, sizes.json, manifest.json and README.md into `out` (not `_SUCCESS`). `on_shard(paths)` is called
    with the two files of each finished shard (the S3 path uploads them and deletes them)."""
    df, max_bytes, max_samples = job.df, job.max_bytes, job.max_samples
    (out / "wds").mkdir()
    (out / "parquet").mkdir()
    shards: list[ShardInfo] = []
    missing: list[dict[str, str]] = []
    formats: Counter[str] = Counter()
    reencoded: Counter[str] = Counter()
    snapshots: Counter[str] = Counter()
    keys, captions, shas = df["pair_id"].to_list(), df["caption"].to_list(), df["sha256"].to_list()
    dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str).encode

    pool = ThreadPoolExecutor(1, thread_name_prefix="export-sha256")
    shard: _TarShard | None = None
    rows: list[int] = []

    def finish() -> None:
        nonlocal shard, rows
        assert shard is not None
        k = len(shards)
        wds = shard.close(fsync)
        pq_path = out / "parquet" / f"part-{k:05d}.parquet"
        df.select(pl.all().gather(rows)).write_parquet(pq_path, compression="zstd", statistics=True)
        if fsync:
            with open(pq_path, "rb+") as fh:
                os.fsync(fh.fileno())
        shards.append(ShardInfo(
            index=k, samples=shard.samples,
            wds=FileInfo(f"wds/{wds.path}", wds.bytes, wds.sha256),
            parquet=_file_info(pq_path, f"parquet/{pq_path.name}"),
            first_key=keys[rows[0]], last_key=keys[rows[-1]],
        ))
        if on_shard is not None:
            on_shard([shard.file.path, pq_path])
        shard, rows = None, []

    try:
        for i, (row, image) in enumerate(
            zip(df.iter_rows(named=True), _prefetch(job.get_image, shas, job.image_workers), strict=True)
        ):
            key = keys[i]
            if isinstance(image, Exception):
                missing.append({"pair_id": key, "sha256": shas[i], "reason": LOAD_ERROR,
                                "detail": f"{type(image).__name__}: {image}"[:300]})
                continue
            ext, source = _image_kind(image), None
            if ext is None:
                try:
                    image, source = _reencode(image)
                except Exception as exc:  # noqa: BLE001 - ImageRejected or any decoder failure
                    missing.append({"pair_id": key, "sha256": shas[i], "reason": DECODE_ERROR,
                                    "detail": f"{type(exc).__name__}: {exc}"[:300]})
                    continue
                ext = "jpg"
            row["image_ext"], row["image_reencoded_from"] = ext, source
            members = sorted([(f"{key}.{ext}", image), (f"{key}.json", dumps(row).encode()),
                              (f"{key}.txt", captions[i].encode())])
            size = sum(_member_size(len(d)) for _, d in members)
            if shard is not None and (shard.samples >= max_samples or shard.closed_size(size) > max_bytes):
                finish()
            if shard is None:
                shard = _TarShard(out / "wds" / f"shard-{len(shards):05d}.tar", pool)
            shard.add(members)
            rows.append(i)
            formats[ext] += 1
            if source:
                reencoded[source] += 1
            snapshots[row["snapshot"]] += 1
        if shard is not None:
            finish()
    except BaseException:
        if shard is not None:
            shard.file.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    if not shards:
        raise ReleaseError(f"no image of the {df.height} pairs could be read; nothing released "
                           f"(first: {missing[0] if missing else None})")
    sizes = {Path(s.wds.path).name: s.samples for s in shards}
    _write_small(out / "wds" / SIZES, (json.dumps(sizes, indent=0) + "\n").encode(), fsync)
    manifest = ReleaseManifest(
        release_id=job.release_id, created_at=job.stamp, total_pairs=sum(s.samples for s in shards), shards=shards,
        missing_images=missing, columns=df.columns, score_columns=job.extras,
        image_formats=dict(sorted(formats.items())),
        reencoded=dict(sorted(reencoded.items())), snapshots=dict(sorted(snapshots.items())),
        shard_max_bytes=max_bytes, shard_max_samples=max_samples,
        wds_pattern=f"wds/shard-{{{0:05d}..{len(shards) - 1:05d}}}.tar",
    )
    _write_small(out / CARD, render_card(job.card, manifest).encode(), fsync)
    _write_small(out / MANIFEST, manifest.to_json().encode(), fsync)
    return manifest


# ----------------------------------------------------------------------------------------------------------------- S3


def _s3_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def _delete_keys(client: Any, bucket: str, keys: Sequence[str]) -> None:
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})


def _claim_s3(client: Any, place: _S3Place, replace_incomplete: bool) -> None:
    existing = _s3_keys(client, place.bucket, place.key)
    if not existing:
        return
    if place.key + SUCCESS in existing:
        raise ReleaseExistsError(f"release {place.uri()} already exists; releases are never overwritten")
    if not replace_incomplete:
        raise ReleaseExistsError(
            f"{place.uri()} holds {len(existing)} objects of an incomplete release (no {SUCCESS}); delete them or "
            f"pass replace_incomplete=True"
        )
    _delete_keys(client, place.bucket, existing)


def _write_s3(client: Any, place: _S3Place, job: _Job, staging_dir: str | os.PathLike[str] | None) -> ReleaseManifest:
    """Build in a local staging folder; each finished shard is uploaded on a helper thread (at most two shards staged
    on disk) and deleted; README.md, manifest.json, then _SUCCESS (If-None-Match) last."""
    uploaded: list[str] = []
    pending: deque[Future[None]] = deque()
    uploader = ThreadPoolExecutor(1, thread_name_prefix="export-upload")

    def upload(paths: list[Path], out: Path) -> None:
        for p in paths:
            key = place.key + p.relative_to(out).as_posix()
            uploaded.append(key)
            client.upload_file(str(p), place.bucket, key)
            p.unlink()

    try:
        with tempfile.TemporaryDirectory(prefix=f"release-{job.release_id}-", dir=staging_dir) as tmp:
            out = Path(tmp)

            def on_shard(paths: list[Path]) -> None:
                pending.append(uploader.submit(upload, paths, out))
                while len(pending) > 1:
                    pending.popleft().result()

            manifest = _build(out, job, False, on_shard)
            while pending:
                pending.popleft().result()
            for rel in (f"wds/{SIZES}", CARD, MANIFEST):
                uploaded.append(place.key + rel)
                client.upload_file(str(out / rel), place.bucket, place.key + rel)
            try:
                marker = _success_bytes(out, job.release_id)
                client.put_object(Bucket=place.bucket, Key=place.key + SUCCESS, Body=marker,
                                  IfNoneMatch="*")
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "412"):
                    uploaded.clear()  # another writer completed this release: leave its objects alone
                    raise ReleaseExistsError(f"release {place.uri()} was completed by another writer") from exc
                raise
            return manifest
    except BaseException:
        for f in pending:
            f.cancel()
        uploader.shutdown(wait=True, cancel_futures=True)
        if uploaded:
            try:  # best effort: a failed attempt leaves no clutter (readers refuse it anyway: no _SUCCESS)
                _delete_keys(client, place.bucket, uploaded)
            except Exception:  # noqa: BLE001
                pass
        raise
    finally:
        uploader.shutdown(wait=True)


# ------------------------------------------------------------------------------------------------------------ reading


@dataclass
class Release:
    """A complete release: where it is and its manifest."""

    location: str  # a local folder (absolute) or s3://bucket/prefix/<release_id>
    manifest: ReleaseManifest
    s3_client: Any = field(default=None, repr=False)

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    def url(self, rel: str) -> str:
        return f"{self.location.rstrip('/')}/{rel}"

    def wds_urls(self) -> list[str]:
        return [self.url(s.wds.path) for s in self.manifest.shards]

    def parquet_urls(self) -> list[str]:
        return [self.url(s.parquet.path) for s in self.manifest.shards]

    def wds_pattern(self) -> str:
        """open_clip's `--train-data`: a brace pattern of the shards (on S3, streamed through `aws s3 cp`)."""
        pattern = self.url(self.manifest.wds_pattern)
        return f"pipe:aws s3 cp {pattern} -" if self.is_s3 else pattern

    def read_bytes(self, rel: str) -> bytes:
        if self.is_s3:
            bucket, key = _parse_s3(self.url(rel))
            return self.s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(self.url(rel)).read_bytes()

    def read_pairs(self) -> pl.DataFrame:
        """All Parquet parts, in shard order."""
        if not self.is_s3:
            return pl.read_parquet(self.parquet_urls())
        return pl.concat([pl.read_parquet(io.BytesIO(self.read_bytes(s.parquet.path))) for s in self.manifest.shards])

    def verify(self) -> list[str]:
        """Problems found by re-reading every shard file against the manifest (size, sha256); empty when intact."""
        problems = []
        for s in self.manifest.shards:
            for f in (s.wds, s.parquet):
                data = self.read_bytes(f.path)
                if len(data) != f.bytes or hashlib.sha256(data).hexdigest() != f.sha256:
                    problems.append(f"{f.path}: size or sha256 differs from the manifest")
        return problems


def _read_release_file(location: str, rel: str, s3_client: Any) -> bytes:
    if _is_s3(location):
        if s3_client is None:
            raise ValueError(f"{location}: an s3_client is required")
        bucket, key = _parse_s3(f"{location.rstrip('/')}/{rel}")
        try:
            return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{location}/{rel}") from exc
            raise
    return (Path(location) / rel).read_bytes()


def open_release(path_or_uri: str | os.PathLike[str], *, s3_client: Any = None) -> Release:
    """Open a complete release (`root/<release_id>`, local or s3://); IncompleteReleaseError without `_SUCCESS`."""
    location = str(path_or_uri).rstrip("/") if _is_s3(str(path_or_uri)) else str(Path(path_or_uri).absolute())
    try:
        success = json.loads(_read_release_file(location, SUCCESS, s3_client))
    except FileNotFoundError:
        if _is_s3(location):
            bucket, key = _parse_s3(location)
            present = bool(s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{key}/", MaxKeys=1).get("KeyCount"))
        else:
            present = Path(location).is_dir()
        if not present:
            raise FileNotFoundError(f"no release at {location}") from None
        msg = f"{location}: no {SUCCESS}; the release is incomplete (failed or running)"
        raise IncompleteReleaseError(msg) from None
    raw = _read_release_file(location, MANIFEST, s3_client)
    if hashlib.sha256(raw).hexdigest() != success.get("manifest_sha256"):
        raise ReleaseError(f"{location}: manifest.json does not match the digest in {SUCCESS}")
    return Release(location, ReleaseManifest.from_dict(json.loads(raw)), s3_client)


def read_manifest(path_or_uri: str | os.PathLike[str], *, s3_client: Any = None) -> ReleaseManifest:
    return open_release(path_or_uri, s3_client=s3_client).manifest


# --------------------------------------------------------------------------------------------------------------- card

LICENCE = """\
The captions and images are web content: they remain the property of their owners, and this release grants no right
to them. It lists where they were found (`image_url`, `page_url`) and carries copies for research use; each item keeps
the rights of its source. The DanQing paper stated CC-BY-4.0 for its dataset, and its project page later
CC-BY-NC-4.0 for the authors' own release; neither licence applies to this rebuild, whose output inherits the rights
of its sources. Honour takedown requests, robots.txt and the sites' terms, and remove a pair when its owner asks."""


def _is_nsfw(f: dict[str, Any]) -> bool:
    return bool(f.get("nsfw")) or "nsfw" in f["name"].lower()


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_card(card: dict[str, Any], manifest: ReleaseManifest) -> str:
    """The dataset card (markdown with Hugging Face front matter) for `manifest`, from the caller's `card`."""
    _check_card(card)
    m = manifest
    title = card.get("title") or f"DanQing-style Chinese image-text pairs, release {m.release_id}"
    filters = list(card["filters"])
    nsfw = [f for f in filters if _is_nsfw(f)]
    nsfw_off = [f for f in nsfw if f["status"] == "off"]
    off = [f for f in filters if f["status"] == "off"]
    out = [
        "---",
        f"pretty_name: {json.dumps(title, ensure_ascii=False)}",
        "language:\n- zh",
        "license: other",
        "task_categories:\n- image-to-text\n- zero-shot-image-classification",
        "---",
        "",
        f"# {title}",
        "",
    ]
    if nsfw_off or not nsfw:
        which = ", ".join(f"`{f['name']}`" for f in nsfw_off) or "no NSFW filter was listed"
        out += [
            "> [!WARNING]",
            f"> **NSFW NOT SCREENED.** The NSFW filtering of this release did not run ({which} OFF).",
            "> Images and captions may include sexual, violent or otherwise unsafe material. Screen the data before",
            "> any training, display or redistribution.",
            "",
        ]
    if off:
        out += [f"> **Filters OFF in this release:** {', '.join(f['name'] for f in off)} (see Filters below).", ""]
    if card.get("description"):
        out += [card["description"].strip(), ""]
    formats = ", ".join(f"{k} {v:,}" for k, v in m.image_formats.items())
    if m.reencoded:
        formats += " (re-encoded to JPEG from " + ", ".join(f"{k} {v:,}" for k, v in m.reencoded.items()) + ")"
    snaps = ", ".join(f"{k} ({v:,})" for k, v in m.snapshots.items())
    out += [
        "## Contents",
        "",
        "| | |",
        "|---|---|",
        f"| release id | `{m.release_id}` |",
        f"| created | {m.created_at} |",
        f"| image-text pairs | {m.total_pairs:,} |",
        f"| shards | {len(m.shards)} WebDataset tars ({m.wds_bytes / 1e6:,.1f} MB) + {len(m.shards)} Parquet parts |",
        f"| images not readable, pairs not released | {len(m.missing_images):,} (`missing_images` in manifest.json) |",
        f"| image members | {formats} |",
        f"| Common Crawl snapshots | {_cell(snaps)} |",
        f"| score columns | {', '.join(f'`{c}`' for c in m.score_columns) or 'none'} |",
        "",
        "## Funnel",
        "",
        card["funnel"].strip(),
        "",
        "## Filters",
        "",
        "| filter | status | detail |",
        "|---|---|---|",
    ]
    for f in filters:
        status = "ran" if f["status"] == "on" else "**OFF**"
        out.append(f"| `{_cell(f['name'])}` | {status} | {_cell(f.get('detail', ''))} |")
    if not filters:
        out.append("| (none listed) | | |")
    out += [
        "",
        "## Licence and rights",
        "",
        LICENCE,
        "",
        "## Layout",
        "",
        f"- `parquet/part-NNNNN.parquet`: {', '.join(f'`{c}`' for c in m.columns)}.",
        "- `wds/shard-NNNNN.tar` (uncompressed WebDataset): per pair `<pair_id>.jpg|png|webp` (image bytes as stored;",
        "  other formats re-encoded to JPEG), `<pair_id>.txt` (caption), `<pair_id>.json` (the row). Part k and",
        "  shard k hold the same pairs in the same order; `wds/sizes.json` gives the samples per shard.",
        "- `manifest.json`: shards with samples, bytes and sha256; totals; missing images.",
        "- `_SUCCESS`: written last; a release without it is incomplete.",
        "",
        "Train with open_clip (paths relative to this folder; `sizes.json` makes `--train-num-samples` optional):",
        "",
        "```bash",
        f"python -m open_clip_train.main --dataset-type webdataset --train-data '{m.wds_pattern}' "
        f"--train-num-samples {m.total_pairs} ...",
        "```",
        "",
        "## How to rebuild",
        "",
        "```bash",
        *card["rebuild"],
        "```",
        "",
    ]
    if card.get("notes"):
        out += ["## Notes", "", card["notes"].strip(), ""]
    return "\n".join(out)
