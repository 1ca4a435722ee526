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
