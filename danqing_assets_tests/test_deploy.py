"""The ECS deployment files in deploy/: what can be checked without AWS, Postgres or a Docker daemon.

- deploy/dagster.yaml passes Dagster's own instance-config validation; every class it names imports and its config
  validates against that class's schema (Postgres storage against the schema dagster-postgres uses, which lives in
  dagster itself); an instance loads from it (storage swapped for SQLite) with the ECS launcher, the queue limits and
  the one-slot pools the file promises.
- deploy/Dockerfile copies files that exist, pins dagster-postgres to the installed dagster family, and its command,
  run here with the host and port swapped, serves the code location that deploy/workspace.yaml names over gRPC.
"""

import importlib.metadata
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.config import pg_config
from dagster._serdes import class_from_code_pointer, deserialize_value

from danqing_assets_tests.processes import stop_group

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PG_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "secret",
          "DAGSTER_PG_DB": "dagster", "DAGSTER_LOGS_BUCKET": "danqing-logs"}


@pytest.fixture
def deploy_env(monkeypatch):
    for key, value in {**PG_ENV, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)


def _deploy_config() -> dict:
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_instance_config_passes_dagsters_own_validation(deploy_env):
    config, custom_class = dagster_instance_config(str(DEPLOY))
    assert custom_class is None
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def test_instance_config_refuses_a_broken_copy(deploy_env, tmp_path):
    """The validation above can fail: the same file with a misspelled launcher key is refused."""
    broken = _deploy_config()
    broken["run_launcher"]["config"]["run_resource"] = broken["run_launcher"]["config"].pop("run_resources")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(broken))
    launcher = class_from_code_pointer("dagster_aws.ecs", "EcsRunLauncher")
    assert not validate_config(launcher.config_type(), broken["run_launcher"]["config"]).success
    broken["concurrency"]["pools"]["granularity"] = "step"
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(dg.DagsterInvalidConfigError, match="granularity"):
        dagster_instance_config(str(tmp_path))


@pytest.mark.parametrize("section", ["run_launcher", "run_coordinator", "compute_logs"])
def test_every_named_class_imports_and_its_config_validates(deploy_env, section):
    entry = _deploy_config()[section]
    cls = class_from_code_pointer(entry["module"], entry["class"])
    result = process_config(cls.config_type(), entry.get("config") or {})
    assert result.success, [e.message for e in result.errors]
    if section == "compute_logs":
        assert result.value["bucket"] == PG_ENV["DAGSTER_LOGS_BUCKET"]  # the env var was read


def test_postgres_storage_validates_against_the_dagster_postgres_schema(deploy_env, monkeypatch):
    pg = _deploy_config()["storage"]["postgres"]
    result = process_config(pg_config(), pg)
    assert result.success, [e.message for e in result.errors]
    db = result.value["postgres_db"]
    assert {k: db[k] for k in ("hostname", "username", "password", "db_name", "port")} == {
        "hostname": "db.internal", "username": "dagster", "password": "secret", "db_name": "dagster", "port": 5432}
    monkeypatch.delenv("DAGSTER_PG_HOST")
    assert not process_config(pg_config(), pg).success  # an unset env var is an error, not an empty host


def test_instance_loads_with_the_ecs_launcher_the_queue_and_one_gpu_slot(deploy_env, tmp_path):
    """A real instance from the deployment file; only storage is swapped for SQLite (no dagster-postgres here)."""
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.ecs import EcsRunLauncher

    from danqing_assets.defs.common.resources import GPU_POOL

    config = _deploy_config()
    del config["storage"], config["compute_logs"]  # the S3 log manager would contact S3 when it starts
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, EcsRunLauncher)
        assert instance.run_launcher.run_resources == {"cpu": "4096", "memory": "16384"}
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 20
        limits = {(lim["key"], json.dumps(lim.get("value"))): lim["limit"] for lim in queue.tag_concurrency_limits}
        assert limits == {("dagster/backfill", "null"): 10,
                          ("dagster/partition", json.dumps({"applyLimitPerUniqueValue": True})): 1}
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"
        assert GPU_POOL == "gpu"


def test_dockerfile_copies_files_that_exist_and_pins_the_dagster_family():
    steps = _dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    copies = [shlex.split(args) for op, args in steps if op == "COPY"]
    sources = [src for parts in copies for src in parts[:-1] if not src.startswith("--")]
    assert {"requirements.txt", "sql", "danqing_assets", "deploy/dagster.yaml"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "pip install -r requirements.txt" in runs
    pins = dict(re.findall(r"(dagster-[a-z]+)==([\w.]+)", runs))
    assert pins == {"dagster-postgres": importlib.metadata.version("dagster-aws")}  # libraries share one version
    env = " ".join(args for op, args in steps if op == "ENV")
    home = re.search(r"DAGSTER_HOME=(\S+)", env).group(1)
    assert [parts for parts in copies if parts[0] == "deploy/dagster.yaml"] == [["deploy/dagster.yaml",
                                                                                "${DAGSTER_HOME}/dagster.yaml"]]
    assert home.startswith("/")


def _command() -> list[str]:
    return json.loads(dict(_dockerfile())["CMD"])


def test_dockerfile_command_workspace_and_pyproject_agree():
    cmd = _command()
    expose = int(dict(_dockerfile())["EXPOSE"])
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert int(cmd[cmd.index("--port") + 1]) == expose
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # reachable from the webserver's and daemon's tasks
    [location] = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())["load_from"]
    assert location["grpc_server"]["port"] == expose
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert location["grpc_server"]["location_name"] == tool["code_location_name"]
    assert cmd[cmd.index("--module-name") + 1] == tool["module_name"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dockerfile_command_serves_the_code_location_over_grpc(tmp_path):
    """The image's command, with host and port swapped for a local free port, serves the jobs the deployment runs and
    reports the image the ECS launcher will start run tasks from (DAGSTER_CURRENT_IMAGE of the code service)."""
    from dagster._grpc.client import DagsterGrpcClient

    cmd = _command()
    port = _free_port()
    cmd[cmd.index("--host") + 1], cmd[cmd.index("--port") + 1] = "127.0.0.1", str(port)
    cmd[0] = str(Path(sys.executable).parent / "dagster")
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/danqing-assets:test"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DANQING_HOME": str(tmp_path / "home"),
           "DAGSTER_CURRENT_IMAGE": image, "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "grpc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if client.health_check_query() == "SERVING":
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert json.loads(client.get_current_image())["current_image"] == image
        symbols = deserialize_value(client.list_repositories()).repository_symbols
        assert [s.repository_name for s in symbols] == ["__repository__"]
    finally:
        stop_group(proc)
