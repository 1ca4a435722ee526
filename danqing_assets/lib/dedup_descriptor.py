"""What semantic dedup compares when a model offers something better than its CLIP embedding: a feature grid.

The paper clusters CLIP image embeddings at cosine distance 0.1. A CLIP embedding pools the whole picture into one
vector: it says *what* is shown, not *where*. A large pretrained CLIP tells two photos of a thing apart anyway, by
countless details; the project's small bootstrap model (64 px, a few CPU minutes of training) does not: its embedding
puts two different pictures of "two green stars at the bottom of a night sky" as close as a re-rendered copy of one
of them (at cosine distance 0.1 it merged 56 distinct images of the demo crawl to catch 37 of its 40 re-rendered
copies). The same model's last convolutional feature map still knows where things are. Max-pooled to a coarse grid
(4 x 4 cells, each the strongest response of every channel there: the regional pooling of R-MAC-style instance
retrieval, Tolias et al. 2016), centred and L2-normalised, it matches a copy that is shifted a few percent, relit,
re-textured and re-encoded, and separates pictures that show the same kinds of things in another arrangement.

`FeatureGrid` is that descriptor: the output of one module of the model (an (N, C, H, W) feature map, read by a
forward hook during the ordinary image forward pass, so the CLIP embedding and the descriptor cost one pass), pooled
to `grid` x `grid`, minus `center` (the mean descriptor of the images the model was trained on, fitted once and
stored with the checkpoint: without it every descriptor of a ReLU network shares one large positive component and all
cosine distances shrink), L2-normalised. A project checkpoint declares it in its card (`"dedup"`, with the centre in
`dedup_center.safetensors`); a model without one is deduplicated on its CLIP embedding, as in the paper.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KIND = "feature_grid"
CENTER_NAME = "dedup_center.safetensors"
MAX_GRID = 16


@dataclass(frozen=True)
class FeatureGrid:
    """The dedup descriptor of a model: `module`'s feature map, max-pooled to `grid` x `grid`, minus `center`,
    L2-normalised (float32, `dim` = channels x grid x grid, channel-major)."""

    module: str
    grid: int
    center: np.ndarray | None = None
    max_distance: float | None = None  # the cosine distance semantic dedup should use with it (None: the caller's)

    def __post_init__(self) -> None:
        if not isinstance(self.module, str) or not self.module or any(not p.isidentifier() and not p.isdigit()
                                                                     for p in self.module.split(".")):
            raise ValueError(f"dedup descriptor: module must be a dotted module path, got {self.module!r}")
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or not 1 <= self.grid <= MAX_GRID:
            raise ValueError(f"dedup descriptor: grid must be an integer 1..{MAX_GRID}, got {self.grid!r}")
        if self.max_distance is not None and (isinstance(self.max_distance, bool) or not isinstance(
                self.max_distance, (int, float)) or not 0 < self.max_distance < 2):
            raise ValueError(f"dedup descriptor: max_distance must be a cosine distance in (0, 2), got "
                             f"{self.max_distance!r}")
        if self.center is not None:
            c = np.asarray(self.center)
            if c.ndim != 1 or c.size == 0 or c.size % (self.grid * self.grid) or not np.isfinite(c).all():
                raise ValueError(f"dedup descriptor: center must be a finite vector of channels x {self.grid}^2 "
                                 f"values, got shape {c.shape}")

    def describe(self) -> str:
        centred = "centred" if self.center is not None else "uncentred"
        return f"{KIND} {self.grid}x{self.grid} of {self.module} ({centred})"

    def resolve(self, model: Any) -> Any:
        """The module of `model` named by `self.module` (a clear error when the model has none)."""
        node = model
        for part in self.module.split("."):
            nxt = node[int(part)] if part.isdigit() and hasattr(node, "__getitem__") else getattr(node, part, None)
            if nxt is None:
                raise ValueError(f"dedup descriptor: the model has no module {self.module!r} (no {part!r} in it)")
            node = nxt
        return node

    @contextlib.contextmanager
    def capture(self, model: Any) -> Iterator[dict[str, Any]]:
        """While active, `holder["map"]` is the latest output of the descriptor's module (a forward hook)."""
        holder: dict[str, Any] = {}
        handle = self.resolve(model).register_forward_hook(lambda _m, _i, out: holder.__setitem__("map", out))
        try:
            yield holder
        finally:
            handle.remove()

    def pooled(self, fmap: Any) -> Any:
        """(N, C, H, W) feature map -> (N, C * grid^2) float tensor, max-pooled per cell (differentiable: the trainer's
        grid loss pools with this too, `lib.train.feature_grids`)."""
        import torch

        if not isinstance(fmap, torch.Tensor) or fmap.ndim != 4:
            raise ValueError(f"dedup descriptor: {self.module} gave {type(fmap).__name__} "
                             f"{tuple(getattr(fmap, 'shape', ()))}, not an (N, C, H, W) feature map")
        if fmap.shape[2] < self.grid or fmap.shape[3] < self.grid:
            raise ValueError(f"dedup descriptor: a {fmap.shape[2]}x{fmap.shape[3]} feature map cannot be pooled to "
                             f"{self.grid}x{self.grid}")
        return torch.nn.functional.adaptive_max_pool2d(fmap.float(), self.grid).flatten(1)

    def raw(self, fmap: Any) -> np.ndarray:
        """(N, C, H, W) feature map -> (N, C * grid^2) float32 pooled descriptors, neither centred nor normalised."""
        return self.pooled(fmap.detach()).cpu().numpy().astype(np.float32, copy=False)

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Centre and L2-normalise raw descriptors; a row that is all zero after centring stays zero (never NaN)."""
        x = np.asarray(raw, dtype=np.float32)
        if self.center is not None:
            if x.shape[1] != self.center.size:
                raise ValueError(f"dedup descriptor: {x.shape[1]} values per image, the stored centre has "
                                 f"{self.center.size} (was the checkpoint's centre fitted on another model?)")
            x = x - self.center.astype(np.float32)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

    def card(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"descriptor": KIND, "module": self.module, "grid": self.grid}
        if self.max_distance is not None:
            entry["max_distance"] = float(self.max_distance)
        return entry


def save_center(descriptor: FeatureGrid, folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the centre to `folder/dedup_center.safetensors`; returns the card entry that names it."""
    import torch
    from safetensors.torch import save_file

    from danqing_assets.lib.tokenizer import file_sha256

    entry = descriptor.card()
    if descriptor.center is not None:
        path = Path(folder) / CENTER_NAME
        save_file({"center": torch.from_numpy(np.ascontiguousarray(descriptor.center, dtype=np.float32))}, str(path))
        entry["center"] = {"file": CENTER_NAME, "sha256": file_sha256(path), "dim": int(descriptor.center.size)}
    return entry


def from_card(entry: Any, folder: str | os.PathLike[str]) -> FeatureGrid:
    """The descriptor a checkpoint card declares (`card["dedup"]`), its centre read and checked against the card."""
    from safetensors.torch import load_file

    from danqing_assets.lib.tokenizer import file_sha256

    if not isinstance(entry, dict) or entry.get("descriptor") != KIND:
        raise ValueError(f"checkpoint card: dedup must be {{'descriptor': {KIND!r}, ...}}, got {entry!r}")
    center = None
    spec = entry.get("center")
    if spec is not None:
        if not isinstance(spec, dict) or not isinstance(spec.get("file"), str) or "/" in spec["file"] \
                or "\\" in spec["file"] or spec["file"].startswith("."):
            raise ValueError(f"checkpoint card: dedup center must name a file in the checkpoint, got {spec!r}")
        path = Path(folder) / spec["file"]
        if not path.is_file():
            raise ValueError(f"checkpoint card names dedup center {path}, which does not exist")
        if spec.get("sha256") and file_sha256(path) != spec["sha256"]:
            raise ValueError(f"{path} does not match the sha256 its card records")
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a corrupt file is a clear error, not a crash deep in safetensors
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
        if set(tensors) != {"center"}:
            raise ValueError(f"{path} must hold exactly one tensor 'center', has {sorted(tensors)}")
        center = tensors["center"].float().numpy().ravel()
        if spec.get("dim") is not None and int(spec["dim"]) != center.size:
            raise ValueError(f"{path} holds {center.size} values, its card says {spec['dim']}")
    return FeatureGrid(module=entry.get("module"), grid=entry.get("grid"), center=center,
                       max_distance=entry.get("max_distance"))


def fit_center(clip: Any, descriptor: FeatureGrid, images: list[Any], *, batch_size: int = 256) -> FeatureGrid:
    """`descriptor` with its centre set to the mean raw descriptor of `images` (encoded bytes or PIL images) under
    `clip` (a `lib.embed.ClipEmbedder`, whose `embed_images` decodes and runs them; images that do not decode are left
    out). Raises ValueError when none does."""
    sums: list[np.ndarray] = []

    def add(_module: Any, _inputs: Any, out: Any) -> None:
        sums.append(descriptor.raw(out).astype(np.float64).sum(axis=0))

    handle = descriptor.resolve(clip.model).register_forward_hook(add)
    try:
        decoded = int((~np.isnan(clip.embed_images(images, batch_size=batch_size)).any(axis=1)).sum())
    finally:
        handle.remove()
    if not sums or not decoded:
        raise ValueError("dedup descriptor: no image decoded, no centre to fit")
    center = (np.sum(sums, axis=0) / decoded).astype(np.float32)
    return FeatureGrid(descriptor.module, descriptor.grid, center, descriptor.max_distance)
