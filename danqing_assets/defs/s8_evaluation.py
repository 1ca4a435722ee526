"""Evaluation: zero-shot classification and image-text retrieval of a checkpoint asset, as clip_benchmark defines them.

Each evaluation takes the checkpoint it evaluates as an input, so the UI shows which model produced which numbers;
results go to warehouse tables (`checkpoint, eval_set, metric, value`), clip_benchmark-style JSON files and metadata.
Eval sets: the generated held-out demo sets by default, plus any configured real ones (Flickr30K-CN, COCO-CN, MUGE in
the Chinese-CLIP layout; zero-shot image folders with Chinese class names).
"""

from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from danqing_assets.defs.common.metadata import markdown_table
from danqing_assets.defs.common.resources import DEVICE_PATTERN, GPU_POOL, WarehouseResource
from danqing_assets.defs.common.stage_end import versioned
from danqing_assets.lib.stages import EVALUATION

METRIC_SCHEMA = {"checkpoint": pl.String, "eval_set": pl.String, "metric": pl.String, "value": pl.Float64,
                 "chance": pl.Float64}


class EvalConfig(dg.Config):
    zero_shot_sets: list[str] = Field(default_factory=list, description="More zero-shot set directories to evaluate.")
    retrieval_sets: list[str] = Field(
        default_factory=list, description="More retrieval set directories (Chinese-CLIP layout), as DIR or DIR:SPLIT.")
    batch_size: int = Field(default=64, ge=1, description="Images or texts per forward pass.")
    device: str = Field(default="auto", pattern=DEVICE_PATTERN,
                        description="auto (CUDA when available), cpu, cuda, cuda:N or mps.")
    random_init_reference: bool = Field(
        default=True, description="Also evaluate a randomly initialised model of the same architecture (chance check).")


def _models(checkpoint: dict, config: EvalConfig):
    """(label, embedder) of the checkpoint and, when asked, of a random model of its architecture."""
    from danqing_assets.lib.checkpoints import load_checkpoint_dir, read_card

    model = load_checkpoint_dir(checkpoint["path"], device=config.device)
    yield checkpoint["name"], model
    if config.random_init_reference:
        from danqing_assets.lib.embed import load_clip, register_model_config
        from danqing_assets.lib.tokenizer import tokenizer_from_spec

        card = read_card(checkpoint["path"])
        register_model_config(card["model_name"], card["model_config"])
        rnd = load_clip(card["model_name"], None, device=config.device, allow_random_init=True,
                        tokenizer=tokenizer_from_spec(card["tokenizer"], search_dirs=[checkpoint["path"]]))
        yield f"{checkpoint['name']}@random_init", rnd


def _finish(context, warehouse: WarehouseResource, table: str, checkpoint: dict, rows: list[dict], task: str):
    from danqing_assets.lib.evaluate import write_clip_benchmark_json

    wh = warehouse.warehouse()
    df = pl.DataFrame(rows, schema=METRIC_SCHEMA)
    wh.write(table, checkpoint["name"], df)
    out = wh.home / "eval" / "results"
    for (model, eval_set), part in df.group_by("checkpoint", "eval_set"):
        write_clip_benchmark_json(out / model / f"{eval_set}.{task}.json", model=model, dataset=eval_set, task=task,
                                  metrics=dict(zip(part["metric"], part["value"])))
    wide = df.with_columns((pl.col("value") / pl.col("chance")).round(2).alias("x_chance"),
                           pl.col("value").round(4))
    md = {"results": dg.MetadataValue.md(markdown_table(wide, ["checkpoint", "eval_set", "metric", "value", "x_chance"],
                                                        limit=200)),
          "json_dir": dg.MetadataValue.path(str(out))}
    for r in rows:
        if r["checkpoint"] == checkpoint["name"]:
            md[f"{r['eval_set']}/{r['metric']}"] = dg.MetadataValue.float(round(r["value"], 4))
    context.add_output_metadata(md)
    return {"checkpoint": checkpoint["name"], "rows": len(rows)}


def _rows(context, checkpoint: dict, config: EvalConfig, sets: list[str], evaluate) -> list[dict]:
    """One row per (model, eval set, metric): `evaluate(model, spec)` returns (eval set name, result)."""
    rows = []
    for label, model in _models(checkpoint, config):
        for spec in sets:
            name, res = evaluate(model, spec)
            for metric, value in res.metrics.items():
                rows.append({"checkpoint": label, "eval_set": name, "metric": metric, "value": float(value),
                             "chance": float(res.chance.get(metric, float("nan")))})
            if res.skipped:
                context.log.warning(f"{spec}: skipped {res.skipped}")
    return rows


@dg.asset(
    group_name=EVALUATION.group,
    code_version=versioned("1", config=EvalConfig),
    ins={"checkpoint": dg.AssetIn("bootstrap_checkpoint"), "eval_sets": dg.AssetIn("demo_eval_sets")},
    tags={"danqing/device": "gpu"},
    pool=GPU_POOL,
)
def zero_shot_metrics(context: dg.AssetExecutionContext, config: EvalConfig, warehouse: WarehouseResource,
                      checkpoint: dict, eval_sets: dict) -> dict:
    """Zero-shot top-1, top-5 and mean per-class recall of the input checkpoint on every zero-shot eval set (Chinese
    class names in Chinese prompt templates), beside a random model of the same architecture."""
    from danqing_assets.lib.evaluate import evaluate_zero_shot

    def run(model, d):
        return Path(d).name, evaluate_zero_shot(model, d, batch_size=config.batch_size)

    rows = _rows(context, checkpoint, config, [eval_sets["zero_shot"], *config.zero_shot_sets], run)
    return _finish(context, warehouse, "zero_shot_metrics", checkpoint, rows, "zeroshot_classification")


@dg.asset(
    group_name=EVALUATION.group,
    code_version=versioned("1", config=EvalConfig),
    ins={"checkpoint": dg.AssetIn("bootstrap_checkpoint"), "eval_sets": dg.AssetIn("demo_eval_sets")},
    tags={"danqing/device": "gpu"},
    pool=GPU_POOL,
)
def retrieval_metrics(context: dg.AssetExecutionContext, config: EvalConfig, warehouse: WarehouseResource,
                      checkpoint: dict, eval_sets: dict) -> dict:
    """Image->text and text->image Recall@1/5/10 and mean recall of the input checkpoint on every retrieval eval set,
    beside a random model of the same architecture."""
    from danqing_assets.lib.evaluate import evaluate_retrieval

    def run(model, spec):  # DIR or DIR:SPLIT
        d, _, split = str(spec).partition(":") if not Path(spec).exists() else (spec, "", "")
        return Path(d).name, evaluate_retrieval(model, d, split or "test", batch_size=config.batch_size)

    rows = _rows(context, checkpoint, config, [eval_sets["retrieval"], *config.retrieval_sets], run)
    return _finish(context, warehouse, "retrieval_metrics", checkpoint, rows, "zeroshot_retrieval")
