"""The web UI drives the chain: a real `dagster-webserver` (and the `dagster-daemon` that dequeues its runs, since the
project's dagster.yaml queues runs) on 127.0.0.1, in a fresh DAGSTER_HOME and DANQING_HOME. Everything after setup goes
through the webserver's GraphQL API, as the UI's buttons do: register a snapshot partition, launch `curation_job` for
it (stages 0-3, no CLIP model), wait for the run, and read the stage-1 funnel metadata back, which must agree with the
warehouse tables the run wrote.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from danqing_assets.definitions import defs
from danqing_assets.lib.snapshots import SnapshotRegistry
from danqing_assets.lib.stages import CROSS_MODAL
from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import THROUGH_STAGE3
from danqing_assets_tests.processes import stop_group
from danqing_sample.crawl import write_sample_crawl

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAPSHOT = "webui"
LOCATION = "danqing_assets"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
STARTUP_TIMEOUT_S = 180  # about 8 s idle; a loaded 2-core machine has needed over 90
RUN_TIMEOUT_S = 240

ADD_PARTITION = """
mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionsDefName partitionKey }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on DuplicateDynamicPartitionError { partitionName }
  }
}"""

PARTITION_KEYS = """
query($selector: RepositorySelector!, $name: String!) {
  partitionSetOrError(repositorySelector: $selector, partitionSetName: $name) {
    __typename
    ... on PartitionSet { partitionsOrError { __typename ... on Partitions { results { name } } } }
  }
}"""

MATERIALIZATIONS = """
query($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: 5) {
        runId
        partition
        metadataEntries {
          label
          __typename
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
        }
      }
    }
  }
}"""

RUN_STEPS = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } stepStats { stepKey status } }
  }
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gql(client: DagsterGraphQLClient, query: str, variables: dict) -> dict:
    return client._execute(query, variables)  # the client's own transport; it raises on GraphQL errors


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    """(client, warehouse home, log dir): a webserver and daemon on a fresh instance, with a 12-page crawl registered
    in the warehouse (not yet as a Dagster partition: the test adds that through the API)."""
    root = tmp_path_factory.mktemp("webui")
    home, dagster_home, crawl, logs = root / "home", root / "dagster", root / "crawl", root / "logs"
    for d in (dagster_home, logs):
        d.mkdir()
    write_sample_crawl(crawl, pages=12, files=3, seed=0)
    SnapshotRegistry(home).add(SNAPSHOT, str(crawl))
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")  # what `ensure_dagster_home` does
    env = {**os.environ, "DANQING_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "HF_HUB_OFFLINE": "1",
           "DAGSTER_DISABLE_TELEMETRY": "1"}
    port = _free_port()
    workspace = str(REPO / "workspace.yaml")
    commands = {
        "webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
    }
    procs = {}
    try:
        for name, cmd in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_error = None
        while True:  # up when the code location has loaded and its repository answers
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} exited: {(logs / f'{name}.log').read_text()[-3000:]}"
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).ok:
                    result = _gql(client, PARTITION_KEYS, {"selector": _selector(), "name": "curation_job_partition_set"})
                    if result["partitionSetOrError"]["__typename"] == "PartitionSet":
                        break
            except Exception as exc:  # noqa: BLE001 - not up yet (refused connection, location still loading)
                last_error = exc
            assert time.monotonic() < deadline, f"webserver not up in {STARTUP_TIMEOUT_S}s ({last_error!r}): " + (
                logs / "webserver.log").read_text()[-3000:]
            time.sleep(0.5)
        yield client, home, logs
    finally:
        for proc in procs.values():
            stop_group(proc, timeout=15)


def _selector() -> dict:
    return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}


def _metadata(entries: list[dict]) -> dict:
    return {e["label"]: e.get("intValue", e.get("floatValue")) for e in entries
            if e["__typename"] in ("IntMetadataEntry", "FloatMetadataEntry")}


def test_webui_launches_a_partition_run_and_reports_the_funnel(webui):
    client, home, logs = webui
    selector = _selector()

    added = _gql(client, ADD_PARTITION, {"selector": selector, "name": "snapshots", "key": SNAPSHOT})
    assert added["addDynamicPartition"] == {"__typename": "AddDynamicPartitionSuccess", "partitionsDefName": "snapshots",
                                            "partitionKey": SNAPSHOT}
    keys = _gql(client, PARTITION_KEYS, {"selector": selector, "name": "curation_job_partition_set"})
    assert keys["partitionSetOrError"]["partitionsOrError"]["results"] == [{"name": SNAPSHOT}]

    selection = sorted(THROUGH_STAGE3.resolve(defs.resolve_asset_graph()))
    assert dg.AssetKey("visually_diversified_pairs") in selection
    assert not set(selection) & dg.AssetSelection.groups(CROSS_MODAL.group).resolve(defs.resolve_asset_graph())
    t0 = time.monotonic()
    run_id = client.submit_job_execution(
        "curation_job",
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        run_config={"resources": {"clip": {"config": {"model_name": "none"}}},
                    "execution": {"config": {"in_process": {}}}},
        tags={"dagster/partition": SNAPSHOT},
        asset_selection=[k.path for k in selection],
    )
    status = client.get_run_status(run_id)
    while status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        assert time.monotonic() - t0 < RUN_TIMEOUT_S, f"run {run_id} still {status} after {RUN_TIMEOUT_S}s: " + (
            logs / "daemon.log").read_text()[-3000:]
        time.sleep(1)
        status = client.get_run_status(run_id)
    run = _gql(client, RUN_STEPS, {"runId": run_id})["runOrError"]
    assert status == dg.DagsterRunStatus.SUCCESS, (run, (logs / "daemon.log").read_text()[-3000:])
    assert {"key": "dagster/partition", "value": SNAPSHOT} in run["tags"]
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert steps.get("visually_diversified_pairs") == "SUCCESS", steps
    assert set(steps.values()) == {"SUCCESS"}, steps

    found = _gql(client, MATERIALIZATIONS, {"key": {"path": ["source_selected_pairs"]}, "partitions": [SNAPSHOT]})
    events = found["assetOrError"]["assetMaterializations"]
    assert [(e["runId"], e["partition"]) for e in events] == [(run_id, SNAPSHOT)]
    md = _metadata(events[0]["metadataEntries"])

    wh = Warehouse(home)
    raw = wh.read("raw_pairs", SNAPSHOT)
    kept = wh.read("source_selected_pairs", SNAPSHOT)
    rejected = wh.read("rejected_pairs", SNAPSHOT, stage="source")
    assert kept.height > 0 and rejected.height > 0  # the crawl exercises both sides of the funnel
    assert md["rows_in"] == raw.height
    assert md["rows_out"] == kept.height
    dropped = {label.removeprefix("dropped_"): n for label, n in md.items() if label.startswith("dropped_")}
    assert sum(dropped.values()) == md["rows_in"] - md["rows_out"] == rejected.height
    by_reason = dict(rejected.group_by("reason").len().iter_rows())
    assert {r: n for r, n in dropped.items() if n} == by_reason
