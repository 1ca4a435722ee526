"""Asset metadata shared by the filtering stages: the funnel a user reads in the Dagster UI."""


from typing import Any, Iterable

import dagster as dg
import polars as pl

from danqing_assets.lib import stages


def png_markdown(alt: str, png: bytes) -> dg.MetadataValue:
    """A PNG shown inline in the UI's metadata (markdown with a data: URL)."""
    import base64

    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def markdown_table(df: pl.DataFrame, columns: Iterable[str], *, limit: int = 8, width: int = 60) -> str:
    cols = [c for c in columns if c in df.columns]
    if df.is_empty() or not cols:
        return "_(none)_"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.head(limit).select(cols).iter_rows():
        cells = []
        for v in row:
            s = "" if v is None else str(v)
            s = s.replace("|", "\\|").replace("\n", " ")
            cells.append(s if len(s) <= width else s[: width - 1] + "…")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rejected_preview(rejected: pl.DataFrame, columns: list[str], *, per_reason: int = 2) -> str:
    if rejected.is_empty():
        return "_(nothing rejected)_"
    sample = rejected.sort("pair_id").group_by("reason", maintain_order=True).head(per_reason).sort("reason")
    return markdown_table(sample, ["reason", *columns, "detail"], limit=per_reason * 30)


def stage_metadata(
    *,
    stage: str,
    reasons: Iterable[str],
    rows_in: int,
    kept: pl.DataFrame,
    rejected: pl.DataFrame,
    raw_rows: int | None,
    preview_columns: list[str],
) -> dict[str, Any]:
    """rows in/out, `dropped_<reason>` for every reason of the stage (zeros too), rates, and previews."""
    counts = dict(rejected.group_by("reason").len().iter_rows()) if not rejected.is_empty() else {}
    return stage_metadata_from_counts(stage=stage, reasons=reasons, rows_in=rows_in, kept_rows=kept.height,
                                      reason_counts=counts, kept_head=kept, rejected_sample=rejected,
                                      raw_rows=raw_rows, preview_columns=preview_columns)


def stage_metadata_from_counts(
    *,
    stage: str,
    reasons: Iterable[str],
    rows_in: int,
    kept_rows: int,
    reason_counts: dict[str, int],
    kept_head: pl.DataFrame,
    rejected_sample: pl.DataFrame,
    raw_rows: int | None,
    preview_columns: list[str],
) -> dict[str, Any]:
    """`stage_metadata` from counts and samples (a stage that never holds its rows: the first kept rows, and at least
    the first two rejected rows of each reason by pair_id)."""
    counts = reason_counts
    rows_dropped = sum(counts.values())
    reason_list = list(reasons)
    extra_reasons = sorted(set(counts) - set(reason_list))  # plug-in classifiers may add reasons
    md: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": kept_rows,
        "rows_dropped": rows_dropped,
        "rejection_rate": dg.MetadataValue.float(round(rows_dropped / rows_in, 6) if rows_in else 0.0),
        "kept_rate": dg.MetadataValue.float(round(kept_rows / rows_in, 6) if rows_in else 0.0),
        "paper_kept_rate": dg.MetadataValue.float(round(_paper_kept(stage), 4)),
    }
    if raw_rows is not None:
        md["cumulative_retention"] = dg.MetadataValue.float(round(kept_rows / raw_rows, 6) if raw_rows else 0.0)
    for reason in [*reason_list, *extra_reasons]:
        md[f"dropped_{reason}"] = int(counts.get(reason, 0))
    md["preview_kept"] = dg.MetadataValue.md(markdown_table(kept_head, preview_columns))
    md["preview_rejected"] = dg.MetadataValue.md(rejected_preview(rejected_sample, preview_columns))
    return md


def _paper_kept(ledger: str) -> float:
    try:
        kept = stages.by_ledger(ledger).paper_kept
    except KeyError:
        return float("nan")
    return float("nan") if kept is None else kept


def check_from_validation(name: str, outcome, *, asset_key: str | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=asset_key,
        passed=outcome.passed,
        metadata={"failures": outcome.failures, "failure_cases": dg.MetadataValue.md(outcome.summary or "_none_")},
    )


def truth_quality_metadata(stage: str, entering: pl.Series, rejected: pl.DataFrame, truth_path: str) -> dict[str, Any]:
    """Per-reason precision and recall against a labelled truth file, as a table plus one float per figure."""
    from danqing_assets.lib.quality import load_truth, reason_quality

    quality = reason_quality(stage=stage, entering=entering, rejected=rejected, truth=load_truth(truth_path))
    md: dict[str, Any] = {"truth_quality": dg.MetadataValue.md(markdown_table(quality, quality.columns, limit=50))}
    for row in quality.iter_rows(named=True):
        for k in ("precision", "recall"):
            if row[k] is not None:
                md[f"{k}_{row['reason']}"] = dg.MetadataValue.float(round(row[k], 4))
    return md


def ledger_identity_check(
    check_name: str, entering: pl.Series, kept: pl.DataFrame, rejected: pl.DataFrame, *, asset_key: str | None = None
) -> dg.AssetCheckResult:
    """Every pair that entered the stage is either kept or in the ledger, exactly once: nothing is lost silently."""
    kept_ids, rejected_ids, entering_ids = set(kept["pair_id"]), set(rejected["pair_id"]), set(entering)
    passed = (
        kept.height + rejected.height == entering.len()
        and kept_ids.isdisjoint(rejected_ids)
        and kept_ids | rejected_ids == entering_ids
    )
    return ledger_identity_result(check_name, passed=passed, rows_in=entering.len(), kept=kept.height,
                                  rejected=rejected.height, asset_key=asset_key)


def ledger_identity_result(check_name: str, *, passed: bool, rows_in: int, kept: int, rejected: int,
                           asset_key: str | None = None, **extra: int) -> dg.AssetCheckResult:
    """The ledger-identity check's result, from counts (see `ledger_identity_check`)."""
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=passed,
        metadata={"in": rows_in, "kept": kept, "rejected": rejected, **extra},
    )
