"""The vfusion3d code location: every asset, check, job, schedule and sensor, with resources."""

from __future__ import annotations

import dagster as dg

from vfusion3d_pipeline.assets.renders import renders_3d
from vfusion3d_pipeline.checks import renders_3d_integrity
from vfusion3d_pipeline.resources import default_resources

all_assets_job = dg.define_asset_job("materialize_all", selection=dg.AssetSelection.all(),
                                     description="Materialize the whole asset graph at the configured preset.")

defs = dg.Definitions(
    assets=[renders_3d],
    asset_checks=[renders_3d_integrity],
    jobs=[all_assets_job],
    resources=default_resources(),
)
