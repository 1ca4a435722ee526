"""The warehouse on S3: the same tables as `lib/warehouse.py`, one object per (table, partition), so any worker can
run any batch and nothing a later step needs stays on the machine that wrote it.

Layout under `s3://bucket/prefix` (the same keys as the local layout under `home`)::

    tables/<table>/snapshot=<name>/part-0.parquet
    tables/rejected_pairs/stage=<stage>/snapshot=<name>/part-0.parquet
    images/<ab>/<cd>/<sha256>                                      # the image store's default beside them
    snapshots/<name>.json, snapshots/<name>.warcs.parquet          # the snapshot registry (S3SnapshotRegistry)

Why this shape: an S3 PUT is atomic (a multipart upload too: the object appears when it completes), so a step writes
its Parquet file locally under a temporary name (the local `home`'s `.scratch/uploads/`, scratch only), validates it,
and uploads it in `commit()`: readers see the previous object or the new one, never a part. Two batches are two
objects, so two workers write at once without coordination. A writer that fails or never commits uploads nothing.

Reads: `read` and `count` go through polars with storage options built from the boto3 credential chain (environment,
profile, instance role; never logged); `iter_batches` downloads the object to local scratch and reads it one row
group at a time; DuckDB connections of the out-of-core steps read `s3://` paths through httpfs after
`configure_connection(con)` (the offline `duckdb-ext-httpfs` wheel and a secret scoped to the bucket).

Views: there is no shared `warehouse.duckdb` on S3 (a DuckDB file has one writer, and a persistent secret would put
credentials on disk). `connect()` opens an in-memory DuckDB on the machine that asks, with httpfs, the secret and a
view per table over its `s3://` glob; steps never create views (`ensure_view` is a no-op).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from danqing_assets.lib.faults import pause_point
from danqing_assets.lib.s3 import S3Config
from danqing_assets.lib.snapshots import Snapshot, SnapshotRegistry
from danqing_assets.lib.tempfiles import remove_orphans, temp_name
from danqing_assets.lib.warehouse import (
    _TABLE,
    LEDGER,
    StagedPartition,
    Warehouse,
    iter_parquet_file,
    validate_snapshot_name,
)

log = logging.getLogger(__name__)

UPLOADS = Path(".scratch") / "uploads"
"""Where staged partitions wait for their upload, under the local home (scratch: nothing is left after a step)."""
DOWNLOADS = Path(".scratch") / "downloads"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_.=-]+$")


class WarehouseLocationError(RuntimeError):
    """The S3 location of the warehouse cannot be used (no such bucket, endpoint unreachable, no credentials)."""


def parse_s3_location(location: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix without slashes at the ends); ValueError for anything else."""
    if not isinstance(location, str) or not location.startswith("s3://"):
        raise ValueError(f"warehouse location {location!r} is not s3://bucket/prefix (unset it for the local home)")
    parts = urlsplit(location)
    if parts.query or parts.fragment or not _BUCKET.match(parts.netloc or "") or ".." in parts.netloc:
        raise ValueError(f"warehouse location {location!r}: {parts.netloc!r} is not a valid S3 bucket name")
    prefix = parts.path.strip("/")
    if prefix and not all(_PREFIX_PART.match(p) and p not in {".", ".."} for p in prefix.split("/")):
        raise ValueError(f"warehouse location {location!r}: use letters, digits, '_', '.', '=', '-' in the prefix")
    return parts.netloc, prefix


def httpfs_extension_path(platform: str) -> Path | None:
    """The httpfs extension the `duckdb-ext-httpfs` wheel ships for this DuckDB (DuckDB cannot download it here)."""
    import importlib.util

    import duckdb

    spec = importlib.util.find_spec("duckdb_ext")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "extensions" / f"v{duckdb.__version__}" / platform / "httpfs.duckdb_extension"
        if path.is_file():
            return path
    return None


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class S3Warehouse(Warehouse):
    """The warehouse's tables as objects under `location` (s3://bucket/prefix); `home` is local scratch only."""

    def __init__(self, location: str, *, home: str | Path | None = None, s3: S3Config | None = None) -> None:
        super().__init__(home)
        self.bucket, self.prefix = parse_s3_location(location)
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.s3 = s3 or S3Config()
        if self.s3.use_unsigned_session:
            raise WarehouseLocationError(f"the warehouse on {self.location} is written to: it needs signed requests "
                                         "(use_unsigned_session is for public buckets that are only read)")
        self.tables_root = f"{self.location}/tables"  # type: ignore[assignment]
        self.db_path = None  # type: ignore[assignment]
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Warehouse({self.location!r})"

    # ----------------------------------------------------------------- S3 plumbing
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.s3.client()
        return self._client

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _table_key(self, table: str, *, stage: str | None = None) -> str:
        if not _TABLE.match(table):
            raise ValueError(f"invalid table name {table!r}")
        return self._key("tables", table, *([f"stage={stage}"] if stage is not None else []))

    def _partition_key(self, table: str, snapshot: str, *, stage: str | None = None) -> str:
        validate_snapshot_name(snapshot)
        return f"{self._table_key(table, stage=stage)}/snapshot={snapshot}/part-0.parquet"

    def _credentials(self) -> Any:
        import boto3

        creds = boto3.session.Session(profile_name=self.s3.profile_name).get_credentials()
        if creds is None:
            raise WarehouseLocationError(f"no AWS credentials for the warehouse on {self.location} (environment, "
                                         "~/.aws profile or instance role)")
        return creds.get_frozen_credentials()

    def check(self) -> None:
        """Fail with a clear message when the bucket is missing, the endpoint unreachable or the credentials refused."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"S3 endpoint {self.s3.endpoint_url}" if self.s3.endpoint_url else "AWS S3"
        try:
            dc_replace(self.s3, max_attempts=2).client().head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise WarehouseLocationError(f"no AWS credentials for the warehouse on {self.location}") from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise WarehouseLocationError(f"the warehouse bucket {self.bucket!r} does not exist on {where} "
                                             f"(location {self.location}): create it first") from None
            if code in {"403", "AccessDenied", "Forbidden"}:
                raise WarehouseLocationError(f"access to the warehouse bucket {self.bucket!r} on {where} is denied "
                                             "for these credentials") from None
            raise WarehouseLocationError(f"the warehouse bucket {self.bucket!r} on {where}: S3 error {code}") from None
        except BotoCoreError as exc:
            raise WarehouseLocationError(f"cannot reach {where} for the warehouse on {self.location}: "
                                         f"{type(exc).__name__}") from None

    def _missing(self, table: str, snapshot: str, url: str) -> FileNotFoundError:
        return FileNotFoundError(f"table {table!r} has no rows for snapshot {snapshot!r} yet ({url}): materialize it first")

    @staticmethod
    def _is_not_found(exc: Exception) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code", "")) in {
            "404", "NoSuchKey", "NotFound"}

    def storage_options(self) -> dict[str, str]:
        """polars / object_store options for this bucket (credentials included: never log them)."""
        creds = self._credentials()
        opts = {"aws_access_key_id": creds.access_key, "aws_secret_access_key": creds.secret_key,
                "aws_region": self.s3.region_name or "us-east-1"}
        if creds.token:
            opts["aws_session_token"] = creds.token
        if self.s3.endpoint_url:
            opts["aws_endpoint_url"] = self.s3.endpoint_url
            if self.s3.endpoint_url.startswith("http://"):
                opts["aws_allow_http"] = "true"
        return opts

    def configure_connection(self, con: Any) -> None:
        """Let a DuckDB connection read this bucket: load httpfs (from the offline wheel) and create a temporary
        secret scoped to the bucket. The secret lives in the connection only."""
        platform = con.execute("PRAGMA platform").fetchone()[0]
        ext = httpfs_extension_path(platform)
        try:
            con.execute(f"LOAD {_sql_str(str(ext))}" if ext else "LOAD httpfs")
        except Exception as exc:  # noqa: BLE001 - say what to install
            raise WarehouseLocationError(f"DuckDB cannot load httpfs for the warehouse on {self.location}: install "
                                         f"the duckdb-ext-httpfs wheel matching duckdb ({type(exc).__name__})") from None
        creds = self._credentials()
        fields = [f"KEY_ID {_sql_str(creds.access_key)}", f"SECRET {_sql_str(creds.secret_key)}",
                  f"REGION {_sql_str(self.s3.region_name or 'us-east-1')}", f"SCOPE {_sql_str(f's3://{self.bucket}')}"]
        if creds.token:
            fields.append(f"SESSION_TOKEN {_sql_str(creds.token)}")
        if self.s3.endpoint_url:
            endpoint = urlsplit(self.s3.endpoint_url)
            fields += [f"ENDPOINT {_sql_str(endpoint.netloc)}", "URL_STYLE 'path'",
                       f"USE_SSL {'false' if endpoint.scheme == 'http' else 'true'}"]
        try:
            con.execute(f"CREATE OR REPLACE TEMPORARY SECRET danqing_warehouse (TYPE s3, {', '.join(fields)})")
        except Exception as exc:  # noqa: BLE001 - never echo the statement: it holds the credentials
            raise WarehouseLocationError(f"could not configure DuckDB for {self.location}: {type(exc).__name__}") from None

    # ----------------------------------------------------------------- paths
    def table_dir(self, table: str, *, stage: str | None = None) -> str:  # type: ignore[override]
        return self._url(self._table_key(table, stage=stage))

    def partition_path(self, table: str, snapshot: str, *, stage: str | None = None) -> str:  # type: ignore[override]
        """The partition's `s3://` URL: DuckDB reads it after `configure_connection`."""
        return self._url(self._partition_key(table, snapshot, stage=stage))

    def glob(self, table: str) -> str:
        if table == LEDGER:
            return f"{self.table_dir(LEDGER)}/stage=*/snapshot=*/*.parquet"
        return f"{self.table_dir(table)}/snapshot=*/*.parquet"

    def exists(self, table: str, snapshot: str, *, stage: str | None = None) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._partition_key(table, snapshot, stage=stage))
        except Exception as exc:  # noqa: BLE001
            if self._is_not_found(exc):
                return False
            raise
        return True

    def snapshots(self, table: str) -> list[str]:
        """Partitions of `table` that have been written."""
        return sorted(self._subfolders(self._table_key(table), "snapshot="))

    def _subfolders(self, key: str, prefix: str) -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{key}/{prefix}", Delimiter="/"):
            out += [p["Prefix"][len(key) + 1 + len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return out

    # ----------------------------------------------------------------- writes
    @contextmanager
    def staged(self, table: str, snapshot: str, *, stage: str | None = None) -> Iterator[StagedPartition]:
        """A local temporary file for `table`'s partition of `snapshot`; `commit()` uploads it (atomic on S3)."""
        key = self._partition_key(table, snapshot, stage=stage)
        folder = self.home / UPLOADS
        folder.mkdir(parents=True, exist_ok=True)
        remove_orphans(folder)
        staged = S3StagedPartition(self, table, self._url(key), folder / temp_name("part-0.parquet"), stage)
        try:
            yield staged
        finally:
            staged.path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- reads
    def _get(self, table: str, snapshot: str, *, stage: str | None = None) -> bytes:
        key = self._partition_key(table, snapshot, stage=stage)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            if self._is_not_found(exc):
                raise self._missing(table, snapshot, self._url(key)) from None
            raise

    def read(self, table: str, snapshot: str, *, stage: str | None = None, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self._get(table, snapshot, stage=stage)), columns=columns)

    def iter_batches(self, table: str, snapshot: str, *, columns: list[str] | None = None, batch_rows: int = 65_536,
                     stage: str | None = None) -> Iterator[pl.DataFrame]:
        """Downloads the object to local scratch, then reads it one row group at a time (memory bounded by the row
        group); the copy is removed when the iteration ends."""
        key = self._partition_key(table, snapshot, stage=stage)
        folder = self.home / DOWNLOADS
        folder.mkdir(parents=True, exist_ok=True)
        remove_orphans(folder)
        local = folder / temp_name("part-0.parquet")
        try:
            try:
                self.client.download_file(self.bucket, key, str(local))
            except Exception as exc:  # noqa: BLE001
                if self._is_not_found(exc):
                    raise self._missing(table, snapshot, self._url(key)) from None
                raise
            yield from iter_parquet_file(local, columns, batch_rows)
        finally:
            local.unlink(missing_ok=True)

    def read_rejections(self, snapshot: str, *, stages: list[str] | None = None) -> pl.DataFrame:
        from danqing_assets.lib.warehouse import LEDGER_SCHEMA

        frames = []
        for stage in sorted(self._subfolders(self._table_key(LEDGER), "stage=")):
            if stages is not None and stage not in stages:
                continue
            try:
                frames.append(self.read(LEDGER, snapshot, stage=stage))
            except FileNotFoundError:
                continue
        if not frames:
            return pl.DataFrame(schema=LEDGER_SCHEMA)
        return pl.concat(frames, how="vertical_relaxed")

    def count(self, table: str, snapshot: str, *, where: pl.Expr | None = None) -> int | None:
        if not self.exists(table, snapshot):
            return None
        scan = pl.scan_parquet(self.partition_path(table, snapshot), storage_options=self.storage_options())
        if where is not None:
            scan = scan.filter(where)
        return scan.select(pl.len()).collect().item()

    def columns(self, table: str, snapshot: str, *, stage: str | None = None) -> list[str]:
        if not self.exists(table, snapshot, stage=stage):
            raise self._missing(table, snapshot, self.partition_path(table, snapshot, stage=stage))
        scan = pl.scan_parquet(self.partition_path(table, snapshot, stage=stage), storage_options=self.storage_options())
        return list(scan.collect_schema().names())

    # ----------------------------------------------------------------- views
    def tables(self) -> list[str]:
        """Every table with at least one partition on S3."""
        return [t for t in self._subfolders(self._key("tables"), "") if _TABLE.match(t)]

    def connect(self, *, read_only: bool = False, timeout_s: float = 60.0):
        """An in-memory DuckDB on this machine that reads the bucket, with a view per table (nothing written)."""
        import duckdb

        con = duckdb.connect(":memory:")
        try:
            self.configure_connection(con)
            for table in self.tables():
                self._create_view(con, table)
        except BaseException:
            con.close()
            raise
        return con

    def ensure_view(self, table: str) -> bool:
        return True  # views are made per session by connect(): no shared DuckDB file on S3

    def refresh_views(self) -> list[str]:
        return self.tables()


class S3StagedPartition(StagedPartition):
    """A partition staged locally; `commit()` uploads it to `final`, its s3:// URL (the object appears whole, or not
    at all)."""

    def commit(self) -> str:  # type: ignore[override]
        wh: S3Warehouse = self.wh  # type: ignore[assignment]
        pause_point(f"write_{self.table}")  # killed-run tests: stop before the upload (no-op otherwise)
        key = str(self.final)[len(f"s3://{wh.bucket}/"):]
        wh.client.upload_file(str(self.path), wh.bucket, key)
        self.committed = True
        return str(self.final)



REGISTRY_CACHE = Path(".scratch") / "registry"
"""The local mirror of the S3 registry under the local home (rebuilt from the bucket whenever a registry is made)."""


class S3SnapshotRegistry(SnapshotRegistry):
    """The snapshot registry of a warehouse on S3: its files (`<name>.json`, `<name>.warcs.parquet`) are objects under
    `<location>/snapshots/`, so any worker finds the batches. Read through a local mirror that is refreshed from the
    bucket when the registry is made and before every `add`; `add` uploads the file list first and the JSON last (the
    commit point, as locally) and writes `snapshot_batches` to the S3 warehouse."""

    def __init__(self, wh: S3Warehouse) -> None:
        super().__init__(wh.home / REGISTRY_CACHE, warehouse=wh)
        self.s3wh = wh
        self.pull()

    def _objects(self) -> dict[str, str]:
        wh = self.s3wh
        prefix = wh._key("snapshots") + "/"
        out = {}
        for page in wh.client.get_paginator("list_objects_v2").paginate(Bucket=wh.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                name = o["Key"][len(prefix):]
                if "/" not in name and name.endswith((".json", ".warcs.parquet")):
                    out[name] = o["Key"]
        return out

    def pull(self) -> None:
        """Mirror the bucket's registry locally: file lists before their JSON (the commit point)."""
        wh, objects = self.s3wh, self._objects()
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(objects, key=lambda n: n.endswith(".json")):
            tmp = self.dir / temp_name(name)
            try:
                wh.client.download_file(wh.bucket, objects[name], str(tmp))
                tmp.replace(self.dir / name)
            finally:
                tmp.unlink(missing_ok=True)
        for path in self.dir.iterdir():
            if path.is_file() and not path.name.startswith(".") and path.name not in objects:
                path.unlink(missing_ok=True)  # not (or no longer) in the bucket

    def add(self, name: str, source: str, **kwargs: Any) -> Snapshot:
        self.pull()
        snap = super().add(name, source, **kwargs)
        for file in (f"{name}.warcs.parquet", f"{name}.json"):
            if (self.dir / file).exists():
                self.s3wh.client.upload_file(str(self.dir / file), self.s3wh.bucket, self.s3wh._key("snapshots", file))
        return snap
