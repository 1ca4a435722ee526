"""The warehouse: one Parquet file per (table, snapshot), and a DuckDB file of views over them.

Layout under `home` (`$DANQING_HOME`, default `./.danqing`)::

    tables/<table>/snapshot=<name>/part-0.parquet                  # one file per asset and snapshot
    tables/rejected_pairs/stage=<stage>/snapshot=<name>/part-0.parquet   # the ledger, one part per stage
    warehouse.duckdb                                               # views named after the tables

Why this shape: DuckDB lets one process at a time write a database file, but materializing two snapshots at once
must work. Pipeline steps therefore never write the database: a step writes its Parquet file under a temporary name
and renames it into place (atomic on POSIX), which replaces exactly that snapshot's rows; a temporary that a killed
writer left is removed by the next write of the same partition (`lib/tempfiles.py`). The DuckDB file only holds
views over glob patterns, created once per table (retrying briefly when another process holds the lock), so
`duckdb $DANQING_HOME/warehouse.duckdb "select * from source_selected_pairs"` always sees every snapshot.

The same tables can live on S3 instead (`lib/warehouse_s3.S3Warehouse`, `WarehouseResource.location`): one object
per partition, uploaded when committed. Code that hands partition paths to DuckDB calls `configure_connection(con)`
first and asks `exists`/`columns` here rather than the file system, so it works in both places.

Partitions larger than memory: `iter_batches` reads a partition in bounded record batches, `writer` appends frames to
one Parquet file chunk by chunk, and `staged` hands a temporary path to any other streaming writer (a DuckDB `COPY`);
all three end the same way as `write`: nothing is visible until `commit()` renames the temporary into place, and a
writer that fails (or never commits) leaves the previous partition as it was.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from danqing_assets.lib.faults import pause_point
from danqing_assets.lib.tempfiles import remove_orphans, temp_name

log = logging.getLogger(__name__)

LEDGER = "rejected_pairs"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TABLE = re.compile(r"^[a-z][a-z0-9_]*$")

LEDGER_SCHEMA = {
    "snapshot": pl.String,
    "pair_id": pl.String,
    "stage": pl.String,
    "reason": pl.String,
    "detail": pl.String,
}


def validate_snapshot_name(name: str) -> str:
    """Snapshot names become directory names and partition keys: letters, digits, `_`, `.`, `-` only."""
    if not isinstance(name, str) or not _NAME.match(name) or name in {".", ".."}:
        raise ValueError(
            f"invalid snapshot name {name!r}: use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def default_home() -> Path:
    return Path(os.environ.get("DANQING_HOME") or ".danqing")


class Warehouse:
    """Parquet tables per snapshot plus a DuckDB file of views. Safe for concurrent writers of different snapshots."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = Path(home if home is not None else default_home()).expanduser().resolve()
        self.tables_root = self.home / "tables"
        self.db_path = self.home / "warehouse.duckdb"

    # ----------------------------------------------------------------- paths
    def table_dir(self, table: str, *, stage: str | None = None) -> Path:
        if not _TABLE.match(table):
            raise ValueError(f"invalid table name {table!r}")
        base = self.tables_root / table
        return base / f"stage={stage}" if stage is not None else base

    def partition_path(self, table: str, snapshot: str, *, stage: str | None = None) -> Path:
        validate_snapshot_name(snapshot)
        return self.table_dir(table, stage=stage) / f"snapshot={snapshot}" / "part-0.parquet"

    def glob(self, table: str) -> str:
        """The glob a view reads: every snapshot (and, for the ledger, every stage) of `table`."""
        if table == LEDGER:
            return str(self.table_dir(LEDGER) / "stage=*" / "snapshot=*" / "*.parquet")
        return str(self.table_dir(table) / "snapshot=*" / "*.parquet")

    def exists(self, table: str, snapshot: str, *, stage: str | None = None) -> bool:
        return self.partition_path(table, snapshot, stage=stage).exists()

    def snapshots(self, table: str) -> list[str]:
        """Partitions of `table` that have been written."""
        root = self.table_dir(table)
        return sorted(p.name.split("=", 1)[1] for p in root.glob("snapshot=*") if (p / "part-0.parquet").exists())

    def columns(self, table: str, snapshot: str, *, stage: str | None = None) -> list[str]:
        """The column names of `table`'s partition for `snapshot` (read from the Parquet footer)."""
        import pyarrow.parquet as pq

        path = self.partition_path(table, snapshot, stage=stage)
        if not path.exists():
            raise FileNotFoundError(
                f"table {table!r} has no rows for snapshot {snapshot!r} yet ({path}): materialize it first"
            )
        return list(pq.read_schema(path).names)

    def configure_connection(self, con) -> None:
        """Let a DuckDB connection read `partition_path(...)`: nothing to do for local files (the S3 warehouse loads
        httpfs and a secret, `lib/warehouse_s3.py`)."""

    # ----------------------------------------------------------------- writes
    def write(self, table: str, snapshot: str, df: pl.DataFrame, *, stage: str | None = None) -> Path:
        """Replace `table`'s rows for `snapshot` with `df` (atomically), and make sure the view exists."""
        if "snapshot" not in df.columns:
            df = df.with_columns(pl.lit(snapshot, dtype=pl.String).alias("snapshot"))
        with self.staged(table, snapshot, stage=stage) as out:
            df.write_parquet(out.path, compression="zstd", statistics=True)
            return out.commit()

    @contextmanager
    def staged(self, table: str, snapshot: str, *, stage: str | None = None) -> Iterator[StagedPartition]:
        """A temporary file beside `table`'s partition for `snapshot`, for any writer that streams into a path (a
        DuckDB `COPY ... TO`, a Parquet writer): `commit()` renames it into place and makes sure the view exists;
        leaving the block without committing, or with an exception, removes it and keeps the previous partition."""
        path = self.partition_path(table, snapshot, stage=stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent)  # what an earlier writer killed mid-write left (see lib/tempfiles.py)
        staged = StagedPartition(self, table, path, path.parent / temp_name(path.name), stage)
        try:
            yield staged
        finally:
            staged.path.unlink(missing_ok=True)

    @contextmanager
    def writer(self, table: str, snapshot: str, schema: Mapping[str, pl.DataType], *,
               stage: str | None = None) -> Iterator[PartitionWriter]:
        """Write `table`'s partition for `snapshot` chunk by chunk (`PartitionWriter.write`), with the columns and
        types of `schema` (a `snapshot` column is added when a chunk lacks it); nothing is visible before `commit()`.
        A partition with no chunk is an empty file with `schema`'s columns."""
        with self.staged(table, snapshot, stage=stage) as out:
            w = PartitionWriter(out, snapshot, schema)
            try:
                yield w
            finally:
                w.close()

    def write_rejections(self, stage: str, snapshot: str, df: pl.DataFrame) -> Path:
        """Replace this stage's part of the `rejected_pairs` ledger for `snapshot`."""
        df = df.with_columns(
            pl.lit(snapshot, dtype=pl.String).alias("snapshot"), pl.lit(stage, dtype=pl.String).alias("stage")
        )
        if "detail" not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias("detail"))
        df = df.select([pl.col(c).cast(t) for c, t in LEDGER_SCHEMA.items()])
        return self.write(LEDGER, snapshot, df, stage=stage)

    # ----------------------------------------------------------------- reads
    def read(self, table: str, snapshot: str, *, stage: str | None = None, columns: list[str] | None = None) -> pl.DataFrame:
        path = self.partition_path(table, snapshot, stage=stage)
        if not path.exists():
            raise FileNotFoundError(
                f"table {table!r} has no rows for snapshot {snapshot!r} yet ({path}): materialize it first"
            )
        return pl.read_parquet(path, columns=columns)

    def iter_batches(self, table: str, snapshot: str, *, columns: list[str] | None = None, batch_rows: int = 65_536,
                     stage: str | None = None) -> Iterator[pl.DataFrame]:
        """`table`'s rows for `snapshot` as frames of at most `batch_rows` rows, in file order, read one Parquet row
        group at a time (memory bounded by the row group, not the partition)."""
        path = self.partition_path(table, snapshot, stage=stage)
        if not path.exists():
            raise FileNotFoundError(
                f"table {table!r} has no rows for snapshot {snapshot!r} yet ({path}): materialize it first"
            )
        yield from iter_parquet_file(path, columns, batch_rows)

    def read_rejections(self, snapshot: str, *, stages: list[str] | None = None) -> pl.DataFrame:
        """The ledger rows of `snapshot`, from the given stages (default: all that have written)."""
        root = self.table_dir(LEDGER)
        frames = []
        for stage_dir in sorted(root.glob("stage=*")) if root.exists() else []:
            stage = stage_dir.name.split("=", 1)[1]
            if stages is not None and stage not in stages:
                continue
            path = stage_dir / f"snapshot={snapshot}" / "part-0.parquet"
            if path.exists():
                frames.append(pl.read_parquet(path))
        if not frames:
            return pl.DataFrame(schema=LEDGER_SCHEMA)
        return pl.concat(frames, how="vertical_relaxed")

    def count(self, table: str, snapshot: str, *, where: pl.Expr | None = None) -> int | None:
        """Rows of `table` for `snapshot` (matching `where`), or None when it has not been written."""
        path = self.partition_path(table, snapshot)
        if not path.exists():
            return None
        scan = pl.scan_parquet(path)
        if where is not None:
            scan = scan.filter(where)
        return scan.select(pl.len()).collect().item()

    # ----------------------------------------------------------------- views
    def connect(self, *, read_only: bool = False, timeout_s: float = 60.0):
        """Open the warehouse DuckDB file, waiting while another process holds its write lock."""
        import duckdb

        self.home.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.db_path), read_only=read_only)
            except duckdb.IOException as exc:  # "Could not set lock on file": another process has it open
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def ensure_view(self, table: str) -> bool:
        """Create the view for `table` if it is missing. Returns False (and logs) when the lock could not be had."""
        marker = self.home / ".views" / table
        if marker.exists() and self.db_path.exists():
            return True
        try:
            con = self.connect(timeout_s=30.0)
        except Exception as exc:  # noqa: BLE001 - the Parquet data is written; the view can be made later
            log.warning("could not create view %s in %s: %s (run `danqing warehouse refresh-views`)", table, self.db_path, exc)
            return False
        try:
            self._create_view(con, table)
        finally:
            con.close()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return True

    def _create_view(self, con, table: str) -> None:
        pattern = self.glob(table).replace("'", "''")
        con.execute(
            f"CREATE OR REPLACE VIEW {table} AS "  # table names are validated identifiers
            f"SELECT * FROM read_parquet('{pattern}', union_by_name = true, hive_partitioning = false)"
        )

    def refresh_views(self) -> list[str]:
        """(Re)create a view for every table that has data. Returns the table names."""
        names = []
        if self.tables_root.exists():
            for d in sorted(self.tables_root.iterdir()):
                if d.is_dir() and _TABLE.match(d.name) and any(d.rglob("*.parquet")):
                    names.append(d.name)
        con = self.connect()
        try:
            for name in names:
                self._create_view(con, name)
        finally:
            con.close()
        for name in names:
            (self.home / ".views").mkdir(parents=True, exist_ok=True)
            (self.home / ".views" / name).touch()
        return names


def iter_parquet_tables(path: Path, columns: list[str] | None, batch_rows: int) -> Iterator[Any]:
    """A Parquet file's rows as Arrow tables of at most `batch_rows` rows, read one row group at a time (pyarrow's
    `iter_batches` over the same file kept ~0.3 GB more resident: 4.2 M captions in 65 row groups); nothing for a file
    without rows."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False)
    try:
        for group in range(pf.num_row_groups):
            table = pf.read_row_group(group, columns=columns, use_threads=False)
            for start in range(0, table.num_rows, batch_rows):
                yield table.slice(start, batch_rows)
            del table
    finally:
        pf.close()


def iter_parquet_file(path: Path, columns: list[str] | None, batch_rows: int) -> Iterator[pl.DataFrame]:
    """A Parquet file's rows as frames of at most `batch_rows` rows, one row group at a time (`iter_parquet_tables`);
    an empty file gives one empty frame with the columns."""
    import pyarrow.parquet as pq

    empty = True
    for table in iter_parquet_tables(path, columns, batch_rows):
        empty = False
        yield pl.from_arrow(table)  # type: ignore[misc]
    if empty:
        schema = pq.read_schema(path).empty_table()
        yield pl.from_arrow(schema.select(columns) if columns else schema)  # type: ignore[misc]


class StagedPartition:
    """A partition being written under a temporary name (`Warehouse.staged`)."""

    def __init__(self, wh: Warehouse, table: str, final: Path, path: Path, stage: str | None) -> None:
        self.wh, self.table, self.final, self.path, self.stage = wh, table, final, path, stage
        self.committed = False

    def commit(self) -> Path:
        """Rename the temporary into place (atomic) and make sure the table's view exists."""
        pause_point(f"write_{self.table}")  # killed-run tests: stop before the rename (no-op otherwise)
        os.replace(self.path, self.final)
        self.committed = True
        self.wh.ensure_view(LEDGER if self.stage is not None else self.table)
        return self.final


class PartitionWriter:
    """Appends frames to a staged partition (one Parquet file, one row group per chunk or more); `commit()` publishes."""

    def __init__(self, staged: StagedPartition, snapshot: str, schema: Mapping[str, pl.DataType]) -> None:
        self.staged, self.snapshot, self.schema = staged, snapshot, dict(schema)
        self.rows = 0
        self._writer = None
        self._opened = False

    @property
    def path(self) -> Path:
        return self.staged.path

    def write(self, df: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        if "snapshot" in self.schema and "snapshot" not in df.columns:
            df = df.with_columns(pl.lit(self.snapshot, dtype=pl.String).alias("snapshot"))
        table = df.select([pl.col(c).cast(t) for c, t in self.schema.items()]).to_arrow()
        if self._writer is None:
            if self._opened:
                raise RuntimeError(f"{self.staged.table}: write after close")
            self._writer = pq.ParquetWriter(self.staged.path, table.schema, compression="zstd")
            self._opened = True
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += df.height

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def commit(self) -> Path:
        if not self._opened:  # no chunk: an empty partition with the table's columns
            self.write(pl.DataFrame(schema=self.schema))
        self.close()
        return self.staged.commit()
