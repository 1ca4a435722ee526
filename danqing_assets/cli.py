"""`danqing`: the command line for sample crawls, snapshots, materializations and the funnel.

Materializations run on the Dagster instance in $DAGSTER_HOME (default $DANQING_HOME/dagster, created from the
project's dagster.yaml), the same instance `make ui` / `dagster dev` shows.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _home() -> Path:
    from danqing_assets.lib.warehouse import default_home

    return default_home().expanduser().resolve()


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME, defaulting to $DANQING_HOME/dagster, with the project's dagster.yaml in it."""
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(_home() / "dagster")
    home = Path(os.environ["DAGSTER_HOME"]).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    template = PROJECT_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if template.exists() and template.resolve() != target and (
        not target.exists() or target.read_bytes() != template.read_bytes()
    ):
        shutil.copyfile(template, target)
    return home


def cmd_sample_crawl(args: argparse.Namespace) -> int:
    from danqing_sample.crawl import write_sample_crawl

    kwargs = {"seed": args.seed}
    if args.pages is not None:
        kwargs["pages"] = args.pages
    summary = write_sample_crawl(args.dir, **kwargs)
    print(
        f"wrote {len(summary.warc_files)} WARC files, {summary.pages} pages, {summary.pairs} pairs "
        f"to {args.dir} in {summary.seconds:.1f}s (truth: {summary.truth_path})"
    )
    return 0


def _warehouse_resource():
    from danqing_assets.defs.common.resources import warehouse_resource

    return warehouse_resource(str(_home()))


def _warehouse():
    """The warehouse the runs use: local under $DANQING_HOME, or on S3 ($DANQING_WAREHOUSE_LOCATION)."""
    return _warehouse_resource().warehouse()


def _registry():
    return _warehouse_resource().registry()


def cmd_snapshot_add(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from danqing_assets.defs.common.partitions import snapshot_partitions
    from danqing_assets.defs.common.resources import S3ClientResource

    registry = _registry()
    try:
        before = registry.get(args.name).keys
    except KeyError:
        before = ()
    try:
        snap = registry.add(args.name, args.source, base_url=args.base_url,
                            allow_foreign_paths=getattr(args, "allow_foreign_paths", False),
                            batch_size=getattr(args, "batch_size", None), replace=getattr(args, "replace", False),
                            s3_client_factory=S3ClientResource().client)
    except OSError as exc:  # a listing that cannot be read (network, S3 permissions): a message, not a trace
        raise ValueError(f"cannot list the WARC files of {args.source!r}: {exc}") from exc
    ensure_dagster_home()
    instance = DagsterInstance.get()
    existing = set(instance.get_dynamic_partitions(snapshot_partitions.name))
    new = [k for k in snap.keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(snapshot_partitions.name, new)
    for key in before:  # batches a --replace cut away (their tables stay in the warehouse until overwritten)
        if key not in snap.keys and key in existing:
            instance.delete_dynamic_partition(snapshot_partitions.name, key)
    print(f"snapshot {snap.name!r} -> {snap.source}")
    if len(snap.keys) > 1:
        print(f"  {snap.files} WARC files in {len(snap.keys)} batches of {snap.batch_size}: "
              f"{snap.keys[0]} ... {snap.keys[-1]} (one partition each)")
    return 0


def cmd_snapshot_list(args: argparse.Namespace) -> int:
    for snap in _registry().list():
        print(f"{snap.name}\t{snap.source}")
        if getattr(args, "batches", False) or len(snap.keys) > 1:
            files = f"{snap.files} WARC files" if snap.files is not None else "files listed when materialized"
            print(f"  {files}, {len(snap.keys)} batch(es) of {snap.batch_size or '-'}: " + (
                " ".join(snap.keys) if getattr(args, "batches", False) else f"{snap.keys[0]} ... {snap.keys[-1]}"))
    return 0


PARTS = ("all", "before_merge", "merge")
"""Which assets of the chain a materialization runs: everything, everything before stage 4's cross-batch merge,
or the merge and what follows it (a parallel backfill runs the merges one batch at a time, in batch order)."""


def _selection(graph, through: str | None, part: str = "all") -> list:
    import dagster as dg

    from danqing_assets.lib.stages import CROSS_BATCH

    partitioned = {k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None}
    if through is None:
        keys = set(partitioned)
    else:
        key = dg.AssetKey.from_user_string(through)
        if key not in graph.get_all_asset_keys():
            known = ", ".join(sorted(k.to_user_string() for k in graph.get_all_asset_keys()))
            raise SystemExit(f"unknown asset {through!r}; known assets: {known}")
        selection = dg.AssetSelection.assets(key).upstream().required_multi_asset_neighbors()
        keys = {k for k in selection.resolve(graph) if k in partitioned}
    if part != "all":
        merge = dg.AssetSelection.groups(CROSS_BATCH.group).downstream().resolve(graph)
        keys = keys & merge if part == "merge" else keys - merge
    return sorted(keys)


def materialize(name: str, *, through: str | None = None, run_config: dict | None = None,
                batches: list[str] | None = None, part: str = "all") -> bool:
    """Run the curation job for every batch of snapshot `name` in order, one run per batch (or only `batches` of it;
    `name` may also be one batch's key), up to and including asset `through`. True when every run succeeded."""
    import dagster as dg

    from danqing_assets.definitions import defs
    from danqing_assets.defs.common.partitions import snapshot_partitions

    registry = _registry()
    keys = registry.resolve(name, batches)  # a clear error for an unregistered snapshot or batch
    configs = {k: run_config for k in keys}
    max_files = (((run_config or {}).get("ops") or {}).get("warc_files") or {}).get("config", {}).get("max_files")
    if not batches and len(keys) > 1 and isinstance(max_files, int) and not isinstance(max_files, bool) and max_files >= 1:
        # a sample of the snapshot's first N files: only the batches that hold them (the README's sample10.yaml)
        from danqing_assets.lib.snapshots import first_files

        configs = {}
        for key, n in first_files(registry.get(name), max_files):
            cfg = copy.deepcopy(run_config)
            cfg["ops"]["warc_files"]["config"]["max_files"] = n
            configs[key] = cfg
        keys = list(configs)
        print(f"materialize: max_files={max_files}: the first {len(keys)} batch(es) of {name}", flush=True)
    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    existing = set(instance.get_dynamic_partitions(snapshot_partitions.name))
    missing = [k for k in keys if k not in existing]
    if missing:
        instance.add_dynamic_partitions(snapshot_partitions.name, missing)
    graph = defs.resolve_asset_graph()
    assets = _selection(graph, through, part)
    if not assets:
        return True
    job = defs.resolve_job_def("curation_job")
    _check_run_config(job, run_config, assets)
    failed = []
    for i, key in enumerate(keys):
        if len(keys) > 1:
            print(f"materialize: batch {key} ({i + 1} of {len(keys)})", flush=True)
        result = job.execute_in_process(
            partition_key=key,
            instance=instance,
            asset_selection=assets,
            run_config=configs[key] or {},
            raise_on_error=False,
            tags={"danqing/trigger": "cli"},
        )
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                print(f"step failed: {event.step_key} ({key}): {event.event_specific_data.error.message.strip()}",
                      file=sys.stderr)
        if not result.success:
            failed.append(key)
    if len(keys) > 1:
        print(f"materialize: {len(keys) - len(failed)} of {len(keys)} batches of {name} succeeded"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    return not failed


def _check_run_config(job, run_config: dict | None, keys) -> None:
    """Refuse bad run config before anything runs (RunConfigRefused, a ValueError: `main` prints it); in-process runs
    skip the code location's validating executor, so the CLI checks itself."""
    from danqing_assets.defs.common.run_config import check_run_config

    check_run_config(job.get_subset(asset_selection=set(keys)), run_config)


def run_unpartitioned(job_name: str, *, run_config: dict | None = None, only_stale: bool = False) -> bool:
    """Run an unpartitioned job (models_job, release_job) on the instance. With `only_stale`, assets whose last
    materialization has the current code version are skipped (the bootstrap model trains once)."""
    import dagster as dg

    from danqing_assets.definitions import defs

    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(job_name)
    graph = defs.resolve_asset_graph()
    from danqing_assets.defs.common.automation import JOB_GROUPS

    keys = list(dg.AssetSelection.groups(*JOB_GROUPS[job_name]).resolve(graph))
    if only_stale:
        stale = []
        for key in keys:
            event = instance.get_latest_materialization_event(key)
            recorded = (event.asset_materialization.tags or {}).get("dagster/code_version") if event else None
            if recorded != graph.get(key).code_version:
                stale.append(key)
        if not stale:
            print(f"{job_name}: every asset is up to date (code and config unchanged): skipped")
            return True
        keys = stale
    _check_run_config(job, run_config, keys)
    result = job.execute_in_process(instance=instance, asset_selection=keys, run_config=run_config or {},
                                    raise_on_error=False, tags={"danqing/trigger": "cli"})
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            print(f"step failed: {event.step_key}: {event.event_specific_data.error.message.strip()}", file=sys.stderr)
    return result.success


def _load_config(path: str | None) -> dict | None:
    if not path:
        return None
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}


def cmd_models(args: argparse.Namespace) -> int:
    ok = run_unpartitioned("models_job", run_config=_load_config(args.config), only_stale=not args.force)
    print_evaluation()
    return 0 if ok else 1


def print_evaluation() -> None:

    wh = _warehouse()
    for table in ("zero_shot_metrics", "retrieval_metrics"):
        if wh.exists(table, "bootstrap_checkpoint"):
            df = wh.read(table, "bootstrap_checkpoint")
            print(f"\n{table}:")
            for r in df.iter_rows(named=True):
                ratio = r["value"] / r["chance"] if r["chance"] else float("nan")
                print(f"  {r['checkpoint']:<34} {r['eval_set']:<22} {r['metric']:<28} {r['value']:.4f}  ({ratio:.1f}x chance)")


def bootstrap_good_enough(min_retrieval: float = 5.0, min_zero_shot: float = 3.0) -> bool:
    """The demo's gate for deciding duplicates with the bootstrap model: the models issue's targets on the held-out
    eval sets, retrieval R@1 (both directions) >= 5x chance and zero-shot top-1 >= 3x chance. A model that ranks
    captions well but does not separate classes keeps distinct scenes within cosine distance 0.1 of each other."""

    wh = _warehouse()
    if not (wh.exists("retrieval_metrics", "bootstrap_checkpoint") and wh.exists("zero_shot_metrics", "bootstrap_checkpoint")):
        return False

    def ratios(table: str, suffix: str) -> list[float]:
        df = wh.read(table, "bootstrap_checkpoint")
        df = df.filter((df["checkpoint"] == "bootstrap_checkpoint") & df["metric"].str.ends_with(suffix))
        return [v / c for v, c in zip(df["value"], df["chance"]) if c]

    r1, top1 = ratios("retrieval_metrics", "recall@1"), ratios("zero_shot_metrics", "acc1")
    return bool(r1 and top1) and min(r1) >= min_retrieval and min(top1) >= min_zero_shot


def cmd_release(args: argparse.Namespace) -> int:
    ok = run_unpartitioned("release_job", run_config=_load_config(args.config))
    location = getattr(_warehouse(), "location", None)
    if location:  # on S3: the report and the releases are objects beside the tables
        print(f"funnel report: {location}/reports/funnel.md\nreleases: {location}/releases/")
        return 0 if ok else 1
    reports = _home() / "reports" / "funnel.md"
    if reports.exists():
        print(reports.read_text(encoding="utf-8").split("\n\n| snapshot")[0])
    releases = sorted((_home() / "releases").glob("*/_SUCCESS"))
    if releases:
        print(f"\nnewest release: {releases[-1].parent}")
    return 0 if ok else 1


def cmd_pretrain(args: argparse.Namespace) -> int:
    ok = run_unpartitioned("pretraining_job", run_config=_load_config(args.config))
    print_ablation()
    return 0 if ok else 1


def print_ablation() -> None:
    """The ablation table (start / raw baseline / curated on every eval set) and its verdict."""
    from danqing_assets.defs.s7_pretraining import MODELS, ablation_verdict

    wh = _warehouse()
    if not wh.exists("ablation_metrics", "siglip_checkpoint"):
        return
    df = wh.read("ablation_metrics", "siglip_checkpoint")
    wide = df.pivot(on="model", index=["eval_set", "metric"], values="value").sort("eval_set", "metric")
    print("\nablation (continued pretraining from the same start, same recipe and samples):")
    print(f"  {'eval set':<16} {'metric':<28} " + " ".join(f"{m:>12}" for m in MODELS))
    for r in wide.iter_rows(named=True):
        print(f"  {r['eval_set']:<16} {r['metric']:<28} " + " ".join(f"{r.get(m, float('nan')):>12.4f}" for m in MODELS))
    ok, lines = ablation_verdict(df)
    print("verdict: " + ("curation paid off" if ok else "curation did NOT pay off on every eval set (check WARNs)"))
    for line in lines:
        print(f"  {line}")


def cmd_materialize(args: argparse.Namespace) -> int:
    run_config = None
    if args.config:
        import yaml

        run_config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    batches = getattr(args, "batch", None) or None
    ok = materialize(args.name, through=args.through, run_config=run_config, batches=batches,
                     part=getattr(args, "part", "all"))
    if getattr(args, "part", "all") == "all":
        print_funnel(args.name, batches)
    return 0 if ok else 1


def _funnel_keys(name: str, batches: list[str] | None = None) -> list[str]:
    """The partition keys a funnel of NAME covers: its batches (or the given ones); an unregistered NAME is read as a
    partition key (what was materialized under it)."""
    try:
        return _registry().resolve(name, batches)
    except KeyError:
        if batches:
            raise
        return [name]


def print_funnel(name: str, batches: list[str] | None = None, steps_of=None) -> None:
    from danqing_assets.lib.funnel import combine_funnels, format_funnel, funnel

    wh = _warehouse()
    keys = _funnel_keys(name, batches)
    steps_of = steps_of or (lambda key: funnel(wh, key))
    if len(keys) == 1:
        label = keys[0] if keys[0] == name else f"{name}, batch {keys[0]}"
        print(format_funnel(steps_of(keys[0]), label))
        return
    steps, reached = combine_funnels([steps_of(k) for k in keys])
    print(format_funnel(steps, f"{name}, {len(keys)} batches"))
    if reached and min(reached.values()) < len(keys):
        print("batches materialized per step (a step sums only these): "
              + ", ".join(f"{t} {n}/{len(keys)}" for t, n in reached.items()))


def whatif_params(settings: list[str]) -> dict[str, dict]:
    """Thresholds per deciding asset: its Config defaults, overridden by ASSET.FIELD=VALUE settings (VALUE read as
    YAML, then validated by the Config class, so a wrong name or type is a clear error)."""
    import yaml

    from danqing_assets.defs.common.stage_end import config_defaults
    from danqing_assets.defs.s1_source_selection import SourceSelectionConfig
    from danqing_assets.defs.s2_text_refinement import TextRefinementConfig
    from danqing_assets.defs.s3_visual_diversification import VisualDiversificationConfig
    from danqing_assets.defs.s4_cross_modal import AlignedPairsConfig

    configs = {"source_selected_pairs": SourceSelectionConfig, "text_refined_pairs": TextRefinementConfig,
               "visually_diversified_pairs": VisualDiversificationConfig, "aligned_pairs": AlignedPairsConfig}
    overrides: dict[str, dict] = {k: {} for k in configs}
    for item in settings:
        key, sep, value = item.partition("=")
        asset, dot, field = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set {item!r}: expected ASSET.FIELD=VALUE")
        if asset not in configs:
            raise SystemExit(f"--set {item!r}: thresholds can be set for {', '.join(configs)}")
        if field not in configs[asset].model_fields:
            raise SystemExit(f"--set {item!r}: {asset} has no field {field!r}; fields: "
                             + ", ".join(configs[asset].model_fields))
        overrides[asset][field] = yaml.safe_load(value)
    out = {}
    for asset, cls in configs.items():
        try:
            out[asset] = cls(**{**config_defaults(cls), **overrides[asset]}).model_dump()
        except Exception as exc:  # noqa: BLE001 - pydantic's message names the field and the problem
            raise SystemExit(f"--set for {asset}: {exc}") from exc
    return out


def cmd_funnel(args: argparse.Namespace) -> int:
    batches = getattr(args, "batch", None) or None
    if not args.set:
        print_funnel(args.name, batches)
        return 0
    from danqing_assets.lib.whatif import what_if

    started = time.monotonic()
    params = whatif_params(args.set)
    wh = _warehouse()
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_funnel(args.name, batches, steps_of=lambda key: what_if(wh, key, params))
    print(buf.getvalue().rstrip("\n").replace("Funnel for", "What-if funnel (" + ", ".join(args.set) + ") for", 1))
    print(f"(decided again from the stored scores in {time.monotonic() - started:.1f}s; nothing was written. "
          "not_scored_yet / not_fetched_yet: pairs the new thresholds let further than the last run, decided only "
          "by materializing)")
    return 0


def _backfill_keys(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(snapshot or NAME as given, batch key) for every batch to backfill, in order: snapshots as named (with --all:
    as registered, sorted by name), each snapshot's batches in listing order."""
    registry = _registry()
    names = [s.name for s in registry.list()] if args.all else args.names
    if not names:
        raise ValueError("name snapshots to backfill, or pass --all")
    batches = getattr(args, "batch", None) or None
    if batches and len(names) != 1:
        raise ValueError("--batch picks batches of one snapshot: name exactly one snapshot with it")
    out: list[tuple[str, str]] = []
    for name in names:
        for key in registry.resolve(name, batches):
            if key not in {k for _, k in out}:
                out.append((name, key))
    return out


def cmd_backfill(args: argparse.Namespace) -> int:
    """Materialize several snapshots (every batch of each) or batches: in this process one after another, or in
    `--parallel` child processes (each batch its own Dagster run on the shared instance; the warehouse takes
    concurrent partitions). With --parallel, stage 4's cross-batch merges then run one batch at a time in batch order,
    so which of two duplicates in different batches is kept does not depend on which run finished first."""
    import subprocess

    if args.parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {args.parallel}")
    keys = _backfill_keys(args)
    base = [sys.executable, "-m", "danqing_assets.cli", "materialize"]
    extra = (["--through", args.through] if args.through else []) + (["--config", args.config] if args.config else [])

    def run_all(part: str, parallel: int, todo: list[tuple[str, str]]) -> list[str]:
        failed: list[str] = []
        pending = list(todo)
        running: list[tuple[str, subprocess.Popen]] = []
        while pending or running:
            while pending and len(running) < max(1, parallel):
                name, key = pending.pop(0)
                print(f"backfill: starting {key}" + (f" ({part.replace('_', ' ')})" if part != "all" else ""), flush=True)
                cmd = [*base, name, *(["--batch", key] if key != name else []), *extra, "--part", part]
                running.append((key, subprocess.Popen(cmd)))
            key, proc = running.pop(0)
            if proc.wait() != 0:
                failed.append(key)
        return failed

    if args.parallel <= 1:
        failed = run_all("all", 1, keys)
    else:
        from danqing_assets.definitions import defs

        failed = run_all("before_merge", args.parallel, keys)
        if _selection(defs.resolve_asset_graph(), args.through, "merge"):
            failed += run_all("merge", 1, [(n, k) for n, k in keys if k not in failed])
    what = "batches" if any(k != n for n, k in keys) else "snapshots"
    print(f"backfill: {len(keys) - len(failed)} of {len(keys)} {what} succeeded" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Sample crawl -> snapshot `sample` -> every asset -> the funnel."""
    home = _home()
    crawl_dir = home / "sample-crawl"
    started = time.monotonic()
    if not (crawl_dir / "truth.parquet").exists() or args.regenerate:
        cmd_sample_crawl(argparse.Namespace(dir=str(crawl_dir), pages=args.pages, seed=args.seed))
    cmd_snapshot_add(argparse.Namespace(name="sample", source=str(crawl_dir), base_url=None))
    # the bootstrap model (trained once, on a seed crawl no demo snapshot uses) and its evaluation
    ok = run_unpartitioned("models_job", only_stale=True)
    print_evaluation()
    config = _demo_config(crawl_dir)
    good = bootstrap_good_enough()
    if not good or getattr(args, "no_semantic_dedup", False):
        why = ("the bootstrap model is below its targets on the held-out eval sets (retrieval R@1 >= 5x and zero-shot "
               "top-1 >= 3x chance)" if not good else "--no-semantic-dedup")
        print(f"\n{why}: semantic dedup (stage 3) and embedding dedup (stage 4 cross-batch) are OFF for this run "
              "(stated in the assets' metadata and on the release card); stage 4's similarity band still ranks pairs "
              "with the model")
        config["ops"]["visually_diversified_pairs"]["config"]["semantic_dedup"] = False
        config["ops"]["curated_pairs"] = {"config": {"embedding_dedup": False}}
    ok = ok and materialize("sample", run_config=config)
    print_funnel("sample")
    ok = ok and run_unpartitioned("release_job")
    releases = sorted((home / "releases").glob("*/_SUCCESS"))
    if releases:
        print(f"\nrelease: {releases[-1].parent} (dataset card: README.md)")
    if not getattr(args, "skip_pretraining", False):
        ok = ok and run_unpartitioned("pretraining_job")
        print_ablation()
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s; warehouse: {home / 'warehouse.duckdb'}")
    print(f'try: duckdb {home / "warehouse.duckdb"} "select reason, count(*) from rejected_pairs group by all"')
    print("web UI on the same instance: make ui  (http://127.0.0.1:3000)")
    return 0 if ok else 1


def _demo_config(crawl_dir: Path) -> dict:
    """The demo measures each stage against the sample crawl's labels (metadata only: labels never decide)."""
    truth = str(crawl_dir / "truth.parquet")
    return {"ops": {k: {"config": {"truth_path": truth}} for k in
                    ("text_refined_pairs", "visually_diversified_pairs", "aligned_pairs")}}


def cmd_refresh_views(args: argparse.Namespace) -> int:

    names = _warehouse().refresh_views()
    print("views: " + ", ".join(names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="danqing", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample-crawl", help="write a deterministic sample crawl (WARC files + truth.parquet)")
    s.add_argument("dir")
    s.add_argument("--pages", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_sample_crawl)

    snap = sub.add_parser("snapshot", help="register and list crawl snapshots").add_subparsers(dest="action", required=True)
    a = snap.add_parser("add", help="register NAME with a SOURCE: directory, warc.paths.gz (file or URL), or s3://; "
                        "its WARC files are listed now and cut into batches (one partition each)")
    a.add_argument("name")
    a.add_argument("source")
    a.add_argument("--base-url", default=None, help="base that a listing's relative paths are joined to")
    a.add_argument("--allow-foreign-paths", action="store_true",
                   help="use listing lines that are absolute paths or URLs outside the base (default: skipped, counted)")
    a.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="WARC files per batch (default 500, or as registered before); a snapshot that fits in one "
                   "batch is one partition named NAME, a bigger one gets NAME.b00000, NAME.b00001, ...")
    a.add_argument("--replace", action="store_true",
                   help="cut a snapshot of several batches again although its files or batch size changed")
    a.set_defaults(fn=cmd_snapshot_add)
    ls = snap.add_parser("list", help="registered snapshots (and their batches)")
    ls.add_argument("--batches", action="store_true", help="print every batch key")
    ls.set_defaults(fn=cmd_snapshot_list)

    m = sub.add_parser("materialize", help="materialize the chain for snapshot NAME (every batch, one run each)")
    m.add_argument("name", help="a snapshot (all its batches) or one batch's key")
    m.add_argument("--batch", action="append", default=[], metavar="KEY",
                   help="only this batch of NAME (repeatable); keys: `danqing snapshot list --batches`")
    m.add_argument("--through", default=None, help="stop after this asset (it and everything upstream)")
    m.add_argument("--config", default=None, help="YAML run config, e.g. {ops: {warc_files: {config: {max_files: 2}}}}")
    m.add_argument("--part", choices=PARTS, default="all", help=argparse.SUPPRESS)  # backfill's two phases
    m.set_defaults(fn=cmd_materialize)

    mo = sub.add_parser("models", help="train the bootstrap model (when its code or config changed) and evaluate it")
    mo.add_argument("--config", default=None, help="YAML run config for models_job")
    mo.add_argument("--force", action="store_true", help="train and evaluate again even when up to date")
    mo.set_defaults(fn=cmd_models)

    pt = sub.add_parser("pretrain", help="continued pretraining on the newest release and on the raw pairs of the same "
                        "snapshots (same start, recipe, samples), then the ablation report")
    pt.add_argument("--config", default=None, help="YAML run config for pretraining_job, e.g. ops: {siglip_checkpoint: "
                    "{config: {steps: 500}}, raw_baseline_checkpoint: {config: {steps: 500}}}")
    pt.set_defaults(fn=cmd_pretrain)

    rl = sub.add_parser("release", help="write a new release of every curated snapshot (Parquet + WebDataset + card)")
    rl.add_argument("--config", default=None, help="YAML run config for release_job, e.g. ops: {danqing_dataset: "
                    "{config: {root: s3://bucket/releases}}}")
    rl.set_defaults(fn=cmd_release)

    f = sub.add_parser("funnel", help="print rows in/out and drops by reason for snapshot NAME (summed over its batches)")
    f.add_argument("name")
    f.add_argument("--batch", action="append", default=[], metavar="KEY", help="only this batch of NAME (repeatable)")
    f.add_argument("--set", action="append", default=[], metavar="ASSET.FIELD=VALUE",
                   help="what-if: decide again from the stored scores with this threshold (repeatable; the other "
                   "thresholds are the Config defaults), e.g. --set visually_diversified_pairs.min_blur_score=0.4")
    f.set_defaults(fn=cmd_funnel)

    b = sub.add_parser("backfill", help="materialize several snapshots, every batch of each (or --all registered ones)")
    b.add_argument("names", nargs="*", help="snapshots (all their batches) or batch keys")
    b.add_argument("--batch", action="append", default=[], metavar="KEY", help="only this batch of the one snapshot "
                   "named (repeatable)")
    b.add_argument("--all", action="store_true")
    b.add_argument("--through", default=None)
    b.add_argument("--config", default=None)
    b.add_argument("--parallel", type=int, default=1, help="batches materialized at once, each in its own process "
                   "(the cross-batch merges then run one at a time, in batch order)")
    b.set_defaults(fn=cmd_backfill)

    d = sub.add_parser("demo", help="sample crawl -> snapshot 'sample' -> every asset -> funnel")
    d.add_argument("--pages", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--regenerate", action="store_true")
    d.add_argument("--skip-pretraining", action="store_true",
                   help="stop after the release (no continued pretraining, raw baseline or ablation)")
    d.add_argument("--no-semantic-dedup", action="store_true",
                   help="do not decide semantic duplicates (stage 3) or cross-batch embedding duplicates with the "
                        "bootstrap model (on by default when the model meets its eval targets)")
    d.set_defaults(fn=cmd_demo)

    w = sub.add_parser("warehouse", help="warehouse maintenance").add_subparsers(dest="action", required=True)
    w.add_parser("refresh-views", help="(re)create a DuckDB view for every table").set_defaults(fn=cmd_refresh_views)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (KeyError, ValueError, FileNotFoundError) as exc:  # bad names, sources, paths: a message, not a trace
        print(f"danqing: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
