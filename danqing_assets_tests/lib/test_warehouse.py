import multiprocessing as mp

import duckdb
import polars as pl
import pytest

from danqing_assets.lib.warehouse import Warehouse, validate_snapshot_name


def frame(snapshot, n, start=0):
    return pl.DataFrame({"pair_id": [f"{i:016x}" for i in range(start, start + n)], "snapshot": [snapshot] * n})


def test_write_replaces_exactly_one_partition_and_view_sees_all(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write("raw_pairs", "a", frame("a", 3))
    wh.write("raw_pairs", "b", frame("b", 2))
    wh.write("raw_pairs", "a", frame("a", 5, start=100))  # re-materialize a
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = dict(con.execute("select snapshot, count(*) from raw_pairs group by all").fetchall())
    assert rows == {"a": 5, "b": 2}
    assert con.execute("select min(pair_id) from raw_pairs where snapshot='a'").fetchone()[0] == f"{100:016x}"
    con.close()
    assert not list(tmp_path.rglob("*.tmp"))


def test_ledger_parts_per_stage_union_in_one_view(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write_rejections("source", "s", pl.DataFrame({"pair_id": ["0" * 16], "reason": ["caption_too_short"], "detail": ["words=2"]}))
    wh.write_rejections("text", "s", pl.DataFrame({"pair_id": ["1" * 16], "reason": ["no_noun"]}))
    wh.write_rejections("source", "s", pl.DataFrame({"pair_id": ["2" * 16], "reason": ["unsafe_text"], "detail": [None]}))
    got = wh.read_rejections("s").sort("pair_id")
    assert got["pair_id"].to_list() == ["1" * 16, "2" * 16]
    assert got.columns == ["snapshot", "pair_id", "stage", "reason", "detail"]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert sorted(con.execute("select stage, reason from rejected_pairs").fetchall()) == [
        ("source", "unsafe_text"),
        ("text", "no_noun"),
    ]
    con.close()


def test_read_missing_partition_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        Warehouse(tmp_path).read("raw_pairs", "nope")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a b", ".", "x" * 200, "-lead"])
def test_snapshot_names_are_validated(bad):
    with pytest.raises(ValueError):
        validate_snapshot_name(bad)


def _writer(home, snapshot, n, rounds):
    wh = Warehouse(home)
    for r in range(rounds):
        wh.write("raw_pairs", snapshot, frame(snapshot, n + r))
        wh.write_rejections("source", snapshot, frame(snapshot, 1).drop("snapshot").with_columns(reason=pl.lit("x_y")))


def test_two_processes_write_different_snapshots_at_once(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s, 50, 8)) for s in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    wh = Warehouse(tmp_path)
    assert wh.count("raw_pairs", "p1") == 57 and wh.count("raw_pairs", "p2") == 57
    con = wh.connect(read_only=True)
    assert con.execute("select count(*) from raw_pairs").fetchone()[0] == 114
    con.close()


def test_connect_waits_for_a_lock_held_by_another_process(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write("raw_pairs", "a", frame("a", 1))
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path / "warehouse.duckdb"), 1.5, ready))
    holder.start()
    assert ready.wait(60)
    con = wh.connect(timeout_s=30)  # succeeds once the holder lets go
    assert con.execute("select count(*) from raw_pairs").fetchone()[0] == 1
    con.close()
    holder.join(30)


def _hold_lock(path, seconds, ready):
    import time

    con = duckdb.connect(path)
    ready.set()
    time.sleep(seconds)
    con.close()


def test_writer_streams_chunks_into_one_partition_published_on_commit(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write("source_scores", "a", frame("a", 2))
    schema = {"pair_id": pl.String, "snapshot": pl.String, "n": pl.Int64}
    with wh.writer("source_scores", "a", schema) as out:
        for start in (0, 10, 20):
            out.write(pl.DataFrame({"pair_id": [f"{i:016x}" for i in range(start, start + 10)], "n": list(range(10))}))
            assert wh.read("source_scores", "a").height == 2  # the previous partition until commit
        out.commit()
    got = wh.read("source_scores", "a")
    assert got.height == 30 and got.columns == ["pair_id", "snapshot", "n"] and set(got["snapshot"]) == {"a"}
    batches = list(wh.iter_batches("source_scores", "a", columns=["pair_id"], batch_rows=7))
    assert all(b.height <= 7 for b in batches) and pl.concat(batches)["pair_id"].equals(got["pair_id"])
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_a_writer_that_fails_or_never_commits_leaves_the_previous_partition(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write("source_scores", "a", frame("a", 2))
    schema = {"pair_id": pl.String, "snapshot": pl.String}
    with pytest.raises(RuntimeError):
        with wh.writer("source_scores", "a", schema) as out:
            out.write(frame("a", 5, start=10))
            raise RuntimeError("a chunk failed its check")
    with wh.writer("source_scores", "a", schema) as out:
        out.write(frame("a", 5, start=10))  # no commit
    with wh.staged("source_scores", "a") as staged:
        frame("a", 9).write_parquet(staged.path)  # e.g. a DuckDB COPY; no commit
    assert wh.read("source_scores", "a").equals(frame("a", 2))
    assert [p.name for p in wh.partition_path("source_scores", "a").parent.iterdir()] == ["part-0.parquet"]


def test_an_empty_stream_is_an_empty_partition_with_the_columns(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.writer("text_scores", "a", {"pair_id": pl.String, "snapshot": pl.String, "x": pl.Float64}) as out:
        out.commit()
    got = wh.read("text_scores", "a")
    assert got.height == 0 and got.schema == {"pair_id": pl.String, "snapshot": pl.String, "x": pl.Float64}
    assert [b.height for b in wh.iter_batches("text_scores", "a")] == [0]
