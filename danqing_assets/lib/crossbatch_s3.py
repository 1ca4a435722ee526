"""The cross-batch index (lib/crossbatch.py) of a warehouse on S3: it lives under `<location>/crossbatch/` with the
same layout (`manifest.json`, `segments/...`), so the next batch's merge finds it on any worker.

A merge works on a local copy: `pull()` downloads the manifest (and remembers its ETag) then the segment files it
names into a fresh scratch folder; `CrossBatchIndex` merges there as locally; `push()` uploads the segment files the
new manifest names that the bucket lacks (new generation, new names: the old manifest never names them), then the
manifest with a conditional PUT (`IfMatch` the ETag pulled, or `IfNoneMatch: *` when there was none): the commit
point. If another merge committed in between, S3 answers 412 and the merge fails with `CrossBatchIndexConflict`
(nothing of it is visible: its segment files are orphans that the next successful push deletes). Last, the segment
objects the committed manifest no longer names are deleted.

Merges are also serialised by the Dagster concurrency pool `crossbatch` (one slot) on `curated_pairs`, so a
conflict means two deployments (or a pool limit raised by hand) merged at once; rerun the failed partition.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from danqing_assets.lib.warehouse_s3 import S3Warehouse

MANIFEST = "manifest.json"
SEGMENTS = "segments"
INDEX_PREFIX = "crossbatch"


class CrossBatchIndexConflict(RuntimeError):
    """The index on S3 changed between this merge's download and its upload: another merge committed first."""


def _named(manifest: dict[str, Any]) -> set[str]:
    keep = {manifest["ivf"]["file"]} if manifest.get("ivf") else set()
    for rec in manifest.get("partitions", {}).values():
        keep.update(v for k, v in rec.items() if k in ("entries", "embeddings", "rejections") and v)
    return keep


class S3IndexMirror:
    """A local working copy of the cross-batch index stored under `<wh.location>/crossbatch/`."""

    def __init__(self, wh: S3Warehouse, local_dir: str | Path, *, prefix: str = INDEX_PREFIX) -> None:
        self.wh = wh
        self.local_dir = Path(local_dir)
        self.key_prefix = wh._key(prefix)
        self.url = f"{wh.location}/{prefix}"
        self.etag: str | None = None
        self.pulled = False

    def _key(self, *parts: str) -> str:
        return "/".join((self.key_prefix, *parts))

    def _remote_segments(self) -> set[str]:
        prefix = self._key(SEGMENTS) + "/"
        out = set()
        for page in self.wh.client.get_paginator("list_objects_v2").paginate(Bucket=self.wh.bucket, Prefix=prefix):
            out.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
        return {n for n in out if n and "/" not in n}

    def pull(self) -> Path:
        """A fresh local copy of the committed index (empty when the bucket has none yet); returns its folder."""
        wh = self.wh
        if self.local_dir.exists():
            shutil.rmtree(self.local_dir)
        (self.local_dir / SEGMENTS).mkdir(parents=True)
        try:
            obj = wh.client.get_object(Bucket=wh.bucket, Key=self._key(MANIFEST))
        except Exception as exc:  # noqa: BLE001
            if not wh._is_not_found(exc):
                raise
            self.etag, self.pulled = None, True
            return self.local_dir
        body, self.etag = obj["Body"].read(), obj["ETag"]
        manifest = json.loads(body)
        for name in sorted(_named(manifest)):
            try:
                wh.client.download_file(wh.bucket, self._key(SEGMENTS, name), str(self.local_dir / SEGMENTS / name))
            except Exception as exc:  # noqa: BLE001
                if wh._is_not_found(exc):  # a merge committed and collected garbage while we read
                    raise CrossBatchIndexConflict(f"the cross-batch index on {self.url} changed while it was being "
                                                  f"downloaded ({name} is gone): rerun this merge") from None
                raise
        (self.local_dir / MANIFEST).write_bytes(body)
        self.pulled = True
        return self.local_dir

    def push(self) -> None:
        """Upload the merged local index: new segment files, then the manifest only if the bucket's is still the one
        pulled (conditional PUT), then delete the segment objects the new manifest no longer names."""
        from botocore.exceptions import ClientError

        if not self.pulled:
            raise RuntimeError("push() before pull()")
        wh = self.wh
        path = self.local_dir / MANIFEST
        if not path.exists():
            return  # nothing was merged
        manifest = json.loads(path.read_text())
        keep = _named(manifest)
        remote = self._remote_segments()
        for name in sorted(keep - remote):
            wh.client.upload_file(str(self.local_dir / SEGMENTS / name), wh.bucket, self._key(SEGMENTS, name))
        condition = {"IfMatch": self.etag} if self.etag else {"IfNoneMatch": "*"}
        try:
            put = wh.client.put_object(Bucket=wh.bucket, Key=self._key(MANIFEST), Body=path.read_bytes(),
                                       ContentType="application/json", **condition)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
                raise CrossBatchIndexConflict(
                    f"the cross-batch index on {self.url} was changed by another merge since this one downloaded it "
                    f"(generation {manifest.get('generation', 0) - 1}): nothing was committed; rerun this merge "
                    "(merges run one at a time through the Dagster pool 'crossbatch')") from None
            raise
        self.etag = put["ETag"]
        for name in sorted(remote - keep):  # the previous generation's files: no committed manifest names them
            wh.client.delete_object(Bucket=wh.bucket, Key=self._key(SEGMENTS, name))

    def clear(self) -> None:
        """Remove the local copy (scratch)."""
        shutil.rmtree(self.local_dir, ignore_errors=True)
