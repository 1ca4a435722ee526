"""The DAG's shape is a reviewed artefact: every asset's key, deps, group, partitioning, code_version and concurrency
pools are snapshotted in asset_specs.json, so an accidental change shows up as a diff. After an intended change:
`UPDATE_ASSET_SPECS=1 pytest danqing_assets_tests/defs/test_definitions.py`."""

import json
import os
from pathlib import Path

import dagster as dg

from danqing_assets.definitions import defs

SNAPSHOT = Path(__file__).with_name("asset_specs.json")


def current_specs() -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        out[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "code_version": node.code_version,
            "partitions": getattr(node.partitions_def, "name", None),
            "checks": sorted(c.name for c in node.check_keys),
            "pools": sorted(node.pools),
        }
    return out


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("curation_job") is not None


def test_every_asset_has_a_code_version_and_description():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.code_version, f"{key} has no code_version"
        assert node.description, f"{key} has no description (docstrings show in the UI)"


def test_asset_specs_snapshot():
    specs = current_specs()
    if os.environ.get("UPDATE_ASSET_SPECS"):
        SNAPSHOT.write_text(json.dumps(specs, indent=2, ensure_ascii=False) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert specs == expected, "the DAG changed; review and regenerate with UPDATE_ASSET_SPECS=1"
