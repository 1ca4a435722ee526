"""The funnel over every snapshot beside the paper's, as a table and a chart (used by the release and its card)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from danqing_assets.lib.funnel import combine_funnels, funnel
from danqing_assets.lib.stages import PAPER_RAW, PAPER_REMOVED, PIPELINE
from danqing_assets.lib.warehouse import Warehouse

# the paper's pair count after each of our steps (millions); None where the paper has no comparable step
PAPER_AFTER = {s.table: s.paper_out for s in PIPELINE if s.table}


def funnel_table(wh: Warehouse, snapshots: list[str], snapshot_of: Mapping[str, str] | None = None) -> pl.DataFrame:
    """One row per (snapshot, step): rows after the step, and the paper's count at the same step. `snapshots` are
    partition keys; with `snapshot_of` (key -> snapshot name) the batches of a snapshot are summed into its row."""
    groups: dict[str, list[str]] = {}
    for key in snapshots:
        groups.setdefault((snapshot_of or {}).get(key, key), []).append(key)
    rows = []
    for snap, keys in groups.items():
        steps, _ = combine_funnels([funnel(wh, k) for k in keys])
        for step in steps:
            rows.append({"snapshot": snap, "step": step.table, "rows": step.rows,
                         "dropped": sum(step.dropped.values()),
                         "top_reasons": ", ".join(f"{r} {n}" for r, n in sorted(step.dropped.items(), key=lambda kv: -kv[1])[:4])})
    df = pl.DataFrame(rows, schema={"snapshot": pl.String, "step": pl.String, "rows": pl.Int64, "dropped": pl.Int64,
                                    "top_reasons": pl.String})
    order = {s.table: i for i, s in enumerate(PIPELINE) if s.table}
    return df.with_columns(pl.col("step").replace_strict(order, default=99).alias("_o")).sort("snapshot", "_o").drop("_o")


def overall(table: pl.DataFrame) -> pl.DataFrame:
    """Rows per step summed over snapshots, with the share of raw pairs kept and the paper's share at that step."""
    order = [s.table for s in PIPELINE if s.table]
    agg = table.group_by("step").agg(pl.col("rows").sum(), pl.col("dropped").sum())
    raw = agg.filter(pl.col("step") == "raw_pairs")["rows"].sum()
    out = []
    for step in order:
        hit = agg.filter(pl.col("step") == step)
        if hit.is_empty():
            continue
        n = int(hit["rows"][0])
        paper = PAPER_AFTER.get(step)
        out.append({"step": step, "rows": n, "kept_of_raw": n / raw if raw else 0.0,
                    "paper_millions": paper, "paper_kept_of_raw": (paper / PAPER_RAW) if paper else None})
    return pl.DataFrame(out, schema={"step": pl.String, "rows": pl.Int64, "kept_of_raw": pl.Float64,
                                     "paper_millions": pl.Float64, "paper_kept_of_raw": pl.Float64})


def markdown(table: pl.DataFrame, total: pl.DataFrame) -> str:
    lines = ["| step | pairs (all snapshots) | kept of raw | paper (M pairs) | paper kept of raw |", "|---|---|---|---|---|"]
    for r in total.iter_rows(named=True):
        paper = f"{r['paper_millions']:.1f}" if r["paper_millions"] is not None else "-"
        pk = f"{r['paper_kept_of_raw']:.1%}" if r["paper_kept_of_raw"] is not None else "-"
        lines.append(f"| {r['step']} | {r['rows']} | {r['kept_of_raw']:.1%} | {paper} | {pk} |")
    if total.height:
        removed = 1 - total["kept_of_raw"][-1]
        lines.append(f"\nRemoved over all stages: **{removed:.2%}** of raw pairs (paper: {PAPER_REMOVED:.2%}). The "
                     "paper downloaded images before refining text; here text is refined first, so the per-step "
                     "rates compare with the paper's steps, not row for row.")
    lines.append("\n| snapshot | step | pairs after | dropped | main reasons |\n|---|---|---|---|---|")
    for r in table.iter_rows(named=True):
        lines.append(f"| {r['snapshot']} | {r['step']} | {r['rows']} | {r['dropped']} | {r['top_reasons']} |")
    return "\n".join(lines)


def chart_png(total: pl.DataFrame) -> bytes:
    """Share of raw pairs kept after each step, ours beside the paper's."""
    from danqing_assets.lib.report_images import figure_png, new_figure

    fig, ax = new_figure((8, 3.6))
    x = list(range(total.height))
    ax.plot(x, [v * 100 for v in total["kept_of_raw"]], marker="o", label="this run")
    paper = [(i, v * 100) for i, v in enumerate(total["paper_kept_of_raw"]) if v is not None]
    if paper:
        ax.plot([p[0] for p in paper], [p[1] for p in paper], marker="s", linestyle="--", label="paper (DanQing)")
    ax.set_xticks(x, total["step"].to_list(), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("% of raw pairs kept")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend()
    return figure_png(fig)
