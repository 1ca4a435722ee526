"""image_store: the local layout and atomic writes, and S3 against a real local moto server."""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from pathlib import Path

import pytest

from danqing_assets.lib.image_store import ImageStore, LocalImageStore, S3ImageStore, shard_path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_local_store_layout_roundtrip_and_idempotence(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    data = b"\x89PNG fake but bytes are bytes"
    sha = _sha(data)
    assert isinstance(store, ImageStore)
    assert not store.exists(sha)
    store.put(sha, data)
    path = tmp_path / "images" / sha[:2] / sha[2:4] / sha
    assert path.read_bytes() == data
    assert store.exists(sha) and store.get(sha) == data
    assert store.uri(sha) == path.as_uri()
    mtime = path.stat().st_mtime_ns
    store.put(sha, data)  # same content: no rewrite
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [sha]  # no temp files left behind
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get(sha) == data


def test_local_store_concurrent_writers_never_expose_partial_files(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    data = os.urandom(2_000_000)
    sha = _sha(data)
    seen: list[int] = []

    def writer() -> None:
        store.put(sha, data)

    def reader() -> None:
        for _ in range(200):
            if store.exists(sha):
                seen.append(len(store.get(sha)))

    threads = [threading.Thread(target=writer) for _ in range(6)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get(sha) == data
    assert all(n == len(data) for n in seen)
    assert sorted(p.name for p in store.path(sha).parent.iterdir()) == [sha]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "a" * 63, "G" * 64, "A" * 64])
def test_invalid_digests_are_refused(tmp_path: Path, bad: str) -> None:
    store = LocalImageStore(tmp_path)
    with pytest.raises(ValueError):
        store.put(bad, b"x")
    with pytest.raises(ValueError):
        shard_path(bad)


@pytest.fixture
def s3_client(local_s3):
    _, make_client = local_s3
    client = make_client()
    client.create_bucket(Bucket="images")
    return client


def test_s3_store_roundtrip(s3_client) -> None:
    store = S3ImageStore(s3_client, "images", "danqing/raw/")
    data = b"GIF89a not really a gif"
    sha = _sha(data)
    assert not store.exists(sha)
    store.put(sha, data)
    assert store.exists(sha)
    assert store.get(sha) == data
    assert store.key(sha) == f"danqing/raw/{sha[:2]}/{sha[2:4]}/{sha}"
    assert store.uri(sha) == f"s3://images/danqing/raw/{sha[:2]}/{sha[2:4]}/{sha}"
    listed = s3_client.list_objects_v2(Bucket="images", Prefix="danqing/raw/")["Contents"]
    assert [o["Key"] for o in listed] == [store.key(sha)]


def test_s3_store_pickles_into_an_equivalent_client(s3_client) -> None:
    store = S3ImageStore(s3_client, "images", "p")
    data = b"pickled"
    sha = _sha(data)
    store.put(sha, data)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.client is not s3_client
    assert clone.get(sha) == data and clone.uri(sha) == store.uri(sha)


def test_s3_store_with_factory_is_lazy(s3_client) -> None:
    made: list[int] = []

    def factory():
        made.append(1)
        return s3_client

    store = S3ImageStore(bucket="images", prefix="", client_factory=factory)
    assert made == []
    sha = _sha(b"z")
    store.put(sha, b"z")
    assert store.get(sha) == b"z" and made == [1]
    with pytest.raises(ValueError):
        S3ImageStore(None, "images")
