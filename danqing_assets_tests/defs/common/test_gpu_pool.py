"""Steps that put a model on the GPU never run at once, across runs: they sit in the `gpu` concurrency pool and the
project's dagster.yaml gives every pool one slot. Tested with two real runs in two processes on a real instance."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from danqing_assets.cli import PROJECT_ROOT
from danqing_assets.definitions import defs
from danqing_assets.defs.common.resources import GPU_POOL


def test_every_step_that_loads_a_model_is_in_the_gpu_pool():
    graph = defs.resolve_asset_graph()
    gpu_steps = set()
    for key in graph.get_all_asset_keys():
        assets_def = defs.resolve_assets_def(key)
        uses_model = "clip" in assets_def.required_resource_keys or (
            assets_def.tags_by_key.get(key, {}).get("danqing/device") == "gpu")
        if uses_model:
            gpu_steps.add(key.to_user_string())
            assert assets_def.op.pool == GPU_POOL, f"{key.to_user_string()} loads a model but is not in the gpu pool"
    assert {"image_scores", "image_embeddings", "cross_modal_scores", "bootstrap_checkpoint", "zero_shot_metrics",
            "retrieval_metrics"} <= gpu_steps


def _step_interval(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    times = {r.dagster_event.event_type_value: r.timestamp for r in instance.all_logs(run_id)
             if r.dagster_event is not None and r.dagster_event.event_type_value in ("STEP_START", "STEP_SUCCESS")}
    return times["STEP_START"], times["STEP_SUCCESS"]


def test_two_runs_never_hold_the_gpu_at_once(tmp_path):
    """Two runs, one in-process (as `danqing materialize` runs) and one through the job's multiprocess executor (as a
    launched run), each with a step standing in for a real GPU asset (its pool and tags), started together."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:  # create its SQLite storage once, not in both runs
        instance.get_runs_count()
        instance.event_log_storage.get_pool_limits()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DANQING_HOME": str(tmp_path / "danqing")}
    procs = [
        subprocess.Popen([sys.executable, "-m", "danqing_assets_tests.defs.common.gpu_probe", asset, str(barrier),
                          asset, "2", mode], env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for asset, mode in (("image_embeddings", "in_process"), ("bootstrap_checkpoint", "multiprocess"))
    ]
    run_ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        run_ids.append(out.strip().splitlines()[-1])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (a0, a1), (b0, b1) = (_step_interval(instance, r) for r in run_ids)
    assert a1 <= b0 or b1 <= a0, f"the GPU steps overlapped: [{a0:.2f}, {a1:.2f}] and [{b0:.2f}, {b1:.2f}]"
    assert not list(Path(home).glob("*.ready"))
