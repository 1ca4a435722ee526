"""CLIP wrapper (tiny random open_clip model, CPU, offline), checkpoint round trip, and the pluggable NSFW scorers."""

from __future__ import annotations

import io
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from danqing_assets.lib.embed import TINY_MODEL_CONFIG, TINY_MODEL_NAME, ClipEmbedder, load_clip, save_checkpoint
from danqing_assets.lib.nsfw import (
    ClipZeroShotNsfw,
    LinearProbeNsfw,
    NsfwScorer,
    load_nsfw_scorer,
)


@pytest.fixture(scope="module")
def clip() -> ClipEmbedder:
    torch.manual_seed(0)
    return load_clip(TINY_MODEL_NAME, device="auto", precision="auto", allow_random_init=True)


def _images(n: int, seed: int = 0, colour: tuple[int, int, int] | None = None) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
        if colour is not None:
            a = (0.3 * a + 0.7 * np.array(colour)).astype(np.uint8)
        out.append(Image.fromarray(a))
    return out


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


# --- embeddings ---------------------------------------------------------------------------------------------------


def test_tiny_model_loads_offline_on_cpu(clip: ClipEmbedder) -> None:
    assert clip.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert clip.precision == ("fp16" if clip.device == "cuda" else "fp32")
    assert clip.image_size == TINY_MODEL_CONFIG["vision_cfg"]["image_size"]
    assert clip.embed_dim == TINY_MODEL_CONFIG["embed_dim"]


def test_embed_images_accepts_pil_and_bytes_and_is_normalised(clip: ClipEmbedder) -> None:
    ims = _images(5)
    emb = clip.embed_images(ims + [_jpeg(ims[0])], batch_size=4)
    assert emb.shape == (6, 32) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert float(emb[0] @ emb[5]) > 0.99  # the JPEG copy embeds like its source
    assert np.allclose(clip.embed_images(ims[:2], batch_size=1), emb[:2], atol=1e-5)  # batching does not matter
    assert not np.allclose(emb[0], emb[1])


def test_undecodable_image_is_a_nan_row_not_a_crash(clip: ClipEmbedder) -> None:
    emb = clip.embed_images([b"not an image", _jpeg(_images(1)[0]), b"\xff\xd8\xff\xe0garbage"])
    assert np.isnan(emb[0]).all() and np.isnan(emb[2]).all() and np.isfinite(emb[1]).all()
    assert np.isnan(clip.embed_images([b"junk"])).all()


def test_unusual_modes_are_embedded(clip: ClipEmbedder) -> None:
    rgba = Image.new("RGBA", (70, 70), (255, 0, 0, 0))
    grey = Image.new("L", (70, 70), 128)
    palette = _images(1)[0].convert("P")
    emb = clip.embed_images([rgba, grey, palette])
    assert np.isfinite(emb).all()


def test_embed_texts_default_and_custom_tokenizer(clip: ClipEmbedder) -> None:
    t = clip.embed_texts(["a photo of a cat", "a photo of a dog", "a photo of a cat"])
    assert t.shape == (3, 32) and np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert np.allclose(t[0], t[2]) and not np.allclose(t[0], t[1])
    calls: list[list[str]] = []

    def char_tokenizer(texts: list[str]) -> torch.Tensor:  # e.g. a Chinese character-level tokenizer
        calls.append(texts)
        out = torch.zeros((len(texts), 32), dtype=torch.long)
        for r, s in enumerate(texts):
            ids = [49406] + [100 + (ord(c) % 40000) for c in s][:30] + [49407]
            out[r, : len(ids)] = torch.tensor(ids)
        return out

    custom = ClipEmbedder(clip.model, clip.preprocess, char_tokenizer, model_name=clip.model_name, pretrained=None,
                          device=clip.device, precision=clip.precision)
    zh = custom.embed_texts(["一只猫的照片", "一只狗的照片"])
    assert calls == [["一只猫的照片", "一只狗的照片"]]
    assert zh.shape == (2, 32) and not np.allclose(zh[0], zh[1])
    tok = load_clip(TINY_MODEL_NAME, tokenizer=char_tokenizer, allow_random_init=True)
    assert tok.tokenizer is char_tokenizer


def test_checkpoint_round_trip(tmp_path, clip: ClipEmbedder) -> None:
    ims = _images(3, seed=7)
    path = save_checkpoint(clip, tmp_path / "ckpt" / "tiny.pt")
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    again = load_clip(TINY_MODEL_NAME, str(path))
    assert np.allclose(again.embed_images(ims), clip.embed_images(ims), atol=1e-6)
    assert np.allclose(again.embed_texts(["x y"]), clip.embed_texts(["x y"]), atol=1e-6)
    # the checkpoint carries its architecture: an unregistered name loads it too
    other = load_clip("danqing-test-unregistered-arch", str(path))
    assert np.allclose(other.embed_images(ims), clip.embed_images(ims), atol=1e-6)
    fresh = load_clip(TINY_MODEL_NAME, allow_random_init=True)  # new random weights differ
    assert not np.allclose(fresh.embed_images(ims), clip.embed_images(ims), atol=1e-3)


def test_missing_weights_fail_clearly() -> None:
    with pytest.raises(RuntimeError):
        load_clip(TINY_MODEL_NAME, "no-such-tag-or-file")
    with pytest.raises(RuntimeError, match="unknown open_clip architecture"):
        load_clip("no-such-architecture")
    with pytest.raises(ValueError, match="allow_random_init"):  # no weights at all: refused, not a warning
        load_clip(TINY_MODEL_NAME)


# --- NSFW ---------------------------------------------------------------------------------------------------------


def test_nsfw_spec_none_means_screening_off(clip: ClipEmbedder) -> None:
    for spec in (None, "none", "", "off"):
        assert load_nsfw_scorer(spec, clip) is None
    with pytest.raises(ValueError, match="unknown nsfw scorer"):
        load_nsfw_scorer("bogus", clip)
    with pytest.raises(ValueError, match="needs a CLIP"):
        load_nsfw_scorer("clip-zero-shot")
    with pytest.raises(FileNotFoundError):
        load_nsfw_scorer("/no/such/probe.npz", clip)


def test_clip_zero_shot_scores_are_prompt_softmax(clip: ClipEmbedder) -> None:
    scorer = load_nsfw_scorer("clip-zero-shot", clip)
    assert isinstance(scorer, ClipZeroShotNsfw) and isinstance(scorer, NsfwScorer)
    ims = _images(4) + [b"broken"]
    s = scorer.score(ims)
    assert s.shape == (5,) and np.isnan(s[4])
    assert ((s[:4] >= 0) & (s[:4] <= 1)).all()
    # the definition, recomputed by hand
    emb = clip.embed_images(ims[:4])
    logits = scorer.logit_scale * emb.astype(np.float64) @ scorer.text_embeddings.T.astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert np.allclose(s[:4], p[:, len(scorer.safe_prompts) :].sum(axis=1), atol=1e-6)
    # an embedding equal to an NSFW prompt scores higher than one equal to a safe prompt
    sharp = ClipZeroShotNsfw(clip, ["a photo of a tree"], ["an explicit photo"], logit_scale=100.0)
    t = sharp.text_embeddings
    assert sharp.score_embeddings(t[1:2])[0] > 0.5 > sharp.score_embeddings(t[0:1])[0]


class ConstantScorer:
    """A plug-in scorer for the "module:Class" spec."""

    name = "constant"

    def __init__(self, clip=None, value: float = 0.25) -> None:
        self.clip = clip
        self.value = value

    def score(self, images):
        return np.full(len(images), self.value)


class NotAScorer:
    pass


def test_plugin_scorer_by_module_and_class(clip: ClipEmbedder) -> None:
    scorer = load_nsfw_scorer(f"{__name__}:ConstantScorer", clip, value=0.75)
    assert scorer.name == "constant" and scorer.clip is clip
    assert scorer.score([1, 2, 3]).tolist() == [0.75] * 3
    with pytest.raises(TypeError):
        load_nsfw_scorer(f"{__name__}:NotAScorer", clip)
    with pytest.raises(ValueError, match="cannot import"):
        load_nsfw_scorer(f"{__name__}:Missing", clip)


def test_linear_probe_fit_save_load(tmp_path, clip: ClipEmbedder) -> None:
    red = _images(24, seed=1, colour=(230, 20, 20))  # stand-in classes: "unsafe" = red-tinted
    blue = _images(24, seed=2, colour=(20, 20, 230))
    emb = clip.embed_images(red + blue)
    labels = np.r_[np.ones(24), np.zeros(24)]
    w, b = LinearProbeNsfw.fit(emb, labels, iters=2000)
    probe = LinearProbeNsfw(clip, w, b)
    test = probe.score(_images(6, seed=3, colour=(230, 20, 20)) + _images(6, seed=4, colour=(20, 20, 230)))
    assert (test[:6] > 0.5).all() and (test[6:] < 0.5).all()
    path = probe.save(tmp_path / "probe.npz")
    loaded = load_nsfw_scorer(str(path), clip)
    assert isinstance(loaded, LinearProbeNsfw)
    assert np.allclose(loaded.score_embeddings(emb), probe.score_embeddings(emb))
    # a torch nn.Linear(d, 1) state dict works as well
    linear = torch.nn.Linear(32, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(w, dtype=torch.float32)[None])
        linear.bias.fill_(b)
    torch.save(linear.state_dict(), tmp_path / "probe.pt")
    from_torch = load_nsfw_scorer(str(tmp_path / "probe.pt"), clip)
    assert np.allclose(from_torch.score_embeddings(emb), probe.score_embeddings(emb), atol=1e-5)
    with pytest.raises(ValueError):
        LinearProbeNsfw.fit(emb, np.full(48, 2.0))
