"""How every filtering stage ends, and how every table is published: one code path, so a new stage cannot forget a step.

A stage's middle differs (scores, SQL, dedup); its end is always the same, in this order:

1. split the decided rows into kept and rejected (`reason` NULL = kept);
2. validate everything it will publish: the kept table against its pandera schema, every side table, the ledger part
   against the one ledger schema, and the ledger identity (every pair that entered is kept or rejected, exactly once);
3. only if every blocking check passed, write the tables and the ledger part (each renamed into place), so a failing
   table never reaches the warehouse views and the previous good partition stays;
4. return the funnel metadata (rows in/out, `dropped_<reason>` for every registered reason, the paper's rate),
   previews of kept and rejected rows, truth precision/recall when a labelled sample is configured, and the checks.

`versioned` folds the stage's SQL text and its Config defaults into `code_version`, so changing a query or a default
marks the asset stale in the UI and shows in the reviewed asset-spec snapshot, without anyone remembering to bump it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

import dagster as dg
import pandera.polars as pa
import polars as pl

from danqing_assets.defs.common.metadata import (
    check_from_validation,
    ledger_identity_check,
    stage_metadata,
    truth_quality_metadata,
)
from danqing_assets.lib import schemas
from danqing_assets.lib.sql import load_sql
from danqing_assets.lib.stages import Stage
from danqing_assets.lib.warehouse import LEDGER, LEDGER_SCHEMA, Warehouse


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
