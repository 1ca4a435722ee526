"""The ablation verdict and chart: the check passes only when the curated model beats its start on every eval set's
headline metric and is at least as good as the raw baseline; a missing model fails it."""

import polars as pl

from danqing_assets.defs.s7_pretraining import ABLATION_SCHEMA, ablation_verdict, chart_png


def _df(values: dict[tuple[str, str], dict[str, float]]) -> pl.DataFrame:
    rows = [{"model": m, "checkpoint": m, "eval_set": es, "metric": metric, "value": v, "chance": 0.01}
            for (es, metric), per_model in values.items() for m, v in per_model.items()]
    return pl.DataFrame(rows, schema=ABLATION_SCHEMA)


GOOD = {("zero_shot", "acc1"): {"start": 0.05, "raw_baseline": 0.06, "curated": 0.08},
        ("retrieval:test", "mean_recall"): {"start": 0.2, "raw_baseline": 0.25, "curated": 0.25},
        ("retrieval:test", "image_retrieval_recall@1"): {"start": 0.9, "raw_baseline": 0.9, "curated": 0.0}}


def test_verdict_reads_the_headline_metrics_only() -> None:
    ok, lines = ablation_verdict(_df(GOOD))
    assert ok and len(lines) == 2 and all("beats its start" in ln for ln in lines)


def test_verdict_fails_below_the_start_below_the_baseline_or_within_the_margin() -> None:
    worse_than_raw = {**GOOD, ("zero_shot", "acc1"): {"start": 0.05, "raw_baseline": 0.09, "curated": 0.08}}
    ok, lines = ablation_verdict(_df(worse_than_raw))
    assert not ok and any("< the raw baseline" in ln for ln in lines)
    not_above_start = {**GOOD, ("zero_shot", "acc1"): {"start": 0.08, "raw_baseline": 0.07, "curated": 0.08}}
    assert not ablation_verdict(_df(not_above_start))[0]
    assert not ablation_verdict(_df(GOOD), margin=0.04)[0]  # 0.08 vs 0.05 + 0.04


def test_a_missing_model_fails_the_verdict_and_the_chart_is_a_png() -> None:
    partial = {("zero_shot", "acc1"): {"start": 0.05, "curated": 0.5}}
    ok, lines = ablation_verdict(_df(partial))
    assert not ok and "missing" in lines[0]
    assert chart_png(_df(GOOD)).startswith(b"\x89PNG\r\n\x1a\n")
