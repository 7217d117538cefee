"""Sensor: when the prompt source file grows (its sha256 changes), request a `prompt_set` run, which appends new
shards and registers them as `prompt_shards` partitions. It also registers any shard of the published prompt set
that is not yet a partition (e.g. after restoring an instance).

Settings (read once where definitions are built): VFUSION3D_PROMPT_SOURCE (the .txt/.csv/.parquet file; the
sensor skips while unset) and VFUSION3D_PROMPT_TEMPLATES (template prompts to include, default 0).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from vfusion3d_core.data.manifest import sha256_file
from vfusion3d_pipeline.asset_keys import PROMPT_SET
from vfusion3d_pipeline.partitions import prompt_shards
from vfusion3d_pipeline.resources import ArtifactStoreResource

PROMPT_JOB = "build_prompt_set"


@dataclass(frozen=True)
class PromptSourceSettings:
    source_file: str | None = None
    template_count: int = 0
    interval_s: int = 60

    @classmethod
    def from_env(cls) -> "PromptSourceSettings":
        return cls(os.environ.get("VFUSION3D_PROMPT_SOURCE") or None,
                   int(os.environ.get("VFUSION3D_PROMPT_TEMPLATES", 0)))


def published_shards(artifacts: ArtifactStoreResource) -> list[str]:
    version = artifacts.store().latest(PROMPT_SET)
    if version is None:
        return []
    return sorted(f.path.removeprefix("shards/").removesuffix(".parquet") for f in version.manifest.files
                  if f.path.startswith("shards/"))


def build_prompt_source_sensor(settings: PromptSourceSettings | None = None,
                               job_name: str = PROMPT_JOB) -> dg.SensorDefinition:
    settings = settings or PromptSourceSettings()

    @dg.sensor(name="prompt_source_sensor", job_name=job_name, minimum_interval_seconds=settings.interval_s,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Rebuild prompt_set (append-only) when the prompt source file changes; register "
                           "published shards that are not yet prompt_shards partitions.")
    def prompt_source_sensor(context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource):
        known = set(context.instance.get_dynamic_partitions(prompt_shards.name))
        missing = [k for k in published_shards(artifacts) if k not in known]
        requests = [prompt_shards.build_add_request(missing)] if missing else []
        skip = None
        if settings.source_file is None:
            skip = "no prompt source configured (VFUSION3D_PROMPT_SOURCE)"
        elif not Path(settings.source_file).is_file():
            skip = f"{settings.source_file} does not exist"
        else:
            digest = sha256_file(settings.source_file)
            if digest == context.cursor:
                skip = "prompt source unchanged"
        if skip is not None:
            return dg.SensorResult(dynamic_partitions_requests=requests) if requests else dg.SkipReason(skip)
        path = Path(settings.source_file)
        config = {"source_file": str(path), "template_count": settings.template_count}
        run = dg.RunRequest(run_key=f"prompt-source-{digest[:16]}",
                            run_config={"ops": {PROMPT_SET: {"config": config}}},
                            tags={"vfusion3d/prompt_source_sha256": digest})
        return dg.SensorResult(run_requests=[run], dynamic_partitions_requests=requests, cursor=digest)

    return prompt_source_sensor
