"""Everything Dagster loads. Reading the modules top to bottom is reading the DAG:
ingest -> s1_source_selection -> s2_text_refinement -> image_acquisition -> s3_visual_diversification -> ... (later stages join as they land)."""

import dagster as dg

from danqing_assets.defs import (
    automation,
    image_acquisition,
    ingest,
    s1_source_selection,
    s2_text_refinement,
    s3_visual_diversification,
)
from danqing_assets.defs.resources import default_resources

ASSET_MODULES = [ingest, s1_source_selection, s2_text_refinement, image_acquisition, s3_visual_diversification]


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[automation.curation_job],
        sensors=[automation.new_crawl_snapshots],
        resources=default_resources(),
    )
