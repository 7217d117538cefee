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
from dagster._core.instance.ref import InstanceRef
from pipeline_utils import (
    MICRO_RENDERS,
    MICRO_SOURCE,
    REPO,
    dagster_dev,
    latest_pointer,
    materialize_cmd,
    materialize_renders,
    pipeline_env,
)

from vfusion3d_core.data import ArtifactStore, iter_samples
from vfusion3d_pipeline.assets.renders import committed_renders, renders_3d, source_objects
from vfusion3d_pipeline.checks import renders_partition_check
from vfusion3d_pipeline.definitions import defs
from vfusion3d_pipeline.partitions import object_shards
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource


def resources(root: Path) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def materialize_in_process(root: Path, source: dict | None = None, renders: dict | None = None,
                           instance: dg.DagsterInstance | None = None) -> list[dg.ExecuteInProcessResult]:
    """source_objects, then every renders_3d partition with its integrity check; one result per partition."""
    return materialize_renders(resources(root), instance or dg.DagsterInstance.ephemeral(), source, renders,
                               checks=True)


def test_definitions_load() -> None:
    assert defs.resolve_assets_def("renders_3d").code_versions_by_key[dg.AssetKey("renders_3d")] == "renders_3d-v2"
    assert defs.resolve_assets_def("renders_3d").partitions_def == object_shards
    selected = {k.to_user_string() for k in defs.resolve_job_def("register_shards").asset_layer.selected_asset_keys}
    assert selected == {"source_objects", "prompt_set"}  # the roots: they register the partitions a backfill runs


def test_renders_asset_writes_partitions_manifest_and_passes_its_check(tmp_path) -> None:
    results = materialize_in_process(tmp_path)
    assert len(results) == 2  # 8 objects in partitions of 4
    store = ArtifactStore(tmp_path)
    assert store.partitions("renders_3d") == ["objects-000000", "objects-000001"]
    for result in results:
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 1 and checks[0].passed
    mat = results[0].asset_materializations_for_node("renders_3d")[0]
    version = store.latest("renders_3d", "objects-000000")
    assert mat.tags["dagster/data_version"] == version.digest and mat.partition == "objects-000000"
    # the listing puts the 2 held-out objects first
    assert mat.metadata["count/train_objects"].value == 2 and mat.metadata["count/heldout_objects"].value == 2
    assert "data:image/png;base64" in mat.metadata["preview"].value
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(mat.metadata["mlflow_run_id"].value)
    assert run.info.status == "FINISHED" and run.data.tags["dagster.asset_key"] == "renders_3d"
    assert run.data.tags["dagster.run_id"] == results[0].run_id and run.data.tags["output.digest"] == version.digest
    assert run.data.params["partition"] == "objects-000000" and run.data.metrics["count_views"] == 16
    assert run.data.tags["input.source_objects"] == store.latest("source_objects").digest
    m = version.manifest
    assert m.counts["views"] == 4 * 4 and m.verify(version.path) == []
    samples = list(iter_samples(sorted(version.path.glob("train/*.tar"))))
    assert len(samples) == 2 and samples[0].views.shape == (4, 32, 32, 4)
    assert samples[0].meta["split"] == "train" and 0 <= samples[0].meta["elevation_deg"] <= 45
    np.testing.assert_allclose(samples[0].meta["azimuth_deg"], [0, 90, 180, 270])
    # downstream reads every current partition as one dataset
    renders = committed_renders(store)
    assert len(renders.files_under("train")) == 2 and len(renders.object_rows()) == 8
    assert set(renders.inputs) == {"renders_3d/objects-000000", "renders_3d/objects-000001"}
    assert {r["split"] for r in renders.object_rows()} == {"train", "heldout"}


def test_rendered_partition_is_kept_and_other_settings_render_anew(tmp_path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    first = materialize_in_process(tmp_path, instance=instance)
    store = ArtifactStore(tmp_path)
    digest = store.latest("renders_3d", "objects-000001").digest
    again = materialize_in_process(tmp_path, instance=instance)  # same rows and settings: kept, not redone
    mat = again[1].asset_materializations_for_node("renders_3d")[0]
    assert mat.metadata["reused_existing_version"].value is True and mat.tags["dagster/data_version"] == digest
    assert "mlflow_run_id" not in mat.metadata  # no render run
    first_mat = first[1].asset_materializations_for_node("renders_3d")[0]
    assert first_mat.metadata["reused_existing_version"].value is False
    # other render settings -> another version; force -> rendered again (same bytes, same digest)
    materialize_in_process(tmp_path, renders={**MICRO_RENDERS, "seed": 1}, instance=instance)
    assert store.latest("renders_3d", "objects-000001").digest != digest
    forced = materialize_in_process(tmp_path, renders={**MICRO_RENDERS, "force": True}, instance=instance)
    assert forced[1].asset_materializations_for_node("renders_3d")[0].metadata["reused_existing_version"].value \
        is False
    assert store.latest("renders_3d", "objects-000001").digest == digest


def test_growing_the_source_appends_partitions_and_keeps_published_ones(tmp_path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    materialize_in_process(tmp_path, instance=instance)
    store = ArtifactStore(tmp_path)
    before = {k: store.latest("renders_3d", k).digest for k in store.partitions("renders_3d")}
    grown = materialize_in_process(tmp_path, source={**MICRO_SOURCE, "num_objects": 10}, instance=instance)
    assert instance.get_dynamic_partitions("object_shards") == ["objects-000000", "objects-000001",
                                                                 "objects-000002"]
    for result, key in zip(grown[:2], before, strict=True):  # published partitions: same rows, kept
        assert result.asset_materializations_for_node("renders_3d")[0].tags["dagster/data_version"] == before[key]
    renders = committed_renders(store)
    assert sorted(renders.versions) == ["objects-000000", "objects-000001", "objects-000002"]
    rows = renders.object_rows()
    assert sum(r["split"] == "heldout" for r in rows) == 2  # the held-out set is fixed when first drawn
    assert len({r["uid"] for r in rows}) == len(rows) == 10


def test_integrity_check_fails_on_tampered_shard(tmp_path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    materialize_in_process(tmp_path, instance=instance)
    version = ArtifactStore(tmp_path).latest("renders_3d", "objects-000000")
    shard = version.path / "heldout/shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-3000])
    evaluation = renders_partition_check(ArtifactStore(tmp_path), "objects-000000")
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
    source = {"source": "folder", "folder": str(src), "num_objects": 0, "num_heldout": 1, "objects_per_partition": 8}
    [result] = materialize_in_process(tmp_path / "root", source=source)
    mat = result.asset_materializations_for_node("renders_3d")[0]
    skipped = mat.metadata["skipped_files"].value
    assert [Path(s["path"]).name for s in skipped] == ["broken.glb"]
    assert "broken" in skipped[0]["reason"]
    assert mat.metadata["count/objects"].value == 4 and mat.metadata["count/skipped_files"].value == 1
    assert result.get_asset_check_evaluations()[0].passed
    captions = {r["uid"]: r["caption"] for r in committed_renders(ArtifactStore(tmp_path / "root")).object_rows()}
    assert captions["obj0"] == "a grey box" and captions["obj1"] == "obj1"


def test_listing_source_csv_with_relative_paths_and_bad_rows(tmp_path) -> None:
    """A Cap3D / Objaverse-style listing: path, uid, caption columns; a missing file and an empty row are
    skipped by line, the rest rendered."""
    src = tmp_path / "objects"
    src.mkdir()
    trimesh.creation.box(extents=(1, 1, 2)).export(src / "a.glb")
    trimesh.creation.icosphere().export(src / "b.ply")
    (tmp_path / "listing.csv").write_text("uid,path,caption\nbox1,objects/a.glb,a tall box\n"
                                          "ball,objects/b.ply,a ball\ngone,objects/nothere.glb,lost\nx,,empty\n")
    source = {"source": "listing", "listing": str(tmp_path / "listing.csv"), "num_objects": 0, "num_heldout": 0}
    instance = dg.DagsterInstance.ephemeral()
    [result] = materialize_in_process(tmp_path / "root", source=source, instance=instance)
    listing = ArtifactStore(tmp_path / "root").latest("source_objects")
    assert listing.manifest.counts["objects"] == 2 and listing.manifest.counts["skipped_sources"] == 2
    rows = committed_renders(ArtifactStore(tmp_path / "root")).object_rows()
    assert {(r["uid"], r["caption"]) for r in rows} == {("box1", "a tall box"), ("ball", "a ball")}


KILL_SOURCE = {"num_objects": 40, "num_heldout": 8, "objects_per_partition": 16}  # 3 partitions
KILL_RENDERS = {**MICRO_RENDERS, "num_views": 8}


@pytest.mark.slow
def test_killed_partition_is_redone_alone_and_matches_a_clean_render(tmp_path, monkeypatch) -> None:
    """Partition 0 rendered, partition 1 killed mid-write (SIGKILL of the CLI run): nothing of it is visible;
    rendering every partition again keeps partition 0, cleans partition 1's leftovers and renders it exactly as a
    clean run does."""
    env = pipeline_env(tmp_path, "killed")
    root = Path(env["VFUSION3D_ARTIFACT_ROOT"])
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # the instance the CLI run uses
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"]))
    res = {**resources(root), "mlflow": MLflowResource(artifact_root=str(root))}
    assert dg.materialize([source_objects], resources=res, instance=instance,
                          run_config={"ops": {"source_objects": {"config": KILL_SOURCE}}}).success
    assert instance.get_dynamic_partitions("object_shards") == [f"objects-00000{i}" for i in range(3)]
    assert dg.materialize([renders_3d], resources=res, instance=instance, partition_key="objects-000000",
                          run_config={"ops": {"renders_3d": {"config": KILL_RENDERS}}}).success
    kept = latest_pointer(root / "renders_3d", "objects-000000")

    config = {"ops": {"renders_3d": {"config": KILL_RENDERS}}}
    proc = subprocess.Popen(materialize_cmd("renders_3d", config, "objects-000001"), cwd=REPO, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    staged: list[Path] = []
    while time.time() < deadline and len(staged) < 2 and proc.poll() is None:  # wait until shards are written
        staged = list((root / "renders_3d/objects-000001/.staging").glob("*/train/shard-*.tar"))
        time.sleep(0.05)
    assert staged, "materialization never started writing shards"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_dir = root / "renders_3d/objects-000001"
    assert not (killed_dir / "LATEST.json").exists()
    assert [p for p in killed_dir.rglob("*.tar") if ".staging" not in p.parts] == []

    results = materialize_renders(res, instance, KILL_SOURCE, KILL_RENDERS)
    reused = [r.asset_materializations_for_node("renders_3d")[0].metadata["reused_existing_version"].value
              for r in results]
    assert reused == [True, False, False]  # only the unfinished partitions are rendered
    assert latest_pointer(root / "renders_3d", "objects-000000") == kept
    assert not any((killed_dir / ".staging").iterdir()), "leftover staging dir not cleaned"
    rerun = ArtifactStore(root).latest("renders_3d", "objects-000001")
    assert rerun.manifest.verify(rerun.path) == []

    clean_root = tmp_path / "clean"
    materialize_renders(resources(clean_root), dg.DagsterInstance.ephemeral(), KILL_SOURCE, KILL_RENDERS)
    assert ArtifactStore(clean_root).latest("renders_3d", "objects-000001").digest == rerun.digest


def _wait_for_run(client, run_id: str, log: Path, timeout: float = 240) -> None:
    started = time.time()
    status = None
    while time.time() - started < timeout:
        status = client.get_run_status(run_id)
        if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            break
        time.sleep(2)
    assert status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-5000:]


@pytest.mark.slow
def test_tiny_renders_from_dagster_dev(tmp_path) -> None:
    """The tiny preset through `dagster dev`, launched over GraphQL: list the objects (64 + 16 in partitions of
    40), then render the first object shard (16 held-out + 24 training objects, 16 views at 64x64)."""
    from dagster_graphql import DagsterGraphQLClient

    env = pipeline_env(tmp_path, "dev")
    log = tmp_path / "dagster_dev.log"
    with dagster_dev(env, log) as port:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        _wait_for_run(client, client.submit_job_execution("list_source_objects", run_config={}), log)
        run_id = client.submit_job_execution("renders", run_config={}, tags={"dagster/partition": "objects-000000"})
        _wait_for_run(client, run_id, log)
        pointer = latest_pointer(Path(env["VFUSION3D_ARTIFACT_ROOT"]) / "renders_3d", "objects-000000")
        assert pointer["run_id"] == run_id
        version = ArtifactStore(env["VFUSION3D_ARTIFACT_ROOT"]).latest("renders_3d", "objects-000000")
        assert version.manifest.counts["train_objects"] == 24 and version.manifest.counts["heldout_objects"] == 16


def test_heldout_objects_have_captions_no_training_object_repeats(tmp_path) -> None:
    """A real dataset repeats captions ("a box"): held-out objects are drawn among captions that occur once, so
    the 3D training split never holds a held-out object's exact caption; growth skips such objects by name."""
    from vfusion3d_core.objects.listing import ObjectListingConfig, build_listing

    src = tmp_path / "meshes"
    src.mkdir()
    for i in range(12):
        trimesh.creation.box(extents=(1, 1, 1 + i / 10)).export(src / f"box{i:02d}.glb")
    captions = {f"box{i:02d}": ("a box" if i < 8 else f"a box number {i}") for i in range(12)}
    (src / "captions.csv").write_text("uid,caption\n" + "".join(f"{k},{v}\n" for k, v in captions.items()))
    cfg = ObjectListingConfig(source="folder", folder=str(src), num_objects=0, num_heldout=3, objects_per_partition=4)
    listing = build_listing(cfg)
    held = [r for r in listing.rows if r.split == "heldout"]
    assert len(held) == 3 and all(r.caption != "a box" for r in held)
    assert {r.caption for r in held}.isdisjoint({r.caption for r in listing.rows if r.split == "train"})
    trimesh.creation.icosphere().export(src / "late.glb")
    (src / "captions.csv").write_text((src / "captions.csv").read_text() + f"late,{held[0].caption}\n")
    grown = build_listing(cfg, listing.rows)
    assert [r.uid for r in grown.rows] == [r.uid for r in listing.rows]  # the late object is not listed ...
    assert any(s.path.endswith("late.glb") and held[0].uid in s.reason for s in grown.skipped)  # ... and says why
