"""Incremental synthesis: a cron schedule that requests runs for prompt shards not yet synthesized.

Each tick lists the registered `prompt_shards` partitions, drops those with a `synthetic_videos`
materialization and those with a run of the shard job still queued or in progress, and requests at most
``max_per_tick`` of the rest (lowest shard first). The requested job synthesizes the shard and then filters
it (`filtered_multiview_dataset`), so filtering follows every new synthetic partition.

Settings (read once where definitions are built): VFUSION3D_SYNTH_CRON (default every 30 minutes) and
VFUSION3D_SYNTH_MAX_PER_TICK (default 4).
"""

import os
from dataclasses import dataclass

import dagster as dg

from vfusion3d_pipeline.asset_keys import SYNTHETIC
from vfusion3d_pipeline.partitions import prompt_shards

SHARD_JOB = "synthesize_and_filter_shard"
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED]


@dataclass(frozen=True)
class SynthesisScheduleSettings:
    cron: str = "*/30 * * * *"
    max_per_tick: int = 4

    @classmethod
    def from_env(cls) -> "SynthesisScheduleSettings":
        s = cls(os.environ.get("VFUSION3D_SYNTH_CRON", cls.cron),
                int(os.environ.get("VFUSION3D_SYNTH_MAX_PER_TICK", cls.max_per_tick)))
        if s.max_per_tick < 1:
            raise ValueError(f"VFUSION3D_SYNTH_MAX_PER_TICK must be >= 1, got {s.max_per_tick}")
        return s


def unsynthesized_shards(instance: dg.DagsterInstance, job_name: str = SHARD_JOB) -> list[str]:
    """Registered shards with neither a synthetic_videos materialization nor an active run, in key order."""
    keys = instance.get_dynamic_partitions(prompt_shards.name)
    done = instance.get_materialized_partitions(dg.AssetKey(SYNTHETIC))
    active = {r.tags.get("dagster/partition") for r in
              instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=ACTIVE))}
    return sorted(k for k in keys if k not in done and k not in active)


def build_synthesis_schedule(settings: SynthesisScheduleSettings | None = None,
                             job_name: str = SHARD_JOB) -> dg.ScheduleDefinition:
    settings = settings or SynthesisScheduleSettings()

    @dg.schedule(name="incremental_synthesis", cron_schedule=settings.cron, job_name=job_name,
                 default_status=dg.DefaultScheduleStatus.STOPPED,
                 description=f"Request synthesis + filtering runs for up to {settings.max_per_tick} prompt shard(s) "
                             "not yet synthesized, every tick.")
    def incremental_synthesis(context: dg.ScheduleEvaluationContext):
        todo = unsynthesized_shards(context.instance, job_name)
        if not todo:
            return dg.SkipReason("every registered prompt shard is synthesized or in progress")
        # one run key per (shard, tick): a later tick may retry a shard whose run failed
        tick = context.scheduled_execution_time.isoformat()
        return [dg.RunRequest(run_key=f"{k}@{tick}", partition_key=k,
                              tags={"vfusion3d/trigger": "incremental_synthesis"})
                for k in todo[:settings.max_per_tick]]

    return incremental_synthesis
