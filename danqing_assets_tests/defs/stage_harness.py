"""Materialize single stage assets against a real warehouse seeded with small in-memory frames (fast; no crawl)."""

from __future__ import annotations

import io

import dagster as dg
import numpy as np
import polars as pl

from danqing_assets.definitions import defs
from danqing_assets.defs.common.partitions import snapshot_partitions
from danqing_assets.defs.common.resources import ClipModelResource, default_resources
from danqing_assets.lib.ids import sha256_hex
from danqing_assets.lib.warehouse import Warehouse

SNAPSHOT = "unit"

CAPTIONS = [
    "一只橘色的小猫趴在阳光明媚的窗台上睡觉",
    "湖边的红色木屋和远处的雪山倒映在水中",
    "新鲜出炉的草莓蛋糕摆放在白色的盘子里",
    "孩子们在公园的草地上放风筝玩得很开心",
    "夜晚城市的高楼大厦灯火通明非常漂亮",
    "一辆蓝色的自行车停在老街的石板路旁边",
]


def pair_rows(captions=CAPTIONS) -> pl.DataFrame:
    """Rows shaped like source_selected_pairs (raw pair columns plus the stage-1 scores)."""
    n = len(captions)
    return pl.DataFrame(
        {
            "pair_id": [f"{i:016x}" for i in range(1, n + 1)],
            "snapshot": [SNAPSHOT] * n,
            "warc_file": ["a.warc.gz"] * n,
            "warc_offset": list(range(0, 100 * n, 100)),
            "warc_record_id": [f"<urn:uuid:{i}>" for i in range(n)],
            "page_url": [f"https://example.cn/p{i}" for i in range(n)],
            "domain": ["example.cn"] * n,
            "image_url": [f"https://example.cn/{i}.jpg" for i in range(n)],
            "caption": captions,
            "title": [None] * n,
            "figcaption": [None] * n,
            "img_index": pl.Series([0] * n, dtype=pl.Int32),
            "page_language": ["zho"] * n,
            "language_source": ["cc"] * n,
            "charset": ["utf-8"] * n,
            "fetch_time": ["2025-01-01T00:00:00Z"] * n,
            "word_count": [8] * n,
            "caption_norm": captions,
        },
        schema_overrides={"title": pl.String, "figcaption": pl.String},
    )


def photo(seed: int, size: int = 320) -> bytes:
    """A sharp, high-entropy, distinct JPEG (smooth gradients plus noise, unique per seed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([np.sin(x / rng.uniform(5, 40) + rng.uniform(0, 6)) * 80 + 128,
                     np.cos(y / rng.uniform(5, 40) + rng.uniform(0, 6)) * 80 + 128,
                     np.sin((x + y) / rng.uniform(5, 40)) * 80 + 128], axis=-1)
    img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def store_images(home, datas: list[bytes]) -> list[str]:
    from danqing_assets.lib.image_store import LocalImageStore

    store = LocalImageStore(Warehouse(home).home / "images")
    shas = []
    for d in datas:
        sha = sha256_hex(d)
        store.put(sha, d)
        shas.append(sha)
    return shas


def fetched_rows(pairs: pl.DataFrame, shas: list[str]) -> pl.DataFrame:
    n = pairs.height
    return pl.DataFrame(
        {
            "snapshot": [SNAPSHOT] * n, "pair_id": pairs["pair_id"], "image_url": pairs["image_url"],
            "image_sha256": shas, "width": [320] * n, "height": [320] * n, "format": ["JPEG"] * n,
            "bytes": [1000] * n, "source": ["warc"] * n, "status": ["ok"] * n, "reason": [None] * n,
            "error": [None] * n, "http_status": [200] * n, "elapsed_ms": [1.0] * n,
        },
        schema_overrides={"reason": pl.String, "error": pl.String},
    )


def materialize(home, *assets: str, run_config: dict | None = None, raise_on_error: bool = True,
                clip: ClipModelResource | None = None):
    """The assets on a fresh instance; the `clip` resource is 'none' unless given."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(snapshot_partitions.name, [SNAPSHOT])
    return dg.materialize(
        assets=list(defs.assets),
        selection=dg.AssetSelection.assets(*assets),
        partition_key=SNAPSHOT,
        instance=instance,
        run_config=run_config or {},
        resources={**default_resources(str(home)), "clip": clip or ClipModelResource(model_name="none")},
        raise_on_error=raise_on_error,
    )


def ledger(home, stage: str) -> dict[str, tuple[str, str | None]]:
    df = Warehouse(home).read("rejected_pairs", SNAPSHOT, stage=stage)
    return {r["pair_id"]: (r["reason"], r["detail"]) for r in df.iter_rows(named=True)}
