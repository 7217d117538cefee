"""Scaling out (docs/scaling.md) end to end: the whole graph at the micro size of tests/test_whole_graph.py, launched
as `make tiny` launches it (dagster dev's backfill daemon, its run workers), materializes with the artifact root on
an S3 server (moto, real HTTP on loopback) and the Dagster instance on a real PostgreSQL server
(dagster.postgres.yaml), with synthesis and LRM pretraining run as Dagster Pipes steps
(external processes that report their metrics back onto the asset; the training step streams its shards from S3
by URL); then `vfusion3d audit` verifies the lineage on S3 and names a tampered object."""

import json
import subprocess
import sys

import dagster as dg
import mlflow
import pytest
from pipeline_utils import REPO, dagster_home, pipeline_env, run_whole_graph
from test_whole_graph import (
    PROMPTS,
    RENDER_PARTITIONS,
    SHARDS,
    assert_whole_graph_by_backfill,
    micro_run_config,
    names,
)

from vfusion3d_core.data import Manifest
from vfusion3d_core.data.s3_store import S3ArtifactStore
from vfusion3d_pipeline.definitions import build_definitions
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

pytestmark = pytest.mark.slow  # the whole graph on S3 + PostgreSQL (minutes)

PREFIX = "team/vfusion3d"


def store_reader(s3_server, tmp_path) -> S3ArtifactStore:
    """A reader with its own empty cache (a different machine)."""
    return S3ArtifactStore(s3_server.client, s3_server.bucket, PREFIX, tmp_path / "reader")


def audit(target: str, env_extra: dict) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "vfusion3d_core.cli", "audit", target, "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env_extra})


def test_tiny_graph_on_s3_and_postgres(s3_server, postgres_server, tmp_path, monkeypatch) -> None:
    env = pipeline_env(tmp_path)  # the S3 credentials and DAGSTER_PG_* of the fixtures are in os.environ
    home = dagster_home(tmp_path / "run_dagster_home", "dagster.postgres.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    cache = tmp_path / "cache"  # the local side of the S3 root: staging, work dirs, verified version copies
    env.update(DAGSTER_HOME=str(home), VFUSION3D_ARTIFACT_ROOT=str(cache), VFUSION3D_S3_BUCKET=s3_server.bucket,
               VFUSION3D_S3_PREFIX=PREFIX, VFUSION3D_S3_ENDPOINT_URL=s3_server.endpoint,
               VFUSION3D_S3_REGION="us-east-1", VFUSION3D_DEVICE="cpu", VFUSION3D_PRECISION="fp32")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    artifacts = ArtifactStoreResource(root=str(cache), s3_bucket=s3_server.bucket, s3_prefix=PREFIX,
                                      s3_endpoint_url=s3_server.endpoint, s3_region="us-east-1")
    defs = build_definitions({"artifacts": artifacts, "preset": PresetResource(name="tiny"),
                              "mlflow": MLflowResource(artifact_root=str(cache)),
                              "compute": ComputeResource(device="cpu", precision="fp32")})
    config = micro_run_config(prompts)
    config["ops"]["synthetic_videos"] = {"config": {"execution": "pipes"}}
    config["ops"]["lrm_pretrained"]["config"] = {**config["ops"]["lrm_pretrained"]["config"], "execution": "pipes"}
    run_whole_graph(env, config, tmp_path)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        run_of = assert_whole_graph_by_backfill(instance, defs)
        graph = defs.resolve_asset_graph()
        events = {key.to_user_string(): instance.get_latest_materialization_event(key).asset_materialization
                  for key in graph.get_all_asset_keys()
                  if graph.get(key).group_name != "experiments" and not graph.get(key).partitions_def}
        synth = instance.fetch_materializations(dg.AssetKey("synthetic_videos"), limit=10).records
        assert {r.asset_materialization.metadata["execution"].value for r in synth} == {"pipes"}
        # the Pipes training step reported its metrics back onto the asset ...
        pretrained = events["lrm_pretrained"].metadata
        trained = json.loads((store_reader(s3_server, tmp_path).latest("lrm_pretrained").path / "metrics.json")
                             .read_text())["train"]
        assert pretrained["execution"].value == "pipes" and pretrained["final_metrics"].value == trained
        assert trained["loss"] > 0 and trained["samples_per_s"] > 0
        assert pretrained["pipes/step"].value == 4 and pretrained["pipes/world_size"].value == 1
        assert [p["step"] for p in pretrained["pipes/training_curve"].value] == [2, 4]
        # ... per step into MLflow, and streamed its shards from S3 by URL
        history = mlflow.MlflowClient(f"sqlite:///{cache}/mlflow.db").get_metric_history(
            pretrained["mlflow_run_id"].value, "loss")
        assert [m.step for m in history] == [2, 4] and history[-1].value == trained["loss"]
        logs = [e.message for e in instance.all_logs(run_of["lrm_pretrained"]) if e.user_message]
        assert any(f"(first s3://{s3_server.bucket}/{PREFIX}/filtered_multiview_dataset/" in m for m in logs)
        assert any("step 4/4" in m for m in logs)  # the external process's log lines reach Dagster's event log

    # every asset and partition is on S3, with the same manifest and digest Dagster recorded
    store = store_reader(s3_server, tmp_path)
    assert store.partitions("synthetic_videos") == SHARDS and store.partitions("filtered_multiview_dataset") == SHARDS
    for asset, event in events.items():
        version = store.latest(asset, materialize=False)
        # prompt_set's data version is its shard lineage (appends keep it), every other asset's its digest
        expected = version.manifest.config["shard_lineage"] if asset == "prompt_set" else version.digest
        assert event.tags["dagster/data_version"] == expected, asset
        assert version.url.startswith(f"s3://{s3_server.bucket}/{PREFIX}/{asset}/versions/")
        assert event.metadata["url"].value == version.url
    keys = s3_server.keys(PREFIX + "/")
    assert not any(".staging" in k or ".work" in k or ".checkpoints" in k for k in keys)
    fine = store.latest("lrm_finetuned")
    assert fine.manifest.verify(fine.path) == []
    pre = store.latest("lrm_pretrained", materialize=False)
    assert set(pre.manifest.inputs) == {*RENDER_PARTITIONS, *(f"filtered_multiview_dataset/{k}" for k in SHARDS)}

    # MLflow records where the data lives: s3:// dataset sources and registered-model artifact paths
    client = mlflow.MlflowClient(f"sqlite:///{cache}/mlflow.db")
    registered = client.search_model_versions("name='lrm_finetuned'")[0]
    assert registered.tags["vfusion3d.artifact_path"] == fine.url

    # audit on S3, by URL and by registered model: the exact partitions, every digest re-verified
    env = {"VFUSION3D_S3_ENDPOINT_URL": s3_server.endpoint, "VFUSION3D_S3_REGION": "us-east-1",
           "VFUSION3D_ARTIFACT_ROOT": str(cache)}
    result = audit(fine.url + "/model", env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["tree"]["digest"] == fine.digest and report["tree"]["path"] == fine.url
    expected = {"lrm_finetuned", "lrm_pretrained", *RENDER_PARTITIONS, "source_objects", "quality_models",
                "video_model"}
    expected |= {f"{a}/{k}" for a in ("filtered_multiview_dataset", "synthetic_videos", "prompt_set") for k in SHARDS}
    assert names(report["tree"]) == expected
    by_model = audit(f"models:/lrm_finetuned/{registered.version}", env)
    assert by_model.returncode == 0 and json.loads(by_model.stdout)["tree"]["digest"] == fine.digest

    # one flipped byte in one synthetic shard on S3: audit fails naming it
    synth_version = store.latest("synthetic_videos", SHARDS[1], materialize=False)
    shard = next(f.path for f in synth_version.manifest.files if f.path.endswith(".tar"))
    key = synth_version.url_of(shard).split(f"s3://{s3_server.bucket}/", 1)[1]
    data = bytearray(s3_server.client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3_server.client.put_object(Bucket=s3_server.bucket, Key=key, Body=bytes(data))
    broken = audit(fine.url, env)
    assert broken.returncode == 1
    assert f"synthetic_videos/{SHARDS[1]}" in broken.stderr and shard in broken.stderr
    assert f"synthetic_videos/{SHARDS[0]}" not in broken.stderr
    assert Manifest.from_json(s3_server.client.get_object(
        Bucket=s3_server.bucket, Key=f"{PREFIX}/lrm_finetuned/versions/{fine.digest[:16]}/manifest.json")["Body"].read()
    ).digest == fine.digest
