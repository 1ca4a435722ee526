"""The code location: `dagster dev -m danqing_assets.definitions` (workspace.yaml points here)."""

from danqing_assets.defs import build_defs

defs = build_defs()
