"""Content-addressed image storage: one object per distinct image, named by the sha256 of its bytes.

Two backends share the interface `exists(sha)`, `put(sha, data)`, `get(sha) -> bytes`, `uri(sha)`:
- `LocalImageStore(root)`: files at `root/ab/cd/<sha256>`, written to a temporary name in `root/.tmp/` and renamed
  into place, so a reader never sees a partial file and two writers of the same image cannot corrupt it; the
  temporaries of a writer killed mid-write are removed by `remove_orphans` (the fetch step calls it first).
- `S3ImageStore(client, bucket, prefix)`: objects at `s3://bucket/prefix/ab/cd/<sha256>` through a boto3 S3 client
  (for example dagster-aws `S3Resource.get_client()`).

Because the name is the content hash, `put` of an existing sha is a no-op and identical images downloaded under many
URLs are stored once. Both stores pickle (the S3 store rebuilds its client in the receiving process), so the fetcher's
worker processes can write directly.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from danqing_assets.lib.faults import pause_point
from danqing_assets.lib.tempfiles import remove_orphans, temp_name

TEMP_DIR = ".tmp"
"""Where `LocalImageStore` writes before renaming into place (same file system as the images)."""

_SHA = re.compile(r"^[0-9a-f]{64}$")


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise ValueError(f"not a lower-case sha256 hex digest: {sha!r}")
    return sha


def shard_path(sha: str) -> str:
    """Relative object name for a digest: "ab/cd/abcd...". Validates the digest (no path tricks possible)."""
    _check_sha(sha)
    return f"{sha[:2]}/{sha[2:4]}/{sha}"


@runtime_checkable
class ImageStore(Protocol):
    def exists(self, sha: str) -> bool: ...

    def put(self, sha: str, data: bytes) -> None: ...

    def get(self, sha: str) -> bytes: ...

    def uri(self, sha: str) -> str: ...


class LocalImageStore:
    """Images as files under `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalImageStore, (str(self.root),))

    def __repr__(self) -> str:
        return f"LocalImageStore({str(self.root)!r})"

    def path(self, sha: str) -> Path:
        return self.root / shard_path(sha)

    def exists(self, sha: str) -> bool:
        return os.path.exists(self.path(sha))

    def put(self, sha: str, data: bytes) -> None:
        """Write `data` under `sha` atomically; a no-op when it is already there. The caller vouches for the sha."""
        final = self.path(sha)
        if os.path.exists(final):
            return
        folder = str(final.parent)
        for needed in (folder, str(self.root / TEMP_DIR)):
            if needed not in self._made:
                os.makedirs(needed, exist_ok=True)
                with self._lock:
                    self._made.add(needed)
        tmp = str(self.root / TEMP_DIR / temp_name(sha))
        try:
            with open(tmp, "wb") as fh:
                half = len(data) // 2
                fh.write(memoryview(data)[:half])
                pause_point("image_put", before=fh.flush)  # killed-run tests: stop half-written (no-op otherwise)
                fh.write(memoryview(data)[half:])
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def remove_orphans(self) -> int:
        """Remove the temporary files of writers that were killed mid-write (on this host); return how many."""
        return remove_orphans(self.root / TEMP_DIR)

    def get(self, sha: str) -> bytes:
        with open(self.path(sha), "rb") as fh:
            return fh.read()

    def uri(self, sha: str) -> str:
        return self.path(sha).as_uri()


class S3ImageStore:
    """Images as S3 objects `prefix/ab/cd/<sha256>` in `bucket`.

    client: a boto3 S3 client. client_factory: a picklable zero-argument callable returning a client; used instead of
      `client` when given, and in worker processes. Without a factory, pickling extracts the client's endpoint, region
      and frozen credentials and builds an equivalent client on the other side.
    """

    def __init__(
        self,
        client: Any = None,
        bucket: str = "",
        prefix: str = "",
        *,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("bucket is required")
        if client is None and client_factory is None:
            raise ValueError("pass a boto3 S3 client or a client_factory")
        self._client = client
        self._factory = client_factory
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @property
    def client(self) -> Any:
        if self._client is None:
            assert self._factory is not None
            self._client = self._factory()
        return self._client

    def __repr__(self) -> str:
        return f"S3ImageStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._factory is not None:
            return (_rebuild_s3_store, (None, self.bucket, self.prefix, self._factory))
        return (_rebuild_s3_store, (_client_spec(self._client), self.bucket, self.prefix, None))

    def key(self, sha: str) -> str:
        rel = shard_path(sha)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def exists(self, sha: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(sha))
            return True
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchKey", "NotFound") or status == 404:
                return False
            raise

    def put(self, sha: str, data: bytes, *, content_type: str | None = None) -> None:
        """Upload `data` under `sha` (single PUT; overwriting identical content is harmless)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(sha), "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        self.client.put_object(**kwargs)

    def get(self, sha: str) -> bytes:
        resp = self.client.get_object(Bucket=self.bucket, Key=self.key(sha))
        return resp["Body"].read()

    def uri(self, sha: str) -> str:
        return f"s3://{self.bucket}/{self.key(sha)}"


def _client_spec(client: Any) -> dict[str, Any]:
    """Enough of a boto3 client's configuration to build an equivalent one in another process."""
    spec: dict[str, Any] = {
        "endpoint_url": client.meta.endpoint_url,
        "region_name": client.meta.region_name,
    }
    creds = None
    signer = getattr(client, "_request_signer", None)
    raw = getattr(signer, "_credentials", None)
    if raw is not None:
        creds = raw.get_frozen_credentials()
    if creds is not None:
        spec.update(
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.token,
        )
    cfg = getattr(client.meta, "config", None)
    if cfg is not None:
        spec["config"] = cfg
    return spec


def _rebuild_s3_store(
    spec: dict[str, Any] | None, bucket: str, prefix: str, factory: Callable[[], Any] | None
) -> S3ImageStore:
    if factory is not None:
        return S3ImageStore(None, bucket, prefix, client_factory=factory)
    import boto3

    assert spec is not None
    return S3ImageStore(boto3.client("s3", **spec), bucket, prefix)
