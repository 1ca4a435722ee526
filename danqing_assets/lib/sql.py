"""Run the project's SQL files (the top-level `sql/` folder) on DuckDB with named parameters.

Every decision a stage makes is a query in `sql/<stage>/<name>.sql` that reads the tables handed to it (polars frames
registered as views) and takes thresholds as `$named` parameters, never as formatted strings. That keeps thresholds
re-tunable with plain SQL over the stored scores.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_PARAM = re.compile(r"(?<![:$\w])\$([A-Za-z_][A-Za-z0-9_]*)")


@lru_cache(maxsize=None)
def load_sql(name: str) -> str:
    """The text of `sql/<name>` (e.g. "s1_source_selection/decide.sql")."""
    path = (SQL_DIR / name).resolve()
    if SQL_DIR not in path.parents or not path.is_file():
        raise FileNotFoundError(f"no SQL file {name!r} under {SQL_DIR}")
    return path.read_text(encoding="utf-8")


_LEXEMES = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)


def strip_literals(text: str) -> str:
    """The query with its comments removed and its string literals and quoted identifiers blanked (`''`)."""
    return _LEXEMES.sub(lambda m: "''" if m.group(0)[0] in "'\"" else " ", text)


def string_literals(text: str) -> list[str]:
    """The single-quoted string literals of a query, comments excluded, in order (`''` unescaped)."""
    body = re.sub(r"--[^\n]*|/\*.*?\*/", " ", text, flags=re.S)
    return [m.group(0)[1:-1].replace("''", "'") for m in re.finditer(r"'(?:[^']|'')*'", body)]


def sql_parameters(text: str) -> set[str]:
    """The `$named` parameters a query uses: `$x` inside a comment, a string literal or a quoted identifier is text,
    not a parameter."""
    return set(_PARAM.findall(strip_literals(text)))


def checked_sql(name: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The text of `sql/<name>` and its parameters, after checking that exactly the parameters it names are given (a
    missing or unused one is a programming error, raised before the query runs)."""
    text = load_sql(name)
    params = dict(params or {})
    wanted = sql_parameters(text)
    missing, unused = wanted - params.keys(), params.keys() - wanted
    if missing or unused:
        raise ValueError(f"{name}: missing parameters {sorted(missing)}, unused parameters {sorted(unused)}")
    return text, params


def out_of_core(*, memory_limit_mb: int, temp_directory: str | Path, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that works on Parquet files larger than `memory_limit_mb`: joins, sorts and windows spill
    to `temp_directory` (it must exist). Queries that need an order say so (ORDER BY): insertion order is not kept."""
    config: dict[str, Any] = {
        "memory_limit": f"{int(memory_limit_mb)}MB",
        "temp_directory": str(temp_directory),
        "preserve_insertion_order": False,
    }
    if threads:
        config["threads"] = int(threads)
    return duckdb.connect(":memory:", config=config)


def release_memory(con: duckdb.DuckDBPyConnection, memory_limit_mb: int) -> None:
    """Make DuckDB give the memory its last queries cached back to the OS now, before Python work that needs it: the
    memory limit is lowered to 16 MB, then set to `memory_limit_mb` (the connection's limit: DuckDB reports it
    rounded, so it is not read back). Its background threads otherwise take 1-2 s; a join of 4.2 M captions left
    ~0.5 GB resident when scoring started. Releasing is an optimisation: if DuckDB cannot shrink (pinned in-memory
    data), the limit is simply restored."""
    try:
        con.execute("SET memory_limit = '16MB'")
    except duckdb.Error:
        pass
    finally:
        con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")


def parquet_literal(path: str | Path) -> str:
    """`path` as a quoted SQL string literal, for `read_parquet(...)` and `COPY ... TO` (which take no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def run_sql(name: str, *, tables: dict[str, pl.DataFrame], params: dict[str, Any] | None = None) -> pl.DataFrame:
    """Run `sql/<name>` on an in-memory DuckDB with `tables` registered under their keys; return a polars frame.

    Exactly the parameters the query names must be given: a missing or unused one is a programming error, raised
    before the query runs.
    """
    text, params = checked_sql(name, params)
    con = duckdb.connect(":memory:")
    try:
        for key, frame in tables.items():
            con.register(key, frame.to_arrow())
        return pl.from_arrow(con.execute(text, params).fetch_arrow_table())
    finally:
        con.close()
