"""The data engine at micro size with a real Dagster instance in a temporary DAGSTER_HOME: prompt set ->
declarative automation (the incremental_synthesis sensor's conditions) requests synthesis of every new shard ->
synthesis + filtering of two partitions -> the prompt source grows -> the sensor's run appends a shard -> automation
requests exactly the new partition, and the earlier partitions stay fresh (staleness follows each shard)."""

import json

import dagster as dg
import pytest
from pipeline_utils import VIDEO_MICRO, materialize_renders

from vfusion3d_core.data import ArtifactStore, iter_samples
from vfusion3d_pipeline.assets.filtering import filtered_multiview_dataset, quality_models
from vfusion3d_pipeline.assets.prompts import prompt_set
from vfusion3d_pipeline.assets.video import synthetic_videos, video_model
from vfusion3d_pipeline.automation import incremental_synthesis
from vfusion3d_pipeline.checks import filtered_multiview_integrity, prompt_set_integrity, synthetic_videos_integrity
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource
from vfusion3d_pipeline.sensors import PromptSourceSettings, build_prompt_source_sensor

pytestmark = pytest.mark.slow  # the data engine end to end through Dagster (minutes)

PROMPTS = ["a red box", "a glossy blue sphere", "a green cone next to a yellow torus", "a striped purple ring",
           "a metallic white cylinder"]


SYNTH, FILTERED = dg.AssetKey("synthetic_videos"), dg.AssetKey("filtered_multiview_dataset")


def _engine(root) -> dg.Definitions:
    return dg.Definitions(assets=[prompt_set, video_model, quality_models, synthetic_videos,
                                  filtered_multiview_dataset], sensors=[incremental_synthesis],
                          resources=_resources(root))


def _data_version(instance: dg.DagsterInstance, asset: str) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.tags["dagster/data_version"]


def _resources(root) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def test_automation_synthesis_filtering_and_growth(tmp_path) -> None:
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

        engine = _engine(root)
        initial = dg.evaluate_automation_conditions(defs=engine, instance=instance)
        assert initial.get_requested_partitions(SYNTH) == set(keys)  # every new shard, once
        assert initial.get_requested_partitions(FILTERED) == set()  # nothing synthesized yet

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

        second = dg.evaluate_automation_conditions(defs=engine, instance=instance, cursor=initial.cursor)
        assert second.get_requested_partitions(SYNTH) == {"shard-000002"}  # synthesized ones are left alone

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
        lineage = _data_version(instance, "prompt_set")
        assert dg.materialize([prompt_set, prompt_set_integrity], instance=instance, resources=_resources(root),
                              run_config=request.run_config).success
        assert instance.get_dynamic_partitions("prompt_shards") == keys + ["shard-000003"]
        grown_tick = dg.evaluate_automation_conditions(defs=engine, instance=instance, cursor=second.cursor)
        assert grown_tick.get_requested_partitions(SYNTH) == {"shard-000002", "shard-000003"}  # the unsynthesized
        # an append keeps prompt_set's data version (its earlier shards are unchanged): the synthesized partitions
        # stay fresh in the UI; only the new one is missing
        assert _data_version(instance, "prompt_set") == lineage
        from dagster._core.definitions.data_version import StaleStatus  # the UI's staleness, no public API
        from dagster._utils.test.data_versions import get_stale_status_resolver

        resolver = get_stale_status_resolver(instance, [prompt_set, video_model, synthetic_videos])
        for key in ("shard-000000", "shard-000001"):
            assert resolver.get_status(SYNTH, key) == StaleStatus.FRESH, key

        # eager filtering: the new shard together with its synthesis (one run, in order), and the shards filtered
        # before quality_models was retrained on the user's labels; shard-000002 was requested with its synthesis
        assert grown_tick.get_requested_partitions(FILTERED) == {"shard-000000", "shard-000001", "shard-000003"}
        # filtering follows a synthetic partition materialized outside automation (UI, backfill): eager condition
        assert dg.materialize([synthetic_videos], partition_key="shard-000002", instance=instance,
                              resources=_resources(root)).success
        after = dg.evaluate_automation_conditions(defs=engine, instance=instance, cursor=grown_tick.cursor)
        assert after.get_requested_partitions(FILTERED) == {"shard-000002"}
        assert after.get_requested_partitions(SYNTH) == {"shard-000003"}  # shard-000002 is synthesized now
