import gzip
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from functools import partial

import pytest

from danqing_assets.lib.snapshots import (
    Snapshot,
    SnapshotRegistry,
    SourceError,
    list_warcs,
    open_uri,
    source_kind,
)


@pytest.fixture
def crawl_dir(tmp_path):
    d = tmp_path / "crawl"
    (d / "seg" / "warc").mkdir(parents=True)
    (d / "seg" / "warc" / "b.warc.gz").write_bytes(b"BB")
    (d / "a.warc").write_bytes(b"A")
    (d / "notes.txt").write_text("not a warc")
    return d


def test_directory_source_lists_warcs_sorted_with_sizes(crawl_dir):
    refs = list_warcs(Snapshot("s", str(crawl_dir)))
    assert [(r.name, r.bytes) for r in refs] == [("a.warc", 1), ("seg/warc/b.warc.gz", 2)]


def test_local_listing_joins_relative_paths_to_base(tmp_path, crawl_dir):
    listing = tmp_path / "warc.paths.gz"
    listing.write_bytes(gzip.compress(b"seg/warc/b.warc.gz\n\na.warc\n"))
    refs = list_warcs(Snapshot("s", str(listing), base_url=str(crawl_dir)))
    assert [r.uri for r in refs] == [str(crawl_dir / "seg/warc/b.warc.gz"), str(crawl_dir / "a.warc")]
    with open_uri(refs[0].uri) as fh:
        assert fh.read() == b"BB"


def test_listing_defaults_to_common_crawl_https(tmp_path):
    listing = tmp_path / "warc.paths.gz"
    listing.write_bytes(gzip.compress(b"crawl-data/CC-MAIN-2025-08/segments/1/warc/x.warc.gz\n"))
    (ref,) = list_warcs(Snapshot("s", str(listing)))
    assert ref.uri == "https://data.commoncrawl.org/crawl-data/CC-MAIN-2025-08/segments/1/warc/x.warc.gz"


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    (root / "crawl-data" / "X" / "warc").mkdir(parents=True)
    (root / "crawl-data" / "X" / "warc" / "f1.warc.gz").write_bytes(b"payload-1")
    (root / "crawl-data" / "X" / "warc.paths.gz").write_bytes(gzip.compress(b"crawl-data/X/warc/f1.warc.gz\n"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_https_listing_over_a_real_http_server(http_root):
    snap = Snapshot("s", f"{http_root}/crawl-data/X/warc.paths.gz", base_url=http_root + "/")
    (ref,) = list_warcs(snap)
    assert ref.uri == f"{http_root}/crawl-data/X/warc/f1.warc.gz"
    with open_uri(ref.uri) as fh:
        assert fh.read() == b"payload-1"


def test_http_404_is_an_oserror(http_root):
    with pytest.raises(OSError, match="404"):
        open_uri(f"{http_root}/missing.warc.gz")


def test_bad_listings_give_clear_errors(tmp_path):
    bad = tmp_path / "warc.paths.gz"
    bad.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(SourceError, match="gzip"):
        list_warcs(Snapshot("s", str(bad)))
    bad.write_bytes(gzip.compress(b"index.html\n"))
    with pytest.raises(SourceError, match="not WARC paths"):
        list_warcs(Snapshot("s", str(bad)))
    with pytest.raises(SourceError, match="does not exist"):
        source_kind(str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="listing"):
        source_kind("https://example.org/some.warc.gz")


def test_registry_round_trip_and_validation(tmp_path, crawl_dir):
    reg = SnapshotRegistry(tmp_path / "home")
    snap = reg.add("CC-MAIN-2025-08", str(crawl_dir))
    assert reg.get("CC-MAIN-2025-08") == snap
    assert [s.name for s in reg.list()] == ["CC-MAIN-2025-08"]
    with pytest.raises(KeyError, match="snapshot add"):
        reg.get("other")
    with pytest.raises(ValueError):
        reg.add("../evil", str(crawl_dir))
    with pytest.raises(SourceError):
        reg.add("x", str(tmp_path / "missing"))


def test_s3_prefix_and_s3_listing_on_a_local_s3_server(local_s3):
    _, factory = local_s3

    client = factory()
    client.create_bucket(Bucket="commoncrawl")
    client.put_object(Bucket="commoncrawl", Key="crawl-data/X/segments/1/warc/a.warc.gz", Body=b"AAA")
    client.put_object(Bucket="commoncrawl", Key="crawl-data/X/segments/1/wat/a.wat.gz", Body=b"no")
    client.put_object(
        Bucket="commoncrawl", Key="crawl-data/X/warc.paths.gz", Body=gzip.compress(b"crawl-data/X/segments/1/warc/a.warc.gz\n")
    )
    by_prefix = list_warcs(Snapshot("s", "s3://commoncrawl/crawl-data/X/segments/"), s3_client_factory=factory)
    assert [(r.uri, r.bytes) for r in by_prefix] == [("s3://commoncrawl/crawl-data/X/segments/1/warc/a.warc.gz", 3)]
    by_listing = list_warcs(Snapshot("s", "s3://commoncrawl/crawl-data/X/warc.paths.gz"), s3_client_factory=factory)
    assert [r.uri for r in by_listing] == ["s3://commoncrawl/crawl-data/X/segments/1/warc/a.warc.gz"]
    with open_uri(by_listing[0].uri, s3_client_factory=factory) as fh:
        assert fh.read() == b"AAA"


def test_read_range_local_http_and_s3(tmp_path, local_s3):
    from danqing_assets.lib.snapshots import read_range
    from danqing_assets_tests.rangeserver import serve

    data = bytes(range(256)) * 40
    (tmp_path / "f.bin").write_bytes(data)
    assert read_range(str(tmp_path / "f.bin"), 100, 50) == data[100:150]
    base, counter, stop = serve(tmp_path)
    try:
        assert read_range(f"{base}/f.bin", 1000, 300) == data[1000:1300]
        assert read_range(f"{base}/f.bin", len(data) - 10, 300) == data[-10:]  # short read at the end
        assert counter[("/f.bin", "range")] == 2
        with pytest.raises(OSError, match="404"):
            read_range(f"{base}/missing.bin", 0, 10)
    finally:
        stop()
    _, factory = local_s3
    factory().create_bucket(Bucket="ranges")
    factory().put_object(Bucket="ranges", Key="k.warc.gz", Body=data)
    assert read_range("s3://ranges/k.warc.gz", 7, 9, s3_client_factory=factory) == data[7:16]
    assert read_range("s3://ranges/k.warc.gz", 0, 0, s3_client_factory=factory) == b""


# ------------------------------------------------------------------------------------ listing lines outside the base
FOREIGN_LINES = [
    "/etc/passwd.warc.gz",  # absolute path
    "\\\\server\\share\\x.warc.gz",  # UNC / backslash path
    "http://127.0.0.1:1/internal.warc.gz",
    "https://elsewhere.example/x.warc.gz",
    "s3://someone-elses-bucket/x.warc.gz",
    "file:///etc/x.warc.gz",
    "C:/Windows/x.warc.gz",
    "seg/../../../outside.warc.gz",  # climbs out of the base
    "seg/%2e%2e/%2E%2E/outside.warc.gz",  # the same, percent-encoded
]


def test_listing_lines_outside_the_base_are_counted_and_not_used(tmp_path, crawl_dir, caplog):
    outside = tmp_path / "outside.warc.gz"
    outside.write_bytes(b"secret")
    listing = tmp_path / "warc.paths.gz"
    listing.write_bytes(gzip.compress(("\n".join(["seg/warc/b.warc.gz", *FOREIGN_LINES, "a.warc"]) + "\n").encode()))
    rejected: list[str] = []
    with caplog.at_level("WARNING", logger="danqing_assets.lib.snapshots"):
        refs = list_warcs(Snapshot("s", str(listing), base_url=str(crawl_dir)), rejected=rejected)
    assert [r.name for r in refs] == ["seg/warc/b.warc.gz", "a.warc"]
    assert all(r.uri.startswith(str(crawl_dir)) for r in refs)
    assert rejected == FOREIGN_LINES
    assert f"{len(FOREIGN_LINES)} of {len(FOREIGN_LINES) + 2} lines" in caplog.text
    assert "allow_foreign_paths" in caplog.text


def test_foreign_lines_on_an_https_and_an_s3_listing_are_not_used(http_root, local_s3):
    root = http_root
    snap = Snapshot("s", f"{root}/crawl-data/X/warc.paths.gz", base_url=root + "/")
    assert [r.uri for r in list_warcs(snap)] == [f"{root}/crawl-data/X/warc/f1.warc.gz"]
    _, factory = local_s3
    client = factory()
    client.create_bucket(Bucket="cc-listing")
    body = gzip.compress(b"crawl-data/X/a.warc.gz\ns3://other-bucket/b.warc.gz\nhttp://127.0.0.1:1/c.warc.gz\n")
    client.put_object(Bucket="cc-listing", Key="crawl-data/X/warc.paths.gz", Body=body)
    rejected: list[str] = []
    snap = Snapshot("s", "s3://cc-listing/crawl-data/X/warc.paths.gz")
    refs = list_warcs(snap, s3_client_factory=factory, rejected=rejected)
    assert [r.uri for r in refs] == ["s3://cc-listing/crawl-data/X/a.warc.gz"]
    assert rejected == ["s3://other-bucket/b.warc.gz", "http://127.0.0.1:1/c.warc.gz"]


def test_a_listing_of_only_foreign_lines_is_an_error(tmp_path):
    listing = tmp_path / "warc.paths"
    listing.write_text("/etc/a.warc.gz\nhttps://elsewhere.example/b.warc.gz\n")
    with pytest.raises(SourceError, match="allow_foreign_paths"):
        list_warcs(Snapshot("s", str(listing)))


def test_allow_foreign_paths_opts_in(tmp_path, crawl_dir):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c.warc.gz").write_bytes(b"CC")
    (elsewhere / "d.warc.gz").write_bytes(b"DD")
    lines = ["a.warc", str(elsewhere / "c.warc.gz"), (elsewhere / "d.warc.gz").as_uri(), "https://x.example/e.warc.gz"]
    listing = tmp_path / "warc.paths"
    listing.write_text("\n".join(lines) + "\n")
    reg = SnapshotRegistry(tmp_path / "home")
    snap = reg.add("CC-MAIN-2025-09", str(listing), base_url=str(crawl_dir), allow_foreign_paths=True)
    assert reg.get("CC-MAIN-2025-09").allow_foreign_paths
    refs = list_warcs(reg.get("CC-MAIN-2025-09"))
    assert [r.uri for r in refs] == [
        str(crawl_dir / "a.warc"), str(elsewhere / "c.warc.gz"), str(elsewhere / "d.warc.gz"),
        "https://x.example/e.warc.gz",
    ]
    with open_uri(refs[2].uri) as fh:
        assert fh.read() == b"DD"
    assert snap.allow_foreign_paths
    # a registry entry written before the flag existed still loads (and does not allow foreign paths)
    (reg.dir / "old.json").write_text('{"name": "old", "source": "%s", "base_url": null, "added_at": 0}' % listing)
    assert reg.get("old").allow_foreign_paths is False


# ------------------------------------------------------------------------------------------------------- batches
def five_warcs(root):
    root.mkdir(parents=True, exist_ok=True)
    for k in range(5):
        (root / f"f{k}.warc.gz").write_bytes(b"x" * (k + 1))
    return root


def test_a_snapshot_is_cut_into_batches_of_its_warc_files_in_listing_order(tmp_path):
    from danqing_assets.lib.snapshots import Batch

    reg = SnapshotRegistry(tmp_path / "home")
    snap = reg.add("CC-MAIN-2025-08", str(five_warcs(tmp_path / "crawl")), batch_size=2)
    keys = ("CC-MAIN-2025-08.b00000", "CC-MAIN-2025-08.b00001", "CC-MAIN-2025-08.b00002")
    assert (snap.files, snap.batch_size, snap.batches, snap.keys) == (5, 2, keys, keys)
    assert reg.get("CC-MAIN-2025-08") == snap  # the JSON round trip keeps the batches
    assert [[r.name for r in reg.warcs(k)] for k in keys] == [["f0.warc.gz", "f1.warc.gz"],
                                                              ["f2.warc.gz", "f3.warc.gz"], ["f4.warc.gz"]]
    assert reg.warcs(keys[2])[0].bytes == 5
    assert reg.batch(keys[1]) == Batch(key=keys[1], snapshot="CC-MAIN-2025-08", index=1, count=3)
    assert reg.resolve("CC-MAIN-2025-08") == list(keys)
    assert reg.resolve("CC-MAIN-2025-08", [keys[2], keys[0]]) == [keys[0], keys[2]]  # in batch order
    assert reg.resolve(keys[1]) == [keys[1]]  # a batch key names that batch
    assert reg.snapshot_of(keys[2]) == "CC-MAIN-2025-08" and reg.snapshot_of("unregistered") == "unregistered"
    assert [s.name for s in reg.list()] == ["CC-MAIN-2025-08"]  # the file lists are not snapshots


def test_a_snapshot_that_fits_in_one_batch_keeps_its_name_as_its_only_key(tmp_path):
    reg = SnapshotRegistry(tmp_path / "home")
    snap = reg.add("sample", str(five_warcs(tmp_path / "crawl")))  # default batch size: 500 files
    assert snap.keys == ("sample",) and snap.batch_size == 500 and snap.files == 5
    assert len(reg.warcs("sample")) == 5 and reg.batch("sample").count == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert reg.add("nothing", str(empty)).keys == ("nothing",) and reg.warcs("nothing") == []


def test_batch_lookup_is_by_registry_not_by_parsing_the_key(tmp_path):
    """A snapshot may itself be named like `x.b00001`: keys are looked up, and no two snapshots share a key."""
    from danqing_assets.lib.snapshots import RegistryError

    reg = SnapshotRegistry(tmp_path / "home")
    crawl = five_warcs(tmp_path / "crawl")
    reg.add("x.b00001", str(crawl))  # one batch: its key is its name
    assert reg.batch("x.b00001").snapshot == "x.b00001"
    with pytest.raises(RegistryError, match="already a name or batch of snapshot 'x.b00001'"):
        reg.add("x", str(crawl), batch_size=2)  # x's second batch would be x.b00001
    reg.add("y", str(crawl), batch_size=2)
    with pytest.raises(RegistryError, match="already a name or batch of snapshot 'y'"):
        reg.add("y.b00000", str(crawl))
    with pytest.raises(KeyError, match="not registered"):
        reg.batch("y.b00007")
    with pytest.raises(KeyError, match="not a batch of snapshot 'y'"):
        reg.resolve("y", ["y.b00009"])


def test_registering_again_keeps_the_batches_and_refuses_to_change_them_without_replace(tmp_path):
    from danqing_assets.lib.snapshots import RegistryError

    reg = SnapshotRegistry(tmp_path / "home")
    crawl = five_warcs(tmp_path / "crawl")
    first = reg.add("s", str(crawl), batch_size=2)
    assert reg.add("s", str(crawl)) == first  # same files, batch size as registered: a no-op
    (crawl / "f5.warc.gz").write_bytes(b"new")
    with pytest.raises(RegistryError, match="--replace"):
        reg.add("s", str(crawl))
    with pytest.raises(RegistryError, match="--replace"):
        reg.add("s", str(crawl), batch_size=3)
    assert reg.get("s") == first and len(reg.warcs("s.b00002")) == 1  # unchanged by the refusals
    again = reg.add("s", str(crawl), batch_size=3, replace=True)
    assert again.keys == ("s.b00000", "s.b00001") and [len(reg.warcs(k)) for k in again.keys] == [3, 3]
    # a snapshot of one batch is replaced as before batches existed
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.warc").write_bytes(b"A")
    reg.add("one", str(small))
    assert [r.name for r in reg.warcs(reg.add("one", str(crawl)).keys[0])] == sorted(p.name for p in crawl.iterdir())


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "3"])
def test_a_bad_batch_size_is_a_clear_error(tmp_path, size):
    with pytest.raises(ValueError, match="batch size must be a whole number"):
        SnapshotRegistry(tmp_path / "home").add("s", str(five_warcs(tmp_path / "crawl")), batch_size=size)
    assert SnapshotRegistry(tmp_path / "home").list() == []


def test_too_many_batches_or_too_long_a_name_is_refused(tmp_path):
    from danqing_assets.lib.snapshots import batch_keys

    assert len(batch_keys("CC", 95_000, 500)) == 190
    assert batch_keys("CC", 95_000, 500)[-1] == "CC.b00189"
    with pytest.raises(ValueError, match="choose a batch size of at least 10"):
        batch_keys("CC", 95_000, 2)
    with pytest.raises(ValueError, match="too long to name its batches"):
        SnapshotRegistry(tmp_path / "home").add("n" * 125, str(five_warcs(tmp_path / "crawl")), batch_size=2)


def test_an_entry_written_before_batches_is_one_batch_listed_when_materialized(tmp_path, crawl_dir):
    reg = SnapshotRegistry(tmp_path / "home")
    reg.dir.mkdir(parents=True)
    (reg.dir / "old.json").write_text('{"name": "old", "source": "%s", "base_url": null, "added_at": 0}' % crawl_dir)
    old = reg.get("old")
    assert old.keys == ("old",) and not old.listed and reg.warcs("old") is None
    upgraded = reg.add("old", str(crawl_dir))  # registering it again lists it (no --replace needed)
    assert upgraded.listed and [r.name for r in reg.warcs("old")] == ["a.warc", "seg/warc/b.warc.gz"]


@pytest.mark.parametrize("base", ["https://data.commoncrawl.org/", "https://h.example/sub/dir", "s3://cc/", "LOCAL"])
def test_plain_listing_lines_join_as_the_general_rule_joins_them(tmp_path, base):
    """Plain keys take a fast path when a listing is registered; it must give what `_join` gives."""
    from danqing_assets.lib.snapshots import _join

    base = str(tmp_path / "base") if base == "LOCAL" else base
    lines = ["crawl-data/CC-MAIN-2025-08/segments/1738.12/warc/CC-MAIN-2025-00001.warc.gz", "a.warc", "x_y/-z.warc.gz"]
    listing = tmp_path / "warc.paths"
    listing.write_text("\n".join(lines) + "\n")
    refs = list_warcs(Snapshot("s", str(listing), base_url=base))
    assert [r.uri for r in refs] == [_join(base, ln) for ln in lines]
