"""Incremental synthesis as a user runs it: a real `dagster dev` (webserver + daemon), the `incremental_synthesis`
automation sensor switched on through the UI's GraphQL API (the toggle in *Automation*), then the prompt source
grows: the daemon synthesizes and filters exactly the new prompt shard, in runs its sensor requested, while the
shards synthesized before are not run again."""

import time

import dagster as dg
import pytest
from pipeline_utils import VIDEO_MICRO, dagster_dev, materialize_renders_for, pipeline_env

from vfusion3d_pipeline.assets.filtering import filtered_multiview_dataset, quality_models
from vfusion3d_pipeline.assets.prompts import prompt_set
from vfusion3d_pipeline.assets.video import synthetic_videos, video_model
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource
from vfusion3d_pipeline.whole_graph import DagsterGraphQL

pytestmark = pytest.mark.slow  # dagster dev's daemon ticks (minutes)

START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
PROMPTS = ["a red box", "a glossy blue sphere", "a green cone", "a striped purple ring"]
SHARDS = ["shard-000000", "shard-000001"]
NEW = "shard-000002"


def materialized_by(instance: dg.DagsterInstance, asset: str, partition: str) -> dg.DagsterRun | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1).records
    return instance.get_run_by_id(records[0].run_id) if records else None


def wait_until(condition, what: str, timeout_s: float = 420) -> None:
    """Until ``condition()`` holds (the daemon's tick and runs are the events waited for)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s:.0f} s"
        time.sleep(1)


def test_automation_synthesizes_a_new_prompt_shard(tmp_path, monkeypatch) -> None:
    env = pipeline_env(tmp_path)
    env.update(VFUSION3D_DEVICE="cpu", VFUSION3D_PRECISION="fp32")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    root = env["VFUSION3D_ARTIFACT_ROOT"]
    resources = {"artifacts": ArtifactStoreResource(root=root), "preset": PresetResource(name="tiny"),
                 "mlflow": MLflowResource(artifact_root=root),
                 "compute": ComputeResource(device="cpu", precision="fp32")}
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(PROMPTS) + "\n")
    prompt_config = {"ops": {"prompt_set": {"config": {"source_file": str(src), "template_count": 0,
                                                        "shard_size": 2}}}}
    materialize_renders_for(env)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        base = dg.materialize([video_model, quality_models, prompt_set], instance=instance, resources=resources,
                              run_config={"ops": {**prompt_config["ops"], "video_model": {"config": {
                                  "eval_count": 2, "overrides": VIDEO_MICRO}}}})
        assert base.success
        for key in SHARDS:  # synthesized before the sensor is on (e.g. by the whole graph's backfill)
            assert dg.materialize([synthetic_videos, filtered_multiview_dataset], instance=instance,
                                  resources=resources, partition_key=key).success
        before = {k: materialized_by(instance, "synthetic_videos", k).run_id for k in SHARDS}

        with dagster_dev(env, tmp_path / "dagster_dev.log") as port:
            client = DagsterGraphQL(f"http://127.0.0.1:{port}")
            client.wait_loaded()
            selector = {"repositoryLocationName": "vfusion3d_pipeline.definitions",
                        "repositoryName": "__repository__", "sensorName": "incremental_synthesis"}
            started = client(START_SENSOR, {"selector": selector})["startSensor"]
            assert started["__typename"] == "Sensor" and started["sensorState"]["status"] == "RUNNING", started

            src.write_text(src.read_text() + "a dotted orange pyramid\na checkered black capsule\n")
            assert dg.materialize([prompt_set], instance=instance, resources=resources,
                                  run_config=prompt_config).success
            assert instance.get_dynamic_partitions("prompt_shards") == [*SHARDS, NEW]

            def filtered_new() -> bool:  # materialized, by a run that has ended
                run = materialized_by(instance, "filtered_multiview_dataset", NEW)
                return run is not None and run.is_finished

            wait_until(filtered_new, f"filtered_multiview_dataset[{NEW}] by automation")
            for asset in ("synthetic_videos", "filtered_multiview_dataset"):
                run = materialized_by(instance, asset, NEW)
                assert run.status == dg.DagsterRunStatus.SUCCESS
                assert run.tags.get("dagster/sensor_name") == "incremental_synthesis", (asset, run.tags)
            # the shards synthesized before were left alone
            assert {k: materialized_by(instance, "synthetic_videos", k).run_id for k in SHARDS} == before
