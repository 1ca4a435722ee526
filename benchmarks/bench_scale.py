"""Benchmark stages 1 and 2 on one large partition: peak memory and wall time of each per-pair asset, and pairs/s.

    .venv/bin/python benchmarks/bench_scale.py                                  # 100 k, 1 M, 5 M pairs
    .venv/bin/python benchmarks/bench_scale.py --sizes 100k,1M --base /tmp/base # also the code at /tmp/base
    git worktree add /tmp/base <rev>                                            # a checkout to compare against

The sample crawl (`danqing_sample`, seed 0, default size) is generated and its `raw_pairs` extracted once; they are
then replicated to N pairs in one partition, as the issue measured: replica r of a pair gets its own pair_id,
warc_file and image_url; its caption is the original one (30 %) or, when the original has Chinese text, a generated web
alt text (70 %, the word banks of `bench_text.py`: products, travel, food, news, emoji, Traditional script, site
suffixes, spam, about a quarter exact repeats), so captions are mostly distinct and the bad ones stay bad.

Each asset runs alone in a fresh child process (`dg.materialize` of that asset, the code under test on PYTHONPATH),
in DAG order: source_scores, source_selected_pairs, text_scores, text_refined_pairs. Reported per asset:
- peak RSS: the largest sum of VmRSS over the child and every process under it (scoring workers), sampled every
  0.1 s, i.e. what the step holds on the machine, workers included; and the step process's own VmHWM;
- time: wall seconds of the `materialize` call (workers' start included), and CPU seconds of the step process and
  its workers (the whole child process: imports and Dagster's own work included).
Stage 1 + 2 pairs/s = raw pairs / the sum of the four times. `--base DIR` runs the same on another checkout (the code
before this change); `--workers 1,2` runs this checkout with 1 and with 2 scoring workers (item 3 of the issue).

The machine is shared (2 cores, other work running): compare ratios within one run, not across runs.

Measured here (helper session, 2 shared cores, load average 3-5), one run with the base = the code before commit
72b7548 (default workers = 2; peak = step + workers; same kept tables and ledger parts, row for row):

| pairs | code | source_scores | source_selected_pairs | text_scores | text_refined_pairs | pairs/s | pairs/CPU-s |
|---|---|---|---|---|---|---|---|
| 1 M | base | 1.04 GB, 109 s | 1.39 GB, 26 s | 1.69 GB, 60 s | 1.71 GB, 92 s | 3486 | 4287 |
| 1 M | this | 1.05 GB, 76 s | 0.93 GB, 34 s | 1.70 GB, 51 s | 1.06 GB, 161 s | 3099 | 3902 |

text_refined_pairs costs 78 -> 108 CPU s (the near-duplicate index's digest pass and Arrow look-ups). Still above the
issue's 1.5 GB: text_scores with 2 workers (a worker holds jieba, OpenCC, lingua and the classifier, ~0.5 GB).
An earlier run (base 9287e49, load ~2): 1 M base 1.95 / 2.94 / 2.09 / 4.66 GB.

Then (lead session, load 1-2, after text_scores' scratch join and stage 2's one-thread positional DuckDB; no base):
1 M 1.05 / 0.91 / 1.39 / 1.02 GB (73 / 19 / 38 / 69 s); 5 M 1.34 / 1.09 / 1.63 / 2.37 GB (260 / 139 / 171 / 340 s).
Above 1.5 GB at 5 M: text_refined_pairs (the caption near-duplicate index of 4.2 M passing captions) and text_scores.
Same run with --base 9287e49 at 1 M (load 1.2-1.4): base 1.96 / 2.93 / 2.11 / 4.67 GB, 3820 pairs/s; this 1.04 / 0.90 /
1.38 / 1.02 GB, 6371 pairs/s: 1.67x.

Then (lead session, load 1-2, after the caption index streamed its captions, spilled its band keys and computed its
MinHash keys on every core, DuckDB released its cache before scoring, the summary's quantiles were one aggregate a
column, and lingua ran in low-accuracy mode): `--sizes 1M --base 9287e49` base 1.99 / 2.96 / 2.06 / 4.66 GB (89 / 5 /
76 / 70 s), 4173 pairs/s; this 1.04 / 0.89 / 1.08 / 1.06 GB (36 / 18 / 22 / 52 s), 7796 pairs/s: 1.87x; same kept
table and ledger part at 1 M as before the change. 5 M, stage 2 alone: text_scores 1.32 GB, 104 s; text_refined_pairs
1.34 GB, 239 s (1.48 GB before the index gave its freed memory back, lib/memory.trim); stage 1 (while make demo
trained on the same cores) source_scores 1.35 GB, 261 s, source_selected_pairs 1.08 GB, 296 s. Every step is under
1.5 GB at 5 M.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ASSETS = ("source_scores", "source_selected_pairs", "text_scores", "text_refined_pairs")


# ------------------------------------------------------------------------------------------------------ the child


def _child(code: str, home: str, partition: str, asset: str, config_json: str) -> None:
    """Materialize one asset of one partition with the code at `code`; print its wall time as JSON."""
    sys.path.insert(0, code)
    import logging

    import dagster as dg

    logging.disable(logging.WARNING)
    from danqing_assets.definitions import defs
    from danqing_assets.defs.common.partitions import snapshot_partitions
    from danqing_assets.defs.common.resources import ClipModelResource, default_resources

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(snapshot_partitions.name, [partition])
    resources = default_resources(home)
    resources["clip"] = ClipModelResource(model_name="none")
    config = json.loads(config_json)
    t0 = time.perf_counter()
    result = dg.materialize(assets=list(defs.assets), selection=[asset], partition_key=partition, instance=instance,
                            resources=resources, run_config={"ops": {asset: {"config": config}}} if config else {},
                            raise_on_error=True)
    wall = time.perf_counter() - t0
    import resource

    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    md = {"cpu_s": cpu}
    for mat in result.asset_materializations_for_node(asset):
        for k in ("rows_out", "rows_in", "workers", "chunks"):
            if k in mat.metadata:
                md[k] = mat.metadata[k].value
    print("RESULT " + json.dumps({"wall_s": wall, **md}), flush=True)


# ------------------------------------------------------------------------------------------------------ measuring


def _tree_rss_kb(root: int) -> tuple[int, int]:
    """(sum of VmRSS over `root` and its descendants, VmHWM of root) in kB."""
    total, hwm, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                    elif line.startswith("VmHWM:") and pid == root:
                        hwm = int(line.split()[1])
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total, hwm


def run_asset(code: Path, home: Path, partition: str, asset: str, config: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "DANQING_HOME": str(home)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(code), str(home), partition, asset,
           json.dumps(config)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(code))
    peak = {"tree": 0, "hwm": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            tree, hwm = _tree_rss_kb(proc.pid)
            peak["tree"] = max(peak["tree"], tree)
            peak["hwm"] = max(peak["hwm"], hwm)
            done.wait(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{asset} with {code} failed ({proc.returncode}):\n{err[-3000:]}")
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    res.update(peak_tree_gb=peak["tree"] / 2**20, peak_main_gb=peak["hwm"] / 2**20)
    return res


# ------------------------------------------------------------------------------------------------------ the data


def sample_raw_pairs(work: Path) -> Path:
    """The sample crawl's raw_pairs (generated and extracted once under `work`)."""
    out = work / "sample_raw_pairs.parquet"
    if out.exists():
        return out
    sys.path.insert(0, str(REPO))
    import dagster as dg

    from danqing_assets.definitions import defs
    from danqing_assets.defs.common.partitions import snapshot_partitions
    from danqing_assets.defs.common.resources import ClipModelResource, default_resources
    from danqing_assets.lib.snapshots import SnapshotRegistry
    from danqing_assets.lib.warehouse import Warehouse
    from danqing_sample.crawl import write_sample_crawl

    crawl, home = work / "crawl", work / "sample-home"
    crawl.mkdir(parents=True, exist_ok=True)
    write_sample_crawl(crawl, seed=0)
    SnapshotRegistry(home).add("sample", str(crawl))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(snapshot_partitions.name, ["sample"])
    resources = default_resources(str(home))
    resources["clip"] = ClipModelResource(model_name="none")
    dg.materialize(assets=list(defs.assets), selection=["warc_files", "raw_pairs", "warc_image_captures"], partition_key="sample",
                   instance=instance, resources=resources, raise_on_error=True)
    Warehouse(home).read("raw_pairs", "sample").write_parquet(out)
    return out


def replicate(sample: Path, n: int, home: Path, partition: str) -> int:
    """raw_pairs of `partition` under `home`: the sample's pairs replicated to `n` rows (see the module docstring)."""
    import polars as pl
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE))
    from bench_text import _caption

    path = home / "tables" / "raw_pairs" / f"snapshot={partition}" / "part-0.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == n:
        return n
    path.parent.mkdir(parents=True, exist_ok=True)
    base = pl.read_parquet(sample).with_columns(pl.lit(partition).alias("snapshot"))
    han = base["caption"].fill_null("").str.contains(r"\p{Han}").to_list()
    tmp = path.with_suffix(".tmp")
    writer = None
    written, r = 0, 0
    while written < n:
        rows = base.head(min(base.height, n - written))
        rng = random.Random(r)
        if r:
            captions = [(_caption(rng) if h and rng.random() < 0.7 else c) for c, h in
                        zip(rows["caption"].to_list(), han)]
            ids = [hashlib.sha256(f"{r}:{p}".encode()).hexdigest()[:16] for p in rows["pair_id"].to_list()]
            rows = rows.with_columns(
                pl.Series("pair_id", ids), pl.Series("caption", captions, dtype=pl.String),
                (pl.lit(f"r{r:06d}-") + pl.col("warc_file")).alias("warc_file"),
                (pl.col("image_url") + pl.lit(f"#r{r}")).alias("image_url"),
            )
        table = rows.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
        writer.write_table(table)
        written += rows.height
        r += 1
    writer.close()
    os.replace(tmp, path)
    return n


# ------------------------------------------------------------------------------------------------------ main


def _size(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "km" else s) * mult)


def _fmt(n: int) -> str:
    return f"{n // 1_000_000} M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000} k"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _child(*sys.argv[2:7])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100k,1M,5M", help="pairs in the one partition, comma-separated")
    ap.add_argument("--base", type=Path, help="a checkout of the code to compare against (e.g. a git worktree)")
    ap.add_argument("--base-sizes", help="sizes to run the base code on (default: --sizes)")
    ap.add_argument("--workers", default="", help="run this checkout with each of these scoring worker counts, e.g. 1,2 "
                    "(default: once, one worker per core)")
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout measured as 'this' (default: this one)")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "scale")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [_size(s) for s in args.sizes.split(",")]
    base_sizes = [_size(s) for s in args.base_sizes.split(",")] if args.base_sizes else sizes
    sample = sample_raw_pairs(args.work)

    runs: list[tuple[str, Path, dict]] = [("this", args.code, {})] if not args.workers else []
    for w in [int(x) for x in args.workers.split(",") if x]:
        runs.append((f"this, workers={w}", args.code, {"source_scores": {"workers": w}, "text_scores": {"workers": w}}))
    results = []
    for n in sizes:
        for label, code, cfg in ([("base", args.base, {})] if args.base and n in base_sizes else []) + runs:
            home = args.work / f"home-{label.replace(' ', '').replace(',', '-').replace('=', '')}"
            partition = f"scale{n}"
            replicate(sample, n, home, partition)
            row = {"label": label, "pairs": n, "assets": {}}
            for asset in ASSETS:
                res = run_asset(code, home, partition, asset, cfg.get(asset, {}))
                row["assets"][asset] = res
                print(f"{_fmt(n):>5} {label:18s} {asset:22s} {res['wall_s']:8.1f} s  cpu {res['cpu_s']:7.1f} s  peak {res['peak_tree_gb']:.2f} GB"
                      f" (step process {res['peak_main_gb']:.2f} GB)  rows_out {res.get('rows_out')}", flush=True)
            total = sum(a["wall_s"] for a in row["assets"].values())
            cpu = sum(a["cpu_s"] for a in row["assets"].values())
            row["pairs_per_s"], row["pairs_per_cpu_s"] = n / total, n / cpu
            print(f"{_fmt(n):>5} {label:18s} stage 1 + 2: {total:.1f} s, {row['pairs_per_s']:.0f} pairs/s; "
                  f"{cpu:.1f} CPU s, {row['pairs_per_cpu_s']:.0f} pairs/CPU-s", flush=True)
            results.append(row)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))

    print("\npeak RSS (step + workers), wall time")
    print("| pairs | code | " + " | ".join(ASSETS) + " | stage 1+2 pairs/s | pairs/CPU-s |")
    print("|---|---|" + "---|" * (len(ASSETS) + 2))
    for row in results:
        cells = [f"{row['assets'][a]['peak_tree_gb']:.2f} GB, {row['assets'][a]['wall_s']:.0f} s" for a in ASSETS]
        print(f"| {_fmt(row['pairs'])} | {row['label']} | " + " | ".join(cells)
              + f" | {row['pairs_per_s']:.0f} | {row['pairs_per_cpu_s']:.0f} |")
    by = {(r["pairs"], r["label"]): r["pairs_per_s"] for r in results}
    for n in sizes:
        ref = by.get((n, "base"))
        for label in [r[0] for r in runs]:
            if ref and (n, label) in by:
                print(f"{_fmt(n)}: {label} / base pairs/s = {by[(n, label)] / ref:.2f}x")
        one, two = by.get((n, "this, workers=1")), by.get((n, "this, workers=2"))
        if one and two:
            print(f"{_fmt(n)}: workers=2 / workers=1 pairs/s = {two / one:.2f}x")


if __name__ == "__main__":
    main()
