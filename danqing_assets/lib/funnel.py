"""The curation funnel of a snapshot, read back from the warehouse (rows per step, drops by stage and reason)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from danqing_assets.lib.stages import PAPER_REMOVED, PIPELINE, reason_order
from danqing_assets.lib.warehouse import Warehouse


@dataclass
class FunnelStep:
    table: str
    rows: int
    dropped: dict[str, int]  # reason -> count, for the stage this step applies


def funnel(wh: Warehouse, snapshot: str) -> list[FunnelStep]:
    ledger = wh.read_rejections(snapshot)
    by_stage: dict[str, dict[str, int]] = {}
    if ledger.height:
        for stage, reason, n in ledger.group_by("stage", "reason").len().sort("stage", "len", descending=[False, True]).iter_rows():
            by_stage.setdefault(stage, {})[reason] = n
    steps = []
    for stage in PIPELINE:
        if stage.table is None:
            continue
        where = pl.col(stage.kept_where[0]) == stage.kept_where[1] if stage.kept_where else None
        rows = wh.count(stage.table, snapshot, where=where)
        if rows is None:
            continue
        dropped = by_stage.get(stage.ledger, {}) if stage.ledger else {}
        order = reason_order(stage.ledger) if stage.ledger else {}
        steps.append(FunnelStep(stage.table, rows, dict(sorted(dropped.items(), key=lambda kv: order.get(kv[0], 99)))))
    return steps


def combine_funnels(funnels: list[list[FunnelStep]]) -> tuple[list[FunnelStep], dict[str, int]]:
    """The funnels of several batches as one: rows and drops per reason summed per step, in pipeline order, and how
    many batches reached each step (a step's sums cover only those)."""
    order = {s.table: i for i, s in enumerate(PIPELINE) if s.table}
    rows: dict[str, int] = {}
    dropped: dict[str, dict[str, int]] = {}
    reached: dict[str, int] = {}
    for steps in funnels:
        for step in steps:
            rows[step.table] = rows.get(step.table, 0) + step.rows
            reached[step.table] = reached.get(step.table, 0) + 1
            for reason, n in step.dropped.items():
                dropped.setdefault(step.table, {})[reason] = dropped.get(step.table, {}).get(reason, 0) + n
    tables = sorted(rows, key=lambda t: order.get(t, 99))
    return [FunnelStep(t, rows[t], dropped.get(t, {})) for t in tables], {t: reached[t] for t in tables}


def format_funnel(steps: list[FunnelStep], snapshot: str) -> str:
    if not steps:
        return f"snapshot {snapshot!r}: nothing materialized yet"
    raw = steps[0].rows if steps[0].table == "raw_pairs" else None
    lines = [f"Funnel for snapshot {snapshot!r}", f"{'asset':<28}{'rows in':>10}{'rows out':>10}{'kept':>9}{'cumulative':>12}"]
    prev = None
    for step in steps:
        rows_in = prev if prev is not None else step.rows
        kept = f"{step.rows / rows_in:.1%}" if rows_in else "-"
        cum = f"{step.rows / raw:.1%}" if raw else "-"
        lines.append(f"{step.table:<28}{rows_in:>10}{step.rows:>10}{kept:>9}{cum:>12}")
        for reason, n in step.dropped.items():
            lines.append(f"    dropped {reason:<32}{n:>8}")
        prev = step.rows
    if raw:
        removed = 1 - steps[-1].rows / raw
        lines.append(f"removed so far: {removed:.2%} of raw pairs (paper, all stages: {PAPER_REMOVED:.2%})")
    return "\n".join(lines)

