"""Checkpoints: the project's directory format (card + safetensors) round trip, atomic writes, strict and safe loading,
the Chinese text tower's pooling, open_clip's local-dir loader, and Chinese-CLIP training checkpoints via cn_clip."""

from __future__ import annotations

import copy
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from danqing_assets.lib import checkpoints
from danqing_assets.lib.checkpoints import (
    build_chinese_clip,
    checkpoint_label,
    load_checkpoint_dir,
    load_chinese_clip,
    read_card,
    save_checkpoint_dir,
)
from danqing_assets.lib.embed import (
    BOOTSTRAP_MODEL_CONFIG,
    TINY_MODEL_NAME,
    ClipEmbedder,
    chinese_clip_config,
    load_clip,
    register_model_config,
)
from danqing_assets.lib.tokenizer import ChineseTokenizer, file_sha256, open_clip_tokenizer_spec

NAME = "danqing-test-zh-clip"
CONFIG = chinese_clip_config(embed_dim=32, image_size=32, patch_size=8, vision_layers=2, vision_width=64,
                             text_layers=2, text_width=64, head_width=32, context_length=24)
CAPTIONS = ["一只橘猫趴在窗台上", "北京的秋天 Autumn in Beijing", "红色的苹果" * 10]


@pytest.fixture(scope="module")
def tok() -> ChineseTokenizer:
    return ChineseTokenizer(context_length=24)


@pytest.fixture(scope="module")
def model():
    import open_clip

    register_model_config(NAME, CONFIG)
    torch.manual_seed(0)
    return open_clip.create_model(NAME).eval()


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def _save(model, directory, tok, **kw):
    args = dict(model_name=NAME, model_config=CONFIG, tokenizer_spec=tok.spec(),
                lineage={"data": "sample/2024-10", "code_version": "abc123", "parent": None})
    args.update(kw)
    return save_checkpoint_dir(model, directory, **args)


# --- the Chinese text tower ---------------------------------------------------------------------------------------


def test_bootstrap_config_matches_the_chinese_tokenizer() -> None:
    tok = ChineseTokenizer()
    text = BOOTSTRAP_MODEL_CONFIG["text_cfg"]
    assert text["vocab_size"] == tok.vocab_size and text["eos_id"] == tok.sep_id and text["pad_id"] == tok.pad_id
    assert text["context_length"] == tok.context_length and text["pool_type"] == "eos"
    assert "init_logit_bias" in BOOTSTRAP_MODEL_CONFIG


def test_text_embedding_pools_at_sep_and_ignores_padding(model, tok: ChineseTokenizer) -> None:
    ids = tok(["龙一只猫", "龙一只狗"])
    # precondition of the contrast below: the largest id (龙) comes before the characters that differ
    assert int(ids[0].argmax()) == 1 and ids[0, 4] != ids[1, 4]
    with torch.no_grad():
        base = model.encode_text(ids, normalize=True)
        noisy = ids.clone()
        noisy[:, 6:] = torch.randint(200, 21000, (2, ids.shape[1] - 6))  # anything after [SEP]
        assert torch.allclose(model.encode_text(noisy, normalize=True), base, atol=1e-6)
        assert not torch.allclose(base[0], base[1], atol=1e-3)  # the last character counts
        # open_clip's default argmax pooling would read 龙 (which, causally masked, never sees 猫 or 狗)
        model.text_pool_type = "argmax"
        try:
            argmax = model.encode_text(ids, normalize=True)
        finally:
            model.text_pool_type = "eos"
        assert torch.allclose(argmax[0], argmax[1], atol=1e-6)
    assert model.logit_bias is not None and float(model.logit_bias.detach()) == -10.0  # for SigLIP sigmoid loss


def test_sigmoid_loss_trains_scale_and_bias(tok: ChineseTokenizer) -> None:
    import open_clip

    register_model_config(NAME, CONFIG)
    torch.manual_seed(0)
    net = open_clip.create_model(NAME).train()
    images = torch.randn(4, 3, 32, 32)
    feats_i = net.encode_image(images, normalize=True)
    feats_t = net.encode_text(tok(["猫", "狗", "鸟", "鱼"]), normalize=True)
    loss = open_clip.loss.SigLipLoss()(feats_i, feats_t, net.logit_scale.exp(), net.logit_bias)
    loss.backward()
    assert torch.isfinite(loss) and net.logit_bias.grad is not None and net.logit_bias.grad.abs() > 0
    assert net.token_embedding.weight.grad[tok.encode("猫")[0]].abs().sum() > 0  # the caption reached the tower


# --- project checkpoint directories -------------------------------------------------------------------------------


def test_round_trip_and_card(tmp_path, model, tok: ChineseTokenizer) -> None:
    path = _save(model, tmp_path / "ckpts" / "step-100", tok)
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "model.safetensors", "open_clip_config.json",
                                                      "vocab.txt"]
    assert [p.name for p in path.parent.iterdir()] == ["step-100"]  # no temporary directory left behind
    card = read_card(path)
    assert card["format"] == "danqing-clip-checkpoint" and card["format_version"] == 1
    assert card["model_name"] == NAME and card["model_config"] == CONFIG and card["context_length"] == 24
    assert card["tokenizer"] == tok.spec()
    assert card["lineage"] == {"data": "sample/2024-10", "code_version": "abc123", "parent": None}
    assert card["image_size"] == 32 and card["preprocess"]["size"] == [32, 32]
    assert card["preprocess"]["resize_mode"] == "shortest" and card["preprocess"]["interpolation"] == "bicubic"
    assert len(card["preprocess"]["mean"]) == 3 and len(card["preprocess"]["std"]) == 3
    assert card["weights"]["sha256"] == file_sha256(path / "model.safetensors")
    assert file_sha256(path / "vocab.txt") == tok.vocab_sha256

    from safetensors.torch import load_file

    stored = load_file(str(path / "model.safetensors"))
    assert stored.keys() == model.state_dict().keys()
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())

    clip = load_checkpoint_dir(path, device="cpu")
    assert isinstance(clip.tokenizer, ChineseTokenizer) and clip.card == card and clip.image_size == 32
    ims = _images(3)
    ref = ClipEmbedder(model, clip.preprocess, tok, model_name=NAME, pretrained=None, device="cpu", precision="fp32")
    assert np.allclose(clip.embed_images(ims), ref.embed_images(ims), atol=1e-6)
    assert np.allclose(clip.embed_texts(CAPTIONS), ref.embed_texts(CAPTIONS), atol=1e-6)
    assert clip.count_truncated(CAPTIONS) == 1  # the 50-character caption does not fit 24 tokens

    via_load_clip = load_clip(NAME, str(path), device="cpu")
    assert np.allclose(via_load_clip.embed_texts(CAPTIONS), ref.embed_texts(CAPTIONS), atol=1e-6)
    with pytest.raises(ValueError, match="name it as its card.json does"):
        load_clip("ViT-B-32", str(path))
    assert checkpoint_label(NAME, str(path)) == f"{NAME}:{path}@sha256:{card['weights']['sha256'][:12]}"


def test_open_clip_loads_the_directory_as_a_local_dir(tmp_path, model, tok: ChineseTokenizer) -> None:
    import open_clip

    path = _save(model, tmp_path / "ckpt", tok)
    other, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
    ids = tok(CAPTIONS)
    with torch.no_grad():
        assert torch.allclose(other.encode_text(ids), model.encode_text(ids), atol=1e-6)
    pixels = preprocess(_images(1)[0])[None]
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(other.encode_image(pixels), model.encode_image(pixels), atol=1e-6)


def test_a_card_under_a_taken_name_does_not_redefine_it(tmp_path, model, tok: ChineseTokenizer) -> None:
    import open_clip

    taken = "danqing-test-taken-name"
    different = copy.deepcopy(CONFIG)
    different["text_cfg"]["layers"] = 1
    register_model_config(taken, different)
    path = _save(model, tmp_path / "ckpt", tok, model_name=taken)
    clip = load_checkpoint_dir(path, device="cpu")
    assert open_clip.get_model_config(taken) == different  # still what the process registered
    assert np.allclose(clip.embed_texts(CAPTIONS[:1]), _ref_texts(model, tok, CAPTIONS[:1]), atol=1e-6)


def _ref_texts(model, tok, texts):
    with torch.no_grad():
        return model.encode_text(tok(texts), normalize=True).numpy()


def test_open_clip_tokenizer_spec_round_trip(tmp_path) -> None:
    tiny = load_clip(TINY_MODEL_NAME, device="cpu", allow_random_init=True)
    path = save_checkpoint_dir(tiny, tmp_path / "tiny", model_name=TINY_MODEL_NAME,
                               tokenizer_spec=open_clip_tokenizer_spec(TINY_MODEL_NAME), lineage={})
    assert not (path / "vocab.txt").exists()
    again = load_clip(TINY_MODEL_NAME, str(path), device="cpu")
    assert np.allclose(again.embed_texts(["a photo of a cat"]), tiny.embed_texts(["a photo of a cat"]), atol=1e-6)
    ims = _images(2)
    assert np.allclose(again.embed_images(ims), tiny.embed_images(ims), atol=1e-6)


def test_tokenizer_must_fit_the_text_tower(tmp_path, model) -> None:
    with pytest.raises(ValueError, match="context_length 64"):
        _save(model, tmp_path / "a", ChineseTokenizer(context_length=64))
    assert not (tmp_path / "a").exists()


def test_writes_are_atomic(tmp_path, model, tok: ChineseTokenizer, monkeypatch) -> None:
    target = tmp_path / "ckpt"
    first = _save(model, target, tok)
    card = (first / "card.json").read_text()
    with pytest.raises(FileExistsError):
        _save(model, target, tok, lineage={"run": 2})
    assert (target / "card.json").read_text() == card

    with pytest.raises(TypeError):  # not JSON: refused before anything is written
        _save(model, tmp_path / "bad", tok, lineage={"when": object()})

    import safetensors.torch

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(model, tmp_path / "crashed", tok)
    with pytest.raises(OSError, match="disk full"):
        _save(model, target, tok, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no half-written or temporary directory
    assert (target / "card.json").read_text() == card  # the old checkpoint survived the failed overwrite

    _save(model, target, tok, lineage={"run": 3}, overwrite=True)
    assert read_card(target)["lineage"] == {"run": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_loading_is_strict_and_verified(tmp_path, model, tok: ChineseTokenizer) -> None:
    path = _save(model, tmp_path / "ckpt", tok)
    card = json.loads((path / "card.json").read_text())
    # a card whose architecture has one text layer more than the weights: a missing tensor is an error
    bigger = copy.deepcopy(card)
    bigger["model_config"]["text_cfg"]["layers"] = 3
    bigger["model_name"] = "danqing-test-bigger"
    (path / "card.json").write_text(json.dumps(bigger))
    with pytest.raises(RuntimeError, match="Missing key"):
        load_checkpoint_dir(path, device="cpu")
    (path / "card.json").write_text(json.dumps(card))
    # weights that are not the ones the card describes
    blob = bytearray((path / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint_dir(path, device="cpu")
    # a card from the future
    (path / "card.json").write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version"):
        read_card(path)


# --- refusing random weights and unsafe files ---------------------------------------------------------------------


def test_random_init_is_refused_unless_allowed(tmp_path) -> None:
    with pytest.raises(ValueError, match="allow_random_init"):
        load_clip(TINY_MODEL_NAME)
    assert load_clip(TINY_MODEL_NAME, allow_random_init=True).embed_dim == 32
    with pytest.raises(ValueError, match="allow_random_init"):
        load_clip("cnclip:ViT-L-14")
    config_only = tmp_path / "config-only"  # an open_clip local dir without weights
    config_only.mkdir()
    (config_only / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIG}))
    with pytest.raises(ValueError, match="allow_random_init"):
        load_clip(NAME, str(config_only))


class _Bomb:
    """Unpickling this object calls os.makedirs(marker): what an arbitrary-code pickle would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_checkpoint_that_needs_unpickling_is_refused(tmp_path) -> None:
    vision, text = _tiny_cn_configs()
    cn, _ = build_chinese_clip(vision, text)
    marker = tmp_path / "pwned"
    bomb = tmp_path / "epoch_1.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in cn.state_dict().items()}, "epoch": 1,
                "extra": _Bomb(str(marker))}, bomb)
    with pytest.raises(ValueError, match="refusing to load"):
        load_chinese_clip(bomb, vision, text, device="cpu")
    v_json, t_json = tmp_path / "v.json", tmp_path / "t.json"
    v_json.write_text(json.dumps(vision))
    t_json.write_text(json.dumps(text))
    with pytest.raises(ValueError, match="refusing to load"):
        load_clip(f"cnclip:{v_json}@{t_json}", str(bomb), device="cpu")
    import pickle

    with pytest.raises(pickle.UnpicklingError):  # open_clip's own file loading is weights_only as well
        load_clip(TINY_MODEL_NAME, str(bomb), device="cpu")
    assert not marker.exists()
    torch.load(bomb, weights_only=False)  # the bomb is live: plain unpickling runs it
    assert marker.is_dir()


# --- Chinese-CLIP ---------------------------------------------------------------------------------------------------


def _tiny_cn_configs() -> tuple[dict, dict]:
    vision = {"embed_dim": 16, "image_resolution": 32, "vision_layers": 2, "vision_width": 64,
              "vision_patch_size": 16, "vision_head_width": 32}
    text = {"vocab_size": 21128, "text_attention_probs_dropout_prob": 0.1, "text_hidden_act": "gelu",
            "text_hidden_dropout_prob": 0.1, "text_hidden_size": 32, "text_initializer_range": 0.02,
            "text_intermediate_size": 64, "text_max_position_embeddings": 64, "text_num_attention_heads": 2,
            "text_num_hidden_layers": 2, "text_type_vocab_size": 2}
    return vision, text


def _cn_reference(cn, images, texts):
    """Embeddings the way Chinese-CLIP computes them: its transform, its tokenize, its encoders."""
    from cn_clip.clip import tokenize
    from cn_clip.clip.utils import image_transform

    cn.eval()
    pre = image_transform(32)
    with torch.no_grad():
        img = cn.encode_image(torch.stack([pre(im) for im in images]))
        txt = cn.encode_text(tokenize(texts, context_length=52))
    return (torch.nn.functional.normalize(img, dim=-1).numpy(), torch.nn.functional.normalize(txt, dim=-1).numpy())


def test_chinese_clip_training_checkpoint_round_trip(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    vision, text = _tiny_cn_configs()
    cn, _ = build_chinese_clip(vision, text)
    sd = cn.state_dict()
    ims, texts = _images(3, seed=5), ["一只橘猫", "雪山下的湖泊", "a red car 红色汽车"]
    ref_img, ref_txt = _cn_reference(cn, ims, texts)

    opt = torch.optim.AdamW(cn.parameters(), lr=0.0)  # lr 0: a real optimizer state, unchanged weights
    cn.encode_image(torch.zeros(1, 3, 32, 32)).sum().backward()
    opt.step()
    ckpt = tmp_path / "epoch_latest.pt"  # what Chinese-CLIP's DDP training writes (cn_clip/training/train.py)
    torch.save({"epoch": 3, "step": 120, "name": "tiny", "optimizer": opt.state_dict(),
                "state_dict": {f"module.{k}": v for k, v in sd.items()}
                | {"module.bert.pooler.dense.weight": torch.zeros(32, 32)}}, ckpt)
    clip = load_chinese_clip(ckpt, vision, text, device="cpu")
    assert clip.image_size == 32 and clip.embed_dim == 16 and clip.tokenizer.context_length == 52
    assert clip.pretrained == str(ckpt)
    img, txt = clip.embed_images(ims), clip.embed_texts(texts)
    assert np.allclose(img, ref_img, atol=1e-5) and np.allclose(txt, ref_txt, atol=1e-5)
    assert np.allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    assert clip.logit_scale == pytest.approx(float(cn.logit_scale.detach().exp()))

    # the same weights as safetensors, without prefixes; and through load_clip's cnclip: names
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "cn.safetensors"))
    again = load_chinese_clip(tmp_path / "cn.safetensors", vision, text, device="cpu")
    assert np.allclose(again.embed_texts(texts), ref_txt, atol=1e-5)
    v_json, t_json = tmp_path / "v.json", tmp_path / "t.json"
    v_json.write_text(json.dumps(vision))
    t_json.write_text(json.dumps(text))
    named = load_clip(f"cnclip:{v_json}@{t_json}", str(ckpt), device="cpu")
    assert np.allclose(named.embed_images(ims), ref_img, atol=1e-5)

    # flash-attention training stores fused q/k/v: converted back
    from cn_clip.clip.model import convert_state_dict

    fused = convert_state_dict({f"module.{k}": v.clone() for k, v in sd.items()})
    assert any("Wqkv" in k for k in fused)
    torch.save({"state_dict": fused}, tmp_path / "flash.pt")
    flash = load_chinese_clip(tmp_path / "flash.pt", vision, text, device="cpu")
    assert np.allclose(flash.embed_texts(texts), ref_txt, atol=1e-5)

    # strict: a checkpoint missing a tensor is an error, not a half-random model
    torch.save({"state_dict": {k: v for k, v in sd.items() if not k.startswith("visual.ln_post")}},
               tmp_path / "partial.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_chinese_clip(tmp_path / "partial.pt", vision, text, device="cpu")


def test_chinese_clip_named_configs() -> None:
    assert checkpoints._cn_clip_config("ViT-L-14")["vision_width"] == 1024
    assert checkpoints._cn_clip_config("RoBERTa-wwm-ext-base-chinese")["vocab_size"] == 21128
    with pytest.raises(ValueError, match="known"):
        checkpoints._cn_clip_config("ViT-Z-99")
    with pytest.raises(ValueError, match="which text tower"):
        build_chinese_clip("custom-vision")
