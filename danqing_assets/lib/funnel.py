"""The curation funnel of a snapshot, read back from the warehouse (rows per step, drops by stage and reason)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from danqing_assets.lib.reasons import REASONS_BY_STAGE
from danqing_assets.lib.warehouse import Warehouse

# (asset/table, ledger stage it writes, paper's pair count in millions at that step). Stage 2 runs before the download
# here (the paper downloaded first), so the paper's counts are not comparable step by step, only overall.
STEPS: list[tuple[str, str | None, float]] = [
    ("raw_pairs", None, 1050.0),
    ("source_selected_pairs", "source", 706.0),
    ("text_refined_pairs", "text", 397.2),
    ("fetched_images", "fetch", 475.1),
    ("visually_diversified_pairs", "image", 178.6),
    ("cross_modal_pairs", "cross_modal", 99.9),
]
# tables that keep every input row with a status: only these rows go on
KEPT_FILTER = {"fetched_images": pl.col("status") == "ok"}
PAPER_REMOVED = 0.9046


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
    for table, stage, _paper in STEPS:
        rows = wh.count(table, snapshot, where=KEPT_FILTER.get(table))
        if rows is None:
            continue
        dropped = by_stage.get(stage, {}) if stage else {}
        order = {r: i for i, r in enumerate(REASONS_BY_STAGE.get(stage or "", ()))}
        steps.append(FunnelStep(table, rows, dict(sorted(dropped.items(), key=lambda kv: order.get(kv[0], 99)))))
    return steps


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

