"""Zero-shot and retrieval metrics: exact values on constructed embeddings, clip_benchmark conformance, both evaluators
end to end (a fake embedder whose answers are known, and the tiny random open_clip model), and the result JSON."""

from __future__ import annotations

import inspect
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

from danqing_assets.lib.evalsets import (
    CN_CLIP_TEMPLATES_SOURCE,
    EMBED_FAILED,
    MALFORMED_LINE,
    TEXT_UNKNOWN_IMAGE,
    UNDECODABLE_IMAGE,
    EvalSetError,
    write_retrieval_set,
    write_zero_shot_set,
)
from danqing_assets.lib.evaluate import (
    RETRIEVAL_TASK,
    ZERO_SHOT_TASK,
    best_positive_ranks,
    chance_recall_at_k,
    chance_retrieval_r1,
    chance_zero_shot,
    evaluate_retrieval,
    evaluate_zero_shot,
    retrieval_metrics,
    write_clip_benchmark_json,
    zero_shot_classifier,
    zero_shot_metrics,
)

RECALL_KEYS = [f"{d}_retrieval_recall@{k}" for k in (1, 5, 10) for d in ("image", "text")] + ["mean_recall"]


def _image(seed: int, fmt: str = "PNG") -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt)
    return buf.getvalue()


def _unit(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return (a / np.linalg.norm(a)).astype(np.float32)


class FakeEmbedder:
    """Image vectors looked up by their bytes, text vectors computed by a function: the right answers are known."""

    def __init__(self, image_vecs: dict[bytes, np.ndarray], text_vec: Callable[[str], np.ndarray]) -> None:
        self.image_vecs = image_vecs
        self.text_vec = text_vec
        self.calls: list[int] = []

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        self.calls.append(len(images))
        return np.stack([self.image_vecs[bytes(b)] for b in images]).astype(np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.text_vec(t) for t in texts]).astype(np.float32)


def embeddings_for_scores(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit image and text embeddings whose text @ image.T equals `scores` / c for one constant c > 0.

    Images are the first n_images basis vectors; each text is its score row plus a private padding dimension that
    brings every text to norm 1, so rows and columns of `scores` keep their order exactly.
    """
    n_texts, n_images = scores.shape
    c = 1.01 * np.linalg.norm(scores, axis=1).max()
    images = np.eye(n_images, n_images + n_texts)
    texts = np.zeros((n_texts, n_images + n_texts))
    texts[:, :n_images] = scores / c
    texts[np.arange(n_texts), n_images + np.arange(n_texts)] = np.sqrt(1 - (texts**2).sum(axis=1))
    return images.astype(np.float32), texts.astype(np.float32)


# --- retrieval metrics on constructed embeddings -----------------------------------------------------------------------


def test_perfect_model_scores_one_everywhere() -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 16))
    index = [[i] for i in range(8) for _ in range(3)]  # three captions per image
    texts = np.stack([images[i[0]] + 0.01 * rng.normal(size=16) for i in index])
    assert retrieval_metrics(images, texts, index) == {k: 1.0 for k in RECALL_KEYS}


def test_known_permutation_gives_known_recalls_both_ways() -> None:
    # Circulant scores: text j ranks image j first, then j+1, j+2, ... and image i ranks text i first, then i-1, ...
    # With text j's true image pi(j), both directions put the positive at rank (pi(j) - j) mod 10:
    # ranks 0,0,0,0,0,1,9,2,9,9 -> R@1 = 5/10, R@5 = 7/10, R@10 = 10/10.
    n = 10
    v = np.linspace(1.0, 0.1, n)
    scores = np.array([[v[(i - j) % n] for i in range(n)] for j in range(n)])  # all rows have the same norm
    pi = [0, 1, 2, 3, 4, 6, 5, 9, 7, 8]
    images, texts = np.eye(n), scores / np.linalg.norm(scores[0])
    index = [[p] for p in pi]
    assert list(best_positive_ranks(texts, images, index)) == [0, 0, 0, 0, 0, 1, 9, 2, 9, 9]
    m = retrieval_metrics(images, texts, index)
    for direction in ("image", "text"):
        assert m[f"{direction}_retrieval_recall@1"] == pytest.approx(0.5)
        assert m[f"{direction}_retrieval_recall@5"] == pytest.approx(0.7)
        assert m[f"{direction}_retrieval_recall@10"] == pytest.approx(1.0)
    assert m["mean_recall"] == pytest.approx((0.5 + 0.7 + 1.0) / 3)


MULTI_CAPTION_SCORES = np.array([
    # image:  0    1    2    3        (caption of image)
    [2.0, 9.1, 9.2, 9.3],  # t0 (0)
    [9.0, 6.1, 8.2, 8.3],  # t1 (0)
    [8.0, 8.1, 7.2, 7.3],  # t2 (1)
    [7.0, 7.1, 6.2, 6.3],  # t3 (1)
    [6.0, 5.1, 5.2, 5.3],  # t4 (2)
    [5.0, 4.1, 4.2, 4.3],  # t5 (2)
    [4.0, 3.1, 3.2, 3.3],  # t6 (3)
    [3.0, 2.1, 2.2, 2.3],  # t7 (3)
])
MULTI_CAPTION_INDEX = [[0], [0], [1], [1], [2], [2], [3], [3]]


def test_image_to_text_hits_when_any_caption_is_in_top_k() -> None:
    # image -> text, best caption's rank: image 0: t1 first (t0 last) -> 0; image 1: t0 above t2 -> 1;
    # image 2: t0..t3 above t4 -> 4; image 3: t0..t5 above t6 -> 6. R@1 = 1/4, R@5 = 3/4, R@10 = 1.
    # text -> image ranks: t0 3, t1..t3 0, t4 2 (6.0 and 5.3 above 5.2), t5 2, t6 1, t7 1: R@1 = 3/8, R@5 = R@10 = 1.
    images, texts = embeddings_for_scores(MULTI_CAPTION_SCORES)
    m = retrieval_metrics(images, texts, MULTI_CAPTION_INDEX)
    expected = {
        "image_retrieval_recall@1": 3 / 8, "image_retrieval_recall@5": 1.0, "image_retrieval_recall@10": 1.0,
        "text_retrieval_recall@1": 1 / 4, "text_retrieval_recall@5": 3 / 4, "text_retrieval_recall@10": 1.0,
    }
    assert m == pytest.approx({**expected, "mean_recall": sum(expected.values()) / 6})


def _clip_benchmark_recalls(images: np.ndarray, texts: np.ndarray, index: list[list[int]], k: int) -> tuple:
    """clip_benchmark's own recipe (metrics/zeroshot_retrieval.py): true recall via torch.topk, then > 0, averaged."""
    import torch

    scores = torch.from_numpy(texts @ images.T)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    for t, imgs in enumerate(index):
        positive[t, imgs] = True

    def recall_at_k(s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        top = torch.nn.functional.one_hot(torch.topk(s, k, dim=1)[1], num_classes=s.shape[1])
        return (top * p.view(s.shape[0], 1, s.shape[1])).sum(dim=(1, 2)) / p.sum(dim=1)

    return ((recall_at_k(scores, positive) > 0).float().mean().item(),
            (recall_at_k(scores.T, positive.T) > 0).float().mean().item())


def test_matches_clip_benchmark_recipe_on_random_embeddings() -> None:
    rng = np.random.default_rng(3)
    images = rng.normal(size=(40, 8)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    index = [[i] for i in range(40) for _ in range(int(rng.integers(1, 6)))]  # 1..5 captions per image
    texts = np.stack([images[i[0]] + 0.9 * rng.normal(size=8) for i in index]).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    m = retrieval_metrics(images, texts, index)
    for k in (1, 5, 10):
        t2i, i2t = _clip_benchmark_recalls(images, texts, index, k)
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx(t2i, abs=1e-6)
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx(i2t, abs=1e-6)
    assert 0.05 < m["image_retrieval_recall@1"] < 0.95  # a real test: neither trivial nor hopeless


def test_a_collapsed_model_gets_no_credit_from_ties() -> None:
    same = np.ones((4, 3))
    m = retrieval_metrics(same, np.ones((8, 3)), MULTI_CAPTION_INDEX)
    # text -> image: 3 tied negatives above the positive (rank 3); image -> text: 6 tied negative captions (rank 6)
    assert m["image_retrieval_recall@1"] == 0.0 and m["image_retrieval_recall@5"] == 1.0
    assert m["text_retrieval_recall@5"] == 0.0 and m["text_retrieval_recall@10"] == 1.0


def test_images_without_captions_are_distractors_not_queries() -> None:
    images = np.eye(3)
    texts = np.array([[1.0, 0.0, 0.9], [0.0, 1.0, 0.0]])  # image 2 has no caption but outscores nothing for t1
    m = retrieval_metrics(images, texts, [[0], [1]])
    assert m["image_retrieval_recall@1"] == 1.0 and m["text_retrieval_recall@1"] == 1.0
    m = retrieval_metrics(images, np.array([[0.9, 0.0, 1.0], [0.0, 1.0, 0.0]]), [[0], [1]])
    assert m["image_retrieval_recall@1"] == 0.5  # the distractor takes t0's first place
    assert m["text_retrieval_recall@1"] == 1.0  # image 0 still ranks t0 first; image 2 asks nothing


# --- zero-shot metrics --------------------------------------------------------------------------------------------------


def _imbalanced_logits() -> tuple[np.ndarray, list[int]]:
    """Six classes; class 0: 8 images, all right; class 1: 2 images, true class second; class 2: one right, one last."""
    rows, targets = [], []
    for _ in range(8):
        rows.append([1.0, 0.5, 0.4, 0.3, 0.2, 0.1])
        targets.append(0)
    for _ in range(2):
        rows.append([0.1, 0.9, 0.2, 1.0, 0.3, 0.4])
        targets.append(1)
    rows.append([0.1, 0.2, 1.0, 0.3, 0.4, 0.5])
    rows.append([0.1, 0.2, -1.0, 0.3, 0.4, 0.5])
    targets += [2, 2]
    return np.array(rows), targets


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_zero_shot_top_k_and_mean_per_class_recall_on_imbalanced_classes() -> None:
    logits, targets = _imbalanced_logits()
    # class embeddings = basis: logits = normalised image rows, which keeps each row's order
    m = zero_shot_metrics(logits, np.eye(6), targets)
    assert m["acc1"] == pytest.approx(9 / 12)
    assert m["acc5"] == pytest.approx(11 / 12)  # only the last-ranked image misses the top 5
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0 + 0.5) / 3)  # classes 3..5 have no image
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert m["mean_per_class_recall"] == pytest.approx(
        sklearn_metrics.balanced_accuracy_score(targets, logits.argmax(axis=1)))


def test_zero_shot_perfect_model_and_few_classes() -> None:
    m = zero_shot_metrics(np.eye(3), np.eye(3), [0, 1, 2])
    assert m == {"acc1": 1.0, "mean_per_class_recall": 1.0}  # no acc5 below 5 classes, as clip_benchmark


def test_class_embedding_is_the_renormalised_mean_of_normalised_templates() -> None:
    vecs = {"A猫": [3.0, 0.0, 0.0], "B猫": [0.0, 1.0, 0.0], "A狗": [0.0, 0.0, 2.0], "B狗": [0.0, 0.0, 5.0]}
    fake = FakeEmbedder({}, lambda t: np.asarray(vecs[t]))
    emb = zero_shot_classifier(fake, ["猫", "狗"], ["A{c}", "B{c}"])
    # normalise first: (1,0,0) and (0,1,0) average to (.5,.5,0) -> (.707,.707,0); the raw mean (1.5,.5,0) would not
    np.testing.assert_allclose(emb, [[2**-0.5, 2**-0.5, 0.0], [0.0, 0.0, 1.0]], atol=1e-6)


# --- evaluators end to end ---------------------------------------------------------------------------------------------


def test_evaluate_zero_shot_with_known_answers(tmp_path: Path) -> None:
    classes = {"bird": "鸟", "car": "汽车", "cat": "猫", "dog": "狗", "fish": "鱼", "tree": "树"}
    basis = {name: np.eye(6)[k] for k, name in enumerate(classes.values())}
    imgs = {"cat": [_image(i) for i in range(5)], "dog": [_image(10), _image(11, "JPEG")], "tree": [_image(20)]}
    vecs = {b: basis["猫"] for b in imgs["cat"]}
    vecs[imgs["dog"][0]] = basis["狗"]
    vecs[imgs["dog"][1]] = _unit(basis["猫"] + 0.5 * basis["狗"])  # a dog the model calls a cat (dog 2nd)
    vecs[imgs["tree"][0]] = np.full(6, np.nan)  # the model cannot read this one
    write_zero_shot_set(tmp_path, classes, imgs)

    def text_vec(text: str) -> np.ndarray:
        name = next(n for n in basis if n in text)
        return basis[name] + 0.01 * (len(text) % 3)  # templates differ slightly; the class dominates

    fake = FakeEmbedder(vecs, text_vec)
    res = evaluate_zero_shot(fake, tmp_path, batch_size=3)
    assert fake.calls == [3, 3, 2]  # images reach the model in batches
    assert res.n_images == 7 and res.n_classes == 6 and res.n_templates == 80
    assert res.templates_source == CN_CLIP_TEMPLATES_SOURCE
    assert res.skipped == {EMBED_FAILED: 1}
    assert res.metrics == pytest.approx({"acc1": 6 / 7, "acc5": 1.0, "mean_per_class_recall": (1 + 0.5) / 2})
    assert res.per_class_recall == pytest.approx({"cat": 1.0, "dog": 0.5})
    assert res.chance == pytest.approx({"acc1": 1 / 6, "acc5": 5 / 6, "mean_per_class_recall": 1 / 6})
    rows = res.to_rows("ckpt-a", "toy-zs")
    assert {r["metric"]: r["value"] for r in rows} == res.metrics
    assert all(r["checkpoint"] == "ckpt-a" and r["eval_set"] == "toy-zs" for r in rows)


def test_evaluate_retrieval_with_known_answers(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = {i: _image(100 + i, "JPEG" if i % 2 else "PNG") for i in range(6)}  # image 5: no caption
    vecs = {b: _unit(rng.normal(size=12)) for b in images.values()}
    texts = [(10 * i + c, f"第{i}张图的第{c}句描述", [i]) for i in range(5) for c in range(2)]
    texts.append((99, "两张图共有的描述", [0, 1]))
    write_retrieval_set(tmp_path, "test", images, texts)
    with open(tmp_path / "test_imgs.tsv", "a") as fh:
        fh.write("broken line without a tab\n")
    with open(tmp_path / "test_texts.jsonl", "a") as fh:
        fh.write(json.dumps({"text_id": 500, "text": "孤儿", "image_ids": [77]}, ensure_ascii=False) + "\n")

    by_text = {t: vecs[images[ids[0]]] for _, t, ids in texts}
    fake = FakeEmbedder(vecs, lambda t: by_text[t])
    res = evaluate_retrieval(fake, tmp_path, "test", batch_size=4)
    assert res.metrics == {k: 1.0 for k in RECALL_KEYS}
    assert (res.n_images, res.n_texts, res.n_image_queries) == (6, 11, 5)
    assert res.skipped == {MALFORMED_LINE: 1, TEXT_UNKNOWN_IMAGE: 1}
    # chance: text -> image among 6 images (the shared text has 2 positives); image -> text among 11 texts
    assert res.chance["image_retrieval_recall@1"] == pytest.approx((10 / 6 + 2 / 6) / 11)
    assert res.chance["text_retrieval_recall@1"] == pytest.approx((2 * 3 / 11 + 3 * 2 / 11) / 5)
    assert res.to_rows("c", "toy")[0] == {"checkpoint": "c", "eval_set": "toy", "metric": RECALL_KEYS[0],
                                          "value": 1.0}


def test_a_set_with_nothing_usable_is_a_clear_error(tmp_path: Path) -> None:
    write_retrieval_set(tmp_path, "test", {1: b"not an image"}, [(1, "图", [1])])
    fake = FakeEmbedder({}, lambda t: np.ones(4))
    with pytest.raises(EvalSetError, match=f"0 usable images.*{TEXT_UNKNOWN_IMAGE}=1, {UNDECODABLE_IMAGE}=1"):
        evaluate_retrieval(fake, tmp_path, "test")
    write_zero_shot_set(tmp_path / "zs", {"a": "苹果"}, {"a": [b"\x89PNG\r\n\x1a\n broken"]})
    with pytest.raises(EvalSetError, match="no usable image"):
        evaluate_zero_shot(fake, tmp_path / "zs")


@pytest.fixture(scope="module")
def tiny_clip():
    import torch

    from danqing_assets.lib.embed import TINY_MODEL_NAME, load_clip

    torch.manual_seed(0)
    extra = {"allow_random_init": True} if "allow_random_init" in inspect.signature(load_clip).parameters else {}
    return load_clip(TINY_MODEL_NAME, device="cpu", **extra)


def test_tiny_random_model_runs_both_evaluators_end_to_end(tmp_path: Path, tiny_clip) -> None:
    images = {i: _image(200 + i, "JPEG" if i % 2 else "PNG") for i in range(6)}
    texts = [(10 * i + c, f"图片{i}：一只小动物，第{c}种说法", [i]) for i in range(6) for c in range(2)]
    write_retrieval_set(tmp_path / "ret", "valid", images, texts)
    ret = evaluate_retrieval(tiny_clip, tmp_path / "ret", "valid", batch_size=4)
    assert list(ret.metrics) == RECALL_KEYS
    assert all(0.0 <= v <= 1.0 for v in ret.metrics.values())
    assert ret.metrics["image_retrieval_recall@10"] == 1.0  # 6 images: every text finds its image in the top 10
    assert (ret.n_images, ret.n_texts, ret.n_image_queries, ret.skipped) == (6, 12, 6, {})

    classes = {f"c{k}": name for k, name in enumerate(["猫", "狗", "鸟", "鱼", "马", "牛"])}
    write_zero_shot_set(tmp_path / "zs", classes, {c: [_image(300 + 2 * k), _image(301 + 2 * k, "JPEG")]
                                                   for k, c in enumerate(classes)}, templates=["{c}的照片", "一张{c}的图片"])
    zs = evaluate_zero_shot(tiny_clip, tmp_path / "zs", batch_size=5)
    assert set(zs.metrics) == {"acc1", "acc5", "mean_per_class_recall"}
    assert all(0.0 <= v <= 1.0 for v in zs.metrics.values())
    assert (zs.n_images, zs.n_classes, zs.n_templates) == (12, 6, 2)

    out = write_clip_benchmark_json(tmp_path / "res" / "zs.json", model="danqing-tiny-clip", dataset="toy-zs",
                                    task=ZERO_SHOT_TASK, metrics=zs.metrics, pretrained="random")
    assert json.loads(out.read_text(encoding="utf-8"))["metrics"] == zs.metrics


# --- result file and chance levels -------------------------------------------------------------------------------------


def test_clip_benchmark_json_shape(tmp_path: Path) -> None:
    metrics = {"image_retrieval_recall@1": 0.25, "text_retrieval_recall@1": 0.5, "mean_recall": 0.375}
    path = write_clip_benchmark_json(tmp_path / "r.json", model="ViT-B-16", dataset="flickr30k-cn",
                                     task=RETRIEVAL_TASK, metrics=metrics, pretrained="/ckpt/epoch_3.pt")
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "dataset": "flickr30k-cn", "model": "ViT-B-16", "pretrained": "/ckpt/epoch_3.pt",
        "task": "zeroshot_retrieval", "metrics": metrics, "language": "cn",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    with pytest.raises(ValueError, match="task"):
        write_clip_benchmark_json(tmp_path / "x.json", model="m", dataset="d", task="linear_probe", metrics={})


def test_chance_levels() -> None:
    assert chance_zero_shot(10) == pytest.approx(0.1)
    assert chance_zero_shot(10, k=5) == pytest.approx(0.5)
    assert chance_zero_shot(3, k=5) == 1.0
    assert chance_retrieval_r1(1000) == pytest.approx(0.001)
    assert chance_retrieval_r1(5000, n_positives=5) == pytest.approx(0.001)
    assert chance_recall_at_k(10, 5) == pytest.approx(0.5)
    assert chance_recall_at_k(10, 5, n_positives=2) == pytest.approx(1 - 56 / 252)  # 1 - C(8,5)/C(10,5)
    assert chance_recall_at_k(4, 10) == 1.0
    # the formula is the mean R@k of random rankings
    rng = np.random.default_rng(0)
    hits = [bool(set(rng.permutation(30)[:5]) & {0, 1, 2}) for _ in range(4000)]
    assert np.mean(hits) == pytest.approx(chance_recall_at_k(30, 5, n_positives=3), abs=0.03)
