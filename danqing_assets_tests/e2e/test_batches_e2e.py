"""Batches of a snapshot as partitions, end to end through the command line: a sample crawl of 5 WARC files
registered with a batch size of 2 is 3 partitions; one batch is materialized, then the whole snapshot; every table
holds the rows of its batch's files; stage 4's cross-batch merge treats the batches exactly as it treats snapshots
(the same files registered as three snapshots give the same curated pairs and the same duplicates); the funnel sums
the batches and the release names the snapshot.

Real WARC files (the sample crawl), a real Dagster instance (the CLI's, in DAGSTER_HOME), the small bootstrap model
for stage 4 (semantic and embedding dedup OFF, as the demo runs a model below its quality gate)."""

import shutil

import dagster as dg
import polars as pl
import pytest
import yaml

from danqing_assets.cli import main
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.lib import reasons
from danqing_assets.lib.export import open_release
from danqing_assets.lib.snapshots import SnapshotRegistry
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import with_bootstrap
from danqing_sample.crawl import write_sample_crawl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SPLIT = "CC-SPLIT"
KEYS = [f"{SPLIT}.b0000{i}" for i in range(3)]
PARTS = ["p0", "p1", "p2"]  # the same files as three snapshots
GROUPS = [[0, 1], [2, 3], [4]]  # the WARC files of each batch, in listing order
PER_PAIR = ["warc_files", "raw_pairs", "source_selected_pairs", "text_refined_pairs", "fetched_images",
            "visually_diversified_pairs", "aligned_pairs", "curated_pairs"]


@pytest.fixture(scope="module")
def five_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("crawl5")
    write_sample_crawl(out, pages=60, files=5, seed=3)
    files = sorted(out.glob("*.warc.gz"))
    assert len(files) == 5
    return out, files


def _env(monkeypatch, home, small_bootstrap):
    monkeypatch.setenv("DANQING_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    with_bootstrap(home, small_bootstrap)
    config = home / "run_config.yaml"
    config.write_text(yaml.safe_dump({"ops": {
        "visually_diversified_pairs": {"config": {"semantic_dedup": False}},
        "curated_pairs": {"config": {"embedding_dedup": False}}}}))
    return str(config)


@pytest.fixture(scope="module")
def homes(five_files, small_bootstrap, tmp_path_factory):
    """Home A: the crawl as one snapshot of 3 batches, batch 2 materialized first, then the snapshot. Home B: the
    same files as three snapshots, materialized in the same order (p1, then p0, p1, p2)."""
    crawl, files = five_files
    mp = pytest.MonkeyPatch()
    try:
        a = tmp_path_factory.mktemp("home-batches")
        config = _env(mp, a, small_bootstrap)
        assert main(["snapshot", "add", SPLIT, str(crawl), "--batch-size", "2"]) == 0
        assert main(["materialize", SPLIT, "--batch", KEYS[1], "--config", config]) == 0
        after_one = {(t, k): Warehouse(a).exists(t, k) for t in PER_PAIR for k in KEYS}
        assert main(["materialize", SPLIT, "--config", config]) == 0
        with dg.DagsterInstance.get() as instance:
            partitions = sorted(instance.get_dynamic_partitions(snapshot_partitions.name))

        b = tmp_path_factory.mktemp("home-snapshots")
        config_b = _env(mp, b, small_bootstrap)
        for name, group in zip(PARTS, GROUPS):
            d = tmp_path_factory.mktemp(name)
            for k in group:
                shutil.copy(files[k], d / files[k].name)
            assert main(["snapshot", "add", name, str(d)]) == 0
        for name in ["p1", "p0", "p1", "p2"]:
            assert main(["materialize", name, "--config", config_b]) == 0
    finally:
        mp.undo()
    return a, b, files, after_one, partitions


def test_registering_makes_three_batches_and_three_partitions(homes):
    a, _, files, _, partitions = homes
    assert partitions == KEYS
    registry = SnapshotRegistry(a)
    assert [[r.name for r in registry.warcs(k)] for k in KEYS] == [[files[i].name for i in g] for g in GROUPS]


def test_one_batch_materialized_alone_touches_no_other_batch(homes):
    _, _, _, after_one, _ = homes
    assert all(after_one[(t, KEYS[1])] for t in PER_PAIR)
    assert not any(after_one[(t, k)] for t in PER_PAIR for k in (KEYS[0], KEYS[2]))


def test_every_table_holds_the_rows_of_its_batch(homes):
    a, _, files, _, _ = homes
    wh = Warehouse(a)
    for key, group in zip(KEYS, GROUPS):
        names = {files[i].name for i in group}
        assert set(wh.read("warc_files", key)["name"]) == names
        raw = wh.read("raw_pairs", key)
        assert raw.height > 0 and set(raw["warc_file"]) == names and set(raw["snapshot"]) == {key}
        # every raw pair of the batch ends in its last table or in its ledger
        ledger = wh.read_rejections(key)
        assert set(ledger["pair_id"]) | set(wh.read("curated_pairs", key)["pair_id"]) == set(raw["pair_id"])


def test_batches_merge_across_each_other_as_snapshots_do(homes):
    a, b, _, _, _ = homes
    wa, wb = Warehouse(a), Warehouse(b)
    rename = dict(zip(PARTS, KEYS))
    for key, part in zip(KEYS, PARTS):
        assert set(wa.read("aligned_pairs", key)["pair_id"]) == set(wb.read("aligned_pairs", part)["pair_id"])
        assert set(wa.read("curated_pairs", key)["pair_id"]) == set(wb.read("curated_pairs", part)["pair_id"])
        ra = wa.read_rejections(key, stages=[reasons.CROSS_BATCH]).select("pair_id", "reason", "detail").sort("pair_id")
        rb = wb.read_rejections(part, stages=[reasons.CROSS_BATCH]).select("pair_id", "reason", "detail").sort("pair_id")
        for old, new in rename.items():
            rb = rb.with_columns(pl.col("detail").str.replace(f"partition={old} ", f"partition={new} ", literal=True))
        assert ra.equals(rb)
    every = pl.concat([wa.read_rejections(k, stages=[reasons.CROSS_BATCH]) for k in KEYS])
    assert every.height > 0, "the crawl should have images duplicated across batches"
    curated = pl.concat([wa.read("curated_pairs", k) for k in KEYS])
    assert curated["image_sha256"].n_unique() == curated.height  # no image twice across the batches


def test_the_funnel_sums_the_batches_and_one_batch_can_be_shown(homes, monkeypatch, capsys):
    a, _, _, _, _ = homes
    monkeypatch.setenv("DANQING_HOME", str(a))
    wh = Warehouse(a)
    raw = sum(wh.read("raw_pairs", k).height for k in KEYS)
    curated = sum(wh.read("curated_pairs", k).height for k in KEYS)
    assert main(["funnel", SPLIT]) == 0
    out = capsys.readouterr().out
    assert "3 batches" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln and not ln.startswith((" ", "Funnel", "asset"))}
    assert int(lines["raw_pairs"][2]) == raw and int(lines["curated_pairs"][2]) == curated
    assert main(["funnel", SPLIT, "--batch", KEYS[2]]) == 0
    assert f"batch {KEYS[2]}" in capsys.readouterr().out
    assert main(["funnel", SPLIT, "--batch", "CC-SPLIT.b00009"]) == 2
    assert "not a batch of snapshot" in capsys.readouterr().err


def test_the_release_names_the_snapshot_and_its_batches(homes, monkeypatch, small_bootstrap):
    a, _, _, _, _ = homes
    _env(monkeypatch, a, small_bootstrap)
    assert main(["release"]) == 0
    (release,) = [p.parent for p in (a / "releases").glob("*/_SUCCESS")]
    pairs = open_release(str(release)).read_pairs()
    assert set(pairs["snapshot"]) == {SPLIT} and set(pairs["batch"]) <= set(KEYS)
    assert pairs.height == sum(Warehouse(a).read("curated_pairs", k).height for k in KEYS)
    card = (release / "README.md").read_text()
    assert f"| {SPLIT} | raw_pairs |" in card and KEYS[0] not in card.split("| snapshot | step")[1]
    assert f"danqing snapshot add {SPLIT} SOURCE --batch-size 2" in card and f"danqing materialize {SPLIT}" in card
