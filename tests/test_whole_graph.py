"""The whole asset graph at a micro size the way the UI runs it: `make tiny`'s command starts a real `dagster dev`
(webserver + daemon) on a temporary DAGSTER_HOME with the repo's dagster.yaml and launches, through the UI's GraphQL
API, the roots' backfill and then one asset backfill of every asset and partition; every asset and partition is
materialized by a run of that backfill. Then `vfusion3d audit` end to end on the fine-tuned checkpoint (directory
and models:/ URI), and a one-byte change to one synthetic shard makes audit fail naming it."""

import json
import subprocess
import sys

import dagster as dg
import mlflow
import pytest
from pipeline_utils import LRM_MICRO, MICRO_RENDER_OPS, REPO, VIDEO_MICRO, pipeline_env, run_whole_graph

from vfusion3d_core.data import ArtifactStore
from vfusion3d_pipeline.definitions import build_definitions
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

pytestmark = pytest.mark.slow  # the whole graph through dagster dev's backfill daemon (minutes)

PROMPTS = ["a red box", "a glossy blue sphere", "a green cone next to a yellow torus", "a striped purple ring"]
SHARDS = ["shard-000000", "shard-000001"]
OBJECT_SHARDS = ["objects-000000", "objects-000001"]
RENDER_PARTITIONS = [f"renders_3d/{k}" for k in OBJECT_SHARDS]


def micro_run_config(prompt_file) -> dict:
    return {"ops": {
        **MICRO_RENDER_OPS,
        "prompt_set": {"config": {"source_file": str(prompt_file), "template_count": 0, "shard_size": 2}},
        "video_model": {"config": {"eval_count": 2, "overrides_json": json.dumps(VIDEO_MICRO)}},
        "lrm_3d_only": {"config": LRM_MICRO},
        "lrm_pretrained": {"config": {**LRM_MICRO, "min_samples": 1}},
        "lrm_finetuned": {"config": LRM_MICRO},
        "eval_metrics": {"config": {"max_objects": 2, "novel_views": 2, "render_size": 32, "turntable_frames": 2}},
    }}


def audit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfusion3d_core.cli", "audit", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def names(tree: dict) -> set[str]:
    return {tree["name"]} | {n for c in tree["children"] for n in names(c)}


def assert_whole_graph_by_backfill(instance: dg.DagsterInstance, defs: dg.Definitions) -> dict[str, str]:
    """Every asset of the graph (experiments excepted) and every partition materialized, each by a successful run
    of one of the two backfills the command launched; returns asset -> the run id of its latest materialization."""
    backfills = instance.get_backfills()
    assert sorted(b.title for b in backfills) == ["register shards", "whole graph"], backfills
    assert all(b.status.value in ("COMPLETED", "COMPLETED_SUCCESS") for b in backfills)
    ids = {b.backfill_id for b in backfills}
    graph = defs.resolve_asset_graph()
    runs = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.group_name == "experiments":  # its own job (tests/ablation), never part of the whole graph
            assert instance.get_latest_materialization_event(key) is None, key
            continue
        if node.partitions_def:
            expected = OBJECT_SHARDS if node.partitions_def.name == "object_shards" else SHARDS
            assert instance.get_materialized_partitions(key) == set(expected), key
        event = instance.get_latest_materialization_event(key)
        assert event is not None, key
        run = instance.get_run_by_id(event.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags.get("dagster/backfill") in ids, (key, run.tags)
        runs[key.to_user_string()] = event.run_id
    return runs


def test_whole_graph_then_audit(tmp_path, monkeypatch) -> None:
    env = pipeline_env(tmp_path)
    env.update(VFUSION3D_DEVICE="cpu", VFUSION3D_PRECISION="fp32")
    root, home = env["VFUSION3D_ARTIFACT_ROOT"], env["DAGSTER_HOME"]
    monkeypatch.setenv("DAGSTER_HOME", home)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = run_whole_graph(env, micro_run_config(prompts), tmp_path)
    assert "whole graph materialized" in out.stdout
    defs = build_definitions({"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
                              "mlflow": MLflowResource(artifact_root=str(root)),
                              "compute": ComputeResource(device="cpu", precision="fp32")})
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert_whole_graph_by_backfill(instance, defs)
        graph = defs.resolve_asset_graph()
        for key in graph.get_all_asset_keys():
            node = graph.get(key)
            assert node.code_version and node.group_name != "default" and node.description, key
        synth = instance.get_latest_materialization_event(dg.AssetKey("synthetic_videos")).asset_materialization
        assert "data:image/png;base64" in synth.metadata["preview"].value
        evaluation = instance.get_latest_materialization_event(dg.AssetKey("eval_metrics")).asset_materialization
        table = evaluation.metadata["metrics"].value
        assert [r.data["checkpoint"] for r in table.records] == ["untrained", "lrm_pretrained", "lrm_finetuned",
                                                                 "lrm_3d_only"]
        assert "RANDOM" in evaluation.metadata["clip_model"].value
        assert "synthetic then 3D fine-tune" in evaluation.metadata["ablation"].value

        # the lrm_arms job (one click in the UI) retrains the three arms and rewrites the comparison table
        config = micro_run_config(prompts)
        ablation = defs.resolve_job_def("lrm_arms").execute_in_process(
            instance=instance, run_config={"ops": {k: v for k, v in config["ops"].items()
                                                   if k.startswith(("lrm_", "eval_"))}})
        assert ablation.success
        assert {e.asset_key.to_user_string() for e in ablation.get_asset_materialization_events()} == {
            "lrm_3d_only", "lrm_pretrained", "lrm_finetuned", "eval_metrics"}
        assert all(e.passed for e in ablation.get_asset_check_evaluations())

    store = ArtifactStore(root)
    fine, pre = store.latest("lrm_finetuned"), store.latest("lrm_pretrained")
    assert set(pre.manifest.inputs) == {*RENDER_PARTITIONS, *(f"filtered_multiview_dataset/{k}" for k in SHARDS)}
    assert (store.latest("eval_metrics").path / "ablation.md").read_text().count("|") > 20

    # audit by directory: the exact partitions and digests used, every digest re-verified
    result = audit(str(fine.path / "model"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    tree = report["tree"]
    assert report["ok"] and tree["digest"] == fine.digest
    expected = {"lrm_finetuned", "lrm_pretrained", *RENDER_PARTITIONS, "source_objects", "quality_models",
                "video_model"}
    expected |= {f"{a}/{k}" for a in ("filtered_multiview_dataset", "synthetic_videos", "prompt_set") for k in SHARDS}
    assert names(tree) == expected
    pre_node = next(c for c in tree["children"] if c["name"] == "lrm_pretrained")
    used = {c["name"]: c["digest"] for c in pre_node["children"]}
    assert used == {**{f"filtered_multiview_dataset/{k}": store.latest("filtered_multiview_dataset", k).digest
                       for k in SHARDS}, **{f"renders_3d/{k}": store.latest("renders_3d", k).digest
                                            for k in ("objects-000000", "objects-000001")}}
    text = audit(str(fine.path))
    assert text.returncode == 0 and "synthetic_videos/shard-000001" in text.stdout and "audit ok" in text.stdout

    # audit by registered model version
    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    versions = client.search_model_versions("name='lrm_finetuned'")
    assert len(versions) == 2  # the whole graph, then the lrm_arms job
    latest = max(versions, key=lambda v: int(v.version))
    by_model = audit(f"models:/lrm_finetuned/{latest.version}", "--artifact-root", str(root), "--json")
    assert by_model.returncode == 0, by_model.stderr
    assert json.loads(by_model.stdout)["tree"]["digest"] == fine.digest

    # one byte of one synthetic shard changes: audit fails and names it
    synth = store.latest("synthetic_videos", "shard-000001")
    shard = next(synth.path / f.path for f in synth.manifest.files if f.path.endswith(".tar"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    broken = audit(str(fine.path))
    assert broken.returncode == 1
    assert "synthetic_videos/shard-000001" in broken.stderr and shard.name in broken.stderr
    assert "synthetic_videos/shard-000000" not in broken.stderr
