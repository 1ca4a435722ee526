"""Resources: where the warehouse lives, and how to reach S3 (Common Crawl, or your own bucket)."""


from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from danqing_assets.lib.snapshots import SnapshotRegistry
from danqing_assets.lib.warehouse import Warehouse, default_home


class WarehouseResource(dg.ConfigurableResource):
    """The local warehouse: Parquet tables per snapshot under `home`, and `home/warehouse.duckdb` with their views."""

    home: str | None = Field(
        default=None, description="Warehouse directory; unset means $DANQING_HOME, else ./.danqing (resolved at run time)."
    )

    def warehouse(self) -> Warehouse:
        return Warehouse(self.home if self.home else default_home())

    def registry(self) -> SnapshotRegistry:
        return SnapshotRegistry(self.warehouse().home)


class S3ClientResource(dg.ConfigurableResource):
    """S3 access through dagster-aws, used for `s3://` snapshot sources. Anonymous access reads public buckets
    such as `s3://commoncrawl`; `endpoint_url` points at a local S3 server (tests, MinIO-compatible stores)."""

    region_name: str | None = Field(default="us-east-1", description="AWS region.")
    endpoint_url: str | None = Field(default=None, description="Custom endpoint, e.g. http://127.0.0.1:9000.")
    use_unsigned_session: bool = Field(default=False, description="Anonymous requests (public buckets).")
    profile_name: str | None = Field(default=None, description="AWS profile from ~/.aws/config.")

    def client(self) -> Any:
        return S3Resource(
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_unsigned_session=self.use_unsigned_session,
            profile_name=self.profile_name,
        ).get_client()


def default_resources() -> dict[str, Any]:
    return {"warehouse": WarehouseResource(), "s3": S3ClientResource()}
