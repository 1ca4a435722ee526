"""The project's CLIP checkpoints (a directory with weights and a card), and Chinese-CLIP checkpoints from cn_clip.

A project checkpoint is a directory::

    card.json             what the weights are: format version, model_name, the full open_clip model config, the
                          tokenizer spec, context length, image size and preprocessing (open_clip PreprocessCfg
                          fields: size, mean, std, interpolation, resize_mode), the weights' sha256, and `lineage`
                          (a free dict the caller fills: data snapshot, training config, code version, parent, ...)
    model.safetensors     the weights (fp32): safetensors, so loading never unpickles
    open_clip_config.json {"model_cfg", "preprocess_cfg"}: ``open_clip.create_model("local-dir:DIR")`` loads the
                          directory as it is (open_clip's local-dir loader looks for model.safetensors among others)
    vocab.txt             the BERT vocabulary, when the tokenizer is one: a checkpoint does not depend on which
                          cn_clip release is installed where it is loaded
    dedup_center.safetensors  optional: the centre of the dedup descriptor the card's ``dedup`` entry declares
                          (`lib.dedup_descriptor`: what semantic dedup compares instead of the CLIP embedding)

The card, not the config file, is what `load_checkpoint_dir` trusts: it is the one place that records everything a
model needs besides its weights, so that an evaluation or a pipeline run can name exactly which model it used.
Note that open_clip alone would pick its BPE tokenizer for the local-dir model; the BERT tokenizer is in the card.

A checkpoint is written to a hidden temporary directory beside its target and renamed into place, so a crash or a
concurrent reader never sees half a checkpoint; an existing checkpoint is not replaced unless asked (`overwrite`).

Chinese-CLIP (OFA-Sys) checkpoints, the paper's stage-4 scorer among them, are not open_clip models: `load_chinese_clip`
builds cn_clip's own `CLIP` from its model_configs JSONs and loads a training checkpoint (``{"state_dict": ...}``, keys
possibly prefixed ``module.``) with ``torch.load(weights_only=True)`` or safetensors, never by plain unpickling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from danqing_assets.lib.dedup_descriptor import from_card as dedup_from_card
from danqing_assets.lib.dedup_descriptor import save_center
from danqing_assets.lib.embed import (
    ClipEmbedder,
    _resolve_device,
    _resolve_precision,
    register_model_config,
)
from danqing_assets.lib.tokenizer import BERT_KIND, ChineseTokenizer, file_sha256, tokenizer_from_spec

log = logging.getLogger(__name__)

CARD_NAME = "card.json"
WEIGHTS_NAME = "model.safetensors"
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"
VOCAB_NAME = "vocab.txt"
CARD_FORMAT = "danqing-clip-checkpoint"
CARD_VERSION = 1

# ---------------------------------------------------------------------------------------------------------------------
# Project checkpoints


def is_checkpoint_dir(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding a project checkpoint card."""
    return (Path(path) / CARD_NAME).is_file()


def read_card(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The card of a checkpoint directory; a card of another format or a newer version is a ValueError."""
    path = Path(directory) / CARD_NAME
    card = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path} is not a {CARD_FORMAT} card")
    if int(card.get("format_version", 0)) > CARD_VERSION:
        raise ValueError(f"{path} has format_version {card['format_version']}; this code reads up to {CARD_VERSION}")
    return card


def _default_preprocess(model: Any) -> dict[str, Any]:
    from open_clip.transform import PreprocessCfg

    visual = getattr(model, "visual", None)
    cfg = getattr(visual, "preprocess_cfg", None)
    if cfg:
        return dict(cfg)
    size = getattr(visual, "image_size", 224)
    return dict(vars(PreprocessCfg(size=size)))


def _square_size(size: Any) -> int | list[int] | None:
    """The image side for a square size ([64, 64] -> 64); a non-square size as given."""
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    return size


def _jsonable(value: Any) -> Any:
    """Tuples as lists, so the card compares equal to itself after a JSON round trip."""
    return json.loads(json.dumps(value))


def save_checkpoint_dir(
    model: Any,
    directory: str | os.PathLike[str],
    *,
    model_name: str,
    model_config: dict[str, Any] | None = None,
    tokenizer_spec: dict[str, Any],
    lineage: dict[str, Any],
    preprocess_cfg: dict[str, Any] | None = None,
    vocab_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    dedup: Any = None,
) -> Path:
    """Write `model` (an open_clip model or a `ClipEmbedder`) as a checkpoint directory; returns its path.

    model_config: the open_clip config the model was built from (default: open_clip's registered config for
        `model_name`); its text context length must equal the tokenizer's.
    tokenizer_spec: `ChineseTokenizer.spec()` or `lib.tokenizer.open_clip_tokenizer_spec(...)`; a BERT vocabulary is
        copied into the directory (found by its sha256: `vocab_path`, else cn_clip's).
    lineage: JSON-serialisable provenance, recorded as given.
    preprocess_cfg: open_clip PreprocessCfg fields (size, mean, std, interpolation, resize_mode, ...); default the
        model's own.
    dedup: a `lib.dedup_descriptor.FeatureGrid` semantic dedup should compare instead of the CLIP embedding (card
        entry ``dedup``, its centre in ``dedup_center.safetensors``); default that of a `ClipEmbedder` `model`.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    net = model.model if isinstance(model, ClipEmbedder) else model
    if dedup is None and isinstance(model, ClipEmbedder):
        dedup = model.dedup
    if dedup is not None:
        dedup.resolve(net)  # a descriptor naming a module the model lacks fails here, before anything is written
    if model_config is None:
        model_config = open_clip.get_model_config(model_name)
        if model_config is None:
            raise ValueError(f"no open_clip config registered as {model_name!r}: pass model_config=")
    model_config = _jsonable(model_config)
    text_ctx = int(model_config.get("text_cfg", {}).get("context_length", 77))
    tok_ctx = tokenizer_spec.get("context_length")
    if tok_ctx is not None and int(tok_ctx) != text_ctx:
        raise ValueError(f"tokenizer context_length {tok_ctx} != the text tower's {text_ctx}")
    text_vocab = model_config.get("text_cfg", {}).get("vocab_size")
    if tokenizer_spec.get("vocab_size") and text_vocab and int(tokenizer_spec["vocab_size"]) > int(text_vocab):
        raise ValueError(f"tokenizer has {tokenizer_spec['vocab_size']} ids; the text tower embeds {text_vocab}")
    vocab_src = None
    if tokenizer_spec.get("kind") == BERT_KIND:
        vocab_src = tokenizer_from_spec(tokenizer_spec, vocab_path=vocab_path).vocab_path
    preprocess = _jsonable(preprocess_cfg if preprocess_cfg is not None else _default_preprocess(net))
    lineage = _jsonable(lineage)  # fails here, before anything is written, when lineage is not JSON

    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; checkpoints are not replaced unless overwrite=True")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
                 for k, v in net.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "model_name": model_name})
        if vocab_src is not None:
            shutil.copyfile(vocab_src, tmp / VOCAB_NAME)
        card = {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "model_name": model_name,
            "model_config": model_config,
            "tokenizer": _jsonable(tokenizer_spec),
            "context_length": text_ctx,
            "image_size": _square_size(preprocess.get("size")),
            "preprocess": preprocess,
            "weights": {
                "file": WEIGHTS_NAME,
                "sha256": file_sha256(tmp / WEIGHTS_NAME),
                "dtype": "float32",
                "n_params": int(sum(v.numel() for v in state.values() if v.is_floating_point())),
            },
            "lineage": lineage,
            **({"dedup": save_center(dedup, tmp)} if dedup is not None else {}),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "library": {"torch": torch.__version__, "open_clip": open_clip.__version__},
        }
        _write_json(tmp / CARD_NAME, card)
        _write_json(tmp / OPEN_CLIP_CONFIG_NAME, {"model_cfg": model_config, "preprocess_cfg": preprocess})
        for f in tmp.iterdir():
            _fsync(f)
        if target.exists():  # overwrite: move the old one aside first, so the target is never half-written
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. directories on platforms that cannot open them
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _register_card_config(model_name: str, config: dict[str, Any]) -> str:
    """Register the card's architecture under its name, or under ``name@<config hash>`` when the name already means
    another architecture in this process (never redefine a built-in or another checkpoint's config)."""
    import open_clip

    existing = open_clip.get_model_config(model_name)
    if existing is None or _jsonable(existing) == config:
        register_model_config(model_name, config)
        return model_name
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    alias = f"{model_name}@{digest}"
    register_model_config(alias, config)
    return alias


def load_checkpoint_dir(
    directory: str | os.PathLike[str],
    device: str = "auto",
    precision: str = "auto",
    *,
    verify_weights: bool = True,
    vocab_path: str | os.PathLike[str] | None = None,
) -> ClipEmbedder:
    """Load a checkpoint directory as a `ClipEmbedder`: the card's architecture built without weights, the
    safetensors loaded strictly (every tensor present, nothing extra), the card's tokenizer and preprocessing.

    verify_weights: check model.safetensors against the card's sha256 first (a mismatch is a ValueError).
    (open_clip logs "initialized randomly" while it builds the empty model; the weights are loaded right after.)
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from safetensors.torch import load_file

    folder = Path(directory)
    card = read_card(folder)
    weights = folder / card.get("weights", {}).get("file", WEIGHTS_NAME)
    if verify_weights and card.get("weights", {}).get("sha256"):
        digest = file_sha256(weights)
        if digest != card["weights"]["sha256"]:
            want = card["weights"]["sha256"]
            raise ValueError(f"{weights} has sha256 {digest[:12]}..., its card says {want[:12]}...")
    name = _register_card_config(card["model_name"], card["model_config"])
    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)
    model = open_clip.create_model(
        name, pretrained=None, precision=prec, device=dev, force_preprocess_cfg=card.get("preprocess") or {}
    )
    model.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    model.eval()
    tokenizer = tokenizer_from_spec(card["tokenizer"], vocab_path=vocab_path, search_dirs=[folder])
    dedup = None
    if card.get("dedup") is not None:
        dedup = dedup_from_card(card["dedup"], folder)
        dedup.resolve(model)
    return ClipEmbedder(model, preprocess, tokenizer, model_name=card["model_name"], pretrained=str(folder),
                        device=dev, precision=prec, card=card, dedup=dedup)


def checkpoint_label(model_name: str, pretrained: str | None) -> str:
    """A short, stable name for a configured model, as data rows and asset metadata record it:
    ``model:pretrained``, plus ``@sha256:<12 hex>`` of the weights for a checkpoint directory."""
    if pretrained and is_checkpoint_dir(pretrained):
        sha = (read_card(pretrained).get("weights") or {}).get("sha256")
        return f"{model_name}:{pretrained}@sha256:{sha[:12]}" if sha else f"{model_name}:{pretrained}"
    return f"{model_name}:{pretrained or 'random-init'}"


# ---------------------------------------------------------------------------------------------------------------------
# Chinese-CLIP (cn_clip) checkpoints

CHINESE_CLIP_TEXT_TOWERS = {
    "ViT-B-16": "RoBERTa-wwm-ext-base-chinese",
    "ViT-L-14": "RoBERTa-wwm-ext-base-chinese",
    "ViT-L-14-336": "RoBERTa-wwm-ext-base-chinese",
    "ViT-H-14": "RoBERTa-wwm-ext-large-chinese",
    "RN50": "RBT3-chinese",
}
"""The text tower each released Chinese-CLIP vision tower was trained with (cn_clip's `_MODEL_INFO`)."""
CHINESE_CLIP_CONTEXT_LENGTH = 52
"""cn_clip's `tokenize` default; all released models were trained with it."""


def _cn_clip_config(spec: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    """A cn_clip model_configs JSON: given as a dict, a JSON file path, or a name under cn_clip/clip/model_configs."""
    if isinstance(spec, dict):
        return dict(spec)
    path = Path(spec)
    if not path.is_file():
        import importlib.util

        found = importlib.util.find_spec("cn_clip")
        if found is None or not found.submodule_search_locations:
            raise ImportError("cn_clip is not installed (`pip install --no-deps cn-clip`)")
        root = Path(next(iter(found.submodule_search_locations))) / "clip" / "model_configs"
        path = root / f"{str(spec).replace('/', '-')}.json"
        if not path.is_file():
            known = sorted(p.stem for p in root.glob("*.json"))
            raise ValueError(f"no cn_clip model config {spec!r}; known: {known}")
    return json.loads(path.read_text(encoding="utf-8"))


def build_chinese_clip(
    vision_model: str | dict[str, Any], text_model: str | dict[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """cn_clip's `CLIP` (fp32, random weights) from a vision and a text config; returns (model, merged config)."""
    from cn_clip.clip.model import CLIP

    if text_model is None:
        if not isinstance(vision_model, str) or vision_model not in CHINESE_CLIP_TEXT_TOWERS:
            raise ValueError(f"say which text tower goes with vision model {vision_model!r} "
                             f"(released pairs: {CHINESE_CLIP_TEXT_TOWERS})")
        text_model = CHINESE_CLIP_TEXT_TOWERS[vision_model]
    info = {**_cn_clip_config(vision_model), **_cn_clip_config(text_model)}
    if isinstance(info.get("vision_layers"), str):  # RN50: "[3, 4, 6, 3]" (cn_clip eval()s it; JSON is enough)
        info["vision_layers"] = json.loads(info["vision_layers"])
    return CLIP(**info), info


def _load_tensors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Tensors of a checkpoint file, without unpickling arbitrary objects: safetensors, or torch.load with
    weights_only=True (a file that needs any other class is refused with a ValueError)."""
    import pickle

    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"refusing to load {path}: it needs unpickling beyond tensors and plain containers "
                         f"(torch.load weights_only=True said: {str(err).splitlines()[0]})") from err


def _chinese_clip_state_dict(ckpt: Any) -> dict[str, Any]:
    """The model weights of a Chinese-CLIP training checkpoint, renamed to cn_clip's CLIP keys."""
    import torch

    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("not a Chinese-CLIP checkpoint: expected {'state_dict': {name: tensor}} or a state dict")
    # Trained with DDP: "module." prefixes. The BERT pooler is not part of cn_clip's CLIP (create_model drops it too).
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("bert.pooler.")}
    if any(".attn.Wqkv." in k or ".attention.self.Wqkv." in k for k in sd):
        # Trained with --use-flash-attention: fused projections. cn_clip's converter splits them back, but reads
        # some keys with a hard-coded "module." prefix, so hand it prefixed keys.
        from cn_clip.clip.model import convert_state_dict

        sd = convert_state_dict({f"module.{k}": v for k, v in sd.items()})
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


class ChineseClipModel:
    """cn_clip's `CLIP` behind the interface `ClipEmbedder` uses: ``encode_image/encode_text(x, normalize=)``,
    `logit_scale`, `visual`. cn_clip's text tower pools at ``[CLS]`` under a ``[PAD]`` attention mask."""

    logit_bias = None

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def visual(self) -> Any:
        return self.model.visual

    @property
    def logit_scale(self) -> Any:
        return self.model.logit_scale

    def encode_image(self, images: Any, normalize: bool = False) -> Any:
        feats = self.model.encode_image(images)
        return _normalize(feats) if normalize else feats

    def encode_text(self, tokens: Any, normalize: bool = False) -> Any:
        feats = self.model.encode_text(tokens)
        return _normalize(feats) if normalize else feats

    def eval(self) -> ChineseClipModel:
        self.model.eval()
        return self

    def parameters(self) -> Any:
        return self.model.parameters()

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()


def _normalize(x: Any) -> Any:
    import torch.nn.functional as F

    return F.normalize(x, dim=-1)


def load_chinese_clip(
    path: str | os.PathLike[str] | None,
    vision_model: str | dict[str, Any] = "ViT-L-14",
    text_model: str | dict[str, Any] | None = None,
    device: str = "auto",
    precision: str = "auto",
    *,
    context_length: int = CHINESE_CLIP_CONTEXT_LENGTH,
) -> ClipEmbedder:
    """A Chinese-CLIP checkpoint as a `ClipEmbedder` (normalised float32 embeddings, like every other model).

    path: a Chinese-CLIP training checkpoint (``{"state_dict": ..., "epoch": ...}``, as its training script and its
        released `clip_cn_*.pt` files store it; ``module.`` prefixes and flash-attention fused keys are handled), a
        bare state dict, or a .safetensors file. Loaded strictly: a missing or unexpected tensor is an error.
        None: random weights (tests).
    vision_model, text_model: cn_clip model_configs names ("ViT-L-14", "RoBERTa-wwm-ext-base-chinese"), JSON paths,
        or dicts; text_model defaults to the tower the vision model was released with.
    precision: "auto" (fp16 on GPU, fp32 on CPU), "fp32", or "fp16" (cn_clip's own conversion: layer norms stay fp32).
    Preprocessing is cn_clip's (`image_transform`): bicubic resize to a square of the model's resolution (no crop),
    CLIP mean/std; text goes through `ChineseTokenizer` (`context_length` 52, as Chinese-CLIP was trained).
    """
    from cn_clip.clip.model import convert_weights
    from cn_clip.clip.utils import image_transform

    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)
    if prec not in ("fp32", "fp16"):
        raise ValueError(f"Chinese-CLIP models run in fp32 or fp16, not {prec!r}")
    model, info = build_chinese_clip(vision_model, text_model)
    if path is not None:
        sd = _chinese_clip_state_dict(_load_tensors(path))
        model.load_state_dict(sd, strict=True)
    model.float()
    if prec == "fp16":
        convert_weights(model)
    model.to(dev).eval()
    resolution = int(info["image_resolution"])
    vision = vision_model if isinstance(vision_model, str) else "custom"
    text = text_model if isinstance(text_model, str) else ("custom" if text_model is not None
                                                           else CHINESE_CLIP_TEXT_TOWERS.get(str(vision_model)))
    tokenizer = ChineseTokenizer(context_length=context_length)
    if tokenizer.vocab_size > int(info["vocab_size"]):
        raise ValueError(f"the text tower embeds {info['vocab_size']} ids, the tokenizer has {tokenizer.vocab_size}")
    return ClipEmbedder(ChineseClipModel(model), image_transform(resolution), tokenizer,
                        model_name=f"cnclip:{vision}@{text}", pretrained=None if path is None else str(path),
                        device=dev, precision=prec, image_size=resolution)


__all__ = [
    "CHINESE_CLIP_TEXT_TOWERS",
    "ChineseClipModel",
    "build_chinese_clip",
    "checkpoint_label",
    "is_checkpoint_dir",
    "load_checkpoint_dir",
    "load_chinese_clip",
    "read_card",
    "save_checkpoint_dir",
]
