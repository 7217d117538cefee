"""The `renders_3d` asset through Dagster: in-process, from the CLI, killed and re-run, and in `dagster dev`."""

import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import trimesh
from pipeline_utils import (
    MICRO_RENDERS,
    REPO,
    dagster_dev,
    latest_pointer,
    materialize_cmd,
    pipeline_env,
    run_materialize,
)

from vfusion3d_core.data import ArtifactStore, Manifest, iter_samples
from vfusion3d_pipeline.assets.renders import renders_3d
from vfusion3d_pipeline.checks import renders_3d_integrity
from vfusion3d_pipeline.definitions import defs
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource


def materialize_in_process(root: Path, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [renders_3d, renders_3d_integrity],
        resources={"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
                   "mlflow": MLflowResource(artifact_root=str(root)),
                   "compute": ComputeResource(device="cpu", precision="fp32")},
        run_config={"ops": {"renders_3d": {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_definitions_load() -> None:
    assert defs.resolve_assets_def("renders_3d").code_versions_by_key[dg.AssetKey("renders_3d")] == "renders_3d-v1"
    assert defs.resolve_job_def("materialize_all") is not None


def test_renders_asset_writes_shards_manifest_and_passes_its_check(tmp_path) -> None:
    result = materialize_in_process(tmp_path, MICRO_RENDERS)
    assert result.success
    mat = result.asset_materializations_for_node("renders_3d")[0]
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 1 and checks[0].passed
    version = ArtifactStore(tmp_path).latest("renders_3d")
    assert mat.tags["dagster/data_version"] == version.digest
    assert mat.metadata["count/train_objects"].value == 6 and mat.metadata["count/heldout_objects"].value == 2
    assert "data:image/png;base64" in mat.metadata["preview"].value
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(mat.metadata["mlflow_run_id"].value)
    assert run.info.status == "FINISHED" and run.data.tags["dagster.asset_key"] == "renders_3d"
    assert run.data.tags["dagster.run_id"] == result.run_id and run.data.tags["output.digest"] == version.digest
    assert run.data.params["num_objects"] == "6" and run.data.metrics["count_views"] == 32
    m = version.manifest
    assert m.counts["views"] == 8 * 4 and m.verify(version.path) == []
    samples = list(iter_samples(sorted(version.path.glob("train/*.tar"))))
    assert len(samples) == 6 and samples[0].views.shape == (4, 32, 32, 4)
    assert samples[0].meta["split"] == "train" and 0 <= samples[0].meta["elevation_deg"] <= 45
    np.testing.assert_allclose(samples[0].meta["azimuth_deg"], [0, 90, 180, 270])
    # same seed -> same digest; another seed -> another version
    assert materialize_in_process(tmp_path, MICRO_RENDERS).success
    assert ArtifactStore(tmp_path).latest("renders_3d").digest == version.digest
    assert materialize_in_process(tmp_path, {**MICRO_RENDERS, "seed": 1}).success
    assert ArtifactStore(tmp_path).latest("renders_3d").digest != version.digest


def test_integrity_check_fails_on_tampered_shard(tmp_path) -> None:
    assert materialize_in_process(tmp_path, MICRO_RENDERS).success
    version = ArtifactStore(tmp_path).latest("renders_3d")
    shard = version.path / "heldout/shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-3000])
    result = dg.materialize([renders_3d_integrity], resources={"artifacts": ArtifactStoreResource(root=str(tmp_path))},
                            selection=dg.AssetSelection.checks(renders_3d_integrity),
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    evaluation = result.get_asset_check_evaluations()[0]
    assert not evaluation.passed
    assert any("heldout/shard-000000.tar" in p for p in evaluation.metadata["problems"].value)


def test_folder_source_reports_and_skips_corrupt_glb(tmp_path) -> None:
    src = tmp_path / "meshes"
    src.mkdir()
    meshes = [trimesh.creation.box(), trimesh.creation.icosphere(), trimesh.creation.capsule(),
              trimesh.creation.annulus(r_min=0.5, r_max=1.0, height=0.3)]
    for i, mesh in enumerate(meshes):
        mesh.export(src / f"obj{i}.glb")
    (src / "broken.glb").write_bytes(b"glTF" + os.urandom(200))
    (src / "captions.csv").write_text("uid,caption\nobj0,a grey box\n")
    config = {**MICRO_RENDERS, "source": "folder", "folder": str(src), "num_objects": 0, "num_heldout": 1}
    result = materialize_in_process(tmp_path / "root", config)
    assert result.success
    mat = result.asset_materializations_for_node("renders_3d")[0]
    skipped = mat.metadata["skipped_files"].value
    assert [Path(s["path"]).name for s in skipped] == ["broken.glb"]
    assert mat.metadata["count/objects"].value == 4 and mat.metadata["count/skipped_files"].value == 1
    assert result.get_asset_check_evaluations()[0].passed


KILL_CONFIG = {**MICRO_RENDERS, "num_objects": 40, "num_heldout": 8, "num_views": 8, "samples_per_shard": 4}


@pytest.mark.slow
def test_killed_materialization_leaves_nothing_visible_and_rerun_matches(tmp_path) -> None:
    env = pipeline_env(tmp_path, "killed")
    root = Path(env["VFUSION3D_ARTIFACT_ROOT"])
    config = {"ops": {"renders_3d": {"config": KILL_CONFIG}}}
    proc = subprocess.Popen(materialize_cmd("renders_3d", config), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    staged: list[Path] = []
    while time.time() < deadline and len(staged) < 2:  # wait until shards are being written
        staged = list((root / "renders_3d/.staging").glob("*/train/shard-*.tar"))
        time.sleep(0.05)
    assert staged, "materialization never started writing shards"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    asset_dir = root / "renders_3d"
    assert not (asset_dir / "LATEST.json").exists()
    assert not (asset_dir / "versions").exists() or not any((asset_dir / "versions").iterdir())
    visible = [p for p in asset_dir.rglob("*.tar") if ".staging" not in p.parts]
    assert visible == []

    run_materialize(env, "renders_3d", config)
    rerun = latest_pointer(root, "renders_3d")
    assert not any((asset_dir / ".staging").iterdir()), "leftover staging dir not cleaned"
    version_dir = asset_dir / "versions" / rerun["version"]
    assert Manifest.read(version_dir / "manifest.json").verify(version_dir) == []

    clean_env = pipeline_env(tmp_path, "clean")
    run_materialize(clean_env, "renders_3d", config)
    assert latest_pointer(clean_env["VFUSION3D_ARTIFACT_ROOT"], "renders_3d")["digest"] == rerun["digest"]


@pytest.mark.slow
def test_tiny_renders_from_dagster_dev(tmp_path) -> None:
    """The tiny preset (64 + 16 objects, 16 views at 64x64) through `dagster dev`, launched over GraphQL."""
    from dagster_graphql import DagsterGraphQLClient

    env = pipeline_env(tmp_path, "dev")
    with dagster_dev(env, tmp_path / "dagster_dev.log") as port:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution("renders", run_config={})
        started = time.time()
        status = None
        while time.time() - started < 240:
            status = client.get_run_status(run_id)
            if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                break
            time.sleep(2)
        assert status == dg.DagsterRunStatus.SUCCESS, (tmp_path / "dagster_dev.log").read_text()[-5000:]
        pointer = latest_pointer(env["VFUSION3D_ARTIFACT_ROOT"], "renders_3d")
        assert pointer["run_id"] == run_id
        version = ArtifactStore(env["VFUSION3D_ARTIFACT_ROOT"]).latest("renders_3d")
        assert version.manifest.counts["train_objects"] == 64 and version.manifest.counts["heldout_objects"] == 16
