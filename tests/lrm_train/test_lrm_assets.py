"""lrm_pretrained (on an external dataset folder), lrm_finetuned and lrm_3d_only through Dagster at a micro size.
The default lrm_pretrained input, the filtered synthetic dataset, is covered by tests/test_whole_graph.py."""

import json
import os
import sys
from pathlib import Path

import dagster as dg
import mlflow
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline_utils import LRM_MICRO, materialize_renders  # noqa: E402

from vfusion3d_core.data import ArtifactStore  # noqa: E402
from vfusion3d_core.lrm import LRM  # noqa: E402
from vfusion3d_core.lrm.train.checkpoint import list_checkpoints  # noqa: E402
from vfusion3d_core.lrm.train.config import FINETUNE_LR_SCALE  # noqa: E402
from vfusion3d_pipeline.assets.lrm import lrm_3d_only, lrm_finetuned, lrm_pretrained  # noqa: E402
from vfusion3d_pipeline.assets.renders import committed_renders  # noqa: E402
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource  # noqa: E402

TRAIN = LRM_MICRO


def resources(root: Path) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def test_pretrain_then_finetune_with_lineage(tmp_path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    res = resources(tmp_path)
    materialize_renders(res, instance)
    train_dir = ArtifactStore(tmp_path).latest("renders_3d", "objects-000001").path / "train"
    result = dg.materialize([lrm_pretrained, lrm_finetuned], resources=res, instance=instance,
                            run_config={"ops": {"lrm_pretrained": {"config": {**TRAIN, "dataset_dir": str(train_dir)}},
                                                "lrm_finetuned": {"config": TRAIN}}})
    assert result.success
    store = ArtifactStore(tmp_path)
    renders, pre, fine = committed_renders(store), store.latest("lrm_pretrained"), store.latest("lrm_finetuned")
    assert set(pre.manifest.inputs) == {*renders.inputs, f"external:{train_dir}"}
    assert fine.manifest.inputs == {**renders.inputs, "lrm_pretrained": pre.digest}
    assert pre.manifest.verify(pre.path) == [] and fine.manifest.verify(fine.path) == []
    # fine-tuning: the same steps at a reduced learning rate, another seed
    assert fine.manifest.config["lr"] == pytest.approx(pre.manifest.config["lr"] * FINETUNE_LR_SCALE)
    assert fine.manifest.counts["steps"] == pre.manifest.counts["steps"] == TRAIN["steps"]
    assert fine.manifest.config["seed"] == pre.manifest.config["seed"] + 1
    for version in (pre, fine):  # compute settings are part of the recorded config
        assert version.manifest.config["compute"]["resolved_device"] == "cpu"
        assert version.manifest.config["compute"]["resolved_precision"] == "fp32"
    a, b = LRM.from_pretrained(pre.path / "model"), LRM.from_pretrained(fine.path / "model")
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    mat = result.asset_materializations_for_node("lrm_finetuned")[0]
    assert mat.tags["dagster/data_version"] == fine.digest
    metrics = json.loads((fine.path / "metrics.json").read_text())
    assert metrics["train"]["loss"] > 0 and "lpips" in metrics["train"] and metrics["train"]["samples_per_s"] > 0
    heldout = metrics["heldout"]
    assert heldout["heldout_objects"] == 2 and 0 < heldout["heldout_psnr_constant"] < 40
    assert mat.metadata["heldout_psnr"].value == heldout["heldout_psnr"]
    assert mat.metadata["skipped_samples"].value == 0 and mat.metadata["skipped_shards"].value == 0
    assert "constant colour" in mat.metadata["heldout_evaluation"].value
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(mat.metadata["mlflow_run_id"].value)
    assert run.data.tags["input.lrm_pretrained"] == pre.digest
    assert run.data.tags["input.renders_3d/objects-000000"] == renders.inputs["renders_3d/objects-000000"]
    assert run.data.params["compute.resolved_device"] == "cpu" and run.data.params["compute.precision"] == "fp32"
    history = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [2, 4]  # logged every 2 steps
    assert run.data.metrics["heldout_psnr"] == heldout["heldout_psnr"]
    registered = mat.metadata["registered_model"].value
    assert registered == "models:/lrm_finetuned/1"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    mv = client.get_model_version("lrm_finetuned", "1")
    assert mv.tags["vfusion3d.digest"] == fine.digest and mv.run_id == run.info.run_id
    # the checkpoint is a LoggedModel: the run's output, its held-out metrics linked, loadable with pyfunc
    model_id = mat.metadata["mlflow_model_id"].value
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id] and mv.source == f"models:/{model_id}"
    linked = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
    assert linked["heldout_psnr"] == heldout["heldout_psnr"] and linked["final_loss"] == metrics["train"]["loss"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # set_tracking_uri exports it: not for the tests after this one
    loaded = mlflow.pyfunc.load_model(registered).unwrap_python_model().lrm
    assert all(torch.equal(x, y) for x, y in zip(loaded.state_dict().values(), b.state_dict().values(), strict=True))
    assert not (store.asset_dir("lrm_pretrained") / ".work").exists() or not any(
        (store.asset_dir("lrm_pretrained") / ".work").iterdir())


def test_killed_training_resumes_from_its_work_dir(tmp_path, monkeypatch) -> None:
    """A run that died after a checkpoint: the re-run resumes there instead of starting over."""
    from vfusion3d_core.lrm.train import trainer as trainer_module

    instance = dg.DagsterInstance.ephemeral()
    res = resources(tmp_path)
    materialize_renders(res, instance)
    original_train = trainer_module.LRMTrainer.train
    starts: list[int] = []

    def dies_after_step_two(self, until_step=None):
        starts.append(self.step)
        original_train(self, until_step=2)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(trainer_module.LRMTrainer, "train", dies_after_step_two)
    run_config = {"ops": {"lrm_3d_only": {"config": TRAIN}}}
    failed = dg.materialize([lrm_3d_only], resources=res, instance=instance, run_config=run_config,
                            raise_on_error=False)
    assert not failed.success and ArtifactStore(tmp_path).latest("lrm_3d_only") is None
    work = list((ArtifactStore(tmp_path).asset_dir("lrm_3d_only") / ".work").iterdir())
    assert len(work) == 1 and [p.name for p in list_checkpoints(work[0])] == ["step-00000002"]

    def records_start(self, until_step=None):
        starts.append(self.step)
        return original_train(self, until_step)

    monkeypatch.setattr(trainer_module.LRMTrainer, "train", records_start)
    assert dg.materialize([lrm_3d_only], resources=res, instance=instance, run_config=run_config).success
    assert starts == [0, 2]
    version = ArtifactStore(tmp_path).latest("lrm_3d_only")
    assert version.manifest.counts["steps"] == 4 and not work[0].exists()


def test_3d_only_trains_as_long_as_pretraining_plus_finetuning(tmp_path) -> None:
    """Without an explicit `steps`, lrm_3d_only runs the recipe stretched 2x (compute-matched arms)."""
    instance = dg.DagsterInstance.ephemeral()
    res = resources(tmp_path)
    materialize_renders(res, instance)
    overrides = {**json.loads(TRAIN["overrides_json"]), "steps": 2, "warmup_steps": 1}
    config = {"batch_size": 2, "overrides_json": json.dumps(overrides)}
    assert dg.materialize([lrm_3d_only], resources=res, instance=instance,
                          run_config={"ops": {"lrm_3d_only": {"config": config}}}).success
    version = ArtifactStore(tmp_path).latest("lrm_3d_only")
    assert version.manifest.counts["steps"] == 4 and version.manifest.config["warmup_steps"] == 2


def test_large_preset_without_dino_folder_is_refused(tmp_path) -> None:
    """At `small`, lrm_3d_only refuses to start without dino_pretrained_path (naming it) unless from_scratch."""
    instance = dg.DagsterInstance.ephemeral()
    res = resources(tmp_path)
    materialize_renders(res, instance)
    res["preset"] = PresetResource(name="small")
    result = dg.materialize([lrm_3d_only], resources=res, instance=instance, selection=[lrm_3d_only],
                            run_config={"ops": {"lrm_3d_only": {"config": {**TRAIN, "steps": 1}}}},
                            raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    message = str(failure.event_specific_data.error)
    assert "dino_pretrained_path" in message and "from_scratch: true" in message
    assert ArtifactStore(tmp_path).latest("lrm_3d_only") is None


def test_lrm_3d_only_starts_from_a_dinov2_folder_through_the_asset(tmp_path) -> None:
    """dino_pretrained_path in the asset config reaches the encoder: with lr 0 the published checkpoint's
    encoder is exactly the folder's Dinov2Model (written by save_pretrained), and the manifest names it."""
    from test_lrm_compute import tiny_dino_folder
    from transformers import Dinov2Model

    instance = dg.DagsterInstance.ephemeral()
    res = resources(tmp_path)
    materialize_renders(res, instance)
    folder = tiny_dino_folder(tmp_path)
    overrides = {**json.loads(TRAIN["overrides_json"]), "lr": 0.0}
    config = {**TRAIN, "steps": 2, "overrides_json": json.dumps(overrides), "dino_pretrained_path": folder}
    assert dg.materialize([lrm_3d_only], resources=res, instance=instance, selection=[lrm_3d_only],
                          run_config={"ops": {"lrm_3d_only": {"config": config}}}).success
    version = ArtifactStore(tmp_path).latest("lrm_3d_only")
    assert version.manifest.config["dino_pretrained_path"] == folder
    encoder = LRM.from_pretrained(version.path / "model").encoder.dino.state_dict()
    for name, value in Dinov2Model.from_pretrained(folder).state_dict().items():
        assert torch.equal(encoder[name], value), name
