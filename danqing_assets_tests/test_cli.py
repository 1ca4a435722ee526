import subprocess
import sys

import pytest

from danqing_assets.cli import main


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DANQING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    return tmp_path


def test_snapshot_add_and_list(env, capsys):
    crawl = env / "crawl"
    crawl.mkdir()
    (crawl / "a.warc.gz").write_bytes(b"")
    assert main(["snapshot", "add", "s1", str(crawl)]) == 0
    assert main(["snapshot", "list"]) == 0
    assert f"s1\t{crawl}" in capsys.readouterr().out
    assert (env / "dagster" / "dagster.yaml").exists()  # the project's instance config travels with the CLI


@pytest.mark.parametrize(
    "argv, message",
    [
        (["snapshot", "add", "bad/name", "."], "invalid snapshot name"),
        (["snapshot", "add", "s", "/does/not/exist"], "does not exist"),
        (["materialize", "never-added"], "not registered"),
    ],
)
def test_user_errors_are_messages_not_tracebacks(env, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_funnel_of_an_unmaterialized_snapshot(env, capsys):
    assert main(["funnel", "nothing"]) == 0
    assert "nothing materialized yet" in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "danqing_assets.cli", "--help"], capture_output=True, text=True, check=True)
    assert "sample-crawl" in out.stdout and "backfill" in out.stdout


def test_sample_crawl_command_writes_warcs_and_truth(env, capsys):
    out = env / "crawl"
    assert main(["sample-crawl", str(out), "--pages", "12", "--seed", "5"]) == 0
    assert "pairs" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.warc.gz")) and (out / "truth.parquet").exists()


def _five_warcs(env):
    """5 real (tiny) WARC files, written with warcio."""
    from warcio.warcwriter import WARCWriter

    crawl = env / "crawl5"
    crawl.mkdir()
    for k in range(5):
        with open(crawl / f"f{k}.warc.gz", "wb") as fh:
            writer = WARCWriter(fh, gzip=True)
            writer.write_record(writer.create_warc_record(f"https://example.org/{k}", "resource", payload=None,
                                                          warc_content_type="text/plain",
                                                          length=0))
    return crawl


def test_snapshot_add_cuts_batches_and_materialize_takes_a_batch_or_the_snapshot(env, capsys):
    import dagster as dg

    from danqing_assets.lib.warehouse import Warehouse

    crawl = _five_warcs(env)
    assert main(["snapshot", "add", "big", str(crawl), "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert f"snapshot 'big' -> {crawl}" in out and "5 WARC files in 3 batches of 2: big.b00000 ... big.b00002" in out
    assert main(["snapshot", "list", "--batches"]) == 0
    assert "big.b00000 big.b00001 big.b00002" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        assert sorted(instance.get_dynamic_partitions("snapshots")) == ["big.b00000", "big.b00001", "big.b00002"]
    wh = Warehouse(env / "home")
    assert main(["materialize", "big", "--batch", "big.b00002", "--through", "warc_files"]) == 0
    assert [wh.exists("warc_files", k) for k in ("big.b00000", "big.b00001", "big.b00002")] == [False, False, True]
    assert wh.read("warc_files", "big.b00002")["name"].to_list() == ["f4.warc.gz"]
    assert main(["materialize", "big", "--through", "warc_files"]) == 0
    assert "3 of 3 batches of big succeeded" in capsys.readouterr().out
    assert [wh.read("warc_files", k)["name"].to_list() for k in ("big.b00000", "big.b00001")] == [
        ["f0.warc.gz", "f1.warc.gz"], ["f2.warc.gz", "f3.warc.gz"]]
    # the same files again: a no-op; other batches: refused without --replace, which also drops the old partitions
    assert main(["snapshot", "add", "big", str(crawl)]) == 0
    assert main(["snapshot", "add", "big", str(crawl), "--batch-size", "3"]) == 2
    assert "--replace" in capsys.readouterr().err
    assert main(["snapshot", "add", "big", str(crawl), "--batch-size", "3", "--replace"]) == 0
    with dg.DagsterInstance.get() as instance:
        assert sorted(instance.get_dynamic_partitions("snapshots")) == ["big.b00000", "big.b00001"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["snapshot", "add", "s", "CRAWL", "--batch-size", "0"], "batch size must be a whole number"),
        (["materialize", "big", "--batch", "big.b00007"], "not a batch of snapshot 'big'"),
        (["materialize", "big.b00009"], "not registered"),
        (["backfill", "big", "--parallel", "0"], "--parallel must be at least 1"),
        (["backfill", "big", "other", "--batch", "big.b00000"], "name exactly one snapshot"),
        (["backfill", "nope"], "not registered"),
    ],
)
def test_batch_errors_are_messages(env, capsys, argv, message):
    crawl = _five_warcs(env)
    assert main(["snapshot", "add", "big", str(crawl), "--batch-size", "2"]) == 0
    capsys.readouterr()
    assert main([str(crawl) if a == "CRAWL" else a for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_backfill_runs_every_batch_in_parallel_processes(env, capsys):
    from danqing_assets.lib.warehouse import Warehouse

    crawl = _five_warcs(env)
    assert main(["snapshot", "add", "big", str(crawl), "--batch-size", "2"]) == 0
    assert main(["backfill", "big", "--parallel", "2", "--through", "warc_files"]) == 0
    assert "3 of 3 batches succeeded" in capsys.readouterr().out
    wh = Warehouse(env / "home")
    assert sum(wh.read("warc_files", f"big.b0000{i}").height for i in range(3)) == 5


def test_max_files_samples_the_first_files_of_a_snapshot_not_of_every_batch(env, capsys):
    """The README's `sample10.yaml` (warc_files max_files) on a snapshot of several batches runs only the batches
    that hold its first N files."""
    from danqing_assets.lib.warehouse import Warehouse

    crawl = _five_warcs(env)
    assert main(["snapshot", "add", "big", str(crawl), "--batch-size", "2"]) == 0
    config = env / "sample3.yaml"
    config.write_text("ops:\n  warc_files: {config: {max_files: 3}}\n")
    assert main(["materialize", "big", "--through", "warc_files", "--config", str(config)]) == 0
    assert "max_files=3: the first 2 batch(es) of big" in capsys.readouterr().out
    wh = Warehouse(env / "home")
    assert [wh.read("warc_files", k)["name"].to_list() for k in ("big.b00000", "big.b00001")] == [
        ["f0.warc.gz", "f1.warc.gz"], ["f2.warc.gz"]]
    assert not wh.exists("warc_files", "big.b00002")
