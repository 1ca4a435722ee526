"""Continued pretraining on the release, a raw-data baseline trained the same way, and the ablation that compares them.

The point of a curation pipeline is that its output trains better models than the input it started from. Here that
claim is an asset anyone can re-run: `siglip_checkpoint` (the release) and `raw_baseline_checkpoint` (every pair with
a fetched image of the same snapshots, before stages 3 and 4) start from the same `pretrained_checkpoint`, train with
the same recipe for the same number of samples, after the same decontamination against every eval set; then
`ablation_report` evaluates the three and WARNs unless the curated model beats its start and the baseline.
"""



import hashlib
import shutil
from pathlib import Path
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field, model_validator

from danqing_assets.defs.common.metadata import markdown_table, png_markdown
from danqing_assets.defs.common.resources import GPU_POOL, ImageStoreResource, S3ClientResource, WarehouseResource
from danqing_assets.defs.common.stage_end import versioned
from danqing_assets.lib.stages import PRETRAIN

DECONTAMINATION_SCHEMA = {"training_set": pl.String, "pair_id": pl.String, "eval_set": pl.String,
                          "eval_image": pl.String, "hamming": pl.Int64}
ABLATION_SCHEMA = {"model": pl.String, "checkpoint": pl.String, "eval_set": pl.String, "metric": pl.String,
                   "value": pl.Float64, "chance": pl.Float64}
MODELS = ("start", "raw_baseline", "curated")


class PretrainedCheckpointConfig(dg.Config):
    model: str = Field(default="bootstrap", min_length=1, description=(
        "Where continued pretraining starts: 'bootstrap' (the demo's own model), an open_clip architecture with "
        "`pretrained` (a tag such as 'webli', or a local weights file), 'hf-hub:org/repo', or a project checkpoint "
        "directory given as `pretrained` with model 'checkpoint'."))
    pretrained: str | None = Field(default=None, description="open_clip tag, weights file or checkpoint directory.")


@dg.asset(
    group_name=PRETRAIN.group,
    code_version=versioned("1", config=PretrainedCheckpointConfig),
    ins={"bootstrap": dg.AssetIn("bootstrap_checkpoint")},
)
def pretrained_checkpoint(context: dg.AssetExecutionContext, config: PretrainedCheckpointConfig,
                          warehouse: WarehouseResource, bootstrap: dict) -> dict:
    """The checkpoint continued pretraining starts from, as a project checkpoint directory (weights, tokenizer,
    preprocessing, lineage): the bootstrap checkpoint by default, or a configured open_clip / hf-hub / local one."""
    from danqing_assets.lib.checkpoints import is_checkpoint_dir, read_card, save_checkpoint_dir
    from danqing_assets.lib.embed import CHINESE_CLIP_PREFIX, load_clip
    from danqing_assets.lib.tokenizer import open_clip_tokenizer_spec

    if config.model == "bootstrap":
        path = bootstrap["path"]
    elif config.model == "checkpoint":
        if not config.pretrained or not is_checkpoint_dir(config.pretrained):
            raise dg.Failure(f"model 'checkpoint' needs `pretrained` = a checkpoint directory (card.json + "
                             f"model.safetensors); got {config.pretrained!r}")
        path = config.pretrained
    elif config.model.startswith(CHINESE_CLIP_PREFIX):
        raise dg.Failure("Chinese-CLIP checkpoints score pairs (the clip resource) but are not open_clip models, "
                         "which the trainer continues; start from an open_clip model (e.g. ViT-B-16-SigLIP) instead")
    else:
        emb = load_clip(config.model, config.pretrained, device="cpu", precision="fp32")
        name = emb.model_name
        path = str(save_checkpoint_dir(
            emb, warehouse.warehouse().home / "models" / "pretrained_checkpoint", model_name=name,
            tokenizer_spec=(emb.card or {}).get("tokenizer") or open_clip_tokenizer_spec(name),
            lineage={"asset": "pretrained_checkpoint", "source": {"model": config.model,
                                                                  "pretrained": config.pretrained}},
            overwrite=True))
    card = read_card(path)
    context.add_output_metadata({
        "checkpoint": dg.MetadataValue.path(path), "model_name": card["model_name"],
        "parameters": card.get("weights", {}).get("n_params"), "source": config.model,
    })
    return {"path": path, "name": "pretrained_checkpoint", "weights_sha256": card.get("weights", {}).get("sha256")}


class DecontaminationConfig(dg.Config):
    max_hamming: int = Field(default=6, ge=0, le=32, description=(
        "A training image within this many pHash bits of an eval image is removed from both training sets."))
    zero_shot_sets: list[str] = Field(default_factory=list, description="More zero-shot set directories.")
    retrieval_sets: list[str] = Field(default_factory=list, description="More retrieval sets, DIR or DIR:SPLIT.")


def _split(spec: str) -> tuple[str, str]:
    d, _, split = spec.rpartition(":") if ":" in Path(spec).name else (spec, "", "test")
    return d, split or "test"


def _raw_pairs(wh, snapshots: list[str]) -> pl.DataFrame:
    """Every pair of these snapshots whose image was fetched, with its stage-2 caption and stored pHash."""
    frames = []
    for s in snapshots:
        if not (wh.exists("fetched_images", s) and wh.exists("text_refined_pairs", s)):
            raise dg.Failure(f"snapshot {s}: fetched_images or text_refined_pairs is missing; the raw baseline "
                             "needs both (materialize the snapshot through stage 3's fetch)")
        fetched = wh.read("fetched_images", s).filter(pl.col("status") == "ok").select("pair_id", "image_sha256")
        text = wh.read("text_refined_pairs", s).select("pair_id", pl.col("caption_clean").alias("caption"))
        df = fetched.join(text, on="pair_id", how="inner")
        if wh.exists("image_scores", s):
            df = df.join(wh.read("image_scores", s).select("image_sha256", "phash"), on="image_sha256", how="left")
        frames.append(df)
    return pl.concat(frames, how="diagonal_relaxed").unique("pair_id", keep="first")


def _phash_by_sha(wh, snapshots: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in snapshots:
        if wh.exists("image_scores", s):
            df = wh.read("image_scores", s, columns=["image_sha256", "phash"]).drop_nulls()
            out.update(zip(df["image_sha256"].to_list(), df["phash"].to_list()))
    return out


def _snapshots(release: dict) -> list[str]:
    """The snapshots a release holds (from its output; older outputs did not carry them: read its Parquet)."""
    if release.get("snapshots"):
        return sorted(release["snapshots"])
    return sorted(set(pl.read_parquet(f"{release['location']}/parquet/*.parquet")["snapshot"].to_list()))


def _curated_set(wh, release: dict, s3: S3ClientResource):
    """The release's WebDataset shards as a training set (an S3 release is cached under the warehouse home)."""
    from danqing_assets.lib.pretrain import release_examples

    location = release["location"]
    return release_examples(location, cache_dir=wh.home / "cache" / "releases",
                            s3_client=s3.client() if location.startswith("s3://") else None,
                            phash_by_sha=_phash_by_sha(wh, _snapshots(release)))


def _raw_set(wh, release: dict, s3: S3ClientResource, image_store: ImageStoreResource, warehouse: WarehouseResource):
    """Every pair of the release's snapshots with a fetched image, before stages 3 and 4, as a training set."""
    from danqing_assets.lib.pretrain import raw_examples

    snaps = _snapshots(release)
    raw = raw_examples(_raw_pairs(wh, snaps), image_store.store(warehouse, s3).get)
    raw.description.update({"snapshots": snaps, "before": "stage 3 (visual) and stage 4 (cross-modal, cross-batch)"})
    return raw


@dg.asset(
    group_name=PRETRAIN.group,
    code_version=versioned("1", config=DecontaminationConfig),
    ins={"release": dg.AssetIn("danqing_dataset"), "eval_sets": dg.AssetIn("demo_eval_sets")},
)
def training_decontamination(context: dg.AssetExecutionContext, config: DecontaminationConfig,
                             warehouse: WarehouseResource, s3: S3ClientResource, image_store: ImageStoreResource,
                             release: dict, eval_sets: dict) -> dict:
    """Training pairs (of the release and of the raw baseline's set) whose image is a pHash near-duplicate of an eval
    image: listed in the table `decontaminated_pairs` and removed from both training sets before training."""
    from danqing_assets.lib.pretrain import decontaminate, eval_image_hashes

    wh = warehouse.warehouse()
    zero_shot = [eval_sets["zero_shot"], *config.zero_shot_sets]
    retrieval = [(eval_sets["retrieval"], "test"), *(_split(s) for s in config.retrieval_sets)]
    evals = eval_image_hashes(zero_shot, retrieval)
    out, rows, meta = {}, [], {}
    for ts in (_curated_set(wh, release, s3), _raw_set(wh, release, s3, image_store, warehouse)):
        d = decontaminate(ts, evals, config.max_hamming)
        out[ts.name] = sorted(r["pair_id"] for r in d.removed)
        rows += [{"training_set": ts.name, **r} for r in d.removed]
        meta[f"{ts.name}_pairs"] = len(ts)
        meta[f"{ts.name}_removed"] = len(d.removed)
        meta[f"{ts.name}_unhashable"] = d.unhashable
    table = pl.DataFrame(rows, schema=DECONTAMINATION_SCHEMA)
    wh.write("decontaminated_pairs", release["release_id"], table)
    context.add_output_metadata({
        **meta, "eval_images": len(evals), "max_hamming": config.max_hamming,
        "release_id": release["release_id"],
        "removed": dg.MetadataValue.md(markdown_table(table, list(DECONTAMINATION_SCHEMA), limit=20)),
    })
    return {"release_id": release["release_id"], "removed": out, "eval_images": len(evals)}


class ContinuedTrainingConfig(dg.Config):
    steps: int = Field(default=150, ge=1, le=10_000_000, description="Optimizer steps (the same for both models).")
    batch_size: int = Field(default=64, ge=2, le=1_000_000, description="Pairs per optimizer step.")
    accumulation_steps: int = Field(default=1, ge=1, le=4096, description="Micro-batches per step.")
    lr: float = Field(default=2e-4, gt=0, le=1.0, allow_inf_nan=False, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(default=15, ge=0, description="Linear warmup steps, then cosine decay.")
    weight_decay: float = Field(default=0.2, ge=0, le=10, allow_inf_nan=False, description="AdamW weight decay.")
    loss: Literal["sigmoid", "infonce"] = Field(default="sigmoid", description="SigLIP's sigmoid loss or CLIP's.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(default="auto", description="auto: bf16 AMP on CUDA.")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto: CUDA if present.")
    seed: int = Field(default=0, ge=0, description="Seed of data order, augmentation and dropout.")
    workers: int = Field(default=1, ge=0, le=256, description="Data-loading worker processes.")
    checkpoint_every: int = Field(default=50, ge=1, description="Steps between resumable checkpoints.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) is above steps ({self.steps})")
        if self.batch_size % self.accumulation_steps:
            raise ValueError(f"batch_size ({self.batch_size}) is not a multiple of accumulation_steps "
                             f"({self.accumulation_steps})")
        return self


def _train_config(config: ContinuedTrainingConfig):
    from danqing_assets.lib.train import TrainConfig

    try:
        return TrainConfig(total_steps=config.steps, batch_size=config.batch_size,
                           accumulation_steps=config.accumulation_steps, lr=config.lr,
                           warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
                           loss=config.loss, precision=config.precision, device=config.device, seed=config.seed,
                           workers=config.workers, checkpoint_every=config.checkpoint_every, log_every=25)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None


def _continue(context, config: ContinuedTrainingConfig, warehouse: WarehouseResource, start: dict, ts, removed,
              name: str) -> dict:
    from danqing_assets.lib.pretrain import continue_training, recipe_key

    wh = warehouse.warehouse()
    gone = set(removed)
    clean = ts.subset([i for i, pid in enumerate(ts.ids) if pid not in gone])
    clean.description["decontaminated"] = len(ts) - len(clean)
    out = wh.home / "models" / name
    tcfg = _train_config(config)
    # The work dir is named by what the run trains (recipe, start, data), not by the run: a run killed mid-way and
    # launched again (a new run id) resumes from its last checkpoint; a finished run removes it.
    data_key = hashlib.sha256("\n".join(clean.ids).encode()).hexdigest()[:12]
    work = wh.home / "train-work" / name / f"{recipe_key(tcfg, start)}-{data_key}"
    res = continue_training(
        start["path"], clean, out, work, train_config=tcfg, log=context.log.info,
        lineage={"asset": name, "code_version": context.assets_def.code_versions_by_key[context.asset_key],
                 "config": config.model_dump(), "run_id": context.run_id})
    shutil.rmtree(work, ignore_errors=True)
    curve = res.train.loss_curve
    context.add_output_metadata({
        "checkpoint": dg.MetadataValue.path(str(res.checkpoint)),
        "open_clip": dg.MetadataValue.md(f"`open_clip.create_model('local-dir:{res.checkpoint}')` (tokenizer: "
                                         "the card's; see README)"),
        "training_pairs": len(clean), "decontaminated": len(ts) - len(clean),
        "steps": res.train.steps, "samples_seen": res.train.samples_seen,
        "samples_per_s": dg.MetadataValue.float(round(res.train.samples_per_s, 1)),
        "skipped_examples": res.train.skipped_examples, "recipe": res.lineage["recipe"],
        "resumed_from_step": res.train.resumed_from_step,
        "first_loss": dg.MetadataValue.float(round(curve[0][1], 4)) if curve else None,
        "final_loss": dg.MetadataValue.float(round(curve[-1][1], 4)) if curve else None,
        "loss_curve": dg.MetadataValue.json({str(s): round(v, 4) for s, v in curve[:: max(1, len(curve) // 50)]}),
        "data": dg.MetadataValue.json({k: v for k, v in clean.description.items() if k != "shards"}),
    })
    return {"path": str(res.checkpoint), "name": name, "recipe": res.lineage["recipe"],
            "samples_seen": res.train.samples_seen}


_TRAIN_INS = {"start": dg.AssetIn("pretrained_checkpoint"), "release": dg.AssetIn("danqing_dataset"),
              "decontamination": dg.AssetIn("training_decontamination")}


@dg.asset(group_name=PRETRAIN.group, code_version=versioned("1", config=ContinuedTrainingConfig), ins=_TRAIN_INS,
          tags={"danqing/device": "gpu"}, pool=GPU_POOL)
def siglip_checkpoint(context: dg.AssetExecutionContext, config: ContinuedTrainingConfig,
                      warehouse: WarehouseResource, s3: S3ClientResource, image_store: ImageStoreResource,
                      start: dict, release: dict, decontamination: dict) -> dict:
    """Continued pretraining of the start checkpoint on the release's WebDataset shards (sigmoid loss, AdamW, warmup
    + cosine, resumable checkpoints); its card records the release (id, shards, pairs) and the start checkpoint."""
    _check_release(release, decontamination)
    curated = _curated_set(warehouse.warehouse(), release, s3)
    return _continue(context, config, warehouse, start, curated, decontamination["removed"]["curated"],
                     "siglip_checkpoint")


@dg.asset(group_name=PRETRAIN.group, code_version=versioned("1", config=ContinuedTrainingConfig), ins=_TRAIN_INS,
          tags={"danqing/device": "gpu"}, pool=GPU_POOL)
def raw_baseline_checkpoint(context: dg.AssetExecutionContext, config: ContinuedTrainingConfig,
                            warehouse: WarehouseResource, s3: S3ClientResource, image_store: ImageStoreResource,
                            start: dict, release: dict, decontamination: dict) -> dict:
    """The same recipe, start and number of samples as `siglip_checkpoint`, on the uncurated pairs of the same
    snapshots: every pair with a fetched image, before stages 3 and 4. The difference between the two is curation.
    (Give both assets the same run config: the ablation report refuses to compare different recipes.)"""
    _check_release(release, decontamination)
    raw = _raw_set(warehouse.warehouse(), release, s3, image_store, warehouse)
    return _continue(context, config, warehouse, start, raw, decontamination["removed"]["raw"],
                     "raw_baseline_checkpoint")


def _check_release(release: dict, decontamination: dict) -> None:
    if decontamination.get("release_id") != release["release_id"]:
        raise dg.Failure(f"training_decontamination was computed for release {decontamination.get('release_id')}, "
                         f"the release is {release['release_id']}: materialize training_decontamination again")


class AblationConfig(dg.Config):
    zero_shot_sets: list[str] = Field(default_factory=list, description="More zero-shot set directories.")
    retrieval_sets: list[str] = Field(default_factory=list, description="More retrieval sets, DIR or DIR:SPLIT.")
    batch_size: int = Field(default=64, ge=1, le=65536, description="Images or texts per forward pass.")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto: CUDA if present.")
    margin: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False, description=(
        "How much the curated model must beat its start by (absolute, on the headline metrics) for the check."))


HEADLINE = {"zeroshot_classification": "acc1", "zeroshot_retrieval": "mean_recall"}


def evaluate_models(models: dict[str, dict], zero_shot: list[str], retrieval: list[tuple[str, str]],
                    batch_size: int, device: str) -> pl.DataFrame:
    """Evaluate every (label -> checkpoint dict) on every set: one row per model, set and metric."""
    from danqing_assets.lib.checkpoints import load_checkpoint_dir
    from danqing_assets.lib.evaluate import evaluate_retrieval, evaluate_zero_shot

    rows = []
    for label, ckpt in models.items():
        emb = load_checkpoint_dir(ckpt["path"], device=device)
        results = [(Path(d).name, evaluate_zero_shot(emb, d, batch_size=batch_size)) for d in zero_shot]
        results += [(f"{Path(d).name}:{s}", evaluate_retrieval(emb, d, s, batch_size=batch_size)) for d, s in retrieval]
        for eval_set, res in results:
            for metric, value in res.metrics.items():
                rows.append({"model": label, "checkpoint": ckpt["name"], "eval_set": eval_set, "metric": metric,
                             "value": float(value), "chance": float(res.chance.get(metric, float("nan")))})
    return pl.DataFrame(rows, schema=ABLATION_SCHEMA)


def ablation_verdict(df: pl.DataFrame, margin: float = 0.0) -> tuple[bool, list[str]]:
    """Whether the curated model beats its start (by `margin`) and is at least as good as the raw baseline on every
    eval set's headline metric (zero-shot top-1, retrieval mean recall); and one line per comparison."""
    lines, ok = [], True
    head = df.filter(pl.col("metric").is_in(list(HEADLINE.values())))
    for eval_set in sorted(set(head["eval_set"].to_list())):
        part = head.filter(pl.col("eval_set") == eval_set)
        v = {r["model"]: r["value"] for r in part.iter_rows(named=True)}
        metric = part["metric"][0]
        if not all(m in v for m in MODELS):
            ok = False
            lines.append(f"{eval_set}: a model is missing ({sorted(v)})")
            continue
        beats_start = v["curated"] > v["start"] + margin
        vs_raw = v["curated"] >= v["raw_baseline"]
        ok &= beats_start and vs_raw
        lines.append(f"{eval_set} {metric}: start {v['start']:.4f}, raw baseline {v['raw_baseline']:.4f}, curated "
                     f"{v['curated']:.4f} ({'beats' if beats_start else 'does NOT beat'} its start, "
                     f"{'>=' if vs_raw else '<'} the raw baseline)")
    return ok, lines


def chart_png(df: pl.DataFrame) -> bytes:
    """Grouped bars: the headline metric of each eval set, one bar per model."""
    from danqing_assets.lib.report_images import figure_png, new_figure

    head = df.filter(pl.col("metric").is_in(list(HEADLINE.values())))
    groups = sorted(set(head["eval_set"].to_list()))
    fig, ax = new_figure((7, 3.6))
    width = 0.8 / len(MODELS)
    for k, m in enumerate(MODELS):
        vals = [float(head.filter((pl.col("eval_set") == g) & (pl.col("model") == m))["value"].sum()) for g in groups]
        ax.bar([i + (k - 1) * width for i in range(len(groups))], vals, width, label=m)
    ax.set_xticks(range(len(groups)), [f"{g}\n{head.filter(pl.col('eval_set') == g)['metric'][0]}" for g in groups],
                  fontsize=8)
    ax.set_ylabel("metric value")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return figure_png(fig)


@dg.asset(
    group_name=PRETRAIN.group,
    code_version=versioned("1", config=AblationConfig),
    ins={"start": dg.AssetIn("pretrained_checkpoint"), "curated": dg.AssetIn("siglip_checkpoint"),
         "raw_baseline": dg.AssetIn("raw_baseline_checkpoint"), "eval_sets": dg.AssetIn("demo_eval_sets")},
    check_specs=[dg.AssetCheckSpec("curated_beats_start_and_raw_baseline", asset="ablation_report",
                                   description="WARN unless the curated model beats its start on every held-out eval "
                                   "set and is at least as good as the raw baseline")],
    tags={"danqing/device": "gpu"},
    pool=GPU_POOL,
)
def ablation_report(context: dg.AssetExecutionContext, config: AblationConfig, warehouse: WarehouseResource,
                    start: dict, curated: dict, raw_baseline: dict, eval_sets: dict):
    """The start, the raw baseline and the curated model on every eval set: one table (`ablation_metrics`), one
    chart, and a check that WARNs unless curation paid off."""
    if curated.get("recipe") != raw_baseline.get("recipe") or curated.get("samples_seen") != raw_baseline.get(
            "samples_seen"):
        raise dg.Failure(f"the curated model and the raw baseline were not trained alike (recipe {curated.get('recipe')}"
                         f" vs {raw_baseline.get('recipe')}, samples {curated.get('samples_seen')} vs "
                         f"{raw_baseline.get('samples_seen')}): give both assets the same run config")
    wh = warehouse.warehouse()
    zero_shot = [eval_sets["zero_shot"], *config.zero_shot_sets]
    retrieval = [(eval_sets["retrieval"], "test"), *(_split(s) for s in config.retrieval_sets)]
    df = evaluate_models({"start": start, "raw_baseline": raw_baseline, "curated": curated}, zero_shot, retrieval,
                         config.batch_size, config.device)
    wh.write("ablation_metrics", curated["name"], df)
    ok, lines = ablation_verdict(df, config.margin)
    wide = df.pivot(on="model", index=["eval_set", "metric"], values="value").sort("eval_set", "metric")
    png = chart_png(df)
    chart = wh.home / "eval" / f"ablation-{context.run_id[:8]}.png"
    chart.parent.mkdir(parents=True, exist_ok=True)
    chart.write_bytes(png)
    md = markdown_table(wide.with_columns(pl.col(m).round(4) for m in MODELS if m in wide.columns),
                        ["eval_set", "metric", *MODELS], limit=200)
    context.log.info("ablation:\n" + "\n".join(lines))
    yield dg.Output({"ok": ok, "lines": lines}, metadata={
        "table": dg.MetadataValue.md(md), "verdict": dg.MetadataValue.md("\n".join(f"- {ln}" for ln in lines)),
        "chart": dg.MetadataValue.path(str(chart)),
        "chart_md": png_markdown("ablation", png),
    })
    yield dg.AssetCheckResult(check_name="curated_beats_start_and_raw_baseline", passed=ok,
                              severity=dg.AssetCheckSeverity.WARN, metadata={"comparisons": "\n".join(lines)})

