"""Continued pretraining on a release, the raw-data baseline trained the same way, and decontamination.

The claim a curation pipeline has to prove is that its output trains better models than the input it started from.
Three pieces make that claim something anyone can re-run:

- Training sets. `release_examples` reads a release's WebDataset shards (what `danqing_dataset` wrote; an S3 release is
  copied to a local cache first, shard by shard, verified against the manifest's sizes). `raw_examples` builds the
  uncurated set of the same snapshots: every pair whose image was fetched, with the caption stage 2 cleaned (stage-2
  rejects have no image: text is refined before download), before stages 3 and 4 (duplicates, blurry, misaligned and
  text-heavy pairs included). The two differ by the curation and by nothing else: same caption cleaning, same images,
  same snapshots.
- Decontamination (`decontaminate`): a training pair whose image is a pHash near-duplicate (Hamming distance <=
  `max_hamming`, imagededup's pHash) of any evaluation image is removed from the training set before training, and
  listed (pair, eval set, eval image, distance). The same rule runs on both training sets.
- `continue_training`: the trainer of `lib.train` from a start checkpoint directory, with the start's architecture,
  tokenizer and preprocessing, written as a new checkpoint directory whose card records the start checkpoint and the
  data (release id, shards, pairs) it saw. The result is what `open_clip.create_model("local-dir:DIR")` loads.

A comparison is fair only if the recipe is the same: `recipe_key` is what the ablation report compares between the
curated and the baseline cards (steps, batch, learning-rate schedule, loss, seed, start checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DECONTAMINATION_HAMMING = 6
"""pHash bits: the stage-3 near-duplicate distance (imagededup's default 10 is looser; 6 keeps re-encodes, resizes and
light crops of one image together and leaves distinct renders of one scene apart on the sample crawl)."""


class PretrainError(ValueError):
    """A training set or start checkpoint that cannot be used as configured."""


# ---------------------------------------------------------------------------------------------------------------------
# Training sets.


@dataclass
class TrainingSet:
    """Examples (`get(i) -> (image bytes, caption)`) with a stable id per example and where they came from."""

    name: str  # "curated" | "raw"
    ids: list[str]  # pair id per example
    source: Any  # lib.train_data.ExampleSource
    sha256: list[str | None]  # image sha256 per example, when known
    phash: list[str | None]  # stored pHash per example, when known
    description: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, i: int) -> tuple[bytes, str]:
        return self.source.get(i)

    def subset(self, keep: Sequence[int]) -> TrainingSet:
        keep = list(keep)
        return TrainingSet(self.name, [self.ids[i] for i in keep], _Subset(self.source, keep),
                           [self.sha256[i] for i in keep], [self.phash[i] for i in keep], dict(self.description))


class _Subset:
    def __init__(self, source: Any, keep: list[int]) -> None:
        self.source, self.keep = source, keep

    def __len__(self) -> int:
        return len(self.keep)

    def get(self, i: int) -> tuple[bytes, str]:
        return self.source.get(self.keep[i])


def release_shards(location: str, cache_dir: str | os.PathLike[str] | None = None, s3_client: Any = None
                   ) -> tuple[Any, list[Path]]:
    """(manifest, local WebDataset shard paths) of a complete release (directory or s3:// prefix, `lib.export`).

    The release must be complete (`_SUCCESS` and the manifest digest it records: `export.open_release`). An S3 release
    is copied shard by shard into `cache_dir/<release id>/` (a shard already there with the manifest's size and
    sha256 is reused); every shard's size and sha256 must match the manifest, or the release is refused.
    """
    from danqing_assets.lib.export import ReleaseError, _is_s3, _read_release_file, open_release
    from danqing_assets.lib.tokenizer import file_sha256

    try:
        manifest = open_release(location, s3_client=s3_client).manifest
    except (OSError, ValueError, ReleaseError) as exc:
        raise PretrainError(f"release {location} cannot be trained on: {exc}") from None
    if not manifest.shards:
        raise PretrainError(f"release {location}: the manifest lists no WebDataset shards")
    remote = _is_s3(location)
    if remote and cache_dir is None:
        raise PretrainError(f"release {location} is on S3: a local cache directory is needed to train on it")
    paths: list[Path] = []
    for shard in manifest.shards:
        rel = shard.wds.path
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise PretrainError(f"release {location}: shard path {rel!r} is outside the release")
        local = (Path(cache_dir) / manifest.release_id / rel) if remote else Path(location) / rel

        def ok(p: Path) -> bool:
            return p.exists() and p.stat().st_size == shard.wds.bytes and file_sha256(p) == shard.wds.sha256

        if remote and not ok(local):
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.part-{os.getpid()}")
            tmp.write_bytes(_read_release_file(location, rel, s3_client))
            os.replace(tmp, local)
        if not ok(local):
            raise PretrainError(f"release {location}: shard {rel} is missing or differs from the manifest "
                                "(size or sha256)")
        paths.append(local)
    return manifest, paths


def release_examples(location: str, *, cache_dir: str | os.PathLike[str] | None = None, s3_client: Any = None,
                     phash_by_sha: dict[str, str] | None = None) -> TrainingSet:
    """The release's WebDataset shards as a training set; ids are the pair ids of the samples' `.json` members."""
    from danqing_assets.lib.train_data import TarShardDataset

    manifest, paths = release_shards(location, cache_dir, s3_client)
    ds = TarShardDataset(paths)
    meta = TarShardDataset(paths, image_exts=("json",), caption_ext="txt")  # the .json members, read as "images"
    if len(meta) != len(ds):
        raise PretrainError(f"release {location}: {len(ds)} samples with an image but {len(meta)} with metadata")
    ids: list[str] = []
    shas: list[str | None] = []
    for i in range(len(meta)):
        raw, _ = meta.get(i)
        try:
            obj = json.loads(raw)
        except ValueError:
            raise PretrainError(f"release {location}: sample {meta.keys[i]} has unreadable metadata") from None
        ids.append(str(obj.get("pair_id") or meta.keys[i]))
        shas.append(obj.get("sha256"))
    meta.close()
    phashes = [(phash_by_sha or {}).get(s) if s else None for s in shas]
    return TrainingSet("curated", ids, ds, shas, phashes, {
        "release_id": manifest.release_id, "location": location, "pairs": len(ids),
        "shards": [p.name for p in paths], "incomplete_samples": ds.incomplete})


def raw_examples(pairs: Any, get_image: Callable[[str], bytes]) -> TrainingSet:
    """The uncurated training set: `pairs` (polars: pair_id, caption, image_sha256 and optionally phash), images from
    `get_image(sha256)` (read in the data-loading workers)."""
    from danqing_assets.lib.train_data import RecordDataset

    need = {"pair_id", "caption", "image_sha256"}
    if missing := need - set(pairs.columns):
        raise PretrainError(f"raw pairs lack columns {sorted(missing)}")
    pairs = pairs.sort("pair_id")
    shas = pairs["image_sha256"].to_list()
    ph = pairs["phash"].to_list() if "phash" in pairs.columns else [None] * pairs.height
    records = list(zip(shas, pairs["caption"].to_list()))
    return TrainingSet("raw", pairs["pair_id"].to_list(), RecordDataset(records, get_image), shas, ph,
                       {"pairs": pairs.height})


# ---------------------------------------------------------------------------------------------------------------------
# Decontamination.


@dataclass(frozen=True)
class EvalImage:
    eval_set: str
    image_id: str
    phash: str


def _phash_bytes(data: bytes) -> str | None:
    from danqing_assets.lib.fetch.decode import ImageRejected, load_rgb
    from danqing_assets.lib.image_metrics import phash_from_grey

    try:
        return phash_from_grey(load_rgb(data).convert("L"))
    except (ImageRejected, OSError, ValueError):
        return None


def eval_image_hashes(zero_shot_dirs: Iterable[str | os.PathLike[str]] = (),
                      retrieval_sets: Iterable[tuple[str | os.PathLike[str], str]] = ()) -> list[EvalImage]:
    """pHash of every image of the given eval sets (zero-shot image folders; (dir, split) retrieval sets)."""
    from danqing_assets.lib.evalsets import RetrievalSet, ZeroShotSet

    out: list[EvalImage] = []
    for d in zero_shot_dirs:
        zs = ZeroShotSet(d)
        n = 0
        for batch in zs.iter_image_batches():
            for cls, data in batch:
                h = _phash_bytes(data)
                if h:
                    out.append(EvalImage(Path(d).name, f"{zs.classes[cls].dir_name}/{n}", h))
                n += 1
    for d, split in retrieval_sets:
        rs = RetrievalSet(d, split)
        for batch in rs.iter_image_batches():
            for image_id, data in batch:
                h = _phash_bytes(data)
                if h:
                    out.append(EvalImage(f"{Path(d).name}:{split}", str(image_id), h))
    return out


@dataclass
class Decontamination:
    removed: list[dict[str, Any]]  # pair_id, eval_set, eval_image, hamming (closest eval image)
    unhashable: int  # training images whose pHash could not be computed (kept: nothing to compare)
    keep: list[int]  # indices of the training set that stay


def decontaminate(ts: TrainingSet, evals: Sequence[EvalImage], max_hamming: int = DEFAULT_DECONTAMINATION_HAMMING,
                  hash_missing: bool = True) -> Decontamination:
    """Find the training examples whose image is within `max_hamming` pHash bits of an eval image.

    Stored pHashes are used where the set has them; the others are computed from the image bytes (`hash_missing`).
    An image that cannot be hashed cannot be compared: it is counted in `unhashable`. Undecodable images would be
    skipped by the trainer anyway.
    """
    from danqing_assets.lib.clusters import _parse_hashes

    if max_hamming < 0 or max_hamming > 64:
        raise ValueError(f"max_hamming must be within 0..64, got {max_hamming}")
    hashes = list(ts.phash)
    if hash_missing:
        for i, h in enumerate(hashes):
            if not h:
                try:
                    data, _ = ts.get(i)
                except Exception:  # noqa: BLE001 - an unreadable image is not trained on either
                    continue
                hashes[i] = _phash_bytes(data)
    train_vals, train_ok = _parse_hashes(hashes)
    eval_vals, eval_ok = _parse_hashes([e.phash for e in evals])
    eval_idx = np.flatnonzero(eval_ok)
    eval_vals = eval_vals[eval_idx]
    removed: list[dict[str, Any]] = []
    drop = np.zeros(len(ts), dtype=bool)
    if eval_vals.size:
        for start in range(0, len(ts), 4096):  # (chunk x eval) distance blocks: memory bounded
            stop = min(start + 4096, len(ts))
            block = train_vals[start:stop, None] ^ eval_vals[None, :]
            d = np.bitwise_count(block)
            best = d.argmin(axis=1)
            dist = d[np.arange(stop - start), best]
            for k in np.flatnonzero((dist <= max_hamming) & train_ok[start:stop]):
                i = start + int(k)
                e = evals[int(eval_idx[best[k]])]
                drop[i] = True
                removed.append({"pair_id": ts.ids[i], "eval_set": e.eval_set, "eval_image": e.image_id,
                                "hamming": int(dist[k])})
    return Decontamination(removed, int((~train_ok).sum()), [int(i) for i in np.flatnonzero(~drop)])


# ---------------------------------------------------------------------------------------------------------------------
# Training from a start checkpoint.


def recipe_key(train_config: Any, start: dict[str, Any]) -> str:
    """A digest of what must be equal for two runs to be compared: the recipe and the start checkpoint's weights."""
    from dataclasses import asdict

    cfg = {k: v for k, v in asdict(train_config).items() if k not in ("workers", "log_every", "checkpoint_every",
                                                                       "keep_checkpoints", "device")}
    blob = json.dumps({"config": cfg, "start": start.get("weights_sha256")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ContinuedResult:
    checkpoint: Path
    train: Any  # lib.train.TrainResult
    examples: int
    lineage: dict[str, Any]


def continue_training(
    start_dir: str | os.PathLike[str],
    examples: TrainingSet,
    out_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    train_config: Any,
    lineage: dict[str, Any],
    log: Callable[[str], None] | None = None,
) -> ContinuedResult:
    """Train the checkpoint directory `start_dir` further on `examples` with `lib.train.train`; write the result as
    a checkpoint directory `out_dir` (its card: the start checkpoint, the data, the recipe). Resumes from `work_dir`
    after a crash (same final weights as an uninterrupted run on CPU with the same seed)."""
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from danqing_assets.lib.checkpoints import load_checkpoint_dir, read_card, save_checkpoint_dir
    from danqing_assets.lib.train import train

    if len(examples) == 0:
        raise PretrainError(f"the {examples.name} training set is empty")
    card = read_card(start_dir)
    torch.manual_seed(train_config.seed)
    start = load_checkpoint_dir(start_dir, device="cpu", precision="fp32")
    model = start.model
    model.train()
    preprocess_train = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=True)
    result = train(model, start.tokenizer, preprocess_train, examples, train_config, work_dir, log=log)
    model.eval()
    start_info = {"path": str(start_dir), "weights_sha256": card.get("weights", {}).get("sha256"),
                  "model_name": card["model_name"]}
    full = {**lineage, "start_checkpoint": start_info, "data": {**examples.description, "examples": len(examples)},
            "train_steps": result.steps, "samples_seen": result.samples_seen,
            "skipped_examples": result.skipped_examples, "recipe": recipe_key(train_config, start_info),
            "final_loss": result.loss_curve[-1][1] if result.loss_curve else None}
    # `model`, not `start`: the start's dedup descriptor (its centre and distance were fitted to the start's weights)
    # is not carried over stale; semantic dedup with this checkpoint compares its CLIP embeddings
    path = save_checkpoint_dir(model, out_dir, model_name=card["model_name"], model_config=card["model_config"],
                               tokenizer_spec=card["tokenizer"], preprocess_cfg=card.get("preprocess"),
                               vocab_path=_vocab_in(start_dir), lineage=full, overwrite=True)
    return ContinuedResult(path, result, len(examples), full)


def _vocab_in(directory: str | os.PathLike[str]) -> Path | None:
    from danqing_assets.lib.checkpoints import VOCAB_NAME

    p = Path(directory) / VOCAB_NAME
    return p if p.exists() else None

