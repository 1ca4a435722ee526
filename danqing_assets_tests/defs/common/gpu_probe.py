"""One run of a probe asset that stands in for a real GPU step: the probe takes the real asset's pool and tags, waits
at a file barrier until the other run is ready too, then holds its step for a few seconds.

    python -m danqing_assets_tests.defs.common.gpu_probe ASSET BARRIER_DIR NAME PEERS in_process|multiprocess

Runs on the instance in $DAGSTER_HOME (the test's, with the project's dagster.yaml)."""

import sys
import time
from pathlib import Path

import dagster as dg

HOLD_S = 3.0


def probe_job(asset_name: str) -> dg.JobDefinition:
    from danqing_assets.definitions import defs

    real = defs.resolve_assets_def(asset_name)

    @dg.asset(name=f"probe_{asset_name}", pool=real.op.pool, tags=real.tags_by_key[real.key])
    def probe(context: dg.AssetExecutionContext) -> None:
        context.log.info(f"holding the step of {asset_name} (pool {real.op.pool!r}) for {HOLD_S} s")
        time.sleep(HOLD_S)

    job = dg.define_asset_job(f"probe_{asset_name}_job", selection=[probe])
    return dg.Definitions(assets=[probe], jobs=[job]).resolve_job_def(job.name)


def _barrier(folder: Path, name: str, peers: int, timeout_s: float = 60.0) -> None:
    (folder / f"{name}.ready").write_text("1")
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob("*.ready"))) < peers:
        if time.monotonic() > deadline:
            raise SystemExit("the other run never became ready")
        time.sleep(0.05)


def _reconstructable_probe() -> dg.JobDefinition:
    import os

    return probe_job(os.environ["DANQING_PROBE_ASSET"])


def main(argv: list[str]) -> int:
    import os

    asset, folder, name, peers, mode = argv
    os.environ["DANQING_PROBE_ASSET"] = asset
    instance = dg.DagsterInstance.get()
    job = probe_job(asset)
    _barrier(Path(folder), name, int(peers))
    if mode == "in_process":  # the path `danqing materialize` takes
        result = job.execute_in_process(instance=instance, tags={"probe": name})
    else:  # the path a launched run takes: the job's own (multiprocess) executor
        result = dg.execute_job(dg.reconstructable(_reconstructable_probe), instance=instance, tags={"probe": name})
    print(result.run_id)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
