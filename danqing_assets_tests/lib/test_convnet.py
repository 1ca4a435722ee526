"""The bootstrap's conv image tower: built by open_clip from a config, saved as a checkpoint directory, and loaded in a
fresh process (the tower registers itself when a config names it)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from danqing_assets.lib import convnet
from danqing_assets.lib.embed import BOOTSTRAP_MODEL_CONFIG, chinese_clip_config, conv_tower, register_model_config


def test_the_bootstrap_uses_the_conv_tower_and_it_builds_from_its_config():
    import open_clip

    assert convnet.uses_tower(BOOTSTRAP_MODEL_CONFIG) and not convnet.uses_tower(chinese_clip_config())
    cfg = conv_tower(chinese_clip_config(image_size=32, text_layers=1))
    assert cfg["vision_cfg"] == {"image_size": 32, "timm_model_name": "danqing_convnet_bn", "timm_pool": "max",
                                 "timm_proj": "linear"}
    register_model_config("danqing-test-conv", cfg)
    model = open_clip.create_model("danqing-test-conv", pretrained=None)
    model.eval()
    with torch.no_grad():
        out = model.encode_image(torch.zeros(3, 3, 32, 32), normalize=True)
    assert out.shape == (3, cfg["embed_dim"]) and torch.allclose(out.norm(dim=-1), torch.ones(3))
    assert sum(p.numel() for p in model.visual.parameters()) < 300_000  # 4 conv stages, not a 4 M-parameter ViT
    with pytest.raises(ValueError, match="no pretrained weights"):
        import timm

        timm.create_model("danqing_convnet_bn", pretrained=True)


def test_a_conv_checkpoint_loads_in_a_fresh_process(tmp_path):
    import open_clip

    from danqing_assets.lib.checkpoints import load_checkpoint_dir, save_checkpoint_dir
    from danqing_assets.lib.tokenizer import ChineseTokenizer

    cfg = conv_tower(chinese_clip_config(image_size=32, text_layers=1))
    register_model_config("danqing-test-conv", cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("danqing-test-conv", pretrained=None)
    model.eval()
    tok = ChineseTokenizer(context_length=cfg["text_cfg"]["context_length"])
    path = save_checkpoint_dir(model, tmp_path / "ckpt", model_name="danqing-test-conv", model_config=cfg,
                               tokenizer_spec=tok.spec(), lineage={"test": True})
    here = load_checkpoint_dir(path, device="cpu").embed_texts(["两个红色的圆球"])
    code = (
        "import sys, numpy as np\n"
        "from danqing_assets.lib.checkpoints import load_checkpoint_dir\n"
        f"e = load_checkpoint_dir({str(path)!r}, device='cpu').embed_texts(['两个红色的圆球'])\n"
        "np.save(sys.argv[1], np.asarray(e))\n"
    )
    out = tmp_path / "fresh.npy"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True, timeout=300)
    assert np.allclose(np.load(out), np.asarray(here), atol=1e-6)
