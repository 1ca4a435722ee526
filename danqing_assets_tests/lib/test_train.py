"""The trainer on a tiny random open_clip model (CPU, offline): learning, losses, accumulation, schedule, skipped
examples, tar shards, worker order, checkpoints, and an exact resume after SIGKILL."""

from __future__ import annotations

import copy
import io
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from danqing_assets.lib.embed import (
    TINY_MODEL_CONFIG,
    TINY_MODEL_NAME,
    conv_tower,
    register_model_config,
    register_tiny_model,
)
from danqing_assets.lib.train import (
    StepInfo,
    TrainConfig,
    checkpoint_model_state,
    checkpoint_paths,
    read_checkpoint,
    lr_at,
    param_groups,
    train,
)
from danqing_assets.lib.train_data import (
    ImageViews,
    MicroBatchSource,
    RecordDataset,
    TarShardDataset,
    epoch_order,
    micro_batches,
    write_shard,
)

REPO = Path(__file__).resolve().parents[2]
# The tiny model with a learnable logit_bias (sigmoid loss); no "siglip" in the name: open_clip would then pick a T5
# tokenizer. The second one adds patch dropout, so that training consumes the torch RNG.
SIGLIP = "danqing-tiny-sigmoid"
SIGLIP_DROPOUT = "danqing-tiny-sigmoid-patchdrop"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 230, 20),
    "cyan": (20, 220, 220), "magenta": (220, 20, 220), "orange": (250, 140, 0), "purple": (120, 0, 160),
    "pink": (255, 150, 200), "brown": (120, 70, 20), "black": (10, 10, 10), "white": (245, 245, 245),
    "grey": (128, 128, 128), "olive": (120, 120, 0), "navy": (0, 0, 110), "teal": (0, 120, 120),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """One intra-op thread: the tiny model gains nothing from more, and on a shared 2-core machine spinning OpenMP
    threads make run times erratic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _register() -> None:
    register_tiny_model()
    cfg = copy.deepcopy(TINY_MODEL_CONFIG)
    cfg["init_logit_bias"] = -10.0  # SigLIP's initialisation (with temperature 10)
    cfg["init_logit_scale"] = math.log(10)
    register_model_config(SIGLIP, cfg)
    cfg = copy.deepcopy(cfg)
    cfg["vision_cfg"]["patch_dropout"] = 0.25
    register_model_config(SIGLIP_DROPOUT, cfg)


def _build(name: str = SIGLIP, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """(model, train preprocess (random crops), eval preprocess, tokenizer), weights from `seed`."""
    import open_clip

    _register()
    torch.manual_seed(seed)
    model, pre_train, pre_val = open_clip.create_model_and_transforms(name, pretrained=None)
    return model, pre_train, pre_val, open_clip.get_tokenizer(name)


def _jpeg(a: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _colour_records(seed: int = 0) -> list[tuple[bytes, str]]:
    """16 noisy colour fields, each captioned with its colour's name: a dataset the tiny model can learn."""
    rng = np.random.default_rng(seed)
    out = []
    for name, rgb in COLOURS.items():
        a = np.clip(np.array(rgb)[None, None, :] + rng.integers(-20, 21, (72, 88, 3)), 0, 255).astype(np.uint8)
        out.append((_jpeg(a), f"a photo of the colour {name}"))
    return out


def _config(**kw: Any) -> TrainConfig:
    base = dict(total_steps=12, batch_size=8, lr=1e-3, warmup_steps=2, weight_decay=0.1, workers=0, device="cpu",
                checkpoint_every=4, log_every=1000, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def _weights(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# --- config and schedule -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"lr": float("nan")}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": 8.0}, "batch_size"),
        ({"batch_size": 10, "accumulation_steps": 4}, "accumulation_steps"),
        ({"total_steps": -5}, "total_steps"),
        ({"warmup_steps": 20, "total_steps": 10}, "warmup_steps"),
        ({"min_lr": 1e-2, "lr": 1e-3}, "min_lr"),
        ({"loss": "hinge"}, "loss"),
        ({"accumulation": "sum"}, "accumulation"),
        ({"precision": "fp8"}, "precision"),
        ({"device": "tpu"}, "device"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"grad_clip": float("nan")}, "grad_clip"),
        ({"workers": -1}, "workers"),
        ({"beta2": 1.0}, "beta2"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"seed": -1}, "seed"),
        ({"view_weight": -1.0}, "view_weight"),
        ({"view_temperature": 0.0}, "view_temperature"),
        ({"view_temperature": float("nan")}, "view_temperature"),
    ],
)
def test_invalid_config_values_are_refused_naming_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"TrainConfig\.({field}|batch_size)\b"):
        TrainConfig(**kw)


def test_valid_config_and_micro_batch_size() -> None:
    c = TrainConfig(batch_size=12, accumulation_steps=3, grad_clip=1.0, device="cuda:1", precision="bf16")
    assert c.micro_batch_size == 4


def test_lr_schedule_is_linear_warmup_then_cosine_to_min_lr() -> None:
    c = TrainConfig(total_steps=12, warmup_steps=4, lr=1e-3, min_lr=1e-4)
    expected = [2.5e-4, 5e-4, 7.5e-4, 1e-3,  # warmup: lr * (s+1) / 4
                1e-3]  # cosine start
    assert [lr_at(s, c) for s in range(5)] == pytest.approx(expected, rel=1e-12, abs=0)
    assert lr_at(8, c) == pytest.approx(5.5e-4, rel=1e-12)  # half way: (lr + min_lr) / 2
    assert lr_at(11, c) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi * 7 / 8)) * 9e-4, rel=1e-12)
    assert lr_at(12, c) == pytest.approx(1e-4, rel=1e-12)  # would-be step after the last: min_lr
    assert lr_at(0, TrainConfig(total_steps=10, warmup_steps=0, lr=1e-3)) == 1e-3


def test_training_uses_the_schedule(tmp_path: Path) -> None:
    model, _, pre_val, tok = _build()
    cfg = _config(total_steps=6, warmup_steps=3, min_lr=1e-5)
    seen: list[StepInfo] = []
    train(model, tok, pre_val, RecordDataset(_colour_records()), cfg, tmp_path, log=lambda _: None,
          on_step=seen.append)
    assert [i.step for i in seen] == [1, 2, 3, 4, 5, 6]
    assert [i.lr for i in seen] == [lr_at(s, cfg) for s in range(6)]
    assert seen[0].lr == pytest.approx(cfg.lr / 3)


def test_no_weight_decay_on_biases_norms_and_temperature() -> None:
    model, *_ = _build()
    groups = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups[0]["params"]}
    decay = {names[id(p)] for p in groups[1]["params"]}
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (0.0, 0.2)
    assert {"logit_scale", "logit_bias", "visual.ln_pre.weight", "visual.ln_pre.bias", "ln_final.weight",
            "visual.transformer.resblocks.0.attn.in_proj_bias"} <= no_decay
    assert {"visual.conv1.weight", "visual.transformer.resblocks.0.attn.in_proj_weight", "text_projection",
            "token_embedding.weight"} <= decay
    assert not no_decay & decay and len(no_decay | decay) == len(names)


# --- learning ------------------------------------------------------------------------------------------------------


def _retrieval_hits(model: Any, pre_val: Any, tok: Any, records: list[tuple[bytes, str]]) -> int:
    """How many images have their own caption as the most similar caption."""
    model.eval()
    with torch.no_grad():
        imgs = torch.stack([pre_val(Image.open(io.BytesIO(b)).convert("RGB")) for b, _ in records])
        img = model.encode_image(imgs, normalize=True)
        txt = model.encode_text(tok([c for _, c in records]), normalize=True)
    return int((img @ txt.T).argmax(dim=1).eq(torch.arange(len(records))).sum())


@pytest.mark.parametrize("loss", ["sigmoid", "infonce"])
def test_loss_falls_and_the_model_learns_the_pairs(tmp_path: Path, loss: str) -> None:
    model, pre_train, pre_val, tok = _build()
    records = _colour_records()
    before = _retrieval_hits(model, pre_val, tok, records)
    cfg = _config(loss=loss, total_steps=40, batch_size=16, warmup_steps=5, checkpoint_every=1000, weight_decay=0.0)
    res = train(model, tok, pre_train, RecordDataset(records), cfg, tmp_path, log=lambda _: None)
    losses = [v for _, v in res.loss_curve]
    assert res.steps == 40 and len(losses) == 40 and res.samples_seen == 40 * 16
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), (losses[:5], losses[-5:])
    after = _retrieval_hits(model, pre_val, tok, records)
    assert before <= 4 and after >= 12, (before, after)  # chance is 1 in 16


def test_sigmoid_loss_needs_a_logit_bias(tmp_path: Path) -> None:
    import open_clip

    register_tiny_model()
    model, _, pre_val = open_clip.create_model_and_transforms(TINY_MODEL_NAME, pretrained=None)
    with pytest.raises(ValueError, match="logit_bias"):
        train(model, open_clip.get_tokenizer(TINY_MODEL_NAME), pre_val, RecordDataset(_colour_records()),
              _config(loss="sigmoid"), tmp_path)


# --- accumulation ----------------------------------------------------------------------------------------------------


def _run(tmp_path: Path, name: str, cfg: TrainConfig, records: list[tuple[bytes, str]] | None = None,
         model_name: str = SIGLIP, train_preprocess: bool = False) -> tuple[Any, Any]:
    model, pre_train, pre_val, tok = _build(model_name)
    res = train(model, tok, pre_train if train_preprocess else pre_val, RecordDataset(records or _colour_records()),
                cfg, tmp_path / name, log=lambda _: None)
    return res, _weights(model)


def test_full_batch_accumulation_matches_the_big_batch(tmp_path: Path) -> None:
    """batch 8 in 2 micro-batches of 4: "full_batch" gives the batch-8 loss and weights; "micro_batch" (negatives
    from 4 examples only) the same step and sample counts but another loss."""
    base = dict(total_steps=6, batch_size=8, checkpoint_every=1000)
    one, w_one = _run(tmp_path, "one", _config(**base))
    full, w_full = _run(tmp_path, "full", _config(**base, accumulation_steps=2, accumulation="full_batch"))
    micro, w_micro = _run(tmp_path, "micro", _config(**base, accumulation_steps=2))
    assert one.steps == full.steps == micro.steps == 6
    assert one.samples_seen == full.samples_seen == micro.samples_seen == 48
    l_one, l_full, l_micro = ([v for _, v in r.loss_curve] for r in (one, full, micro))
    assert l_full == pytest.approx(l_one, rel=1e-5)
    assert abs(l_micro[3] - l_one[3]) > 0.1  # 4 negatives per example instead of 8: another objective

    def max_diff(w: dict[str, torch.Tensor]) -> float:
        return max(float((w[k] - w_one[k]).abs().max()) for k in w_one)

    # Adam divides by the gradient's own magnitude, so float-summation noise on near-zero gradients moves a few
    # weights by a fraction of lr (1e-3); the micro-batch objective moves them by a multiple of that
    assert max_diff(w_full) < 2e-4 and max_diff(w_micro) > 1e-3, (max_diff(w_full), max_diff(w_micro))


def test_micro_batch_accumulation_with_half_batches(tmp_path: Path) -> None:
    """accumulation 2 x micro-batch 8: 30 steps of 16 examples each, and it still learns."""
    res, _ = _run(tmp_path, "acc", _config(total_steps=30, batch_size=16, accumulation_steps=2, warmup_steps=5,
                                           checkpoint_every=1000, weight_decay=0.0))
    losses = [v for _, v in res.loss_curve]
    assert res.steps == 30 and res.samples_seen == 480
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


# --- data ------------------------------------------------------------------------------------------------------------


def test_undecodable_and_unloadable_examples_are_skipped_and_counted(tmp_path: Path) -> None:
    good = _colour_records() + _colour_records(seed=1)[:4]  # 20 examples
    truncated = good[0][0][: len(good[0][0]) // 3]
    records: list[tuple[Any, str]] = [(b, c) for b, c in good]
    records[3] = (b"not an image at all", records[3][1])
    records[7] = (truncated, records[7][1])
    records[11] = ("missing-object", records[11][1])
    records[15] = (records[15][0], "   ")

    def load(ref: Any) -> bytes:
        if ref == "missing-object":
            raise KeyError(ref)
        return ref

    model, _, pre_val, tok = _build()
    lines: list[str] = []
    cfg = _config(total_steps=5, batch_size=4, checkpoint_every=1000)  # 5 x 4 = exactly one epoch of 20
    res = train(model, tok, pre_val, RecordDataset(records, load_bytes=load), cfg, tmp_path, log=lines.append)
    assert res.skipped_by_reason == {"decode_error": 2, "load_error": 1, "bad_caption": 1}
    assert res.skipped_examples == 4 and res.samples_seen == 16 and res.steps == 5
    assert any("load_error" in line and "KeyError" in line for line in lines)


def test_a_dataset_without_one_decodable_image_fails_instead_of_spinning(tmp_path: Path) -> None:
    model, _, pre_val, tok = _build()
    records = [(b"garbage %d" % i, f"caption {i}") for i in range(8)]
    with pytest.raises(RuntimeError, match="no decodable example"):
        train(model, tok, pre_val, RecordDataset(records), _config(batch_size=4), tmp_path, log=lambda _: None)


def test_tar_shards_read_back_and_train_like_records(tmp_path: Path) -> None:
    records = _colour_records()
    a = write_shard(tmp_path / "shard-0.tar", records[:10])
    b = write_shard(tmp_path / "shard-1.tar", records[10:], start_key=10)
    with tarfile.open(b, "a") as tar:  # a key with a caption but no image is left out and counted
        payload = "孤零零的标题".encode()
        info = tarfile.TarInfo("000000099.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    shards = TarShardDataset([a, b])
    assert len(shards) == 16 and shards.incomplete == 1
    assert [shards.get(i) for i in range(16)] == records
    assert shards.keys[:2] == ["000000000", "000000001"]
    shards.close()
    assert shards.get(15) == records[15]  # reopens

    cfg = _config(total_steps=4, checkpoint_every=1000)
    model, _, pre_val, tok = _build()
    train(model, tok, pre_val, shards, cfg, tmp_path / "from_tar", log=lambda _: None)
    _, w_records = _run(tmp_path, "from_records", cfg, records)
    _assert_same_weights(_weights(model), w_records)


def test_compressed_shards_are_refused_clearly(tmp_path: Path) -> None:
    import gzip

    plain = write_shard(tmp_path / "s.tar", _colour_records()[:2])
    gz = tmp_path / "s.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(ValueError, match="not an uncompressed tar"):
        TarShardDataset([gz])


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    a = epoch_order(100, seed=3, epoch=0)
    assert sorted(a.tolist()) == list(range(100))
    assert np.array_equal(a, epoch_order(100, seed=3, epoch=0))
    assert not np.array_equal(a, epoch_order(100, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(100, seed=4, epoch=0))


def test_worker_processes_deliver_the_same_batches_as_in_process_loading() -> None:
    """With random-crop augmentation: 2 workers give bit-identical micro-batches, in the same order, as 0 workers,
    across an epoch boundary and from a mid-epoch start."""
    _, pre_train, _, tok = _build()
    source = MicroBatchSource(RecordDataset(_colour_records()), micro_batch_size=4, preprocess=pre_train,
                              tokenizer=tok, seed=5, draft_size=64)

    def take(workers: int, start: tuple[int, int], n: int) -> list[dict[str, Any]]:
        it = iter(micro_batches(source, start, workers=workers))
        out = [next(it) for _ in range(n)]
        del it
        return out

    in_process, workers = take(0, (0, 1), 6), take(2, (0, 1), 6)
    assert [(b["epoch"], b["index"]) for b in in_process] == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]
    for x, y in zip(in_process, workers, strict=True):
        assert (x["epoch"], x["index"]) == (y["epoch"], y["index"])
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["tokens"], y["tokens"])
    # the crops really are random: the same images in another epoch look different
    again = [b for b in take(0, (2, 0), 4)]
    assert not any(torch.equal(a["images"], b["images"]) for a in in_process for b in again)


def test_training_with_two_workers_equals_training_in_process(tmp_path: Path) -> None:
    cfg = _config(total_steps=6, checkpoint_every=1000)
    _, w0 = _run(tmp_path, "w0", cfg, train_preprocess=True)
    _, w2 = _run(tmp_path, "w2", _config(total_steps=6, checkpoint_every=1000, workers=2), train_preprocess=True)
    _assert_same_weights(w0, w2)


# --- checkpoints and resume -------------------------------------------------------------------------------------------


def test_checkpoints_keep_the_last_two_load_weights_only_and_guard_resume(tmp_path: Path) -> None:
    model, pre_train, _, tok = _build()
    lines: list[str] = []
    cfg = _config(total_steps=10, log_every=4)
    res = train(model, tok, pre_train, RecordDataset(_colour_records()), cfg, tmp_path, log=lines.append)
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["step_00000008.pt", "step_00000010.pt"]
    assert res.final_checkpoint == tmp_path / "checkpoints" / "step_00000010.pt"
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))
    ckpt = read_checkpoint(res.final_checkpoint)  # torch.load(weights_only=True) inside
    assert ckpt["step"] == 10 and ckpt["data"]["samples_seen"] == 80
    _assert_same_weights(checkpoint_model_state(res.final_checkpoint), _weights(model))
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["4/10", "8/10", "10/10"]
    assert all("loss" in line and "samples/s" in line and "eta" in line for line in progress)

    again = train(model, tok, pre_train, RecordDataset(_colour_records()), cfg, tmp_path, log=lines.append)
    assert (again.steps, again.resumed_from_step, again.loss_curve) == (10, 10, res.loss_curve)
    with pytest.raises(ValueError, match="batch_size=8"):
        train(model, tok, pre_train, RecordDataset(_colour_records()), _config(total_steps=20, batch_size=4),
              tmp_path, log=lambda _: None)
    with pytest.raises(ValueError, match="16 examples"):
        train(model, tok, pre_train, RecordDataset(_colour_records()[:12]), _config(total_steps=20), tmp_path,
              log=lambda _: None)


def test_a_second_trainer_on_the_same_work_dir_is_refused(tmp_path: Path) -> None:
    import fcntl

    model, _, pre_val, tok = _build()
    with open(tmp_path / ".train.lock", "a+") as held:  # as a running trainer holds it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match="another trainer"):
            train(model, tok, pre_val, RecordDataset(_colour_records()), _config(total_steps=2), tmp_path)
    res = train(model, tok, pre_val, RecordDataset(_colour_records()), _config(total_steps=2), tmp_path,
                log=lambda _: None)
    assert res.steps == 2


RESUME_CFG = dict(total_steps=12, checkpoint_every=4, log_every=1)


def _resume_child(work_dir: str, hang_at: int, threads: int) -> None:
    """Run in a subprocess: train, and after step `hang_at` write a marker and hang until killed."""
    torch.set_num_threads(threads)
    model, pre_train, _, tok = _build(SIGLIP_DROPOUT)
    marker = Path(work_dir) / "hanging"

    def on_step(info: StepInfo) -> None:
        if info.step == hang_at:
            marker.write_text(str(os.getpid()))
            time.sleep(600)

    train(model, tok, pre_train, RecordDataset(_colour_records()), _config(**RESUME_CFG), work_dir,
          log=lambda _: None, on_step=on_step)


def test_resume_after_sigkill_is_bit_exact(tmp_path: Path) -> None:
    """A training process (patch dropout and random crops: it uses the RNGs) is SIGKILLed two steps after its step-4
    checkpoint; a torn newer checkpoint is planted; training resumes in this process from step 4 and ends with the
    same weights and loss curve, bit for bit, as an uninterrupted run."""
    ref_model, pre_train, _, tok = _build(SIGLIP_DROPOUT)
    ref = train(ref_model, tok, pre_train, RecordDataset(_colour_records()), _config(**RESUME_CFG), tmp_path / "ref",
                log=lambda _: None)

    work = tmp_path / "killed"
    work.mkdir()
    code = ("import sys; from danqing_assets_tests.lib.test_train import _resume_child; "
            "_resume_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", code, str(work), "6", str(torch.get_num_threads())], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (work / "hanging").exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:] if child.stderr else ""
            assert time.monotonic() < deadline, "the training subprocess did not reach step 6"
            time.sleep(0.05)
        assert (work / "checkpoints" / "step_00000004.pt").exists()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    (work / "checkpoints" / "step_00000005.pt").write_bytes(b"PK\x03\x04 torn")  # a newer but unreadable file

    model, _, _, _ = _build(SIGLIP_DROPOUT, seed=99)  # other initial weights: they must come from the checkpoint
    lines: list[str] = []
    res = train(model, tok, pre_train, RecordDataset(_colour_records()), _config(**RESUME_CFG), work,
                log=lines.append)
    assert res.resumed_from_step == 4 and res.steps == 12 and res.samples_seen == ref.samples_seen == 96
    assert any("step_00000005.pt unreadable" in line for line in lines)
    assert res.loss_curve == ref.loss_curve
    _assert_same_weights(_weights(model), _weights(ref_model))


# --- ClipEmbedder.embed_images decodes ahead in threads (changed together with benchmarks/bench_train.py) ------------


def test_embed_images_keeps_rows_in_order_while_decoding_ahead() -> None:
    """More batches than decode threads + 1, undecodable images in early and late batches: every row is the
    embedding of its own image (computed here directly), NaN rows stay where the bad images were."""
    from danqing_assets.lib.embed import load_clip

    clip = load_clip(TINY_MODEL_NAME, device="cpu", allow_random_init=True)
    rng = np.random.default_rng(3)
    images: list[bytes] = [_jpeg(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)) for i in range(23)]
    bad = {1, 13, 22}
    for i in bad:
        images[i] = b"broken %d" % i
    emb = clip.embed_images(images, batch_size=3)  # 8 batches
    good = [i for i in range(23) if i not in bad]
    with torch.no_grad():
        batch = torch.stack([clip.preprocess(Image.open(io.BytesIO(images[i])).convert("RGB")) for i in good])
        direct = clip.model.encode_image(batch, normalize=True).numpy()
    assert np.isnan(emb[sorted(bad)]).all()
    np.testing.assert_allclose(emb[good], direct, atol=1e-5, rtol=0)


# --- auxiliary caption labels ----------------------------------------------------------------------------------------


def _shape_records() -> list[tuple[bytes, str]]:
    """16 pictures of a square or a disc (same colour, noisy): captions that only the shape tells apart."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(16):
        a = np.clip(rng.normal(128, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
        yy, xx = np.mgrid[:64, :64]
        if i % 2:
            a[(yy - 32) ** 2 + (xx - 32) ** 2 < 18 ** 2] = (200, 40, 40)
        else:
            a[14:50, 14:50] = (200, 40, 40)
        out.append((_jpeg(a), f"picture {i} of a {'disc' if i % 2 else 'square'}"))
    return out


def _stopped_at_4_and_resumed(records: list[tuple[bytes, str]], cfg: TrainConfig, work: Path, *,
                              model_name: str = SIGLIP, **train_kw: Any) -> tuple[Any, Any]:
    """(model, TrainResult) of a run of `cfg` stopped after its step-4 checkpoint, then resumed in `work` with a model
    built from other initial weights (everything must come from the checkpoint)."""

    class Stop(Exception):
        pass

    def stop_at_4(info: Any) -> None:
        if info.step == 4:
            raise Stop

    half, pre_train, _, tok = _build(model_name)
    with pytest.raises(Stop):
        train(half, tok, pre_train, RecordDataset(records), cfg, work, log=lambda _: None, on_step=stop_at_4,
              **train_kw)
    half, _, _, _ = _build(model_name, seed=1)
    resumed = train(half, tok, pre_train, RecordDataset(records), cfg, work, log=lambda _: None, **train_kw)
    return half, resumed


def test_auxiliary_labels_train_with_the_model_and_resume_exactly(tmp_path: Path) -> None:
    """aux_weight > 0 adds a label head (its loss on top of the contrastive one); the head is checkpointed, so a run
    stopped and resumed ends with the same weights as one that was not; bad targets are refused."""
    records = _shape_records()
    targets = torch.zeros(len(records), 2)
    for i in range(len(records)):
        targets[i, i % 2] = 1.0
    cfg = _config(total_steps=8, aux_weight=1.0, checkpoint_every=4)
    model, pre_train, _, tok = _build()
    plain, _, _, _ = _build()
    res = train(model, tok, pre_train, RecordDataset(records), cfg, tmp_path / "a", log=lambda _: None,
                aux_targets=targets)
    res_plain = train(plain, tok, pre_train, RecordDataset(records), _config(total_steps=8, checkpoint_every=4),
                      tmp_path / "plain", log=lambda _: None)
    assert res.steps == 8 and all(math.isfinite(v) for _, v in res.loss_curve)
    assert [v for _, v in res.loss_curve] != [v for _, v in res_plain.loss_curve]  # the label loss is in the step
    head = read_checkpoint(res.final_checkpoint)["aux_head"]
    assert head["weight"].shape == (2, TINY_MODEL_CONFIG["embed_dim"]) and "aux_head" not in "".join(_weights(model))

    half, resumed = _stopped_at_4_and_resumed(records, cfg, tmp_path / "b", aux_targets=targets)
    assert resumed.resumed_from_step == 4
    _assert_same_weights(_weights(half), _weights(model))
    with pytest.raises(ValueError, match="aux_weight=0.0"):  # a resumed run keeps the label loss
        train(half, tok, pre_train, RecordDataset(records), _config(total_steps=12, checkpoint_every=4),
              tmp_path / "b", log=lambda _: None)
    with pytest.raises(ValueError, match="needs aux_targets"):
        train(half, tok, pre_train, RecordDataset(records), cfg, tmp_path / "c", aux_targets=targets[:5])
    with pytest.raises(ValueError, match="aux_weight needs accumulation='micro_batch'"):
        _config(aux_weight=1.0, accumulation="full_batch", accumulation_steps=2)


def _views(pre_train: Any) -> ImageViews:
    norm = pre_train.transforms[-1]
    return ImageViews(64, norm.mean, norm.std)


def test_image_views_are_other_copies_of_the_picture_seeded_by_torch() -> None:
    """A view has the train preprocess's shape and normalisation, differs from the plain image and from the next view,
    and depends on torch's RNG alone (so the per-micro-batch seeding makes it reproducible); bad settings raise."""
    _, pre_train, pre_val, _ = _build()
    views = _views(pre_train)
    rgb = Image.open(io.BytesIO(_shape_records()[1][0])).convert("RGB")
    torch.manual_seed(5)
    a, b = views(rgb), views(rgb)
    torch.manual_seed(5)
    assert torch.equal(views(rgb), a)
    plain = pre_val(rgb)
    assert a.shape == plain.shape == (3, 64, 64) and a.dtype == torch.float32
    assert not torch.equal(a, b) and (a - plain).abs().mean() > 0.01
    # still the same picture: the disc's red centre stays red (normalised red channel well above green)
    assert a[0, 28:36, 28:36].mean() > a[1, 28:36, 28:36].mean() + 1.0
    for bad in ({"crop_scale": (0.0, 1.0)}, {"jpeg": (90, 10)}, {"noise": -0.1}, {"blur_p": 2.0}):
        with pytest.raises(ValueError, match="ImageViews"):
            ImageViews(64, (0.5,) * 3, (0.5,) * 3, **bad)


def test_micro_batches_carry_a_view_per_image_and_skip_an_example_whose_view_fails() -> None:
    """With view_preprocess, every kept example has a view (same shape, same order); a view that raises skips its
    example, counted, like an image that does not decode."""
    _, pre_train, _, tok = _build()
    records = _shape_records()[:8]
    views = _views(pre_train)
    calls = {"n": 0}

    def flaky(rgb: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("view failed")
        return views(rgb)

    src = MicroBatchSource(RecordDataset(records), micro_batch_size=8, preprocess=pre_train, tokenizer=tok, seed=1,
                           view_preprocess=flaky)
    mb = src[(0, 0)]
    assert mb["size"] == 7 and mb["views"].shape == mb["images"].shape == (7, 3, 64, 64)
    assert sum(mb["skipped"].values()) == 1 and "view failed" in mb["errors"][0]
    plain = MicroBatchSource(RecordDataset(records), micro_batch_size=8, preprocess=pre_train, tokenizer=tok, seed=1)
    assert plain[(0, 0)]["views"] is None


def test_instance_views_train_with_the_model_and_resume_exactly(tmp_path: Path) -> None:
    """view_weight > 0 adds the instance loss (image vs its own view) to every step; a run stopped and resumed ends
    with the same weights as one that was not; a missing view_preprocess, full-batch accumulation and a resume that
    drops the loss are refused."""
    records = _shape_records()
    model, pre_train, _, tok = _build()
    views = _views(pre_train)
    cfg = _config(total_steps=8, view_weight=1.0, checkpoint_every=4)
    res = train(model, tok, pre_train, RecordDataset(records), cfg, tmp_path / "a", log=lambda _: None,
                view_preprocess=views)
    plain, _, _, _ = _build()
    res_plain = train(plain, tok, pre_train, RecordDataset(records), _config(total_steps=8, checkpoint_every=4),
                      tmp_path / "plain", log=lambda _: None)
    assert res.steps == 8 and all(math.isfinite(v) for _, v in res.loss_curve)
    # the instance loss is in the step: at least log(batch) - a little on top of the contrastive loss at the start
    assert res.loss_curve[0][1] > res_plain.loss_curve[0][1] + 0.5 * math.log(8)

    half, resumed = _stopped_at_4_and_resumed(records, cfg, tmp_path / "b", view_preprocess=views)
    assert resumed.resumed_from_step == 4
    _assert_same_weights(_weights(half), _weights(model))
    with pytest.raises(ValueError, match="view_weight=0.0"):
        train(half, tok, pre_train, RecordDataset(records), _config(total_steps=12, checkpoint_every=4),
              tmp_path / "b", log=lambda _: None)
    with pytest.raises(ValueError, match="needs view_preprocess"):
        train(half, tok, pre_train, RecordDataset(records), cfg, tmp_path / "c")
    with pytest.raises(ValueError, match="view_weight needs accumulation='micro_batch'"):
        _config(view_weight=1.0, accumulation="full_batch", accumulation_steps=2)


CONV = "danqing-test-conv-sigmoid"


def _register_conv() -> None:
    """A tiny CLIP with the bootstrap's conv image tower (a (N, C, H, W) feature map to pool) and the BPE text tower."""
    cfg = copy.deepcopy(TINY_MODEL_CONFIG)
    cfg.update(init_logit_bias=-10.0, init_logit_scale=math.log(10))
    register_model_config(CONV, conv_tower(cfg))


def test_feature_grid_views_train_the_conv_map_and_resume_exactly(tmp_path: Path) -> None:
    """grid_view_weight > 0 adds the instance loss on the feature grid (`lib.dedup_descriptor`) of the image tower's
    last conv map; it changes the steps, resumes exactly, and a module the model lacks, a resume that drops it or a
    bad setting are refused before any step."""
    _register_conv()
    records = _shape_records()
    model, pre_train, _, tok = _build(CONV)
    views = _views(pre_train)
    cfg = _config(total_steps=8, view_weight=1.0, grid_view_weight=1.0, checkpoint_every=4)
    res = train(model, tok, pre_train, RecordDataset(records), cfg, tmp_path / "a", log=lambda _: None,
                view_preprocess=views)
    plain, _, _, _ = _build(CONV)
    res_plain = train(plain, tok, pre_train, RecordDataset(records), _config(total_steps=8, view_weight=1.0,
                      checkpoint_every=4), tmp_path / "plain", log=lambda _: None, view_preprocess=views)
    assert res.steps == 8 and all(math.isfinite(v) for _, v in res.loss_curve)
    # the grid loss is in the step: about log(batch) more at the start
    assert res.loss_curve[0][1] > res_plain.loss_curve[0][1] + 0.5 * math.log(8)
    half, resumed = _stopped_at_4_and_resumed(records, cfg, tmp_path / "b", model_name=CONV, view_preprocess=views)
    assert resumed.resumed_from_step == 4
    _assert_same_weights(_weights(half), _weights(model))
    with pytest.raises(ValueError, match="grid_view_weight=0.0"):
        train(half, tok, pre_train, RecordDataset(records), _config(total_steps=12, view_weight=1.0,
              checkpoint_every=4), tmp_path / "b", log=lambda _: None, view_preprocess=views)
    vit, vit_pre, _, vit_tok = _build()
    with pytest.raises(ValueError, match="no module 'visual.trunk.features'"):  # a ViT has no conv trunk
        train(vit, vit_tok, vit_pre, RecordDataset(records), cfg, tmp_path / "c", view_preprocess=views)
    with pytest.raises(ValueError, match="needs view_preprocess"):
        train(model, tok, pre_train, RecordDataset(records), _config(grid_view_weight=1.0), tmp_path / "d")
    for bad in ({"grid_view_weight": -1.0}, {"grid_view_size": 0}, {"grid_view_module": ""},
                {"grid_view_weight": 1.0, "accumulation": "full_batch", "accumulation_steps": 2}):
        with pytest.raises(ValueError, match="grid_view"):
            _config(**bad)


def test_head_noun_targets_come_from_the_captions_grammar() -> None:
    """Heads of noun phrases after a numeral / measure word or after 的; words that are rarely heads (画面, colours,
    backgrounds named as places) are no labels; captions without a head noun get none; Traditional text is read."""
    from danqing_assets.lib.caption_targets import head_noun_targets, head_nouns

    assert head_nouns("草地上，画面左边有两个红色的圆球") == {"圆球"}
    captions = [f"画面{pos}有{n}个{colour}的{thing}" for thing in ("圆球", "箱子", "星星")
                for pos in ("左边", "右边") for n in ("一", "两", "三") for colour in ("红色", "蓝色")]
    captions += ["一張漂亮的風景照片", "背景是柔软的草地", "画面很干净"]
    t = head_noun_targets(captions, min_count=5)
    assert set(t.vocab) == {"圆球", "箱子", "星星"}
    assert [t.vocab[j] for j in t.labels[0]] == ["圆球"] and t.labels[-1] == () and t.labels[-2] == ()
    assert t.covered == pytest.approx(36 / 39)
    m = t.matrix()
    assert m.shape == (39, 3) and float(m[0].sum()) == 1.0 and float(m[-1].sum()) == 0.0
    with pytest.raises(ValueError, match="min_count"):
        head_noun_targets(captions, min_count=0)
