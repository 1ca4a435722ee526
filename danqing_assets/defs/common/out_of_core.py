"""Config fields shared by the steps that work on partitions larger than memory (stages 1 and 2)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import Field


def workers_field(what: str = "score chunks") -> Any:
    return Field(
        default=None, ge=1, le=256,
        description=f"Worker processes that {what} (1: in the step's own process); unset: one per core.",
    )


def chunk_rows_field() -> Any:
    return Field(
        default=20_000, ge=1, le=1_000_000,
        description="Rows per scored chunk: memory grows with chunk_rows x workers, not with the partition.",
    )


def memory_limit_field() -> Any:
    return Field(
        default=512, ge=64, le=1_048_576,
        description="DuckDB memory limit in MB for the decision over the Parquet files and the writing of the kept "
        "table and ledger; beyond it DuckDB spills to temp_directory. The step's process holds about 0.3 GB more "
        "(Python, Dagster), plus in stage 2 the caption near-duplicate index.",
    )


def temp_directory_field() -> Any:
    return Field(
        default=None,
        description="Folder for DuckDB's spill files and the step's scratch files (a fresh subfolder, removed after "
        "the step); unset: the warehouse's .scratch/.",
    )


@contextmanager
def stage_connection(wh: Any, step: str, *, memory_limit_mb: int, temp_directory: str | None = None) -> Iterator[tuple[Any, Any]]:
    """(DuckDB connection, scratch folder) for one step: a fresh scratch folder (`temp_directory`, else the warehouse's
    .scratch/; removed after), DuckDB limited to `memory_limit_mb` and spilling there, configured for the warehouse
    (on S3: httpfs and the bucket's secret); closed on exit."""
    from danqing_assets.lib.sql import out_of_core
    from danqing_assets.lib.tempfiles import SCRATCH_DIR, scratch_dir

    with scratch_dir(temp_directory or wh.home / SCRATCH_DIR, step) as scratch:
        con = out_of_core(memory_limit_mb=memory_limit_mb, temp_directory=scratch)
        try:
            # DuckDB's allocator keeps freed memory cached (~0.35 GB after a 1 M-row aggregate, outside memory_limit):
            # give it back to the OS after each large query, so the Python work between queries (the caption
            # near-duplicate index) does not stack on top of it
            con.execute("SET allocator_flush_threshold = '32MB'; SET allocator_background_threads = true")
            wh.configure_connection(con)
            yield con, scratch
        finally:
            con.close()
