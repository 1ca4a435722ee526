"""Pluggable image NSFW scoring for stage 3 (the paper uses an undisclosed ~86M-parameter ViT-B-size detector).

`load_nsfw_scorer(spec, clip)` turns a configuration string into a scorer, or None when screening is OFF. None is a
decision the caller must surface (the asset records "nsfw screening: off" in its metadata): nothing is silently
passed as safe. Specs:

- ``"none"`` (or "", "off"): no screening -> None.
- ``"clip-zero-shot"``: `ClipZeroShotNsfw` on the given CLIP wrapper (softmax over safe vs NSFW prompts).
- ``"package.module:ClassName"``: any class implementing `NsfwScorer`. A class whose constructor takes a ``clip``
  parameter is built with the configured CLIP model (through ``clip_loader``); with no model configured that is an
  error, never ``clip=None``.
- a path to a ``.npz`` / ``.pt`` / ``.pth`` file: `LinearProbeNsfw`, a logistic probe on CLIP image embeddings
  (the design of LAION's CLIP-based NSFW detector); fit one with `LinearProbeNsfw.fit` on labelled embeddings.

Scores are probabilities of NSFW in [0, 1]; NaN marks an image that could not be scored (undecodable): treat it as
"not screened", never as safe.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_SAFE_PROMPTS: tuple[str, ...] = (
    "a photo",
    "a safe for work photo",
    "a photo of people wearing clothes",
    "a landscape photo",
    "a photo of food",
    "a photo of a product",
    "a drawing",
    "a screenshot of text",
)
DEFAULT_NSFW_PROMPTS: tuple[str, ...] = (
    "a nude photo",
    "a pornographic photo",
    "an explicit sexual image",
    "a photo of naked people",
    "a hentai drawing",
)
"""English prompts for English CLIPs; pass Chinese prompts (e.g. "色情图片") with a Chinese CLIP and tokenizer."""


@runtime_checkable
class NsfwScorer(Protocol):
    """Anything with a `name` and `score(images) -> float array in [0, 1]` (NaN: could not score)."""

    name: str

    def score(self, images: Sequence[Any]) -> np.ndarray: ...


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ClipZeroShotNsfw:
    """P(NSFW) = softmax mass of the NSFW prompts among all prompts, from CLIP image-text similarities.

    `logit_scale` is the softmax temperature (default: the model's own, 100 for trained CLIPs).
    """

    name = "clip-zero-shot"

    def __init__(
        self,
        clip: Any,
        safe_prompts: Sequence[str] = DEFAULT_SAFE_PROMPTS,
        nsfw_prompts: Sequence[str] = DEFAULT_NSFW_PROMPTS,
        *,
        logit_scale: float | None = None,
        batch_size: int = 64,
    ) -> None:
        if not safe_prompts or not nsfw_prompts:
            raise ValueError("ClipZeroShotNsfw needs at least one safe and one NSFW prompt")
        self.clip = clip
        self.safe_prompts = tuple(safe_prompts)
        self.nsfw_prompts = tuple(nsfw_prompts)
        self.text_embeddings = clip.embed_texts(list(self.safe_prompts) + list(self.nsfw_prompts))
        self.logit_scale = float(logit_scale if logit_scale is not None else clip.logit_scale)
        self.batch_size = batch_size

    def score_embeddings(self, image_embeddings: np.ndarray) -> np.ndarray:
        """Scores from precomputed L2-normalised image embeddings (reuse the stage-3 dedup embeddings)."""
        emb = np.asarray(image_embeddings, dtype=np.float32)
        probs = _softmax(self.logit_scale * (emb @ self.text_embeddings.T).astype(np.float64))
        out = probs[:, len(self.safe_prompts) :].sum(axis=1)
        out[~np.isfinite(emb).all(axis=1)] = np.nan
        return np.clip(out, 0.0, 1.0)

    def score(self, images: Sequence[Any]) -> np.ndarray:
        return self.score_embeddings(self.clip.embed_images(images, batch_size=self.batch_size))


class LinearProbeNsfw:
    """Logistic probe on CLIP image embeddings: P(NSFW) = sigmoid(embedding . weight + bias)."""

    name = "clip-linear-probe"

    def __init__(self, clip: Any, weight: np.ndarray, bias: float, *, batch_size: int = 64) -> None:
        self.clip = clip
        self.weight = np.asarray(weight, dtype=np.float64).ravel()
        self.bias = float(bias)
        self.batch_size = batch_size

    def score_embeddings(self, image_embeddings: np.ndarray) -> np.ndarray:
        emb = np.asarray(image_embeddings, dtype=np.float64)
        if emb.shape[1] != self.weight.size:
            raise ValueError(f"probe expects {self.weight.size}-d embeddings, got {emb.shape[1]}-d")
        z = np.clip(emb @ self.weight + self.bias, -60, 60)
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, images: Sequence[Any]) -> np.ndarray:
        return self.score_embeddings(self.clip.embed_images(images, batch_size=self.batch_size))

    @staticmethod
    def fit(
        embeddings: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3, iters: int = 500, lr: float = 1.0
    ) -> tuple[np.ndarray, float]:
        """(weight, bias) of an L2-regularised logistic regression (full-batch gradient descent); labels 1 = NSFW."""
        x = np.asarray(embeddings, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64).ravel()
        if x.ndim != 2 or x.shape[0] != y.size or not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("fit needs (n, d) embeddings and n labels in {0, 1}")
        w = np.zeros(x.shape[1])
        b = 0.0
        scale = lr * max(1.0, float(np.mean(np.sum(x * x, axis=1))) / 4) ** -1  # step <= 4 / L for the logistic loss
        for _ in range(iters):
            p = 1.0 / (1.0 + np.exp(-np.clip(x @ w + b, -60, 60)))
            g = p - y
            w -= scale * (x.T @ g / y.size + l2 * w)
            b -= scale * float(g.mean())
        return w, b

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        np.savez(target, weight=self.weight, bias=np.asarray([self.bias]))
        return target if target.suffix == ".npz" else target.with_name(target.name + ".npz")

    @classmethod
    def load(cls, path: str | os.PathLike[str], clip: Any) -> LinearProbeNsfw:
        """From `.npz` (weight, bias) or a torch `.pt`/`.pth` state dict of an ``nn.Linear(d, 1)``."""
        p = Path(path)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return cls(clip, z["weight"], float(np.ravel(z["bias"])[0]))
        import torch

        state = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        weight = next((v for k, v in state.items() if k.endswith("weight")), None)
        bias = next((v for k, v in state.items() if k.endswith("bias")), None)
        if weight is None or bias is None or weight.numel() != weight.shape[-1] or bias.numel() != 1:
            raise ValueError(f"{p}: expected the state dict of an nn.Linear(d, 1)")
        return cls(clip, weight.float().numpy().ravel(), float(bias.float().item()))


_OFF = {"", "none", "off", "disabled"}
_PROBE_SUFFIXES = (".npz", ".pt", ".pth")
_PLUGIN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_SPEC_HELP = "'none', 'clip-zero-shot', a linear-probe checkpoint path (.npz/.pt/.pth) or 'package.module:Class'"


def check_nsfw_spec(spec: str) -> str:
    """`spec` if it has one of the accepted forms (the module docstring), else ValueError naming them. Only the form
    is checked (cheap, at config validation); whether the file exists or the class imports is checked on loading."""
    if not isinstance(spec, str):
        raise ValueError(f"nsfw scorer must be a string: {_SPEC_HELP}")
    text = spec.strip()
    if (text.lower() in _OFF or text == "clip-zero-shot" or _PLUGIN.fullmatch(text)
            or Path(text).suffix.lower() in _PROBE_SUFFIXES):
        return text
    raise ValueError(f"unknown nsfw scorer {spec!r}: use {_SPEC_HELP}")


def _clip_from(spec: str, clip: Any, clip_loader: Callable[[], Any] | None) -> Any:
    """The CLIP model for a scorer that needs one: `clip`, else `clip_loader()`; never None."""
    if clip is None and clip_loader is not None:
        clip = clip_loader()
    if clip is None:
        raise ValueError(f"nsfw scorer {spec!r} needs a CLIP model, and none is configured "
                         "(pass clip=load_clip(...) or a clip_loader)")
    return clip


def load_nsfw_scorer(spec: str | None, clip: Any = None, *, clip_loader: Callable[[], Any] | None = None,
                     **kwargs: Any) -> NsfwScorer | None:
    """A scorer from a spec string (see the module docstring); None means screening is OFF and must be reported.

    `clip` is the CLIP model, or `clip_loader` a function returning it, called only when the scorer needs a model
    (so a scorer without one never loads it); a scorer that needs one and gets none is a ValueError."""
    if spec is None or spec.strip().lower() in _OFF:
        return None
    spec = check_nsfw_spec(spec)
    if spec == "clip-zero-shot":
        return ClipZeroShotNsfw(_clip_from(spec, clip, clip_loader), **kwargs)
    if Path(spec).suffix.lower() in _PROBE_SUFFIXES:
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"nsfw checkpoint not found: {spec}")
        return LinearProbeNsfw.load(spec, _clip_from(spec, clip, clip_loader))
    if _PLUGIN.fullmatch(spec):
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"nsfw spec {spec!r}: cannot import {attr} from {module_name}: {exc}") from exc
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        if "clip" in params and "clip" not in kwargs:
            kwargs = {"clip": _clip_from(spec, clip, clip_loader), **kwargs}
        scorer = factory(**kwargs)
        if not isinstance(scorer, NsfwScorer):
            raise TypeError(f"nsfw spec {spec!r} built {type(scorer).__name__}, which has no name/score(images)")
        return scorer
    raise ValueError(f"unknown nsfw spec {spec!r}: use 'none', 'clip-zero-shot', 'module:Class' or a checkpoint path")
