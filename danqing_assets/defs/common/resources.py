"""Resources: where the warehouse lives, and how to reach S3 (Common Crawl, or your own bucket)."""


import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse, urlsplit

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field, field_validator, model_validator

from danqing_assets.lib.snapshots import SnapshotRegistry
from danqing_assets.lib.warehouse import Warehouse, default_home


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse: Parquet tables per snapshot under `home`, and `home/warehouse.duckdb` with their views; or, with
    `location: s3://bucket/prefix`, one object per table and partition on S3 (lib/warehouse_s3.py), `home` then
    holding only scratch files. The S3 fields say how to reach the bucket (credentials: the AWS chain)."""

    home: str | None = Field(
        default=None, description="Warehouse directory; unset means $DANQING_HOME, else ./.danqing (resolved at run time)."
    )
    location: str | None = Field(
        default=None,
        description="Unset: the tables live under `home`. s3://bucket/prefix: on S3 (any worker runs any batch; "
        "`home` is scratch only).",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint of `location`, e.g. http://127.0.0.1:9000; unset: AWS.")
    s3_region_name: str | None = Field(default="us-east-1", description="AWS region of `location`'s bucket.")
    s3_profile_name: str | None = Field(default=None, description="AWS profile (~/.aws/config) for `location`.")

    @field_validator("location")
    @classmethod
    def _s3_location(cls, location: str | None) -> str | None:
        if location:
            from danqing_assets.lib.warehouse_s3 import parse_s3_location

            parse_s3_location(location)
        return location or None

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
            raise ValueError(f"s3_endpoint_url {url!r} is not an http(s)://host[:port] URL")
        return url or None

    def warehouse(self) -> Warehouse:
        home = self.home if self.home else default_home()
        if not self.location:
            return Warehouse(home)
        from danqing_assets.lib.s3 import S3Config
        from danqing_assets.lib.warehouse_s3 import S3Warehouse

        wh = S3Warehouse(self.location, home=home, s3=S3Config(
            region_name=self.s3_region_name, endpoint_url=self.s3_endpoint_url, profile_name=self.s3_profile_name))
        key = (wh.location, self.s3_endpoint_url, self.s3_profile_name)
        if key not in _CHECKED_LOCATIONS:  # once per process: a missing bucket or endpoint is a clear error
            wh.check()
            _CHECKED_LOCATIONS.add(key)
        return wh

    def registry(self) -> SnapshotRegistry:
        wh = self.warehouse()
        if self.location:  # on S3 beside the tables, so any worker finds the batches
            from danqing_assets.lib.warehouse_s3 import S3SnapshotRegistry

            return S3SnapshotRegistry(wh)  # type: ignore[arg-type]
        return SnapshotRegistry(wh.home)


_CHECKED_LOCATIONS: set[tuple] = set()


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


class ImageStoreResource(dg.ConfigurableResource):
    """Where image bytes live, by sha256: a local directory (default `$DANQING_HOME/images`) or an S3 prefix."""

    location: str | None = Field(
        default=None,
        description="Directory, or s3://bucket/prefix (uses the `s3` resource). Unset: $DANQING_HOME/images, or "
        "<warehouse location>/images when the warehouse is on S3.",
    )

    def store(self, warehouse: WarehouseResource, s3: S3ClientResource):
        from danqing_assets.lib.image_store import LocalImageStore, S3ImageStore

        loc = self.location
        if not loc and warehouse.location:  # beside the warehouse's tables, through the warehouse's S3 settings
            wh = warehouse.warehouse()
            return S3ImageStore(bucket=wh.bucket, prefix="/".join(p for p in (wh.prefix, "images") if p),
                                client_factory=wh.s3.client)
        if loc and loc.startswith("s3://"):
            parts = urlsplit(loc)
            return S3ImageStore(s3.client(), parts.netloc, parts.path.lstrip("/"))
        return LocalImageStore(loc or (warehouse.warehouse().home / "images"))


GPU_POOL = "gpu"
"""Dagster concurrency pool of every step that puts a model on the accelerator (CLIP scoring and NSFW screening,
training, evaluation). dagster.yaml limits every pool to one step at a time across all runs of the instance, CLI runs
included, so two runs never load models on the same GPU at once; the other steps of those runs go on meanwhile."""

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"
"""Devices a model step accepts: auto (CUDA when available), cpu, mps, cuda or cuda:N."""

BOOTSTRAP_MODEL = "bootstrap"
NO_MODEL = "none"


class ClipModelResource(dg.ConfigurableResource):
    """The CLIP model behind image embeddings, CLIP-based NSFW screening and (stage 4) image-text similarity.

    Default `bootstrap`: the project's own small Chinese CLIP, the checkpoint the `bootstrap_checkpoint` asset trains
    (`$DANQING_HOME/models/bootstrap_checkpoint`; materialize it first: `danqing models`). `none`: no model, so
    semantic dedup and CLIP NSFW screening are off (the assets say so) and stage 4 refuses to run. For real runs name
    an architecture and its weights, e.g. model_name="ViT-B-16-SigLIP2", pretrained="webli" (open_clip tag, needs
    the hub), "hf-hub:org/repo", a project checkpoint directory (model_name as its card.json names it), or
    model_name="cnclip:ViT-L-14" with a Chinese-CLIP checkpoint file; on a GPU machine device="auto" picks CUDA (fp16).
    A model without weights is refused unless `allow_random_init` (tests only)."""

    model_name: str | None = Field(
        default=BOOTSTRAP_MODEL,
        description="'bootstrap' (the project's own checkpoint), 'none', an open_clip architecture, or cnclip:<vision>.",
    )
    pretrained: str | None = Field(
        default=None, description="open_clip tag, hf-hub:org/repo, checkpoint directory (card.json) or file."
    )
    device: str = Field(default="auto", pattern=DEVICE_PATTERN,
                        description="auto (CUDA when available), cpu, cuda, cuda:N or mps.")
    precision: Literal["auto", "fp32", "fp16", "bf16", "pure_fp16", "pure_bf16"] = Field(
        default="auto", description="auto (fp16 on GPU, fp32 on CPU) or an open_clip precision.")
    allow_random_init: bool = Field(
        default=False, description="Tests only: accept a model without weights (random embeddings)."
    )
    home: str | None = Field(
        default=None, description="Where the bootstrap checkpoint lives: unset means $DANQING_HOME (./.danqing)."
    )

    @property
    def enabled(self) -> bool:
        return bool(self.model_name) and self.model_name != NO_MODEL

    def resolved(self) -> tuple[str, str | None]:
        """(model_name, pretrained) to load; `bootstrap` becomes the bootstrap checkpoint directory."""
        if not self.enabled:
            raise dg.Failure("this step needs a CLIP model: the `clip` resource is 'none' (configure model_name)")
        if self.model_name != BOOTSTRAP_MODEL:
            return self.model_name, self.pretrained
        from danqing_assets.lib.checkpoints import is_checkpoint_dir, read_card

        path = Path(self.home or default_home()).expanduser().resolve() / "models" / "bootstrap_checkpoint"
        if not is_checkpoint_dir(path):
            raise dg.Failure(
                f"the `clip` resource uses the bootstrap model, but {path} holds no checkpoint: materialize "
                "`bootstrap_checkpoint` first (`danqing models`), or configure the clip resource (model_name: none "
                "switches the model-based steps off)"
            )
        return read_card(path)["model_name"], str(path)

    def load(self):
        name, pretrained = self.resolved()
        return _load_clip(name, pretrained, self.device, self.precision, self.allow_random_init, _weights_key(pretrained))

    def describe(self) -> str:
        """What data rows and metadata record as the model: ``model:pretrained``, with the weights' sha256 for a
        project checkpoint directory."""
        if not self.enabled:
            return "none"
        from danqing_assets.lib.checkpoints import checkpoint_label

        return checkpoint_label(*self.resolved())


def _weights_key(pretrained: str | None) -> str | None:
    """The weights' identity for the load cache: a retrained checkpoint in the same directory is loaded again."""
    from danqing_assets.lib.checkpoints import is_checkpoint_dir, read_card

    if pretrained and is_checkpoint_dir(pretrained):
        return read_card(pretrained)["weights"]["sha256"]
    return None


@lru_cache(maxsize=2)
def _load_clip(model_name: str, pretrained: str | None, device: str, precision: str, allow_random_init: bool = False,
               _weights: str | None = None):
    from danqing_assets.lib.embed import load_clip

    return load_clip(model_name, pretrained, device=device, precision=precision, allow_random_init=allow_random_init)


MAX_FEED_BYTES = 5_000_000
"""Largest crawl feed read (Common Crawl's collinfo.json is ~40 kB)."""


class CrawlFeedResource(dg.ConfigurableResource):
    """Where new crawl snapshots are announced: Common Crawl's `collinfo.json` (a JSON list of {"id": ...}),
    or a local file in that format. The `new_crawl_snapshots` sensor registers each new id as a partition whose source
    is its warc.paths.gz listing. Its first tick registers only what `start` asks for (default: the newest crawl),
    not the whole history of Common Crawl; later ticks register the crawls that appeared since."""

    feed: str = Field(default="https://index.commoncrawl.org/collinfo.json", description="URL or path of the feed.")
    listing_template: str = Field(
        default="https://data.commoncrawl.org/crawl-data/{id}/warc.paths.gz",
        description="SOURCE registered for a new snapshot; `{id}` is the crawl id (use s3://commoncrawl/... on AWS).",
    )
    max_files_per_snapshot: int | None = Field(
        default=None, ge=1, description="Run only the batches holding a snapshot's first N WARC files, with `max_files` "
        "for the last of them (sample a crawl instead of all its files)."
    )
    batch_size: int = Field(
        default=500, ge=1, description="WARC files per batch of a registered snapshot (one partition and one run each; "
        "~95,000 files make 190 batches at 500).",
    )
    start: Literal["newest", "since", "all"] = Field(
        default="newest",
        description="What the sensor's first tick registers: 'newest' (only the newest crawl in the feed), 'since' "
        "(every crawl from `since` on) or 'all' (every crawl in the feed: a full run for each, ~100 crawls). Later "
        "ticks register only crawls that appeared since the previous tick.",
    )
    since: str | None = Field(
        default=None,
        description="Never register crawl ids that sort before this one, e.g. CC-MAIN-2024-10 (required by "
        "start='since').",
    )

    @field_validator("listing_template")
    @classmethod
    def _has_id(cls, template: str) -> str:
        try:
            template.format(id="CC-MAIN-2025-08")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"listing_template {template!r} is not a template with only {{id}} in it: {exc}") from None
        if "{id}" not in template:
            raise ValueError(f"listing_template {template!r} has no {{id}}: every crawl would get the same source")
        return template

    @field_validator("since")
    @classmethod
    def _since_is_a_name(cls, since: str | None) -> str | None:
        if since is not None:
            from danqing_assets.lib.warehouse import validate_snapshot_name

            validate_snapshot_name(since)
        return since

    @model_validator(mode="after")
    def _since_for_start(self):
        if self.start == "since" and self.since is None:
            raise ValueError("start='since' needs `since` (a crawl id such as CC-MAIN-2024-10)")
        return self

    def crawl_ids(self) -> list[str]:
        """Every crawl id in the feed at or after `since`, sorted; entries without an id are ignored. OSError or
        ValueError when the feed cannot be read or is not a JSON list."""
        if urlparse(self.feed).scheme in ("http", "https"):
            import requests

            with requests.get(self.feed, timeout=30, stream=True) as resp:
                resp.raise_for_status()
                body = resp.raw.read(MAX_FEED_BYTES + 1, decode_content=True)
        else:
            with open(self.feed, "rb") as fh:
                body = fh.read(MAX_FEED_BYTES + 1)
        if len(body) > MAX_FEED_BYTES:
            raise ValueError(f"crawl feed {self.feed} is larger than {MAX_FEED_BYTES} bytes")
        entries = json.loads(body.decode("utf-8"))
        if not isinstance(entries, list):
            raise ValueError(f"crawl feed {self.feed} is not a JSON list of {{\"id\": ...}} entries")
        ids = sorted({str(e["id"]) for e in entries if isinstance(e, dict) and isinstance(e.get("id"), (str, int))
                      and str(e["id"]).strip()})
        return [i for i in ids if self.since is None or i >= self.since]


LOCATION_ENV = "DANQING_WAREHOUSE_LOCATION"
ENDPOINT_ENV = "DANQING_S3_ENDPOINT_URL"


def warehouse_resource(home: str | None = None) -> WarehouseResource:
    """The warehouse of the code location and of the CLI: local under `home`, or on S3 when the environment sets
    DANQING_WAREHOUSE_LOCATION=s3://bucket/prefix (and DANQING_S3_ENDPOINT_URL for a non-AWS endpoint), so the CLI,
    the web UI, the daemon and every run they launch use the same tables. A bad value stops loading with its reason."""
    location = os.environ.get(LOCATION_ENV, "").strip() or None
    endpoint = os.environ.get(ENDPOINT_ENV, "").strip() or None
    try:
        return WarehouseResource(home=home, location=location, s3_endpoint_url=endpoint)
    except Exception as e:  # pydantic's ValidationError: name the variables, not the resource's fields
        raise ValueError(f"{LOCATION_ENV}={location!r} / {ENDPOINT_ENV}={endpoint!r}: {e}") from None


def default_resources(home: str | None = None) -> dict[str, Any]:
    """The resources of the code location; `home` pins the warehouse (tests), else $DANQING_HOME at run time; the
    warehouse's location from the environment (`warehouse_resource`)."""
    return {
        "warehouse": warehouse_resource(home),
        "s3": S3ClientResource(),
        "image_store": ImageStoreResource(),
        "clip": ClipModelResource(home=home),
        "crawl_feed": CrawlFeedResource(),
    }
