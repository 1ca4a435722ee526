"""CLIP image and text embeddings through open_clip, behind one small wrapper (`load_clip` -> `ClipEmbedder`).

The paper does not name its stage-3 embedding model, and its stage-4 model (Chinese-CLIP ViT-L/14) is not an
open_clip architecture; any open_clip model or checkpoint can be plugged in by configuration:

- ``load_clip("ViT-B-32", "laion2b_s34b_b79k")``: an open_clip pretrained tag (downloads; fails offline),
- ``load_clip("ViT-B-32", "hf-hub:org/repo")`` or ``load_clip("hf-hub:org/repo")``: config and weights from the hub,
- ``load_clip("ViT-B-32", "/path/model.pt")``: a local checkpoint (a state dict, as written by `save_checkpoint`),
- ``load_clip("ViT-B-32", "/path/dir")``: an open_clip "local-dir" (open_clip_config.json + weights),
- ``load_clip(TINY_MODEL_NAME)``: a 2-layer, 64-wide, 64-px model with random weights (tests, demos; ~2k img/s CPU).

Embeddings are float32, L2-normalised rows (cosine similarity = dot product). open_clip's own tokenizer is used by
default (its BPE splits Chinese into bytes: pass a Chinese tokenizer for Chinese captions).
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

ImageInput = Any  # a PIL image or encoded image bytes
Tokenizer = Callable[[list[str]], Any]  # list of strings -> LongTensor (n, context_length)


def register_model_config(name: str, config: dict[str, Any]) -> None:
    """Make an open_clip architecture config available under `name` (idempotent; survives open_clip rescans)."""
    import open_clip
    from open_clip import factory

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
        pretrained: str | None, device: str, precision: str,
    ) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.precision = precision
        size = getattr(getattr(model, "visual", None), "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def embed_dim(self) -> int:
        dim = getattr(getattr(self.model, "visual", None), "output_dim", None)
        return int(dim) if dim is not None else int(self.embed_texts(["a"]).shape[1])

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature exp(logit_scale) (100 for trained CLIPs)."""
        return float(self.model.logit_scale.exp().item())

    @property
    def _dtype(self) -> Any:
        import torch

        return {"fp16": torch.float16, "pure_fp16": torch.float16, "bf16": torch.bfloat16,
                "pure_bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 64) -> np.ndarray:
        """(n, d) float32 L2-normalised image embeddings. Images that cannot be decoded get a row of NaN."""
        import torch

        out: np.ndarray | None = None
        n = len(images)
        for start in range(0, n, batch_size):
            tensors, rows = [], []
            for k, item in enumerate(images[start : start + batch_size]):
                try:
                    tensors.append(self.preprocess(_decode_rgb(item, self.image_size)))
                    rows.append(start + k)
                except Exception as exc:  # noqa: BLE001 - an undecodable image is one NaN row, not a crash
                    log.debug("embed_images: row %d not decodable: %s", start + k, exc)
            if not tensors:
                continue
            batch = torch.stack(tensors).to(self.device, dtype=self._dtype)
            with torch.inference_mode():
                feats = self.model.encode_image(batch, normalize=True).float().cpu().numpy()
            if out is None:
                out = np.full((n, feats.shape[1]), np.nan, dtype=np.float32)
            out[rows] = feats
        if out is None:
            return np.full((n, self.embed_dim), np.nan, dtype=np.float32)
        return out

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(n, d) float32 L2-normalised text embeddings."""
        import torch

        parts = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
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


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    tokenizer: Tokenizer | None = None,
    cache_dir: str | None = None,
) -> ClipEmbedder:
    """Build an open_clip model for inference.

    model_name: open_clip architecture ("ViT-B-32", `TINY_MODEL_NAME`, a registered config) or "hf-hub:org/repo".
    pretrained: None (random weights, logged), an open_clip tag, "hf-hub:org/repo", a checkpoint file, or an open_clip
        model directory. A checkpoint written by `save_checkpoint` carries its architecture config, so an unregistered
        custom architecture loads too.
    device: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...; precision: "auto" (fp16 on GPU, fp32 on CPU)
        or any open_clip precision ("fp32", "fp16", "bf16", ...).
    tokenizer: callable list[str] -> LongTensor; default open_clip's tokenizer for the model.
    """
    import open_clip

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
    if weights is None and not name.startswith(("hf-hub:", "local-dir:")):
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


def save_checkpoint(clip: ClipEmbedder | Any, path: str | os.PathLike[str], *, model_name: str | None = None) -> Path:
    """Write the model weights (fp32 state dict) and, when known, its architecture config; load with `load_clip`.

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
