"""A run SIGKILLed in the middle of a step, then re-run from that step, ends exactly like a run never interrupted:
the same warehouse tables and ledger, the same image store, the same files (no half-written file visible, no
temporary left behind).

The child process runs the pipeline (`killable_run`) with `DANQING_TEST_PAUSE_AT` (`lib/faults.py`): at the chosen
point the step writes a marker and sleeps; the test SIGKILLs the child's whole process group (the step's worker
processes too) and re-runs the killed step and the steps after it in this process, as re-executing the failed run
would. Training's resume after SIGKILL is tested in `lib/test_train.py::test_resume_after_sigkill_is_bit_exact`.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from danqing_assets.lib.faults import PAUSE_ENV, PAUSE_MARKER_ENV
from danqing_assets_tests.e2e.conftest import run_pipeline
from danqing_sample.crawl import write_sample_crawl

pytestmark = pytest.mark.slow

THROUGH = "image_scores"
RUN_CONFIG = {"ops": {"raw_pairs": {"config": {"workers": 2}}, "fetched_images": {"config": {"processes": 2}},
                      "image_scores": {"config": {"workers": 1}}}}  # the steps in the order they run
VOLATILE = {"fetched_images": ["elapsed_ms"]}  # timings: differ between any two runs
TEMPORARY = re.compile(r"\.tmp|\.part|\.incomplete")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    out = tmp_path_factory.mktemp("small-crawl")
    write_sample_crawl(out, pages=12, files=3, seed=0)
    return out


@pytest.fixture(scope="module")
def reference(crawl, tmp_path_factory):
    """A home where the same crawl ran once, uninterrupted."""
    home = tmp_path_factory.mktemp("uninterrupted") / "home"
    run_pipeline(home, crawl, through=THROUGH, run_config=RUN_CONFIG)
    return home


def _files(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}


def _table(home: Path, rel: str) -> pl.DataFrame:
    """The rows of warehouse file `rel` (tables/<table>/...), sorted, without timing columns."""
    df = pl.read_parquet(home / rel)
    df = df.drop([c for c in VOLATILE.get(rel.split("/")[1], []) if c in df.columns])
    return df.sort(df.columns, nulls_last=True)


def _assert_same_outcome(home: Path, reference: Path) -> None:
    files, expected = _files(home), _files(reference)
    assert sorted(f for f in files if TEMPORARY.search(f)) == [], "temporary files are visible after the re-run"
    assert sorted(files - expected) == [], "files the uninterrupted run does not have"
    assert sorted(expected - files) == [], "files the uninterrupted run has"
    tables = sorted(f for f in files if f.startswith("tables/"))
    assert any("rejected_pairs" in t for t in tables) and any("image_scores" in t for t in tables)
    for rel in tables:
        got, want = _table(home, rel), _table(reference, rel)
        assert got.columns == want.columns, rel
        assert got.equals(want), f"{rel}: rows differ from the uninterrupted run"
    images = sorted(f for f in files if f.startswith("images/"))
    assert images, "the image store is empty"
    for rel in images:
        assert (home / rel).read_bytes() == (reference / rel).read_bytes(), rel


def _group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (zombies count as gone)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _run_and_kill(home: Path, crawl: Path, point: str, tmp_path: Path) -> str:
    """Run the pipeline in a child process until it pauses at `point`, then SIGKILL its process group."""
    marker = tmp_path / "paused"
    log = tmp_path / "child.log"
    env = {**os.environ, PAUSE_ENV: point, PAUSE_MARKER_ENV: str(marker), "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "danqing_assets_tests.e2e.killable_run", str(home), str(crawl), THROUGH,
             json.dumps(RUN_CONFIG)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert child.poll() is None, f"the run ended before pausing at {point}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no pause at {point}:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert child.returncode == -signal.SIGKILL
    return marker.read_text().split()[0]


@pytest.mark.parametrize("point, step", [
    ("raw_pairs_file:1", "raw_pairs"),  # one of three WARC files extracted
    ("image_put:8", "fetched_images"),  # a fetch worker's 8th image half-written to its temporary file
    ("write_image_scores:1", THROUGH),  # scores computed, the table's file written but not renamed into place
])
def test_a_run_killed_mid_step_and_rerun_ends_like_an_uninterrupted_run(crawl, reference, tmp_path, point, step):
    """Before: a killed raw_pairs left its extraction parts in a `raw_pairs-*` folder inside the warehouse home, a
    killed fetch left half-written `.tmp` images in the store's shard folders, and a killed table write left its
    `.tmp` Parquet file; none was ever removed, so every killed run added more."""
    home = tmp_path / "home"
    assert _run_and_kill(home, crawl, point, tmp_path) == point.rsplit(":", 1)[0]
    left = _files(home) - _files(reference)
    assert left, "the kill left nothing behind: it did not land mid-step"
    if step == THROUGH:
        assert not (home / "tables" / "image_scores").exists() or not any((home / "tables" / "image_scores").rglob(
            "part-*.parquet")), "image_scores was published before the kill"

    rerun = (dg.AssetSelection.assets(step).required_multi_asset_neighbors().downstream()
             & dg.AssetSelection.assets(THROUGH).upstream())
    later = list(RUN_CONFIG["ops"])[list(RUN_CONFIG["ops"]).index(step):]
    run_pipeline(home, crawl, selection=rerun, run_config={"ops": {op: RUN_CONFIG["ops"][op] for op in later}})
    _assert_same_outcome(home, reference)
