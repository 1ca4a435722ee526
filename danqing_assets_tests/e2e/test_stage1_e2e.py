"""Materialize ingest and stage 1 on the generated sample crawl and compare with its truth.parquet."""

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from danqing_assets.lib import reasons
from danqing_assets.lib.quality import reason_quality
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import run_pipeline
from danqing_assets_tests.processes import stop_group

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage1(sample_crawl, tmp_path_factory):
    crawl_dir, _ = sample_crawl
    home = tmp_path_factory.mktemp("home")
    result = run_pipeline(home, crawl_dir, through="source_selected_pairs")
    return home, crawl_dir, result


def test_all_checks_pass_and_metadata_is_recorded(stage1):
    _, _, result = stage1
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    md = mats["source_selected_pairs"].materialization.metadata
    for key in ("rows_in", "rows_out", "rejection_rate", "cumulative_retention", "dropped_caption_too_short"):
        assert key in md
    assert md["rows_in"].value == md["rows_out"].value + md["rows_dropped"].value


def test_recall_of_stage1_survivors_and_ledger_identity(stage1):
    home, crawl_dir, _ = stage1
    wh = Warehouse(home)
    truth = pl.read_parquet(crawl_dir / "truth.parquet")
    raw = wh.read("raw_pairs", "sample")
    kept = wh.read("source_selected_pairs", "sample")
    ledger = wh.read_rejections("sample")
    # the ledger identity: every raw pair is kept or rejected, exactly once
    assert kept.height + ledger.height == raw.height
    assert set(kept["pair_id"]) | set(ledger["pair_id"]) == set(raw["pair_id"])
    assert set(kept["pair_id"]).isdisjoint(ledger["pair_id"])
    # pairs on non-zho pages are skipped before parsing (language prefilter), so compare on the pairs extracted
    survivors = set(truth.filter(pl.col("expected_stage") != reasons.SOURCE)["pair_id"])
    recall = len(survivors & set(kept["pair_id"])) / len(survivors)
    assert recall >= 0.98, recall
    quality = reason_quality(stage=reasons.SOURCE, entering=raw["pair_id"], rejected=ledger, truth=truth)
    print(quality)
    for row in quality.iter_rows(named=True):
        if row["truth"] >= 5:
            assert row["precision"] is not None and row["precision"] >= 0.95, row
            assert row["recall"] >= 0.9, row


def test_tables_are_queryable_by_hand(stage1):
    home, _, _ = stage1
    con = duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True)
    n = con.execute("select count(*) from source_selected_pairs where snapshot = 'sample'").fetchone()[0]
    by_reason = dict(con.execute("select reason, count(*) from rejected_pairs group by all").fetchall())
    con.close()
    assert n > 0 and by_reason.get("caption_too_short", 0) > 0


def test_two_snapshots_materialize_concurrently_from_the_cli(sample_crawl, tmp_path):
    crawl_dir, _ = sample_crawl
    env = {**os.environ, "DANQING_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    cli = [sys.executable, "-m", "danqing_assets.cli"]
    for name in ("snap-a", "snap-b"):
        subprocess.run([*cli, "snapshot", "add", name, str(crawl_dir)], env=env, check=True, capture_output=True)
    procs = [
        subprocess.Popen([*cli, "materialize", name, "--through", "source_selected_pairs"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name in ("snap-a", "snap-b")
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "source_selected_pairs" in out
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    counts = dict(con.execute("select snapshot, count(*) from source_selected_pairs group by all").fetchall())
    raw = dict(con.execute("select snapshot, count(*) from raw_pairs group by all").fetchall())
    con.close()
    assert counts["snap-a"] == counts["snap-b"] > 0
    assert raw["snap-a"] == raw["snap-b"]
    _the_web_ui_shows_both_partitions_and_their_metadata(env)


def _the_web_ui_shows_both_partitions_and_their_metadata(env):
    """`dagster dev` on the same DAGSTER_HOME serves the partitions and metadata the CLI runs recorded."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-h", "127.0.0.1", "-p", str(port), "-w",
         str(root / "workspace.yaml")],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        query = (
            '{ assetOrError(assetKey: {path: ["source_selected_pairs"]}) { ... on Asset { '
            "assetMaterializations(limit: 5) { partition metadataEntries { label } } } } }"
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                    headers={"content-type": "application/json"},
                )
                data = json.load(urllib.request.urlopen(req, timeout=10))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        mats = data["data"]["assetOrError"]["assetMaterializations"]
        assert {m["partition"] for m in mats} == {"snap-a", "snap-b"}
        labels = {e["label"] for e in mats[0]["metadataEntries"]}
        assert {"rows_in", "rows_out", "dropped_caption_too_short", "cumulative_retention"} <= labels
    finally:
        stop_group(proc)
