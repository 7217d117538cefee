"""The data engine at micro size with a real Dagster instance in a temporary DAGSTER_HOME: prompt set ->
schedule requests exactly the unsynthesized shards -> synthesis + filtering of two partitions -> the prompt
source grows -> the sensor's run appends shards -> exactly the new partitions appear."""

import datetime
import json

import dagster as dg
import pytest
from pipeline_utils import VIDEO_MICRO, materialize_renders

from vfusion3d_core.data import ArtifactStore, iter_samples
from vfusion3d_pipeline.assets.filtering import filtered_multiview_dataset, quality_models
from vfusion3d_pipeline.assets.prompts import prompt_set
from vfusion3d_pipeline.assets.video import synthetic_videos, video_model
from vfusion3d_pipeline.checks import filtered_multiview_integrity, prompt_set_integrity, synthetic_videos_integrity
from vfusion3d_pipeline.definitions import engine_shard_job
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource
from vfusion3d_pipeline.schedules import SynthesisScheduleSettings, build_synthesis_schedule
from vfusion3d_pipeline.sensors import PromptSourceSettings, build_prompt_source_sensor

pytestmark = pytest.mark.slow  # the data engine end to end through Dagster (minutes)

PROMPTS = ["a red box", "a glossy blue sphere", "a green cone next to a yellow torus", "a striped purple ring",
           "a metallic white cylinder"]


def _tick_context(instance: dg.DagsterInstance, schedule: dg.ScheduleDefinition, root) -> dg.ScheduleEvaluationContext:
    repo = dg.Definitions(assets=[synthetic_videos, filtered_multiview_dataset], jobs=[engine_shard_job],
                          schedules=[schedule], resources=_resources(root)).get_repository_def()
    return dg.build_schedule_context(instance=instance, repository_def=repo,
                                     scheduled_execution_time=datetime.datetime.now(datetime.UTC))


def _resources(root) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def test_schedule_synthesis_filtering_and_growth(tmp_path) -> None:
    root = tmp_path / "artifacts"
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(PROMPTS) + "\n")
    prompt_config = {"source_file": str(src), "template_count": 0, "shard_size": 2}
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        materialize_renders(_resources(root), instance)
        base = dg.materialize(
            [video_model, prompt_set, quality_models, prompt_set_integrity], instance=instance,
            resources=_resources(root),
            run_config={"ops": {"video_model": {"config": {"eval_count": 2, "overrides_json": json.dumps(VIDEO_MICRO)}},
                                "prompt_set": {"config": prompt_config}}})
        assert base.success
        qm = base.asset_materializations_for_node("quality_models")[0].metadata
        assert 0.0 <= qm["heldout_accuracy"].value <= 1.0 and qm["metrics"].value["heldout_videos"] == 2 * 5
        keys = instance.get_dynamic_partitions("prompt_shards")
        assert keys == ["shard-000000", "shard-000001", "shard-000002"]

        schedule = build_synthesis_schedule(SynthesisScheduleSettings(max_per_tick=2))
        tick = schedule.evaluate_tick(_tick_context(instance, schedule, root))
        assert [r.partition_key for r in tick.run_requests] == ["shard-000000", "shard-000001"]

        store = ArtifactStore(root)
        for key in ["shard-000000", "shard-000001"]:
            result = dg.materialize([synthetic_videos, filtered_multiview_dataset, synthetic_videos_integrity,
                                     filtered_multiview_integrity], partition_key=key, instance=instance,
                                    resources=_resources(root))
            assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
            mat = result.asset_materializations_for_node("filtered_multiview_dataset")[0].metadata
            version = store.latest("filtered_multiview_dataset", key)
            assert mat["kept"].value + mat["rejected"].value == 2
            assert "data:image/png;base64" in mat["score_histogram"].value
            masks = mat["mask_quality"].value  # old vs new alpha estimator on renders_3d views with known alpha
            assert masks["segment/noise8/alpha_mae"] < masks["ramp/noise8/alpha_mae"] == mat[
                "mask_alpha_mae/noise8/ramp"].value
            assert version.manifest.inputs["synthetic_videos/" + key] == store.latest("synthetic_videos", key).digest
            samples = list(iter_samples(sorted(version.path.glob("*.tar"))))
            assert len(samples) == mat["kept"].value
            for s in samples:
                assert s.num_views == 4 and s.meta["azimuth_deg"] == [0.0, 90.0, 180.0, 270.0]
            rows = (version.path / "scores.csv").read_text().splitlines()[1:]
            assert len(rows) == 2

        tick = schedule.evaluate_tick(_tick_context(instance, schedule, root))
        assert [r.partition_key for r in tick.run_requests] == ["shard-000002"]

        # the user's labels of synthesized videos join the bootstrap labels
        video_keys = [line.split(",")[0] for k in ["shard-000000", "shard-000001"]
                      for line in (store.latest("filtered_multiview_dataset", k).path / "scores.csv")
                      .read_text().splitlines()[1:]]
        labels = tmp_path / "labels.csv"
        labels.write_text("video_key,label\n" + "".join(f"{k},{'good' if i % 2 else 'bad'}\n"
                                                         for i, k in enumerate(video_keys)))
        relabelled = dg.materialize([quality_models], instance=instance, resources=_resources(root),
                                    run_config={"ops": {"quality_models": {"config": {"labels_csv": str(labels)}}}})
        assert relabelled.success
        qv = store.latest("quality_models")
        assert qv.manifest.counts["user_labels"] == 4 and "labels_csv" in qv.manifest.inputs
        assert {"synthetic_videos/shard-000000", "synthetic_videos/shard-000001"} <= set(qv.manifest.inputs)
        assert relabelled.asset_materializations_for_node("quality_models")[0].metadata["metrics"].value[
            "user_heldout"] == 1

        sensor = build_prompt_source_sensor(PromptSourceSettings(str(src)))
        resources = {"artifacts": ArtifactStoreResource(root=str(root))}
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
        assert len(first.run_requests) == 1
        cursor = first.cursor
        unchanged = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
        assert not unchanged.run_requests
        # a partition lost from the instance is registered again from the published prompt set
        instance.delete_dynamic_partition("prompt_shards", "shard-000002")
        repair = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
        assert [r.partition_keys for r in repair.dynamic_partitions_requests] == [["shard-000002"]]
        instance.add_dynamic_partitions("prompt_shards", ["shard-000002"])

        src.write_text(src.read_text() + "a dotted orange pyramid\na checkered black capsule\n")
        grown = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
        (request,) = grown.run_requests
        assert grown.cursor != cursor
        assert dg.materialize([prompt_set, prompt_set_integrity], instance=instance, resources=_resources(root),
                              run_config=request.run_config).success
        assert instance.get_dynamic_partitions("prompt_shards") == keys + ["shard-000003"]
        tick = schedule.evaluate_tick(_tick_context(instance, schedule, root))
        assert [r.partition_key for r in tick.run_requests] == ["shard-000002", "shard-000003"]

        # filtering follows a synthetic partition materialized outside the schedule (UI, backfill): eager condition
        engine = dg.Definitions(assets=[prompt_set, quality_models, synthetic_videos, filtered_multiview_dataset],
                                resources=_resources(root))
        before = dg.evaluate_automation_conditions(defs=engine, instance=instance)
        assert before.get_requested_partitions(dg.AssetKey("filtered_multiview_dataset")) == set()
        assert dg.materialize([synthetic_videos], partition_key="shard-000002", instance=instance,
                              resources=_resources(root)).success
        after = dg.evaluate_automation_conditions(defs=engine, instance=instance, cursor=before.cursor)
        assert after.get_requested_partitions(dg.AssetKey("filtered_multiview_dataset")) == {"shard-000002"}
