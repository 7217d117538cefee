"""A backfill of many prompt-shard partitions launched the way the UI launches it: a GraphQL
`launchPartitionBackfill` against a real `dagster dev` (webserver + daemon), synthesis and filtering
together, one run per partition, every partition materialized."""

import json
import time

import dagster as dg
import pytest
from pipeline_utils import MICRO_RENDER_OPS, VIDEO_MICRO, dagster_dev, pipeline_env

from vfusion3d_core.data import ArtifactStore
from vfusion3d_pipeline.definitions import build_definitions
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource
from vfusion3d_pipeline.run_all import materialize

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions }
    ... on PythonError { message }
  }
}"""
PROMPTS = ["a red box", "a glossy blue sphere", "a green cone", "a striped purple ring", "a metallic white cylinder",
           "a dotted orange pyramid"]
SHARDS = ["shard-000000", "shard-000001", "shard-000002"]


@pytest.mark.slow
def test_backfill_of_prompt_shards_from_the_ui(tmp_path, monkeypatch) -> None:
    from dagster_graphql import DagsterGraphQLClient

    env = pipeline_env(tmp_path, "ui")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(PROMPTS) + "\n")
    config = {"ops": {**MICRO_RENDER_OPS,
                      "video_model": {"config": {"eval_count": 2, "overrides_json": json.dumps(VIDEO_MICRO)}},
                      "prompt_set": {"config": {"source_file": str(src), "template_count": 0, "shard_size": 2}}}}
    defs = build_definitions({"artifacts": ArtifactStoreResource(root=env["VFUSION3D_ARTIFACT_ROOT"]),
                              "preset": PresetResource(name="tiny"),
                              "mlflow": MLflowResource(artifact_root=env["VFUSION3D_ARTIFACT_ROOT"]),
                              "compute": ComputeResource(device="cpu", precision="fp32")})
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:  # upstream assets, in this process
        materialize(defs, instance, ["source_objects", "prompt_set"], run_config=config)
        for key in instance.get_dynamic_partitions("object_shards"):
            materialize(defs, instance, ["renders_3d"], key, config)
        materialize(defs, instance, ["video_model", "quality_models"], run_config=config)

    with dagster_dev(env, tmp_path / "dagster_dev.log") as port:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        params = {"assetSelection": [{"path": ["synthetic_videos"]}, {"path": ["filtered_multiview_dataset"]}],
                  "partitionNames": SHARDS, "title": "test backfill"}
        launched = client._execute(LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        started, status = time.time(), None
        while time.time() - started < 600:
            status = client._execute(STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]
            if status.get("status") not in ("REQUESTED", "CANCELING", "FAILING", None):
                break
            time.sleep(3)
        log = (tmp_path / "dagster_dev.log").read_text()[-6000:]
        assert status == {"status": "COMPLETED_SUCCESS", "numPartitions": 3} or \
            status == {"status": "COMPLETED", "numPartitions": 3}, (status, log)

    store = ArtifactStore(env["VFUSION3D_ARTIFACT_ROOT"])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for asset in ("synthetic_videos", "filtered_multiview_dataset"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(SHARDS), asset
            for key in SHARDS:
                version = store.latest(asset, key)
                assert version is not None and version.manifest.verify(version.path) == []
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": launched["backfillId"]}))
        assert len(runs) == len(SHARDS) and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert {r.tags["dagster/partition"] for r in runs} == set(SHARDS)
