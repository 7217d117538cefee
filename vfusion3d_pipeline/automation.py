"""Declarative automation of the data engine: incremental synthesis of new prompt shards.

``synthetic_videos`` carries ``SYNTHESIZE_NEW_SHARDS``: a prompt shard partition with no synthetic videos (one
that appears when ``prompt_set`` is appended to, e.g. by ``prompt_source_sensor`` when the prompt file grows, or
one left unsynthesized when the sensor is switched on) is requested once ``video_model`` and ``prompt_set`` are
materialized and not being rematerialized; partitions already synthesized, in flight, or whose last run failed
(after the instance's run retries, dagster.yaml) are left alone. Its runs take the ``gpu`` pool like any other
synthesis. ``filtered_multiview_dataset`` is ``eager``: it filters a shard as soon
as that shard's videos (or ``quality_models``) are updated. Nothing else in the graph is automated: retraining the
LRMs stays a user's decision (the ``lrm_arms`` job).

The sensor ``incremental_synthesis`` evaluates both conditions; it is off until switched on in the UI
(*Automation* -> ``incremental_synthesis`` -> toggle on), and so is ``prompt_source_sensor``
(VFUSION3D_PROMPT_SOURCE: the prompt file it watches).
"""

import dagster as dg

from vfusion3d_pipeline.asset_keys import FILTERED, SYNTHETIC

# Not on_missing(): that only sees partitions added after the sensor is switched on (a shard registered before would
# wait for a manual backfill). A failed partition is retried by run retries, then left to the user (no request loop).
SYNTHESIZE_NEW_SHARDS = (dg.AutomationCondition.missing() & ~dg.AutomationCondition.in_progress()
                         & ~dg.AutomationCondition.execution_failed() & ~dg.AutomationCondition.any_deps_missing()
                         & ~dg.AutomationCondition.any_deps_in_progress()).with_label("unsynthesized shard")
FILTER_UPDATED_SHARDS = dg.AutomationCondition.eager()

incremental_synthesis = dg.AutomationConditionSensorDefinition(
    "incremental_synthesis", target=dg.AssetSelection.assets(SYNTHETIC, FILTERED), minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Synthesize every prompt shard that has no synthetic videos (synthetic_videos) and filter every "
                "updated one (filtered_multiview_dataset: eager). Switch on for incremental synthesis.")
