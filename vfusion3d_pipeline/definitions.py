"""The vfusion3d code location: every asset, check, job, schedule and sensor, with resources."""

from __future__ import annotations

import dagster as dg

from vfusion3d_pipeline.assets.ablation import ablation_report
from vfusion3d_pipeline.assets.evaluation import eval_heldout_disjoint, eval_metrics
from vfusion3d_pipeline.assets.filtering import filtered_multiview_dataset, quality_models
from vfusion3d_pipeline.assets.lrm import lrm_3d_only, lrm_finetuned, lrm_pretrained
from vfusion3d_pipeline.assets.prompts import prompt_set
from vfusion3d_pipeline.assets.renders import renders_3d, source_objects
from vfusion3d_pipeline.assets.video import synthetic_videos, video_model
from vfusion3d_pipeline.automation import incremental_synthesis
from vfusion3d_pipeline.checks import (
    filtered_multiview_integrity,
    prompt_set_integrity,
    renders_3d_integrity,
    synthetic_videos_integrity,
)
from vfusion3d_pipeline.recovery import recover_dead_runs_sensor
from vfusion3d_pipeline.resources import default_resources
from vfusion3d_pipeline.sensors import PromptSourceSettings, build_prompt_source_sensor

# The whole graph is one asset backfill (the UI's *Materialize all*, all partitions; `make tiny` launches the same
# through GraphQL, whole_graph.py) once the roots have registered the dynamic partitions it runs over: this job.
register_shards_job = dg.define_asset_job(
    "register_shards", selection=dg.AssetSelection.assets(source_objects, prompt_set),
    description="List the 3D source objects and build the prompt set: registers the object_shards and prompt_shards "
                "partitions. Then *Materialize all* (all partitions) on the asset graph runs the whole graph as one "
                "backfill.")
list_objects_job = dg.define_asset_job("list_source_objects", selection=dg.AssetSelection.assets(source_objects),
                                      description="List (or grow) the 3D source objects and register their "
                                                  "object_shards partitions.")
renders_job = dg.define_asset_job("renders", selection=dg.AssetSelection.assets(renders_3d),
                                  description="Render one object shard (partition) of source_objects into "
                                              "renders_3d and check it; backfill to render them all.")
synthesis_job = dg.define_asset_job("synthesize_prompt_shard", selection=dg.AssetSelection.assets(synthetic_videos),
                                    description="Synthesize the orbit videos of one prompt shard (partition).")
engine_shard_job = dg.define_asset_job(
    "synthesize_and_filter_shard", selection=dg.AssetSelection.assets(synthetic_videos, filtered_multiview_dataset),
    description="Synthesize one prompt shard's videos, then filter them into posed multi-view samples.")
lrm_arms_job = dg.define_asset_job(
    "lrm_arms", selection=dg.AssetSelection.assets(lrm_3d_only, lrm_pretrained, lrm_finetuned, eval_metrics),
    description="Retrain the graph's three LRM arms from the current data: 3D only (lrm_3d_only), synthetic only "
                "(lrm_pretrained) and synthetic then 3D (lrm_finetuned), then score them all (eval_metrics). Any "
                "preset: set resources.preset.config.name in the launchpad.")
ablation_job = dg.define_asset_job(
    "ablation", selection=dg.AssetSelection.assets(ablation_report),
    description="The data-source ablation in miniature (ablation_report, docs/ablation.md): disjoint populations, "
                "a video prior on unposed clips, synthetic data at several doses, compute-matched LRM arms over "
                "seeds and an oracle arm; about 45 min at preset mini on 2 CPU cores, resumable.")
prompt_set_job = dg.define_asset_job("build_prompt_set", selection=dg.AssetSelection.assets(prompt_set),
                                     description="Build or grow (append-only) the prompt set.")

ASSETS = [source_objects, renders_3d, prompt_set, video_model, quality_models, synthetic_videos,
          filtered_multiview_dataset, lrm_3d_only, lrm_pretrained, lrm_finetuned, eval_metrics, ablation_report]
ASSET_CHECKS = [renders_3d_integrity, prompt_set_integrity, synthetic_videos_integrity, filtered_multiview_integrity,
                eval_heldout_disjoint]


def build_definitions(resources: dict[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """The code location with the given resources (default: from the environment, see default_resources)."""
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=[register_shards_job, list_objects_job, renders_job, synthesis_job, engine_shard_job, prompt_set_job,
              lrm_arms_job, ablation_job],
        sensors=[build_prompt_source_sensor(PromptSourceSettings.from_env()), recover_dead_runs_sensor,
                 incremental_synthesis],
        resources=resources or default_resources(),
    )


defs = build_definitions()
