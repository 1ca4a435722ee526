"""Everything Dagster loads. The stage modules are named after their groups in the stage registry
(`danqing_assets/lib/stages.py`), so they sort in pipeline order: s0_ingest -> s1_source_selection ->
s2_text_refinement -> s3_image_acquisition -> s3_visual_diversification -> ... The plumbing (resources, partitions,
metadata, how a stage ends, automation) sits apart, in `defs/common/`."""

import importlib

import dagster as dg

from danqing_assets.defs.common import automation
from danqing_assets.defs.common.resources import default_resources
from danqing_assets.defs.common.run_config import validated_executor
from danqing_assets.lib.stages import PIPELINE


def asset_modules() -> list:
    """The module of every stage that defines assets, in pipeline order."""
    return [importlib.import_module(f"danqing_assets.defs.{s.group}") for s in PIPELINE if s.assets]


def build_defs() -> dg.Definitions:
    modules = asset_modules()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        jobs=[automation.curation_job, automation.models_job, automation.release_job, automation.pretraining_job],
        sensors=[automation.new_crawl_snapshots],
        resources=default_resources(),
        executor=validated_executor,  # the whole run config is checked before the first step
    )
