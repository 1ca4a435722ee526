"""One contrastive trainer (SigLIP sigmoid loss or CLIP InfoNCE) for any open_clip-style model, killable at any time.

`train(model, tokenizer, preprocess, dataset, config, work_dir)` runs `config.total_steps` optimizer steps and returns a
`TrainResult`. It serves the bootstrap model and continued pretraining alike: the model, the tokenizer (list[str] ->
LongTensor) and the image preprocess are arguments, so any architecture and any tokenizer plug in.

Design decisions:
- Data comes from `lib.train_data`: decoding, preprocess and tokenisation run in DataLoader worker processes and the
  order of examples is a function of the seed (see that module). The training process only moves tensors.
- Resume is exact. A checkpoint (`work_dir/checkpoints/step_XXXXXXXX.pt`) holds model, optimizer, GradScaler and
  schedule state, the step, the torch / CUDA / numpy / python RNG states (as tensors) and the data position (the next
  micro-batch key), plus the loss curve and skip counts so far. It is written to a temporary name, fsynced and
  renamed into place, so a kill leaves either the old or the new file, never half of one; the newest `keep_checkpoints`
  are kept. `train` resumes from the newest checkpoint that loads (`torch.load(weights_only=True)`: only tensors and
  plain Python values are stored, so loading runs no pickled code). On CPU the resumed weights are bit-identical to an
  uninterrupted run (tested by SIGKILLing a training process). A resumed run must keep the fields that decide which
  examples a step sees and what it optimises (loss, batch_size, accumulation, seed, the dataset's size); total_steps,
  lr and the other optimiser settings may change (e.g. to extend a run). One trainer per work_dir: an advisory lock
  (`work_dir/.train.lock`, released by the kernel when the process dies) refuses a second one.
- Weight decay follows open_clip_train: none on biases, norms (ln/bn/norm), 1-d parameters, logit_scale/logit_bias.
- Learning rate: linear warmup over `warmup_steps` (step s gets lr * (s+1)/warmup), then cosine from lr to `min_lr`
  at `total_steps`; `lr_at(step, config)` is the schedule, a pure function of the step (nothing to restore).
- logit_scale is clamped to [0, ln 100] after each step, as open_clip_train does.
- Gradient accumulation. `batch_size` is the number of examples per optimizer step, split into `accumulation_steps`
  micro-batches. A contrastive loss is not a sum over examples: every example's loss depends on the whole batch (its
  negatives), so accumulation has two meanings, chosen by `accumulation`:
  * "micro_batch" (default): each micro-batch is its own contrastive problem (negatives from the micro-batch only)
    and the step averages their gradients. Cheap, but with accumulation 4 the loss sees batch_size/4 negatives:
    it smooths the gradient, it does not give a larger contrastive batch.
  * "full_batch": open_clip_train's `--accum-freq` scheme. Features of all micro-batches are first computed without
    gradients; then each micro-batch is recomputed with gradients and the loss is taken over the full batch with the
    other micro-batches' cached features, so the summed gradient equals the full-batch gradient (for models without
    dropout / batch statistics) for one extra forward pass. Unlike open_clip_train, the temperature and bias get their
    gradient once (live in the first pass only, detached in the others), not `accumulation_steps` times.
- Precision "auto": on CUDA, autocast bf16 when the GPU supports it (no GradScaler needed), else fp16 with a
  GradScaler; fp32 on CPU. Parameters stay fp32 either way.
- Examples whose images cannot be decoded are skipped and counted by reason; a step always trains on
  `accumulation_steps` non-empty micro-batches, and a whole epoch without one decodable image is an error.
- Auxiliary caption labels (`aux_weight` > 0, `aux_targets`): a linear head on the normalised image and text
  embeddings (x10) predicts each example's label distribution (cross-entropy; examples without labels add nothing),
  weighted by `aux_weight`, on top of the contrastive loss (`lib/caption_targets.py` makes head-noun labels: they
  make a small model learn what the things in the picture are, not just how captions differ). The head is trained
  with the model, checkpointed for resume, and not part of the returned model. Only with accumulation "micro_batch".
- Instance views (`view_weight` > 0, `train(view_preprocess=...)`): every example also yields a second, differently
  augmented view of its image (`train_data.ImageViews`: crop, colour, blur, JPEG, noise), encoded in the same forward
  pass, and an InfoNCE loss at `view_temperature` asks each image to find its own view among the micro-batch's
  (SimCLR's instance discrimination, symmetric). It makes the embedding tell one picture from another and ignore
  what re-encoding changes. On the bootstrap's seed crawl (600 steps of the bootstrap recipe in an experiment loop
  of issue 10) it took text -> image R@1 from 0.52 / 0.36 to 0.75 / 0.73 (seeds 0 / 1) for about twice the
  image-tower compute. Only with accumulation "micro_batch".
- Feature-grid views (`grid_view_weight` > 0): the same instance loss on a descriptor of the image tower's feature map
  (`feature_grids`: `grid_view_module`'s output max-pooled to a `grid_view_size` grid, batch-centred), read by a
  forward hook in the same pass. It trains what semantic dedup compares for the bootstrap (`lib/dedup_descriptor.py`):
  where things are, not only what they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from danqing_assets.lib.train_data import ExampleSource, MicroBatchSource, micro_batches, next_key

_log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "danqing-train-checkpoint/1"
LOSSES = ("sigmoid", "infonce")
ACCUMULATION_MODES = ("micro_batch", "full_batch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_CKPT_RE = re.compile(r"^step_(\d{8,})\.pt$")
# Fields a resumed run must share with the checkpoint: they decide which examples and which loss a step sees.
_RESUME_FIXED = ("loss", "batch_size", "accumulation_steps", "accumulation", "seed", "aux_weight", "view_weight",
                 "grid_view_weight", "grid_view_module", "grid_view_size")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; validated on construction (ValueError naming the field)."""

    total_steps: int = 1000
    batch_size: int = 256  # examples per optimizer step (all micro-batches together)
    accumulation_steps: int = 1  # micro-batches per step; must divide batch_size
    accumulation: str = "micro_batch"  # "micro_batch" | "full_batch" (see the module docstring)
    loss: str = "sigmoid"  # "sigmoid" (SigLIP, model needs logit_bias) | "infonce" (CLIP)
    lr: float = 5e-4
    min_lr: float = 0.0  # cosine decays to this at total_steps
    warmup_steps: int = 0
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    seed: int = 0
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16" (the last two: autocast, fp32 weights)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    checkpoint_every: int = 500  # steps; the final step is always checkpointed
    keep_checkpoints: int = 2
    workers: int = 4  # DataLoader worker processes (0: decode in the training process)
    log_every: int = 50
    aux_weight: float = 0.0  # weight of the auxiliary caption-label loss (0: off; needs train(aux_targets=...))
    view_weight: float = 0.0  # weight of the image-view instance loss (0: off; needs train(view_preprocess=...))
    view_temperature: float = 0.1  # softmax temperature of the instance loss
    # weight of the same instance loss on the feature-grid descriptor (`lib.dedup_descriptor.FeatureGrid`: the map of
    # `grid_view_module` max-pooled to grid_view_size^2 cells, batch-centred) of each image and its view: trains what
    # semantic dedup compares (0: off; needs train(view_preprocess=...))
    grid_view_weight: float = 0.0
    grid_view_module: str = "visual.trunk.features"
    grid_view_size: int = 4

    def __post_init__(self) -> None:
        def integer(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"TrainConfig.{name} must be an integer, got {v!r}")
            if v < minimum:
                raise ValueError(f"TrainConfig.{name} must be >= {minimum}, got {v}")

        def number(name: str, *, positive: bool) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"TrainConfig.{name} must be a finite number, got {v!r}")
            if v < 0 or (positive and v == 0):
                raise ValueError(f"TrainConfig.{name} must be {'> 0' if positive else '>= 0'}, got {v}")

        def choice(name: str, options: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in options:
                raise ValueError(f"TrainConfig.{name} must be one of {', '.join(options)}; got {v!r}")

        for name in ("total_steps", "batch_size", "accumulation_steps", "checkpoint_every", "keep_checkpoints",
                     "log_every"):
            integer(name, 1)
        for name in ("warmup_steps", "seed", "workers"):
            integer(name, 0)
        for name in ("lr", "eps", "view_temperature"):
            number(name, positive=True)
        for name in ("min_lr", "weight_decay", "beta1", "beta2", "aux_weight", "view_weight", "grid_view_weight"):
            number(name, positive=False)
        integer("grid_view_size", 1)
        if not isinstance(self.grid_view_module, str) or not self.grid_view_module:
            raise ValueError(f"TrainConfig.grid_view_module must be a dotted module path, got "
                             f"{self.grid_view_module!r}")
        if self.grad_clip is not None:
            number("grad_clip", positive=True)
        choice("loss", LOSSES)
        choice("accumulation", ACCUMULATION_MODES)
        choice("precision", PRECISIONS)
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ValueError(f"TrainConfig.device must be auto, cpu, mps, cuda or cuda:N; got {self.device!r}")
        if self.batch_size % self.accumulation_steps:
            raise ValueError(f"TrainConfig.batch_size ({self.batch_size}) must be a multiple of accumulation_steps "
                             f"({self.accumulation_steps})")
        for name in ("aux_weight", "view_weight", "grid_view_weight"):
            if getattr(self, name) > 0 and self.accumulation == "full_batch":
                raise ValueError(f"TrainConfig.{name} needs accumulation='micro_batch'")
        if self.min_lr > self.lr:
            raise ValueError(f"TrainConfig.min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        if self.warmup_steps > self.total_steps:
            raise ValueError(f"TrainConfig.warmup_steps ({self.warmup_steps}) must be <= total_steps "
                             f"({self.total_steps})")
        for name in ("beta1", "beta2"):
            if getattr(self, name) >= 1:
                raise ValueError(f"TrainConfig.{name} must be < 1, got {getattr(self, name)}")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.accumulation_steps


@dataclass(frozen=True)
class StepInfo:
    """Passed to `on_step` after every optimizer step (and after that step's checkpoint, when there is one)."""

    step: int
    total_steps: int
    loss: float
    lr: float
    samples_seen: int
    checkpoint: Path | None  # written at this step, else None


@dataclass
class TrainResult:
    steps: int  # optimizer steps done in total (this run and the runs it resumed)
    samples_seen: int  # examples trained on in total (skipped ones excluded)
    loss_curve: list[tuple[int, float]]  # (step, loss) for every step, resumed runs included
    samples_per_s: float  # this run, steady state: after its first step, checkpoint writing excluded (0 if < 2 steps)
    skipped_examples: int  # undecodable / unloadable examples, in total
    skipped_by_reason: dict[str, int]
    final_checkpoint: Path
    resumed_from_step: int  # 0 for a fresh run
    wall_s: float  # this run, train() entry to exit
    extra: dict[str, Any] = field(default_factory=dict)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine from lr to min_lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = config.total_steps - config.warmup_steps
    progress = (step - config.warmup_steps) / span if span > 0 else 1.0
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def instance_loss(img: Any, view: Any, temperature: float) -> Any:
    """Symmetric InfoNCE of normalised image embeddings against those of their views: each image must find its own view
    among the batch's, and each view its image (the instance-view loss, `TrainConfig.view_weight`)."""
    import torch

    logits = img.float() @ view.float().T / temperature
    labels = torch.arange(img.shape[0], device=logits.device)
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, labels) + ce(logits.T, labels))


def feature_grids(grid: Any, fmap: Any) -> Any:
    """The training form of a feature-grid descriptor (`lib.dedup_descriptor.FeatureGrid` `grid`): its pooling of the
    (N, C, H, W) map, centred on the batch's own mean (the stored centre is fitted after training), unit rows;
    differentiable. The grid instance loss (`TrainConfig.grid_view_weight`) is `instance_loss` over these."""
    import torch

    pooled = grid.pooled(fmap)
    return torch.nn.functional.normalize(pooled - pooled.mean(dim=0, keepdim=True), dim=-1)


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on 1-d parameters, biases, norms and logit_scale / logit_bias (open_clip_train's rule)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        exempt = (
            p.ndim < 2 or name.endswith("bias") or "logit_scale" in name or "logit_bias" in name
            or any(part.startswith(("ln", "bn", "norm")) or part.endswith("norm") for part in parts)
        )
        (no_decay if exempt else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


# --- checkpoints -----------------------------------------------------------------------------------------------------


def _checkpoint_dir(work_dir: Path) -> Path:
    return work_dir / "checkpoints"


def checkpoint_paths(work_dir: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files under `work_dir`, oldest step first."""
    folder = _checkpoint_dir(Path(work_dir))
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A trainer checkpoint as a dict (tensors on CPU); raises ValueError when it is not one."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    return ckpt


def latest_checkpoint(work_dir: str | os.PathLike[str], log: Callable[[str], None] | None = None
                      ) -> tuple[Path, dict[str, Any]] | None:
    """(path, contents) of the newest checkpoint under `work_dir` that loads, or None; broken ones are logged."""
    for path in reversed(checkpoint_paths(work_dir)):
        try:
            return path, read_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: fall back to the previous one
            (log or _log.warning)(f"checkpoint {path} unreadable ({type(exc).__name__}: {exc}); trying an older one")
    return None


def checkpoint_model_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model state dict stored in a trainer checkpoint (for exporting the trained model)."""
    return read_checkpoint(path)["model"]


def _atomic_save(obj: Any, target: Path) -> None:
    import torch

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    try:  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _rng_state() -> dict[str, Any]:
    import torch

    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the loop --------------------------------------------------------------------------------------------------------


def _resolve(config: TrainConfig) -> tuple[str, Any, bool]:
    """(device, autocast dtype or None, use GradScaler)."""
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r}: CUDA is not available")
    precision = config.precision
    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp16" and not device.startswith("cuda"):
        raise ValueError(f"precision 'fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return device, dtype, precision == "fp16"


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def train(
    model: Any,
    tokenizer: Callable[[list[str]], Any],
    preprocess: Callable[[Any], Any],
    dataset: ExampleSource,
    config: TrainConfig,
    work_dir: str | os.PathLike[str],
    *,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    aux_targets: Any = None,
    view_preprocess: Callable[[Any], Any] | None = None,
) -> TrainResult:
    """Train `model` in place for `config.total_steps` optimizer steps, resuming from `work_dir` when it holds a
    checkpoint; see the module docstring.

    model: an open_clip-style model (encode_image / encode_text, logit_scale, and logit_bias for loss="sigmoid").
    tokenizer: list[str] -> LongTensor (n, context_length); preprocess: PIL RGB image -> float tensor (3, H, W)
        (the train transform; its randomness is seeded per micro-batch). Both run in the worker processes.
    dataset: a `lib.train_data` example source (`RecordDataset`, `TarShardDataset`, or anything with len/get).
    log: receives one progress line every `log_every` steps (default: this module's logger at INFO).
    on_step: called after every step with a `StepInfo` (makes the loss a float each step: a GPU sync).
    aux_targets: with `config.aux_weight` > 0, a float tensor (len(dataset), labels): example i's label distribution
        (a row of zeros: no label), e.g. `caption_targets.HeadNounTargets.matrix()`.
    view_preprocess: with `config.view_weight` or `config.grid_view_weight` > 0, PIL RGB image -> float tensor of
        `preprocess`'s shape: the second view of each image for the instance losses (e.g. `train_data.ImageViews`);
        runs in the worker processes.
    """
    import torch

    t_enter = time.perf_counter()
    # Small SigLIP/CLIP models drive Adam's moment estimates and some activations into subnormal floats, which x86
    # CPUs process far slower; flushing them to zero (values below ~1e-38) cut a bootstrap step from 21 s to 8 s for
    # 4 steps in one profile on this 2-core machine (noisy: other jobs ran). No effect on CUDA.
    torch.set_flush_denormal(True)
    work = Path(work_dir)
    _check_model(model, config)
    if config.aux_weight > 0:
        if aux_targets is None or getattr(aux_targets, "ndim", 0) != 2 or aux_targets.shape[0] != len(dataset):
            raise ValueError(f"aux_weight {config.aux_weight} needs aux_targets, a tensor of one row per example "
                             f"({len(dataset)}); got {getattr(aux_targets, 'shape', aux_targets)!r}")
    else:
        aux_targets = None
    if config.view_weight > 0 or config.grid_view_weight > 0:
        if not callable(view_preprocess):
            raise ValueError(f"an instance loss (view_weight {config.view_weight}, grid_view_weight "
                             f"{config.grid_view_weight}) needs view_preprocess, a callable image -> tensor; got "
                             f"{view_preprocess!r}")
    else:
        view_preprocess = None
    grid = None
    if config.grid_view_weight > 0:
        from danqing_assets.lib.dedup_descriptor import FeatureGrid

        grid = FeatureGrid(config.grid_view_module, config.grid_view_size)
        grid.resolve(model)  # a module the model lacks fails here, before any step
    ckpt_dir = _checkpoint_dir(work)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with _work_dir_lock(work):
        return _train(model, tokenizer, preprocess, dataset, config, work, log or _log.info, on_step, t_enter,
                      aux_targets, view_preprocess, grid)


def _embed_dim(model: Any) -> int:
    """The width of the model's joint embedding (for the auxiliary head)."""
    proj = getattr(model, "text_projection", None)
    if proj is not None and getattr(proj, "ndim", 0) == 2:
        return int(proj.shape[1])
    out = getattr(getattr(model, "visual", None), "output_dim", None)
    if out is None:
        raise TypeError(f"cannot tell the embedding width of {type(model).__name__} (no text_projection or "
                        "visual.output_dim) for the auxiliary head")
    return int(out)


def _check_model(model: Any, config: TrainConfig) -> None:
    for attr in ("encode_image", "encode_text", "logit_scale"):
        if not hasattr(model, attr):
            raise TypeError(f"train() needs an open_clip-style model with {attr}; got {type(model).__name__}")
    if config.loss == "sigmoid" and getattr(model, "logit_bias", None) is None:
        raise ValueError("loss='sigmoid' needs a model with a learnable logit_bias: build it from an open_clip config "
                         "with \"init_logit_bias\" (e.g. -10, as the SigLIP configs do), or use loss='infonce'")


@contextlib.contextmanager
def _work_dir_lock(work: Path) -> Iterator[None]:
    import fcntl

    with open(work / ".train.lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{work}: another trainer is running in this work_dir") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _train(
    model: Any, tokenizer: Callable[[list[str]], Any], preprocess: Callable[[Any], Any], dataset: ExampleSource,
    config: TrainConfig, work: Path, say: Callable[[str], None], on_step: Callable[[StepInfo], None] | None,
    t_enter: float, aux_targets: Any = None, view_preprocess: Callable[[Any], Any] | None = None, grid: Any = None,
) -> TrainResult:
    import torch
    from open_clip.loss import ClipLoss, SigLipLoss

    ckpt_dir = _checkpoint_dir(work)
    for stale in ckpt_dir.glob(".step_*.pt.tmp-*"):  # left by a killed run (the lock says none is running)
        stale.unlink(missing_ok=True)

    device, amp_dtype, use_scaler = _resolve(config)
    size = getattr(getattr(model, "visual", None), "image_size", None)
    draft = int(size[0] if isinstance(size, (tuple, list)) else size) if size is not None else None
    source = MicroBatchSource(dataset, micro_batch_size=config.micro_batch_size, preprocess=preprocess,
                              tokenizer=tokenizer, seed=config.seed, draft_size=draft,
                              view_preprocess=view_preprocess)

    model.to(device)
    model.train()
    groups = param_groups(model, config.weight_decay)
    aux_head = None
    if aux_targets is not None:
        torch.manual_seed(config.seed)  # the head's initialisation (a resumed run loads it)
        aux_head = torch.nn.Linear(_embed_dim(model), int(aux_targets.shape[1])).to(device)
        groups.append({"params": list(aux_head.parameters()), "weight_decay": config.weight_decay})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    loss_fn = SigLipLoss() if config.loss == "sigmoid" else ClipLoss()
    device_type = device.split(":")[0]

    step, key, samples_seen = 0, (0, 0), 0
    skipped: dict[str, int] = {}
    curve_steps: list[int] = []
    curve_losses: list[float] = []
    resumed = 0
    found = latest_checkpoint(work, say)
    if found is not None:
        path, ckpt = found
        data = ckpt["data"]
        saved_cfg = ckpt["config"]
        for name in _RESUME_FIXED:
            if saved_cfg.get(name) != getattr(config, name):
                raise ValueError(f"cannot resume from {path}: it was trained with {name}={saved_cfg.get(name)!r}, "
                                 f"this run has {name}={getattr(config, name)!r} (use a new work_dir)")
        if data["n_examples"] != len(dataset):
            raise ValueError(f"cannot resume from {path}: it was trained on {data['n_examples']} examples, this "
                             f"dataset has {len(dataset)} (the example order would change; use a new work_dir)")
        model.load_state_dict(ckpt["model"])
        if aux_head is not None:
            aux_head.load_state_dict(ckpt["aux_head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if use_scaler and ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        step = resumed = int(ckpt["step"])
        key = (int(data["epoch"]), int(data["index"]))
        samples_seen = int(data["samples_seen"])
        skipped = {str(k): int(v) for k, v in data["skipped"].items()}
        curve_steps = [int(v) for v in ckpt["loss_steps"].tolist()]
        curve_losses = [float(v) for v in ckpt["loss_values"].tolist()]
        say(f"resumed from {path} at step {step}/{config.total_steps}")
    else:
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        random.seed(config.seed)

    last_ckpt: Path | None = found[0] if found is not None else None
    pending: list[tuple[int, Any]] = []  # (step, loss tensor) not yet moved to the host: one sync per log line
    errors_logged = 0
    empty_run = 0
    t_first: float | None = None
    step_first = 0
    ckpt_s = 0.0  # time spent writing checkpoints since the first step (left out of samples/s)
    samples_first = 0

    def flush() -> None:
        if not pending:
            return
        values = torch.stack([v for _, v in pending]).float().cpu().tolist()
        for (s, _), v in zip(pending, values, strict=True):
            if not math.isfinite(v) and not use_scaler:  # fp16's GradScaler skips overflowing steps itself
                raise FloatingPointError(f"loss is {v} at step {s}: training diverged (lower lr, set grad_clip)")
            curve_steps.append(s)
            curve_losses.append(v)
        pending.clear()

    def save() -> Path:
        flush()
        target = ckpt_dir / f"step_{step:08d}.pt"
        _atomic_save({
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "model": model.state_dict(),
            "aux_head": aux_head.state_dict() if aux_head is not None else {},
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if use_scaler else {},
            "scheduler": {"kind": "warmup_cosine", "last_lr": lr_at(max(step - 1, 0), config)},
            "rng": _rng_state(),
            "data": {"epoch": key[0], "index": key[1], "samples_seen": samples_seen, "n_examples": len(dataset),
                     "micro_batch_size": config.micro_batch_size, "skipped": dict(skipped)},
            "loss_steps": torch.tensor(curve_steps, dtype=torch.int64),
            "loss_values": torch.tensor(curve_losses, dtype=torch.float64),
            "config": dataclasses.asdict(config),
        }, target)
        for old in checkpoint_paths(work)[: -config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return target

    def features(mb: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
        """(image, text, view or None, feature grids of images and views or None) embeddings, normalised; images and
        their views share one forward pass (and so the batch statistics of a batch-norm tower)."""
        images = mb["images"].to(device, non_blocking=True)
        tokens = mb["tokens"].to(device, non_blocking=True)
        views = mb.get("views")
        with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if views is None:
                return model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True), None, None
            with grid.capture(model) if grid is not None else contextlib.nullcontext({}) as captured:
                both = model.encode_image(torch.cat([images, views.to(device, non_blocking=True)]), normalize=True)
            grids = feature_grids(grid, captured["map"]) if grid is not None else None
            n = images.shape[0]
            return both[:n], model.encode_text(tokens, normalize=True), both[n:], grids

    def auxiliary(img: Any, txt: Any, ids: Any) -> Any:
        """The caption-label loss of a micro-batch (0 when none of its examples has a label)."""
        target = aux_targets[ids].to(device)
        has = target.sum(dim=1) > 0
        if not bool(has.any()):
            return img.sum() * 0.0
        t = target[has]
        ce = torch.nn.functional.cross_entropy
        return ce(aux_head(img[has].float() * 10), t) + ce(aux_head(txt[has].float() * 10), t)

    def contrastive(img: Any, txt: Any, live: bool) -> Any:
        scale = model.logit_scale.exp()
        bias = model.logit_bias if config.loss == "sigmoid" else None
        if not live:
            scale = scale.detach()
            bias = bias.detach() if bias is not None else None
        with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return loss_fn(img, txt, scale, bias) if bias is not None else loss_fn(img, txt, scale)

    if step >= config.total_steps:
        say(f"nothing to do: checkpoint at step {step} >= total_steps {config.total_steps}")
        flush()
        return TrainResult(step, samples_seen, list(zip(curve_steps, curve_losses, strict=True)), 0.0,
                           sum(skipped.values()), dict(skipped), last_ckpt or save(), resumed,
                           time.perf_counter() - t_enter)

    loader = micro_batches(source, key, workers=config.workers, pin_memory=device_type == "cuda")
    batches = iter(loader)
    try:
        while step < config.total_steps:
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            group_batches: list[dict[str, Any]] = []
            while len(group_batches) < config.accumulation_steps:
                mb = next(batches)
                key = next_key((mb["epoch"], mb["index"]), source.batches_per_epoch)
                for reason, count in mb["skipped"].items():
                    skipped[reason] = skipped.get(reason, 0) + count
                for err in mb["errors"]:
                    if errors_logged < 5:
                        say(f"skipped example ({err})")
                        errors_logged += 1
                if mb["size"] == 0:
                    empty_run += 1
                    if empty_run > source.batches_per_epoch:
                        raise RuntimeError(f"no decodable example in {empty_run} micro-batches in a row "
                                           f"(skipped so far: {skipped})")
                    continue
                empty_run = 0
                group_batches.append(mb)

            optimizer.zero_grad(set_to_none=True)
            if config.accumulation == "full_batch" and len(group_batches) > 1:
                with torch.no_grad():
                    cached = [features(mb) for mb in group_batches]
                step_loss = None
                for i, mb in enumerate(group_batches):
                    img_i, txt_i, _, _ = features(mb)
                    imgs = torch.cat([img_i if j == i else c[0] for j, c in enumerate(cached)])
                    txts = torch.cat([txt_i if j == i else c[1] for j, c in enumerate(cached)])
                    loss = contrastive(imgs, txts, live=i == 0)
                    scaler.scale(loss).backward()
                    if i == 0:
                        step_loss = loss.detach()
            else:
                total = None
                for mb in group_batches:
                    img, txt, view, grids = features(mb)
                    loss = contrastive(img, txt, live=True)
                    if aux_head is not None:
                        loss = loss + config.aux_weight * auxiliary(img, txt, mb["ids"])
                    if view is not None and config.view_weight > 0:
                        loss = loss + config.view_weight * instance_loss(img, view, config.view_temperature)
                    if grids is not None:
                        n = img.shape[0]
                        loss = loss + config.grid_view_weight * instance_loss(grids[:n], grids[n:],
                                                                              config.view_temperature)
                    loss = loss / len(group_batches)
                    scaler.scale(loss).backward()
                    total = loss.detach() if total is None else total + loss.detach()
                step_loss = total
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))

            step += 1
            samples_seen += sum(mb["size"] for mb in group_batches)
            pending.append((step, step_loss))
            now = time.perf_counter()
            if t_first is None:
                t_first, samples_first, step_first = now, samples_seen, step
            ckpt_path = None
            if step % config.checkpoint_every == 0 or step == config.total_steps:
                t_save = time.perf_counter()
                ckpt_path = last_ckpt = save()
                ckpt_s += time.perf_counter() - t_save
            if step % config.log_every == 0 or step == config.total_steps:
                flush()
                elapsed = time.perf_counter() - t_first - ckpt_s
                rate = (samples_seen - samples_first) / elapsed if elapsed > 0 else float("nan")
                step_s = elapsed / (step - step_first) if step > step_first else float("nan")
                say(f"step {step}/{config.total_steps} loss {curve_losses[-1]:.4f} lr {lr:.3g} "
                    f"{rate:.1f} samples/s eta {_format_eta(step_s * (config.total_steps - step))}")
            if on_step is not None:
                flush()
                on_step(StepInfo(step, config.total_steps, curve_losses[-1], lr, samples_seen, ckpt_path))
    finally:
        del batches  # stops the worker processes
    flush()
    t_end = time.perf_counter()
    steady = t_end - t_first - ckpt_s if t_first is not None else 0.0
    sps = (samples_seen - samples_first) / steady if steady > 0 and samples_seen > samples_first else 0.0
    assert last_ckpt is not None
    return TrainResult(
        steps=step, samples_seen=samples_seen, loss_curve=list(zip(curve_steps, curve_losses, strict=True)),
        samples_per_s=sps, skipped_examples=sum(skipped.values()), skipped_by_reason=dict(skipped),
        final_checkpoint=last_ckpt, resumed_from_step=resumed, wall_s=t_end - t_enter,
        extra={"checkpoint_s": ckpt_s},
    )
