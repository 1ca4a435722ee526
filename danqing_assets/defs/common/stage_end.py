"""How every filtering stage ends, and how every table is published: one code path, so a new stage cannot forget a step.

A stage's middle differs (scores, SQL, dedup); its end is always the same, in this order:

1. split the decided rows into kept and rejected (`reason` NULL = kept);
2. validate everything it will publish: the kept table against its pandera schema, every side table, the ledger part
   against the one ledger schema, and the ledger identity (every pair that entered is kept or rejected, exactly once);
3. only if every blocking check passed, write the tables and the ledger part (each renamed into place), so a failing
   table never reaches the warehouse views and the previous good partition stays;
4. return the funnel metadata (rows in/out, `dropped_<reason>` for every registered reason, the paper's rate),
   previews of kept and rejected rows, truth precision/recall when a labelled sample is configured, and the checks.

Partitions larger than memory end the same way without holding their rows: `publish_chunks` validates and writes a
score table chunk by chunk, and `finish_stage_out_of_core` has DuckDB write the kept table and the ledger part from a
decided view over Parquet files (under a memory limit, spilling to disk), then validates the written files in
batches, checks pair_id uniqueness and the ledger identity in DuckDB, and only then renames both into place.

`versioned` folds the stage's SQL text and its Config defaults into `code_version`, so changing a query or a default
marks the asset stale in the UI and shows in the reviewed asset-spec snapshot, without anyone remembering to bump it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import dagster as dg
import pandera.polars as pa
import polars as pl

from danqing_assets.defs.common.metadata import (
    check_from_validation,
    ledger_identity_check,
    ledger_identity_result,
    stage_metadata,
    stage_metadata_from_counts,
    truth_quality_metadata,
)
from danqing_assets.lib import schemas
from danqing_assets.lib.sql import load_sql, parquet_literal
from danqing_assets.lib.stages import Stage
from danqing_assets.lib.warehouse import LEDGER, LEDGER_SCHEMA, Warehouse, iter_parquet_file


def config_defaults(config_cls: type[dg.Config]) -> dict[str, Any]:
    """Field name -> default value of a Dagster Config class (default factories called)."""
    out: dict[str, Any] = {}
    for name, field in config_cls.model_fields.items():
        if field.default_factory is not None:
            out[name] = field.default_factory()
        else:
            out[name] = field.get_default()
    return out


def versioned(base: str, *, sql: Sequence[str] = (), config: type[dg.Config] | None = None) -> str:
    """`code_version` = the hand-set base (bump it when Python logic changes) + a hash of the stage's SQL files and
    its Config defaults, e.g. "2.3f9a1c0e"."""
    h = hashlib.sha256()
    for name in sql:
        h.update(name.encode())
        h.update(load_sql(name).replace("\r\n", "\n").encode("utf-8"))
    if config is not None:
        h.update(json.dumps(config_defaults(config), sort_keys=True, default=repr).encode())
    return f"{base}.{h.hexdigest()[:8]}"


def stage_check_specs(stage: Stage, *, asset: str | None = None) -> list[dg.AssetCheckSpec]:
    """The blocking checks every filtering stage runs on its output table (names: `<table>_schema`,
    `<table>_ledger_schema`, `<table>_ledger_identity`)."""
    table = asset or stage.table
    assert table is not None, f"stage {stage.group} has no output table"
    return [
        dg.AssetCheckSpec(f"{table}_schema", asset=table, blocking=True,
                          description=f"`{table}` meets its pandera schema (validated before it is written)."),
        dg.AssetCheckSpec(f"{table}_ledger_schema", asset=table, blocking=True,
                          description=f"The ledger part of stage `{stage.ledger}` meets the one ledger schema."),
        dg.AssetCheckSpec(f"{table}_ledger_identity", asset=table, blocking=True,
                          description=f"Every pair entering stage `{stage.ledger}` is either in `{table}` or in the "
                          "ledger, exactly once: nothing is lost silently."),
    ]


def table_check_spec(table: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(f"{table}_schema", asset=table, blocking=True,
                             description=f"`{table}` meets its pandera schema (validated before it is written).")


@dataclass
class Table:
    """A table a step publishes: validated first, written only when every blocking check of the step passed."""

    name: str
    frame: pl.DataFrame
    schema: type[pa.DataFrameModel]


def _refuse(step: str, failures: list[tuple[str, schemas.ValidationOutcome | dg.AssetCheckResult]]) -> dg.Failure:
    lines, md = [], {}
    for name, outcome in failures:
        summary = getattr(outcome, "summary", None) or json.dumps(
            {k: getattr(v, "value", v) for k, v in (getattr(outcome, "metadata", None) or {}).items()}, default=str)
        lines.append(f"- {name}")
        md[name] = dg.MetadataValue.md(summary or "_failed_")
    return dg.Failure(
        description=f"{step}: blocking checks failed, nothing was written (the previous partition stays):\n"
        + "\n".join(lines),
        metadata=md,
    )


def publish(wh: Warehouse, snapshot: str, tables: Sequence[Table], *, step: str) -> list[dg.AssetCheckResult]:
    """Validate every table, then write them all; raise `dg.Failure` (writing nothing) when one fails its schema.
    Returns the passed `<table>_schema` check results (each table is the asset of the same name)."""
    outcomes = [(f"{t.name}_schema", schemas.validate(t.schema, t.frame)) for t in tables]
    failed = [(n, o) for n, o in outcomes if not o.passed]
    if failed:
        raise _refuse(step, failed)
    for t in tables:
        wh.write(t.name, snapshot, t.frame)
    return [check_from_validation(n, o, asset_key=t.name) for t, (n, o) in zip(tables, outcomes)]


def ledger_part(stage: Stage, snapshot: str, rejected: pl.DataFrame) -> pl.DataFrame:
    """The rows a stage adds to `rejected_pairs`, in the ledger's exact column order and types."""
    df = rejected.select("pair_id", "reason", "detail").with_columns(
        pl.lit(snapshot, dtype=pl.String).alias("snapshot"), pl.lit(stage.ledger, dtype=pl.String).alias("stage")
    )
    return df.select([pl.col(c).cast(t) for c, t in LEDGER_SCHEMA.items()])


def finish_stage(
    *,
    stage: Stage,
    snapshot: str,
    wh: Warehouse,
    entering: pl.Series,
    decided: pl.DataFrame,
    kept_schema: type[pa.DataFrameModel],
    preview_columns: list[str],
    drop_columns: Sequence[str] = (),
    table_frame: pl.DataFrame | None = None,
    side_tables: Sequence[Table] = (),
    truth_path: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
    asset_key: str | None = None,
) -> dg.MaterializeResult:
    """End a filtering stage (see the module docstring).

    entering: pair ids that entered the stage. decided: one row per decided pair with the columns to publish plus
    `reason` (NULL = kept) and `detail`. drop_columns: working columns not published. table_frame: publish this
    instead of the kept rows (for tables that keep every row with a status, like `fetched_images`).
    side_tables: other tables the same step writes, validated with the rest before anything is written.
    """
    assert stage.table is not None and stage.ledger is not None, f"{stage.group} is not a filtering stage"
    table = asset_key or stage.table
    is_kept = pl.col("reason").is_null()
    kept = decided.filter(is_kept).drop(["reason", "detail", *[c for c in drop_columns if c in decided.columns]])
    rejected = decided.filter(~is_kept)
    ledger = ledger_part(stage, snapshot, rejected)
    published = kept if table_frame is None else table_frame

    outcomes: list[tuple[str, Any]] = [
        (f"{table}_schema", schemas.validate(kept_schema, published)),
        (f"{table}_ledger_schema", schemas.validate(schemas.Rejections, ledger)),
        *[(f"{t.name}_schema", schemas.validate(t.schema, t.frame)) for t in side_tables],
    ]
    identity = ledger_identity_check(f"{table}_ledger_identity", entering, kept, rejected, asset_key=table)
    failed = [(n, o) for n, o in outcomes if not o.passed] + ([] if identity.passed else [(identity.check_name, identity)])
    if failed:
        raise _refuse(f"{table} ({snapshot})", failed)

    for t in side_tables:
        wh.write(t.name, snapshot, t.frame)
    wh.write(table, snapshot, published)
    wh.write(LEDGER, snapshot, ledger, stage=stage.ledger)

    metadata = stage_metadata(
        stage=stage.ledger,
        reasons=stage.reasons,
        rows_in=entering.len(),
        kept=kept,
        rejected=rejected,
        raw_rows=wh.count("raw_pairs", snapshot),
        preview_columns=preview_columns,
    )
    if truth_path:
        metadata.update(truth_quality_metadata(stage.ledger, entering, rejected, truth_path))
    metadata.update(extra_metadata or {})
    checks = [check_from_validation(n, o, asset_key=table) for n, o in outcomes if n.startswith(table)]
    return dg.MaterializeResult(asset_key=table, metadata=metadata, check_results=[*checks, identity])


# ---------------------------------------------------------------------------------------------------------------------
# The same, for partitions larger than memory.


def _merge(outcomes: Sequence[schemas.ValidationOutcome]) -> schemas.ValidationOutcome:
    failed = [o for o in outcomes if not o.passed]
    if not failed:
        return schemas.ValidationOutcome(True, 0, "")
    return schemas.ValidationOutcome(False, sum(o.failures for o in failed), "\n\n".join(o.summary for o in failed[:3]))


def _unique_outcome(con: Any, path: Path, column: str = "pair_id") -> schemas.ValidationOutcome:
    """`column` unique over the whole file (a chunk's own check sees only the chunk)."""
    dups = con.execute(
        f'SELECT count(*) - count(DISTINCT "{column}") FROM read_parquet({parquet_literal(path)})'
    ).fetchone()[0]
    if not dups:
        return schemas.ValidationOutcome(True, 0, "")
    return schemas.ValidationOutcome(False, int(dups), f"| {column} | unique across chunks | {dups} repeated values |")


def validate_file(schema: type[pa.DataFrameModel], path: Path, con: Any, *, batch_rows: int = 50_000,
                  unique: Sequence[str] = ("pair_id",)) -> schemas.ValidationOutcome:
    """Validate a written Parquet file in batches (pandera per batch, uniqueness over the file in DuckDB)."""
    outcomes = [schemas.validate(schema, frame) for frame in iter_parquet_file(path, None, batch_rows)]
    outcomes += [_unique_outcome(con, path, c) for c in unique]
    return _merge(outcomes)


def publish_chunks(wh: Warehouse, snapshot: str, name: str, schema: type[pa.DataFrameModel],
                   columns: Mapping[str, pl.DataType], chunks: Iterable[pl.DataFrame], con: Any, *,
                   step: str, on_chunk: Any = None) -> tuple[dg.AssetCheckResult, int]:
    """`publish` for one table that arrives in chunks: each chunk is validated and appended to a staged file, pair_id
    uniqueness is checked over the file, and only when everything passed is the file renamed into place (else
    `dg.Failure`, nothing written). Returns the `<name>_schema` check and the rows written."""
    outcomes = []
    with wh.writer(name, snapshot, columns) as out:
        for chunk in chunks:
            outcome = schemas.validate(schema, chunk)
            if not outcome.passed:
                raise _refuse(step, [(f"{name}_schema", outcome)])
            outcomes.append(outcome)
            out.write(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
        out.close()
        if out.rows == 0:
            outcomes.append(schemas.validate(schema, pl.DataFrame(schema=dict(columns))))
        else:
            outcomes.append(_unique_outcome(con, out.path))
        merged = _merge(outcomes)
        if not merged.passed:
            raise _refuse(step, [(f"{name}_schema", merged)])
        rows = out.rows
        out.commit()
    return check_from_validation(f"{name}_schema", merged, asset_key=name), rows


def finish_stage_out_of_core(
    *,
    stage: Stage,
    snapshot: str,
    wh: Warehouse,
    con: Any,
    entering: str,
    decided: str,
    kept_columns: Sequence[str],
    order_by: str | None,
    kept_schema: type[pa.DataFrameModel],
    preview_columns: list[str],
    truth_path: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> dg.MaterializeResult:
    """`finish_stage` for a stage whose decided rows are a DuckDB relation over Parquet files, never a frame.

    entering: a relation (SQL) with the `pair_id` of every pair that entered the stage. decided: a view with
    `kept_columns`, `reason` (NULL = kept), `detail` and what `order_by` names. The kept table (in `order_by` order)
    and the ledger part are written by DuckDB to staged files, validated in batches, checked (pair_id unique, the
    ledger identity) and renamed into place only when every blocking check passed.
    """
    assert stage.table is not None and stage.ledger is not None, f"{stage.group} is not a filtering stage"
    table = stage.table
    cols = ", ".join(f'"{c}"' for c in kept_columns)
    snap, ledger_stage = snapshot.replace("'", "''"), stage.ledger.replace("'", "''")
    order = f" ORDER BY {order_by}" if order_by else ""  # None: `decided` is in the wanted order, written as read
    with wh.staged(table, snapshot) as kept_out, wh.staged(LEDGER, snapshot, stage=stage.ledger) as ledger_out:
        con.execute(f"COPY (SELECT {cols} FROM {decided} WHERE reason IS NULL{order}) "
                    f"TO {parquet_literal(kept_out.path)} (FORMAT PARQUET, COMPRESSION ZSTD)")
        con.execute(
            f"COPY (SELECT '{snap}' AS snapshot, CAST(pair_id AS VARCHAR) AS pair_id, '{ledger_stage}' AS stage, "
            f"CAST(reason AS VARCHAR) AS reason, CAST(detail AS VARCHAR) AS detail FROM {decided} "
            f"WHERE reason IS NOT NULL{order}) TO {parquet_literal(ledger_out.path)} "
            "(FORMAT PARQUET, COMPRESSION ZSTD)")
        kept_rel, ledger_rel = f"read_parquet({parquet_literal(kept_out.path)})", f"read_parquet({parquet_literal(ledger_out.path)})"
        outcomes: list[tuple[str, Any]] = [
            (f"{table}_schema", validate_file(kept_schema, kept_out.path, con)),
            (f"{table}_ledger_schema", validate_file(schemas.Rejections, ledger_out.path, con)),
        ]
        n_in, n_kept, n_rejected, overlap, missing, extra = con.execute(f"""
            WITH e AS (SELECT pair_id FROM {entering}), k AS (SELECT pair_id FROM {kept_rel}),
                 r AS (SELECT pair_id FROM {ledger_rel})
            SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM k), (SELECT count(*) FROM r),
                   (SELECT count(*) FROM (SELECT pair_id FROM k INTERSECT SELECT pair_id FROM r)),
                   (SELECT count(*) FROM (SELECT pair_id FROM e EXCEPT (SELECT pair_id FROM k UNION SELECT pair_id FROM r))),
                   (SELECT count(*) FROM ((SELECT pair_id FROM k UNION SELECT pair_id FROM r) EXCEPT SELECT pair_id FROM e))
        """).fetchone()
        identity = ledger_identity_result(
            f"{table}_ledger_identity", passed=(n_kept + n_rejected == n_in and not overlap and not missing and not extra),
            rows_in=n_in, kept=n_kept, rejected=n_rejected, asset_key=table)
        failed = [(n, o) for n, o in outcomes if not o.passed] + ([] if identity.passed else [(identity.check_name, identity)])
        if failed:
            raise _refuse(f"{table} ({snapshot})", failed)
        kept_out.commit()
        ledger_out.commit()

    kept_rel = f"read_parquet({parquet_literal(kept_out.final)})"
    present = [c for c in preview_columns if c in kept_columns]
    sel = ", ".join(f'"{c}"' for c in present)
    kept_head = con.execute(f"SELECT {sel or 'pair_id'} FROM {kept_rel} LIMIT 8").pl()
    ledger_rel = f"read_parquet({parquet_literal(ledger_out.final)})"
    counts = dict(con.execute(f"SELECT reason, count(*) FROM {ledger_rel} GROUP BY reason").fetchall())
    # two rejected rows per reason (smallest pair_id first): a top-2 per reason on the narrow ledger file, then the
    # preview columns of those few rows (a window over the decided rows would hold them all)
    sample_ids = [pid for reason in sorted(counts, key=str) for (pid,) in con.execute(
        f"SELECT pair_id FROM {ledger_rel} WHERE reason IS NOT DISTINCT FROM ? ORDER BY pair_id LIMIT 2", [reason]
    ).fetchall()]
    rejected_sample = con.execute(
        f"SELECT pair_id, reason, {sel + ', ' if sel else ''}detail FROM {decided} "
        "WHERE reason IS NOT NULL AND list_contains(?, pair_id) ORDER BY reason, pair_id", [sample_ids]).pl()
    metadata = stage_metadata_from_counts(
        stage=stage.ledger, reasons=stage.reasons, rows_in=n_in, kept_rows=n_kept, reason_counts=counts,
        kept_head=kept_head, rejected_sample=rejected_sample, raw_rows=wh.count("raw_pairs", snapshot),
        preview_columns=preview_columns)
    if truth_path:  # a labelled sample (tests, calibration): the ledger part and the entering ids are read whole
        entering_ids = con.execute(f"SELECT pair_id FROM {entering}").pl()["pair_id"]
        rejected = wh.read(LEDGER, snapshot, stage=stage.ledger)
        metadata.update(truth_quality_metadata(stage.ledger, entering_ids, rejected, truth_path))
    metadata.update(extra_metadata or {})
    checks = [check_from_validation(n, o, asset_key=table) for n, o in outcomes]
    return dg.MaterializeResult(asset_key=table, metadata=metadata, check_results=[*checks, identity])
