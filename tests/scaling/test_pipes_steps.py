"""GPU steps through Dagster Pipes: a torchrun-wrapped (2 CPU ranks, gloo) Pipes training step reports once, from
rank 0, onto the asset; the core entries need dagster-pipes only; cluster launch parameters. The single-process
Pipes steps on S3 + PostgreSQL: tests/scaling/test_scaled_graph.py."""

import json
import subprocess
import sys

import dagster as dg
import mlflow
import pytest
from pipeline_utils import LRM_MICRO, REPO, VIDEO_MICRO, materialize_renders
from safetensors.torch import load_file

from vfusion3d_core.data import ArtifactStore
from vfusion3d_pipeline.assets.lrm import lrm_3d_only
from vfusion3d_pipeline.assets.video import video_model
from vfusion3d_pipeline.gpu_steps import EXECUTION_MODES, check_execution, ecs_run_task_params, step_command
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

pytestmark = pytest.mark.slow  # training steps as Pipes subprocesses under torchrun (minutes)


def test_pipes_step_under_torchrun_reports_from_rank_zero(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # `python -m vfusion3d_core...` in the step resolves this checkout
    res = {"artifacts": ArtifactStoreResource(root=str(tmp_path)), "preset": PresetResource(name="tiny"),
           "mlflow": MLflowResource(artifact_root=str(tmp_path)),
           "compute": ComputeResource(device="cpu", precision="fp32")}  # preset.gpu_steps: a local subprocess
    instance = dg.DagsterInstance.ephemeral()
    materialize_renders(res, instance)
    result = dg.materialize([lrm_3d_only], resources=res, instance=instance, selection=[lrm_3d_only],
                            run_config={"ops": {"lrm_3d_only": {"config": {**LRM_MICRO, "execution": "pipes",
                                                                            "num_processes": 2}}}})
    assert result.success
    version = ArtifactStore(tmp_path).latest("lrm_3d_only")
    trained = json.loads((version.path / "metrics.json").read_text())["train"]
    md = result.asset_materializations_for_node("lrm_3d_only")[0].metadata
    assert md["execution"].value == "pipes" and md["final_metrics"].value == trained and trained["loss"] > 0
    assert md["pipes/world_size"].value == 2 and md["pipes/step"].value == 4
    assert [p["step"] for p in md["pipes/training_curve"].value] == [2, 4]  # one report per step, not per rank


def test_pipes_entries_import_dagster_pipes_but_not_dagster() -> None:
    code = ("import sys, vfusion3d_core.lrm.train.pipes_entry, vfusion3d_core.video.pipes_entry, vfusion3d_core.pipes;"
            "import vfusion3d_core.video.finetune_pipes_entry, vfusion3d_core.video.finetune;"
            "import vfusion3d_core.lrm.train.trainer, vfusion3d_core.video.synthesis;"
            "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cluster_launch_parameters() -> None:
    assert step_command("m.entry", 1, "py") == ["py", "-m", "m.entry"]
    assert step_command("m.entry", 4)[:5] == ["python", "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node=4"]
    base = {"cluster": "gpu", "taskDefinition": "vfusion3d:3", "launchType": "EC2",
            "overrides": {"containerOverrides": [{"name": "vfusion3d", "environment": [{"name": "A", "value": "1"},
                                                                                         {"name": "B", "value": "x"}]},
                                                 {"name": "sidecar"}]}}
    params = ecs_run_task_params(base, "vfusion3d", ["python", "-m", "m.entry"], {"B": "2", "C": "3"})
    mine = params["overrides"]["containerOverrides"][0]
    assert mine["command"] == ["python", "-m", "m.entry"]
    assert mine["environment"] == [{"name": n, "value": v} for n, v in (("A", "1"), ("B", "2"), ("C", "3"))]
    assert params["overrides"]["containerOverrides"][1] == {"name": "sidecar"} and base["cluster"] == "gpu"
    assert "command" not in base["overrides"]["containerOverrides"][0]  # the base is not modified


def test_video_finetuning_as_a_pipes_step_matches_in_process(tmp_path, monkeypatch) -> None:
    """`video_model` with execution=pipes trains in an external process (vfusion3d_core.video.finetune_pipes_entry):
    every training step's metrics come back (into MLflow), and the model equals the in-process one's."""
    monkeypatch.chdir(REPO)
    config = {"eval_count": 2, "overrides_json": json.dumps(VIDEO_MICRO)}
    roots, mats = {}, {}
    for execution in ("in_process", "pipes"):
        root = roots[execution] = tmp_path / execution
        res = {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
               "mlflow": MLflowResource(artifact_root=str(root)),
               "compute": ComputeResource(device="cpu", precision="fp32")}
        instance = dg.DagsterInstance.ephemeral()
        materialize_renders(res, instance)
        result = dg.materialize([video_model], resources=res, instance=instance,
                                run_config={"ops": {"video_model": {"config": {**config, "execution": execution}}}})
        assert result.success
        mats[execution] = result.asset_materializations_for_node("video_model")[0].metadata
    md = mats["pipes"]
    assert md["execution"].value == "pipes" and mats["in_process"]["execution"].value == "in_process"
    # the step's logged training metrics came back through Pipes into MLflow, as the in-process run logs them
    curves = {}
    for execution, meta in mats.items():
        client = mlflow.MlflowClient(f"sqlite:///{roots[execution]}/mlflow.db")
        curves[execution] = {key: [(m.step, round(m.value, 5)) for m in client.get_metric_history(
            meta["mlflow_run_id"].value, key)] for key in ("loss/vae", "loss/image", "loss/video")}
    assert curves["pipes"] == curves["in_process"] and curves["pipes"]["loss/video"]
    assert md["pipes/reported_steps"].value == sum(len(c) for c in curves["pipes"].values())
    for key in ("text_to_video_mse/finetuned", "image_to_video_mse/finetuned"):
        assert abs(md[key].value - mats["in_process"][key].value) <= 1e-5 * max(1.0, abs(md[key].value))
    models = [ArtifactStore(roots[e]).latest("video_model") for e in ("in_process", "pipes")]
    files = [sorted(p.relative_to(m.path) for p in m.path.rglob("*.safetensors")) for m in models]
    assert files[0] == files[1] and len(files[0]) >= 3  # vae, image_unet, video_unet
    for name in files[0]:
        a, b = (load_file(m.path / name) for m in models)
        assert a.keys() == b.keys()
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5, name


def test_unknown_execution_mode_is_refused() -> None:
    for mode in EXECUTION_MODES:
        check_execution(mode)
    with pytest.raises(dg.Failure, match="execution must be in_process or pipes, got 'gpu'"):
        check_execution("gpu")
