"""Temporaries left by a killed process are removed by the next writer of their folder; nobody else's are."""

import subprocess
import sys

from danqing_assets.lib.tempfiles import is_orphan, remove_orphans, scratch_dir, temp_name

CHILD = "import sys; from danqing_assets.lib.tempfiles import temp_name; print(temp_name(sys.argv[1]))"


def _name_of_a_process_that_is_gone(base: str) -> str:
    return subprocess.run([sys.executable, "-c", CHILD, base], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_only_the_temporaries_of_processes_gone_from_this_host_are_removed(tmp_path):
    dead = _name_of_a_process_that_is_gone("part-0.parquet")
    mine = temp_name("part-0.parquet")
    other_host = dead.rsplit("@", 1)[0] + "@another-host.tmp"
    (tmp_path / dead).write_bytes(b"half a file")
    (tmp_path / mine).write_bytes(b"being written")
    (tmp_path / other_host).write_bytes(b"a writer on another machine")
    (tmp_path / "part-0.parquet").write_bytes(b"the table")
    (tmp_path / ".not-ours.tmp").write_bytes(b"no owner in the name")
    folder = tmp_path / _name_of_a_process_that_is_gone("raw_pairs-s")
    folder.mkdir()
    (folder / "pairs-000000.parquet").write_bytes(b"a part")

    assert is_orphan(dead) and not is_orphan(mine) and not is_orphan(other_host)
    assert remove_orphans(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine, other_host, "part-0.parquet", ".not-ours.tmp"])
    assert remove_orphans(tmp_path / "missing") == 0


def test_a_scratch_folder_is_removed_on_exit_and_a_killed_ones_on_the_next_entry(tmp_path):
    left = tmp_path / _name_of_a_process_that_is_gone("raw_pairs-s")
    left.mkdir()
    with scratch_dir(tmp_path, "raw_pairs-s") as work:
        (work / "pairs-000000.parquet").write_bytes(b"x")
        assert [p.name for p in tmp_path.iterdir()] == [work.name]
    assert list(tmp_path.iterdir()) == []
