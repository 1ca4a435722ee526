"""Zero-shot classification and image-text retrieval metrics, defined as LAION's clip_benchmark defines them.

The numbers must be comparable with what papers report, so the definitions follow clip_benchmark
(``clip_benchmark/metrics/zeroshot_classification.py``, ``zeroshot_retrieval.py``) and its metric names:

Zero-shot classification (``task="zeroshot_classification"``)
  - class embedding: every template is filled with the class name and embedded; the L2-normalised template embeddings
    are averaged and the mean is L2-normalised again (open_clip's ``zero_shot_classifier``).
  - logits = image embeddings @ class embeddings.T (clip_benchmark scales by 100; a scale does not change a ranking).
  - ``acc1`` / ``acc5``: fraction of images whose true class is among the 1 / 5 highest logits. Like clip_benchmark,
    ``acc5`` is only reported with at least 5 classes.
  - ``mean_per_class_recall``: scikit-learn's balanced accuracy of the top-1 prediction, i.e. the top-1 recall of
    each class that has images, averaged with equal weight per class (a model that always answers the majority class
    of an imbalanced set gets a high ``acc1`` and a low ``mean_per_class_recall``).

Retrieval (``task="zeroshot_retrieval"``)
  - scores = text embeddings @ image embeddings.T; a (text, image) pair is positive when the text lists the image.
  - ``image_retrieval_recall@k``: text -> image. The fraction of texts with at least one positive image among the k
    best-scoring images.
  - ``text_retrieval_recall@k``: image -> text. The fraction of images with at least one of their captions among the k
    best-scoring texts. An image with five captions counts once, as a hit if any caption is in its top k
    (clip_benchmark computes the true recall and thresholds it at > 0, which is this). Images without any caption
    stay in the gallery of text -> image retrieval as distractors but are not image -> text queries (they have no
    right answer; Chinese-CLIP builds its image -> text queries from the captions the same way).
  - ``mean_recall``: the mean of the six numbers (R@1/5/10 both ways), the "MR" Chinese-CLIP reports.
  - when k reaches the number of candidates, R@k is 1.0 (clip_benchmark's ``torch.topk`` would raise); the result's
    ``chance`` says so too.

Ties. clip_benchmark ranks with ``torch.topk``, whose order among equal scores is unspecified. Here a tie always counts
against the query: a positive is at rank r when r candidates that are *not* positives score at least as high as the
best positive. Without ties this is the same number; with them (a collapsed model that embeds everything alike) the
score is the pessimistic one, never an accident of index order.

The model is duck-typed: anything with ``embed_images(list of bytes) -> (n, d)`` and ``embed_texts(list[str]) ->
(n, d)`` float arrays (`embed.ClipEmbedder`, a test fake). Rows are L2-normalised again here, as clip_benchmark does; a
non-finite row (an image the model could not decode) is skipped as ``embed_failed``.

`write_clip_benchmark_json` writes clip_benchmark's result file; `chance_zero_shot` / `chance_recall_at_k` give the
expected score of a random ranking, to say "N x chance".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from danqing_assets.lib.evalsets import (
    EMBED_FAILED,
    EvalSetError,
    RetrievalSet,
    ZeroShotSet,
    format_template,
)

log = logging.getLogger(__name__)

ZERO_SHOT_TASK = "zeroshot_classification"
RETRIEVAL_TASK = "zeroshot_retrieval"
RECALL_KS: tuple[int, ...] = (1, 5, 10)
TOPK: tuple[int, ...] = (1, 5)
_SCORE_BLOCK = 1 << 24  # score-matrix elements per chunk (64 MB of float32)


class Embedder(Protocol):
    def embed_images(self, images: Sequence[Any]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


# --- chance levels ----------------------------------------------------------------------------------------------------


def chance_zero_shot(n_classes: int, k: int = 1) -> float:
    """Expected top-k accuracy (and, for k=1, mean per-class recall) of a random classifier over `n_classes`."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    return min(k, n_classes) / n_classes


def chance_recall_at_k(n_candidates: int, k: int, n_positives: int = 1) -> float:
    """Probability that a random ranking of `n_candidates` puts at least one of `n_positives` in the top `k`.

    1 - C(n - p, k) / C(n, k), computed as a product so that large galleries do not overflow.
    """
    if n_candidates < 1 or not 1 <= n_positives <= n_candidates:
        raise ValueError(f"need 1 <= n_positives <= n_candidates, got {n_positives}, {n_candidates}")
    miss = 1.0
    for i in range(min(k, n_candidates)):
        miss *= max(n_candidates - n_positives - i, 0) / (n_candidates - i)
    return 1.0 - miss


def chance_retrieval_r1(n_candidates: int, n_positives: int = 1) -> float:
    """Random-ranking R@1: n_positives / n_candidates (1 / n_images for text -> image with one image per text)."""
    return chance_recall_at_k(n_candidates, 1, n_positives)


# --- metric kernels (pure numpy, on embeddings) ---------------------------------------------------------------------


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def best_positive_ranks(
    query_emb: np.ndarray, cand_emb: np.ndarray, positives: Sequence[Sequence[int]]
) -> np.ndarray:
    """Per query, the 0-based rank of its best positive: how many non-positive candidates score >= it.

    A query is a hit at k when its rank is < k. Scores are dot products, computed in chunks of queries so that a
    (5k texts x 30k images) set never holds the full score matrix.
    """
    q = np.asarray(query_emb, dtype=np.float32)
    c = np.asarray(cand_emb, dtype=np.float32)
    if len(positives) != len(q):
        raise ValueError(f"{len(positives)} positive lists for {len(q)} queries")
    ranks = np.empty(len(q), dtype=np.int64)
    chunk = max(1, _SCORE_BLOCK // max(len(c), 1))
    for start in range(0, len(q), chunk):
        stop = min(start + chunk, len(q))
        scores = q[start:stop] @ c.T
        pos = np.zeros(scores.shape, dtype=bool)
        lists = [np.asarray(p, dtype=np.int64) for p in positives[start:stop]]
        if any(len(p) == 0 for p in lists):
            raise ValueError("every query needs at least one positive")
        pos[np.repeat(np.arange(stop - start), [len(p) for p in lists]), np.concatenate(lists)] = True
        best = np.where(pos, scores, -np.inf).max(axis=1)
        ranks[start:stop] = ((scores >= best[:, None]) & ~pos).sum(axis=1)
    return ranks


def retrieval_metrics(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    text_image_index: Sequence[Sequence[int]],
    *,
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, float]:
    """clip_benchmark's retrieval recalls plus Chinese-CLIP's mean recall (see the module docstring).

    text_image_index: for each text, the rows of `image_emb` that are its positive images (one or more).
    Images no text points at are candidates for text -> image only.
    """
    image_emb, text_emb = _normalize(image_emb), _normalize(text_emb)
    t2i = best_positive_ranks(text_emb, image_emb, text_image_index)
    captions: list[list[int]] = [[] for _ in range(len(image_emb))]
    for t, imgs in enumerate(text_image_index):
        for i in imgs:
            captions[i].append(t)
    queries = [i for i, caps in enumerate(captions) if caps]
    i2t = best_positive_ranks(image_emb[queries], text_emb, [captions[i] for i in queries])
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = float(np.mean(t2i < k))
        metrics[f"text_retrieval_recall@{k}"] = float(np.mean(i2t < k))
    metrics["mean_recall"] = float(np.mean(list(metrics.values())))
    return metrics


def zero_shot_ranks(image_emb: np.ndarray, class_emb: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Per image, the 0-based rank of its true class: how many other classes have a logit >= the true one."""
    images, classes = _normalize(image_emb), _normalize(class_emb)
    t = np.asarray(targets, dtype=np.int64)
    ranks = np.empty(len(t), dtype=np.int64)
    chunk = max(1, _SCORE_BLOCK // max(len(classes), 1))
    for start in range(0, len(t), chunk):
        logits = images[start : start + chunk] @ classes.T
        true = logits[np.arange(len(logits)), t[start : start + chunk]]
        ranks[start : start + chunk] = (logits >= true[:, None]).sum(axis=1) - 1
    return ranks


def zero_shot_metrics(
    image_emb: np.ndarray, class_emb: np.ndarray, targets: Sequence[int], *, ks: Sequence[int] = TOPK
) -> dict[str, float]:
    """acc@k for each k (``acc1``, ``acc5``; k > 1 only with >= k classes, as clip_benchmark) and
    ``mean_per_class_recall`` (balanced accuracy over the classes that have images)."""
    return _zero_shot_metrics(zero_shot_ranks(image_emb, class_emb, targets), targets, len(class_emb), ks)


def _zero_shot_metrics(
    ranks: np.ndarray, targets: Sequence[int], n_classes: int, ks: Sequence[int]
) -> dict[str, float]:
    metrics = {f"acc{k}": float(np.mean(ranks < k)) for k in ks if k == 1 or n_classes >= k}
    metrics["mean_per_class_recall"] = float(np.mean(list(_per_class_recall(ranks, targets).values())))
    return metrics


def _per_class_recall(ranks: np.ndarray, targets: Sequence[int]) -> dict[int, float]:
    t = np.asarray(targets, dtype=np.int64)
    return {int(c): float(np.mean(ranks[t == c] == 0)) for c in np.unique(t)}


def zero_shot_classifier(
    embedder: Embedder, classnames: Sequence[str], templates: Sequence[str], *, batch_size: int = 256
) -> np.ndarray:
    """(n_classes, d) class embeddings: mean of the normalised template embeddings, renormalised."""
    texts = [format_template(t, name) for name in classnames for t in templates]
    emb = np.concatenate([_embed(embedder.embed_texts, texts[s : s + batch_size], "embed_texts")
                          for s in range(0, len(texts), batch_size)])
    if not np.isfinite(emb).all():
        raise EvalSetError("the model returned non-finite embeddings for class prompts")
    per_class = _normalize(emb).reshape(len(classnames), len(templates), -1).mean(axis=1)
    return _normalize(per_class)


def _embed(fn: Any, items: Sequence[Any], what: str) -> np.ndarray:
    out = np.asarray(fn(list(items)), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(items):
        raise ValueError(f"{what} returned shape {out.shape} for {len(items)} inputs")
    return out


# --- results ----------------------------------------------------------------------------------------------------------


def _rows(metrics: Mapping[str, float], checkpoint: str, eval_set: str) -> list[dict[str, Any]]:
    return [{"checkpoint": checkpoint, "eval_set": eval_set, "metric": m, "value": float(v)}
            for m, v in metrics.items()]


@dataclass
class ZeroShotResult:
    """Zero-shot metrics of one model on one set, with what was evaluated and what was skipped."""

    metrics: dict[str, float]
    n_images: int
    n_classes: int
    n_templates: int
    templates_source: str
    classnames_source: str
    skipped: dict[str, int] = field(default_factory=dict)
    per_class_recall: dict[str, float] = field(default_factory=dict)  # class dir -> top-1 recall (classes with images)
    chance: dict[str, float] = field(default_factory=dict)  # metric -> score of a random classifier
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # first skipped records: (reason, where, detail)
    task: str = ZERO_SHOT_TASK

    def to_rows(self, checkpoint: str, eval_set: str) -> list[dict[str, Any]]:
        """One row per metric: {checkpoint, eval_set, metric, value}."""
        return _rows(self.metrics, checkpoint, eval_set)


@dataclass
class RetrievalResult:
    """Retrieval metrics of one model on one split, with what was evaluated and what was skipped."""

    metrics: dict[str, float]
    n_images: int  # gallery of text -> image retrieval
    n_texts: int  # text queries = gallery of image -> text retrieval
    n_image_queries: int  # images with at least one caption
    split: str
    skipped: dict[str, int] = field(default_factory=dict)
    dropped_image_refs: int = 0  # unknown image ids removed from texts that kept another image
    chance: dict[str, float] = field(default_factory=dict)
    examples: list[tuple[str, str, str]] = field(default_factory=list)
    task: str = RETRIEVAL_TASK

    def to_rows(self, checkpoint: str, eval_set: str) -> list[dict[str, Any]]:
        """One row per metric: {checkpoint, eval_set, metric, value}."""
        return _rows(self.metrics, checkpoint, eval_set)


# --- evaluators -------------------------------------------------------------------------------------------------------


def evaluate_zero_shot(embedder: Embedder, set_dir: str | os.PathLike[str], batch_size: int = 64) -> ZeroShotResult:
    """Zero-shot classification of an image-folder set (`evalsets.ZeroShotSet`) with `embedder`."""
    zs = ZeroShotSet(set_dir)
    class_emb = zero_shot_classifier(embedder, zs.classnames, zs.templates, batch_size=max(batch_size, 256))
    embs, targets = [], []
    for batch in zs.iter_image_batches(batch_size):
        emb = _embed(embedder.embed_images, [data for _, data in batch], "embed_images")
        ok = np.isfinite(emb).all(axis=1)
        for k in np.flatnonzero(~ok):
            zs.skipped.add(EMBED_FAILED, zs.classes[batch[k][0]].dir_name)
        embs.append(emb[ok])
        targets.extend(label for (label, _), keep in zip(batch, ok) if keep)
    if not targets:
        raise EvalSetError(f"zero-shot set {zs.set_dir}: no usable image ({zs.skipped.summary()})")
    image_emb = np.concatenate(embs)
    n_classes = len(zs.classes)
    ranks = zero_shot_ranks(image_emb, class_emb, targets)
    metrics = _zero_shot_metrics(ranks, targets, n_classes, TOPK)
    chance = {m: chance_zero_shot(n_classes, int(m[3:])) if m.startswith("acc") else chance_zero_shot(n_classes)
              for m in metrics}
    result = ZeroShotResult(
        metrics=metrics, n_images=len(targets), n_classes=n_classes, n_templates=len(zs.templates),
        templates_source=zs.templates_source, classnames_source=zs.classnames_source, skipped=zs.skipped.as_dict(),
        per_class_recall={zs.classes[c].dir_name: r for c, r in _per_class_recall(ranks, targets).items()},
        chance=chance, examples=list(zs.skipped.examples),
    )
    log.info("zero-shot %s: %d images, %d classes, %d templates: %s (skipped: %s)", zs.set_dir, result.n_images,
             n_classes, result.n_templates, _fmt(metrics), zs.skipped.summary())
    return result


def evaluate_retrieval(
    embedder: Embedder, set_dir: str | os.PathLike[str], split: str = "test", batch_size: int = 64
) -> RetrievalResult:
    """Image <-> text retrieval on one split of a Chinese-CLIP-layout set (`evalsets.RetrievalSet`) with `embedder`."""
    rs = RetrievalSet(set_dir, split)
    ids: list[str] = []
    embs = []
    for batch in rs.iter_image_batches(batch_size):
        emb = _embed(embedder.embed_images, [data for _, data in batch], "embed_images")
        ok = np.isfinite(emb).all(axis=1)
        for k in np.flatnonzero(~ok):
            rs.skipped.add(EMBED_FAILED, rs.imgs_path.name, batch[k][0])
        embs.append(emb[ok])
        ids.extend(image_id for (image_id, _), keep in zip(batch, ok) if keep)
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    texts = rs.read_texts(known_image_ids=row_of)
    if not ids or not texts:
        raise EvalSetError(f"retrieval set {rs.set_dir} split {split!r}: {len(ids)} usable images, {len(texts)} "
                           f"usable texts ({rs.skipped.summary()})")
    text_emb = np.concatenate([_embed(embedder.embed_texts, [t.text for t in texts[s : s + batch_size]],
                                      "embed_texts") for s in range(0, len(texts), batch_size)])
    ok = np.isfinite(text_emb).all(axis=1)
    for k in np.flatnonzero(~ok):
        rs.skipped.add(EMBED_FAILED, rs.texts_path.name, texts[k].text_id)
    texts = [t for t, keep in zip(texts, ok) if keep]
    if not texts:
        raise EvalSetError(f"retrieval set {rs.set_dir} split {split!r}: no text the model could embed")
    text_image_index = [[row_of[i] for i in t.image_ids] for t in texts]
    metrics = retrieval_metrics(np.concatenate(embs), text_emb[ok], text_image_index)

    n_captions = np.bincount(np.concatenate([np.asarray(p) for p in text_image_index]), minlength=len(ids))
    chance: dict[str, float] = {}
    for k in RECALL_KS:
        chance[f"image_retrieval_recall@{k}"] = float(np.mean([chance_recall_at_k(len(ids), k, len(p))
                                                               for p in text_image_index]))
        chance[f"text_retrieval_recall@{k}"] = float(np.mean([chance_recall_at_k(len(texts), k, int(n))
                                                              for n in n_captions if n]))
    chance["mean_recall"] = float(np.mean(list(chance.values())))
    result = RetrievalResult(
        metrics=metrics, n_images=len(ids), n_texts=len(texts), n_image_queries=int((n_captions > 0).sum()),
        split=split, skipped=rs.skipped.as_dict(), dropped_image_refs=rs.dropped_image_refs, chance=chance,
        examples=list(rs.skipped.examples),
    )
    log.info("retrieval %s/%s: %d images, %d texts: %s (skipped: %s)", rs.set_dir, split, result.n_images,
             result.n_texts, _fmt(metrics), rs.skipped.summary())
    return result


def _fmt(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


# --- clip_benchmark result file ---------------------------------------------------------------------------------------


def write_clip_benchmark_json(
    path: str | os.PathLike[str],
    *,
    model: str,
    dataset: str,
    task: str,
    metrics: Mapping[str, float],
    pretrained: str | None = None,
    language: str = "cn",
) -> Path:
    """Write one result in clip_benchmark's shape (``clip_benchmark eval --output``), renamed into place:
    ``{"dataset", "model", "pretrained", "task", "metrics", "language"}``, so its ``build_csv`` and plots read it.

    task: ``"zeroshot_classification"`` or ``"zeroshot_retrieval"``; pretrained: the checkpoint (path or tag).
    """
    if task not in (ZERO_SHOT_TASK, RETRIEVAL_TASK):
        raise ValueError(f"task must be {ZERO_SHOT_TASK!r} or {RETRIEVAL_TASK!r}, got {task!r}")
    dump = {"dataset": dataset, "model": model, "pretrained": pretrained, "task": task,
            "metrics": {k: float(v) for k, v in metrics.items()}, "language": language}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(dump, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    os.replace(tmp, target)
    return target


