"""The embedded default's own Chinese CLIP: trained from scratch on a seed crawl, so the demo needs no download.

No pretrained weights can be fetched on a laptop without a network, and a randomly initialised model is worse than
none (it merges distinct images and scores every pair alike). So the project trains a small model itself
(`embed.BOOTSTRAP_MODEL_CONFIG`: a conv image tower and a BERT-id text tower) on image-text pairs taken from a crawl
that is *not* the one the demo judges: a sample crawl written with a seed no demo snapshot uses. Besides the sigmoid
loss it learns the head nouns of its captions (`lib/caption_targets.py`, weight `train_config.aux_weight`): with pairs
alone it told captions apart by colour and background and never learned what the things are. With
`train_config.view_weight` it also learns to find each image's own augmented copy (`train_data.ImageViews`), which
makes it tell one picture from another: better retrieval, and re-encoded copies closer than distinct pictures.

The pairs are what the project's own extraction gives: every `<img>` with alt text whose image the crawl captured,
unfiltered (no truth labels, no stage decisions), so the few mismatched or poster pairs of the seed crawl are
training noise, as they would be on the web.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


BOOTSTRAP_DEDUP_MODULE = "visual.trunk.features"
BOOTSTRAP_DEDUP_GRID = 4
"""The bootstrap checkpoint's dedup descriptor (`lib.dedup_descriptor`): its conv tower's last feature map (8 x 8 at
64 px) max-pooled to 4 x 4, centred on the seed crawl's images (trained for with `TrainConfig.grid_view_weight`).
Measured on the demo crawl (issue 10, session 23): 33 of its 40 re-rendered copies caught, no distinct picture merged;
the CLIP embedding of the model before it, at the paper's 0.1: 37 caught, 55 distinct pictures merged."""


BOOTSTRAP_DEDUP_MAX_DISTANCE = 0.15
"""The cosine distance on that descriptor within which semantic dedup merges images, recorded in the card. Chosen on
a calibration crawl (sample crawl seed 3_000_003, 250 pages: never a demo or seed-crawl seed) with its truth labels,
for the default bootstrap recipe; see the README's semantic-dedup section for what it gives on the demo crawl."""


@dataclass
class CrawlPairs:
    images: list[bytes]
    captions: list[str]
    pairs_seen: int  # pairs the extraction found
    without_capture: int  # pairs whose image the crawl did not capture (not used)
    without_caption: int
    opted_out: int = 0  # captured with X-Robots-Tag noai / noimageai: not trained on


def crawl_training_pairs(warc_paths: Sequence[str | Path], *, snapshot: str = "bootstrap") -> CrawlPairs:
    """(image bytes, caption) of every extracted pair whose image is captured in the same WARC files."""
    from danqing_assets.lib.captures import CaptureReader
    from danqing_assets.lib.fetch.config import DEFAULT_USER_AGENT
    from danqing_assets.lib.fetch.robots import user_agent_token, x_robots_optout
    from danqing_assets.lib.warc import extract_file

    token = user_agent_token(DEFAULT_USER_AGENT)

    images: list[bytes] = []
    captions: list[str] = []
    seen = no_capture = no_caption = opted_out = 0
    for path in warc_paths:
        path = Path(path)
        res = extract_file(str(path), path.name, snapshot=snapshot, capture_images=True)
        caps = [(c["url"], c["warc_file"], c["warc_offset"], c.get("content_length"))
                for c in res.captures if c.get("http_status") == 200]
        with CaptureReader(caps, {path.name: str(path)}) as read:
            for row in res.pairs:
                seen += 1
                caption = (row.get("caption") or "").strip()
                if not caption:
                    no_caption += 1
                    continue
                data = read(row["image_url"])
                if not data:
                    no_capture += 1
                    continue
                if x_robots_optout(getattr(data, "x_robots_tag", ()) or (), token):
                    opted_out += 1
                    continue
                images.append(data)
                captions.append(caption)
    return CrawlPairs(images, captions, seen, no_capture, no_caption, opted_out)


@dataclass
class BootstrapResult:
    checkpoint: Path
    train: Any  # lib.train.TrainResult
    pairs: int
    seconds: float
    labels: int = 0  # head-noun label words of the auxiliary loss (0: off)


def train_bootstrap(
    pairs: CrawlPairs,
    out_dir: str | Path,
    work_dir: str | Path,
    *,
    train_config: Any,
    lineage: dict[str, Any],
    log: Callable[[str], None] | None = None,
    view_crop_min: float = 0.9,
    dedup_max_distance: float | None = None,
) -> BootstrapResult:
    """Train the bootstrap architecture from scratch on `pairs` and write it as a checkpoint directory `out_dir`
    (replacing an earlier one only once the new one is complete). Training resumes from `work_dir` after a crash.

    view_crop_min: least area share the instance views crop (`train_data.ImageViews`): mild, since the feature-grid
        loss must keep where things are. dedup_max_distance: recorded in the card with the dedup descriptor (the
        distance semantic dedup uses with this checkpoint unless configured otherwise). With
        `train_config.grid_view_weight` > 0 the checkpoint declares the feature grid it trained as its dedup descriptor,
        its centre fitted on the training images after training; without, it declares none (CLIP embeddings)."""
    import open_clip
    import torch

    from danqing_assets.lib.caption_targets import head_noun_targets
    from danqing_assets.lib.checkpoints import save_checkpoint_dir
    from danqing_assets.lib.dedup_descriptor import FeatureGrid, fit_center
    from danqing_assets.lib.embed import (
        BOOTSTRAP_MODEL_CONFIG,
        BOOTSTRAP_MODEL_NAME,
        ClipEmbedder,
        register_model_config,
    )
    from danqing_assets.lib.tokenizer import ChineseTokenizer
    from danqing_assets.lib.train import train
    from danqing_assets.lib.train_data import ImageViews, RecordDataset

    if not pairs.images:
        raise ValueError("no training pairs: the seed crawl gave no captioned, captured images")
    started = time.monotonic()
    torch.manual_seed(train_config.seed)
    register_model_config(BOOTSTRAP_MODEL_NAME, BOOTSTRAP_MODEL_CONFIG)
    model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(BOOTSTRAP_MODEL_NAME,
                                                                                     pretrained=None)
    tokenizer = ChineseTokenizer(context_length=BOOTSTRAP_MODEL_CONFIG["text_cfg"]["context_length"])
    dataset = RecordDataset(list(zip(pairs.images, pairs.captions)))
    targets = None
    if train_config.aux_weight > 0:
        targets = head_noun_targets(pairs.captions)
        say = log or _log.info
        say(f"head-noun labels: {len(targets.vocab)} words, {targets.covered:.0%} of captions labelled")
        if not targets.vocab:  # a tiny crawl: no word is a head often enough
            say("no head-noun label: training without the auxiliary loss")
            train_config = dataclasses.replace(train_config, aux_weight=0.0)
            targets = None
    views = None
    if train_config.view_weight > 0 or train_config.grid_view_weight > 0:
        cfg = model.visual.preprocess_cfg
        views = ImageViews(int(cfg["size"][0]), cfg["mean"], cfg["std"], crop_scale=(view_crop_min, 1.0))
    result = train(model, tokenizer, preprocess_train, dataset, train_config, work_dir, log=log,
                   aux_targets=targets.matrix() if targets is not None else None, view_preprocess=views)
    model.eval()
    dedup = None
    if train_config.grid_view_weight > 0:  # the descriptor it was trained for (the distance was calibrated for that)
        clip = ClipEmbedder(model, preprocess_eval, tokenizer, model_name=BOOTSTRAP_MODEL_NAME, pretrained=None,
                            device=str(next(model.parameters()).device), precision="fp32")
        grid = FeatureGrid(train_config.grid_view_module, train_config.grid_view_size, max_distance=dedup_max_distance)
        dedup = fit_center(clip, grid, list(dict.fromkeys(pairs.images)))
    path = save_checkpoint_dir(
        model, out_dir, model_name=BOOTSTRAP_MODEL_NAME, model_config=BOOTSTRAP_MODEL_CONFIG,
        tokenizer_spec=tokenizer.spec(),
        lineage={**lineage, "train_pairs": len(pairs.images), "train_steps": result.steps,
                 "head_noun_labels": list(targets.vocab) if targets is not None else [],
                 "samples_seen": result.samples_seen, "final_loss": result.loss_curve[-1][1] if result.loss_curve else None},
        overwrite=True, dedup=dedup,
    )
    return BootstrapResult(path, result, len(pairs.images), time.monotonic() - started,
                           len(targets.vocab) if targets is not None else 0)
