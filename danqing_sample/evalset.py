"""Held-out evaluation sets for a model trained on the sample crawl: the same scene vocabulary, fresh renders.

`write_demo_eval_sets(out_dir, seed)` writes

- `out_dir/retrieval/`: a Chinese-CLIP retrieval split `test` (`test_imgs.tsv`: `image_id<TAB>base64 JPEG`;
  `test_texts.jsonl`: `{"text_id", "text", "image_ids"}`): `retrieval_images` distinct scenes (1 or 2 groups), each
  with 1 or 2 captions (`scenes.caption_for`); plus `test_scenes.tsv` (`image_id<TAB>scene`), which readers ignore;
- `out_dir/zero_shot/`: one image folder per thing kind (`<key>/<n>.jpg`, `per_class` single-thing scenes each:
  one thing of a random colour, position and background) and `classnames.json` mapping each folder to the thing's
  Chinese name (`{"ball": "圆球", ...}`); prompts are left to the reader's default Chinese templates.

The files are written with `danqing_assets.lib.evalsets` (the readers the evaluation uses).

Held out: the crawl seeds every random stream with an integer (a 64-bit BLAKE2b hash of the crawl seed and a key);
these sets seed theirs with strings (`random.Random("danqing-eval-v1/<seed>/...")`) and with 4-word entropy lists
(`numpy.random.default_rng([EVAL_TAG, set, seed, index])`), inputs no crawl stream ever takes, so no eval image is a
crawl image whatever the crawl seed (the tests also check that no image sha256 is shared). The same `seed` gives the
same bytes.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np

from danqing_sample import scenes as SC

EVAL_TAG = 0xDA_E7A1  # first entropy word of every eval image stream
RETRIEVAL_SPLIT = "test"
RETRIEVAL_DIR = "retrieval"
ZERO_SHOT_DIR = "zero_shot"
_SETS = {"retrieval": 1, "zero_shot": 2}


def _text_rng(seed: int, name: str) -> random.Random:
    return random.Random(f"danqing-eval-v1/{seed}/{name}")


def _image_rng(seed: int, name: str, index: int) -> np.random.Generator:
    return np.random.default_rng([EVAL_TAG, _SETS[name], seed, index])


def _render_jpeg(scene: SC.Scene, rng: np.random.Generator) -> bytes:
    while True:
        w, h = int(rng.integers(300, 641)), int(rng.integers(300, 641))
        if 0.5 <= w / h <= 2.0:
            break
    buf = io.BytesIO()
    SC.render_scene(scene, w, h, rng).save(buf, "JPEG", quality=int(rng.integers(85, 93)))
    return buf.getvalue()


def write_demo_eval_sets(out_dir: str | Path, seed: int = 0, *, retrieval_images: int = 200,
                         per_class: int = 10) -> dict[str, Path]:
    """Write the retrieval and zero-shot sets under `out_dir` (see the module docstring); return their directories,
    `{"retrieval": <Chinese-CLIP set, split "test">, "zero_shot": <image folders>}`."""
    from danqing_assets.lib.evalsets import write_retrieval_set, write_zero_shot_set

    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir).expanduser()

    # Retrieval: distinct scenes, 1-2 distinct captions each.
    r = _text_rng(seed, "retrieval")
    seen: set[SC.Scene] = set()
    captions: set[str] = set()
    images: dict[int, bytes] = {}
    texts: list[tuple[int, str, list[int]]] = []
    scene_lines = []
    while len(images) < retrieval_images:
        scene = SC.sample_scene(r)
        if scene in seen:
            continue
        seen.add(scene)
        image_id = len(images)
        images[image_id] = _render_jpeg(scene, _image_rng(seed, "retrieval", image_id))
        scene_lines.append(f"{image_id}\t{scene}\n")
        for _ in range(1 if r.random() < 0.5 else 2):
            text = SC.caption_for(scene, r)
            while text in captions:
                text = SC.caption_for(scene, r)
            captions.add(text)
            texts.append((len(texts), text, [image_id]))
    retrieval = out / RETRIEVAL_DIR
    write_retrieval_set(retrieval, RETRIEVAL_SPLIT, images, texts)
    (retrieval / f"{RETRIEVAL_SPLIT}_scenes.tsv").write_text("".join(scene_lines), encoding="utf-8")

    # Zero-shot: per thing kind, `per_class` distinct scenes of one thing.
    r = _text_rng(seed, "zero_shot")
    by_class: dict[str, list[bytes]] = {}
    index = 0
    for thing in SC.THINGS:
        chosen: set[SC.Scene] = set()
        while len(chosen) < per_class:
            chosen.add(SC.sample_scene(r, groups=1, thing=thing.key, count=1))
        by_class[thing.key] = []
        for scene in sorted(chosen, key=str):
            by_class[thing.key].append(_render_jpeg(scene, _image_rng(seed, "zero_shot", index)))
            index += 1
    zero_shot = out / ZERO_SHOT_DIR
    write_zero_shot_set(zero_shot, {t.key: t.name for t in SC.THINGS}, by_class)
    return {"retrieval": retrieval, "zero_shot": zero_shot}
