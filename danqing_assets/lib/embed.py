"""CLIP image and text embeddings through open_clip, behind one small wrapper (`load_clip` -> `ClipEmbedder`).

The paper does not name its stage-3 embedding model, and its stage-4 model (Chinese-CLIP ViT-L/14) is not an
open_clip architecture; any of these can be plugged in by configuration:

- ``load_clip("ViT-B-32", "laion2b_s34b_b79k")``: an open_clip pretrained tag (downloads; fails offline),
- ``load_clip("ViT-B-32", "hf-hub:org/repo")`` or ``load_clip("hf-hub:org/repo")``: config and weights from the hub,
- ``load_clip(name, "/path/ckpt_dir")``: the project's own checkpoint directory (card.json + model.safetensors,
  written by `lib.checkpoints.save_checkpoint_dir`): architecture, tokenizer and preprocessing come from the card,
- ``load_clip("cnclip:ViT-L-14", "/path/epoch_latest.pt")``: a Chinese-CLIP checkpoint through cn_clip's model code,
- ``load_clip("ViT-B-32", "/path/model.pt")``: a state-dict file (as written by the older `save_checkpoint`),
- ``load_clip("ViT-B-32", "/path/dir")``: an open_clip "local-dir" (open_clip_config.json + weights),
- ``load_clip(TINY_MODEL_NAME, allow_random_init=True)``: a 2-layer, 64-wide, 64-px model with random weights (tests).

A model without weights is refused unless `allow_random_init=True`: random embeddings would silently make semantic
dedup and image-text scores meaningless.

Embeddings are float32, L2-normalised rows (cosine similarity = dot product). open_clip's own tokenizer is used for
open_clip architectures (its BPE splits Chinese into bytes); the project's Chinese models use Chinese-CLIP's BERT
WordPiece (`lib.tokenizer.ChineseTokenizer`) and a text tower built for it (`chinese_clip_config`).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TINY_MODEL_NAME = "danqing-tiny-clip"
TINY_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""A tiny open_clip architecture (ViT 64 px, 2 layers, width 64, embedding 32) for fast tests without weights."""


def chinese_clip_config(
    *,
    embed_dim: int = 128,
    image_size: int = 64,
    patch_size: int = 8,
    vision_layers: int = 4,
    vision_width: int = 128,
    text_layers: int = 4,
    text_width: int = 128,
    head_width: int = 64,
    context_length: int = 64,
    vocab_size: int = 21128,
    eos_id: int = 102,
    pad_id: int = 0,
    init_logit_scale: float = 2.302585092994046,
    init_logit_bias: float | None = -10.0,
) -> dict[str, Any]:
    """An open_clip CLIP config (ViT image tower) whose text tower reads BERT WordPiece ids (`ChineseTokenizer`).

    Defaults: cn_clip's vocabulary (21,128 ids; ``[PAD]`` 0, ``[SEP]`` 102) and the bootstrap size below.

    Pooling: open_clip's default ``pool_type="argmax"`` reads the position of the *largest id*, which is the end token
    only for its BPE vocabulary (``<eot>`` = 49407); with BERT ids (``[SEP]`` = 102, characters up to 21127) it would
    read some character in the middle, and under the causal mask that position cannot see the rest of the caption.
    So the tower pools at the first ``[SEP]`` (``pool_type="eos"``, ``eos_id``) and keeps the causal mask: ``[SEP]``
    sees every caption token and no padding, so an embedding does not depend on how much padding follows (the
    tokenizer keeps ``[SEP]`` when it truncates). A bidirectional, BERT-like tower would need a key padding mask,
    which open_clip 3.3's config (`CLIPTextCfg`) cannot switch on (`use_pad_mask` is not passed through).

    ``init_logit_bias`` creates `model.logit_bias`, which SigLIP's sigmoid loss needs (softmax CLIP loss ignores a
    constant bias); scale and bias start at SigLIP's log(10) and -10.
    """
    if vision_width % head_width or text_width % head_width:
        raise ValueError(f"widths ({vision_width}, {text_width}) must be multiples of head_width {head_width}")
    cfg: dict[str, Any] = {
        "embed_dim": embed_dim,
        "init_logit_scale": init_logit_scale,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "layers": vision_layers,
                       "width": vision_width, "head_width": head_width},
        "text_cfg": {"context_length": context_length, "vocab_size": vocab_size, "width": text_width,
                     "heads": text_width // head_width, "layers": text_layers, "pool_type": "eos", "eos_id": eos_id,
                     "pad_id": pad_id},
    }
    if init_logit_bias is not None:
        cfg["init_logit_bias"] = init_logit_bias
    return cfg


BOOTSTRAP_MODEL_NAME = "danqing-bootstrap-clip"
def conv_tower(config: dict[str, Any], tower: str = "danqing_convnet_bn") -> dict[str, Any]:
    """`config` with its image tower replaced by one of `lib/convnet.py`'s timm towers (global max pool, linear
    projection to the embedding), at the same image size."""
    return {**config, "vision_cfg": {"image_size": config["vision_cfg"]["image_size"], "timm_model_name": tower,
                                     "timm_pool": "max", "timm_proj": "linear"}}


BOOTSTRAP_MODEL_CONFIG: dict[str, Any] = conv_tower(chinese_clip_config())
"""The project's bootstrap Chinese CLIP: a 4-stage conv image tower at 64 px (`lib/convnet.py`: 3x3 convolutions with
batch norm and max pooling, 0.26 M parameters; a ViT of this size did not learn the shapes of things), BERT-id text
tower 4 x 128 over 64 tokens, embedding 128. Small enough to train from scratch in minutes on 2 CPU cores
(`benchmarks/bench_train.py`: train() at 99.5 samples/s on a batch of 64, one core computing and one decoding, torch
2.14 CPU; 62.8 samples/s with the two instance losses the bootstrap trains with, which encode a second view of every
image; `--view-weight 1 --grid-view-weight 1`)."""

ImageInput = Any  # a PIL image or encoded image bytes
Tokenizer = Callable[[list[str]], Any]  # list of strings -> LongTensor (n, context_length)


def register_model_config(name: str, config: dict[str, Any]) -> None:
    """Make an open_clip architecture config available under `name` (idempotent; survives open_clip rescans); a config
    naming one of the project's timm towers (`lib/convnet.py`) registers that tower too."""
    import open_clip
    from open_clip import factory

    from danqing_assets.lib import convnet

    if convnet.uses_tower(config):
        convnet.register()
    existing = factory.get_model_config(name)
    if existing is not None and existing == config:
        return
    folder = Path(tempfile.gettempdir()) / f"danqing_open_clip_configs_{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)


def register_tiny_model() -> str:
    """Register `TINY_MODEL_CONFIG` and return its name."""
    register_model_config(TINY_MODEL_NAME, TINY_MODEL_CONFIG)
    return TINY_MODEL_NAME


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return precision


def _decode_rgb(item: ImageInput, size: int) -> Any:
    """PIL RGB image from a PIL image or bytes; JPEGs are decoded at the smallest DCT scale still >= `size`."""
    from PIL import Image

    if isinstance(item, Image.Image):
        im = item
    else:
        im = Image.open(io.BytesIO(bytes(item)))
        if im.format in ("JPEG", "MPO"):
            im.draft("RGB", (size, size))
    if im.mode != "RGB":
        has_alpha = "A" in im.getbands() or "transparency" in im.info
        im = im.convert("RGBA").convert("RGB") if has_alpha else im.convert("RGB")
    return im


class ClipEmbedder:
    """An open_clip model with its preprocessing and tokenizer; see `load_clip`."""

    def __init__(
        self, model: Any, preprocess: Callable[[Any], Any], tokenizer: Tokenizer, *, model_name: str,
        pretrained: str | None, device: str, precision: str, image_size: int | None = None,
        card: dict[str, Any] | None = None, dedup: Any = None,
    ) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.precision = precision
        self.card = card  # the card of a project checkpoint directory (`lib.checkpoints`), else None
        self.dedup = dedup  # a `lib.dedup_descriptor.FeatureGrid` the checkpoint declares, else None (CLIP embedding)
        size = image_size or getattr(getattr(model, "visual", None), "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def embed_dim(self) -> int:
        dim = getattr(getattr(self.model, "visual", None), "output_dim", None)
        return int(dim) if dim is not None else int(self.embed_texts(["a"]).shape[1])

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature exp(logit_scale) (100 for trained CLIPs)."""
        return float(self.model.logit_scale.detach().exp().item())

    @property
    def _dtype(self) -> Any:
        import torch

        return {"fp16": torch.float16, "pure_fp16": torch.float16, "bf16": torch.bfloat16,
                "pure_bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many `texts` the tokenizer truncates (0 when the tokenizer cannot tell); for asset metadata."""
        from danqing_assets.lib.tokenizer import count_truncated

        return count_truncated(self.tokenizer, list(texts))

    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 64) -> np.ndarray:
        """(n, d) float32 L2-normalised image embeddings. Images that cannot be decoded get a row of NaN.

        Decoding overlaps the model: a pool of threads (at most 8, one per core) decodes and preprocesses the next
        batches while the model runs on the current one, each thread a whole batch, at most threads + 1 batches in
        flight. Threads suffice because Pillow's decoders and resamplers and torch's ops release the GIL, and they
        need no pickling of `images` (bytes or PIL images already in this process).
        """
        return self._embed_images(images, batch_size, None)[0]

    def embed_images_for_dedup(
        self, images: Sequence[ImageInput], batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(embeddings as `embed_images`, dedup descriptors or None): with a `dedup` descriptor (a checkpoint that
        declares one), its (n, k) L2-normalised rows from the same forward pass (NaN rows where the image does not
        decode); without one, None: semantic dedup then compares the embeddings themselves."""
        return self._embed_images(images, batch_size, self.dedup)

    def _embed_images(
        self, images: Sequence[ImageInput], batch_size: int, dedup: Any
    ) -> tuple[np.ndarray, np.ndarray | None]:
        import collections
        import contextlib
        from concurrent.futures import ThreadPoolExecutor

        import torch

        n = len(images)
        starts = range(0, n, batch_size)

        def prepare(start: int) -> tuple[Any, list[int]]:
            tensors, rows = [], []
            for k, item in enumerate(images[start : start + batch_size]):
                try:
                    tensors.append(self.preprocess(_decode_rgb(item, self.image_size)))
                    rows.append(start + k)
                except Exception as exc:  # noqa: BLE001 - an undecodable image is one NaN row, not a crash
                    log.debug("embed_images: row %d not decodable: %s", start + k, exc)
            return (torch.stack(tensors) if tensors else None), rows

        out: np.ndarray | None = None
        desc: np.ndarray | None = None
        threads = max(1, min(8, os.cpu_count() or 1, len(starts)))
        capture = dedup.capture(self.model) if dedup is not None else contextlib.nullcontext({})
        with ThreadPoolExecutor(threads, thread_name_prefix="embed-decode") as pool, capture as captured:
            ahead = collections.deque(pool.submit(prepare, s) for s in starts[: threads + 1])
            queued = len(ahead)
            while ahead:
                stacked, rows = ahead.popleft().result()
                if queued < len(starts):
                    ahead.append(pool.submit(prepare, starts[queued]))
                    queued += 1
                if stacked is None:
                    continue
                batch = stacked.to(self.device, dtype=self._dtype)
                with torch.inference_mode():
                    feats = self.model.encode_image(batch, normalize=True).float().cpu().numpy()
                if out is None:
                    out = np.full((n, feats.shape[1]), np.nan, dtype=np.float32)
                out[rows] = feats
                if dedup is not None:
                    if "map" not in captured:
                        raise ValueError(f"dedup descriptor: {dedup.module} did not run in the image forward pass")
                    rows_desc = dedup.finish(dedup.raw(captured.pop("map")))
                    if desc is None:
                        desc = np.full((n, rows_desc.shape[1]), np.nan, dtype=np.float32)
                    desc[rows] = rows_desc
        if out is None:
            out = np.full((n, self.embed_dim), np.nan, dtype=np.float32)
        if dedup is not None and desc is None:
            dim = dedup.center.size if dedup.center is not None else 1
            desc = np.full((n, dim), np.nan, dtype=np.float32)
        return out, desc

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(n, d) float32 L2-normalised text embeddings.

        Tokenising overlaps the model: one thread tokenises the next batch while the model runs on the current one
        (the tokenizers are Python and hold the GIL, so one thread is all that helps; torch's ops release it).
        """
        from concurrent.futures import ThreadPoolExecutor

        import torch

        starts = range(0, len(texts), batch_size)

        def tokenize(start: int) -> Any:
            return self.tokenizer(list(texts[start : start + batch_size]))

        parts = []
        with ThreadPoolExecutor(1, thread_name_prefix="embed-tokenize") as pool:
            ahead = [pool.submit(tokenize, s) for s in starts[:1]]
            for k in range(len(starts)):
                tokens = ahead.pop().result().to(self.device)
                ahead += [pool.submit(tokenize, s) for s in starts[k + 1 : k + 2]]
                with torch.inference_mode():
                    parts.append(self.model.encode_text(tokens, normalize=True).float().cpu().numpy())
        if not parts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


def _checkpoint_model_config(path: str) -> dict[str, Any] | None:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not ours (safetensors, npz, ...): open_clip will say what is wrong
        return None
    cfg = ckpt.get("model_config") if isinstance(ckpt, dict) else None
    return cfg if isinstance(cfg, dict) else None


CHINESE_CLIP_PREFIX = "cnclip:"


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    tokenizer: Tokenizer | None = None,
    cache_dir: str | None = None,
    allow_random_init: bool = False,
) -> ClipEmbedder:
    """Build a CLIP model for inference.

    model_name: open_clip architecture ("ViT-B-32", `TINY_MODEL_NAME`, a registered config), "hf-hub:org/repo", or
        "cnclip:<vision>[@<text>]" for a Chinese-CLIP checkpoint ("cnclip:ViT-L-14"; see `load_chinese_clip`).
    pretrained: an open_clip tag, "hf-hub:org/repo", a project checkpoint directory (card.json; its card must name
        `model_name`), a checkpoint file, or an open_clip model directory. A file written by `save_checkpoint`
        carries its architecture config, so an unregistered custom architecture loads too.
    device: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...; precision: "auto" (fp16 on GPU, fp32 on CPU)
        or any open_clip precision ("fp32", "fp16", "bf16", ...).
    tokenizer: callable list[str] -> LongTensor; default: the checkpoint card's, else open_clip's for the model.
    allow_random_init: without it, no weights (pretrained None for an architecture name) is a ValueError.
    """
    import open_clip
    import torch

    torch.set_flush_denormal(True)  # subnormal weights/activations of small models are ~100x slower on x86 CPUs

    from danqing_assets.lib import checkpoints

    if model_name.startswith(CHINESE_CLIP_PREFIX):
        if not pretrained and not allow_random_init:
            raise ValueError(f"load_clip({model_name!r}): pretrained= must be a Chinese-CLIP checkpoint file "
                             "(a random-initialised model is refused unless allow_random_init=True)")
        vision, _, text = model_name[len(CHINESE_CLIP_PREFIX):].partition("@")
        clip = checkpoints.load_chinese_clip(pretrained or None, vision, text or None, device=device,
                                             precision=precision)
        if tokenizer is not None:
            clip.tokenizer = tokenizer
        return clip
    if pretrained and checkpoints.is_checkpoint_dir(pretrained):
        card_name = checkpoints.read_card(pretrained)["model_name"]
        if model_name != card_name:
            raise ValueError(f"load_clip({model_name!r}, {pretrained!r}): that checkpoint is a {card_name!r} model; "
                             "name it as its card.json does")
        clip = checkpoints.load_checkpoint_dir(pretrained, device=device, precision=precision)
        if tokenizer is not None:
            clip.tokenizer = tokenizer
        return clip

    if model_name == TINY_MODEL_NAME:
        register_tiny_model()
    name, weights = model_name, pretrained
    if pretrained and pretrained.startswith(open_clip.factory.HF_HUB_PREFIX):
        name, weights = pretrained, None  # config and weights from the hub
    elif pretrained and os.path.isdir(pretrained):
        name, weights = f"local-dir:{pretrained}", None
    elif pretrained and os.path.isfile(pretrained) and open_clip.factory.get_model_config(model_name) is None:
        cfg = _checkpoint_model_config(pretrained)
        if cfg is not None:
            register_model_config(model_name, cfg)
    no_weights = (weights is None and not name.startswith(("hf-hub:", "local-dir:"))) or (
        name.startswith("local-dir:") and not _has_weight_files(pretrained or ""))
    if no_weights:
        if not name.startswith("local-dir:") and open_clip.factory.get_model_config(name) is None:
            raise RuntimeError(f"load_clip: unknown open_clip architecture {model_name!r}")
        if not allow_random_init:
            raise ValueError(f"load_clip({model_name!r}, {pretrained!r}): no weights to load, the model would be "
                             "randomly initialised; pass pretrained= (tag, hf-hub:, checkpoint), or "
                             "allow_random_init=True for tests")
        log.warning("load_clip(%s): no pretrained weights, the model is randomly initialised", model_name)
    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=weights, precision=prec, device=dev, cache_dir=cache_dir
    )
    model.eval()
    tok = tokenizer or open_clip.get_tokenizer(name)
    return ClipEmbedder(model, preprocess, tok, model_name=model_name, pretrained=pretrained, device=dev,
                        precision=prec)


def _has_weight_files(directory: str) -> bool:
    """Whether open_clip's local-dir loader would find weights (its `_find_checkpoint_in_dir` globs)."""
    folder = Path(directory)
    return any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth"))


def save_checkpoint(clip: ClipEmbedder | Any, path: str | os.PathLike[str], *, model_name: str | None = None) -> Path:
    """Write the model weights (fp32 state dict) and, when known, its architecture config; load with `load_clip`.

    A single-file format kept for existing callers; new checkpoints should be directories with a card
    (`lib.checkpoints.save_checkpoint_dir`), which also record tokenizer, preprocessing and lineage.

    Written to a temporary name and renamed into place, so a crash never leaves half a checkpoint.
    """
    import torch
    from open_clip import factory

    model = clip.model if isinstance(clip, ClipEmbedder) else clip
    name = model_name or (clip.model_name if isinstance(clip, ClipEmbedder) else None)
    payload: dict[str, Any] = {
        "state_dict": {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                       for k, v in model.state_dict().items()},
    }
    if name and not name.startswith(("hf-hub:", "local-dir:")):
        cfg = factory.get_model_config(name)
        if cfg is not None:
            payload["model_name"] = name
            payload["model_config"] = copy.deepcopy(cfg)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target
