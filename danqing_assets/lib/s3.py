"""A plain, picklable S3 client configuration for code that runs outside Dagster (extraction worker processes).

The `s3` resource (dagster-aws) builds clients inside assets; worker processes get this dataclass instead, built
from the same fields, so the library never constructs a Dagster resource. The client is made the way dagster-aws
makes it (a boto3 session with the profile, standard retries, unsigned requests for public buckets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class S3Config:
    region_name: str | None = "us-east-1"
    endpoint_url: str | None = None
    use_unsigned_session: bool = False
    profile_name: str | None = None
    max_attempts: int = 5

    def client(self) -> Any:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        session = boto3.session.Session(profile_name=self.profile_name)
        config = Config(retries={"max_attempts": self.max_attempts, "mode": "standard"})
        if self.use_unsigned_session:
            config = config.merge(Config(signature_version=UNSIGNED))
        return session.client("s3", region_name=self.region_name, endpoint_url=self.endpoint_url, config=config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
